"""The first settling index, driven by hand-made snapshots and by the virtual physiology."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from processing.settling import SettlingIndex, SettlingSnapshot
from processing.timedomain import RollingTimeDomain, TimeDomain
from sensors.virtual.model import ModelParams, PhysioModel, true_settling_time_s

NAN = math.nan


def td(hr_bpm: float, ln_rmssd: float) -> TimeDomain:
    """A rolling snapshot with just the two fields the index reads filled in consistently."""
    mean_rr_ms = 60000.0 / hr_bpm if hr_bpm == hr_bpm else NAN
    rmssd_ms = math.exp(ln_rmssd) if ln_rmssd == ln_rmssd else NAN
    return TimeDomain(70, mean_rr_ms, hr_bpm, 50.0, rmssd_ms, ln_rmssd, 10.0, 69)


def feed(
    index: SettlingIndex, samples: list[tuple[float, float]], t0_s: float = 5.0
) -> list[SettlingSnapshot]:
    return [index.update(t0_s + 5.0 * i, td(hr, ln)) for i, (hr, ln) in enumerate(samples)]


def baseline_samples(n: int = 24) -> list[tuple[float, float]]:
    """HR 70 ± 2 bpm and lnRMSSD 3.5 ± 0.2, alternating: SDs well above the floors."""
    return [(70.0 + (2.0 if i % 2 else -2.0), 3.5 + (0.2 if i % 2 else -0.2)) for i in range(n)]


def run_session(params: ModelParams, seed: int) -> list[SettlingSnapshot]:
    """The daemon's loop: 60 s rolling window, the index updated every 5 s of beat time."""
    model = PhysioModel(params, seed)
    rolling = RollingTimeDomain(60.0)
    index = SettlingIndex(baseline_s=120.0)
    out: list[SettlingSnapshot] = []
    next_t_s = 5.0
    for beat in iter(model.next_beat, None):  # ends with StopIteration at duration_s
        current = rolling.update(beat.t_s, beat.rr_ms)
        while beat.t_s >= next_t_s:
            out.append(index.update(next_t_s, current))
            next_t_s += 5.0
    return out


def scores(snaps: list[SettlingSnapshot]) -> np.ndarray:
    return np.array([s.score for s in snaps if s.score is not None])


# --- the formula ---------------------------------------------------------------------------


def test_baseline_then_running_with_the_documented_formula() -> None:
    index = SettlingIndex(baseline_s=120.0)
    snaps = feed(index, baseline_samples())  # t = 5 … 120 s
    assert all(s.state == "baseline" and s.score is None for s in snaps)
    assert snaps[-1].n_baseline == 24
    assert snaps[-1].baseline_hr_bpm == pytest.approx(70.0)

    snap = index.update(130.0, td(67.0, 3.7))
    sd_hr = float(np.std([hr for hr, _ in baseline_samples()], ddof=1))
    sd_ln = float(np.std([ln for _, ln in baseline_samples()], ddof=1))
    assert snap.state == "running" and snap.n_baseline == 24
    assert snap.baseline_hr_spread_bpm == pytest.approx(sd_hr)
    assert snap.baseline_ln_rmssd_spread == pytest.approx(sd_ln)
    assert snap.z_hr == pytest.approx(3.0 / sd_hr)
    assert snap.z_ln_rmssd == pytest.approx(0.2 / sd_ln)
    assert dict(snap.components) == {"z_hr": snap.z_hr, "z_ln_rmssd": snap.z_ln_rmssd}
    want = 50.0 + 50.0 * math.tanh((snap.z_hr + snap.z_ln_rmssd) / 2.0 / 2.0)
    assert snap.score == pytest.approx(want)


def test_as_at_baseline_scores_50() -> None:
    index = SettlingIndex()
    feed(index, baseline_samples())
    assert index.update(200.0, td(70.0, 3.5)).score == pytest.approx(50.0)


def test_direction_of_each_component() -> None:
    index = SettlingIndex()
    feed(index, baseline_samples())
    assert index.update(200.0, td(66.0, 3.5)).score > 50.0  # type: ignore[operator]
    assert index.update(205.0, td(70.0, 3.9)).score > 50.0  # type: ignore[operator]
    assert index.update(210.0, td(75.0, 3.5)).score < 50.0  # type: ignore[operator]
    assert index.update(215.0, td(70.0, 3.0)).score < 50.0  # type: ignore[operator]
    assert index.update(220.0, td(40.0, 9.0)).score == pytest.approx(100.0, abs=1e-6)
    assert index.update(225.0, td(150.0, 0.5)).score == pytest.approx(0.0, abs=1e-6)


def test_flat_baseline_uses_the_spread_floor() -> None:
    index = SettlingIndex(spread_floor_hr_bpm=1.0, spread_floor_ln_rmssd=0.1)
    feed(index, [(70.0, 3.5)] * 24)
    snap = index.update(200.0, td(69.0, 3.6))
    assert snap.baseline_hr_spread_bpm == 1.0
    assert snap.baseline_ln_rmssd_spread == 0.1
    assert snap.z_hr == pytest.approx(1.0)
    assert snap.z_ln_rmssd == pytest.approx(1.0)
    assert snap.score == pytest.approx(50.0 + 50.0 * math.tanh(0.5))


# --- NaN and awkward inputs ------------------------------------------------------------------


def test_nan_inputs_give_no_score_and_never_raise() -> None:
    index = SettlingIndex()
    samples = baseline_samples()
    samples[3] = (NAN, 3.5)
    samples[7] = (70.0, NAN)
    snaps = feed(index, samples)
    assert snaps[-1].n_baseline == 22  # the two invalid samples were skipped
    for hr, ln in [(NAN, 3.5), (70.0, NAN), (NAN, NAN), (math.inf, 3.5)]:
        snap = index.update(200.0, td(hr, ln))
        assert snap.state == "running" and snap.score is None
    assert index.update(205.0, TimeDomain(0, NAN, NAN, NAN, NAN, NAN, NAN, 0)).score is None
    assert index.update(210.0, td(70.0, 3.5)).score == pytest.approx(50.0)


def test_automatic_baseline_waits_for_enough_valid_samples() -> None:
    index = SettlingIndex(baseline_s=20.0, min_baseline_samples=3)
    snaps = feed(index, [(NAN, NAN)] * 10 + [(70.0, 3.5)] * 3 + [(70.0, 3.5)])
    assert [s.state for s in snaps[:13]] == ["baseline"] * 13
    assert snaps[13].state == "running" and snaps[13].n_baseline == 3


# --- explicitly marked baseline --------------------------------------------------------------


def test_explicit_baseline() -> None:
    index = SettlingIndex(baseline_s=120.0)
    index.start_baseline(300.0)
    # Before the mark: not baseline material (the person was not resting yet).
    for t in range(5, 300, 5):
        snap = index.update(float(t), td(90.0, 2.5))
        assert snap.state == "baseline" and snap.n_baseline == 0
    for i, (hr, ln) in enumerate(baseline_samples()):
        index.update(300.0 + 5.0 * i, td(hr, ln))
    index.stop_baseline(420.0)
    assert index.state == "running"
    snap = index.update(425.0, td(70.0, 3.5))
    assert snap.n_baseline == 24 and snap.baseline_hr_bpm == pytest.approx(70.0)
    assert snap.score == pytest.approx(50.0)

    # Re-baselining later discards the old baseline; no score while collecting.
    index.start_baseline(600.0)
    assert index.update(600.0, td(60.0, 4.0)).score is None
    feed(index, [(60.0, 4.0)] * 5, t0_s=605.0)
    index.stop_baseline(630.0)
    snap = index.update(635.0, td(60.0, 4.0))
    assert snap.baseline_hr_bpm == pytest.approx(60.0) and snap.score == pytest.approx(50.0)


def test_explicit_baseline_with_too_few_samples_is_unavailable() -> None:
    index = SettlingIndex()
    index.start_baseline(0.0)
    feed(index, [(70.0, 3.5), (NAN, 3.5)])
    index.stop_baseline(12.0)
    snap = index.update(15.0, td(70.0, 3.5))
    assert snap.state == "unavailable" and snap.score is None
    with pytest.raises(ValueError):
        index.stop_baseline(20.0)


def test_stop_ends_the_automatic_baseline_early() -> None:
    index = SettlingIndex(baseline_s=600.0)
    feed(index, baseline_samples(6))
    index.stop_baseline(30.0)
    assert index.update(35.0, td(70.0, 3.5)).state == "running"


# --- on the virtual physiology -----------------------------------------------------------------

SESSION = ModelParams(duration_s=900.0)


@pytest.mark.parametrize("seed", range(4))
def test_flat_physiology_stays_near_50(seed: int) -> None:
    snaps = run_session(SESSION.flat(), seed)
    s = scores(snaps)
    assert len(s) > 150
    # One session's level is set by a 2-minute baseline, i.e. about two independent 60 s
    # windows: over 200 seeds the session medians have mean 50.6 and SD 5.5 points.
    assert float(np.median(s)) == pytest.approx(50.0, abs=15.0)
    assert s.min() > 20.0 and s.max() < 80.0


def test_flat_physiology_centres_on_50_across_sessions() -> None:
    medians = [float(np.median(scores(run_session(SESSION.flat(), seed)))) for seed in range(8)]
    assert float(np.mean(medians)) == pytest.approx(50.0, abs=4.0)


@pytest.mark.parametrize("seed", range(4))
def test_settling_physiology_rises_well_above_50(seed: int) -> None:
    snaps = run_session(SESSION, seed)
    t = np.array([s.t_s for s in snaps if s.score is not None])
    s = scores(snaps)
    settled_by = true_settling_time_s(SESSION)
    assert settled_by is not None
    before = s[t < SESSION.settle_onset_s]
    assert len(before) >= 10 and before.min() > 25.0 and before.max() < 75.0
    assert (s[t > settled_by + 60.0] > 85.0).all()
    # Monotone-ish: 60 s medians never fall by more than a few points on the way up.
    edges = np.arange(SESSION.settle_onset_s, settled_by + 60.0, 60.0)
    medians = [float(np.median(s[(t >= a) & (t < a + 60.0)])) for a in edges]
    assert all(b > a - 3.0 for a, b in itertools.pairwise(medians))
    assert medians[-1] > 90.0


@pytest.mark.parametrize("seed", range(4))
def test_unsettling_physiology_falls_below_50(seed: int) -> None:
    unsettling = ModelParams(
        duration_s=900.0, settled_hr_bpm=80.0, slow_osc_amp_start_ms=20.0, slow_osc_amp_end_ms=3.0
    )
    snaps = run_session(unsettling, seed)
    t = np.array([s.t_s for s in snaps if s.score is not None])
    s = scores(snaps)
    assert (s[t > 600.0] < 20.0).all()
