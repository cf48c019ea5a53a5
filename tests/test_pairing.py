"""Pairing before practice: the strap is found, checked live, remembered; `run` uses it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from sessions.store import SessionStore
from settle import pairing
from tests.conftest import DATA
from tests.test_e2e import CONFIG


def settle(*args: str, paired: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SETTLE_CONFIG": str(CONFIG), "SETTLE_PAIRED_FILE": str(paired)}
    return subprocess.run(
        [sys.executable, "-m", "settle.cli", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_pair_shows_the_strap_live_and_remembers_it(tmp_path: Path) -> None:
    paired = tmp_path / "conf" / "straps.json"
    res = settle("pair", "--virtual", "--seconds", "2", "--label", "chest", paired=paired)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for expected in ["Connected: Settle Virtual HR", "battery:         87 %",
                     "sensor location: chest", "firmware:        1.0.0",
                     "contact n/a", "Remembered as 'chest'"]:  # fmt: skip
        assert expected in out, out
    assert sum(line.strip().startswith("HR ") for line in out.splitlines()) >= 2
    assert stat.S_IMODE(paired.stat().st_mode) == 0o600
    (entry,) = json.loads(paired.read_text())["straps"]
    assert entry["label"] == "chest" and entry["device_id"].startswith("settle_virtual_hr_")

    # Pairing again under another label adds; the same label or address replaces.
    pairing.remember("anna", "AA:BB:CC:DD:EE:FF", "Polar H10 1234", "polar_h10_1", paired)
    pairing.remember("anna", "AA:BB:CC:DD:EE:00", "Polar H10 5678", "polar_h10_2", paired)
    labels = {p.label: p.address for p in pairing.load_paired(paired)}
    assert labels == {"chest": entry["address"], "anna": "AA:BB:CC:DD:EE:00"}
    listed = settle("pair", "--list", paired=paired)
    assert "anna" in listed.stdout and "chest" in listed.stdout
    assert settle("pair", "--forget", "anna", paired=paired).returncode == 0
    assert [p.label for p in pairing.load_paired(paired)] == ["chest"]
    missing = settle("pair", "--forget", "nobody", paired=paired)
    assert missing.returncode == 1 and "no remembered strap matches 'nobody'" in missing.stderr


def test_corrupt_paired_file_is_one_line(tmp_path: Path) -> None:
    paired = tmp_path / "straps.json"
    paired.write_text("{not json")
    res = settle("pair", "--list", paired=paired)
    assert res.returncode == 2
    assert (
        res.stderr.strip().splitlines() == [res.stderr.strip()]
        and "remembered straps file is unreadable" in res.stderr
    )


def test_run_replay_feeds_a_recording_through_the_pipeline(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    res = settle(
        "run", "--replay", str(DATA / "pyhrv_nni_short.csv"), "--speed", "100", "--no-mqtt",
        "--db", str(db), paired=tmp_path / "none.json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
        assert s.n_beats == 337
    bad = settle("run", "--replay", str(tmp_path / "missing.csv"), paired=tmp_path / "n.json")
    assert bad.returncode == 1 and "file not found" in bad.stderr
