"""The raw-ECG (PMD) path under faults a real strap or link can produce: a frame with no
samples, a repeated frame, a START that is refused, unanswered or answered with unreadable
bytes, a session started mid-stream, a bug in the ECG code. Through the real stack (bleak →
bumble backend → virtual H10 replaying a real recording); the faults are injected on the wire,
at the virtual strap's GATT notifications and indications.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from bleak import BleakClient
from bumble.device import Device

from feedback.payloads import IndicesPayload, StatusPayload
from processing.ecg import RPeakDetector
from sensors.ecg_stream import DroppedFrames, PmdMalformedReply, PmdNoReply, PmdSession
from sensors.pmd import PMD_CONTROL_POINT_UUID, EcgFrame, PmdRequestRefused
from sensors.readers import read_rr_file
from sensors.virtual import VirtualAir, VirtualStrap
from sensors.virtual.backend import BumbleBleakClient
from sensors.virtual.pmd import PmdConfig
from sessions.store import SessionStore
from settle.config import load_config
from settle.daemon import Daemon
from settle.demo import virtual_world
from settle.ecg import SAMPLE_PERIOD_NS
from tests.conftest import DATA
from tests.test_e2e import CONFIG
from tests.test_pmd import LIMIT_S, START_ECG, H, h10_ecg_uv, pmd_strap
from tests.test_reconnect import client_for, json_tap, until

STOP_ECG = H("0300")
Tamper = Callable[[int, bytes], list[bytes]]
"""(index of the message among its kind, its bytes) → what is sent instead (none, one, two)."""


@pytest.fixture
async def air() -> AsyncIterator[VirtualAir]:
    async with VirtualAir() as virtual_air:
        yield virtual_air


def tamper(
    monkeypatch: pytest.MonkeyPatch,
    strap: VirtualStrap,
    *,
    data: Tamper | None = None,
    replies: Tamper | None = None,
) -> None:
    """Rewrite the strap's ECG data notifications and/or control-point reply indications."""
    assert strap.pmd is not None
    pmd = strap.pmd
    notify, indicate = Device.notify_subscriber, Device.indicate_subscriber
    n_data, n_reply = itertools.count(), itertools.count()

    async def notify_subscriber(
        self: Device, connection: Any, attribute: Any, value: Any = None, force: bool = False
    ) -> None:
        if data is None or attribute is not pmd.data or value is None:
            return await notify(self, connection, attribute, value, force)
        for v in data(next(n_data), bytes(value)):
            await notify(self, connection, attribute, v, force)

    async def indicate_subscriber(
        self: Device, connection: Any, attribute: Any, value: Any = None, force: bool = False
    ) -> None:
        if replies is None or attribute is not pmd.control_point or value is None:
            return await indicate(self, connection, attribute, value, force)
        for v in replies(next(n_reply), bytes(value)):
            await indicate(self, connection, attribute, v, force)

    monkeypatch.setattr(Device, "notify_subscriber", notify_subscriber)
    monkeypatch.setattr(Device, "indicate_subscriber", indicate_subscriber)


def ecg_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "raw ECG frame" in r.getMessage()
    ]


# -- START that fails: the strap is never left streaming --------------------------------------


async def test_a_stream_left_running_is_stopped_and_started_again(
    air: VirtualAir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real H10 still streaming (an earlier connection ended without STOP) answers START
    with ``f0 02 00 06 00``: the session stops that stream and starts its own."""
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air, unreliable_start_s=0.0)
        tamper(monkeypatch, strap, replies=lambda i, v: [H("f002000600")] if i == 0 else [v])
        async with (
            BleakClient(strap.address, **air.client_kwargs()) as client,
            PmdSession(client, sensor_id="h10") as pmd,
        ):
            await pmd.start_ecg()
            assert pmd.streaming
            async for received in pmd.frames():
                first = received.frame
                break
        assert strap.pmd is not None
        assert strap.pmd.requests == [START_ECG, STOP_ECG, START_ECG, STOP_ECG]
        assert first.samples_uv == h10_ecg_uv()[:73]  # the restarted stream, from its start
        assert strap.pmd.unclean_disconnects == []


@pytest.mark.parametrize(
    ("replies", "error", "match", "requests"),
    [
        pytest.param(lambda i, v: [] if i == 0 else [v], PmdNoReply,
                     r"no reply to PMD START within 0\.5 s \(are control-point indications",
                     [START_ECG, STOP_ECG], id="no reply"),
        pytest.param(lambda i, v: [v[:3]] if i == 0 else [v], PmdMalformedReply,
                     r"reply to PMD START could not be read: response shorter than 4 bytes "
                     r"\(f00200\)$", [START_ECG, STOP_ECG], id="unreadable reply"),
        pytest.param(lambda i, v: [H("f002000d00")] if i == 0 else [v], PmdRequestRefused,
                     "in its charger", [START_ECG, STOP_ECG], id="refused"),
        pytest.param(lambda i, v: [H("f002000600")] if i in (0, 2) else [v], PmdRequestRefused,
                     "already", [START_ECG, STOP_ECG, START_ECG, STOP_ECG],
                     id="already in state twice"),
    ],
)  # fmt: skip
async def test_a_failed_start_is_stopped_and_said_plainly(
    air: VirtualAir,
    monkeypatch: pytest.MonkeyPatch,
    replies: Tamper,
    error: type[Exception],
    match: str,
    requests: list[bytes],
) -> None:
    """The strap did start (only its reply was lost, garbled or contradicted): the session
    sends STOP, so the strap does not stream on unseen, and the error says what happened."""
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air)
        tamper(monkeypatch, strap, replies=replies)
        async with BleakClient(strap.address, **air.client_kwargs()) as client:
            pmd = PmdSession(client, sensor_id="h10", reply_timeout_s=0.5)
            await pmd.open()
            with pytest.raises(error, match=match) as info:
                await pmd.start_ecg()
            assert strap.pmd is not None
            assert not strap.pmd.streaming  # stopped while still connected
            if error is not PmdNoReply:
                assert "indications" not in str(info.value)
            await pmd.close()
        assert strap.pmd.requests == requests
        assert strap.pmd.unclean_disconnects == []


# -- dropped frames: skipped, counted, one warning line ---------------------------------------


def test_dropped_frames_warn_once_a_minute_with_a_count() -> None:
    now = [0.0]
    dropped = DroppedFrames("h10", clock=lambda: now[0])
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: warnings.append(r.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("sensors.ecg_stream")
    logger.addHandler(handler)
    try:
        for t in (0.0, 1.0, 30.0, 59.0):
            now[0] = t
            dropped.add("ECG frame holds no samples (header only)")
        assert len(warnings) == 1 and "1 raw ECG frame dropped" in warnings[0]
        now[0] = 61.0
        dropped.add("timestamp not after the previous frame's")
        assert len(warnings) == 2
        assert "4 raw ECG frames dropped since the last warning, 5 in all" in warnings[1]
        assert "latest: timestamp not after" in warnings[1]
        dropped.flush()  # nothing unreported
        now[0] = 62.0
        dropped.add("ECG frame holds no samples (header only)")
        dropped.flush()  # e.g. the stream ended
        assert len(warnings) == 3 and "1 raw ECG frame dropped" in warnings[2]
    finally:
        logger.removeHandler(handler)
    assert dropped.total == 6 and dropped.unreported == 0


async def test_an_empty_frame_is_dropped_a_repeated_one_ignored_and_the_stream_goes_on(
    air: VirtualAir, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    header_only: list[bytes] = []

    def faults(i: int, v: bytes) -> list[bytes]:
        if i == 2:
            header_only.append(v[:10])
            return [v[:10]]  # the header of a frame, no samples
        return [v, v] if i == 4 else [v]  # a frame delivered twice

    caplog.set_level(logging.DEBUG, logger="sensors.ecg_stream")
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air, unreliable_start_s=0.0)
        tamper(monkeypatch, strap, data=faults)
        frames: list[EcgFrame] = []
        async with (
            BleakClient(strap.address, **air.client_kwargs()) as client,
            PmdSession(client, sensor_id="h10") as pmd,
        ):
            await pmd.start_ecg()
            async for received in pmd.frames():
                frames.append(received.frame)
                if len(frames) == 8:
                    break
    # The repeat lost nothing: ignored, not reported as a dropped frame (it used to be).
    assert (pmd.malformed, pmd.repeated, pmd.out_of_order, pmd.dropped.total) == (1, 1, 0, 1)
    ecg = h10_ecg_uv()
    assert [f.samples_uv for f in frames] == [
        ecg[73 * k : 73 * (k + 1)] for k in (0, 1, 3, 4, 5, 6, 7, 8)
    ]
    warnings = ecg_warnings(caplog)
    assert warnings[0].startswith("h10: 1 raw ECG frame dropped since the last warning, 1 in all")
    assert "no samples" in warnings[0]
    assert len(warnings) == 1  # nothing more to report when it closed
    # The bytes are at DEBUG only (ECG is health data), never in a warning.
    assert all(header_only[0].hex() not in w and "data=" not in w for w in warnings)
    assert any(
        header_only[0].hex() in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
    )


# -- the strap's clock steps -------------------------------------------------------------------


async def _first_frames(
    air: VirtualAir, strap: VirtualStrap, speed: float, n: int
) -> tuple[list[Any], PmdSession]:
    """The first ``n`` ECG frames a :class:`PmdSession` gives from ``strap`` (started), and
    the session (closed: its counters as they ended)."""
    async with asyncio.timeout(LIMIT_S):
        received = []
        async with (
            BleakClient(strap.address, **air.client_kwargs()) as client,
            PmdSession(client, sensor_id="h10", time_scale=speed) as pmd,
        ):
            await pmd.start_ecg()
            async for frame in pmd.frames():
                received.append(frame)
                if len(received) == n:
                    break
    return received, pmd


async def test_a_step_of_the_strap_clock_is_told_from_a_late_delivery(
    air: VirtualAir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app sets the H10's clock an hour forward, then two hours back; later the link holds
    a frame for 3.5 s and delivers the backlog at once. The steps are flagged on their frames
    (the timestamp moved an hour while the arrival moved 0.56 s); the late frames are not
    (frames are only ever late). Nothing is dropped: every later frame used to be, after a step
    back ("timestamp not after the previous frame's"), until the connection ended."""
    speed = 10.0
    pmd_config = PmdConfig(
        ecg_uv=h10_ecg_uv(), unreliable_start_s=0.0, clock_steps=((3.0, 3600.0), (6.0, -7200.0))
    )
    strap = VirtualStrap(air, [800.0] * 2000, speed=speed, pmd=pmd_config)
    await strap.start()
    assert strap.pmd is not None
    data_char = strap.pmd.data
    held = asyncio.Event()
    twelfth = h10_ecg_uv()[73 * 12 : 73 * 13]
    notify = Device.notify_subscriber

    async def notify_subscriber(
        self: Device, connection: Any, attribute: Any, value: Any = None, force: bool = False
    ) -> None:
        ours = value is not None and attribute is data_char
        frame = EcgFrame.from_bytes(value) if ours else None
        if frame is not None and not held.is_set() and frame.samples_uv == twelfth:
            held.set()
            await asyncio.sleep(3.5 / speed)  # the link retries; the strap queues frames
        await notify(self, connection, attribute, value, force)

    monkeypatch.setattr(Device, "notify_subscriber", notify_subscriber)
    received, pmd = await _first_frames(air, strap, speed, 18)
    ecg = h10_ecg_uv()
    assert [r.frame.samples_uv for r in received] == [ecg[73 * k : 73 * (k + 1)] for k in range(18)]
    steps = {k: r.clock_step_s for k, r in enumerate(received) if r.clock_step_s is not None}
    assert steps.keys() == {5, 10}  # the first frames stamped after 3.0 s and 6.0 s
    assert steps[5] == pytest.approx(3600.0, abs=1.0)
    assert steps[10] == pytest.approx(-7200.0, abs=1.0)
    assert held.is_set() and received[13].recv_mono_s - received[11].recv_mono_s > 3.0 / speed
    assert (pmd.clock_steps, pmd.dropped.total, pmd.out_of_order) == (2, 0, 0)


async def test_frames_lost_then_delivered_in_a_burst_are_not_a_step_of_the_strap_clock(
    air: VirtualAir, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The link holds frames 10-16; 12-15 are lost, and 10, 11 and 16 arrive together. Frame
    16's timestamp is 2.8 s past frame 11's while its arrival is not: it was reported as "the
    strap's ECG clock jumped +2.8 s; raw ECG re-anchored" (in the daemon: a gap record and a
    `gap` event) though every timestamp was right. A jump of a whole number of frames that
    arrives no earlier than its timestamp allows is frames lost."""
    caplog.set_level(logging.WARNING, logger="sensors.ecg_stream")
    held: list[bytes] = []

    def data(i: int, v: bytes) -> list[bytes]:
        if i in (10, 11):
            held.append(v)
            return []
        if 12 <= i <= 15:
            return []
        return [*held, v] if i == 16 else [v]

    speed = 10.0
    pmd_config = PmdConfig(ecg_uv=h10_ecg_uv(), sample_rate_hz=130.16, unreliable_start_s=0.0)
    strap = VirtualStrap(air, [800.0] * 2000, speed=speed, pmd=pmd_config)
    tamper(monkeypatch, strap, data=data)
    await strap.start()
    received, pmd = await _first_frames(air, strap, speed, 14)
    ecg = h10_ecg_uv()
    kept = [*range(12), 16, 17]
    assert [r.frame.samples_uv for r in received] == [ecg[73 * k : 73 * (k + 1)] for k in kept]
    assert received[12].recv_mono_s - received[11].recv_mono_s < 0.1 / speed  # the burst
    assert [r.clock_step_s for r in received] == [None] * 14
    assert (pmd.clock_steps, pmd.dropped.total) == (0, 0)
    assert not [r for r in caplog.records if "jumped" in r.getMessage()]


# -- in the daemon -------------------------------------------------------------------------


def _settings(tmp_path: Path, **overrides: Any) -> Any:
    return load_config(
        CONFIG, mqtt={"enabled": False}, storage={"db_path": tmp_path / "s.db"}, **overrides
    )


def _h10(air: VirtualAir, speed: float) -> VirtualStrap:
    rr = [float(x) for x in read_rr_file(DATA / "polar_h10_pvc_device.csv").rr_ms]
    return VirtualStrap(
        air, rr, name="Polar H10 0A1B2C3D", speed=speed, pmd=PmdConfig(ecg_uv=h10_ecg_uv())
    )


def holes(t_ns: npt.NDArray[np.int64]) -> int:
    """Places where the stored ECG skips more than half a sample period."""
    return int((np.diff(t_ns) > 1.5 * SAMPLE_PERIOD_NS).sum())


async def test_daemon_skips_a_frame_without_samples_and_keeps_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A header-only frame used to end the ECG silently and make the daemon fail at stop,
    leaving the session ``running``."""
    caplog.set_level(logging.INFO)
    settings = _settings(tmp_path)
    statuses: list[StatusPayload] = []

    def tap(topic: str, payload: bytes | str, _retain: bool) -> None:
        if topic.endswith("/status"):
            statuses.append(StatusPayload.model_validate_json(payload))

    async with VirtualAir() as air:
        strap = _h10(air, 10.0)
        tamper(monkeypatch, strap, data=lambda i, v: [v[:10]] if i == 10 else [v])
        await strap.start()
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(settings, store, [client_for(air, strap)], time_scale=10.0, tap=tap)
            task = asyncio.create_task(daemon.run())
            await until(lambda: daemon.ecg.frames >= 25, 40)
            daemon.stop()
            await asyncio.wait_for(task, 15)  # no exception
            (info,) = store.list_sessions()
            ecg = store.ecg(info.id)
            dev = daemon.runtimes[0].device_id
        await strap.stop()
    assert info.state == "stopped"
    assert daemon.ecg.dropped == daemon.ecg.dropped_frames(dev) == 1
    assert daemon.ecg.frames >= 25 and len(ecg) >= 24 * 73  # recording went on after it
    assert holes(ecg.t_ns) == 1  # where the empty frame was
    (warning,) = ecg_warnings(caplog)
    assert "1 raw ECG frame dropped" in warning and "no samples" in warning
    assert statuses[0].ecg_dropped == 0
    assert (statuses[-1].state, statuses[-1].ecg_dropped) == ("stopped", 1)  # MQTT status


async def test_a_bug_in_the_ecg_path_never_stops_the_heart_rate_or_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = [0]

    class BrokenDetector(RPeakDetector):
        def update(self, *args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == 8:
                raise RuntimeError("bug")
            return super().update(*args, **kwargs)

    monkeypatch.setattr("settle.ecg.RPeakDetector", BrokenDetector)
    settings = _settings(tmp_path)
    async with VirtualAir() as air:
        strap = _h10(air, 10.0)
        await strap.start()
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(settings, store, [client_for(air, strap)], time_scale=10.0)
            events: list[dict[str, Any]] = []
            daemon.tap = lambda topic, payload, _retain: (
                events.append(json.loads(payload)) if topic.endswith("/event") else None
            )
            task = asyncio.create_task(daemon.run())
            await until(lambda: calls[0] >= 8, 40)  # the ECG task has failed
            rt = daemon.runtimes[0]
            # Beats the daemon took in (not the strap's count: a beat still in flight at the
            # stop is not the daemon's to store, and under load there were two).
            beats = rt.session.seq if rt.session is not None else 0
            await until(lambda: rt.session is not None and rt.session.seq > beats + 10, 40)
            daemon.stop()
            await asyncio.wait_for(task, 15)  # no exception
            (info,) = store.list_sessions()
            stored = store.read_session(info.id)
        await strap.stop()
    assert info.state == "stopped"
    assert len(stored.beats) >= beats + 10  # heart rate went on
    assert any(
        "raw ECG stopped by an internal error" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR
    )
    assert strap.pmd is not None and strap.pmd.unclean_disconnects == []  # STOP was sent
    # Said where the practitioner and MQTT subscribers look, not only in the log.
    stopped = [e for e in events if e["kind"] == "ecg-stopped"]
    assert [e["text"] for e in stopped] == [
        "raw ECG stopped (internal error); heart rate continues"
    ]
    assert stopped[0]["session"] == info.id


class _NoPmdFeaturesAfterFirst(BumbleBleakClient):
    """Reads of the PMD control point (its features) come back empty after the first one:
    the PMD session raises PmdUnavailable at every reconnect."""

    reads = 0

    async def read_gatt_char(self, characteristic: Any, **kwargs: Any) -> bytearray:
        value = await super().read_gatt_char(characteristic, **kwargs)
        if str(characteristic.uuid).lower() == PMD_CONTROL_POINT_UUID:
            type(self).reads += 1
            if self.reads > 1:
                return bytearray()
        return value


async def test_raw_ecg_unavailable_at_a_reconnect_hands_the_indices_back_to_the_strap_rr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``rr_source = "ecg"``, the ECG unavailable after a reconnect: the log said "using its
    RR" but the session stayed on the ECG source, so the strap's RR were recorded and never
    analysed (150 s later: indices n = 0, still warming up). Now the ECG stopped is said (an
    ``ecg-stopped`` event) and the strap's RR drive the indices."""
    caplog.set_level(logging.INFO)
    _NoPmdFeaturesAfterFirst.reads = 0
    settings = _settings(tmp_path, processing={"rr_source": "ecg"})
    indices: list[IndicesPayload] = []
    events, tap = json_tap("/event")
    async with VirtualAir() as air:
        strap = _h10(air, 10.0)
        await strap.start()
        client = client_for(air, strap, backend=_NoPmdFeaturesAfterFirst)
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(
                settings, store, [client], time_scale=10.0, tap=tap, on_indices=indices.append
            )
            task = asyncio.create_task(daemon.run())
            rt = daemon.runtimes[0]
            try:
                await until(lambda: rt.session is not None and rt.session.rr_source == "ecg", 40)
                await strap.drop(reappear_after_s=0.1)
                await until(lambda: rt.reconnects == 1 and rt.state == "streaming", 40)
                seq = rt.session.seq if rt.session is not None else 0
                await until(lambda: rt.session is not None and rt.session.seq > seq + 90, 60)
                source = rt.session.rr_source if rt.session is not None else None
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 15)
        await strap.stop()
    assert _NoPmdFeaturesAfterFirst.reads >= 2  # the reconnect did find no ECG
    assert source == "hrs"
    # About 90 s of the strap's RR after the reconnect: analysed, not "warming up".
    assert indices[-1].n > 30 and not indices[-1].warming_up and indices[-1].hr_bpm is not None
    reason = "unexpected PMD features: PMD control point: features read shorter than 2 bytes"
    stopped = [e["text"] for e in events if e["kind"] == "ecg-stopped"]
    assert len(stopped) == 1 and stopped[0].startswith(f"raw ECG stopped ({reason}")
    switched = [e["text"] for e in events if e["kind"] == "rr-source"]
    assert switched[-1].endswith("the strap's RR drives the indices")
    said = [r.getMessage() for r in caplog.records if r.name == "settle.ecg"]
    assert any(f"raw ECG stopped ({reason}" in m for m in said)
    assert not any("using its RR" in m for m in said)


async def test_a_session_started_mid_stream_keeps_the_ecg_from_its_start(
    tmp_path: Path,
) -> None:
    """The frame that straddles a new session's t = 0 keeps its samples at t ≥ 0.

    The daemon runs at a tenth of the strap's speed, so every frame (0.56 strap s) arrives
    within 0.06 session s of the previous one: the first frame after any start straddles it.
    """
    settings = _settings(tmp_path)
    async with VirtualAir() as air:
        strap = _h10(air, 10.0)
        await strap.start()
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(settings, store, [client_for(air, strap)], time_scale=1.0)
            task = asyncio.create_task(daemon.run())
            await until(lambda: daemon.ecg.frames >= 10, 40)
            dev = daemon.runtimes[0].device_id
            assert dev is not None
            start = {"id": "1", "intention": {"target": "self", "statement": "I am safe"}}
            await daemon.on_command(
                dev, "session/start", json.dumps(start).encode(), False, source="cli"
            )
            frames = daemon.ecg.frames
            await until(lambda: daemon.ecg.frames >= frames + 5, 40)
            daemon.stop()
            await asyncio.wait_for(task, 15)
            first, second = sorted(store.list_sessions(), key=lambda s: s.started_ms)
            ecg = store.ecg(second.id)
        await strap.stop()
    assert first.state == second.state == "stopped"
    assert 0 <= ecg.t_ns[0] < SAMPLE_PERIOD_NS  # not a frame later
    assert holes(ecg.t_ns) == 0


@pytest.mark.parametrize(
    "step_s", [3600.0, -3600.0, -1.5], ids=["forward", "back", "back-under-2-s"]
)
async def test_the_ecg_stays_on_session_time_when_the_strap_clock_steps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, step_s: float
) -> None:
    """An app sets the H10's clock an hour forward (or back) 8 s into the stream. The stored
    ECG used to run to an hour past the session's end (an EDF export of 3 620 s; a jump of
    years made it build 1e8 records), or, set back, to stop: every later frame was dropped as
    "timestamp not after the previous frame's". Now it is re-anchored, the seam a gap. A step
    back under 2 s was not told from frames out of order: the frames until the strap's clock
    caught up were dropped (1.1 s of ECG for 1.5 s back, a WARNING of dropped frames)."""
    caplog.set_level(logging.INFO, logger="settle.ecg")
    settings = _settings(tmp_path)
    rr = [float(x) for x in read_rr_file(DATA / "polar_h10_pvc_device.csv").rr_ms]
    pmd_config = PmdConfig(ecg_uv=h10_ecg_uv(), clock_steps=((8.0, step_s),))
    async with VirtualAir() as air:
        strap = VirtualStrap(air, rr, name="Polar H10 0A1B2C3D", speed=10.0, pmd=pmd_config)
        await strap.start()
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(settings, store, [client_for(air, strap)], time_scale=10.0)
            task = asyncio.create_task(daemon.run())
            await until(lambda: daemon.ecg.frames >= 36, 40)  # 20 s of ECG
            daemon.stop()
            await asyncio.wait_for(task, 15)
            (info,) = store.list_sessions()
            ecg = store.ecg(info.id)
            stored = store.read_session(info.id)
        await strap.stop()
    t_s = ecg.t_ns / 1e9
    assert t_s[-1] < max(b.beat_t_s for b in stored.beats) + 2  # within the session
    # Nothing dropped after the step (set back, the frames until the strap's clock caught up
    # were: 2 frames for 1.5 s, all of them for an hour). A less-delayed frame may pull the
    # time base back and not store the samples it overlaps (on a host loaded by other tests,
    # 40 of them once); the daemon logs that (INFO) from 0.1 s, and less overlaps < 13.
    overlapped = sum(
        int(r.getMessage().split("; ")[1].split(" samples")[0])
        for r in caplog.records
        if "re-timed" in r.getMessage()
    )
    assert len(ecg) + overlapped >= 35 * 73 - 13
    assert daemon.ecg.dropped == 0 and not ecg_warnings(caplog)
    assert np.all(np.diff(ecg.t_ns) > 0)
    assert holes(ecg.t_ns) <= 1  # the seam: the frame's arrival, never before what is stored
    # (A host stalled by other tests for half a second, 5 s at speed 10, may add a gap of the
    # strap's beats: not what this is about.)
    (gap,) = [g for g in stored.gaps if g.reason == "raw ECG clock step"]
    assert 7 < gap.start_t_s < 12
    assert gap.end_t_s - gap.start_t_s < 1.0
    # R peaks are found on both sides, on the same time base, none across the seam.
    after = [b for b in stored.ecg_beats if b.beat_t_s > gap.end_t_s]
    assert len(after) > 5 and after[0].rr_ms is None
    assert all(b.rr_ms is None or 400 < b.rr_ms < 1500 for b in after if b.beat_class is None)


async def test_a_late_first_frame_does_not_make_the_ecg_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The link holds the first 4 ECG frames back and delivers them in one burst with the 5th
    (a link retrying at stream start). The session's ECG was mapped by the first frame's
    arrival alone, so every sample and R peak came 2.3 s late against the strap's beats, for
    the whole session; the least-delayed frame now sets the mapping. On the demo's synthetic
    H10 each R peak ends the very interval the strap notifies: the ECG beats and the strap's
    beats are the same beats (undelayed: +0.01 s apart, median)."""
    caplog.set_level(logging.INFO, logger="settle.ecg")
    settings = load_config(
        CONFIG, mqtt={"enabled": False}, http={"enabled": False},
        storage={"db_path": tmp_path / "s.db"},
    )  # fmt: skip
    held: list[bytes] = []

    def burst(i: int, value: bytes) -> list[bytes]:
        if i < 4:
            held.append(value)
            return []
        return [*held, value] if i == 4 else [value]

    async with virtual_world(replay=None, speed=5.0, seed=3, ecg=True) as world:
        strap = world.straps[0]
        tamper(monkeypatch, strap, data=burst)
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(settings, store, [client_for(world.air, strap)], time_scale=5.0)
            task = asyncio.create_task(daemon.run())
            await until(lambda: daemon.ecg.beats >= 50, 40)
            daemon.stop()
            await asyncio.wait_for(task, 15)
            (info,) = store.list_sessions()
            stored, ecg = store.read_session(info.id), store.ecg(info.id)
    assert np.all(np.diff(ecg.t_ns) > 0)
    # After the strap's unreliable first seconds (their spikes are flagged implausible).
    ecg_beats = [b for b in stored.ecg_beats if b.beat_class is None and b.rr_ms is not None]
    assert all(b.beat_t_s > a.beat_t_s for a, b in itertools.pairwise(stored.ecg_beats))
    # Pair the ECG's beats with the strap's by their RR (the same intervals).
    ecg_rr = np.array([b.rr_ms for b in ecg_beats])
    strap_rr = np.array([b.rr_ms for b in stored.beats])
    n = len(ecg_rr) - 10
    shift = min(
        range(len(strap_rr) - n),
        key=lambda k: float(np.median(np.abs(ecg_rr[:n] - strap_rr[k : k + n]))),
    )
    assert float(np.median(np.abs(ecg_rr[:n] - strap_rr[shift : shift + n]))) < 2.0  # ms
    pairs = zip(ecg_beats[:n], stored.beats[shift : shift + n], strict=True)
    apart = [e.beat_t_s - s.beat_t_s for e, s in pairs]
    assert abs(float(np.median(apart))) < 0.1  # s; 2.3 s with the first frame's arrival
    # Each frame of the burst pulled the mapping back by one frame (0.56 s): 4 held.
    retimed = [r.getMessage() for r in caplog.records if "re-timed" in r.getMessage()]
    total_s = sum(float(m.split("re-timed ")[1].split(" s")[0]) for m in retimed)
    assert total_s == pytest.approx(4 * 73 / 130, abs=0.1)


# -- a stream that stalls with the link up ----------------------------------------------------


async def _stalled_h10(
    tmp_path: Path, *, for_good: bool, restarts: int
) -> tuple[Daemon, VirtualStrap, list[dict[str, Any]], int, int, Any, int]:
    """A daemon recording a virtual H10 (speed 10) whose ECG stream hangs after 20 frames,
    the link and heart rate going on; it stalls after 1 s without a frame and restarts with
    0.1 s of backoff, ``restarts`` times at most. Runs until the ECG streams again (or, stalled
    ``for_good``, until it is given up and 20 more beats came); returns the daemon, the strap,
    its events, the beats and ECG frames at the stall, the stored session and its ECG sample
    times, and the beats recorded from the stall until the ECG came back or was given up."""
    settings = _settings(tmp_path)
    events, tap = json_tap("/event")
    rr = [float(x) for x in read_rr_file(DATA / "polar_h10_pvc_device.csv").rr_ms]
    pmd = PmdConfig(ecg_uv=h10_ecg_uv(), loop=True)
    async with VirtualAir() as air:
        strap = VirtualStrap(air, rr, name="Polar H10 0A1B2C3D", speed=10.0, pmd=pmd)
        await strap.start()
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(settings, store, [client_for(air, strap)], time_scale=10.0, tap=tap)
            daemon.ecg.stall_timeout_s, daemon.ecg.restart_base_s = 1.0, 0.1
            daemon.ecg.restarts = restarts
            task = asyncio.create_task(daemon.run())
            rt = daemon.runtimes[0]
            try:
                await until(lambda: daemon.ecg.frames >= 20, 40)
                assert strap.pmd is not None and rt.session is not None
                strap.pmd.stall(for_good=for_good)
                beats, frames = rt.session.seq, daemon.ecg.frames
                if for_good:
                    await until(lambda: any("did not bring" in e["text"] for e in events), 60)
                else:
                    await until(lambda: daemon.ecg.frames >= frames + 20, 60)
                during = rt.session.seq - beats
                n = rt.session.seq
                await until(lambda: rt.session is not None and rt.session.seq > n + 20, 40)
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 15)
            (info,) = store.list_sessions()
            stored = (store.read_session(info.id), store.ecg(info.id).t_ns)
        await strap.stop()
    return daemon, strap, events, beats, frames, stored, during


async def test_an_ecg_stream_that_stalls_with_the_link_up_is_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The H10's PMD stream stops sending frames, the link and heart rate going on: the ECG
    task ended with "raw ECG stopped (ECG stream stalled …)" and never tried again for as
    long as the link lasted (hours of a session without ECG). Now the stream is stopped and
    started again after a backoff, said in one line, and the ECG goes on."""
    caplog.set_level(logging.INFO, logger="settle.ecg")
    daemon, strap, events, beats, frames, (stored, t_ns), during = await _stalled_h10(
        tmp_path, for_good=False, restarts=5
    )
    assert strap.pmd is not None and strap.pmd.frames_withheld > 0
    assert strap.pmd.streams_started >= 2 and strap.pmd.unclean_disconnects == []
    assert strap.pmd.requests[:3] == [START_ECG, STOP_ECG, START_ECG]  # STOP, then START
    said = [r.getMessage() for r in caplog.records if r.name == "settle.ecg"]
    dev = daemon.runtimes[0].device_id
    stalled = [m for m in said if "raw ECG stalled" in m]
    assert stalled[0].startswith(
        f"{dev}: raw ECG stalled (no ECG frame for 1 s, the link up); restarting it in "
    )
    assert stalled[0].endswith(" s (restart 1 of 5); heart rate continues")
    assert f"{dev}: raw ECG streaming again (restart 1)" in said
    assert not any("raw ECG stopped" in m for m in said)
    (event,) = [e for e in events if e["kind"] == "ecg-stopped"][:1]
    assert event["text"] == (
        "raw ECG stalled (no ECG frame for 1 s, the link up); restarting it; heart rate continues"
    )
    # Heart rate went on through the stall; the ECG after the restart is stored, later
    # than everything before it.
    assert during > 5 and len(stored.beats) > beats + 20
    assert daemon.ecg.frames >= frames + 20 and len(t_ns) >= (frames + 19) * 73
    assert np.all(np.diff(t_ns) > 0) and holes(t_ns) >= 1  # the stall, not bridged
    after = [b for b in stored.ecg_beats if b.beat_t_s > event["t_s"] + 2]
    assert len(after) > 5  # R peaks found in the restarted stream


async def test_an_ecg_stream_that_never_comes_back_is_given_up_after_a_few_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Firmware that needs a power cycle: every restarted stream stays silent. The restarts
    are bounded (here 2), then the ECG is given up for the connection with one line and an
    event; heart rate goes on."""
    caplog.set_level(logging.INFO, logger="settle.ecg")
    daemon, strap, events, beats, _frames, (stored, _t_ns), during = await _stalled_h10(
        tmp_path, for_good=True, restarts=2
    )
    assert strap.pmd is not None and strap.pmd.streams_started == 3  # the first + 2 restarts
    dev = daemon.runtimes[0].device_id
    said = [r.getMessage() for r in caplog.records if r.name == "settle.ecg"]
    assert sum("raw ECG stalled" in m for m in said) == 1
    assert sum("raw ECG restart 1 of 2 failed (no ECG frame for 1 s" in m for m in said) == 1
    assert said[-1] == (
        f"{dev}: raw ECG stopped: 2 restarts did not bring it back (latest: no ECG frame for "
        "1 s, the link up); heart rate continues"
    )
    stopped = [e["text"] for e in events if e["kind"] == "ecg-stopped"]
    assert len(stopped) == 2 and stopped[1] == (
        "raw ECG stopped (no ECG frame for 1 s, the link up; 2 restarts did not bring it back);"
        " heart rate continues"
    )
    assert during > 5 and len(stored.beats) > beats + 20  # heart rate throughout
    assert strap.pmd.unclean_disconnects == []
