"""Pairing before practice: the strap is found, checked live, remembered; `run` uses it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from sensors.strap import watch_straps
from sensors.virtual.air import VirtualAir
from sensors.virtual.strap import VirtualStrap
from sessions.store import SessionStore
from settle import pairing
from settle.cli import live_scan
from settle.errors import ConfigError, shown
from tests.conftest import DATA
from tests.test_e2e import CONFIG
from tests.test_virtual_ble import other_advertiser


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
    assert re.search(r"^  signal: +-\d+ dBm$", out, re.M), out  # strong: no "weak" hint
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


def test_run_skips_a_remembered_virtual_strap(tmp_path: Path) -> None:
    """A virtual strap paired to try `settle pair` out could never be reached by `settle run`,
    which looked for it alone (or beside the real strap, warning about it all day)."""
    paired = tmp_path / "straps.json"
    res = settle("pair", "--virtual", "--seconds", "1", "--label", "try it", paired=paired)
    assert res.returncode == 0, res.stderr
    assert "; a virtual strap: `settle run` skips it." in res.stdout
    pairing.remember("chest", "AA:BB:CC:DD:EE:FF", "Polar H10 1234", "polar_h10_1", paired)
    run = settle(
        "run", "--no-mqtt", "--no-http", "--db", str(tmp_path / "s.db"), "--duration", "1",
        paired=paired,
    )  # fmt: skip
    (virtual,) = [p for p in pairing.load_paired(paired) if p.label == "try it"]
    assert (
        f"settle run: skipping 'try it' ({virtual.address}), a virtual strap (settle pair "
        "--virtual); `settle pair --forget 'try it'` removes it" in run.stdout
    ), run.stdout
    assert "settle run: paired straps chest (AA:BB:CC:DD:EE:FF)\n" in run.stdout, run.stdout


_STRAP = {
    "label": "chest", "address": "AA:BB:CC:DD:EE:FF", "name": "Polar H10 1234",
    "device_id": "polar_h10_1234", "paired_ms": 1,
}  # fmt: skip


def test_a_whole_number_written_with_a_point_is_still_a_time(tmp_path: Path) -> None:
    paired = tmp_path / "straps.json"
    paired.write_text(json.dumps({"v": 1, "straps": [{**_STRAP, "paired_ms": 1795960988159.0}]}))
    (strap,) = pairing.load_paired(paired)
    assert strap.paired_ms == 1795960988159 and isinstance(strap.paired_ms, int)


@pytest.mark.parametrize(
    "content, why",
    [
        ("{not json", "Expecting property name"),
        ("[]", 'not {"v": 1, "straps": [...]}'),
        ('{"v": 1}', 'not {"v": 1, "straps": [...]}'),
        ('{"v": 1, "straps": ["chest"]}', "strap 1 is text, not an object"),
        (json.dumps({"v": 1, "straps": [{**_STRAP, "label": None}]}), "label is null, not text"),
        (json.dumps({"v": 1, "straps": [_STRAP, {**_STRAP, "label": 5}]}), "strap 2: label is a"),
        (json.dumps({"v": 1, "straps": [{**_STRAP, "paired_ms": "1"}]}), "paired_ms is text"),
        (json.dumps({"v": 1, "straps": [{**_STRAP, "paired_ms": True}]}), "paired_ms is true"),
        (json.dumps({"v": 1, "straps": [{k: v for k, v in _STRAP.items() if k != "name"}]}),
         "strap 1 lacks 'name'"),
        (json.dumps({"v": 1, "straps": [{**_STRAP, "colour": "red"}]}), "unknown field 'colour'"),
        (json.dumps({"v": 1, "straps": [{**_STRAP, "k" * 100_000: 1}]}), "field '" + "k" * 39),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", [["pair", "--list"], ["pair", "--forget", "chest"]])
def test_corrupt_paired_file_is_one_line(
    tmp_path: Path, content: str, why: str, command: list[str]
) -> None:
    """A straps file edited by hand: not JSON, or a strap whose label is null or a number
    (every command that read it crashed with a Python traceback: "'NoneType' object has no
    attribute 'translate'"). One line saying what is wrong where, exit 2, file untouched."""
    paired = tmp_path / "straps.json"
    paired.write_text(content)
    res = settle(*command, paired=paired)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()], res.stderr
    assert "remembered straps file is unreadable" in res.stderr and why in res.stderr, res.stderr
    assert len(res.stderr) < 400 + len(str(paired))
    assert "Traceback" not in res.stderr
    assert paired.read_text() == content


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


def test_run_replay_records_a_gap_in_the_recording_instead_of_bridging_it(tmp_path: Path) -> None:
    """Thirty beats (26 s) cut out of a recording with beat times: `settle run --replay`
    played the intervals back to back, so the session had no gap, the beats after it sat
    26 s early and the session was 26 s short (while `settle analyze` splits there). The
    virtual strap now goes silent for the missing time, as a strap without contact does, and
    the daemon records the gap where it was."""
    lines = (DATA / "pyhrv_nni_short.csv").read_text().splitlines()
    cut = tmp_path / "gap.csv"
    cut.write_text("\n".join(lines[:101] + lines[131:]) + "\n")  # beats 100–129 missing
    t_before, t_after = (float(lines[i].split(",")[0]) for i in (100, 131))
    rr_after = float(lines[131].split(",")[1])
    db = tmp_path / "s.db"
    res = settle("run", "--replay", str(cut), "--speed", "50", "--no-mqtt", "--db", str(db),
                 paired=tmp_path / "none.json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
        rec = store.read_session(s.id)
    assert len(rec.beats) == 307
    (gap,) = rec.gaps
    # The gap is the silence: from the last beat before it to the start of the first
    # interval after it (on the session's clock, which starts at the first notification).
    offset = rec.beats[-1].beat_t_s - float(lines[-1].split(",")[0])
    assert abs(offset) < 1.5
    assert gap.start_t_s - offset == pytest.approx(t_before, abs=1.2)
    assert gap.end_t_s - offset == pytest.approx(t_after - rr_after / 1000, abs=1.2)
    after = next(b for b in rec.beats if b.beat_t_s > gap.end_t_s)
    assert after.beat_t_s - offset == pytest.approx(t_after, abs=1.2)


# -- scan ------------------------------------------------------------------------------------


async def test_scan_table_fills_in_live_with_heart_rate_straps_only() -> None:
    async with VirtualAir() as air, asyncio.timeout(20):
        for name in ["Polar H10 A1B2C3D4", "Wahoo TICKR 0042"]:
            await VirtualStrap(air, [800.0] * 5, name=name).start()
        await other_advertiser(air)  # advertises the Battery Service only
        kw = air.scanner_kwargs()

        # Rows arrive while the scan is still running, not only at its end.
        t0 = time.monotonic()
        seen: list[tuple[float, set[str]]] = []
        async for rows in watch_straps(3.0, kw):
            seen.append((time.monotonic() - t0, {r["name"] for r in rows}))
        first_t, first = seen[0]
        assert first_t < 1.0 and first <= {"Polar H10 A1B2C3D4", "Wahoo TICKR 0042"}
        assert seen[-1][1] == {"Polar H10 A1B2C3D4", "Wahoo TICKR 0042"}
        assert time.monotonic() - t0 >= 3.0  # a scan lasts its timeout

        console = Console(file=io.StringIO(), force_terminal=True, record=True, width=140)
        rows = await live_scan(1.0, kw, console)
        shown = console.export_text()
        assert {r["name"] for r in rows} == {"Polar H10 A1B2C3D4", "Wahoo TICKR 0042"}
        assert "2 heart-rate straps found" in shown
        for r in rows:
            line = next(line for line in shown.splitlines() if r["name"] in line)
            assert r["address"] in line and str(r["rssi"]) in line and r["device_id"] in line
            assert line.rstrip(" │|").endswith("no")  # no Polar PMD advertised
        assert "Other Gadget" not in shown
        drawn = console.file.getvalue()  # type: ignore[attr-defined]
        assert "Scanning for heart-rate straps (1 s)" in drawn  # the live view before the end
        assert "\x1b[" in drawn  # a terminal gets rich's redrawn table


async def test_a_hostile_strap_name_is_shown_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anyone in radio range can advertise the Heart Rate Service under any name: `[/x]H10`
    crashed `settle scan`/`pair` on a terminal (MarkupError, and for good in `pair --list`
    once remembered), `[link=…]` became a hyperlink, an escape sequence cleared the screen."""
    from settle import console as settle_console

    hostile = "[/x]H10\x1b[2J"
    async with VirtualAir() as air, asyncio.timeout(20):
        await VirtualStrap(air, [800.0] * 5, name=hostile).start()
        term = Console(file=io.StringIO(), force_terminal=True, record=True, width=140)
        (row,) = await live_scan(1.0, air.scanner_kwargs(), term)
    assert row["name"] == hostile
    assert "[/x]H10\\x1b[2J" in term.export_text()  # the escape shown, not sent
    assert "\x1b[2J" not in term.file.getvalue()  # type: ignore[attr-defined]

    table = Console(file=io.StringIO(), force_terminal=True, record=True, width=140)
    monkeypatch.setattr(settle_console, "out", table)
    settle_console.print_table(["label", "name"], [["chest", "[link=https://e.vil]x[/]"]])
    assert "[link=https://e.vil]x[/]" in table.export_text()
    assert "\x1b]8;" not in table.file.getvalue()  # type: ignore[attr-defined]  (no OSC 8 link)


def test_scan_piped_prints_one_plain_table_and_json_one_document(tmp_path: Path) -> None:
    paired = tmp_path / "none.json"
    res = settle("scan", "--virtual", "--timeout", "1", paired=paired)
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout and "Scanning" not in res.stdout  # no live view in a pipe
    header, *rows = res.stdout.strip().splitlines()
    assert header.split() == ["name", "address", "RSSI", "device", "id", "raw", "ECG", "(PMD)"]
    assert len(rows) == 1 and rows[0].startswith("Settle Virtual HR")
    assert rows[0].split()[-1] == "no"
    res = settle("scan", "--virtual", "--timeout", "1", "--json", paired=paired)
    assert res.returncode == 0, res.stderr
    (line,) = res.stdout.strip().splitlines()  # one document, nothing live before it
    (strap,) = json.loads(line)["straps"]
    assert strap["name"] == "Settle Virtual HR" and strap["pmd"] is False


@pytest.mark.parametrize(
    ("label", "address", "device_id", "field"),
    [
        ("", "AA:BB:CC:DD:EE:FF", "polar_h10_1", "label"),
        ("x" * 65, "AA:BB:CC:DD:EE:FF", "polar_h10_1", "label"),
        ("a\nb", "AA:BB:CC:DD:EE:FF", "polar_h10_1", "label"),
        ("anna", "not-an-address", "polar_h10_1", "address"),
        ("anna", "AA:BB:CC:DD:EE:FF", "../../etc", "device_id"),
        ("anna", "AA:BB:CC:DD:EE:FF", "a/b#", "device_id"),
    ],
)
def test_a_strap_settle_run_could_not_use_is_not_remembered(
    tmp_path: Path, label: str, address: str, device_id: str, field: str
) -> None:
    """The dashboard's Remember wrote any label, address and device id to straps.json
    (`"not-an-address"`, `"../../etc"`); a device id names MQTT topics."""
    paired = tmp_path / "straps.json"
    with pytest.raises(pairing.PairingError, match=f"^config: {field}: "):
        pairing.remember(label, address, "Polar H10", device_id, paired)
    assert not paired.exists()
    mac_uuid = "0A1B2C3D-4E5F-6A7B-8C9D-0E1F2A3B4C5D"  # CoreBluetooth names straps so
    pairing.remember("anna", mac_uuid, "Polar H10", "polar_h10_1", paired)
    assert [p.address for p in pairing.load_paired(paired)] == [mac_uuid]


def test_options_that_would_be_ignored_are_refused(tmp_path: Path) -> None:
    """`pair --list --forget anna` listed and kept anna (exit 0); `run --speed 10` without a
    replay ran at real time without a word; `run --replay F --address X` ignored X."""
    paired = tmp_path / "straps.json"
    pairing.remember("anna", "AA:BB:CC:DD:EE:FF", "Polar H10", "polar_h10_1", paired)
    for args, words in [
        (("pair", "--list", "--forget", "anna"), "--list shows the remembered straps"),
        (("pair", "Polar", "--forget", "anna"), "--forget takes the label or address"),
        (("run", "--speed", "10", "--no-mqtt", "--no-http", "--db", str(tmp_path / "s.db")),
         "--speed compresses a replay"),
        # The replay ran, and --address was never looked at.
        (("run", "--replay", str(DATA / "pyhrv_nni_short.csv"), "--speed", "1000",
          "--address", "AA:BB:CC:DD:EE:FF", "--no-mqtt", "--no-http",
          "--db", str(tmp_path / "s.db")),
         "--address picks a strap to record from, --replay a recording: give one"),
    ]:  # fmt: skip
        res = settle(*args, paired=paired)
        assert res.returncode == 2, res.stderr
        assert words in res.stderr and len(res.stderr.splitlines()) == 1
    assert [p.label for p in pairing.load_paired(paired)] == ["anna"]
    assert not (tmp_path / "s.db").exists()


def test_pairing_says_which_remembered_entry_it_replaces(tmp_path: Path) -> None:
    """A strap has one label and a label one strap: pairing the same strap under a new label
    dropped the old label, and reusing a label dropped the strap it meant, both silently
    (`settle run anna` then found nothing). `settle pair` now says what it replaced; pairing
    again under the same label says nothing more."""
    paired = tmp_path / "straps.json"
    first = settle("pair", "--virtual", "--seconds", "1", "--label", "chest", paired=paired)
    assert first.returncode == 0, first.stderr
    assert "label is gone" not in first.stdout and "until now" not in first.stdout
    (strap,) = pairing.load_paired(paired)
    again = settle("pair", "--virtual", "--seconds", "1", "--label", "chest", paired=paired)
    assert again.stdout.rstrip().endswith("a virtual strap: `settle run` skips it."), again.stdout
    moved = settle("pair", "--virtual", "--seconds", "1", "--label", "desk", paired=paired)
    assert moved.returncode == 0, moved.stderr
    assert (
        "This strap was remembered as 'chest'; that label is gone (one label per strap)."
        in moved.stdout
    ), moved.stdout
    assert [p.label for p in pairing.load_paired(paired)] == ["desk"]
    pairing.remember("anna", "AA:BB:CC:DD:EE:FF", "Polar H10 1234", "polar_h10_1", paired)
    reused = settle("pair", "--virtual", "--seconds", "1", "--label", "anna", paired=paired)
    assert (
        "'anna' was Polar H10 1234 (AA:BB:CC:DD:EE:FF) until now; it now means this strap."
        in reused.stdout
    ), reused.stdout
    assert "'desk'" in reused.stdout  # the virtual strap's old label went too
    assert {p.label: p.address for p in pairing.load_paired(paired)} == {"anna": strap.address}


def test_labels_an_older_settle_kept_apart_by_case_are_not_confused(tmp_path: Path) -> None:
    """A straps.json from before labels were one whatever their case holds "Anna" and
    "anna" for two people: `--device anna` sent anna's markers to Anna's strap (the first
    in the file). The label as typed picks its own; another case names both: refused, one
    line naming them."""
    paired = tmp_path / "straps.json"
    paired.write_text(json.dumps({"v": 1, "straps": [
        {"label": "Anna", "address": "AA:BB:CC:DD:EE:01", "name": "Polar H10 1",
         "device_id": "polar_h10_1", "paired_ms": 1},
        {"label": "anna", "address": "AA:BB:CC:DD:EE:02", "name": "Polar H10 2",
         "device_id": "polar_h10_2", "paired_ms": 2},
    ]}))  # fmt: skip
    assert pairing.device_for_label("anna", paired) == "polar_h10_2"
    assert pairing.device_for_label("Anna", paired) == "polar_h10_1"
    with pytest.raises(ConfigError, match="names two remembered straps") as err:
        pairing.device_for_label("ANNA", paired)
    assert "AA:BB:CC:DD:EE:01" in str(err.value) and "AA:BB:CC:DD:EE:02" in str(err.value)
    env = {**os.environ, "SETTLE_PAIRED_FILE": str(paired)}
    SessionStore.open(tmp_path / "s.db").close()
    out = subprocess.run(
        [sys.executable, "-m", "settle.cli", "trends", "--device", "ANNA", "--db",
         str(tmp_path / "s.db")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "names two remembered straps" in out.stderr
    # The flag is named as a flag, not as a setting ("config: --device: …").
    assert out.stderr.startswith("settle: error: --device: 'ANNA' names two"), out.stderr


def test_a_label_is_one_label_whatever_its_case(tmp_path: Path) -> None:
    """`forget anna` removed "Anna", but `remember("anna", …)` kept "Anna" beside it: two
    entries for one name, and which one `--device anna` meant depended on file order."""
    paired = tmp_path / "straps.json"
    pairing.remember("Anna", "AA:BB:CC:DD:EE:01", "Polar H10 1", "polar_h10_1", paired)
    assert [g.label for g in pairing.displaced("anna", "AA:BB:CC:DD:EE:02", paired)] == ["Anna"]
    pairing.remember("anna", "AA:BB:CC:DD:EE:02", "Polar H10 2", "polar_h10_2", paired)
    assert [(p.label, p.device_id) for p in pairing.load_paired(paired)] == [
        ("anna", "polar_h10_2")
    ]


def test_an_empty_label_is_refused_and_the_remembered_one_kept(tmp_path: Path) -> None:
    """`settle pair --virtual --label ""` remembered the strap by its device id without a
    word, and so took the place of its label: "anna" was gone."""
    paired = tmp_path / "straps.json"
    first = settle("pair", "--virtual", "--seconds", "0", "--label", "anna", paired=paired)
    assert first.returncode == 0, first.stderr
    before = paired.read_bytes()
    for label in ("", "  "):
        res = settle("pair", "--virtual", "--seconds", "0", "--label", label, paired=paired)
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            "settle: error: --label: empty; leave --label out to remember the strap by its "
            "device id"
        ]
        assert res.stdout == ""  # refused before looking for a strap
    assert paired.read_bytes() == before
    assert [p.label for p in pairing.load_paired(paired)] == ["anna"]


def test_a_bad_label_is_refused_before_looking_for_a_strap(tmp_path: Path) -> None:
    """`settle pair --label $'a\\tb'` scanned, connected and showed the strap live before
    refusing the label, worded as a config setting ("config: label: …")."""
    paired = tmp_path / "straps.json"
    for label in ("a\tb", "x" * 65):
        res = settle("pair", "--virtual", "--seconds", "5", "--label", label, paired=paired)
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            f"settle: error: --label: 1–64 printable characters, got {shown(label)}"
        ]
        assert res.stdout == ""  # nothing looked for, nothing shown
    assert not paired.exists()
