"""The MQTT link: one aiomqtt connection kept alive for the daemon's lifetime.

* ``publish()`` never blocks and never fails: messages go into a bounded queue that drops
  its oldest QoS 0 entry (else its oldest) when full (``dropped`` counts them). One pump task
  hands them to the client in order, up to ``max_inflight`` at a time without waiting for each one's
  acknowledgement (waiting for every QoS 1 PUBACK made each beat queue behind the indices
  and status messages in front of it: 300 ms stalls at a few hundred straps). A message
  counts as sent only once the broker took it; when the connection is lost, the ones still
  in flight go back to the front of the queue, in order, and are sent again.
* Retained topics are remembered (last value per topic) and re-published after every
  reconnect, together with ``<base>/bridge/state = online``. The Last Will sets it to
  ``offline`` (retained) when the daemon vanishes; a clean stop publishes ``offline`` itself.
  A stop while the broker is away first tries to reconnect for ``shutdown_reconnect_s`` (if
  the broker holds retained state from this run), so the final retained state (strap
  ``offline``, session ``stopped``) is not left behind as ``online`` / ``running``.
* Two daemons on one broker and topic base share ``bridge/state`` and ``bridge/info``: the
  link reads both before it first says ``online`` and warns (one line, naming the other
  daemon's client id from its ``bridge/info``) when another daemon is online there; and when
  ``bridge/state`` turns ``offline`` under it while it runs (the other daemon stopped, or its
  Last Will fired), it says ``online`` again and re-publishes its retained topics (bridge
  info, strap availability, status, session, discovery), which the other's stop overwrote.
* Commands under ``<base>/+/cmd/#`` are handed to ``on_command`` once their envelope passes
  (``feedback.commands.screen_command``: size, nesting, JSON, id); one that does not, or
  whose handler fails, gets its error result here. Result topics are ignored. The handler
  runs in a task of the link's lifetime, one command at a time in arrival order, not in the
  connection's: a connection lost while a command waits (a ``session/stop`` for the store)
  does not cancel it half done, and what it publishes goes out after the reconnect.
* With other daemons on the base, the link keeps what each one online serves (the
  ``devices`` of its ``bridge/info``, by client id): a command to a strap another daemon
  serves is that daemon's to answer, and one to a strap no daemon serves is answered by one
  daemon only (the lowest client id online), so every command gets one result.
* A lost or refused connection is retried forever with capped, jittered backoff; measuring
  and storing never wait for the broker.
* Over MQTT 5, publishes the broker refuses (its ACL: "Not authorized") are counted
  (``denied``) and logged, one WARNING and then at most one a minute.

This module is the only one that imports aiomqtt (STYLE.md principle 11).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiomqtt
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.subscribeoptions import SubscribeOptions

from feedback.commands import Screened, screen_command, screen_nameless
from feedback.payloads import CommandResult
from settle.backoff import backoff_delay_s

log = logging.getLogger(__name__)

REFUSED_LOG_EVERY_S = 60.0
"""Refused commands are logged once, then at most once this often (anyone on the broker can
send thousands)."""


class _LostSocketAtDebug(logging.Filter):
    """paho logs a connection the broker dropped at ERROR ("failed to receive on socket:
    [Errno 104] Connection reset by peer"); the link already reports that outage once, as a
    WARNING saying it retries. Those lines become DEBUG; paho's other errors stay errors."""

    LOST = ("failed to receive on socket", "timeout on socket")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(self.LOST):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return paho_log.isEnabledFor(logging.DEBUG)
        return True


paho_log = logging.getLogger(f"{__name__}.paho")
"""The MQTT client library's own log lines (paho's ``mqtt`` logger otherwise)."""
paho_log.addFilter(_LostSocketAtDebug())

CommandHandler = Callable[[str, str, bytes, bool], Awaitable[None]]
"""``(device_id, command_name, payload, retained)``."""

UNKNOWN_DEVICE = "unknown device"
"""How the error result for a device no daemon serves begins (``settle`` commands wait a
moment for another daemon's answer after it: docs/mqtt.md)."""

COMMANDS_WAITING = 1000
"""Commands received and not yet handled (the handler takes one at a time); one more is
refused with an error result (anyone on the broker can send thousands)."""

COMMANDS_AT_CLOSE_S = 3.0
"""How long :meth:`MqttLink.aclose` lets a command under way finish (its result and the
state it changed go out before the final ``offline``)."""


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to reach and log in to a broker. ``password`` never appears in a repr or a log."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    """CA bundle to verify the broker with; None: the system's trusted CAs."""
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    """Skip certificate and host name verification (only for testing a private broker)."""
    mqtt5: bool = False

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``aiomqtt.Client`` (CLI one-shot clients use them too)."""
        return {
            "hostname": self.host,
            "port": self.port,
            "username": self.username or None,
            "password": self.password or None,
            "tls_context": self.tls_context(),
            "protocol": aiomqtt.ProtocolVersion.V5 if self.mqtt5 else aiomqtt.ProtocolVersion.V311,
            # No Nagle: a beat message is ~200 bytes and must leave at once. With Nagle on,
            # small writes wait for the broker's delayed ACK (40 ms on Linux): from 50 straps
            # on, p99 beat latency rose from ~15 to 50-80 ms (docs/performance.md).
            "socket_options": [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        }

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


class MqttLink:
    """Keeps one broker connection alive; see the module docstring.

    Use as ``async with MqttLink(...) as link:``; the connection task is owned by the block.
    """

    def __init__(
        self,
        host: str | ConnectOptions,
        port: int = 1883,
        *,
        topic_base: str = "settle",
        client_id: str = "",
        keepalive_s: int = 30,
        queue_size: int = 2000,
        on_command: CommandHandler | None = None,
        backoff_cap_s: float = 10.0,
        mqtt5: bool = False,
        max_inflight: int = 256,
        shutdown_reconnect_s: float = 5.0,
    ) -> None:
        self.options = (
            host if isinstance(host, ConnectOptions) else ConnectOptions(host, port, mqtt5=mqtt5)
        )
        self.mqtt5 = self.options.mqtt5
        self.host = self.options.host
        self.port = self.options.port
        self.base = topic_base
        self.client_id = client_id or f"settle-{socket.gethostname()}-{os.getpid()}"
        self.keepalive_s = keepalive_s
        self.queue_size = queue_size
        self._on_command = on_command
        self.on_connect: Callable[[], None] | None = None
        """Called after every (re)connect, once the remembered retained messages are queued
        for the broker and before the live queue: the daemon publishes fresh status there,
        so the cached copy (old ``ts``, old counters) does not stand until the next tick."""
        self._backoff_cap_s = backoff_cap_s
        self.shutdown_reconnect_s = shutdown_reconnect_s
        """How long :meth:`aclose` tries to reach a broker that is away, to leave the final
        retained state there (0: don't try)."""
        self._closing = False
        self._leaving = False
        """Set by :meth:`aclose` before its own ``offline``: not another daemon's, to undo."""
        self._stopping = False
        """Set by :meth:`aclose` before it cancels the connection task; see
        :meth:`_raise_if_stopping`."""
        self._retry_now = asyncio.Event()
        self._watch_tasks: set[asyncio.Task[Any]] = set()
        self._queue: collections.deque[Outgoing] = collections.deque()
        self.max_inflight = max_inflight
        self._inflight: dict[int, Outgoing] = {}
        """Handed to the client, not yet taken by the broker; by send order (dicts keep it)."""
        self._sent = 0
        self._retained: dict[str, Outgoing] = {}
        self._held_info: bytes | None = None
        """The ``bridge/info`` the broker retained when this connection subscribed to it."""
        self._others_warned: set[str] = set()
        self._peers: dict[str, frozenset[str]] = {}
        """The other daemons online on this base, by client id: the devices their
        ``bridge/info`` lists (what :meth:`leaves_to_another` decides by)."""
        self._own_devices: frozenset[str] = frozenset()
        """The devices of this link's own ``bridge/info`` (the daemon's straps)."""
        self._commands: asyncio.Queue[tuple[str, str, bytes, bool, str | None]] = asyncio.Queue(
            COMMANDS_WAITING
        )
        """Commands waiting for the handler: ``(device, name, payload, retained, id)``."""
        self._command_task: asyncio.Task[None] | None = None
        self._reasserting: Outgoing | None = None
        """The queued ``online`` of :meth:`_reassert`, until it is sent."""
        self._reassert_why = ""
        """What ``bridge/state`` was set to, for the log line once that ``online`` is taken."""
        self.refused = 0
        """Commands answered with an error before reaching the handler (a bad envelope)."""
        self._refused_unlogged = 0
        self._refused_logged_s: float | None = None
        self._refused_latest = ""
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._connected = asyncio.Event()
        self._watches: list[tuple[str, Callable[[str, bytes, bool], None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self.dropped = 0
        """Messages dropped from the full queue (see :meth:`_victim`)."""
        self._dropped_by_topic: collections.Counter[str] = collections.Counter()
        self.published = 0
        self.connects = 0
        self.last_error: str | None = None
        self.denied = 0
        """Messages the broker acknowledged with a failure reason code (MQTT 5 only: its ACL
        said "Not authorized"); see :meth:`_watch_denials`."""
        self._denied_unlogged = 0
        self._denied_logged_s: float | None = None
        self._denied_latest = ""

    # -- public API ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def state_topic(self) -> str:
        return f"{self.base}/bridge/state"

    @property
    def info_topic(self) -> str:
        return f"{self.base}/bridge/info"

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        """Queue a message; never blocks. Retained messages are also remembered for reconnects.

        A topic MQTT cannot carry (a wildcard, NUL, empty) raises ``ValueError`` here, at the
        caller: queued, paho refused it inside the link task, which ended for good — nothing
        was published any more, silently (``/api/cmd/%23/marker`` did it)."""
        if not topic or any(c in topic for c in "+#\x00"):
            raise ValueError(f"not a topic to publish on: {topic!r}")
        data = payload.encode() if isinstance(payload, str) else payload
        msg = Outgoing(topic, data, qos, retain)
        if topic == self.info_topic:
            self._own_devices = _info_fields(data)[1]
        if retain:
            self._retained[topic] = msg
        if len(self._queue) >= self.queue_size:
            i = self._victim()
            self._dropped_by_topic[self._queue[i].topic] += 1
            del self._queue[i]
            self.dropped += 1
        self._queue.append(msg)
        self._idle.clear()
        self._wakeup.set()

    def dropped_under(self, prefix: str) -> int:
        """Messages dropped from the full queue whose topic starts with ``prefix`` (one
        device's: ``<base>/<dev>/``); :attr:`dropped` counts them all."""
        return sum(n for t, n in self._dropped_by_topic.items() if t.startswith(prefix))

    def _victim(self) -> int:
        """Index of the message a full queue drops: the oldest QoS 0 one (a beat message: the
        store keeps every beat), else the oldest. Events, indices and state (QoS 1) survive an
        outage that beats alone fill the queue with."""
        for i, m in enumerate(self._queue):
            if m.qos == 0:
                return i
        return 0

    def watch(self, topic_filter: str, callback: Callable[[str, bytes, bool], None]) -> None:
        """Subscribe to ``topic_filter`` on every (re)connect (and at once when connected);
        ``callback(topic, payload, retained)`` runs in the receive task and must not block."""
        self._watches.append((topic_filter, callback))
        client = self._client
        if client is not None and self.connected:
            # _session subscribed the watches it knew before it set _connected; this one
            # came later. A failure here fails nothing: the next connection subscribes it.
            task = asyncio.get_running_loop().create_task(
                self._subscribe_quietly(client, topic_filter), name="mqtt-watch"
            )
            self._watch_tasks.add(task)
            task.add_done_callback(self._watch_tasks.discard)

    @staticmethod
    async def _subscribe_quietly(client: aiomqtt.Client, topic_filter: str) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.subscribe(topic_filter, qos=1)

    def leaves_to_another(self, device_id: str) -> bool:
        """Whether a command to ``device_id`` is another daemon's to answer: this link's
        daemon does not serve it, and another daemon online on this base does (its
        ``bridge/info`` lists it) — or none does, and another one online has a lower client
        id (the one that answers for devices nobody serves). Two daemons on one base both
        received every command: the one without the strap answered ``unknown device`` at
        once, before the real daemon's ``ok``, and ``settle mark`` reported a marker that
        was stored as refused."""
        if device_id in self._own_devices:
            return False
        if self.served_by_another(device_id):
            return True
        return any(other < self.client_id for other in self._peers)

    def served_by_another(self, device_id: str) -> bool:
        """Whether another daemon online on this base lists ``device_id`` in its
        ``bridge/info``."""
        return any(device_id in devices for devices in self._peers.values())

    def forget_retained(self, topic: str) -> None:
        """Clear a retained topic on the broker (empty retained payload) and stop re-sending it."""
        self._retained.pop(topic, None)
        self.publish(topic, b"", qos=1, retain=True)

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def __aenter__(self) -> MqttLink:
        # A link closed before may be entered again.
        self._closing = self._stopping = self._leaving = False
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link {self.host}:{self.port}")
        if self._on_command is not None:
            self._commands = asyncio.Queue(COMMANDS_WAITING)  # (none left from a closed block)
            self._command_task = asyncio.create_task(self._handle_commands(), name="mqtt-commands")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, drain_timeout_s: float = 3.0) -> None:
        """Publish what is queued (bounded wait), then ``offline``, then disconnect.

        With the broker away, first try to reconnect for up to ``shutdown_reconnect_s`` —
        when this run ever got connected, the broker still shows what it last heard
        (``online``, a running session); a run that never reached it left nothing there."""
        task, self._task = self._task, None
        if task is None:
            return
        commands, self._command_task = self._command_task, None
        if commands is not None:
            # A command under way (a session/stop waiting for the store) ends and queues its
            # result and the state it changed, to go out before the final offline.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COMMANDS_AT_CLOSE_S):
                    await self._commands.join()
            commands.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await commands
        if not self.connected and self.connects > 0 and self.shutdown_reconnect_s > 0:
            self._closing = True
            self._retry_now.set()  # cut the backoff short: retry now, then every 0.2 s
            if not await self.wait_connected(self.shutdown_reconnect_s):
                log.info(
                    "MQTT broker %s:%d still unreachable at shutdown; the state it retains "
                    "is corrected at the next start",
                    self.host,
                    self.port,
                )
        client = self._client
        if client is not None and self.connected:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
                async with asyncio.timeout(drain_timeout_s):
                    await self._idle.wait()
                    self._leaving = True  # this offline is ours: not one to answer
                    await client.publish(self.state_topic, b"offline", qos=1, retain=True)
        self._stopping = True
        self._log_refused(flush=True)
        self._log_denied(flush=True)
        task.cancel()
        for t in list(self._watch_tasks):
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- internals ----------------------------------------------------------------------

    def _raise_if_stopping(self) -> None:
        """Raise the cancellation the client swallowed. Python 3.11's ``asyncio.wait_for``
        (under aiomqtt's connect, publish and subscribe) returns its result instead of raising
        when the awaited acknowledgement arrived in the same step as the cancel: a stop while
        the link was connecting then left it connected and :meth:`aclose` waiting forever."""
        if self._stopping:
            raise asyncio.CancelledError

    async def _run(self) -> None:
        attempt = 0
        while True:
            self._raise_if_stopping()
            was_connected = False
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                err = str(group.exceptions[0])
                if err != self.last_error:
                    log.warning("MQTT broker %s:%d: %s; retrying", self.host, self.port, err)
                self.last_error = err
            finally:
                was_connected = self._connected.is_set()
                self._connected.clear()
                self._client = None
                # Not acknowledged: send again, first and in order, on the next connection.
                self._queue.extendleft(reversed(list(self._inflight.values())))
                self._inflight.clear()
            # A session that got connected resets the backoff; a refused one grows it.
            attempt = 0 if was_connected else attempt + 1
            delay = backoff_delay_s(attempt, cap_s=self._backoff_cap_s)
            if self._closing:
                delay = min(delay, 0.2)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._retry_now.wait()  # aclose() wants one last try at once
            self._retry_now.clear()

    async def _session(self) -> None:
        will = aiomqtt.Will(self.state_topic, b"offline", qos=1, retain=True)
        async with aiomqtt.Client(
            **self.options.client_kwargs(),
            identifier=self.client_id,
            keepalive=self.keepalive_s,
            will=will,
            timeout=10,
            # paho's default of 20 would queue the rest of our window inside paho, where
            # their 10 s timeout runs before they are even sent.
            max_inflight_messages=self.max_inflight,
            logger=paho_log,
        ) as client:
            self._raise_if_stopping()  # nothing published yet: leave nothing behind
            # Up to max_inflight publishes wait for their acknowledgement on purpose.
            client.pending_calls_threshold = self.max_inflight + 16
            self._client = client
            self._watch_denials(client)
            self.connects += 1
            if self.last_error is not None:
                log.info("MQTT broker %s:%d reachable again", self.host, self.port)
            self.last_error = None
            # What the broker holds before this link says online (another daemon's?): one
            # SUBSCRIBE, info first, so its retained info is here before its retained state.
            self._held_info = None
            # Who else is online is learnt again on this connection: from what the broker
            # retains, and from the others' bridge/info, which they re-send on seeing ours.
            self._peers.clear()
            await client.subscribe([(self.info_topic, 1), (self.state_topic, 1)])
            await client.publish(self.state_topic, b"online", qos=1, retain=True)
            # Retained state first, then the live queue, without the copies just sent (at
            # start-up every retained message was queued too: subscribers got bridge info and
            # each Home Assistant config twice). A message queued meanwhile is a newer one.
            # Older copies of a retained topic still queued (two updates during an outage,
            # or unacknowledged ones put back) are dropped too: sent after the replay, they
            # left the broker retaining an old state (a stopped session over the running one).
            replayed = list(self._retained.values())
            for msg in replayed:
                await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=True)
            sent = {id(m) for m in replayed}
            latest = self._retained

            def stale(m: Outgoing) -> bool:
                return m.retain and (id(m) in sent or latest.get(m.topic) is not m)

            if any(stale(m) for m in self._queue):
                kept = [m for m in self._queue if not stale(m)]
                self._queue.clear()
                self._queue.extend(kept)
            if self.on_connect is not None:
                try:
                    self.on_connect()
                except Exception:  # a callback bug must not take the link down
                    log.exception("MQTT on_connect callback failed")
            if self._on_command is not None:
                # MQTT 5 "retain as published": a command sent with the retain flag is seen as
                # such (and refused) at once; with 3.1.1 only its replay on reconnect is.
                topic = f"{self.base}/+/cmd/#"
                if self.mqtt5:
                    opts = SubscribeOptions(qos=1, retainAsPublished=True)
                    await client.subscribe(topic, options=opts)
                else:
                    await client.subscribe(topic, qos=1)
            # Watches last, up to the one added while this loop ran: no await between the end
            # of the loop and _connected.set(), so a watch added later subscribes by itself.
            i = 0
            while i < len(self._watches):
                await client.subscribe(self._watches[i][0], qos=1)
                i += 1
            if self._stopping:  # a lost cancellation: undo the "online" sent above first
                await client.publish(self.state_topic, b"offline", qos=1, retain=True)
                self._raise_if_stopping()
            self._connected.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(client, tg), name="mqtt-pump")
                tg.create_task(self._receive(client), name="mqtt-receive")

    async def _pump(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        window = asyncio.Semaphore(self.max_inflight)
        while True:
            while not self._queue:
                if not self._inflight:
                    self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            await window.acquire()
            if not self._queue:  # dropped as the oldest while we waited for room
                window.release()
                continue
            msg = self._queue.popleft()
            key = self._sent
            self._sent += 1
            self._inflight[key] = msg
            # Tasks start in creation order, so the client gets the messages in queue order;
            # a failed one fails the session (the TaskGroup), and _run re-queues the rest.
            tg.create_task(self._send(client, key, msg, window), name="mqtt-publish")

    async def _send(
        self, client: aiomqtt.Client, key: int, msg: Outgoing, window: asyncio.Semaphore
    ) -> None:
        try:
            await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
        finally:
            window.release()
        self._inflight.pop(key, None)
        self.published += 1
        if msg is self._reasserting:
            log.info(
                "%s was set to %r by another client (another Settle daemon on this topic "
                "base stopped?): said online again and re-published this daemon's retained "
                "state",
                self.state_topic,
                self._reassert_why,
            )
        if not self._queue and not self._inflight:
            self._idle.set()

    async def _receive(self, client: aiomqtt.Client) -> None:
        # Iterated even with nothing subscribed: it is how a vanished broker is noticed.
        prefix = self.base + "/"
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload
            data = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
            if topic in (self.state_topic, self.info_topic):
                try:
                    self._on_bridge(topic, bytes(data), bool(message.retain))
                except Exception:  # nor may a bug here
                    log.exception("handling %s failed", topic)
            for topic_filter, callback in self._watches:
                if topic_matches_sub(topic_filter, topic):
                    try:
                        callback(topic, bytes(data), bool(message.retain))
                    except Exception:  # nor may a watcher's bug
                        log.exception("watcher of %s failed for %s", topic_filter, topic)
            if (
                self._on_command is None
                or not topic.startswith(prefix)
                or topic.endswith("/result")
            ):
                continue
            parts = topic[len(prefix) :].split("/", 2)
            payload_bytes, retained = bytes(data), bool(message.retain)
            if len(parts) == 2 and parts[1] == "cmd" and not (retained and not payload_bytes):
                # Sent to <base>/<dev>/cmd itself: still the one result its sender waits for
                # (from the daemon that serves the device).
                if not self.leaves_to_another(parts[0]):
                    with contextlib.suppress(Exception):
                        self._refuse(parts[0], "", screen_nameless(topic, payload_bytes))
                continue
            if len(parts) != 3 or parts[1] != "cmd":
                continue
            try:
                screened = screen_command(parts[2], payload_bytes, retained)
                if screened.error is not None:
                    if not self.leaves_to_another(parts[0]):
                        self._refuse(parts[0], parts[2], screened)
                    continue
            except Exception:  # nor may a bug in the screening: the link would end for good
                log.exception("command screening failed for %s", topic)
                continue
            # Handled in the link's own task, not here: awaited in this connection's task
            # group, a command was cancelled half done when the connection was lost (a
            # session/stop waiting for the store: the session was taken off its strap, but
            # never said stopped, never answered).
            try:
                self._commands.put_nowait(
                    (parts[0], parts[2], payload_bytes, retained, screened.id)
                )
            except asyncio.QueueFull:
                busy = f"the daemon is busy: {COMMANDS_WAITING} commands are waiting"
                with contextlib.suppress(Exception):
                    self._refuse(parts[0], parts[2], Screened(screened.id, busy))

    async def _handle_commands(self) -> None:
        """Hand the received commands to ``on_command``, one at a time, in arrival order; the
        link's lifetime, not one connection's (see :meth:`_receive`)."""
        assert self._on_command is not None
        while True:
            device_id, name, payload, retained, cmd_id = await self._commands.get()
            try:
                await self._on_command(device_id, name, payload, retained)
            except Exception:  # a bad command must never end the handling of the next
                log.exception("command handler failed for %s/%s/cmd/%s", self.base, device_id,
                              name)  # fmt: skip
                # Still the one result the sender waits for: the daemon's handler answers
                # last, so one that raised has not answered.
                failed = "the daemon failed to carry out the command (see its log)"
                with contextlib.suppress(Exception):
                    self._refuse(device_id, name, Screened(cmd_id, failed))
            finally:
                self._commands.task_done()

    def _watch_denials(self, client: aiomqtt.Client) -> None:
        """Count and log the publishes the broker refuses. Over MQTT 5 a broker whose ACL
        denies a publish says so in its PUBACK ("Not authorized"), but aiomqtt 2.x drops the
        reason code (``publish()`` returns None either way): a daemon whose account may not
        publish looked healthy while nobody received anything. paho's ``on_publish``
        beneath it gets the code, and is wrapped here (through aiomqtt's ``_client`` and
        paho's ``_out_messages`` for the topic: without them, nothing is counted). Over
        MQTT 3.1.1 a denied publish is acknowledged as taken, and QoS 0 ones (beats) are
        not acknowledged at all: nothing to see."""
        paho = getattr(client, "_client", None)
        passed_on = getattr(paho, "on_publish", None)
        if not self.mqtt5 or paho is None or passed_on is None:
            return

        def on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            try:
                if getattr(reason, "is_failure", False):
                    sent = getattr(c, "_out_messages", {}).get(mid)
                    self._denied(getattr(sent, "topic", None), str(reason))
            finally:
                passed_on(c, userdata, mid, reason, properties)

        paho.on_publish = on_publish

    def _denied(self, topic: str | None, reason: str) -> None:
        self.denied += 1
        self._denied_unlogged += 1
        who = f"account {self.options.username!r}" if self.options.username else "client"
        self._denied_latest = (
            f"{topic or 'a message'}: {reason}; this {who} may not publish there (the "
            "broker's ACL), so nobody receives it"
        )
        self._log_denied()

    def _log_denied(self, *, flush: bool = False) -> None:
        """One WARNING for the first refused publish, then at most one a minute."""
        if not self._denied_unlogged:
            return
        now = time.monotonic()
        last = self._denied_logged_s
        if not flush and last is not None and now - last < REFUSED_LOG_EVERY_S:
            return
        n, self._denied_unlogged, self._denied_logged_s = self._denied_unlogged, 0, now
        log.warning(
            "the MQTT broker %s:%d refused %d message%s from this daemon since the last "
            "warning, %d in all (latest: %s)",
            self.host,
            self.port,
            n,
            "" if n == 1 else "s",
            self.denied,
            self._denied_latest,
        )

    def _on_bridge(self, topic: str, payload: bytes, retained: bool) -> None:
        """``bridge/info`` and ``bridge/state`` as the broker sends them to this link: the
        retained ones once per connection, before this link said ``online`` (see
        :meth:`_session`), then every live one — its own included."""
        if topic == self.info_topic:
            if retained:
                self._held_info = payload
                return
            other, devices = _info_fields(payload)
            if other is None or other == self.client_id:
                return
            new = other not in self._peers
            self._peers[other] = devices
            if new:
                self._introduce()
            return
        if retained:
            if payload == b"online":
                self._warn_other_daemon(self._held_info)
                # The info the broker retains is of a daemon online now (each one says
                # online and re-publishes its info when another one's offline lands).
                other, devices = _info_fields(self._held_info or b"")
                if other is not None and other != self.client_id:
                    self._peers[other] = devices
            return
        if payload != b"online" and not (self._leaving or self._stopping):
            # One of the others went away, which one the plain "offline" does not say: the
            # ones still online re-publish their bridge/info as this one does now.
            self._peers.clear()
            self._reassert(payload)

    def _introduce(self) -> None:
        """Send this daemon's ``bridge/info`` again for another daemon that just said what
        it serves (it started, or came back): the broker retains one info for the base, so
        that is how the newcomer learns what this one serves."""
        info = self._retained.get(self.info_topic)
        if info is None:
            return
        self._queue.append(info)
        self._idle.clear()
        self._wakeup.set()

    def _warn_other_daemon(self, info: bytes | None) -> None:
        """``bridge/state`` said ``online`` before this link did: another daemon is online on
        this base (unless the ``bridge/info`` beside it is this link's own: a reconnect)."""
        fields: dict[str, Any] = {}
        with contextlib.suppress(ValueError, TypeError):
            loaded = json.loads(info or b"")
            if isinstance(loaded, dict):
                fields = loaded
        other = fields.get("client_id")
        if other == self.client_id:
            return
        key = str(other)
        if key in self._others_warned:
            return
        self._others_warned.add(key)
        who = [f"client {other}" if isinstance(other, str) else "client id unknown"]
        if isinstance(fields.get("version"), str):
            who.append(f"Settle {fields['version']}")
        devices = fields.get("devices")
        if isinstance(devices, list):
            n = len(devices)
            who.append(f"{n} strap{'' if n == 1 else 's'}")
        log.warning(
            "another Settle daemon (%s) is online on %s under topic base %r: both publish "
            "%s/bridge/state and bridge/info, and Home Assistant shows their straps under one "
            "bridge; unless that is meant, give this one its own [mqtt] topic_base "
            "(SETTLE_MQTT__TOPIC_BASE)",
            ", ".join(who),
            self.options.where,
            self.base,
            self.base,
        )

    def _reassert(self, payload: bytes) -> None:
        """``bridge/state`` went ``offline`` (or was cleared) while this link runs: another
        daemon on this base stopped (or its Last Will fired), and left the broker saying no
        daemon is online — ``settle mark`` found none, Home Assistant showed every strap
        unavailable — and retaining its bridge info (and, for a strap both served, its final
        availability, status and session). Say ``online`` again, then re-publish every
        retained topic in its newest state, after the other's messages (the queue's order),
        and call :attr:`on_connect` (a fresh status) as after a reconnect."""
        pending = self._reasserting
        if pending is not None and (
            any(m is pending for m in self._queue)
            or any(m is pending for m in self._inflight.values())
        ):
            return  # one is on its way, to land after this offline
        # Logged once this "online" is taken (see _send): a broker shutting down sends the
        # Last Will of every client still connected, this link's own too, and then drops
        # the connection — that was "set to 'offline' by another client (another Settle
        # daemon … stopped?)", before the outage warning.
        self._reassert_why = payload.decode(errors="replace")[:20]
        self._reasserting = Outgoing(self.state_topic, b"online", qos=1, retain=True)
        # Past queue_size if need be: every one is the newest state of its topic.
        self._queue.append(self._reasserting)
        self._queue.extend(self._retained.values())
        self._idle.clear()
        self._wakeup.set()
        if self.on_connect is not None:  # fresh status, as after a reconnect
            try:
                self.on_connect()
            except Exception:
                log.exception("MQTT on_connect callback failed")

    def _refuse(self, device_id: str, name: str, screened: Screened) -> None:
        """Answer a command that never reaches the handler (a bad envelope: too large, nested
        too deeply, not JSON…) with its one error result, as the handler would. Logged
        through :attr:`refused`: one WARNING, then at most one a minute (anyone on the broker
        can send thousands)."""
        res = CommandResult(
            ts=time.time_ns() // 1_000_000, id=screened.id, status="error", error=screened.error
        )
        where = f"cmd/{name}/result" if name else "cmd/result"  # no name: see _receive
        self.publish(f"{self.base}/{device_id}/{where}", res.to_json(), qos=1)
        self.refused += 1
        self._refused_unlogged += 1
        self._refused_latest = f"{name[:40]!r} for {device_id[:40]!r}: {screened.error}"
        self._log_refused()

    def _log_refused(self, *, flush: bool = False) -> None:
        """One WARNING for the first refused command, then at most one a minute with the
        number since, and the rest when the link closes (``flush``)."""
        if not self._refused_unlogged:
            return
        now = time.monotonic()
        last = self._refused_logged_s
        if not flush and last is not None and now - last < REFUSED_LOG_EVERY_S:
            return
        n, self._refused_unlogged, self._refused_logged_s = self._refused_unlogged, 0, now
        log.warning(
            "%d MQTT command%s refused since the last warning, %d in all (latest: %s)",
            n,
            "" if n == 1 else "s",
            self.refused,
            self._refused_latest,
        )


def _info_fields(payload: bytes) -> tuple[str | None, frozenset[str]]:
    """The client id and the devices a ``bridge/info`` payload names (``None`` and nothing
    for one that does not parse: an older Settle's, or someone else's)."""
    with contextlib.suppress(ValueError, TypeError):
        loaded = json.loads(payload)
        if isinstance(loaded, dict):
            client_id = loaded.get("client_id")
            devices = loaded.get("devices")
            return (
                client_id if isinstance(client_id, str) else None,
                frozenset(d for d in devices if isinstance(d, str))
                if isinstance(devices, list)
                else frozenset(),
            )
    return None, frozenset()
