"""``settle doctor``: each check's verdict and fix against real services — a private
mosquitto (reachable, refusing the login, absent), a real directory made read-only, the
virtual Bluetooth air — and the command's output (lines, ``--json``, exit code)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakError

from feedback.broker import free_loopback_port
from sensors.virtual.air import VirtualAir
from settle.config import load_config
from settle.doctor import check_bluetooth, check_clock, check_database, check_mqtt, run_checks
from tests.conftest import Mosquitto, read_only_dir, start_mosquitto

CONFIG = Path(__file__).parents[1] / "configs" / "settle.toml"


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLE_")}
    env["SETTLE_CONFIG"] = str(CONFIG)
    return subprocess.run(
        [sys.executable, "-m", "settle.cli", "doctor", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def by_name(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    checks = doc["checks"]
    assert isinstance(checks, list)
    return {c["name"]: c for c in checks}


def test_json_reports_every_check_and_exit_code_follows(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "new" / "dir" / "settle.db"
    res = doctor("--json", "--mqtt", f"127.0.0.1:{mosquitto.port}", "--db", str(db))
    doc = json.loads(res.stdout)
    checks = by_name(doc)
    assert list(checks) == ["bluetooth", "mqtt", "database", "clock"]
    assert checks["mqtt"]["ok"] is True
    assert "connected and logged in" in str(checks["mqtt"]["detail"])
    assert checks["database"]["ok"] is True
    assert "will be created" in str(checks["database"]["detail"])
    # A check creates nothing (it used to create the directories, and a literal "$VAR" one
    # from an unset variable): the nearest existing directory is proven writable.
    assert f"({tmp_path} writable" in str(checks["database"]["detail"])
    assert not (tmp_path / "new").exists()
    for c in checks.values():
        assert c["ok"] or c["fix"], f"{c['name']} fails without a fix"
    assert doc["ok"] == all(c["ok"] for c in checks.values())
    assert res.returncode == (0 if doc["ok"] else 1)


def test_human_output_marks_each_line_and_gives_fixes(tmp_path: Path) -> None:
    port = free_loopback_port()  # nothing listens there
    res = doctor("--mqtt", f"127.0.0.1:{port}", "--db", str(tmp_path / "s.db"))
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    marks = [ln for ln in lines if ln[:1] in "✓✗"]
    assert [ln.split()[1] for ln in marks] == ["bluetooth", "mqtt", "database", "clock"]
    mqtt_line = next(ln for ln in marks if ln.split()[1] == "mqtt")
    assert mqtt_line.startswith("✗") and f"127.0.0.1:{port}" in mqtt_line
    fix = lines[lines.index(mqtt_line) + 1]
    assert fix.strip().startswith("fix:") and "mosquitto" in fix
    assert "Traceback" not in res.stderr


async def test_broker_refusing_the_login_is_named(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path, anonymous=False)
    try:
        s = load_config(CONFIG, mqtt={"host": "127.0.0.1", "port": broker.port})
        c = await check_mqtt(s)
    finally:
        broker.stop()
    assert not c.ok
    assert "refused anonymous login" in c.detail
    assert "mqtt.username" in c.fix and "SETTLE_MQTT__PASSWORD" in c.fix


def test_read_only_store_directory_fails_with_a_fix(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    with read_only_dir(ro):
        c = check_database(ro / "settle.db")
        res = doctor("--json", "--no-mqtt", "--db", str(ro / "settle.db"))
    assert not c.ok
    assert "not writable" in c.detail and "read-only" in c.detail
    assert "--db" in c.fix
    assert res.returncode == 1
    assert by_name(json.loads(res.stdout))["database"]["ok"] is False
    assert list(ro.iterdir()) == []  # nothing left behind


def test_a_store_on_a_read_only_mount_is_not_told_to_chown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store directory on a read-only mount (a backup disk): doctor said "not writable
    (read-only)" and told the user to `chown $USER` it, which cannot help."""
    import errno

    import settle.doctor as d

    def read_only_fs(*_a: object, **_k: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(d.tempfile, "mkstemp", read_only_fs)
    c = check_database(tmp_path / "settle.db")
    assert not c.ok and c.detail == f"{tmp_path} is on a read-only file system"
    assert "chown" not in c.fix and "--db" in c.fix


def test_existing_store_is_opened_for_writing(tmp_path: Path) -> None:
    from sessions.store import SessionStore

    db = tmp_path / "s.db"
    SessionStore.open(db).close()
    c = check_database(db)
    assert c.ok and "writable" in c.detail
    (tmp_path / "notadb.db").write_bytes(b"this is not sqlite" * 100)
    bad = check_database(tmp_path / "notadb.db")
    # As `settle sessions list` says, not "cannot write … another process may hold a lock".
    assert not bad.ok and bad.detail.endswith("not a Settle session store (not a SQLite file)")
    assert "lock" not in bad.fix
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.close()
    c = check_database(other)  # passed as "writable"; every other command refuses it
    assert not c.ok and "a SQLite file of another program" in c.detail
    assert not check_database(tmp_path).ok  # a directory is no store either
    # A store restored from a backup as 0644 passed as "writable": health data others read.
    db.chmod(0o644)
    c = check_database(db)
    assert not c.ok and c.detail == f"{db} is readable by every account on this machine (mode 0644)"
    assert c.fix.startswith(f"chmod 600 {db}")
    db.chmod(0o640)  # a group the owner shares it with: their choice
    assert check_database(db).ok


def test_database_check_names_sessions_a_crash_left_running(tmp_path: Path) -> None:
    """After kill -9 `settle sessions list` shows the session running and doctor said only
    "writable": say it was left by a crash (no daemon holds the store) and what happens to
    it; with a daemon recording, say that instead."""
    from sessions.store import SessionStore, daemon_lock

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", 1_795_000_000_000, "x", {}).id
    c = check_database(db)
    assert c.ok and c.detail.endswith(
        f"; session {sid} marked running with no daemon recording (left by a crash: the next "
        "`settle run`/`demo` marks it interrupted)"
    ), c.detail
    with daemon_lock(db):
        c = check_database(db)
    assert c.ok and c.detail.endswith("; a Settle daemon is recording into it"), c.detail


def test_a_damaged_store_is_named_by_doctor_and_refused_before_recording(
    tmp_path: Path,
) -> None:
    """A store with one damaged page: doctor said "writable", and the daemon started, failed
    at its first write and kept the whole session in memory (at the stop only the RR went to
    a rescue file). Now both say it is damaged and what to do; the file is left as it was."""
    from sessions.store import SessionStore
    from tests.test_sessions_store import beats, new_session

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        for _ in range(3):
            store.add_beats(new_session(store).id, beats(0, 3000))
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = 4096 * 5  # a b-tree page of the beats table: 400 bytes inverted
    raw = bytearray(db.read_bytes())
    raw[page : page + 400] = bytes(b ^ 0xFF for b in raw[page : page + 400])
    db.write_bytes(raw)
    c = check_database(db)
    assert not c.ok and c.detail.startswith(f"{db}: the session store is damaged (")
    assert ".recover" in c.fix and "\n" not in c.detail
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLE_")}
    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", "demo", "--no-mqtt", "--no-http", "--db", str(db),
         "--duration", "3", "--speed", "20"],
        capture_output=True, text=True, timeout=60, env={**env, "SETTLE_CONFIG": str(CONFIG)},
    )  # fmt: skip
    assert res.returncode != 0 and "session:" not in res.stdout, res.stdout
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"settle: error: {db}: the session store is damaged ("), line
    assert db.read_bytes() == raw


async def test_bluetooth_passes_on_the_virtual_air() -> None:
    async with VirtualAir() as air:
        ok = await check_bluetooth(timeout_s=0.2, scanner_kwargs=air.scanner_kwargs())
    assert ok.ok and ok.fix == ""


class _RefusingScanner(BaseBleakScanner):
    """A bleak scanner backend whose start raises what a real stack raised (``error=``)."""

    def __init__(self, callback: Any, uuids: Any, mode: str = "active", **kw: Any) -> None:
        super().__init__(callback, uuids)
        self._error: BaseException = kw["error"]

    async def start(self) -> None:
        raise self._error

    async def stop(self) -> None:
        pass


@pytest.mark.parametrize(
    ("error", "detail", "fix"),
    [
        # bleak on a machine without BlueZ / the system bus (the D-Bus socket is missing)
        (FileNotFoundError(2, "No such file or directory"), "no BlueZ", "bluez"),
        (PermissionError(13, "Permission denied"), "permission denied", "usermod -aG bluetooth"),
        (BleakError("No Bluetooth adapters found."), "no adapter", "plug in"),
        (
            BleakError("[org.bluez.Error.NotReady] Resource Not Ready"),
            "adapter off",
            "bluetoothctl power on",
        ),
        (
            BleakError("[org.freedesktop.DBus.Error.AccessDenied] Rejected send message"),
            "permission denied",
            "usermod -aG bluetooth",
        ),
    ],
)
async def test_bluetooth_failures_say_what_to_do(
    error: BaseException, detail: str, fix: str
) -> None:
    check = await check_bluetooth(
        timeout_s=0.2, scanner_kwargs={"backend": _RefusingScanner, "error": error}
    )
    assert not check.ok
    assert detail.lower() in check.detail.lower()
    assert fix.lower() in check.fix.lower()


def test_clock_reads_timedatectl() -> None:
    assert check_clock(lambda: "NTP=yes\nNTPSynchronized=yes\n", sample_s=0.01).ok
    unsynced = check_clock(lambda: "NTP=no\nNTPSynchronized=no\n", sample_s=0.01)
    assert not unsynced.ok and "set-ntp" in unsynced.fix
    unknown = check_clock(lambda: None, sample_s=0.01)
    assert unknown.ok and "unknown" in unknown.detail


async def test_all_pass_on_a_ready_machine(mosquitto: Mosquitto, tmp_path: Path) -> None:
    s = load_config(
        CONFIG,
        mqtt={"host": "127.0.0.1", "port": mosquitto.port},
        storage={"db_path": tmp_path / "s.db"},
    )
    async with VirtualAir() as air:
        checks = await run_checks(s, scanner_kwargs=air.scanner_kwargs())
    assert [c.ok for c in checks][:3] == [True, True, True], [c.line() for c in checks]


def test_no_mqtt_flag_is_named_as_the_reason_not_the_config(tmp_path: Path) -> None:
    """`settle doctor --no-mqtt` said "MQTT is turned off in the config (mqtt.enabled =
    false)" with a config that turns it on: the user then looks for a setting that is not
    there."""
    res = doctor("--json", "--no-mqtt", "--db", str(tmp_path / "s.db"))
    assert by_name(json.loads(res.stdout))["mqtt"]["detail"] == "MQTT is turned off (--no-mqtt)"
    off = tmp_path / "off.toml"
    text = CONFIG.read_text()
    assert "[mqtt]\nenabled = true\n" in text
    off.write_text(text.replace("[mqtt]\nenabled = true\n", "[mqtt]\nenabled = false\n", 1))
    res = doctor("--json", "--config", str(off), "--db", str(tmp_path / "s.db"))
    assert "turned off in the config" in str(by_name(json.loads(res.stdout))["mqtt"]["detail"])


def test_a_broker_flag_overrides_mqtt_turned_off_in_the_config(tmp_path: Path) -> None:
    """`--mqtt HOST:PORT` with `[mqtt] enabled = false` was ignored ("MQTT is turned off in
    the config"), as was `--http` with `[http] enabled = false` (no dashboard, no word): a
    flag overrides the config. Both `--mqtt` and `--no-mqtt` is a usage error."""
    from settle.cli import settings_from

    text = CONFIG.read_text()
    off = tmp_path / "off.toml"
    for section in ("mqtt", "http"):
        assert f"[{section}]\nenabled = true" in text
        text = text.replace(f"[{section}]\nenabled = true", f"[{section}]\nenabled = false", 1)
    off.write_text(text)
    assert load_config(off).mqtt.enabled is False and load_config(off).http.enabled is False
    port = free_loopback_port()  # nothing listens there
    res = doctor("--json", "--config", str(off), "--mqtt", f"127.0.0.1:{port}",
                 "--db", str(tmp_path / "s.db"))  # fmt: skip
    detail = str(by_name(json.loads(res.stdout))["mqtt"]["detail"])
    assert "turned off" not in detail and f"127.0.0.1:{port}" in detail, detail
    assert settings_from(off, http="127.0.0.1:0").http.enabled is True
    both = doctor("--mqtt", f"127.0.0.1:{port}", "--no-mqtt", "--db", str(tmp_path / "s.db"))
    assert both.returncode == 2 and "--mqtt and --no-mqtt exclude each other" in both.stderr


def test_unusable_password_and_tls_files_are_failed_checks_not_a_traceback(
    tmp_path: Path,
) -> None:
    """A world-readable ``mqtt.password_file`` made `settle doctor` end in a traceback (the
    ConfigError was raised outside any check): now the mqtt check fails with one line and a
    fix, and the other checks still run."""
    port = free_loopback_port()
    pw = tmp_path / "pw.txt"
    pw.write_text("secret\n")
    pw.chmod(0o644)
    not_a_cert = tmp_path / "ca.pem"
    not_a_cert.write_text("not a certificate\n")
    cases = [
        (
            f'[mqtt]\nusername = "u"\npassword_file = "{pw}"\n',
            f"mqtt://127.0.0.1:{port}: mqtt.password_file: {pw} is readable by every account "
            "(chmod 600 it)",
            "chmod 600",
        ),
        (
            f'[mqtt]\ntls = true\nca_file = "{not_a_cert}"\n',
            f"mqtts://127.0.0.1:{port}: mqtt.ca_file: {not_a_cert}: not a usable CA "
            "certificate file (X509: NO_CERTIFICATE_OR_CRL_FOUND)",
            "mqtt.ca_file",
        ),
    ]
    for toml, detail, fix in cases:
        cfg = tmp_path / "c.toml"
        cfg.write_text(toml)
        args = ("--config", str(cfg), "--mqtt", f"127.0.0.1:{port}", "--db", str(tmp_path / "s.db"))
        res = doctor("--json", *args)
        assert res.returncode == 1, res.stderr
        assert res.stderr == ""
        checks = by_name(json.loads(res.stdout))
        assert list(checks) == ["bluetooth", "mqtt", "database", "clock"]  # the rest ran
        assert checks["mqtt"]["ok"] is False
        assert checks["mqtt"]["detail"] == detail
        assert fix in str(checks["mqtt"]["fix"])
        assert checks["database"]["ok"] is True
        human = doctor(*args)
        assert human.returncode == 1 and "Traceback" not in human.stderr
        assert f"✗ mqtt      {detail}" in human.stdout.splitlines()
    assert "secret" not in res.stdout + human.stdout


def settle_without_overrides(*args: str) -> subprocess.CompletedProcess[str]:
    """``settle ARGS`` as a user whom file modes bind: as root, without the capabilities
    that let root ignore them (setpriv); skipped where that cannot be done."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file modes do not apply")
        caps = "-dac_override,-dac_read_search,-fowner"
        prefix = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLE_")}
    env["SETTLE_CONFIG"] = str(CONFIG)
    return subprocess.run(
        [*prefix, sys.executable, "-m", "settle.cli", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_a_store_this_user_cannot_write_fails_doctor_and_reading_leaves_no_side_files(
    tmp_path: Path,
) -> None:
    """A 0400 store in a writable directory: doctor said "✓ … writable" (SQLite opens it
    read-only without a word, even with mode=rw) while the daemon refused it; `sessions
    list` on it left 0400 -wal/-shm files, so after `chmod 600` on the store (the fix)
    the daemon still failed with "attempt to write a readonly database", naming no file.
    Now doctor fails it, reading leaves nothing behind, and the daemon names a -shm file
    it cannot write."""
    from sessions.store import SessionStore

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        store.create_session("dev", 1_795_000_000_000, "x", {})
    db.chmod(0o400)
    res = settle_without_overrides("doctor", "--no-mqtt", "--db", str(db))
    line = next(ln for ln in res.stdout.splitlines() if "database" in ln)
    assert line.startswith("✗") and f"{db} is not writable by this user (mode 0400)" in line
    assert res.returncode == 1
    listed = settle_without_overrides("sessions", "list", "--db", str(db))
    assert listed.returncode == 0 and "dev" in listed.stdout, listed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]  # no 0400 -wal/-shm
    db.chmod(0o600)  # the fix doctor gives: now the daemon records
    demo = ["demo", "--no-mqtt", "--no-http", "--duration", "1", "--speed", "20", "--db", str(db)]
    ran = settle_without_overrides(*demo)
    assert ran.returncode == 0, ran.stderr
    shm = Path(f"{db}-shm")  # one left 0400 by an older Settle, or by hand
    shm.touch()
    shm.chmod(0o400)
    res = settle_without_overrides("doctor", "--no-mqtt", "--db", str(db))
    line = next(ln for ln in res.stdout.splitlines() if "database" in ln)
    assert line.startswith("✗") and f"{shm} is not writable by this user" in line
    refused = settle_without_overrides(*demo)
    assert refused.returncode != 0
    assert f"{shm}: not writable by this user (mode 0400; chmod 600 it)" in refused.stderr


def test_a_store_of_a_newer_settle_fails_as_the_daemon_refuses_it(tmp_path: Path) -> None:
    """PRAGMA user_version = 999: doctor said "writable", the daemon refused the store."""
    from sessions.store import SessionStore
    from settle.errors import StoreError

    db = tmp_path / "s.db"
    SessionStore.open(db).close()
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("PRAGMA user_version = 999")
    c = check_database(db)
    assert not c.ok
    with pytest.raises(StoreError) as refused:
        SessionStore.open(db)
    assert c.detail == str(refused.value)
    assert "newer than this Settle supports" in c.detail


@pytest.mark.parametrize("name", ["my#1.db", "a?b.db", "p%41.db"])
def test_doctor_checks_the_store_whatever_its_name_holds(tmp_path: Path, name: str) -> None:
    """The path went into a SQLite URI as it was: with '#' or '?' in the name doctor checked
    another file (a ✓ for random bytes, a stray empty file made beside it), with '%41' it
    looked for 'pA.db'."""
    from sessions.store import SessionStore

    good = tmp_path / "good" / name
    good.parent.mkdir()
    SessionStore.open(good).close()
    assert check_database(good).ok, check_database(good).detail
    bad = tmp_path / "bad" / name
    bad.parent.mkdir()
    bad.write_bytes(b"random bytes, no store\n" * 100)
    bad.chmod(0o600)
    assert not check_database(bad).ok
    assert sorted(p.name for p in bad.parent.iterdir()) == [name]  # nothing made beside it


def test_a_store_name_too_long_is_a_failed_check_not_an_abort(tmp_path: Path) -> None:
    """`--db <300 characters>.db` aborted doctor with "File name too long", and `--json`
    printed no JSON at all."""
    db = tmp_path / ("x" * 300 + ".db")
    res = doctor("--json", "--no-mqtt", "--db", str(db))
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    check = by_name(doc)["database"]
    assert check["ok"] is False
    assert str(check["detail"]).endswith("cannot check it (File name too long)")
    assert "clock" in by_name(doc)  # the other checks still ran
