"""Evenly sampled series from stored beats, for the formats that need a signal (EDF+, BIDS).

Arrays in, arrays out; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sessions.store import BeatClass, BeatRow, EcgSeries, GapRow

__all__ = [
    "DEFAULT_FS_HZ",
    "NOT_ANALYSED",
    "ecg_on_grid",
    "not_analysed_spans",
    "rr_on_grid",
    "session_span_s",
]

#: Resampling rate of the RR / HR series, Hz: 4 Hz is the usual rate for HRV tachograms.
DEFAULT_FS_HZ = 4.0

#: Beat-to-beat jumps longer than the RR they carry by more than this many seconds are
#: treated as gaps (lost beats) even without a stored gap record.
_LOST_BEATS_TOLERANCE_S = 1.0

#: Beat classes that are recorded but never analysed (``docs/sessions.md``): their RR is no
#: tachogram value, so the resampled series holds no data where it would depend on them.
NOT_ANALYSED = frozenset({BeatClass.IMPLAUSIBLE, BeatClass.WARMUP})


def best_rr_ms(beat: BeatRow) -> float:
    """The artefact-corrected RR where correction has run, else the raw RR, ms."""
    return beat.rr_ms if beat.rr_corrected_ms is None else beat.rr_corrected_ms


def _merged_away(beat: BeatRow) -> bool:
    """A spurious beat artefact correction merged into the next one (no corrected RR)."""
    return beat.beat_class == BeatClass.EXTRA and beat.rr_corrected_ms is None


def session_span_s(
    beats: Sequence[BeatRow], ecg: EcgSeries | None = None, stopped_s: float | None = None
) -> float:
    """Seconds from session start to the last beat, ECG sample or the stop, whichever is last."""
    end = 0.0
    if beats:
        end = max(end, beats[-1].beat_t_s)
    if ecg is not None and len(ecg):
        end = max(end, float(ecg.t_ns[-1]) / 1e9)
    if stopped_s is not None:
        end = max(end, stopped_s)
    return end


def _sorted_beats(
    beats: Sequence[BeatRow],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Beat times (s), best RR (ms) and "not analysed" flags, in time order."""
    bt = np.array([b.beat_t_s for b in beats], dtype=np.float64)
    rr = np.array([best_rr_ms(b) for b in beats], dtype=np.float64)
    skip = np.array([b.beat_class in NOT_ANALYSED for b in beats], dtype=bool)
    order = np.argsort(bt, kind="stable")
    return bt[order], rr[order], skip[order]


def not_analysed_spans(beats: Sequence[BeatRow]) -> list[tuple[float, float, str]]:
    """``(start_t_s, end_t_s, classes)`` of every run of consecutive ``implausible`` /
    ``warmup`` beats: from the beat before the run (or, for a run at the start, the
    beginning of its first interval, not before 0) to the beat after it (or the run's last
    beat). ``classes`` names the classes in the run (``"warmup"``, ``"implausible"`` or
    ``"warmup, implausible"``). These are the spans :func:`rr_on_grid` leaves empty."""
    if not beats:
        return []
    bt, rr, skip = _sorted_beats(beats)
    classes = [b.beat_class for b in sorted(beats, key=lambda b: b.beat_t_s)]
    out: list[tuple[float, float, str]] = []
    n, i = len(bt), 0
    while i < n:
        if not skip[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and skip[j + 1]:
            j += 1
        start = float(bt[i - 1]) if i > 0 else max(0.0, float(bt[i] - rr[i] / 1000.0))
        end = float(bt[j + 1]) if j + 1 < n else float(bt[j])
        names = dict.fromkeys(str(c) for c in classes[i : j + 1])
        out.append((start, end, ", ".join(names)))
        i = j + 1
    return out


def rr_on_grid(
    beats: Sequence[BeatRow], gaps: Sequence[GapRow], n_samples: int, fs_hz: float
) -> npt.NDArray[np.float64]:
    """RR in ms at times ``k / fs_hz`` s (``k < n_samples``), NaN where there is no data.

    The tachogram (beat time, RR) is linearly interpolated between beats, the usual HRV
    resampling. NaN before the first and after the last beat, inside stored gaps, between
    two beats farther apart than the RR they carry allows (lost beats), and wherever the
    value would depend on a beat that is not analysed (class ``implausible`` or ``warmup``:
    its RR is what the strap sent, not a heartbeat interval to draw). A spurious beat that
    correction merged away (class ``extra`` without a corrected RR) is no heartbeat: it is
    left out, and the next beat carries the merged interval (drawn at its raw RR, it put a
    410 ms spike, HR 146 bpm, into a series of 1060 ms intervals).
    """
    t = np.arange(n_samples, dtype=np.float64) / fs_hz
    out = np.full(n_samples, np.nan)
    beats = [b for b in beats if not _merged_away(b)]
    if len(beats) < 1:
        return out
    bt, rr, skip = _sorted_beats(beats)
    # The beats' spacing is their raw RR (a split "missed" beat keeps its whole raw interval
    # before it; its corrected RR is one part of it).
    raw = np.array([b.rr_ms for b in beats], dtype=np.float64)[
        np.argsort([b.beat_t_s for b in beats], kind="stable")
    ]
    valid = (t >= bt[0]) & (t <= bt[-1])
    out[valid] = np.interp(t[valid], bt, rr)
    if skip.any():
        # A sample on beat k takes that beat's RR; between beats k and k+1 it mixes both.
        idx = np.flatnonzero(valid)
        k = np.searchsorted(bt, t[idx], side="right") - 1
        nxt = np.minimum(k + 1, bt.shape[0] - 1)
        depends = skip[k] | ((t[idx] != bt[k]) & skip[nxt])
        out[idx[depends]] = np.nan
    if bt.shape[0] > 1:
        spacing = np.maximum(rr[1:], raw[1:]) / 1000.0
        jumps = np.flatnonzero(np.diff(bt) > spacing + _LOST_BEATS_TOLERANCE_S)
        for j in jumps:
            out[(t > bt[j]) & (t < bt[j + 1])] = np.nan
    for g in gaps:
        out[(t >= g.start_t_s) & (t <= g.end_t_s)] = np.nan
    return out


def ecg_on_grid(ecg: EcgSeries, n_samples: int, fs_hz: float) -> npt.NDArray[np.float64]:
    """ECG in µV at times ``k / fs_hz`` s, linearly interpolated; NaN outside the recording
    and across holes longer than 5 sample periods."""
    t = np.arange(n_samples, dtype=np.float64) / fs_hz
    out = np.full(n_samples, np.nan)
    if len(ecg) == 0:
        return out
    et = ecg.t_ns.astype(np.float64) / 1e9
    ev = ecg.uv.astype(np.float64)
    # Half a sample period of slack: ns-rounded sample times vs the float grid.
    half = 0.5 / fs_hz
    valid = (t >= et[0] - half) & (t <= et[-1] + half)
    out[valid] = np.interp(t[valid], et, ev)
    if et.shape[0] > 1:
        for j in np.flatnonzero(np.diff(et) > 5.0 / fs_hz):
            out[(t > et[j]) & (t < et[j + 1])] = np.nan
    return out


def n_samples_for(span_s: float, fs_hz: float) -> int:
    """Samples needed to cover ``span_s`` seconds at ``fs_hz`` (at least one)."""
    return max(1, math.floor(span_s * fs_hz) + 1)
