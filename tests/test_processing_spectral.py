"""Spectral calibration, coherence, respiration rate, Poincaré and DFA."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processing.nonlinear import dfa_alpha1, poincare
from processing.spectral import coherence_from_psd, periodograms, resample_cubic, spectral
from sensors.virtual.model import ModelParams, PhysioModel


def _sine_series(f_hz: float, mean_rr_ms: float, amp_ms: float = 40.0, dur_s: float = 300.0):
    t, rr = [0.0], []
    while t[-1] < dur_s:
        r = mean_rr_ms + amp_ms * math.sin(2 * math.pi * f_hz * t[-1])
        rr.append(r)
        t.append(t[-1] + r / 1000.0)
    return np.array(t[1:]), np.array(rr)


@pytest.mark.parametrize("method", ["welch", "lomb"])
@pytest.mark.parametrize(("f_hz", "band"), [(0.1, "lf_ms2"), (0.25, "hf_ms2")])
@pytest.mark.parametrize("mean_rr_ms", [700.0, 857.0, 1000.0])
def test_40ms_sine_gives_800ms2_in_its_band(
    method: str, f_hz: float, band: str, mean_rr_ms: float
) -> None:
    t, rr = _sine_series(f_hz, mean_rr_ms)
    s = spectral(t, rr, method=method)  # type: ignore[arg-type]
    assert getattr(s, band) == pytest.approx(800.0, rel=0.03)
    other = "hf_ms2" if band == "lf_ms2" else "lf_ms2"
    assert getattr(s, other) < 0.03 * 800.0
    assert s.peak_hz == pytest.approx(f_hz, abs=0.01)


def test_lf_nu_and_ratio_follow_the_bands() -> None:
    t, rr = _sine_series(0.1, 900.0)
    _, rr2 = _sine_series(0.25, 900.0, amp_ms=20.0)
    s = spectral(t, rr + (rr2[: rr.size] - 900.0 if rr2.size >= rr.size else 0.0))
    assert s.lf_hf == pytest.approx(s.lf_ms2 / s.hf_ms2)
    assert s.lf_nu + s.hf_nu == pytest.approx(100.0)


def test_spline_passes_through_the_beats() -> None:
    t = np.array([0.0, 1.0, 1.8, 3.0, 3.9])
    y = np.array([800.0, 900.0, 850.0, 870.0, 820.0])
    grid, x = resample_cubic(t, y, fs=10.0)
    for ti, yi in zip(t, y, strict=True):
        assert x[np.argmin(np.abs(grid - ti))] == pytest.approx(yi, abs=1e-6)


def test_coherence_high_for_a_pure_slow_oscillation_low_for_noise() -> None:
    t, rr = _sine_series(0.1, 1000.0, dur_s=70.0)
    _grid, x = resample_cubic(t, rr)
    f, p = periodograms(x[None, -256:], 4.0, nfft=1024)
    assert coherence_from_psd(f, p[0]).ratio > 5.0
    rng = np.random.default_rng(0)
    f, p = periodograms(rng.normal(0, 30, (1, 256)), 4.0, nfft=1024)
    assert coherence_from_psd(f, p[0]).ratio < 1.0


@pytest.mark.parametrize("breaths", [9.0, 12.0, 15.0])
def test_respiration_rate_from_the_rsa_peak(breaths: float) -> None:
    # Validated on the physiological model (known breathing rate); the shared data has no
    # recording with a respiration channel.
    m = PhysioModel(ModelParams(breathing_rate_bpm=breaths, duration_s=300.0).flat(), seed=3)
    beats = []
    try:
        while True:
            beats.append(m.next_beat())
    except StopIteration:
        pass
    t = np.array([b.t_s for b in beats])
    rr = np.array([b.rr_ms for b in beats])
    assert spectral(t, rr).resp_rate_bpm == pytest.approx(breaths, abs=0.6)


def test_poincare_formulas() -> None:
    rr = np.array([800.0, 850.0, 820.0, 900.0, 870.0, 810.0])
    sd1, sd2 = poincare(rr)
    assert sd1 == pytest.approx(math.sqrt(np.var(np.diff(rr), ddof=1) / 2))
    assert sd2 == pytest.approx(np.std((rr[1:] + rr[:-1]) / math.sqrt(2), ddof=1))


def test_dfa_alpha1_white_noise_near_half_and_brownian_near_1_5() -> None:
    rng = np.random.default_rng(0)
    # Short-scale DFA is biased upwards for white noise (≈ 0.6 at 4–16 beats).
    assert dfa_alpha1(800 + rng.normal(0, 30, 5000)) == pytest.approx(0.55, abs=0.08)
    assert dfa_alpha1(800 + np.cumsum(rng.normal(0, 5, 5000))) == pytest.approx(1.5, abs=0.1)
