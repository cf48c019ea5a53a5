"""The daemon's composition root: straps → pipeline → MQTT + store, under one TaskGroup.

Nothing below this module knows about the others: ``sensors`` yields notifications,
``processing`` turns beats into indices, ``feedback`` publishes, ``sessions`` stores; this
module wires them and owns every task (STYLE.md principle 8).

Each strap has a :class:`StrapRuntime`: an explicit connection state machine
(scanning → connecting → streaming → backoff → scanning …, ``stopped`` at the end) published
as ``<base>/<dev>/status``, and at most one running session. One strap's failure never
touches another's task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import ValidationError

import sensors.clock as host_clock
from feedback import homeassistant as ha
from feedback.broker import LOOPBACK, EmbeddedBroker, probe
from feedback.commands import decode_json, screen_command
from feedback.mqtt import UNKNOWN_DEVICE, MqttLink
from feedback.payloads import (
    COMMANDS,
    BeatPayload,
    BridgeInfoPayload,
    CommandResult,
    ConnectionState,
    IndicesPayload,
    Intention,
    MarkerCommand,
    SessionPayload,
    SessionStartCommand,
    StatusPayload,
)
from sensors.drops import DropCounter
from sensors.strap import StrapClient, StrapInfo
from sessions.store import (
    BaselinePeriod,
    IntentionTarget,
    SessionState,
    SessionStore,
    SessionSummary,
    make_session_id,
    utc_offset_s,
)
from sessions.store import Intention as StoredIntention
from settle.backoff import backoff_delay_s
from settle.config import Settings
from settle.ecg import EcgRecorder
from settle.errors import SensorError, SettleError, shown
from settle.pipeline import (
    BeatWriter,
    DeviceOutput,
    NewSession,
    SessionEnd,
    StrapPipeline,
    rescue_name,
)

log = logging.getLogger(__name__)

STATUS_EVERY_S = 30.0
NOT_IN_A_TOPIC = re.compile("[+#\x00]")
"""What no topic published on may hold (MQTT wildcards, NUL): a command's device or name
with one has no result topic (only the HTTP route can send such; MQTT cannot deliver it)."""
LOW_BATTERY_PCT = 10
"""A strap's battery at or below this (percent) is warned about once per fall."""


def settle_version() -> str:
    try:
        return version("settle-hrv")
    except PackageNotFoundError:  # running from a checkout without install
        return "0+unknown"


@dataclass(frozen=True, slots=True)
class BrokerChoice:
    host: str
    port: int
    embedded: bool


@contextlib.asynccontextmanager
async def open_broker(settings: Settings) -> AsyncIterator[BrokerChoice | None]:
    """Decide where to publish; start the embedded broker when that is the answer."""
    m = settings.mqtt
    if not m.enabled:
        yield None
        return
    if m.host:
        yield BrokerChoice(m.host, m.port, embedded=False)
        return
    if m.embedded != "always" and await probe(LOOPBACK, m.port):
        yield BrokerChoice(LOOPBACK, m.port, embedded=False)
        return
    if m.embedded == "never":
        # Nothing answers yet; the link keeps retrying with backoff.
        yield BrokerChoice(LOOPBACK, m.port, embedded=False)
        return
    async with EmbeddedBroker(m.embedded_port, preferred=m.port) as broker:
        yield BrokerChoice(broker.host, broker.port, embedded=True)


def _store_intention(intention: Intention | None) -> StoredIntention | None:
    """The MQTT intention as the store keeps it (a free-text target is kept as ``free`` with
    the text in front of the statement, so nothing the practitioner wrote is lost)."""
    if intention is None:
        return None
    target = intention.target.strip().lower()
    if target in set(IntentionTarget):
        return StoredIntention(IntentionTarget(target), intention.statement, intention.practice)
    statement = f"{intention.target}: {intention.statement}".strip(": ")
    return StoredIntention(IntentionTarget.FREE, statement, intention.practice)


class CommandError(SettleError):
    """A command that cannot be carried out; the text goes back in the result."""


@dataclass
class StrapRuntime:
    """One strap: its connection state machine, counters and current session."""

    index: int
    client: StrapClient
    state: ConnectionState = "scanning"
    info: StrapInfo | None = None
    output: DeviceOutput | None = None
    session: StrapPipeline | None = None
    reconnects: int = 0
    last_error: str | None = None
    was_connected: bool = False
    link_lost_s: float | None = None
    """When the streaming link was lost (:func:`~sensors.clock.elapsed_s`); None while
    connected or before the first connection."""
    available: bool | None = None
    """The ``availability`` last published (None: none yet): it is retained, so it is
    published when it changes, not again at every failed scan of a strap that is away."""
    session_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a session starts or stops: two session/start commands close together
    (a double click) both found no session while the store created theirs, and the second
    replaced the first, left `running` for good."""

    @property
    def device_id(self) -> str | None:
        return self.info.device_id if self.info else None


@dataclass
class Daemon:
    """Runs straps until :meth:`stop` (or cancellation); every session is closed on the way out."""

    settings: Settings
    store: SessionStore
    strap_clients: list[StrapClient]
    link: MqttLink | None = None
    source: str = "ble"
    broker: BrokerChoice | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    time_scale: float = 1.0
    """Session seconds per wall second (the speed of time-compressed virtual straps)."""
    auto_start: bool = True
    """Start a session when a strap first connects (``session/start`` starts later ones)."""
    on_session: Callable[[StrapPipeline, StrapInfo], None] | None = None
    on_indices: Callable[[IndicesPayload], None] | None = None
    tap: Callable[[str, bytes | str, bool], None] | None = None
    """Gets every message the daemon publishes (topic, payload, retain), MQTT or not: the
    dashboard's live feed."""
    runtimes: list[StrapRuntime] = field(default_factory=list)
    finished: list[StrapPipeline] = field(default_factory=list)
    """Sessions closed during this run, in order."""
    recovered_store: Path | None = None
    """Where the store was recovered to when its file was deleted or moved away while
    recording (:meth:`SessionStore.recover_to`: :attr:`store` itself moved there)."""
    recovered_because: str = ""
    """Why, as :meth:`SessionStore.replaced` said it (``"was moved to …"``)."""
    rescued: dict[str, Path | None] = field(default_factory=dict)
    """Sessions whose last beats the store would not take when the daemon stopped: the
    rescue file they were written to (None: none could be written)."""
    writer: BeatWriter = field(init=False)
    ecg: EcgRecorder = field(init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _earlier: dict[str, SessionSummary] = field(default_factory=dict)
    """Sessions in the store when this run started, by id (after crash recovery)."""
    _earlier_devices: set[str] = field(default_factory=set)
    """Devices of those sessions: the ones whose stale retained state this run corrects."""
    _session_ids: set[str] = field(default_factory=set)
    """Ids of the sessions this run started (a new one never takes one of them)."""
    _flushes: set[asyncio.Task[None]] = field(default_factory=set)
    """Flushes a command started and did not wait for to the end (:meth:`_store_soon`)."""

    def __post_init__(self) -> None:
        self.writer = BeatWriter(self.store, self.settings.storage.flush_every_s)
        self.ecg = EcgRecorder(self.writer, self.clock)
        self.rejected = DropCounter("commands", "command", verb="rejected", logger=log)
        """Refused commands, for the log (each also gets its error result)."""
        self.runtimes = [StrapRuntime(i, c) for i, c in enumerate(self.strap_clients)]
        self._recovering = asyncio.Lock()

    @property
    def pipelines(self) -> dict[str, StrapPipeline]:
        """Running sessions by device id."""
        return {
            r.device_id: r.session for r in self.runtimes if r.device_id and r.session is not None
        }

    def stop(self) -> None:
        self._stop.set()

    @property
    def base(self) -> str:
        return self.settings.mqtt.topic_base

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> None:
        if self.link is not None:
            self.link.publish(topic, payload, qos=qos, retain=retain)
        if self.tap is not None:
            self.tap(topic, payload, retain)

    def publish_bridge_info(self) -> None:
        p = self.settings.processing
        info = BridgeInfoPayload(
            ts=self.now_ms(),
            version=settle_version(),
            broker="embedded" if self.broker and self.broker.embedded else "external",
            devices=sorted(r.device_id for r in self.runtimes if r.device_id),
            config={
                "window_s": p.window_s,
                "baseline_s": p.baseline_s,
                "indices_every_s": p.indices_every_s,
                "topic_base": self.base,
                "straps": len(self.runtimes),
            },
            client_id=self.link.client_id if self.link is not None else None,
        )
        self._publish(f"{self.base}/bridge/info", info.to_json(), qos=1, retain=True)

    # -- Home Assistant ------------------------------------------------------------------

    def watch_home_assistant(self) -> None:
        """Re-announce when Home Assistant (re)starts and says ``online`` on its birth topic
        (``homeassistant.status_topic``)."""
        h = self.settings.homeassistant
        if self.link is not None and h.enabled:
            self.link.watch(h.status_topic, self._on_ha_status)

    def _on_ha_status(self, _topic: str, payload: bytes, _retained: bool) -> None:
        if payload.strip() == b"online":
            self.announce()

    def announce(self, rt: StrapRuntime | None = None) -> None:
        """Publish (retained) discovery configs for the bridge and every known strap."""
        h = self.settings.homeassistant
        if self.link is None or not h.enabled:
            return
        msgs = [] if rt is not None else ha.bridge_messages(h.prefix, self.base, settle_version())
        for r in [rt] if rt is not None else self.runtimes:
            if r.info is None:
                continue
            desc = ha.DeviceDescription(
                r.info.device_id, r.info.name, r.info.model, r.info.manufacturer, r.info.firmware
            )
            msgs += ha.device_messages(
                h.prefix,
                self.base,
                desc,
                settle_version(),
                indices_every_s=self.settings.processing.indices_every_s,
                time_scale=self.time_scale,
            )
        for topic, payload in msgs:
            self.link.publish(topic, payload, qos=1, retain=True)

    def forget_device(self, device_id: str) -> None:
        """Remove a strap's Home Assistant entities (empty retained configs)."""
        h = self.settings.homeassistant
        if self.link is not None and h.enabled:
            for topic in ha.removal_messages(h.prefix, self.base, device_id):
                self.link.forget_retained(topic)

    # -- what an earlier run left on the broker ---------------------------------------------

    def watch_stale_state(self) -> None:
        """Correct the retained state an earlier run left behind for straps this run does not
        (yet) run: after a crash (``kill -9``, power loss) or a stop while the broker was away,
        the broker still says ``availability online``, ``session running``, ``status
        streaming``. Checked on every (re)connect, as the broker replays what it retains; only
        for devices in this store (one daemon per store and topic base)."""
        if self.link is None:
            return
        for leaf in ("availability", "session", "status"):
            self.link.watch(f"{self.base}/+/{leaf}", self._on_retained_state)

    def _on_retained_state(self, topic: str, payload: bytes, retained: bool) -> None:
        if not retained or self.link is None or not topic.startswith(self.base + "/"):
            return  # (a live message: this run's own, current by definition)
        parts = topic[len(self.base) + 1 :].split("/")
        if len(parts) != 2:
            return
        dev, leaf = parts
        if dev not in self._earlier_devices or any(r.device_id == dev for r in self.runtimes):
            return
        if self.link.served_by_another(dev):
            # Another daemon online on this base serves it now (it said so in its
            # bridge/info): its state is live, not left over ("offline" and "interrupted"
            # were published over a running session).
            return
        fixed = self._ended(leaf, payload)
        if fixed is not None:
            log.info("%s is not connected: its retained %s from an earlier run ended", dev, leaf)
            self.link.publish(topic, fixed, qos=1, retain=True)

    def _ended(self, leaf: str, payload: bytes) -> bytes | None:
        """What ``payload`` (retained on ``<dev>/<leaf>``) becomes for a strap that is not
        connected; None when it already says so (or is not ours to read)."""
        if leaf == "availability":
            return b"offline" if payload.strip() == b"online" else None
        try:
            if leaf == "session":
                s = SessionPayload.model_validate_json(payload)
                if s.state != "running":
                    return None
                stored = self._earlier.get(s.id)
                update: dict[str, object] = {"ts": self.now_ms(), "state": "interrupted"}
                if stored is not None and stored.state != SessionState.RUNNING:
                    update.update(
                        state=stored.state.value,
                        stopped_ts=stored.stopped_ms,
                        n_beats=stored.n_beats,
                    )
                return s.model_copy(update=update).to_json()
            if leaf == "status":
                st = StatusPayload.model_validate_json(payload)
                if st.state == "stopped":
                    return None
                return st.model_copy(update={"ts": self.now_ms(), "state": "stopped"}).to_json()
        except ValidationError:
            return None
        return None

    def _recover(self) -> tuple[list[str], list[SessionSummary]]:
        recovered = self.store.mark_interrupted_running()
        return recovered, self.store.list_sessions() if self.link is not None else []

    # -- life cycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped, or until every strap task has ended (a replay finished)."""
        recovered, earlier = await asyncio.to_thread(self._recover)
        # (after the recovery, which may wait the full 10 s for a Settle command to finish)
        self.store.limit_waits(STORE_WAIT_S)
        for sid in recovered:
            # A crash during a store outage leaves the beats the store never took in the
            # session's rescue file (written as the outage went on): say where it is.
            spilled = next(
                (f for d in self.writer.rescue_where() if (f := d / rescue_name(sid)).is_file()),
                None,
            )
            log.warning(
                "session %s was left running by an earlier crash; marked interrupted%s",
                sid,
                f"; beats the store did not take are in {spilled} (settle analyze and "
                "settle run --replay read it)"
                if spilled
                else "",
            )
        self._earlier = {s.id: s for s in earlier}
        self._earlier_devices = {s.device_id for s in earlier}
        self.watch_stale_state()
        self.publish_bridge_info()
        self.announce()
        async with asyncio.TaskGroup() as tg:
            writer_task = tg.create_task(self.writer.run(), name="store-writer")
            status_task = tg.create_task(self._status_loop(), name="status")
            watch_task = tg.create_task(self._store_watch(), name="store-watch")
            strap_tasks = [
                tg.create_task(self._run_strap(r), name=f"strap-{r.index}") for r in self.runtimes
            ]
            stop_task = tg.create_task(self._stop.wait(), name="stop-signal")
            await asyncio.wait([stop_task, *strap_tasks], return_when=asyncio.FIRST_COMPLETED)
            # (a strap task cancelled by a library's stray cancel is not a failure to report:
            # t.exception() would raise CancelledError here)
            failed = [
                t
                for t in strap_tasks
                if t.done() and not t.cancelled() and t.exception() is not None
            ]
            if not failed:
                # The straps stop reading (their links close concurrently), then every session
                # is closed at once: one flush, one store transaction. One by one, each with
                # its own flush, took minutes with a few hundred straps.
                stopped_at = host_clock.elapsed_s()
                self._stopping = True
                # Each write waited 10 s for another program's write lock (the flush under
                # way, each retry, the close, the last flush: a minute): the stop is bounded
                # by STORE_RETRY_AT_STOP_S, then the rescue files.
                self.store.limit_waits(STORE_WAIT_AT_STOP_S)
                await _cancel_and_wait(strap_tasks)
                await asyncio.shield(self._finish_sessions(self.runtimes, stopped_at, final=True))
                for rt in self.runtimes:
                    self._stopped(rt)
            stop_task.cancel()
            writer_task.cancel()
            status_task.cancel()
            watch_task.cancel()
        await self.writer.flush()

    def _set_state(self, rt: StrapRuntime, state: ConnectionState) -> None:
        rt.state = state
        self._publish_status(rt)

    def _publish_status(self, rt: StrapRuntime) -> None:
        if rt.output is None or rt.info is None:
            return
        info = rt.info
        status = StatusPayload(
            ts=self.now_ms(),
            state=rt.state,
            address=info.address,
            name=info.name or None,
            model=info.model,
            manufacturer=info.manufacturer,
            firmware=info.firmware,
            battery_pct=info.battery_pct,
            contact=rt.session.last_contact if rt.session else None,
            rssi=info.rssi_dbm,
            reconnects=rt.reconnects,
            malformed=rt.client.malformed,
            overflowed=rt.client.overflowed,
            stray_bytes=rt.client.stray_bytes.total,
            ecg_dropped=self.ecg.dropped_frames(info.device_id),
            mqtt_dropped=self.link.dropped_under(rt.output.topic("")) if self.link else 0,
            last_error=rt.last_error,
        )
        rt.output.publish("status", status.to_json(), 1, True)

    def publish_status_all(self) -> None:
        """Every strap's status now (the link calls this after each reconnect)."""
        for rt in self.runtimes:
            self._publish_status(rt)

    async def _store_watch(self) -> None:
        """Recover the store as soon as its file is found deleted, moved or replaced (not at
        the stop only): until then the open connection's -wal/-shm files stay at the path's
        name, where any program opening the path (another Settle command, the dashboard's
        History workers, a backup put back there) would take them for its own. Tried once;
        if it fails, the stop tries again and, failing, writes the rescue files."""
        while True:
            await asyncio.sleep(self.writer.flush_every_s)
            if self.writer.failing and self.store.replaced() is not None:
                await self._recover_store()
                return

    async def _status_loop(self) -> None:
        while True:
            await self.sleep(STATUS_EVERY_S)
            self.publish_status_all()

    async def _run_strap(self, rt: StrapRuntime) -> None:
        """The connection state machine of one strap; ends only by cancellation or, for the
        only strap before its first connection, by a :class:`SensorError` the user needs to
        see: at once when no strap was found, after :data:`FIRST_CONNECT_ATTEMPTS` failed
        attempts when one was found but would not connect (a link lost during service
        discovery is retried, as it is after the first connection)."""
        attempt = 0
        found = False
        first_failures = 0
        try:
            while True:
                streaming = False
                try:
                    self._set_state(rt, "scanning")
                    device = await rt.client.find()
                    found = True
                    self._raise_if_stopping()
                    self._set_state(rt, "connecting")
                    async with rt.client.connect(device) as stream:
                        self._raise_if_stopping()  # before a session starts
                        attempt = 0
                        await self._on_connected(rt, stream.info)
                        streaming = True
                        self._set_state(rt, "streaming")
                        ecg: asyncio.Task[None] | None = None
                        if self.settings.strap.ecg and stream.client is not None:
                            ecg = asyncio.create_task(
                                self.ecg.run(rt, stream.client), name=f"ecg-{rt.index}"
                            )
                        try:
                            async for n in stream:
                                if rt.info is not None and stream.battery_pct != (
                                    rt.info.battery_pct
                                ):
                                    self._on_battery(rt, stream.battery_pct)
                                self._on_notification(rt, n)
                        finally:
                            if ecg is not None:
                                # Cancelling leaves the PMD session, which stops the stream
                                # before the link is closed (an H10 otherwise keeps streaming).
                                ecg.cancel()
                                with contextlib.suppress(asyncio.CancelledError):
                                    await ecg
                except SensorError as exc:
                    # The strap the error is about (an address) before "strap 0".
                    who = rt.device_id or rt.client.address or exc.sensor_id or f"strap {rt.index}"
                    if not rt.was_connected and len(self.runtimes) == 1:
                        if not found:
                            raise  # the only strap was never found: say so now
                        first_failures += 1
                        if first_failures >= FIRST_CONNECT_ATTEMPTS:
                            raise SensorError(
                                exc.sensor_id,
                                f"gave up after {first_failures} attempts: {exc.reason}",
                            ) from exc
                        log.warning(
                            "%s: %s; retrying (attempt %d of %d)",
                            who, exc.reason, first_failures + 1, FIRST_CONNECT_ATTEMPTS,
                        )  # fmt: skip
                    elif exc.reason == rt.last_error:
                        # A paired strap left at home: one line, not one every 25 s for
                        # hours (status `last_error` keeps saying it).
                        log.debug("%s: %s; retrying", who, exc.reason)
                    else:
                        log.warning(
                            "%s: %s; retrying (a repeat is not logged again)", who, exc.reason
                        )
                    rt.last_error = exc.reason
                    self._availability(rt, False)
                    if streaming:  # the link was lost (not one more failed scan or connect)
                        rt.link_lost_s = host_clock.elapsed_s()
                        if rt.session is not None:
                            rt.session.event("disconnected", exc.reason)
                self._set_state(rt, "backoff")
                await self.sleep(backoff_delay_s(attempt, base_s=0.2, cap_s=10.0))
                attempt += 1
        finally:
            if not self._stopping:  # else run() closes every session together
                if rt.session is not None:
                    await asyncio.shield(self._finish_session(rt))
                self._stopped(rt)

    def _is_stopping(self) -> bool:
        """Whether a stop was asked for (SIGTERM, Ctrl-C) or is under way."""
        return self._stopping or self._stop.is_set()

    def _raise_if_stopping(self) -> None:
        """Raise the cancellation a library swallowed. Python 3.11's ``asyncio.wait_for``
        (inside bleak and bumble) returns its result instead of raising when the awaited
        future finished in the same step as the cancel; the strap task then went on — a stop
        during the connect left the daemon streaming, deaf to SIGTERM."""
        if self._is_stopping():
            raise asyncio.CancelledError

    def _stopped(self, rt: StrapRuntime) -> None:
        if rt.info is not None:
            self._set_state(rt, "stopped")
            self._availability(rt, False)

    def _on_battery(self, rt: StrapRuntime, pct: int | None) -> None:
        """The strap notified a new Battery Level: status now, one WARNING when it falls to
        :data:`LOW_BATTERY_PCT` (a practitioner deep in a session sees it before the strap
        goes silent)."""
        assert rt.info is not None
        before = rt.info.battery_pct
        rt.info = replace(rt.info, battery_pct=pct)
        self._warn_low_battery(rt.info, before)
        self._publish_status(rt)

    @staticmethod
    def _warn_low_battery(info: StrapInfo, before: int | None) -> None:
        low = info.battery_pct is not None and info.battery_pct <= LOW_BATTERY_PCT
        if low and (before is None or before > LOW_BATTERY_PCT):
            log.warning("%s: strap battery low (%d %%)", info.device_id, info.battery_pct)

    async def _on_connected(self, rt: StrapRuntime, info: StrapInfo) -> None:
        first = not rt.was_connected
        if rt.info is not None and info.address.upper() != rt.info.address.upper():
            # Never carry this strap's session on with another one (keep_to below makes
            # the client look for this address only; this holds whatever found it).
            raise SensorError(
                rt.info.device_id, f"found {info.address}, not this strap ({rt.info.address})"
            )
        if first:
            # One strap per runtime for the daemon's life: a reconnect looks for the strap
            # that connected, never for "any heart-rate strap" or a name match again.
            rt.client.keep_to(info.address)
        if rt.info is not None:
            # One strap keeps one id for the daemon's life: topics, commands, the session and
            # the ECG counters are keyed by it. A reconnect may report another name (BlueZ
            # names a device only once it has learnt the name; a user's alias).
            info = replace(info, device_id=rt.info.device_id)
        self._warn_low_battery(info, rt.info.battery_pct if rt.info else None)
        rt.info = info
        rt.was_connected = True
        if rt.output is None:
            rt.output = DeviceOutput(self.link, self.base, info.device_id, tap=self.tap)
            self.publish_bridge_info()
            self.announce(rt)
        self._availability(rt, True)
        if first:
            if self.auto_start:
                await self.start_session(rt, None)
        else:
            rt.reconnects += 1
            rt.last_error = None
            if rt.link_lost_s is not None:
                # Session seconds, as the gap is recorded (time_scale 1 but for replays).
                away_s = (host_clock.elapsed_s() - rt.link_lost_s) * self.time_scale
                log.info("%s: strap back after %.1f s without a link", info.device_id, away_s)
                rt.link_lost_s = None
            if rt.session is not None:
                rt.session.restart_window()
                rt.session.event("reconnected")
        if rt.session is not None:
            rt.session.connected()

    def _availability(self, rt: StrapRuntime, online: bool) -> None:
        """Publish the strap's retained availability when it changes. Repeated at every failed
        scan while the strap was away, each copy was broker traffic that said nothing new and
        re-triggered the Home Assistant automations watching the strap go unavailable. (The
        link keeps the latest retained value and publishes it again after a broker outage.)"""
        if rt.output is None or rt.available == online:
            return
        rt.available = online
        rt.output.publish("availability", "online" if online else "offline", 1, True)

    def _on_notification(self, rt: StrapRuntime, n: object) -> None:
        from sensors.strap import Notification

        assert isinstance(n, Notification) and rt.output is not None
        m = n.measurement
        if rt.session is not None:
            # The session publishes the beat message, with the beats' times (for a
            # notification its beat timer holds back, once it has decided: docs/timing.md).
            rt.session.on_notification(n)
            return
        beat = BeatPayload(
            ts=n.recv_ts_ms,
            seq=rt.output.beat_seq,
            hr=m.hr_bpm,
            rr_ms=list(m.rr_ms),
            beat_t_s=[],
            classified=[],
            contact=m.contact,
            session=None,
        )
        rt.output.beat_seq += 1
        rt.output.publish("beat", beat.to_json(), 0)

    def _publish_last_classes(self, rt: StrapRuntime, pipeline: StrapPipeline) -> None:
        """The beats that were still waiting for look-ahead at the session's end are
        classified by :meth:`StrapPipeline.finish`: one closing beat message (no RR of its
        own) carries their classes, or a subscriber never saw the last ~3 beats' classes."""
        classified = pipeline.take_classified()
        if not classified or rt.output is None or pipeline.last_hr is None:
            return
        beat = BeatPayload(
            ts=self.now_ms(),
            seq=rt.output.beat_seq,
            hr=pipeline.last_hr,
            rr_ms=[],
            beat_t_s=[],
            classified=classified,
            contact=pipeline.last_contact,
            session=pipeline.session_id,
        )
        rt.output.beat_seq += 1
        rt.output.publish("beat", beat.to_json(), 0)

    # -- sessions ------------------------------------------------------------------------

    async def start_session(self, rt: StrapRuntime, intention: Intention | None) -> StrapPipeline:
        async with rt.session_lock:
            return await self._start_session(rt, intention)

    async def _start_session(
        self, rt: StrapRuntime, intention: Intention | None, *, store: bool = True
    ) -> StrapPipeline:
        """Close the strap's running session, if any, and start a new one. Neither waits for
        the store: the old session's end and the new session's row go through the writer
        like beats, so a store that fails now (disk full, another program's write lock)
        takes them once it is back, and every beat goes into the new session from its
        first. (The old session was closed before the new one existed: with the store
        failing, its end was never stored — `running` for good — and the new session's row
        failed, every beat after it discarded.) ``store`` False: the caller stores them
        (:meth:`_store_soon`)."""
        assert rt.info is not None and rt.output is not None
        if rt.session is not None:
            await self._finish_sessions([rt], store=False)
        info = rt.info
        # One instant on both clocks: t_s = 0 is started_ms, and a later step of the wall
        # clock is measured against this pair.
        started_ms, started_at = self.now_ms(), host_clock.elapsed_s()
        meta: dict[str, object] = {
            "strap": {
                "name": info.name,
                "model": info.model,
                "manufacturer": info.manufacturer,
                "firmware": info.firmware,
            },
            # Every processing setting that decided the stored classes and indices (the
            # plausible range, warm-up, correction, RR source, step), so an export says how
            # to re-analyse it as recorded: only window_s and baseline_s were kept.
            "settings": self.settings.processing.model_dump(mode="json"),
            "settle_version": settle_version(),
            # Session seconds per wall second: > 1 for a time-compressed replay, whose t_s
            # then run ahead of started_ms/stopped_ms (wall clock).
            "time_scale": self.time_scale,
            # Where the session was recorded: its report, EDF+ start and journal times are
            # read on that clock wherever the store is opened later.
            "utc_offset_s": utc_offset_s(started_ms),
        }
        if intention is not None:
            meta["intention"] = intention.model_dump()
        session_id = make_session_id(started_ms)
        while session_id in self._session_ids or session_id in self._earlier:
            session_id = make_session_id(started_ms)
        self._session_ids.add(session_id)
        self.writer.create_session(
            session_id,
            NewSession(info.device_id, started_ms, f"{self.source}:{info.address}", meta,
                       _store_intention(intention)),
        )  # fmt: skip
        pipeline = StrapPipeline(
            output=rt.output,
            session_id=session_id,
            started_ms=started_ms,
            settings=self.settings,
            writer=self.writer,
            intention=intention,
            clock=self.clock,
            on_indices=self.on_indices,
            time_scale=self.time_scale,
            started_mono_s=started_at,
        )
        rt.session = pipeline
        if rt.state == "streaming" or rt.state == "connecting":
            pipeline.connected()
        pipeline.publish_session("running")
        pipeline.event("session-start", intention.statement if intention else "")
        log.info("session %s started for %s", session_id, info.device_id)
        if self.on_session is not None:
            self.on_session(pipeline, info)
        # Stored now, as a rule (and the old session's end with it); a cancellation here
        # (a stop) leaves the session to the shutdown, which closes it.
        if store:
            await self._store_soon()
        return pipeline

    async def _store_soon(self) -> bool:
        """Commit what the writer holds (a session's start or end, a marker) before a
        command is answered — waiting :data:`COMMAND_STORE_WAIT_S` at most, and not at all
        while the store is failing: another program's write lock made every write wait
        10 s, past the CLI's 5 s wait for the answer. What is not committed then stays
        with the writer, which stores it at a later flush.

        Returns whether everything the writer held when called is committed now (a
        command's ``stored``): False while the store fails, or when the commit did not end
        within the wait."""
        if self.writer.failing:
            return False
        flush = asyncio.ensure_future(self.writer.flush())
        self._flushes.add(flush)
        flush.add_done_callback(self._flush_done)
        try:
            await asyncio.wait_for(asyncio.shield(flush), COMMAND_STORE_WAIT_S)
        except TimeoutError:
            return False
        # This flush took every row buffered before it (or an earlier one, queued ahead of
        # it, did): had any failed, the writer would say so (and keep the rows).
        return not self.writer.failing

    def _flush_done(self, flush: asyncio.Task[None]) -> None:
        self._flushes.discard(flush)
        if not flush.cancelled() and flush.exception() is not None:
            log.error("storing failed", exc_info=flush.exception())

    async def _finish_session(self, rt: StrapRuntime) -> bool | None:
        return await self._finish_sessions([rt])

    async def _finish_sessions(
        self,
        rts: list[StrapRuntime],
        stopped_at: float | None = None,
        *,
        final: bool = False,
        store: bool = True,
    ) -> bool | None:
        """Close the running sessions of ``rts`` together: their ends go to the writer
        (stored with one flush of the buffered rows, one store transaction for all of them),
        then their ``stopped`` messages.

        ``stopped_at``: when, on :func:`~sensors.clock.elapsed_s` (default now). Each session
        ends that long after its start, on the wall clock as the session keeps it: a step
        of the host's clock during the session moved its start (and cannot make it end
        before it began, nor last for the days the clock jumped).

        While the daemon goes on, a store that fails keeps the ends with the rows (retried
        at every flush, like beats). ``store`` False: not even one flush is waited for here
        (a session start flushes once for both). ``final`` (the daemon is ending): beats the
        store still refuses after :data:`STORE_RETRY_AT_STOP_S` are written to a rescue
        file, and their session is closed ``interrupted``, not ``stopped`` — never a clean
        end with beats missing.

        Returns whether the ends were committed before it returned (see :meth:`_store_soon`;
        None: not tried here)."""
        at = host_clock.elapsed_s() if stopped_at is None else stopped_at
        ends: list[tuple[StrapPipeline, int]] = []
        stored: bool | None = None
        for rt in rts:
            pipeline, rt.session = rt.session, None
            if pipeline is not None:
                pipeline.follow_wall_clock(
                    self.clock(), host_clock.elapsed_s()
                )  # a step since its last beat
                pipeline.finish()
                self._publish_last_classes(rt, pipeline)
                elapsed_ms = max(0, round((at - pipeline.started_mono_s) * 1000))
                end_ms = pipeline.started_ms + elapsed_ms
                end = SessionEnd(pipeline.started_ms, end_ms, SessionState.STOPPED)
                self.writer.close_session(pipeline.session_id, end)
                ends.append((pipeline, end_ms))
        if not final and not ends:
            return None
        # With the sessions closed earlier whose rows the store has not taken yet (a
        # session stopped during an outage): their beats were said to be stored.
        earlier = [p for p in self.finished if self.writer.holds(p.session_id)] if final else []
        # Finished from here on, before the store is waited for: a stop of the daemon
        # during that wait rescues their unsaved rows with the others'.
        self.finished.extend(p for p, _ in ends)
        try:
            if final:
                await self._store_at_stop([p for p, _ in ends] + earlier)
            elif store:
                stored = await self._store_soon()
        finally:
            # Whatever ends the wait (a cancellation included): the sessions are off their
            # straps, so they are said stopped. Cancelled in the wait, they were not: the
            # broker kept `running` for good, and no `session-stop` was sent.
            for pipeline, end_ms in ends:
                n = self.writer.unsaved_beats(pipeline.session_id)
                if not final and self.writer.failing and pipeline.session_id in self.writer.closes:
                    log.warning(
                        "session %s ended with %d beats not yet stored (the store is "
                        "failing); they and its end stay in memory until it takes them",
                        pipeline.session_id, n,
                    )  # fmt: skip
                pipeline.event("session-stop")
                pipeline.publish_session("stopped", end_ms)
                pipeline.release()
                log.info("session %s stopped (%d beats)", pipeline.session_id, pipeline.seq)
        return stored

    async def _store_at_stop(self, pipelines: list[StrapPipeline]) -> None:
        """The daemon is ending: store everything, the sessions' ends included, retrying a
        failing store for :data:`STORE_RETRY_AT_STOP_S`; then write the beats it still
        refuses to rescue files and close their sessions ``interrupted``."""
        await self.writer.flush()
        if self.store.replaced() is not None:
            await self._recover_store()
        elif self.writer.failing:
            log.warning(
                "stopping: the session store still fails (%s); retrying for %g s, then what "
                "it has not taken goes to rescue files", self.writer.last_error,
                STORE_RETRY_AT_STOP_S,
            )  # fmt: skip
            deadline = time.monotonic() + STORE_RETRY_AT_STOP_S
            while self.writer.failing and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                await self.writer.flush()
        rescued = False
        for pipeline in pipelines:
            n = self.writer.unsaved_beats(pipeline.session_id)
            n_markers = self.writer.unsaved_markers(pipeline.session_id)
            if not n and not n_markers:
                continue
            what = f"{n} beats" + (f" and {n_markers} marker(s)" if n_markers else "")
            where = [self.store.path.parent, Path(tempfile.gettempdir()), Path.home()]
            reason = self.writer.last_error or "the session store failed"
            saved = await asyncio.to_thread(self.writer.rescue, pipeline.session_id, reason, where)
            self.rescued[pipeline.session_id] = saved
            if saved is not None:
                log.error(
                    "session %s: %s could not be stored (%s); saved to %s (settle analyze "
                    "or settle run --replay read it)", pipeline.session_id, what, reason, saved,
                )  # fmt: skip
            else:
                log.error(
                    "session %s: %s could not be stored (%s) nor written to a rescue "
                    "file in %s: they are lost", pipeline.session_id, what, reason,
                    ", ".join(str(d) for d in where),
                )  # fmt: skip
            ends = self.writer.closes.get(pipeline.session_id)
            if ends:
                end = replace(ends[-1], state=SessionState.INTERRUPTED)
                self.writer.close_session(pipeline.session_id, end)
                rescued = True
        if rescued:
            await self.writer.flush()
        unclosed = [p.session_id for p in pipelines if p.session_id in self.writer.closes]
        if unclosed:
            log.error(
                "could not store the end of session(s) %s (%s): the store shows them running "
                "until the next start marks them interrupted",
                ", ".join(unclosed), self.writer.last_error or "the session store failed",
            )  # fmt: skip

    async def _recover_store(self) -> None:
        """The store file was deleted, moved or replaced under the open connection, which
        still reads it: copy all of it — earlier sessions too — back to the path (or, when
        another file is there now, beside it), switch to the copy and write the rows kept in
        memory into it. The caller rescues to a CSV what still cannot be stored. One at a
        time: the watch and the stop may both find the file gone."""
        async with self._recovering:
            gone = self.store.replaced()
            if gone is not None:
                await self._recover_locked(gone)

    async def _recover_locked(self, gone: str) -> None:
        old = self.store.path
        target = old
        if await asyncio.to_thread(os.path.lexists, old):
            stamp = time.strftime("%Y%m%dT%H%M%S")
            target = old.with_name(f"{old.stem}.recovered-{stamp}{old.suffix}")
        try:
            await asyncio.to_thread(self.store.recover_to, target)  # the writer's store too
        except SettleError as exc:
            log.error("the session store file %s while recording and could not be "
                      "recovered (%s)", gone, exc)  # fmt: skip
            return
        self.recovered_store = target
        self.recovered_because = gone
        await self.writer.flush()
        log.error(
            "the session store file %s while recording; everything it held (earlier sessions "
            "too) is recovered into %s%s", gone, target,
            "" if self._stopping else ", and recording goes on there",
        )  # fmt: skip

    # -- commands -------------------------------------------------------------------------

    def _runtime(self, device_id: str) -> StrapRuntime | None:
        return next((r for r in self.runtimes if r.device_id == device_id), None)

    async def on_command(
        self, device_id: str, name: str, payload: bytes, retained: bool, *, source: str = "mqtt"
    ) -> None:
        """Handle ``<base>/<device>/cmd/<name>``; every outcome gets a result message, but
        one whose device or name holds a wildcard or NUL (from the HTTP route) — it has no
        topic to answer on. ``source``: where a marker is recorded as entered (``mqtt``,
        ``dashboard``). Refusals are logged through :attr:`rejected` (one WARNING, then at
        most one a minute with the count: anyone on the broker can send thousands)."""
        if NOT_IN_A_TOPIC.search(device_id) or NOT_IN_A_TOPIC.search(name):
            self.rejected.add(f"{name[:40]!r} for {device_id[:40]!r}: not a device and command")
            return
        result_topic = f"{self.base}/{device_id}/cmd/{name}/result"
        cmd_id: str | None = None

        def reply(error: str | None, stored: bool | None = None) -> None:
            res = CommandResult(
                ts=self.now_ms(),
                id=cmd_id,
                status="error" if error else "ok",
                error=error,
                stored=stored,
            )
            self._publish(result_topic, res.to_json(), qos=1)
            if error:
                self.rejected.add(f"{name} for {device_id}: {error}")

        if retained and not payload:
            return  # someone clearing a stale retained command: nothing to answer
        rt = self._runtime(device_id)
        if (
            rt is None
            and source == "mqtt"
            and self.link is not None
            and self.link.leaves_to_another(device_id)
        ):
            # Another daemon online on this base serves it (its bridge/info says so), or
            # answers for the devices none serves: its result is the one. Answered here
            # too, "unknown device" came first, and `settle mark` called a stored marker
            # refused.
            return
        # The envelope (retained, size before parsing, nesting, JSON, duplicate keys, name,
        # id type) is judged as the MQTT link and the dashboard judge it, so a payload that
        # would crash json.loads is one error result here too, whoever calls.
        screened = screen_command(name, payload, retained)
        cmd_id = screened.id
        if screened.error is not None:
            return reply(screened.error)
        if self._is_stopping():
            # Its sessions are being closed: a session/start then was left `running` after a
            # clean exit 0, and a marker was told "no session is running".
            return reply(STOPPING)
        raw = decode_json(payload)  # cannot fail: screened
        model = COMMANDS[name]
        if rt is None:
            return reply(f"{UNKNOWN_DEVICE} {shown(device_id)}")
        try:
            cmd = model.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "payload"
            return reply(f"{loc}: {err['msg']}")
        try:
            stored = await self._apply(rt, name, cmd, source)
        except CommandError as exc:
            return reply(str(exc))
        except SettleError as exc:
            # A store failure no command should meet (the writer keeps what they change):
            # said as what it is, not "the daemon failed to carry out the command" and a
            # traceback.
            log.error("%s for %s: %s", name, device_id, exc)
            return reply(f"{exc} (measuring goes on)")
        reply(None, stored)

    async def _apply(self, rt: StrapRuntime, name: str, cmd: object, source: str) -> bool | None:
        """Carry out a command; returns whether what it recorded is in the store when it is
        answered (the result's ``stored``: False while the store fails, what it recorded
        kept in memory until it is back), None for one that records nothing."""
        if name == "session/start":
            assert isinstance(cmd, SessionStartCommand)
            if rt.info is None:
                raise CommandError("the strap has not connected yet")
            async with rt.session_lock:
                if self._is_stopping():  # (it began while this command waited its turn)
                    raise CommandError(STOPPING)
                pipeline = await self._start_session(rt, cmd.intention, store=False)
                return await self._stored(pipeline)
        if name == "session/stop":
            # After a start still in progress (it holds the lock), not before it.
            async with rt.session_lock:
                if self._is_stopping():  # the stop closes it
                    raise CommandError(STOPPING)
                closing = rt.session
                if closing is None:
                    raise CommandError("no session is running (send session/start first)")
                return bool(await self._finish_session(rt)) and self._kept(closing)
        session = rt.session
        if session is None:
            raise CommandError("no session is running (send session/start first)")
        if name == "marker":
            assert isinstance(cmd, MarkerCommand)
            # Through the writer, as beats: a store that fails now (another program's write
            # lock, a full disk) takes it once it is back. Written straight to the store,
            # it was dropped ("could not store the marker: … database is locked", 20 s
            # after the CLI had given up waiting) while the beats of that moment were kept.
            row = session.marker_row(cmd.kind, cmd.text, source)
            session.marker(cmd.kind, row.t_s)
            session.event(cmd.kind, cmd.text, source, t_s=row.t_s)
            self.writer.add_marker(session.session_id, row)
            if cmd.kind == "hold-start" and session.baseline_marked is not None:
                # The practice began: a rest period still being recorded ends here (left
                # open, it would leave the whole session without a score).
                self._end_baseline(session, row.t_s, "ended by hold-start")
            return await self._stored(session)
        if name == "baseline/start":
            if session.baseline_marked is not None:  # a second press must not move its start
                raise CommandError(
                    f"a baseline is already being recorded (since t = "
                    f"{session.baseline_marked[0]:.0f} s); send baseline/stop first"
                )
            session.start_baseline()
        elif name == "baseline/stop":
            if session.baseline_marked is None:
                raise CommandError("no baseline is being recorded (send baseline/start first)")
            discarded = self._end_baseline(session)
            stored = await self._stored(session)
            if discarded is not None:
                raise CommandError(discarded)
            return stored
        return None

    async def _stored(self, session: StrapPipeline) -> bool:
        """Store what the writer holds now (:meth:`_store_soon`); whether it is committed,
        ``session``'s rows included."""
        return await self._store_soon() and self._kept(session)

    def _kept(self, session: StrapPipeline) -> bool:
        """Whether the store keeps ``session``'s rows (not when the session was deleted from
        it while recording: they are dropped, its beats go to its rescue file)."""
        return session.session_id not in self.writer.vanished

    def _end_baseline(
        self, session: StrapPipeline, t_s: float | None = None, why: str = ""
    ) -> str | None:
        """End the marked rest period and store it (through the writer); returns why it was
        discarded, if it was."""
        start, stop, discarded = session.stop_baseline(t_s, why)
        # A discarded period is not the session's baseline: the store keeps none (the
        # automatic one is used), as the live score does.
        period = BaselinePeriod(start, stop) if discarded is None else None
        self.writer.set_baseline(session.session_id, period)
        return discarded


STOPPING = "the daemon is stopping"
"""The answer to every command once a stop was asked for."""

FIRST_CONNECT_ATTEMPTS = 5
"""Attempts the only strap gets to make its first connection once it was found (each a scan
and a connect, with backoff between): a link lost while it is set up is retried; a strap
that keeps refusing (a phone holding its connection) ends ``settle run`` with the reason."""

COMMAND_STORE_WAIT_S = 1.0
"""How long a command waits for the store to commit what it changed before it is answered
(what is not committed by then is stored at a later flush)."""

STORE_WAIT_S = 1.0
"""How long each write of a running daemon waits for another program's write lock (the
store's :data:`~sessions.store.BUSY_TIMEOUT_S`, 10 s, while the daemon starts): the writer
keeps what the store refuses in memory and tries again at its next flush, a second later,
so a longer wait only kept the outage unsaid (the first ERROR came 10 s after another
program took the lock) and the rescue file unwritten (a crash then lost those 10 s). A
Settle command's write (a tag, a note, a deletion: 0.05 s for a 12 h session) is waited
for."""

STORE_RETRY_AT_STOP_S = 5.0
"""How long a stopping daemon keeps retrying a failing store before it writes the beats it
still holds to a rescue file."""

STORE_WAIT_AT_STOP_S = 0.5
"""How long each write of a stopping daemon waits for another program's write lock
(:data:`STORE_WAIT_S` while it records; it was the store's
:data:`~sessions.store.BUSY_TIMEOUT_S`, 10 s): with the retries, the rescue files and the
last flush, a stop with the store locked takes ~7 s, within systemd's
``TimeoutStopSec=20``."""

STOP_GRACE_S = 15.0
"""How long a stopping strap task may take (its link's clean-up has 2 x 5 s) before it is
cancelled again."""


async def _cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them; one still running after :data:`STOP_GRACE_S`
    (its cancellation lost somewhere) is cancelled again, until all have ended."""
    pending = set(tasks)
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_S)
        if pending:
            log.warning(
                "%d strap task(s) did not stop within %g s; cancelling again",
                len(pending),
                STOP_GRACE_S,
            )
