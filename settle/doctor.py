"""``settle doctor``: is this machine ready to run the daemon?

Four checks, each a :class:`Check` with a one-line result and, when it fails, a fix:

* **bluetooth** — bleak can reach an adapter (BlueZ over the system D-Bus on Linux) and scan.
* **mqtt** — the configured broker answers and accepts our login
  (``settle.broker_options.connect_options``, so TLS, username and password are exactly
  what the daemon would use).
* **database** — the store's directory, or the nearest one that exists (nothing is created),
  is writable; an existing store is Settle's (not another program's SQLite file, not some
  other file) and opens for writing. Nothing is written to the store itself: a temporary
  file proves the directory, ``BEGIN IMMEDIATE`` proves the file.
* **clock** — monotonic and wall clocks advance together; NTP synchronisation per
  ``timedatectl show`` where systemd offers it.

Every check is bounded in time; none raises (an unexpected failure is a failed check).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import errno
import os
import shutil
import sqlite3
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from sessions.store import (
    daemon_running,
    damage_of,
    damaged_store_hint,
    foreign_store,
    newer_schema,
)
from settle.config import Settings
from settle.errors import ConfigError

CheckName = Literal["bluetooth", "mqtt", "database", "clock"]

MIN_FREE_BYTES = 50 * 2**20
"""Below this much free space on the store's file system the database check fails."""


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check."""

    name: CheckName
    ok: bool
    detail: str
    """What was found, one line."""
    fix: str = ""
    """What to do about it (empty when ``ok``)."""

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        text = f"{mark} {self.name:<9s} {self.detail}"
        return text if self.ok or not self.fix else f"{text}\n    fix: {self.fix}"


# -- Bluetooth -----------------------------------------------------------------------------

BLUEZ_FIX = (
    "install and start BlueZ (Debian/Ubuntu: `sudo apt-get install bluez && sudo systemctl "
    "enable --now bluetooth`); in a container, mount the host's /run/dbus/system_bus_socket "
    "and share its adapter (--net=host). Without hardware, `settle demo` runs a virtual strap"
)


async def check_bluetooth(
    timeout_s: float = 3.0, scanner_kwargs: dict[str, Any] | None = None
) -> Check:
    """A short scan through bleak (the daemon's own path). ``scanner_kwargs`` selects the
    backend as for :class:`~sensors.strap.StrapClient` (tests use the virtual air)."""
    from bleak import BleakScanner
    from bleak.exc import BleakError

    kwargs = scanner_kwargs or {}
    try:
        async with asyncio.timeout(timeout_s + 5):
            async with BleakScanner(**kwargs):
                await asyncio.sleep(min(1.0, timeout_s))
    except FileNotFoundError:
        return Check("bluetooth", False, "no BlueZ / system D-Bus found", BLUEZ_FIX)
    except PermissionError:
        return Check("bluetooth", False, "permission denied by BlueZ", _bt_permission_fix())
    except TimeoutError:
        return Check(
            "bluetooth",
            False,
            f"the Bluetooth stack did not answer in {timeout_s:g} s",
            "restart it: `sudo systemctl restart bluetooth`",
        )
    except (BleakError, OSError) as exc:
        text = str(exc) or type(exc).__name__
        low = text.lower()
        if "accessdenied" in low.replace(" ", "") or "not authorized" in low:
            return Check("bluetooth", False, f"permission denied ({text})", _bt_permission_fix())
        if "no bluetooth adapter" in low or "not found" in low:
            return Check(
                "bluetooth",
                False,
                f"no adapter ({text})",
                "plug in a Bluetooth LE adapter; `rfkill unblock bluetooth`; "
                "`bluetoothctl power on`",
            )
        if "not ready" in low or "powered" in low:
            return Check(
                "bluetooth",
                False,
                f"adapter off ({text})",
                "`bluetoothctl power on` (and `rfkill unblock bluetooth`)",
            )
        return Check("bluetooth", False, text, BLUEZ_FIX)
    return Check("bluetooth", True, "adapter answers; scanning works")


def _bt_permission_fix() -> str:
    return (
        "allow your user to use Bluetooth: `sudo usermod -aG bluetooth $USER`, then log in "
        "again (or run the daemon as a systemd user service from a desktop session)"
    )


# -- MQTT ------------------------------------------------------------------------------------

_CONFIG_FIX = collections.defaultdict(
    lambda: "fix the [mqtt] setting named",
    {
        "mqtt.password_file": "`chmod 600` the password file (it must be UTF-8 text "
        "readable by this user and no other account), or give the password in "
        "SETTLE_MQTT__PASSWORD",
        "mqtt.ca_file": "point mqtt.ca_file at the PEM file of the CA that signed the "
        "broker's certificate",
        "mqtt.cert_file": "point mqtt.cert_file at the client's PEM certificate",
        "mqtt.key_file": "point mqtt.key_file at the PEM private key of mqtt.cert_file",
        "mqtt.tls": "install the system's CA certificates (Debian: ca-certificates), or set "
        "mqtt.ca_file",
    },
)


async def check_mqtt(
    settings: Settings, timeout_s: float = 5.0, *, off_by_flag: bool = False
) -> Check:
    """Connect and log in as the daemon would; disconnect at once. ``off_by_flag``: MQTT
    was turned off with ``--no-mqtt`` (not by the config)."""
    import aiomqtt

    from feedback.broker import LOOPBACK, probe
    from settle.broker_options import connect_options

    m = settings.mqtt
    if not m.enabled:
        if off_by_flag:
            return Check("mqtt", True, "MQTT is turned off (--no-mqtt)")
        return Check("mqtt", True, "MQTT is turned off in the config (mqtt.enabled = false)")
    if not m.host and m.embedded != "never" and not await probe(LOOPBACK, m.port):
        if m.embedded == "always":
            return Check("mqtt", True, "the daemon starts its embedded broker (embedded = always)")
        return Check(
            "mqtt",
            True,
            f"nothing answers on {LOOPBACK}:{m.port}; the daemon will start its embedded "
            "broker on 127.0.0.1",
        )
    where = f"{'mqtts' if m.tls else 'mqtt'}://{m.host or LOOPBACK}:{m.port}"
    try:
        # The password file and the TLS files, read and checked as the daemon would.
        opts = connect_options(settings)
        kwargs = opts.client_kwargs()
    except ConfigError as exc:
        # A world-readable password file raised here, outside any check: a traceback.
        return Check("mqtt", False, f"{where}: {exc.field}: {exc.reason}", _CONFIG_FIX[exc.field])
    except (OSError, ssl.SSLError) as exc:
        return Check(
            "mqtt",
            False,
            f"{where}: TLS files unusable ({exc})",
            "check mqtt.ca_file, cert_file and key_file",
        )
    try:
        async with asyncio.timeout(timeout_s + 1):
            async with aiomqtt.Client(
                **kwargs, identifier=f"settle-doctor-{os.getpid()}", timeout=timeout_s
            ):
                pass
    except aiomqtt.MqttCodeError as exc:
        rc = getattr(exc.rc, "value", exc.rc)
        if rc in (4, 5, 134, 135):  # 3.1.1: bad credentials / not authorised; 5: the same
            who = f"user {opts.username!r}" if opts.username else "anonymous login"
            return Check(
                "mqtt",
                False,
                f"{where}: the broker refused {who} ({exc})",
                "set mqtt.username and the password (SETTLE_MQTT__PASSWORD or "
                "mqtt.password_file), or allow this client in the broker's ACL",
            )
        return Check(
            "mqtt",
            False,
            f"{where}: refused ({exc})",
            'see the broker\'s log; for an old broker set mqtt.protocol = "3.1.1"',
        )
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError) or "timed out" in text.lower():
            fix = "check the host and any firewall between here and the broker"
        elif "certificate" in text.lower() or "ssl" in text.lower():
            fix = "check mqtt.ca_file (the CA that signed the broker's certificate) and the host"
        else:
            fix = (
                f"start a broker there (Debian: `sudo apt-get install mosquitto`) or fix "
                f"mqtt.host / mqtt.port (now {opts.host}:{opts.port})"
            )
        return Check("mqtt", False, f"{where}: unreachable ({text})", fix)
    login = f" as {opts.username!r}" if opts.username else ""
    return Check("mqtt", True, f"{where}: connected and logged in{login}")


# -- database ------------------------------------------------------------------------------


def check_database(db_path: Path) -> Check:
    """The store's directory exists and is writable, and an existing store can be written.
    A path the system refuses to look at (a name too long) fails the check: it aborted
    `settle doctor`, and `--json` printed nothing."""
    try:
        return _check_database(db_path)
    except OSError as exc:
        return Check(
            "database",
            False,
            f"{db_path}: cannot check it ({exc.strerror or exc})",
            "choose another file with --db / storage.db_path",
        )


def _check_database(db_path: Path) -> Check:
    parent = db_path.parent
    fix_dir = (
        f"make {parent} writable by this user (`chown $USER {parent}`), or choose another "
        "file with --db / storage.db_path"
    )
    # A check creates nothing: the nearest directory that exists must be writable, and the
    # first run creates the rest.
    existing = parent
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return Check("database", False, f"{existing} is not a directory", fix_dir)
    if db_path.is_dir():
        return Check(
            "database",
            False,
            f"{db_path} is a directory",
            "name a file with --db / storage.db_path",
        )
    try:
        # mkstemp: a fresh name, O_EXCL, mode 0600 — safe in a shared directory.
        fd, probe = tempfile.mkstemp(prefix=".settle-doctor-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        # WAL mode needs the directory too (it creates -wal and -shm next to the file).
        if exc.errno == errno.EROFS:
            # A read-only mount: no chown makes it writable.
            return Check(
                "database",
                False,
                f"{existing} is on a read-only file system",
                "choose a store on a writable disk with --db / storage.db_path (or remount "
                "that one read-write)",
            )
        why = "read-only" if exc.errno in (errno.EACCES, errno.EPERM) else exc
        return Check("database", False, f"{existing} is not writable ({why})", fix_dir)
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        return Check(
            "database",
            False,
            f"only {free / 2**20:.0f} MiB free under {parent}",
            "free some disk space (a session hour takes about 1 MB)",
        )
    if db_path.exists():
        not_ours = "choose another file with --db / storage.db_path (Settle creates its own store)"
        # SQLite opens a file it cannot write read-only without a word (mode=rw included),
        # so a 0400 store passed as "writable" while the daemon refused it; its -wal/-shm
        # made 0400 by a read-only command made the daemon fail after `chmod 600` on it.
        # (Before connecting: opening a 0400 store here would leave such files too.)
        for f in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            if (f == db_path or f.exists()) and not os.access(f, os.R_OK | os.W_OK):
                mode = f.stat().st_mode & 0o777
                return Check(
                    "database",
                    False,
                    f"{f} is not writable by this user (mode {mode:04o}): the daemon "
                    "cannot record into the store",
                    f"chmod 600 {f} (or `chown $USER {f}`), or choose another file with "
                    "--db / storage.db_path",
                )
        try:
            # The path as a file: URI (a '#', '?' or '%' in the name made it another file:
            # a false ✓ for a file that is no store, and a stray empty file created).
            uri = db_path.resolve().as_uri()
            con = sqlite3.connect(f"{uri}?mode=rw", uri=True, timeout=2.0)
            try:
                foreign = db_path.stat().st_size > 0 and foreign_store(con)
                # What the daemon refuses (it read "writable" for a store it would not open).
                newer = None if foreign else newer_schema(con, db_path)
                con.execute("BEGIN IMMEDIATE")
                con.execute("ROLLBACK")
                damage = None if foreign or newer else damage_of(con)
                running = [] if foreign or newer or damage else _running_sessions(con)
            finally:
                con.close()
        except sqlite3.Error as exc:
            if "not a database" in str(exc):
                return Check(
                    "database", False, f"{db_path}: not a Settle session store (not a SQLite "
                    "file)", not_ours
                )  # fmt: skip
            return Check(
                "database",
                False,
                f"{db_path}: cannot write ({exc})",
                f"check the file's owner and mode (`ls -l {db_path}`); another "
                "process may hold a write lock",
            )
        if foreign:
            return Check(
                "database",
                False,
                f"{db_path}: not a Settle session store (a SQLite file of another program)",
                not_ours,
            )
        if newer is not None:
            return Check(
                "database",
                False,
                newer,
                "upgrade Settle, or choose another file with --db / storage.db_path",
            )
        if damage is not None:
            return Check(
                "database",
                False,
                f"{db_path}: the session store is damaged ({damage})",
                damaged_store_hint(db_path),
            )
        mode = db_path.stat().st_mode & 0o777
        if mode & 0o007:
            # Settle creates it 0600; a copy restored from a backup may not be. Health data
            # (a group a coach shares is the owner's choice; every account is not).
            return Check(
                "database",
                False,
                f"{db_path} is readable by every account on this machine (mode {mode:04o})",
                f"chmod 600 {db_path} (and its -wal/-shm files, if any)",
            )
        detail = f"{db_path} writable ({free / 2**30:.1f} GiB free)"
        if daemon_running(db_path):
            detail += "; a Settle daemon is recording into it"
        elif running:
            # kill -9, a power cut: harmless (the next daemon marks them interrupted), but
            # `sessions list` shows them running meanwhile, so say why.
            them = "it" if len(running) == 1 else "them"
            detail += (
                f"; {_plural_sessions(running)} marked running with no daemon recording "
                f"(left by a crash: the next `settle run`/`demo` marks {them} interrupted)"
            )
        return Check("database", True, detail)
    return Check(
        "database",
        True,
        f"{db_path} will be created at the first run ({existing} writable, "
        f"{free / 2**30:.1f} GiB free)",
    )


def _running_sessions(con: sqlite3.Connection) -> list[str]:
    try:
        return [r[0] for r in con.execute("SELECT id FROM sessions WHERE state = 'running'")]
    except sqlite3.Error:  # an empty or older file without the table: nothing running
        return []


def _plural_sessions(ids: list[str]) -> str:
    return f"session {ids[0]}" if len(ids) == 1 else f"{len(ids)} sessions ({', '.join(ids)})"


# -- clock ---------------------------------------------------------------------------------


def check_clock(
    timedatectl: Callable[[], str | None] | None = None, sample_s: float = 0.2
) -> Check:
    """Monotonic and wall clocks advance together over ``sample_s``; NTP synchronised."""
    w0, m0 = time.time(), time.monotonic()
    time.sleep(sample_s)
    w1, m1 = time.time(), time.monotonic()
    skew_ms = abs((w1 - w0) - (m1 - m0)) * 1000
    if skew_ms > 50:
        return Check(
            "clock",
            False,
            f"wall clock moved {skew_ms:.0f} ms against the monotonic clock in "
            f"{sample_s:g} s (something is stepping it)",
            "let one NTP client keep time (`timedatectl set-ntp true`)",
        )
    if w1 < 1_600_000_000:
        return Check(
            "clock",
            False,
            f"wall clock is {time.strftime('%F', time.gmtime(w1))}",
            "set the date (`sudo timedatectl set-ntp true`)",
        )
    out = (timedatectl or _timedatectl_show)()
    if out is None:
        return Check(
            "clock",
            True,
            f"monotonic and wall clock agree (Δ {skew_ms:.1f} ms); NTP state "
            "unknown (no systemd timedatectl here): session times rely on the "
            "host's clock",
        )
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if props.get("NTPSynchronized") == "yes":
        return Check(
            "clock", True, f"NTP synchronised; monotonic and wall agree (Δ {skew_ms:.1f} ms)"
        )
    return Check(
        "clock",
        False,
        "the wall clock is not NTP-synchronised",
        "`sudo timedatectl set-ntp true` (systemd-timesyncd, chrony or ntpd)",
    )


def _timedatectl_show() -> str | None:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        r = subprocess.run([exe, "show"], capture_output=True, text=True, timeout=3, check=False)
        if r.returncode == 0:
            return r.stdout
    return None  # not booted with systemd (containers): nothing to ask


# -- all -----------------------------------------------------------------------------------


async def run_checks(
    settings: Settings,
    *,
    scanner_kwargs: dict[str, Any] | None = None,
    no_mqtt_flag: bool = False,
) -> list[Check]:
    """Every check, in a fixed order; bounded by each check's own timeout."""
    bt, mq = await asyncio.gather(
        check_bluetooth(scanner_kwargs=scanner_kwargs),
        check_mqtt(settings, off_by_flag=no_mqtt_flag),
    )
    db = await asyncio.to_thread(check_database, settings.db_path)
    clock = await asyncio.to_thread(check_clock)
    return [bt, mq, db, clock]


def to_json(checks: list[Check]) -> dict[str, Any]:
    return {
        "ok": all(c.ok for c in checks),
        "checks": [dataclasses.asdict(c) for c in checks],
    }
