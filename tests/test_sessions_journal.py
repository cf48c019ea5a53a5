"""`settle log import`: a practitioner's journal aligned to the session; bad lines named;
nothing imported half-way."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sessions.journal import import_journal, parse_journal
from sessions.store import MarkerRow, MarkerSource, SessionStore
from settle.errors import InputFileError

# 2026-11-18 09:00:00.250 in Europe/Berlin (UTC+1): 08:00:00.250 UTC.
T0_MS = int(dt.datetime(2026, 11, 18, 8, 0, 0, 250_000, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.fixture(autouse=True)
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clock times are local: pin the zone so the test means the same everywhere."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    with SessionStore.open(tmp_path / "s.db") as s:
        yield s


@pytest.fixture
def sid(store: SessionStore) -> str:
    info = store.create_session("dev", T0_MS, "x", {})
    store.finish_session(info.id, T0_MS + 30 * 60_000)  # 30 min
    return info.id


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_clock_times_of_a_session_recorded_in_another_zone_are_its_clock(
    store: SessionStore, tmp_path: Path
) -> None:
    """The practitioner journals on paper in New York (the daemon stored UTC−5 with the
    session) and imports at home in Berlin: `03:02 shame` is 2 minutes into the session that
    began at 03:00 New York time. Read in Berlin's zone it was 6 hours away — outside the
    session, placed at its start. (The session began at 03:00:00.250 there.)"""
    info = store.create_session("dev", T0_MS, "x", {"utc_offset_s": -5 * 3600})
    store.finish_session(info.id, T0_MS + 30 * 60_000)
    path = _write(tmp_path, "j.txt", "03:02:00 shame: in New York\n03:10:00 doubt: again\n")
    rows = import_journal(store, info.id, path)
    assert [(m.kind, m.t_s) for m in rows] == [("shame", 119.75), ("doubt", 599.75)]  # from .250


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("j.csv", "t_s,kind,text\n10,shame,x\n20,,\n"),
        ("j.csv", "t_s\n10\n"),
        ("j.jsonl", '{"t_s": 10, "kind": "shame"}\n{"t_s": 20}\n'),
    ],
)
def test_an_entry_with_neither_kind_nor_text_is_refused(
    store: SessionStore, sid: str, tmp_path: Path, name: str, body: str
) -> None:
    """A journal row with a time and nothing else was imported as an empty `note`: a marker
    that says nothing. Refused with the line, and nothing of the file imported."""
    path = _write(tmp_path, name, body)
    with pytest.raises(InputFileError, match="nothing to mark: the entry has neither a kind"):
        import_journal(store, sid, path)
    assert store.read_session(sid).markers == []
    # A kind alone is a marker (the text is optional).
    ok = _write(tmp_path, "k.csv", "t_s,kind\n10,shame\n")
    assert [(m.kind, m.text) for m in import_journal(store, sid, ok)] == [("shame", "")]


def test_a_journal_imported_again_shifted_says_the_shift_in_offset_seconds(
    store: SessionStore, tmp_path: Path
) -> None:
    """In a session recorded at --speed 20, the same journal imported again with --offset 1
    (clock seconds) was refused as "already, 20.0 s earlier" — session seconds, 20 times the
    --offset that made it. It says the journal's clock seconds now, session seconds beside."""
    info = store.create_session("dev", T0_MS, "x", {"time_scale": 20.0})
    store.finish_session(info.id, T0_MS + 60_000)  # 20 min of session time
    log = _write(tmp_path, "log.txt", "09:00:10 doubt: one\n09:00:20 note: two\n")
    import_journal(store, info.id, log)
    with pytest.raises(InputFileError) as err:
        import_journal(store, info.id, log, offset_s=1)
    said = str(err.value)
    assert "already, 1.0 s earlier on the journal's clock (20.0 s of session time at 20×)" in said


def test_text_lines_in_local_time(store: SessionStore, sid: str, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "journal.txt",
        "# morning practice\n"
        "09:02:00 hold-start: I am safe\n"
        "\n"
        "09:05:30.5 shame: it came back at the second breath\n"
        "09:10 noticed the birds\n",
    )
    rows = import_journal(store, sid, path)
    assert [(m.t_s, m.kind, m.text) for m in rows] == [
        (119.75, "hold-start", "I am safe"),
        (330.25, "shame", "it came back at the second breath"),
        (599.75, "note", "noticed the birds"),
    ]
    stored = store.markers(sid)
    assert all(m.source is MarkerSource.IMPORT for m in stored)
    assert stored[0].ts_ms == T0_MS + 119_750


def test_offset_and_csv_and_jsonl(store: SessionStore, sid: str, tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path,
        "j.csv",
        'time,kind,text\n09:01:00,threat,"door slammed, loud"\n2026-11-18T08:03:00Z,doubt,\n',
    )
    rows = import_journal(store, sid, csv_path, offset_s=-0.25)
    assert [(m.t_s, m.kind, m.text) for m in rows] == [
        (59.5, "threat", "door slammed, loud"),
        (179.5, "doubt", ""),
    ]
    jl = tmp_path / "j.jsonl"
    jl.write_text(
        "\n".join(
            json.dumps(o)
            for o in (
                {"t_s": 42.0, "kind": "attention", "text": "drifted"},
                {"ts_ms": T0_MS + 50_000, "text": "plain note"},
            )
        )
    )
    rows = import_journal(store, sid, jl, offset_s=10)
    assert [(m.t_s, m.kind) for m in rows] == [(52.0, "attention"), (60.0, "note")]


def test_journal_across_midnight(store: SessionStore, tmp_path: Path) -> None:
    late = int(dt.datetime(2026, 11, 18, 22, 50, tzinfo=dt.UTC).timestamp() * 1000)  # 23:50
    sid = store.create_session("dev", late, "x", {}).id
    rows = import_journal(store, sid, _write(tmp_path, "n.txt", "00:10:00 note: after midnight\n"))
    assert rows[0].t_s == 20 * 60


def test_importing_twice_does_not_duplicate(store: SessionStore, sid: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "j.txt", "09:02:00 shame: x\n")
    assert len(import_journal(store, sid, path)) == 1
    assert import_journal(store, sid, path) == []
    assert len(store.markers(sid)) == 1


@pytest.mark.parametrize(
    ("name", "text", "line", "reason"),
    [
        ("a.txt", "09:01:00 fine\n09:02:00 fine too\nlunch at noon\n", 3, "expected 'HH:MM:SS"),
        ("b.txt", "09:01:00 ok\n25:00:00 no such hour\n", 2, "expected 'HH:MM:SS"),
        ("c.txt", "09:01:00 ok\n08:59:00 too early\n", 2, "before the session started"),
        ("d.txt", "09:01:00 ok\n09:45:00 too late\n", 2, "after the session ended"),
        ("e.csv", "time,kind,text\n09:01:00,anger,x\n", 2, "unknown marker kind 'anger'"),
        ("f.csv", "when,text\n09:01:00,x\n", 1, "expected a header"),
        ("g.csv", "t_s,text\n1.0,a\nabc,b\n", 3, "t_s is not a number"),
        ("h.jsonl", '{"t_s": 1, "text": "a"}\n{"t_s": 2, "text": "b"\n', 2, "not JSON"),
        ("i.jsonl", '{"t_s": 1, "time": "09:00:00"}\n', 1, "exactly one of"),
        ("j.jsonl", '{"t_s": 1, "colour": "red"}\n', 1, "unknown field(s) 'colour'"),
        # A megabyte key or header was echoed whole in the one line: cut to 40 or 80.
        ("jj.jsonl", '{"t_s": 1, "' + "c" * 1_000_000 + '": 1}\n', 1, "'" + "c" * 39 + "…'"),
        ("ff.csv", "when," + ",".join(["w" * 100_000] * 10) + "\n09:01:00,x\n", 1, "w" * 74 + "…'"),
        ("k.jsonl", "[1, 2]\n", 1, "expected a JSON object"),
        ("n.jsonl", '{"t_s": true, "text": "a"}\n', 1, "t_s is not a number: True"),
        ("o.csv", 't_s,text\n1,"unclosed\n2,b\n3,c\n', 4, "malformed CSV: unexpected end"),
        ("l.txt", "# nothing yet\n", None, "no entries found"),
        ("m.txt", "", None, "file is empty"),
        ("p.txt", "9:01 ok\n6:07 PM shame: x\n", 2, "write 6:07 PM as 18:07"),
        ("q.txt", "Morning sit\n09:01 shame: x\n", 1, "(a title or comment line starts with #)"),
        # Control characters MQTT and HTTP refuse in a marker's text went into the store and
        # verbatim into the CSV export (pandas cut the text at the NUL).
        (
            "r.jsonl",
            '{"t_s": 1, "text": "ok"}\n'
            '{"t_s":300,"kind":"note","text":"ctrl \\u0000 nul \\u001b[31m esc \\u0007"}\n',
            2,
            r"control character '\x00' in the text (tab and line breaks are allowed)",
        ),
        ("s.csv", 't_s,text\n1,ok\n2,"esc \x1b[31m red"\n', 3, r"control character '\x1b'"),
        ("t.txt", "09:01:00 ok\n09:02:00 shame: bell \x07\n", 2, r"control character '\x07'"),
        ("u.jsonl", '{"t_s": 1, "text": "trailing \\u001f"}\n', 1, r"control character '\x1f'"),
        # Lines end at LF, CR LF and CR only: str.splitlines also split at these, so the
        # rule never saw them and the error named the next line ("ff.txt:2: expected
        # 'HH:MM:SS text', got 'b'"), or a JSON string holding a raw U+2028 was "not JSON".
        ("v.txt", "09:01:00 a\u2028b\n09:02:00 ok\n", 1, r"control character '\u2028'"),
        ("w.txt", "09:01:00 ok\n09:01:30 a\x0cb\n", 2, r"control character '\x0c'"),
        ("x.txt", "09:01:00 a\x0bb\u2029c\n", 1, r"control character '\x0b'"),
        ("y.txt", "09:01:00 ok\n09:02:00 a\x85b\n", 2, r"control character '\x85'"),
        ("z.txt", "09:01:00 ok\r09:01:10 x\x1eshame: y\r", 2, r"control character '\x1e'"),
        ("za.txt", "09:01:00\x1cshame: y\n", 1, r"control character '\x1c'"),  # between
        ("zb.jsonl", '{"t_s": 1, "text": "ok"}\n{"t_s": 2, "text": "a\u2028b"}\n', 2, r"'\u2028'"),
        ("zc.csv", "t_s,text\n1,a\x1db\n", 2, r"control character '\x1d'"),
        # A line holding nothing but such a character was skipped as blank (str.strip takes
        # it for white space): no blank line to whoever wrote it, maybe a damaged file.
        (
            "zd.txt",
            "09:01:00 ok\n \t \n\x0c\n09:02:00 x\n",
            3,
            r"'\x0c' on an otherwise blank line",
        ),
        ("ze.txt", "09:01:00 ok\n  \u2028\n", 2, r"control character '\u2028' on an otherwise"),
        ("zf.jsonl", '{"t_s": 1, "text": "a"}\n\n\u2029\n', 3, r"character '\u2029' on an other"),
        ("zg.csv", "t_s,text\n1,a\n\x0b,\n", 3, r"control character '\x0b' on an otherwise"),
    ],
)
def test_bad_lines_are_named_and_nothing_is_imported(
    store: SessionStore,
    sid: str,
    tmp_path: Path,
    name: str,
    text: str,
    line: int | None,
    reason: str,
) -> None:
    store.add_marker(sid, MarkerRow(1.0, T0_MS, "note", "before", MarkerSource.CLI))
    path = _write(tmp_path, name, text)
    with pytest.raises(InputFileError) as err:
        import_journal(store, sid, path)
    assert err.value.line == line
    assert reason in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300 + len(str(path))
    assert str(err.value).startswith(f"{path}:{line}:" if line else f"{path}:")
    assert [m.text for m in store.markers(sid)] == ["before"]  # nothing half-way


def test_tab_and_line_breaks_are_kept_in_a_text(
    store: SessionStore, sid: str, tmp_path: Path
) -> None:
    """As in a marker sent over MQTT or HTTP, only tab and line breaks of the control
    characters may be in an entry's text."""
    path = _write(tmp_path, "j.jsonl", '{"t_s": 1, "text": "a\\tb\\r\\nc"}\n')
    (row,) = import_journal(store, sid, path)
    assert row.text == "a\tb\r\nc"


def test_lines_end_at_lf_crlf_and_cr_only(store: SessionStore, sid: str, tmp_path: Path) -> None:
    """A journal's lines are counted as a CSV reader counts them, in every format: a bad
    line and a byte that is not UTF-8 are named by the line they are on."""
    path = _write(tmp_path, "a.txt", "09:01:00 one\r09:02:00 two\r\n\n09:03:00 three\n")
    assert [(e.line, e.text) for e in parse_journal(path)] == [
        (1, "one"),
        (2, "two"),
        (4, "three"),
    ]
    path = _write(tmp_path, "b.txt", "09:01:00 one\r09:02:00 two\rlunch at noon\n")
    with pytest.raises(InputFileError, match=r"b\.txt:3: expected 'HH:MM:SS text'"):
        parse_journal(path)
    path = tmp_path / "c.txt"
    for bom in (b"", b"\xef\xbb\xbf"):
        path.write_bytes(bom + b"09:01:00 one\r09:02:00 \xff\n")
        with pytest.raises(InputFileError, match=r"c\.txt:2: not UTF-8"):
            parse_journal(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="file not found"):
        parse_journal(tmp_path / "missing.txt")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"09:00:00 \xff\xfe\n")
    with pytest.raises(InputFileError, match="not UTF-8"):
        parse_journal(binary)
    with pytest.raises(InputFileError, match="is a directory"):
        parse_journal(tmp_path)


def test_cli_log_import(tmp_path: Path, store: SessionStore, sid: str) -> None:
    from settle.cli import app

    db = store.path
    good = _write(tmp_path, "j.txt", "09:02:00 shame: x\n09:03:00 note\n")
    bad = _write(tmp_path, "bad.txt", "09:02:00 shame: x\nnot a line\n")
    runner = CliRunner()
    res = runner.invoke(app, ["log", "import", "latest", str(bad), "--db", str(db)])
    assert res.exit_code == 1
    assert (
        res.output.strip() == f"settle: error: {bad}:2: expected 'HH:MM:SS text', got 'not a line'"
    )
    res = runner.invoke(app, ["log", "import", sid, str(good), "--format", "xml", "--db", str(db)])
    assert res.exit_code == 2 and "unknown journal format 'xml'" in res.output
    res = runner.invoke(
        app, ["log", "import", sid[:6], str(good), "--offset", "-60", "--db", str(db)]
    )
    assert res.exit_code == 0, res.output
    assert f"imported 2 markers into session {sid}" in res.output
    assert [m.t_s for m in store.markers(sid)] == [59.75, 119.75]
    # The offset was wrong: importing again with the right one added a shifted second copy
    # of every entry. Now it is refused and says how to move them; --replace moves them.
    again = ["log", "import", sid, str(good), "--offset", "-30", "--db", str(db)]
    res = runner.invoke(app, again)
    assert res.exit_code == 1
    assert "imported into session" in res.output and "already, 30.0 s earlier" in res.output
    assert "import again with --replace" in res.output
    assert [m.t_s for m in store.markers(sid)] == [59.75, 119.75]
    res = runner.invoke(app, [*again, "--replace"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*again, "--replace"])  # idempotent
    assert f"imported 2 markers into session {sid}" in res.output
    res = runner.invoke(app, again)
    assert f"nothing new to import into session {sid}: every entry was imported already" in (
        res.output
    )
    assert [(m.t_s, m.kind) for m in store.markers(sid)] == [(89.75, "shame"), (149.75, "note")]
    assert os.environ["TZ"] == "Europe/Berlin"


def test_offset_is_bounded_and_running_sessions_end_now(
    tmp_path: Path, store: SessionStore, sid: str
) -> None:
    """An absurd --offset is refused before anything is read (it used to be stored and break
    the EDF export with a 28 PiB allocation); a running session has no entries in the future."""
    from settle.cli import app

    db = store.path
    good = _write(tmp_path, "j.txt", "09:02:00 shame: x\n")
    runner = CliRunner()
    for offset in ("1e15", "1e300", "-90000", "nan"):
        res = runner.invoke(
            app, ["log", "import", sid, str(good), "--offset", offset, "--db", str(db)]
        )
        assert res.exit_code == 2, (offset, res.output)
        assert "--offset must be within ±86400 s" in res.output
        assert len(res.output.strip().splitlines()) == 1
    assert store.markers(sid) == []

    now_ms = int(time.time() * 1000)
    running = store.create_session("dev", now_ms - 60_000, "x", {}).id  # started 1 min ago
    soon = _write(tmp_path, "soon.csv", "t_s,text\n30,fine\n")
    later = _write(tmp_path, "later.csv", "t_s,text\n30,fine\n3600,an hour from now\n")
    with pytest.raises(InputFileError, match=r"later.csv:3: falls .* has recorded so far"):
        import_journal(store, running, later)
    assert [m.t_s for m in import_journal(store, running, soon)] == [30.0]


def test_offset_keeps_whole_milliseconds(store: SessionStore, sid: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "j.csv", "t_s,text\n13.578,a\n")
    (row,) = import_journal(store, sid, path, offset_s=0.1)
    assert (row.t_s, row.ts_ms) == (13.678, T0_MS + 13_678)  # not 13.677999999999999


def test_clock_times_of_a_time_compressed_session(store: SessionStore, tmp_path: Path) -> None:
    """A --speed 10 session records 10 session seconds per wall second. A journal line at
    09:00:20 (20 s after the start on the wall clock) is 200 session seconds in: it was put
    at 20 s, 10 times too early, beside a dashboard marker of the same instant at 205 s."""
    sid = store.create_session("dev", T0_MS, "x", {"time_scale": 10.0}).id
    store.finish_session(sid, T0_MS + 60_000)  # one wall minute: 600 session seconds
    path = _write(tmp_path, "j.txt", "09:00:20.250 shame: same instant\n")
    (row,) = import_journal(store, sid, path)
    assert (row.t_s, row.ts_ms) == (200.0, T0_MS + 20_000)
    (col,) = import_journal(store, sid, _write(tmp_path, "j.csv", "t_s,text\n300,x\n"))
    assert (col.t_s, col.ts_ms) == (300.0, T0_MS + 30_000)  # a wall time that happened
    (late,) = import_journal(store, sid, path, offset_s=2)  # journal clock 2 s behind
    assert (late.t_s, late.ts_ms) == (220.0, T0_MS + 22_000)


def test_the_repeated_dst_hour_is_read_inside_the_session(
    store: SessionStore, tmp_path: Path
) -> None:
    """On 2026-10-25 Berlin's clocks go from 03:00 CEST back to 02:00 CET. A session from
    02:40 CEST (00:40 UTC) to 02:40 CET (01:40 UTC) holds 02:50 once (CEST) and 02:10 once
    (CET): the second reading was never tried ("falls 30 min before the session started")."""
    start = int(dt.datetime(2026, 10, 25, 0, 40, tzinfo=dt.UTC).timestamp() * 1000)
    sid = store.create_session("dev", start, "x", {}).id
    store.finish_session(sid, start + 3_600_000)
    rows = import_journal(
        store, sid, _write(tmp_path, "dst.txt", "02:50 hold-start: x\n02:10 shame: y\n")
    )
    assert [(m.kind, m.t_s) for m in rows] == [("hold-start", 600.0), ("shame", 1800.0)]


def test_a_session_across_the_dst_change_holds_both_readings_in_journal_order(
    store: SessionStore, tmp_path: Path
) -> None:
    """A session from 01:50 CEST to 03:10 CET on 2026-10-25: 02:20 happens twice in it. A
    notebook written in order, 02:20, 02:50, then 02:20 again an hour after the first: the
    second 02:20 was put on the first (30 min), before the 02:50 written above it; it is at
    90 min. A first 02:20 takes the earlier reading, and an ISO time in a CSV does the same."""
    start = int(dt.datetime(2026, 10, 24, 23, 50, tzinfo=dt.UTC).timestamp() * 1000)  # 01:50
    sid = store.create_session("dev", start, "x", {}).id
    store.finish_session(sid, start + 140 * 60_000)  # 03:10 CET
    notebook = _write(
        tmp_path,
        "dst.txt",
        "01:55 note: sat down\n02:20 shame: first\n02:50 note: still summer time\n"
        "02:20 threat: second\n03:05 note: end\n",
    )
    import_journal(store, sid, notebook)
    assert [(m.t_s / 60, m.text) for m in store.markers(sid)] == [
        (5.0, "sat down"), (30.0, "first"), (60.0, "still summer time"), (90.0, "second"),
        (135.0, "end"),
    ]  # fmt: skip
    iso = _write(
        tmp_path,
        "dst.csv",
        "time,text\n2026-10-25T02:40,a\n2026-10-25T02:10,b\n2026-10-25T02:40,c\n",
    )
    import_journal(store, sid, iso, offset_s=1)
    assert [(m.t_s, m.text) for m in store.markers(sid) if len(m.text) == 1] == [
        (50 * 60 + 1, "a"), (80 * 60 + 1, "b"), (110 * 60 + 1, "c"),
    ]  # fmt: skip


def test_kinds_in_any_case_and_identical_lines_each_count(
    store: SessionStore, sid: str, tmp_path: Path
) -> None:
    """A phone capitalises the first word: "Shame: came back" was stored as a note (the CSV
    kind column was lowercased). Two identical lines of a log kept to the minute are two
    markers (one was dropped silently); importing the file again still adds nothing."""
    path = _write(
        tmp_path,
        "j.txt",
        "09:01 Hold start: began\n09:02 SHAME: x\n09:02 shame: x\n09:03 Note to self: fine\n",
    )
    rows = import_journal(store, sid, path)
    assert [(m.kind, m.text) for m in rows] == [
        ("hold-start", "began"), ("shame", "x"), ("shame", "x"), ("note", "Note to self: fine"),
    ]  # fmt: skip
    assert import_journal(store, sid, path) == []
    assert len(store.markers(sid)) == 4


def test_replace_removes_only_the_earlier_copy_of_this_journal(
    store: SessionStore, sid: str, tmp_path: Path
) -> None:
    """A second journal whose one entry had the same words as another's was refused as
    "already imported", and --replace then deleted every earlier import. Now a one-line
    journal is simply imported; a journal imported again shifted is refused, and --replace
    removes that journal's earlier markers only (a corrected typo included)."""
    part_a = _write(tmp_path, "a.txt", "09:07:00 shame:\n")
    part_b = _write(tmp_path, "b.txt", "09:07:40 shame:\n")
    assert len(import_journal(store, sid, part_a)) == 1
    assert len(import_journal(store, sid, part_b)) == 1
    log = _write(tmp_path, "log.txt", "09:10 doubt: one\n09:12 note: tpyo\n")
    import_journal(store, sid, log)
    with pytest.raises(InputFileError, match=r"already, 30.0 s earlier; .*removes those 2"):
        import_journal(store, sid, log, offset_s=30)
    fixed = _write(tmp_path, "log.txt", "09:10 doubt: one\n09:12 note: typo\n")
    import_journal(store, sid, fixed, offset_s=30, replace=True)
    assert [(m.t_s, m.kind, m.text) for m in store.markers(sid)] == [
        (419.75, "shame", ""), (459.75, "shame", ""), (629.75, "doubt", "one"),
        (749.75, "note", "typo"),
    ]  # fmt: skip


def test_imported_markers_do_not_move_the_session_end(
    store: SessionStore, sid: str, tmp_path: Path
) -> None:
    """Each import may reach 1 s past the end; the end counted imported markers, so five
    imports crept 5 s past the session, and a baseline could then be set there."""
    end_s = store.recorded_span_s(sid)
    import_journal(store, sid, _write(tmp_path, "a.csv", f"t_s,text\n{end_s + 0.9},x\n"))
    assert store.recorded_span_s(sid) == end_s
    with pytest.raises(InputFileError, match="after the session ended"):
        import_journal(store, sid, _write(tmp_path, "b.csv", f"t_s,text\n{end_s + 1.8},y\n"))


def test_tab_and_semicolon_separated_journals(
    store: SessionStore, sid: str, tmp_path: Path
) -> None:
    """A .tsv file was detected as CSV and split on commas, so always refused; a spreadsheet
    saved with semicolons (comma-decimal locales) was refused too."""
    tsv = _write(tmp_path, "j.tsv", "t_s\tkind\ttext\n61.5\tshame\tit came back, twice\n")
    semi = _write(tmp_path, "j.csv", "time;kind;text\n09:03:00;doubt;x\n")
    rows = import_journal(store, sid, tsv) + import_journal(store, sid, semi)
    assert [(m.t_s, m.kind, m.text) for m in rows] == [
        (61.5, "shame", "it came back, twice"), (179.75, "doubt", "x"),
    ]  # fmt: skip


def test_a_decimal_comma_and_a_leading_blank_line_in_a_csv_journal(
    store: SessionStore, sid: str, tmp_path: Path
) -> None:
    """`;` is named for comma-decimal spreadsheets, yet `t_s` written `12,5` there was "t_s
    is not a number: '12,5'"; and a blank line above the header was taken for the header
    ("expected a header … got ''")."""
    semi = _write(tmp_path, "j.csv", "t_s;kind;text\n12,5;shame;first\n30;note;second\n")
    tabs = _write(tmp_path, "j.tsv", "\n \nt_s\ttext\n-0,25\tbefore\n")  # refused: < 0
    blank = _write(tmp_path, "k.csv", "\n\nt_s,kind,text\n40.5,doubt,third\n")
    rows = import_journal(store, sid, semi) + import_journal(store, sid, blank)
    assert [(m.t_s, m.kind, m.text) for m in rows] == [
        (12.5, "shame", "first"), (30.0, "note", "second"), (40.5, "doubt", "third"),
    ]  # fmt: skip
    with pytest.raises(InputFileError, match=r"j\.tsv:4: .*before the session start"):
        import_journal(store, sid, tabs)
    # With commas between the columns a decimal comma is a column more, as before.
    comma = _write(tmp_path, "c.csv", "t_s,text\n12,5,x\n")
    with pytest.raises(InputFileError, match=r"c\.csv:2: expected 2 columns, got 3"):
        import_journal(store, sid, comma)


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("j.csv", "t_s,text\n1e308,a\n", "j.csv:2: t_s '1e308' is beyond ±1e+10 s"),
        ("j.jsonl", '{"t_s": 1e308, "text": "a"}\n', "j.jsonl:1: t_s 1e+308 is beyond ±1e+10 s"),
        ("j.jsonl", '{"t_s": -1e11, "text": "a"}\n', "j.jsonl:1: t_s -100000000000.0 is beyond"),
        ("j.jsonl", '{"ts_ms": 1e300, "text": "a"}\n',
         "j.jsonl:1: ts_ms is not epoch milliseconds: 1e+300"),
    ],
)  # fmt: skip
def test_a_time_far_out_is_named_not_a_traceback(
    store: SessionStore, sid: str, tmp_path: Path, name: str, text: str, words: str
) -> None:
    """t_s 1e308 overflowed placing it (OverflowError traceback); ts_ms 1e300 was placed and
    refused with a 430-character count of hours after the session."""
    path = _write(tmp_path, name, text)
    with pytest.raises(InputFileError) as exc:
        import_journal(store, sid, path)
    assert words in str(exc.value)
    assert store.read_session(sid).markers == []


def test_an_entry_years_after_the_session_is_said_in_days(
    store: SessionStore, sid: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, "j.jsonl", '{"ts_ms": 99999999999999, "text": "a"}\n')
    with pytest.raises(InputFileError, match=r"falls \d+ days after the session ended") as exc:
        import_journal(store, sid, path)
    assert len(str(exc.value)) < 200
