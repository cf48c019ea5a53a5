"""The daemon's composition root: straps → pipeline → MQTT + store, under one TaskGroup.

Nothing below this module knows about the others: ``sensors`` yields notifications,
``processing`` turns beats into indices, ``feedback`` publishes, ``sessions`` stores; this
module wires them and owns every task (STYLE.md principle 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from pydantic import ValidationError

from feedback.broker import LOOPBACK, EmbeddedBroker, probe
from feedback.mqtt import MqttLink
from feedback.payloads import CommandResult, IndicesPayload, MarkerCommand
from sensors.strap import StrapClient, StrapInfo
from sessions.store import SessionState, SessionStore
from settle.backoff import backoff_delay_s
from settle.config import Settings
from settle.errors import SensorError, SettleError
from settle.pipeline import BeatWriter, StrapPipeline

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 4096


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
    async with EmbeddedBroker(m.embedded_port) as broker:
        yield BrokerChoice(broker.host, broker.port, embedded=True)


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
    on_session: Callable[[StrapPipeline, StrapInfo], None] | None = None
    on_indices: Callable[[IndicesPayload], None] | None = None
    pipelines: dict[str, StrapPipeline] = field(default_factory=dict)
    writer: BeatWriter = field(init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.writer = BeatWriter(self.store, self.settings.storage.flush_every_s)

    def stop(self) -> None:
        self._stop.set()

    @property
    def base(self) -> str:
        return self.settings.mqtt.topic_base

    def _publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> None:
        if self.link is not None:
            self.link.publish(topic, payload, qos=qos, retain=retain)

    def publish_bridge_info(self) -> None:
        info = {
            "v": 1,
            "ts": int(self.clock() * 1000),
            "version": settle_version(),
            "broker": "embedded" if self.broker and self.broker.embedded else "external",
            "devices": sorted(self.pipelines),
            "config": {
                "window_s": self.settings.processing.window_s,
                "baseline_s": self.settings.processing.baseline_s,
                "indices_every_s": self.settings.processing.indices_every_s,
            },
        }
        self._publish(f"{self.base}/bridge/info", json.dumps(info), qos=1, retain=True)

    async def run(self) -> None:
        """Run until stopped, or until every strap task has ended (a replay finished)."""
        recovered = await asyncio.to_thread(self.store.mark_interrupted_running)
        for sid in recovered:
            log.warning("session %s was left running by an earlier crash; marked interrupted", sid)
        self.publish_bridge_info()
        async with asyncio.TaskGroup() as tg:
            writer_task = tg.create_task(self.writer.run(), name="store-writer")
            strap_tasks = [
                tg.create_task(self._run_strap(c), name=f"strap-{i}")
                for i, c in enumerate(self.strap_clients)
            ]
            stop_task = tg.create_task(self._stop.wait(), name="stop-signal")
            await asyncio.wait([stop_task, *strap_tasks], return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in strap_tasks if t.done() and t.exception() is not None]
            if not failed:
                for t in strap_tasks:
                    t.cancel()
                await asyncio.wait(strap_tasks)
            stop_task.cancel()
            writer_task.cancel()
        await self.writer.flush()

    async def _run_strap(self, client: StrapClient) -> None:
        pipeline: StrapPipeline | None = None
        attempt = 0
        try:
            while True:
                try:
                    device = await client.find()
                    async with client.connect(device) as stream:
                        attempt = 0
                        if pipeline is None:
                            pipeline = await self._open_session(stream.info)
                        else:
                            pipeline.restart_window()
                            pipeline.publish_event("reconnected", pipeline.beat_t_s or 0.0, "")
                        self._availability(pipeline.device_id, True)
                        async for n in stream:
                            pipeline.on_notification(n)
                except SensorError as exc:
                    if pipeline is None:
                        raise  # never found at all: the user needs to hear it now
                    log.warning("strap %s: %s; reconnecting", pipeline.device_id, exc.reason)
                    self._availability(pipeline.device_id, False)
                    pipeline.publish_event("disconnected", pipeline.beat_t_s or 0.0, exc.reason)
                await asyncio.sleep(backoff_delay_s(attempt, base_s=0.2, cap_s=10.0))
                attempt += 1
        finally:
            if pipeline is not None:
                await self._close_session(pipeline)

    def _availability(self, device_id: str, online: bool) -> None:
        self._publish(
            f"{self.base}/{device_id}/availability", "online" if online else "offline", 1, True
        )

    async def _open_session(self, info: StrapInfo) -> StrapPipeline:
        started_ms = int(self.clock() * 1000)
        meta = {
            "strap": {
                "name": info.name,
                "model": info.model,
                "manufacturer": info.manufacturer,
                "firmware": info.firmware,
            },
            "settings": {
                "window_s": self.settings.processing.window_s,
                "baseline_s": self.settings.processing.baseline_s,
            },
        }
        source = f"{self.source}:{info.address}"
        session = await asyncio.to_thread(
            self.store.create_session, info.device_id, started_ms, source, meta
        )
        pipeline = StrapPipeline(
            device_id=info.device_id,
            session_id=session.id,
            started_ms=started_ms,
            settings=self.settings,
            link=self.link,
            writer=self.writer,
            clock=self.clock,
            on_indices=self.on_indices,
        )
        self.pipelines[info.device_id] = pipeline
        pipeline.publish_session("running")
        self.publish_bridge_info()
        log.info("session %s started for %s (%s)", session.id, info.device_id, info.name)
        if self.on_session is not None:
            self.on_session(pipeline, info)
        return pipeline

    async def _close_session(self, pipeline: StrapPipeline) -> None:
        stopped_ms = int(self.clock() * 1000)
        # Shielded: this runs while the task is being cancelled and must complete.
        await asyncio.shield(self._finish(pipeline, stopped_ms))

    async def _finish(self, pipeline: StrapPipeline, stopped_ms: int) -> None:
        await self.writer.flush()
        try:
            await asyncio.to_thread(
                self.store.finish_session, pipeline.session_id, stopped_ms, SessionState.STOPPED
            )
        except SettleError as exc:
            log.error("could not close session %s: %s", pipeline.session_id, exc)
        pipeline.publish_session("stopped", stopped_ms)
        self._availability(pipeline.device_id, False)
        log.info("session %s stopped (%d beats)", pipeline.session_id, pipeline.seq)

    # -- commands -------------------------------------------------------------------------

    async def on_command(self, device_id: str, name: str, payload: bytes, retained: bool) -> None:
        """Handle ``<base>/<device>/cmd/<name>``; every outcome gets a result message."""
        result_topic = f"{self.base}/{device_id}/cmd/{name}/result"
        cmd_id: str | None = None

        def reply(error: str | None) -> None:
            res = CommandResult(
                ts=int(self.clock() * 1000),
                id=cmd_id,
                status="error" if error else "ok",
                error=error,
            )
            self._publish(result_topic, res.to_json(), qos=1)
            if error:
                log.warning("command %s for %s rejected: %s", name, device_id, error)

        if retained and not payload:
            return  # someone clearing a stale retained command: nothing to answer
        raw: object = None
        parsed = False
        if len(payload) <= 16 * MAX_COMMAND_BYTES:  # big enough to echo an oversized one's id
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                raw, parsed = json.loads(payload), True
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            cmd_id = raw["id"][:64]
        if retained:
            # A retained command would replay on every reconnect.
            return reply("retained command ignored (publish commands without the retain flag)")
        if len(payload) > MAX_COMMAND_BYTES:
            return reply(f"command too large ({len(payload)} bytes > {MAX_COMMAND_BYTES})")
        if not parsed:
            return reply("payload is not valid JSON")
        pipeline = self.pipelines.get(device_id)
        if pipeline is None:
            return reply(f"unknown device {device_id!r}")
        if name != "marker":
            return reply(f"unknown command {name!r} (known: marker)")
        try:
            cmd = MarkerCommand.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "payload"
            return reply(f"{loc}: {err['msg']}")
        row = pipeline.marker_row(cmd.kind, cmd.text, "mqtt")
        try:
            await asyncio.to_thread(self.store.add_marker, pipeline.session_id, row)
        except SettleError as exc:
            return reply(f"could not store the marker: {exc}")
        pipeline.publish_event(cmd.kind, row.t_s, cmd.text, "mqtt")
        reply(None)
