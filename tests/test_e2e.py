"""End to end: virtual strap (bumble, through the project's bleak backend) → daemon → broker →
subscriber, and into the SQLite store and its CSV export.

The recording is real (tests/data/pyhrv_nni_short.csv, see tests/data/README.md); a beat's RR
must arrive exactly as the strap could send it: quantised to 1/1024 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from feedback.payloads import BeatPayload, IndicesPayload, SessionPayload
from sensors.readers import read_rr_file
from sensors.strap import StrapClient
from sensors.virtual.air import VirtualAir
from sensors.virtual.model import ModelParams, PhysioModel
from sensors.virtual.strap import VirtualStrap
from sessions.store import BaselinePeriod, SessionState, SessionStore
from settle.app import serve
from settle.config import load_config
from settle.daemon import Daemon
from settle.demo import virtual_world
from tests.conftest import DATA, Mosquitto

RECORDING = DATA / "pyhrv_nni_short.csv"
CONFIG = Path(__file__).parents[1] / "configs" / "settle.toml"
SPEED = 60.0


def quantised(rr_ms: list[float]) -> list[float]:
    return [round(r * 1024 / 1000) * 1000 / 1024 for r in rr_ms]


class Collector:
    """Subscribes to ``settle/#`` and keeps every message, in arrival order."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.messages: list[tuple[str, bytes, bool]] = []
        self.offline = asyncio.Event()
        self._ready = asyncio.Event()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        # The embedded broker stops with the daemon: that ends the collection, not the test.
        with contextlib.suppress(aiomqtt.MqttError):
            await self._collect()

    async def _collect(self) -> None:
        async with aiomqtt.Client(self.host, self.port, identifier="test-collector") as c:
            await c.subscribe("settle/#", qos=1)
            self._ready.set()
            async for m in c.messages:
                payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
                self.messages.append((str(m.topic), payload, bool(m.retain)))
                self._arrived.set()
                if str(m.topic) == "settle/bridge/state" and payload == b"offline":
                    self.offline.set()

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run(), name="collector")
        async with asyncio.timeout(10):
            await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def wait_for(self, leaf: str, count: int = 1) -> list[bytes]:
        """Wait until ``count`` messages on ``*/leaf`` have arrived (bound it with a timeout)."""
        while len(found := self.payloads(leaf)) < count:
            self._arrived.clear()
            await self._arrived.wait()
        return found

    def payloads(self, leaf: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t.endswith("/" + leaf)]


def check_stream(col: Collector, expected_rr: list[float]) -> str:
    """Assert what a subscriber of a replay must see; return the device id."""
    beats = [BeatPayload.model_validate_json(p) for p in col.payloads("beat")]
    assert beats, "no beat messages received"
    # Every beat's class is published once it is final, the last ~3 (still waiting for
    # look-ahead when the session stopped) in a closing message without RR of its own.
    classified = [c.beat_t_s for b in beats for c in b.classified]
    assert sorted(classified) == sorted(t for b in beats for t in b.beat_t_s)
    assert beats[-1].rr_ms == [] and beats[-1].classified and beats[-1].session is not None
    got_rr = [r for b in beats for r in b.rr_ms]
    assert got_rr == quantised(expected_rr)  # every beat, in order, none twice, exact
    assert [b.seq for b in beats] == list(range(len(beats)))
    devices = {t.split("/")[1] for t, _, _ in col.messages if t.endswith("/beat")}
    assert len(devices) == 1
    indices = [IndicesPayload.model_validate_json(p) for p in col.payloads("indices")]
    duration_s = sum(expected_rr) / 1000
    assert len(indices) == int(duration_s // 5)  # one every 5 s of beat time
    late = [i for i in indices if i.t_s > 150]
    assert all(0 <= i.settling <= 100 for i in late if i.settling is not None)
    # At 60× speed a host stall of 0.1 s on a loaded machine is a 6 s gap in beat time: the
    # windows restart and the score waits for them (the spectra's 64 s). No score for any
    # other reason fails, and most of the session is scored.
    restarts = [i.t_s for i in indices if i.warming_up]
    unscored = [i.t_s for i in late if i.settling is None]
    assert all(any(0 < t - g <= 75 for g in restarts) for t in unscored), (unscored, restarts)
    assert len(unscored) < len(late) / 3, (unscored, restarts)
    assert all(60 < (i.hr_bpm or 0) < 90 for i in indices[2:])
    sessions = [SessionPayload.model_validate_json(p) for p in col.payloads("session")]
    assert sessions[0].state == "running"
    assert sessions[-1].state == "stopped"
    assert sessions[-1].n_beats == len(expected_rr)
    assert col.offline.is_set()  # a clean stop says so on bridge/state
    return devices.pop()


def check_store(db: Path, expected_rr: list[float]) -> str:
    with SessionStore.open(db) as store:
        (summary,) = store.list_sessions()
        assert summary.state == SessionState.STOPPED
        assert summary.n_beats == len(expected_rr)
        beats = store.beats(summary.id)
    assert [b.rr_ms for b in beats] == quantised(expected_rr)
    assert [b.rr_raw for b in beats] == [round(r * 1024 / 1000) for r in expected_rr]
    # Every beat has its artefact class (warm-up beats are recorded but not analysed).
    assert all(b.beat_class is not None for b in beats)
    analysed = [b for b in beats if b.beat_class != "warmup"]
    # Warm-up beats only after the connect: one run at the start, all of them arriving within
    # the warm-up (5 s of session time: 0.25 s of wall time at speed 20) plus a host stall,
    # which delivers more beats in it (23 in the CI of 2026-11-30: it was "fewer than 10").
    warm = beats[: len(beats) - len(analysed)]
    assert all(b.beat_class == "warmup" for b in warm)
    assert not warm or warm[-1].recv_ts_ms - beats[0].recv_ts_ms < 1500
    assert len(analysed) > 0.8 * len(beats)
    # (the recording is clean; the correction flags a few % of its beats: docs/indices.md)
    assert sum(b.beat_class == "normal" for b in analysed) > 0.9 * len(analysed)
    assert all(b.timing_uncertain is not None for b in beats)
    return summary.id


@pytest.mark.mosquitto
async def test_demo_replay_through_mosquitto(mosquitto: Mosquitto, tmp_path: Path) -> None:
    rec = read_rr_file(RECORDING)
    expected = [float(x) for x in rec.rr_ms]
    db = tmp_path / "settle.db"
    env = {**os.environ, "SETTLE_CONFIG": str(CONFIG)}
    async with Collector(mosquitto.host, mosquitto.port) as col:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "settle.cli", "demo",
            "--replay", str(RECORDING), "--speed", str(SPEED),
            "--mqtt", f"{mosquitto.host}:{mosquitto.port}", "--db", str(db),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        async with asyncio.timeout(90):
            stdout, stderr = await proc.communicate()
            await col.offline.wait()
    text = stdout.decode()
    assert proc.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()  # a clean run and a clean exit
    assert f"mosquitto_sub -h 127.0.0.1 -p {mosquitto.port} -t 'settle/#' -v" in text
    assert str(db) in text
    check_stream(col, expected)
    sid = check_store(db, expected)

    # The CSV export (through the CLI, as a user would) round-trips the RR.
    out = tmp_path / "export.csv"
    exp = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "settle.cli", "export", "latest", "--format", "csv",
        "--out", str(out), "--db", str(db),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    _, exp_err = await exp.communicate()
    assert exp.returncode == 0, exp_err.decode()
    with out.open() as f:
        rows = list(csv.DictReader(f))
    beat_rows = [r for r in rows if r["record"] == "beat"]
    assert [float(r["rr_ms"]) for r in beat_rows] == quantised(expected)
    assert {r["session_id"] for r in rows} == {sid}
    assert sum(r["record"] == "indices" for r in rows) == int(sum(expected) / 1000 // 5)
    t = [float(r["t_s"]) for r in rows]
    assert t == sorted(t)  # one time base


async def test_demo_replay_through_embedded_amqtt(tmp_path: Path) -> None:
    """The same path with the daemon's own embedded broker (amqtt on 127.0.0.1)."""
    from feedback.broker import free_loopback_port

    rec = read_rr_file(RECORDING)
    expected = [float(x) for x in rec.rr_ms]
    db = tmp_path / "settle.db"
    settings = load_config(
        CONFIG,
        mqtt={"embedded": "always", "embedded_port": free_loopback_port()},
        storage={"db_path": db},
        demo={"speed": SPEED, "replay": RECORDING},
    )
    col: Collector | None = None
    stack = contextlib.AsyncExitStack()

    async def subscribe_first(broker: object) -> None:
        nonlocal col
        assert broker is not None and broker.embedded  # type: ignore[attr-defined]
        assert broker.host == "127.0.0.1"  # type: ignore[attr-defined]
        col = await stack.enter_async_context(Collector(broker.host, broker.port))  # type: ignore[attr-defined]

    async with (
        stack,
        asyncio.timeout(90),
        virtual_world(replay=RECORDING, speed=SPEED, seed=1) as world,
    ):
        code = await serve(
            settings,
            **world.serve_kwargs(),
            finished=[s.wait_finished() for s in world.straps],
            on_broker=subscribe_first,
            handle_signals=False,
        )
        assert code == 0
        assert col is not None
    check_stream(col, expected)
    check_store(db, expected)


def test_bad_replay_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("hello\nworld\n")
    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", "demo", "--replay", str(bad), "--no-mqtt",
         "--db", str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0
    assert "not a recognised RR file" in res.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.mark.mosquitto
async def test_unusable_rhythm_is_said_not_scored(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A real Polar H10 recording with ~30 % premature ventricular beats: the feedback says the
    rhythm cannot be interpreted instead of showing a settling score."""
    settings = load_config(
        CONFIG,
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        storage={"db_path": tmp_path / "s.db"},
        homeassistant={"enabled": False},
    )
    pvc = DATA / "polar_h10_pvc_device.csv"
    async with (
        Collector(mosquitto.host, mosquitto.port) as col,
        asyncio.timeout(90),
        virtual_world(replay=pvc, speed=100, seed=1) as world,
    ):
        code = await serve(
            settings,
            **world.serve_kwargs(),
            finished=[s.wait_finished() for s in world.straps],
            handle_signals=False,
        )
        assert code == 0
        await col.offline.wait()
    indices = [IndicesPayload.model_validate_json(p) for p in col.payloads("indices")]
    late = [i for i in indices if i.t_s > 120]
    assert late and all(not i.usable and i.settling is None for i in late)
    # (At 100× speed a host stall on a loaded machine can open a gap in beat time: the
    # windows restart, and the rows after it are warming up, not yet judged. Never scored.)
    assert all("not sinus" in (i.reason or "") for i in late if not i.warming_up)
    assert sum(not i.warming_up for i in late) > 2 * len(late) / 3
    events = [json.loads(p)["kind"] for p in col.payloads("event")]
    assert "unusable-rhythm" in events


async def test_two_session_starts_at_once_leave_one_session_running(tmp_path: Path) -> None:
    """A double click on Start sent two session/start commands 2 ms apart: both found no
    session while the store created theirs, the second replaced the first, and the first
    stayed `running` with 0 beats for good (marked `interrupted` by the next daemon as "left
    running by an earlier crash"). Starts and stops of one strap now take turns."""
    from tests.test_reconnect import until

    db = tmp_path / "s.db"
    settings = load_config(CONFIG, mqtt={"enabled": False}, storage={"db_path": db})
    results: list[dict[str, object]] = []

    def tap(topic: str, payload: bytes | str, _retain: bool) -> None:
        if topic.endswith("/result"):
            results.append(json.loads(payload))

    async with VirtualAir() as air:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=3), speed=5.0)
        await strap.start()
        client = StrapClient(address=strap.address, scan_timeout_s=5, connect_timeout_s=5,
                             scanner_kwargs=air.scanner_kwargs(),
                             client_kwargs=air.client_kwargs())  # fmt: skip
        with SessionStore.open(db) as store:
            daemon = Daemon(settings, store, [client], time_scale=5.0, tap=tap)
            task = asyncio.create_task(daemon.run())
            rt = daemon.runtimes[0]
            await until(lambda: rt.session is not None and rt.device_id is not None)
            dev = rt.device_id or ""

            def body(cmd_id: str) -> bytes:
                return json.dumps({"v": 1, "id": cmd_id}).encode()

            await asyncio.gather(*(daemon.on_command(dev, "session/start", body(i), False)
                                   for i in ("a", "b")))  # fmt: skip
            running = [s.id for s in store.list_sessions() if s.state.value == "running"]
            assert rt.session is not None and running == [rt.session.session_id]
            await asyncio.gather(*(daemon.on_command(dev, "session/stop", body(i), False)
                                   for i in ("c", "d")))  # fmt: skip
            states = [s.state.value for s in store.list_sessions()]
            daemon.stop()
            await asyncio.wait_for(task, 10)
        await strap.stop()
    assert states == ["stopped"] * 3  # the automatic one, then a, then b
    by_id = {r["id"]: r for r in results}
    assert [by_id[i]["status"] for i in "abc"] == ["ok", "ok", "ok"]
    assert by_id["d"]["error"] == "no session is running (send session/start first)"


async def test_a_rest_period_open_when_the_session_ends_is_stored(tmp_path: Path) -> None:
    """``baseline/start`` and then the session stopped (the practitioner forgot the stop, or
    the daemon was stopped): the rest period was kept only in memory, and every export had no
    baseline although docs/sessions.md says an open one runs to the session's end. It is
    stored open at its start, so the export's ``baseline`` row runs to the session's end."""
    from sessions.export import export_csv, read_export_csv
    from tests.conftest import model_daemon
    from tests.test_reconnect import until

    seen: list[dict[str, object]] = []

    def tap(topic: str, payload: bytes | str, _retain: bool) -> None:
        if topic.endswith("/result"):
            seen.append(json.loads(payload))

    async with model_daemon(tmp_path, seed=4, tap=tap) as (daemon, store, _strap, task):
        rt = daemon.runtimes[0]

        def session_t() -> float:
            return rt.session.now_t_s() if rt.session else 0.0

        await until(lambda: session_t() > 20)
        assert rt.device_id is not None and rt.session is not None
        sid = rt.session.session_id
        body = json.dumps({"v": 1, "id": "rest"}).encode()
        await daemon.on_command(rt.device_id, "baseline/start", body, False)
        assert [r["status"] for r in seen] == ["ok"]
        t0 = rt.session.baseline_marked[0] if rt.session.baseline_marked else -1.0
        await until(lambda: session_t() > t0 + 10)
        daemon.stop()
        await asyncio.wait_for(task, 10)
        assert store.get(sid).baseline == BaselinePeriod(t0, None)
        end = store.recorded_span_s(sid)
        rows = read_export_csv(export_csv(store, sid, tmp_path))
    (row,) = [r for r in rows if r.record == "baseline"]
    assert row.t_s == pytest.approx(t0) and row.end_t_s == pytest.approx(end)
    assert end > t0 + 9


async def test_too_short_baseline_is_refused_and_not_stored(tmp_path: Path) -> None:
    """``baseline/stop`` right after ``baseline/start``: the analyzer cannot use the period and
    scores against the automatic baseline, so the command says so (an error naming both
    lengths), the event says why, and the store keeps no baseline period; a long enough one
    is taken and stored."""
    from tests.conftest import model_daemon
    from tests.test_reconnect import until

    seen: list[tuple[str, dict[str, object]]] = []

    def tap(topic: str, payload: bytes | str, _retain: bool) -> None:
        leaf = topic.split("/", 2)[2]
        if leaf.endswith("/result") or leaf in ("event", "session"):
            seen.append((leaf, json.loads(payload)))

    daemon_cm = model_daemon(tmp_path, seed=3, tap=tap, processing={"baseline_s": 20})
    async with daemon_cm as (daemon, store, _strap, task):
        rt = daemon.runtimes[0]

        def session_t() -> float:
            return rt.session.now_t_s() if rt.session else 0.0

        # Past 70 s every component, the 64 s slow-oscillation one too, has data: a 40 s
        # rest period then holds 8 complete samples (from 40 s it held 3, at the edge).
        await until(lambda: session_t() > 70)
        assert rt.device_id is not None and rt.session is not None
        sid = rt.session.session_id

        async def command(name: str, cmd_id: str, **extra: str) -> dict[str, object]:
            body = json.dumps({"v": 1, "id": cmd_id, **extra}).encode()
            await daemon.on_command(rt.device_id or "", name, body, False)
            return next(p for leaf, p in seen if leaf.endswith("/result") and p["id"] == cmd_id)

        assert (await command("baseline/start", "1"))["status"] == "ok"
        short = await command("baseline/stop", "2")
        short_baseline = store.get(sid).baseline
        t0 = session_t()
        assert (await command("baseline/start", "3"))["status"] == "ok"
        again = await command("baseline/start", "3b")  # pressed twice: the start stays
        assert again["status"] == "error"
        assert "already being recorded (since t = " in str(again["error"])
        await until(lambda: session_t() > t0 + 40)
        long = await command("baseline/stop", "4")
        long_baseline = store.get(sid).baseline
        # A rest period still open when the hold starts ends there: left open it would
        # leave the rest of the session without a score.
        t1 = session_t()
        assert (await command("baseline/start", "5"))["status"] == "ok"
        await until(lambda: session_t() > t1 + 40)
        hold = await command("marker", "6", kind="hold-start")
        held_baseline = store.get(sid).baseline
        hold_t = store.markers(sid)[-1].t_s
        baseline_after_hold = rt.session.baseline
        daemon.stop()
        await asyncio.wait_for(task, 10)

    assert short["status"] == "error"
    error = str(short["error"])
    assert error.startswith("baseline too short (") and "< 15 s)" in error, error
    assert "using the automatic baseline (the next 20 s) instead" in error
    assert short_baseline is None  # what the live score does not use is not stored either
    events = [p for leaf, p in seen if leaf == "event"]
    # The first seconds of a session (too few beats) are a wait, not an unusable rhythm: no
    # "unusable-rhythm" / "rhythm-usable" pair at every start (automations would fire on it).
    assert not [e for e in events if e["kind"] in ("unusable-rhythm", "rhythm-usable")], events
    (too_short,) = [e for e in events if e["kind"] == "baseline-too-short"]
    assert too_short["text"] == error
    sessions = [p for leaf, p in seen if leaf == "session"]
    assert any(s["baseline"] == "pending" for s in sessions)  # the automatic one, again

    assert long["status"] == "ok" and long["error"] is None
    assert isinstance(long_baseline, BaselinePeriod)
    assert (
        long_baseline.stop_t_s is not None
        and long_baseline.stop_t_s - long_baseline.start_t_s >= 40
    )
    assert (sessions[-1]["state"], sessions[-1]["baseline"]) == ("stopped", "complete")

    assert hold["status"] == "ok"
    assert isinstance(held_baseline, BaselinePeriod)
    assert held_baseline.start_t_s == pytest.approx(t1, abs=1.5)
    assert held_baseline.stop_t_s == hold_t
    assert baseline_after_hold == "complete"
    (ended,) = [e for e in events if e["kind"] == "baseline-complete" and e["text"]]
    assert ended["text"] == "ended by hold-start" and ended["t_s"] == round(hold_t, 3)
