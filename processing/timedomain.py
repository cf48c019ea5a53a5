"""Time-domain HRV: a batch function and an O(1)-per-beat rolling window.

Conventions (pinned; see ``docs/indices.md``):

* ``mean_rr_ms`` = mean(RR), ms; ``hr_bpm`` = 60000 / mean_rr_ms (not the mean of instantaneous HR).
* ``sdnn_ms`` = std(RR, ddof=1), ms (Task Force 1996).
* ``rmssd_ms`` = sqrt(mean(ΔRR²)), ms, over successive differences ΔRR_i = RR_i − RR_{i−1}.
* ``ln_rmssd`` = ln(rmssd_ms), natural log of the value in ms.
* ``pnn50_pct`` = 100 · #{|ΔRR| > 50 ms} / #ΔRR, % (denominator: number of differences);
  "more than 50 ms" with 1e-9 ms of tolerance for decimal data (:data:`NN50_THRESHOLD_MS`).
* A variance below :data:`NO_VARIABILITY_MS2` (10⁻⁶ ms², as the spectra's floor) is rounding
  noise: SDNN and RMSSD read 0 and lnRMSSD is undefined, as for an exactly constant series.

No artefact correction is applied here: RR values are used as given.

The rolling window (:class:`RollingTimeDomain`) holds the beats whose time ``t_s`` lies in
``(t_latest − window_s, t_latest]``; successive differences are taken only between consecutive
beats that are both inside the window and not separated by :meth:`RollingTimeDomain.reset`.
Its results equal :func:`time_domain` applied to exactly those beats, to ≤ 1e-12 relative
(see the class docstring for how that is guaranteed).
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "NN50_THRESHOLD_MS",
    "NO_VARIABILITY_MS2",
    "RollingTimeDomain",
    "TimeDomain",
    "time_domain",
]

NN50_MS = 50.0
"""pNN50 counts the successive differences of more than this, ms."""
NN50_THRESHOLD_MS = NN50_MS + 1e-9
"""A successive difference counts towards pNN50 when ``|ΔRR| > NN50_THRESHOLD_MS``: strictly
more than 50 ms, with a tolerance far below any RR resolution (1e-9 ms) for the binary
representation of decimal data: 512.2 − 462.2 is 50.00000000000006 in float64, and a file
alternating between the two read pNN50 ≈ 100 % instead of 0 %."""
NO_VARIABILITY_MS2 = 1e-6
"""A variance (ms²) below this is rounding noise, not variability: the same floor as the
spectra's (:data:`processing.spectral.NO_POWER_MS2`). RR 800 ms ± 1e-9 ms of noise read
lnRMSSD −20.4 where an exact constant has none."""

_NAN = math.nan
_EPS = 2.0**-53  # unit round-off of float64
_REL_TOL = 1e-12  # recompute exactly once the running error bound exceeds this, relative


@dataclasses.dataclass(frozen=True, slots=True)
class TimeDomain:
    """Time-domain HRV of one set of RR intervals. NaN where a value is undefined."""

    n: int
    """Number of RR intervals (beats) used."""
    mean_rr_ms: float
    """Mean RR interval, ms: ``sum(RR) / n``. NaN when ``n == 0``."""
    hr_bpm: float
    """Heart rate, beats/min: ``60000 / mean_rr_ms``. NaN when ``n == 0``."""
    sdnn_ms: float
    """Standard deviation of RR, ms, ``ddof=1``: ``sqrt(sum((RR - mean)²) / (n - 1))``.
    NaN when ``n < 2``."""
    rmssd_ms: float
    """Root mean square of successive differences, ms: ``sqrt(mean(ΔRR²))``.
    NaN when there is no successive difference."""
    ln_rmssd: float
    """Natural log of ``rmssd_ms`` (value in ms), dimensionless.
    NaN when ``rmssd_ms`` is NaN or 0 (a flat series has no finite log)."""
    pnn50_pct: float
    """Share of successive differences with ``|ΔRR| > 50 ms``, %: ``100 · NN50 / #ΔRR``.
    NaN when there is no successive difference. (NeuroKit2 divides by ``#ΔRR + 1``.)"""
    n_diff: int = 0
    """Number of successive differences used (``n − 1`` for one unbroken segment)."""


def _from_sums(
    n: int, mean_rr_ms: float, var_num: float, n_diff: int, sum_sq_diff: float, nn50: int
) -> TimeDomain:
    """Assemble a :class:`TimeDomain` from sufficient statistics.

    ``var_num`` is ``sum((RR - mean)²)`` in ms², ``sum_sq_diff`` is ``sum(ΔRR²)`` in ms².
    A mean square below :data:`NO_VARIABILITY_MS2` reads 0 (rounding noise).
    """
    if n == 0:
        return TimeDomain(0, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, 0)
    hr_bpm = 60000.0 / mean_rr_ms if mean_rr_ms != 0.0 else _NAN
    sdnn_ms = math.sqrt(_floored(var_num / (n - 1))) if n >= 2 else _NAN
    if n_diff > 0:
        rmssd_ms = math.sqrt(_floored(sum_sq_diff / n_diff))
        ln_rmssd = math.log(rmssd_ms) if rmssd_ms > 0.0 else _NAN
        pnn50_pct = 100.0 * nn50 / n_diff
    else:
        rmssd_ms = ln_rmssd = pnn50_pct = _NAN
    return TimeDomain(n, mean_rr_ms, hr_bpm, sdnn_ms, rmssd_ms, ln_rmssd, pnn50_pct, n_diff)


def _floored(mean_square_ms2: float) -> float:
    """``mean_square_ms2``, or 0 when below :data:`NO_VARIABILITY_MS2` (NaN stays NaN)."""
    if mean_square_ms2 < NO_VARIABILITY_MS2:  # negative rounding too; NaN compares False
        return 0.0
    return mean_square_ms2


def _unbroken_diffs(rr: npt.NDArray[np.float64], breaks: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``np.diff(rr)`` without the differences across ``breaks`` (see :func:`time_domain`)."""
    diff = np.diff(rr)
    b = np.asarray(breaks, dtype=np.intp)
    if b.size == 0:
        return diff
    if np.any((b < 1) | (b >= rr.size)):
        raise ValueError("breaks must be indices 1 .. n-1")
    keep = np.ones(diff.size, dtype=bool)
    keep[b - 1] = False
    out: npt.NDArray[np.float64] = diff[keep]
    return out


def time_domain(rr_ms: npt.ArrayLike, *, breaks: npt.ArrayLike = ()) -> TimeDomain:
    """Time-domain HRV of a series of RR intervals.

    Parameters
    ----------
    rr_ms : array_like, 1-D
        RR intervals in milliseconds, in beat order. Every consecutive pair forms a
        successive difference, except across a break.
    breaks : array_like of int, optional
        Indices ``i`` (``1 ≤ i < n``) of beats that follow a break (a gap, an interval left
        out): the difference ``rr[i] − rr[i−1]`` is not used. SDNN and the mean use every beat.

    Returns
    -------
    TimeDomain
        See the field docstrings for formulas and units. NaN inputs propagate to NaN outputs.
    """
    rr = np.asarray(rr_ms, dtype=np.float64)
    if rr.ndim != 1:
        raise ValueError(f"rr_ms must be 1-D, got shape {rr.shape}")
    n = int(rr.size)
    if n == 0:
        return _from_sums(0, _NAN, _NAN, 0, _NAN, 0)
    mean_rr_ms = float(np.mean(rr))
    # Corrected two-pass (Chan, Golub & LeVeque 1983): the second term removes the rounding
    # error of the mean, so that e.g. a constant series gives exactly 0.
    dev = rr - mean_rr_ms
    var_num = float(np.sum(dev * dev) - np.sum(dev) ** 2 / n) if n >= 2 else _NAN
    diff = _unbroken_diffs(rr, breaks)
    if np.isnan(mean_rr_ms):
        return TimeDomain(n, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, int(diff.size))
    return _from_sums(
        n,
        mean_rr_ms,
        var_num,
        int(diff.size),
        float(np.sum(diff * diff)),
        int(np.count_nonzero(np.abs(diff) > NN50_THRESHOLD_MS)),
    )


@dataclasses.dataclass(slots=True)
class _Beat:
    t_s: float
    rr_ms: float
    dev: float  # rr_ms - reference, ms (reference fixed since the last exact recomputation)
    dev_sq: float  # dev², ms²
    diff_sq: float  # ΔRR² to the previous beat in the window, ms²; NaN when there is none
    nn50: int  # 1 when |ΔRR| > 50 ms, else 0


class RollingTimeDomain:
    """Time-domain HRV over a sliding time window, updated beat by beat in O(1) amortised.

    The window holds the beats with ``t_s`` in ``(t_latest − window_s, t_latest]``, where
    ``t_s`` is the time of the beat closing each interval (seconds on any monotonic clock
    chosen by the caller). A successive difference is counted only while *both* its beats are
    in the window. :meth:`reset` empties the window: call it at an explicit gap in the beat
    stream, so that no difference spans the gap.

    Numerical method
        Running sums over a deque: ``S1 = Σ(RR − ref)``, ``S2 = Σ(RR − ref)²``, ``D2 = ΣΔRR²``
        and the NN50 count (exact integer). Each sum keeps a first-order bound on its
        accumulated rounding error (``u·|S|`` per add/remove, ``u = 2⁻⁵³``), to which the
        per-term rounding and the cancellation in ``S2 − S1²/n`` are added. When any bound
        exceeds ``1e-12`` of the quantity it protects, the sums are recomputed exactly from the
        deque (``math.fsum``, two-pass, ``ref`` moved to the window mean). On real RR this
        happens every several thousand beats, so the cost stays O(1) amortised; on adversarial
        input (e.g. a window collapsing to a constant right after a huge jump) it can happen
        more often, but results stay within ``1e-12`` relative of :func:`time_domain`.

    Parameters
    ----------
    window_s : float
        Window length in seconds (> 0). Default 60 s.
    """

    __slots__ = (
        "_acc_d2",
        "_acc_s1",
        "_acc_s2",
        "_beats",
        "_d2",
        "_n_diff",
        "_nn50",
        "_ref",
        "_s1",
        "_s2",
        "_t_latest",
        "window_s",
    )

    def __init__(self, window_s: float = 60.0) -> None:
        if not (math.isfinite(window_s) and window_s > 0.0):
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
        self.window_s = float(window_s)
        self._beats: collections.deque[_Beat] = collections.deque()
        self.reset()

    def reset(self) -> None:
        """Forget every beat: the next :meth:`update` starts a new window and a new segment."""
        self._beats.clear()
        self._t_latest = -math.inf
        self._ref = 0.0
        self._s1 = self._s2 = self._d2 = 0.0
        self._acc_s1 = self._acc_s2 = self._acc_d2 = 0.0
        self._n_diff = 0
        self._nn50 = 0

    def update(self, t_s: float, rr_ms: float) -> TimeDomain:
        """Add one beat and return the statistics of the window ending at it.

        Parameters
        ----------
        t_s : float
            Time of the beat closing the interval, seconds; must not go backwards.
        rr_ms : float
            The RR interval in milliseconds; finite and > 0.
        """
        self.add(t_s, rr_ms)
        return self._result(allow_recompute=True)

    def add(self, t_s: float, rr_ms: float) -> None:
        """:meth:`update` without computing the statistics (a caller that reads them only
        now and then, through :meth:`snapshot`: the live path adds every beat and reads the
        window every 5 s). The rounding bounds keep accumulating; the next :meth:`snapshot`
        checks them and recomputes the sums exactly from the window's beats if needed."""
        if not (math.isfinite(rr_ms) and rr_ms > 0.0):
            raise ValueError(f"rr_ms must be a finite positive number of ms, got {rr_ms!r}")
        if not math.isfinite(t_s) or t_s < self._t_latest:
            raise ValueError(f"t_s must be finite and non-decreasing, got {t_s!r}")
        self._t_latest = t_s
        beats = self._beats
        eps = _EPS

        # Evict beats that left the window; the new front beat loses its difference.
        cutoff = t_s - self.window_s
        while beats and beats[0].t_s <= cutoff:
            old = beats.popleft()
            self._s1 -= old.dev
            self._s2 -= old.dev_sq
            self._acc_s1 += eps * abs(self._s1)
            self._acc_s2 += eps * self._s2
            if beats:
                front = beats[0]
                if front.diff_sq == front.diff_sq:  # not NaN
                    self._d2 -= front.diff_sq
                    self._acc_d2 += eps * abs(self._d2)
                    self._n_diff -= 1
                    self._nn50 -= front.nn50
                    front.diff_sq = _NAN
                    front.nn50 = 0

        if not beats:
            # Empty window: re-anchor the sums at this beat, which makes them exact again.
            self._ref = rr_ms
            self._s1 = self._s2 = self._d2 = 0.0
            self._acc_s1 = self._acc_s2 = self._acc_d2 = 0.0
            self._n_diff = self._nn50 = 0

        dev = rr_ms - self._ref
        dev_sq = dev * dev
        if beats:
            diff = rr_ms - beats[-1].rr_ms
            diff_sq = diff * diff
            nn50 = 1 if abs(diff) > NN50_THRESHOLD_MS else 0
            self._d2 += diff_sq
            self._acc_d2 += eps * self._d2
            self._n_diff += 1
            self._nn50 += nn50
        else:
            diff_sq = _NAN
            nn50 = 0
        beats.append(_Beat(t_s, rr_ms, dev, dev_sq, diff_sq, nn50))
        self._s1 += dev
        self._s2 += dev_sq
        self._acc_s1 += eps * abs(self._s1)
        self._acc_s2 += eps * self._s2

    def snapshot(self) -> TimeDomain:
        """Statistics of the current window, without adding a beat."""
        return self._result(allow_recompute=True)

    def __len__(self) -> int:
        """Number of beats in the window."""
        return len(self._beats)

    def _result(self, *, allow_recompute: bool) -> TimeDomain:
        n = len(self._beats)
        if n == 0:
            return _from_sums(0, _NAN, _NAN, 0, _NAN, 0)
        s1, s2, d2 = self._s1, self._s2, self._d2
        shift = s1 / n
        mean_rr_ms = self._ref + shift
        var_num = s2 - s1 * shift
        if allow_recompute:
            eps = _EPS
            # First-order error bounds (see the class docstring).
            err_s1 = self._acc_s1 + eps * math.sqrt(n * s2)
            err_mean = err_s1 / n + eps * abs(mean_rr_ms)
            err_var = (
                self._acc_s2
                + 2.0 * abs(shift) * err_s1
                + eps * (3.0 * s2 + 2.0 * math.sqrt(max(var_num, 0.0) * s2))
            )
            limit = _REL_TOL
            if (
                err_mean > limit * abs(mean_rr_ms)
                or (n >= 2 and err_var > limit * var_num)
                or self._acc_d2 > limit * d2
            ):
                self._recompute()
                return self._result(allow_recompute=False)
        return _from_sums(n, mean_rr_ms, var_num, self._n_diff, d2, self._nn50)

    def _recompute(self) -> None:
        """Exact recomputation of the running sums from the deque; O(window)."""
        beats = self._beats
        n = len(beats)
        ref = math.fsum(b.rr_ms for b in beats) / n
        for b in beats:
            b.dev = b.rr_ms - ref
            b.dev_sq = b.dev * b.dev
        self._ref = ref
        self._s1 = math.fsum(b.dev for b in beats)
        self._s2 = math.fsum(b.dev_sq for b in beats)
        self._d2 = math.fsum(b.diff_sq for b in beats if b.diff_sq == b.diff_sq)
        # fsum is correctly rounded: half an ulp is left per sum.
        self._acc_s1 = 0.5 * _EPS * abs(self._s1)
        self._acc_s2 = 0.5 * _EPS * self._s2
        self._acc_d2 = 0.5 * _EPS * self._d2
