"""The ``settle`` command line. Every failure a user can cause prints one line, never a traceback:
exit code 2 for a bad config or command line (an output path of the wrong kind included: an
existing file without ``--force``, a file where a directory is wanted or the reverse), 1 for
anything else that went wrong (a session or strap not found included). docs/operations.md
lists them."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import re
import shlex
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from settle import cli_sessions
from settle.config import Settings, load_config
from settle.console import cell, err, fail, one_line, out, print_table
from settle.errors import ConfigError, SettleError, shown

if TYPE_CHECKING:
    from feedback.dashboard import DashboardConfig
    from feedback.mqtt import ConnectOptions

app = typer.Typer(
    help="Settle: see whether your physiology is catching up with the belief you hold.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
sessions_app = typer.Typer(help="Stored sessions.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            said = version("settle-hrv")
        except PackageNotFoundError:  # a checkout that was never installed
            said = "0+unknown (not installed: run make demo)"
        out.print(f"settle {said}", markup=False)
        raise typer.Exit()


@app.callback()
def _settle(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the installed Settle's version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """Settle: see whether your physiology is catching up with the belief you hold."""


ConfigOpt = cli_sessions.ConfigOpt
DbOpt = cli_sessions.DbOpt
a_path = cli_sessions.a_path
MqttOpt = Annotated[
    str | None,
    typer.Option(
        "--mqtt", metavar="HOST:PORT", help="MQTT broker (to publish to; doctor: to check)."
    ),
]
NoMqttOpt = Annotated[bool, typer.Option("--no-mqtt", help="Run without MQTT.")]
HttpOpt = Annotated[
    str | None,
    typer.Option(
        "--http", metavar="HOST:PORT", help="Serve the dashboard here (default 127.0.0.1:8765)."
    ),
]
NoHttpOpt = Annotated[bool, typer.Option("--no-http", help="Run without the dashboard.")]


def _check_broker_options(settings: Settings) -> None:
    """The daemon's MQTT login and TLS files, checked before anything starts (a CA file that
    is no certificate went unnoticed until a whole session had been recorded). Not with
    the embedded broker only (``embedded = "always"``): it uses neither."""
    m = settings.mqtt
    if not m.enabled or (m.embedded == "always" and not m.host):
        return
    from settle.broker_options import connect_options

    try:
        connect_options(settings)
    except ConfigError as exc:
        fail(str(exc), 2)


def _check_dashboard_options(settings: Settings) -> DashboardConfig | None:
    """The dashboard's settings, its token file read (or made) now: one that cannot be used
    (unreadable, readable by others, too short, not text) was found only once the daemon's
    banner said it had started. None without the dashboard."""
    if not settings.http.enabled:
        return None
    from settle.app import dashboard_config

    try:
        return dashboard_config(settings)
    except ConfigError as exc:
        fail(str(exc), 2)


def _number(lo: float, hi: float = math.inf) -> Callable[[str], float]:
    """A number option's parser (``parser=``; typer then ignores ``min``/``max``): NaN
    failed typer's own bound check and read "Input should be greater than or equal to
    0.1" (or "less than or equal to 1000"), as if it were a number out of range."""

    def parse(value: str) -> float:
        try:
            v = float(value)
        except ValueError:
            raise typer.BadParameter(
                "Input should be a valid number, unable to parse string as a number"
            ) from None
        if math.isnan(v):
            raise typer.BadParameter("Input should be a number, got nan")
        if v < lo:
            raise typer.BadParameter(f"Input should be greater than or equal to {lo:g}")
        if v > hi:
            raise typer.BadParameter(f"Input should be less than or equal to {hi:g}")
        return v

    return parse


def _check_duration(duration: float | None) -> None:
    """``--duration inf`` passed the ``min=0.1`` bound and the daemon never stopped by
    itself: without --duration is how to run until stopped."""
    if duration is not None and not math.isfinite(duration):
        fail(
            f"--duration: expected a number of seconds (at least 0.1), got {duration:g}; "
            "leave it out to run until stopped",
            2,
        )


def _first_settle_error(exc: BaseException) -> SettleError | None:
    if isinstance(exc, SettleError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_settle_error(inner)
            if found is not None:
                return found
    return None


def _run(coro: Coroutine[Any, Any, int | None]) -> None:
    try:
        code = asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BaseException as exc:
        found = _first_settle_error(exc)
        if found is None:
            raise
        fail(str(found), 2 if isinstance(found, ConfigError) else 1)
    if code:
        raise typer.Exit(code)


def parse_hostport(value: str) -> tuple[str, int]:
    if "@" in value or "/" in value:  # user:password@host, mqtt://…: never echoed
        raise ConfigError(
            "--mqtt",
            "HOST:PORT only: credentials go in mqtt.username and SETTLE_MQTT__PASSWORD or "
            "mqtt.password_file (on the command line they show in the process list)",
        )
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError("--mqtt", f"expected HOST:PORT (e.g. 127.0.0.1:1883), got {shown(value)}")
    if host.startswith("[") and host.endswith("]") and ":" not in host[1:-1]:
        host = host[1:-1]  # [127.0.0.1]:1883, [localhost]:1883 were taken: still are
    elif host.startswith("["):
        # An IPv6 address, in brackets as in a URL: [::1]:1883.
        try:
            if not host.endswith("]"):
                raise ValueError
            return str(ipaddress.IPv6Address(host[1:-1])), int(port)
        except ValueError:
            raise ConfigError(
                "--mqtt", f"expected [IPv6 address]:PORT (e.g. [::1]:1883), got {shown(value)}"
            ) from None
    if ":" in host:
        # 127.0.0.1:1883:5, or ::1 read as host ':' and port 1: it went on to connect there.
        raise ConfigError(
            "--mqtt",
            f"expected HOST:PORT (e.g. 127.0.0.1:1883; an IPv6 address in brackets, "
            f"[::1]:1883), got {shown(value)}",
        )
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(
        label and all(c.isalnum() or c in "-_" for c in label) for label in labels
    ):
        # Letters of any script (an internationalised name, as mqtt.host takes), digits,
        # '-' and '_' between dots.
        raise ConfigError("--mqtt", f"not a host name or address: {shown(host)}")
    return host, int(port)


def settings_from(
    config: Path | None,
    *,
    mqtt: str | None = None,
    no_mqtt: bool = False,
    db: Path | None = None,
    http: str | None = None,
    no_http: bool = False,
    **sections: dict[str, Any],
) -> Settings:
    try:
        flags: dict[str, Any] = dict(sections)
        for on, off, name in ((http, no_http, "http"), (mqtt, no_mqtt, "mqtt")):
            if on and off:
                raise ConfigError(f"--{name}", f"--{name} and --no-{name} exclude each other")
        h: dict[str, Any] = {}
        if no_http:
            h["enabled"] = False
        if http:
            host, sep, port = http.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ConfigError(
                    "--http", f"expected HOST:PORT (0: any free port), got {shown(http)}"
                )
            # A flag overrides the config, enabled = false included (it was ignored).
            h["host"], h["port"], h["enabled"] = host.strip("[]"), int(port), True
        flags["http"] = h
        m: dict[str, Any] = {}
        if no_mqtt:
            m["enabled"] = False
        if mqtt:
            m["host"], m["port"] = parse_hostport(mqtt)
            m["enabled"] = True
        flags["mqtt"] = m
        flags["storage"] = {"db_path": db}
        settings = load_config(config, **flags)
    except ConfigError as exc:
        # A flag's own error names the flag (it read "config: --mqtt: …").
        fail(cli_sessions.config_error_text(exc, db), 2)
    from settle.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings


# -- demo / run ------------------------------------------------------------------------------


@app.command()
def demo(
    duration: Annotated[
        float | None,
        typer.Option(
            help="Stop by itself after S wall-clock seconds (exit code 0).  [x>=0.1]",
            parser=_number(0.1),
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            help="Time compression of the virtual strap.  [0.01<=x<=1000]",
            parser=_number(0.01, 1000),
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(help="RR file to replay instead of the physiological model.", parser=a_path),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the physiological model.", min=0)
    ] = None,
    straps: Annotated[
        int, typer.Option(help="Number of virtual straps (group practice).", min=1, max=100)
    ] = 1,
    ecg: Annotated[
        bool | None,
        typer.Option(
            "--ecg/--no-ecg",
            help="The virtual strap also streams a synthetic raw ECG, as a Polar H10 does "
            "(default: demo.ecg).",
        ),
    ] = None,
    mqtt: MqttOpt = None,
    no_mqtt: NoMqttOpt = False,
    http: HttpOpt = None,
    no_http: NoHttpOpt = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run the daemon against a virtual chest strap (no hardware needed)."""
    _check_duration(duration)
    settings = settings_from(
        config,
        mqtt=mqtt,
        no_mqtt=no_mqtt,
        db=db,
        http=http,
        no_http=no_http,
        demo={"speed": speed, "replay": replay, "seed": seed, "ecg": ecg},
    )
    _check_broker_options(settings)
    dashboard = _check_dashboard_options(settings)
    if settings.demo.replay is not None:
        from sensors.readers import read_rr_file

        try:
            read_rr_file(settings.demo.replay)  # fail before starting anything
        except SettleError as exc:
            fail(str(exc))
    _run(_demo(settings, duration, straps, dashboard=dashboard))


async def _demo(
    settings: Settings,
    duration: float | None,
    n_straps: int,
    command: str = "settle demo",
    *,
    dashboard: DashboardConfig | None = None,
) -> int:
    from settle.app import serve
    from settle.demo import virtual_world

    d = settings.demo
    async with virtual_world(
        replay=d.replay, speed=d.speed, seed=d.seed, n_straps=n_straps, ecg=d.ecg
    ) as world:
        names = ", ".join(s.name for s in world.straps)
        what = f"replay of {d.replay.name}" if d.replay else f"physiological model, seed {d.seed}"
        plural = "s" if n_straps > 1 else ""
        return await serve(
            settings,
            **world.serve_kwargs(),
            banner=f"{command}: virtual strap{plural} {names} ({what}, speed {d.speed:g}x)",
            duration=duration,
            finished=[s.wait_finished() for s in world.straps] if d.replay else None,
            dashboard=dashboard,
        )


@app.command()
def run(
    address: Annotated[
        str | None,
        typer.Option(help="Strap address (default: config, else the paired straps, else any)."),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            help="Feed a recording through the same pipeline instead of a strap.", parser=a_path
        ),
    ] = None,
    speed: Annotated[
        float,
        typer.Option(
            help="Replay speed (with --replay).  [0.01<=x<=1000]", parser=_number(0.01, 1000)
        ),
    ] = 1.0,
    duration: Annotated[
        float | None,
        typer.Option(
            help="Stop after S seconds (default: run until Ctrl-C).  [x>=0.1]", parser=_number(0.1)
        ),
    ] = None,
    mqtt: MqttOpt = None,
    no_mqtt: NoMqttOpt = False,
    http: HttpOpt = None,
    no_http: NoHttpOpt = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run the daemon with real chest straps (any Heart Rate Service strap), or a recording."""
    from settle.app import serve
    from settle.pairing import is_virtual, load_paired

    _check_duration(duration)
    if replay is None and speed != 1.0:
        fail("--speed compresses a replay: give it with --replay FILE", 2)  # was ignored
    if replay is not None and address is not None:
        fail("--address picks a strap to record from, --replay a recording: give one", 2)
    if address is not None:
        from settle.config import strap_address_problem

        problem = strap_address_problem(address.strip())
        if problem is not None:  # it was looked for until the scan timed out (exit 1)
            fail(f"--address: {problem} (got {shown(address)})", 2)
    if replay is not None:
        settings = settings_from(
            config,
            mqtt=mqtt,
            no_mqtt=no_mqtt,
            db=db,
            http=http,
            no_http=no_http,
            demo={"replay": replay, "speed": speed},
        )
        _check_broker_options(settings)
        dashboard = _check_dashboard_options(settings)
        from sensors.readers import read_rr_file

        try:
            read_rr_file(replay)
        except SettleError as exc:
            fail(str(exc))
        _run(_demo(settings, duration, 1, "settle run --replay", dashboard=dashboard))
        return
    settings = settings_from(
        config,
        mqtt=mqtt,
        no_mqtt=no_mqtt,
        db=db,
        http=http,
        no_http=no_http,
        strap={"address": address},
    )
    _check_broker_options(settings)
    dashboard = _check_dashboard_options(settings)
    addresses = None
    if not settings.strap.address and not settings.strap.name:
        try:
            paired = load_paired()
        except SettleError as exc:
            fail(str(exc), 2)
        for p in [p for p in paired if is_virtual(p)]:
            out.print(
                f"settle run: skipping {p.label!r} ({p.address}), a virtual strap "
                f"(settle pair --virtual); `settle pair --forget {shlex.quote(p.label)}` "
                "removes it",
                markup=False,
            )
        paired = [p for p in paired if not is_virtual(p)]
        if paired:
            addresses = [p.address for p in paired]
            labels = ", ".join(f"{p.label} ({p.address})" for p in paired)
            out.print(f"settle run: paired straps {labels}", markup=False)
    _run(
        serve(
            settings,
            scanner_kwargs={},
            client_kwargs={},
            source="ble",
            duration=duration,
            addresses=addresses,
            dashboard=dashboard,
        )
    )


@app.command()
def pair(
    strap: Annotated[
        str | None, typer.Argument(help="Name (or part of it) or address; default: any strap.")
    ] = None,
    label: Annotated[str | None, typer.Option(help="Label to remember it by.")] = None,
    seconds: Annotated[
        float, typer.Option(help="Seconds of live data to show.  [x>=0]", parser=_number(0))
    ] = 5.0,
    list_: Annotated[bool, typer.Option("--list", help="Show remembered straps.")] = False,
    forget: Annotated[
        str | None, typer.Option(help="Forget a remembered strap (label or address).")
    ] = None,
    virtual: Annotated[
        bool, typer.Option("--virtual", help="Pair a virtual strap (to try it out).")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Before practice: find a strap, check it (live HR, contact, battery), remember it."""
    from settle import pairing

    if list_ and (forget is not None or strap is not None or label is not None):
        fail("--list shows the remembered straps; give it alone", 2)  # --forget was ignored
    if forget is not None and (strap is not None or label is not None):
        fail("--forget takes the label or address itself; give it alone", 2)
    if label is not None and not label.strip():
        # It fell back to the device id without a word, and took the place of the label
        # the strap had ("anna" was gone).
        fail("--label: empty; leave --label out to remember the strap by its device id", 2)
    if label is not None and (problem := pairing.label_problem(label)) is not None:
        # Said after the scan, the connection and the live display, as "config: label: …".
        fail(f"--label: {problem}", 2)
    settings = settings_from(config)
    try:
        if list_:
            rows = [[p.label, p.address, p.name, p.device_id] for p in pairing.load_paired()]
            if not rows:
                out.print("No straps remembered yet (settle pair NAME|ADDRESS).")
            else:
                print_table(["label", "address", "name", "device id"], rows)
            return
        if forget is not None:
            gone = pairing.forget(forget)
            if gone is None:
                fail(f"no remembered strap matches {shown(forget)} (see settle pair --list)")
            out.print(f"forgot {gone.label} ({gone.address})", markup=False)
            return
    except SettleError as exc:
        fail(str(exc), 2)
    _run(_pair(settings, strap, label, seconds, virtual))


ADDRESS_RE = re.compile(r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f-]{36}$")


async def _pair(
    settings: Settings, strap: str | None, label: str | None, seconds: float, virtual: bool
) -> int:
    from sensors.strap import StrapClient
    from settle import pairing

    async with contextlib.AsyncExitStack() as stack:
        scanner_kwargs: dict[str, Any] = {}
        client_kwargs: dict[str, Any] = {}
        if virtual:
            from settle.demo import virtual_world

            world = await stack.enter_async_context(
                virtual_world(replay=None, speed=1.0, seed=settings.demo.seed)
            )
            scanner_kwargs, client_kwargs = world.scanner_kwargs(), world.client_kwargs()
        is_address = bool(strap and ADDRESS_RE.match(strap))
        client = StrapClient(
            address=strap if is_address and strap else "",
            name=strap if strap and not is_address else "",
            scan_timeout_s=settings.strap.scan_timeout_s,
            connect_timeout_s=settings.strap.connect_timeout_s,
            scanner_kwargs=scanner_kwargs,
            client_kwargs=client_kwargs,
        )
        out.print(f"Looking for {strap or 'any heart-rate strap'}…", markup=False)
        device = await client.find()
        async with client.connect(device) as stream:
            i = stream.info
            out.print(f"Connected: {one_line(i.name) or '(no name)'}  {i.address}", markup=False)
            for what, value in [
                ("model", " ".join(x for x in (i.manufacturer, i.model) if x) or None),
                ("firmware", i.firmware),
                ("battery", f"{i.battery_pct} %" if i.battery_pct is not None else None),
                ("signal", _signal_text(i.rssi_dbm)),
                ("sensor location", i.body_location),
                ("device id", i.device_id),
            ]:
                out.print(f"  {what + ':':17}{value or 'not reported'}", markup=False)
            end = time.monotonic() + seconds
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds + 0.5):
                    async for n in stream:
                        m = n.measurement
                        contact = {True: "yes", False: "NO — wet the electrodes", None: "n/a"}
                        rr = ", ".join(f"{r:.0f}" for r in m.rr_ms) or "–"
                        out.print(
                            f"  HR {m.hr_bpm:3d} bpm   RR {rr:<16} ms   contact "
                            f"{contact[m.contact]}",
                            markup=False,
                        )
                        if time.monotonic() >= end:
                            break
        chosen = label or i.device_id
        path = pairing.paired_file()
        gone = pairing.displaced(chosen, i.address)
        pairing.remember(chosen, i.address, i.name, i.device_id)
        use = "a virtual strap: `settle run` skips it" if virtual else "`settle run` will use it"
        out.print(f"Remembered as {chosen!r} in {path}; {use}.", markup=False)
        for g in gone:
            out.print(pairing.displaced_words(g, chosen), markup=False)
    return 0


# -- scan ------------------------------------------------------------------------------------


@app.command()
def scan(
    timeout: Annotated[
        float, typer.Option(help="Seconds to scan.  [x>=0.5]", parser=_number(0.5))
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    virtual: Annotated[
        bool, typer.Option("--virtual", help="Scan a virtual strap (try it without hardware).")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """List nearby straps offering the Heart Rate Service 0x180D (any vendor).

    On a terminal the table fills in live as straps advertise; piped, or with --json, the
    result is printed once at the end."""
    settings_from(config)
    _run(_scan(timeout, as_json, virtual))


SCAN_HEADERS = ["name", "address", "RSSI", "device id", "raw ECG (PMD)"]


def _scan_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [r["name"], r["address"], str(r["rssi"]), r["device_id"], "yes" if r["pmd"] else "no"]
        for r in rows
    ]


def _scan_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(*SCAN_HEADERS, title=title, title_justify="left")
    for cells in _scan_cells(rows):
        table.add_row(*(cell(c) for c in cells))
    return table


async def live_scan(
    scan_s: float, scanner_kwargs: dict[str, Any], console: Console
) -> list[dict[str, Any]]:
    """Scan, redrawing a rich table on ``console`` (a terminal) as straps appear or change;
    the final table stays on screen. Returns the rows, strongest first."""
    from rich.live import Live

    from sensors.strap import watch_straps

    rows: list[dict[str, Any]] = []
    scanning = f"Scanning for heart-rate straps ({scan_s:g} s)…"
    with Live(_scan_table(rows, scanning), console=console, refresh_per_second=8) as live:
        async for snapshot in watch_straps(scan_s, scanner_kwargs):
            rows = snapshot
            live.update(_scan_table(rows, scanning))
        n = len(rows)
        live.update(_scan_table(rows, f"{n} heart-rate strap{'' if n == 1 else 's'} found"))
    return rows


async def _scan(scan_s: float, as_json: bool, virtual: bool) -> int:
    from sensors.strap import scan_straps

    async def do_scan(kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            if out.is_terminal and not as_json:
                return await live_scan(scan_s, kwargs, out)
            return await scan_straps(scan_s, kwargs)
        except SettleError as exc:
            raise SettleError(getattr(exc, "reason", str(exc))) from exc

    if virtual:
        from settle.demo import virtual_world

        async with virtual_world(replay=None, speed=1.0, seed=1) as world:
            rows = await do_scan(world.scanner_kwargs())
    else:
        rows = await do_scan({})
    if as_json:
        out.print(json.dumps({"v": 1, "straps": rows}), markup=False)
        return 0
    if not rows:
        from sensors.strap import NOT_FOUND_HINT

        raise SettleError(f"no heart-rate strap found in {scan_s:g} s — {NOT_FOUND_HINT}")
    if not out.is_terminal:  # on a terminal the live table is already there
        print_table(SCAN_HEADERS, _scan_cells(rows))
    return 0


# -- sessions / export -----------------------------------------------------------------------


@sessions_app.command("list")
def sessions_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List stored sessions, newest last (a paired strap's label beside its device id)."""
    from sessions.store import SessionStore
    from settle.pairing import load_paired

    settings = settings_from(config, db=db)
    if not settings.db_path.exists():  # a mistyped --db must not create an empty store
        fail(f"no session store at {settings.db_path} (run `settle demo` or `settle run` first)")
    try:
        with SessionStore.open_for_reading(settings.db_path) as store:
            rows = store.list_sessions()
    except SettleError as exc:
        fail(str(exc))
    labels: dict[str, str] = {}
    try:  # the labels only help: an unreadable straps file does not stop the list
        for strap in load_paired():
            if strap.device_id:
                labels.setdefault(strap.device_id, strap.label)
    except (ConfigError, OSError):
        pass
    if as_json:
        items = [
            {
                "id": r.id,
                "device": r.device_id,
                "label": labels.get(r.device_id),
                "started_ms": r.started_ms,
                "stopped_ms": r.stopped_ms,
                "state": str(r.state),
                "n_beats": r.n_beats,
                "duration_s": r.duration_s,
            }
            for r in rows
        ]
        out.print(json.dumps({"v": 1, "sessions": items}), markup=False, soft_wrap=True)
        return
    if not rows:
        out.print(f"No sessions in {one_line(str(settings.db_path))}", markup=False)
        return
    lines = []
    for r in rows:
        # With the zone: the same wall time comes twice the night the clocks go back.
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(r.started_ms / 1000))
        mins, secs = divmod(int(r.duration_s), 60)
        label = labels.get(r.device_id)
        device = r.device_id if label is None else f"{r.device_id} ({label})"
        lines.append([r.id, device, started, f"{mins}:{secs:02d}", str(r.n_beats), str(r.state)])
    print_table(["id", "device", "started (local)", "duration", "beats", "state"], lines)


# export, report, trends, log import/set, sessions delete: settle/cli_sessions.py
cli_sessions.register(app, sessions_app)


# -- commands through MQTT (mark, session, baseline, forget) ---------------------------------
# One-shot clients. They import only what they need — aiomqtt (feedback.mqtt), the payload
# models, the config — never settle.app: the daemon, the dashboard and scipy behind it took
# about 1.8 s to import, and the daemon stamps a marker with the time it arrives.

DeviceOpt = Annotated[
    str | None,
    typer.Option(
        help="Device id, or a label from `settle pair --list` (needed when several straps "
        "are running)."
    ),
]
AllOpt = Annotated[
    bool, typer.Option("--all", help="Every strap with a running session, sent together.")
]
AllConnectedOpt = Annotated[
    bool, typer.Option("--all", help="Every connected strap, sent together.")
]
MIN_WAIT_S, MAX_WAIT_S = 0.5, 3600.0
WaitOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for the daemon (0.5 to 3600).")
]
RETAINED_QUIET_S = 0.3
"""How long the broker may stay silent before the retained state counts as complete, when
no ``bridge/state`` arrives to say so (no daemon ever ran there)."""
RETAINED_GRACE_S = 0.05
"""After ``bridge/state``, how long late retained messages are still taken (for brokers that
send a subscription's retained messages less strictly in order than mosquitto and amqtt)."""
UNKNOWN_DEVICE_GRACE_S = 1.5
"""After an ``unknown device`` result, how long another daemon on the topic base still has to
answer the same command (its answer waits up to 1 s for the session store) before the
refusal is final: with two daemons on one base (`make demo` while the service runs) the one
without the strap answered at once, before the other's ``ok``."""


def _check_wait(timeout: float) -> None:
    if not MIN_WAIT_S <= timeout <= MAX_WAIT_S:  # NaN fails too
        fail(f"--timeout: expected {MIN_WAIT_S:g} to {MAX_WAIT_S:g} seconds, got {timeout:g}", 2)


@app.command()
def mark(
    text: Annotated[str, typer.Argument(help="The note, e.g. 'shame came back'.")] = "",
    kind: Annotated[
        str,
        typer.Option(
            help="hold-start, hold-lapse, hold-resume, shame, threat, discomfort, attention, "
            "doubt or note (any case; a space or _ for the hyphen)."
        ),
    ] = "note",
    device: DeviceOpt = None,
    every: AllOpt = False,
    timeout: WaitOpt = 5.0,
    mqtt: MqttOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add a marker to the running session (through MQTT)."""
    from feedback.payloads import MARKER_KINDS
    from settle.text import marker_kind_name

    _check_wait(timeout)
    settings = settings_from(config, mqtt=mqtt)
    # In any case, as --target and a journal's "Shame:" are (`--kind Shame` was refused).
    name = marker_kind_name(kind)
    if name not in MARKER_KINDS:
        fail(f"--kind: unknown marker kind {shown(kind)} (one of: {', '.join(MARKER_KINDS)})", 2)
    _send(settings, "marker", {"kind": name, "text": text}, device, timeout, every)


session_app = typer.Typer(help="Start and stop sessions of a running daemon.", no_args_is_help=True)
app.add_typer(session_app, name="session")


@session_app.command("start")
def session_start(
    target: Annotated[
        str, typer.Option(help="Target model: self, future, relational, or free text.")
    ] = "free",
    statement: Annotated[str, typer.Option(help="The statement you hold.")] = "",
    practice: Annotated[str, typer.Option(help="Practice kind, e.g. loving-kindness.")] = "",
    device: DeviceOpt = None,
    every: AllConnectedOpt = False,
    timeout: WaitOpt = 5.0,
    mqtt: MqttOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start a new session (the running one is closed first)."""
    _check_wait(timeout)
    settings = settings_from(config, mqtt=mqtt)
    intention = {"target": target, "statement": statement, "practice": practice}
    _send(settings, "session/start", {"intention": intention}, device, timeout, every)


@session_app.command("stop")
def session_stop(
    device: DeviceOpt = None,
    every: AllOpt = False,
    timeout: WaitOpt = 5.0,
    mqtt: MqttOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stop the running session (the strap stays connected)."""
    _check_wait(timeout)
    settings = settings_from(config, mqtt=mqtt)
    _send(settings, "session/stop", {}, device, timeout, every)


@app.command()
def baseline(
    action: Annotated[str, typer.Argument(help="start or stop")],
    device: DeviceOpt = None,
    every: AllOpt = False,
    timeout: WaitOpt = 5.0,
    mqtt: MqttOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Mark a rest period as the session's baseline (instead of its first minutes)."""
    if action not in ("start", "stop"):
        fail(f"expected 'start' or 'stop', got {shown(action)}", 2)
    _check_wait(timeout)
    settings = settings_from(config, mqtt=mqtt)
    _send(settings, f"baseline/{action}", {}, device, timeout, every)


@app.command()
def forget(
    device: Annotated[str, typer.Argument(help="Device id, e.g. polar_h10_a1b2c3d4.")],
    timeout: WaitOpt = 5.0,
    mqtt: MqttOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove a strap you no longer use from the broker and Home Assistant (its retained
    state and discovery entries). Stored sessions are kept."""
    _check_wait(timeout)
    settings = settings_from(config, mqtt=mqtt)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", device):
        fail(f"not a device id: {shown(device)} (see `settle sessions list`)", 2)
    _run(_forget(settings, device, timeout))


def _client_options(settings: Settings) -> ConnectOptions:
    """The broker ``[mqtt]`` names, reached as the daemon reaches it, over MQTT 3.1.1."""
    from settle.broker_options import connect_options

    return connect_options(settings, one_shot=True)


async def _retained(client: Any, filters: list[str], last: str) -> dict[str, tuple[bytes, bool]]:
    """What the broker holds on ``filters`` and ``last``, by topic: ``(latest payload,
    retained)``.

    Returns as soon as it has all arrived, not after a fixed wait. One SUBSCRIBE names
    ``last`` (``<base>/bridge/state``, retained by every daemon that ever ran on the broker)
    after the others, and brokers send the retained messages of a SUBSCRIBE's filters in the
    filters' order (mosquitto queues them so; amqtt sends each filter's and waits for their
    acknowledgements before the next): once a message on ``last`` is here, so is the rest.
    Without one it stops after :data:`RETAINED_QUIET_S` without a retained message. Live
    messages (a strap's beats under ``<dev>/#``) are kept but never extend the wait. (One
    packet, not one per filter: each SUBACK costs a round trip, 40 ms with a broker that
    leaves Nagle on.)"""
    await client.subscribe([(topic_filter, 1) for topic_filter in [*filters, last]])
    loop = asyncio.get_running_loop()
    seen: dict[str, tuple[bytes, bool]] = {}
    messages = aiter(client.messages)
    until = loop.time() + RETAINED_QUIET_S
    complete = False
    while (left_s := until - loop.time()) > 0:
        try:
            async with asyncio.timeout(left_s):
                msg = await anext(messages)
        except TimeoutError:
            break
        topic, payload = str(msg.topic), msg.payload
        data = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
        # Retained once, retained still: a live update of a retained topic (flagged only
        # on delivery to new subscriptions) does not make it any less held by the broker.
        seen[topic] = (data, bool(msg.retain) or seen.get(topic, (b"", False))[1])
        if complete:
            continue
        if topic == last:
            complete, until = True, loop.time() + RETAINED_GRACE_S
        elif msg.retain:
            until = loop.time() + RETAINED_QUIET_S
    return seen


async def _forget(settings: Settings, device: str, wait_s: float) -> int:
    import aiomqtt

    from feedback import homeassistant as ha

    options = _client_options(settings)
    base, prefix = settings.mqtt.topic_base, settings.homeassistant.prefix
    discovery = set(ha.removal_messages(prefix, base, device))
    state_topic = f"{base}/bridge/state"
    try:
        async with asyncio.timeout(wait_s), aiomqtt.Client(**options.client_kwargs()) as client:
            own = f"{base}/{device}/"
            # `#`, not `+`: a retained command (`cmd/marker`, `cmd/session/start`), which the
            # daemon refuses, would otherwise stay on the broker.
            seen = await _retained(client, [own + "#", *sorted(discovery)], state_topic)
            retained = {topic: data for topic, (data, was_retained) in seen.items() if was_retained}
            daemon_online = seen.get(state_topic, (b"", False))[0] == b"online"
            if daemon_online and retained.get(own + "availability") == b"online":
                raise SettleError(
                    f"strap {device} is connected to a running daemon: stop it first "
                    "(its entities would come back at once)"
                )
            # Discovery configs first: Home Assistant removes the entities before their state
            # topics are emptied (an emptied state topic under a live entity logged template
            # errors when the base sorted before the discovery prefix).
            clear = sorted(
                (t for t in retained if t.startswith(own) or t in discovery),
                key=lambda t: (t not in discovery, t),
            )
            if not clear:
                raise SettleError(
                    f"the broker holds nothing retained for {device} under {base} (or this "
                    "account may not read it)"
                )
            for topic in clear:
                await client.publish(topic, b"", qos=1, retain=True)
        # Read back, on a new connection: over MQTT 3.1.1 a broker acknowledges a publish
        # its ACL denies and drops it (mosquitto logs "Denied PUBLISH"); "cleared 3" was
        # printed while everything stayed.
        async with asyncio.timeout(wait_s), aiomqtt.Client(**options.client_kwargs()) as client:
            again = await _retained(client, [own + "#", *sorted(discovery)], state_topic)
        kept = [t for t in clear if again.get(t, (b"", False))[0]]  # (emptied: not sent)
    except TimeoutError:
        raise SettleError(f"no answer from the MQTT broker {options.where}") from None
    except aiomqtt.MqttError as exc:
        raise SettleError(f"cannot reach the MQTT broker {options.where}: {exc}") from None
    cleared = len(clear) - len(kept)
    no_config = (
        ""
        if any(t in discovery for t in clear) or not settings.homeassistant.enabled
        else f"; no Home Assistant discovery config was visible (none retained, or this account "
        f"may not read {prefix}/#)"
    )
    if kept:
        who = f"{options.username!r}" if options.username else "this client"
        raise SettleError(
            f"{device}: cleared {cleared} of {len(clear)} retained messages; the broker still "
            f"holds {len(kept)} ({', '.join(kept[:3])}{', …' if len(kept) > 3 else ''}): its "
            f"ACL may not let {who} publish there{no_config}"
        )
    out.print(f"forgot {device}: cleared {cleared} retained messages{no_config}", markup=False)
    return 0


def _send(
    settings: Settings,
    name: str,
    body: dict[str, Any],
    device: str | None,
    wait_s: float,
    every: bool = False,
) -> None:
    """Send command ``name`` (checked here first) and report its result (``every``: to every
    strap that can take it, published back to back)."""
    if every and device is not None:
        fail("--all and --device: pick one", 2)
    cmd_id, payload = _command_payload(name, body)
    _run(_command(settings, name, cmd_id, payload, device, wait_s, every))


def _command_payload(name: str, body: dict[str, Any]) -> tuple[str, bytes]:
    """A fresh id and the command as UTF-8 JSON, checked against the daemon's model and size
    limit here: a note too long is a usage error (exit 2), not a refusal after a round trip."""
    from pydantic import ValidationError

    from feedback.commands import MAX_COMMAND_BYTES
    from feedback.payloads import COMMANDS

    cmd_id = uuid.uuid4().hex[:12]
    command = {"v": 1, "id": cmd_id, **body}
    try:
        COMMANDS[name].model_validate(command)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][-1]) if first["loc"] else "payload"
        fail(f"{'TEXT' if field == 'text' else '--' + field}: {first['msg']}", 2)
    # UTF-8, not \uXXXX escapes: a Cyrillic or CJK character is 2-3 bytes, not 6 (or 12).
    payload = json.dumps(command, ensure_ascii=False).encode()
    if len(payload) > MAX_COMMAND_BYTES:
        fail(
            f"too long to send: the command is {len(payload)} bytes as UTF-8, the daemon "
            f"takes at most {MAX_COMMAND_BYTES}",
            2,
        )
    return cmd_id, payload


async def _command(
    settings: Settings,
    name: str,
    cmd_id: str,
    payload: bytes,
    device: str | None,
    wait_s: float,
    every: bool = False,
) -> int:
    """Send ``<base>/<device>/cmd/<name>`` (to every strap that can take it, with ``every``)
    and wait for the results."""
    import aiomqtt

    from feedback.mqtt import UNKNOWN_DEVICE

    options = _client_options(settings)
    where = options.where
    base = settings.mqtt.topic_base
    sent_to: list[str] = []
    targets: list[str] = []
    answered: set[str] = set()
    refused: list[tuple[str, str]] = []
    unknown: dict[str, str] = {}  # answered "unknown device" only, so far: an ok may follow
    device = _device_for_label(device)
    try:
        async with asyncio.timeout(wait_s):
            async with aiomqtt.Client(**options.client_kwargs()) as client:
                need_session = name != "session/start"
                if every:
                    targets = sorted(
                        await _active_devices(client, base, need_session=need_session, where=where)
                    )
                else:
                    targets = [
                        await _find_device(
                            client, base, need_session=need_session, device=device, where=where
                        )
                    ]
                results = {f"{base}/{d}/cmd/{name}/result": d for d in targets}
                for topic in results:
                    await client.subscribe(topic, qos=1)
                # Back to back: a group's hold-start lands within milliseconds on every strap
                # (one `settle mark --device` per strap put them 1-2 s apart).
                for d in targets:
                    sent_to.append(d)  # from here on it may have arrived: never say it did not
                    await client.publish(f"{base}/{d}/cmd/{name}", payload, qos=1)
                loop = asyncio.get_running_loop()
                grace_until = 0.0
                messages = aiter(client.messages)
                while len(answered) < len(targets):
                    if len(answered) + len(unknown) < len(targets):
                        msg = await anext(messages)
                    else:  # only "unknown device" so far for the rest: a grace for an ok
                        try:
                            async with asyncio.timeout(grace_until - loop.time()):
                                msg = await anext(messages)
                        except TimeoutError:
                            break
                    dev = results.get(str(msg.topic))
                    if dev is None or dev in answered:
                        continue  # a late availability/session message of the discovery
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        res = json.loads(bytes(msg.payload))
                        if res.get("id") != cmd_id:
                            continue
                        error = str(res.get("error"))
                        if res.get("status") != "ok" and error.startswith(UNKNOWN_DEVICE):
                            # Another daemon on this base, which does not serve the strap,
                            # may have answered before the one that does.
                            if dev not in unknown:
                                unknown[dev] = error
                                grace_until = loop.time() + UNKNOWN_DEVICE_GRACE_S
                            continue
                        answered.add(dev)
                        unknown.pop(dev, None)
                        if res.get("status") == "ok":
                            what = json.loads(payload).get("kind", name)
                            out.print(f"{what}: ok ({dev}){_not_stored(res)}", markup=False)
                        else:
                            refused.append((dev, error))
                refusal = _refusal(name, refused, unknown, targets, every)
                if refusal is None:
                    return 0
                raise refusal
    except TimeoutError:
        unanswered = [d for d in sent_to if d not in answered and d not in unknown]
        if not unanswered and (refused or unknown):
            # (the time ran out in the grace after an "unknown device")
            refusal = _refusal(name, refused, unknown, targets, every)
            if refusal is not None:
                raise refusal from None
        if unanswered:
            raise SettleError(
                f"{name} sent to {', '.join(unanswered)}, but no confirmation from the daemon "
                f"within {wait_s:g} s: it may still have been carried out (check before "
                "sending it again)"
            ) from None
        raise SettleError(
            f"no answer from the MQTT broker {where} within {wait_s:g} s (use --mqtt HOST:PORT)"
        ) from None
    except aiomqtt.MqttError as exc:
        if sent_to:
            raise SettleError(
                f"lost the MQTT broker {where} after sending {name} to {', '.join(sent_to)} "
                f"({exc}): check before sending it again"
            ) from None
        hint = "; nothing was sent"
        h = settings.http
        if h.enabled and h.port:
            # The dashboard talks to the daemon directly: markers and session control work
            # there while the broker is down.
            host = "127.0.0.1" if h.host in ("0.0.0.0", "") else h.host
            host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
            hint += f" (the dashboard, http://{host}:{h.port}/live, reaches the daemon without "
            hint += "the broker)"
        raise SettleError(f"cannot reach the MQTT broker {where}: {exc}{hint}") from None
    return 1


def _refusal(
    name: str,
    refused: list[tuple[str, str]],
    unknown: dict[str, str],
    targets: list[str],
    every: bool,
) -> SettleError | None:
    """The error for the refusals among the results (None: there were none), an ``unknown
    device`` that no other daemon's answer followed counted as one."""
    refused = sorted(refused + list(unknown.items()), key=lambda r: targets.index(r[0]))
    if not refused:
        return None
    if not every:
        return SettleError(f"the daemon refused {name}: {refused[0][1]}")
    why = "; ".join(f"{d}: {err}" for d, err in refused)
    return SettleError(
        f"the daemon refused {name} for {len(refused)} of {len(targets)} straps ({why})"
    )


def _not_stored(result: dict[str, Any]) -> str:
    """What follows "ok" when the daemon says what the command recorded is not yet in the
    session store (``"stored": false``): an ok alone read as saved to disk."""
    if result.get("stored") is not False:
        return ""
    return (
        ", kept in memory: the session store is not taking writes now (the daemon's log says "
        "why); it is written when the store works again"
    )


def _device_for_label(device: str | None) -> str | None:
    from settle.pairing import device_for_label

    try:
        return None if device is None else device_for_label(device)
    except ConfigError as exc:
        fail(str(exc), 2)


async def _find_device(
    client: Any, base: str, *, need_session: bool, device: str | None = None, where: str = ""
) -> str:
    """The one device this daemon serves, from the retained topics (``device``: the one the
    user named, once the daemon is seen online and knows it)."""
    state_topic, info_topic = f"{base}/bridge/state", f"{base}/bridge/info"
    filters = [f"{base}/+/availability", f"{base}/+/session"]
    if device is not None:
        filters.append(info_topic)
    seen = await _retained(client, filters, state_topic)
    daemon_online = seen.get(state_topic, (b"", False))[0] == b"online"
    if device is not None:
        if not daemon_online:
            raise SettleError(_nothing_found(need_session, False, set(), where))
        # Every strap the daemon served retains its availability and session (online or
        # not: a strap reconnecting still takes a marker); a name with neither is a typo.
        straps = {t: v for t, v in seen.items() if t not in (state_topic, info_topic)}
        served, others = _served(seen, info_topic, straps)
        if device not in served | others:
            have = f"it serves {', '.join(sorted(served))}" if served else "it serves no strap yet"
            if others:
                n = len(others)
                have += (
                    f"; the broker also retains {n} other strap{'' if n == 1 else 's'}, of "
                    "earlier runs or other daemons"
                )
            raise SettleError(
                f"no strap {shown(device)} on this daemon ({have}; --device takes a device id "
                "or a label from `settle pair --list`)"
            )
        return device
    found = _active(seen, state_topic, need_session, daemon_online, where)
    if len(found) > 1:
        raise SettleError(
            f"several devices are active ({', '.join(sorted(found))}); pick --device, or --all"
        )
    return found.pop()


def _served(
    seen: dict[str, tuple[bytes, bool]], info_topic: str, straps: dict[str, tuple[bytes, bool]]
) -> tuple[set[str], set[str]]:
    """The straps the daemon online serves — those in its ``bridge/info``, those connected
    (``availability online``) and those with a running session (another daemon's on the
    base included) — and the others the broker retains a state of: of earlier runs, or of
    daemons gone (the demo's, another store's). Every one of them still takes a command (a
    strap reconnecting does); only the first are named as served (all were, from stale
    retained topics)."""
    served: set[str] = set()
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        devices = json.loads(seen.get(info_topic, (b"", False))[0]).get("devices")
        if isinstance(devices, list):
            served |= {d for d in devices if isinstance(d, str)}
    for topic, (payload, _) in straps.items():
        dev, leaf = topic.split("/")[-2:]
        if leaf == "availability" and payload == b"online":
            served.add(dev)
        elif leaf == "session":
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                if json.loads(payload).get("state") == "running":
                    served.add(dev)
    return served, {t.split("/")[-2] for t in straps} - served


async def _active_devices(client: Any, base: str, *, need_session: bool, where: str) -> set[str]:
    """Every device that can take the command: a running session (or, for ``session/start``,
    a connected strap), from the retained topics; SettleError when there is none."""
    state_topic = f"{base}/bridge/state"
    filters = [f"{base}/+/availability", f"{base}/+/session"]
    seen = await _retained(client, filters, state_topic)
    daemon_online = seen.get(state_topic, (b"", False))[0] == b"online"
    return _active(seen, state_topic, need_session, daemon_online, where)


def _active(
    seen: dict[str, tuple[bytes, bool]],
    state_topic: str,
    need_session: bool,
    daemon_online: bool,
    where: str,
) -> set[str]:
    connected: set[str] = set()
    running: set[str] = set()
    for topic, (raw, _) in seen.items():
        if topic == state_topic:
            continue
        dev, leaf = topic.split("/")[-2:]
        if leaf == "session":
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                if json.loads(raw).get("state") == "running":
                    running.add(dev)
        elif raw == b"online":
            connected.add(dev)
    # Without a daemon on the broker (its Last Will says offline), what it retains is stale.
    found = (running if need_session else connected) if daemon_online else set()
    if not found:
        raise SettleError(_nothing_found(need_session, daemon_online, connected, where))
    return found


def _nothing_found(
    need_session: bool, daemon_online: bool, connected: set[str], where: str = ""
) -> str:
    """Why no device could take the command: no daemon, no strap, or no session."""
    if not daemon_online:
        on = f"the MQTT broker {where}" if where else "the MQTT broker"
        return (
            f"no Settle daemon is online on {on} (start `settle demo` or `settle run`, or "
            "point --mqtt at the broker it uses)"
        )
    if not connected:
        return (
            "a Settle daemon is running but no strap is connected (wet the electrodes; a phone "
            "or watch may hold the strap's only connection)"
        )
    straps = ", ".join(sorted(connected))
    which = f"strap {straps} is" if len(connected) == 1 else f"straps {straps} are"
    return f"{which} connected but no session is running; start one with `settle session start`"


WEAK_RSSI_DBM = -85
"""Below this, BLE links to a chest strap start dropping notifications (and connections)."""


def _signal_text(rssi_dbm: int | None) -> str | None:
    """``settle pair``'s signal line: dBm, and a hint when the link will be fragile."""
    if rssi_dbm is None:
        return None
    weak = " (weak: bring the strap and this computer closer)" if rssi_dbm < WEAK_RSSI_DBM else ""
    return f"{rssi_dbm} dBm{weak}"


@app.command()
def analyze(
    file: Annotated[
        str,
        typer.Argument(
            help="RR recording (CSV t_s,rr_ms / table with an RR column / one RR per line / .hrm)."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    no_correction: Annotated[
        bool, typer.Option("--no-correction", help="Use the raw intervals as given.")
    ] = False,
    beats: Annotated[
        Path | None,
        typer.Option("--beats", help="Write t_s,rr_raw_ms,rr_ms,class CSV.", parser=a_path),
    ] = None,
    rolling: Annotated[
        Path | None,
        typer.Option("--rolling", help="Write the rolling series CSV.", parser=a_path),
    ] = None,
    window: Annotated[
        float | None,
        typer.Option("--window", help="Rolling window, 20-600 s (default processing.window_s)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace existing --beats/--rolling files (never FILE itself)."
        ),
    ] = False,
    spectrum: Annotated[
        str,
        typer.Option(
            "--spectrum",
            help="Whole-recording spectrum: welch (resampled, within unbroken runs) or "
            "lomb (Lomb-Scargle at the beats' own times, for gappy recordings).",
        ),
    ] = "welch",
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            metavar="START:STOP|auto",
            help="The settling score's baseline in --rolling: a rest period, seconds of the "
            "recording (as log set --baseline); 'auto' for the first processing.baseline_s. "
            "Default: the marked rest period a Settle export holds, else auto.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Analyse an RR recording offline: HRV summary, artefacts, rolling indices.

    The [processing] settings of the config apply as they do live: window_s, baseline_s,
    indices_every_s, correction and the plausible RR range; --window and --no-correction
    override them."""
    from settle.analyze import (
        AnalyzeUsageError,
        hf_truncated_at,
        run_analyze,
        score_baseline_line,
    )

    if not file:  # Path("") is ".", which read as "is a directory, not an RR file"
        fail("the recording path is empty: name an RR file", 2)
    p = settings_from(config).processing
    rest_s = None
    if baseline is not None and baseline.strip().lower() != "auto":
        rest_s = cli_sessions.baseline_bounds(baseline)
        cli_sessions.check_baseline_span(rest_s, p.indices_every_s, baseline)
    try:
        a, doc = run_analyze(
            Path(file),
            as_json=as_json,
            correction=p.correction and not no_correction,
            beats=beats,
            rolling=rolling,
            window_s=p.window_s if window is None else window,
            force=force,
            baseline_s=p.baseline_s,
            rr_range_ms=(p.rr_min_ms, p.rr_max_ms),
            spectrum=spectrum,
            step_s=p.indices_every_s,
            rest_s=rest_s,
            auto_baseline=baseline is not None and rest_s is None,
        )
    except AnalyzeUsageError as exc:  # a bad option: exit 2 like any other usage error
        fail(str(exc), 2)
    except SettleError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(doc))
        return
    s = doc["summary"]
    rows = [[k, "–" if v is None else v if isinstance(v, str) else f"{v:.4g}"]
            for k, v in s.items()]  # fmt: skip
    rows.insert(0, ["usable", "yes" if a.usable else f"no ({a.reason})"])
    rows.insert(1, ["flagged beats", str(a.beats.n_flagged)])
    print_table(["metric", "value"], rows)
    if (line := score_baseline_line(a, p.indices_every_s)) is not None:
        out.print(line[0].upper() + line[1:] + ".", markup=False)
    cut = hf_truncated_at(a)
    if cut is not None:
        out.print(
            f"hf_ms2 covers 0.15–{cut:.3g} Hz only: at {120 * cut:.0f} beats/min the beats "
            f"cannot carry faster rhythms (their Nyquist frequency is {cut:.3g} Hz).",
            markup=False,
        )
    if not a.usable:
        # The numbers are printed for researchers; a practitioner must not read them as HRV.
        # The reason is the one the analysis gave (not every unusable file is a rhythm).
        out.print(
            f"Not usable ({a.reason}): the values above are printed for research; "
            "do not read them as heart-rate variability.",
            markup=False,
        )


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    mqtt: MqttOpt = None,
    no_mqtt: NoMqttOpt = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check Bluetooth, the MQTT broker, the session store and the clock; exit 1 if any fails."""
    from settle.doctor import run_checks, to_json

    settings = settings_from(config, mqtt=mqtt, no_mqtt=no_mqtt, db=db)
    checks = asyncio.run(run_checks(settings, no_mqtt_flag=no_mqtt))
    if as_json:
        print(json.dumps(to_json(checks)))
    else:
        for c in checks:
            out.print(c.line(), markup=False)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def _silence_stdout() -> None:
    """Point stdout at the null device, so the interpreter's final flush of what could not
    be written does not print a second error."""
    import os
    import sys

    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass


class _Stdout:
    """``sys.stdout``, marking every error of writing it (``settle_stdout``), so that
    :func:`main` tells a failed write of the output from any other ``OSError`` (an
    ``ssl.SSLError`` was reported as "cannot write the output")."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except OSError as exc:
            exc.settle_stdout = True  # type: ignore[attr-defined]
            raise

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            exc.settle_stdout = True  # type: ignore[attr-defined]
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main() -> None:
    """The ``settle`` command. A usage error (unknown command or option, missing argument,
    bad value) is one line on stderr, exit code 2, like every other error."""
    import os
    import sys

    # Started with stdout or stderr closed (`settle analyze f --json >&-`): Python leaves
    # them None and the first write or flush raised a traceback. Such output is discarded.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the process's own stdout)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    sys.stdout = _Stdout(sys.stdout)
    try:
        code = app(prog_name="settle", standalone_mode=False)
        sys.stdout.flush()  # here, so a failing write is reported below, not at exit
    except OSError as exc:
        if not getattr(exc, "settle_stdout", False):
            # Not the output (a file, a socket, TLS): the error itself, one line.
            why = exc.strerror or str(exc) or type(exc).__name__
            msg = f"{exc.filename}: {why}" if exc.filename else why
            err.print(f"settle: error: {one_line(msg)}", markup=False, soft_wrap=True)
            sys.exit(1)
        _silence_stdout()
        if isinstance(exc, BrokenPipeError):
            # The reader went away (`settle analyze … --json | head -c 10`): nothing to
            # report. (The daemon's console handles this itself and goes on recording.)
            sys.exit(1)
        # Output that cannot be written (stdout on a full disk, /dev/full): one line.
        why = exc.strerror or str(exc)
        err.print(
            f"settle: error: {one_line(f'cannot write to standard output: {why}')}",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(1)
    except typer.Abort:
        err.print("settle: aborted", markup=False)
        sys.exit(1)
    except Exception as exc:
        # click's ClickException / UsageError (vendored by newer typer, so matched by shape)
        fmt, exit_code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
        if not callable(fmt) or not isinstance(exit_code, int):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `settle log`: the group's help
            err.print(fmt(), markup=False, soft_wrap=True)
            sys.exit(exit_code)
        ctx = getattr(exc, "ctx", None)
        path = getattr(ctx, "command_path", None)
        hint = f" (see `{path} --help`)" if path and exit_code == 2 else ""
        err.print(f"settle: error: {one_line(fmt())}{hint}", markup=False, soft_wrap=True)
        sys.exit(exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
