"""Artefact classification and correction on real series with labelled injected artefacts."""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path
from statistics import median

import numpy as np
import pytest

from processing.artefacts import (
    BEAT_CLASSES,
    LOOKAHEAD_BEATS,
    ArtefactCorrector,
    correct_rr,
)
from tests.conftest import dev_dependency

ART = Path(__file__).parent / "data" / "artifacts"
BASE = "bartels_rest_supine"
BASES = (BASE, "pyhrv_nni_long")
TYPES = ["ectopic", "extra", "longshort", "misaligned", "missed", "mixed"]
RATES = ["1pct", "2pct", "5pct"]
# Injected label -> the class that names it ("misaligned" = a displaced, compensated beat).
EXPECT = {
    "ectopic": "ectopic",
    "misaligned": "ectopic",
    "long": "long",
    "short": "short",
    "missed": "missed",
    "extra": "extra",
}


def _load(name: str) -> np.ndarray:
    path = ART / f"{name}.csv"
    if not path.exists():
        path = path.with_suffix(".csv.gz")  # the larger set is kept compressed
    return np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding=None)


def _rmssd(rr: np.ndarray) -> float:
    rr = rr[np.isfinite(rr)]
    return float(np.sqrt(np.mean(np.diff(rr) ** 2)))


def _score(base: str, typ: str, rate: str) -> tuple[float, float, float, float]:
    """(sensitivity, precision, RMSSD error vs the corrected clean base, strict precision).

    Sensitivity: share of injected events with at least one beat flagged. Precision: share of
    flagged groups (runs of adjacent flagged beats) that touch an injected event, not counting
    groups at beats that are already flagged in the clean base (its own premature beats).
    Strict precision counts every group that touches no injected event as false, including
    those at the base's own flagged beats (which are labelled clean).
    """
    a = _load(f"{base}__{typ}__{rate}")
    clean = _load(f"{base}__clean")
    cs = correct_rr(a["t_s"], a["rr_ms"])
    code = cs.code[~np.isnan(cs.rr_raw_ms)]
    assert code.size == a.size
    csc = correct_rr(clean["t_s"], clean["rr_ms"])
    base_flag = set(np.flatnonzero(csc.code[~np.isnan(csc.rr_raw_ms)] != 0).tolist())
    labels, events, orig = a["label"], a["event_id"], a["orig_idx"]
    by_event: dict[int, list[int]] = {}
    for i, (lab, ev) in enumerate(zip(labels, events, strict=True)):
        if lab != "none":
            by_event.setdefault(int(ev), []).append(i)
    found = sum(any(code[i] != 0 for i in idx) for idx in by_event.values())
    groups: list[list[int]] = []
    for i in np.flatnonzero(code != 0).tolist():
        if groups and i - groups[-1][-1] <= 1:
            groups[-1].append(i)
        else:
            groups.append([i])
    real = [
        g
        for g in groups
        if any(labels[i] != "none" for i in g)
        or not any(int(orig[i]) + d in base_flag for i in g for d in (-1, 0, 1))
    ]
    tp = sum(any(labels[i] != "none" for i in g) for g in real)
    err = _rmssd(cs.rr_ms) / _rmssd(csc.rr_ms) - 1.0
    return found / len(by_event), tp / max(len(real), 1), err, tp / max(len(groups), 1)


RESULTS = {(b, t, r): _score(b, t, r) for b in BASES for t in TYPES for r in RATES}

# pyhrv's misaligned beats: a 10 % shift there is ≈ 76 ms, inside that series' own
# beat-to-beat variability (docs/indices.md); floors just below the measured 0.936-0.947.
SENSITIVITY_SHORTFALL = {("pyhrv_nni_long", "misaligned"): 0.93}


@pytest.mark.parametrize(("base", "typ", "rate"), list(RESULTS))
def test_detection_sensitivity(base: str, typ: str, rate: str) -> None:
    assert RESULTS[base, typ, rate][0] >= SENSITIVITY_SHORTFALL.get((base, typ), 0.97)


@pytest.mark.parametrize(("base", "typ", "rate"), list(RESULTS))
def test_detection_precision_regression_floor(base: str, typ: str, rate: str) -> None:
    # Floors just below the measured values (lowest cell 0.957; strict 0.494), which catch
    # regressions; the issue target is tested per set below.
    assert RESULTS[base, typ, rate][1] >= 0.95
    assert RESULTS[base, typ, rate][3] >= 0.49


@pytest.mark.parametrize(
    "base",
    [
        BASE,
        pytest.param(
            "pyhrv_nni_long",
            marks=pytest.mark.xfail(
                strict=True,
                reason="issue target 0.97 not met on 1 pyhrv cell (misaligned 1 %: 0.957): "
                "borderline sinus beats flagged when a nearby event moves th1 (docs/indices.md)",
            ),
        ),
    ],
)
def test_detection_precision_target(base: str) -> None:
    assert min(r[1] for k, r in RESULTS.items() if k[0] == base) >= 0.97


@pytest.mark.parametrize(
    "base",
    [
        BASE,
        pytest.param(
            "pyhrv_nni_long",
            marks=pytest.mark.xfail(
                strict=True,
                reason="issue target 0.97 not met for pyhrv misaligned (0.936-0.947): a 10 % "
                "shift is inside that series' own beat-to-beat variability (docs/indices.md)",
            ),
        ),
    ],
)
def test_detection_sensitivity_target(base: str) -> None:
    assert min(r[0] for k, r in RESULTS.items() if k[0] == base) >= 0.97


def test_rmssd_after_correction_median_within_5_pct() -> None:
    errs = [abs(r[2]) for r in RESULTS.values()]
    assert median(errs) <= 0.05


def test_rmssd_after_correction_every_cell_within_5_pct() -> None:
    # Target 10 %; measured worst 3.2 % (pyhrv extra 5 %), so a regression bound of 5 %.
    assert max(abs(r[2]) for r in RESULTS.values()) <= 0.05


@pytest.mark.parametrize(("name", "most"), [(f"{BASE}__clean", 13), ("pyhrv_nni_long__clean", 62)])
def test_clean_base_flags_stay_few(name: str, most: int) -> None:
    # The clean bases have a few genuine premature beats and swings: 13 of 910 and 62 of 4684
    # beats are flagged now (1.4 % and 1.3 %).
    clean = _load(name)
    assert correct_rr(clean["t_s"], clean["rr_ms"]).n_flagged <= most


def test_a_clean_short_recording_is_mostly_left_alone() -> None:
    rec = np.genfromtxt(
        ART.parent / "pyhrv_nni_short.csv", delimiter=",", names=True, dtype=None, encoding=None
    )
    # 15 of 337 beats (4.5 %): isolated single beats 20-40 % longer than both neighbours.
    assert correct_rr(rec["t_s"], rec["rr_ms"]).n_flagged <= 15


def test_a_day_long_record_is_mostly_left_alone() -> None:
    rec = np.genfromtxt(
        ART.parent / "physionet_healthy_000_first20k.csv",
        delimiter=",",
        names=True,
        dtype=None,
        encoding=None,
    )
    # 419 of 20000 beats (2.1 %; 6.1 % before small compensated alternations were left alone;
    # 409 before the bigeminy changes: a premature beat preferred as the displaced one of two
    # fitting pairs, which also moved 11 flagged pairs one beat earlier in alternating
    # stretches, and 8 long/short beats now corrected as displaced pairs). The bound is the
    # reference implementation of the same published method, run here: NeuroKit2 0.2.13's
    # Lipponen-Tarvainen detector flags 483 beats of this day (393 ectopic, 89 long/short).
    nk = dev_dependency("neurokit2")
    peaks = np.concatenate([[0.0], np.cumsum(rec["rr_ms"])]).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info, _ = nk.signal_fixpeaks(
            peaks, sampling_rate=1000, method="Kubios", iterative=False, show=False
        )
    theirs = set()
    for kind in ("ectopic", "missed", "extra", "longshort"):
        theirs |= set(np.asarray(info[kind]).tolist())
    assert 0 < correct_rr(rec["t_s"], rec["rr_ms"]).n_flagged <= len(theirs)


def _calm_series() -> list[float]:
    rng = np.random.default_rng(1)
    return list(1000.0 + 30.0 * np.sin(np.arange(300) / 3.0) + rng.normal(0, 5, 300))


def test_a_lengthening_that_decays_over_beats_is_sinus() -> None:
    # +250 ms, then back by only 100 ms and slowly on: the next beat stays nearer the beat
    # than the one before it, so nothing came back (RETURN_MIN); an artefact returns at once.
    rr = np.array(_calm_series())
    rr[150:161] += [250, 150, 135, 120, 105, 90, 75, 60, 45, 30, 15]
    assert correct_rr(np.cumsum(rr) / 1000.0, rr).n_flagged == 0


def test_a_small_compensated_alternation_is_sinus() -> None:
    # One beat 40 ms early (4 % of the interval) with full compensation: within sinus
    # rhythm's own alternation (PAIR_MIN_REL), though far past th1 on this calm series.
    rr = np.array(_calm_series())
    rr[150] -= 40.0
    rr[151] += 40.0
    assert correct_rr(np.cumsum(rr) / 1000.0, rr).n_flagged == 0


def test_correction_is_far_better_than_none() -> None:
    for typ in TYPES:
        a = _load(f"{BASE}__{typ}__5pct")
        clean = _rmssd(_load(f"{BASE}__clean")["rr_ms"].astype(float))
        raw_err = abs(_rmssd(a["rr_ms"].astype(float)) / clean - 1.0)
        assert abs(RESULTS[BASE, typ, "5pct"][2]) < raw_err / 5


def test_every_raw_beat_kept_with_provenance() -> None:
    a = _load(f"{BASE}__mixed__5pct")
    cs = correct_rr(a["t_s"], a["rr_ms"])
    raw = cs.rr_raw_ms[~np.isnan(cs.rr_raw_ms)]
    np.testing.assert_array_equal(raw, a["rr_ms"])
    normal = cs.code == 0
    np.testing.assert_array_equal(cs.rr_ms[normal], cs.rr_raw_ms[normal])
    assert set(cs.classes()) <= set(BEAT_CLASSES)
    assert np.all(np.diff(cs.t_s) > 0)


@pytest.mark.parametrize("kind", ["missed", "extra", "ectopic"])
def test_merge_split_and_displacement_preserve_total_time(kind: str) -> None:
    rng = np.random.default_rng(1)
    rr = list(1000.0 + 30.0 * np.sin(np.arange(300) / 3.0) + rng.normal(0, 5, 300))
    i = 150
    if kind == "missed":
        rr[i : i + 2] = [rr[i] + rr[i + 1]]
    elif kind == "extra":
        rr[i : i + 1] = [0.4 * rr[i], 0.6 * rr[i]]
    else:
        early = 0.3 * rr[i]
        rr[i], rr[i + 1] = rr[i] - early, rr[i + 1] + early
    rr_a = np.array(rr)
    t = np.cumsum(rr_a) / 1000.0
    cs = correct_rr(t, rr_a)
    flagged = [c for c in cs.classes() if c != "normal"]
    assert set(flagged) == {kind}
    assert math.isclose(np.nansum(cs.rr_ms), rr_a.sum(), rel_tol=1e-12)
    fixed = cs.rr_ms[np.isfinite(cs.rr_ms)]
    assert np.all(np.abs(fixed - 1000.0) < 120.0)


def test_lookahead_is_three_beats_and_chunking_does_not_matter() -> None:
    a = _load(f"{BASE}__mixed__5pct")
    c = ArtefactCorrector()
    out = []
    for k, (t, rr) in enumerate(zip(a["t_s"].tolist(), a["rr_ms"].tolist(), strict=True)):
        got = c.push(t, rr)
        if k < LOOKAHEAD_BEATS:
            assert got == []
        out.extend(got)
        assert c.pending <= LOOKAHEAD_BEATS
    out.extend(c.flush())
    batch = correct_rr(a["t_s"], a["rr_ms"])
    np.testing.assert_array_equal(np.array([b.rr_ms for b in out]), batch.rr_ms)
    assert [b.beat_class for b in out] == batch.classes()


def test_flat_series_flags_nothing() -> None:
    rr = np.full(500, 800.0)
    cs = correct_rr(np.cumsum(rr) / 1000.0, rr)
    assert cs.n_flagged == 0


def test_a_short_run_of_bigeminy_is_corrected_pair_by_pair() -> None:
    """20 s of bigeminy (every other beat 35 % premature, full compensatory pause) in a calm
    model recording: the raw median alternated between short and long intervals, the pair
    test failed and the pauses were split as missed beats, so RMSSD inside the burst read
    ~250 ms (sinus ~33) and the settling score jumped to 100. Each pair is now one displaced
    beat, corrected with its sum kept."""
    from sensors.virtual.model import ModelParams, PhysioModel

    m = PhysioModel(ModelParams(duration_s=520.0).flat(), seed=4001)
    rr_list: list[float] = []
    with contextlib.suppress(StopIteration):
        while True:
            rr_list.append(m.next_beat().rr_ms)
    rr = np.array(rr_list)
    t = np.cumsum(rr) / 1000.0
    burst = np.flatnonzero((t > 300) & (t < 320))
    for k in burst[::2]:
        d = 0.35 * rr[k]
        rr[k] -= d
        rr[k + 1] += d
    t = np.cumsum(rr) / 1000.0
    cs = correct_rr(t, rr)
    inside = (cs.t_s > 299) & (cs.t_s < 322)
    classes = {BEAT_CLASSES[int(c)] for c in cs.code[inside]}
    assert classes <= {"normal", "ectopic"}, classes
    c = cs.rr_ms[inside]
    assert float(np.sqrt(np.mean(np.diff(c) ** 2))) < 45.0


@pytest.mark.parametrize("seed", range(40))
def test_the_correction_itself_returns_no_interval_outside_the_plausible_range(seed: int) -> None:
    """`correct_rr(..., rr_min_ms=, rr_max_ms=)` interpolated a long/short or ectopic beat
    between neighbours that noise corrupted and returned it as analysed: 700 ms followed by
    a 100 ms piece came back `long` with 100 ms (the median of a two-beat series), and that
    value was "the previous beat" the next one was judged against. The daemon and `settle
    analyze` marked such beats implausible afterwards; the correction now does it itself."""
    rows = correct_rr([0.7, 0.8], [700.0, 100.0], rr_min_ms=250.0, rr_max_ms=2000.0)
    assert rows.classes()[0] == "implausible" and rows.rr_raw_ms[0] == 700.0
    rng = np.random.default_rng(seed)
    sinus = (900.0 + 30.0 * np.sin(np.arange(200) / 3.0)).tolist()
    for at in sorted(rng.choice(np.arange(20, 180), size=4, replace=False), reverse=True):
        burst = rng.choice([60.0, 120.0, 200.0, 600.0, 700.0, 2400.0, 3300.0, 5000.0], size=5)
        sinus[at:at] = burst.tolist()  # noise bursts with plausible values inside them
    rr = np.array(sinus)
    cs = correct_rr(np.cumsum(rr) / 1000.0, rr, rr_min_ms=250.0, rr_max_ms=2000.0)
    analysed = cs.rr_ms[np.isfinite(cs.rr_ms)]
    assert analysed.size > 150
    assert np.all((analysed >= 250.0) & (analysed <= 2000.0))
