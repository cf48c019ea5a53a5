"""The physiological RR generator behind the virtual strap."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy import interpolate, signal

from sensors.virtual.ecg_synth import BeatSchedule
from sensors.virtual.model import (
    ECTOPIC_PREMATURITY,
    RR_MAX_MS,
    RR_MIN_MS,
    Beat,
    ModelParams,
    PhysioModel,
    true_settling_time_s,
)
from sensors.virtual.strap import Silence


def beats(params: ModelParams, seed: int, n: int) -> list[Beat]:
    model = PhysioModel(params, seed)
    return [model.next_beat() for _ in range(n)]


def test_deterministic_for_a_seed() -> None:
    a = list(itertools.islice(PhysioModel(ModelParams(ectopic_rate=0.05), seed=3), 500))
    b = list(itertools.islice(PhysioModel(ModelParams(ectopic_rate=0.05), seed=3), 500))
    c = list(itertools.islice(PhysioModel(ModelParams(ectopic_rate=0.05), seed=4), 500))
    assert a == b
    assert a != c
    assert all(isinstance(x, float) for x in a)


def test_next_and_next_beat_share_one_stream() -> None:
    rr = list(itertools.islice(PhysioModel(seed=1), 50))
    assert rr == [b.rr_ms for b in beats(ModelParams(), 1, 50)]


def test_beat_times_are_cumulative_intervals() -> None:
    bs = beats(ModelParams(ectopic_rate=0.1, missed_rate=0.05), 2, 2000)
    t = np.array([b.t_s for b in bs])
    assert np.allclose(t, np.cumsum([b.rr_ms for b in bs]) / 1000.0, rtol=0, atol=1e-9)


def test_mean_hr_before_and_after_settling() -> None:
    p = ModelParams()
    bs = beats(p, 11, 2000)
    t = np.array([b.t_s for b in bs])
    rr = np.array([b.rr_ms for b in bs])
    before = rr[t < p.settle_onset_s]
    after = rr[t > p.settle_onset_s + 5 * p.settle_tau_s]
    assert len(after) > 300
    assert 60000.0 / before.mean() == pytest.approx(p.baseline_hr_bpm, abs=1.0)
    assert 60000.0 / after.mean() == pytest.approx(p.settled_hr_bpm, abs=1.0)


def test_flat_control_does_not_settle() -> None:
    p = ModelParams().flat()
    assert p.settled_hr_bpm == p.baseline_hr_bpm
    assert p.slow_osc_amp_end_ms == p.slow_osc_amp_start_ms
    assert true_settling_time_s(p) is None
    bs = beats(p, 5, 1500)
    rr = np.array([b.rr_ms for b in bs])
    assert 60000.0 / rr[-500:].mean() == pytest.approx(p.baseline_hr_bpm, abs=1.0)


def test_true_settling_time() -> None:
    p = ModelParams()
    t90 = true_settling_time_s(p)
    assert t90 == pytest.approx(180.0 + 90.0 * math.log(10.0))
    assert t90 is not None
    drop = p.baseline_hr_bpm - p.settled_hr_bpm
    assert p.baseline_hr_bpm - p.hr_bpm_at(t90) == pytest.approx(0.9 * drop)
    assert p.slow_osc_amp_ms_at(t90) == pytest.approx(5.0 + 0.9 * 30.0)
    assert p.hr_bpm_at(p.settle_onset_s) == p.baseline_hr_bpm
    with pytest.raises(ValueError):
        true_settling_time_s(p, fraction=1.0)


def _spectrum(bs: list[Beat], fs_hz: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    t = np.array([b.t_s for b in bs])
    rr = np.array([b.rr_ms for b in bs])
    grid = np.arange(t[0], t[-1], 1.0 / fs_hz)
    x = interpolate.CubicSpline(t, rr)(grid)
    f, pxx = signal.periodogram(x, fs=fs_hz, detrend="linear")
    return f, pxx


@pytest.mark.parametrize("breathing_rate_bpm", [6.0, 12.0, 15.0])
def test_rsa_peak_at_breathing_frequency(breathing_rate_bpm: float) -> None:
    p = ModelParams(breathing_rate_bpm=breathing_rate_bpm, slow_osc_amp_start_ms=0.0).flat()
    f, pxx = _spectrum(beats(p, 8, 700))
    band = f > 0.04
    peak_hz = f[band][np.argmax(pxx[band])]
    assert peak_hz == pytest.approx(breathing_rate_bpm / 60.0, abs=0.01)


def test_slow_oscillation_grows_with_settling() -> None:
    p = ModelParams(rsa_amplitude_ms=0.0, noise_ms=2.0, settle_onset_s=300.0, settle_tau_s=30.0)
    bs = beats(p, 9, 1500)
    early = [b for b in bs if b.t_s < p.settle_onset_s]
    late = [b for b in bs if b.t_s > p.settle_onset_s + 150.0]

    def power_near(group: list[Beat], hz: float) -> float:
        f, pxx = _spectrum(group)
        return float(pxx[np.abs(f - hz) < 0.02].sum() * (f[1] - f[0]))

    # ≈ A²/2: 12.5 ms² before, ≈ 600 ms² once settled (35 ms amplitude).
    assert power_near(early, 0.1) == pytest.approx(12.5, rel=0.5)
    assert power_near(late, 0.1) == pytest.approx(35.0**2 / 2, rel=0.3)


def test_artefact_rates() -> None:
    p = ModelParams(ectopic_rate=0.03, missed_rate=0.02)
    bs = beats(p, 12, 20_000)
    kinds = [b.kind for b in bs]
    starts = sum(k in ("normal", "ectopic", "missed") for k in kinds)  # draws, not pause beats
    assert kinds.count("ectopic") / starts == pytest.approx(0.03, rel=0.15)
    assert kinds.count("missed") / starts == pytest.approx(0.02, rel=0.15)
    for prev, cur in itertools.pairwise(bs):
        if prev.kind == "ectopic":
            assert cur.kind == "compensatory"


def test_ectopic_beats_are_premature_with_full_compensation() -> None:
    bs = beats(
        ModelParams(
            ectopic_rate=0.05,
            noise_ms=0.0,
            rsa_amplitude_ms=0.0,
            slow_osc_amp_start_ms=0.0,
            slow_osc_amp_end_ms=0.0,
        ).flat(),
        1,
        3000,
    )
    sinus = 60000.0 / 72.0
    for prev, cur in itertools.pairwise(bs):
        if prev.kind == "ectopic":
            assert prev.rr_ms == pytest.approx((1.0 - ECTOPIC_PREMATURITY) * sinus)
            assert prev.rr_ms + cur.rr_ms == pytest.approx(2.0 * sinus)
        if cur.kind == "missed":
            assert cur.rr_ms == pytest.approx(2.0 * sinus)


@pytest.mark.parametrize("seed", range(5))
def test_sinus_intervals_are_physiological(seed: int) -> None:
    extreme = ModelParams(
        baseline_hr_bpm=200.0,
        settled_hr_bpm=35.0,
        noise_ms=80.0,
        ectopic_rate=0.02,
        missed_rate=0.02,
        settle_tau_s=60.0,
    )
    for p in (ModelParams(), extreme):
        for b in beats(p, seed, 3000):
            if b.kind == "normal":
                assert RR_MIN_MS <= b.rr_ms <= RR_MAX_MS


def test_duration_ends_the_stream() -> None:
    p = dataclasses.replace(ModelParams(), duration_s=60.0)
    model = PhysioModel(p, seed=0)
    rr = list(model)
    assert 60 < len(rr) < 90
    assert sum(rr) / 1000.0 <= 60.0
    assert model.t_s == pytest.approx(sum(rr) / 1000.0)
    with pytest.raises(StopIteration):
        next(model)


@pytest.mark.parametrize(
    "bad",
    [
        {"baseline_hr_bpm": 0.0},
        {"settle_tau_s": -1.0},
        {"ectopic_rate": 1.0},
        {"ectopic_rate": 0.6, "missed_rate": 0.5},
        {"noise_ms": -1.0},
        {"duration_s": 0.0},
    ],
)
def test_params_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ModelParams(**bad)


def test_the_ecg_schedule_reads_ahead_without_taking_beats_from_the_strap() -> None:
    """The synthetic ECG (`settle demo --ecg`) reads R peaks ahead of the heart-rate stream:
    the strap must still get every interval, silences included, in order; a day-long demo
    must not keep every beat it ever drew."""
    rr = [600.0, Silence(3000.0), *([500.0] * 200_000)]
    sched = BeatSchedule(rr)
    assert sched.r_peaks_s(0.0, 5.0) == pytest.approx([0.6, 4.1, 4.6])  # no peak in the gap
    assert [next(sched) for _ in range(4)] == [600.0, 3000.0, 500.0, 500.0]
    for t in range(10, 90_000, 7):
        peaks = sched.r_peaks_s(float(t), t + 1.0)
        assert peaks == pytest.approx([p for p in (t + 0.1, t + 0.6) if p <= t + 1.0])
    assert len(sched._r_s) < 5000  # a minute behind plus the read-ahead, not 180 000 beats
    played = sum(1 for _ in sched)
    assert played == len(rr) - 4  # the rest, every one, after the ECG read them all
