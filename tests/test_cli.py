"""The command line as a user meets it: demo stops by itself or on Ctrl-C with the session
closed, sessions/export/scan print what they promise, and bad input is one line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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
        while b"session:" not in await proc.stdout.readline():
            pass
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
