"""Beat classification and correction after Lipponen & Tarvainen (2019), run with ≤ 3 beats
of look-ahead, in batch (:func:`correct_rr`) and streaming (:class:`ArtefactCorrector`) form.

Both forms give identical results (tested): they compute the same features from the same
windows and share one decision function.

Features of beat ``i`` (raw RR ``rr[i]`` in ms, ``dRR[i] = rr[i] − rr[i−1]``)::

    med[i]   = median of rr[i−7 .. i+3]   (11 beats: 7 back, the beat, 3 ahead; lower median)
    mRRs[i]  = rr[i] − med[i], doubled when negative (short beats weigh double, as in the paper)
    th1[i]   = max(α · QD(|dRR|  of the last 91 beats judged normal), TH_FLOOR_MS)
    th2[i]   = max(α · QD(|mRRs| of the same beats), TH_FLOOR_MS)
    QD       = (x₍k₃₎ − x₍k₁₎) / 2, order statistics of the sorted window, k₁ = ⌊(n−1)/4⌋,
               k₃ = n − 1 − k₁  (no interpolation, so batch and streaming agree bit for bit)
    d_j      = dRR[j] / th1[i]  for j = i−1, i, i+1, i+2;   m = mRRs[i] / th2[i]

with α = 5.2, c1 = 0.13, c2 = 0.17 (the paper's constants). The paper centres its windows; here
the quartile windows end at the beat and the median window looks 3 beats ahead, so a beat is
final 3 beats after it arrived (≈ 3 s of latency at 60 beats/min).

Decision for beat ``i`` (beats already taken as the partner of an earlier event are skipped;
``p`` = previous corrected RR, ``d_j`` relative to it for ``j = i``)::

    candidate  |d_i| > 1  or  |m| > 3;  pair candidate also  |d_{i+1}| > 1
    usual(x)   = x if |x − med_c| < th2 else med_c  (a look-ahead beat used as a neighbour;
                 med_c = lower median of the last 7 corrected RR and rr[i .. i+3]: in a run
                 of bigeminy the raw median jumps between the short and the long intervals)
    s22        = min(d_{i+1}, d_{i+2}) if d_i ≥ 0 else max(d_{i+1}, d_{i+2})
    extra   : rr[i] < med, (d_i < −1 and s22 > 1 or |m| > 3) and |rr[i] + rr[i+1] − ref₂| < th2,
              ref₂ = (p + usual(rr[i+2])) / 2   (the merged interval fits its neighbours)
    missed  : rr[i] > med and |rr[i]/k − ref| < min(th2, 0.2·ref), k = max(2, round(rr[i]/ref)),
              ref = (p + usual(rr[i+1])) / 2   (the neighbours, not the 11-beat median: with
              strong sinus arrhythmia the median cannot tell a missed beat from a long one)
    ectopic : a displaced beat: the Lipponen–Tarvainen ectopic pattern at i or i+1, the pair
              sum fits its neighbours, |rr[i] + rr[i+1] − p − usual(rr[i+2])| < max(th2,
              0.1·(p + usual(rr[i+2]))),
              and fits better than the next pair (rr[i+1] + rr[i+2] vs rr[i] + rr[i+3]) or
              starts with the short beat (a premature beat comes first: in bigeminy both fit); the
              displacement of beat i from the interpolated split is > 0.25·th1, > 6 % of med
              (``PAIR_MIN_REL``) and opposite in sign to d_{i+1}
    long / short : an isolated jump that comes back: d_i > 1 and d_{i+1} < −1 (or the mirror),
              or d_i > 1, d_{i+1} ≤ 0, d_{i+2} < −1 (two-beat return), or |m| > 3 with the next
              beat moving back towards the median — and only if rr[i] departs from the mean
              of its neighbours by ≥ 15 % (``LONG_SHORT_MIN_REL``) and, where the next beat is
              the one that comes back, it undoes at least half the jump (``RETURN_MIN``:
              (rr[i] − rr[i+1]) / (rr[i] − p) ≥ 0.5); anything else is normal (a swing that
              persists or decays over several beats, a step followed by another step, or a
              single interval within the reach of sinus arrhythmia is sinus variability).
              Nor is beat i long or short when the next beat's jump starts an event of its
              own: beats i+1 and i+2 jump opposite ways (both |d| > 1) and their sum fits
              rr[i] + rr[i+3] (a displaced pair follows), or, after a long beat, their sum fits
              (rr[i] + usual(rr[i+3]))/2 within th2 (a split interval follows)

Corrections:

* **extra** → merge: rows ``i`` and ``i+1`` become one interval ``rr[i] + rr[i+1]`` (row ``i``
  keeps its raw value and gets ``rr_ms = NaN``: it is the spurious beat, removed).
* **missed** → split: ``k`` intervals, proportional to the linear interpolation between ``p``
  and ``usual(rr[i+1])``, summing exactly to ``rr[i]``; the ``k − 1`` inserted beats have
  ``rr_raw_ms = NaN``.
* **ectopic** → the displaced beat is moved: the pair keeps its sum ``S = rr[i] + rr[i+1]``
  and is split in the ratio ``(2p + n)/3 : (p + 2n)/3``, ``n = usual(rr[i+2])``. Total time is
  preserved, and so is the slow trend across the pair; published implementations instead
  interpolate each interval separately, which is where their RMSSD errors come from.
* **long / short** → ``(p + usual(rr[i+1])) / 2``. An uncompensated long or short interval has
  no partner to trade time with, so total time cannot be kept; the beat times are kept.

Given the plausible range (``rr_min_ms``, ``rr_max_ms``), a merge or split that would make an
interval outside it is not made (the beat is judged by the remaining rules), no displaced pair
includes an interval outside it, and an interval outside it that is neither merged nor split
is ``implausible``: the correction starts afresh after it (with the beats pushed after it),
as the offline analysis corrects the run after it without it.

The quartile windows are fed only by beats judged normal, with ``|dRR|`` taken to the
corrected previous beat: otherwise the jump back from an artefact widens the thresholds, and
in frequent ectopy (bigeminy) they grow until the ectopic beats pass as sinus.

Nothing is thrown away: every raw beat appears in the output with its raw value, the
corrected value and its class.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
from typing import Literal, NamedTuple, overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALPHA",
    "BEAT_CLASSES",
    "C1",
    "C2",
    "LOOKAHEAD_BEATS",
    "MISSED_SPAN",
    "ArtefactCorrector",
    "BeatClass",
    "CorrectedSeries",
    "ProcessedBeat",
    "correct_rr",
    "may_be_repaired",
]

BeatClass = Literal[
    "normal", "ectopic", "long", "short", "missed", "extra", "implausible", "warmup"
]
BEAT_CLASSES: tuple[BeatClass, ...] = (
    "normal",
    "ectopic",
    "long",
    "short",
    "missed",
    "extra",
    "implausible",
    "warmup",
)
"""All classes, in the order of their integer codes in :class:`CorrectedSeries`. The corrector
assigns the first six; the offline analysis keeps, for provenance but not analysed (``rr_ms``
NaN), as the daemon does, an interval outside the plausible range (``implausible``) and a
beat of the daemon's warm-up after a (re)connect in a Settle export (``warmup``)."""

ALPHA = 5.2
"""Threshold multiplier of the quartile deviation (Lipponen & Tarvainen 2019)."""
C1 = 0.13
"""Slope of the ectopic decision boundary (Lipponen & Tarvainen 2019)."""
C2 = 0.17
"""Offset of the ectopic decision boundary (Lipponen & Tarvainen 2019)."""
QD_WINDOW = 91
"""Beats in the quartile-deviation windows."""
MEDIAN_BACK = 7
"""Beats before the beat in the 11-beat median window."""
LOOKAHEAD_BEATS = 3
"""Beats after the beat in the median window; a beat is final this many beats later."""
MIN_HISTORY = 15
"""Corrected differences needed before the thresholds come from the corrected history."""
STARTUP_FRACTION = 0.1
"""Threshold as a fraction of the local median RR until ``MIN_HISTORY`` normal beats exist."""
PAIR_SHIFT = 0.25
"""Smallest displacement of a displaced beat, as a fraction of th1."""
MISSED_TOL = 0.2
"""Largest relative misfit of the parts of a split (missed) beat to the local reference."""
LONG_SHORT_MIN_REL = 0.15
"""Smallest departure of a long/short beat from its neighbours' mean, as a fraction of it."""
RETURN_MIN = 0.5
"""Share of a long/short beat's jump the next beat must undo (when it is the one that confirms)."""
PAIR_MIN_REL = 0.06
"""Smallest displacement of a displaced (ectopic) beat, as a fraction of the local median RR."""
MISSED_MAX_PARTS = 16
"""Most parts a split (missed) interval is cut into: MISSED_SPAN × 2000 ms in 250 ms beats.
Beside noise (an interval of a few µs as the median) the ratio ran to 10³⁰⁰ and the parts
list exhausted memory."""
MISSED_SPAN = 2.0
"""An interval above the plausible maximum (``rr_max_ms``) but within this many times it may
be beats the strap missed (one missed beat at any rate down to 30 beats/min, two down to 45):
the offline analysis and the daemon pass it to the correction, and leave it out (a gap) only
if the correction does not split it."""
TH_FLOOR_MS = 20.0
"""Smallest threshold, ms: keeps a perfectly regular series (QD = 0) from flagging every beat."""

_NAN = math.nan
_MED_SIZE = MEDIAN_BACK + 1 + LOOKAHEAD_BEATS
_insort = bisect.insort
_bisect_left = bisect.bisect_left
_CODE = {c: i for i, c in enumerate(BEAT_CLASSES)}
_IMPLAUSIBLE_CODE = _CODE["implausible"]


@overload
def may_be_repaired(
    rr_ms: float, prev_rr_ms: float, rr_min_ms: float, rr_max_ms: float
) -> bool: ...
@overload
def may_be_repaired(
    rr_ms: npt.NDArray[np.float64],
    prev_rr_ms: npt.NDArray[np.float64],
    rr_min_ms: float,
    rr_max_ms: float,
) -> npt.NDArray[np.bool_]: ...
def may_be_repaired(
    rr_ms: float | npt.NDArray[np.float64],
    prev_rr_ms: float | npt.NDArray[np.float64],
    rr_min_ms: float,
    rr_max_ms: float,
) -> bool | npt.NDArray[np.bool_]:
    """Whether an interval outside ``[rr_min_ms, rr_max_ms]`` (elementwise for an array) may
    be an artefact the correction repairs, and so goes to it instead of being left out:
    above ``rr_max_ms`` but within :data:`MISSED_SPAN` × it (beats the strap missed, split
    back), or above 0 and below ``rr_min_ms`` (a piece of an interval a spurious beat split,
    merged back). Only right after a plausible interval (``prev_rr_ms``, NaN for none): a run
    of out-of-range intervals, or short ones alternating with long ones, is a lost or noisy
    signal, and handed to the live correction such intervals filled its medians (after a
    burst of noise the next sinus beats were split into invented ones)."""
    over = (rr_ms > rr_max_ms) & (rr_ms <= MISSED_SPAN * rr_max_ms)
    under = (rr_ms > 0.0) & (rr_ms < rr_min_ms)
    return (over | under) & (prev_rr_ms >= rr_min_ms) & (prev_rr_ms <= rr_max_ms)


class ProcessedBeat(NamedTuple):
    """One beat after classification and correction (provenance kept).

    A named tuple rather than a frozen dataclass: the live path makes one per beat, and a
    frozen dataclass costs 0.9 µs to build against 0.3 µs.
    """

    t_s: float
    """Time of the beat closing the interval, s (for an inserted beat: interpolated)."""
    rr_raw_ms: float
    """The interval as received, ms; NaN for a beat inserted by splitting a missed beat."""
    rr_ms: float
    """The corrected interval, ms; NaN for a spurious (``extra``) beat that was merged away."""
    beat_class: BeatClass
    """``normal`` or the artefact class the beat belongs to."""


@dataclasses.dataclass(frozen=True, slots=True)
class CorrectedSeries:
    """A whole series after correction: one row per output beat (arrays of equal length)."""

    t_s: npt.NDArray[np.float64]
    """Beat times, s."""
    rr_raw_ms: npt.NDArray[np.float64]
    """Raw intervals, ms (NaN for inserted beats)."""
    rr_ms: npt.NDArray[np.float64]
    """Corrected intervals, ms (NaN for removed beats)."""
    code: npt.NDArray[np.int8]
    """Class codes, indices into :data:`BEAT_CLASSES`."""
    raw_index: npt.NDArray[np.int64]
    """Index of the raw beat each row comes from (inserted rows: the beat they were split from)."""

    @classmethod
    def from_rows(
        cls,
        t_s: npt.NDArray[np.float64],
        rr_raw_ms: npt.NDArray[np.float64],
        rr_ms: npt.NDArray[np.float64],
        code: npt.NDArray[np.int8],
    ) -> CorrectedSeries:
        """The series of these rows, ``raw_index`` counted from ``rr_raw_ms`` (NaN: inserted)."""
        is_raw = ~np.isnan(rr_raw_ms)
        raw_index = np.cumsum(is_raw) - 1
        # An inserted row belongs to the raw beat that follows it (the one it was split from).
        raw_index[~is_raw] += 1
        return cls(t_s, rr_raw_ms, rr_ms, code, raw_index.astype(np.int64))

    @property
    def n_flagged(self) -> int:
        """Raw beats whose class is not ``normal``."""
        keep = ~np.isnan(self.rr_raw_ms)
        return int(np.count_nonzero(self.code[keep] != 0))

    def by_class(self) -> dict[str, int]:
        """Raw beats per class (inserted rows not counted)."""
        keep = ~np.isnan(self.rr_raw_ms)
        counts = np.bincount(self.code[keep].astype(np.int64), minlength=len(BEAT_CLASSES))
        return {c: int(counts[i]) for i, c in enumerate(BEAT_CLASSES)}

    def classes(self) -> list[BeatClass]:
        """Class names per row."""
        return [BEAT_CLASSES[int(c)] for c in self.code]


def _lower_median(sorted_vals: list[float] | npt.NDArray[np.float64]) -> float:
    return float(sorted_vals[(len(sorted_vals) - 1) // 2])


_Row = tuple[float, float, float, int]  # t_s, raw, corrected, code


def _lt_ectopic(d: float, before: float, after: float) -> bool:
    """Lipponen–Tarvainen eq. 1/2 for a beat with normalised dRR ``d`` and neighbours.

    ``s12 = max(before, after)`` when ``d > 0`` else ``min(before, after)`` (NaN-aware): the
    beat's jump must be answered on both sides by jumps the other way.
    """
    if before != before:
        before = after
    if after != after:
        after = before
    if d > 1.0:
        return max(before, after) < -C1 * d - C2
    if d < -1.0:
        return min(before, after) > -C1 * d + C2
    return False


def _decide(
    t: tuple[float, float],
    r: tuple[float, float, float, float, float],
    p: float,
    dm1: float,
    med: float,
    th1: float,
    th2: float,
    med_c: float | None = None,
    lo: float = 0.0,
    hi: float = math.inf,
    startup: bool = False,
) -> tuple[list[_Row], bool]:
    """Classify beat i and correct it.

    ``t`` = times of beats i, i+1; ``r`` = raw RR of beats i−1 .. i+3 (NaN where absent);
    ``p`` = previous corrected RR (NaN if none); ``dm1`` = the difference before beat i
    (corrected where available). Returns the output rows for beat i (and for i+1 when it is
    taken as the partner of the event) and whether i+1 was taken. A merge or split is made
    only if every interval it makes lies within ``[lo, hi]`` (the plausible range).
    ``startup``: the thresholds are still the startup ones (too little corrected history);
    a beat is then not split while the raw next beat is about as long (:data:`MISSED_TOL`).
    """
    rm1, r0, r1, r2, r3 = r
    t0, t1 = t
    prev = p if p == p else rm1 if rm1 == rm1 else med
    d0 = (r0 - prev) / th1
    d1 = (r1 - r0) / th1  # NaN at the end of a segment: every comparison is then False
    ms = r0 - med
    m = (2.0 * ms if ms < 0.0 else ms) / th2
    candidate = abs(d0) > 1.0 or abs(m) > 3.0
    if not candidate and not abs(d1) > 1.0:
        return [(t0, r0, r0, 0)], False
    d2 = (r2 - r1) / th1

    mu = med if med_c is None else med_c

    def usual(x: float) -> float:
        # A look-ahead beat as a neighbour for interpolation: itself if near the median —
        # of the corrected past and the raw beats ahead (``med_c``): in a run of bigeminy the
        # raw median jumps between the short and the long intervals.
        return x if abs(x - mu) < th2 else mu

    n1 = usual(r1)
    if candidate:
        s22 = (min(d1, d2) if d2 == d2 else d1) if d0 >= 0.0 else max(d1, d2) if d2 == d2 else d1
        eq4 = abs(m) > 3.0
        eq5 = d0 < -1.0 and s22 > 1.0
        # The merged interval must fit its neighbours (the beats either side of the pair), not
        # the 11-beat median: within a swing of sinus arrhythmia the median is far off.
        ref = 0.5 * (prev + (usual(r2) if r2 == r2 else med))
        if r0 < med and (eq5 or eq4) and abs(r0 + r1 - ref) < th2 and lo <= r0 + r1 <= hi:
            return [(t0, r0, _NAN, 5), (t1, r1, r0 + r1, 5)], True
        ref = 0.5 * (prev + n1)
        q = r0 / ref if ref > 0.0 else math.inf
        k = max(2, round(q)) if q <= MISSED_MAX_PARTS else 0
        if (
            k
            and r0 > med
            and abs(r0 / k - ref) < min(th2, MISSED_TOL * ref)
            # Right after noise the median and the "usual" next beat can be the noise's
            # pieces (4 × 500 ms after a dropout): the first sinus 1000 ms looked like two
            # missed beats. Before the history exists, a next beat as long says it is not.
            and not (startup and abs(r1 - r0) < MISSED_TOL * r0)
        ):
            pv, nx = prev, n1  # the parts run from the previous beat to the usual next one
            if startup and k > 2 and r3 == r3:
                # Right after noise the past can be the noise's pieces (500 ms after a
                # dropout): a missed 2000 ms before 1000 ms beats came out as four parts.
                # Three beats ahead that agree with one another but not with the previous
                # beat may cut it into fewer parts; never into more, nor split what the
                # past would not (in a deep swing of sinus arrhythmia the previous beat and
                # the beats ahead are both right, and their mean is the reference).
                ahead = sorted((r1, r2, r3))
                m3 = ahead[1]
                if ahead[2] - ahead[0] < MISSED_TOL * m3 and abs(prev - m3) > MISSED_TOL * m3:
                    k3 = max(2, round(r0 / m3))
                    if k3 < k and abs(r0 / k3 - m3) < min(th2, MISSED_TOL * m3):
                        k, pv, nx = k3, m3, m3  # equal parts: the past is not trusted
            # The parts run linearly from p to usual(rr[i+1]), scaled to sum to rr[i]: the
            # first and last are the extremes (checked before the parts are built).
            scale = r0 / (k * 0.5 * (pv + nx))
            ends = (
                (pv + (nx - pv) / (k + 1)) * scale,
                (pv + (nx - pv) * k / (k + 1)) * scale,
            )
            if lo <= min(ends) and max(ends) <= hi:
                w = [pv + (nx - pv) * (j + 1) / (k + 1) for j in range(k)]
                scale = r0 / math.fsum(w)
                rows: list[_Row] = []
                t_start = t0 - r0 / 1000.0
                acc = 0.0
                for j in range(k):
                    part = w[j] * scale
                    acc += part
                    last = j == k - 1
                    rows.append(
                        (t0 if last else t_start + acc / 1000.0, r0 if last else _NAN, part, 4)
                    )
                return rows, False
    if r1 == r1 and (_lt_ectopic(d0, dm1, d1) or _lt_ectopic(d1, d0, d2)):
        n2 = usual(r2) if r2 == r2 else prev
        s = r0 + r1
        a = s * (2.0 * prev + n2) / (3.0 * (prev + n2))
        shift = r0 - a
        misfit = abs(s - prev - n2)
        # The displaced beat is the one whose pair sum fits best: not i+1 with i+2.
        nxt_misfit = abs(r1 + r2 - r0 - r3) if r3 == r3 else math.inf
        if (
            shift * d1 < 0.0
            # Both intervals plausible: an out-of-range one is repaired by a merge or a split
            # or left out, never traded against its neighbour.
            and lo <= r0 <= hi
            and lo <= r1 <= hi
            and abs(shift) > PAIR_SHIFT * th1
            # A compensated shift of a few per cent is within sinus rhythm's own beat-to-beat
            # alternation: on a calm stretch th1 alone would call it a displaced beat.
            and abs(shift) > PAIR_MIN_REL * med
            and misfit < max(th2, STARTUP_FRACTION * (prev + n2))
            # The pair whose sum fits best is the displaced one; in a run of bigeminy every
            # pair fits, and the premature beat comes first (short, then its pause).
            and (misfit <= nxt_misfit or r0 < r1)
        ):
            return [(t0, r0, a, 1), (t1, r1, s - a, 1)], True
    if not candidate:
        return [(t0, r0, r0, 0)], False
    # A single beat within LONG_SHORT_MIN_REL of its neighbours' mean is not called long or
    # short however sharp the jump looks against a calm stretch's thresholds: sinus
    # arrhythmia moves single intervals by that much (Malik's rule uses 20 %).
    ref = 0.5 * (prev + n1) if n1 == n1 else prev
    if abs(r0 - ref) < LONG_SHORT_MIN_REL * ref:
        return [(t0, r0, r0, 0)], False
    # The jump of the next beat is no return when that beat starts an event of its own: the
    # first beat of a displaced pair (it and the beat after jump opposite ways and together fill
    # the time between beats i and i+3), or the first part of a split interval after a long
    # beat (the two together fit between beats i and i+3). Beat i is then the sinus neighbour.
    if r3 == r3 and abs(d0) > 1.0 and abs(d1) > 1.0 and d0 * d1 < 0.0:
        if abs(d2) > 1.0 and d1 * d2 < 0.0:
            if abs(r1 + r2 - r0 - r3) < max(th2, STARTUP_FRACTION * med):
                return [(t0, r0, r0, 0)], False
        elif d0 > 0.0 and abs(r1 + r2 - 0.5 * (r0 + usual(r3))) < th2:
            return [(t0, r0, r0, 0)], False
    # An uncompensated long or short beat jumps away and the next beat (or the one after, for
    # a beat no further out than the next) comes back; a swing that persists is sinus. When
    # the next beat is the one that comes back it must undo at least RETURN_MIN of the jump:
    # an artefact leaves the sinus rhythm where it was, whereas a sinus lengthening (or
    # shortening) decays over several beats and its next beat stays nearer the beat itself.
    jump = r0 - prev
    back = (r0 - r1) / jump if jump != 0.0 else 0.0
    if ((d0 > 1.0 and d1 < -1.0) or (d0 < -1.0 and d1 > 1.0)) and back >= RETURN_MIN:
        return [(t0, r0, 0.5 * (prev + n1), 2 if d0 > 0.0 else 3)], False
    if (d0 > 1.0 and d1 <= 0.0 and d2 < -1.0) or (d0 < -1.0 and d1 >= 0.0 and d2 > 1.0):
        return [(t0, r0, 0.5 * (prev + n1), 2 if d0 > 0.0 else 3)], False
    if abs(m) > 3.0 and (d1 < -0.5 if ms > 0.0 else d1 > 0.5) and back >= RETURN_MIN:
        return [(t0, r0, 0.5 * (prev + n1), 2 if ms > 0.0 else 3)], False
    return [(t0, r0, r0, 0)], False


class _Features:
    """The sorted windows behind med, th1 and th2 (each a deque in arrival order and the same
    values kept sorted). :meth:`ArtefactCorrector._push_rows` feeds the median window and
    :meth:`ArtefactCorrector._decide_next` reads all three, inline: the hottest code of an
    offline analysis (a method call per beat cost a fifth of the correction's time)."""

    __slots__ = ("_adrr", "_adrr_q", "_ams", "_ams_q", "_med", "_med_q")

    def __init__(self) -> None:
        self._adrr: list[float] = []
        self._adrr_q: collections.deque[float] = collections.deque()
        self._ams: list[float] = []
        self._ams_q: collections.deque[float] = collections.deque()
        self._med: list[float] = []
        self._med_q: collections.deque[float] = collections.deque()

    def pop_front_median(self) -> None:
        """Shrink the median window from the front (end of stream: no beats ahead)."""
        old = self._med_q.popleft()
        del self._med[bisect.bisect_left(self._med, old)]

    def push_corrected(self, adrr: float, ams: float) -> None:
        """Add one corrected beat's |dRR| and |mRRs| (both finite) to the quartile windows."""
        q, s = self._adrr_q, self._adrr
        q.append(adrr)
        _insort(s, adrr)
        if len(q) > QD_WINDOW:
            del s[_bisect_left(s, q.popleft())]
        q, s = self._ams_q, self._ams
        q.append(ams)
        _insort(s, ams)
        if len(q) > QD_WINDOW:
            del s[_bisect_left(s, q.popleft())]


def _startup_thresholds(med: float) -> tuple[float, float]:
    """Thresholds for the first beats of a segment, ms: ``STARTUP_FRACTION · med`` (floored).

    A quartile deviation of a handful of beats is inflated by any artefact among them, so the
    first beats are judged against a fixed fraction of the local median instead.
    """
    th = max(STARTUP_FRACTION * med, TH_FLOOR_MS)
    return th, th


def _cut_ahead(
    window: list[float], r1: float, r2: float, r3: float, cut: int
) -> tuple[float, float, float, float]:
    """The look-ahead ``r1..r3`` without the beats from ``r{cut+1}`` on (NaN), and the lower
    median of the sorted median ``window`` without them: what beat i sees when its segment
    ends ``cut`` beats after it (as :meth:`ArtefactCorrector.flush` decides it)."""
    look = [r1, r2, r3]
    vals = window.copy()
    for j in range(cut, 3):
        x = look[j]
        if x == x:
            del vals[_bisect_left(vals, x)]
        look[j] = _NAN
    if not vals:  # nothing but those (a caller that pushed NaN): keep the window's
        vals = window
    return look[0], look[1], look[2], vals[(len(vals) - 1) >> 1]


class ArtefactCorrector:
    """Streaming classification and correction; see the module docstring for the rules.

    :meth:`push` takes one raw beat and returns the beats that became final (normally the one
    pushed ``LOOKAHEAD_BEATS`` beats earlier; two at once after an event with a partner).
    :meth:`flush` finalises the remaining beats (end of stream, or before a gap) and starts
    afresh, so that no feature spans the gap.

    A merge or split is made only if every interval it makes lies within ``[rr_min_ms,
    rr_max_ms]``: beside noise the medians can ask for one that no heart beats (a sinus beat
    split into 50 ms parts).
    """

    __slots__ = (
        "_base", "_feat", "_hi", "_hist", "_lo", "_n", "_next", "_p", "_pp", "_rr", "_skip", "_t",
    )  # fmt: skip

    def __init__(self, rr_min_ms: float = 0.0, rr_max_ms: float = math.inf) -> None:
        self._lo = rr_min_ms
        self._hi = rr_max_ms
        self._reset()

    def _reset(self) -> None:
        self._feat = _Features()
        self._rr: collections.deque[float] = collections.deque()  # beats _base .. newest
        self._t: collections.deque[float] = collections.deque()
        self._base = 0  # segment index of _rr[0]
        self._next = 0  # segment index of the next beat to decide
        self._n = 0  # beats pushed in this segment
        self._p = _NAN  # last corrected RR
        self._pp = _NAN  # the one before
        self._hist: collections.deque[float] = collections.deque(maxlen=MEDIAN_BACK)
        """The last corrected RRs (the past part of ``med_c``)."""
        self._skip = False

    @property
    def pending(self) -> int:
        """Beats pushed but not yet final."""
        return self._n - self._next

    def push(self, t_s: float, rr_ms: float) -> list[ProcessedBeat]:
        """Add the beat closing at ``t_s`` (s) with raw interval ``rr_ms`` (ms)."""
        rows: list[_Row] = []
        self._push_rows(float(t_s), float(rr_ms), rows)
        return [ProcessedBeat(r[0], r[1], r[2], BEAT_CLASSES[r[3]]) for r in rows]

    def flush(self) -> list[ProcessedBeat]:
        """Finalise every pending beat without look-ahead, then reset (e.g. before a gap)."""
        rows: list[_Row] = []
        self._flush_rows(rows)
        return [ProcessedBeat(r[0], r[1], r[2], BEAT_CLASSES[r[3]]) for r in rows]

    def _push_rows(self, t_s: float, rr: float, out: list[_Row]) -> None:
        # push() without the ProcessedBeat objects, for correct_rr (it collects plain rows).
        # The median window spans beats i−7 .. i+3 (see _Features).
        self._rr.append(rr)
        self._t.append(t_s)
        feat = self._feat
        q = feat._med_q
        q.append(rr)
        if rr == rr:
            _insort(feat._med, rr)
        if len(q) > _MED_SIZE:
            old = q.popleft()
            if old == old:
                med = feat._med
                del med[_bisect_left(med, old)]
        n = self._n = self._n + 1
        if n - self._next > LOOKAHEAD_BEATS:
            self._decide_next(out)

    def _flush_rows(self, out: list[_Row]) -> None:
        while self._next < self._n:
            # The median window of beat i is rr[i-7 .. i+3] clipped to the segment; past the
            # end no new beat pushes the oldest out, so drop it here.
            if self._next + LOOKAHEAD_BEATS >= self._n and self._next - MEDIAN_BACK - 1 >= 0:
                self._feat.pop_front_median()
            self._decide_next(out)
        self._reset()

    def _left_out(self, rows: list[_Row], j: int, k: int, out: list[_Row]) -> None:
        """Row ``j`` of beat ``k``'s decision holds an interval outside the plausible range
        that the correction neither merged nor split: it is ``implausible``, and the
        correction starts afresh after it, with the beats already pushed after it — as the
        offline analysis corrects the run after such an interval without it. (Kept, its
        corrected value and raw interval steered the beats after it: after noise a 200 ms
        piece taken as ``short`` made the next sinus beats split into 270 ms "missed" ones.)"""
        t, raw = rows[j][0], rows[j][1]
        out.extend(rows[:j])
        out.append((t, raw, _NAN, _IMPLAUSIBLE_CODE))
        after = k + 1 + j  # j = 1: the partner of a pair, beat k + 1
        pending = list(zip(list(self._t)[after:], list(self._rr)[after:], strict=True))
        self._reset()
        for tp, rp in pending:
            self._push_rows(tp, rp, out)

    def _decide_next(self, out: list[_Row]) -> None:
        i = self._next
        rr, tt = self._rr, self._t
        k = i - self._base  # beat i's place in the deques (they hold beats _base .. newest)
        n = len(rr)
        rm2 = rr[k - 2] if k >= 2 else _NAN
        rm1 = rr[k - 1] if k >= 1 else _NAN
        r0 = rr[k]
        r1 = rr[k + 1] if k + 1 < n else _NAN
        feat = self._feat
        sm = feat._med
        med = sm[(len(sm) - 1) >> 1]  # the lower median
        if self._skip:
            self._skip = False
        else:
            hi = self._hi
            r2 = rr[k + 2] if k + 2 < n else _NAN
            r3 = rr[k + 3] if k + 3 < n else _NAN
            if r1 > hi or r2 > hi or r3 > hi:
                # An over-long interval ahead (a dropout's, or a missed beat at a slow heart):
                # beat i is judged as if its segment ended before it. Seen, it took part in
                # the beat's median and jumps: an ectopic pair 700 + 1300 before a 2500 the
                # correction could not split came out `short` 995 + `normal` 1300 (0.3 s
                # invented). Not for a short piece: a spurious beat's pieces must be seen
                # to be merged.
                cut = 0 if r1 > hi else 1 if r2 > hi else 2
                r1, r2, r3, med = _cut_ahead(sm, r1, r2, r3, cut)
            sa = feat._adrr
            startup = len(feat._adrr_q) < MIN_HISTORY or not sa
            if startup:
                # Too little corrected history for thresholds: use the raw look-ahead ones.
                th1, th2 = _startup_thresholds(med)
            else:  # ALPHA × the quartile deviation of the corrected history, floored
                n_q = len(sa)
                k1 = (n_q - 1) >> 2
                th1 = ALPHA * 0.5 * (sa[n_q - 1 - k1] - sa[k1])
                if th1 < TH_FLOOR_MS:
                    th1 = TH_FLOOR_MS
                sb = feat._ams
                n_q = len(sb)
                k1 = (n_q - 1) >> 2
                th2 = ALPHA * 0.5 * (sb[n_q - 1 - k1] - sb[k1])
                if th2 < TH_FLOOR_MS:
                    th2 = TH_FLOOR_MS
            p = self._p
            prev = p if p == p else rm1 if rm1 == rm1 else med
            ms = r0 - med
            if (
                not abs((r0 - prev) / th1) > 1.0
                and not abs((r1 - r0) / th1) > 1.0
                and not abs((2.0 * ms if ms < 0.0 else ms) / th2) > 3.0
            ):
                # Neither a candidate nor the first of a pair (the common case): what _decide
                # returns for it, without building its arguments.
                rows: list[_Row] = [(tt[k], r0, r0, 0)]
                took = False
            else:
                ahead = [x for x in (r0, r1, r2, r3) if x == x]
                med_c = _lower_median(sorted([*self._hist, *ahead]))
                rows, took = _decide(
                    (tt[k], tt[k + 1] if r1 == r1 else _NAN),
                    (rm1, r0, r1, r2, r3),
                    p,
                    (p - self._pp if self._pp == self._pp else rm1 - rm2) / th1,
                    med,
                    th1,
                    th2,
                    med_c,
                    self._lo,
                    self._hi,
                    startup,
                )
            lo, hi = self._lo, self._hi
            if not lo <= r0 <= hi or (took and not lo <= r1 <= hi):  # rare: check each row
                for j, row in enumerate(rows):
                    raw = row[1]
                    if (raw < lo or raw > hi) and row[3] != 4 and row[3] != 5:
                        self._left_out(rows, j, k, out)
                        return
            if rows[0][3] != 0:  # an event: is every interpolated interval plausible?
                for j, row in enumerate(rows):
                    c = row[2]
                    if 1 <= row[3] <= 3 and not lo <= c <= hi and c == c:
                        # An interpolation between neighbours noise corrupted (a two-beat
                        # segment's median, say): not analysed, and not "the previous beat"
                        # the next one is judged against.
                        rows[j] = (row[0], row[1], _NAN, _IMPLAUSIBLE_CODE)
            if rows[0][3] == 0 and p == p:
                # Only beats judged normal feed the quartile windows, with their difference to
                # the corrected previous beat: artefacts, or the jump back from a raw one, would
                # widen the thresholds meant to catch them until frequent ectopy passes as sinus.
                feat.push_corrected(abs(r0 - p), abs(2.0 * ms if ms < 0.0 else ms))
            out.extend(rows)
            hist = self._hist
            for row in rows:
                c = row[2]
                if c == c:
                    self._pp, self._p = self._p, c
                    hist.append(c)
            self._skip = took
        self._next = i = i + 1
        if i - self._base > 2:
            base = self._base
            while i - base > 2:
                rr.popleft()
                tt.popleft()
                base += 1
            self._base = base


def correct_rr(
    t_s: npt.ArrayLike,
    rr_ms: npt.ArrayLike,
    *,
    rr_min_ms: float = 0.0,
    rr_max_ms: float = math.inf,
    released: list[int] | None = None,
) -> CorrectedSeries:
    """Classify and correct one unbroken series: :class:`ArtefactCorrector` (with the
    plausible range for its merges and splits) over all beats, then
    :meth:`~ArtefactCorrector.flush`, collected into arrays.

    ``released``, if given, gets one number per beat: how many rows were final once that
    beat was pushed (a streaming consumer saw them then; the rest came with the flush)."""
    t = np.asarray(t_s, dtype=np.float64)
    rr = np.asarray(rr_ms, dtype=np.float64)
    if t.shape != rr.shape or rr.ndim != 1:
        raise ValueError("t_s and rr_ms must be 1-D arrays of equal length")
    corr = ArtefactCorrector(rr_min_ms, rr_max_ms)
    rows: list[_Row] = []
    push = corr._push_rows
    if released is None:
        for ti, ri in zip(t.tolist(), rr.tolist(), strict=True):
            push(ti, ri, rows)
    else:
        for ti, ri in zip(t.tolist(), rr.tolist(), strict=True):
            push(ti, ri, rows)
            released.append(len(rows))
    corr._flush_rows(rows)
    if not rows:
        return collect([])
    tt, raw, corrected, code = zip(*rows, strict=True)
    return CorrectedSeries.from_rows(
        np.array(tt, dtype=np.float64),
        np.array(raw, dtype=np.float64),
        np.array(corrected, dtype=np.float64),
        np.array(code, dtype=np.int8),
    )


def collect(rows: list[ProcessedBeat]) -> CorrectedSeries:
    """Arrays from processed beats (``raw_index`` counts raw beats in ``rows``)."""
    n = len(rows)
    t = np.fromiter((b.t_s for b in rows), np.float64, n)
    raw = np.fromiter((b.rr_raw_ms for b in rows), np.float64, n)
    corr = np.fromiter((b.rr_ms for b in rows), np.float64, n)
    code = np.fromiter((_CODE[b.beat_class] for b in rows), np.int8, n)
    return CorrectedSeries.from_rows(t, raw, corr, code)
