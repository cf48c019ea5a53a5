"""Honest beat timing: reconstruct when each beat happened from RR intervals that arrive
bundled (0–3 per notification, about once a second) and late (up to 3–4 s after the beat).

The RR intervals are exact *differences* between beats, measured by the strap's clock; the
notification arrival times are noisy *upper bounds* on the time of the last beat each one
carries (a beat cannot be reported before it happened). So:

1. Beat times are the cumulative sum of RR plus an offset (``t = offset + ΣRR``).
2. For each notification, ``lag = arrival − t(last beat)`` must be ≥ 0. The smallest lags
   over a sliding window (the *lower envelope*) show the pure transmission delay; they stay
   constant unless the two clocks drift apart or beats went missing.
3. **Anchor** (first notification, and after an explicit gap): the offset puts the last beat
   at the arrival time minus the delay seen so far (0 at the start).
4. **Lost beats**: a lag above ``max_lag_s`` means RR intervals are missing; the beats are
   re-anchored to the arrival. A single lost notification is subtler: one notification's lag
   varies by up to one RR interval with the beat's phase within the second, so a loss of ~1 s
   only shows when the *whole* lower envelope of lags (``envelope_s`` = 30 s) rises by more
   than ``step_threshold_s``; the offset then steps by that rise. Either way the beats are
   flagged ``uncertain`` and a :class:`TimingGap` is returned: the time between is unknown, and
   no analysis may bridge it. The price of the envelope method: beats between a single lost
   notification and its detection (≤ 30 s) are early by the lost interval (≤ ~1.5 s).
5. **Impossible timing**: a lag below ``−tolerance_s`` (beats "in the future") means the
   cumulative sum ran ahead of the wall clock; the offset is pulled back so the lag is 0 and
   the beats are flagged ``uncertain``.
6. **Drift**: the strap's crystal and the host's differ by tens of ppm (e.g. 50 ppm is 4.3 s a
   day). A slow servo moves the offset so that the lower envelope of lags returns to its
   reference (outside a small dead band), at most ``max_slew`` seconds per second — small
   enough that RR derived from the corrected times differ from the strap's by < 0.1 %.
   ``drift_ppm`` reports the estimate.

Pure and synchronous: times are passed in (seconds on any monotonic clock, scaled to session
time by the caller), nothing here reads a clock.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True, slots=True)
class TimedBeat:
    """One beat: ``t_s`` its reconstructed time (same clock as the arrival times given),
    ``rr_ms`` the interval it closes, ``uncertain`` when its time was re-anchored (after a gap
    or an impossible lag) rather than carried by the cumulative RR."""

    t_s: float
    rr_ms: float
    uncertain: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class TimingGap:
    """Beats between ``start_t_s`` (last beat before) and ``end_t_s`` are unknown."""

    start_t_s: float
    end_t_s: float
    reason: str


class BeatTimer:
    """Streaming beat-time reconstruction; see the module docstring.

    ``max_lag_s``: a lag above this means lost beats at once (default 5 s: straps report up to
    3–4 s late). ``tolerance_s``: how far "in the future" a beat may appear before the offset
    is corrected (arrival-time jitter). ``envelope_s``: window of the lower envelope.
    ``max_slew``: drift correction, seconds of offset change per second at most (2e-4 =
    200 ppm, well above real crystals, so a derived RR moves by ≤ 0.2 ms per second).
    ``deadband_s``: envelope errors smaller than this are left alone (latency jitter).
    """

    def __init__(
        self,
        *,
        max_lag_s: float = 5.0,
        tolerance_s: float = 0.05,
        envelope_s: float = 30.0,
        max_slew: float = 2e-4,
        deadband_s: float = 0.1,
        step_threshold_s: float = 0.25,
    ) -> None:
        self.deadband_s = deadband_s
        self.step_threshold_s = step_threshold_s
        self.max_lag_s = max_lag_s
        self.tolerance_s = tolerance_s
        self.envelope_s = envelope_s
        self.max_slew = max_slew
        self.offset_s: float | None = None
        self._cum_s = 0.0
        self._last_t: float | None = None
        self._lags: collections.deque[tuple[float, float]] = collections.deque()
        self._reference: float | None = None
        self._last_arrival: float | None = None
        self._correction_s = 0.0
        self._first_arrival: float | None = None
        self.gaps: list[TimingGap] = []
        self.n_uncertain = 0

    @property
    def drift_ppm(self) -> float:
        """Offset correction applied so far per elapsed time, in parts per million
        (positive: the strap's clock runs slow against the host's)."""
        if self._first_arrival is None or self._last_arrival is None:
            return 0.0
        elapsed = self._last_arrival - self._first_arrival
        return self._correction_s / elapsed * 1e6 if elapsed > 0 else 0.0

    def mark_gap(self) -> None:
        """An explicit interruption (reconnect): the next notification is re-anchored."""
        self.offset_s = None
        self._lags.clear()

    def push(
        self, arrival_s: float, rr_ms: Sequence[float]
    ) -> tuple[list[TimedBeat], TimingGap | None]:
        """Add one notification; return its beats with times, and a gap if one was found."""
        if not rr_ms:
            return [], None
        if self._first_arrival is None:
            self._first_arrival = arrival_s
        rr = list(rr_ms)
        total_s = sum(rr) / 1000.0
        if self.offset_s is None:
            gap = None
            self._anchor(arrival_s, total_s)
            if self._last_t is not None:
                gap = self._gap(arrival_s, total_s, "reconnect")
            out = self._emit(rr, uncertain=gap is not None)
            self._observe(arrival_s, out[-1].t_s)
            return out, gap
        lag = arrival_s - self._predict(sum(rr))
        if lag > self.max_lag_s:
            gap = self._gap_before(arrival_s, rr, f"beats missing ({lag:.1f} s unaccounted)")
            out = self._emit(rr, uncertain=True)
            self._observe(arrival_s, out[-1].t_s)
            return out, gap
        uncertain = False
        gap = None
        if lag < -self.tolerance_s:
            self.offset_s += lag  # pull back: a beat cannot be reported before it happened
            self._correction_s += lag
            uncertain = True
        else:
            step = self._servo(arrival_s, lag)
            if step is not None:
                # The whole envelope rose: beats went missing within the last envelope_s.
                start = self._last_t if self._last_t is not None else 0.0
                self.offset_s += step
                gap = TimingGap(start, self.offset_s + self._cum_s,
                                f"about {step:.1f} s of beats missing (detected late)")  # fmt: skip
                self.gaps.append(gap)
                self._lags.clear()
                uncertain = True
        out = self._emit(rr, uncertain=uncertain)
        self._observe(arrival_s, out[-1].t_s)
        return out, gap

    def _predict(self, total_ms: float) -> float:
        assert self.offset_s is not None
        return self.offset_s + self._cum_s + total_ms / 1000.0

    def _gap_before(self, arrival_s: float, rr: list[float], reason: str) -> TimingGap:
        self._anchor(arrival_s, sum(rr) / 1000.0)
        return self._gap(arrival_s, sum(rr) / 1000.0, reason)

    def _emit(self, rr: list[float], *, uncertain: bool) -> list[TimedBeat]:
        assert self.offset_s is not None
        beats: list[TimedBeat] = []
        for r in rr:
            self._cum_s += r / 1000.0
            t = self.offset_s + self._cum_s
            if self._last_t is not None and t <= self._last_t:
                t = self._last_t + 1e-6  # never backwards, whatever the corrections did
            beats.append(TimedBeat(t, r, uncertain))
            self._last_t = t
        if uncertain:
            self.n_uncertain += len(beats)
        return beats

    def _observe(self, arrival_s: float, last_t: float) -> None:
        self._lags.append((arrival_s, arrival_s - last_t))
        while self._lags and self._lags[0][0] < arrival_s - self.envelope_s:
            self._lags.popleft()
        self._last_arrival = arrival_s

    def _anchor(self, arrival_s: float, total_s: float) -> None:
        delay = self._reference if self._reference is not None else 0.0
        self.offset_s = arrival_s - delay - total_s - self._cum_s
        self._lags.clear()

    def _gap(self, arrival_s: float, total_s: float, reason: str) -> TimingGap:
        start = self._last_t if self._last_t is not None else 0.0
        assert self.offset_s is not None
        end = max(start, self.offset_s + self._cum_s)  # where this notification's beats begin
        gap = TimingGap(start, end, reason)
        self.gaps.append(gap)
        return gap

    def _servo(self, arrival_s: float, lag: float) -> float | None:
        """Drift correction; returns the size of a step when beats were found missing."""
        if not self._lags:
            return None
        window = [x for t, x in self._lags if t >= arrival_s - self.envelope_s]
        envelope = min([*window, lag])
        span = arrival_s - self._lags[0][0]
        if self._reference is None:
            if span >= self.envelope_s:
                self._reference = envelope
            return None
        error = envelope - self._reference
        assert self.offset_s is not None
        if error > self.step_threshold_s and span >= self.envelope_s:
            # Not drift but a jump. Its size: the envelope of the recent half window only
            # (older lags in the window may still straddle the jump).
            recent = [x for t, x in self._lags if t >= arrival_s - self.envelope_s / 2]
            return min([*recent, lag]) - self._reference
        if abs(error) < self.deadband_s:
            return None
        error -= self.deadband_s if error > 0 else -self.deadband_s
        dt = arrival_s - (self._last_arrival or arrival_s)
        step = max(-self.max_slew * dt, min(self.max_slew * dt, error))
        self.offset_s += step
        self._correction_s += step
        return None
