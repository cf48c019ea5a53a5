"""``serve()``: build the daemon from settings and run it — shared by ``settle run``,
``settle demo`` and the end-to-end tests (which hook in through ``on_broker``)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import shlex
import signal
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from typing import IO, Any, Literal, cast

from rich.console import Console

from feedback.dashboard import (
    Dashboard,
    DashboardConfig,
    DashboardError,
    DeviceView,
    Hub,
    is_loopback,
    load_or_create_token,
)
from feedback.mqtt import MqttLink
from feedback.payloads import IndicesPayload
from sensors.strap import StrapClient, StrapInfo
from sessions.store import DaemonLock, SessionStore, damaged_store_hint
from settle.broker_options import connect_options
from settle.config import Settings
from settle.console import one_line
from settle.daemon import BrokerChoice, Daemon, StrapRuntime, open_broker
from settle.errors import SensorError, SettleError, StoreError
from settle.pipeline import StrapPipeline

log = logging.getLogger(__name__)

GC_THRESHOLDS = (100_000, 50, 100)
"""Generation thresholds for a long-running daemon (CPython's default is 2000, 10, 10)."""


async def serve(
    settings: Settings,
    *,
    scanner_kwargs: dict[str, Any],
    client_kwargs: dict[str, Any],
    source: str,
    duration: float | None = None,
    finished: list[Coroutine[Any, Any, Any]] | None = None,
    console: Console | None = None,
    on_broker: Callable[[BrokerChoice | None], Awaitable[None]] | None = None,
    handle_signals: bool = True,
    addresses: list[str] | None = None,
    time_scale: float = 1.0,
    gc_thresholds: tuple[int, int, int] | None = GC_THRESHOLDS,
    banner: str | None = None,
    dashboard: DashboardConfig | None = None,
) -> int:
    """Run until ``duration`` seconds passed, every ``finished`` awaitable is done, or a
    stop signal (Ctrl-C, SIGTERM) arrives. Returns the process exit code.

    ``addresses``: one strap per address (several straps, one daemon); default: the strap
    of the config (``[strap] address``, or the first Heart Rate Service strap found).
    ``gc_thresholds``: see :func:`tune_garbage_collector` (None: leave the interpreter's).
    ``banner``: the first console line, printed once this daemon holds the store (a second
    daemon on the same store is refused without announcing itself first).
    ``dashboard``: the dashboard's settings as :func:`dashboard_config` made them (the CLI
    checks them first); default: made here, before anything is opened or printed."""
    output: ConsoleOutput | None = None
    if console is None:
        output = ConsoleOutput(sys.stdout)
        console = output.console = Console(
            file=cast(IO[str], output), highlight=False, soft_wrap=True
        )
    out = console
    s = settings.strap
    clients = [
        StrapClient(
            address=address,
            name=s.name if not addresses else "",
            scan_timeout_s=s.scan_timeout_s,
            connect_timeout_s=s.connect_timeout_s,
            scanner_kwargs=scanner_kwargs,
            client_kwargs=client_kwargs,
        )
        for address in (addresses or [s.address])
    ]
    held = contextlib.ExitStack()  # left after the store is closed (daemon_lock says why)
    lock = DaemonLock(settings.db_path)
    held.callback(lock.release)
    try:
        if settings.http.enabled and dashboard is None:
            # A token file that cannot be used is a config error: said before the banner,
            # not after it as if the daemon had started (it was read only when the
            # dashboard came up).
            dashboard = dashboard_config(settings)
        # One daemon per store, through any name of its file: a store that exists is locked
        # before it is opened. Opened through a second name (a hard link) while another
        # daemon recorded, it was read without that daemon's -wal (which held its schema
        # still: a new store), given a schema in its own -wal, and that -wal overwrote the
        # store later on: every session gone.
        lock.lock_file()
        store = SessionStore.open(settings.db_path)
        damage = store.damage()
        if damage is not None:
            store.close()
            raise StoreError(
                f"{settings.db_path}: the session store is damaged ({damage}); "
                + damaged_store_hint(settings.db_path)
            )
    except BaseException:
        held.close()
        for c in finished or ():
            c.close()  # never awaited: no "coroutine … was never awaited" after the error
        raise
    hub = Hub(settings.mqtt.topic_base)
    devices: dict[str, str] = {}  # session id -> device id, to tell several straps' lines apart
    lost = False  # beats the store would not take when the daemon stopped
    for c in finished or ():
        held.callback(c.close)  # a no-op for one that ran; closes one an early error left
    try:
        # One daemon per store: before anything is published or a session is touched.
        lock.lock()
        if banner is not None:
            out.print(banner, markup=False)
        async with open_broker(settings) as broker, contextlib.AsyncExitStack() as stack:
            link: MqttLink | None = None
            daemon = Daemon(
                settings,
                store,
                clients,
                source=source,
                broker=broker,
                time_scale=time_scale,
                on_session=lambda p, info: _print_session(out, p, info, devices),
                on_indices=lambda p: _print_indices(out, p, devices if len(clients) > 1 else None),
                tap=hub.publish,
            )
            if broker is not None:
                link = attach_link(daemon, settings, broker)
                daemon.watch_home_assistant()
            _print_banner(out, settings, broker)
            if settings.http.enabled and dashboard is not None:
                control = DaemonControl(daemon, scanner_kwargs)
                try:
                    served = await stack.enter_async_context(
                        Dashboard(hub, control, store, dashboard)
                    )
                except DashboardError as exc:
                    # Measuring matters more than the page: say so once and go on — also
                    # when --http asked for it (a port in use is no usage error, and a
                    # practice about to start is not lost to it). In the log too: under the
                    # systemd unit the banner goes nowhere.
                    out.print(f"  http:    off — {exc}", markup=False)
                    log.warning("%s; measuring goes on without the dashboard", exc)
                else:
                    # In the fragment, which no browser sends to any server (nor a proxy
                    # logs); the page takes it from there (docs/dashboard.md, Security).
                    # Escaped: a "+" (base64) read as a space, and the page refused it.
                    tok = served.config.token
                    token = f"#token={urllib.parse.quote(tok, safe='')}" if tok else ""
                    out.print(f"  http:    {served.url}{token}", markup=False)
            if on_broker is not None:
                await on_broker(broker)
            async with link if link is not None else contextlib.nullcontext():
                if handle_signals:
                    _install_stop_signals(daemon.stop)
                quiet_closed_socket_callbacks(asyncio.get_running_loop())
                if gc_thresholds is not None:
                    tune_garbage_collector(gc_thresholds)
                async with asyncio.TaskGroup() as tg:
                    main = tg.create_task(daemon.run(), name="daemon")
                    watchers = []
                    if duration is not None:
                        watchers.append(tg.create_task(_stop_after(duration, daemon)))
                    if finished:
                        watchers.append(tg.create_task(_stop_when_all(finished, daemon)))
                    await main
                    for w in watchers:
                        w.cancel()
            if output is not None and output.failed is not None:
                # The closing lines name the sessions: on stderr, where they can be read.
                out = Console(stderr=True, highlight=False, soft_wrap=True)
            moved = daemon.recovered_store
            if moved is not None:
                out.print(
                    f"The session store file {daemon.recovered_because} while recording: "
                    f"everything it held is recovered into {moved}.",
                    markup=False,
                )
            for p in daemon.finished:
                db_path = moved or settings.db_path
                # Quoted: the hint is a command to copy (`--db var dir/s.db` was two words).
                named = settings.storage.db_path or moved
                db = f" --db {shlex.quote(str(db_path))}" if named else ""
                stored = daemon.writer.stored_by_session.get(p.session_id, 0)
                if p.session_id in daemon.rescued:  # the store failed at the end
                    lost = True
                    saved = daemon.rescued[p.session_id]
                    rest = f"are in {saved}" if saved else "are lost"
                    if p.session_id in daemon.writer.vanished:
                        # Its first beats went with it: "N of M stored" would claim a
                        # session the store no longer has.
                        out.print(
                            f"session {p.session_id}: deleted from the store while recording "
                            f"(its first {stored} beats with it); the {p.seq - stored} later "
                            f"beats {rest}.",
                            markup=False,
                        )
                        continue
                    out.print(
                        f"session {p.session_id}: {stored} of {p.seq} beats stored; the rest "
                        f"{rest} (see the error above).",
                        markup=False,
                    )
                    continue
                # One file name per session: with several straps the same `session.csv`
                # for each made the second command fail with "file exists".
                name = "session.csv" if len(daemon.finished) == 1 else f"{p.session_id}.csv"
                out.print(
                    f"session {p.session_id}: {stored} beat{'' if stored == 1 else 's'} stored. "
                    f"Export: settle export {p.session_id} --format csv --out {name}{db}",
                    markup=False,
                )
    finally:
        store.close()
        held.close()
    return 1 if lost else 0


class ConsoleOutput:
    """The daemon's console output (stdout). When it cannot be written — the reader of a
    pipe went away (`settle demo | head`), a terminal hung up, a full disk — the console
    goes quiet, one WARNING says so, and recording goes on to its normal end: the store
    holds the session, not stdout. (The error ended the daemon at once, exit 1, nothing
    said.)"""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.console: Console | None = None
        self.failed: OSError | None = None

    def write(self, text: str) -> int:
        if self.failed is None:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._stop(exc)
        return len(text)

    def flush(self) -> None:
        if self.failed is None:
            try:
                self._stream.flush()
            except OSError as exc:
                self._stop(exc)

    def _stop(self, exc: OSError) -> None:
        self.failed = exc
        if self.console is not None:
            self.console.quiet = True  # not even formatted from here on
        with contextlib.suppress(OSError, ValueError):
            # What is still buffered, and the interpreter's flush at exit, go nowhere
            # instead of failing again.
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, self._stream.fileno())
            os.close(fd)
        why = "its reader went away" if isinstance(exc, BrokenPipeError) else exc.strerror
        log.warning(
            "console output stopped (stdout: %s); recording goes on until the daemon is stopped",
            why or exc,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def dashboard_config(settings: Settings) -> DashboardConfig:
    """Off loopback (or with ``require_token``) the dashboard needs the token (read, or
    made, in ``[http] token_file``)."""
    h = settings.http
    needs = h.require_token or not is_loopback(h.host)
    token = load_or_create_token(h.token_path()) if needs else None
    return DashboardConfig(host=h.host, port=h.port, token=token, pacer_bpm=h.pacer_bpm)


class DaemonControl:
    """The dashboard's view of the daemon (:class:`feedback.dashboard.Control`)."""

    def __init__(self, daemon: Daemon, scanner_kwargs: dict[str, Any]) -> None:
        self.daemon = daemon
        self.scanner_kwargs = scanner_kwargs

    def devices(self) -> list[DeviceView]:
        return [self._view(rt) for rt in self.daemon.runtimes]

    def _view(self, rt: StrapRuntime) -> DeviceView:
        info = rt.info
        return DeviceView(
            device_id=rt.device_id,
            index=rt.index,
            name=info.name if info else rt.client.name,
            address=info.address if info else rt.client.address,
            state=rt.state,
            battery_pct=info.battery_pct if info else None,
            contact=rt.session.last_contact if rt.session else None,
            session_id=rt.session.session_id if rt.session else None,
            last_error=rt.last_error,
            ecg=rt.device_id is not None and rt.device_id in self.daemon.ecg.recording,
        )

    def mqtt_state(self) -> Literal["off", "connected", "down"]:
        link = self.daemon.link
        if link is None:
            return "off"
        return "connected" if link.connected else "down"

    async def command(self, device_id: str, name: str, payload: bytes) -> None:
        await self.daemon.on_command(device_id, name, payload, False, source="dashboard")

    async def scan(self, timeout_s: float) -> list[dict[str, Any]]:
        from sensors.strap import scan_straps

        try:
            return await scan_straps(timeout_s, self.scanner_kwargs)
        except SensorError as exc:
            raise SettleError(exc.reason) from exc

    def remember(self, label: str, address: str, name: str, device_id: str) -> list[str]:
        from sensors.strap import device_id_for
        from settle.pairing import displaced, displaced_words, remember

        gone = displaced(label, address)
        remember(label, address, name, device_id or device_id_for(name, address))
        return [displaced_words(g, label) for g in gone]


def attach_link(
    daemon: Daemon,
    settings: Settings,
    broker: BrokerChoice,
    link_class: type[MqttLink] = MqttLink,
) -> MqttLink:
    """The daemon's MQTT link as ``[mqtt]`` configures it, commands routed to the daemon.
    ``link_class``: a subclass of :class:`MqttLink` (the soak benchmark counts with one)."""
    link = link_class(
        connect_options(settings, broker),
        topic_base=settings.mqtt.topic_base,
        client_id=settings.mqtt.client_id,
        keepalive_s=settings.mqtt.keepalive_s,
        queue_size=settings.mqtt.queue_size,
        on_command=daemon.on_command,
    )
    link.on_connect = daemon.publish_status_all
    daemon.link = link
    return link


def tune_garbage_collector(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Fewer, cheaper cyclic-garbage collections. With hundreds of straps the default
    thresholds start a full collection of 230–450 k objects every few seconds, each
    stopping the event loop for 115–325 ms — the main cause of beat latency spikes
    (docs/performance.md). Objects built during start-up are frozen out of collection;
    the daemon's own garbage is almost all freed by reference counting anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def quiet_closed_socket_callbacks(loop: asyncio.AbstractEventLoop) -> None:
    """When the broker drops the connection, aiomqtt may already have scheduled
    ``add_writer``/``add_reader`` for the socket paho has just closed: the callback then fails
    with EBADF and asyncio prints a traceback, though nothing is wrong (the link reconnects and
    reports the outage in its own log line). Such callbacks are logged at DEBUG instead;
    everything else goes to the previous handler."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", ""))
        closed_fd = (isinstance(exc, OSError) and exc.errno == errno.EBADF) or (
            isinstance(exc, ValueError) and "file descriptor" in str(exc)
        )
        if closed_fd and ("add_writer" in message or "add_reader" in message):
            log.debug("socket closed before its callback ran: %s", message)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _install_stop_signals(stop: Callable[[], None]) -> None:
    """Ctrl-C / SIGTERM stop cleanly: sessions closed, straps disconnected, broker told.

    So does SIGHUP (the terminal closed, the ssh session dropped), which by default ended the
    process at once, as ``kill -9`` would: the session left ``running``, the last second of
    beats lost. Under ``nohup`` (SIGHUP ignored) it stays ignored and recording goes on."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop)
        loop.add_signal_handler(signal.SIGINT, stop)
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            loop.add_signal_handler(signal.SIGHUP, stop)


def _print_banner(out: Console, settings: Settings, broker: BrokerChoice | None) -> None:
    base = settings.mqtt.topic_base
    if broker is None:
        out.print("  mqtt:    off")
    else:
        kind = "embedded amqtt broker (MQTT 3.1.1)" if broker.embedded else "broker"
        out.print(f"  mqtt:    {kind} on {broker.host}:{broker.port}", markup=False)
        out.print(
            f"  watch:   mosquitto_sub -h {broker.host} -p {broker.port} -t '{base}/#' -v",
            markup=False,
        )
    out.print(f"  store:   {one_line(str(settings.db_path))}", markup=False)
    out.print("  stop:    Ctrl-C (the session is closed and the strap disconnected)")


def _print_session(
    out: Console, p: StrapPipeline, info: StrapInfo, devices: dict[str, str]
) -> None:
    devices[p.session_id] = p.device_id
    out.print(
        f"  session: {p.session_id} — strap {one_line(info.name) or info.address} as device "
        f"{p.device_id}",
        markup=False,
    )


def _print_indices(out: Console, p: IndicesPayload, devices: dict[str, str] | None) -> None:
    """One line per snapshot; with several straps (``devices``) it starts with the strap's
    device id, as the session line names it."""
    if out.quiet:
        return  # formatting costs ~15 % of a core at 500 straps even when nothing is shown

    def f(x: float | None, spec: str) -> str:
        return "  –  " if x is None else format(x, spec)

    if p.warming_up:
        score = "waiting for beats…"
    elif not p.usable:
        score = f"unusable rhythm ({p.reason})" if p.reason else "unusable rhythm"
    elif p.settling is None:
        score = "baseline…"
    else:
        arrow = {"settling": "↑ settling", "unsettling": "↓ unsettling", "steady": "→ steady"}
        score = f"{p.settling:5.1f} {arrow.get(p.trend, '(trend after ~3 min of scores)')}"
    caught = ""
    if p.catching_up_t_s is not None:
        m, s = divmod(int(p.catching_up_t_s), 60)
        caught = f"  caught up at {m}:{s:02d}"
    who = f"  {devices.get(p.session, p.session)}" if devices is not None else ""
    out.print(
        f"{who}  t={p.t_s:6.0f} s  HR {f(p.hr_bpm, '5.1f')} bpm  RMSSD {f(p.rmssd_ms, '5.1f')} ms  "
        f"coherence {f(p.coherence, '4.2f')}  settling {score}{caught}",
        markup=False,
    )


async def _stop_after(seconds: float, daemon: Daemon) -> None:
    await asyncio.sleep(seconds)
    daemon.stop()


async def _stop_when_all(waits: list[Coroutine[Any, Any, Any]], daemon: Daemon) -> None:
    await asyncio.gather(*waits)
    await asyncio.sleep(0.5)  # let the last notification travel through the pipeline
    daemon.stop()
