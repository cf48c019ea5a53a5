"""Faults a daemon beside a practitioner must survive (issue 8, "Faults"), against real parts:
the virtual BLE stack (bumble GATT server, the project's bleak backend), a real mosquitto on
127.0.0.1, real SQLite files, and ``settle demo`` as a subprocess for ``kill -9``.

Every test asserts two things: nothing the strap sent is lost or stored twice, and the user
sees the right state (status, availability, session state, one clear log line).

Time is compressed: a virtual strap at ``speed`` S lives S simulated seconds per wall second,
and the daemon gets ``time_scale=S`` so its anchoring to arrival times agrees. "Reappears
after 1 s" and "after 5 min" are session seconds; the figures are in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import csv
import errno
import itertools
import json
import logging
import os
import random
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from feedback.mqtt import MqttLink
from feedback.payloads import BeatPayload, StatusPayload
from sensors.readers import read_rr_file
from sensors.virtual.air import VirtualAir
from sensors.virtual.model import ModelParams, PhysioModel
from sensors.virtual.strap import VirtualStrap
from sessions.exporters import export_session
from sessions.store import SessionState, SessionStore
from settle.app import serve
from settle.broker_options import connect_options
from settle.config import Settings, load_config
from settle.daemon import Daemon, StrapRuntime
from settle.demo import virtual_world
from settle.pipeline import StrapPipeline
from tests.conftest import Mosquitto, model_daemon, start_mosquitto, strap_client
from tests.test_e2e import CONFIG, RECORDING, Collector, quantised
from tests.test_mqtt import any_broker  # noqa: F401  (the fixture daemon_on_broker takes)
from tests.test_mqtt_hardening import (
    DEV,
    RunningDaemon,
    _settle,
    daemon_on_broker,  # noqa: F401  (the fixture)
)
from tests.test_reconnect import until

pytestmark = pytest.mark.mosquitto


def sent_raw(strap: VirtualStrap) -> list[int]:
    return [r for m in strap.sent for r in m.rr_raw]


def lost_outside_faults(
    sent: list[int], stored: list[int], faults: list[tuple[int, int]]
) -> list[int]:
    """Beats (indices into ``sent``) missing from ``stored`` that no fault explains.

    ``stored`` must be ``sent`` in order with some beats left out (AssertionError otherwise).
    ``faults`` holds ``(processed, n_sent)`` per fault: beats the daemon had processed and
    beats the strap had sent when it was over; the last one is the stop (beats sent after it
    belong to no session). A beat is explained when it lies in the hole in ``stored`` around
    the fault: after the last beat stored that was sent before the fault was over and
    before the first beat stored after that (or between the last beat processed before the
    fault and the next one stored). Both ends move with the event loop: ``strap.drop()``
    takes several steps during which the daemon stores on, and a link cut silently can take
    one more notification from the strap before it is gone (CI: beat 159 lost just after
    ``n_sent``). It was in the air when the link ended, inside the gap the daemon records.
    A beat lost while streaming, with beats stored on both sides, is not.
    """
    where: list[int] = []  # where[j]: index into sent of stored beat j
    missing: list[int] = []
    for i, rr in enumerate(sent):
        if len(where) < len(stored) and stored[len(where)] == rr:
            where.append(i)
        else:
            missing.append(i)
    assert len(where) == len(stored), f"stored beat {len(where)} was never sent or is out of order"
    after_stop = faults[-1][1]

    def hole(k: int) -> range:  # between stored beats k - 1 and k
        return range(where[k - 1] + 1 if k else 0, where[k] if k < len(where) else after_stop)

    windows = [hole(n) for n, _ in faults]
    windows += [hole(bisect.bisect_left(where, sent_by)) for _, sent_by in faults]
    return [i for i in missing if i < after_stop and not any(i in w for w in windows)]


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def device_messages(col: Collector, leaf: str) -> list[bytes]:
    return [p for t, p, _ in col.messages if t.endswith("/" + leaf) and "/bridge/" not in t]


# -- 1. the strap drops, again and again -------------------------------------------------------

DROP_SPEED = 50.0
DROPS = 20


async def test_twenty_drops_and_a_long_absence_lose_nothing(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """20 drops at seeded random moments (some clean, some a silent link loss), each back after
    1 s of session time, then one absence of 5 min: one session, every beat the strap sent
    stored (and published) exactly once, in order; one gap record per absence; status and
    availability follow every change."""
    rng = random.Random(20)
    db = tmp_path / "s.db"
    settings = load_config(
        CONFIG,
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        storage={"db_path": db},
        homeassistant={"enabled": False},
    )
    kinds: list[str] = []
    faults: list[tuple[int, int]] = []
    """(beats processed, beats sent) when each fault hit, then at the stop."""
    async with Collector(mosquitto.host, mosquitto.port) as col, VirtualAir() as air:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=8), speed=DROP_SPEED)
        await strap.start()
        link = MqttLink(connect_options(settings), queue_size=100_000)
        with SessionStore.open(db) as store:
            async with link:
                client = strap_client(air, strap)
                daemon = Daemon(settings, store, [client], link=link, time_scale=DROP_SPEED)
                task = asyncio.create_task(daemon.run())
                rt = daemon.runtimes[0]

                def seq_now() -> int:
                    return rt.session.seq if rt.session else 0

                await until(lambda: seq_now() > 20)
                for i in range(DROPS + 1):
                    await asyncio.sleep(rng.uniform(0.05, 0.5))  # a random moment mid-stream
                    seq = seq_now()
                    if i == DROPS:
                        kinds.append("5 min")
                        await strap.drop(reappear_after_s=300 / DROP_SPEED)
                    elif rng.random() < 0.4:
                        kinds.append("silent")
                        strap.lose_link()  # out of range: a supervision timeout, no goodbye
                    else:
                        kinds.append("drop")
                        await strap.drop(reappear_after_s=1 / DROP_SPEED)
                    faults.append((seq, len(sent_raw(strap))))
                    if i == DROPS:
                        await until(lambda: rt.state in ("scanning", "backoff"))
                        assert rt.last_error is not None  # status says why it is away
                    n = i + 1
                    await until(lambda n=n: rt.reconnects == n and rt.state == "streaming", 20)  # type: ignore[misc]
                seq = seq_now()
                await until(lambda: rt.session is not None and rt.session.seq > seq + 10)
                faults.append((seq_now(), len(sent_raw(strap))))
                daemon.stop()
                await asyncio.wait_for(task, 15)
                assert link.dropped == 0
                # Nothing received was dropped on the way in either (the beats missing at a
                # fault were never received: in the air when the link ended).
                assert client.overflowed == 0 and client.malformed == 0
            (summary,) = store.list_sessions()
            beats = store.beats(summary.id)
            gaps = store.gaps(summary.id)
        await strap.stop()
        await asyncio.sleep(0.3)  # the last retained messages reach the collector

    assert kinds.count("silent") >= 5 and kinds.count("drop") >= 5
    assert summary.state == SessionState.STOPPED  # one session throughout
    # Every beat the daemon received is stored once, in order, and published once. The only
    # beats the strap sent that are not stored were in the air when its link ended (the strap
    # counts a notification once its controller took it; a link that ends loses what is
    # queued, as on real hardware): at most that one notification per fault may miss.
    stored = [b.rr_raw or 0 for b in beats]
    published = [BeatPayload.model_validate_json(p) for p in device_messages(col, "beat")]
    assert [round(r * 1024 / 1000) for b in published for r in b.rr_ms] == stored
    assert lost_outside_faults(sent_raw(strap), stored, faults) == []
    assert len(stored) >= faults[-1][0]
    assert len(sent_raw(strap)) - len(stored) <= 3 * len(faults)  # one notification a fault
    assert [b.seq for b in beats] == list(range(len(beats)))
    assert all(b > a for a, b in itertools.pairwise(b.beat_t_s for b in beats))
    assert all(b.beat_class is not None for b in beats)  # every beat annotated
    # One gap per absence, in the store, none spanning another; the long one is 5 min+.
    reconnect_gaps = [g for g in gaps if g.reason == "reconnect"]
    assert len(reconnect_gaps) == DROPS + 1
    assert all(g.end_t_s > g.start_t_s for g in gaps)
    assert all(b.start_t_s >= a.end_t_s for a, b in itertools.pairwise(gaps)), gaps
    assert reconnect_gaps[-1].end_t_s - reconnect_gaps[-1].start_t_s >= 300
    # What a subscriber saw: online/offline for every drop, then offline at the stop.
    avail = [p.decode() for p in device_messages(col, "availability")]
    assert avail.count("online") == DROPS + 2 and avail[-1] == "offline"
    # Each change once: retained, a repeat is news to nobody (offline was re-published at
    # every failed scan of a long absence, until 2026-11-29).
    assert all(a != b for a, b in itertools.pairwise(avail)), avail
    statuses = [StatusPayload.model_validate_json(p) for p in device_messages(col, "status")]
    assert any(s.state == "backoff" and s.last_error for s in statuses)
    # Signal strength, read at every (re)connection from the advertisement it was found by.
    assert all(isinstance(s.rssi, int) for s in statuses if s.state == "streaming")
    final = statuses[-1]
    assert (final.state, final.reconnects, final.last_error) == ("stopped", DROPS + 1, None)
    events = [json.loads(p)["kind"] for p in device_messages(col, "event")]
    assert events.count("reconnected") == DROPS + 1
    # One per link lost: the failed scans of the long absence add none (status says them).
    assert events.count("disconnected") == DROPS + 1
    assert integrity(db) == "ok"


def daemon_settings(db: Path, **mqtt: object) -> Settings:
    return load_config(
        CONFIG,
        mqtt=mqtt or {"enabled": False},
        storage={"db_path": db},
        homeassistant={"enabled": False},
    )


def disk_full(store: SessionStore, full: bool) -> None:
    """The store's disk fills (every write fails as on a full disk: SQLITE_FULL) or has
    room again, through the store's own connection: its real error path."""
    with store._lock:
        assert store._conn is not None
        store._conn.execute(f"PRAGMA max_page_count = {1 if full else 1073741823}")


# -- 2. the broker: absent at start-up, refusing the login --------------------------------------


async def test_broker_absent_at_start_then_appears(tmp_path: Path) -> None:
    """Nothing listens when the daemon starts: it measures and stores anyway, and publishes
    (retained session state included) once the broker appears."""
    broker = start_mosquitto(tmp_path)
    broker.stop()  # its port is known, nothing listens there yet
    db = tmp_path / "s.db"
    settings = daemon_settings(db, host=broker.host, port=broker.port)
    expected = [float(x) for x in read_rr_file(RECORDING).rr_ms]
    try:
        async with virtual_world(replay=RECORDING, speed=40, seed=1) as world:
            task = asyncio.create_task(
                serve(
                    settings,
                    **world.serve_kwargs(),
                    finished=[s.wait_finished() for s in world.straps],
                    handle_signals=False,
                )
            )
            await asyncio.sleep(2.5)  # ~100 s of session without a broker
            with SessionStore.open(db) as store:
                (s,) = store.list_sessions()
                assert store.beats(s.id), "measuring waits for the broker"
            broker.start()
            async with Collector(broker.host, broker.port) as col:
                async with asyncio.timeout(10):
                    session = json.loads((await col.wait_for("session"))[0])
                assert session["state"] == "running"
                assert await asyncio.wait_for(task, 30) == 0
                beats = [BeatPayload.model_validate_json(p) for p in col.payloads("beat")]
    finally:
        broker.stop()
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
        stored = store.beats(s.id)
    assert s.state == SessionState.STOPPED
    assert [b.rr_ms for b in stored] == quantised(expected)  # nothing lost while it was away
    # Live beats queued while the broker was away (bounded queue) arrive, in order, once.
    got = [r for b in beats for r in b.rr_ms]
    q = quantised(expected)
    k = q.index(got[0])
    assert got == q[k : k + len(got)] and len(got) > len(q) // 2


async def test_broker_refusing_the_login_is_said_once_and_measuring_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "settle", "right"], check=True)  # noqa: ASYNC221 - before the loop does anything
    broker = start_mosquitto(tmp_path, f"password_file {pw}\n", anonymous=False)
    db = tmp_path / "s.db"
    settings = daemon_settings(
        db, host=broker.host, port=broker.port, username="settle", password="wrong"
    )
    expected = [float(x) for x in read_rr_file(RECORDING).rr_ms]
    caplog.set_level(logging.INFO)
    try:
        async with virtual_world(replay=RECORDING, speed=60, seed=1) as world:
            code = await serve(
                settings,
                **world.serve_kwargs(),
                finished=[s.wait_finished() for s in world.straps],
                handle_signals=False,
                on_broker=None,
            )
    finally:
        broker.stop()
    assert code == 0
    refused = [
        r for r in caplog.records if r.name == "feedback.mqtt" and r.levelno >= logging.WARNING
    ]
    assert len(refused) == 1, [r.getMessage() for r in refused]  # said once, not per retry
    assert "not authori" in refused[0].getMessage().lower()
    assert "wrong" not in caplog.text  # the password never reaches the log
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
        assert [b.rr_ms for b in store.beats(s.id)] == quantised(expected)
    assert s.state == SessionState.STOPPED


# -- 4. the disk fills up, the database turns read-only ------------------------------------------


async def test_disk_full_and_read_only_keep_measuring_and_lose_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite itself refuses to write (a page limit makes it report SQLITE_FULL, "database or
    disk is full"; ``query_only`` makes it refuse like a read-only file): one error line per
    outage, measuring goes on, the rows kept in memory are written once it recovers, and the
    file is intact."""
    db = tmp_path / "s.db"
    caplog.set_level(logging.INFO)
    async with model_daemon(tmp_path, seed=4) as (daemon, store, strap, task):
        rt = daemon.runtimes[0]

        def seq_now() -> int:
            return rt.session.seq if rt.session else 0

        def pragma(sql: str) -> None:
            # The store's own connection: the fault must hit its real error path.
            with store._lock:
                assert store._conn is not None
                store._conn.execute(sql)

        await until(lambda: seq_now() > 30)
        for fault, cure in [
            ("PRAGMA max_page_count = 1", "PRAGMA max_page_count = 1073741823"),
            ("PRAGMA query_only = 1", "PRAGMA query_only = 0"),
        ]:
            pragma(fault)
            await until(lambda: daemon.writer.failing)
            seq = seq_now()
            await until(lambda s=seq: seq_now() > s + 40)  # type: ignore[misc]  # still measuring
            assert daemon.writer.failing and daemon.writer.beats  # kept in memory
            pragma(cure)
            await until(lambda: not daemon.writer.failing, 5)
        seq = seq_now()
        await until(lambda: seq_now() > seq + 10)
        stop_at = (seq_now(), len(sent_raw(strap)))
        daemon.stop()
        await asyncio.wait_for(task, 10)
        (summary,) = store.list_sessions()
        beats = store.beats(summary.id)
        indices = store.indices(summary.id)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, [r.getMessage() for r in errors]  # one line per outage
    assert "database or disk is full" in errors[0].getMessage()
    assert "readonly" in errors[1].getMessage() or "read-only" in errors[1].getMessage()
    assert "Traceback" not in caplog.text
    stored = [b.rr_raw or 0 for b in beats]
    assert lost_outside_faults(sent_raw(strap), stored, [stop_at]) == []
    assert [b.seq for b in beats] == list(range(len(beats)))
    assert all(b.beat_class is not None for b in beats)  # annotations caught up too
    assert [round(i.t_s, 3) for i in indices] == [5.0 * (k + 1) for k in range(len(indices))]
    assert summary.state == SessionState.STOPPED
    assert integrity(db) == "ok"


async def test_store_still_failing_at_stop_rescues_the_beats_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk is still full when the daemon stops: its last flush only put the rows back
    in memory, the small "stopped" update still went through, and the process ended. The
    session read as cleanly stopped with 24 of 34 beats, and "34 beats stored" was printed.
    Now the daemon retries for a while, then writes what the store would not take to a
    rescue file that `settle analyze` reads, says so, and closes the session interrupted."""
    caplog.set_level(logging.INFO)
    async with model_daemon(tmp_path, seed=5) as (daemon, store, _strap, task):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None and rt.session.seq > 30)
        disk_full(store, True)
        await until(lambda: daemon.writer.failing)
        await until(lambda: daemon.writer.unsaved_beats(rt.session.session_id) > 20)  # type: ignore[union-attr]
        daemon.stop()
        await asyncio.wait_for(task, 20)
        (pipeline,) = daemon.finished
        sid = pipeline.session_id
        stored = store.beats(sid)
        state = store.get(sid).state
    rescue = tmp_path / f"settle-unsaved-{sid}.csv"
    assert daemon.rescued == {sid: rescue}
    assert stat.S_IMODE(rescue.stat().st_mode) == 0o600
    rec = read_rr_file(rescue)  # what `settle analyze` / `run --replay` read
    assert len(stored) + len(rec.rr_ms) == pipeline.seq  # every beat is somewhere
    assert rec.t_s[0] > stored[-1].beat_t_s
    assert state != SessionState.STOPPED  # never a clean end with beats missing
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"{len(rec.rr_ms)} beats could not be stored" in m and str(rescue) in m
               for m in errors), errors  # fmt: skip


async def _record_while(
    db: Path, seed: int, act: Callable[[], object]
) -> tuple[Daemon, StrapPipeline]:
    """Record into ``db``; after 30 beats ``act`` on its file; wait for the daemon to recover
    the store (at once, not at the stop), record 20 beats more, stop. Returns the daemon and
    the finished session."""
    async with model_daemon(db.parent, seed=seed) as (daemon, _store, _strap, task):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None and rt.session.seq > 30)
        await asyncio.to_thread(act)
        await until(lambda: daemon.recovered_store is not None)
        seq = rt.session.seq  # type: ignore[union-attr]
        await until(lambda: rt.session is not None and rt.session.seq > seq + 20)
        daemon.stop()
        await asyncio.wait_for(task, 20)
    (pipeline,) = daemon.finished
    return daemon, pipeline


async def test_store_file_deleted_while_recording_is_an_error_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`rm settle.db` while a session records: SQLite goes on writing into the unlinked
    file, no word is said, and at stop "257 beats stored" pointed at a store that no longer
    exists (every earlier session gone with it). Now the daemon notices at the next flush
    (the file at the path is gone), says so once, keeps the rows, and at stop copies the
    whole store — still readable through its open connection — back to the path, with the
    rows kept in memory: every session and every beat is there again."""
    db = tmp_path / "s.db"
    with SessionStore.open(db) as earlier:
        before = earlier.create_session("dev_0", 1_700_000_000_000, "x", {}).id
        earlier.finish_session(before, 1_700_000_060_000)
    caplog.set_level(logging.INFO)

    def remove() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)

    daemon, pipeline = await _record_while(db, 6, remove)
    assert daemon.recovered_store == db and daemon.rescued == {}
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob("settle-unsaved-*")))
    with SessionStore.open(db) as back:
        assert {s.id for s in back.list_sessions()} == {before, pipeline.session_id}
        assert [b.seq for b in back.beats(pipeline.session_id)] == list(range(pipeline.seq))
        assert back.get(pipeline.session_id).state == SessionState.STOPPED
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"{db}: the session store file was deleted while recording" in errors[0], errors
    assert f"is recovered into {db}" in errors[-1], errors


async def test_store_file_moved_while_recording_says_moved_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`mv settle.db archive/` while a session records (its -wal and -shm files stay where
    they were). The daemon said the file "was deleted"; the moved file lacked what was still
    in the WAL (a store holding nothing, or not the last session); and the recovered copy
    opened a second database on the old connection's -wal/-shm pair. Now it says where the
    file went, that file is whole, and every session and beat is in the store recovered at
    the configured path."""
    db = tmp_path / "s.db"
    away = tmp_path / "archive" / "s.db"
    away.parent.mkdir()
    with SessionStore.open(db) as earlier:
        before = earlier.create_session("dev_0", 1_700_000_000_000, "x", {}).id
        earlier.finish_session(before, 1_700_000_060_000)
    caplog.set_level(logging.INFO)
    daemon, pipeline = await _record_while(db, 6, lambda: os.rename(db, away))
    assert daemon.recovered_store == db and daemon.rescued == {}
    with SessionStore.open(db) as back:
        assert back.damage() is None
        assert {s.id for s in back.list_sessions()} == {before, pipeline.session_id}
        every = back.beats(pipeline.session_id)
        assert [b.seq for b in every] == list(range(pipeline.seq))
        assert back.get(pipeline.session_id).state == SessionState.STOPPED
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    said = f"{db}: the session store file was moved to {away} while recording"
    assert said in errors[0], errors
    assert f"is recovered into {db}" in errors[-1], errors
    with SessionStore.open(away) as moved:  # whole where it went: its WAL stayed behind
        assert moved.damage() is None
        assert {s.id for s in moved.list_sessions()} == {before, pipeline.session_id}
        kept = moved.beats(pipeline.session_id)  # what was stored before the move
        assert kept
        assert [(b.seq, b.rr_raw) for b in kept] == [(b.seq, b.rr_raw) for b in every[: len(kept)]]


async def test_store_file_replaced_while_recording_is_recovered_beside_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`mv backup.db settle.db` while a session records: the file now at the path is the
    user's and stays as it was (undamaged: the old connection's -wal/-shm at that name are
    closed before anything opens it again); the recording is recovered beside it."""
    db = tmp_path / "s.db"
    backup = tmp_path / "backup.db"
    with SessionStore.open(backup) as other:
        theirs = other.create_session("dev_9", 1_600_000_000_000, "x", {}).id
        other.finish_session(theirs, 1_600_000_060_000)
    caplog.set_level(logging.INFO)
    daemon, pipeline = await _record_while(db, 7, lambda: os.rename(backup, db))
    moved = daemon.recovered_store
    assert moved is not None and moved.parent == tmp_path and moved.name.startswith("s.recovered-")
    with SessionStore.open(moved) as back:
        assert back.damage() is None
        beats = back.beats(pipeline.session_id)
        assert [b.seq for b in beats] == list(range(pipeline.seq))
    with SessionStore.open(db) as restored:  # the user's file, as they put it there
        assert restored.damage() is None
        assert [s.id for s in restored.list_sessions()] == [theirs]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "the session store file was replaced by another file while recording" in errors[0]


async def test_store_file_emptied_while_recording_is_noticed_and_the_beats_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`: > settle.db` (or `truncate`, or a smaller backup copied over it) while a session
    records: the same file, so nothing was noticed; the daemon wrote on into it, said
    "117 beats stored", exit 0, and the store could not be opened again. Now the file cut
    short is noticed at the next flush and said; the store is recovered beside it from the
    open connection where every page can still be read, and else the beats go to a rescue
    file: every beat recorded after the cut is kept one way or the other."""
    db = tmp_path / "s.db"
    caplog.set_level(logging.INFO)
    async with model_daemon(tmp_path, seed=8) as (daemon, _store, _strap, task):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None and rt.session.seq > 30)
        await asyncio.to_thread(os.truncate, db, 0)  # no descriptor: ours hold SQLite's locks
        cut_at = rt.session.seq  # type: ignore[union-attr]
        errors = lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]  # noqa: E731
        await until(lambda: any("was cut short (0 bytes, was " in m for m in errors()))
        await until(lambda: rt.session is not None and rt.session.seq > cut_at + 20)
        daemon.stop()
        await asyncio.wait_for(task, 20)
    (pipeline,) = daemon.finished
    after = set(range(cut_at + 5, pipeline.seq))  # a flush (1 s) after the cut, and on
    kept: set[int] = set()
    if daemon.recovered_store is not None:
        with SessionStore.open(daemon.recovered_store) as back:
            kept |= {b.seq for b in back.beats(pipeline.session_id)}
    for saved in daemon.rescued.values():
        kept |= {int(r["seq"]) for r in csv.DictReader(saved.open())}
    assert after <= kept, sorted(after - kept)[:10]


async def test_a_failing_analysis_does_not_end_the_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception inside the analysis (beats piled up after a host stall once raised
    ValueError there) ended the daemon's task group: the session was left `running` and
    the beats of that notification were lost. Now the beats are stored first, the error is
    logged once with its traceback, every window restarts and the session goes on."""
    from processing.live import LiveAnalyzer

    real = LiveAnalyzer.push_beat
    calls = itertools.count()

    def flaky(self: LiveAnalyzer, t_s: float, rr_ms: float, contact: bool | None = None):  # type: ignore[no-untyped-def]
        if next(calls) == 40:
            raise ValueError("t_s must be finite and non-decreasing")
        return real(self, t_s, rr_ms, contact)

    monkeypatch.setattr(LiveAnalyzer, "push_beat", flaky)
    db = tmp_path / "s.db"
    async with model_daemon(tmp_path, seed=7) as (daemon, _store, _strap, task):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None and rt.session.seq > 200)
        assert not task.done()
        daemon.stop()
        await asyncio.wait_for(task, 20)
    (pipeline,) = daemon.finished
    with SessionStore.open(db) as store:
        assert [b.seq for b in store.beats(pipeline.session_id)] == list(range(pipeline.seq))
        assert store.get(pipeline.session_id).state == SessionState.STOPPED
        late = [r for r in store.indices(pipeline.session_id) if r.t_s > 150]
    assert late and any(r.hr_bpm is not None for r in late)  # the analysis carried on
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "the analysis failed" in errors[0].getMessage()


def test_rescue_file_is_readable_even_with_a_zero_rr(tmp_path: Path) -> None:
    """A strap's 0 ms RR (stored as implausible) made the rescue file unreadable to the
    `settle analyze` / `--replay` it names ("RR value 0 ms is not positive")."""
    from sessions.store import BeatRow
    from settle.pipeline import BeatWriter

    with SessionStore.open(tmp_path / "s.db") as store:
        writer = BeatWriter(store)
        t0 = 1_700_000_000_000
        rows = [BeatRow(i, 0.8 * (i + 1), t0 + 800 * (i + 1), 800.0) for i in range(10)]
        rows[4] = BeatRow(4, rows[3].beat_t_s, rows[3].recv_ts_ms, 0.0)
        writer.add_beats("sid", rows)
        path = writer.rescue("sid", "disk full", [tmp_path])
    assert path is not None
    rec = read_rr_file(path)
    assert len(rec.rr_ms) == 9 and (rec.rr_ms == 800.0).all()


def test_a_rescue_file_the_disk_cannot_keep_moves_to_the_next_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rescue file is the only copy of its beats: it is on the disk (fsynced, with its
    directory) before it is named, and a disk that accepts the write but cannot keep it
    (fsync fails: delayed allocation on a full ext4, a network file system) does not get
    the file — the next directory does — instead of a file a power cut leaves empty."""
    import settle.pipeline as pipeline_mod
    from sessions.store import BeatRow
    from settle.pipeline import BeatWriter

    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.mkdir()
    good.mkdir()
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.startswith(str(bad)):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)
        synced.append(target)

    monkeypatch.setattr(pipeline_mod.os, "fsync", fsync)
    with SessionStore.open(tmp_path / "s.db") as store:
        writer = BeatWriter(store)
        t0 = 1_700_000_000_000
        writer.add_beats("sid", [BeatRow(i, 0.8 * (i + 1), t0 + 800 * i, 800.0) for i in range(10)])
        path = writer.rescue("sid", "disk full", [bad, good])
    assert path is not None and path.parent == good
    assert list(bad.iterdir()) == []
    assert synced == [str(path), str(good)]  # the file's data, then its name
    assert len(read_rr_file(path).rr_ms) == 10


def test_demo_whose_store_was_deleted_says_it_was_recovered(tmp_path: Path) -> None:
    """What the user sees: not "N beats stored. Export: settle export …" for a store that
    is gone, but that it was recovered and where; every beat is in it."""
    db = tmp_path / "s.db"
    env = {**os.environ, "SETTLE_CONFIG": str(CONFIG)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "settle.cli", "demo", "--no-mqtt", "--no-http", "--speed", "20",
         "--duration", "8", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not db.exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(3.0)  # a session with beats stored
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert (
        "The session store file was deleted while recording: everything it held is "
        f"recovered into {db}." in out.splitlines()
    ), out
    line = next(ln for ln in out.splitlines() if ln.startswith("session 2"))
    m = re.fullmatch(r"session (\S+): (\d+) beats stored\. Export: .*", line)
    assert m is not None, line
    with SessionStore.open(db) as back:
        assert len(back.beats(m[1])) == int(m[2]) > 30
    assert "was deleted while recording" in err and "Traceback" not in err


def test_a_session_deleted_while_recording_costs_only_that_session(tmp_path: Path) -> None:
    """Two straps; one live session is deleted from the store (its lock file removed as
    "stale", then `settle sessions delete --force`). Every strap's batch was one
    transaction, so the deleted session's "no such session" rolled back the other's rows
    too: the untouched strap ended `interrupted` with 141 of 459 beats stored, the rest in a
    rescue file, its indices lost. Now the other session is stored whole and `stopped`, and
    the deleted one's later beats are in its rescue file, said in one line."""
    db = tmp_path / "s.db"
    env = {**os.environ, "SETTLE_CONFIG": str(CONFIG)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "settle.cli", "demo", "--no-mqtt", "--no-http", "--speed", "20",
         "--duration", "8", "--straps", "2", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while stored_count(db) < 60:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        with SessionStore.open(db) as store:
            gone, kept = (s.id for s in store.list_sessions())
            store.delete_session(gone)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    with SessionStore.open(db) as store:
        (left,) = store.list_sessions()
        n_kept = len(store.beats(kept))
        indices = store.indices(kept)
    assert left.id == kept and left.state == SessionState.STOPPED
    assert [round(i.t_s, 3) for i in indices] == [5.0 * (k + 1) for k in range(len(indices))]
    line = next(ln for ln in out.splitlines() if ln.startswith(f"session {kept}"))
    assert line.startswith(f"session {kept}: {n_kept} beats stored. Export:"), out
    rescue = tmp_path / f"settle-unsaved-{gone}.csv"
    rec = read_rr_file(rescue)
    line = next(ln for ln in out.splitlines() if ln.startswith(f"session {gone}"))
    # Not "N of M beats stored": the session and its first beats are gone from the store.
    m = re.fullmatch(
        rf"session {gone}: deleted from the store while recording \(its first (\d+) beats "
        rf"with it\); the (\d+) later beats are in (.*)\.",
        line,
    )
    assert m is not None and m[3] == str(rescue), out
    assert int(m[2]) == len(rec.rr_ms)
    said = [ln for ln in err.splitlines() if "was deleted from the session store" in ln]
    assert len(said) == 1 and gone in said[0] and "level=ERROR" in said[0], err
    assert "Traceback" not in err


async def test_during_a_store_outage_the_rescue_file_holds_every_unstored_beat(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Disk full: the rows not yet stored lived in memory only, so a `kill -9` (or power
    loss) during the outage lost all of it (54 min of session measured at speed 200). Now
    the rescue file is written as the outage goes on: at any moment it holds every beat
    not yet stored (what a crash would leave), and once the store takes them it is
    removed, said in one line: no beat lost, none in two places."""
    caplog.set_level(logging.INFO)
    async with model_daemon(tmp_path, seed=8) as (daemon, store, _strap, task):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None and rt.session.seq > 30)
        sid = rt.session.session_id  # type: ignore[union-attr]
        rescue = tmp_path / f"settle-unsaved-{sid}.csv"
        disk_full(store, True)
        await until(lambda: daemon.writer.failing)
        await until(lambda: daemon.writer.unsaved_beats(sid) > 60)
        async with daemon.writer._flush_lock:  # a moment between two flushes
            on_disk = read_rr_file(rescue)
            stored = store.beats(sid)
            flushed = len(stored) + len(on_disk.rr_ms)
            assert rt.session is not None and rt.session.seq - flushed < 20  # ≤ ~1 s missing
            assert [b.seq for b in stored] == list(range(len(stored)))
            assert on_disk.t_s[0] > stored[-1].beat_t_s  # the file continues the store
        assert stat.S_IMODE(rescue.stat().st_mode) == 0o600
        disk_full(store, False)
        await until(lambda: not daemon.writer.failing, 5)
        assert not rescue.exists()  # every beat in it is stored now: not kept twice
        daemon.stop()
        await asyncio.wait_for(task, 20)
        (pipeline,) = daemon.finished
        assert [b.seq for b in store.beats(sid)] == list(range(pipeline.seq))
        assert store.get(sid).state == SessionState.STOPPED
    back = [r.getMessage() for r in caplog.records if "writable again" in r.getMessage()]
    assert len(back) == 1 and str(rescue) in back[0] and "removed" in back[0], back
    assert daemon.rescued == {}


async def test_after_a_crash_during_an_outage_the_next_start_names_the_rescue_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A `kill -9` while the store was failing leaves the session `running` in the store and
    its later beats in the rescue file; the next start marked it interrupted and said
    nothing of the file, which the user then had to find in the store's directory, /tmp or
    home."""
    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev_1", int(time.time() * 1000), "ble:AA", {}).id
    rescue = tmp_path / f"settle-unsaved-{sid}.csv"
    rescue.write_text("t_s,rr_ms\n31.2,812.5\n32.0,800.0\n")
    caplog.set_level(logging.WARNING, logger="settle.daemon")
    async with model_daemon(tmp_path, seed=9) as (daemon, _store, _strap, _task):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None)
        assert daemon.store.get(sid).state == SessionState.INTERRUPTED
    said = [r.getMessage() for r in caplog.records if sid in r.getMessage()]
    assert said == [
        f"session {sid} was left running by an earlier crash; marked interrupted; beats the "
        f"store did not take are in {rescue} (settle analyze and settle run --replay read it)"
    ]


# -- 4b. another program holds the store's write lock -------------------------------------------


@contextlib.contextmanager
def write_locked(db: Path) -> Iterator[sqlite3.Connection]:
    """Another program (a database browser with unsaved changes) holds the store's write
    lock: every write of the daemon waits for it and fails ("database is locked")."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


class Replies:
    """What the daemon answers and publishes (its tap), and a way to send it commands."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.results: dict[str, dict[str, object]] = {}
        self.events: list[dict[str, object]] = []
        daemon.tap = self._tap  # before run(): the strap's output takes it at its connect

    def _tap(self, topic: str, payload: bytes | str, _retain: bool) -> None:
        if topic.endswith("/result"):
            res = json.loads(payload)
            self.results[str(res["id"])] = res
        elif topic.endswith("/event"):
            self.events.append(json.loads(payload))

    async def send(self, name: str, cmd_id: str, **extra: object) -> dict[str, object]:
        rt = self.daemon.runtimes[0]
        body = json.dumps({"v": 1, "id": cmd_id, **extra}).encode()
        await self.daemon.on_command(rt.device_id or "", name, body, False)
        return self.results[cmd_id]


def seq_of(rt: object) -> int:
    session = getattr(rt, "session", None)
    return session.seq if session is not None else 0


@dataclass
class LockedStore:
    """A daemon recording the model strap, its first session 20 beats in, while another
    program holds the store's write lock and the writer has found the store failing."""

    daemon: Daemon
    task: asyncio.Task[None]
    store: SessionStore
    replies: Replies
    first: str
    """The session running when the lock was taken."""
    holder: sqlite3.Connection

    @property
    def rt(self) -> StrapRuntime:
        return self.daemon.runtimes[0]

    def unlock(self) -> None:
        self.holder.execute("ROLLBACK")

    def lock(self) -> None:
        self.holder.execute("BEGIN IMMEDIATE")


@pytest.fixture
async def locked_store_daemon(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[LockedStore]:
    """:class:`LockedStore`; the lock is released at the end, then the daemon stopped."""
    caplog.set_level(logging.INFO)
    async with model_daemon(tmp_path, seed=11) as (daemon, store, _strap, task):
        replies = Replies(daemon)
        rt = daemon.runtimes[0]
        await until(lambda: seq_of(rt) > 20)
        assert rt.session is not None
        with write_locked(store.path) as holder:
            await until(lambda: daemon.writer.failing)
            yield LockedStore(daemon, task, store, replies, rt.session.session_id, holder)


async def test_session_start_and_stop_while_the_store_is_locked_lose_nothing(
    locked_store_daemon: LockedStore, caplog: pytest.LogCaptureFixture
) -> None:
    """`settle session start` while another program held the store's write lock: the old
    session was closed before the new one existed, its close failed (only logged) and was
    never retried, so it stayed `running` for good; the new session's row failed too (on a
    full disk: "the daemon failed to carry out the command", a traceback, and every beat
    from then on discarded). Now the old session's end and the new session's row go
    through the writer like beats: kept in memory (the results say `"stored": false`),
    written once the lock is gone, every beat of both sessions stored, both closed
    `stopped`."""
    d = locked_store_daemon
    store, rt, first = d.store, d.rt, d.first
    started = await d.replies.send("session/start", "start")
    assert (started["status"], started["stored"]) == ("ok", False), started
    assert rt.session is not None and rt.session.session_id != first
    second = rt.session.session_id
    seq = seq_of(rt)
    await until(lambda: seq_of(rt) > seq + 20)  # measuring into the new session
    stopped = await d.replies.send("session/stop", "stop")
    assert (stopped["status"], stopped["stored"]) == ("ok", False), stopped
    assert store.list_sessions()[0].state == SessionState.RUNNING  # nothing stored yet
    d.unlock()
    await until(lambda: not d.daemon.writer.failing, 5)
    after_lock = {s.id: s for s in store.list_sessions()}
    d.daemon.stop()
    await asyncio.wait_for(d.task, 20)
    sessions = {s.id: s for s in store.list_sessions()}
    beats = {sid: [b.seq for b in store.beats(sid)] for sid in sessions}
    first_beat_t_s = store.beats(second)[0].beat_t_s
    assert list(after_lock) == [first, second]  # both there once the lock is gone
    assert [s.state for s in after_lock.values()] == [SessionState.STOPPED] * 2
    assert all(s.stopped_ms is not None for s in after_lock.values())
    by_id = {p.session_id: p for p in d.daemon.finished}
    for sid in (first, second):
        assert beats[sid] == list(range(by_id[sid].seq)), sid  # every beat, once
    assert by_id[second].seq > 20
    assert first_beat_t_s < 3.0  # recorded into the new session from its start
    assert sessions[second].started_ms >= sessions[first].stopped_ms  # type: ignore[operator]
    assert d.daemon.rescued == {}
    assert "Traceback" not in caplog.text


async def test_markers_while_the_store_is_locked_are_stored_in_order_once_it_is_back(
    locked_store_daemon: LockedStore, tmp_path: Path
) -> None:
    """`settle mark` while another program held the store's write lock: the marker went
    straight to the store, the CLI gave up waiting after 5 s ("no confirmation"), and ~20 s
    later the daemon answered "could not store the marker: … database is locked" — the
    marker dropped, the beats of that moment kept. Now it goes through the writer like the
    beats: answered ok at once, `"stored": false` (an ok alone read as "on disk"), its
    event published; stored as soon as the lock is gone, while the daemon runs, in order
    and once each; and a marker the store still refuses at the stop goes into the rescue
    file with the beats."""
    d = locked_store_daemon
    store, sid = d.store, d.first
    sent = [("note", "while locked"), ("doubt", "and again")]
    t0 = time.monotonic()
    marked = [
        await d.replies.send("marker", f"m{i}", kind=kind, text=text)
        for i, (kind, text) in enumerate(sent)
    ]
    answered_s = time.monotonic() - t0
    assert [(m["status"], m["stored"]) for m in marked] == [("ok", False)] * 2, marked
    assert answered_s < 1.0  # both: no command waits for a failing store
    said = [(e["kind"], e["text"]) for e in d.replies.events if e["kind"] in ("note", "doubt")]
    assert said == sent
    assert store.markers(sid) == []  # not stored yet
    d.unlock()
    await until(lambda: not d.daemon.writer.failing, 5)
    assert [(m.kind, m.text) for m in store.markers(sid)] == sent  # the daemon still runs
    back = await d.replies.send("marker", "m2", kind="note", text="store back")
    assert (back["status"], back["stored"]) == ("ok", True), back
    n = len(store.beats(sid))
    await until(lambda: len(store.beats(sid)) > n + 20)  # flushes since: none wrote them again
    stored = [(m.kind, m.text) for m in store.markers(sid)]
    assert stored == [*sent, ("note", "store back")]
    d.lock()  # locked again, through the stop
    late = await d.replies.send("marker", "m3", kind="shame", text="at the end")
    assert (late["status"], late["stored"]) == ("ok", False), late  # (after its 1 s wait)
    d.daemon.stop()
    await asyncio.wait_for(d.task, 30)
    assert [(m.kind, m.text) for m in store.markers(sid)] == stored
    rescue = tmp_path / f"settle-unsaved-{sid}.csv"
    assert d.daemon.rescued == {sid: rescue}
    text = rescue.read_text()
    assert "# marker t_s=" in text and ': shame "at the end"\n' in text
    assert len(read_rr_file(rescue).rr_ms) > 0  # the beats in it still read


async def test_settle_mark_says_a_marker_the_store_has_not_taken_is_kept_in_memory(
    daemon_on_broker: RunningDaemon,  # noqa: F811
) -> None:
    """`settle mark` while the store was locked printed `shame: ok (…)`, as when the marker
    is on disk: nothing told the user it lived in the daemon's memory alone until the store
    came back. It says so now, in the same one line; the marker is stored once the lock is
    gone."""
    d = daemon_on_broker
    where = f"{d.host}:{d.port}"
    with write_locked(d.store.path):
        code, out, err = await _settle(
            "mark", "while locked", "--kind", "shame", "--mqtt", where, "--timeout", "30"
        )
    assert (code, out.splitlines()) == (
        0,
        [
            f"shame: ok ({DEV}), kept in memory: the session store is not taking writes now "
            "(the daemon's log says why); it is written when the store works again"
        ],
    ), err
    # This daemon runs no writer task: the flush the marker began (waiting for the lock,
    # which is gone now) ends before this one.
    await d.daemon.writer.flush()
    assert [(m.kind, m.text) for m in d.store.markers(d.session_id)] == [("shame", "while locked")]


async def test_a_locked_store_is_said_at_once_and_a_lock_taken_again_soon_is_not_said_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program took the store's write lock: the daemon said nothing for 10 s (its
    first write waited the store's busy timeout before it failed), and nothing went to the
    rescue file meanwhile. Each write of a running daemon now waits 1 s at most, so the
    first failed flush says it at once, in one ERROR line naming the cause. A lock taken
    again and again (the same cause within a minute of that line) adds no line; once that
    minute has passed, one line says it and how often it failed meanwhile."""
    from sessions.store import BUSY_TIMEOUT_S
    from settle.pipeline import STORE_FAILURE_LOG_EVERY_S

    caplog.set_level(logging.INFO)

    def said(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()
                and r.levelno >= logging.INFO]  # fmt: skip

    async with model_daemon(tmp_path, seed=16) as (daemon, store, _strap, task):
        now = [0.0]
        daemon.writer.clock = lambda: now[0]
        rt = daemon.runtimes[0]
        await until(lambda: seq_of(rt) > 20)
        with write_locked(store.path):
            # (before the 10 s the first write used to wait, on a loaded machine too)
            await until(lambda: bool(said("cannot write to the session store")), BUSY_TIMEOUT_S - 2)
        await until(lambda: not daemon.writer.failing, 5)
        for _ in range(2):  # within the minute: the writer fails, nothing is said
            with write_locked(store.path):
                await until(lambda: daemon.writer.failing)
            await until(lambda: not daemon.writer.failing, 5)
        (first,) = said("cannot write to the session store")
        assert len(said("writable again")) == 1
        now[0] += STORE_FAILURE_LOG_EVERY_S
        with write_locked(store.path):
            await until(lambda: len(said("cannot write to the session store")) == 2)
        daemon.stop()
        await asyncio.wait_for(task, 20)
        (pipeline,) = daemon.finished
        beats = [b.seq for b in store.beats(pipeline.session_id)]
    assert "database is locked: another program holds a write lock on it" in first
    later = said("cannot write to the session store")[1]
    assert "it failed so 2 time(s) briefly since the last such line" in later
    assert beats == list(range(pipeline.seq))  # every beat stored, once


async def test_commands_during_the_stop_are_refused_and_leave_no_session_running(
    tmp_path: Path,
) -> None:
    """A `session/start` that arrived after SIGTERM, while the daemon closed its sessions,
    started a session nobody closed: `running` in the store after a clean exit 0, and a
    marker then was told "no session is running". Every command is now refused once a stop
    was asked for."""
    async with model_daemon(tmp_path, seed=13) as (daemon, store, _strap, task):
        replies = Replies(daemon)
        rt = daemon.runtimes[0]
        await until(lambda: seq_of(rt) > 20)
        daemon.stop()
        at_once = await replies.send("session/start", "s1")
        await until(lambda: daemon._stopping and rt.session is None, 10)  # closing its sessions
        later = await replies.send("session/start", "s2")
        marked = await replies.send("marker", "m", kind="note")
        await asyncio.wait_for(task, 20)
        sessions = store.list_sessions()
    assert [r["error"] for r in (at_once, later, marked)] == ["the daemon is stopping"] * 3
    assert [s.state for s in sessions] == [SessionState.STOPPED]


async def test_a_stop_while_another_program_holds_the_write_lock_is_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM while another program held the store's write lock took about a minute: the
    flush under way, each retry, the close and the last flush each waited the store's 10 s
    busy timeout, so the 5 s of retries bounded nothing and systemd's TimeoutStopSec=20
    would have killed the daemon first (the docs promise "a second or two"). Now every
    write of a stopping daemon waits 0.5 s at most, a wait under way included: the stop
    takes the 5 s of retries and little more, and the beats go to the rescue file."""
    from settle.daemon import STORE_RETRY_AT_STOP_S

    db = tmp_path / "s.db"
    caplog.set_level(logging.INFO)
    async with model_daemon(tmp_path, seed=14) as (daemon, _store, _strap, task):
        rt = daemon.runtimes[0]
        await until(lambda: seq_of(rt) > 20)
        assert rt.session is not None
        sid = rt.session.session_id
        with write_locked(db):
            await asyncio.sleep(1.5)  # the writer has found the store failing (1 s waits)
            t0 = time.monotonic()
            daemon.stop()
            await asyncio.wait_for(task, 30)
            took_s = time.monotonic() - t0
        (pipeline,) = daemon.finished
        stored = daemon.store.beats(sid)
    assert took_s < STORE_RETRY_AT_STOP_S + 3, took_s
    rescue = tmp_path / f"settle-unsaved-{sid}.csv"
    assert daemon.rescued == {sid: rescue}
    assert len(stored) + len(read_rr_file(rescue).rr_ms) == pipeline.seq  # every beat
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("retrying for 5 s, then what it has not taken goes to rescue files" in m
               for m in said), said  # fmt: skip
    assert any(f"saved to {rescue}" in m for m in said), said


async def test_a_session_stopped_during_an_outage_is_rescued_at_the_stop_too(
    locked_store_daemon: LockedStore, caplog: pytest.LogCaptureFixture
) -> None:
    """`session/start` and `session/stop` during an outage, then Ctrl-C with the store still
    failing: only the sessions running at the stop were rescued, so the ones closed during
    the outage kept their last beats in memory alone and the closing lines said "12 beats
    stored" for them. Every session the store has not taken whole is rescued and named."""
    d = locked_store_daemon
    store, rt, first = d.store, d.rt, d.first
    assert (await d.replies.send("session/start", "start"))["status"] == "ok"
    assert rt.session is not None
    second = rt.session.session_id
    await until(lambda: seq_of(rt) > 20)
    assert (await d.replies.send("session/stop", "stop"))["status"] == "ok"
    d.daemon.stop()
    await asyncio.wait_for(d.task, 30)
    listed = {s.id for s in store.list_sessions()}  # (the second never reached it)
    stored = {sid: len(store.beats(sid)) if sid in listed else 0 for sid in (first, second)}
    by_id = {p.session_id: p for p in d.daemon.finished}
    assert set(d.daemon.rescued) == {first, second}
    for sid in (first, second):
        rescue = d.daemon.rescued[sid]
        assert rescue is not None
        rescued = len(read_rr_file(rescue).rr_ms)
        assert stored[sid] + rescued == by_id[sid].seq, sid  # every beat is somewhere
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(second in m and "could not store the end" in m for m in said), said


# -- 5. the wall clock steps (NTP) ------------------------------------------------------------


class SteppingClock:
    """time.time() plus a step the test sets: an NTP correction of ±1 h mid-session."""

    def __init__(self) -> None:
        self.step_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.step_s


async def test_wall_clock_steps_leave_beat_times_and_exports_monotonic(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    settings = daemon_settings(db)
    clock = SteppingClock()
    speed = 20.0
    async with VirtualAir() as air:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=5), speed=speed)
        await strap.start()
        with SessionStore.open(db) as store:
            daemon = Daemon(
                settings,
                store,
                [strap_client(air, strap, clock)],
                clock=clock,
                time_scale=speed,
            )
            task = asyncio.create_task(daemon.run())
            rt = daemon.runtimes[0]

            def seq_now() -> int:
                return rt.session.seq if rt.session else 0

            await until(lambda: seq_now() > 30)
            dev = rt.device_id
            assert dev is not None
            for step_s in (3600.0, -3600.0, -7200.0):  # forward, back, back before the start
                clock.step_s += step_s
                seq = seq_now()
                await until(lambda s=seq: seq_now() > s + 20)  # type: ignore[misc]
                marker = json.dumps({"id": f"m{step_s}", "kind": "note", "text": "step"})
                await daemon.on_command(dev, "marker", marker.encode(), False)
            daemon.stop()
            await asyncio.wait_for(task, 10)
            (summary,) = store.list_sessions()
            beats = store.beats(summary.id)
            markers = store.markers(summary.id)
            out = export_session(store, summary.id, "csv", tmp_path / "s.csv")
            export_session(store, summary.id, "json", tmp_path / "s.json")
            export_session(store, summary.id, "edf", tmp_path / "s.edf")
        await strap.stop()
    assert summary.state == SessionState.STOPPED  # closed, though "now" is before its start
    assert summary.stopped_ms is not None and summary.stopped_ms >= summary.started_ms
    times = [b.beat_t_s for b in beats]
    assert all(b > a for a, b in itertools.pairwise(times))  # monotonic-clock based
    assert [m.t_s for m in markers] == sorted(m.t_s for m in markers) and len(markers) == 3
    assert all(0 <= m.t_s <= times[-1] for m in markers)
    with out.open() as f:
        t = [float(r["t_s"]) for r in csv.DictReader(f)]
    assert t == sorted(t)
    doc = json.loads((tmp_path / "s.json").read_text())
    beat_t = [b["beat_t_s"] if isinstance(b, dict) else b for b in doc.get("beats", [])]
    assert beat_t == sorted(beat_t)


async def test_a_clock_set_days_forward_after_boot_moves_the_session_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Raspberry Pi without a real-time clock boots 3 days behind and NTP sets it a few
    seconds into the session: the session was listed 3 days long and dated 3 days early, and
    its EDF padded with 3 days (20 MB). Now its start moves by the step, said in one line;
    it lasts as long as it ran, beat times untouched."""
    days3 = 3 * 86400.0
    clock = SteppingClock()
    clock.step_s = -days3
    speed = 10.0
    caplog.set_level(logging.WARNING)
    async with model_daemon(tmp_path, seed=5, speed=speed, clock=clock) as (
        daemon,
        store,
        _strap,
        task,
    ):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None and rt.session.seq > 20)
        wall0 = time.time()
        clock.step_s = 0.0  # NTP
        seq = rt.session.seq  # type: ignore[union-attr]
        await until(lambda: rt.session is not None and rt.session.seq > seq + 20)
        daemon.stop()
        await asyncio.wait_for(task, 10)
        wall1 = time.time()
        (summary,) = store.list_sessions()
        beats = store.beats(summary.id)
        edf = export_session(store, summary.id, "edf", tmp_path / "s.edf")
    assert summary.stopped_ms is not None
    ran_s = (summary.stopped_ms - summary.started_ms) / 1000
    assert 0 < ran_s < wall1 - wall0 + 30  # seconds, not 3 days
    assert summary.duration_s < 30 * speed + beats[-1].beat_t_s
    started = summary.started_ms / 1000
    assert wall0 - 60 < started < wall0  # today, not 3 days ago
    assert edf.stat().st_size < 1_000_000
    times = [b.beat_t_s for b in beats]
    assert all(b > a for a, b in itertools.pairwise(times))
    steps = [r.getMessage() for r in caplog.records if "system clock was set" in r.getMessage()]
    assert len(steps) == 1 and "+3.0 days" in steps[0], steps


async def test_a_suspend_mid_session_is_a_gap_of_its_real_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A laptop closed mid-session: Linux's monotonic clock stops while suspended, so every
    beat, index and marker after the resume was placed that long too early, with a 1 s gap
    where the suspend was. Arrival times are on CLOCK_BOOTTIME now, which counts the
    suspend (simulated here: the wall clock and that clock jump together, the strap's link
    drops as it does over a suspend)."""
    import sensors.clock as host_clock

    real = host_clock.elapsed_s
    asleep = [0.0]
    monkeypatch.setattr(host_clock, "elapsed_s", lambda: real() + asleep[0])
    clock = SteppingClock()
    speed, suspend_s = 10.0, 60.0
    async with model_daemon(tmp_path, seed=6, speed=speed, clock=clock) as (
        daemon,
        store,
        strap,
        task,
    ):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None and rt.session.seq > 20)
        before = rt.session.beat_t_s or 0.0  # type: ignore[union-attr]
        asleep[0] += suspend_s
        clock.step_s += suspend_s
        await strap.drop(reappear_after_s=0.5)
        await until(lambda: rt.reconnects == 1 and rt.state == "streaming")
        seq = rt.session.seq  # type: ignore[union-attr]
        await until(lambda: rt.session is not None and rt.session.seq > seq + 20)
        marker = json.dumps({"id": "m", "kind": "note", "text": "after the resume"})
        await daemon.on_command(rt.device_id or "", "marker", marker.encode(), False)
        daemon.stop()
        await asyncio.wait_for(task, 10)
        (summary,) = store.list_sessions()
        beats = store.beats(summary.id)
        gaps = store.read_session(summary.id).gaps
        (mark,) = store.markers(summary.id)
    after = [b for b in beats if b.beat_t_s > before + 1]
    assert after and after[0].beat_t_s > before + suspend_s * speed  # not 600 s early
    assert any(g.end_t_s - g.start_t_s > 0.9 * suspend_s * speed for g in gaps), gaps
    assert mark.t_s > before + suspend_s * speed
    assert summary.stopped_ms is not None
    wall_len = (summary.stopped_ms - summary.started_ms) / 1000 * speed
    assert abs(wall_len - beats[-1].beat_t_s) < 5 * speed  # length and data agree


# -- 3. kill -9 mid-session, then start again ----------------------------------------------------


def demo_cmd(db: Path, speed: float) -> list[str]:
    return [
        sys.executable, "-m", "settle.cli", "demo", "--replay", str(RECORDING),
        "--speed", str(speed), "--no-mqtt", "--db", str(db),
    ]  # fmt: skip


def stored_count(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=5) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM beats").fetchone()[0])
        except sqlite3.OperationalError:  # schema not created yet
            return 0


async def test_kill_9_mid_session_then_restart(tmp_path: Path) -> None:
    """``settle demo`` is killed with SIGKILL mid-session: what it stored is the replay's
    prefix up to within the last second (flush interval) before the kill; the next start
    marks the old session interrupted, records a new one cleanly, and the old one exports."""
    db = tmp_path / "s.db"
    env = {**os.environ, "SETTLE_CONFIG": str(CONFIG)}
    speed = 10.0
    q = quantised([float(x) for x in read_rr_file(RECORDING).rr_ms])
    proc = subprocess.Popen(  # noqa: ASYNC220 - killed with SIGKILL, waited for below
        demo_cmd(db, speed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        async with asyncio.timeout(30):
            while stored_count(db) < 30:  # noqa: ASYNC110 - watching another process's file
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.3)
        killed_at_ms = time.time() * 1000
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert integrity(db) == "ok"
    with SessionStore.open(db) as store:
        (old,) = store.list_sessions()
        old_beats = store.beats(old.id)
    assert old.state == SessionState.RUNNING  # nobody closed it: it was killed
    assert [b.rr_ms for b in old_beats] == q[: len(old_beats)]  # a clean prefix, no holes
    # Complete to within the last second: every beat that arrived more than a flush interval
    # (1 s) before the kill is stored; allow 0.3 s for the commit itself.
    last_recv_ms = old_beats[-1].recv_ts_ms
    assert killed_at_ms - last_recv_ms < 1300, killed_at_ms - last_recv_ms
    res = await asyncio.to_thread(
        subprocess.run, demo_cmd(db, 60.0), capture_output=True, text=True, timeout=60, env=env
    )
    assert res.returncode == 0, res.stderr
    assert f"session {old.id} was left running by an earlier crash; marked interrupted" in (
        res.stderr
    )
    assert "Traceback" not in res.stderr
    with SessionStore.open(db) as store:
        sessions = {s.id: s for s in store.list_sessions()}
        assert len(sessions) == 2
        new = next(s for sid, s in sessions.items() if sid != old.id)
        old = sessions[old.id]
        assert [b.rr_ms for b in store.beats(new.id)] == q  # the new session is whole
        out = export_session(store, old.id, "csv", tmp_path / "old.csv")
    assert old.state == SessionState.INTERRUPTED
    # Ends at its last stored beat: its start plus that beat's session time (wall ms at
    # speed 10), which is where the beat arrived, to the timing's precision.
    assert old.stopped_ms == old.started_ms + round(old_beats[-1].beat_t_s * 1000 / speed)
    assert abs(old.stopped_ms - last_recv_ms) < 500
    assert new.state == SessionState.STOPPED
    with out.open() as f:
        rows = [r for r in csv.DictReader(f) if r["record"] == "beat"]
    assert [float(r["rr_ms"]) for r in rows] == q[: len(old_beats)]
    assert integrity(db) == "ok"


async def test_kill_9_then_restart_corrects_what_the_broker_retains(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """``settle demo`` publishing to a broker is killed with SIGKILL: the broker keeps saying
    its strap is ``online``, streaming, its session ``running`` (only the Last Will's
    ``bridge/state offline`` says otherwise). The next start — with another strap — corrects
    that for the dead one: what Home Assistant and `settle mark` read says offline / ended."""
    from tests.test_mqtt import retained

    db = tmp_path / "s.db"
    host, port = mosquitto.host, mosquitto.port
    env = {**os.environ, "SETTLE_CONFIG": str(CONFIG), "SETTLE_HOMEASSISTANT__ENABLED": "false"}
    cmd = demo_cmd(db, 10.0)
    cmd[cmd.index("--no-mqtt")] = f"--mqtt={host}:{port}"
    async with Collector(host, port) as col:
        proc = subprocess.Popen(  # noqa: ASYNC220 - killed with SIGKILL, waited for below
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        try:
            async with asyncio.timeout(30):
                await col.wait_for("beat", 20)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(5) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        async with asyncio.timeout(10):
            await col.offline.wait()  # the Last Will
    dead = json.loads(device_messages(col, "session")[0])["device"]
    assert await retained(host, port, f"settle/{dead}/availability") == b"online"  # stale

    settings = daemon_settings(db, host=host, port=port)
    async with Collector(host, port) as col, VirtualAir() as air:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=9), name="Other HR", speed=10)
        await strap.start()
        with SessionStore.open(db) as store:
            async with MqttLink(connect_options(settings)) as link:
                daemon = Daemon(
                    settings, store, [strap_client(air, strap)], link=link, time_scale=10
                )
                task = asyncio.create_task(daemon.run())
                rt = daemon.runtimes[0]
                async with asyncio.timeout(20):
                    while b"offline" not in [  # the correction, live
                        p for t, p, _ in col.messages if t == f"settle/{dead}/availability"
                    ]:
                        await col.wait_for("availability", len(col.payloads("availability")) + 1)
                await until(lambda: rt.session is not None and rt.state == "streaming")
                live = rt.device_id
                daemon.stop()
                await asyncio.wait_for(task, 10)
            old = next(s for s in store.list_sessions() if s.device_id == dead)
        await strap.stop()

    assert live != dead
    assert old.state == SessionState.INTERRUPTED
    assert await retained(host, port, f"settle/{dead}/availability") == b"offline"
    session = json.loads(await retained(host, port, f"settle/{dead}/session") or b"{}")
    assert (session["id"], session["state"]) == (old.id, "interrupted")
    assert (session["stopped_ts"], session["n_beats"]) == (old.stopped_ms, old.n_beats)
    assert json.loads(await retained(host, port, f"settle/{dead}/status") or b"{}")["state"] == (
        "stopped"
    )
