"""The paths made cheaper for scale (issue 8, "reliability and performance"): behaviour only.

* the store's batch (every session's rows in one transaction) keeps the write guarantees:
  all or nothing, nothing lost on a failing store, gaps written once;
* stopping a daemon with many straps closes every session, stores every beat and says
  ``offline`` (all sessions are closed together, with one flush);
* the MQTT socket has TCP_NODELAY.

Timing is measured by ``benchmarks/bench_scale.py``, never asserted here.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import aiomqtt
import pytest

from feedback.mqtt import ConnectOptions, MqttLink
from sessions.store import BeatAnnotation, BeatClass, BeatRow, GapRow, SessionState, SessionStore
from settle.app import connect_options
from settle.config import load_config
from settle.daemon import Daemon
from settle.demo import virtual_world
from settle.errors import StoreError
from settle.pipeline import BeatWriter
from tests.conftest import Mosquitto, strap_client
from tests.test_e2e import CONFIG, Collector
from tests.test_reconnect import until


def beat(seq: int) -> BeatRow:
    return BeatRow(seq=seq, beat_t_s=seq * 0.8, recv_ts_ms=1_700_000_000_000 + seq * 800,
                   rr_ms=800.0, rr_raw=819, hr_bpm=75, contact=True)  # fmt: skip


def new_sessions(store: SessionStore, n: int) -> list[str]:
    return [store.create_session(f"dev{i}", 1_700_000_000_000, "test", {}).id for i in range(n)]


# -- the store's batch -------------------------------------------------------------------------


def test_batch_commits_all_calls_together_or_nothing(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path / "s.db") as store:
        a, b = new_sessions(store, 2)
        with store.batch():
            store.add_beats(a, [beat(0), beat(1)])
            store.add_beats(b, [beat(0)])
            store.add_gap(a, GapRow(1.0, 2.0, "test"))
        assert [len(store.beats(s)) for s in (a, b)] == [2, 1]
        with pytest.raises(StoreError), store.batch():
            store.add_beats(a, [beat(2)])
            store.add_gap(b, GapRow(1.0, 2.0, "test"))
            store.annotate_beats(b, [BeatAnnotation(99, 800.0, BeatClass.NORMAL)])  # not stored
        assert [len(store.beats(s)) for s in (a, b)] == [2, 1]  # nothing of the failed batch
        assert [len(store.gaps(s)) for s in (a, b)] == [1, 0]


def test_a_call_caught_inside_a_batch_leaves_no_partial_rows(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path / "s.db") as store:
        (a,) = new_sessions(store, 1)
        store.add_beats(a, [beat(0), beat(1)])
        with store.batch():
            store.add_beats(a, [beat(2)])
            with pytest.raises(StoreError):  # annotates seq 0, then fails on seq 7
                store.annotate_beats(
                    a,
                    [BeatAnnotation(0, 790.0, BeatClass.NORMAL),
                     BeatAnnotation(7, 800.0, BeatClass.NORMAL)],
                )  # fmt: skip
            with pytest.raises(ValueError):
                store.add_ecg(a, [2, 1], [0, 0])  # refused before it touches the file
        stored = store.beats(a)
        assert [b.seq for b in stored] == [0, 1, 2]
        assert stored[0].beat_class is None  # the failed call's first update was undone


def test_other_threads_wait_for_a_batch(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path / "s.db") as store:
        (a,) = new_sessions(store, 1)
        seen: list[int] = []
        inside = threading.Event()

        def reader() -> None:
            inside.wait(5)
            seen.append(len(store.beats(a)))

        t = threading.Thread(target=reader)
        t.start()
        with store.batch():
            store.add_beats(a, [beat(0)])
            inside.set()
            time.sleep(0.05)  # the reader is blocked on the batch, not reading half of it
            store.add_beats(a, [beat(1)])
        t.join(5)
        assert seen == [2]


# -- BeatWriter: one batch per flush, nothing lost -----------------------------------------------


async def test_writer_keeps_every_row_while_the_store_fails_then_writes_each_once(
    tmp_path: Path,
) -> None:
    with SessionStore.open(tmp_path / "s.db") as store:
        sids = new_sessions(store, 3)
        writer = BeatWriter(store)
        for sid in sids:
            writer.add_beats(sid, [beat(0), beat(1)])
            writer.annotate(sid, [BeatAnnotation(0, 800.0, BeatClass.NORMAL)])
            writer.add_gap(sid, GapRow(0.5, 0.7, "test"))

        def pragma(sql: str) -> None:
            with store._lock:  # the store's own connection: its real error path
                assert store._conn is not None
                store._conn.execute(sql)

        pragma("PRAGMA query_only = 1")
        await writer.flush()
        assert writer.failing
        for sid in sids:
            writer.add_beats(sid, [beat(2)])  # newer rows go behind the kept ones
        await writer.flush()
        assert writer.failing and all(store.beats(s) == [] for s in sids)
        pragma("PRAGMA query_only = 0")
        await writer.flush()
        assert not writer.failing
        assert writer.stored_beats == 9
        for sid in sids:
            assert [b.seq for b in store.beats(sid)] == [0, 1, 2]
            assert store.beats(sid)[0].beat_class is BeatClass.NORMAL
            assert len(store.gaps(sid)) == 1  # once, though two flushes failed
        await writer.flush()  # nothing buffered: nothing to do


async def test_concurrent_flushes_write_in_call_order(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path / "s.db") as store:
        (a,) = new_sessions(store, 1)
        writer = BeatWriter(store)
        writer.add_beats(a, [beat(0)])
        first = asyncio.create_task(writer.flush())
        await asyncio.sleep(0)
        # Annotates a beat the first flush is still writing: must come after it.
        writer.annotate(a, [BeatAnnotation(0, 800.0, BeatClass.NORMAL)])
        writer.add_beats(a, [beat(1)])
        await asyncio.gather(first, writer.flush())
        assert not writer.failing
        assert [(b.seq, b.beat_class) for b in store.beats(a)] == [
            (0, BeatClass.NORMAL),
            (1, None),
        ]


# -- stopping many straps ---------------------------------------------------------------------


@pytest.mark.mosquitto
async def test_stop_with_twenty_straps_closes_every_session_together(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    n, speed = 20, 5.0
    db = tmp_path / "s.db"
    settings = load_config(
        CONFIG,
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        storage={"db_path": db},
        homeassistant={"enabled": False},
    )
    async with (
        Collector(mosquitto.host, mosquitto.port) as col,
        virtual_world(replay=None, speed=speed, seed=1, n_straps=n) as world,
    ):
        with SessionStore.open(db) as store:
            link = MqttLink(connect_options(settings), queue_size=100_000)
            async with link:
                clients = [strap_client(world.air, s) for s in world.straps]
                daemon = Daemon(settings, store, clients, link=link, time_scale=speed)
                task = asyncio.create_task(daemon.run())
                await until(
                    lambda: all(r.session is not None and r.session.seq > 10
                                for r in daemon.runtimes),
                    120,
                )  # fmt: skip
                daemon.stop()
                await asyncio.wait_for(task, 60)
                assert [r.state for r in daemon.runtimes] == ["stopped"] * n
            # The link is closed: everything it had queued went out before "offline".
            await asyncio.wait_for(col.offline.wait(), 10)
            summaries = store.list_sessions()
            assert len(summaries) == n and len(daemon.finished) == n
            assert {s.state for s in summaries} == {SessionState.STOPPED}
            for p in daemon.finished:
                beats = store.beats(p.session_id)
                assert [b.seq for b in beats] == list(range(p.seq)), p.session_id
                assert all(b.beat_class is not None for b in beats)  # finalised and flushed
    last: dict[str, bytes] = {}
    for topic, payload, _retain in col.messages:
        last[topic] = payload
    assert last["settle/bridge/state"] == b"offline"
    devices = {r.device_id for r in daemon.runtimes}
    assert len(devices) == n
    for dev in devices:
        assert json.loads(last[f"settle/{dev}/session"])["state"] == "stopped"
        assert last[f"settle/{dev}/availability"] == b"offline"


# -- the MQTT pump: many messages in flight, still in order ---------------------------------


@pytest.mark.mosquitto
async def test_pump_keeps_order_and_loses_nothing_with_many_in_flight(
    mosquitto: Mosquitto,
) -> None:
    """Mixed QoS 0/1 messages published in bursts (the pump no longer waits for each
    acknowledgement): all arrive, in publish order per topic, over one connection."""
    n = 3000
    async with Collector(mosquitto.host, mosquitto.port) as col:
        link = MqttLink(mosquitto.host, mosquitto.port, queue_size=n, max_inflight=64)
        async with link:
            assert await link.wait_connected(5)
            for i in range(n):
                leaf = "indices" if i % 7 == 0 else "beat"
                link.publish(f"settle/dev1/{leaf}", json.dumps({"i": i}), qos=int(leaf != "beat"))
                if i % 500 == 0:
                    await asyncio.sleep(0)
            async with asyncio.timeout(20):
                while link.published < n:  # noqa: ASYNC110 - polling a counter from outside
                    await asyncio.sleep(0.02)
            assert link.connects == 1 and link.dropped == 0
        async with asyncio.timeout(10):
            await col.offline.wait()
    # MQTT orders messages per topic and QoS (the broker may let a QoS 0 message overtake a
    # QoS 1 one queued for the subscriber); within each stream the order is the publish order.
    for leaf, want in [
        ("beat", [i for i in range(n) if i % 7]),
        ("indices", list(range(0, n, 7))),
    ]:
        got = [json.loads(p)["i"] for t, p, _r in col.messages if t == f"settle/dev1/{leaf}"]
        assert got == want, leaf


# -- TCP_NODELAY -------------------------------------------------------------------------------


@pytest.mark.mosquitto
async def test_mqtt_socket_has_no_nagle_delay(mosquitto: Mosquitto) -> None:
    opts = ConnectOptions(mosquitto.host, mosquitto.port)
    async with aiomqtt.Client(**opts.client_kwargs()) as client:
        sock = client._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
