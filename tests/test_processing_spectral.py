"""Spectral calibration, coherence, respiration rate, Poincaré and DFA."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from processing.live import LiveAnalyzer
from processing.nonlinear import dfa_alpha1, poincare
from processing.offline import analyze
from processing.spectral import (
    Method,
    coherence_from_psd,
    lomb_frames,
    periodograms,
    resample_cubic,
    resp_peak_hz,
    spectral,
)
from sensors.readers import read_rr_file
from sensors.virtual.model import ModelParams, PhysioModel

DATA = Path(__file__).parent / "data"


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


@pytest.mark.parametrize(("f_hz", "band"), [(0.1, "lf_ms2"), (0.25, "hf_ms2")])
@pytest.mark.parametrize("hole", [(120.0, 180.0), (240.0, 300.0)])
def test_lomb_keeps_its_calibration_across_a_hole(
    f_hz: float, band: str, hole: tuple[float, float]
) -> None:
    """Lomb–Scargle is the option for gappy data, so a hole must not change the calibrated
    band power: a minute missing from the 5-minute sine still reads 800 ms² ± 3 %. The
    density is scaled by the time the beats cover; scaled by the span from first to last
    beat, as before, a hole inside read +25 %. Frame-averaged over 10 minutes, likewise."""
    t, rr = _sine_series(f_hz, 857.0)
    keep = ~((t > hole[0]) & (t < hole[1]))
    s = spectral(t[keep], rr[keep], method="lomb")
    assert getattr(s, band) == pytest.approx(800.0, rel=0.03)
    t2, rr2 = _sine_series(f_hz, 857.0, dur_s=600.0)
    keep2 = ~((t2 > 2 * hole[0]) & (t2 < 2 * hole[0] + 60.0))
    framed = lomb_frames(t2[keep2], rr2[keep2])
    assert getattr(framed, band) == pytest.approx(800.0, rel=0.03)
    assert framed.vlf_ms2 < 10.0


@pytest.mark.parametrize("method", ["welch", "lomb"])
def test_lf_nu_and_ratio_follow_the_bands(method: Method) -> None:
    """A 40 ms sine at 0.1 Hz (800 ms² in LF) plus a 20 ms one at 0.25 Hz (200 ms² in HF):
    LF/HF reads 4, the normalised units 80 and 20 (each band over LF + HF)."""
    t, rr = _sine_series(0.1, 900.0)
    _, rr2 = _sine_series(0.25, 900.0, amp_ms=20.0)
    s = spectral(t, rr + (rr2[: rr.size] - 900.0 if rr2.size >= rr.size else 0.0), method)
    assert s.lf_hf == pytest.approx(4.0, rel=0.03)
    assert s.lf_nu == pytest.approx(80.0, abs=0.5)
    assert s.hf_nu == pytest.approx(20.0, abs=0.5)


def test_spline_passes_through_the_beats() -> None:
    t = np.array([0.0, 1.0, 1.8, 3.0, 3.9])
    y = np.array([800.0, 900.0, 850.0, 870.0, 820.0])
    grid, x = resample_cubic(t, y, fs=10.0)
    for ti, yi in zip(t, y, strict=True):
        assert x[np.argmin(np.abs(grid - ti))] == pytest.approx(yi, abs=1e-6)


@pytest.mark.parametrize("n", [*range(3, 41), 257, 1000, 1001, 80_441])
def test_resampling_is_the_natural_cubic_spline(n: int) -> None:
    """The 4 Hz series every spectrum starts from equals scipy's natural cubic spline through
    the beats, at every length (the solver halves the system level by level: odd and even
    lengths, and a day's worth of beats)."""
    from scipy.interpolate import CubicSpline

    rng = np.random.default_rng(n)
    rr = rng.uniform(400.0, 1500.0, n)
    t = np.cumsum(rr) / 1000.0
    grid, x = resample_cubic(t, rr)
    expected = CubicSpline(t, rr, bc_type="natural")(grid)
    assert np.max(np.abs(x - expected)) < 1e-9 * np.max(np.abs(rr))


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
    # The model's breathing rate is known exactly; a real belt recording is tested below.
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


def _belt_rate(breaths: np.ndarray, t_end: float, window_s: float = 120.0) -> tuple[float, bool]:
    """Breaths/min from the belt's inspiration peaks in the window ending at ``t_end``
    (60 / median breath interval), and whether the belt's breathing was regular enough
    there to serve as truth (interquartile range of the intervals ≤ 25 % of their median)."""
    b = breaths[(breaths > t_end - window_s) & (breaths <= t_end)]
    iv = np.diff(b)
    if iv.size < 4:
        return math.nan, False
    q1, med, q3 = np.percentile(iv, [25, 50, 75])
    return 60.0 / med, bool((q3 - q1) <= 0.25 * med)


@pytest.mark.parametrize("path", ["live", "offline"])
def test_respiration_rate_against_a_respiration_belt(path: str) -> None:
    # 25 min of ECG and belt from one participant (Legrand et al. 2020, see tests/data/README).
    # The belt is the truth only where its breathing was regular (from minute 7 on, about
    # 21 breaths/min); the estimate comes from the RR series alone.
    rec = read_rr_file(DATA / "legrand2020_task1_rr.csv")
    breaths = np.loadtxt(DATA / "legrand2020_task1_breaths.csv", skiprows=1)
    if path == "live":
        la, nxt, est = LiveAnalyzer(), 125.0, {}
        for t, rr in zip(rec.t_s.tolist(), rec.rr_ms.tolist(), strict=True):
            la.push_beat(t, rr)
            if t >= nxt:
                est[nxt] = la.indices(t).resp_rate_bpm
                nxt += 5.0
    else:
        roll = analyze(rec.t_s, rec.rr_ms, rolling=True).rolling
        assert roll is not None
        est = dict(zip(roll.step_t_s.tolist(), roll.step_resp_rate_bpm.tolist(), strict=True))
    err = []
    for t_end, rate in est.items():
        truth, regular = _belt_rate(breaths, t_end)
        if regular and t_end >= 125.0:
            err.append(abs(rate - truth) if math.isfinite(rate) else math.inf)
    e = np.array(err)
    assert e.size >= 150  # windows (every 5 s) where the belt is trusted
    assert np.median(e) <= 1.0
    assert np.mean(e <= 2.0) >= 0.9


def test_rsa_peak_stands_out_from_a_1_over_f_background() -> None:
    # A weak breathing peak at 0.3 Hz on a steep 1/f² background: the plain maximum of the
    # band would be its lower edge (0.12 Hz); the RSA peak is the one above the background.
    f = np.linspace(0.0, 2.0, 513)
    background = 1e3 / np.maximum(f, 0.01) ** 2
    psd = background + 2e4 * np.exp(-0.5 * ((f - 0.3) / 0.01) ** 2)
    sel = (f >= 0.12) & (f < 0.5)
    assert f[sel][np.argmax(psd[sel])] == pytest.approx(0.12, abs=0.005)
    assert resp_peak_hz(f, psd)[0] == pytest.approx(0.3, abs=0.005)
    # No peak in the band at all (a bare background): no respiration rate, not an edge bin.
    assert math.isnan(resp_peak_hz(f, background)[0])


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


def test_dfa_alpha1_boxes_do_not_span_a_gap() -> None:
    """A strap that keeps dropping out between two postures (runs of 40 beats alternating
    around 700 and 900 ms, each white noise): over the concatenated beats the level jumps read
    as a slow trend (α1 ≈ 1.5, "correlated"); with the gaps as breaks each run is its own
    series and α1 reads the white noise's value, as it does for one unbroken series."""
    rng = np.random.default_rng(1)
    rr = np.concatenate([(700.0 if i % 2 else 900.0) + rng.normal(0, 30, 40) for i in range(100)])
    breaks = np.arange(40, rr.size, 40)
    white = dfa_alpha1(800 + rng.normal(0, 30, rr.size))
    assert dfa_alpha1(rr) > 1.2
    assert dfa_alpha1(rr, breaks=breaks) == pytest.approx(white, abs=0.06)
    # Too little left within runs for two boxes of 16 beats: no value rather than a guess.
    assert math.isnan(dfa_alpha1(rr[:60], breaks=[15, 30, 45]))
    with pytest.raises(ValueError, match="breaks"):
        dfa_alpha1(rr, breaks=[0])


def test_low_band_periodograms_equal_the_fft_bins() -> None:
    """The rolling and live spectra compute only the bins up to 0.5 Hz (one matrix product):
    they must equal the full FFT periodogram's bins, the detrend and window included."""
    rng = np.random.default_rng(3)
    for n in (256, 480, 7):
        t = np.arange(n) / 4.0
        x = 800 + 40 * np.sin(2 * np.pi * 0.1 * t) + np.cumsum(rng.normal(0, 3, (50, n)), axis=1)
        f, p = periodograms(x, 4.0, nfft=1024)
        fl, pl = periodograms(x, 4.0, nfft=1024, f_max=0.5)
        assert fl.size == 129 and fl[-1] == 0.5
        np.testing.assert_array_equal(fl, f[:129])
        np.testing.assert_allclose(pl, p[:, :129], rtol=0, atol=1e-12 * float(p.max()))
    # A band reaching Nyquist is the whole spectrum, its last bin halved likewise.
    f, p = periodograms(x, 4.0, nfft=16)
    fl, pl = periodograms(x, 4.0, nfft=16, f_max=9.0)
    np.testing.assert_allclose(pl, p, rtol=1e-9)


def test_no_band_power_from_less_than_one_cycle_or_from_rounding_noise() -> None:
    """Ten beats (8 s) printed an "LF power", LF/HF and a respiration rate; a constant series
    printed LF/HF 0.43 and coherence 0.23 computed from 1e-35 ms² of rounding noise."""
    rng = np.random.default_rng(3)
    rr = 800.0 + 40.0 * rng.standard_normal(10)
    short = analyze(np.cumsum(rr) / 1000.0, rr, correction=False).spectral
    assert math.isnan(short.lf_ms2) and math.isnan(short.lf_hf) and math.isnan(short.peak_hz)
    assert math.isnan(short.resp_rate_bpm)
    assert short.hf_ms2 > 0  # 8 s holds a whole HF cycle
    flat = np.full(400, 800.0)
    a = analyze(np.cumsum(flat) / 1000.0, flat, correction=False)
    s = a.spectral
    assert (s.vlf_ms2, s.lf_ms2, s.hf_ms2) == (0.0, 0.0, 0.0)
    for x in (s.lf_hf, s.lf_nu, s.hf_nu, s.peak_hz, s.resp_rate_bpm, a.coherence):
        assert math.isnan(x)


def _live_resp_and_hf(t: np.ndarray, rr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Respiration rate and HF of the live path, every 5 s once a 120 s window is full."""
    la, nxt, resp, hf = LiveAnalyzer(), 125.0, [], []
    for ti, ri in zip(t.tolist(), rr.tolist(), strict=True):
        la.push_beat(ti, ri)
        if ti >= nxt:
            snap = la.indices(ti)
            resp.append(snap.resp_rate_bpm)
            hf.append(snap.hf_ms2)
            nxt += 5.0
    return np.array(resp), np.array(hf)


def test_no_respiration_rate_without_a_breathing_peak() -> None:
    """Resonance breathing at 6/min puts the RSA at 0.1 Hz, below the respiration band: what
    is left in 0.12–0.5 Hz is a harmonic or noise ripples, which read as a rate (9–27/min
    from seed to seed with 8 ms of beat noise; a clean 0.1 Hz rhythm read 11.95/min from a
    0.1 ms² harmonic beside its 800 ms²). A peak that holds less than 1 % of the power
    above its background is no breathing: no rate, whole recording, rolling and live."""
    t, rr = _sine_series(0.1, 1000.0)
    for method in ("welch", "lomb"):
        assert math.isnan(spectral(t, rr, method=method).resp_rate_bpm)  # type: ignore[arg-type]
    for seed in range(8):
        rng = np.random.default_rng(seed)
        _, rr = _sine_series(0.1, 900.0, amp_ms=60.0)
        rr = rr + rng.normal(0.0, 8.0, rr.size)
        t = np.cumsum(rr) / 1000.0
        a = analyze(t, rr, correction=False, rolling=True)
        assert a.rolling is not None
        assert math.isnan(a.spectral.resp_rate_bpm)
        assert np.isnan(a.rolling.step_resp_rate_bpm).all()
        if seed == 0:
            live_resp, _ = _live_resp_and_hf(t, rr)
            assert live_resp.size > 20 and np.isnan(live_resp).all()
    # Breathing in the band still reads: a clean 15/min, and 15/min beside a 0.1 Hz rhythm
    # eight times its power.
    t, rr = _sine_series(0.25, 1000.0)
    assert spectral(t, rr).resp_rate_bpm == pytest.approx(15.0, abs=0.1)
    _, rsa = _sine_series(0.25, 1000.0, amp_ms=15.0)
    n = min(rr.size, rsa.size)
    _, slow = _sine_series(0.1, 1000.0, amp_ms=40.0)
    mix = slow[:n] + rsa[:n] - 1000.0
    assert spectral(np.cumsum(mix) / 1000.0, mix).resp_rate_bpm == pytest.approx(15.0, abs=0.3)


@pytest.mark.parametrize("method", ["welch", "lomb"])
def test_nothing_above_the_beats_nyquist_frequency_is_counted(method: str) -> None:
    """At 36 beats/min (RR 1667 ms) the beats carry nothing faster than 1/(2·1.667 s) = 0.3 Hz;
    above it a spectrum shows only a mirror of the power below. A 40 ms, 0.25 Hz rhythm read
    HF +17 % by Welch (spline images amplified 4-fold by the gain correction) and +100 % by
    Lomb–Scargle (a mirror at 0.35 Hz), whose respiration rate read 21/min instead of 15."""
    t, rr = _sine_series(0.25, 1667.0)
    s = spectral(t, rr, method=method)  # type: ignore[arg-type]
    assert s.hf_ms2 == pytest.approx(800.0, rel=0.03)
    assert s.nyquist_hz == pytest.approx(0.3, abs=0.001)
    assert s.resp_rate_bpm == pytest.approx(15.0, abs=0.1)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        _, rr = _sine_series(0.25, 1667.0)
        rr = np.roll(rr, int(rng.integers(rr.size))) + rng.normal(0.0, 5.0, rr.size)
        t = np.cumsum(rr) / 1000.0
        noisy = spectral(t, rr, method=method) if method == "welch" else lomb_frames(t, rr)
        assert noisy.resp_rate_bpm == pytest.approx(15.0, abs=0.3)
        assert noisy.hf_ms2 == pytest.approx(800.0, rel=0.1)


def test_live_and_rolling_hf_leave_out_the_spline_images_at_a_slow_heart() -> None:
    """The same at 36 beats/min in 120 s windows: live and `settle analyze --rolling` read
    HF 942 ms² (median) for the 800 ms² rhythm, from images above 0.3 Hz."""
    t, rr = _sine_series(0.25, 1667.0)
    resp, hf = _live_resp_and_hf(t, rr)
    assert np.median(hf) == pytest.approx(800.0, rel=0.03)
    assert np.median(resp) == pytest.approx(15.0, abs=0.2)
    roll = analyze(t, rr, correction=False, rolling=True).rolling
    assert roll is not None
    assert np.nanmedian(roll.step_hf_ms2) == pytest.approx(800.0, rel=0.03)


def test_rolling_hf_follows_a_heart_that_slows_down_as_live() -> None:
    """13 min at 70 beats/min, then 36 beats/min with the same 800 ms² rhythm at 0.25 Hz,
    in one unbroken run: `--rolling` corrected the spline with the run's mean RR (HF 562 ms²
    in the slow part, live 821), live with each window's own beats. Now both read ≈ 800."""
    t, rr, tt = [], [], 0.0
    while tt < 1800.0:
        r = (857.0 if tt < 800.0 else 1667.0) + 40.0 * math.sin(2 * math.pi * 0.25 * tt)
        tt += r / 1000.0
        t.append(tt)
        rr.append(r)
    ta, ra = np.array(t), np.array(rr)
    roll = analyze(ta, ra, correction=False, rolling=True).rolling
    assert roll is not None
    slow = roll.step_t_s > 1000.0
    rolling_hf = float(np.nanmedian(roll.step_hf_ms2[slow]))
    la = LiveAnalyzer(correction=False)
    live_hf, nxt = [], 5.0
    for ti, ri in zip(ta.tolist(), ra.tolist(), strict=True):
        la.push_beat(ti, ri)
        while ti >= nxt:
            if nxt > 1000.0:
                live_hf.append(la.indices(nxt).hf_ms2)
            else:
                la.indices(nxt)
            nxt += 5.0
    assert rolling_hf == pytest.approx(float(np.nanmedian(live_hf)), rel=0.01)
    assert rolling_hf == pytest.approx(800.0, rel=0.03)


def test_no_step_inside_a_pause_repeats_the_window_before_it() -> None:
    """A strap off for 15 min in a plain RR file (the times jump, nothing recorded): every
    rolling step inside the pause repeated the window before it — LF, coherence, a score —
    and the summary's coherence, their median, moved by 16 %. The daemon's beat timer records
    such a pause as a gap ("beats missing"), so the analysis does too: no value inside it."""
    a = np.genfromtxt(DATA / "bartels_rest_supine.csv", delimiter=",", names=True)
    t, rr = a["t_s"].copy(), a["rr_ms"]
    whole = analyze(t, rr, rolling=True)
    pause_from = float(t[449])
    t[450:] += 900.0
    out = analyze(t, rr, rolling=True)
    assert out.rolling is not None and whole.rolling is not None
    steps = out.rolling.step_t_s
    inside = (steps > pause_from + 5.0) & (steps < t[450])
    assert inside.sum() > 170
    for values in (out.rolling.step_coherence, out.rolling.step_lf_ms2, out.rolling.step_score):
        assert not np.isfinite(values[inside]).any()
    assert not (out.rolling.step_quality[inside] > 0).any()
    # The summary's coherence is the median of the windows that hold beats: within 5 % of
    # the recording's without the pause (it read 16 % low).
    assert out.coherence == pytest.approx(whole.coherence, rel=0.05)


def test_lomb_takes_a_short_recording_at_epoch_times() -> None:
    """`settle analyze --spectrum lomb` of a 3 min reading whose times are seconds since
    1970 raised IndexError: at 1.7e9 s the frame grid's 1e-9 s margin was below one float
    step and a recording shorter than a frame got no frame. Its spectrum is the one the
    same beats give at times from 0."""
    a = np.genfromtxt(DATA / "pyhrv_nni_short.csv", delimiter=",", names=True)
    keep = a["t_s"] <= 180.0
    t, rr = a["t_s"][keep], a["rr_ms"][keep]
    near = lomb_frames(t, rr)
    far = lomb_frames(t + 1_700_000_000.0, rr)
    assert math.isfinite(far.lf_ms2) and far.lf_ms2 == pytest.approx(near.lf_ms2, rel=1e-3)
    assert far.hf_ms2 == pytest.approx(near.hf_ms2, rel=1e-3)
