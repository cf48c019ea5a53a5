"""Evenly sampled series from stored beats, for the formats that need a signal (EDF+, BIDS).

Arrays in, arrays out; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sessions.store import BeatRow, EcgSeries, GapRow

__all__ = ["DEFAULT_FS_HZ", "ecg_on_grid", "rr_on_grid", "session_span_s"]

#: Resampling rate of the RR / HR series, Hz: 4 Hz is the usual rate for HRV tachograms.
DEFAULT_FS_HZ = 4.0

#: Beat-to-beat jumps longer than the RR they carry by more than this many seconds are
#: treated as gaps (lost beats) even without a stored gap record.
_LOST_BEATS_TOLERANCE_S = 1.0


def best_rr_ms(beat: BeatRow) -> float:
    """The artefact-corrected RR where correction has run, else the raw RR, ms."""
    return beat.rr_ms if beat.rr_corrected_ms is None else beat.rr_corrected_ms


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


def rr_on_grid(
    beats: Sequence[BeatRow], gaps: Sequence[GapRow], n_samples: int, fs_hz: float
) -> npt.NDArray[np.float64]:
    """RR in ms at times ``k / fs_hz`` s (``k < n_samples``), NaN where there is no data.

    The tachogram (beat time, RR) is linearly interpolated between beats, the usual HRV
    resampling. NaN before the first and after the last beat, inside stored gaps, and between
    two beats farther apart than the RR they carry allows (lost beats).
    """
    t = np.arange(n_samples, dtype=np.float64) / fs_hz
    out = np.full(n_samples, np.nan)
    if len(beats) < 1:
        return out
    bt = np.array([b.beat_t_s for b in beats], dtype=np.float64)
    rr = np.array([best_rr_ms(b) for b in beats], dtype=np.float64)
    order = np.argsort(bt, kind="stable")
    bt, rr = bt[order], rr[order]
    valid = (t >= bt[0]) & (t <= bt[-1])
    out[valid] = np.interp(t[valid], bt, rr)
    if bt.shape[0] > 1:
        jumps = np.flatnonzero(np.diff(bt) > rr[1:] / 1000.0 + _LOST_BEATS_TOLERANCE_S)
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
