"""Time-domain HRV: batch conventions, rolling == batch at every beat, golden values."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processing.nonlinear import dfa_alpha1, poincare
from processing.offline import analyze
from processing.timedomain import RollingTimeDomain, TimeDomain, time_domain
from sensors.hrs import rr_raw_to_ms
from sensors.virtual.model import ModelParams, PhysioModel
from tests.conftest import dev_dependency

DATA = Path(__file__).parent / "data"
RECORDINGS = (
    "pyhrv_nni_short",
    "bartels_rest_supine",
    "polar_h10_pvc_device",
    "physionet_healthy_000_first20k",
)
FLOAT_FIELDS = ("mean_rr_ms", "hr_bpm", "sdnn_ms", "rmssd_ms", "ln_rmssd", "pnn50_pct")
REL = 1e-9

FloatArray = npt.NDArray[np.float64]


def load(name: str) -> tuple[FloatArray, FloatArray]:
    data = np.loadtxt(DATA / f"{name}.csv", delimiter=",", skiprows=1)
    return data[:, 0].copy(), data[:, 1].copy()


_CACHE = {name: load(name) for name in RECORDINGS}


def assert_same(got: TimeDomain, want: TimeDomain, where: str = "") -> None:
    assert (got.n, got.n_diff) == (want.n, want.n_diff), where
    for field in FLOAT_FIELDS:
        g, w = getattr(got, field), getattr(want, field)
        if math.isnan(w):
            assert math.isnan(g), f"{where} {field}: {g} != NaN"
            continue
        # ln_rmssd is a log: near ln = 0 only an absolute comparison is meaningful.
        abs_tol = REL if field == "ln_rmssd" else 0.0
        assert math.isclose(g, w, rel_tol=REL, abs_tol=abs_tol), f"{where} {field}: {g} != {w}"


def check_stream(
    t_s: FloatArray, rr_ms: FloatArray, window_s: float, resets: frozenset[int] = frozenset()
) -> int:
    """Feed the stream; at every beat compare with the batch over the same window.

    ``resets`` holds beat indices before which :meth:`RollingTimeDomain.reset` is called.
    Returns the number of beats compared.
    """
    rolling = RollingTimeDomain(window_s)
    seg_start = 0
    t_list, rr_list = t_s.tolist(), rr_ms.tolist()
    for i, (t, rr) in enumerate(zip(t_list, rr_list, strict=True)):
        if i in resets:
            rolling.reset()
            seg_start = i
        got = rolling.update(t, rr)
        lo = max(seg_start, int(np.searchsorted(t_s, t - window_s, side="right")))
        assert_same(got, time_domain(rr_ms[lo : i + 1]), f"beat {i} window [{lo}, {i}]")
        assert len(rolling) == i + 1 - lo
    return len(t_list)


# --- batch conventions -------------------------------------------------------------------


def test_batch_formulas_by_hand() -> None:
    td = time_domain([800.0, 860.0, 830.0, 900.0])
    assert td.n == 4 and td.n_diff == 3
    assert td.mean_rr_ms == pytest.approx(847.5)
    assert td.hr_bpm == pytest.approx(60000.0 / 847.5)
    assert td.sdnn_ms == pytest.approx(float(np.std([800, 860, 830, 900], ddof=1)))
    assert td.rmssd_ms == pytest.approx(math.sqrt((60**2 + 30**2 + 70**2) / 3))
    assert td.ln_rmssd == pytest.approx(math.log(td.rmssd_ms))
    assert td.pnn50_pct == pytest.approx(100.0 * 2 / 3)  # |60|, |70| > 50; |30| not


def test_pnn50_threshold_is_strict() -> None:
    assert time_domain([800.0, 850.0]).pnn50_pct == 0.0
    assert time_domain([800.0, 850.5]).pnn50_pct == 100.0


@pytest.mark.parametrize(
    ("rr", "defined"),
    [
        ([], set()),
        ([812.5], {"mean_rr_ms", "hr_bpm"}),
        ([800.0, 900.0], set(FLOAT_FIELDS)),
    ],
)
def test_batch_nan_where_undefined(rr: list[float], defined: set[str]) -> None:
    td = time_domain(rr)
    assert td.n == len(rr)
    for field in FLOAT_FIELDS:
        assert math.isnan(getattr(td, field)) == (field not in defined), field


def test_flat_series_has_zero_rmssd_and_no_log() -> None:
    td = time_domain([1000.0] * 10)
    assert td.sdnn_ms == 0.0 and td.rmssd_ms == 0.0 and td.pnn50_pct == 0.0
    assert math.isnan(td.ln_rmssd)


def test_nan_input_propagates() -> None:
    td = time_domain([800.0, math.nan, 820.0])
    assert all(math.isnan(getattr(td, f)) for f in FLOAT_FIELDS)


def test_batch_rejects_2d() -> None:
    with pytest.raises(ValueError, match="1-D"):
        time_domain(np.ones((3, 2)))


# --- rolling: semantics ------------------------------------------------------------------


def test_window_is_half_open() -> None:
    rolling = RollingTimeDomain(window_s=2.0)
    rolling.update(1.0, 1000.0)
    rolling.update(2.0, 1000.0)
    td = rolling.update(3.0, 1100.0)  # the beat at 1.0 = 3.0 − 2.0 has left
    assert td.n == 2 and td.n_diff == 1 and td.rmssd_ms == 100.0
    assert rolling.snapshot() == td


def test_difference_leaves_with_its_earlier_beat() -> None:
    rolling = RollingTimeDomain(window_s=10.0)
    rolling.update(0.0, 500.0)
    rolling.update(1.0, 1000.0)  # ΔRR = 500 with the beat at 0
    td = rolling.update(10.5, 1000.0)  # beat at 0 gone, ΔRR = 0 between the two others
    assert td.n == 2 and td.n_diff == 1 and td.rmssd_ms == 0.0 and td.pnn50_pct == 0.0


def test_reset_means_no_difference_spans_the_gap() -> None:
    rolling = RollingTimeDomain(window_s=60.0)
    rolling.update(1.0, 800.0)
    rolling.update(2.0, 810.0)
    rolling.reset()
    td = rolling.update(3.0, 1200.0)
    assert td.n == 1 and td.n_diff == 0 and math.isnan(td.rmssd_ms)
    td = rolling.update(4.0, 1210.0)
    assert td.n == 2 and td.rmssd_ms == pytest.approx(10.0)


def test_empty_snapshot_is_all_nan() -> None:
    td = RollingTimeDomain().snapshot()
    assert td.n == 0 and all(math.isnan(getattr(td, f)) for f in FLOAT_FIELDS)


@pytest.mark.parametrize(("t_s", "rr_ms"), [(5.0, math.nan), (5.0, 0.0), (5.0, -1.0), (4.0, 800.0)])
def test_rolling_rejects_bad_input(t_s: float, rr_ms: float) -> None:
    rolling = RollingTimeDomain()
    rolling.update(4.5, 800.0)
    with pytest.raises(ValueError):
        rolling.update(t_s, rr_ms)


def test_rejects_bad_window() -> None:
    with pytest.raises(ValueError):
        RollingTimeDomain(window_s=0.0)


# --- rolling == batch, at every beat -----------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(RECORDINGS),
    start_frac=st.floats(0.0, 1.0),
    n_beats=st.integers(1, 1200),
    window_s=st.floats(1.0, 600.0),
    reset_fracs=st.lists(st.floats(0.0, 1.0), max_size=3),
)
def test_rolling_equals_batch_on_recordings(
    name: str, start_frac: float, n_beats: int, window_s: float, reset_fracs: list[float]
) -> None:
    t_all, rr_all = _CACHE[name]
    start = int(start_frac * (len(t_all) - 1))
    t_s, rr_ms = t_all[start : start + n_beats], rr_all[start : start + n_beats]
    resets = frozenset(int(f * (len(t_s) - 1)) for f in reset_fracs)
    check_stream(t_s, rr_ms, window_s, resets)


def test_rolling_equals_batch_over_20k_real_beats() -> None:
    t_s, rr_ms = _CACHE["physionet_healthy_000_first20k"]
    assert check_stream(t_s, rr_ms, 60.0) == 20_000


# RR as a strap sends it (1/1024 s on the wire), or with ms resolution over a wide range.
_rr_wire = st.integers(1, 0xFFFF).map(rr_raw_to_ms)
_rr_wide = st.integers(1, 10**8).map(lambda k: k / 1000.0)
_rr = st.one_of(_rr_wire, _rr_wide, st.sampled_from([800.0, 1000.0]))


@settings(max_examples=150, deadline=None)
@given(
    beats=st.lists(st.tuples(st.floats(0.0, 3.0), _rr, st.booleans()), min_size=1, max_size=300),
    window_s=st.floats(0.5, 120.0),
)
def test_rolling_equals_batch_on_synthetic(
    beats: list[tuple[float, float, bool]], window_s: float
) -> None:
    t_s = np.cumsum([dt for dt, _, _ in beats])
    rr_ms = np.array([rr for _, rr, _ in beats])
    resets = frozenset(i for i, (_, _, r) in enumerate(beats) if r and i % 7 == 0)
    check_stream(t_s, rr_ms, window_s, resets)


def test_rolling_stays_exact_over_100k_beats() -> None:
    """Drift check: a long synthetic session with artefacts and collapses to a constant."""
    model = PhysioModel(ModelParams(ectopic_rate=0.02, missed_rate=0.01), seed=7)
    rr = np.array([next(model) for _ in range(100_000)])
    rr[50_000:50_200] = 1000.0  # a flat stretch right after variable beats: worst cancellation
    rr[70_000] = 30_000.0  # one absurd interval passing through the window
    t_s = np.cumsum(rr) / 1000.0
    rolling = RollingTimeDomain(60.0)
    t_list, rr_list = t_s.tolist(), rr.tolist()
    checked = 0
    for i, (t, x) in enumerate(zip(t_list, rr_list, strict=True)):
        got = rolling.update(t, x)
        if i % 25 == 0 or 50_000 <= i < 50_300 or 70_000 <= i < 70_200 or i >= 98_000:
            lo = int(np.searchsorted(t_s, t - 60.0, side="right"))
            assert_same(got, time_domain(rr[lo : i + 1]), f"beat {i}")
            checked += 1
    assert checked > 6000


def test_add_then_an_occasional_snapshot_stays_exact() -> None:
    """The live path adds every beat without reading the window (``add``) and reads it every
    5 s (``snapshot``), or not at all for minutes (no indices while the rhythm is unusable):
    the rounding checks deferred to the snapshot still keep it within 1e-9 of the batch,
    through the same worst cases as above."""
    model = PhysioModel(ModelParams(ectopic_rate=0.02, missed_rate=0.01), seed=11)
    rr = np.array([next(model) for _ in range(60_000)])
    rr[30_000:30_200] = 1000.0
    rr[40_000] = 30_000.0
    t_s = np.cumsum(rr) / 1000.0
    rolling = RollingTimeDomain(60.0)
    checked = 0
    for i, (t, x) in enumerate(zip(t_s.tolist(), rr.tolist(), strict=True)):
        rolling.add(t, x)
        if i % 997 == 0 or (30_000 <= i < 30_300 and i % 5 == 0) or 40_000 <= i < 40_100:
            lo = int(np.searchsorted(t_s, t - 60.0, side="right"))
            assert_same(rolling.snapshot(), time_domain(rr[lo : i + 1]), f"beat {i}")
            checked += 1
    assert checked > 200


# --- golden values -----------------------------------------------------------------------

# NeuroKit2 0.2.13 hrv_time() on the whole recordings (shared reference.json).
# NeuroKit2's pNN50 divides by len(ΔRR) + 1 (= n); ours by len(ΔRR).
NK_0_2_13 = {
    "pyhrv_nni_short": (
        888.9554896142433,
        95.69035398754956,
        101.30063401766522,
        48.367952522255194,
    ),
    "bartels_rest_supine": (
        1058.7186813186813,
        57.81817771970009,
        55.13744203126742,
        35.27472527472528,
    ),
    "polar_h10_pvc_device": (
        751.187969924812,
        256.30234215740546,
        441.75920844212493,
        87.59398496240601,
    ),
}


@pytest.mark.parametrize("name", sorted(NK_0_2_13))
def test_batch_matches_pinned_neurokit2_values(name: str) -> None:
    mean_nn, sdnn, rmssd, pnn50_nk = NK_0_2_13[name]
    td = time_domain(_CACHE[name][1])
    assert td.mean_rr_ms == pytest.approx(mean_nn, rel=1e-6)
    assert td.sdnn_ms == pytest.approx(sdnn, rel=1e-6)
    assert td.rmssd_ms == pytest.approx(rmssd, rel=1e-6)
    assert td.pnn50_pct == pytest.approx(pnn50_nk * td.n / td.n_diff, rel=1e-6)


@pytest.mark.parametrize("name", RECORDINGS)
def test_batch_matches_neurokit2_hrv_time(name: str) -> None:
    nk = dev_dependency("neurokit2")
    t_s, rr_ms = _CACHE[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = nk.hrv_time({"RRI": rr_ms, "RRI_Time": t_s})
    td = time_domain(rr_ms)
    assert td.mean_rr_ms == pytest.approx(float(ref["HRV_MeanNN"].iloc[0]), rel=1e-6)
    assert td.sdnn_ms == pytest.approx(float(ref["HRV_SDNN"].iloc[0]), rel=1e-6)
    assert td.rmssd_ms == pytest.approx(float(ref["HRV_RMSSD"].iloc[0]), rel=1e-6)
    # Same NN50 count, different denominator: NeuroKit2 uses len(ΔRR) + 1.
    nn50 = td.pnn50_pct * td.n_diff / 100.0
    assert float(ref["HRV_pNN50"].iloc[0]) == pytest.approx(100.0 * nn50 / (td.n_diff + 1))


def test_breaks_leave_out_the_differences_across_them() -> None:
    rr = np.array([800.0, 810.0, 790.0, 1000.0, 1010.0, 995.0, 1005.0])
    td = time_domain(rr, breaks=[3])
    diffs = np.array([10.0, -20.0, 10.0, -15.0, 10.0])  # not 790 -> 1000
    assert td.n == 7 and td.n_diff == 5
    assert td.rmssd_ms == pytest.approx(float(np.sqrt(np.mean(diffs**2))))
    assert td.pnn50_pct == 0.0
    assert td.sdnn_ms == pytest.approx(float(np.std(rr, ddof=1)))  # every beat still counts
    assert time_domain(rr).pnn50_pct == pytest.approx(100 / 6)
    sd1, _ = poincare(rr, breaks=[3])
    assert sd1 == pytest.approx(float(np.std(diffs, ddof=1)) / np.sqrt(2.0))
    with pytest.raises(ValueError, match="breaks"):
        time_domain(rr, breaks=[0])


def test_pnn50_does_not_count_a_decimal_step_of_exactly_50_ms() -> None:
    """512.2 − 462.2 is 50.00000000000006 in float64: a file alternating between the two
    (every step exactly 50.0 ms as written) read pNN50 100 % instead of 0 %, in the batch,
    the rolling window and `settle analyze --rolling` alike."""
    rr = np.array([462.2, 512.2] * 60)
    assert np.all(np.abs(np.diff(rr)) > 50.0)  # the float64 artefact
    t = np.cumsum(rr) / 1000.0
    assert time_domain(rr).pnn50_pct == 0.0
    roll = RollingTimeDomain(60.0)
    pnn = [roll.update(float(ti), float(ri)).pnn50_pct for ti, ri in zip(t, rr, strict=True)]
    assert math.isnan(pnn[0]) and max(pnn[1:]) == 0.0
    offline = analyze(t, rr, correction=False, rolling=True).rolling
    assert offline is not None
    assert np.nanmax(offline.beat_pnn50_pct) == 0.0
    # A step of 50.1 ms still counts.
    assert time_domain([462.2, 512.3] * 10).pnn50_pct == 100.0


def test_rounding_noise_is_no_variability() -> None:
    """RR 800 ms with 1e-9 ms of noise read lnRMSSD −20.4 and DFA α1 0.61 (the noise's own
    exponent) where an exactly constant series reads none: below 1e-6 ms² (the spectra's
    floor) a variance is rounding noise, and both read alike."""
    rng = np.random.default_rng(0)
    for rr in (np.full(300, 800.0), 800.0 + 1e-9 * rng.standard_normal(300)):
        td = time_domain(rr)
        assert (td.sdnn_ms, td.rmssd_ms) == (0.0, 0.0)
        assert math.isnan(td.ln_rmssd)
        assert math.isnan(dfa_alpha1(rr))
        assert poincare(rr) == (0.0, 0.0)
        roll = RollingTimeDomain(600.0)
        for ti, ri in zip(np.cumsum(rr) / 1000.0, rr, strict=True):
            live = roll.update(float(ti), float(ri))
        assert live.rmssd_ms == 0.0 and math.isnan(live.ln_rmssd)
    # A hundredth of a millisecond is still variability (1e-4 ms²).
    small = 800.0 + 0.01 * rng.standard_normal(300)
    td = time_domain(small)
    assert td.ln_rmssd == pytest.approx(math.log(td.rmssd_ms)) and td.rmssd_ms > 0.01
    assert math.isfinite(dfa_alpha1(small))
