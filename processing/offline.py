"""Whole-recording analysis (batch, vectorised): the engine of ``settle analyze``.

Same conventions as the live path (:mod:`processing.live`): artefact correction
(:func:`processing.artefacts.correct_rr`), 60 s rolling time domain at every beat (window
``(t − window_s, t]``), spectra of the last 120 s and coherence of the last 64 s every 5 s
(the daemon's ``indices_every_s``; ``step_s``),
and the settling score against the first 120 s. For speed the whole recording is resampled
once (natural cubic spline at 4 Hz) and windows are cut from that grid, whereas the live path
splines each window; the two agree closely but not bit for bit.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from processing.artefacts import (
    BEAT_CLASSES,
    CorrectedSeries,
    collect,
    correct_rr,
    may_be_repaired,
)
from processing.indices import SPREAD_FLOORS
from processing.live import (
    BASELINE_MIN_SAMPLES,
    IRREGULAR_SHARE_MAX,
    JUMP_REL,
    JUMP_SHARE_MAX,
    MIN_WINDOW_BEATS,
    QUALITY_BEATS,
    SETTLING_K,
    jump_reason,
    not_sinus_reason,
)
from processing.nonlinear import dfa_alpha1, poincare
from processing.spectral import (
    COHERENCE_HALF_WIDTH_HZ,
    COHERENCE_PEAK_HZ,
    FS_HZ,
    INDICES_MAX_HZ,
    NO_POWER_MS2,
    Method,
    Spectral,
    lomb_frames,
    periodograms,
    resample_cubic,
    resp_peak_hz,
    spectral_runs,
    spline_power_gain,
)
from processing.timedomain import NN50_THRESHOLD_MS, TimeDomain, time_domain

__all__ = ["Analysis", "Rolling", "analyze", "gaps_in_times"]

FloatArray = npt.NDArray[np.float64]
STEP_S = 5.0
"""Default step of the rolling spectra, coherence and score, s (the daemon's
``processing.indices_every_s``)."""
COHERENCE_WINDOW_S = 64.0
SPECTRAL_WINDOW_S = 120.0
_IMPLAUSIBLE = np.int8(BEAT_CLASSES.index("implausible"))
_WARMUP = np.int8(BEAT_CLASSES.index("warmup"))
_NOT_ANALYSED = min(_IMPLAUSIBLE, _WARMUP)
"""Codes from here on are beats kept for provenance but not analysed."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rolling:
    """Rolling series. Per beat: ``beat_*``; every step (5 s by default): ``step_*``. Units as
    in the names."""

    beat_t_s: FloatArray
    beat_mean_rr_ms: FloatArray
    beat_hr_bpm: FloatArray
    beat_sdnn_ms: FloatArray
    beat_rmssd_ms: FloatArray
    beat_pnn50_pct: FloatArray
    step_t_s: FloatArray
    step_lf_ms2: FloatArray
    step_hf_ms2: FloatArray
    step_lf_hf: FloatArray
    step_resp_rate_bpm: FloatArray
    step_coherence: FloatArray
    step_score: FloatArray
    step_quality: FloatArray
    """Signal quality 0–1 as live computes it, without the skin-contact term."""
    baseline_span_s: tuple[float, float] | None = None
    """First and last step of the baseline the score is computed against, s; None when no
    baseline completed (no score)."""
    baseline_marked: bool = False
    """Whether that baseline is the marked rest period, else automatic."""
    rest_s: tuple[float, float] | None = None
    """The marked rest period given (``analyze(rest=…)``), used or (too short) discarded."""


@dataclasses.dataclass(frozen=True, slots=True)
class Analysis:
    """Result of :func:`analyze`."""

    n_beats: int
    """Raw beats in the recording."""
    duration_s: float
    """Last beat time − first beat time + first interval, s."""
    usable: bool
    """False when more than 20 % of beats needed correction (non-sinus rhythm)."""
    reason: str | None
    """Why not usable."""
    beats: CorrectedSeries
    """Per-beat provenance."""
    td: TimeDomain
    """Whole-recording time domain of the (corrected) beats."""
    sd1_ms: float
    """Poincaré SD1, ms."""
    sd2_ms: float
    """Poincaré SD2, ms."""
    dfa_alpha1: float
    """DFA α1 (4–16 beats)."""
    spectral: Spectral
    """Whole-recording spectrum (default method)."""
    coherence: float
    """Median coherence ratio of the 64 s windows at every step (5 s by default)."""
    rolling: Rolling | None
    """Rolling series when requested."""


def _rolling_td(
    t: FloatArray, rr: FloatArray, window_s: float, breaks: npt.NDArray[np.intp]
) -> tuple[
    FloatArray,
    FloatArray,
    FloatArray,
    FloatArray,
    FloatArray,
    npt.NDArray[np.intp],
    npt.NDArray[np.intp],
]:
    """Mean RR, HR, SDNN, RMSSD, pNN50 of the window ending at each beat, its beat count,
    and the index of the first beat of its unbroken run."""
    n = t.size
    start = np.searchsorted(t, t - window_s, side="right")
    # As live, a window starts afresh after a break: no beat or difference spans it.
    first = np.zeros(n, dtype=np.intp)
    first[breaks] = breaks
    run_start = np.maximum.accumulate(first) if n else first
    start = np.maximum(start, run_start)
    ref = float(rr.mean()) if n else 0.0
    d = rr - ref
    c1 = np.concatenate([[0.0], np.cumsum(d)])
    c2 = np.concatenate([[0.0], np.cumsum(d * d)])
    dd = np.diff(rr)
    cd2 = np.concatenate([[0.0, 0.0], np.cumsum(dd * dd)])
    cnn = np.concatenate([[0, 0], np.cumsum(np.abs(dd) > NN50_THRESHOLD_MS)])
    end = np.arange(1, n + 1)
    cnt = end - start
    s1 = c1[end] - c1[start]
    s2 = c2[end] - c2[start]
    mean = ref + s1 / cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.maximum(s2 - s1 * s1 / cnt, 0.0) / (cnt - 1)
        ndiff = cnt - 1
        d2 = cd2[end] - cd2[start + 1]
        rmssd = np.sqrt(d2 / ndiff)
        pnn = 100.0 * (cnn[end] - cnn[start + 1]) / ndiff
    var[cnt < 2] = np.nan
    return mean, 60000.0 / mean, np.sqrt(var), rmssd, pnn, cnt, run_start


def _classify(
    t: FloatArray,
    rr: FloatArray,
    correction: bool,
    rr_min_ms: float,
    rr_max_ms: float,
    warmup: npt.NDArray[np.bool_] | None = None,
    cut: npt.NDArray[np.bool_] | None = None,
) -> tuple[CorrectedSeries, npt.NDArray[np.intp]]:
    """Per-beat provenance: warm-up beats and implausible intervals marked, the runs between
    them (split again at gaps in the beat times) corrected one by one, or taken as they are.

    With correction, an interval above ``rr_max_ms`` but within
    :data:`~processing.artefacts.MISSED_SPAN` × ``rr_max_ms`` goes to the correction too: at
    a resting heart below ~57 beats/min one missed beat already makes more than 2000 ms, and
    left out it broke the series at every missed beat (the spectrum then used only the
    longest unbroken runs). If the correction splits it (``missed``), the parts are analysed;
    otherwise it is implausible after all and the correction starts afresh after it. Likewise
    an interval below ``rr_min_ms`` (a spurious beat early or late in an interval leaves a
    piece shorter than that): analysed if the correction merges it (``extra``), implausible
    otherwise. Either only right after a plausible interval
    (:func:`~processing.artefacts.may_be_repaired`), as in the daemon. The beats before such
    an interval are decided as live must decide them, before it is known whether it is
    repaired (without an over-long one in their look-ahead, with a short piece in it, which
    they may merge): the two paths give every beat the same class.
    A beat whose corrected interval falls outside the range after all (an interpolation
    between neighbours that noise corrupted) is implausible too, in place, as the daemon
    marks it.

    Also returns, per row, the raw beat whose arrival made the row final in the daemon
    (:func:`_classify_kept`)."""
    if t.size == 0:
        return collect([]), np.zeros(0, dtype=np.intp)
    warm = np.zeros(t.size, dtype=bool) if warmup is None else warmup
    plausible = (rr >= rr_min_ms) & (rr <= rr_max_ms) & ~warm
    none = np.zeros(t.size, dtype=bool)
    prev = np.concatenate([[np.nan], rr[:-1]])
    maybe = may_be_repaired(rr, prev, rr_min_ms, rr_max_ms) & ~warm if correction else none
    # The correction itself marks one it neither splits nor merges implausible and starts
    # afresh after it (ArtefactCorrector._left_out), as live.
    cs, released = _classify_kept(
        t, rr, correction, plausible | maybe, warm, cut, (rr_min_ms, rr_max_ms)
    )
    bad = (cs.rr_ms < rr_min_ms) | (cs.rr_ms > rr_max_ms)  # NaN (not analysed) compares False
    if bad.any():
        cs.rr_ms[bad] = np.nan
        cs.code[bad] = _IMPLAUSIBLE
    return cs, released


def _classify_kept(
    t: FloatArray,
    rr: FloatArray,
    correction: bool,
    keep: npt.NDArray[np.bool_],
    warm: npt.NDArray[np.bool_],
    cut: npt.NDArray[np.bool_] | None = None,
    rr_range_ms: tuple[float, float] = (0.0, math.inf),
) -> tuple[CorrectedSeries, npt.NDArray[np.intp]]:
    """:func:`_classify` for a given set of analysed beats (``keep``); the rest are marked
    warm-up or implausible. The correction also starts afresh at beats marked in ``cut``.

    Also returns, per row, the index of the raw beat whose arrival made the row final in the
    daemon: the beat itself without correction or when left out; with correction the one
    the look-ahead waited for, and for the beats still pending where a run ends, the beat
    that ends it (the daemon finalises them there: a gap, a cut or a left-out beat), or
    ``t.size`` (never, in the recording) at its end."""
    left_out = np.where(warm, _WARMUP, _IMPLAUSIBLE).astype(np.int8)
    parts: list[tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.int8]]] = []
    released: list[npt.NDArray[np.intp]] = []
    edges = np.flatnonzero(np.diff(keep.astype(np.int8)) != 0) + 1
    for a, b in itertools.pairwise([0, *edges.tolist(), t.size]):
        ts, rs = t[a:b], rr[a:b]
        if not keep[a]:
            parts.append((ts, rs, np.full(rs.size, np.nan), left_out[a:b]))
            released.append(np.arange(a, b, dtype=np.intp))
            continue
        cuts = [0, ts.size]
        if correction:
            at = gaps_in_times(ts, rs)
            if cut is not None:
                at = np.union1d(at, np.flatnonzero(cut[a + 1 : b]) + 1)
            cuts = [0, *at.tolist(), ts.size]
        for c, d in itertools.pairwise(cuts):
            if correction:
                counts: list[int] = []
                cs = correct_rr(
                    ts[c:d],
                    rs[c:d],
                    rr_min_ms=rr_range_ms[0],
                    rr_max_ms=rr_range_ms[1],
                    released=counts,
                )
                parts.append((cs.t_s, cs.rr_raw_ms, cs.rr_ms, cs.code))
                # Row r is final with the first push after which more than r rows were.
                by = np.searchsorted(np.asarray(counts), np.arange(cs.t_s.size), side="right")
                released.append((a + c + by).astype(np.intp))  # d - c (the flush): a + d
            else:
                parts.append((ts[c:d], rs[c:d], rs[c:d], np.zeros(d - c, np.int8)))
                released.append(np.arange(a + c, a + d, dtype=np.intp))
    t_s, raw, corr, code = (np.concatenate([p[k] for p in parts]) for k in range(4))
    cs = CorrectedSeries.from_rows(t_s, raw, corr, code.astype(np.int8))
    return cs, np.concatenate(released)


UNACCOUNTED_GAP_S = 5.0
"""Time between two beats beyond the later one's interval that makes a gap the daemon records
(its beat timer's ``max_lag_s``, sensors/timing.py: "beats missing (N s unaccounted)")."""


def gaps_in_times(t: FloatArray, rr: FloatArray) -> npt.NDArray[np.intp]:
    """Indices of beats that follow a gap: beat times further apart than 3× the interval."""
    return np.flatnonzero(np.diff(t) * 1000.0 > 3.0 * rr[1:] + 1.0) + 1


def _time_line(t: FloatArray) -> FloatArray:
    """The analysed beats' times as :class:`~processing.live.LiveAnalyzer` keeps them: a beat
    the correction placed before the one before it (the first beat of a run cut after a
    stall, split as ``missed``: its inserted half lands before the previous run's last beat)
    is kept 1 µs after that one, so every window and search sees times in order."""
    back = np.flatnonzero(np.diff(t) <= 0)
    if back.size == 0:
        return t
    out = t.copy()
    for i in range(int(back[0]) + 1, out.size):
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] + 1e-6
    return out


def _breaks(
    cs: CorrectedSeries,
    ok: npt.NDArray[np.bool_],
    t_ok: FloatArray,
    cut: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.intp]:
    """Where the analysed beats ``cs.*[ok]`` (at times ``t_ok``, in order) break (indices of
    the first beat after a break): after a beat left out (implausible, warm-up: as live, no
    difference spans one), at gaps in time, and before each raw beat marked in ``cut`` (one
    per raw beat: recorded gaps, stall cuts), where the daemon restarted its windows before
    pushing that beat, so a beat its correction inserted (a ``missed`` split) lies after the
    break too."""
    rows = np.flatnonzero(ok)
    out = np.cumsum(cs.code >= _NOT_ANALYSED)
    after_left_out = np.flatnonzero(out[rows[1:]] != out[rows[:-1]]) + 1
    # Against the longer of the raw and corrected interval: a `long` beat (raw 2000 ms,
    # interpolated to 573) is 2 s after the one before by its own interval, not after a gap
    # (live does not break there either).
    gaps = gaps_in_times(t_ok, np.fmax(cs.rr_raw_ms[ok], cs.rr_ms[ok]))
    if cut is not None and cut.any():
        before = _analysed_before(cs, ok, cut)
        gaps = np.union1d(gaps, before[(before > 0) & (before < t_ok.size)])
    return np.union1d(after_left_out, gaps).astype(np.intp)


def _analysed_before(
    cs: CorrectedSeries, ok: npt.NDArray[np.bool_], marked: npt.NDArray[np.bool_]
) -> npt.NDArray[np.intp]:
    """For each raw beat marked in ``marked`` (one flag per raw beat): how many analysed
    beats (``cs.*[ok]``) come before it and before any beat the correction inserted for it.
    By rows, not times: a beat at the same time as the one before (a burst after a stall),
    or one whose inserted half lies before it, is placed right."""
    # Every raw beat has one row with its raw interval; the rows the correction inserted
    # for it (a split) come right before that row, after the previous raw beat's.
    raw_rows = np.flatnonzero(~np.isnan(cs.rr_raw_ms))
    k = np.flatnonzero(marked)
    first_row = np.where(k > 0, raw_rows[np.maximum(k - 1, 0)] + 1, 0)
    out: npt.NDArray[np.intp] = np.concatenate([[0], np.cumsum(ok)])[first_row]
    return out


class _Seen(NamedTuple):
    """Per step, what the daemon's analyzer held when it took the step."""

    last: npt.NDArray[np.intp]
    """The last analysed beat (an index into the analysed beats; −1: none yet)."""
    n_rows: npt.NDArray[np.intp]
    """How many rows (of :class:`CorrectedSeries`, all classes) were final."""
    restarted: npt.NDArray[np.bool_]
    """Its windows had restarted (a gap, a cut, a left-out beat) after ``last``: empty."""


def _steps_seen(
    steps: FloatArray,
    t: FloatArray,
    cs: CorrectedSeries,
    ok: npt.NDArray[np.bool_],
    released: npt.NDArray[np.intp],
    cut: npt.NDArray[np.bool_],
    recorded: npt.NDArray[np.bool_],
    correction: bool,
    notification_start: npt.NDArray[np.bool_] | None = None,
) -> _Seen:
    """What the daemon had at each step (:class:`_Seen`), by the order in which it handles
    beats and steps (settle.pipeline): with correction it pushes the beats of a notification,
    then takes the steps up to the last one's time, and a row is final once the beat it
    waited for (``released``, from :func:`_classify`) has been pushed — up to 3 beats after
    its own, so its windows end that much earlier than the step; without correction it takes
    the steps before a beat's time first and every beat is final as it is pushed. Its windows
    restart at a recorded gap (before the steps inside it), at a stall cut and at a left-out
    beat (as the beat is handled, or, left out by the correction, when that row is final); a
    gap in the times alone breaks the windows (:func:`_breaks`) but empties none the daemon
    had.

    ``t``: the raw beat times (``cut``, ``recorded`` and ``notification_start`` have one flag
    per raw beat; ``notification_start``: the first beat of each notification, None when
    every beat came alone)."""
    n = t.size
    arrived = np.maximum.accumulate(t) if n else t  # a beat pulled back waits for the steps
    beat_no = np.arange(n, dtype=np.intp)
    first_of = (
        beat_no
        if notification_start is None
        else np.maximum.accumulate(np.where(notification_start, beat_no, 0))
    )

    def once(beat: npt.NDArray[np.intp], strict: bool) -> FloatArray:
        """The step times from which beat ``beat`` has been handled: steps after its time
        (``strict``: its steps were taken before it) or from it; none for ``n`` and later."""
        at = arrived[np.clip(beat, 0, max(n - 1, 0))] if n else np.zeros(beat.size)
        at = np.where(beat >= n, np.inf, at)
        return np.nextafter(at, np.inf) if strict else at

    def pushed(beat: npt.NDArray[np.intp]) -> FloatArray:
        """With correction, the steps taken once beat ``beat`` was handled: those after the
        last beat before its notification (the daemon takes them after the notification)."""
        if not n:
            return np.full(beat.size, np.inf)
        before = np.where(beat < n, first_of[np.minimum(beat, n - 1)] - 1, n)
        return np.where(before >= 0, once(before, True), -np.inf)

    raw_row = cs.raw_index
    # ``released`` never decreases (rows are final in order), so neither does ``rows_from``.
    rows_from = pushed(released) if correction else once(released, False)
    n_rows = np.searchsorted(rows_from, steps, side="right").astype(np.intp)
    before_row = np.concatenate([[0], np.cumsum(ok)])
    last = before_row[n_rows] - 1  # −1: no analysed beat yet (every step value stays empty)

    # Restarts: (from which step, analysed beats before it).
    left = np.flatnonzero(cs.code >= _NOT_ANALYSED)
    cuts = np.flatnonzero(cut)
    if correction:
        left_from = pushed(released[left])
        cut_from = pushed(cuts)
    else:
        warm = cs.code[left] == _WARMUP  # the reconnect's gap came before them
        left_from = np.where(
            warm,
            np.where(raw_row[left] > 0, once(raw_row[left] - 1, True), -np.inf),
            once(raw_row[left], False),
        )
        cut_from = np.where(
            recorded[cuts],
            np.where(cuts > 0, once(cuts - 1, True), -np.inf),
            once(cuts, False),
        )
    ev_from = np.concatenate([left_from, cut_from])
    ev_before = np.concatenate([before_row[left], _analysed_before(cs, ok, cut)])
    restarted = np.zeros(steps.size, dtype=bool)
    if ev_from.size:
        order = np.argsort(ev_from, kind="stable")
        latest = np.maximum.accumulate(ev_before[order])
        k = np.searchsorted(ev_from[order], steps, side="right") - 1
        restarted = (k >= 0) & (latest[np.maximum(k, 0)] > last)
    return _Seen(last, n_rows, restarted)


def _segments(n: int, breaks: npt.NDArray[np.intp]) -> list[tuple[int, int]]:
    """Index ranges ``[a, b)`` of the unbroken runs (of ≥ 2 beats) of ``n`` beats."""
    edges = [0, *breaks.tolist(), n]
    return [(a, b) for a, b in itertools_pairwise(edges) if b - a >= 2]


def itertools_pairwise(x: list[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(x))


def _step_times(t: FloatArray, step_s: float) -> FloatArray:
    """The daemon's steps over beats at times ``t``: multiples of ``step_s`` (as its first
    snapshot is at ``step_s``)."""
    if t.size < 2:
        return np.empty(0)
    first, end = math.ceil(t[0] / step_s), math.floor((t[-1] + 1e-9) / step_s)
    out: FloatArray = np.arange(first, end + 1) * step_s
    return out


def _rolling_spectra(
    t: FloatArray,
    rr: FloatArray,
    steps: FloatArray,
    seen: _Seen,
    segments: list[tuple[int, int]],
    done: Callable[[float], None] = lambda _share: None,
) -> tuple[FloatArray, ...]:
    """Spectra and coherence at every step, over the windows the daemon had (``seen``: they
    end at the last beat it held); ``done(share)`` after each batch of windows, with the
    share of the steps' windows computed so far (a progress display)."""
    n_coh = round(COHERENCE_WINDOW_S * FS_HZ)
    n_sp = round(SPECTRAL_WINDOW_S * FS_HZ)
    lf = np.full(steps.size, np.nan)
    hf = np.full(steps.size, np.nan)
    resp = np.full(steps.size, np.nan)
    coh = np.full(steps.size, np.nan)
    lnlf = np.full(steps.size, np.nan)
    n_done = 0
    last = seen.last
    for a, b in segments:
        ts, rs = t[a:b], rr[a:b]
        if ts.size < 8:
            continue
        seg_start = ts[0] - rs[0] / 1000.0
        # The steps whose last beat is in this run, as long as the run is longer than the
        # shortest window (a run shorter than that is not resampled).
        lo = int(np.searchsorted(last, a))
        hi = int(np.searchsorted(last, b))
        if lo >= hi or ts[-1] - ts[0] < min(n_coh, n_sp) / FS_HZ - 1.0:
            continue
        t0 = math.ceil(seg_start * FS_HZ) / FS_HZ
        grid, x = resample_cubic(ts, rs, FS_HZ, t0=max(t0, ts[0]))
        if grid.size == 0:
            continue
        csum = np.concatenate([[0.0], np.cumsum(rs)])
        end_t = t[last[lo:hi]]  # each window ends at the step's last beat
        ends = np.searchsorted(grid, end_t + 1e-9, side="right")  # samples up to it
        for nwin, kind in ((n_coh, "coh"), (n_sp, "sp")):
            ok = (ends >= nwin) & (end_t - nwin / FS_HZ >= seg_start - 1e-9)
            ok &= ~seen.restarted[lo:hi]
            loc = np.flatnonzero(ok)
            if loc.size == 0:
                continue
            view = np.lib.stride_tricks.sliding_window_view(x, nwin)
            for c in range(0, loc.size, 2000):
                ii = lo + loc[c : c + 2000]
                rows = view[ends[loc[c : c + 2000]] - nwin]
                f, p = periodograms(rows, FS_HZ, nfft=1024, f_max=INDICES_MAX_HZ)
                # The spline's gain for the mean RR of each window's own beats (with the 5 s
                # margin live resamples): a run's mean misjudged a heart slowing to 36 bpm.
                e = end_t[loc[c : c + 2000]]
                b0 = np.searchsorted(ts, e - nwin / FS_HZ - 5.0, side="right")
                b1 = np.searchsorted(ts, e + 1e-9, side="right")
                mean_rr_s = (csum[b1] - csum[b0]) / np.maximum(b1 - b0, 1) / 1000.0
                p = p / spline_power_gain(f[None, :], mean_rr_s[:, None])
                if kind == "coh":
                    lnlf[ii] = _ln(_bandsum(f, p, 0.04, 0.15))
                    coh[ii] = _coherence_rows(f, p)
                else:
                    lf[ii] = _bandsum(f, p, 0.04, 0.15)
                    hf[ii] = _bandsum(f, p, 0.15, 0.4)
                    resp[ii] = 60.0 * resp_peak_hz(f, p)
                n_done += ii.size
                done(n_done / (2 * max(steps.size, 1)))
    return lf, hf, resp, coh, lnlf


def _ln(x: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(x > 0, np.log(np.maximum(x, 1e-300)), np.nan)
    return out


def _bandsum(f: FloatArray, p: FloatArray, lo: float, hi: float) -> FloatArray:
    sel = (f >= lo) & (f < hi)
    return np.asarray(p[:, sel].sum(axis=1) * (f[1] - f[0]), dtype=np.float64)


def _peak_rows(f: FloatArray, p: FloatArray, lo: float, hi: float) -> FloatArray:
    sel = np.flatnonzero((f >= lo) & (f < hi))
    return np.asarray(f[sel[np.argmax(p[:, sel], axis=1)]], dtype=np.float64)


def _coherence_rows(f: FloatArray, p: FloatArray) -> FloatArray:
    """:func:`processing.spectral.coherence_from_psd` ``.ratio`` for every row of ``p``."""
    df = f[1] - f[0]
    fp = _peak_rows(f, p, *COHERENCE_PEAK_HZ)
    total = _bandsum(f, p, 0.0033, 0.4)
    near = np.abs(f[None, :] - fp[:, None]) <= COHERENCE_HALF_WIDTH_HZ + 1e-12
    peak = (p * near).sum(axis=1) * df
    rest = total - peak
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((rest > 0) & (total >= NO_POWER_MS2), peak / rest, np.nan)


def _step_quality(
    steps: FloatArray,
    seen: _Seen,
    tc: FloatArray,
    rc: FloatArray,
    n_window: npt.NDArray[np.intp],
    run_start: npt.NDArray[np.intp],
    window_s: float,
    cs: CorrectedSeries,
    jumps: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    """``(usable, quality)`` per step, as :class:`~processing.live.LiveAnalyzer` computes them
    from what it held (``seen``; ``jumps``: :func:`_jumps` of the analysed raw intervals).

    Usable: at least :data:`~processing.live.MIN_WINDOW_BEATS` beats in the rolling window
    (``n_window``, per step), and not more than :data:`IRREGULAR_SHARE_MAX` of the last
    :data:`~processing.live.QUALITY_BEATS` analysed raw beats flagged (once there are 30),
    and not more than :data:`~processing.live.JUMP_SHARE_MAX` of their successive raw
    intervals jumping by more than :data:`~processing.live.JUMP_REL`.
    Quality: ``(1 − that flagged share) · coverage``, coverage = corrected RR time within the
    ``window_s`` before the step and since the last break (``run_start`` of each beat) over
    ``window_s``, 0 where the windows had restarted. Live multiplies by the share of beats
    with skin contact, which an RR file does not carry.
    """
    rows = ~np.isnan(cs.rr_raw_ms) & (cs.code < _NOT_ANALYSED)
    cf = np.concatenate([[0], np.cumsum(cs.code[rows] != 0)])
    m = np.concatenate([[0], np.cumsum(rows)])[seen.n_rows]  # raw beats it had flagged or not
    w = np.minimum(m, QUALITY_BEATS)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(w > 0, (cf[m] - cf[m - w]) / np.maximum(w, 1), 1.0)
    irregular = (w >= 30) & (share > IRREGULAR_SHARE_MAX)
    cj = np.concatenate([[0], np.cumsum(jumps)])
    wj = np.minimum(np.maximum(m - 1, 0), QUALITY_BEATS)
    top = np.maximum(m - 1, 0)
    irregular |= (wj >= 30) & (cj[top] - cj[top - wj] > JUMP_SHARE_MAX * wj)
    usable: npt.NDArray[np.bool_] = (n_window >= MIN_WINDOW_BEATS) & ~irregular
    last = seen.last
    lo = np.searchsorted(tc, steps - window_s, side="right")
    lo = np.maximum(lo, run_start[np.maximum(last, 0)])
    csum = np.concatenate([[0.0], np.cumsum(rc)])
    covered = np.where(last >= lo, csum[last + 1] - csum[np.minimum(lo, last + 1)], 0.0)
    coverage = np.where(seen.restarted, 0.0, np.minimum(1.0, covered / 1000.0 / window_s))
    quality: FloatArray = np.maximum(0.0, 1.0 - share) * coverage
    return usable, quality


def _jumps(raw: FloatArray) -> npt.NDArray[np.bool_]:
    """Per successive pair of raw intervals: did it jump (:data:`~processing.live.JUMP_REL`)?"""
    return np.abs(np.diff(raw)) > JUMP_REL * raw[:-1]


def _analysed_raw(cs: CorrectedSeries) -> FloatArray:
    """The raw intervals the analysis saw, in order (not implausible, not warm-up)."""
    rows = ~np.isnan(cs.rr_raw_ms) & (cs.code < _NOT_ANALYSED)
    out: FloatArray = cs.rr_raw_ms[rows]
    return out


def _score(
    steps: FloatArray,
    hr: FloatArray,
    ln: FloatArray,
    lnlf: FloatArray,
    baseline_s: float,
    usable: npt.NDArray[np.bool_],
    step_s: float = STEP_S,
    rest: tuple[float, float] | None = None,
) -> tuple[FloatArray, tuple[float, float] | None, bool]:
    """The settling score at each step as :class:`~processing.live.LiveAnalyzer` computes it,
    the baseline's span (its first and last step, None if it never completed) and whether
    that baseline is the marked rest period.

    The automatic baseline collects the usable steps of the first ``baseline_s`` (extended by
    ``baseline_s`` at a time until it holds :data:`BASELINE_MIN_SAMPLES` of each component);
    after it, every usable step is scored against it.

    The baseline runs from the first step, or from ``step_s`` where the steps start later
    (an export's beats start after the daemon's warm-up, or when the strap was put on): the
    daemon's first snapshot, and so its baseline, is at ``step_s`` of session time whenever
    the first beats arrive; its baseline then holds fewer steps, or is extended, and so is
    this one.

    ``rest`` (start, stop), s: a rest period marked as the daemon's ``baseline/start`` and
    ``baseline/stop`` do. Before it the automatic baseline scores as above; its usable steps
    (``start ≤ t ≤ stop``) are the baseline, nothing is scored while it is collected, and every
    usable step after it is scored against it — unless it holds fewer than
    :data:`BASELINE_MIN_SAMPLES` of a component or spans less than that many steps, when, as
    live, it is discarded and an automatic baseline is collected from ``stop``."""
    score = np.full(steps.size, np.nan)
    if steps.size == 0:
        return score, None, False
    comps = ((hr, "hr_bpm", -1.0), (ln, "ln_rmssd", 1.0), (lnlf, "ln_lf", 1.0))
    finite = [np.isfinite(vals).tolist() for vals, _, _ in comps]
    step_list = steps.tolist()
    usable_list = usable.tolist()

    def automatic(lo: int, hi: int, until: float) -> tuple[npt.NDArray[np.bool_], int]:
        """The automatic baseline's steps among ``lo … hi−1`` and the first step after it
        (``hi`` when it never completed there)."""
        counts = [0, 0, 0]
        in_base = np.zeros(steps.size, dtype=bool)
        for k in range(lo, hi):
            if step_list[k] > until:
                if min(counts) >= BASELINE_MIN_SAMPLES:
                    return in_base, k
                until = step_list[k] + baseline_s
            if usable_list[k]:
                in_base[k] = True
                for j in range(3):
                    counts[j] += finite[j][k]
        return in_base, hi

    def scored(in_base: npt.NDArray[np.bool_], lo: int, hi: int) -> None:
        zs = []
        for vals, key, sign in comps:
            v = vals[in_base & np.isfinite(vals)]
            spread = max(float(np.std(v, ddof=1)), SPREAD_FLOORS[key])
            zs.append(sign * (vals[lo:hi] - float(v.mean())) / spread)
        z = np.mean(zs, axis=0)
        score[lo:hi] = np.where(
            usable[lo:hi], np.clip(50.0 + 50.0 * np.tanh(z / SETTLING_K), 0.0, 100.0), np.nan
        )

    def span(in_base: npt.NDArray[np.bool_]) -> tuple[float, float]:
        k = np.flatnonzero(in_base)
        return float(steps[k[0]]), float(steps[k[-1]])

    first_until = min(float(steps[0]), step_s) + baseline_s
    if rest is None:
        in_base, done = automatic(0, steps.size, first_until)
        if done == steps.size:
            return score, None, False
        scored(in_base, done, steps.size)
        return score, span(in_base), False
    start, stop = rest
    k_start = int(np.searchsorted(steps, start, side="left"))
    k_stop = int(np.searchsorted(steps, stop, side="right"))
    in_base, done = automatic(0, k_start, first_until)
    if done < k_start:  # the automatic baseline completed before the rest period began
        scored(in_base, done, k_start)
    in_rest = np.zeros(steps.size, dtype=bool)
    in_rest[k_start:k_stop] = usable[k_start:k_stop]
    n_rest = min(int(np.sum(in_rest & np.isfinite(vals))) for vals, _, _ in comps)
    if n_rest >= BASELINE_MIN_SAMPLES and stop - start >= BASELINE_MIN_SAMPLES * step_s:
        if k_stop < steps.size:
            scored(in_rest, k_stop, steps.size)
        return score, span(in_rest), True
    # Too short: discarded, as live; the automatic baseline from the rest period's stop.
    in_base, done = automatic(k_stop, steps.size, stop + baseline_s)
    if done == steps.size:
        return score, None, False
    scored(in_base, done, steps.size)
    return score, span(in_base), False


#: Each stage's relative cost in :func:`analyze` (seconds on the 24 h Holter file, 2026-11-29;
#: the whole-recording spectrum's by method), so the progress it reports moves with the work,
#: not with the number of stages.
STAGE_COST = {"beats": 0.3, "time domain": 0.005, "spectra": 0.6, "rolling": 0.015}
SUMMARY_COST = {"welch": 0.08, "lomb": 1.0}


def _no_progress(_stage: str, _done: float) -> None:
    pass


def analyze(
    t_s: npt.ArrayLike,
    rr_ms: npt.ArrayLike,
    *,
    correction: bool = True,
    window_s: float = 60.0,
    rolling: bool = False,
    baseline_s: float = 120.0,
    rr_min_ms: float = 250.0,
    rr_max_ms: float = 2000.0,
    warmup: npt.ArrayLike | None = None,
    gap_before: npt.ArrayLike | None = None,
    notification_start: npt.ArrayLike | None = None,
    spectrum: Method = "welch",
    on_progress: Callable[[str, float], None] | None = None,
    step_s: float = STEP_S,
    rest: tuple[float, float] | None = None,
) -> Analysis:
    """Analyse one recording (beat times ``t_s`` in s, raw intervals ``rr_ms`` in ms).

    ``on_progress(stage, done)`` is called as each stage begins and during the longest one,
    with the stage's name and the share of the whole analysis done so far (0–1, by
    :data:`STAGE_COST`; 1 once it is all done), for a progress bar.

    An interval outside ``[rr_min_ms, rr_max_ms]`` is kept in :attr:`Analysis.beats` as
    ``implausible`` and not analysed (as in the daemon); the artefact correction starts afresh
    after it and after every gap in the beat times, so no correction spans a lost signal.
    ``warmup`` (a bool per beat) marks beats the daemon recorded in its warm-up after a
    (re)connect and did not analyse; they are kept as ``warmup`` and left out likewise.
    ``gap_before`` (a bool per beat) marks beats after a gap the daemon recorded (a lost
    notification, say: beats are missing however close the times look): the series breaks
    there as it does at a gap in the times, as the daemon's windows restarted there.
    ``notification_start`` (a bool per beat) marks the first beat of each Heart Rate
    notification (a strap sends up to ~1 s of beats in one, and the daemon takes its steps
    after a whole notification): the rolling values are then the daemon's at each step; None
    takes every beat as a notification of its own.
    ``rest`` (start, stop) s: a marked rest period the settling score is computed against
    (as the daemon's ``baseline/start`` … ``baseline/stop``), else the automatic baseline
    (:func:`_score`).
    ``spectrum``: the whole-recording spectrum by the default method (each unbroken run
    resampled, Welch frames within runs) or by Lomb–Scargle over the beats at their own
    times, holes included (:func:`processing.spectral.lomb_frames`). The rolling spectra
    and coherence use the default method either way, as live. ``step_s``: how often the
    rolling spectra, coherence and score are taken (the daemon's
    ``processing.indices_every_s``; its steps are the multiples of it).
    """
    if not (math.isfinite(step_s) and step_s > 0.0):
        raise ValueError("step_s must be a positive number of seconds")
    t = np.asarray(t_s, dtype=np.float64)
    rr = np.asarray(rr_ms, dtype=np.float64)
    if t.ndim != 1 or t.shape != rr.shape:
        raise ValueError("t_s and rr_ms must be 1-D with one value per beat")
    if not (np.isfinite(t).all() and np.isfinite(rr).all()):
        raise ValueError("t_s and rr_ms must be finite (the file readers reject the rest)")
    warm = None if warmup is None else np.asarray(warmup, dtype=bool)
    if warm is not None and warm.shape != t.shape:
        raise ValueError("warmup must have one value per beat")
    # Where the daemon's windows restarted: after a recorded gap, and at a beat closer than
    # half its interval to the one before (one it could not place on its time line, in a
    # burst after a stall: LiveAnalyzer.push_beat starts a new segment there). Raw values:
    # a corrected premature beat is rightly closer than half its corrected interval.
    cut = np.zeros(t.size, dtype=bool)
    cut[1:] = np.diff(t) * 1000.0 < 0.5 * rr[1:]
    recorded = np.zeros(t.size, dtype=bool)
    if gap_before is not None:
        recorded = np.asarray(gap_before, dtype=bool)
        if recorded.shape != t.shape:
            raise ValueError("gap_before must have one value per beat")
    # A pause the intervals do not account for by more than UNACCOUNTED_GAP_S: the daemon's
    # beat timer records it as a gap ("beats missing"), so it is one here too, in any file.
    # Without it every step inside a 15 min pause repeated the window before it (coherence,
    # LF, a score), and the summary's coherence, their median, moved by 16 %.
    unaccounted = np.zeros(t.size, dtype=bool)
    unaccounted[1:] = np.diff(t) - rr[1:] / 1000.0 > UNACCOUNTED_GAP_S
    recorded = recorded | unaccounted
    cut |= recorded
    starts = None
    if notification_start is not None:
        starts = np.asarray(notification_start, dtype=bool)
        if starts.shape != t.shape:
            raise ValueError("notification_start must have one value per beat")
    report = on_progress if on_progress is not None else _no_progress
    costs = {k: v for k, v in STAGE_COST.items() if rolling or k != "rolling"}
    costs["summary"] = SUMMARY_COST[spectrum]
    before: dict[str, float] = {}
    total = 0.0
    for key, cost in costs.items():
        before[key], total = total, total + cost

    def stage(key: str, name: str, share: float = 0.0) -> None:
        report(name, (before[key] + share * costs[key]) / total)

    stage("beats", "correcting artefacts" if correction else "classifying beats")
    cs, released = _classify(t, rr, correction, rr_min_ms, rr_max_ms, warm, cut)
    jumps = _jumps(_analysed_raw(cs))
    ok = np.isfinite(cs.rr_ms)
    tc, rc = _time_line(cs.t_s[ok]), cs.rr_ms[ok]
    counts = cs.by_class()
    n_implausible = counts["implausible"]
    n_plausible = t.size - n_implausible - counts["warmup"]
    share = (cs.n_flagged - n_implausible - counts["warmup"]) / max(n_plausible, 1)
    usable, reason = True, None
    if t.size < 10:
        usable, reason = False, "fewer than 10 beats"
    elif n_implausible > IRREGULAR_SHARE_MAX * t.size:
        usable = False
        reason = (
            f"{100 * n_implausible / t.size:.0f} % of intervals lie outside "
            f"{rr_min_ms:g}–{rr_max_ms:g} ms (signal lost, or not RR in milliseconds?)"
        )
    elif n_plausible < 10:
        usable = False
        reason = f"fewer than 10 beats with a plausible interval ({rr_min_ms:g}–{rr_max_ms:g} ms)"
    elif share > IRREGULAR_SHARE_MAX:
        usable = False
        reason = not_sinus_reason(share, recent=False)
    elif jumps.size >= 30 and jumps.mean() > JUMP_SHARE_MAX:
        usable = False
        reason = jump_reason(float(jumps.mean()), recent=False)
    breaks = _breaks(cs, ok, tc, cut)
    segments = _segments(tc.size, breaks)
    stage("time domain", "time domain")
    td = time_domain(rc, breaks=breaks)
    sd1, sd2 = poincare(rc, breaks=breaks)
    spectra = f"spectra and coherence every {step_s:g} s"
    stage("spectra", spectra)
    steps = _step_times(tc, step_s)
    seen = _steps_seen(steps, t, cs, ok, released, cut, recorded, correction, starts)
    lf, hf, resp, coh, lnlf = _rolling_spectra(
        tc, rc, steps, seen, segments, lambda share: stage("spectra", spectra, share)
    )
    roll = None
    if rolling:
        stage("rolling", "rolling time domain and settling score")
        mean, hr, sdnn, rmssd, pnn, cnt, run_start = _rolling_td(tc, rc, window_s, breaks)
        # Each step's time domain is the daemon's at its last beat (up to 3 beats back with
        # correction), nothing where its windows had restarted.
        idx = seen.last
        with np.errstate(divide="ignore", invalid="ignore"):
            ln_step = np.log(rmssd[idx])
        n_window = np.where((idx >= 0) & ~seen.restarted, cnt[idx], 0)
        step_ok, quality = _step_quality(
            steps, seen, tc, rc, n_window, run_start, window_s, cs, jumps
        )
        score, base_span, base_marked = _score(
            steps, hr[idx], ln_step, lnlf, baseline_s, step_ok, step_s, rest
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            lfhf = lf / hf
        roll = Rolling(
            tc, mean, hr, sdnn, rmssd, pnn, steps, lf, hf, lfhf, resp, coh, score, quality,
            base_span, base_marked, rest,
        )  # fmt: skip
    finite_coh = coh[np.isfinite(coh)]
    stage("summary", "DFA and the whole recording's spectrum")
    alpha1 = dfa_alpha1(rc, breaks=breaks)
    whole = lomb_frames(tc, rc) if spectrum == "lomb" else spectral_runs(tc, rc, segments)
    analysis = Analysis(
        n_beats=int(t.size),
        duration_s=float(t[-1] - t[0] + rr[0] / 1000.0) if t.size else 0.0,
        usable=usable,
        reason=reason,
        beats=cs,
        td=td,
        sd1_ms=sd1,
        sd2_ms=sd2,
        dfa_alpha1=alpha1,
        spectral=whole,
        coherence=float(np.median(finite_coh)) if finite_coh.size else math.nan,
        rolling=roll,
    )
    report("done", 1.0)
    return analysis
