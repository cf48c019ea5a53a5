"""``settle analyze`` through the real command line (subprocess) on small real recordings."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import dev_dependency

DATA = Path(__file__).parent / "data"
CONFIG = Path(__file__).parents[1] / "configs" / "settle.toml"
RECORDINGS = ["pyhrv_nni_short", "bartels_rest_supine", "polar_h10_pvc_device"]
SUMMARY_KEYS = {
    "mean_rr_ms", "mean_hr_bpm", "sdnn_ms", "rmssd_ms", "ln_rmssd", "pnn50_pct", "sd1_ms",
    "sd2_ms", "dfa_alpha1", "vlf_ms2", "lf_ms2", "hf_ms2", "lf_hf", "lf_nu", "hf_nu",
    "peak_hz", "resp_rate_bpm", "coherence", "nyquist_hz", "spectrum",
}  # fmt: skip


def _settle(*args: str) -> subprocess.CompletedProcess[str]:
    # The project's example config (default [processing]), not whatever the user has.
    return subprocess.run(
        [sys.executable, "-m", "settle.cli", "analyze", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SETTLE_CONFIG": str(CONFIG)},
    )


def _json(*args: str) -> dict:  # type: ignore[type-arg]
    p = _settle(*args, "--json")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return json.loads(p.stdout)  # type: ignore[no-any-return]


def test_json_shape() -> None:
    doc = _json(str(DATA / "pyhrv_nni_short.csv"))
    assert doc["v"] == 1
    assert doc["n_beats"] == 337
    assert doc["duration_s"] == pytest.approx(299.578)
    assert doc["usable"] is True and doc["reason"] is None
    corr = doc["correction"]
    assert corr["enabled"] is True
    assert sum(corr["by_class"].values()) == 337
    assert corr["n_flagged"] == 337 - corr["by_class"]["normal"]
    assert set(doc["summary"]) == SUMMARY_KEYS
    s = doc["summary"]
    assert s["mean_hr_bpm"] == pytest.approx(60000 / s["mean_rr_ms"])
    assert s["ln_rmssd"] == pytest.approx(np.log(s["rmssd_ms"]))
    assert s["vlf_ms2"] is None  # a 5-minute record is too short for VLF by our rule
    assert s["coherence"] > 0


def test_pvc_recording_is_flagged_unusable() -> None:
    doc = _json(str(DATA / "polar_h10_pvc_device.csv"))
    assert doc["usable"] is False
    assert "irregular rhythm" in doc["reason"]
    # The table prints the numbers too (for researchers), then says not to read them as HRV.
    human = _settle(str(DATA / "polar_h10_pvc_device.csv"))
    assert human.returncode == 0
    assert human.stdout.rstrip().endswith("do not read them as heart-rate variability.")
    clean = _settle(str(DATA / "pyhrv_nni_short.csv"))
    assert "do not read them" not in clean.stdout


@pytest.mark.parametrize("name", RECORDINGS)
def test_no_correction_equals_neurokit2(name: str) -> None:
    nk = dev_dependency("neurokit2")
    doc = _json(str(DATA / f"{name}.csv"), "--no-correction")
    assert doc["correction"]["n_flagged"] == 0
    rr = np.genfromtxt(DATA / f"{name}.csv", delimiter=",", names=True)["rr_ms"]
    peaks = np.concatenate([[0], np.cumsum(rr)]).astype(np.int64)
    assert np.allclose(np.diff(peaks), rr)  # integer ms: the peaks reproduce the RR exactly
    t = nk.hrv_time(peaks, sampling_rate=1000)
    nl = nk.hrv_nonlinear(peaks, sampling_rate=1000)
    s = doc["summary"]
    for ours, theirs in [
        (s["mean_rr_ms"], t["HRV_MeanNN"].iloc[0]),
        (s["sdnn_ms"], t["HRV_SDNN"].iloc[0]),
        (s["rmssd_ms"], t["HRV_RMSSD"].iloc[0]),
        (s["sd1_ms"], nl["HRV_SD1"].iloc[0]),
        (s["sd2_ms"], nl["HRV_SD2"].iloc[0]),
    ]:
        assert ours == pytest.approx(theirs, rel=1e-6)


def test_beats_and_rolling_csv(tmp_path: Path) -> None:
    beats, rolling = tmp_path / "b.csv", tmp_path / "r.csv"
    doc = _json(str(DATA / "bartels_rest_supine.csv"), "--beats", str(beats),
                "--rolling", str(rolling), "--window", "30")  # fmt: skip
    rows = list(csv.DictReader(beats.open()))
    assert list(rows[0]) == ["t_s", "rr_raw_ms", "rr_ms", "class"]
    raw = [float(r["rr_raw_ms"]) for r in rows if r["rr_raw_ms"]]
    assert len(raw) == doc["n_beats"]
    flagged = sum(1 for r in rows if r["rr_raw_ms"] and r["class"] != "normal")
    assert flagged == doc["correction"]["n_flagged"]
    roll = list(csv.DictReader(rolling.open()))
    per_beat = [r for r in roll if r["kind"] == "beat"]
    steps = [r for r in roll if r["kind"] == "step"]
    assert len(per_beat) == sum(1 for r in rows if r["rr_ms"])
    assert len(steps) == pytest.approx(doc["duration_s"] / 5, abs=2)
    # A 30 s window holds about 30 s of beats: check one row against the formula.
    ts = np.array([float(r["t_s"]) for r in rows if r["rr_ms"]])
    rr = np.array([float(r["rr_ms"]) for r in rows if r["rr_ms"]])
    k = 500
    win = rr[(ts > ts[k] - 30.0) & (ts <= ts[k])]
    assert float(per_beat[k]["rmssd_ms"]) == pytest.approx(
        np.sqrt(np.mean(np.diff(win) ** 2)), rel=1e-5
    )
    scores = [float(r["settling_score"]) for r in steps if r["settling_score"]]
    assert scores and all(0.0 <= x <= 100.0 for x in scores)
    # The step rows: every column where its header says. The summary's coherence is the
    # median of the 64 s windows (issue 4), i.e. of this column.
    assert list(roll[0]) == [
        "kind", "t_s", "mean_rr_ms", "hr_bpm", "sdnn_ms", "rmssd_ms", "pnn50_pct", "lf_ms2",
        "hf_ms2", "lf_hf", "resp_rate_bpm", "coherence", "settling_score", "quality",
    ]  # fmt: skip
    coh = [float(r["coherence"]) for r in steps if r["coherence"]]
    assert np.median(coh) == pytest.approx(doc["summary"]["coherence"], rel=1e-5)
    spectra = [r for r in steps if r["lf_hf"]]
    assert len(spectra) > len(steps) // 2
    for r in spectra:
        assert float(r["lf_hf"]) == pytest.approx(float(r["lf_ms2"]) / float(r["hf_ms2"]), rel=1e-4)
    # Breathing at rest, 7-30/min (the band the rate is searched in), around the summary's.
    resp = np.array([float(r["resp_rate_bpm"]) for r in steps if r["resp_rate_bpm"]])
    assert resp.size > len(steps) // 2 and np.all((resp >= 7.0) & (resp <= 30.0))
    assert np.median(resp) == pytest.approx(doc["summary"]["resp_rate_bpm"], abs=1.5)
    assert all(0.0 <= float(r["quality"]) <= 1.0 for r in steps if r["quality"])


def test_bad_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("t_s,rr_ms\n1.0,abc\n")
    for path in (bad, tmp_path / "missing.csv"):
        p = _settle(str(path))
        assert p.returncode == 1
        assert p.stdout == ""
        assert len(p.stderr.strip().splitlines()) == 1
        assert str(path) in p.stderr


def _long_recording(tmp_path: Path) -> Path:
    """25 000 beats, one RR per line: long enough for the progress display (> 20 000)."""
    rr = 800.0 + 30.0 * np.sin(np.arange(25_000) * 0.7)
    rec = tmp_path / "big.txt"
    rec.write_text("\n".join(f"{v:.1f}" for v in rr) + "\n")
    return rec


def test_no_progress_bar_when_not_a_tty(tmp_path: Path) -> None:
    """Output to a pipe or file (a script, a CI log) gets no progress drawing, even for a
    recording long enough to show one on a terminal (the test below)."""
    p = _settle(str(_long_recording(tmp_path)), "--json")
    assert p.returncode == 0
    assert json.loads(p.stdout)["n_beats"] == 25_000
    assert p.stderr == ""


def test_progress_shows_on_the_terminal_when_json_goes_to_a_file(tmp_path: Path) -> None:
    """``settle analyze big.csv --json > out.json`` in a terminal: the progress bar (stage,
    percentage, time so far) is drawn on stderr, the terminal; it was drawn on stdout, into
    the file's place, so nothing showed for the whole run. The JSON in the file is untouched.
    The percentage only grows and ends at 100 % (it was a spinner with no percentage)."""
    import pty

    rec = _long_recording(tmp_path)
    out = tmp_path / "out.json"
    master, slave = pty.openpty()
    try:
        with out.open("w") as fh:
            p = subprocess.run(
                [sys.executable, "-m", "settle.cli", "analyze", str(rec), "--json",
                 "--rolling", str(tmp_path / "r.csv")],
                stdout=fh, stderr=slave, timeout=120,
                env={**os.environ, "SETTLE_CONFIG": str(CONFIG), "COLUMNS": "120"},
            )  # fmt: skip
        os.close(slave)
        slave = -1
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child's end is closed and everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert p.returncode == 0
    assert b"analysing 25000 beats" in shown
    percent = [int(v) for v in re.findall(rb"(\d+)%", shown)]
    assert percent and percent == sorted(percent) and percent[-1] == 100
    assert json.loads(out.read_text())["n_beats"] == 25_000
    assert (tmp_path / "r.csv").stat().st_size > 0


def test_analysis_progress_follows_the_work() -> None:
    """What the bar is drawn from: a share of the whole analysis that starts at 0, only grows,
    moves during the longest stage (spectra every 5 s over 5.5 h) rather than only between
    stages, and reaches 1 when the analysis is done, with or without the rolling series."""
    from processing.offline import analyze

    rr = 800.0 + 30.0 * np.sin(np.arange(25_000) * 0.7)
    t = np.cumsum(rr) / 1000.0
    for rolling in (True, False):
        seen: list[tuple[str, float]] = []
        analyze(t, rr, rolling=rolling, on_progress=lambda s, d, seen=seen: seen.append((s, d)))
        done = [d for _, d in seen]
        assert done[0] == 0.0 and done[-1] == 1.0 and done == sorted(done)
        spectra = {d for s, d in seen if s.startswith("spectra")}
        assert len(spectra) >= 4 and 0.0 < min(spectra) < max(spectra) < 1.0
        assert ("rolling time domain and settling score" in dict(seen)) == rolling


def test_outputs_never_overwrite_a_session_store_even_with_force(tmp_path: Path) -> None:
    """``--beats settle.db --force`` replaced the session store with a CSV (every session
    lost), ``--rolling settle.db-wal --force`` its write-ahead log: refused (exit 2), with or
    without a link in between; the store still opens with its session."""
    from sessions.store import SessionStore

    db = tmp_path / "settle.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", 1_795_000_000_000, "x", {}).id
        link = tmp_path / "looks-harmless.csv"
        link.symlink_to(db)
        rec = str(DATA / "pyhrv_nni_short.csv")
        wal, shm = tmp_path / "settle.db-wal", tmp_path / "settle.db-shm"
        for opt, target in [("--beats", db), ("--rolling", wal), ("--beats", shm),
                            ("--rolling", link)]:  # fmt: skip
            before = target.read_bytes() if target.exists() else None
            line = _one_line_error(_settle(rec, opt, str(target), "--force"), 2)
            assert "refusing to write onto the SQLite database" in line, line
            assert (target.read_bytes() if target.exists() else None) == before
    with SessionStore.open(db) as store:
        assert [s.id for s in store.list_sessions()] == [sid]


def test_closed_stdout_is_no_traceback() -> None:
    """``settle analyze f --json >&-`` (stdout closed) ended in an AttributeError traceback;
    a missing file printed its one-line error and then the same traceback."""
    for path in (DATA / "pyhrv_nni_short.csv", DATA / "missing.csv"):
        p = subprocess.run(
            [sys.executable, "-m", "settle.cli", "analyze", str(path), "--json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
            env={**os.environ, "SETTLE_CONFIG": str(CONFIG)},
            preexec_fn=lambda: os.close(1),
        )  # fmt: skip
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) <= 1
        assert p.returncode == (0 if path.exists() else 1), p.stderr


def _one_line_error(p: subprocess.CompletedProcess[str], code: int) -> str:
    assert p.returncode == code, p.stderr
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("window", ["0", "-5", "nan", "inf", "1e-9", "9.9", "19.9", "601", "1e9"])
def test_bad_window_is_a_usage_error_not_the_files_fault(window: str) -> None:
    rec = DATA / "pyhrv_nni_short.csv"
    line = _one_line_error(_settle(str(rec), "--window", window), 2)
    assert "--window must be 20–600 seconds (as processing.window_s)" in line
    assert str(rec) not in line


def test_outputs_never_overwrite_the_input_and_need_force_to_replace(tmp_path: Path) -> None:
    rec = tmp_path / "rec.csv"
    original = (DATA / "pyhrv_nni_short.csv").read_text()
    rec.write_text(original)
    (tmp_path / "link.csv").symlink_to(rec)
    for args in (["--beats", str(rec)], ["--rolling", str(tmp_path / "link.csv"), "--force"],
                 ["--beats", str(tmp_path / "." / "rec.csv"), "--force"]):  # fmt: skip
        line = _one_line_error(_settle(str(rec), *args), 2)
        assert "refusing to overwrite the input recording" in line
        assert rec.read_text() == original
    existing = tmp_path / "beats.csv"
    existing.write_text("keep me\n")
    line = _one_line_error(_settle(str(rec), "--beats", str(existing)), 2)
    assert line.endswith("file exists (use --force to replace it)")
    assert existing.read_text() == "keep me\n"
    same = _settle(
        str(rec), "--beats", str(tmp_path / "x.csv"), "--rolling", str(tmp_path / "x.csv")
    )
    assert "--beats and --rolling name the same file" in _one_line_error(same, 2)
    assert not (tmp_path / "x.csv").exists()
    doc = _json(str(rec), "--beats", str(existing), "--force")
    rows = list(csv.DictReader(existing.open()))
    assert len(rows) == doc["n_beats"]


@pytest.mark.parametrize("force", [False, True])
def test_beats_and_rolling_are_written_both_or_neither(
    tmp_path: Path, force: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--beats went into place before --rolling was written: when the rolling file could not
    be written (here a full disk, as the rolling file's temporary file is written), the new
    beats file stayed, beside an old rolling file or none, looking like a complete pair;
    and the retry was refused because the beats file now existed."""
    import errno
    import tempfile

    from typer.testing import CliRunner

    from settle.cli import app

    rec = str(DATA / "pyhrv_nni_short.csv")
    beats, rolling = tmp_path / "b.csv", tmp_path / "rolling-series-of-the-file.csv"
    if force:
        beats.write_text("old beats\n")
        rolling.write_text("old rolling\n")
    real = tempfile.mkstemp

    def full_for_rolling(*args: object, **kwargs: object) -> tuple[int, str]:
        fd, name = real(*args, **kwargs)  # type: ignore[call-overload]
        if Path(name).name.startswith(".rolling"):
            os.close(fd)
            os.unlink(name)
            raise OSError(errno.ENOSPC, "No space left on device")
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", full_for_rolling)
    monkeypatch.setenv("SETTLE_CONFIG", str(CONFIG))
    args = ["analyze", rec, "--json", "--beats", str(beats), "--rolling", str(rolling)]
    res = CliRunner().invoke(app, args + (["--force"] if force else []))
    assert res.exit_code == 1
    assert f"{rolling}: cannot write: No space left on device" in res.output
    if force:
        assert beats.read_text() == "old beats\n" and rolling.read_text() == "old rolling\n"
    else:
        assert not beats.exists() and not rolling.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [beats.name, rolling.name] if force else []
    )  # no temporary file left either


def test_an_output_under_a_file_says_so(tmp_path: Path) -> None:
    """A file where a directory is wanted is an output path of the wrong kind: exit code 2
    (docs/operations.md), as `report --out FILE`; it was 1, as for a file not found."""
    rec = str(DATA / "pyhrv_nni_short.csv")
    line = _one_line_error(_settle(rec, "--beats", f"{rec}/x.csv"), 2)
    assert line == f"settle: error: --beats {rec}/x.csv: {rec} is not a directory"
    missing = tmp_path / "missing" / "x.csv"
    line = _one_line_error(_settle(rec, "--rolling", str(missing)), 1)  # not there: 1
    assert line.endswith(f"cannot write: directory {missing.parent} does not exist")


def test_an_output_name_too_long_is_a_bad_output_path_as_in_export(tmp_path: Path) -> None:
    """`--beats` with a name longer than the file system takes exited with code 1, "cannot
    write: File name too long"; `settle export` refuses the same name as a path of the wrong
    kind, exit code 2, in these words. Nothing is read or written."""
    rec = str(DATA / "pyhrv_nni_short.csv")
    most = os.pathconf(tmp_path, "PC_NAME_MAX")
    long_name = tmp_path / ("b" * (most + 1 - 4) + ".csv")
    for opt in ("--beats", "--rolling"):
        line = _one_line_error(_settle(rec, opt, str(long_name)), 2)
        assert line == (
            f"settle: error: {opt} {long_name}: the file name is {most + 1} bytes, more than "
            f"the file system takes ({most}): choose a shorter file name"
        )
    deep = tmp_path.joinpath(*["d" * 200] * 25, "x.csv")
    assert "bytes, longer than the system takes" in _one_line_error(
        _settle(rec, "--beats", str(deep)), 2
    )
    under_long = tmp_path / ("d" * (most + 1)) / "x.csv"  # a directory that cannot be there
    line = _one_line_error(_settle(rec, "--beats", str(under_long)), 1)
    assert line.endswith(f"cannot write: directory {under_long.parent} does not exist")
    assert list(tmp_path.iterdir()) == []


def test_force_never_replaces_a_pipe_or_a_link_to_a_stream(tmp_path: Path) -> None:
    """``--beats f --force`` onto a FIFO made it a regular file (as root, ``/dev/null`` and
    ``/dev/stdout`` too): refused before the recording is read, the special file kept."""
    fifo = tmp_path / "beats.csv"
    os.mkfifo(fifo)
    stream = tmp_path / "rolling.csv"
    stream.symlink_to("/dev/stdout")
    rec = str(DATA / "pyhrv_nni_short.csv")
    for opt, target in (("--beats", fifo), ("--rolling", stream)):
        line = _one_line_error(_settle(rec, opt, str(target), "--force"), 2)
        assert line.endswith("refusing to replace it")
    assert fifo.exists() and not fifo.is_file()
    assert os.readlink(stream) == "/dev/stdout"


def test_force_replaces_a_link_and_never_writes_through_it(tmp_path: Path) -> None:
    """Outputs are written to a temporary file and renamed into place (no half file after an
    interruption): an existing symbolic link is replaced, its target left alone."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "beats.csv"
    out.symlink_to(victim)
    _json(str(DATA / "pyhrv_nni_short.csv"), "--beats", str(out), "--force")
    assert victim.read_text() == "keep me\n"
    assert not out.is_symlink()
    assert out.read_text().startswith("t_s,rr_raw_ms,rr_ms,class\n")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("800\n1e308\n", "rec.txt:2: RR value 1e+308 ms is above 63999 ms"),
        ("# c\n\n800\n70000\n", "rec.txt:4: RR value 70000 ms is above 63999 ms"),
        ("# c\nt_s,rr_ms\n0.8,800\n# x\n0.5,800\n", "rec.txt:5: beat times go backwards"),
    ],
)
def test_implausible_recordings_are_one_line(tmp_path: Path, content: str, words: str) -> None:
    f = tmp_path / "rec.txt"
    f.write_text(content)
    for extra in ([], ["--no-correction"]):
        assert words in _one_line_error(_settle(str(f), *extra), 1)


def test_blank_first_line_utf16_and_long_names(tmp_path: Path) -> None:
    rows = (DATA / "pyhrv_nni_short.csv").read_text()
    blank = tmp_path / "blank.csv"
    blank.write_text("\n" + rows)
    utf16 = tmp_path / "utf16.csv"
    utf16.write_text(rows, encoding="utf-16")
    for f in (blank, utf16):
        assert _json(str(f))["n_beats"] == 337
    too_long = tmp_path / ("a" * 300)
    assert "cannot read: File name too long" in _one_line_error(_settle(str(too_long)), 1)


def _exported(tmp_path: Path, rr: list[float], warmup: int = 0) -> tuple[Path, list[float]]:
    """A session of these beats in a store (the first ``warmup`` of class warmup), exported
    with ``export_csv``; also the beat times."""
    from sessions.export import export_csv
    from sessions.store import BeatClass, BeatRow, IndicesRow, MarkerRow, SessionStore

    store = SessionStore.open(tmp_path / "s.db")
    info = store.create_session("dev_1", 1_700_000_000_000, "test", {})
    t_s = (np.cumsum(rr) / 1000.0).tolist()
    store.add_beats(info.id, [
        BeatRow(i, t, 1_700_000_000_000 + round(t * 1000), r, None, 70, None,
                rr_corrected_ms=None if i < warmup else r + 5.0,
                beat_class=BeatClass.WARMUP if i < warmup else BeatClass.NORMAL)
        for i, (t, r) in enumerate(zip(t_s, rr, strict=True))
    ])  # fmt: skip
    store.add_indices(info.id, [IndicesRow(5.0 * k, 1_700_000_000_000 + 5000 * k, "{}",
                                           hr_bpm=70.0) for k in range(1, 50)])  # fmt: skip
    store.add_marker(info.id, MarkerRow(30.0, 1_700_000_030_000, "shame", "it, came", "cli"))
    store.finish_session(info.id, 1_700_000_000_000 + round(t_s[-1] * 1000))
    exported = export_csv(store, info.id, tmp_path / "export.csv")
    store.close()
    return exported, t_s


def test_analyze_reads_settles_own_csv_export(tmp_path: Path) -> None:
    """``settle export --format csv`` then ``settle analyze`` on it: the beats' raw RR, the
    same analysis as of a plain t_s,rr_ms file with those beats."""
    rr = np.genfromtxt(DATA / "pyhrv_nni_short.csv", delimiter=",", names=True)["rr_ms"].tolist()
    exported, t_s = _exported(tmp_path, rr)
    plain = tmp_path / "plain.csv"
    plain.write_text(
        "t_s,rr_ms\n" + "".join(f"{t!r},{r!r}\n" for t, r in zip(t_s, rr, strict=True))
    )
    doc = _json(str(exported))
    assert doc["n_beats"] == len(rr)
    assert doc == _json(str(plain))


def test_the_daemons_warm_up_beats_are_left_out_as_live(tmp_path: Path) -> None:
    """The daemon records the first beats after a (re)connect as 'warmup' and does not
    analyse them (a strap's first RR can be stale); analysing its export leaves them out too,
    so the summary is that of the beats after them, and --beats keeps them as 'warmup'."""
    d = np.genfromtxt(DATA / "pyhrv_nni_short.csv", delimiter=",", names=True)
    rr = d["rr_ms"].tolist()
    rr[:5] = [1900.0, 400.0, 1500.0, 700.0, 1300.0]  # what a stale buffer could hold
    exported, t_s = _exported(tmp_path, rr, warmup=5)
    beats = tmp_path / "beats.csv"
    p = _settle(str(exported), "--json", "--beats", str(beats))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["n_beats"] == len(rr)
    assert doc["correction"]["by_class"]["warmup"] == 5
    after = tmp_path / "after.csv"
    after.write_text(
        "t_s,rr_ms\n" + "".join(f"{t!r},{r!r}\n" for t, r in zip(t_s[5:], rr[5:], strict=True))
    )
    assert doc["summary"] == _json(str(after))["summary"]
    rows = list(csv.DictReader(beats.open()))
    assert [r["class"] for r in rows[:5]] == ["warmup"] * 5
    assert all(r["rr_ms"] == "" for r in rows[:5])


def test_an_export_holding_a_zero_rr_from_the_strap_is_analysed(tmp_path: Path) -> None:
    """A strap sent RR 0 (the daemon keeps it as implausible): the export of that session is
    analysed, the 0 marked implausible, not refused as a bad line."""
    rr = np.genfromtxt(DATA / "pyhrv_nni_short.csv", delimiter=",", names=True)["rr_ms"].tolist()
    rr[100] = 0.0
    exported, _ = _exported(tmp_path, rr)
    doc = _json(str(exported))
    assert doc["n_beats"] == len(rr)
    assert doc["correction"]["by_class"]["implausible"] == 1
    plain = tmp_path / "plain.txt"
    plain.write_text("".join(f"{r!r}\n" for r in rr))  # elsewhere a 0 is still an error
    assert "plain.txt:101: RR value 0 ms is not positive" in _one_line_error(_settle(str(plain)), 1)


def test_a_lost_half_minute_is_not_filled_with_invented_beats(tmp_path: Path) -> None:
    """A one-column file whose strap lost 30 s (one interval spanning it, as RR-only exports
    show a dropout): the interval is kept as 'implausible' but not analysed or split into
    invented beats (it was split as a 'missed' beat into 30 interpolated ones)."""
    rr = np.genfromtxt(DATA / "bartels_rest_supine.csv", delimiter=",", names=True)["rr_ms"]
    lost = np.concatenate([rr[:400], [rr[400:430].sum()], rr[430:]])
    f = tmp_path / "dropout.csv"
    f.write_text("rr_ms\n" + "".join(f"{x:g}\n" for x in lost))  # one column, with its header
    whole = _json(str(DATA / "bartels_rest_supine.csv"))
    doc = _json(str(f))
    assert doc["n_beats"] == lost.size
    assert doc["correction"]["by_class"]["implausible"] == 1
    assert doc["correction"]["by_class"]["missed"] == whole["correction"]["by_class"]["missed"]
    assert doc["usable"] is True
    for key in ("rmssd_ms", "sdnn_ms"):
        assert doc["summary"][key] == pytest.approx(whole["summary"][key], rel=0.03), key
    out = tmp_path / "beats.csv"
    assert _settle(str(f), "--beats", str(out)).returncode == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == lost.size
    assert rows[400]["class"] == "implausible" and rows[400]["rr_ms"] == ""
    assert float(rows[400]["rr_raw_ms"]) == pytest.approx(lost[400], abs=1e-3)


def test_processing_settings_of_the_config_apply(tmp_path: Path) -> None:
    rec = str(DATA / "bartels_rest_supine.csv")
    cfg = tmp_path / "settle.toml"
    cfg.write_text("[processing]\ncorrection = false\nrr_max_ms = 1100\n")
    doc = _json(rec, "--config", str(cfg))
    assert doc["correction"]["enabled"] is False
    rr = np.genfromtxt(DATA / "bartels_rest_supine.csv", delimiter=",", names=True)["rr_ms"]
    assert doc["correction"]["by_class"]["implausible"] == int((rr > 1100).sum()) > 0
    assert doc["correction"]["n_flagged"] == int((rr > 1100).sum())
    bad = tmp_path / "bad.toml"
    bad.write_text("[processing]\nwindow_s = 1\n")
    assert "processing.window_s" in _one_line_error(_settle(rec, "--config", str(bad)), 2)


def test_seconds_instead_of_milliseconds_is_refused(tmp_path: Path) -> None:
    """RR in seconds of a heart slower than 61 beats/min are all over 0.977 and were read as
    milliseconds: exit code 0 and a "recording" of 0.3 s, although the README says RR in
    seconds are refused. Refused now, by the median or by the header's unit, in one line."""
    values = "".join(f"{x / 1000:.3f}\n" for x in [1012.0, 1034.5, 998.0] * 20)
    f = tmp_path / "seconds.txt"
    f.write_text(values)
    line = _one_line_error(_settle(str(f)), 1)
    assert line == (
        f"settle: error: {f}: the median RR is 1.012 ms, under 100 ms (600 beats/min): RR must "
        "be in milliseconds, not seconds"
    )
    f.write_text("RR (s)\n" + values)
    line = _one_line_error(_settle(str(f), "--json"), 1)
    assert line == (
        f"settle: error: {f}:1: the header gives the RR column 'RR (s)' in seconds: RR must be "
        "in milliseconds, not seconds (multiply the column by 1000)"
    )


@pytest.mark.parametrize(("delim", "decimal_comma"), [(";", True), ("\t", False)])
def test_a_t_s_rr_ms_file_resaved_by_a_spreadsheet_is_analysed_as_the_original(
    tmp_path: Path, delim: str, decimal_comma: bool
) -> None:
    """`t_s;rr_ms` with a decimal comma (Excel in German) or tab-separated was read as a
    table of one RR column, its times dropped: the minute missing from the recording was
    joined up (duration 60 s short, LF −10 %). Now it is analysed as the comma file."""
    original = _gapped_sine_file(tmp_path)
    lines = original.read_text().splitlines()
    resaved = tmp_path / "resaved.csv"
    point = (lambda c: c.replace(".", ",")) if decimal_comma else (lambda c: c)
    resaved.write_text(
        "".join(delim.join(point(c) for c in ln.split(",")) + "\r\n" for ln in lines)
    )
    want, got = _json(str(original)), _json(str(resaved))
    assert got == want
    assert got["duration_s"] > 590.0  # the gap is kept, not joined up


def _gapped_sine_file(tmp_path: Path) -> Path:
    """Ten minutes of a calibrated 0.1 Hz, 40 ms oscillation (800 ms² of LF) at 1000 ms mean
    RR, with the beats between 290 and 350 s missing."""
    t, rr, tt = [], [], 0.0
    while tt < 600.0:
        r = 1000.0 + 40.0 * math.sin(2.0 * math.pi * 0.1 * tt)
        tt += r / 1000.0
        t.append(tt)
        rr.append(r)
    f = tmp_path / "gap.csv"
    f.write_text(
        "t_s,rr_ms\n"
        + "".join(f"{a:.4f},{b:.3f}\n" for a, b in zip(t, rr, strict=True) if not 290 < a < 350)
    )
    return f


def test_the_spectrum_is_not_splined_across_a_gap(tmp_path: Path) -> None:
    """Ten minutes of a calibrated 0.1 Hz, 40 ms oscillation (800 ms² of LF) with one minute of
    beats missing from the file (a lost connection in an export): the whole-recording spectrum
    still reads 800 ms² ± 3 % of LF and invents no slow power. A spline across the hole read
    645 ms² of LF and 1796 ms² of VLF."""
    f = _gapped_sine_file(tmp_path)
    s = _json(str(f))["summary"]
    assert s["lf_ms2"] == pytest.approx(800.0, rel=0.03)
    assert s["hf_ms2"] < 1.0
    assert s["vlf_ms2"] is None or s["vlf_ms2"] < 10.0


def test_dfa_alpha1_is_not_read_across_gaps(tmp_path: Path) -> None:
    """An export from a strap that kept dropping out while the practitioner changed posture
    (runs of 40 beats around 700 or 900 ms, 10 s lost between runs): across the gaps the level
    jumps would read as a correlated rhythm (α1 ≈ 1.5); each run analysed on its own, α1 reads
    what the beats within runs carry (white noise: ≈ 0.58 at 4–16 beats; 0.61 here after
    the correction)."""
    rng = np.random.default_rng(1)
    t, rr, tt = [], [], 0.0
    for i in range(100):
        for r in (700.0 if i % 2 else 900.0) + rng.normal(0, 30, 40):
            tt += r / 1000.0
            t.append(tt)
            rr.append(r)
        tt += 10.0
    f = tmp_path / "dropouts.csv"
    f.write_text("t_s,rr_ms\n" + "".join(f"{a:.4f},{b:.3f}\n" for a, b in zip(t, rr, strict=True)))
    assert _json(str(f))["summary"]["dfa_alpha1"] == pytest.approx(0.58, abs=0.08)


def test_lomb_spectrum_option_reads_a_gappy_recording(tmp_path: Path) -> None:
    """`--spectrum lomb`, the option for gappy data: the same ten minutes of a calibrated
    0.1 Hz, 40 ms oscillation with one minute missing, analysed at the beats' own times with
    the hole left in, read 800 ms² ± 3 % of LF and no invented slow power. A bad method name
    is a usage error (exit 2, one line)."""
    f = _gapped_sine_file(tmp_path)
    s = _json(str(f), "--spectrum", "lomb")["summary"]
    assert s["spectrum"] == "lomb"  # a file of results says which method it holds
    assert _json(str(f))["summary"]["spectrum"] == "welch"
    assert s["lf_ms2"] == pytest.approx(800.0, rel=0.03)
    assert s["hf_ms2"] < 10.0
    assert s["vlf_ms2"] is not None and s["vlf_ms2"] < 10.0
    assert s["peak_hz"] == pytest.approx(0.1, abs=0.005)
    p = _settle(str(f), "--json", "--spectrum", "fft")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "settle: error: --spectrum must be welch or lomb, got 'fft'"
    ]


def test_no_difference_or_window_spans_a_gap(tmp_path: Path) -> None:
    """Half a minute of beats missing from a timed file (a lost connection in an export): as
    in the daemon, RMSSD uses no successive difference across the gap, and the rolling window
    starts afresh after it instead of mixing beats from both sides."""
    d = np.genfromtxt(DATA / "bartels_rest_supine.csv", delimiter=",", names=True)
    keep = np.ones(d.size, dtype=bool)
    keep[400:430] = False
    t, rr = d["t_s"][keep].tolist(), d["rr_ms"][keep].tolist()
    f = tmp_path / "gap.csv"
    f.write_text("t_s,rr_ms\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(t, rr, strict=True)))
    beats, rolling = tmp_path / "beats.csv", tmp_path / "rolling.csv"
    p = _settle(str(f), "--json", "--beats", str(beats), "--rolling", str(rolling))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    rows = [r for r in csv.DictReader(beats.open()) if r["rr_ms"]]
    bt = np.array([float(r["t_s"]) for r in rows])
    brr = np.array([float(r["rr_ms"]) for r in rows])
    after = int(np.searchsorted(bt, t[400], side="left"))  # first analysed beat after the gap
    diffs = np.concatenate([np.diff(brr[:after]), np.diff(brr[after:])])
    assert doc["summary"]["rmssd_ms"] == pytest.approx(float(np.sqrt(np.mean(diffs**2))))
    assert doc["summary"]["rmssd_ms"] != pytest.approx(float(np.sqrt(np.mean(np.diff(brr) ** 2))))
    roll = [r for r in csv.DictReader(rolling.open()) if r["kind"] == "beat"]
    first = roll[after]
    assert float(first["t_s"]) == pytest.approx(bt[after], abs=1e-4)
    assert first["rmssd_ms"] == "" and first["sdnn_ms"] == ""  # one beat: nothing to compute
    assert float(first["mean_rr_ms"]) == pytest.approx(brr[after], rel=1e-5)
    fifth = roll[after + 4]
    assert float(fifth["rmssd_ms"]) == pytest.approx(
        float(np.sqrt(np.mean(np.diff(brr[after : after + 5]) ** 2))), rel=1e-5
    )


def test_a_missed_beat_after_a_host_stall_starts_the_rolling_series_afresh() -> None:
    """A beat the daemon could not place on its time line (it arrived 0.3 s after the one
    before with a 1600 ms interval: a late notification after a host stall, and a missed
    beat) restarts its windows, and the correction then splits that interval: the inserted
    beat's own time lies before the previous beat's. `settle analyze` kept that time, so
    the rolling rows went back in time and its windows (searched by time) broke one beat
    late and mixed beats from both sides. Now, as live, the inserted beat is kept just
    after the one before, in the new run: times in order, a fresh window from it."""
    from processing.offline import analyze

    t, rr, x = [], [], 0.0
    for _ in range(200):
        x += 0.8
        t.append(x)
        rr.append(800.0 + 30.0 * math.sin(x))
    x += 0.3
    t.append(x)
    rr.append(1600.0)
    for _ in range(200):
        x += 0.8
        t.append(x)
        rr.append(800.0 + 30.0 * math.sin(x))
    a = analyze(np.array(t), np.array(rr), rolling=True)
    roll = a.rolling
    assert roll is not None and a.beats.by_class()["missed"] == 1
    assert np.all(np.diff(roll.beat_t_s) >= 0.0)
    ok = np.isfinite(a.beats.rr_ms)
    rc = a.beats.rr_ms[ok]
    first = int(np.flatnonzero(a.beats.code[ok] != 0)[0])  # the inserted half
    assert roll.beat_t_s[first - 1] < roll.beat_t_s[first] <= roll.beat_t_s[first - 1] + 1e-5
    assert roll.beat_mean_rr_ms[first] == pytest.approx(rc[first])
    assert math.isnan(roll.beat_sdnn_ms[first])  # one beat in the new window
    assert roll.beat_rmssd_ms[first + 4] == pytest.approx(
        float(np.sqrt(np.mean(np.diff(rc[first : first + 5]) ** 2)))
    )
    diffs = np.concatenate([np.diff(rc[:first]), np.diff(rc[first:])])
    assert a.td.rmssd_ms == pytest.approx(float(np.sqrt(np.mean(diffs**2))))


def test_a_long_beat_is_not_a_gap_in_the_recording() -> None:
    """A 2000 ms interval in a 570 ms rhythm, interpolated as `long` (573 ms): its beat is
    2 s after the one before by its own raw interval. `settle analyze` measured that step
    against the corrected 573 ms, called it a gap, and restarted every window there (SDNN
    blank, RMSSD without the differences around it); the daemon did not."""
    from processing.offline import analyze

    rr = 570.0 + 15.0 * np.sin(np.arange(200) * 2.0 * np.pi / 4.5)
    rr[100] = 2000.0
    a = analyze(np.cumsum(rr) / 1000.0, rr, rolling=True)
    assert a.beats.classes()[100] == "long"
    roll = a.rolling
    assert roll is not None and np.isfinite(roll.beat_sdnn_ms[95:110]).all()
    rc = a.beats.rr_ms
    assert a.td.rmssd_ms == pytest.approx(float(np.sqrt(np.mean(np.diff(rc) ** 2))))


def test_a_recorded_gap_at_the_time_of_the_beat_before_blanks_no_step_live_took() -> None:
    """A beat the daemon recorded after a gap, stamped at the same time as the beat before
    (a burst after a stall): `settle analyze` searched the gap's start by time, took the
    beat before that one for the last before the gap, and blanked the step between them
    (quality 0, no score) that the daemon had taken with a full window."""
    from processing.live import LiveAnalyzer
    from processing.offline import analyze

    rr = 1000.0 + 40.0 * np.sin(np.arange(300) * 2.0 * np.pi / 5.0)
    t = np.cumsum(rr) / 1000.0 + 0.3
    t[200:] -= t[200] - t[199]
    gap = np.zeros(t.size, dtype=bool)
    gap[200] = True
    roll = analyze(t, rr, rolling=True, correction=False, gap_before=gap).rolling
    assert roll is not None
    la = LiveAnalyzer(correction=False)
    live = np.full(roll.step_t_s.size, np.nan)
    j = 0
    for k, (ti, ri) in enumerate(zip(t.tolist(), rr.tolist(), strict=True)):
        if gap[k]:
            la.gap(ti - ri / 1000.0)
        while j < roll.step_t_s.size and roll.step_t_s[j] < ti:
            live[j] = la.indices(float(roll.step_t_s[j])).quality
            j += 1
        la.push_beat(ti, ri)
    at = int(np.searchsorted(roll.step_t_s, 200.0))
    assert roll.step_t_s[at] == 200.0 and live[at] > 0.9
    np.testing.assert_allclose(roll.step_quality[:j], live[:j], rtol=1e-9, atol=1e-12)


def test_rolling_settling_score_is_the_one_live_shows() -> None:
    """A researcher re-analysing a session expects the settling score the practitioner saw:
    the same baseline (the usable snapshots of the first 2 minutes; a window of fewer than
    10 beats is still warming up) and a score at the same steps. Without correction (so the
    live path has no look-ahead lag), offline and live differ only by their resampling of
    the spectra: here by 0.02 points (median), 0.2 at most. The offline baseline used to
    take the warming-up steps too (1.9 points, up to 3.5), and its spectra ended at the step
    where live's end at the last beat (0.3, up to 2.8)."""
    from processing.live import LiveAnalyzer
    from processing.offline import analyze
    from sensors.readers import read_rr_file

    rec = read_rr_file(DATA / "bartels_rest_supine.csv")
    roll = analyze(rec.t_s, rec.rr_ms, rolling=True, correction=False).rolling
    assert roll is not None
    steps, offline = roll.step_t_s, roll.step_score
    la = LiveAnalyzer(correction=False)
    live = np.full(steps.size, np.nan)
    j = 0
    for t, rr in zip(rec.t_s.tolist(), rec.rr_ms.tolist(), strict=True):
        while j < steps.size and steps[j] < t:
            live[j] = la.indices(float(steps[j])).score
            j += 1
        la.push_beat(t, rr)
    np.testing.assert_array_equal(np.isfinite(offline), np.isfinite(live))
    diff = np.abs(offline - live)[np.isfinite(live)]
    assert diff.size > 150
    assert float(np.median(diff)) < 0.1
    assert float(diff.max()) < 1.0


def _live_scores_with_rest(
    t: np.ndarray, rr: np.ndarray, steps: np.ndarray, rest: tuple[float, float]
) -> np.ndarray:
    """The score a LiveAnalyzer (no correction) shows at ``steps`` when a rest period is
    marked ``rest[0]`` … ``rest[1]`` (baseline/start, baseline/stop as the daemon sends them:
    a too-short one needs 3 steps of 5 s)."""
    from processing.live import LiveAnalyzer

    la = LiveAnalyzer(correction=False)
    live = np.full(steps.size, np.nan)
    marks = [(rest[0], la.start_baseline), (rest[1], lambda x: la.stop_baseline(x, 15.0))]
    j = 0
    for ti, ri in zip(t.tolist(), rr.tolist(), strict=True):
        while j < steps.size and steps[j] < ti:
            while marks and marks[0][0] <= steps[j]:
                at, mark = marks.pop(0)
                mark(at)
            live[j] = la.indices(float(steps[j])).score
            j += 1
        la.push_beat(ti, ri)
    return live


@pytest.mark.parametrize("rest", [(202.5, 322.5), (202.5, 212.5)], ids=["kept", "too-short"])
def test_rolling_score_is_against_the_marked_rest_period_as_live(
    rest: tuple[float, float], tmp_path: Path
) -> None:
    """A session with a marked rest period, exported and re-analysed: the rolling score is
    the one the practitioner saw, against that rest period (a session whose score read 59–71
    live read 1–3 offline, against the first 2 minutes). A rest period too short to use is
    discarded as live does, and the automatic baseline is collected after it. The export's
    ``baseline`` row gives the period to `settle analyze`, which says what it scored
    against."""
    from processing.offline import analyze
    from sensors.readers import read_rr_file

    rec = read_rr_file(DATA / "bartels_rest_supine.csv")
    t = rec.t_s - rec.t_s[0] + 1.0
    roll = analyze(t, rec.rr_ms, rolling=True, correction=False, rest=rest).rolling
    assert roll is not None
    live = _live_scores_with_rest(t, rec.rr_ms, roll.step_t_s, rest)
    np.testing.assert_array_equal(np.isfinite(roll.step_score), np.isfinite(live))
    diff = np.abs(roll.step_score - live)[np.isfinite(live)]
    assert diff.size > 100 and float(diff.max()) < 1.0
    auto = analyze(t, rec.rr_ms, rolling=True, correction=False).rolling
    assert auto is not None
    after = roll.step_t_s > rest[1] + 150.0
    if rest[1] - rest[0] >= 15.0:
        assert roll.baseline_marked and roll.baseline_span_s == (205.0, 320.0)
        # Not the automatic baseline's scores: the rest period moved them.
        assert float(np.nanmax(np.abs(roll.step_score - auto.step_score)[after])) > 2.0
    else:
        assert not roll.baseline_marked and roll.baseline_span_s is not None
        assert roll.baseline_span_s[0] > rest[1]

    lines = ["record,t_s,rr_ms,end_t_s,reason", f"baseline,{rest[0]!r},,{rest[1]!r},"]
    lines += [
        f"beat,{ti!r},{ri!r},," for ti, ri in zip(t.tolist(), rec.rr_ms.tolist(), strict=True)
    ]
    export = tmp_path / "settle-x.csv"
    export.write_text("\n".join(lines) + "\n")
    assert read_rr_file(export).rest_s == rest
    out_csv = tmp_path / "r.csv"
    res = _settle(str(export), "--no-correction", "--rolling", str(out_csv))
    assert res.returncode == 0, res.stderr
    said = " ".join(res.stdout.split())
    if roll.baseline_marked:
        assert "against the marked rest period 202.5–322.5 s" in said
    else:
        assert "the marked rest period 202.5–212.5 s holds fewer than 3 usable steps" in said
        assert "discarded, as live; against the automatic baseline" in said
    rows = [r.split(",") for r in out_csv.read_text().splitlines()[1:] if r.startswith("step,")]
    written = np.array([float(r[12]) if r[12] else np.nan for r in rows])
    np.testing.assert_allclose(written, roll.step_score, atol=1e-3, equal_nan=True)
    # --baseline auto: the first 2 minutes, as before.
    res = _settle(str(export), "--no-correction", "--baseline", "auto",
                  "--rolling", str(out_csv), "--force")  # fmt: skip
    assert res.returncode == 0, res.stderr
    m = re.search(r"against the automatic baseline, steps (\d+)–(\d+) s", res.stdout)
    assert m is not None and int(m[2]) <= 125  # the first 2 minutes from the first step


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("120", "expected START:STOP seconds"),
        ("50:20", "need 0 <= START < STOP"),
        ("100:110", "10 s is too short (at least 15 s"),
        ("5000:5100", "starts after the recording's last beat"),
    ],
)
def test_a_bad_baseline_option_is_one_line_exit_2(value: str, said: str) -> None:
    line = _one_line_error(_settle(str(DATA / "bartels_rest_supine.csv"), "--baseline", value), 2)
    assert said in line


def test_a_gap_of_the_raw_ecg_alone_does_not_break_the_rr_series(tmp_path: Path) -> None:
    """A Polar H10's raw ECG clock stepped: the daemon records a `raw ECG clock step` gap
    but its heart-rate analysis goes on (the strap's RR did). `settle analyze` of the export
    broke the series there as at a lost notification, and the rolling RMSSD restarted; it
    now reads only the other gap rows as breaks."""
    from processing.offline import analyze
    from sensors.readers import read_rr_file

    rec = read_rr_file(DATA / "bartels_rest_supine.csv")
    at = int(np.searchsorted(rec.t_s, 330.0))
    lines = ["record,t_s,rr_ms,end_t_s,reason"]
    for i, (ti, ri) in enumerate(zip(rec.t_s.tolist(), rec.rr_ms.tolist(), strict=True)):
        if i == at:
            lines.append(f"gap,{ti - 0.4!r},,{ti - 0.1!r},raw ECG clock step")
        if i == at + 100:
            lines.append(f"gap,{ti - 0.4!r},,{ti - 0.1!r},disconnected")
        lines.append(f"beat,{ti!r},{ri!r},,")
    export = tmp_path / "settle-x.csv"
    export.write_text("\n".join(lines) + "\n")
    back = read_rr_file(export)
    assert back.gap_before is not None
    assert np.flatnonzero(back.gap_before).tolist() == [at + 100]  # the real gap only
    roll = analyze(back.t_s, back.rr_ms, rolling=True, correction=False,
                   gap_before=back.gap_before).rolling  # fmt: skip
    plain = analyze(rec.t_s, rec.rr_ms, rolling=True, correction=False).rolling
    assert roll is not None and plain is not None
    # Through the clock step the RMSSD is the unbroken recording's; after the real gap not.
    between = (roll.beat_t_s > rec.t_s[at]) & (roll.beat_t_s < rec.t_s[at + 100])
    np.testing.assert_array_equal(roll.beat_rmssd_ms[between], plain.beat_rmssd_ms[between])
    assert np.isnan(roll.beat_rmssd_ms[np.searchsorted(roll.beat_t_s, rec.t_s[at + 100])])


def _as_the_daemon_takes_steps(
    t: np.ndarray,
    rr: np.ndarray,
    steps: np.ndarray,
    correction: bool,
    gap_before: np.ndarray,
    notification_start: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Score, quality and coherence at ``steps`` from a LiveAnalyzer fed in the daemon's
    order (settle.pipeline): a recorded gap restarts it before the steps inside the gap; an
    implausible interval it cannot repair is a gap; without correction a step is taken
    before the beat past it is pushed, with correction after the whole notification
    (``notification_start``: the first beat of each; None: one beat each), whose pushes
    finalised the beats the look-ahead held."""
    from processing.artefacts import may_be_repaired
    from processing.live import LiveAnalyzer

    la = LiveAnalyzer(correction=correction, rr_min_ms=250.0, rr_max_ms=2000.0)
    out = {k: np.full(steps.size, np.nan) for k in ("score", "quality", "coherence")}
    j, prev = 0, math.nan

    def take(until: float, inclusive: bool) -> None:
        nonlocal j
        while j < steps.size and (steps[j] <= until if inclusive else steps[j] < until):
            snap = la.indices(float(steps[j]))
            out["score"][j], out["quality"][j] = snap.score, snap.quality
            out["coherence"][j] = snap.coherence
            j += 1

    for k, (ti, ri) in enumerate(zip(t.tolist(), rr.tolist(), strict=True)):
        if gap_before[k]:
            la.gap(float(t[k - 1]))
        if not correction:
            take(ti, inclusive=False)
        if not 250.0 <= ri <= 2000.0 and not (
            correction and may_be_repaired(ri, prev, 250.0, 2000.0)
        ):
            la.gap(ti)
        else:
            la.push_beat(ti, ri)
        prev = ri
        if k + 1 == t.size or notification_start is None or notification_start[k + 1]:
            take(ti, inclusive=True)
    return {k: v[:j] for k, v in out.items()}


@pytest.mark.parametrize(
    "correction, grouped", [(True, False), (False, False), (True, True), (False, True)]
)
def test_rolling_is_what_the_daemon_showed_with_artefacts_gaps_and_stalls(
    correction: bool, grouped: bool
) -> None:
    """`settle analyze --rolling` writes, at each step, what the daemon showed then. With
    correction (the default) the daemon's windows end at the last beat the 3-beat
    look-ahead has finalised, and a gap, a stall or a left-out beat restarts them only once
    the beats before it are final; the rolling file used windows ending at the step itself:
    on the recording with 2 % mixed artefacts alone its score was up to 10.7 points off
    live's (median 2.5) and its quality up to 0.05; with a recorded gap, a burst after a
    stall and a lone 3.5 s pause added, scores and spectra were present at steps where live
    had none.
    Now they are equal but for the resampling of the spectra (well under a point).

    A strap sends the beats of about a second in one notification (a Polar H10: 2–3
    intervals at a fast heart; ``grouped``: two seconds' worth here, this heart beating at
    about 60/min), and the daemon takes its steps after the whole notification: with
    correction it then held a beat or two more than the beats one at a time would give
    (scores up to ~7 points apart on real recordings). Settle's export says which beats came
    together (their arrival time), and `settle analyze` follows it."""
    from processing.offline import analyze
    from sensors.readers import read_rr_file

    rec = read_rr_file(DATA / "artifacts" / "bartels_rest_supine__mixed__2pct.csv")
    t, rr = rec.t_s.copy(), rec.rr_ms.copy()
    # A recorded gap: 12 s of beats lost at 300 s (the daemon recorded it).
    lost = (t > 300.0) & (t < 312.0)
    after = int(np.flatnonzero(lost)[-1]) + 1 - int(lost.sum())
    t, rr = t[~lost], rr[~lost]
    gap = np.zeros(t.size, dtype=bool)
    gap[after] = True
    # A burst after a host stall: a beat delivered 0.1 s after the one before.
    k = int(np.searchsorted(t, 500.0))
    t[k] = t[k - 1] + 0.1
    # A pause no correction repairs (3.5 s: neither a missed beat nor two).
    k = int(np.searchsorted(t, 700.0))
    t[k:] += 3.5 - rr[k] / 1000.0
    rr[k] = 3500.0
    starts = None
    if grouped:  # the beats that closed within two seconds of the strap's clock
        second = np.floor((np.maximum.accumulate(t) + 0.37) / 2.0)
        starts = np.concatenate([[True], second[1:] != second[:-1]]) | gap
        assert (~starts).sum() > 50
    roll = analyze(
        t, rr, rolling=True, correction=correction, gap_before=gap, notification_start=starts
    ).rolling
    assert roll is not None
    live = _as_the_daemon_takes_steps(t, rr, roll.step_t_s, correction, gap, starts)
    n = live["score"].size
    if grouped and correction:  # taken one beat at a time, the steps would differ
        alone = analyze(t, rr, rolling=True, gap_before=gap).rolling
        assert alone is not None
        assert float(np.nanmax(np.abs(alone.step_score[:n] - live["score"]))) > 1.0
    assert n > 150
    for key, offline in (
        ("score", roll.step_score),
        ("quality", roll.step_quality),
        ("coherence", roll.step_coherence),
    ):
        np.testing.assert_array_equal(np.isfinite(offline[:n]), np.isfinite(live[key]))
    assert np.isnan(live["score"]).sum() > 20  # the restarts above are there
    np.testing.assert_allclose(roll.step_quality[:n], live["quality"], rtol=1e-9, atol=1e-12)
    both = np.isfinite(live["score"])
    assert float(np.abs(roll.step_score[:n] - live["score"])[both].max()) < 1.0


def test_a_missed_beat_split_at_the_time_of_the_beat_before_keeps_the_spectra() -> None:
    """After a stall burst, two beats placed 1 µs after the one before: the second, a missed
    beat, is split, and its inserted half was put at the very time of the first (1 µs after
    *its* predecessor, the same one). Two beats at one time made the spline NaN: no spectrum,
    coherence or score for the rest of the run offline, and for about 70 s live. Now each is
    kept 1 µs after the one before, in both."""
    from processing.live import LiveAnalyzer
    from processing.offline import analyze

    base = 800.0 + 40.0 * np.sin(np.arange(400) * 2.0 * np.pi / 5.0)
    t0 = np.cumsum(base) / 1000.0
    at = float(t0[150])
    rr = np.concatenate([base[:151], [800.0, 1600.0], base[151:]])
    t = np.concatenate([t0[:151], [at + 1e-6, at + 2e-6], at + 2e-6 + np.cumsum(base[151:]) / 1000])
    a = analyze(t, rr, rolling=True)
    roll = a.rolling
    assert roll is not None and a.beats.by_class()["missed"] == 1
    later = roll.step_t_s > at + 70.0  # the first 64 s window after the stall, and on
    assert later.sum() > 20
    assert np.isfinite(roll.step_coherence[later]).all()
    assert np.isfinite(roll.step_score[later]).all()
    assert np.all(np.diff(roll.beat_t_s) > 0)
    la = LiveAnalyzer(rr_min_ms=250.0, rr_max_ms=2000.0)
    coherence = []
    for ti, ri in zip(t.tolist(), rr.tolist(), strict=True):
        la.push_beat(ti, ri)
        if at + 70.0 < ti < at + 120.0:
            coherence.append(la.indices(ti).coherence)
    assert coherence and np.isfinite(coherence).all()


def test_a_gap_the_daemon_recorded_breaks_the_rolling_series_as_live(tmp_path: Path) -> None:
    """One lost notification (a beat missing, its neighbours only 2 intervals apart): the
    daemon records a gap and restarts every window there, so the dashboard shows no score
    for a minute. `settle analyze` of the export read only the beat rows and bridged it
    (it breaks by itself only where beats are more than 3 intervals apart): 14 scores and a
    RMSSD 27 ms off where live had none. It now breaks at the export's `gap` row: score and
    RMSSD are what live showed, step for step (without correction: no look-ahead lag)."""
    from processing.live import LiveAnalyzer
    from processing.offline import analyze
    from sensors.readers import read_rr_file

    rec = read_rr_file(DATA / "bartels_rest_supine.csv")
    lost = int(np.searchsorted(rec.t_s, 330.0))
    keep = np.arange(rec.t_s.size) != lost
    t, rr = rec.t_s[keep], rec.rr_ms[keep]
    gap_start = float(rec.t_s[lost - 1])
    lines = ["record,t_s,rr_ms,end_t_s,reason"]
    for i, (ti, ri) in enumerate(zip(t.tolist(), rr.tolist(), strict=True)):
        if i == lost:
            lines.append(f"gap,{gap_start!r},,{ti!r},about 1.0 s of beats missing")
        lines.append(f"beat,{ti!r},{ri!r},,")
    export = tmp_path / "settle-x.csv"
    export.write_text("\n".join(lines) + "\n")
    back = read_rr_file(export)
    assert back.gap_before is not None and np.flatnonzero(back.gap_before).tolist() == [lost]

    roll = analyze(back.t_s, back.rr_ms, rolling=True, correction=False,
                   gap_before=back.gap_before).rolling  # fmt: skip
    assert roll is not None
    la = LiveAnalyzer(correction=False)
    steps = roll.step_t_s
    live_score = np.full(steps.size, np.nan)
    live_rmssd = np.full(steps.size, np.nan)
    live_quality = np.full(steps.size, np.nan)
    j = 0
    for i, (ti, ri) in enumerate(zip(t.tolist(), rr.tolist(), strict=True)):
        if i == lost:
            # The daemon's beat timer finds the gap when this beat arrives, before the steps
            # this beat is past are taken.
            la.gap(gap_start)
        while j < steps.size and steps[j] < ti:
            snap = la.indices(float(steps[j]))
            live_score[j], live_rmssd[j] = snap.score, snap.td.rmssd_ms
            live_quality[j] = snap.quality
            j += 1
        la.push_beat(ti, ri)
    # Quality equal at every step, the one inside the gap (330 s) too: the daemon's windows
    # were empty there (it was 0.99, the window before the gap).
    assert steps[(steps > gap_start) & (steps < t[lost])].tolist() == [330.0]
    np.testing.assert_allclose(roll.step_quality[:j], live_quality[:j], rtol=1e-9, atol=1e-12)
    after = (steps > gap_start) & (steps < gap_start + 120.0)
    off_none, live_none = np.isnan(roll.step_score[after]), np.isnan(live_score[after])
    assert live_none.sum() >= 10  # the minute without a score
    # No score wherever live had none, and one wherever it had one.
    np.testing.assert_array_equal(off_none, live_none)
    # RMSSD of the window up to each step (the beat rows'), from the first beat after the gap
    back_in = after & (steps >= t[lost])
    idx = np.searchsorted(roll.beat_t_s, steps[back_in], side="right") - 1
    np.testing.assert_allclose(roll.beat_rmssd_ms[idx], live_rmssd[back_in], rtol=1e-9)

    # The command reads the gap row too (its default correction lags nothing offline).
    rolling = tmp_path / "r.csv"
    assert _settle(str(export), "--json", "--rolling", str(rolling)).returncode == 0
    cmd_steps = [r for r in csv.DictReader(rolling.open()) if r["kind"] == "step"]
    in_gap = [r for r in cmd_steps if gap_start < float(r["t_s"]) < gap_start + 60.0]
    assert in_gap and all(r["settling_score"] == "" for r in in_gap)

    # Without the gap row the same beats are bridged, as before.
    bridged = analyze(t, rr, rolling=True, correction=False).rolling
    assert bridged is not None
    assert np.isfinite(bridged.step_score[after]).all()


def test_rolling_has_no_settling_score_on_an_unusable_rhythm(tmp_path: Path) -> None:
    """The Polar H10 recording with ~30 % premature beats is unusable: live shows no score
    for it, so neither does --rolling (it used to print 94 scores)."""
    rolling = tmp_path / "rolling.csv"
    p = _settle(str(DATA / "polar_h10_pvc_device.csv"), "--json", "--rolling", str(rolling))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["usable"] is False
    steps = [r for r in csv.DictReader(rolling.open()) if r["kind"] == "step"]
    assert len(steps) > 100
    assert all(r["settling_score"] == "" for r in steps)
    assert sum(r["coherence"] != "" for r in steps) > 100  # the spectra are still there


def test_rolling_quality_is_the_one_live_shows(tmp_path: Path) -> None:
    """--rolling writes live's signal quality every 5 s (the flagged share of the last 120
    beats and the window's coverage; an RR file has no skin-contact term): across a 30 s
    gap it equals live's exactly without correction, and falls while the window refills.
    The daemon finds such a gap when the beat after it arrives and restarts its windows
    before it takes the steps inside the gap (its beat timer: "beats missing"), so those
    steps have quality 0."""
    from processing.live import LiveAnalyzer
    from processing.offline import analyze
    from sensors.readers import read_rr_file

    rec = read_rr_file(DATA / "bartels_rest_supine.csv")
    t, rr = rec.t_s.copy(), rec.rr_ms.copy()
    t[200:] += 30.0
    roll = analyze(t, rr, rolling=True, correction=False).rolling
    assert roll is not None
    la = LiveAnalyzer(correction=False)
    live = np.full(roll.step_t_s.size, np.nan)
    j = 0
    for k, (ti, ri) in enumerate(zip(t.tolist(), rr.tolist(), strict=True)):
        if k == 200:
            la.gap(t[199])
        while j < roll.step_t_s.size and roll.step_t_s[j] < ti:
            live[j] = la.indices(float(roll.step_t_s[j])).quality
            j += 1
        la.push_beat(ti, ri)
    np.testing.assert_allclose(roll.step_quality, live, rtol=1e-9, atol=1e-12)
    after = (roll.step_t_s > t[200]) & (roll.step_t_s < t[200] + 30.0)
    assert after.any() and np.all(roll.step_quality[after] < 0.6)
    assert float(np.median(roll.step_quality)) > 0.9
    # The CLI writes it as the last column of the step rows.
    f, rolling = tmp_path / "gap.csv", tmp_path / "rolling.csv"
    rows = zip(t.tolist(), rr.tolist(), strict=True)
    f.write_text("t_s,rr_ms\n" + "".join(f"{a!r},{b!r}\n" for a, b in rows))
    p = _settle(str(f), "--no-correction", "--rolling", str(rolling))
    assert p.returncode == 0, p.stderr
    steps = [r for r in csv.DictReader(rolling.open()) if r["kind"] == "step"]
    written = np.array([float(r["quality"]) for r in steps])
    np.testing.assert_allclose(written, roll.step_quality, rtol=1e-5)


def test_an_output_that_appears_during_the_analysis_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outputs are checked before the recording is read; a file that appears at --rolling
    while the analysis runs (a second run, the user) is not replaced without --force."""
    import settle.analyze as sa

    rolling = tmp_path / "rolling.csv"
    real = sa.analyze

    def slow_analyze(*args: object, **kwargs: object) -> object:
        rolling.write_text("someone else's\n")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sa, "analyze", slow_analyze)
    with pytest.raises(sa.InputFileError, match="file exists"):
        sa.run_analyze(
            DATA / "pyhrv_nni_short.csv",
            as_json=True,
            correction=True,
            beats=None,
            rolling=rolling,
            window_s=60.0,
        )
    assert rolling.read_text() == "someone else's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rolling.csv"]


@pytest.mark.parametrize("t0", [100_000.0, 1.7e9])
def test_beats_and_rolling_keep_the_beat_times_and_read_back(tmp_path: Path, t0: float) -> None:
    """Times were written with `%.6g`: from 100 000 s on (seconds since midnight of a long
    recording, epoch times) in whole seconds — beats collided — and epoch times as
    `1.7e+09`, so Settle could not read its own --beats file. Times now keep their µs, the
    RR their digits, and the --beats file (an implausible interval and all) analyses as the
    recording did and writes itself again."""
    rng = np.random.default_rng(5)
    rr = np.round(850 + rng.normal(0, 30, 400))
    # Beyond twice rr_max_ms (an interval up to that may be split as missed beats): an
    # empty rr_ms cell in --beats.
    rr[200] = 4500.0
    t = t0 + np.cumsum(rr) / 1000.0
    rec = tmp_path / "rec.csv"
    rec.write_text(
        "t_s,rr_ms\n" + "".join(f"{a:.3f},{b:.0f}\n" for a, b in zip(t, rr, strict=True))
    )
    beats, rolling, again = tmp_path / "b.csv", tmp_path / "r.csv", tmp_path / "b2.csv"
    doc = _json(str(rec), "--beats", str(beats), "--rolling", str(rolling))
    for path in (beats, rolling):
        assert "e+" not in path.read_text()
    rows = list(csv.DictReader(beats.open()))
    np.testing.assert_allclose([float(r["t_s"]) for r in rows], t, rtol=0, atol=1e-6)
    assert [float(r["rr_raw_ms"]) for r in rows] == rr.tolist()
    per_beat = [float(r["t_s"]) for r in csv.DictReader(rolling.open()) if r["kind"] == "beat"]
    assert len(set(per_beat)) == len(per_beat) == len(rows) - 1
    assert _json(str(beats), "--beats", str(again)) == doc
    assert again.read_text() == beats.read_text()


def test_a_sprinting_heart_is_analysed_and_an_unusable_file_says_why(tmp_path: Path) -> None:
    """220–240 beats/min (RR 250–273 ms) is a sprinting heart, not an artefact: the default
    `rr_min_ms` was 273 ms, so a 220 beats/min recording was 100 % "implausible" — and the
    table then said its rhythm was "not sinus enough to interpret". The note now gives the
    analysis's own reason."""
    rng = np.random.default_rng(2)
    fast = tmp_path / "sprint.txt"
    fast.write_text("".join(f"{x:.1f}\n" for x in 262.0 + rng.normal(0, 3, 600)))
    doc = _json(str(fast))
    assert doc["usable"] is True
    assert doc["correction"]["by_class"]["implausible"] == 0
    assert doc["summary"]["mean_hr_bpm"] == pytest.approx(229, abs=2)
    slow = tmp_path / "too_fast.txt"
    slow.write_text("200\n" * 60)  # 300 beats/min: outside 250–2000 ms
    human = _settle(str(slow))
    assert human.returncode == 0
    assert "not sinus" not in human.stdout
    note = human.stdout.rstrip().splitlines()[-1]
    assert note.startswith("Not usable (100 % of intervals lie outside 250–2000 ms")
    assert note.endswith("do not read them as heart-rate variability.")


def test_an_empty_path_is_named_as_such() -> None:
    """`settle analyze ""` said ".: is a directory, not an RR file" (Path("") is ".")."""
    line = _one_line_error(_settle(""), 2)
    assert "path is empty" in line and "directory" not in line
    from sensors.readers import read_rr_file
    from settle.errors import InputFileError

    with pytest.raises(InputFileError, match="path is empty"):
        read_rr_file("")


def test_a_slow_heart_says_where_the_hf_band_was_cut(tmp_path: Path) -> None:
    """At 36 beats/min the beats carry nothing above 0.3 Hz: HF is counted up to there only
    (it read +17 % from spline images above it), and the output says so."""
    t, rr = [0.0], []
    while t[-1] < 300.0:
        rr.append(1667.0 + 40.0 * math.sin(2 * math.pi * 0.25 * t[-1]))
        t.append(t[-1] + rr[-1] / 1000.0)
    f = tmp_path / "slow.csv"
    f.write_text(
        "t_s,rr_ms\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(t[1:], rr, strict=True))
    )
    s = _json(str(f), "--no-correction")["summary"]
    assert s["nyquist_hz"] == pytest.approx(0.3, abs=0.001)
    assert s["hf_ms2"] == pytest.approx(800.0, rel=0.03)
    human = _settle(str(f), "--no-correction")
    assert "hf_ms2 covers 0.15–0.3 Hz only: at 36 beats/min" in human.stdout
    assert "covers" not in _settle(str(DATA / "pyhrv_nni_short.csv")).stdout


@pytest.mark.parametrize("pct", [1, 2, 5])
def test_missed_beats_at_a_slow_heart_are_split_not_gaps(pct: int) -> None:
    """At 57 beats/min one missed beat makes an interval over 2000 ms, the plausible maximum:
    it was left out as implausible, a gap at every missed beat, and the spectrum used only
    the longest unbroken stretch (LF +79 % at 1 %, VLF gone at 5 %). The correction now
    splits each of them, and the summary reads as the clean recording's."""
    art = DATA / "artifacts"
    name = f"bartels_rest_supine__missed__{pct}pct.csv"
    labels = list(csv.DictReader((art / name).open()))
    injected = sum(1 for r in labels if r["label"] == "missed")
    over = sum(1 for r in labels if r["label"] == "missed" and float(r["rr_ms"]) > 2000.0)
    assert over > injected // 2  # most of them above the plausible maximum (9/9, 18/18, 41/46)
    clean, doc = _json(str(art / "bartels_rest_supine__clean.csv")), _json(str(art / name))
    assert doc["correction"]["by_class"]["missed"] == injected
    assert doc["correction"]["by_class"]["implausible"] == 0
    for key, tol in (("lf_ms2", 0.1), ("hf_ms2", 0.1), ("vlf_ms2", 0.1), ("rmssd_ms", 0.05)):
        assert doc["summary"][key] == pytest.approx(clean["summary"][key], rel=tol), key


@pytest.mark.parametrize("pct", [1, 2, 5])
def test_spurious_beats_that_leave_a_short_piece_are_merged_not_gaps(
    pct: int, tmp_path: Path
) -> None:
    """A spurious beat early or late in an interval leaves a piece under 250 ms, the plausible
    minimum: it was left out as implausible (16 / 23 / 72 of the labelled set's spurious beats
    at 1 / 2 / 5 %), the correction restarted there and took the other piece for an ectopic
    or long beat, and the spectrum used only the longest unbroken stretches (at 5 %: LF +40 %,
    HF −28 %, VLF gone). The correction now merges those pieces too, and the summary reads
    as the clean recording's."""
    import gzip

    art = DATA / "artifacts"

    def unpacked(name: str) -> Path:
        out = tmp_path / name.removesuffix(".gz")
        out.write_bytes(gzip.decompress((art / name).read_bytes()))
        return out

    rec = unpacked(f"pyhrv_nni_long__extra__{pct}pct.csv.gz")
    labels = list(csv.DictReader(rec.open()))
    injected = sum(1 for r in labels if r["label"] == "extra")
    short = sum(1 for r in labels if r["label"] == "extra" and float(r["rr_ms"]) < 250.0)
    assert short >= 10  # the pieces this is about (16 / 23 / 72)
    clean, doc = _json(str(unpacked("pyhrv_nni_long__clean.csv.gz"))), _json(str(rec))
    by_class = doc["correction"]["by_class"]
    assert by_class["implausible"] == 0
    assert by_class["extra"] >= 0.95 * injected  # both pieces of each, as merged
    for key, tol in (("lf_ms2", 0.05), ("hf_ms2", 0.05), ("vlf_ms2", 0.05), ("rmssd_ms", 0.05)):
        assert doc["summary"][key] == pytest.approx(clean["summary"][key], rel=tol), key


@pytest.mark.parametrize(
    ("beat_ms", "odd_ms", "not_class"),
    [
        (800.0, 120.0, "extra"),  # 900 + 120 or 120 + 800 makes no beat among 800 ms beats
        (1060.0, 2650.0, "missed"),  # 2.5 beats: no whole number of missed beats
    ],
)
def test_an_out_of_range_interval_the_correction_does_not_repair_is_left_out(
    tmp_path: Path, beat_ms: float, odd_ms: float, not_class: str
) -> None:
    """An interval under rr_min_ms that is no spurious beat's piece, or over rr_max_ms that
    is no whole number of missed beats, is neither merged nor split: it stays implausible (a
    gap), as any interval out of the plausible range, and the beats around it are analysed
    as they are."""
    rng = np.random.default_rng(4)
    rr = beat_ms + 25.0 * np.sin(np.arange(400) / 4.0) + rng.normal(0.0, 5.0, 400)
    rr[200] = odd_ms
    rec = tmp_path / "odd.txt"
    rec.write_text("\n".join(f"{v:.1f}" for v in rr) + "\n")
    beats = tmp_path / "b.csv"
    doc = _json(str(rec), "--beats", str(beats))
    assert doc["correction"]["by_class"]["implausible"] == 1
    assert doc["correction"]["by_class"][not_class] == 0
    row = [r for r in csv.DictReader(beats.open()) if r["rr_raw_ms"] == f"{odd_ms:g}"]
    assert len(row) == 1 and row[0]["class"] == "implausible" and row[0]["rr_ms"] == ""


@pytest.mark.parametrize("bad", ["nan", "inf", "length"])
def test_analyze_refuses_values_a_reader_would_not_give(bad: str) -> None:
    """`processing.offline.analyze` called from Python with a NaN or an infinite interval
    (the file readers refuse them) failed deep inside with "operands could not be broadcast
    together"; times and intervals of different lengths likewise. Now one plain error."""
    from processing.offline import analyze

    rr = [800.0 + 20.0 * math.sin(i / 3.0) for i in range(60)]
    t = (np.cumsum(rr) / 1000.0).tolist()
    if bad == "length":
        t = t[:-1]
    else:
        rr[30] = float(bad)
    with pytest.raises(ValueError, match=r"^t_s and rr_ms must be"):
        analyze(t, rr)


def test_a_beats_file_resaved_by_a_spreadsheet_is_analysed_from_its_raw_intervals(
    tmp_path: Path,
) -> None:
    """A `--beats` file re-saved with ';' and a decimal comma was read from its corrected
    `rr_ms` column as a table of one RR column: the 46 missed and 10 ectopic beats of the
    recording vanished (every interval already corrected), and its times were dropped. Now
    it is read as the `--beats` file: its raw intervals, corrected afresh."""
    rec = DATA / "artifacts" / "bartels_rest_supine__missed__5pct.csv"
    beats = tmp_path / "beats.csv"
    assert _json(str(rec), "--beats", str(beats))["correction"]["by_class"]["missed"] == 46
    want = _json(str(beats))  # the file read as written
    assert want["correction"]["by_class"]["missed"] == 46
    resaved = tmp_path / "beats_semicolon.csv"
    with beats.open(newline="") as src, resaved.open("w", newline="") as dst:
        writer = csv.writer(dst, delimiter=";", lineterminator="\r\n")
        for row in csv.reader(src):
            writer.writerow([c.replace(".", ",") for c in row])
    assert resaved.read_text().startswith("t_s;rr_raw_ms;rr_ms;class\n1,114000;1114;")
    assert _json(str(resaved)) == want


def test_by_class_missed_counts_split_intervals_not_half_the_missed_rows(tmp_path: Path) -> None:
    """The README said `by_class.missed` is "half the `missed` rows": true of a split in two
    only. 3000 ms between beats 800 ms apart is split in four: four `missed` rows, one
    interval as read (the row that keeps its `rr_raw_ms`), and `by_class.missed` is 1."""
    rec, beats = tmp_path / "split.txt", tmp_path / "beats.csv"
    rec.write_text("800\n3000\n800\n800\n")
    doc = _json(str(rec), "--beats", str(beats))
    missed = [r for r in csv.DictReader(beats.open()) if r["class"] == "missed"]
    assert len(missed) == 4
    assert [r["rr_raw_ms"] for r in missed] == ["", "", "", "3000"]
    assert doc["correction"]["by_class"]["missed"] == 1
