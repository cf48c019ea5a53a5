"""The live facade the daemon calls: beats in, finalised beats and index snapshots out.

Pure and synchronous: no I/O, no asyncio, no clock — every call takes the time ``t_s``
(seconds on the session's beat clock, non-decreasing). Usage::

    la = LiveAnalyzer()                       # defaults: 60 s window, 2 min baseline
    beats = la.push_beat(t_s, rr_ms)          # -> list[ProcessedBeat], final after ≤ 3 beats
    snap = la.indices(t_s)                    # -> IndicesSnapshot (call every 5 s)
    la.marker(t_s, "shame")                   # event-locked response; "hold-start" restarts
                                              #   the catching-up search
    la.start_baseline(t_s); la.stop_baseline(t_s)   # explicit rest period
    la.gap(t_s)                               # an explicit gap: no metric spans it

Per beat: artefact classification/correction (3 beats of look-ahead), 60 s rolling time
domain on corrected beats, rhythm-quality counters. Per :meth:`LiveAnalyzer.indices` call:
the 64 s coherence window and 120 s spectral window are recomputed (≤ 2 ms, see
``benchmarks/bench_processing.py``), the settling score is updated against the baseline,
the trend and catching-up state are refreshed.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from processing.artefacts import ArtefactCorrector, ProcessedBeat
from processing.indices import (
    CATCH_HOLD_S,
    CATCH_THRESHOLD,
    FAST_HALF_S,
    REACT_S,
    RECOVERY_MAX_S,
    SPREAD_FLOORS,
    Baseline,
    CatchingUp,
    EventResponse,
    Reactivity,
    Trend,
    event_response,
    fast_hr,
    mean_spread,
    reactivity,
    trend,
)
from processing.spectral import (
    FS_HZ,
    INDICES_MAX_HZ,
    band_powers,
    coherence_from_psd,
    periodograms,
    resample_cubic,
    spline_power_gain,
)
from processing.timedomain import RollingTimeDomain, TimeDomain

__all__ = ["BaselineStatus", "IndicesSnapshot", "LiveAnalyzer", "ProcessedBeat"]

BaselineStatus = Literal["collecting", "complete"]
WARMING_UP_REASON = "not enough beats yet"
"""The reason given while the window holds too few beats to compute anything."""
IRREGULAR_SHARE_MAX = 0.2
"""A window whose share of corrected beats exceeds this is an unusable (non-sinus) rhythm."""
SERIES_KEEP_S = 120.0
"""Fast HR kept for markers entered this late (e.g. from a journal during the session), s."""
FAST_KEEP_MAX_S = RECOVERY_MAX_S + SERIES_KEEP_S
"""The fast HR is never kept longer than this, s: a marker's reactivity is taken as soon as
its 30 s are in, its recovery searched for ``RECOVERY_MAX_S`` after the marker."""
JUMP_REL = 0.2
"""An interval that differs from the one before by more than this fraction of it is a jump
(Malik's 20 % rule)."""
JUMP_SHARE_MAX = 0.5
"""A window where more than this share of successive intervals jump is an unusable rhythm,
whatever the correction flagged: bigeminy or trigeminy that the correction, restarted in
the middle of it (a reconnect), learns as the normal rhythm. Sinus recordings stay below
0.13 and the labelled sets with 5 % artefacts at most 0.26; the PVC recording is ≥ 0.74."""
QUALITY_BEATS = 120
"""Beats over which the corrected share is counted."""
MIN_WINDOW_BEATS = 10
"""Beats the rolling window needs before a snapshot is usable (fewer: warming up)."""
SETTLING_K = 2.0
"""Default ``k`` of the settling score, ``50 + 50·tanh(mean z / k)``."""
BASELINE_MIN_SAMPLES = 3
"""Indices samples (one every ``indices_every_s``) a marked baseline needs; fewer and
:meth:`LiveAnalyzer.stop_baseline` discards it for the automatic baseline."""
_NAN = math.nan


@dataclasses.dataclass(frozen=True, slots=True)
class IndicesSnapshot:
    """Everything the feedback shows at one time. NaN / None where not (yet) defined."""

    t_s: float
    """Time of the snapshot, s."""
    td: TimeDomain
    """60 s rolling time domain of the corrected beats (see :class:`TimeDomain`)."""
    coherence: float
    """McCraty coherence ratio of the last 64 s, dimensionless."""
    resp_rate_bpm: float
    """Respiration rate from the RSA peak of the last 120 s, breaths/min."""
    lf_ms2: float
    """LF power (0.04–0.15 Hz) of the last 120 s, ms²."""
    hf_ms2: float
    """HF power (0.15–0.4 Hz) of the last 120 s, ms²."""
    lf_hf: float
    """LF/HF of the last 120 s."""
    score: float
    """Settling score 0–100 (50 = as at baseline); NaN while the baseline is collected."""
    z_hr: float
    """Component: HR below baseline, baseline-spread units."""
    z_ln_rmssd: float
    """Component: lnRMSSD above baseline, baseline-spread units."""
    z_slow: float
    """Component: ln LF power (64 s) above baseline, baseline-spread units."""
    trend: Trend
    """Trend of the score over the last 5 min."""
    quality: float
    """Signal quality 0–1: ``(1 − corrected share) · coverage · contact share``."""
    usable: bool
    """False when the rhythm is not sinus enough to interpret (or no data)."""
    reason: str | None
    """Why not usable, one short sentence; None when usable."""
    warming_up: bool
    """Not usable only because too few beats arrived yet (session start, after a
    reconnect): a wait, not an unusable rhythm."""
    catching_up_t_s: float | None
    """Detected catching-up time, s (None until detected)."""
    baseline: BaselineStatus
    """Baseline state."""
    responses: tuple[EventResponse, ...]
    """Event-locked responses of the markers so far (those whose 30 s after them are in the
    finalised beats, and the baseline complete)."""
    lf64_ms2: float = _NAN
    """LF power (0.04–0.15 Hz) of the 64 s coherence window, ms²: the input of ``z_slow``
    (with ``td.hr_bpm`` and ``td.ln_rmssd`` what a baseline is taken from)."""


JUMP_PHRASE = "differ from the one before by more than"
"""The words that mark a :func:`jump_reason` (reports tell the two rules apart by them)."""


def jump_reason(share: float, *, recent: bool = True) -> str:
    """Why a window (``recent``) or a recording with this share of jumping intervals is not
    interpreted."""
    what = "recent intervals" if recent else "intervals"
    return f"irregular rhythm: {100 * share:.0f} % of {what} {JUMP_PHRASE} {100 * JUMP_REL:.0f} %"


def not_sinus_reason(share: float, *, recent: bool = True) -> str:
    """Why a window (``recent``) or a recording with this share of corrected beats is not
    interpreted."""
    what = "recent beats" if recent else "beats"
    return f"irregular rhythm: {100 * share:.0f} % of {what} are not sinus"


class LiveAnalyzer:
    """Live HRV, artefact correction and settling for one strap (see module docstring)."""

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        baseline_s: float = 120.0,
        correction: bool = True,
        coherence_window_s: float = 64.0,
        spectral_window_s: float = 120.0,
        trend_window_s: float = 300.0,
        k: float = SETTLING_K,
        catch_threshold: float = CATCH_THRESHOLD,
        catch_hold_s: float = CATCH_HOLD_S,
        rr_max_ms: float = math.inf,
        rr_min_ms: float = 0.0,
    ) -> None:
        self.window_s = window_s
        self.rr_max_ms = rr_max_ms
        """Above this a final beat is analysed only if the correction split it (``missed``);
        otherwise it becomes ``implausible`` and the windows restart, as after :meth:`gap`.
        The caller passes such beats (:func:`processing.artefacts.may_be_repaired`) instead of
        leaving them out, so that a missed beat at a slow heart is split, not a gap."""
        self.rr_min_ms = rr_min_ms
        """Below this likewise, unless the correction merged it (``extra``: a piece of an
        interval a spurious beat split). A beat whose *corrected* interval falls outside
        ``[rr_min_ms, rr_max_ms]`` (an interpolation between neighbours noise corrupted) is
        implausible too: nothing outside the plausible range is ever analysed."""
        self.baseline_s = baseline_s
        self.correction = correction
        self.coherence_window_s = coherence_window_s
        self.spectral_window_s = spectral_window_s
        self.trend_window_s = trend_window_s
        self.k = k
        self._corr = ArtefactCorrector(rr_min_ms, rr_max_ms)
        self._td = RollingTimeDomain(window_s)
        # The quality's coverage is counted over the rolling window: its beats are kept too
        # (with window_s = 300 s a clean recording read 0.44 against 0.99 from `settle analyze`).
        keep = max(coherence_window_s, spectral_window_s, window_s) + 10.0
        self._keep_s = keep
        self._beats: collections.deque[tuple[float, float]] = collections.deque()
        self._flags: collections.deque[int] = collections.deque(maxlen=QUALITY_BEATS)
        self._contact: collections.deque[int] = collections.deque(maxlen=QUALITY_BEATS)
        self._jumps: collections.deque[int] = collections.deque(maxlen=QUALITY_BEATS)
        """1 per analysed raw interval that jumped (:data:`JUMP_REL`) from the analysed one
        before it; kept across gaps. Counted on final beats, so a piece of noise that ends
        up implausible does not count (as in ``settle analyze``)."""
        self._prev_raw = _NAN
        self._base = Baseline()
        self._base_from: float | None = None
        self._base_until: float | None = None
        self._base_state: BaselineStatus = "collecting"
        self._catch = CatchingUp(catch_threshold, catch_hold_s)
        self._scores: collections.deque[tuple[float, float]] = collections.deque()
        self._fast: collections.deque[float] = collections.deque()
        """Fast HR (:func:`processing.indices.fast_hr`) at every whole second still needed
        for marker responses; the last is second ``_fast_next − 1``."""
        self._fast_next: int | None = None
        """The next whole second of fast HR to compute (None before the first beat)."""
        self._tail: list[tuple[float, float]] = []
        """Beats from before the last gap that the fast HR or a reactivity still needs."""
        self._base_fast: list[float] = []
        """Fast HR at the baseline's snapshots (its band for the recovery)."""
        self._base_fast_t: list[int] = []
        """Baseline snapshot seconds whose fast HR is not in yet (needs beats 2 s later)."""
        self._markers: list[_Pending] = []
        """Markers whose response is not final yet."""
        self._final: list[EventResponse] = []
        """Responses that can no longer change (recovered, or the search ran out)."""
        self._prev_snap_t: float | None = None
        """Time of the previous snapshot (a snapshot stands for the step since it)."""
        self._irregular_steps: collections.deque[tuple[float, float]] = collections.deque()
        """(previous snapshot, snapshot) times of the recent snapshots whose rhythm was too
        irregular to read (not warming up): a response whose 30 s overlap one is not read."""
        self._segment_start: float | None = None
        self._last_t = -math.inf
        self._last_raw_t = -math.inf
        """Time of the last raw beat pushed (placement check of the next one)."""

    # -- beats -------------------------------------------------------------------------
    def push_beat(
        self, t_s: float, rr_ms: float, contact: bool | None = None
    ) -> list[ProcessedBeat]:
        """Add one raw beat; returns the beats that became final (≤ 3 beats later).

        A beat that closes less than half its interval after the previous one (or before it)
        cannot be placed on the same time line — beats delivered in a burst after a host stall
        and pulled back to their arrival, say: it starts a new segment, as after :meth:`gap`
        (the beats before it are finalised and returned with it)."""
        done: list[ProcessedBeat] = []
        if self._segment_start is not None and t_s - self._last_raw_t < 0.5 * rr_ms / 1000.0:
            done = self.gap(t_s)
        self._last_raw_t = t_s
        if self._segment_start is None:
            self._segment_start = t_s - rr_ms / 1000.0
        self._contact.append(0 if contact is False else 1)
        if self.correction:
            out = self._corr.push(t_s, rr_ms)
        else:
            out = [ProcessedBeat(t_s, rr_ms, rr_ms, "normal")]
        self._consume(out)
        return done + out if done else out

    def _consume(self, out: list[ProcessedBeat]) -> None:
        td, beats, flags = self._td, self._beats, self._flags
        lo, hi = self.rr_min_ms, self.rr_max_ms
        for i, b in enumerate(out):
            if (
                (b.rr_raw_ms > hi and b.beat_class != "missed")
                or (b.rr_raw_ms < lo and b.beat_class != "extra")
                # (NaN, a merged spurious beat's own row, is not analysed anyway)
                or (b.rr_ms == b.rr_ms and not lo <= b.rr_ms <= hi)
                or b.beat_class == "implausible"  # the correction's own verdict
            ):
                out[i] = ProcessedBeat(b.t_s, b.rr_raw_ms, math.nan, "implausible")
                self._restart_windows()
                self._segment_start = b.t_s  # no spectrum spans it either
                continue
            raw = b.rr_raw_ms
            if raw == raw:
                flags.append(0 if b.beat_class == "normal" else 1)
                prev = self._prev_raw
                if prev == prev:
                    self._jumps.append(1 if abs(raw - prev) > JUMP_REL * prev else 0)
                self._prev_raw = raw
            if b.rr_ms == b.rr_ms:
                # A beat the correction placed before the last one (a split interval whose
                # time line was compressed, see push_beat) is kept just after it.
                t = b.t_s if b.t_s > self._last_t else self._last_t + 1e-6
                td.add(t, b.rr_ms)
                beats.append((t, b.rr_ms))
                self._last_t = t
        if beats:
            cutoff = beats[-1][0] - self._keep_s
            while beats[0][0] < cutoff:
                beats.popleft()

    def gap(self, t_s: float) -> list[ProcessedBeat]:
        """An explicit gap at ``t_s``: pending beats are finalised without look-ahead and
        every window restarts, so no metric spans the gap. Returns the finalised beats."""
        out = self._corr.flush() if self.correction else []
        self._consume(out)
        self._restart_windows()
        self._segment_start = None
        return out

    def _restart_windows(self) -> None:
        self._td.reset()
        # The fast HR and a reactivity still to take may need the beats just before the gap
        # (the same beats the report reads from the store).
        need = self._beats_needed_from()
        self._tail = [b for b in (*self._tail, *self._beats) if b[0] >= need]
        self._beats.clear()

    # -- markers and baseline ------------------------------------------------------------
    def marker(self, t_s: float, kind: str) -> None:
        """A marker; ``hold-start`` (or ``hold_start``) restarts the catching-up search."""
        if kind in ("hold-start", "hold_start"):
            self._catch.hold_start(t_s)
        else:
            self._markers.append(_Pending(t_s, kind))

    def start_baseline(self, t_s: float) -> None:
        """Discard the baseline and collect a new one from ``t_s`` until :meth:`stop_baseline`.

        A marker before ``t_s`` keeps the baseline in force at its time (its response is read
        against it, as one already shown was): re-read against the new one, a surge shown as
        +14 bpm vanished while the new baseline was collected and came back as −1.6 bpm. The
        score's trend starts anew: scores against two baselines are no series."""
        self._freeze_marker_baselines(t_s)
        self._scores.clear()
        self._base = Baseline()
        self._base_fast, self._base_fast_t = [], []
        self._base_from = t_s
        self._base_until = math.inf
        self._base_state = "collecting"

    def _freeze_marker_baselines(self, before_s: float) -> None:
        """Give the pending markers at or before ``before_s`` the current baseline, if
        complete (those during an automatic baseline that never completed wait for the
        next). A marker and a new rest period pressed within one beat carry the same time:
        the marker was entered under the old baseline. The fast HR of the baseline's last
        snapshots is taken as far as the beats are in (a rest period started again a second
        after the last one stopped: its last sample's fast HR needs beats 2 s later; without
        it the marker was left to the new baseline)."""
        if self._base_state != "complete":
            return
        self._advance_fast()
        self._take_base_fast((self._fast_next or 0) - 1)
        base = (
            mean_spread(self._base_fast, SPREAD_FLOORS["hr_bpm"]),
            self._base.stats("ln_rmssd")[0],
        )
        for p in self._markers:
            if p.base is None and p.t_s <= before_s:
                p.base = base

    @property
    def baseline_status(self) -> BaselineStatus:
        """``collecting`` or ``complete`` (as in the next :class:`IndicesSnapshot`)."""
        return self._base_state

    def stop_baseline(self, t_s: float, min_span_s: float = 0.0) -> None:
        """End the baseline being collected. One with fewer than
        :data:`BASELINE_MIN_SAMPLES` samples, or shorter than ``min_span_s``, is discarded
        and an automatic baseline (the next ``baseline_s``) is collected instead, so a rest
        period stopped too early never leaves the session without a score.

        ``min_span_s`` makes the rule one a user can know: with samples every 5 s, a 12 s
        period holds 2 or 3 of them by the phase of the grid, so 12 s was kept one time and
        11.7 s refused the next as "too short (11 s < 15 s)"."""
        since = self._base_from if self._base_from is not None else -math.inf
        if self._base.n >= BASELINE_MIN_SAMPLES and t_s - since >= min_span_s:
            self._base_until = t_s
            self._base_state = "complete"
            return
        self._freeze_marker_baselines(t_s)
        self._scores.clear()
        self._base = Baseline()
        self._base_fast, self._base_fast_t = [], []
        self._base_from = t_s
        self._base_until = t_s + self.baseline_s
        self._base_state = "collecting"

    # -- indices -------------------------------------------------------------------------
    def _window(
        self, t_s: float, length_s: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        if not self._beats:
            return np.empty(0), np.empty(0)
        arr = np.array(self._beats)
        sel = arr[:, 0] > t_s - length_s
        return arr[sel, 0], arr[sel, 1]

    def _psd(
        self, t_s: float, length_s: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
        # The window ends at the last finalised beat (≤ 3 beats before t_s).
        t_s = min(t_s, self._last_t)
        seg0 = self._segment_start if self._segment_start is not None else math.inf
        if t_s - length_s < seg0 - 1e-9:
            return None
        t, rr = self._window(t_s, length_s + 5.0)  # a margin of beats for the spline ends
        if t.size < 8:
            return None
        grid, x = resample_cubic(t, rr, FS_HZ)
        n = round(length_s * FS_HZ)
        x = x[grid > t_s - length_s][-n:]
        if x.size < n:
            return None
        f, p = periodograms(x[None, :], FS_HZ, nfft=1024, f_max=INDICES_MAX_HZ)
        return f, p[0] / spline_power_gain(f, float(np.mean(rr)) / 1000.0)

    def indices(self, t_s: float) -> IndicesSnapshot:
        """The snapshot at ``t_s`` (call every 5 s of beat time)."""
        td = self._td.snapshot()
        coh = self._psd(t_s, self.coherence_window_s)
        spec = self._psd(t_s, self.spectral_window_s)
        c = coherence_from_psd(*coh) if coh is not None else None
        s = band_powers(*spec, self.spectral_window_s) if spec is not None else None
        lf64 = _NAN
        if coh is not None:
            f, p = coh
            sel = (f >= 0.04) & (f < 0.15)
            lf64 = float(p[sel].sum() * (f[1] - f[0]))
        ln_lf = math.log(lf64) if lf64 > 0 else _NAN

        flags = self._flags
        share = sum(flags) / len(flags) if flags else 1.0
        usable, reason = True, None
        if td.n < MIN_WINDOW_BEATS:
            usable, reason = False, WARMING_UP_REASON
        elif len(flags) >= 30 and share > IRREGULAR_SHARE_MAX:
            usable = False
            reason = not_sinus_reason(share)
        elif len(self._jumps) >= 30 and sum(self._jumps) > JUMP_SHARE_MAX * len(self._jumps):
            usable = False
            reason = jump_reason(sum(self._jumps) / len(self._jumps))
        covered = math.fsum(b[1] for b in self._beats if b[0] > t_s - self.window_s) / 1000.0
        coverage = min(1.0, covered / self.window_s)
        contact = sum(self._contact) / len(self._contact) if self._contact else 0.0
        quality = max(0.0, 1.0 - share) * coverage * contact

        # Baseline: automatic (first baseline_s) unless explicit.
        if self._base_from is None:
            self._base_from = t_s
            self._base_until = t_s + self.baseline_s
        hr, ln = td.hr_bpm, td.ln_rmssd
        assert self._base_until is not None
        if self._base_state == "collecting" and t_s > self._base_until:
            if self._base.n >= 3:
                self._base_state = "complete"
            else:  # too few samples yet (e.g. the rhythm was unusable): keep collecting
                self._base_until = t_s + self.baseline_s
        comps = None
        if self._base_state == "collecting":
            if t_s >= self._base_from and usable:
                self._base.add(hr, ln, ln_lf)
                # The fast HR at this second, for the recovery band (once its beats are in).
                self._base_fast_t.append(math.floor(t_s))
        elif self._base_state == "complete" and usable:
            comps = self._base.score(hr, ln, ln_lf, self.k)
        score = comps.score if comps is not None else _NAN
        if math.isfinite(score):
            self._scores.append((t_s, score))
        # Every step, scored or not: a step without a score (rhythm unusable, warming up
        # after a gap) ends a run, so a 90 s hold is never judged across minutes unseen.
        self._catch.update(t_s, score)
        while self._scores and self._scores[0][0] < t_s - self.trend_window_s:
            self._scores.popleft()
        tr = trend([a for a, _ in self._scores], [b for _, b in self._scores])
        if not usable and reason != WARMING_UP_REASON:
            prev = self._prev_snap_t
            self._irregular_steps.append((t_s if prev is None else prev, t_s))
        self._prev_snap_t = t_s
        responses = self._responses(t_s)
        return IndicesSnapshot(
            t_s=t_s,
            td=td,
            coherence=c.ratio if c is not None else _NAN,
            resp_rate_bpm=s.resp_rate_bpm if s is not None else _NAN,
            lf_ms2=s.lf_ms2 if s is not None else _NAN,
            hf_ms2=s.hf_ms2 if s is not None else _NAN,
            lf_hf=s.lf_hf if s is not None else _NAN,
            score=score,
            z_hr=comps.z_hr if comps is not None else _NAN,
            z_ln_rmssd=comps.z_ln_rmssd if comps is not None else _NAN,
            z_slow=comps.z_slow if comps is not None else _NAN,
            trend=tr,
            quality=quality,
            usable=usable,
            reason=reason,
            warming_up=reason == WARMING_UP_REASON,
            catching_up_t_s=self._catch.detected_t_s,
            baseline=self._base_state,
            responses=responses,
            lf64_ms2=lf64,
        )

    # -- marker responses -----------------------------------------------------------------
    def _beats_needed_from(self) -> float:
        """Earliest beat time the fast HR still to compute or a pending reactivity needs."""
        need = math.inf
        if self._fast_next is not None:
            need = self._fast_next - FAST_HALF_S - 1.0
        for p in self._markers:
            if p.react is None:
                need = min(need, p.t_s)
        return need

    def _recent_beats(self, since: float) -> list[tuple[float, float]]:
        """The finalised beats at or after ``since`` (from before the last gap too), oldest
        first; walks back from the newest only as far as needed."""
        out: list[tuple[float, float]] = []
        for src in (self._beats, self._tail):
            for b in reversed(src):
                if b[0] < since:
                    return out[::-1]
                out.append(b)
        return out[::-1]

    def _advance_fast(self) -> None:
        """Extend the fast HR to every whole second whose 5 s are in the finalised beats."""
        last = self._last_t
        if not math.isfinite(last):
            return
        if self._fast_next is None:
            first = self._tail[0] if self._tail else self._beats[0] if self._beats else None
            if first is None:
                return
            self._fast_next = math.floor(first[0] - first[1] / 1000.0)
        g_end = math.floor(last) - FAST_HALF_S
        start = self._fast_next
        if g_end < start:
            return
        waits = [p.t_s for p in self._markers if p.react is None] + self._base_fast_t[:1]
        if g_end - start > FAST_KEEP_MAX_S and min(waits, default=math.inf) >= start:
            # Hours without a call (a long dropout): nothing older is needed. (Unless a marker
            # still waits for its 30 s, or a baseline sample for its fast HR: a marker 27 s
            # before a 13 min dropout lost the seconds it had, and its response.)
            start = g_end - int(FAST_KEEP_MAX_S)
            self._fast.clear()
        grid = np.arange(start, g_end + 1, dtype=np.float64)
        beats = self._recent_beats(start - FAST_HALF_S - 1.0)
        if beats:
            arr = np.array(beats)
            self._fast.extend(fast_hr(arr[:, 0], arr[:, 1], grid).tolist())
        else:
            self._fast.extend([_NAN] * grid.shape[0])
        self._fast_next = g_end + 1
        if self._tail and self._tail[-1][0] < self._beats_needed_from():
            self._tail = []

    def _take_base_fast(self, done: int) -> None:
        """The fast HR at the baseline snapshots whose second is in (up to ``done``)."""
        if not (self._base_fast_t and self._base_fast_t[0] <= done):
            return
        grid, fast = self._fast_arrays()
        g0 = int(grid[0]) if grid.shape[0] else done + 1
        waiting = []
        for g in self._base_fast_t:
            if g > done:
                waiting.append(g)
            elif g >= g0 and math.isfinite(fast[g - g0]):
                self._base_fast.append(float(fast[g - g0]))
        self._base_fast_t = waiting

    def _fast_arrays(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        n = len(self._fast)
        g0 = (self._fast_next or 0) - n
        return np.arange(g0, g0 + n, dtype=np.float64), np.fromiter(self._fast, np.float64, n)

    def _responses(self, t_s: float) -> tuple[EventResponse, ...]:
        """Responses of the markers so far, from the fast HR (a 5 s mean of the beats' 1 Hz
        HR) and the beats. A marker's reactivity is taken once its 30 s are in the finalised
        beats; its response is final once the fast HR is back in the baseline band or the
        recovery search (``RECOVERY_MAX_S``) ran out. It is not read (all NaN, final at once)
        when the fast HR covers less than ``REACT_MIN_COVER`` of the 30 s (a gap) or a
        snapshot whose step overlaps them found the rhythm too irregular (as the report's
        rows, ``sessions.report``). Only the fast HR a pending marker or
        baseline sample still needs is kept (and the last ``SERIES_KEEP_S``, for markers
        entered a little late), never more than ``FAST_KEEP_MAX_S``: memory and cost stay
        bounded however long the session."""
        self._advance_fast()
        done = (self._fast_next or 0) - 1  # the last second of fast HR computed
        self._take_base_fast(done)
        current: list[EventResponse] = []
        if self._markers:
            grid, fast = self._fast_arrays()
            ready = self._base_state == "complete" and not self._base_fast_t
            base_hr = mean_spread(self._base_fast, SPREAD_FLOORS["hr_bpm"])
            base_ln = self._base.stats("ln_rmssd")[0]
            pending: list[_Pending] = []
            for p in self._markers:
                if p.react is None:
                    if done < math.floor(p.t_s + REACT_S):
                        pending.append(p)
                        continue
                    beats = np.array(self._recent_beats(p.t_s)).reshape(-1, 2)
                    p.react = reactivity(p.t_s, grid, fast, beats[:, 0], beats[:, 1])
                    # Every snapshot up to its 30 s is in: was the rhythm readable over them?
                    p.irregular = any(
                        t > p.t_s and t0 < p.t_s + REACT_S for t0, t in self._irregular_steps
                    )
                if p.base is None:
                    if not ready:
                        pending.append(p)
                        continue
                    p.base = (base_hr, base_ln)  # read against it from now on
                if p.irregular:
                    r = EventResponse(p.t_s, p.kind, _NAN, _NAN, _NAN)  # not read
                else:
                    r = event_response(p.t_s, p.kind, p.react, grid, fast, *p.base)
                if (
                    math.isfinite(r.recovery_s)
                    or not math.isfinite(r.peak_d_hr_bpm)  # not read: nothing to wait for
                    or done >= p.t_s + RECOVERY_MAX_S
                ):
                    self._final.append(r)
                else:
                    pending.append(p)
                    current.append(r)
            self._markers = pending
            self._final.sort(key=lambda r: r.t_s)
        keep = [t_s - SERIES_KEEP_S]
        keep += [p.t_s for p in self._markers]  # the recovery is searched from the peak on
        keep += self._base_fast_t[:1]
        # Never the seconds a marker still waiting for its 30 s needs (a dropout came first:
        # snapshots go on, the beats after it are not final yet).
        waits = [p.t_s for p in self._markers if p.react is None] + self._base_fast_t[:1]
        keep_from = min(max(min(keep), t_s - FAST_KEEP_MAX_S), min(waits, default=math.inf))
        need = min([t_s - SERIES_KEEP_S, *(p.t_s for p in self._markers if p.react is None)])
        steps = self._irregular_steps
        while steps and steps[0][1] <= need:
            steps.popleft()
        q = self._fast
        g = (self._fast_next or 0) - len(q)
        while q and g < keep_from:
            q.popleft()
            g += 1
        if not current:
            return tuple(self._final)
        return tuple(sorted([*self._final, *current], key=lambda r: r.t_s))


class _Pending:
    """A marker whose response is not final yet; ``react`` once its 30 s are in."""

    __slots__ = ("base", "irregular", "kind", "react", "t_s")

    def __init__(self, t_s: float, kind: str) -> None:
        self.t_s = t_s
        self.kind = kind
        self.react: Reactivity | None = None
        self.irregular = False
        """The rhythm was too irregular to read during its 30 s (set with ``react``)."""
        self.base: tuple[tuple[float, float], float] | None = None
        """The baseline it is read against (fast HR mean and spread, lnRMSSD mean): the one
        complete when it was first read, or in force at its time if a new one was started
        before that (:meth:`LiveAnalyzer.start_baseline`)."""
