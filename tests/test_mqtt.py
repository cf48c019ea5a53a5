"""The MQTT side against a real mosquitto: reconnects, retained state, bounded queue, commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from feedback.mqtt import ConnectOptions, MqttLink
from sensors.virtual.air import VirtualAir
from sensors.virtual.model import ModelParams, PhysioModel
from sensors.virtual.strap import VirtualStrap
from sessions.store import SessionStore
from settle.app import serve
from settle.config import Settings, load_config
from settle.daemon import Daemon
from settle.demo import virtual_world
from tests.conftest import Mosquitto
from tests.test_e2e import CONFIG, Collector
from tests.test_reconnect import client_for, until

pytestmark = pytest.mark.mosquitto


async def retained(host: str, port: int, topic: str, wait_s: float = 2.0) -> bytes | None:
    async with aiomqtt.Client(host, port) as c:
        await c.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(wait_s):
                async for m in c.messages:
                    return bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else None
        except TimeoutError:
            return None
    return None


async def test_broker_restart_restores_retained_state_and_delivers_queue(
    mosquitto: Mosquitto,
) -> None:
    async with MqttLink(mosquitto.host, mosquitto.port, backoff_cap_s=0.5) as link:
        assert await link.wait_connected(5)
        link.publish("settle/dev1/session", b'{"state":"running"}', qos=1, retain=True)
        assert await retained(mosquitto.host, mosquitto.port, "settle/bridge/state") == b"online"

        mosquitto.stop()  # persistence is off: the broker forgets every retained message
        for _ in range(100):
            if not link.connected:
                break
            await asyncio.sleep(0.05)
        assert not link.connected
        for i in range(5):  # measuring goes on while the broker is away
            link.publish("settle/dev1/indices", json.dumps({"i": i}).encode(), qos=1)

        async with Collector(*_restart(mosquitto)) as col:
            async with asyncio.timeout(5):  # "retained state back within 5 s"
                await col.wait_for("indices", 5)
        assert [json.loads(p)["i"] for p in col.payloads("indices")] == [0, 1, 2, 3, 4]
        assert await retained(mosquitto.host, mosquitto.port, "settle/bridge/state") == b"online"
        assert await retained(mosquitto.host, mosquitto.port, "settle/dev1/session") == (
            b'{"state":"running"}'
        )
        assert link.dropped == 0
    # A clean stop leaves "offline" behind.
    assert await retained(mosquitto.host, mosquitto.port, "settle/bridge/state") == b"offline"


async def test_the_newest_retained_state_wins_after_an_outage(mosquitto: Mosquitto) -> None:
    """Two updates of one retained topic while the broker was away (a session stopped and a
    new one started from the dashboard): on reconnect the link replayed the newest, then sent
    the older copy still queued, so the broker kept retaining the stopped session — `settle
    mark` then said no session was running, and Home Assistant showed the old one. Now the
    newest is what the broker keeps, and it is sent once."""
    async with MqttLink(mosquitto.host, mosquitto.port, backoff_cap_s=0.5) as link:
        assert await link.wait_connected(5)
        mosquitto.stop()
        for _ in range(100):
            if not link.connected:
                break
            await asyncio.sleep(0.05)
        assert not link.connected
        link.publish("settle/dev1/session", b'{"id":"old","state":"stopped"}', qos=1, retain=True)
        link.publish("settle/dev1/availability", b"offline", qos=1, retain=True)
        link.publish("settle/dev1/session", b'{"id":"new","state":"running"}', qos=1, retain=True)
        link.publish("settle/dev1/availability", b"online", qos=1, retain=True)
        async with Collector(*_restart(mosquitto)) as col:
            assert await link.wait_connected(5)
            await asyncio.sleep(0.5)
        assert await retained(mosquitto.host, mosquitto.port, "settle/dev1/session") == (
            b'{"id":"new","state":"running"}'
        )
        assert await retained(mosquitto.host, mosquitto.port, "settle/dev1/availability") == (
            b"online"
        )
        assert [json.loads(p)["id"] for p in col.payloads("session")] == ["new"]


def _restart(m: Mosquitto) -> tuple[str, int]:
    m.start()
    return m.host, m.port


async def test_full_queue_drops_oldest_and_counts(mosquitto: Mosquitto) -> None:
    link = MqttLink("127.0.0.1", mosquitto.port, queue_size=10)
    for i in range(25):  # not connected yet: everything queues
        link.publish("settle/d/beat", str(i).encode())
    assert link.dropped == 15
    async with Collector(mosquitto.host, mosquitto.port) as col, link:
        async with asyncio.timeout(5):
            await col.wait_for("beat", 10)
    assert [int(p) for p in col.payloads("beat")] == list(range(15, 25))  # newest kept


async def test_retained_state_is_sent_once_at_connect(mosquitto: Mosquitto) -> None:
    """Retained messages published before the first connection (bridge info, every Home
    Assistant config) were sent twice: once as retained state, once from the queue."""
    link = MqttLink("127.0.0.1", mosquitto.port)
    link.publish("settle/d/status", b"streaming", qos=1, retain=True)
    link.publish("settle/d/beat", b"1")
    async with Collector(mosquitto.host, mosquitto.port) as col, link:
        async with asyncio.timeout(5):
            await col.wait_for("beat")
        link.publish("settle/d/status", b"stopped", qos=1, retain=True)  # a newer one: sent
        async with asyncio.timeout(5):
            await col.wait_for("status", 2)
        await asyncio.sleep(0.3)
    assert col.payloads("status") == [b"streaming", b"stopped"]


def test_dropped_messages_are_counted_per_strap() -> None:
    """Each strap's status says how many of *its* messages a full queue dropped: with two
    straps both statuses showed the sum of both (772 where each had lost about 384)."""
    link = MqttLink("127.0.0.1", 1, queue_size=10)  # never connected: everything queues
    for i in range(12):
        link.publish("settle/a/beat", str(i).encode())
        link.publish("settle/ab/beat", str(i).encode())
    link.publish("settle/a/event", b"{}", qos=1)
    assert link.dropped == 15
    # The oldest 15 QoS 0 messages: 8 of a's beats and 7 of ab's ("settle/a/" is not ab's).
    assert (link.dropped_under("settle/a/"), link.dropped_under("settle/ab/")) == (8, 7)


async def test_full_queue_drops_beats_before_events(mosquitto: Mosquitto) -> None:
    """An outage long enough to fill the queue with beats keeps the QoS 1 messages queued
    before them (a marker event, a retained state change): beats are in the store anyway."""
    link = MqttLink("127.0.0.1", mosquitto.port, queue_size=10)
    link.publish("settle/d/event", b'{"kind": "shame"}', qos=1)
    link.publish("settle/d/status", b"streaming", qos=1, retain=True)
    for i in range(25):
        link.publish("settle/d/beat", str(i).encode())
    assert link.dropped == 17
    async with Collector(mosquitto.host, mosquitto.port) as col, link:
        async with asyncio.timeout(5):
            await col.wait_for("beat", 8)
            await col.wait_for("event")
    assert col.payloads("event") == [b'{"kind": "shame"}']
    assert [int(p) for p in col.payloads("beat")] == list(range(17, 25))


async def test_a_connection_reset_by_the_broker_is_one_warning_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker that dies mid-session resets the TCP connection (RST): the link logs one
    WARNING and retries; the client library's own "failed to receive on socket" is DEBUG."""
    import logging
    import socket
    import struct

    resets = 0

    async def packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            b = (await reader.readexactly(1))[0]
            length += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return head, await reader.readexactly(length)

    async def serve_until_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A broker of few words: CONNACK, PUBACK for QoS 1, then it dies (RST) while the
        # client is sending.
        await packet(reader)  # CONNECT
        writer.write(b"\x20\x02\x00\x00")  # CONNACK, accepted
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                while True:
                    head, body = await packet(reader)
                    if head >> 4 == 3 and head & 0x06 == 0x02:  # PUBLISH, QoS 1
                        n = int.from_bytes(body[:2])
                        writer.write(b"\x40\x02" + body[2 + n : 4 + n])  # PUBACK, its id

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal resets
        await serve_until_reset(reader, writer)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # closing with linger 0 sends RST
        resets += 1

    caplog.set_level(logging.INFO)
    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    from feedback.mqtt import ConnectOptions

    async with server, MqttLink(ConnectOptions("127.0.0.1", port), topic_base="settle") as link:
        while resets < 1:  # the fake broker counts its resets
            link.publish("settle/a/beat", b"{}")
            await asyncio.sleep(0.05)
        async with asyncio.timeout(10):
            while not any(r.name == "feedback.mqtt" for r in caplog.records):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r.getMessage() for r in caplog.records if r.name == "feedback.mqtt"]
    assert any("retrying" in w for w in warnings), warnings


def test_mark_with_the_broker_down_says_nothing_was_sent_and_where_to_mark(
    tmp_path: Path,
) -> None:
    """With the broker down `settle mark` failed "cannot reach the MQTT broker" and the
    marker was gone, while the dashboard (which talks to the daemon directly) still takes
    markers: the line now says nothing was sent and where it would be."""
    from feedback.broker import free_loopback_port

    port = free_loopback_port()  # nothing listens there
    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", "mark", "hello", "--timeout", "3",
         "--mqtt", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("SETTLE_")},
             "SETTLE_CONFIG": str(CONFIG)},  # the shipped config: dashboard on 8765
    )  # fmt: skip
    assert res.returncode == 1
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"settle: error: cannot reach the MQTT broker mqtt://127.0.0.1:{port}")
    assert line.endswith(
        "; nothing was sent (the dashboard, http://127.0.0.1:8765/live, reaches the daemon "
        "without the broker)"
    ), line
    # Without a dashboard there is nowhere to point: it only says nothing was sent.
    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", "mark", "hello", "--timeout", "3",
         "--mqtt", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SETTLE_CONFIG": str(CONFIG), "SETTLE_HTTP__ENABLED": "false"},
    )  # fmt: skip
    assert res.returncode == 1 and res.stderr.rstrip().endswith("; nothing was sent")


async def test_unreachable_broker_never_blocks_publishing() -> None:
    from feedback.broker import free_loopback_port

    port = free_loopback_port()  # nothing listens there
    async with MqttLink("127.0.0.1", port, queue_size=50, backoff_cap_s=0.2) as link:
        for i in range(200):
            link.publish("settle/d/beat", str(i).encode())
        await asyncio.sleep(0.5)
        assert not link.connected
        assert link.dropped == 150
        assert link.last_error is not None


@pytest.fixture(params=["mosquitto", "amqtt"])
async def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The core command suite runs against both brokers (amqtt: MQTT 3.1.1 only)."""
    if request.param == "mosquitto":
        from tests.conftest import start_mosquitto

        m = start_mosquitto(tmp_path)
        try:
            yield m.host, m.port, "5"
        finally:
            m.stop()
    else:
        from feedback.broker import EmbeddedBroker, free_loopback_port

        async with EmbeddedBroker(free_loopback_port()) as b:
            yield b.host, b.port, "3.1.1"


async def test_commands_results_and_no_side_effects(
    any_broker: tuple[str, int, str], tmp_path: Path
) -> None:
    host, port, protocol = any_broker
    db = tmp_path / "s.db"
    settings = load_config(
        CONFIG,
        mqtt={"host": host, "port": port, "protocol": protocol},
        storage={"db_path": db},
        processing={"baseline_s": 30},
    )
    results: dict[str, dict[str, object]] = {}

    async with (
        Collector(host, port) as col,
        virtual_world(replay=None, speed=5, seed=3) as world,
    ):
        daemon_task = asyncio.create_task(
            serve(
                settings,
                **world.serve_kwargs(),
                duration=12,
                handle_signals=False,
            )
        )
        async with asyncio.timeout(20):
            await col.wait_for("session")
        dev = json.loads(col.payloads("session")[0])["device"]
        cmd = f"settle/{dev}/cmd"
        async with aiomqtt.Client(host, port) as c:
            await c.publish(f"{cmd}/marker", json.dumps(
                {"v": 1, "id": "42", "kind": "shame", "text": "it came back at the second breath"}
            ), qos=1)  # fmt: skip
            await c.publish(f"{cmd}/marker", b"{not json", qos=1)
            await c.publish(f"{cmd}/marker", json.dumps({"id": "big", "text": "x" * 5000}), qos=1)
            await c.publish(f"{cmd}/frobnicate", json.dumps({"id": "7"}), qos=1)
            await c.publish(f"{cmd}/marker", json.dumps({"id": "8", "kind": "anger"}), qos=1)
            await c.publish(f"{cmd}/marker", b'{"v": true, "id": "10", "kind": "note"}', qos=1)
            await c.publish(
                f"{cmd}/marker", b'{"id": "11", "kind": "note", "kind": "shame"}', qos=1
            )
            if protocol == "5":  # 3.1.1 cannot tell live retained publishes (see the amqtt test)
                await c.publish(
                    f"{cmd}/marker", json.dumps({"id": "9", "kind": "note"}), qos=1, retain=True
                )
                await c.publish(f"{cmd}/marker", b"", qos=1, retain=True)  # clear it again
            env = {**os.environ, "SETTLE_CONFIG": str(CONFIG)}
            mark = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "settle.cli", "mark", "doubt showed up", "--kind", "doubt",
                "--mqtt", f"{host}:{port}",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            )  # fmt: skip
            out, err = await mark.communicate()
            assert mark.returncode == 0, err.decode()
            assert f"doubt: ok ({dev})" in out.decode()
        assert await daemon_task == 0

    for topic, payload, _ in col.messages:
        if topic.endswith("/result"):
            res = json.loads(payload)
            results[str(res["id"]) if res["id"] is not None else "none"] = res
    assert results["42"]["status"] == "ok"
    assert results["none"]["status"] == "error"
    assert results["none"]["error"] == "payload is not valid JSON"
    assert "too large" in str(results["big"]["error"])
    assert "unknown command 'frobnicate'" in str(results["7"]["error"])
    assert "kind" in str(results["8"]["error"])
    assert (
        results["10"]["error"]
        == "v: Value error, schema version must be the number 1, not a boolean"
    )
    assert results["11"]["error"] == "key 'kind' appears twice"
    if protocol == "5":
        assert "retained command ignored" in str(results["9"]["error"])
    events = [json.loads(p) for p in col.payloads("event")]
    assert [e["kind"] for e in events if e["source"] == "mqtt"] == ["shame", "doubt"]

    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
        markers = store.markers(s.id)
    assert [(m.kind, m.text) for m in markers] == [
        ("shame", "it came back at the second breath"),
        ("doubt", "doubt showed up"),
    ]
    assert all(m.source == "mqtt" for m in markers)


async def test_mark_without_daemon_is_one_clear_line(mosquitto: Mosquitto) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "settle.cli", "mark", "hello", "--timeout", "3",
        "--mqtt", f"{mosquitto.host}:{mosquitto.port}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "SETTLE_CONFIG": str(CONFIG)},
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert err.decode().strip().splitlines() == [
        f"settle: error: no Settle daemon is online on the MQTT broker mqtt://{mosquitto.host}:"
        f"{mosquitto.port} (start `settle demo` or `settle run`, or point --mqtt at the broker "
        "it uses)"
    ]


async def test_the_embedded_broker_listens_where_the_other_commands_look() -> None:
    """With `port = 18833` and no host, the embedded broker took 1883 (or a random port)
    while `settle mark`, `session` and `doctor` looked on 18833 ("cannot reach the MQTT
    broker") although the daemon was running: it now listens on the configured port when
    that is free."""
    from feedback.broker import free_loopback_port
    from settle.daemon import open_broker

    port = free_loopback_port()
    settings = load_config(CONFIG, mqtt={"host": "", "port": port, "embedded": "auto"})
    async with open_broker(settings) as choice:
        assert choice is not None and choice.embedded and choice.port == port
        async with aiomqtt.Client("127.0.0.1", port) as c:  # what `settle mark` connects to
            await c.publish("settle/probe", b"x", qos=1)


async def test_stale_retained_command_is_not_replayed_embedded_amqtt(tmp_path: Path) -> None:
    """MQTT 3.1.1 (the embedded broker): a retained command left on the broker reaches the
    daemon flagged retained when it subscribes; it is refused and reported, never applied."""
    from feedback.broker import free_loopback_port

    db = tmp_path / "s.db"
    settings = load_config(
        CONFIG,
        mqtt={"embedded": "always", "embedded_port": free_loopback_port()},
        storage={"db_path": db},
    )
    results: list[dict[str, object]] = []

    async def plant_stale_command(broker: object) -> None:
        host, port = broker.host, broker.port  # type: ignore[attr-defined]
        async with aiomqtt.Client(host, port) as c:
            stale = json.dumps({"id": "old", "kind": "shame", "text": "yesterday"})
            await c.publish("settle/old_strap_1234/cmd/marker", stale, qos=1, retain=True)

        async def watch() -> None:
            async with aiomqtt.Client(host, port) as c:
                await c.subscribe("settle/+/cmd/+/result", qos=1)
                async for m in c.messages:
                    results.append(json.loads(bytes(m.payload)))  # type: ignore[arg-type]

        watchers.append(asyncio.create_task(watch()))
        await asyncio.sleep(0.2)

    watchers: list[asyncio.Task[None]] = []
    async with virtual_world(replay=None, speed=5, seed=2) as world:
        code = await serve(
            settings,
            **world.serve_kwargs(),
            duration=3,
            on_broker=plant_stale_command,
            handle_signals=False,
        )
    for w in watchers:
        w.cancel()
    assert code == 0
    assert any(
        r["id"] == "old" and r["status"] == "error" and "retained" in str(r["error"])
        for r in results
    ), results
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
        assert store.markers(s.id) == []


async def test_broker_killed_mid_session_keeps_measuring_and_storing(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The broker dies during a session and comes back: nothing crashes, every beat is stored,
    and the retained session state is back on the new broker within 5 s."""
    from sensors.readers import read_rr_file
    from tests.test_e2e import RECORDING, check_store

    expected = [float(x) for x in read_rr_file(RECORDING).rr_ms]
    db = tmp_path / "s.db"
    settings = load_config(
        CONFIG,
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        storage={"db_path": db},
    )
    async with virtual_world(replay=RECORDING, speed=20, seed=1) as world:
        task = asyncio.create_task(
            serve(
                settings,
                **world.serve_kwargs(),
                finished=[s.wait_finished() for s in world.straps],
                handle_signals=False,
            )
        )
        await asyncio.sleep(3)
        mosquitto.stop()  # forgets every retained message (persistence off)
        await asyncio.sleep(3)
        assert not task.done()
        restarted_ms = time.time() * 1000
        async with Collector(*_restart(mosquitto)) as col:
            async with asyncio.timeout(5):
                session = json.loads((await col.wait_for("session"))[0])
                # a fresh status, not only the copy cached before the outage (the next
                # 30 s tick would be too late for what it says: mqtt_dropped, state)
                while not any(json.loads(p)["ts"] >= restarted_ms for p in col.payloads("status")):
                    await col.wait_for("status", len(col.payloads("status")) + 1)
            assert session["state"] == "running"
            assert await asyncio.wait_for(task, 60) == 0
    check_store(db, expected)


class CuttableLink:
    """A TCP relay between the daemon and the broker on 127.0.0.1: ``cut()`` makes the broker
    vanish for the daemon (connections reset, nothing listens) while the broker itself keeps
    its retained state; ``resume()`` listens again on the same port."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def resume(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def _relayed(mosquitto: Mosquitto, tmp_path: Path) -> tuple[CuttableLink, Settings]:
    """A :class:`CuttableLink` to ``mosquitto`` (listening) and settings whose broker is the
    relay: the store ``tmp_path / "s.db"``, no Home Assistant."""
    relay = CuttableLink(mosquitto.port)
    await relay.resume()
    settings = load_config(
        CONFIG,
        mqtt={"host": mosquitto.host, "port": relay.port},
        storage={"db_path": tmp_path / "s.db"},
        homeassistant={"enabled": False},
    )
    return relay, settings


async def test_stop_while_the_broker_is_away_leaves_offline_not_online(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The daemon stops while it cannot reach the broker: the broker (still up, as seen by Home
    Assistant and `settle mark`) must not keep saying the strap is online and its session
    running. The daemon reconnects briefly at shutdown to leave the final state there."""
    relay, settings = await _relayed(mosquitto, tmp_path)
    speed = 10.0
    async with VirtualAir() as air, Collector(mosquitto.host, mosquitto.port) as col:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=4), speed=speed)
        await strap.start()
        link = MqttLink(ConnectOptions("127.0.0.1", relay.port), backoff_cap_s=1.0)
        with SessionStore.open(settings.db_path) as store:
            async with link:
                daemon = Daemon(
                    settings, store, [client_for(air, strap)], link=link, time_scale=speed
                )
                task = asyncio.create_task(daemon.run())
                async with asyncio.timeout(20):
                    await col.wait_for("session")
                    await col.wait_for("beat", 5)
                dev = daemon.runtimes[0].device_id
                await relay.cut()
                await until(lambda: not link.connected)
                async with asyncio.timeout(10):
                    await col.offline.wait()  # the Last Will: the broker saw the link end
                daemon.stop()
                await asyncio.wait_for(task, 15)
                await relay.resume()  # the broker is reachable again as the link closes
            sid = store.list_sessions()[0].id
        await strap.stop()

    async def now(leaf: str) -> bytes | None:
        return await retained(mosquitto.host, mosquitto.port, f"settle/{dev}/{leaf}")

    assert await now("availability") == b"offline"
    session = json.loads(await now("session") or b"{}")
    assert (session["id"], session["state"]) == (sid, "stopped")
    assert json.loads(await now("status") or b"{}")["state"] == "stopped"
    assert await retained(mosquitto.host, mosquitto.port, "settle/bridge/state") == b"offline"


@pytest.mark.parametrize("lost_in", ["connect", "online"])
async def test_a_stop_the_client_loses_while_connecting_still_stops(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, lost_in: str
) -> None:
    """Python 3.11's ``asyncio.wait_for`` (under aiomqtt's connect and publish) returns
    instead of raising when the broker's answer arrives in the same step as the cancel. A
    SIGTERM at that moment, while the daemon was connecting, left the link running and
    ``settle run`` waiting forever. Here the client loses the cancellation on purpose, once,
    where the race would: after the CONNACK, or after the PUBACK of ``online``. The link
    must still stop, and leave no ``online`` behind on the broker."""
    lost: list[str] = []
    reached = asyncio.Event()

    async def lose_one_cancel() -> None:
        reached.set()
        try:
            await asyncio.sleep(30)  # the stop lands here
        except asyncio.CancelledError:
            lost.append(lost_in)  # swallowed, as 3.11's wait_for does in that race

    real_enter, real_publish = aiomqtt.Client.__aenter__, aiomqtt.Client.publish

    async def enter(self: aiomqtt.Client) -> aiomqtt.Client:
        client = await real_enter(self)
        if lost_in == "connect" and not lost:
            await lose_one_cancel()
        return client

    async def publish(
        self: aiomqtt.Client, topic: str, payload: Any = None, *a: Any, **kw: Any
    ) -> None:
        await real_publish(self, topic, payload, *a, **kw)
        if lost_in == "online" and payload == b"online" and not lost:
            await lose_one_cancel()

    monkeypatch.setattr(aiomqtt.Client, "__aenter__", enter)
    monkeypatch.setattr(aiomqtt.Client, "publish", publish)
    link = MqttLink("127.0.0.1", mosquitto.port, shutdown_reconnect_s=0)
    link.publish("settle/d/status", b"streaming", qos=1, retain=True)
    await link.__aenter__()
    async with asyncio.timeout(10):
        await reached.wait()
    closing = asyncio.create_task(link.aclose())
    await asyncio.wait({closing}, timeout=15)  # not a timeout around it: that cancel would end it
    stopped = closing.done()
    closing.cancel()  # before the fix: still waiting
    assert stopped, "the link never stopped"
    assert lost == [lost_in]
    assert not link.connected
    state = await retained(mosquitto.host, mosquitto.port, "settle/bridge/state", wait_s=1.0)
    assert state in (None, b"offline")


async def test_a_closed_link_entered_again_connects_and_publishes(mosquitto: Mosquitto) -> None:
    """The stop flag of the first block must not end the second one at once."""
    link = MqttLink("127.0.0.1", mosquitto.port)
    for n in (1, 2):
        async with link:
            assert await link.wait_connected(10), f"block {n} never connected"
            link.publish("settle/d/status", f"block {n}".encode(), qos=1, retain=True)
    assert await retained(mosquitto.host, mosquitto.port, "settle/d/status") == b"block 2"
    assert link.connects == 2


async def test_mark_with_a_strap_but_no_session_says_which_case(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A daemon runs with its strap connected, but the session was stopped: `settle mark`
    says exactly that and how to start one (not "start `settle demo` or `run`")."""
    settings = load_config(
        CONFIG,
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        storage={"db_path": tmp_path / "s.db"},
        homeassistant={"enabled": False},
    )
    env = {**os.environ, "SETTLE_CONFIG": str(CONFIG)}
    async with VirtualAir() as air, Collector(mosquitto.host, mosquitto.port) as col:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=5), speed=5)
        await strap.start()
        with SessionStore.open(settings.db_path) as store:
            async with MqttLink(ConnectOptions(mosquitto.host, mosquitto.port)) as link:
                daemon = Daemon(settings, store, [client_for(air, strap)], link=link, time_scale=5)
                task = asyncio.create_task(daemon.run())
                rt = daemon.runtimes[0]
                await until(lambda: rt.session is not None and link.connected)
                dev = rt.device_id
                stop = json.dumps({"v": 1, "id": "s"}).encode()
                await daemon.on_command(dev or "", "session/stop", stop, False)
                async with asyncio.timeout(10):  # the broker has it (what `mark` will read)
                    while b'"stopped"' not in (await col.wait_for("session"))[-1]:
                        await col.wait_for("session", len(col.payloads("session")) + 1)
                mark = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "settle.cli", "mark", "hello", "--timeout", "5",
                    "--mqtt", f"{mosquitto.host}:{mosquitto.port}",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                )  # fmt: skip
                _, err = await mark.communicate()
                daemon.stop()
                await asyncio.wait_for(task, 10)
        await strap.stop()
    assert mark.returncode == 1
    assert err.decode().strip().splitlines() == [
        f"settle: error: strap {dev} is connected but no session is running; "
        "start one with `settle session start`"
    ]


async def test_a_second_daemon_on_the_same_base_warns_and_its_stop_leaves_the_first_online(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`make demo` while the service runs: two daemons on one broker and topic base, here
    serving the same strap id. When the second stopped, its `offline` stayed retained while
    the first went on recording: `settle mark` said "no Settle daemon is online", Home
    Assistant showed every strap unavailable, `bridge/info` was the second's, the shared
    strap `offline` with a `stopped` session — and the second had said nothing at start.
    Now the second warns once, naming the first's client id, and the first says `online`
    again and restores its retained state."""
    host, port = mosquitto.host, mosquitto.port

    def settings(name: str) -> Any:
        return load_config(
            CONFIG,
            mqtt={"host": host, "port": port, "client_id": f"settle-{name}"},
            storage={"db_path": tmp_path / f"{name}.db"},
        )

    async def held(topic: str) -> bytes | None:
        return await retained(host, port, topic, wait_s=1.0)

    caplog.set_level(logging.INFO, logger="feedback.mqtt")
    async with contextlib.AsyncExitStack() as stack:
        daemons: dict[str, tuple[Daemon, MqttLink, asyncio.Task[None]]] = {}
        for name in ("first", "second"):
            air = await stack.enter_async_context(VirtualAir())
            strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=5), speed=5)
            await strap.start()
            stack.push_async_callback(strap.stop)
            s = settings(name)
            store = stack.enter_context(SessionStore.open(s.db_path))
            link = await stack.enter_async_context(
                MqttLink(ConnectOptions(host, port), client_id=s.mqtt.client_id)
            )
            daemon = Daemon(s, store, [client_for(air, strap)], link=link, time_scale=5)
            daemons[name] = (daemon, link, asyncio.create_task(daemon.run()))
            stack.push_async_callback(_stopped, daemon, daemons[name][2])  # before its store
            rt = daemon.runtimes[0]
            await until(lambda rt=rt, link=link: rt.session is not None and link.connected)
        first, second = daemons["first"][0], daemons["second"][0]
        dev = first.runtimes[0].device_id
        assert dev is not None and dev == second.runtimes[0].device_id
        first_session = first.runtimes[0].session
        assert first_session is not None

        def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

        await until(lambda: bool(warnings()), 5)
        await asyncio.sleep(0.2)
        assert len(warnings()) == 1, warnings()
        (warning,) = warnings()
        assert warning.startswith("another Settle daemon (client settle-first, Settle ")
        assert f"is online on mqtt://{host}:{port} under topic base 'settle'" in warning

        second.stop()
        await asyncio.wait_for(daemons["second"][2], 10)
        await daemons["second"][1].aclose()  # as `settle demo` ends: bridge/state offline
        async with asyncio.timeout(5):
            while await held("settle/bridge/state") != b"online":  # noqa: ASYNC110 - polling the broker from outside
                await asyncio.sleep(0.1)
        await until(lambda: any(BY_ANOTHER in r.getMessage() for r in caplog.records), 5)
        info = json.loads(await held("settle/bridge/info") or b"{}")
        assert info["client_id"] == "settle-first" and info["devices"] == [dev]
        assert await held(f"settle/{dev}/availability") == b"online"
        session = json.loads(await held(f"settle/{dev}/session") or b"{}")
        assert (session["id"], session["state"]) == (first_session.session_id, "running")

        first.stop()
        await asyncio.wait_for(daemons["first"][2], 10)
    # The first one's own stop is not undone.
    assert await held("settle/bridge/state") == b"offline"


BY_ANOTHER = "was set to 'offline' by another client (another Settle daemon"


async def test_the_brokers_shutdown_is_not_blamed_on_another_daemon(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker shutting down (SIGTERM) sends the Last Will of every client still connected,
    the daemon's own too, then drops the connection: the daemon logged "settle/bridge/state
    was set to 'offline' by another client (another Settle daemon on this topic base
    stopped?)" before the outage warning. It says so only once its `online` again was
    taken, which a broker going down does not do; after the restart it is `online`."""
    caplog.set_level(logging.INFO, logger="feedback.mqtt")
    async with MqttLink(mosquitto.host, mosquitto.port, backoff_cap_s=0.5) as link:
        assert await link.wait_connected(5)
        mosquitto.stop()
        await until(lambda: not link.connected)
        _restart(mosquitto)
        assert await link.wait_connected(10)
        assert await retained(mosquitto.host, mosquitto.port, "settle/bridge/state") == b"online"
    lines = [r.getMessage() for r in caplog.records]
    assert not [line for line in lines if BY_ANOTHER in line]
    assert any(line.endswith("reachable again") for line in lines)


async def _handled_by(
    daemons: list[Daemon], i: int, dev: str, name: str, payload: bytes, retained: bool
) -> None:
    """``daemons[i]``'s command handler (the daemon is made after its link)."""
    await daemons[i].on_command(dev, name, payload, retained)


async def _stopped(daemon: Daemon, task: asyncio.Task[None]) -> None:
    daemon.stop()
    await asyncio.wait_for(task, 10)


async def test_two_daemons_on_one_base_give_each_command_one_result(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """`make demo` while the service runs: two daemons on one broker and topic base, each with
    its own strap. Both received every command, and the one without the strap answered
    `unknown device` at once, usually before the other's `ok`: `settle mark --device` said
    "the daemon refused marker: unknown device …" (exit 1) for a marker that was stored. The
    second also "corrected" the first's live strap — `offline`, session `interrupted` —
    because its own store knew that strap from an earlier run. Now each command gets one
    result, from the daemon that serves the strap (one for a strap nobody serves), `settle
    mark` says ok, and the first daemon's state is left alone."""
    host, port = mosquitto.host, mosquitto.port
    async with contextlib.AsyncExitStack() as stack:
        col = await stack.enter_async_context(Collector(host, port))
        daemons: list[Daemon] = []
        for name in ("first", "second"):
            s = load_config(
                CONFIG,
                mqtt={"host": host, "port": port, "client_id": f"settle-{name}"},
                storage={"db_path": tmp_path / f"{name}.db"},
                homeassistant={"enabled": False},
            )
            air = await stack.enter_async_context(VirtualAir())
            strap = VirtualStrap(
                air, PhysioModel(ModelParams(), seed=5), speed=5, name=f"Strap {name}"
            )
            await strap.start()
            stack.push_async_callback(strap.stop)
            store = stack.enter_context(SessionStore.open(s.db_path))
            if daemons:  # an earlier run of the second recorded the first's strap
                first_dev = daemons[0].runtimes[0].device_id
                assert first_dev is not None
                store.create_session(first_dev, int(time.time() * 1000) - 60_000, "ble:x", {})
            link = await stack.enter_async_context(
                MqttLink(
                    ConnectOptions(host, port),
                    client_id=s.mqtt.client_id,
                    on_command=partial(_handled_by, daemons, len(daemons)),
                )
            )
            daemon = Daemon(s, store, [client_for(air, strap)], link=link, time_scale=5)
            daemons.append(daemon)
            task = asyncio.create_task(daemon.run())
            stack.push_async_callback(_stopped, daemon, task)  # before its store
            rt = daemon.runtimes[0]
            await until(lambda rt=rt, link=link: rt.session is not None and link.connected)
        first, second = (d.runtimes[0].device_id or "" for d in daemons)
        assert first != second

        env = {**os.environ, "SETTLE_CONFIG": str(CONFIG)}
        where = f"{host}:{port}"
        mark = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "settle.cli", "mark", "two daemons", "--device", first,
            "--mqtt", where, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await mark.communicate()
        assert (mark.returncode, out.decode(), err.decode()) == (0, f"note: ok ({first})\n", "")

        # Each daemon handles commands one at a time, in the order the broker delivers them,
        # and publishes in order: once both have answered the last two, every answer either
        # gave to the earlier ones has arrived.
        sent = [("a1", first), ("b1", second), ("u1", "nobody_1"), ("a2", first), ("b2", second)]
        async with aiomqtt.Client(host, port) as c:
            for cmd_id, dev in sent:
                body = json.dumps({"v": 1, "id": cmd_id, "kind": "note"})
                await c.publish(f"settle/{dev}/cmd/marker", body, qos=1)

        def results() -> dict[str, list[tuple[str, Any]]]:
            by_id: dict[str, list[tuple[str, Any]]] = {}
            for topic, payload, _ in col.messages:
                if topic.endswith("/cmd/marker/result"):
                    res = json.loads(payload)
                    by_id.setdefault(res["id"], []).append((res["status"], res["error"]))
            return by_id

        await until(lambda: {"a2", "b2"} <= results().keys(), 20)
        got = results()
        assert {i: got.get(i) for i, _ in sent[:3]} == {
            "a1": [("ok", None)],
            "b1": [("ok", None)],
            "u1": [("error", "unknown device 'nobody_1'")],
        }
        for d, n in zip(daemons, (3, 2), strict=True):  # every marker went to its strap
            session = d.runtimes[0].session
            assert session is not None
            await until(lambda d=d, s=session, n=n: len(d.store.markers(s.session_id)) == n)
        # The second daemon left the first's live strap alone.
        assert b"offline" not in [
            p for t, p, _ in col.messages if t == f"settle/{first}/availability"
        ]
        assert {
            json.loads(p)["state"] for t, p, _ in col.messages if t == f"settle/{first}/session"
        } == {"running"}


async def test_a_session_stop_survives_the_broker_dropping_while_the_store_is_slow(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`session/stop` while another program holds the store's write lock (the command waits
    for the store), and the broker connection drops during that wait. The handler ran in the
    connection's task group and was cancelled half done: the session was off its strap but
    never said stopped — the broker kept `running` for good, no `session-stop` event, no
    result, no log line, and its unsaved rows were not among the finished sessions rescued at
    exit. Now the command completes, and after the reconnect the broker has its result, the
    event and the `stopped` session. (The waits are lengthened so the drop lands inside it.)"""
    import sqlite3

    import settle.daemon

    monkeypatch.setattr(settle.daemon, "COMMAND_STORE_WAIT_S", 60.0)
    monkeypatch.setattr(settle.daemon, "STORE_WAIT_S", 60.0)  # (the store's own 10 s cap)
    relay, settings = await _relayed(mosquitto, tmp_path)
    async with VirtualAir() as air, Collector(mosquitto.host, mosquitto.port) as col:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=4), speed=5)
        await strap.start()
        with SessionStore.open(settings.db_path) as store:
            daemons: list[Daemon] = []
            link = MqttLink(
                ConnectOptions("127.0.0.1", relay.port),
                backoff_cap_s=0.5,
                on_command=partial(_handled_by, daemons, 0),
            )
            async with link:
                daemon = Daemon(settings, store, [client_for(air, strap)], link=link, time_scale=5)
                daemons.append(daemon)
                task = asyncio.create_task(daemon.run())
                rt = daemon.runtimes[0]
                await until(lambda: rt.session is not None and link.connected)
                session = rt.session
                assert session is not None and rt.device_id is not None
                dev = rt.device_id
                locker = sqlite3.connect(settings.db_path, isolation_level=None, timeout=10)
                locker.execute("BEGIN IMMEDIATE")  # another program's write lock
                try:
                    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
                        stop = json.dumps({"v": 1, "id": "stop-1"})
                        await c.publish(f"settle/{dev}/cmd/session/stop", stop, qos=1)
                    await until(lambda: rt.session is None)  # now waiting for the store
                    await relay.cut()
                    await until(lambda: not link.connected)
                finally:
                    locker.execute("ROLLBACK")
                    locker.close()
                await relay.resume()

                def result() -> list[dict[str, Any]]:
                    return [
                        json.loads(p)
                        for t, p, _ in col.messages
                        if t == f"settle/{dev}/cmd/session/stop/result"
                    ]

                await until(lambda: bool(result()), 20)
                assert [(r["id"], r["status"], r["stored"]) for r in result()] == [
                    ("stop-1", "ok", True)
                ]
                events = [json.loads(p)["kind"] for p in col.payloads("event")]
                assert events.count("session-stop") == 1
                held = json.loads(
                    await retained(mosquitto.host, mosquitto.port, f"settle/{dev}/session") or b"{}"
                )
                assert (held["id"], held["state"]) == (session.session_id, "stopped")
                assert daemon.finished == [session]
                daemon.stop()
                await asyncio.wait_for(task, 15)
            (stored,) = store.list_sessions()
            assert (stored.id, stored.state.value) == (session.session_id, "stopped")
        await strap.stop()
