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
4. **Lost beats**: a lag above ``max_lag_s`` means RR intervals are missing — or that the
   notifications were only held back (by the host's Bluetooth stack, a stalled host) and are
   about to arrive in a burst. So such a notification is *held* (its beats are given out
   later) until the ones after it tell: when the RR they carry account for the delay (the
   lag falls back under ``max_lag_s``) it was a hold, and every held beat is timed on the
   cumulative RR, no gap; when the lag is still that high after ``burst_s`` of arrivals
   (notifications arriving at their usual pace, not in a burst), beats were lost: the first
   held beats are re-anchored to their arrival behind a gap. :meth:`BeatTimer.flush` (and
   :meth:`BeatTimer.mark_gap`) decide at once with what is known. A single lost
   notification is subtler: one notification's lag varies by up to one RR interval with the
   beat's phase within the second, so a loss of ~1 s only shows when the *whole* lower
   envelope of lags (``envelope_s`` = 30 s) rises by more than ``step_threshold_s``; the
   offset then steps by that rise. Either way the beats are flagged ``uncertain`` and a
   :class:`TimingGap` is returned: the time between is unknown, and no analysis may bridge
   it. The price of the envelope method: beats between a single lost
   notification and its detection (≤ 30 s) are early by the lost interval (≤ ~1.5 s).
5. **Impossible timing**: a lag below ``−tolerance_s`` (beats "in the future") means the
   cumulative sum ran ahead of the wall clock; the offset is pulled back so the lag is 0 and
   the beats are flagged ``uncertain``.
   An interval too long to have fit at all (an H10's 0xFFFF at the start of a recording;
   :meth:`BeatTimer._impossible`) is not added to the sum: the beats after it are
   re-anchored behind a gap.
6. **Drift**: the strap's crystal and the host's differ by tens of ppm (e.g. 50 ppm is 4.3 s a
   day). A slow servo moves the offset so that the lower envelope of lags returns to its
   reference (outside a small dead band), at most ``max_slew`` seconds per second — small
   enough that RR derived from the corrected times differ from the strap's by < 0.1 %.
   ``drift_ppm`` reports the estimate.
7. **Two clocks, two kinds of tolerance.** Beats live in *session* time (RR, drift in ppm,
   slew, the envelope window: properties of the strap's beat stream). The arrival delay and
   its jitter happen on the *host*, in wall seconds (event loop, scheduler, a stall). With a
   time-compressed virtual strap (``time_scale`` session seconds per wall second, e.g. 200)
   one wall millisecond of host delay is ``time_scale`` ms of session time, so every
   delay-related threshold is ``link part + host part × time_scale``: ``tolerance_s`` and
   ``deadband_s`` get ``host_jitter_s × time_scale``, ``step_threshold_s`` twice that (the
   envelope may sit at the dead band's edge and still rise by one jitter), ``max_lag_s``
   gets ``host_stall_s × time_scale``, and the envelope window spans at least
   ``host_window_s`` of wall time. At ``time_scale`` 1 (a real strap) the host parts are
   small against the BLE link's. Below the reference the servo's band is at most half the
   tolerance, so a fast strap clock is slewed away smoothly before single lags cross
   ``-tolerance_s`` and get pulled back (flagged). The price of compression is explicit:
   the smallest loss of beats the timer can see, and the residual timing error after drift
   correction, grow with ``time_scale`` (docs/timing.md gives the figures).

Pure and synchronous: times are passed in (seconds on any monotonic clock, scaled to session
time by the caller, who passes the same scale as ``time_scale``), nothing here reads a clock.
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


#: Gap reason for a step of the strap's raw ECG clock (the ECG was re-anchored; settle/ecg.py
#: records it). Heart rate and RR went on, so the RR series does not break there.
ECG_CLOCK_STEP = "raw ECG clock step"
#: Gap reasons that concern the raw ECG alone: readers of the RR series (the export's RR
#: signal, ``settle analyze`` of an export) do not break at them.
ECG_ONLY_GAPS = frozenset({ECG_CLOCK_STEP})


@dataclasses.dataclass(frozen=True, slots=True)
class TimingGap:
    """Beats between ``start_t_s`` (last beat before) and ``end_t_s`` are unknown."""

    start_t_s: float
    end_t_s: float
    reason: str


class BeatTimer:
    """Streaming beat-time reconstruction; see the module docstring.

    Link parts (seconds; a real strap's BLE link, where session and wall time agree):
    ``max_lag_s``: a lag above this means lost beats at once (default 5 s: straps report up to
    3–4 s late). ``tolerance_s``: how far "in the future" a beat may appear before the offset
    is corrected (arrival-time jitter). ``deadband_s``: envelope errors smaller than this are
    left alone (latency jitter). ``step_threshold_s``: a rise of the whole envelope above this
    means beats went missing.

    Host parts (WALL seconds, multiplied by ``time_scale`` and added to the link parts):
    ``host_jitter_s`` (default 5 ms): how much the host's own delay in stamping arrivals
    wanders over an envelope window (measured for the in-process virtual link at speed 200
    on a shared 2-core machine: median 0.8 ms, p99 5 ms); ``host_stall_s`` (default 0.25 s):
    how long the host may hold one notification (GC, CPU contention: 0.18 s was seen once in
    a 217 s run there) before a late notification is read as missing beats;
    ``host_window_s`` (default 1 s): the envelope window spans at least this much wall time
    (a slow-down of ~0.2 s, every notification ~50 ms late, was seen there too).

    ``burst_s`` (link part, default 1 s; plus ``host_stall_s × time_scale``): how long
    notifications held back by the host may take to arrive once released. A notification
    later than ``max_lag_s`` is held until the next ones show whether its delay is accounted
    for by their RR (a hold, delivered in a burst) or is still there after ``burst_s`` of
    arrivals (beats lost: then it is re-anchored and a gap recorded, as before the hold
    rule). Holding costs a real loss about that long a wait before its beats are given out.

    Beat-clock parameters (session seconds): ``envelope_s``: window of the lower envelope (at
    least ``host_window_s × time_scale``).
    ``max_slew``: drift correction, seconds of offset change per second at most (5e-4 =
    500 ppm, well above real crystals' ±20–100 ppm, so a derived RR moves by ≤ 0.5 ms per
    second, < 0.05 %). ``time_scale``: session seconds per wall second of the arrival clock
    (1 for a real strap; the speed of a time-compressed virtual one).

    The attributes ``max_lag_s``, ``tolerance_s``, ``deadband_s`` and ``step_threshold_s``
    hold the effective thresholds in session seconds (link part + host part × time_scale).
    ``max_slew`` is spread over each notification's beats in proportion to their RR, so no
    derived RR differs from the strap's by more than ``max_slew`` of itself.
    """

    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        max_lag_s: float = 5.0,
        tolerance_s: float = 0.05,
        envelope_s: float = 30.0,
        max_slew: float = 5e-4,
        deadband_s: float = 0.1,
        step_threshold_s: float = 0.25,
        host_jitter_s: float = 0.005,
        host_stall_s: float = 0.25,
        host_window_s: float = 1.0,
        burst_s: float = 1.0,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = time_scale
        self.burst_s = burst_s + host_stall_s * time_scale
        jitter = host_jitter_s * time_scale
        self.deadband_s = deadband_s + jitter
        self.step_threshold_s = step_threshold_s + 2 * jitter  # past the dead band, plus jitter
        self.max_lag_s = max_lag_s + host_stall_s * time_scale
        self._link_max_lag_s = max_lag_s
        self.tolerance_s = tolerance_s + jitter
        # The envelope must span more wall time than a host slow-down lasts, or a spell in
        # which every notification is late reads as a rise of the whole envelope.
        self.envelope_s = max(envelope_s, host_window_s * time_scale)
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
        self._gap_reason = "reconnect"
        """Why the next anchor leaves a gap (a reconnect, or an interval that cannot have fit)."""
        self._held: list[tuple[float, list[float]]] = []
        """Notifications (arrival, RR) held back: the first later than ``max_lag_s``, until it
        is known whether beats were lost (rule 4 of the module docstring)."""

    @property
    def drift_ppm(self) -> float:
        """Estimated rate of the strap's beat clock against the host's, parts per million
        (positive: the strap's clock runs fast, so its RR are too long and the offset had
        to be pulled back): minus the offset correction applied so far per elapsed time."""
        if self._first_arrival is None or self._last_arrival is None:
            return 0.0
        elapsed = self._last_arrival - self._first_arrival
        return -self._correction_s / elapsed * 1e6 if elapsed > 0 else 0.0

    @property
    def holding(self) -> int:
        """Beats held back (see :meth:`push`), not yet given out."""
        return sum(len(rr) for _, rr in self._held)

    def mark_gap(self) -> tuple[list[TimedBeat], TimingGap | None]:
        """An explicit interruption (reconnect): the next notification is re-anchored.
        Returns the beats still held, as :meth:`flush` does (give them out first)."""
        out = self.flush()
        self.offset_s = None
        self._lags.clear()
        self._gap_reason = "reconnect"
        return out

    def flush(self) -> tuple[list[TimedBeat], TimingGap | None]:
        """The beats held back (see :meth:`push`), decided now with what is known: a hold if
        the RR of the held notifications account for the delay, else lost beats (a gap)."""
        return self._release(final=True) if self._held else ([], None)

    def push(
        self, arrival_s: float, rr_ms: Sequence[float]
    ) -> tuple[list[TimedBeat], TimingGap | None]:
        """Add one notification; return beats with times, and a gap if one was found.

        Usually the beats are the notification's own. A notification later than
        ``max_lag_s`` is held back (nothing returned) until the next ones tell whether beats
        were lost or the notifications only held back by the host; then the held beats
        come out with the notification that decided, oldest first. (Several gaps at once,
        rarely: the first is returned, and all are in :attr:`gaps`.)"""
        if not rr_ms:
            return [], None
        rr = list(rr_ms)
        if self._held or self._too_late(arrival_s, rr):
            self._held.append((arrival_s, rr))
            return self._release(final=False)
        return self._take(arrival_s, rr)

    def _too_late(self, arrival_s: float, rr: list[float]) -> bool:
        """Whether a notification's lag exceeds ``max_lag_s`` (lost beats, or a hold)."""
        if self.offset_s is None or self._impossible(arrival_s, rr) is not None:
            return False
        return arrival_s - self._predict(sum(rr)) > self.max_lag_s

    def _release(self, *, final: bool) -> tuple[list[TimedBeat], TimingGap | None]:
        """Decide about the held notifications, if their lag or their arrivals tell (or
        ``final``); give out their beats then."""
        total_ms = sum(sum(rr) for _, rr in self._held)
        first, last = self._held[0][0], self._held[-1][0]
        held_back = last - self._predict(total_ms) <= self.max_lag_s
        if not (held_back or final or last - first >= self.burst_s):
            return [], None  # still arriving in a burst, its RR short of the delay so far
        notes, self._held = self._held, []
        out: list[TimedBeat] = []
        gaps: list[TimingGap] = []
        for arrival_s, rr in notes:
            beats, gap = self._take(arrival_s, rr, held_back=held_back)
            out += beats
            gaps += [gap] if gap is not None else []
        if held_back:
            # A burst's lags tell nothing about the link's delay (they are the hold's): the
            # envelope restarts after it, as after an anchor, but the offset stays.
            self._lags.clear()
        return out, gaps[0] if gaps else None

    def _take(
        self, arrival_s: float, rr: list[float], *, held_back: bool = False
    ) -> tuple[list[TimedBeat], TimingGap | None]:
        """Time one notification's beats. ``held_back``: it was held and its delay is
        accounted for by the RR after it (delivered late, nothing lost)."""
        bad = self._impossible(arrival_s, rr)
        if bad is None:
            return self._push(arrival_s, rr, held_back=held_back)
        # An interval that cannot have fit (an H10's 0xFFFF at the start of a recording):
        # the beats before it are timed as usual; its beat's time is unknown (placed just
        # after the beat before, flagged), and the beats after it are re-anchored to the
        # arrival behind a gap. Added to the running sum, it pulled the beats back by a
        # minute (before the session's start) and read as 200 000 ppm of drift.
        # The beats before it closed before the beats after it: when they are anchored (the
        # first notification, after a reconnect), not at the arrival (all four then landed on
        # one instant, 1 µs apart) but before the rest's intervals.
        before = arrival_s - sum(rr[bad + 1 :]) / 1000.0
        out, first_gap = self._push(before, rr[:bad]) if bad else ([], None)
        t = self._last_t + 1e-6 if self._last_t is not None else arrival_s
        out.append(TimedBeat(t, rr[bad], uncertain=True))
        self.n_uncertain += 1
        self._last_t = t
        self.offset_s = None
        self._lags.clear()
        self._gap_reason = f"an interval of {rr[bad] / 1000.0:.1f} s cannot have fit"
        rest, gap = self._push(arrival_s, rr[bad + 1 :]) if bad + 1 < len(rr) else ([], None)
        out += rest
        if first_gap is not None and gap is not None:  # one gap from the first to the last
            gap = TimingGap(first_gap.start_t_s, gap.end_t_s, f"{first_gap.reason}; {gap.reason}")
            self.gaps[-2:] = [gap]
        return out, gap or first_gap

    def _impossible(self, arrival_s: float, rr: list[float]) -> int | None:
        """The index of the first RR interval no delay, jitter or drift can account for, or
        None. A beat after the first of a notification is reported at most ``max_lag_s``
        (its link part) late, so the interval before it is at most that long; the first
        closes after the beat before (``_last_t``) and before the arrival, so its interval
        exceeds their distance by at most ``max_lag_s``. (After an anchor the first is
        unbounded: the beat before it is unknown.)"""
        for j, r in enumerate(rr):
            # Two beats of one notification: the strap's reporting delay alone (a host stall
            # delays the arrival, not one beat against the other). The first: measured on
            # the host's clock, so the host's part too.
            room = self._link_max_lag_s
            if j == 0:
                if self.offset_s is None or self._last_t is None:
                    continue
                room = self.max_lag_s + arrival_s - self._last_t
            if r / 1000.0 > room + self.tolerance_s:
                return j
        return None

    def _push(
        self, arrival_s: float, rr: list[float], *, held_back: bool = False
    ) -> tuple[list[TimedBeat], TimingGap | None]:
        if not rr:
            return [], None
        if self._first_arrival is None:
            self._first_arrival = arrival_s
        total_s = sum(rr) / 1000.0
        if self.offset_s is None:
            gap = None
            self._anchor(arrival_s, total_s)
            if self._last_t is not None:
                gap = self._gap(arrival_s, total_s, self._gap_reason)
            self._gap_reason = "reconnect"
            out = self._emit(rr, uncertain=gap is not None)
            self._observe(arrival_s, out[-1].t_s)
            return out, gap
        lag = arrival_s - self._predict(sum(rr))
        if held_back and lag > 0:
            # Late only (a burst's RR accounted for it): on the cumulative RR, no correction.
            out = self._emit(rr, uncertain=False)
            self._last_arrival = arrival_s
            return out, None
        if lag > self.max_lag_s:
            gap = self._gap_before(arrival_s, rr, f"beats missing ({lag:.1f} s unaccounted)")
            out = self._emit(rr, uncertain=True)
            self._observe(arrival_s, out[-1].t_s)
            return out, gap
        uncertain = False
        gap = None
        slew = 0.0
        if lag < -self.tolerance_s:
            self.offset_s += lag  # pull back: a beat cannot be reported before it happened
            if lag >= -self.step_threshold_s:  # larger: not the clocks' drift (drift_ppm)
                self._correction_s += lag
            uncertain = True
        else:
            found = self._envelope_error(arrival_s, lag)
            step = self._jump(found, arrival_s, lag)
            if step is not None:
                # The whole envelope rose: beats went missing within the last envelope_s.
                start = self._last_t if self._last_t is not None else 0.0
                self.offset_s += step
                gap = TimingGap(start, self.offset_s + self._cum_s,
                                f"about {step:.1f} s of beats missing (detected late)")  # fmt: skip
                self.gaps.append(gap)
                self._lags.clear()
                uncertain = True
            else:
                slew = self._slew(found, total_s)
        out = self._emit(rr, uncertain=uncertain, slew_s=slew)
        self._observe(arrival_s, out[-1].t_s)
        return out, gap

    def _predict(self, total_ms: float) -> float:
        assert self.offset_s is not None
        return self.offset_s + self._cum_s + total_ms / 1000.0

    def _gap_before(self, arrival_s: float, rr: list[float], reason: str) -> TimingGap:
        self._anchor(arrival_s, sum(rr) / 1000.0)
        return self._gap(arrival_s, sum(rr) / 1000.0, reason)

    def _emit(self, rr: list[float], *, uncertain: bool, slew_s: float = 0.0) -> list[TimedBeat]:
        """Times for ``rr``. ``slew_s``, a drift correction already added to the offset, is
        phased in over these beats in proportion to their RR, so that no single derived RR
        changes by more than ``max_slew`` of itself."""
        assert self.offset_s is not None
        beats: list[TimedBeat] = []
        total = sum(rr) / 1000.0
        base = self.offset_s - slew_s
        done = 0.0
        for r in rr:
            self._cum_s += r / 1000.0
            done += r / 1000.0
            t = base + self._cum_s + (slew_s * done / total if total > 0 else slew_s)
            if self._last_t is not None and t <= self._last_t:
                t = self._last_t + 1e-6  # never backwards, whatever the corrections did
            beats.append(TimedBeat(t, r, uncertain))
            self._last_t = t
        if uncertain:
            self.n_uncertain += len(beats)
        return beats

    def _observe(self, arrival_s: float, last_t: float) -> None:
        # Windows are kept on BEAT time, not arrival time: a host stall longer than the window
        # must not leave only its own late notifications in it (a spurious envelope rise).
        self._lags.append((last_t, arrival_s - last_t))
        while self._lags and self._lags[0][0] < last_t - self.envelope_s:
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

    def _envelope_error(self, arrival_s: float, lag: float) -> tuple[float, float] | None:
        """(envelope − reference, span of the lag window) once a reference exists."""
        if not self._lags:
            return None
        now = arrival_s - lag  # the beat time of this notification's last beat
        window = [x for t, x in self._lags if t >= now - self.envelope_s]
        envelope = min([*window, lag])
        span = now - self._lags[0][0]
        if self._reference is None:
            if span >= self.envelope_s:
                # The pure delay cannot be negative (a beat is never reported before it
                # happened); holding the envelope at ≥ 0 keeps the servo acting on drift
                # before single lags cross -tolerance_s and get pulled back.
                self._reference = max(envelope, 0.0)
            return None
        return envelope - self._reference, span

    def _jump(
        self, found: tuple[float, float] | None, arrival_s: float, lag: float
    ) -> float | None:
        """The size of a step when the whole envelope rose (beats found missing), else None."""
        if found is None:
            return None
        error, span = found
        if error > self.step_threshold_s and span >= self.envelope_s:
            # Not drift but a jump. Its size: the envelope of the recent half window only
            # (older lags in the window may still straddle the jump).
            assert self._reference is not None
            recent = [x for t, x in self._lags if t >= arrival_s - lag - self.envelope_s / 2]
            return min([*recent, lag]) - self._reference
        return None

    def _slew(self, found: tuple[float, float] | None, total_s: float) -> float:
        """Drift correction for a notification carrying ``total_s`` of beats: moves the
        offset toward the envelope's reference, by at most ``max_slew × total_s`` (so over a
        session at most ``max_slew`` per second of beats). Returns the amount applied."""
        if found is None:
            return 0.0
        # Lags falling (the strap's clock fast) must be caught before single lags cross
        # -tolerance_s and are pulled back (a step, flagged uncertain): on that side the
        # band is at most half the tolerance.
        band = self.deadband_s if found[0] > 0 else min(self.deadband_s, self.tolerance_s / 2)
        if abs(found[0]) < band:
            return 0.0
        error = found[0] - (band if found[0] > 0 else -band)
        step = max(-self.max_slew * total_s, min(self.max_slew * total_s, error))
        assert self.offset_s is not None
        self.offset_s += step
        self._correction_s += step
        return step


class FrameClock:
    """Honest frame timing: the session time of a strap's timestamped frames (Polar PMD: the
    strap-clock ns of each frame's last sample), ``t = timestamp + offset_ns``.

    The same reasoning as :class:`BeatTimer`'s, with the strap's timestamps in place of the
    cumulative RR (exact differences between samples), and a frame's arrival as an upper
    bound on when its last sample was taken (``lag = arrival − t(last sample)`` must be ≥ 0):

    1. **Anchor** (first frame, and after :meth:`reset`): the frame's last sample at its
       arrival.
    2. **Impossible timing**: a frame whose lag is below ``−tolerance_s`` (it arrived sooner
       after its timestamp than the offset allows) pulls the offset back at once, to lag 0:
       the offset follows the least-delayed frame. A first frame that came late (a link
       retrying at stream start, the next frames in one burst behind it) used to put every
       later frame late by its delay, for good. Times already given out are not revised: the
       caller keeps its output monotonic (settle/ecg.py stores no sample at or before one it
       has, and never lets a beat go back). Smaller negative lags (jitter) are left alone, so
       the offset is at most ``tolerance_s`` later than the least-delayed frame says, and the
       frames of a steady link join without a step.
    3. **Drift**: the strap's crystal against the host's (tens of ppm) makes the lags rise (a
       slow strap clock) or fall (a fast one). A servo moves the offset so that the lower
       envelope of lags over ``envelope_s`` returns into a band — ``tolerance_s`` above 0,
       half of it below (so that a fast clock is slewed away before single lags cross
       ``−tolerance_s`` and step) — at most ``max_slew`` s per strap second (5e-4: where it
       acts, a stored sample interval moves by ≤ 0.05 %, and nothing is dropped).
    4. **Two clocks**: as for :class:`BeatTimer`, the host's own jitter is in wall seconds, so
       the tolerance is ``tolerance_s + host_jitter_s × time_scale`` and the envelope spans at
       least ``host_window_s × time_scale``.
    5. **A step back**: a timestamp before the previous frame's (the strap's clock was set
       back, by any amount; frames never come out of order) re-anchors as rule 1: the frame's
       last sample at its arrival, the envelope restarted. (A step forward is rule 2.) The
       caller keeps its output monotonic as for rule 2.

    Pure and synchronous: times are passed in (ns; arrivals on any monotonic clock scaled to
    session time by the caller), nothing here reads a clock.
    """

    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        tolerance_s: float = 0.008,
        envelope_s: float = 30.0,
        max_slew: float = 5e-4,
        host_jitter_s: float = 0.005,
        host_window_s: float = 1.0,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.tolerance_ns = round((tolerance_s + host_jitter_s * time_scale) * 1e9)
        self.envelope_ns = round(max(envelope_s, host_window_s * time_scale) * 1e9)
        self.max_slew = max_slew
        self.offset_ns: int | None = None
        """Session ns minus strap ns; None before the first frame (or after :meth:`reset`)."""
        self._delays: collections.deque[tuple[int, int]] = collections.deque()
        self._last_timestamp_ns: int | None = None

    def reset(self) -> None:
        """The strap's clock stepped (or a new stream began): the next frame anchors afresh."""
        self.offset_ns = None
        self._delays.clear()
        self._last_timestamp_ns = None

    def anchor(self, offset_ns: int) -> None:
        """Set the offset (a re-anchor decided by the caller); the envelope restarts."""
        self.offset_ns = offset_ns
        self._delays.clear()
        self._last_timestamp_ns = None

    def update(self, timestamp_ns: int, arrival_ns: int) -> int:
        """Add a frame: its timestamp (strap ns) and its arrival (session ns). Returns how far
        it pulled the offset back (ns; 0: the offset stayed, or rose with a slow strap clock).
        """
        delay = arrival_ns - timestamp_ns
        self._delays.append((arrival_ns, delay))
        while self._delays[0][0] < arrival_ns - self.envelope_ns:
            self._delays.popleft()
        pulled = 0
        back = self._last_timestamp_ns is not None and timestamp_ns < self._last_timestamp_ns
        if back:
            # The strap's clock stepped back (rule 5): its delay rose by the step at once. The
            # servo took that for a slow clock and slewed the offset back at 500 ppm (~2000 s
            # for 1 s, every sample that much early meanwhile).
            self._delays.clear()
            self._delays.append((arrival_ns, delay))
        if self.offset_ns is None or back:
            self.offset_ns = delay
        elif delay - self.offset_ns < -self.tolerance_ns:
            pulled = self.offset_ns - delay
            self.offset_ns = delay
        elif self._last_timestamp_ns is not None:
            # The servo of rule 3: the least lag of the window back into its band.
            envelope = min(d for _, d in self._delays) - self.offset_ns
            band = self.tolerance_ns if envelope > 0 else self.tolerance_ns // 2
            if abs(envelope) > band:
                error = envelope - band if envelope > 0 else envelope + band
                limit = round(self.max_slew * max(0, timestamp_ns - self._last_timestamp_ns))
                self.offset_ns += max(-limit, min(limit, error))
        self._last_timestamp_ns = timestamp_ns
        return pulled
