"""RR file readers: the formats users bring, and one clear line for everything else."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from sensors.readers import RR_MAX_MS, RR_MIN_MS, read_rr_file
from sessions.export import export_csv
from sessions.store import (
    BeatClass,
    BeatRow,
    EcgBeatRow,
    GapRow,
    IndicesRow,
    MarkerRow,
    SessionStore,
)
from settle.errors import InputFileError
from tests.conftest import DATA


def test_reads_t_s_rr_ms_csv() -> None:
    rec = read_rr_file(DATA / "pyhrv_nni_short.csv")
    assert rec.fmt == "csv"
    assert rec.rr_ms.size == 337
    assert rec.rr_ms[:3].tolist() == [859.0, 867.0, 883.0]
    assert rec.t_s[:2].tolist() == [0.859, 1.726]


def test_one_rr_per_line_with_comments(tmp_path: Path) -> None:
    f = tmp_path / "elite.txt"
    f.write_text("# exported\n812\n\n790.5\n805\n")
    rec = read_rr_file(f)
    assert rec.fmt == "rr-per-line"
    assert rec.rr_ms.tolist() == [812.0, 790.5, 805.0]
    assert np.allclose(rec.t_s, [0.812, 1.6025, 2.4075])


def test_polar_hrm_rr_mode(tmp_path: Path) -> None:
    f = tmp_path / "x.hrm"
    f.write_text("[Params]\nVersion=106\nMode=000\n\n[HRData]\n1000\n980\n1010\n")
    rec = read_rr_file(f)
    assert rec.fmt == "polar-hrm"
    assert rec.rr_ms.tolist() == [1000.0, 980.0, 1010.0]
    f.write_text("[Params]\nInterval=238\n[HRData]\n1000\n980\n")  # 238: R-R data
    assert read_rr_file(f).rr_ms.tolist() == [1000.0, 980.0]
    # Columns after the RR (tabs, or spaces from other exporters) are left alone.
    f.write_text("[Params]\nInterval=238\n[HRData]\n1000\t12\t5\n980  3\n  1010\t\n")
    assert read_rr_file(f).rr_ms.tolist() == [1000.0, 980.0, 1010.0]


def test_quoted_csv_header_and_a_gap_are_read(tmp_path: Path) -> None:
    """R and pandas (full quoting) quote the header; a gap now and then is not a mismatch."""
    f = tmp_path / "q.csv"
    f.write_text('"t_s","rr_ms"\n0.8,800\n1.6,800\n31.6,810\n32.4,800\n33.2,800\n')
    rec = read_rr_file(f)
    assert rec.fmt == "csv"
    assert rec.t_s.tolist() == [0.8, 1.6, 31.6, 32.4, 33.2]


@pytest.mark.parametrize(
    ("content", "words", "line"),
    [
        ("", "empty", None),
        ("hello\n", "not a recognised RR file", 1),
        # A decimal comma or two values without a header: say which, on which line.
        ("859,0\n870,0\n", "'859,0' is not one RR in ms: a decimal comma needs", 1),
        ("RR;HR\n800;75\n810\n", "expected 2 columns, found 1", 3),
        # A header giving seconds is refused at the header, whatever the values: RR in
        # seconds of a heart under 61 beats/min (1.114) are all valid as milliseconds.
        ("RR [s]\n0.859\n", "the header gives the RR column 'RR [s]' in seconds", 1),
        ("RR (s)\n1.114\n1.113\n", "in milliseconds, not seconds", 1),
        ("time;rr_sec\n0;1,114\n", "the header gives the RR column 'rr_sec' in seconds", 1),
        ("IBI_s\n1.114\n", "the header gives the RR column 'IBI_s' in seconds", 1),
        # Without a unit: a median under 100 ms (600 beats/min) is RR in seconds.
        ("1.114\n1.113\n1.2\n", "the median RR is 1.114 ms, under 100 ms (600 beats/min)", None),
        ("RR\n1.114\n1.113\n", "RR must be in milliseconds, not seconds", None),
        # A control character after a number: a traceback (ValueError from float()).
        ("t_s,rr_ms\n0.8,800\n1.6,800\x1d\n", "RR value '800\\x1d' is not a number", 3),
        ("800\n\x1c810\n", "RR value '\\x1c810' is not a number", 2),
        ("RR;x\n800;1\n810\x1f;1\n", "RR value '810\\x1f' is not a number", 3),
        ("800\n-5\n", "not positive", 2),
        ("800\nabc\n", "'abc' is not a number", 2),
        ("t_s,rr_ms\n0.8,800\n1.6\n", "expected 2 columns", 3),
        ("t_s,rr_ms\n0.8,800\n0.5,790\n", "go backwards", 3),
        # The first bad line is named, whichever kind of fault comes later.
        ("t_s,rr_ms\n0.8,800\n1.6,8OO\n2.4\n", "'8OO' is not a number", 3),
        ("t_s,rr_ms\n0.8,800\n1.6,1e999\n2.4,x\n", "'1e999' is not finite", 3),
        ("t_s,rr_ms\n0.8,800\n1.6,0\n2.4,x\n", "0 ms is not positive", 3),
        ("800\nnan\n", "'nan' is not a number", 2),
        ("800\n1_000\n", "'1_000' is not a number", 2),  # float() would read 1000
        ("t_s,rr_ms\n0.8,800\n1.6,inf\n", "'inf' is not a number", 3),
        ("[Params]\nVersion=106\n", "without an [HRData]", None),
        # A control character on a Polar .hrm data line, as in any other reader's: 81\x1d0
        # was read as 81 ms (str.split() splits there), 810\x1f as 810.
        (
            "[Params]\nInterval=238\n[HRData]\n800\n81\x1d0\n",
            "RR value '81\\x1d0' is not a number",
            5,
        ),
        ("[Params]\n[HRData]\n800\n810\x1f\n", "RR value '810\\x1f' is not a number", 4),
        ("[Params]\n[HRData]\n800\n810\x0b5\n", "RR value '810\\x0b5' is not a number", 4),
        (
            "[Params]\n[HRData]\n800\t1\n810\t\x1b[2J\n",
            "column '\\x1b[2J' after the RR value holds a control character",
            4,
        ),
        ("[Params]\nInterval=238\x1f\n[HRData]\n800\n", "Interval '238\\x1f' is not a number", 2),
        # Line numbers count blank and comment lines (they were off by those before).
        ("# c\n\nt_s,rr_ms\n0.8,800\n# x\n0.5,790\n", "go backwards", 6),
        ("# c\n\nt_s,rr_ms\n0.8,800\n\n1.6\n", "expected 2 columns", 6),
        # RR outside what a strap can send is refused up front, naming the line: 1e308 ran
        # the analysis out of memory, > 63999 ms broke the replay deep inside.
        ("\n800\n# c\n1e308\n", "1e+308 ms is above 63999 ms", 4),
        ("t_s,rr_ms\n0.8,800\n70.8,70000\n", "70000 ms is above 63999 ms", 3),
        ("[Params]\n[HRData]\n800\n64000\n", "64000 ms is above", 4),
        ("800\n0.81\n", "not seconds", 2),
        (
            "t_s,rr_ms\n0.8,800\n1.6,800\n2.4,800\n700000,800\n",
            "spans 700000 s (8.1 days); at most 604800 s",
            None,
        ),
        # t_s must be each beat's own time in seconds: in milliseconds it looked like a gap
        # after every beat and the analysis printed nulls; a repeated time broke the spectra.
        (
            "t_s,rr_ms\n800,800\n1610,810\n2400,790\n3200,800\n",
            "t_s steps by 800 s where RR is 800 ms",
            3,
        ),
        ("t_s,rr_ms\n0.8,800\n1.6,800\n1.6,810\n2.4,790\n", "two beats at the same time", 4),
        ("t_s,rr_ms\n0.5,1000\n1.0,1000\n1.5,1000\n", "do not match the RR intervals", 3),
        ('t_s,rr_ms\n0.8,"800\n1.6,800\n2.4,800\n', "missing closing quote?", 2),
        # Polar's heart-rate mode (Interval = seconds per sample) holds bpm, not RR.
        ("[Params]\nVersion=106\nInterval=1\n[HRData]\n61\n62\n", "heart-rate mode", 3),
        ("# only a comment\n\n", "no RR intervals found", None),
        ("\n\nhello\n", "'hello' is neither an RR value in ms nor a header", 3),
        # It said "neither an RR value nor a header naming an RR column" of a header naming two.
        ("t,RR,RR (ms)\n0.8,800,800\n", "the header names 2 RR columns ('RR', 'RR (ms)')", 1),
        # Settle's own JSON export (and JSON of other tools): say what to give instead.
        ('{"manifest": {"v": 1}}\n', "this is JSON (a Settle JSON export?)", 1),
        # Two exports pasted into one file.
        ("t_s,rr_ms\n0.8,800\n1.6,800\n0.8,800\n", "two recordings in one file?", 4),
        # A cell more than the header names was dropped silently: 812,5 read as 812 ms.
        ("rr\n812,5\n790,25\n", "expected 1 column, found 2 (a decimal comma?", 2),
        ("t_s,rr_ms\n0.8,800\n1.6,800,5\n", "expected 2 columns, found 3 (a decimal comma?", 3),
        ("t_s,rr_ms\n0.8,800,x\n", "expected 2 columns, found 3", 2),
        # Settle's own headers with ';': the same rules, the same lines.
        ("t_s;rr_ms\n0,8;800\n1,6;800;5\n", "expected 2 columns, found 3", 3),
        ("t_s;rr_ms\n0,8;800\n0,5;790\n", "go backwards", 3),
        ("t_s\trr_ms\n0.8\t800\n1.6\t8,0,0\n", "RR value '8,0,0' is not a number", 3),
        # The RR-column reader said line 2 for any CSV error, and an unclosed quote joined
        # the lines after it into one "RR value 8.00801e+32".
        ("RR\n" + "800\n" * 48 + "8" * 200_000 + "\n800\n", "field larger than field limit", 50),
        ("RR\n" + "800\n" * 48 + '"800\n' + "800\n" * 10, "missing closing quote?", 50),
        ('# c\nRR;x\n800;1\n\n"810;1\n800;1\n', "missing closing quote?", 5),
    ],
)
def test_bad_files_name_file_and_line(
    tmp_path: Path, content: str, words: str, line: int | None
) -> None:
    f = tmp_path / "rec.txt"
    f.write_text(content)
    with pytest.raises(InputFileError) as exc:
        read_rr_file(f)
    assert words in str(exc.value)
    assert exc.value.line == line
    assert str(exc.value).startswith(str(f))


@pytest.mark.parametrize(
    "content",
    [
        "RR\n859\n870.5\n",  # one column under a one-word header
        "RR (ms)\n859\n870.5\n",
        "rri\n859\n870.5\n",
        # Polar Sensor Logger: ';' separators, a phone clock time, the unit in brackets.
        "Phone timestamp;RR-interval [ms]\n2026-11-27T10:00:00.123;859\n"
        "2026-11-27T10:00:01.0;870,5\n",
        "time\tIBI\n0.859\t859\n1.73\t870,5\n",  # tabs and a decimal comma
        "Zeit;RR-Intervall (ms)\n0,859;859\n1,73;870,5\n",  # a German spreadsheet
        "RR,\n859,\n870.5,\n",  # a separator ending every row: an empty cell, not a value
        # The same with ';' or tabs, which the header holds: it was read as comma-separated
        # ("RR value '859;' is not a number"; "expected 1 column, found 2 (a decimal comma?
        # it needs ';' or tab separators)" of a tab-separated file).
        "RR;\r\n859;\r\n870,5;\r\n",
        "RR\t\r\n859\t\r\n870,5\t\r\n",
        "Time;RR;\n0;859;\n1;870,5;\n",
        # A header of one name holds no separator: the rows' is taken.
        "RR\n859\t\n870,5\t\n",
        "RR (ms)\n859;\n870,5\n",
        # A quote in a comment line is no cell running on over the next lines.
        'RR;x\n# a;"b\n859;1\n870.5;1\n',
    ],
)
def test_tables_with_a_named_rr_column_are_read(tmp_path: Path, content: str) -> None:
    """Common exports that were refused with "not a recognised RR file": a one-word header
    over one column, ';' or tab separators with a decimal comma, Polar Sensor Logger."""
    f = tmp_path / "rec.txt"
    f.write_text(content)
    rec = read_rr_file(f)
    assert rec.fmt == "rr-column"
    assert rec.rr_ms.tolist() == [859.0, 870.5]
    assert rec.t_s.tolist() == pytest.approx([0.859, 1.7295])


def test_missing_binary_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="file not found"):
        read_rr_file(tmp_path / "nope.csv")
    with pytest.raises(InputFileError, match="is a directory"):
        read_rr_file(tmp_path)
    b = tmp_path / "x.bin"
    b.write_bytes(b"\x00\x01\x02")
    with pytest.raises(InputFileError, match="binary"):
        read_rr_file(b)
    # An EDF (Settle's own export, say): what to give instead, not only "binary content".
    edf = tmp_path / "s.edf"
    edf.write_bytes(b"0       " + b"X 01-JAN-2026 X X".ljust(248) + b"\x00\x03" * 40)
    with pytest.raises(InputFileError, match="this is an EDF file: analyse a CSV"):
        read_rr_file(edf)


def test_blank_and_comment_lines_before_the_csv_header(tmp_path: Path) -> None:
    f = tmp_path / "rec.csv"
    f.write_text("\n# exported by hand\n\nt_s,rr_ms\n0.8,800\n\n1.61,810\n")
    rec = read_rr_file(f)
    assert rec.fmt == "csv"
    assert rec.rr_ms.tolist() == [800.0, 810.0]
    assert rec.t_s.tolist() == [0.8, 1.61]


def test_rr_limits_are_what_a_strap_can_send(tmp_path: Path) -> None:
    f = tmp_path / "edges.txt"
    f.write_text(f"{RR_MIN_MS!r}\n{RR_MAX_MS!r}\n")
    assert read_rr_file(f).rr_ms.tolist() == [1000 / 1024, 65535 * 1000 / 1024]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_a_byte_order_mark_are_read(tmp_path: Path, encoding: str) -> None:
    f = tmp_path / "rec.txt"
    text = "t_s,rr_ms\n0.8,800\n1.6,800\n"
    bom = {"utf-16-be": "\ufeff"}.get(encoding, "")  # utf-16/-32 write their own mark
    f.write_bytes((bom + text).encode(encoding))
    rec = read_rr_file(f)
    assert rec.rr_ms.tolist() == [800.0, 800.0]


def test_utf16_without_a_byte_order_mark_is_named(tmp_path: Path) -> None:
    f = tmp_path / "rec.txt"
    f.write_bytes("800\n810\n".encode("utf-16-le"))
    with pytest.raises(InputFileError, match="UTF-16 text without a byte-order mark; save it"):
        read_rr_file(f)


def test_unreadable_paths_are_one_input_file_error(tmp_path: Path) -> None:
    too_long = tmp_path / ("a" * 300 + ".csv")  # longer than NAME_MAX (255)
    with pytest.raises(InputFileError, match="cannot read: File name too long"):
        read_rr_file(too_long)
    with pytest.raises(InputFileError, match="not a regular file"):
        read_rr_file("/dev/zero")  # would never end


@pytest.mark.parametrize(
    "line, where",
    [
        ("8" * 5_000_000, ":2: RR value '8888"),  # a number, but not a finite one
        ("8x" * 50_000, ":2: RR value '8x8x"),
        ("t_s,rr_ms\n1," + "9" * 100_000, ":2: RR value '9999"),
        ("z" * 100_000, ":1: not a recognised RR file"),
        ("[Params]\nInterval=" + "z" * 100_000 + "\n[HRData]\n800", "heart-rate mode"),
        (
            "t," + ",".join(["rr"] * 100_000) + "\n1," + ",".join(["800"] * 100_000),
            "the header names 100000 RR columns ('rr', 'rr', 'rr', 'rr', 'rr', …)",
        ),
    ],
)
def test_a_huge_bad_value_is_quoted_short(tmp_path: Path, line: str, where: str) -> None:
    """A line of megabytes (a file glued together, a binary dump): the error quoted the
    whole value, a 5 MB "line" on the terminal. The value is cut to 40 characters."""
    f = tmp_path / "rec.txt"
    f.write_text(("800\n" if line[0].isdigit() else "") + line + "\n")
    with pytest.raises(InputFileError) as err:
        read_rr_file(f)
    text = str(err.value)
    assert where in text and len(text) < 400 + len(str(f)), text[:500]
    assert "…" in text


def test_reads_the_beats_of_a_settle_csv_export(tmp_path: Path) -> None:
    """``settle export --format csv`` output: only ``record = beat`` rows, their raw ``rr_ms``
    and ``t_s``; indices, markers (a note with a comma and a line break), gaps and ECG beats
    are not RR of the strap."""
    store = SessionStore.open(tmp_path / "s.db")
    info = store.create_session("dev_1", 1_700_000_000_000, "test", {})
    rr = [812.5, 790.0, 1500.0, 805.25]
    t, beats = 0.0, []
    for i, r in enumerate(rr):
        t += r / 1000
        beats.append(BeatRow(i, t, 1_700_000_000_000 + round(t * 1000), r, None, 70, None,
                             rr_corrected_ms=r * 0.9))  # fmt: skip
    store.add_beats(info.id, beats)
    store.add_indices(info.id, [IndicesRow(1.0, 1_700_000_001_000, "{}", hr_bpm=70.0)])
    store.add_marker(info.id, MarkerRow(1.5, 1_700_000_001_500, "note", "a, b\nc", "cli"))
    store.add_gap(info.id, GapRow(2.0, 2.5, "no-contact"))
    store.add_ecg_beats(info.id, [EcgBeatRow(0, 1.0, None), EcgBeatRow(1, 1.8, 800.0)])
    store.finish_session(info.id, 1_700_000_004_000)
    path = export_csv(store, info.id, tmp_path / "export.csv")
    store.close()
    rec = read_rr_file(path)
    assert rec.fmt == "settle-export"
    assert rec.rr_ms.tolist() == rr
    assert rec.t_s.tolist() == [b.beat_t_s for b in beats]
    assert rec.notification_start is not None and rec.notification_start.all()


def test_an_export_says_which_beats_arrived_together(tmp_path: Path) -> None:
    """A strap sends about a second of beats in one notification, and the daemon analysed
    them together: an export's beats that share their arrival time (``recv_ts_ms``) are one
    notification, which `settle analyze` needs to take each step as the daemon did. Other
    files do not say."""
    store = SessionStore.open(tmp_path / "s.db")
    info = store.create_session("dev_1", 1_700_000_000_000, "test", {})
    rr = [500.0, 510.0, 520.0, 505.0, 515.0]
    arrived = [1_700_000_001_000, 1_700_000_001_000, 1_700_000_002_000, 1_700_000_002_000,
               1_700_000_002_000]  # fmt: skip
    t, beats = 0.0, []
    for i, (r, recv) in enumerate(zip(rr, arrived, strict=True)):
        t += r / 1000
        beats.append(BeatRow(i, t, recv, r, None, 118, None))
    store.add_beats(info.id, beats)
    store.finish_session(info.id, 1_700_000_003_000)
    path = export_csv(store, info.id, tmp_path / "export.csv")
    store.close()
    rec = read_rr_file(path)
    assert rec.notification_start is not None
    assert rec.notification_start.tolist() == [True, False, True, False, False]
    plain = tmp_path / "rr.csv"
    plain.write_text("t_s,rr_ms\n0.5,500\n1.01,510\n")
    assert read_rr_file(plain).notification_start is None


@pytest.mark.parametrize("t", ["1e18", "-2e10", "1e308"])
def test_a_beat_time_far_out_names_its_line(tmp_path: Path, t: str) -> None:
    """`settle analyze` of `t_s,rr_ms / 1e18,800` with --rolling ended in an IndexError: at
    1e18 s a 60 s window ends where it begins."""
    f = tmp_path / "t.csv"
    f.write_text(f"t_s,rr_ms\n0.8,800\n{t},800\n")
    with pytest.raises(InputFileError) as err:
        read_rr_file(f)
    assert err.value.line == 3
    assert f"beat time t_s '{t}' is beyond ±1e+10 s" in err.value.reason


def test_analyze_of_a_beat_time_far_out_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    f = tmp_path / "t.csv"
    f.write_text("t_s,rr_ms\n1e18,800\n")
    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", "analyze", str(f), "--rolling",
         str(tmp_path / "r.csv")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert (
        res.stderr == f"settle: error: {f}:2: beat time t_s '1e18' is beyond ±1e+10 s (t_s "
        "must be each beat's time in seconds)\n"
    )
    assert not (tmp_path / "r.csv").exists()


def test_two_beats_around_a_gap_are_read_not_refused(tmp_path: Path) -> None:
    """A step longer than its interval is a gap (or t_s in the wrong unit, which only shows
    over several steps): two beats 10 s apart were refused as "beat times do not match the
    RR intervals", with no line."""
    f = tmp_path / "two.csv"
    f.write_text("t_s,rr_ms\n0.8,800\n10.8,800\n")
    rec = read_rr_file(f)
    assert list(rec.rr_ms) == [800.0, 800.0] and list(rec.t_s) == [0.8, 10.8]


def _resaved(text: str, delim: str, decimal_comma: bool) -> str:
    """A comma-separated ``text`` as a spreadsheet re-saves it: ``delim``-separated, numbers
    with a decimal comma if asked (Excel in German: ';' and ','), quoted cells kept."""

    def number(cell: str) -> bool:
        try:
            float(cell)
        except ValueError:
            return False
        return True

    out = io.StringIO()
    writer = csv.writer(out, delimiter=delim, lineterminator="\r\n")
    for row in csv.reader(io.StringIO(text)):
        writer.writerow([c.replace(".", ",") if decimal_comma and number(c) else c for c in row])
    return out.getvalue()


RESAVED = [(";", True), ("\t", False), ("\t", True)]


@pytest.mark.parametrize(("delim", "decimal_comma"), RESAVED)
def test_a_t_s_rr_ms_file_resaved_by_a_spreadsheet_keeps_its_times(
    tmp_path: Path, delim: str, decimal_comma: bool
) -> None:
    """``t_s;rr_ms`` was read as a table of one RR column: ``t_s`` not read, so a gap in the
    recording was joined up (63 s lost from a 16 min file: LF −10 %)."""
    text = "t_s,rr_ms\n0.8,800.0\n1.61,810.0\n2.4,790.5\n32.4,800.0\n33.2,800.0\n"
    f = tmp_path / "rec.csv"
    f.write_text(_resaved(text, delim, decimal_comma))
    rec = read_rr_file(f)
    assert rec.fmt == "csv"
    assert rec.t_s.tolist() == [0.8, 1.61, 2.4, 32.4, 33.2]  # the gap kept
    assert rec.rr_ms.tolist() == [800.0, 810.0, 790.5, 800.0, 800.0]


@pytest.mark.parametrize(("delim", "decimal_comma"), RESAVED)
def test_a_beats_file_resaved_by_a_spreadsheet_is_read_from_its_raw_intervals(
    tmp_path: Path, delim: str, decimal_comma: bool
) -> None:
    """A ``--beats`` file re-saved with ';' was read from its corrected ``rr_ms`` column: the
    missed beats it had split were analysed as normal beats, its warm-up beats too."""
    text = (
        "t_s,rr_raw_ms,rr_ms,class\n0.8,812.5,,warmup\n1.6,800,800,normal\n"
        "2.35,,750,missed\n3.1,1500,750,missed\n3.9,800,800,normal\n"
    )
    f = tmp_path / "beats.csv"
    f.write_text(_resaved(text, delim, decimal_comma))
    rec = read_rr_file(f)
    assert rec.fmt == "settle-beats"
    assert rec.rr_ms.tolist() == [812.5, 800.0, 1500.0, 800.0]  # as read, not as corrected
    assert rec.t_s.tolist() == [0.8, 1.6, 3.1, 3.9]
    assert rec.warmup is not None and rec.warmup.tolist() == [True, False, False, False]


@pytest.mark.parametrize(("delim", "decimal_comma"), RESAVED)
def test_an_export_resaved_by_a_spreadsheet_is_read_as_the_export(
    tmp_path: Path, delim: str, decimal_comma: bool
) -> None:
    """Settle's CSV export re-saved with ';' failed with "RR value '' is not a number" at the
    first row that is not a beat; now it reads as the export itself: beats, times, the gap,
    the warm-up beats and which beats arrived together."""
    store = SessionStore.open(tmp_path / "s.db")
    info = store.create_session("dev_1", 1_700_000_000_000, "test", {})
    rr = [812.5, 790.0, 1500.0, 805.25, 799.5]
    t, beats = 0.0, []
    for i, r in enumerate(rr):
        t += r / 1000 + (30.0 if i == 3 else 0.0)
        cls = BeatClass.WARMUP if i == 0 else BeatClass.NORMAL
        beats.append(BeatRow(i, t, 1_700_000_000_000 + 1000 * (i // 2), r, None, 70, None,
                             rr_corrected_ms=r * 0.9, beat_class=cls))  # fmt: skip
    store.add_beats(info.id, beats)
    store.add_indices(info.id, [IndicesRow(1.0, 1_700_000_001_000, "{}", hr_bpm=70.0)])
    store.add_marker(info.id, MarkerRow(1.5, 1_700_000_001_500, "note", "a; b, c\nd", "cli"))
    store.add_gap(info.id, GapRow(3.2, 33.0, "no-contact"))
    store.finish_session(info.id, 1_700_000_040_000)
    path = export_csv(store, info.id, tmp_path / "export.csv")
    store.close()
    want = read_rr_file(path)
    resaved = tmp_path / "resaved.csv"
    resaved.write_text(_resaved(path.read_text(), delim, decimal_comma))
    rec = read_rr_file(resaved)
    assert rec.fmt == "settle-export"
    assert rec.rr_ms.tolist() == want.rr_ms.tolist() == rr
    assert rec.t_s.tolist() == want.t_s.tolist()
    for field in ("warmup", "gap_before", "notification_start"):
        got, expected = getattr(rec, field), getattr(want, field)
        assert got is not None and expected is not None, field
        assert got.tolist() == expected.tolist(), field
    assert want.gap_before is not None and want.gap_before.tolist() == [0, 0, 0, 1, 0]
    assert want.warmup is not None and want.warmup.tolist() == [1, 0, 0, 0, 0]
