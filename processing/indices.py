"""Settling indices against the session's own baseline: score, trend, catching-up, responses.

Components (each in baseline-spread units, positive = more settled)::

    z_hr       = −(HR − mean_b HR) / max(SD_b HR, 1 bpm)
    z_ln_rmssd =  (lnRMSSD − mean_b) / max(SD_b, 0.1)
    z_slow     =  (ln LF_64 − mean_b) / max(SD_b, 0.25)   LF_64 = 0.04–0.15 Hz power of the
                                                        64 s coherence window, ms² (slow
                                                        oscillation, Peng et al. 1999)
    score      = clip(50 + 50 · tanh(mean(z) / k), 0, 100),  k = 2

Trend: over the last ``trend_window_s``, the non-overlapping 30 s means of the score (closer
to independent than the 5 s samples; their lag-1 autocorrelation corrected for): Theil–Sen
slope with a 95 % CI (Sen 1968) and a Mann–Kendall test → ``settling`` (rising, p < 0.05),
``unsettling`` (falling, p < 0.05) or ``steady``; confidence = 1 − p.

Catching up: after the hold-start (``hold_start``) or session start, the first time the score
is ≥ ``threshold`` and stays above ``threshold − hysteresis`` for ``hold_s``; the reported time
is the start of that run.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "CATCH_HOLD_S",
    "CATCH_HYSTERESIS",
    "CATCH_THRESHOLD",
    "TREND_MIN_BLOCKS",
    "CatchingUp",
    "EventResponse",
    "Reactivity",
    "SettlingComponents",
    "Trend",
    "TrendLabel",
    "event_response",
    "fast_hr",
    "hr_at_seconds",
    "ln_rmssd_between",
    "mann_kendall",
    "mean_spread",
    "reactivity",
    "theil_sen",
    "trend",
]

TrendLabel = Literal["settling", "steady", "unsettling"]
_NAN = math.nan
_NORM = statistics.NormalDist()

CATCH_THRESHOLD = 85.0
"""Settling score that starts a catching-up run (validated on the model, docs/indices.md)."""
CATCH_HYSTERESIS = 10.0
"""A run lasts while the score stays at or above ``CATCH_THRESHOLD − CATCH_HYSTERESIS``."""
CATCH_HOLD_S = 90.0
"""Seconds a run must last to count as catching up."""

SPREAD_FLOORS = {"hr_bpm": 1.0, "ln_rmssd": 0.1, "ln_lf": 0.25}
"""Smallest baseline spread per component (1 bpm; ≈ 10 % RMSSD; ≈ 28 % LF power)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SettlingComponents:
    """The settling score and its parts at one time."""

    score: float
    """``clip(50 + 50·tanh(mean(z_hr, z_ln_rmssd, z_slow)/k), 0, 100)``; NaN if undefined."""
    z_hr: float
    """Heart rate below baseline, baseline-spread units."""
    z_ln_rmssd: float
    """lnRMSSD above baseline, baseline-spread units."""
    z_slow: float
    """ln(LF power of the 64 s window) above baseline, baseline-spread units."""


class Baseline:
    """Mean and floored spread (SD, ddof=1) of each component over baseline samples."""

    __slots__ = ("_vals",)

    def __init__(self) -> None:
        self._vals: dict[str, list[float]] = {k: [] for k in SPREAD_FLOORS}

    def add(self, hr_bpm: float, ln_rmssd: float, ln_lf: float) -> None:
        for k, v in (("hr_bpm", hr_bpm), ("ln_rmssd", ln_rmssd), ("ln_lf", ln_lf)):
            if math.isfinite(v):
                self._vals[k].append(v)

    @property
    def n(self) -> int:
        """Smallest sample count over the components."""
        return min(len(v) for v in self._vals.values())

    def stats(self, key: str) -> tuple[float, float]:
        v = self._vals[key]
        floor = SPREAD_FLOORS[key]
        if not v:
            return _NAN, floor
        mean = math.fsum(v) / len(v)
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        return mean, max(sd, floor)

    def score(self, hr_bpm: float, ln_rmssd: float, ln_lf: float, k: float) -> SettlingComponents:
        m, s = self.stats("hr_bpm")
        z_hr = -(hr_bpm - m) / s
        m, s = self.stats("ln_rmssd")
        z_ln = (ln_rmssd - m) / s
        m, s = self.stats("ln_lf")
        z_slow = (ln_lf - m) / s
        zs = [z for z in (z_hr, z_ln, z_slow) if math.isfinite(z)]
        score = _NAN
        if len(zs) == 3:
            score = min(max(50.0 + 50.0 * math.tanh(math.fsum(zs) / 3.0 / k), 0.0), 100.0)
        return SettlingComponents(score, z_hr, z_ln, z_slow)


@dataclasses.dataclass(frozen=True, slots=True)
class Trend:
    """Trend of the settling score over the recent window."""

    slope_per_min: float
    """Theil–Sen slope of the 30 s block means, score points per minute (NaN: too few)."""
    ci_low: float
    """Lower 95 % bound of the slope (Sen 1968), points/min."""
    ci_high: float
    """Upper 95 % bound of the slope, points/min."""
    label: TrendLabel
    """``settling`` / ``steady`` / ``unsettling`` (Mann–Kendall, two-sided p < 0.05)."""
    confidence: float
    """``1 − p`` of the Mann–Kendall test on non-overlapping block means, 0..1."""


BLOCK_LAG1_RHO = 0.35
"""Lag-1 autocorrelation of the 30 s block means of the score, which the trend test corrects
for. Adjacent blocks share part of their 60–64 s windows: measured 0.35 on flat controls of
the physiological model (six one-hour sessions; lags ≥ 2 within ±0.05). Taken as independent,
the test called a flat control settling or unsettling in 10 % of snapshots (nominal 5 %)."""


def _variance_inflation(n: int, rho1: float) -> float:
    """``n / n*`` of Yue & Wang (2004) for a series whose only autocorrelation is ``rho1`` at
    lag 1: ``1 + 2 (1 − 1/n) ρ₁``."""
    return 1.0 + 2.0 * (1.0 - 1.0 / n) * rho1


def theil_sen(
    t_s: npt.ArrayLike, y: npt.ArrayLike, rho1: float = 0.0
) -> tuple[float, float, float]:
    """Theil–Sen slope (per second) and its 95 % CI from the pairwise slopes (Sen 1968;
    ranks as in Gilbert 1987, §16.5), the S variance inflated for lag-1 autocorrelation
    ``rho1``. The rank bounds carry the continuity correction :func:`mann_kendall` applies
    (``C + 1``) and are rounded inwards, so the CI excludes 0 exactly when that test (same
    values, same ``rho1``) is significant: rounded outwards and uncorrected, a "steady"
    trend was published with a CI excluding 0 at 8 or 10 block means (~10 % of random
    series there)."""
    t = np.asarray(t_s, dtype=np.float64)
    v = np.asarray(y, dtype=np.float64)
    n = t.size
    if n < 3:
        return _NAN, _NAN, _NAN
    i, j = np.triu_indices(n, 1)
    dt = t[j] - t[i]
    ok = dt > 0
    slopes = np.sort((v[j] - v[i])[ok] / dt[ok])
    m = slopes.size
    if m == 0:
        return _NAN, _NAN, _NAN
    var_s = n * (n - 1) * (2 * n + 5) / 18.0 * _variance_inflation(n, rho1)
    c = 1.959964 * math.sqrt(var_s) + 1.0
    # The M1-th and (M2 + 1)-th smallest slopes, M1,2 = (m ∓ c) / 2, 1-based, M1 rounded up
    # and M2 down: slopes[lo] > 0 ⟺ fewer than (m − c) / 2 pairs fall ⟺ S − 1 > C.
    lo = int(max(0, math.ceil((m - c) / 2.0) - 1))
    hi = int(min(m - 1, math.floor((m + c) / 2.0)))
    return float(np.median(slopes)), float(slopes[lo]), float(slopes[hi])


def mann_kendall(y: npt.ArrayLike, rho1: float = 0.0) -> tuple[float, float]:
    """Mann–Kendall S statistic's z and two-sided p (no ties correction needed for floats),
    the variance of S inflated for lag-1 autocorrelation ``rho1`` (Yue & Wang 2004)."""
    v = np.asarray(y, dtype=np.float64)
    n = v.size
    if n < 4:
        return 0.0, 1.0
    i, j = np.triu_indices(n, 1)
    s = float(np.sign(v[j] - v[i]).sum())
    var_s = n * (n - 1) * (2 * n + 5) / 18.0 * _variance_inflation(n, rho1)
    z = (s - math.copysign(1.0, s)) / math.sqrt(var_s) if s != 0 else 0.0
    return z, 2.0 * (1.0 - _NORM.cdf(abs(z)))


TREND_MIN_BLOCKS = 6
"""Block means the trend needs: 150–180 s of scores. With the variance inflated for the
means' autocorrelation, 4 or 5 means can never reach p < 0.05 (a perfectly monotone series:
p = 0.17 and 0.08), so a score rising from 54 to 97 read "steady"; 6 can (0.037)."""


def trend(t_s: npt.ArrayLike, score: npt.ArrayLike, block_s: float = 30.0) -> Trend:
    """:class:`Trend` of a score series, all from its non-overlapping ``block_s`` means: their
    Theil–Sen slope with its 95 % CI and the Mann–Kendall test, both corrected for the means'
    lag-1 autocorrelation (:data:`BLOCK_LAG1_RHO`). Samples 5 s apart with 60 s windows are
    far from independent (a CI from them excluded 0 in 44 % of a flat control's snapshots),
    and a slope from the samples could fall outside a CI from the blocks. With fewer than
    :data:`TREND_MIN_BLOCKS` blocks: no trend (NaN slope, ``steady`` with confidence 0)."""
    t = np.asarray(t_s, dtype=np.float64)
    y = np.asarray(score, dtype=np.float64)
    ok = np.isfinite(y)
    t, y = t[ok], y[ok]
    if t.size == 0:
        return Trend(_NAN, _NAN, _NAN, "steady", 0.0)
    blocks = np.floor((t - t[0]) / block_s)
    ids = np.unique(blocks)
    if ids.size < TREND_MIN_BLOCKS:
        return Trend(_NAN, _NAN, _NAN, "steady", 0.0)
    means = [float(y[blocks == b].mean()) for b in ids]
    mids = [float(t[blocks == b].mean()) for b in ids]
    slope, lo, hi = theil_sen(mids, means, BLOCK_LAG1_RHO)
    z, p = mann_kendall(means, BLOCK_LAG1_RHO)
    label: TrendLabel = "steady"
    if p < 0.05:
        label = "settling" if z > 0 else "unsettling"
    return Trend(slope * 60.0, lo * 60.0, hi * 60.0, label, 1.0 - p)


class CatchingUp:
    """First sustained crossing of the score after a start time (hysteresis; see module)."""

    __slots__ = ("_run_start", "detected_t_s", "hold_s", "hysteresis", "start_t_s", "threshold")

    def __init__(
        self,
        threshold: float = CATCH_THRESHOLD,
        hold_s: float = CATCH_HOLD_S,
        hysteresis: float = CATCH_HYSTERESIS,
    ) -> None:
        self.threshold = threshold
        self.hold_s = hold_s
        self.hysteresis = hysteresis
        self.start_t_s = 0.0
        self.detected_t_s: float | None = None
        self._run_start: float | None = None

    @property
    def run_start_t_s(self) -> float | None:
        """Start of the run under way (score reached ``threshold`` and has not fallen below
        ``threshold - hysteresis`` since) that has not yet lasted ``hold_s``; None if none."""
        return self._run_start if self.detected_t_s is None else None

    def hold_start(self, t_s: float) -> None:
        """A "hold started" marker: look for catching-up from ``t_s`` afresh."""
        self.start_t_s = t_s
        self.detected_t_s = None
        self._run_start = None

    def update(self, t_s: float, score: float) -> float | None:
        """Feed one score sample (NaN: no score at this step, which ends a run); returns the
        catching-up time once detected (then fixed)."""
        if self.detected_t_s is not None or t_s < self.start_t_s:
            return self.detected_t_s
        if self._run_start is None:
            if score >= self.threshold:
                self._run_start = t_s
        elif not score >= self.threshold - self.hysteresis:
            self._run_start = None
        if self._run_start is not None and t_s - self._run_start >= self.hold_s:
            self.detected_t_s = self._run_start
        return self.detected_t_s


@dataclasses.dataclass(frozen=True, slots=True)
class EventResponse:
    """Response of HR and lnRMSSD to one marker (see :func:`event_response`); all NaN when it
    was not read (too little fast HR: :data:`REACT_MIN_COVER`; live, also a rhythm too
    irregular to read over its 30 s)."""

    t_s: float
    """Marker time, s."""
    kind: str
    """Marker kind (e.g. ``shame``)."""
    peak_d_hr_bpm: float
    """Largest |fast HR − baseline fast HR mean| within 30 s after the marker, signed,
    beats/min (fast HR: :func:`fast_hr`, the 5 s mean of the beats' 1 Hz HR)."""
    peak_d_ln_rmssd: float
    """lnRMSSD of the corrected beats in the 30 s after the marker minus the baseline
    lnRMSSD mean, ln units: one value over the 30 s (:func:`ln_rmssd_between`), not a peak."""
    recovery_s: float
    """Time from the marker until the fast HR, after its peak deviation in the 30 s, is back
    within the baseline band (mean ± spread of the same fast HR during the baseline), s; 0
    if the peak did not clearly leave it (within :data:`LEFT_BAND_SPREADS` spreads: nothing
    to recover from); NaN if it did not recover
    within ``RECOVERY_MAX_S`` of the marker (or in the data so far)."""


REACT_S = 30.0
"""Reactivity window after a marker, s."""
REACT_MIN_COVER = 2.0 / 3.0
"""Share of the whole seconds of the :data:`REACT_S` after a marker that must have a fast HR
(20 of 30) for a response to be read; less (a gap, a dropout) is no data: a peak and a
lnRMSSD from a few seconds would be read as the response of the whole 30 s (an audit: a marker
9 s before the end of a 41 s gap read −2 bpm). Gaps are never interpolated across."""
RECOVERY_MAX_S = 630.0
"""How long after the marker recovery is searched for, s (then NaN: not back): the 30 s
reactivity window and 10 min after it."""
LEFT_BAND_SPREADS = 2.0
"""A marker's peak ΔHR must exceed this many baseline spreads for a recovery to be timed
(hysteresis: leave at 2 spreads, back at 1). On the flat model (fast HR spread floored at
1 bpm) the peaks of 30 s with no reaction reached 1.93 spreads (60 markers); a sinusoidal
breathing swing peaks at √2 spreads. With a 1-spread threshold noise alone gave
"recoveries" of 6–35 s."""
FAST_HALF_S = 2
"""The fast HR at second ``g`` is the mean of the 1 Hz HR at ``g − 2 … g + 2`` (5 s)."""
FAST_MIN_SECONDS = 3
"""Seconds of the 5 with a heart rate (not in a gap) that a fast HR value needs."""
LN_RMSSD_MIN_PAIRS = 5
"""Successive differences the 30 s lnRMSSD after a marker needs (else NaN)."""
PAIR_MAX_SPAN = 1.5
"""Two beats are successive when the later one closes less than this many of its own
intervals after the earlier one (further apart: beats were lost in between, a gap)."""


def hr_at_seconds(
    t_s: npt.ArrayLike,
    rr_ms: npt.ArrayLike,
    grid_s: npt.ArrayLike,
    span_ms: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """Heart rate at each time of ``grid_s``: ``60000 / rr`` of the interval that contains it
    (the first beat closing at or after it, if that beat's interval — ``span_ms``, default
    ``rr_ms`` — began before it); NaN where no interval does (before the first beat, in a
    gap). ``t_s`` sorted. Each value depends only on the beat whose interval it falls in, so
    the same beats give the same values whether they come as a whole session or a window."""
    t = np.asarray(t_s, dtype=np.float64)
    rr = np.asarray(rr_ms, dtype=np.float64)
    g = np.asarray(grid_s, dtype=np.float64)
    if t.shape[0] == 0:
        return np.full(g.shape, _NAN)
    span = rr if span_ms is None else np.asarray(span_ms, dtype=np.float64)
    i = np.minimum(np.searchsorted(t, g, side="left"), t.shape[0] - 1)
    ok = (t[i] >= g) & (t[i] - span[i] / 1000.0 < g)
    return np.where(ok, 60_000.0 / rr[i], _NAN)


def fast_hr(
    t_s: npt.ArrayLike,
    rr_ms: npt.ArrayLike,
    grid_s: npt.ArrayLike,
    span_ms: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """The fast heart rate at whole seconds ``grid_s``: the mean of :func:`hr_at_seconds` at
    ``g − 2 … g + 2`` (a centred 5 s mean; NaN with fewer than :data:`FAST_MIN_SECONDS` of
    them in an interval). It follows a 10 s surge to its full height, where a 60 s rolling
    window spread it over a minute. Needs the beats up to ``g + 2``."""
    g = np.asarray(grid_s, dtype=np.float64)
    offs = np.arange(-FAST_HALF_S, FAST_HALF_S + 1, dtype=np.float64)
    h = hr_at_seconds(t_s, rr_ms, (g[:, None] + offs).ravel(), span_ms).reshape(-1, offs.size)
    ok = np.isfinite(h)
    n = ok.sum(axis=1)
    total = np.where(ok, h, 0.0).sum(axis=1)
    return np.where(n >= FAST_MIN_SECONDS, total / np.maximum(n, 1), _NAN)


def ln_rmssd_between(
    t_s: npt.ArrayLike,
    rr_ms: npt.ArrayLike,
    t0: float,
    t1: float,
    span_ms: npt.ArrayLike | None = None,
) -> float:
    """ln RMSSD (ms) of the beats closing in ``(t0, t1]``: successive differences of beats
    both in it and successive (:data:`PAIR_MAX_SPAN`); NaN with fewer than
    :data:`LN_RMSSD_MIN_PAIRS`."""
    t = np.asarray(t_s, dtype=np.float64)
    rr = np.asarray(rr_ms, dtype=np.float64)
    span = rr if span_ms is None else np.asarray(span_ms, dtype=np.float64)
    lo, hi = np.searchsorted(t, [t0, t1], side="right")
    t, rr, span = t[lo:hi], rr[lo:hi], span[lo:hi]
    ok = np.diff(t) < PAIR_MAX_SPAN * span[1:] / 1000.0
    d = np.diff(rr)[ok]
    if d.shape[0] < LN_RMSSD_MIN_PAIRS:
        return _NAN
    ms = float(np.mean(d * d))
    return 0.5 * math.log(ms) if ms > 0 else _NAN


def mean_spread(values: npt.ArrayLike, floor: float) -> tuple[float, float]:
    """Mean and floored spread (SD, ddof=1) of the finite ``values``, as :class:`Baseline`."""
    v = [float(x) for x in np.asarray(values, dtype=np.float64).ravel() if math.isfinite(x)]
    if not v:
        return _NAN, floor
    mean = math.fsum(v) / len(v)
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return mean, max(sd, floor)


@dataclasses.dataclass(frozen=True, slots=True)
class Reactivity:
    """What the 30 s after a marker showed, before any baseline: the lowest and highest fast
    HR (beats/min), the whole seconds they were first reached at, and the lnRMSSD over those
    30 s. All a response needs of that window."""

    hr_low: float
    hr_high: float
    ln_rmssd: float
    t_low_s: float = _NAN
    t_high_s: float = _NAN


def reactivity(
    t_marker: float,
    grid_s: npt.ArrayLike,
    fast: npt.ArrayLike,
    t_s: npt.ArrayLike,
    rr_ms: npt.ArrayLike,
    span_ms: npt.ArrayLike | None = None,
    react_s: float = REACT_S,
) -> Reactivity:
    """:class:`Reactivity` of the ``react_s`` after ``t_marker``: the fast HR ``fast`` at
    whole seconds ``grid_s`` in ``(t_marker, t_marker + react_s]``, the beats for lnRMSSD.
    All NaN (no data) when the fast HR covers fewer than :data:`REACT_MIN_COVER` of those
    seconds."""
    g = np.asarray(grid_s, dtype=np.float64)
    f = np.asarray(fast, dtype=np.float64)
    sel = np.flatnonzero((g > t_marker) & (g <= t_marker + react_s) & np.isfinite(f))
    if sel.shape[0] == 0 or sel.shape[0] < REACT_MIN_COVER * react_s - 1e-9:
        return Reactivity(_NAN, _NAN, _NAN)  # too little fast HR: no data
    ln = ln_rmssd_between(t_s, rr_ms, t_marker, t_marker + react_s, span_ms)
    w = f[sel]
    i_lo, i_hi = int(np.argmin(w)), int(np.argmax(w))
    return Reactivity(float(w[i_lo]), float(w[i_hi]), ln, float(g[sel[i_lo]]), float(g[sel[i_hi]]))


def event_response(
    t_marker: float,
    kind: str,
    react: Reactivity,
    grid_s: npt.ArrayLike,
    fast: npt.ArrayLike,
    base_hr: tuple[float, float],
    base_ln_mean: float,
    react_s: float = REACT_S,
    recovery_max_s: float = RECOVERY_MAX_S,
) -> EventResponse:
    """Reactivity within ``react_s`` after a marker and recovery into the baseline band.

    ``base_hr`` is the mean and floored spread of the fast HR at the baseline's snapshots,
    ``base_ln_mean`` the baseline lnRMSSD mean. Peak ΔHR: the one of (lowest, highest fast HR
    in the window) − mean that is larger in size. Recovery: 0 if that peak is within
    :data:`LEFT_BAND_SPREADS` spreads of the mean (HR did not clearly leave the band); else
    the first whole second ``g`` after the peak (up to
    ``recovery_max_s`` after the marker) with the fast HR within the band, as
    ``g − t_marker``; searched in ``grid_s``/``fast`` (seconds not there yet: NaN, not back
    so far). A surge over at 10 s and one over at 29 s read 10 and 29 s."""
    mean, spread = base_hr
    d_lo, d_hi = react.hr_low - mean, react.hr_high - mean
    low_wins = abs(d_lo) > abs(d_hi)
    peak = d_lo if low_wins else d_hi
    t_peak = react.t_low_s if low_wins else react.t_high_s
    if not math.isfinite(peak):
        rec = _NAN
    elif abs(peak) <= LEFT_BAND_SPREADS * spread:
        rec = 0.0
    else:
        g = np.asarray(grid_s, dtype=np.float64)
        f = np.asarray(fast, dtype=np.float64)
        if not math.isfinite(t_peak):  # a Reactivity without times: search after the window
            t_peak = t_marker + react_s
        with np.errstate(invalid="ignore"):
            back = (g > t_peak) & (g <= t_marker + recovery_max_s) & (np.abs(f - mean) <= spread)
        after = np.flatnonzero(back)
        rec = float(g[after[0]] - t_marker) if after.size else _NAN
    return EventResponse(t_marker, kind, peak, react.ln_rmssd - base_ln_mean, rec)
