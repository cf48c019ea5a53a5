"""``settle analyze``: offline analysis of one RR recording (I/O around :mod:`processing.offline`).

JSON (``--json``, schema ``v: 1``)::

    {"v": 1, "n_beats", "duration_s", "usable", "reason",
     "correction": {"enabled", "n_flagged", "by_class": {class: count}},
     "summary": {"mean_rr_ms", "mean_hr_bpm", "sdnn_ms", "rmssd_ms", "ln_rmssd", "pnn50_pct",
                 "sd1_ms", "sd2_ms", "dfa_alpha1", "vlf_ms2", "lf_ms2", "hf_ms2", "lf_hf",
                 "lf_nu", "hf_nu", "peak_hz", "resp_rate_bpm", "coherence", "nyquist_hz",
                 "spectrum"}}

``spectrum`` (added in schema 1) is the method of the whole-recording spectrum, ``welch``
(default) or ``lomb`` (``--spectrum``): the band powers of a gappy recording differ between
them, and a file of results should say which it holds.
``nyquist_hz`` (added in schema 1, as fields are) is the beats' own Nyquist frequency
``1/(2·mean RR)``: no power above it is counted, so below 0.4 Hz (under 48 beats/min) ``hf_ms2``
covers 0.15 Hz up to it only (:func:`hf_truncated_at`).

Non-finite numbers are written as ``null``. ``--beats`` writes ``t_s,rr_raw_ms,rr_ms,class``
(empty cell for a missing value); ``--rolling`` writes one row per beat (time domain of the
``--window`` seconds ending at it) and one row every ``processing.indices_every_s`` (5 s by
default; spectra, coherence, settling score, signal quality), distinguished by the ``kind``
column. Times (``t_s``) are written with six
decimals and never an exponent (µs; at epoch times float64 itself holds ≈ 0.2 µs), intervals
(``rr_raw_ms``, ``rr_ms``) with ten significant digits, so that the file reads back as it was
analysed; every other value with six significant digits (``%.6g``).

Output files are checked before the recording is read: an existing file is replaced only with
``--force``, and never the input recording itself (nor may ``--beats`` and ``--rolling`` name
one file). Each is written to a temporary file beside it and renamed into place (mode 0600),
so an interrupted run leaves no half file.
"""

from __future__ import annotations

import errno
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import numpy.typing as npt

from processing.live import BASELINE_MIN_SAMPLES
from processing.offline import Analysis, analyze
from processing.spectral import BANDS_HZ, Method
from sensors.readers import read_rr_file
from sessions.files import (
    DB_SIBLINGS,
    ExportError,
    name_too_long,
    not_replaceable,
    sqlite_database_of,
    write_all,
)
from settle.config import WINDOW_RANGE_S
from settle.errors import InputFileError, SettleError, shown

__all__ = [
    "AnalyzeUsageError",
    "analysis_json",
    "check_outputs",
    "hf_truncated_at",
    "run_analyze",
]


class AnalyzeUsageError(SettleError):
    """An option of ``settle analyze`` is unusable (``settle analyze`` exits with code 2)."""


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def analysis_json(a: Analysis, correction: bool, spectrum: Method = "welch") -> dict[str, Any]:
    """The ``--json`` object (schema version 1); ``spectrum``: the whole-recording
    spectrum's method, said in the object (the band powers differ between the two)."""
    td, sp = a.td, a.spectral
    return {
        "v": 1,
        "n_beats": a.n_beats,
        "duration_s": _num(round(a.duration_s, 6)),  # 0.44999999999999996 read badly
        "usable": a.usable,
        "reason": a.reason,
        "correction": {
            "enabled": correction,
            "n_flagged": a.beats.n_flagged,
            "by_class": a.beats.by_class(),
        },
        "summary": {
            "mean_rr_ms": _num(td.mean_rr_ms),
            "mean_hr_bpm": _num(td.hr_bpm),
            "sdnn_ms": _num(td.sdnn_ms),
            "rmssd_ms": _num(td.rmssd_ms),
            "ln_rmssd": _num(td.ln_rmssd),
            "pnn50_pct": _num(td.pnn50_pct),
            "sd1_ms": _num(a.sd1_ms),
            "sd2_ms": _num(a.sd2_ms),
            "dfa_alpha1": _num(a.dfa_alpha1),
            "vlf_ms2": _num(sp.vlf_ms2),
            "lf_ms2": _num(sp.lf_ms2),
            "hf_ms2": _num(sp.hf_ms2),
            "lf_hf": _num(sp.lf_hf),
            "lf_nu": _num(sp.lf_nu),
            "hf_nu": _num(sp.hf_nu),
            "peak_hz": _num(sp.peak_hz),
            "resp_rate_bpm": _num(sp.resp_rate_bpm),
            "coherence": _num(a.coherence),
            "nyquist_hz": _num(sp.nyquist_hz),
            "spectrum": spectrum,
        },
    }


def hf_truncated_at(a: Analysis) -> float | None:
    """The frequency (Hz) at which the whole-recording HF band was cut because the beats
    cannot carry faster rhythms (their Nyquist frequency below 0.4 Hz), or None."""
    nyq = a.spectral.nyquist_hz
    hf_hi = BANDS_HZ["hf"][1]
    if math.isfinite(nyq) and nyq < hf_hi and math.isfinite(a.spectral.hf_ms2):
        return float(nyq)
    return None


TIME_FMT = "%.6f"
"""Beat and step times, s: fixed µs decimals, never an exponent. ``%.6g`` wrote t ≥ 100 000 s
in whole seconds (beats collided) and epoch times as ``1.7e+09``, which Settle could not read
back."""
RR_FMT = "%.10g"
"""Intervals, ms: ten significant digits (sub-ns; no exponent for the 0.977–64 000 ms a
recording may hold)."""
VALUE_FMT = "%.6g"
"""Every other value: six significant digits."""


def _csv_rows(
    cols: Sequence[npt.NDArray[np.float64] | None],
    prefix: str = "",
    text: Sequence[str] | None = None,
    fmts: Sequence[str] | None = None,
) -> str:
    """CSV lines, one per row: ``prefix``, then each column's value in its format of ``fmts``
    (default :data:`VALUE_FMT`; an empty cell for ``None`` columns and non-finite values),
    then the ``text`` column's cell if given.

    Runs of rows without a missing value are formatted by one ``%`` over the run (2–3× faster
    than a cell at a time over 100 000 rows); a row with one is formatted cell by cell.
    """
    present = [c for c in cols if c is not None]
    n = len(text) if text is not None else present[0].size if present else 0
    tail = ",%s\n" if text is not None else "\n"
    formats = list(fmts) if fmts is not None else [VALUE_FMT] * len(cols)
    if len(formats) != len(cols):
        raise ValueError("one format per column")
    tmpl = (
        prefix
        + ",".join(f if c is not None else "" for c, f in zip(cols, formats, strict=True))
        + tail
    )
    m = np.column_stack(present) if present else np.empty((n, 0))
    bad = np.flatnonzero(~np.isfinite(m).all(axis=1)).tolist()
    if text is not None:
        rows = np.empty((n, m.shape[1] + 1), dtype=object)
        rows[:, :-1] = m
        rows[:, -1] = text
    else:
        rows = m
    out: list[str] = []
    start = 0
    for stop in [*bad, n]:
        if stop > start:
            out.append((tmpl * (stop - start)) % tuple(rows[start:stop].ravel().tolist()))
        if stop < n:
            vals = iter(rows[stop].tolist())
            cells = []
            for c, f in zip(cols, formats, strict=True):
                v = next(vals) if c is not None else math.nan
                cells.append(f % v if math.isfinite(v) else "")
            out.append(prefix + ",".join(cells) + (tail % next(vals) if text else "\n"))
        start = stop + 1
    return "".join(out)


def _write_all(files: list[tuple[Path, str]], *, replace: bool) -> None:
    """Write the outputs through :func:`sessions.files.write_all`: all or none (a beats file
    beside an old or missing rolling file looks like a complete pair and is not), each via a
    temporary file beside it (mode 0600; an interrupted run leaves no half file; without
    ``replace`` a file that appeared since :func:`check_outputs` is left alone). Its errors
    become :class:`InputFileError` (``settle analyze`` exits with code 1)."""
    try:
        write_all(files, replace=replace)
    except ExportError as exc:
        raise InputFileError(str(exc.path), exc.reason) from None


def _real(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same resolved path, or (hard links) the
    same inode."""
    ra, rb = _real(a), _real(b)
    if ra is not None and ra == rb:
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_outputs(file: Path, outputs: dict[str, Path | None], *, force: bool) -> None:
    """Refuse, before anything is read or written, output files (``{"--beats": path}``) that
    are the input ``file`` (always), name one file twice, are directories, lie under a file,
    have a name longer than the file system takes, or exist (unless ``force``):
    :class:`AnalyzeUsageError`, exit code 2, as ``settle export`` refuses them. A missing
    directory is :class:`InputFileError` (exit code 1)."""
    named = [(opt, p) for opt, p in outputs.items() if p is not None]
    for i, (opt, p) in enumerate(named):
        if "\x00" in str(p):
            raise AnalyzeUsageError(f"{opt}: the path contains a NUL byte")
        # Before anything asks the system about the path, which fails on such a name:
        # "cannot write: File name too long", exit 1, where export says this, exit 2.
        if (too_long := name_too_long(p)) is not None:
            raise AnalyzeUsageError(f"{opt} {p}: {too_long}")
        if _same_file(p, file):
            raise AnalyzeUsageError(f"{opt} {p}: refusing to overwrite the input recording")
        for other_opt, other in named[:i]:
            if _same_file(p, other) or _real(p) == _real(other):
                raise AnalyzeUsageError(f"{other_opt} and {opt} name the same file {p}")
        try:
            why = not_replaceable(p)
            if why is not None:
                raise AnalyzeUsageError(f"{opt} {p}: {why}")
            exists = os.path.lexists(p)
            parent_ok = p.parent.is_dir()
        except OSError as exc:  # e.g. a directory without permission
            if exc.errno == errno.ENAMETOOLONG:  # a directory on the way no system takes
                raise InputFileError(
                    str(p), f"cannot write: directory {p.parent} does not exist"
                ) from None
            raise InputFileError(str(p), f"cannot write: {exc.strerror or exc}") from None
        if exists and not force:
            raise AnalyzeUsageError(f"{opt} {p}: file exists (use --force to replace it)")
        db = sqlite_database_of(p) if exists or p.name.endswith(DB_SIBLINGS) else None
        if db is not None:
            # Not even with --force: `--beats settle.db --force` replaced the session store
            # with a CSV (every session lost), `--rolling settle.db-wal --force` its WAL.
            raise AnalyzeUsageError(
                f"{opt} {p}: refusing to write onto the SQLite database {db} (a session store?); "
                "choose another file"
            )
        if not parent_ok:
            if os.path.exists(p.parent):
                # A file where a directory is wanted: a path of the wrong kind (exit code 2,
                # docs/operations.md), as `settle report --out FILE`; it was exit code 1.
                raise AnalyzeUsageError(f"{opt} {p}: {p.parent} is not a directory")
            raise InputFileError(str(p), f"cannot write: directory {p.parent} does not exist")


def beats_csv(a: Analysis) -> str:
    """The ``--beats`` file: ``t_s,rr_raw_ms,rr_ms,class`` per beat."""
    b = a.beats
    body = _csv_rows(
        [b.t_s, b.rr_raw_ms, b.rr_ms], text=b.classes(), fmts=[TIME_FMT, RR_FMT, RR_FMT]
    )
    return "t_s,rr_raw_ms,rr_ms,class\n" + body


def rolling_csv(a: Analysis) -> str:
    """The ``--rolling`` file: a ``beat`` row per analysed beat, a ``step`` row per step."""
    r = a.rolling
    assert r is not None
    none: list[npt.NDArray[np.float64] | None] = [None] * 6
    beat_cols: list[npt.NDArray[np.float64] | None] = [r.beat_t_s, r.beat_mean_rr_ms]
    beat_cols += [r.beat_hr_bpm, r.beat_sdnn_ms, r.beat_rmssd_ms, r.beat_pnn50_pct, *none, None]
    step_cols = [r.step_t_s, *none[:5], r.step_lf_ms2, r.step_hf_ms2, r.step_lf_hf]
    step_cols += [r.step_resp_rate_bpm, r.step_coherence, r.step_score, r.step_quality]
    fmts = [TIME_FMT] + [VALUE_FMT] * 12
    return (
        "kind,t_s,mean_rr_ms,hr_bpm,sdnn_ms,rmssd_ms,pnn50_pct,lf_ms2,hf_ms2,lf_hf,"
        "resp_rate_bpm,coherence,settling_score,quality\n"
        + _csv_rows(beat_cols, prefix="beat,", fmts=fmts)
        + _csv_rows(step_cols, prefix="step,", fmts=fmts)
    )


def score_baseline_line(a: Analysis, every_s: float = 5.0) -> str | None:
    """One line saying what the ``--rolling`` settling score is computed against, or None
    without rolling series."""
    r = a.rolling
    if r is None:
        return None
    if r.rest_s is not None and r.baseline_marked:
        return f"settling score: against the marked rest period {r.rest_s[0]:g}–{r.rest_s[1]:g} s"
    said = ""
    if r.rest_s is not None:
        said = (
            f"the marked rest period {r.rest_s[0]:g}–{r.rest_s[1]:g} s holds fewer than "
            f"{BASELINE_MIN_SAMPLES} usable steps or spans less than "
            f"{BASELINE_MIN_SAMPLES * every_s:g} s: discarded, as live; "
        )
    if r.baseline_span_s is None:
        return f"settling score: {said}none — no baseline completed (too few usable steps)"
    lo, hi = r.baseline_span_s
    return f"settling score: {said}against the automatic baseline, steps {lo:g}–{hi:g} s"


def run_analyze(
    file: Path,
    *,
    as_json: bool,
    correction: bool,
    beats: Path | None,
    rolling: Path | None,
    window_s: float,
    force: bool = False,
    baseline_s: float = 120.0,
    rr_range_ms: tuple[float, float] = (250.0, 2000.0),
    spectrum: str = "welch",
    step_s: float = 5.0,
    rest_s: tuple[float, float] | None = None,
    auto_baseline: bool = False,
) -> tuple[Analysis, dict[str, Any]]:
    """Read, analyse and write the requested files; returns the analysis and its JSON.
    ``force``: replace existing output files (never ``file`` itself). ``baseline_s`` and
    ``rr_range_ms`` and ``step_s`` as ``processing.baseline_s``, ``rr_min_ms``/``rr_max_ms``
    and ``indices_every_s``;
    ``spectrum``: the whole-recording spectrum's method (``welch`` or ``lomb``).
    The settling score's baseline: ``rest_s`` (start, stop) s, a rest period as ``--baseline``
    names it; else the marked rest period a Settle export holds (its ``baseline`` row), as
    the daemon and the report scored against it; else, or with ``auto_baseline``, the
    automatic one (the first ``baseline_s``)."""
    lo, hi = WINDOW_RANGE_S
    if not (math.isfinite(window_s) and lo <= window_s <= hi):
        # As processing.window_s in the config: 1e-9 s left every window empty and 1e9 s
        # made the quality column (beats covered / window) read 3e-7 on a clean file.
        raise AnalyzeUsageError(
            f"--window must be {lo:g}–{hi:g} seconds (as processing.window_s), got {window_s:.10g}"
        )
    if spectrum not in get_args(Method):
        raise AnalyzeUsageError(f"--spectrum must be welch or lomb, got {shown(spectrum)}")
    method = cast(Method, spectrum)
    check_outputs(file, {"--beats": beats, "--rolling": rolling}, force=force)
    rec = read_rr_file(file)
    if rest_s is not None and rest_s[0] > float(rec.t_s[-1]):
        raise AnalyzeUsageError(
            f"--baseline {rest_s[0]:g}:{rest_s[1]:g} starts after the recording's last beat "
            f"({float(rec.t_s[-1]):.1f} s)"
        )
    rest = None if auto_baseline else rest_s if rest_s is not None else rec.rest_s
    progress = None
    on_progress = None
    write_share = {"beats": 0.08, "rolling": 0.15}  # of the analysis's time (24 h file)
    if sys.stderr.isatty() and rec.rr_ms.size > 20_000:
        # On stderr (a Progress draws on stdout by default: with --json > file it showed
        # nothing): a bar, the stage under way and the time so far.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        progress.start()
        total = 1.0 + write_share["beats"] * (beats is not None)
        total += write_share["rolling"] * (rolling is not None)
        what = f"analysing {rec.rr_ms.size} beats"
        task = progress.add_task(what, total=total)
        bar = progress

        def on_progress(stage: str, done: float) -> None:
            bar.update(task, description=f"{what}: {stage}", completed=done)

    try:
        a = analyze(
            rec.t_s,
            rec.rr_ms,
            correction=correction,
            window_s=window_s,
            rolling=rolling is not None,
            baseline_s=baseline_s,
            rr_min_ms=rr_range_ms[0],
            rr_max_ms=rr_range_ms[1],
            warmup=rec.warmup,
            gap_before=rec.gap_before,
            notification_start=rec.notification_start,
            spectrum=method,
            on_progress=on_progress,
            step_s=step_s,
            rest=rest,
        )
        done = 1.0
        outputs: list[tuple[Path, str]] = []
        for path, key, text in ((beats, "beats", beats_csv), (rolling, "rolling", rolling_csv)):
            if path is None:
                continue
            if on_progress is not None:
                on_progress(f"writing {path.name}", done)
            outputs.append((path, text(a)))
            done += write_share[key]
        _write_all(outputs, replace=force)
        if on_progress is not None:
            on_progress("done", done)
    finally:
        if progress is not None:
            progress.stop()
    return a, analysis_json(a, correction, method)
