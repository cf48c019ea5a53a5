"""A synthetic single-lead chest ECG that beats with a virtual strap's RR intervals.

``settle demo --ecg`` gives its virtual strap the Polar PMD service (see
:mod:`sensors.virtual.pmd`) streaming this ECG, so the demo records raw ECG and detects its
R peaks as a Polar H10 session would, and the two RR sources agree beat for beat: the
ECG's R peaks sit at the ends of the very intervals the strap notifies.

* :class:`BeatSchedule` is the strap's ``rr_source``: it hands the heart-rate stream the
  intervals of the source it wraps, and lets the ECG read ahead of that stream (a P wave
  comes 160 ms before its R peak, which the heart-rate stream has not reached yet).
* :class:`SyntheticEcg` draws each beat as a sum of Gaussian waves (P, Q, R, S, T; T later
  at slower rates, as QT lengthens with RR), with a little breathing baseline and noise.
  It is not a physiological model: amplitudes and widths are typical of a chest lead at
  130 Hz, enough for the R-peak detector, the exports and the eye.

Both run on the strap's simulated clock (seconds since it started), which the strap shares
with its PMD service (:meth:`SyntheticEcg.stream_from`).
"""

from __future__ import annotations

import bisect
import collections
import math
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from sensors.virtual.strap import Silence

WAVES: tuple[tuple[float, float, float], ...] = (
    # (offset from the R peak, s; amplitude, µV; width σ, s). T's offset is scaled by √RR.
    (-0.160, 110.0, 0.025),  # P
    (-0.030, -120.0, 0.008),  # Q
    (0.000, 1150.0, 0.010),  # R
    (0.032, -280.0, 0.009),  # S
    (0.260, 280.0, 0.045),  # T (at RR = 1 s)
)
REACH_S = 0.6
"""How far a beat's waves reach either side of its R peak (past the T wave's 3 σ at 2 s RR)."""
BREATH_UV = 40.0
"""Amplitude of the breathing baseline (µV, at 0.25 Hz)."""
NOISE_UV = 8.0
"""Standard deviation of the sample noise, µV."""


class BeatSchedule(Iterator[float]):
    """An RR source (ms; :class:`~sensors.virtual.strap.Silence` entries allowed) shared by
    a strap's heart-rate stream, which iterates it, and its ECG, which asks for the R peaks
    of a stretch of time (:meth:`r_peaks_s`) and may read ahead of the stream."""

    def __init__(self, rr_source: Iterable[float]) -> None:
        self._source = iter(rr_source)
        self._ahead: collections.deque[float] = collections.deque()
        self._r_s: list[float] = []
        """R-peak times (s on the strap's clock) of the beats read, the oldest trimmed."""
        self._end_s = 0.0
        self._done = False

    def _read(self) -> bool:
        rr = next(self._source, None)
        if rr is None:
            self._done = True
            return False
        self._ahead.append(rr)
        self._end_s += rr / 1000.0
        if rr > 0 and not isinstance(rr, Silence):
            self._r_s.append(self._end_s)
        return True

    def __next__(self) -> float:
        if not self._ahead and not self._read():
            raise StopIteration
        return self._ahead.popleft()

    def r_peaks_s(self, lo_s: float, hi_s: float) -> list[float]:
        """The R peaks within ``[lo_s, hi_s]`` (s); those before ``lo_s − 60`` are forgotten."""
        while not self._done and self._end_s < hi_s:
            self._read()
        r = self._r_s
        first = bisect.bisect_left(r, lo_s)
        if first > 4096:  # a day's demo keeps a minute of beats, not a list of all of them
            keep = bisect.bisect_left(r, lo_s - 60.0)
            del r[:keep]
            first -= keep
        return r[first : bisect.bisect_right(r, hi_s, lo=first)]


class SyntheticEcg:
    """ECG samples (µV) for any time on the strap's clock, from a :class:`BeatSchedule`."""

    def __init__(self, schedule: BeatSchedule, fs_hz: float = 130.0, seed: int = 0) -> None:
        self.schedule = schedule
        self.fs_hz = fs_hz
        self._rng = random.Random(seed)

    def at(self, t_s: float) -> int:
        """The sample at ``t_s`` (s on the strap's clock), µV."""
        v = BREATH_UV * math.sin(2.0 * math.pi * 0.25 * t_s) + self._rng.gauss(0.0, NOISE_UV)
        # From 2.5 s back: each beat's interval (the T wave's timing) is the same whichever
        # sample asks, up to RR = 1.9 s.
        peaks = self.schedule.r_peaks_s(t_s - REACH_S - 2.5, t_s + REACH_S)
        for i, r in enumerate(peaks):
            if r < t_s - REACH_S:
                continue
            rr_s = r - peaks[i - 1] if i else 1.0
            for offset, amp, width in WAVES:
                if offset > 0.1:  # the T wave: QT lengthens with RR (Bazett)
                    offset *= math.sqrt(min(max(rr_s, 0.3), 2.0))
                d = (t_s - r - offset) / width
                if -5.0 < d < 5.0:
                    v += amp * math.exp(-0.5 * d * d)
        return round(v)

    def stream_from(self, t0_s: float) -> Sequence[int]:
        """What a PMD stream started at ``t0_s`` (s on the strap's clock) sends: sample ``i``
        is the ECG at ``t0_s + i / fs_hz`` (endless; read in order)."""
        return _Stream(self, t0_s)


class _Stream(Sequence[int]):
    def __init__(self, ecg: SyntheticEcg, t0_s: float) -> None:
        self._ecg = ecg
        self._t0_s = t0_s

    def __len__(self) -> int:
        return sys.maxsize

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...
    def __getitem__(self, i: int | slice) -> int | Sequence[int]:
        if isinstance(i, slice):
            raise TypeError("a synthetic ECG stream is read one sample at a time")
        return self._ecg.at(self._t0_s + i / self._ecg.fs_hz)
