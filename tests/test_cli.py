"""The command line as a user meets it: demo stops by itself or on Ctrl-C with the session
closed, sessions/export/scan print what they promise, and bad input is one line."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sessions.store import SessionState, SessionStore
from tests.conftest import DATA

CONFIG = Path(__file__).parents[1] / "configs" / "settle.toml"
ENV = {**os.environ, "SETTLE_CONFIG": str(CONFIG)}


def settle(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "settle.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=ENV,
    )  # fmt: skip


def test_demo_duration_stops_by_itself_and_closes_the_session(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    res = settle("demo", "--duration", "3", "--speed", "20", "--no-mqtt", "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert "mqtt:    off" in res.stdout
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
    assert s.state == SessionState.STOPPED
    assert s.n_beats > 20  # ~3 s x 20 = 60 s of beats, minus start-up
    assert f"session {s.id}: {s.n_beats} beats stored" in res.stdout


async def test_ctrl_c_closes_the_session_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "settle.cli", "demo", "--speed", "10", "--no-mqtt", "--db", str(db),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while b"session:" not in (line := await proc.stdout.readline()):
            if not line:  # the demo ended before its session started (readline at EOF
                # returns at once: looping on it would never let the timeout fire)
                _, err = await proc.communicate()
                pytest.fail(f"demo exited {proc.returncode} before a session: {err.decode()}")
        await asyncio.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
    assert s.state == SessionState.STOPPED
    assert s.n_beats > 0


def test_sessions_list_json_and_export_errors(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    replay = DATA / "pyhrv_nni_short.csv"
    res = settle("demo", "--replay", str(replay), "--speed", "100", "--no-mqtt", "--db", str(db))
    assert res.returncode == 0, res.stderr
    listed = json.loads(settle("sessions", "list", "--json", "--db", str(db)).stdout)
    (item,) = listed["sessions"]
    assert item["n_beats"] == 337 and item["state"] == "stopped"
    table = settle("sessions", "list", "--db", str(db)).stdout
    assert item["id"] in table

    bad = settle("export", "nope", "--out", str(tmp_path / "x.csv"), "--db", str(db))
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "settle: error: no session matches 'nope' (see `settle sessions list`)"
    )
    fmt = settle("export", "latest", "--format", "xlsx", "--out", str(tmp_path), "--db", str(db))
    assert fmt.returncode == 2 and "unknown export format 'xlsx'" in fmt.stderr
    nodir = settle("export", "latest", "--out", str(tmp_path / "no" / "x.csv"), "--db", str(db))
    assert nodir.returncode == 1 and len(nodir.stderr.strip().splitlines()) == 1
    nodb = settle("export", "latest", "--out", str(tmp_path), "--db", str(tmp_path / "none.db"))
    assert nodb.returncode == 1 and "no session store at" in nodb.stderr
    ok = settle("export", item["id"][:10], "--out", str(tmp_path), "--db", str(db))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / f"settle-{item['id']}.csv").is_file()


def test_scan_virtual_lists_the_strap_as_json() -> None:
    res = settle("scan", "--virtual", "--timeout", "1", "--json")
    assert res.returncode == 0, res.stderr
    (strap,) = json.loads(res.stdout)["straps"]
    assert strap["name"] == "Settle Virtual HR"
    assert strap["device_id"].startswith("settle_virtual_hr_")
    assert strap["pmd"] is False


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--speed", "-1"],
        ["demo", "--bogus"],
        ["export"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    res = settle(*args)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr


def test_help_on_every_command() -> None:
    for cmd in ["demo", "run", "scan", "export", "mark", "sessions"]:
        res = settle(cmd, "--help")
        assert res.returncode == 0, cmd
        assert "Usage" in res.stdout


def _store_with_a_session(db: Path) -> str:
    from sessions.store import BeatRow

    with SessionStore.open(db) as store:
        info = store.create_session("dev_1", 1_700_000_000_000, "test", {})
        rows, t = [], 0.0
        for i in range(30):
            t += 0.8
            rows.append(BeatRow(i, t, 1_700_000_000_000 + round(t * 1000), 800.0, None, 75, None))
        store.add_beats(info.id, rows)
        store.finish_session(info.id, 1_700_000_000_000 + round(t * 1000))
    return info.id


def _refused(res: subprocess.CompletedProcess[str], words: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert words in line


def test_export_never_writes_onto_the_store(tmp_path: Path) -> None:
    """``--out`` naming the store (or its -wal/-shm files, or a link to it) is refused, even
    with --force: it used to replace the database with the CSV."""
    db = tmp_path / "settle.db"
    sid = _store_with_a_session(db)
    (tmp_path / "link.csv").symlink_to(db)
    for fmt, out, force in [
        ("csv", db, []),
        ("csv", db, ["--force"]),
        ("kubios", tmp_path / "settle.db-wal", ["--force"]),
        ("csv", tmp_path / "link.csv", ["--force"]),
        ("bids", db, []),
        ("bids", tmp_path / "settle.db-shm", []),
    ]:
        res = settle("export", sid, "--format", fmt, "--out", str(out), "--db", str(db), *force)
        _refused(res, "refusing to write onto the session store")
    assert not (tmp_path / "settle.db-shm").is_dir()
    with SessionStore.open(db) as store:  # still the store, session intact
        assert [s.n_beats for s in store.list_sessions()] == [30]


def test_export_replaces_an_existing_file_only_with_force(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    sid = _store_with_a_session(db)
    keep = tmp_path / "keep.csv"
    keep.write_text("keep me\n")
    _refused(settle("export", sid, "--out", str(keep), "--db", str(db)), "file exists (use --force")
    assert keep.read_text() == "keep me\n"
    ok = settle("export", sid, "--out", str(keep), "--db", str(db), "--force")
    assert ok.returncode == 0, ok.stderr
    assert keep.read_text().startswith("session_id,started_ms,record,")
    out = tmp_path / "exports"
    out.mkdir()
    for fmt in ("csv", "json", "edf", "kubios"):
        first = settle("export", sid, "--format", fmt, "--out", str(out), "--db", str(db))
        assert first.returncode == 0, first.stderr
        lines = first.stdout.splitlines()
        written = Path(lines[0].removeprefix("wrote "))
        if fmt == "kubios":  # the markers file is written and named too
            assert lines[1] == f"wrote {written.with_name(written.stem + '_markers.csv')}"
        before = written.read_bytes()
        again = settle("export", sid, "--format", fmt, "--out", str(out), "--db", str(db))
        _refused(again, "file exists (use --force to replace it)")
        assert written.read_bytes() == before
        forced = settle("export", sid, "--format", fmt, "--out", str(out), "--db", str(db),
                        "--force")  # fmt: skip
        assert forced.returncode == 0, forced.stderr
    # BIDS adds sessions to a dataset directory: exporting again is fine.
    for _ in range(2):
        bids = settle("export", sid, "--format", "bids", "--out", str(tmp_path / "ds"),
                      "--db", str(db))  # fmt: skip
        assert bids.returncode == 0, bids.stderr
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("duration", ["0", "-1", "0.05", "inf", "-inf", "nan"])
def test_run_duration_must_be_positive(tmp_path: Path, duration: str) -> None:
    """``--duration 0`` used to run the replay forever and then ignore SIGTERM and Ctrl-C;
    like ``settle demo`` it must be at least 0.1 s, refused before anything starts.
    ``--duration inf`` passed that bound, and the demo never stopped by itself."""
    db = tmp_path / "s.db"
    for command in (["run", "--replay", str(DATA / "pyhrv_nni_short.csv")], ["demo"]):
        res = settle(*command, "--duration", duration, "--no-mqtt", "--no-http", "--db",
                     str(db), timeout=30)  # fmt: skip
        assert res.returncode == 2
        assert "Traceback" not in res.stderr
        (line,) = res.stderr.splitlines()
        assert "--duration" in line
        assert not db.exists()


def test_export_never_replaces_a_pipe_or_device_and_a_missing_directory_is_named(
    tmp_path: Path,
) -> None:
    """``--force`` renames the finished file over the target: over a FIFO, or (as root) over
    ``/dev/null`` or the ``/dev/stdout`` link, that destroyed the special file. And ``--out
    missing/`` (a directory that does not exist) used to write a file called ``missing``."""
    db = tmp_path / "s.db"
    sid = _store_with_a_session(db)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    stream = tmp_path / "stream.csv"
    stream.symlink_to("/dev/stdout")
    for target in (fifo, stream):  # not /dev/null itself: a regression would destroy it
        res = settle("export", sid, "--out", str(target), "--db", str(db), "--force")
        _refused(res, "refusing to replace it")
    assert fifo.exists() and not fifo.is_file()  # still the pipe
    assert stream.is_symlink() and os.readlink(stream) == "/dev/stdout"
    missing = settle("export", sid, "--out", f"{tmp_path / 'missing'}/", "--db", str(db))
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith(f"directory {tmp_path / 'missing'} does not exist")
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_output_that_cannot_be_written_is_one_line() -> None:
    """stdout on a full disk used to end in a Python traceback."""
    with open("/dev/full", "w") as full:
        res = subprocess.run(
            [sys.executable, "-m", "settle.cli", "analyze", str(DATA / "pyhrv_nni_short.csv"),
             "--json"],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    assert res.returncode == 1
    assert res.stderr == "settle: error: cannot write to standard output: No space left on device\n"


def test_a_second_daemon_on_the_same_store_refuses_to_start(tmp_path: Path) -> None:
    """A second `settle demo`/`run` on a store another daemon records into took the live
    session for a crashed one (marked it interrupted, published its strap offline)."""
    from sessions.store import daemon_lock

    db = tmp_path / "s.db"
    sid = _store_with_a_session(db)
    with daemon_lock(db):  # this test process plays the first daemon
        res = settle("demo", "--duration", "5", "--no-mqtt", "--no-http", "--db", str(db))
        assert res.returncode == 1
        assert res.stderr.strip().splitlines()[-1] == (
            f"settle: error: {db}: another Settle daemon (pid {os.getpid()}) is recording "
            "into this store; stop it first, or give this one another --db"
        )
        assert "never awaited" not in res.stderr  # the unstarted strap's coroutine
        assert res.stdout == ""  # it announced "settle demo: virtual strap …" first
        listed = settle("sessions", "list", "--db", str(db))  # reading is fine meanwhile
        assert listed.returncode == 0 and sid in listed.stdout
    with SessionStore.open(db) as store:
        assert [s.id for s in store.list_sessions()] == [sid]  # nothing touched
    ok = settle("demo", "--duration", "0.5", "--no-mqtt", "--no-http", "--db", str(db))
    assert ok.returncode == 0, ok.stderr  # released: the next daemon starts
    assert ok.stdout.startswith("settle demo: virtual strap Settle Virtual HR (")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    bad = settle("demo", "--duration", "1", "--no-mqtt", "--no-http", "--db", str(garbage))
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        f"settle: error: {garbage}: not a Settle session store (not a SQLite file)"
    ]  # one line: it was followed by "coroutine … was never awaited" warnings


def test_several_straps_lines_name_their_strap(tmp_path: Path) -> None:
    """With --straps 2 the status lines came in identical-looking pairs: whose was whose?"""
    db = tmp_path / "s.db"
    res = settle("demo", "--straps", "2", "--duration", "2", "--speed", "10", "--no-mqtt",
                 "--no-http", "--db", str(db))  # fmt: skip
    assert res.returncode == 0, res.stderr
    devices = [ln.rsplit(" as device ", 1)[1] for ln in res.stdout.splitlines()
               if ln.startswith("  session: ")]  # fmt: skip
    assert len(set(devices)) == 2
    lines = [ln for ln in res.stdout.splitlines() if " t=" in ln and " HR " in ln]
    assert lines and all(ln.split()[0] in devices for ln in lines)
    assert {ln.split()[0] for ln in lines} == set(devices)
    # The closing export hints name one file per session: the same `session.csv` for both
    # made the second command, run as printed, fail with "file exists".
    hints = [ln.split("--out ")[1].split()[0] for ln in res.stdout.splitlines() if "Export:" in ln]
    sids = [ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("  session: ")]
    assert sorted(hints) == sorted(f"{sid}.csv" for sid in sids)


def test_error_lines_show_control_characters_escaped(tmp_path: Path) -> None:
    """A file name with an escape sequence or a line break recoloured the terminal, or broke
    the one-line error in two."""
    name = tmp_path / "bad\x1b[31mred\nx.csv"
    name.write_text("x\n")
    res = settle("analyze", str(name))
    assert res.returncode == 1
    assert "\x1b" not in res.stderr
    (line,) = res.stderr.splitlines()
    assert "bad\\x1b[31mred\\nx.csv:1: not a recognised RR file" in line


def test_a_ca_file_that_is_no_certificate_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    """``mqtt.ca_file`` naming a file that is not a certificate: `settle demo` said "mqtt:
    broker on …", recorded a whole session with MQTT broken, then ended with "cannot write
    the output: [X509: NO_CERTIFICATE_OR_CRL_FOUND]…" (exit 1); `settle mark` likewise. Now
    a config error naming the setting and the file, exit 2, before anything starts."""
    from feedback.broker import free_loopback_port

    not_a_cert = tmp_path / "ca.pem"
    not_a_cert.write_text("export HOME=/tmp\n")
    cfg = tmp_path / "tls.toml"
    cfg.write_text(f'[mqtt]\ntls = true\nca_file = "{not_a_cert}"\n')
    broker = f"127.0.0.1:{free_loopback_port()}"
    line = (
        f"settle: error: config: mqtt.ca_file: {not_a_cert}: not a usable CA certificate file "
        "(X509: NO_CERTIFICATE_OR_CRL_FOUND)"
    )
    db = tmp_path / "s.db"
    for args in (
        ["demo", "--duration", "2", "--speed", "50", "--no-http", "--db", str(db)],
        ["run", "--replay", str(DATA / "pyhrv_nni_short.csv"), "--no-http", "--db", str(db)],
        ["mark", "hi"],
        ["session", "stop"],
    ):
        res = settle(*args, "--config", str(cfg), "--mqtt", broker)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.splitlines() == [line], args
        assert res.stdout == "", args  # no banner, no "mqtt: broker on …"
    assert not db.exists()  # nothing recorded with MQTT silently broken
    # The embedded broker alone uses no TLS: nothing to refuse there.
    cfg.write_text(f'[mqtt]\ntls = true\nca_file = "{not_a_cert}"\nembedded = "always"\n')
    ok = settle("demo", "--duration", "1", "--no-http", "--db", str(db), "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr


def test_an_error_that_is_not_the_output_is_not_called_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every OSError that reached main() was reported as "cannot write the output" (an
    ssl.SSLError, a reset connection); only a failed write of stdout is that."""
    import ssl

    from settle import cli

    monkeypatch.setattr(sys, "stdout", sys.stdout)  # main() wraps it: restored afterwards
    for exc, line in [
        (
            ssl.SSLError(136, "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found"),
            "settle: error: [X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found",
        ),
        (ConnectionResetError(104, "Connection reset by peer"), "settle: error: "
         "Connection reset by peer"),
    ]:  # fmt: skip

        def boom(*args: object, _exc: OSError = exc, **kwargs: object) -> None:
            raise _exc

        monkeypatch.setattr(cli, "app", boom)
        with pytest.raises(SystemExit) as exit_:
            cli.main()
        assert exit_.value.code == 1
        captured = capsys.readouterr()
        assert captured.err.splitlines() == [line]
        assert "cannot write to standard output" not in captured.err


def test_daemon_keeps_recording_when_its_stdout_reader_goes_away(tmp_path: Path) -> None:
    """`settle demo … | head -n 3`: the first line written after the pipe closed ended the
    daemon at once, exit 1, nothing on stderr — the session cut short. Now the console goes
    quiet, one WARNING says so, recording goes on to the normal end (exit 0), and the closing
    lines go to stderr."""
    db = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "settle.cli", "demo", "--duration", "4", "--speed", "20",
         "--no-mqtt", "--no-http", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith("settle demo: virtual strap")
    proc.stdout.close()  # the reader goes away, as `head -n 1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err
    warnings = [ln for ln in err.splitlines() if "level=WARNING" in ln]
    assert len(warnings) == 1 and "console output stopped (stdout: its reader went away); " \
        "recording goes on until the daemon is stopped" in warnings[0]  # fmt: skip
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
    assert s.state == SessionState.STOPPED
    assert s.n_beats > 40  # ~4 s x 20 = 80 s of beats, minus start-up
    assert f"session {s.id}: {s.n_beats} beats stored. Export:" in err


def test_an_export_file_name_must_end_in_its_formats_extension(tmp_path: Path) -> None:
    """`settle export latest --out x.json` (CSV by default) wrote CSV into x.json, exit 0;
    json, edf and kubios refused a wrong name, but with exit 1. Now every format refuses it
    as the usage error it is: one line, exit 2, nothing written."""
    db = tmp_path / "s.db"
    sid = _store_with_a_session(db)
    for fmt, name, want in [
        ([], "x.json", ".csv"),
        (["--format", "csv"], "x.edf", ".csv"),
        (["--format", "json"], "x.csv", ".json"),
        (["--format", "edf"], "x.csv", ".edf"),
        (["--format", "kubios"], "x.csv", ".txt"),
    ]:
        out = tmp_path / name
        res = settle("export", sid, *fmt, "--out", str(out), "--db", str(db))
        kind = fmt[1] if fmt else "csv"
        article = "an" if kind == "edf" else "a"  # it said "a edf export's file name"
        assert res.returncode == 2, res.stderr
        assert res.stderr.splitlines() == [
            f"settle: error: {out}: {article} {kind} export's file name must end in {want}"
        ]
        assert res.stdout == "" and not out.exists()
    ok = settle("export", sid, "--out", str(tmp_path / "X.CSV"), "--db", str(db))
    assert ok.returncode == 0, ok.stderr  # any case
    assert (tmp_path / "X.CSV").read_text().startswith("session_id,")


def test_the_closing_export_hint_quotes_the_store_path(tmp_path: Path) -> None:
    """`--db "var dir/s.db"`: the closing hint said `--db var dir/s.db`, which, copied, is
    two words (a store named `var`)."""
    import shlex

    db = tmp_path / "var dir" / "s.db"
    db.parent.mkdir()
    res = settle("demo", "--duration", "1", "--speed", "20", "--no-mqtt", "--no-http",
                 "--db", str(db))  # fmt: skip
    assert res.returncode == 0, res.stderr
    hint = res.stdout.splitlines()[-1].split("Export: ", 1)[1]
    words = shlex.split(hint)
    assert words[words.index("--db") + 1] == str(db)
    assert shlex.quote(str(db)) in hint


def test_a_group_practice_is_listed_by_label_and_addressed_by_suffix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coach's four straps: `sessions list` showed only device ids (which strap is Anna's?)
    and `settle export 2cd8` said "no session matches" — the ids differ only after the dash."""
    from typer.testing import CliRunner

    from settle import pairing
    from settle.cli import app

    monkeypatch.setenv("SETTLE_CONFIG", str(CONFIG))
    monkeypatch.setenv("SETTLE_PAIRED_FILE", str(tmp_path / "straps.json"))
    pairing.remember("anna", "AA:BB:CC:DD:EE:01", "Polar H10 1", "polar_h10_anna")
    import secrets

    suffixes = iter(["2cd8", "0aa1"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(suffixes))
    db = tmp_path / "s.db"
    t0 = 1_795_840_656_870
    with SessionStore.open(db) as store:
        anna = store.create_session("polar_h10_anna", t0, "ble:AA:BB:CC:DD:EE:01", {}).id
        ben = store.create_session("polar_h10_ben", t0 + 19, "ble:AA:BB:CC:DD:EE:02", {}).id
    runner = CliRunner()
    res = runner.invoke(app, ["sessions", "list", "--json", "--db", str(db)])
    assert res.exit_code == 0, res.output
    labels = {s["device"]: s["label"] for s in json.loads(res.output)["sessions"]}
    assert labels == {"polar_h10_anna": "anna", "polar_h10_ben": None}
    res = runner.invoke(app, ["sessions", "list", "--db", str(db)])
    assert "polar_h10_anna (anna)" in res.output and "polar_h10_ben " in res.output

    suffix = "2cd8"
    res = runner.invoke(app, ["export", suffix, "--out", str(tmp_path), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / f"settle-{anna}.csv").is_file()
    assert not (tmp_path / f"settle-{ben}.csv").exists()
    # Deleting still needs the full id.
    res = runner.invoke(app, ["sessions", "delete", suffix, "--yes", "--db", str(db)])
    assert res.exit_code == 1 and f"did you mean {anna}?" in res.output
    with SessionStore.open(db) as store:
        assert len(store.list_sessions()) == 2


def _replay_and_export(tmp_path: Path, replay: Path, *config: str) -> Path:
    """Replay ``replay`` through the daemon (`settle demo --replay`, speed 100, no MQTT/HTTP)
    and export the session as CSV into ``tmp_path``; returns the export."""
    db = tmp_path / "s.db"
    res = settle("demo", "--replay", str(replay), "--speed", "100", "--no-mqtt", "--no-http",
                 "--db", str(db), *config)  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = settle("export", "latest", "--format", "csv", "--out", str(tmp_path), "--db", str(db))
    assert out.returncode == 0, out.stderr
    (export,) = tmp_path.glob("settle-*.csv")
    return export


def test_a_json_export_says_which_settings_the_session_was_analysed_with(
    tmp_path: Path,
) -> None:
    """Re-analysing an export as it was recorded needs the settings that decided its beat
    classes and indices; the manifest kept only `window_s` and `baseline_s`, so a session
    recorded with another plausible range or without correction could not be told apart."""
    config = tmp_path / "settle.toml"
    text = CONFIG.read_text().replace("correction = true", "correction = false", 1)
    config.write_text(text.replace("rr_min_ms = 250.0", "rr_min_ms = 300.0", 1))
    assert "rr_min_ms = 300.0" in config.read_text()
    db = tmp_path / "s.db"
    res = settle("demo", "--duration", "2", "--speed", "20", "--no-mqtt", "--no-http",
                 "--db", str(db), "--config", str(config))  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = tmp_path / "x.json"
    res = settle("export", "latest", "--format", "json", "--out", str(out), "--db", str(db))
    assert res.returncode == 0, res.stderr
    settings = json.loads(out.read_text())["manifest"]["recording"]["settings"]
    assert settings["correction"] is False and settings["rr_min_ms"] == 300.0
    assert {"window_s", "baseline_s", "indices_every_s", "warmup_s", "rr_max_ms",
            "rr_source"} <= set(settings)  # fmt: skip


def test_the_daemon_splits_a_missed_beat_at_a_slow_heart(tmp_path: Path) -> None:
    """A strap that misses a beat at 57 beats/min sends one interval over 2000 ms (the
    plausible maximum): the daemon stored it as implausible and restarted every window at
    each one. Now the correction splits it, as `settle analyze` does: the export classes
    the 9 injected missed beats `missed`, none `implausible`. (A host stalled by other tests
    for a quarter of a second is 25 s at speed 100: the daemon's warm-up after that gap may
    hold one of them, as in a CI run of 2026-11-30; it is then `warmup`, not analysed.)"""
    import csv

    from sensors.readers import read_rr_file

    replay = DATA / "artifacts" / "bartels_rest_supine__missed__1pct.csv"
    path = _replay_and_export(tmp_path, replay)
    classes = [r["beat_class"] for r in csv.DictReader(path.open()) if r["record"] == "beat"]
    rr = read_rr_file(replay).rr_ms
    assert len(classes) == len(rr)  # every beat stored, in order
    injected = np.flatnonzero(rr > 1.6 * np.median(rr))
    assert len(injected) == 9
    assert all(classes[i] in ("missed", "warmup") for i in injected)
    assert classes.count("missed") == sum(classes[i] == "missed" for i in injected) >= 8
    assert "implausible" not in classes


def test_a_burst_of_noise_intervals_invents_no_beats(tmp_path: Path) -> None:
    """Noise from a strap: ten 50 ms intervals in a row, short ones alternating with over-long
    ones, over-long ones in a row. When short intervals went to the live correction
    (50513a0), its medians filled with noise and the next sinus beats were split 16-fold as
    "missed" (32 invented 49 ms beats; published HR up to 2025). The daemon hands the
    correction an out-of-range interval only right after a plausible one, and the correction
    makes no interval outside 250-2000 ms: every beat is kept, none invented, nothing out of
    range analysed or published, and `settle analyze` of the export classes every beat the
    same way."""
    import csv

    rng = np.random.default_rng(6)
    rr = (800.0 + 20.0 * np.sin(np.arange(600) / 4.0) + rng.normal(0.0, 5.0, 600)).tolist()
    rr[200:200] = [50.0] * 10
    rr[300:300] = [5.0, 3.0, 120.0, 240.0]
    rr[400:400] = [2600.0, 3000.0, 3900.0]
    rr[450:450] = [13.0, 2600.0, 3500.0, 30.0, 3000.0, 30.0]
    rr[500:500] = [30.0, 2100.0, 40.0, 4000.0, 60.0, 2500.0]
    rr[550:550] = [3189.0, 75.0, 2925.0, 3728.0, 964.0, 3112.0, 390.0]  # 964 + 3112 "ectopic"
    replay = tmp_path / "noisy.txt"
    replay.write_text("".join(f"{v:.1f}\n" for v in rr))
    export = _replay_and_export(tmp_path, replay)
    rows = list(csv.DictReader(export.open()))
    beats = [r for r in rows if r["record"] == "beat"]
    assert len(beats) == len(rr)  # nothing lost, nothing invented
    classes = [r["beat_class"] for r in beats]
    # Only the 3189 ms right after sinus beats is split: 4 x 797 ms, the strap missed 3.
    assert [round(float(r["rr_ms"])) for r in beats if r["beat_class"] == "missed"] == [3189]
    for r in beats:
        if not 250 <= float(r["rr_ms"]) <= 2000 and r["beat_class"] != "missed":
            assert r["beat_class"] == "implausible", r
    assert all(250 <= float(r["rr_corrected_ms"]) <= 2000 for r in beats if r["rr_corrected_ms"])
    hr = [float(r["hr_bpm"]) for r in rows if r["record"] == "indices" and r["hr_bpm"]]
    assert len(hr) > 50 and min(hr) > 55 and max(hr) < 100  # was up to 2025 (invented beats)
    by_file = tmp_path / "b.csv"
    res = settle("analyze", str(export), "--json", "--beats", str(by_file))
    assert res.returncode == 0, res.stderr
    offline = [r["class"] for r in csv.DictReader(by_file.open()) if r["rr_raw_ms"]]  # not parts
    assert offline == classes


def test_the_daemon_merges_a_spurious_beat_that_leaves_a_short_piece(tmp_path: Path) -> None:
    """A spurious beat a quarter into an 800 ms interval sends 200 ms (under the plausible
    minimum of 250) and 600 ms. The daemon stored the 200 as implausible, restarted every
    window there (a minute without a score, at each one) and corrected the 600 as a short
    beat, while `settle analyze` merged the two. Now the daemon merges them too: the export
    classes both pieces of each of the 6 `extra`, and analyze agrees on every beat."""
    import csv

    rng = np.random.default_rng(5)
    rr = (800.0 + 30.0 * np.sin(np.arange(600) / 3.0) + rng.normal(0.0, 4.0, 600)).tolist()
    for i in range(200, 500, 50):  # 6 spurious beats, from 160 s on (after the warm-up)
        rr[i : i + 1] = [0.25 * rr[i], 0.75 * rr[i]] if i % 100 else [0.75 * rr[i], 0.25 * rr[i]]
    replay = tmp_path / "spurious.txt"
    replay.write_text("".join(f"{v:.1f}\n" for v in rr))
    export = _replay_and_export(tmp_path, replay)
    records = list(csv.DictReader(export.open()))
    beats = [r for r in records if r["record"] == "beat"]
    classes = [r["beat_class"] for r in beats]
    # A stall of this loaded machine can make the daemon record a gap (beats late at speed
    # 100; seen once in CI): a piece right after one has nothing to merge with, as offline.
    ends = [float(r["end_t_s"]) for r in records if r["record"] == "gap"]
    short = [r for r in beats if float(r["rr_ms"]) < 250.0]
    after_gap = [any(0 <= float(r["t_s"]) - e < 3.0 for e in ends) for r in short]
    assert len(short) == 6 and sum(after_gap) <= 1, ends
    assert all(r["beat_class"] == "extra" for r, g in zip(short, after_gap, strict=True) if not g)
    assert classes.count("extra") >= 12 - 2 * sum(after_gap)
    assert classes.count("implausible") <= sum(after_gap)
    by_file = tmp_path / "b.csv"
    res = settle("analyze", str(export), "--json", "--beats", str(by_file))
    assert res.returncode == 0, res.stderr
    assert [r["class"] for r in csv.DictReader(by_file.open())] == classes


def test_analyze_of_an_export_with_correction_gives_what_the_daemon_published(
    tmp_path: Path,
) -> None:
    """With the correction on (the default), the daemon's windows end at the last beat its
    3-beat look-ahead had finalised, and it takes its steps after each notification (the
    virtual strap, as a real one, sends a second of beats in one). `settle analyze
    --rolling` of the export takes every step from what the daemon held then: quality equal
    to the export's 6 decimals at every step, a score exactly where the daemon published
    one, and within a point of it (they differ only by the resampling of the spectra). Its
    windows used to end at the step: scores a median of ~2 points off, quality ~0.04."""
    import csv

    replay = DATA / "artifacts" / "bartels_rest_supine__mixed__2pct.csv"
    export = _replay_and_export(tmp_path, replay)
    rolling = tmp_path / "r.csv"
    res = settle("analyze", str(export), "--json", "--rolling", str(rolling))
    assert res.returncode == 0, res.stderr
    records = list(csv.DictReader(export.open()))
    arrivals = [r["recv_ts_ms"] for r in records if r["record"] == "beat"]
    assert len(set(arrivals)) < len(arrivals)  # some notifications carried several beats
    live = {round(float(r["t_s"]), 3): r for r in records if r["record"] == "indices"}
    steps = {round(float(r["t_s"]), 3): r for r in csv.DictReader(rolling.open())
             if r["kind"] == "step"}  # fmt: skip
    common = sorted(set(live) & set(steps))
    assert len(common) > 150

    def num(v: str) -> float:
        return float(v) if v else math.nan

    q_off = np.array([num(steps[t]["quality"]) for t in common])
    q_live = np.array([num(live[t]["quality"]) for t in common])
    np.testing.assert_allclose(q_off, q_live, rtol=1e-5, atol=1e-6)
    so = np.array([num(steps[t]["settling_score"]) for t in common])
    sl = np.array([num(live[t]["settling"]) for t in common])
    np.testing.assert_array_equal(np.isfinite(so), np.isfinite(sl))
    diff = np.abs(so - sl)[np.isfinite(sl)]
    assert diff.size > 100
    assert float(np.median(diff)) < 0.2 and float(diff.max()) < 1.0


@pytest.mark.parametrize("every_s", [5.0, 2.0])
def test_analyze_of_an_export_gives_the_scores_the_daemon_published(
    tmp_path: Path, every_s: float
) -> None:
    """A researcher runs `settle analyze --rolling` on an exported session and compares it
    with what the practitioner saw (the export's `indices` rows). Without correction (no
    look-ahead lag) they must agree, as docs/indices.md says. They did not: the daemon took
    each step after pushing the whole notification (its windows ran past the step: RMSSD
    equal at 2 % of steps, quality at 45 %), and the offline baseline started at 10 s (the
    first step after the warm-up) where the daemon's starts at its first snapshot, 5 s.
    With `indices_every_s = 2` the daemon published every 2 s and `--rolling` still wrote
    every 5 s (1 step in 5 in common, scored against a baseline of other steps)."""
    import csv

    config = tmp_path / "settle.toml"
    text = CONFIG.read_text().replace("correction = true", "correction = false", 1)
    config.write_text(text.replace("indices_every_s = 5.0", f"indices_every_s = {every_s}", 1))
    assert "correction = false" in config.read_text()
    assert f"indices_every_s = {every_s}" in config.read_text()
    export = _replay_and_export(tmp_path, DATA / "bartels_rest_supine.csv", "--config", str(config))
    rolling = tmp_path / "r.csv"
    res = settle("analyze", str(export), "--json", "--rolling", str(rolling), "--config",
                 str(config))  # fmt: skip
    assert res.returncode == 0, res.stderr
    records = list(csv.DictReader(export.open()))
    live = {round(float(r["t_s"]), 3): r for r in records if r["record"] == "indices"}
    # A stall of this loaded machine can make the daemon record a gap (beats late at speed
    # 100): inside one its windows are empty, while the last beat row is the run's before.
    gaps = [(float(r["t_s"]), float(r["end_t_s"])) for r in records if r["record"] == "gap"]
    rows = list(csv.DictReader(rolling.open()))
    steps = {round(float(r["t_s"]), 3): r for r in rows if r["kind"] == "step"}
    beats = [(float(r["t_s"]), r) for r in rows if r["kind"] == "beat"]
    common = sorted(set(live) & set(steps))
    assert len(common) > 150
    # The daemon's steps, each, from the first analysed beat to the last.
    assert {t for t in live if min(steps) <= t <= max(steps)} == set(steps)

    def num(v: str) -> float:
        return float(v) if v else math.nan

    rmssd_off, rmssd_live, q_off, q_live, s_off, s_live = ([] for _ in range(6))
    for t in common:
        last = [(bt, r) for bt, r in beats if bt <= t + 1e-9]
        # Nor after one before its first beat: live's windows restarted there and are still
        # empty, while the last beat row is the one before the gap (CI of 2026-11-30).
        if last and not any(a <= t and last[-1][0] <= b for a, b in gaps):
            rmssd_off.append(num(last[-1][1]["rmssd_ms"]))
            rmssd_live.append(num(live[t]["rmssd_ms"]))
        q_off.append(num(steps[t]["quality"]))
        q_live.append(num(live[t]["quality"]))
        s_off.append(num(steps[t]["settling_score"]))
        s_live.append(num(live[t]["settling"]))
    # Equal to the digits the files keep (rolling: 6 significant).
    np.testing.assert_allclose(rmssd_off, rmssd_live, rtol=1e-5)
    np.testing.assert_allclose(q_off, q_live, rtol=1e-5, atol=1e-6)  # export: 6 decimals
    so, sl = np.array(s_off), np.array(s_live)
    np.testing.assert_array_equal(np.isfinite(so), np.isfinite(sl))
    diff = np.abs(so - sl)[np.isfinite(sl)]
    assert diff.size > 100
    assert float(np.median(diff)) < 1.0 and float(diff.max()) < 5.0


@pytest.mark.parametrize(
    "args",
    [
        ["log", "set", "latest", "--notes", "x"],
        ["log", "import", "latest", "JOURNAL"],
        ["sessions", "delete", "20260101T000000-abcd", "--yes"],
    ],
)
def test_a_writing_command_does_not_make_an_empty_file_a_store(
    tmp_path: Path, args: list[str]
) -> None:
    """`sessions list` refused an empty --db ("an empty file, not a Settle session store"),
    but `log set`, `log import` and `sessions delete` turned it into a store (mode 0644)."""
    empty = tmp_path / "empty.db"
    empty.touch()
    journal = tmp_path / "j.csv"
    journal.write_text("t_s,text\n1,a\n")
    args = [str(journal) if a == "JOURNAL" else a for a in args]
    res = settle(*args, "--db", str(empty))
    assert res.returncode == 1, res.stderr
    assert res.stderr == f"settle: error: {empty}: an empty file, not a Settle session store\n"
    assert empty.stat().st_size == 0
    assert not Path(f"{empty}-wal").exists()


def test_a_dashboard_port_in_use_is_logged_and_measuring_goes_on(tmp_path: Path) -> None:
    """It was said only in the banner on stdout, which the systemd unit sends nowhere."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "settle.cli", "demo", "--duration", "2", "--speed", "20",
             "--no-mqtt", "--http", f"127.0.0.1:{port}", "--db", str(tmp_path / "s.db")],
            capture_output=True, text=True, timeout=60,
            env={**ENV, "SETTLE_HTTP__ENABLED": "true"},
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"http:    off — dashboard: cannot listen on 127.0.0.1:{port}" in res.stdout
    (line,) = [ln for ln in res.stderr.splitlines() if "level=WARNING" in ln]
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "measuring goes on without the dashboard" in line
    with SessionStore.open(tmp_path / "s.db") as store:
        assert store.list_sessions()[0].n_beats > 0


def test_exit_codes_follow_one_rule_for_lookups_and_output_paths(tmp_path: Path) -> None:
    """A session or strap not found is exit 1 everywhere (`sessions delete <prefix>` and
    `trends --device nobody` were 2, `export nope` 1); an output path of the wrong kind is
    2 everywhere (`report --out FILE` and `trends --out FILE` were 1, `analyze --beats DIR`
    and `export --out existing.csv` 2)."""
    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", 1_795_000_000_000, "x", {}).id
        store.finish_session(sid, 1_795_000_060_000)
    a_file = tmp_path / "a.csv"
    a_file.write_text("mine\n")
    for args, code, words in [
        (["export", "nope", "--out", str(tmp_path / "x.csv")], 1, "no session matches 'nope'"),
        (["sessions", "delete", sid[:-1], "--yes"], 1, "delete needs the full session id"),
        (["trends", "--device", "nobody"], 1, "no session of strap 'nobody'"),
        (["report", sid, "--out", str(a_file)], 2, "--out must be a directory for a report"),
        (["trends", "--out", str(a_file)], 2, "--out must be a directory for the trends plot"),
        (["export", sid, "--out", str(a_file)], 2, "file exists (use --force to replace it)"),
        # L5: it said "directory …/a.csv does not exist"; a path of the wrong kind is 2.
        (["export", sid, "--out", f"{a_file}/"], 2, f"{a_file}/: {a_file} is not a directory"),
        (["export", sid, "--format", "bids", "--out", str(a_file)], 2, "needs a directory"),
    ]:
        res = settle(*args, "--db", str(db))
        assert res.returncode == code, (args, res.stderr)
        assert words in res.stderr, res.stderr
        assert len(res.stderr.splitlines()) == 1
    assert a_file.read_text() == "mine\n"


def test_an_error_quotes_a_long_argument_short(tmp_path: Path) -> None:
    """`settle export <5000 characters>` printed a 5066-byte error line."""
    db = tmp_path / "s.db"
    SessionStore.open(db).close()
    res = settle("export", "x" * 5000, "--out", str(tmp_path / "x.csv"), "--db", str(db))
    assert res.returncode == 1
    assert res.stderr.startswith("settle: error: no session matches 'xxx")
    assert len(res.stderr) < 150


def test_a_line_break_in_an_output_name_stays_on_one_line(tmp_path: Path) -> None:
    """`--out $'a\\nb.csv'` printed "wrote …/a" and "b.csv" on two lines."""
    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", 1_795_000_000_000, "x", {}).id
        store.finish_session(sid, 1_795_000_060_000)
    target = tmp_path / "a\nb.csv"
    res = settle("export", sid, "--out", str(target), "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"wrote {tmp_path}/a\\nb.csv\n"
    assert target.is_file()


def test_force_never_replaces_another_sqlite_database(tmp_path: Path) -> None:
    """`cp s3.db other.csv; settle export latest --out other.csv --force --db s1.db` replaced
    another session store (only the --db store was protected); `analyze` always refused."""
    import shutil

    db = tmp_path / "s1.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", 1_795_000_000_000, "x", {}).id
        store.finish_session(sid, 1_795_000_060_000)
    other = tmp_path / "s3.db"
    SessionStore.open(other).close()
    out = tmp_path / "out"
    out.mkdir()
    targets = {
        "export": out / "other.csv",
        "report": out / f"settle-{sid}-report.html",
        "trends": out / "settle-trends.png",
    }
    for path in targets.values():
        shutil.copy(other, path)
    before = other.read_bytes()
    for args in (
        ["export", sid, "--out", str(targets["export"])],
        ["report", sid, "--out", str(out)],
        ["trends", "--out", str(out)],
    ):
        res = settle(*args, "--force", "--db", str(db))
        assert res.returncode == 2, (args, res.stderr)
        assert "refusing to write onto the SQLite database" in res.stderr, res.stderr
    assert all(p.read_bytes() == before for p in targets.values())


def test_force_onto_a_pipe_is_refused_not_a_hang(tmp_path: Path) -> None:
    """The check for a SQLite database read the first bytes of the output path before
    asking what it was: `settle report --out DIR --force` with a named pipe at the report's
    name blocked for good (no writer ever came). Refused with one line, as export did."""
    db = tmp_path / "s1.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", 1_795_000_000_000, "x", {}).id
        store.finish_session(sid, 1_795_000_060_000)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / f"settle-{sid}-report.html")
    os.mkfifo(out / "settle-trends.png")
    for args in (["report", sid, "--out", str(out)], ["trends", "--out", str(out)]):
        res = settle(*args, "--force", "--db", str(db), timeout=30)
        assert res.returncode != 0 and "not a regular file" in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1


def test_a_directory_at_the_output_name_is_exit_2_with_or_without_force(tmp_path: Path) -> None:
    """`settle report --out DIR --force` with a directory where the report's PNG goes exited
    1 (as if the disk had failed; docs/operations.md: an output path of the wrong kind is
    2), and without --force said "file exists (use --force to replace it)", which could not
    help. trends the same; export already refused it with 2."""
    db = tmp_path / "s1.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", 1_795_000_000_000, "x", {}).id
        store.finish_session(sid, 1_795_000_060_000)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"settle-{sid}-report.png").mkdir()
    (out / "settle-trends.png").mkdir()
    (out / f"settle-{sid}.csv").mkdir()
    for args in (
        ["report", sid, "--out", str(out)],
        ["trends", "--out", str(out)],
        ["export", sid, "--out", str(out)],
    ):
        for force in (["--force"], []):
            res = settle(*args, *force, "--db", str(db))
            assert res.returncode == 2, (args, force, res.stderr)
            (line,) = res.stderr.strip().splitlines()
            assert line.startswith(f"settle: error: {out}/settle-"), line
            assert line.endswith(": is a directory (name a file)"), line
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"settle-{sid}-report.png", "settle-trends.png", f"settle-{sid}.csv"]
    )  # the report's HTML was not written beside it
    assert all(not any(p.iterdir()) for p in out.iterdir())


def test_log_set_notes_are_bounded_per_append_and_per_session(tmp_path: Path) -> None:
    """`settle log set --notes` took any length and any number of appends: 100 000
    characters at once, or the same note again and again, all went into the store (and
    every `sessions list`, report and JSON export). Now 10 000 characters an append and
    100 000 a session, refused in one line, exit 2, nothing stored."""
    from typer.testing import CliRunner

    from settle.cli import app

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", 1_795_000_000_000, "x", {}).id
    runner = CliRunner()
    args = ["log", "set", sid, "--db", str(db), "--notes"]
    refused = ["--tag", "refused"]  # all or nothing: not stored either

    res = runner.invoke(app, [*args, "x" * 10_001, *refused])
    assert res.exit_code == 2, res.output
    assert res.output == "settle: error: --notes: at most 10000 characters, got 10001\n"
    with SessionStore.open(db) as store:
        assert (store.get(sid).notes, store.get(sid).tags) == ("", ())

    for i in range(9):  # 9 × 10 000 + 8 blank-line separators
        res = runner.invoke(app, [*args, str(i) * 10_000])
        assert res.exit_code == 0, res.output
    with SessionStore.open(db) as store:
        held = store.get(sid).notes
    assert len(held) == 90_016
    res = runner.invoke(app, [*args, "y" * 9_983, *refused])  # 90 016 + 2 + 9 983 = 100 001
    assert res.exit_code == 2, res.output
    assert res.output == (
        f"settle: error: --notes: session {sid} keeps at most 100000 characters of notes; "
        "it holds 90016, and this would make 100001\n"
    )
    with SessionStore.open(db) as store:
        assert (store.get(sid).notes, store.get(sid).tags) == (held, ())
    res = runner.invoke(app, [*args, "y" * 9_982])  # exactly 100 000: taken
    assert res.exit_code == 0, res.output
    with SessionStore.open(db) as store:
        assert len(store.get(sid).notes) == 100_000


def test_local_times_say_their_zone_across_a_clock_change(tmp_path: Path) -> None:
    """The night the clocks go back the same wall time comes twice: `sessions list` and
    `settle trends` listed a session at 02:40 and the later one at 02:10, out of order by
    all they said. Each time now carries its zone (CEST, then CET)."""
    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        for utc in ("2026-10-25T00:40:00+00:00", "2026-10-25T01:10:00+00:00"):
            ms = round(dt.datetime.fromisoformat(utc).timestamp() * 1000)
            sid = store.create_session("dev", ms, "x", {}).id
            store.finish_session(sid, ms + 60_000)
    env = {**ENV, "TZ": "Europe/Berlin"}
    for args in (("sessions", "list"), ("trends",)):
        res = subprocess.run(
            [sys.executable, "-m", "settle.cli", *args, "--db", str(db)],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        first, later = res.stdout.index("02:40"), res.stdout.index("02:10")
        assert "CEST" in res.stdout[first : first + 16], res.stdout
        assert "CET" in res.stdout[later : later + 16], res.stdout


def test_a_session_recorded_in_another_zone_reports_and_exports_its_own_clock(
    tmp_path: Path,
) -> None:
    """A practitioner records in Kolkata and the coach opens the store in New York: the
    report's start and the EDF+ header are the time the practitioner saw (the daemon stores
    its UTC offset with each session); both used to be New York's, 10½ hours off."""
    import datetime as dt

    db = tmp_path / "s.db"

    def run(zone: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "settle.cli", *args],
            capture_output=True, text=True, timeout=120, env={**ENV, "TZ": zone},
        )  # fmt: skip

    res = run("Asia/Kolkata", "demo", "--duration", "2", "--speed", "20", "--no-mqtt",
              "--no-http", "--db", str(db))  # fmt: skip
    assert res.returncode == 0, res.stderr
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
    kolkata = dt.datetime.fromtimestamp(s.started_ms // 1000, tz=dt.UTC).astimezone(
        dt.timezone(dt.timedelta(hours=5, minutes=30))
    )
    res = run("America/New_York", "report", "latest", "--out", str(tmp_path), "--db", str(db))
    assert res.returncode == 0, res.stderr
    (page,) = tmp_path.glob("*.html")
    assert f"{kolkata:%Y-%m-%d %H:%M:%S} UTC+05:30" in page.read_text()
    edf = tmp_path / "s.edf"
    res = run("America/New_York", "export", "latest", "--format", "edf", "--out", str(edf),
              "--db", str(db))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert edf.read_bytes()[168:184].decode() == f"{kolkata:%d.%m.%y%H.%M.%S}"
