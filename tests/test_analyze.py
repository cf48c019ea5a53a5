"""``settle analyze`` through the real command line (subprocess) on small real recordings."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
RECORDINGS = ["pyhrv_nni_short", "bartels_rest_supine", "polar_h10_pvc_device"]
SUMMARY_KEYS = {
    "mean_rr_ms", "mean_hr_bpm", "sdnn_ms", "rmssd_ms", "ln_rmssd", "pnn50_pct", "sd1_ms",
    "sd2_ms", "dfa_alpha1", "vlf_ms2", "lf_ms2", "hf_ms2", "lf_hf", "lf_nu", "hf_nu",
    "peak_hz", "resp_rate_bpm", "coherence",
}  # fmt: skip


def _settle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "settle.cli", "analyze", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _json(*args: str) -> dict:  # type: ignore[type-arg]
    p = _settle(*args, "--json")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return json.loads(p.stdout)  # type: ignore[no-any-return]


def test_json_shape() -> None:
    doc = _json(str(DATA / "pyhrv_nni_short.csv"))
    assert doc["v"] == 1
    assert doc["n_beats"] == 337
    assert doc["duration_s"] == pytest.approx(299.578)
    assert doc["usable"] is True and doc["reason"] is None
    corr = doc["correction"]
    assert corr["enabled"] is True
    assert sum(corr["by_class"].values()) == 337
    assert corr["n_flagged"] == 337 - corr["by_class"]["normal"]
    assert set(doc["summary"]) == SUMMARY_KEYS
    s = doc["summary"]
    assert s["mean_hr_bpm"] == pytest.approx(60000 / s["mean_rr_ms"])
    assert s["ln_rmssd"] == pytest.approx(np.log(s["rmssd_ms"]))
    assert s["vlf_ms2"] is None  # a 5-minute record is too short for VLF by our rule
    assert s["coherence"] > 0


def test_pvc_recording_is_flagged_unusable() -> None:
    doc = _json(str(DATA / "polar_h10_pvc_device.csv"))
    assert doc["usable"] is False
    assert "irregular rhythm" in doc["reason"]


@pytest.mark.parametrize("name", RECORDINGS)
def test_no_correction_equals_neurokit2(name: str) -> None:
    nk = pytest.importorskip("neurokit2")
    doc = _json(str(DATA / f"{name}.csv"), "--no-correction")
    assert doc["correction"]["n_flagged"] == 0
    rr = np.genfromtxt(DATA / f"{name}.csv", delimiter=",", names=True)["rr_ms"]
    peaks = np.concatenate([[0], np.cumsum(rr)]).astype(np.int64)
    assert np.allclose(np.diff(peaks), rr)  # integer ms: the peaks reproduce the RR exactly
    t = nk.hrv_time(peaks, sampling_rate=1000)
    nl = nk.hrv_nonlinear(peaks, sampling_rate=1000)
    s = doc["summary"]
    for ours, theirs in [
        (s["mean_rr_ms"], t["HRV_MeanNN"].iloc[0]),
        (s["sdnn_ms"], t["HRV_SDNN"].iloc[0]),
        (s["rmssd_ms"], t["HRV_RMSSD"].iloc[0]),
        (s["sd1_ms"], nl["HRV_SD1"].iloc[0]),
        (s["sd2_ms"], nl["HRV_SD2"].iloc[0]),
    ]:
        assert ours == pytest.approx(theirs, rel=1e-6)


def test_beats_and_rolling_csv(tmp_path: Path) -> None:
    beats, rolling = tmp_path / "b.csv", tmp_path / "r.csv"
    doc = _json(str(DATA / "bartels_rest_supine.csv"), "--beats", str(beats),
                "--rolling", str(rolling), "--window", "30")  # fmt: skip
    rows = list(csv.DictReader(beats.open()))
    assert list(rows[0]) == ["t_s", "rr_raw_ms", "rr_ms", "class"]
    raw = [float(r["rr_raw_ms"]) for r in rows if r["rr_raw_ms"]]
    assert len(raw) == doc["n_beats"]
    flagged = sum(1 for r in rows if r["rr_raw_ms"] and r["class"] != "normal")
    assert flagged == doc["correction"]["n_flagged"]
    roll = list(csv.DictReader(rolling.open()))
    per_beat = [r for r in roll if r["kind"] == "beat"]
    steps = [r for r in roll if r["kind"] == "step"]
    assert len(per_beat) == sum(1 for r in rows if r["rr_ms"])
    assert len(steps) == pytest.approx(doc["duration_s"] / 5, abs=2)
    # A 30 s window holds about 30 s of beats: check one row against the formula.
    ts = np.array([float(r["t_s"]) for r in rows if r["rr_ms"]])
    rr = np.array([float(r["rr_ms"]) for r in rows if r["rr_ms"]])
    k = 500
    win = rr[(ts > ts[k] - 30.0) & (ts <= ts[k])]
    assert float(per_beat[k]["rmssd_ms"]) == pytest.approx(
        np.sqrt(np.mean(np.diff(win) ** 2)), rel=1e-5
    )
    scores = [float(r["settling_score"]) for r in steps if r["settling_score"]]
    assert scores and all(0.0 <= x <= 100.0 for x in scores)


def test_bad_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("t_s,rr_ms\n1.0,abc\n")
    for path in (bad, tmp_path / "missing.csv"):
        p = _settle(str(path))
        assert p.returncode == 1
        assert p.stdout == ""
        assert len(p.stderr.strip().splitlines()) == 1
        assert str(path) in p.stderr


def test_no_progress_bar_when_not_a_tty() -> None:
    p = _settle(str(DATA / "physionet_healthy_000_first20k.csv"), "--json")
    assert p.returncode == 0
    assert p.stderr == ""
