"""A seedable physiological RR-interval generator (pure numpy, no I/O).

It drives the virtual strap and gives later detectors (e.g. "catching up" / settling onset) a
known ground truth. The model, for the interval that opens at beat time ``t`` (seconds):

.. code-block:: text

    p(t)     = 0                                   for t <= settle_onset_s
             = 1 − exp(−(t − settle_onset_s) / settle_tau_s)   afterwards      (settling progress)
    HR(t)    = baseline_hr_bpm + (settled_hr_bpm − baseline_hr_bpm) · p(t)      beats/min
    A_slow(t)= slow_osc_amp_start_ms + (slow_osc_amp_end_ms − slow_osc_amp_start_ms) · p(t)
    RR(t)    = 60000 / HR(t)
             + rsa_amplitude_ms · sin(2π · breathing_rate_bpm/60 · t + φ_rsa)     (RSA)
             + A_slow(t) · sin(2π · slow_osc_hz · t + φ_slow)                     (~0.1 Hz)
             + noise_ms · N(0, 1)                                                 (white)

clipped to [273, 2000] ms (220–30 beats/min). Amplitudes are sine amplitudes (half the
peak-to-trough swing). The phases ``φ`` are drawn from the seed. The interval is evaluated at
the time of the beat that *opens* it, the only time known before the interval is drawn; the
beat closing it is at ``t + RR/1000``.

Artefacts are injected after that. Each emitted interval that is not a compensatory pause is
one draw:

* ``ectopic_rate`` — probability that the next beat is premature: the interval is shortened by
  :data:`ECTOPIC_PREMATURITY` (30 %) of the sinus interval and the following interval is
  lengthened by the same amount (full compensatory pause: the sinus rhythm is not reset, so the
  pair sums to two sinus intervals). Emitted as ``"ectopic"`` then ``"compensatory"``.
* ``missed_rate`` — probability that a beat is missed: two consecutive sinus intervals are
  emitted as one (``"missed"``).

Artefacts may fall outside [273, 2000] ms; sinus intervals never do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Literal

import numpy as np

__all__ = [
    "ECTOPIC_PREMATURITY",
    "RR_MAX_MS",
    "RR_MIN_MS",
    "Beat",
    "BeatKind",
    "ModelParams",
    "PhysioModel",
    "true_settling_time_s",
]

RR_MIN_MS = 273.0
"""Shortest sinus interval the model emits, ms (≈ 220 beats/min)."""
RR_MAX_MS = 2000.0
"""Longest sinus interval the model emits, ms (30 beats/min)."""
ECTOPIC_PREMATURITY = 0.3
"""A premature beat arrives this fraction of the sinus interval early."""

BeatKind = Literal["normal", "ectopic", "compensatory", "missed"]


@dataclasses.dataclass(frozen=True, slots=True)
class ModelParams:
    """Parameters of :class:`PhysioModel`. Defaults: a resting adult who settles after 3 min."""

    baseline_hr_bpm: float = 72.0
    """Heart rate before settling begins, beats/min."""
    settled_hr_bpm: float = 64.0
    """Asymptotic heart rate once settled, beats/min."""
    settle_onset_s: float = 180.0
    """Time settling begins, s from the start of the series."""
    settle_tau_s: float = 90.0
    """Time constant of the exponential approach to the settled state, s (> 0)."""
    breathing_rate_bpm: float = 12.0
    """Breathing rate, breaths/min; RSA appears at ``breathing_rate_bpm / 60`` Hz."""
    rsa_amplitude_ms: float = 40.0
    """Sine amplitude of respiratory sinus arrhythmia, ms."""
    slow_osc_hz: float = 0.1
    """Frequency of the slow (baroreflex, ~0.1 Hz) oscillation, Hz."""
    slow_osc_amp_start_ms: float = 5.0
    """Sine amplitude of the slow oscillation before settling, ms."""
    slow_osc_amp_end_ms: float = 35.0
    """Sine amplitude of the slow oscillation once settled, ms."""
    noise_ms: float = 12.0
    """Standard deviation of white Gaussian RR noise, ms."""
    ectopic_rate: float = 0.0
    """Probability per draw of a premature beat (then a compensatory pause, not a draw)."""
    missed_rate: float = 0.0
    """Probability per draw that a beat is missed (two sinus intervals merged)."""
    duration_s: float | None = None
    """Stop once the next beat would close after this time, s; None = never stop."""

    def __post_init__(self) -> None:
        for name in ("baseline_hr_bpm", "settled_hr_bpm", "settle_tau_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        for name in ("ectopic_rate", "missed_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if self.ectopic_rate + self.missed_rate >= 1.0:
            raise ValueError("ectopic_rate + missed_rate must be < 1")
        for name in (
            "rsa_amplitude_ms",
            "noise_ms",
            "slow_osc_amp_start_ms",
            "slow_osc_amp_end_ms",
            "breathing_rate_bpm",
            "slow_osc_hz",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if self.duration_s is not None and not self.duration_s > 0.0:
            raise ValueError(f"duration_s must be > 0 or None, got {self.duration_s!r}")

    def flat(self) -> ModelParams:
        """The control condition: same physiology, but no settling at all.

        ``settled_hr_bpm = baseline_hr_bpm`` and ``slow_osc_amp_end_ms = slow_osc_amp_start_ms``.
        """
        return dataclasses.replace(
            self,
            settled_hr_bpm=self.baseline_hr_bpm,
            slow_osc_amp_end_ms=self.slow_osc_amp_start_ms,
        )

    def progress_at(self, t_s: float) -> float:
        """Settling progress ``p(t)`` in [0, 1): 0 before onset, ``1 − exp(−Δt/τ)`` after."""
        if t_s <= self.settle_onset_s:
            return 0.0
        return -math.expm1(-(t_s - self.settle_onset_s) / self.settle_tau_s)

    def hr_bpm_at(self, t_s: float) -> float:
        """Noise- and oscillation-free heart rate at ``t_s``, beats/min (the ground truth)."""
        return self.baseline_hr_bpm + (
            self.settled_hr_bpm - self.baseline_hr_bpm
        ) * self.progress_at(t_s)

    def slow_osc_amp_ms_at(self, t_s: float) -> float:
        """Sine amplitude of the slow oscillation at ``t_s``, ms."""
        return self.slow_osc_amp_start_ms + (
            self.slow_osc_amp_end_ms - self.slow_osc_amp_start_ms
        ) * self.progress_at(t_s)


def true_settling_time_s(params: ModelParams, fraction: float = 0.9) -> float | None:
    """Ground-truth settling time: when ``fraction`` of the heart-rate change is complete.

    ``t = settle_onset_s + settle_tau_s · ln(1 / (1 − fraction))``, seconds. With the defaults
    (fraction 0.9, onset 180 s, τ 90 s) that is 180 + 90·ln 10 ≈ 387.2 s. The slow-oscillation
    amplitude follows the same ``p(t)``, so it reaches the same fraction at the same time.
    Returns None for a model that does not settle (``settled_hr_bpm == baseline_hr_bpm`` and
    no amplitude change, e.g. :meth:`ModelParams.flat`).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    if (
        params.settled_hr_bpm == params.baseline_hr_bpm
        and params.slow_osc_amp_end_ms == params.slow_osc_amp_start_ms
    ):
        return None
    return params.settle_onset_s + params.settle_tau_s * math.log(1.0 / (1.0 - fraction))


@dataclasses.dataclass(frozen=True, slots=True)
class Beat:
    """One emitted interval."""

    t_s: float
    """Time of the beat closing the interval, s from the start of the series."""
    rr_ms: float
    """The interval, ms."""
    kind: BeatKind
    """``"normal"`` sinus interval, or the artefact it belongs to."""


class PhysioModel:
    """Iterator of RR intervals (float ms) following :class:`ModelParams`.

    Deterministic for a given ``seed``. ``next(model)`` gives the next ``rr_ms``;
    :meth:`next_beat` gives the same stream with times and artefact labels. Both advance the
    same state. Ends (``StopIteration``) only when ``params.duration_s`` is set.
    """

    __slots__ = (
        "_done",
        "_pending",
        "_phi_rsa",
        "_phi_slow",
        "_rng",
        "_t_s",
        "_t_sinus_s",
        "params",
    )

    def __init__(self, params: ModelParams | None = None, seed: int | None = 0) -> None:
        self.params = params if params is not None else ModelParams()
        self._rng = np.random.default_rng(seed)
        self._phi_rsa = float(self._rng.uniform(0.0, 2.0 * math.pi))
        self._phi_slow = float(self._rng.uniform(0.0, 2.0 * math.pi))
        self._t_s = 0.0  # time of the last emitted beat, s
        self._t_sinus_s = 0.0  # time of the last (possibly hidden) sinus beat, s
        self._pending: float | None = None  # compensatory lengthening still owed, ms
        self._done = False

    @property
    def t_s(self) -> float:
        """Time of the last emitted beat, s (0 before the first)."""
        return self._t_s

    def __iter__(self) -> Iterator[float]:
        return self

    def __next__(self) -> float:
        return self.next_beat().rr_ms

    def _sinus_rr_ms(self) -> float:
        """Draw the next sinus interval, opening at ``_t_sinus_s``, and advance past it."""
        p = self.params
        t = self._t_sinus_s
        rr = (
            60000.0 / p.hr_bpm_at(t)
            + p.rsa_amplitude_ms
            * math.sin(2.0 * math.pi * p.breathing_rate_bpm / 60.0 * t + self._phi_rsa)
            + p.slow_osc_amp_ms_at(t) * math.sin(2.0 * math.pi * p.slow_osc_hz * t + self._phi_slow)
            + p.noise_ms * float(self._rng.standard_normal())
        )
        rr = min(max(rr, RR_MIN_MS), RR_MAX_MS)
        self._t_sinus_s = t + rr / 1000.0
        return rr

    def next_beat(self) -> Beat:
        """Emit the next interval with its closing time and label.

        Raises ``StopIteration`` once ``params.duration_s`` is reached, and on every call after.
        """
        if self._done:
            raise StopIteration
        p = self.params
        kind: BeatKind
        if self._pending is not None:
            rr = self._sinus_rr_ms() + self._pending
            self._pending = None
            kind = "compensatory"
        else:
            u = float(self._rng.random())
            if u < p.ectopic_rate:
                sinus = self._sinus_rr_ms()
                early = ECTOPIC_PREMATURITY * sinus
                rr = sinus - early
                self._pending = early
                kind = "ectopic"
            elif u < p.ectopic_rate + p.missed_rate:
                rr = self._sinus_rr_ms() + self._sinus_rr_ms()
                kind = "missed"
            else:
                rr = self._sinus_rr_ms()
                kind = "normal"
        t_s = self._t_s + rr / 1000.0
        if p.duration_s is not None and t_s > p.duration_s:
            self._done = True
            raise StopIteration
        self._t_s = t_s
        return Beat(t_s, rr, kind)
