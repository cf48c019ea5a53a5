"""Poincaré SD1/SD2 and DFA α1 (numpy only).

* ``SD1 = sqrt(var(ΔRR)/2)``, ddof = 1 — the spread across the identity line.
* ``SD2 = std((RR_n + RR_{n+1})/√2)``, ddof = 1, over the ``n − 1`` successive pairs — the
  spread along it. This equals ``sqrt(2·var(RR) − var(ΔRR)/2)`` when both variances are taken
  over the same pairs; it is the rotated-axis form NeuroKit2 and pyhrv use, and differs from
  the whole-series identity by ``O(1/n)`` (0.2 % on a 5-minute record).
* DFA α1: profile ``y = cumsum(RR − mean)``, non-overlapping boxes of ``n = 4 … 16`` beats,
  least-squares line removed per box, ``F(n) = sqrt(mean residual²)``; α1 = slope of
  ``log F`` on ``log n`` (Peng et al. 1995). Across a gap (``breaks``) each run is its own
  series: no box spans one.
* A variance below :data:`processing.timedomain.NO_VARIABILITY_MS2` (10⁻⁶ ms²) is rounding
  noise: SD1/SD2 read 0 and α1 is undefined, as for an exactly constant series (RR 800 ms
  ± 1e-9 ms of noise read α1 0.61, the exponent of the noise).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from processing.timedomain import NO_VARIABILITY_MS2

__all__ = ["dfa_alpha1", "poincare"]


def poincare(rr_ms: npt.ArrayLike, *, breaks: npt.ArrayLike = ()) -> tuple[float, float]:
    """``(SD1, SD2)`` in ms from the pairs of successive beats (NaN with fewer than 2 pairs);
    ``breaks`` as in :func:`processing.timedomain.time_domain`: no pair spans one."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    if rr.size < 3:
        return math.nan, math.nan
    keep = np.ones(rr.size - 1, dtype=bool)
    b = np.asarray(breaks, dtype=np.intp)
    if b.size:
        keep[b - 1] = False
    if np.count_nonzero(keep) < 2:
        return math.nan, math.nan
    x1 = np.diff(rr)[keep] / math.sqrt(2.0)
    x2 = (rr[1:] + rr[:-1])[keep] / math.sqrt(2.0)
    v1, v2 = (float(np.var(x, ddof=1)) for x in (x1, x2))
    return (
        math.sqrt(v1) if not v1 < NO_VARIABILITY_MS2 else 0.0,
        math.sqrt(v2) if not v2 < NO_VARIABILITY_MS2 else 0.0,
    )


def dfa_alpha1(
    rr_ms: npt.ArrayLike, n_min: int = 4, n_max: int = 16, *, breaks: npt.ArrayLike = ()
) -> float:
    """Short-term DFA exponent over boxes of ``n_min … n_max`` beats (NaN if too short).

    ``breaks`` as in :func:`processing.timedomain.time_domain`: each unbroken run gets its own
    profile (from its own mean) and its own boxes, so no box spans a gap; ``F(n)`` pools the
    residuals of every run's boxes. NaN unless there are at least two boxes of ``n_max`` beats,
    and NaN for a series without variability (variance about each run's mean below
    :data:`~processing.timedomain.NO_VARIABILITY_MS2`): its α1 would be that of rounding noise.
    """
    rr = np.asarray(rr_ms, dtype=np.float64)
    b = np.asarray(breaks, dtype=np.intp)
    if b.size and (b.min() < 1 or b.max() > rr.size - 1):
        raise ValueError("breaks must be indices 1 .. n-1")
    edges = np.concatenate([[0], np.unique(b), [rr.size]])
    lengths = np.diff(edges)
    if int(np.sum(lengths // n_max)) < 2:
        return math.nan
    # Each run's profile, from its own mean, laid end to end (one cumulative sum, restarted).
    run = np.repeat(np.arange(lengths.size), lengths)
    means = np.add.reduceat(rr, edges[:-1]) / lengths
    dev = rr - means[run]
    if not float(np.mean(dev * dev)) >= NO_VARIABILITY_MS2:
        return math.nan
    c = np.cumsum(dev)
    y = c - np.concatenate([[0.0], c[edges[1:-1] - 1]])[run]
    ns = np.arange(n_min, n_max + 1)
    fl = np.empty(ns.size)
    for j, n in enumerate(ns.tolist()):
        # Box starts: a, a+n, ... within each run of n beats or more.
        per_run = lengths // n
        starts = np.repeat(edges[:-1], per_run) + n * (
            np.arange(int(per_run.sum())) - np.repeat(np.cumsum(per_run) - per_run, per_run)
        )
        boxes = np.lib.stride_tricks.sliding_window_view(y, n)[starts]
        k = np.arange(n, dtype=np.float64) - 0.5 * (n - 1)
        slope = (boxes @ k) / float(k @ k)
        resid = boxes - boxes.mean(axis=1, keepdims=True) - slope[:, None] * k
        fl[j] = math.sqrt(float(np.mean(resid * resid)))
    if np.any(fl <= 0):
        return math.nan
    return float(np.polyfit(np.log(ns), np.log(fl), 1)[0])
