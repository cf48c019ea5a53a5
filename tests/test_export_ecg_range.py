"""The raw ECG survives export despite the Polar H10's start-up spikes.

A real H10 (and the virtual strap, ``PmdConfig.unreliable_start_s``) sends full-scale samples
(±8 388 607 µV) in the first seconds after each start of the ECG stream. The session here is
the real H10 recording of tests/data with that start-up applied as the virtual strap applies
it, at the stream's start (2 s into the session) and again after a 2 s hole (a restart), and
the R peaks the daemon's detector finds in it, stored as an ``rr_source = "hrs"`` session
stores them (no class).

* EDF: the ECG keeps 1 µV per digital step (the spikes used to set the range: 256 µV steps,
  7 distinct values across a QRS-rich stretch), within 3 µV of a band-limited reference (the
  linear interpolation it replaced was up to ~70 µV off on QRS complexes), the spikes are
  clipped and annotated, and where nothing was recorded the signal reads exactly 0 µV (it
  read 128 µV), annotated "ECG not recorded" (it was not: a hole read as a flat line).
* BIDS: the same whole-µV values, ``n/a`` where nothing was recorded and an
  ``ecg-not-recorded`` event over each such stretch.
* Kubios (``--rr-source ecg``): the "beats" the detector placed on the spikes and the
  interval after them are not in the RR file (it started 299.272, 300.0001, … 3193.9611).
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from processing.ecg import RPeakDetector
from sensors.readers import read_rr_file
from sensors.virtual.pmd import unreliable_start
from sessions.export_bids import export_bids
from sessions.export_edf import ECG_CLIPPED, ECG_NOT_RECORDED, export_edf
from sessions.export_kubios import export_kubios
from sessions.files import ExportError
from sessions.store import BeatClass, EcgBeatRow, MarkerRow, MarkerSource, SessionStore
from tests.conftest import DATA, dev_dependency

T0_MS = 1_795_000_000_123
FS = 130
FRAME = 73  # samples per PMD frame at MTU 232
SPIKE_UV = 8_388_607
UNRELIABLE_S = 3.5  # PmdConfig.unreliable_start_s default
# (session time of the stream's first sample, first and last second of the recording used)
STREAMS = ((2.0, 0.0, 20.0), (24.0, 20.0, 40.0))
STOP_S = 46.0


@functools.cache
def _recording() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    raw = np.loadtxt(DATA / "polar_h10_pvc_ecg.csv", delimiter=",", skiprows=1, dtype=np.int64)
    return raw[:, 0] - raw[0, 0], raw[:, 1]


def _streams() -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """(t_ns since session start, µV) of each ECG stream, start-up spikes applied."""
    t_rec, uv_rec = _recording()
    out = []
    for start_s, a, b in STREAMS:
        sel = (t_rec >= a * 1e9) & (t_rec < b * 1e9)
        t = t_rec[sel] - t_rec[sel][0] + round(start_s * 1e9)
        uv = np.array(unreliable_start(uv_rec[sel].tolist(), 0, FS, UNRELIABLE_S), np.int64)
        out.append((t, uv))
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    with SessionStore.open(tmp_path / "s.db") as s:
        yield s


def _session(
    store: SessionStore, *, classify: bool = False, drop_frame: int | None = None
) -> tuple[str, list[EcgBeatRow]]:
    """Store the two streams frame by frame and the detector's R peaks, as the daemon does
    (class empty; with ``classify`` classed as with rr_source "ecg": peaks the detector
    flags implausible, and — a longer warm-up than the daemon's 5 s, to have some on real
    ECG — ``warmup`` for the rest of the first 10 s of each stream). ``drop_frame``: that
    frame of the first stream is lost, as PMD drops a malformed notification."""
    sid = store.create_session("polar_h10_a1b2c3d4", T0_MS, "ble:AA:BB", {}).id
    rows: list[EcgBeatRow] = []
    for n, ((t, uv), (start_s, _a, _b)) in enumerate(zip(_streams(), STREAMS, strict=True)):
        det = RPeakDetector()  # one per PMD stream, as settle/ecg.py's _record
        for k in range(0, t.size, FRAME):
            if n == 0 and drop_frame is not None and k == drop_frame * FRAME:
                continue
            store.add_ecg(sid, t[k : k + FRAME].tolist(), uv[k : k + FRAME].tolist())
            last = min(k + FRAME, t.size) - 1
            for b in det.update(uv[k : k + FRAME].astype(float), t_last_ns=int(t[last])):
                cls = None
                if classify and b.rr_ms is not None:
                    cls = BeatClass.IMPLAUSIBLE if not b.plausible else BeatClass.NORMAL
                    if b.plausible and b.t_s < start_s + 10.0:
                        cls = BeatClass.WARMUP
                rows.append(EcgBeatRow(len(rows), b.t_s, b.rr_ms, beat_class=cls))
    store.add_ecg_beats(sid, rows)
    store.add_markers(sid, [MarkerRow(30.0, T0_MS + 30_000, "note", "x", MarkerSource.CLI)])
    store.finish_session(sid, T0_MS + round(STOP_S * 1000))
    return sid, rows


def _band_limited(
    ts: npt.NDArray[np.float64], uv: npt.NDArray[np.float64], at: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """A reference for the ECG at times ``at``: the samples (times ``ts``, evenly spaced on
    the strap's clock) through a long Hann-windowed sinc (±128 samples), independent of
    the exporter's kernel."""
    fs = (ts.size - 1) / (ts[-1] - ts[0])
    u = (at - ts[0]) * fs
    m = 128
    out = np.empty(at.size)
    for n, uu in enumerate(u):
        idx = np.arange(max(0, math.floor(uu) - m), min(ts.size, math.floor(uu) + m + 1))
        d = uu - idx
        out[n] = (np.sinc(d) * (0.5 + 0.5 * np.cos(np.pi * d / (m + 1)))) @ uv[idx]
    return out


def _spike_times_s() -> npt.NDArray[np.float64]:
    return np.concatenate([t[np.abs(uv) >= SPIKE_UV] / 1e9 for t, uv in _streams()])


def test_edf_ecg_keeps_1_uv_resolution_clips_spikes_and_reads_0_without_data(
    store: SessionStore, tmp_path: Path
) -> None:
    pyedflib = dev_dependency("pyedflib")
    sid, _ = _session(store)
    with pyedflib.EdfReader(str(export_edf(store, sid, tmp_path / "s.edf"))) as f:
        i = f.getSignalLabels().index("ECG")
        assert f.getSampleFrequency(i) == FS and f.getPhysicalDimension(i) == "uV"
        assert (f.getPhysicalMinimum(i), f.getPhysicalMaximum(i)) == (-32768.0, 32767.0)
        assert (f.getDigitalMinimum(i), f.getDigitalMaximum(i)) == (-32768, 32767)
        ecg, digital = f.readSignal(i), f.readSignal(i, digital=True)
        onsets, durations, texts = f.readAnnotations()
    grid = np.arange(ecg.size) / FS
    # 1 µV per step, identical to the digital value: whole µV.
    assert np.array_equal(ecg, digital.astype(float))

    spikes = _spike_times_s()
    assert spikes.size >= 20  # about a dozen per start
    for (t, uv), (start_s, _a, _b) in zip(_streams(), STREAMS, strict=True):
        ts = t / 1e9
        # Clean signal (after the start-up): the µV recorded, resampled to the grid and
        # rounded — within 3 µV of a band-limited reference (it was up to 128 µV off, in
        # 256 µV steps; the linear interpolation after that was up to ~70 µV off).
        after = ts >= start_s + UNRELIABLE_S
        clean = (grid >= ts[after][0] + 1.0) & (grid <= ts[-1] - 1.0)
        ref = _band_limited(ts[after], uv[after].astype(float), grid[clean])
        assert clean.sum() > 10 * FS and np.abs(ecg[clean] - ref).max() <= 3.0
        # 10 s of beats span ~1.5 mV in hundreds of distinct values (it was 7 values).
        stretch = ecg[clean][: 10 * FS]
        assert np.ptp(stretch) > 1000 and np.unique(stretch).size > 300
        # The start-up: spikes clipped to the edges, never beyond, never left out.
        startup = (grid >= start_s) & (grid < start_s + UNRELIABLE_S)
        assert ecg[startup].max() == 32767.0 and ecg[startup].min() == -32768.0
    # Clipped only in the start-ups, and one annotation per start-up covering every spike.
    edge = np.flatnonzero(np.abs(digital) >= 32767)
    assert all(any(s <= grid[k] < s + UNRELIABLE_S for s, _a, _b in STREAMS) for k in edge)
    clipped = [(o, d) for o, d, x in zip(onsets, durations, texts, strict=True) if x == ECG_CLIPPED]
    assert len(clipped) == 2
    for (onset, dur), (start_s, _a, _b) in zip(clipped, STREAMS, strict=True):
        assert onset == pytest.approx(start_s, abs=1.5 / FS)
        mine = spikes[(spikes >= start_s) & (spikes < start_s + UNRELIABLE_S)]
        assert onset <= mine.min() + 1e-6 and onset + dur >= mine.max() - 1e-6
    # No data — before the first stream, in the 2 s hole, after the last — reads 0 µV.
    (t1, _), (t2, _) = _streams()
    missing = (grid < 2.0 - 1 / FS) | ((grid > t1[-1] / 1e9 + 6 / FS) & (grid < 24.0 - 1 / FS))
    missing |= grid > t2[-1] / 1e9 + 1 / FS
    assert missing.sum() > 4 * FS
    assert np.all(ecg[missing] == 0.0) and np.all(digital[missing] == 0)


def _ecg_holes_s(drop_frame: int) -> list[tuple[float, float]]:
    """(last sample before, first sample after) of every stretch without ECG, s."""
    (t1, _), (t2, _) = _streams()
    before, after = t1[drop_frame * FRAME - 1], t1[(drop_frame + 1) * FRAME]
    return [(0.0, t1[0] / 1e9), (before / 1e9, after / 1e9), (t1[-1] / 1e9, t2[0] / 1e9)]


def test_edf_and_bids_annotate_where_no_ecg_was_recorded(
    store: SessionStore, tmp_path: Path
) -> None:
    """Before the first sample, a dropped 0.56 s frame, the 2 s between the streams and after
    the last sample there is no ECG: the EDF reads 0 µV there and says so in an annotation,
    the BIDS file reads n/a and has an event, each within a sample of the hole (both were
    unmarked: a researcher could not tell a hole from a flat stretch)."""
    pyedflib = dev_dependency("pyedflib")
    sid, _ = _session(store, drop_frame=20)
    with pyedflib.EdfReader(str(export_edf(store, sid, tmp_path / "s.edf"))) as f:
        ecg = f.readSignal(f.getSignalLabels().index("ECG"))
        annotations = [
            (o, d) for o, d, x in zip(*f.readAnnotations(), strict=True) if x == ECG_NOT_RECORDED
        ]
    holes = _ecg_holes_s(20)
    (_, _), (t2, _) = _streams()
    holes.append((t2[-1] / 1e9, ecg.size / FS))  # to the end of the file
    assert len(annotations) == len(holes)
    grid = np.arange(ecg.size) / FS
    for (onset, dur), (a, b) in zip(annotations, holes, strict=True):
        assert onset == pytest.approx(a, abs=1 / FS) and onset + dur == pytest.approx(b, abs=1 / FS)
        assert np.all(ecg[(grid > onset - 0.5 / FS) & (grid < onset + dur - 0.5 / FS)] == 0.0)
    assert 0.5 < annotations[1][1] < 0.6  # one PMD frame: 73 samples

    beh = export_bids(store, sid, tmp_path / "bids")
    (data,) = beh.glob("*_recording-ecg_physio.tsv.gz")
    sidecar = json.loads(data.with_name(data.name.replace(".tsv.gz", ".json")).read_text())
    assert (
        sidecar["SamplingFrequency"] == FS
        and "n/a where no ECG" in sidecar["cardiac"]["Description"]
    )
    cells = gzip.decompress(data.read_bytes()).decode().split()
    cardiac = np.array([np.nan if c == "n/a" else float(c) for c in cells])
    (events,) = beh.glob("*_events.tsv")
    rows = [line.split("\t") for line in events.read_text().splitlines()[1:]]
    bids_holes = [(float(r[0]), float(r[1])) for r in rows if r[2] == "ecg-not-recorded"]
    # The same holes, the last one to the end of the session (the BIDS file's end).
    assert np.allclose(bids_holes[:3], annotations[:3], atol=1e-6)  # EDF: 6 decimals
    assert bids_holes[3][0] == pytest.approx(annotations[3][0], abs=1e-6)
    assert bids_holes[3][0] + bids_holes[3][1] == pytest.approx(STOP_S, abs=1 / FS + 1e-9)
    bgrid = np.arange(cardiac.size) / FS
    in_hole = np.zeros(cardiac.size, bool)
    for onset, dur in bids_holes:
        in_hole |= (bgrid > onset - 0.5 / FS) & (bgrid < onset + dur - 0.5 / FS)
    assert np.array_equal(np.isnan(cardiac), in_hole)
    # The same whole µV as the EDF wherever the EDF did not clip (the spikes).
    n = min(cardiac.size, ecg.size)
    same = ~in_hole[:n] & (np.abs(ecg[:n]) < 32767)
    assert np.array_equal(cardiac[:n][same], ecg[:n][same])


def _kubios_rr(store: SessionStore, sid: str, out: Path) -> tuple[list[float], Path]:
    path = export_kubios(store, sid, out, rr_source="ecg")
    return [float(x) for x in read_rr_file(path).rr_ms], path


def test_kubios_ecg_rr_leaves_out_peaks_on_start_up_spikes(
    store: SessionStore, tmp_path: Path
) -> None:
    sid, rows = _session(store)
    spikes = _spike_times_s()
    on_spike = [bool(np.min(np.abs(spikes - b.beat_t_s)) <= 0.15) for b in rows]
    # What the detector made of the spikes: a run of ~300 ms "beats" at each start, each
    # within a few ms of a spike, then one interval measured from the last spike.
    assert sum(on_spike) >= 10
    assert all(
        np.min(np.abs(spikes - b.beat_t_s)) < 0.02 for b, s in zip(rows, on_spike, strict=True) if s
    )
    expected = [
        b.rr_ms
        for k, b in enumerate(rows)
        if b.rr_ms is not None and not on_spike[k] and not (k > 0 and on_spike[k - 1])
    ]
    rr, path = _kubios_rr(store, sid, tmp_path)
    assert rr == pytest.approx(expected, abs=1e-4)
    # Every interval is a plausible heartbeat's now (the recording's PVC bigeminy).
    assert min(rr) >= 273 and max(rr) <= 2000
    # Before, the file began with the spikes' 299.272, 300.0001, … and a 3193.96 ms interval.
    assert all(abs(b.rr_ms - 300.0) < 1.0 for b, s in zip(rows, on_spike, strict=True)
               if s and b.rr_ms is not None)  # fmt: skip
    after_spikes = [
        b.rr_ms for k, b in enumerate(rows) if k and on_spike[k - 1] and not on_spike[k]
    ]
    assert len(after_spikes) == 2 and all(x is not None and x > 2500 for x in after_spikes)
    assert not set(after_spikes) & set(rr)
    # The side file is on this series' axis: it starts where the first kept interval began.
    b = next(rows[k] for k in range(1, len(rows)) if rows[k].rr_ms == expected[0])
    assert b.rr_ms is not None
    with path.with_name(f"{path.stem}_markers.csv").open(newline="") as fh:
        (note,) = list(csv.DictReader(fh))
    assert float(note["kubios_t_s"]) > 0 and float(note["t_s"]) == 30.0
    assert float(note["kubios_t_s"]) < 30.0 - (b.beat_t_s - b.rr_ms / 1000) + 1e-3


def test_kubios_ecg_rr_keeps_classed_warmup_peaks_that_are_heartbeats(
    store: SessionStore, tmp_path: Path
) -> None:
    """Classes do not decide (an rr_source = "ecg" session classes the spikes' peaks too):
    a ``warmup`` peak on real ECG stays, as the strap's warm-up beats do in ``-rr.txt``."""
    sid, rows = _session(store, classify=True)
    spikes = _spike_times_s()
    kept_warmup = [
        b
        for k, b in enumerate(rows)
        if b.beat_class is BeatClass.WARMUP
        and b.rr_ms is not None
        and np.min(np.abs(spikes - b.beat_t_s)) > 0.15
        and np.min(np.abs(spikes - rows[k - 1].beat_t_s)) > 0.15
    ]
    assert len(kept_warmup) >= 4
    rr, _ = _kubios_rr(store, sid, tmp_path)
    plain_sid, _ = _session(store)
    plain, _ = _kubios_rr(store, plain_sid, tmp_path / "plain.txt")
    assert rr == plain  # the same file, classed or not
    for b in kept_warmup:
        assert b.rr_ms is not None and any(abs(x - b.rr_ms) < 1e-3 for x in rr)


def test_kubios_ecg_rr_of_nothing_but_start_up_spikes_is_a_one_line_error(
    store: SessionStore, tmp_path: Path
) -> None:
    sid = store.create_session("polar_h10_a1b2c3d4", T0_MS, "ble:AA:BB", {}).id
    t_ns = [round(k * 1e9 / FS) for k in range(2 * FS)]
    uv = [SPIKE_UV if k % 39 == 0 else 0 for k in range(2 * FS)]
    store.add_ecg(sid, t_ns, uv)
    store.add_ecg_beats(sid, [EcgBeatRow(0, 0.3, None), EcgBeatRow(1, 0.6, 300.0)])
    with pytest.raises(ExportError, match="start-up spikes") as err:
        export_kubios(store, sid, tmp_path / "x.txt", rr_source="ecg")
    assert "\n" not in str(err.value) and not (tmp_path / "x.txt").exists()


def test_an_ecg_clock_step_does_not_blank_the_rr_channel() -> None:
    """The strap's clock stepped: the raw ECG is re-anchored and the seam stored as a gap
    ("raw ECG clock step"). The EDF/BIDS RR channel treated it as lost heartbeats and was
    empty there, though every beat of the strap's own RR went on; a real dropout still is."""
    from sessions.series import rr_on_grid
    from sessions.store import BeatRow, GapRow

    t0 = 1_700_000_000_000
    beats = [BeatRow(k, float(k + 1), t0 + 1000 * (k + 1), 1000.0) for k in range(60)]
    # The reason as stores hold it (settle/ecg.py writes sensors.timing.ECG_CLOCK_STEP).
    gaps = [GapRow(10.2, 10.7, "raw ECG clock step"), GapRow(30.0, 33.0, "disconnected")]
    fs = 10.0
    rr = rr_on_grid(beats, gaps, 600, fs)
    t = np.arange(600) / fs
    assert not np.isnan(rr[(t >= 10.2) & (t <= 10.7)]).any()  # the heart went on
    assert np.isnan(rr[(t >= 30.0) & (t <= 33.0)]).all()
