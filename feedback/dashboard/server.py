"""The dashboard's HTTP server (aiohttp, inside the daemon's event loop).

Pages are one static single-page app (``static/``, no CDN: it must work offline); live data
comes as Server-Sent Events from :class:`~feedback.dashboard.hub.Hub`; commands are POSTed and
run through the daemon's own MQTT command path (:class:`Control`), so a marker pressed here
is stored and published exactly like one sent over MQTT.

The daemon is reached only through the :class:`Control` protocol (the composition root in
``settle/`` implements it), so this package imports nothing of the daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hmac
import html
import itertools
import json
import logging
import math
import mimetypes
import multiprocessing
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from feedback.commands import MAX_ID_CHARS, CommandDecodeError, decode_json
from feedback.dashboard.auth import is_loopback
from feedback.dashboard.hub import Hub
from feedback.dashboard.work import WorkResult, export_files, render_report, summarise_sessions
from feedback.payloads import COMMANDS, MARKER_KINDS
from sessions.export_bids import bids_label
from sessions.exporters import FORMATS
from sessions.files import ExportError
from sessions.store import SessionStore, SessionSummary
from settle.errors import ConfigError, SettleError, shown

__all__ = ["Control", "Dashboard", "DashboardConfig", "DashboardError", "DeviceView"]

log = logging.getLogger(__name__)


class _Quota:
    """At most one log line every ``every_s``; the next one says how many were left out."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._last = -math.inf
        self._quiet = 0

    def take(self, every_s: float) -> str | None:
        """None: stay quiet (counted); else the suffix for the line to log."""
        now = time.monotonic()
        if now - self._last < every_s:
            self._quiet += 1
            return None
        self._last = now
        more = f" ({self._quiet} more since the last one not logged)" if self._quiet else ""
        self._quiet = 0
        return more


_SECRETS = re.compile(r"(token=)[^&;\s]*|(authorization:).*", re.IGNORECASE)
"""A token in a request line (``?token=``, an old ``settle_token=`` cookie) up to the next
``&``, ``;`` or blank (a quote or an escape may be part of it), and an ``Authorization``
header to the end of the text."""


def _redacted(text: str) -> str:
    """``text`` without the token (:data:`_SECRETS`): aiohttp quotes the line it could not
    parse, and ``GET /events?token=… x HTTP/1.1`` put the token in the log."""
    return _SECRETS.sub(lambda m: f"{m[1] or m[2]}…", text)


class _BadRequestLine(logging.Filter):
    """aiohttp logs a request it cannot parse (a duplicate Host header, a control byte in
    the method, a 20 KB header) as an ERROR with a traceback: anyone who can reach the port
    could fill the journal with them. Such a request is the client's fault: one WARNING
    line, no traceback, and at most one every :data:`BAD_REQUEST_EVERY_S` (the next one says
    how many were left out): a scanner sending thousands still costs a few lines. Errors in
    Settle's own handlers keep their traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.quota = _Quota()

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            more = self.quota.take(BAD_REQUEST_EVERY_S)
            if more is None:
                return False
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            why = _redacted(repr(" ".join(str(exc).split()) or type(exc).__name__)[1:-1])
            record.msg, record.args = (
                "dashboard: malformed HTTP request from %s: %s%s",
                (remote, why[:200], more),
            )
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _OutOfFiles(logging.Filter):
    """asyncio's accept loop logs running out of open files as an ERROR with a traceback,
    and retries so often that 1 100 held connections wrote 71 526 lines (37 MB) in ~20 s.
    One line without traceback every :data:`BAD_REQUEST_EVERY_S`, with the count."""

    def __init__(self) -> None:
        super().__init__()
        self.quota = _Quota()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("socket.accept() out of system resource"):
            return True
        more = self.quota.take(BAD_REQUEST_EVERY_S)
        if more is None:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        record.msg, record.args = (
            "cannot accept connections: %s (open files: at most %s)%s",
            (why, _open_files_limit(), more),
        )
        record.exc_info, record.exc_text = None, None
        return True


BAD_REQUEST_EVERY_S = 10.0
"""At most one malformed-request warning (or out-of-files error, or refused connection) this
often, s."""


_BAD_REQUEST_LINE = _BadRequestLine()
_OUT_OF_FILES = _OutOfFiles()

HEADER_TIMEOUT_S = 5.0
"""A connection must send a whole request head (line and headers) this soon after it opens
or after its previous answer, else it is closed: aiohttp waits for ever, and a half-sent
request held a connection, an open file, for as long as the client liked (≥ 200 s seen)."""
MAX_CONNECTIONS = 256
"""Open connections at most (a quarter of the open-files limit if that is lower); the next
is answered 503 and closed, and beyond twice as many (refused ones included) a connection is
closed at once without an answer. 1 100 held connections used up the usual soft limit of
1 024 open files: nothing could connect any more."""
MAX_STREAMS = 32
"""Live pages (``/events`` streams) at most; the next is answered 503."""
STREAM_STALL_S = 30.0
"""A live page's stream that takes nothing for this long is closed, and its place among the
:data:`MAX_STREAMS` freed: a write to it not done within this time (its socket full: a
frozen tab, a phone asleep on Wi-Fi, a process that connects and never reads), and on Linux
data of it unacknowledged, or its receive window shut, for as long (``TCP_USER_TIMEOUT``).
32 such streams held every place for ever: each new page got "too many live pages open"."""
REFUSED_LINGER_S = 1.0
"""A refused connection is closed this long after its 503 (or when the client closes): at
once, the client's unread request turned the close into a reset that lost the 503."""

STATIC = Path(__file__).parent / "static"
PAGES = ("live", "control", "pair", "history")
HISTORY_BATCH_BEATS = 20_000
"""The History analysis runs in batches of about this many beats (~0.4 s in the worker; a
20-minute session holds ~1 400), newest session first."""
BACKLOG_CHUNK = 256
"""Backlog messages a new page gets per write (the event loop runs between writes: 5 000
messages in one go held it 32 ms on a quiet loopback, in chunks at most 5 ms)."""
HEARTBEAT_S = 1.0
"""A ``health`` event this often: connection states, and proof to the page that the daemon
is alive (a page that hears nothing for 5 s says so)."""
COOKIE = "settle_token"
"""The cookie that earlier versions kept the token in: deleted wherever it is still sent (a
browser sent it to every server on the host, whatever its port)."""
MAX_BODY = 4096

mimetypes.add_type("text/javascript", ".js")  # some systems map .js to text/plain

MqttState = Literal["off", "connected", "down"]


def _user_timeout(transport: asyncio.BaseTransport | None, seconds: float) -> None:
    """``TCP_USER_TIMEOUT`` on ``transport``'s socket (Linux): the kernel drops the connection
    once data sent on it has gone unacknowledged, or the peer's receive window has stayed
    shut (Linux 5.11 or later), for ``seconds`` — a peer that has stopped reading is noticed
    although its writes still fit the socket's megabytes of buffer (a page's heartbeats would
    take hours to fill it). Elsewhere, or if the option is refused, nothing."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if option is None or sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, round(seconds * 1000)))


def _open_files_limit() -> int | None:
    """The process's soft limit of open files, None if unlimited or not to be read."""
    if sys.platform == "win32":
        return None
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _raise_open_files_limit() -> None:
    """Soft limit of open files up to the hard one: systemd user services get 1 024 (hard
    often 524 288), which a page or two and a few hundred stray connections use up."""
    if sys.platform == "win32":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit cannot be the soft one (Linux: nr_open; macOS: OPEN_MAX).
    for want in (hard, 1 << 20, 10240):
        if want == resource.RLIM_INFINITY or (soft != resource.RLIM_INFINITY and want <= soft):
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            continue
        log.debug("open files: soft limit %s -> %s", soft, want)
        return


class _Refused(asyncio.Protocol):
    """A connection beyond :data:`MAX_CONNECTIONS`: a 503, then closed."""

    BODY = json.dumps(
        {"v": 1, "status": "error", "error": "too many connections to the dashboard; try again"}
    ).encode()

    def __init__(self, open_: set[asyncio.Transport]) -> None:
        self._open = open_
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = t = cast(asyncio.Transport, transport)
        self._open.add(t)
        try:
            t.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Retry-After: 5\r\nConnection: close\r\nContent-Length: "
                + str(len(self.BODY)).encode()
                + b"\r\n\r\n"
                + self.BODY
            )
            if t.can_write_eof() and not t.is_closing():
                t.write_eof()
        except OSError:
            # The client left before its answer (a port scanner, an impatient client):
            # shutdown() said ENOTCONN, and asyncio logged a traceback per connection, 1 266
            # lines for two bursts of 3 000, past the refusals' one line every 10 s.
            t.abort()
            return
        asyncio.get_running_loop().call_later(REFUSED_LINGER_S, t.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is read and dropped, so closing does not reset the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(cast(asyncio.Transport, self._transport))


class _Dropped(asyncio.Protocol):
    """A connection beyond twice :data:`MAX_CONNECTIONS`: closed at once (a reset), without
    an answer. Each refused one holds its open file up to :data:`REFUSED_LINGER_S`: in a
    flood 400-500 were held at once, and two bursts of 3 000 connections under the usual
    1 024 open files left none ("cannot accept connections: Too many open files")."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()


class DashboardError(SettleError):
    """The dashboard cannot listen on ``host``:``port``; ``reason`` says why."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host, self.port, self.reason = host, port, reason
        super().__init__(f"dashboard: cannot listen on {host}:{port}: {reason}")


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One strap as the dashboard shows it."""

    device_id: str | None
    index: int
    name: str
    address: str
    state: str
    """scanning, connecting, streaming, backoff, stopped."""
    battery_pct: int | None
    contact: bool | None
    session_id: str | None
    last_error: str | None
    ecg: bool = False
    """Its raw ECG (Polar PMD) is being recorded now."""


class Control(Protocol):
    """What the dashboard may ask of the daemon."""

    def devices(self) -> list[DeviceView]: ...

    def mqtt_state(self) -> MqttState: ...

    async def command(self, device_id: str, name: str, payload: bytes) -> None:
        """Run ``name`` exactly as if it came over MQTT; the result goes through the hub."""

    async def scan(self, timeout_s: float) -> list[dict[str, Any]]:
        """Heart Rate Service straps in range (name, address, rssi, device_id)."""

    def remember(self, label: str, address: str, name: str, device_id: str) -> list[str]:
        """Pair: remember the strap for ``settle run``; returns one sentence per entry it
        replaced (the label meant another strap, or the strap had another label)."""


class NoDaemon:
    """A :class:`Control` with no daemon behind it: no strap, MQTT off, commands taken and
    never answered (the route then says "the daemon gave no result"), a scan finds nothing,
    a pairing replaces nothing. For serving the dashboard alone — tests, benchmarks — with
    a hub fed by hand; subclass it to stand in for one part of the daemon."""

    def devices(self) -> list[DeviceView]:
        return []

    def mqtt_state(self) -> MqttState:
        return "off"

    async def command(self, device_id: str, name: str, payload: bytes) -> None:
        return None

    async def scan(self, timeout_s: float) -> list[dict[str, Any]]:
        return []

    def remember(self, label: str, address: str, name: str, device_id: str) -> list[str]:
        return []


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    """0: a free port (tests)."""
    token: str | None = None
    """Required for every stream, API call, report and export when set (always set off
    loopback); pages and their static files hold no data and are served without it."""
    pacer_bpm: float = 6.0
    """Default rate of the breathing pacer, breaths/min (4–7)."""


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"v": 1, "status": "error", "error": message}, status)


async def _static_or_404(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], request: web.Request
) -> web.StreamResponse:
    """aiohttp's static files, where a name the OS refuses (longer than it takes) is not
    there either: it was a 500 and a traceback per request, past the log's rate limit."""
    try:
        return await handler(request)
    except OSError:
        return _error(404, "no such file")


_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a session id can be (``YYYYMMDDTHHMMSS-xxxx``; any id of this shape is looked up)."""
_NOT_IN_A_TOPIC = re.compile("[+#\x00]")
_PAIR_FIELDS = {"label", "address", "name", "device_id"}
_PAIR_SHAPE = "{label, address, name, device_id}"
"""What no device id holds: MQTT wildcards and NUL (as the daemon's own check)."""


def _bearer(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case, as
    HTTP has it: ``bearer`` was refused; a bare token is taken as before)."""
    scheme, _, value = authorization.strip().partition(" ")
    if not value:
        return scheme
    return value.strip() if scheme.lower() == "bearer" else ""


def _not_finite(value: object, where: str = "") -> str | None:
    """Where in ``value`` (``x``, ``a[2].b``) the first number that is not finite is: a
    number too large for a float (``1e999``) reads as infinity, which JSON has no way to
    write on to the daemon (it answered nothing: a 500 "the daemon gave no result").
    Nesting is bounded by the decoder (:data:`~feedback.commands.MAX_COMMAND_DEPTH`)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    items: Any = ()
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    for at, v in items:
        found = _not_finite(v, at)
        if found is not None:
            return found
    return None


class _BadBody(ValueError):
    """The body could not be read as sent: its Content-Encoding does not decode it."""


_CODINGS = {"identity": 0, "gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
            "deflate": zlib.MAX_WBITS}  # fmt: skip
"""Content-Encodings a body may come in, with their zlib ``wbits``."""


def _decoded(raw: bytes, coding: str) -> bytes:
    """``raw`` decoded as its Content-Encoding says, at most :data:`MAX_BODY` bytes once
    decoded (a 4 KiB gzip can hold megabytes). Decoded here, not by aiohttp: it refused a
    coding it has no decoder for (``br`` without Brotli) in plain text, before any route."""
    coding = coding.strip().lower() or "identity"
    wbits = _CODINGS.get(coding)
    if wbits is None:
        raise _BadBody(f"Content-Encoding {coding!r} is not taken (identity, gzip or deflate)")
    if not wbits:
        return raw
    tries = (wbits, -zlib.MAX_WBITS) if coding == "deflate" else (wbits,)  # raw deflate too
    for i, bits in enumerate(tries):
        d = zlib.decompressobj(bits)
        try:
            out = d.decompress(raw, MAX_BODY + 1)
        except zlib.error as exc:
            if i + 1 < len(tries):
                continue
            raise _BadBody(f"not {coding}: {exc}") from None
        if len(out) > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(out))
        if not d.eof:
            raise _BadBody(f"{coding} data cut short")
        if d.unused_data:
            # A second gzip member, or anything else after the end: it was dropped silently.
            raise _BadBody(f"{len(d.unused_data)} bytes after the end of the {coding} data")
        return out
    raise AssertionError("unreachable")


async def _body(request: web.Request) -> bytes:
    """The request's body, sent within :data:`HEADER_TIMEOUT_S` (a body sent a byte at a
    time held the connection as a half-sent head did), decoded (:func:`_decoded`).
    :class:`_BadBody` if it does not decode as its Content-Encoding says (``gzip`` on a
    plain body was a 500 and two tracebacks per request)."""
    async with asyncio.timeout(HEADER_TIMEOUT_S):
        try:
            raw = await request.read()
        except RequestPayloadError as exc:
            # Marked read to its end, or aiohttp reads the rest after the answer (to keep the
            # connection), meets the same error again and logs it as a traceback.
            request.content.feed_eof()
            raise _BadBody(str(exc).partition(", message:")[2].strip() or "undecodable") from None
    # Every Content-Encoding header: two (a stack, as "gzip, gzip" in one) are refused as
    # a coding not taken; only the first was read, and the body decoded once.
    return _decoded(raw, ", ".join(request.headers.getall("Content-Encoding", [])))


async def _read_body(request: web.Request, what: str) -> bytes | web.Response:
    """:func:`_body`, or the JSON error to answer with (too slow, too large, undecodable)."""
    try:
        return await _body(request)
    except TimeoutError:
        return _error(408, f"request body not sent within {HEADER_TIMEOUT_S:g} s")
    except web.HTTPRequestEntityTooLarge:
        # As every other refusal, JSON (aiohttp's own answer is a line of plain text).
        return _error(413, f"request too large: {what} takes at most {MAX_BODY} bytes")
    except _BadBody as exc:
        response = _error(400, f"request body: {exc}")
        response.force_close()  # what follows on the connection cannot be trusted
        return response


class Dashboard:
    """``async with Dashboard(...) as d:`` serves on ``d.url`` until the block ends."""

    def __init__(
        self, hub: Hub, control: Control, store: SessionStore, config: DashboardConfig
    ) -> None:
        self.hub = hub
        self.control = control
        self.store = store
        self.config = config
        self.port = config.port
        self._runner: web.AppRunner | None = None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        """The worker process for reports and exports (see :mod:`feedback.dashboard.work`)."""
        self._summaries: dict[str, tuple[tuple[object, ...], dict[str, Any]]] = {}
        """History rows of finished sessions with the revision they were analysed at."""
        self._queue: dict[str, tuple[tuple[object, ...], int, float]] = {}
        """Finished sessions still to analyse for History, newest first: revision, beats and
        session seconds (``duration_s``) as listed."""
        self._analyser: asyncio.Task[None] | None = None
        """The one background task analysing :attr:`_queue`."""
        self._analysis_error: str | None = None
        """Why the last background analysis stopped, if it failed (one line)."""
        self._streams = 0
        """Live pages being served (``/events``)."""
        self._closing = asyncio.Event()
        self._listener: asyncio.Server | None = None
        self._waiting: dict[web.RequestHandler, asyncio.TimerHandle] = {}
        """Connections that have not sent a whole request yet, with their deadline."""
        self._refused: set[asyncio.Transport] = set()
        self._accepting = 0
        """Connections taken by :meth:`_accept` whose ``connection_made`` has not run yet."""
        self._refusals = _Quota()
        self._stalls = _Quota()
        self._max_connections = MAX_CONNECTIONS
        self._scanning = False
        """One scan at a time (the daemon has one Bluetooth adapter)."""

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        app.on_response_prepare.append(self._secure_headers)
        r = app.router
        r.add_get("/", self._page)
        for page in PAGES:
            r.add_get(f"/{page}", self._page)
        r.add_get("/history/{sid}", self._page)
        r.add_get("/events", self._events, allow_head=False)  # HEAD streamed a body
        r.add_get("/api/state", self._state)
        r.add_post("/api/cmd/{device}/{name:.+}", self._command)
        r.add_post("/api/scan", self._scan)
        r.add_post("/api/pair", self._pair)
        r.add_get("/api/sessions", self._sessions)
        r.add_get("/sessions/{sid}/report", self._report)
        r.add_get("/sessions/{sid}/export/{fmt}", self._export)
        r.add_static("/static/", STATIC, follow_symlinks=False)
        return app

    async def __aenter__(self) -> Dashboard:
        for name, quiet in (("aiohttp.server", _BAD_REQUEST_LINE), ("asyncio", _OUT_OF_FILES)):
            logger = logging.getLogger(name)
            if quiet not in logger.filters:
                logger.addFilter(quiet)
            quiet.quota.reset()
        _raise_open_files_limit()
        # A hard limit below 1 024 (a container) lowers the cap: the daemon needs files too.
        files = _open_files_limit()
        self._max_connections = (
            min(MAX_CONNECTIONS, max(16, files // 4)) if files else MAX_CONNECTIONS
        )
        # keepalive_timeout: an idle connection gets as long for its next request as a new
        # one gets for its first (aiohttp's default is an hour). auto_decompress: bodies are
        # decoded by _body, which answers a coding it does not take in JSON.
        self._runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=HEADER_TIMEOUT_S,
            auto_decompress=False,
        )
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        try:
            # Not web.TCPSite: each connection goes through _accept (limits and deadline).
            self._listener = await loop.create_server(
                self._accept, self.config.host, self.config.port
            )
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            c = self.config
            raise DashboardError(c.host, c.port, exc.strerror or str(exc)) from exc
        if self._listener.sockets:
            self.port = int(self._listener.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()  # ends every SSE stream, so cleanup does not wait for them
        if self._listener is not None:
            self._listener.close()
        for t in self._refused:
            t.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None
        if (analyser := self._analyser) is not None:
            # Its batch in the worker is not interrupted: shutdown below waits for it.
            analyser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await analyser
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)
            self._pool = None

    def _accept(self) -> asyncio.Protocol:
        """A new connection: served, with :data:`HEADER_TIMEOUT_S` to send its request, or
        beyond :data:`MAX_CONNECTIONS` answered 503 and closed (not left unaccepted: a
        legitimate page would wait behind the flood), or beyond twice that closed at once.

        Counted here: a connection joins ``server.connections`` (or :attr:`_refused`) only
        when its ``connection_made`` runs, after asyncio has accepted the whole burst (up
        to 100 at a time), so a burst saw the same count throughout and overshot the cap
        (272-275 served of 256). :attr:`_accepting` counts those taken here and not yet
        made: its decrement, scheduled now, runs just before their ``connection_made``
        (which the transport schedules right after this returns)."""
        assert self._runner is not None and self._runner.server is not None
        server = self._runner.server
        loop = asyncio.get_running_loop()
        open_ = len(server.connections) + len(self._refused) + self._accepting
        protocol: asyncio.Protocol
        if open_ < self._max_connections:
            handler = server()
            self._waiting[handler] = loop.call_later(HEADER_TIMEOUT_S, self._too_slow, handler)
            protocol = handler
        else:
            more = self._refusals.take(BAD_REQUEST_EVERY_S)
            if more is not None:
                log.warning(
                    "dashboard: connection refused: %d open, at most %d%s",
                    open_,
                    self._max_connections,
                    more,
                )
            if open_ >= 2 * self._max_connections:
                return _Dropped()  # never counted: closed as soon as it is made
            protocol = _Refused(self._refused)
        self._accepting += 1
        loop.call_soon(self._accepted)
        return protocol

    def _accepted(self) -> None:
        self._accepting -= 1

    def _too_slow(self, handler: web.RequestHandler) -> None:
        if self._waiting.pop(handler, None) is not None:
            handler.force_close()  # no-op for a connection already closed

    # -- access ----------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        deadline = self._waiting.pop(request.protocol, None)
        if deadline is not None:
            deadline.cancel()  # its request is complete (aiohttp's keep-alive timer follows)
        try:
            return await self._checked(request, handler)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
            if not request.path.startswith("/api/"):
                raise  # a page: aiohttp's own answer
            # A script gets JSON as from every other API answer (it got aiohttp's plain
            # "404: Not Found" and failed to parse it).
            if isinstance(exc, web.HTTPMethodNotAllowed):
                allowed = ", ".join(sorted(exc.allowed_methods))
                res = _error(405, f"{request.method} is not allowed here (allowed: {allowed})")
                res.headers["Allow"] = allowed
                return res
            return _error(404, f"no API route {shown(request.path)}")

    @staticmethod
    async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
        """On every response as it is sent, the event stream's too."""
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            # The report, fetched by the page with the token, is framed from a blob: address.
            "frame-src 'self' blob:; "
            "frame-ancestors 'self'",  # no other site may frame /control (clickjacking)
        )
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # No address of ours, with or without a token, goes anywhere in a Referer.
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.path.startswith("/static/"):
            # Asked again each time (a 304 while unchanged, by its ETag): from the cache, an
            # upgraded daemon's page could run the old app.js.
            response.headers.setdefault("Cache-Control", "no-cache")
        else:
            # Everything else holds session data or may (a report, an export, an error
            # naming a session) and is kept in no cache: a report and an export had no
            # Cache-Control, and Chromium kept them in the profile's disk cache.
            response.headers.setdefault("Cache-Control", "no-store")
        if COOKIE in request.cookies:
            # An earlier version's token cookie: the browser would go on sending it to
            # every server on this host.
            # (As a header: the response's cookies are already in its headers here.)
            response.headers.add("Set-Cookie", f"{COOKIE}=; Max-Age=0; Path=/")

    async def _checked(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        host = (request.host or "").rsplit(":", 1)[0].strip("[]")
        if is_loopback(self.config.host) and not is_loopback(host):
            # DNS rebinding: a web page elsewhere must not reach a loopback-only dashboard.
            return _error(403, "unexpected Host header")
        page = request.method == "GET" and request.match_info.handler == self._page
        if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site") and not (
            page and request.headers.get("Sec-Fetch-Mode") == "navigate"
        ):
            # Another site's (or another port's) page may link to ours, nothing more: a GET
            # fetched without CORS still runs (it started a Bluetooth scan, or the worker).
            return _error(403, "cross-site request refused")
        token = self.config.token
        # Pages and their scripts are the same for everyone (nothing of a session is in
        # them): served without the token, which the page itself then sends with each of
        # its requests (see docs/dashboard.md). It was kept in a cookie, which the browser
        # sent to every server on the host whatever its port (cookies are not kept apart by
        # port): any account on the machine could listen on a port and read it.
        static = isinstance(request.match_info.route.resource, web.StaticResource)
        public = static or request.match_info.handler == self._page
        if token is not None and not public:
            # Either will do: a stale ?token= (a page opened with an old address) beside
            # the right header was a 401, the query being the only one looked at.
            given = (request.query.get("token"), _bearer(request.headers.get("Authorization", "")))
            # As bytes: compare_digest raises TypeError for a non-ASCII str (a 500 and a
            # traceback for `?token=é`); a header's bytes that are no UTF-8 arrive as lone
            # surrogates, which only surrogateescape encodes (they raised too).
            matches = [
                hmac.compare_digest(g.encode("utf-8", "surrogateescape"), token.encode())
                for g in given
                if g
            ]
            if not any(matches):
                return _error(401, "token required: open the URL printed at start-up")
        if request.method == "POST" and request.headers.get("X-Settle") != "1":
            # A custom header cannot be sent cross-site without a CORS preflight we never allow.
            return _error(403, "missing X-Settle header")
        if static:
            handler = functools.partial(_static_or_404, handler)
        return await handler(request)

    # -- pages and live data ----------------------------------------------------------------

    async def _page(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    def _state_body(self) -> dict[str, Any]:
        return {
            "v": 1,
            "ts": int(time.time() * 1000),
            "mqtt": self.control.mqtt_state(),
            "devices": [asdict(d) for d in self.control.devices()],
            "pacer_bpm": self.config.pacer_bpm,
            "marker_kinds": list(MARKER_KINDS),
            "formats": list(FORMATS),
        }

    async def _state(self, _request: web.Request) -> web.StreamResponse:
        return _json(self._state_body())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                "X-Content-Type-Options": "nosniff",
            }
        )
        # The strap the page shows: its backlog only (every strap's, without it). 100 straps'
        # backlogs were 120 000 messages, 3.6 s, to every page opened, whatever it showed.
        device = request.query.get("device") or None
        if device is not None and (_NOT_IN_A_TOPIC.search(device) or "/" in device):
            return _error(400, f"unknown device {shown(device)}")
        if self._streams >= MAX_STREAMS:
            return _error(503, f"too many live pages open ({MAX_STREAMS}): close one")
        self._streams += 1
        try:
            return await self._stream(request, resp, device)
        finally:
            self._streams -= 1

    async def _stream(
        self, request: web.Request, resp: web.StreamResponse, device: str | None
    ) -> web.StreamResponse:
        await resp.prepare(request)
        stall_s = STREAM_STALL_S
        _user_timeout(request.transport, stall_s)

        async def send(data: bytes) -> None:
            async with asyncio.timeout(stall_s):
                await resp.write(data)

        with self.hub.subscribe() as sub:
            # Taken with the subscription: nothing twice. A reconnecting page (EventSource
            # sends the last id it got) gets only what it missed; so does a page that opens
            # a new stream itself (after a refused reconnect), naming it in ?last=.
            last = request.headers.get("Last-Event-ID") or request.query.get("last")
            backlog = self.hub.replay(last, device)
            try:
                await send(b"retry: 1000\n\n")
                # In chunks, merged as they go, letting the loop run between them: written in
                # one go (a write per message, which rarely waits) a (re)connecting page held
                # up the event loop — live beats — for 100-180 ms in the soak.
                while chunk := list(itertools.islice(backlog, BACKLOG_CHUNK)):
                    await send(b"".join(m.sse() for m in chunk))
                    await asyncio.sleep(0)
                next_health = 0.0
                while not self._closing.is_set():
                    now = time.monotonic()
                    if now >= next_health:
                        next_health = now + HEARTBEAT_S
                        health = json.dumps({**self._state_body(), "dropped": sub.dropped})
                        await send(f"event: health\ndata: {health}\n\n".encode())
                    m = await sub.get(max(0.0, next_health - time.monotonic()))
                    if m is not None:
                        await send(b"".join([m.sse(), *(x.sse() for x in sub.take())]))
            except ConnectionError:
                # The page went away (a drain it interrupted says ConnectionError, not
                # ConnectionResetError): the stream ends here, nothing else to clean up.
                pass
            except TimeoutError:
                # The page takes nothing: closed, so that its place serves another page (the
                # browser of a page only frozen or asleep reconnects when it wakes).
                if request.transport is not None:
                    request.transport.abort()
                more = self._stalls.take(BAD_REQUEST_EVERY_S)
                if more is not None:
                    log.info(
                        "dashboard: closed a live page that took nothing for %g s%s",
                        stall_s,
                        more,
                    )
        return resp

    # -- commands ---------------------------------------------------------------------------

    async def _command(self, request: web.Request) -> web.StreamResponse:
        device, name = request.match_info["device"], request.match_info["name"]
        if name not in COMMANDS:
            return _error(404, f"unknown command {shown(name)} (known: {', '.join(COMMANDS)})")
        if _NOT_IN_A_TOPIC.search(device):
            # No device is named so (the daemon ignores it: no topic to answer on), and the
            # missing result read "the daemon gave no result", a 500.
            return _error(400, f"unknown device {shown(device)}")
        body = await _read_body(request, "a command")
        if isinstance(body, web.Response):
            return body
        try:
            # A repeated key is refused, as over MQTT (json.loads would keep the last value).
            raw = decode_json(body or b"{}", unique_keys=True)
        except CommandDecodeError as exc:  # not JSON, or nested deep enough to crash json.loads
            return _error(400, str(exc))
        if not isinstance(raw, dict):
            return _error(400, "payload must be a JSON object")
        if (where := _not_finite(raw)) is not None:
            return _error(400, f"number out of range at {shown(where)} (at most about 1.8e308)")
        raw.setdefault("v", 1)
        cmd_id = raw.setdefault("id", f"http-{secrets.token_hex(6)}")
        if not isinstance(cmd_id, str):
            return _error(400, "id: must be a string")
        if len(cmd_id) > MAX_ID_CHARS:
            # Refused here in the daemon's words: its result echoes the id cut to 64
            # characters, and this route looked for the cut one, so a back end that echoed
            # the id whole was a 500 "the daemon gave no result".
            return _error(400, f"id: String should have at most {MAX_ID_CHARS} characters")
        # UTF-8, as the CLI sends: ASCII escapes made a Cyrillic letter 6 bytes of the 4 KiB.
        await self.control.command(device, name, json.dumps(raw, ensure_ascii=False).encode())
        result = self.hub.results.pop(cmd_id, None)
        if result is None:
            return _error(500, "the daemon gave no result")
        ok = json.loads(result).get("status") == "ok"
        return web.Response(text=result, status=200 if ok else 400, content_type="application/json")

    async def _scan(self, request: web.Request) -> web.StreamResponse:
        try:
            timeout_s = float(request.query.get("timeout", "3"))
        except ValueError:
            timeout_s = math.nan
        if not math.isfinite(timeout_s):  # NaN passed the clamp: a scan of no time at all
            return _error(400, "timeout: expected seconds")
        timeout_s = min(max(timeout_s, 0.5), 30.0)
        if self._scanning:
            return _error(409, "a scan is already running: wait for its result")
        self._scanning = True
        try:
            found = await self.control.scan(timeout_s)
        except SettleError as exc:
            return _error(503, str(exc))
        finally:
            self._scanning = False
        return _json({"v": 1, "straps": found, "devices": self._state_body()["devices"]})

    async def _pair(self, request: web.Request) -> web.StreamResponse:
        body = await _read_body(request, "a pairing")
        if isinstance(body, web.Response):
            return body
        try:
            # Keys given twice or misspelt were taken silently (the last "label" won; an
            # "adress" read as a missing address, a "nmae" as no name at all).
            raw = decode_json(body, unique_keys=True)
        except CommandDecodeError as exc:
            return _error(400, str(exc))
        unknown = sorted(set(raw) - _PAIR_FIELDS) if isinstance(raw, dict) else []
        if unknown:
            return _error(400, f"unknown field {shown(unknown[0])} (expected {_PAIR_SHAPE})")
        try:
            fields = [raw["label"], raw["address"], raw.get("name", ""), raw.get("device_id", "")]
        except (KeyError, TypeError, AttributeError):
            return _error(400, f"expected {_PAIR_SHAPE}")
        if not all(isinstance(f, str) for f in fields):
            # str() made {"x": 1} a label and null a name "None" (device id none_…), saved
            # over a good entry of that label or strap.
            return _error(400, "label, address, name and device_id must be strings")
        label, address, name, device_id = fields[0].strip(), fields[1].strip(), *fields[2:]
        if not label or not address:
            return _error(400, "label and address must not be empty")
        try:
            notes = await asyncio.to_thread(self.control.remember, label, address, name, device_id)
        except ConfigError as exc:  # a bad label, address or id: the request's fault
            return _error(400, str(exc))
        except SettleError as exc:
            return _error(500, str(exc))
        return _json({"v": 1, "status": "ok", "replaced": notes})

    # -- history ------------------------------------------------------------------------------

    def _listing(self) -> list[tuple[SessionSummary, tuple[object, ...]]]:
        """Every session, newest first, with its revision (what `settle log set` / `log
        import` change afterwards: baseline, markers, intention)."""
        return [(s, self.store.revision(s.id)) for s in reversed(self.store.list_sessions())]

    async def _sessions(self, _request: web.Request) -> web.StreamResponse:
        try:
            listing = await asyncio.to_thread(self._listing)
        except SettleError as exc:
            return _error(500, str(exc))
        # A finished session's row needs its analysis (as `settle report`), made in the worker
        # process and cached until its revision changes; a running one's is what the store
        # says. The list answers at once: a finished session not analysed yet is listed with
        # what the listing says and ``"pending": true``, and is analysed in the background,
        # newest first (after a restart, all 1 000 sessions in one go held the page ~30 s).
        self._summaries = {
            s.id: self._summaries[s.id] for s, _rev in listing if s.id in self._summaries
        }  # a deleted session's row goes
        sessions: list[dict[str, Any]] = []
        todo: dict[str, tuple[tuple[object, ...], int, float]] = {}
        for summary, rev in listing:
            cheap = {"id": summary.id, "device_id": summary.device_id,
                     "started_ms": summary.started_ms, "stopped_ms": summary.stopped_ms,
                     "state": summary.state.value, "n_beats": summary.n_beats,
                     "duration_s": summary.duration_s}  # fmt: skip
            if summary.state.value == "running":
                sessions.append({**cheap, "stopped_ms": None})
                continue
            cached = self._summaries.get(summary.id)
            if cached is not None and cached[0] == rev:
                sessions.append(cached[1])
                continue
            todo[summary.id] = (rev, summary.n_beats, summary.duration_s)
            sessions.append({**cheap, "pending": True})
        failed = self._analysis_error if todo else None  # the last try's, before the next
        self._analyse(todo)
        return _json(
            {
                "v": 1,
                "sessions": sessions,
                "formats": list(FORMATS),
                "pending": len(todo),
                "analysis_error": failed,
            }
        )

    def _analyse(self, todo: dict[str, tuple[tuple[object, ...], int, float]]) -> None:
        """Analyse ``todo`` (id: revision, beats and session seconds; newest first) in the
        background. One task at a time, which takes the latest request's list at each batch:
        a session edited meanwhile is queued again with its new revision, a deleted one is
        gone."""
        self._queue = todo
        if todo:
            self._analysis_error = None  # tried again
        if todo and self._analyser is None and not self._closing.is_set():
            self._analyser = asyncio.create_task(self._analyse_queue(), name="history analysis")

    async def _analyse_queue(self) -> None:
        try:
            while self._queue and not self._closing.is_set():
                # Batches of about HISTORY_BATCH_BEATS beats (at least one session): a report
                # or an export asked for meanwhile waits for one batch in the worker, not for
                # the whole store.
                batch: dict[str, tuple[object, ...]] = {}
                durations: dict[str, float] = {}
                beats = 0
                for sid, (rev, n_beats, duration_s) in self._queue.items():
                    if batch and beats + n_beats > HISTORY_BATCH_BEATS:
                        break
                    batch[sid], durations[sid] = rev, duration_s
                    beats += n_beats
                try:
                    status, text = await self._work(summarise_sessions, json.dumps(durations))
                except Exception as exc:  # the worker died, or a bug: no task dies unseen
                    log.exception("dashboard: history analysis failed")
                    status, text = "error", f"the analysis failed: {exc or type(exc).__name__}"
                else:
                    if status == "error":
                        log.warning("dashboard: history analysis failed: %s", text)
                if status == "error":
                    # Shown by the next request's list (which tries again); the rows stay pending.
                    self._analysis_error = text
                    self._queue = {}
                    return
                rows = json.loads(text)
                for sid, rev in batch.items():
                    if sid in rows:  # else deleted meanwhile
                        self._summaries[sid] = (rev, rows[sid])
                    queued = self._queue.get(sid)
                    if queued is not None and queued[0] == rev:
                        del self._queue[sid]
        finally:
            self._analyser = None

    async def _work(self, fn: Callable[..., WorkResult], *args: str) -> WorkResult:
        """Run ``fn`` in the dashboard's worker process (started on first use): a report or
        an export must not hold the daemon's interpreter while beats arrive.

        A worker that died (the OOM killer on a small board, a crash in a native library)
        breaks its pool for good: every report, export and History analysis after it failed
        until the daemon was restarted. The broken pool is dropped and the call tried once
        in a new worker."""
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn")
                )
            pool = self._pool
            try:
                return await loop.run_in_executor(pool, fn, str(self.store.path), *args)
            except BrokenProcessPool:
                log.warning("dashboard: the worker process died; starting a new one")
                if self._pool is pool:
                    self._pool = None
                    pool.shutdown(wait=False, cancel_futures=True)
                if attempt == 2 or self._closing.is_set():
                    raise
        raise AssertionError("unreachable")

    async def _report(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["sid"]
        status, text = (
            await self._work(render_report, sid)
            if _SESSION_ID.fullmatch(sid)
            # Not an id (".." answered with a temporary folder's path in the message).
            else ("error", f"no session {shown(sid)}")
        )
        if status == "error":
            # Shown in the history page's frame: a sentence, not a JSON document.
            page = (
                '<!doctype html><meta charset="utf-8"><title>No report</title>'
                f'<p style="font: 16px system-ui, sans-serif">{html.escape(text)}</p>'
            )
            return web.Response(text=page, status=404, content_type="text/html")
        return web.Response(text=text, content_type="text/html")

    async def _export(self, request: web.Request) -> web.StreamResponse:
        sid, fmt = request.match_info["sid"], request.match_info["fmt"]
        if fmt not in FORMATS:
            return _error(404, f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
        subject = request.query.get("subject")
        if subject is not None:
            # As the CLI's --subject: BIDS only, letters and digits (each strap's person
            # under their own sub-<label>, not all of them under sub-01).
            if fmt != "bids":
                return _error(400, f"subject applies to the bids export only (not {fmt})")
            try:
                bids_label(subject, "subject")
            except ExportError as exc:
                return _error(400, f"subject: {exc.reason}")
        if not _SESSION_ID.fullmatch(sid):
            return _error(404, f"no session {shown(sid)}")
        tmp = Path(tempfile.mkdtemp(prefix="settle-export-"))
        try:
            status, where = await self._work(export_files, sid, fmt, subject or "01", str(tmp))
            if status == "error":
                return _error(404, where)
            path = Path(where)
            data = await asyncio.to_thread(path.read_bytes)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        name = path.name if path.suffix else f"{path.name}.{fmt}"
        return web.Response(
            body=data,
            content_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
