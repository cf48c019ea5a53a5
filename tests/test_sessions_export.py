"""CSV export: one file, one time base, exact round trip of what the store holds."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessions.export import COLUMNS, ExportError, export_csv, read_export_csv
from sessions.export_json import export_json
from sessions.journal import import_journal
from sessions.store import (
    BaselinePeriod,
    BeatRow,
    IndicesRow,
    MarkerRow,
    MarkerSource,
    SessionStore,
)
from settle.errors import SessionNotFound
from tests.conftest import dev_dependency, read_only_dir

T0_MS = 1_795_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    with SessionStore.open(tmp_path / "sessions.db") as s:
        yield s


def _session(store: SessionStore) -> str:
    return store.create_session("AA:BB", T0_MS, "replay:test.txt", {}).id


def _beats_from_rr(rr_ms: list[float], raws: list[int | None]) -> list[BeatRow]:
    t = itertools.accumulate(r / 1000 for r in rr_ms)
    return [
        BeatRow(
            seq=i,
            beat_t_s=t_s,
            recv_ts_ms=T0_MS + int(t_s * 1000),
            rr_ms=rr,
            rr_raw=raw,
            hr_bpm=round(60_000 / rr),
            contact=None if raw is None else bool(i % 2),
        )
        for i, (t_s, rr, raw) in enumerate(zip(t, rr_ms, raws, strict=True))
    ]


# Wire-derived RR (raw / 1024 s, with its raw value) mixed with arbitrary float ms from
# replayed files: both must survive the trip through SQLite and text bit for bit.
_rr = st.one_of(
    st.integers(min_value=200, max_value=2500).map(lambda raw: (raw * 1000 / 1024, raw)),
    st.tuples(st.floats(min_value=200.0, max_value=2500.0), st.none()),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_rr, min_size=0, max_size=200))
def test_beats_round_trip_exactly(rr_and_raw: list[tuple[float, int | None]]) -> None:
    rows = _beats_from_rr([r for r, _ in rr_and_raw], [raw for _, raw in rr_and_raw])
    # tmp_path is function-scoped, i.e. shared by all examples; each example needs its own.
    with tempfile.TemporaryDirectory() as tmp, SessionStore.open(Path(tmp) / "s.db") as store:
        sid = _session(store)
        store.add_beats(sid, rows)
        out = export_csv(store, sid, Path(tmp))
        parsed = read_export_csv(out)
    assert out.name == f"settle-{sid}.csv"
    assert all(p.record == "beat" and p.session_id == sid for p in parsed)
    assert all(p.started_ms == T0_MS for p in parsed)
    assert [p.seq for p in parsed] == [b.seq for b in rows]
    assert [p.rr_ms for p in parsed] == [b.rr_ms for b in rows]  # exact, not approx
    assert [p.t_s for p in parsed] == [b.beat_t_s for b in rows]
    assert [p.rr_raw for p in parsed] == [b.rr_raw for b in rows]
    assert [p.contact for p in parsed] == [b.contact for b in rows]
    assert [p.recv_ts_ms for p in parsed] == [b.recv_ts_ms for b in rows]


def test_indices_and_markers_interleave_at_their_t_s(store: SessionStore, tmp_path: Path) -> None:
    sid = _session(store)
    store.add_beats(sid, _beats_from_rr([1000.0] * 5, [None] * 5))  # beats at 1, 2, …, 5 s
    store.add_indices(
        sid,
        [
            IndicesRow(
                t_s=t,
                ts_ms=T0_MS + int(t * 1000),
                payload_json=json.dumps({"rmssd_ms": 40.0 + t}),
                hr_bpm=60.0,
                rmssd_ms=40.0 + t,
                ln_rmssd=3.7,
                sdnn_ms=50.0,
                pnn50_pct=12.5,
                settling=0.25,
            )
            for t in (2.0, 4.5)
        ],
    )
    text = 'said "hello",\nthen left'  # quoting and an embedded newline
    store.add_marker(sid, MarkerRow(3.0, T0_MS + 3000, "note", text, MarkerSource.DASHBOARD))
    store.add_marker(sid, MarkerRow(2.0, T0_MS + 2000, "event", "tie", MarkerSource.CLI))
    store.add_marker(sid, MarkerRow(0.5, T0_MS + 500, "intention", "settle", MarkerSource.CLI))

    out = export_csv(store, sid, tmp_path / "export.csv")
    assert out == tmp_path / "export.csv"
    order = [(r.record, r.t_s) for r in read_export_csv(out)]
    assert order == [
        ("marker", 0.5),
        ("beat", 1.0),
        ("beat", 2.0),  # equal t_s: beat, then indices, then marker
        ("indices", 2.0),
        ("marker", 2.0),
        ("beat", 3.0),
        ("marker", 3.0),
        ("beat", 4.0),
        ("indices", 4.5),
        ("beat", 5.0),
    ]
    rows = read_export_csv(out)
    ind = next(r for r in rows if r.record == "indices")
    assert (ind.rmssd_ms, ind.pnn50_pct, ind.settling, ind.ts_ms) == (
        42.0,
        12.5,
        0.25,
        T0_MS + 2000,
    )
    assert ind.seq is None and ind.kind is None
    note = next(r for r in rows if r.kind == "note")
    assert (note.text, note.source, note.ts_ms) == (text, "dashboard", T0_MS + 3000)


def test_plain_csv_readable_by_csv_module(store: SessionStore, tmp_path: Path) -> None:
    sid = _session(store)
    store.add_beats(sid, _beats_from_rr([812.5, 790.0], [832, None]))
    out = export_csv(store, sid, tmp_path)
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS
    assert [r["rr_ms"] for r in rows] == ["812.5", "790.0"]
    assert [r["rr_raw"] for r in rows] == ["832", ""]
    assert rows[0]["record"] == "beat" and rows[0]["session_id"] == sid
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # health data


def test_readable_by_pandas(store: SessionStore, tmp_path: Path) -> None:
    pd = dev_dependency("pandas")
    sid = _session(store)
    rows = _beats_from_rr([1000 / 3, 850.0], [None, None])
    store.add_beats(sid, rows)
    store.add_marker(sid, MarkerRow(0.1, T0_MS + 100, "note", "a, b", MarkerSource.IMPORT))
    df = pd.read_csv(export_csv(store, sid, tmp_path), float_precision="round_trip")
    assert list(df.columns) == list(COLUMNS)
    assert df.loc[df.record == "beat", "rr_ms"].tolist() == [b.rr_ms for b in rows]
    assert df.loc[df.record == "marker", "text"].tolist() == ["a, b"]


def test_overwrites_atomically_and_leaves_no_temp_files(
    store: SessionStore, tmp_path: Path
) -> None:
    sid = _session(store)
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    export_csv(store, sid, target)
    assert target.read_text().splitlines()[0].startswith("session_id,")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.csv", "sessions.db", "sessions.db-wal", "sessions.db-shm"]
    )


def test_missing_directory_is_an_export_error(store: SessionStore, tmp_path: Path) -> None:
    sid = _session(store)
    out = tmp_path / "nowhere" / "x.csv"
    with pytest.raises(ExportError) as err:
        export_csv(store, sid, out)
    assert err.value.path == out
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)
    assert not out.parent.exists()


def test_unwritable_directory_is_an_export_error(store: SessionStore, tmp_path: Path) -> None:
    sid = _session(store)
    locked = tmp_path / "locked"
    # Immutable as root, who ignores modes (CI runs as root).
    with read_only_dir(locked), pytest.raises(ExportError, match="cannot write"):
        export_csv(store, sid, locked)
    assert list(locked.iterdir()) == []


def test_unknown_session_writes_nothing(store: SessionStore, tmp_path: Path) -> None:
    with pytest.raises(SessionNotFound):
        export_csv(store, "nope", tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_reading_a_foreign_csv_is_an_export_error(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ExportError, match="not a Settle session export"):
        read_export_csv(path)


def test_write_failure_maps_to_export_error_and_cleans_up(
    store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs as root too (where a read-only directory does not stop writes): fail the rename.
    sid = _session(store)

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ExportError, match="Permission denied") as err:
        export_csv(store, sid, tmp_path / "x.csv")
    assert err.value.path == tmp_path / "x.csv"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_imported_journal_times_are_exact_milliseconds_in_exports(
    store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Journal clock times are aligned in integer milliseconds: an entry at 09:00:13.701 in a
    session started at 09:00:00.123 is exported at t_s 13.578 (CSV text and JSON number),
    not 13.57800006866455 (float epoch seconds)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        t0 = int(dt.datetime(2026, 11, 18, 8, 0, 0, 123_000, tzinfo=dt.UTC).timestamp() * 1000)
        sid = store.create_session("AA:BB", t0, "replay:test.txt", {}).id
        store.finish_session(sid, t0 + 600_000)
        journal = tmp_path / "journal.txt"
        journal.write_text("09:00:13.701 shame: it came back\n09:01:00.3 noticed the birds\n")
        import_journal(store, sid, journal)
        csv_journal = tmp_path / "journal.csv"
        csv_journal.write_text("time,text\n2026-11-18T09:00:02.9,iso\n")
        import_journal(store, sid, csv_journal)
    finally:
        monkeypatch.undo()
        time.tzset()
    with export_csv(store, sid, tmp_path).open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["record"] == "marker"]
    assert [(r["t_s"], r["ts_ms"]) for r in rows] == [
        ("2.777", str(t0 + 2777)),
        ("13.578", str(t0 + 13_578)),
        ("60.177", str(t0 + 60_177)),
    ]
    doc = json.loads(export_json(store, sid, tmp_path).read_text())
    assert [m["t_s"] for m in doc["markers"]] == [2.777, 13.578, 60.177]


def test_indices_say_whether_usable_and_the_baseline_is_a_record(
    store: SessionStore, tmp_path: Path
) -> None:
    """A researcher can tell a scored window from an unusable one (and why), and sees which
    rest period the score was computed against."""
    sid = _session(store)
    store.add_indices(
        sid,
        [
            IndicesRow(5.0, T0_MS + 5000, json.dumps({"usable": False, "quality": 0.4,
                       "reason": "irregular rhythm: 31 % of recent beats are not sinus"})),
            IndicesRow(10.0, T0_MS + 10_000, json.dumps({"usable": True, "quality": 0.97}),
                       hr_bpm=61.0, settling=55.0),
        ],
    )  # fmt: skip
    store.set_baseline(sid, BaselinePeriod(2.0, 9.5))
    rows = read_export_csv(export_csv(store, sid, tmp_path))
    assert [(r.record, r.t_s, r.end_t_s) for r in rows] == [
        ("baseline", 2.0, 9.5),
        ("indices", 5.0, None),
        ("indices", 10.0, None),
    ]
    bad, good = rows[1], rows[2]
    assert (bad.usable, bad.quality, bad.settling) == (False, 0.4, None)
    assert bad.reason == "irregular rhythm: 31 % of recent beats are not sinus"
    assert (good.usable, good.quality, good.settling, good.reason) == (True, 0.97, 55.0, None)


@pytest.mark.parametrize("fmt", ["csv", "json", "kubios"])
def test_a_file_that_appears_during_an_export_is_not_replaced_without_force(
    store: SessionStore, tmp_path: Path, fmt: str
) -> None:
    """`settle export` checks that --out does not exist, then reads the session and writes:
    a file created in between (a second export, the user saving something) must not be
    silently replaced without --force. The export fails with a one-line error and leaves
    that file and no temporary file; with --force it is replaced as before."""
    from sessions.exporters import export_session

    sid = _session(store)
    # 10 001 beats: the CSV and Kubios exporters report progress every 10 000 rows while
    # they write, which is when the other file appears here.
    rr = [800.0 + 10.0 * (i % 3) for i in range(10_001)]
    store.add_beats(sid, _beats_from_rr(rr, [round(r * 1.024) for r in rr]))
    target = tmp_path / f"out.{'txt' if fmt == 'kubios' else fmt}"

    def someone_else_writes(done: int, total: int) -> None:
        if not target.exists():
            target.write_text("precious\n")

    with pytest.raises(ExportError, match="file exists") as err:
        export_session(store, sid, fmt, target, progress=someone_else_writes)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
    assert target.read_text() == "precious\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    target.unlink()
    export_session(store, sid, fmt, target, progress=someone_else_writes, force=True)  # type: ignore[arg-type]
    assert target.read_text() != "precious\n"


def test_no_replace_works_where_hard_links_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some file systems (FAT, some network shares) refuse hard links: the export then
    claims the name exclusively before renaming onto it, with the same guarantee."""
    from sessions.files import atomic_file

    def no_links(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted", dst)

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "new.csv"
    with atomic_file(target, replace=False) as fh:
        fh.write("fresh\n")  # type: ignore[arg-type]
    assert target.read_text() == "fresh\n"
    with pytest.raises(ExportError, match="file exists"), atomic_file(target, replace=False) as fh:
        fh.write("other\n")  # type: ignore[arg-type]
    assert target.read_text() == "fresh\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv"]


def test_outputs_written_together_are_all_or_none(tmp_path: Path) -> None:
    """`sessions.files.write_all` (analyze's --beats/--rolling, a report's PNG and page):
    without --force, one of them found existing when it is placed undoes the ones placed
    before it, so no new file is left beside an old one; with it, all replace."""
    from sessions.files import write_all

    first, second = tmp_path / "a.csv", tmp_path / "b.png"
    second.write_bytes(b"someone's")
    with pytest.raises(ExportError, match=r"b\.png: file exists"):
        write_all([(first, "new a\n"), (second, b"new b")], replace=False)
    assert not first.exists() and second.read_bytes() == b"someone's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png"]
    write_all([(first, "new a\n"), (second, b"new b")], replace=True)
    assert first.read_text() == "new a\n" and second.read_bytes() == b"new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.png"]


def test_outputs_written_together_are_taken_back_whatever_stops_the_placing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a file found existing undid the ones placed before it: another error while
    placing the second (or Ctrl-C between the two renames) left a new first file beside a
    missing second one."""
    from sessions import files

    real = files.place
    for stop in (PermissionError(13, "Permission denied"), KeyboardInterrupt()):

        def second_fails(tmp: str, target: Path, *, replace: bool, stop: BaseException = stop):
            if target.name == "b.png":
                raise stop
            real(tmp, target, replace=replace)

        monkeypatch.setattr(files, "place", second_fails)
        with pytest.raises((ExportError, KeyboardInterrupt)):
            files.write_all(
                [(tmp_path / "a.csv", "new a\n"), (tmp_path / "b.png", b"new b")], replace=False
            )
        assert list(tmp_path.iterdir()) == []  # neither file, no temporary file


def test_any_file_name_the_file_system_takes_is_written(
    store: SessionStore, tmp_path: Path
) -> None:
    """A file was written to ``.<name>.XXXXXXXX.tmp`` beside it, 14 bytes longer than its
    name: a name of 242–255 bytes (234–247 for Kubios, whose side file is 8 longer), which
    the checks before reading the store passed, failed as it was written ("…_markers.csv:
    cannot write: File name too long", exit 1). The temporary name is no longer than the
    file's own now, so every format, and ``analyze --beats/--rolling``, takes a name as long
    as the file system does."""
    from typer.testing import CliRunner

    from sessions.exporters import export_session
    from settle.cli import app

    most = os.pathconf(tmp_path, "PC_NAME_MAX")
    assert most >= 64
    sid = _session(store)
    rr = [800.0 + 10.0 * (i % 3) for i in range(400)]
    store.add_beats(sid, _beats_from_rr(rr, [round(r * 1.024) for r in rr]))
    store.add_marker(sid, MarkerRow(5.0, T0_MS + 5000, "shame", "x", MarkerSource.MQTT))
    written = []
    for fmt, ext in (("csv", ".csv"), ("json", ".json"), ("edf", ".edf"), ("kubios", ".txt")):
        room = most - len(ext) - (8 if fmt == "kubios" else 0)  # "_markers.csv" for ".txt"
        for stem in ("n" * room, "ö" * (room // 2) + "n" * (room % 2)):
            out = tmp_path / f"{stem}{ext}"
            assert export_session(store, sid, fmt, out) == out  # type: ignore[arg-type]
            written.append(out)
    kubios = tmp_path / ("k" * (most - 12) + ".txt")
    res = CliRunner().invoke(
        app, ["export", "latest", "--format", "kubios", "--out", str(kubios),
              "--db", str(store.path)]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    side = kubios.with_name(f"{kubios.stem}_markers.csv")
    assert len(side.name) == most and side.read_text().startswith("kubios_t_s,")
    csv_in = tmp_path / "in.csv"
    export_session(store, sid, "csv", csv_in)
    beats, rolling = tmp_path / ("b" * (most - 4) + ".csv"), tmp_path / ("r" * (most - 4) + ".csv")
    res = CliRunner().invoke(
        app, ["analyze", str(csv_in), "--beats", str(beats), "--rolling", str(rolling)]
    )
    assert res.exit_code == 0, res.output
    assert beats.read_text().startswith("t_s,") and rolling.stat().st_size > 0
    for out in written:
        assert out.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_temporary_name_is_no_longer_than_its_file_s() -> None:
    """``.`` + as much of the name as fits + ``.`` + 8 random characters + ``.tmp``: never
    longer than the name itself (whole characters kept), nor than 14 bytes, the least a
    POSIX file system takes."""
    from sessions.files import temp_prefix

    for n in (1, 5, 13, 14, 15, 40, 85, 200, 255):
        for ch in "aö€":
            name = ch * n
            size = len(name.encode())
            prefix = temp_prefix(name)
            assert len(prefix.encode()) + 8 + len(".tmp") <= max(size, 14)
            assert prefix.startswith(".") and prefix.endswith(".")
            assert name.startswith(prefix[1:-1])
            if size >= 40:
                assert len(prefix.encode()) + 12 > size - len(ch.encode())  # all that fits
    assert temp_prefix("settle-20261126T063951-465c.csv") == ".settle-20261126T0."


def test_kubios_writes_its_two_files_all_or_none(
    store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RR file and its _markers.csv side file are written as one (``write_all``): the
    side file failing (one that appeared while the export ran, an error while placing it)
    leaves no new RR file without its partner (it was left behind, new, beside no markers
    file or an old one)."""
    from sessions import files
    from sessions.export_kubios import export_kubios

    sid = _session(store)
    rr = [800.0 + 10.0 * (i % 3) for i in range(10_001)]
    store.add_beats(sid, _beats_from_rr(rr, [round(r * 1.024) for r in rr]))
    store.add_marker(sid, MarkerRow(5.0, T0_MS + 5000, "shame", "x", MarkerSource.MQTT))
    target, side = tmp_path / "rr.txt", tmp_path / "rr_markers.csv"

    def someone_writes_the_side_file(done: int, total: int) -> None:
        if not side.exists():
            side.write_text("precious\n")

    with pytest.raises(ExportError, match=r"rr_markers\.csv: file exists"):
        export_kubios(store, sid, target, progress=someone_writes_the_side_file, replace=False)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("sessions.db")) == [
        "rr_markers.csv"
    ]
    assert side.read_text() == "precious\n"
    side.unlink()

    real = files.place

    def side_fails(tmp: str, path: Path, *, replace: bool) -> None:
        if path == side:
            raise PermissionError(13, "Permission denied")
        real(tmp, path, replace=replace)

    monkeypatch.setattr(files, "place", side_fails)
    with pytest.raises(ExportError, match="Permission denied"):
        export_kubios(store, sid, target, replace=False)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("sessions.db")]
    monkeypatch.setattr(files, "place", real)
    assert export_kubios(store, sid, target, replace=False) == target
    assert len(target.read_text().splitlines()) == 10_001
    assert side.read_text().splitlines()[1].split(",")[3] == "shame"


@pytest.mark.parametrize("fmt", ["csv", "json", "edf", "kubios", "bids"])
def test_an_output_name_longer_than_the_file_system_takes_is_a_bad_path_in_every_format(
    store: SessionStore, tmp_path: Path, fmt: str
) -> None:
    """``export --format kubios --out <300-byte name>`` said "File name too long", exit 1
    (the CLI asked is_dir() of it first, which raised), where every other format said how
    long the name may be, exit 2: a bad output path, nothing written."""
    from typer.testing import CliRunner

    from settle.cli import app

    sid = _session(store)
    store.add_beats(sid, _beats_from_rr([800.0] * 40, [819] * 40))
    out = tmp_path / ("x" * (os.pathconf(tmp_path, "PC_NAME_MAX") + 1))
    res = CliRunner().invoke(
        app, ["export", "latest", "--format", fmt, "--out", str(out), "--db", str(store.path)]
    )
    assert res.exit_code == 2, res.output
    assert "more than the file system takes" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("sessions.db")]
    if fmt != "bids":  # --out DIR/ with a directory name no file system takes: not there
        res = CliRunner().invoke(
            app, ["export", "latest", "--format", fmt, "--out", f"{out}/", "--db", str(store.path)]
        )
        assert res.exit_code == 1, res.output
        assert f"directory {out} does not exist" in res.output, res.output
