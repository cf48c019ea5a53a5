"""Evenly sampled series from stored beats, for the formats that need a signal (EDF+, BIDS).

Arrays in, arrays out; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sensors.timing import ECG_ONLY_GAPS
from sessions.store import BaselinePeriod, BeatClass, BeatRow, EcgSeries, GapRow

__all__ = [
    "CORRECTED_CLASSES",
    "DEFAULT_FS_HZ",
    "ECG_HOLE_PERIODS",
    "ECG_KERNEL_HALF_WIDTH",
    "ECG_SINC_LIMIT_UV",
    "LOST_BEATS_TOLERANCE_S",
    "NOT_ANALYSED",
    "baseline_span",
    "corrected_runs",
    "ecg_holes",
    "ecg_on_grid",
    "ecg_rate_hz",
    "lost_beat_jumps",
    "not_analysed_spans",
    "rr_on_grid",
]

#: Beat classes whose RR artefact correction replaced (``docs/sessions.md``, beat classes):
#: the RR and HR signals are drawn from the corrected interval there, not the measured one.
CORRECTED_CLASSES = (
    BeatClass.ECTOPIC,
    BeatClass.LONG,
    BeatClass.SHORT,
    BeatClass.MISSED,
    BeatClass.EXTRA,
)
#: Resampling rate of the RR / HR series, Hz: 4 Hz is the usual rate for HRV tachograms.
DEFAULT_FS_HZ = 4.0

#: Beat-to-beat jumps longer than the RR they carry by more than this many seconds are
#: treated as gaps (lost beats) even without a stored gap record.
LOST_BEATS_TOLERANCE_S = 1.0


def lost_beat_jumps(
    beat_t_s: npt.NDArray[np.float64], span_ms: npt.NDArray[np.float64]
) -> npt.NDArray[np.intp]:
    """Indices ``j`` where beats were lost between beat ``j`` and beat ``j + 1``: they are
    further apart than the interval beat ``j + 1`` carries (``span_ms``, ms, one per beat,
    sorted by time) by more than :data:`LOST_BEATS_TOLERANCE_S`. The series here and the
    report's heart rate leave nothing drawn between them."""
    return np.flatnonzero(np.diff(beat_t_s) > span_ms[1:] / 1000.0 + LOST_BEATS_TOLERANCE_S)


#: Beat classes that are recorded but never analysed (``docs/sessions.md``): their RR is no
#: tachogram value, so the resampled series holds no data where it would depend on them.
NOT_ANALYSED = frozenset({BeatClass.IMPLAUSIBLE, BeatClass.WARMUP})


def baseline_span(baseline: BaselinePeriod | None, end_s: float) -> tuple[float, float] | None:
    """The baseline period as every export writes it, ``(start_t_s, stop_t_s)``, or None
    without one. A baseline whose stop was never stored — the session was stopped or
    interrupted while it was being collected, or is still collecting it — runs to
    ``end_s``, the session's end (:meth:`sessions.store.SessionStore.recorded_span_s`), and
    never ends before it starts."""
    if baseline is None:
        return None
    stop = baseline.stop_t_s
    return baseline.start_t_s, max(baseline.start_t_s, end_s if stop is None else stop)


def best_rr_ms(beat: BeatRow) -> float:
    """The artefact-corrected RR where correction has run, else the raw RR, ms."""
    return beat.rr_ms if beat.rr_corrected_ms is None else beat.rr_corrected_ms


def _merged_away(beat: BeatRow) -> bool:
    """A spurious beat artefact correction merged into the next one (no corrected RR)."""
    return beat.beat_class == BeatClass.EXTRA and beat.rr_corrected_ms is None


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
        for j in lost_beat_jumps(bt, np.maximum(rr, raw)):
            out[(t > bt[j]) & (t < bt[j + 1])] = np.nan
    for g in gaps:
        if g.reason in ECG_ONLY_GAPS:
            continue  # the heartbeats went on: nothing missing in the RR series
        out[(t >= g.start_t_s) & (t <= g.end_t_s)] = np.nan
    return out


#: Half-width of the band-limited ECG interpolation kernel, in recorded samples: a
#: Lanczos-windowed sinc over 2 x 16 samples is flat within 0.1 dB up to 55 Hz at 130 Hz
#: (-0.12 dB at 60 Hz), where the linear interpolation it replaced lost 2-4 dB at 30-60 Hz
#: and lowered R-peak tops by a median 3.6 %.
ECG_KERNEL_HALF_WIDTH = 16
#: Consecutive ECG samples further apart than this many sample periods (the median spacing)
#: end a stretch: the grid holds no data between stretches (a dropped PMD frame is ~73).
ECG_HOLE_PERIODS = 1.5
#: Samples beyond this (µV) are no band-limited signal: the Polar H10's start-up spikes
#: (±8 388 607 µV) or saturation. A sinc through them would ring ±16 samples wide at 10^5 µV,
#: so a grid point whose kernel reaches one is linearly interpolated between its two
#: neighbours instead, as before (the EDF clips and annotates such values either way).
ECG_SINC_LIMIT_UV = 32_767.0
#: Sample times are whole nanoseconds and grid times are not: a grid time this close to a
#: stretch's first or last sample counts as on it.
_ECG_TIME_TOLERANCE_NS = 1_000
#: Grid points per block of the vectorised interpolation: bounds the working memory (a few
#: arrays of block x 32 taps, ~40 MB) for a recording of any length.
_ECG_BLOCK = 1 << 13


def _ecg_stretches(
    t_ns: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """First and last index of every unbroken stretch of ECG samples (at least one)."""
    if t_ns.shape[0] < 2:
        return np.zeros(1, np.intp), np.zeros(1, np.intp)
    step = np.diff(t_ns)
    breaks = np.flatnonzero(step > ECG_HOLE_PERIODS * float(np.median(step)))
    lo = np.concatenate(([0], breaks + 1)).astype(np.intp)
    hi = np.concatenate((breaks, [t_ns.shape[0] - 1])).astype(np.intp)
    return lo, hi


def _lanczos_weights(
    frac: npt.NDArray[np.float64], taps: npt.NDArray[np.intp], half_width: int
) -> npt.NDArray[np.float64]:
    """Lanczos-windowed sinc weights, ``sinc(d) * sinc(d / a)`` at ``d = frac - tap``, for
    points ``frac`` (0 <= frac < 1) past sample 0 and samples ``taps`` (-a+1 … a, a =
    ``half_width``), normalised to unit gain at DC; shape (len(frac), 2a). A point on a
    sample (frac 0) gets that sample alone."""
    a = half_width
    # sin(pi (f - k)) = (-1)^k sin(pi f) and sin(pi (f - k) / a) = sin(pi f / a) cos(pi k / a)
    # - cos(pi f / a) sin(pi k / a): three sines or cosines per point instead of two sines
    # per tap (this is most of the work for 24 h of ECG).
    sign = np.where(taps % 2 == 0, 1.0, -1.0)
    pk = np.pi * taps / a
    scale = np.sin(np.pi * frac) * (a / np.pi**2)
    pf = np.pi * frac / a
    w: npt.NDArray[np.float64] = np.multiply.outer(scale * np.sin(pf), sign * np.cos(pk))
    w -= np.multiply.outer(scale * np.cos(pf), sign * np.sin(pk))
    d = np.subtract.outer(frac, taps.astype(np.float64))
    d *= d
    with np.errstate(divide="ignore", invalid="ignore"):
        w /= d
    on_sample = frac == 0.0
    if on_sample.any():
        w[on_sample] = (taps == 0).astype(np.float64)
    w /= w.sum(axis=1, keepdims=True)
    return w


def ecg_on_grid(ecg: EcgSeries, n_samples: int, fs_hz: float) -> npt.NDArray[np.float64]:
    """ECG in µV at times ``k / fs_hz`` s (``k < n_samples``), band-limited interpolation of
    the recorded samples; NaN where nothing was recorded.

    The samples are cut into unbroken stretches: a stretch ends where two consecutive samples
    are more than :data:`ECG_HOLE_PERIODS` sample periods apart. A grid time within a stretch
    is mapped to a fractional sample index of that stretch, piecewise linearly between the
    recorded sample times (so the strap's own clock — a Polar H10's 130.16 Hz against a 130 Hz
    grid — and its frame timing are followed), and the value there is the Lanczos-windowed
    sinc of half-width :data:`ECG_KERNEL_HALF_WIDTH` samples over the stretch's samples.
    Within that half-width of a stretch's end the kernel shrinks to the samples it has on both
    sides (down to one, close to linear interpolation), rather than inventing samples beyond
    it. A grid time on a recorded sample gives that sample exactly; a grid point whose kernel
    reaches a sample beyond :data:`ECG_SINC_LIMIT_UV` is linearly interpolated. Grid times
    outside every stretch (before the first sample, between stretches, after the last) are
    NaN. Works in blocks: time and memory grow linearly with the recording (24 h at 130 Hz
    are ~11 M grid points).
    """
    out = np.full(n_samples, np.nan)
    n_src = len(ecg)
    if n_src == 0 or n_samples == 0:
        return out
    # Integer ns and the int32 samples themselves (no float copies: 24 h are 11 M samples).
    t_src, x = ecg.t_ns, ecg.uv
    lo, hi = _ecg_stretches(t_src)
    tol = _ECG_TIME_TOLERANCE_NS
    # wild[i]: samples beyond ECG_SINC_LIMIT_UV before index i.
    wild = np.zeros(n_src + 1, np.int32)
    np.cumsum((x > ECG_SINC_LIMIT_UV) | (x < -ECG_SINC_LIMIT_UV), out=wild[1:])
    h = ECG_KERNEL_HALF_WIDTH
    taps = np.arange(-h + 1, h + 1, dtype=np.intp)
    step_ns = 1e9 / fs_hz
    k0 = max(0, math.ceil((t_src[0] - tol) / step_ns))
    k1 = min(n_samples, math.floor((t_src[-1] + tol) / step_ns) + 1)
    for b0 in range(k0, k1, _ECG_BLOCK):
        k = np.arange(b0, min(k1, b0 + _ECG_BLOCK))
        t = np.rint(k * step_ns).astype(np.int64)
        s = np.maximum(np.searchsorted(t_src[lo] - tol, t, side="right") - 1, 0)
        inside = (t >= t_src[lo[s]] - tol) & (t <= t_src[hi[s]] + tol)
        k, t, first, last = k[inside], t[inside], lo[s[inside]], hi[s[inside]]
        if k.size == 0:
            continue
        # Fractional index, piecewise linear in time between the stretch's samples.
        j = np.clip(np.searchsorted(t_src, t, side="right") - 1, first, np.maximum(last - 1, first))
        span = (t_src[np.minimum(j + 1, last)] - t_src[j]).astype(np.float64)
        u = np.clip(j + (t - t_src[j]) / np.where(span > 0, span, 1.0), first, last)
        i0 = np.floor(u).astype(np.intp)
        frac = u - i0
        idx = i0[:, None] + taps[None, :]
        w = _lanczos_weights(frac, taps, h)
        # Room on each side within the stretch: fewer than h samples near its ends.
        room = np.minimum(np.minimum(i0 - first + 1, last - i0), h)
        for a in np.unique(room[room < h]).tolist():
            rows = np.flatnonzero(room == a)
            if a == 0:  # on the stretch's last sample, or a stretch of one sample
                w[rows] = 0.0
                w[rows, h - 1] = 1.0
                idx[rows] = i0[rows, None]
                continue
            w[rows] = 0.0
            w[rows, h - a : h + a] = _lanczos_weights(frac[rows], taps[h - a : h + a], a)
            # The taps beyond the stretch have weight 0: any sample of it will do.
            idx[rows] = np.clip(idx[rows], first[rows, None], last[rows, None])
        values = np.einsum("ij,ij->i", w, x[idx])
        near_wild = wild[np.minimum(i0 + h + 1, n_src)] > wild[np.maximum(i0 - h + 1, 0)]
        if near_wild.any():
            a0, f = i0[near_wild], frac[near_wild]
            a1 = np.minimum(a0 + 1, last[near_wild])
            values[near_wild] = x[a0] * (1.0 - f) + x[a1] * f
        out[k] = values
    return out


def ecg_rate_hz(ecg: EcgSeries) -> float | None:
    """The strap's own sampling rate, Hz: samples per second within the unbroken stretches
    (:attr:`EcgSeries.fs_hz` is the median spacing, which the in-frame spacing decides).
    None below two samples in one stretch."""
    if len(ecg) < 2:
        return None
    lo, hi = _ecg_stretches(ecg.t_ns)
    span_ns = float(np.sum(ecg.t_ns[hi] - ecg.t_ns[lo]))
    return float(np.sum(hi - lo)) * 1e9 / span_ns if span_ns > 0 else None


def ecg_holes(values: npt.NDArray[np.float64], fs_hz: float) -> list[tuple[float, float]]:
    """(onset s, duration s) of every run of grid samples without ECG (NaN) in ``values``
    (sampled at ``k / fs_hz``); the duration covers the last such sample's period."""
    missing = np.isnan(values)
    if not missing.any():
        return []
    edges = np.diff(np.concatenate(([0], missing.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(float(a / fs_hz), float((b - a) / fs_hz)) for a, b in zip(starts, ends, strict=True)]


def n_samples_for(span_s: float, fs_hz: float) -> int:
    """Samples needed to cover ``span_s`` seconds at ``fs_hz`` (at least one)."""
    return max(1, math.floor(span_s * fs_hz) + 1)


def corrected_runs(
    beats: Sequence[BeatRow], rr: npt.NDArray[np.float64], fs_hz: float
) -> list[tuple[float, float, str]]:
    """``(onset s, duration s, "<classes>")`` for every run of samples of ``rr``
    (the RR series at ``k / fs_hz``, NaN where it has no data, as
    :func:`sessions.series.rr_on_grid` makes it) whose value is interpolated from at least
    one beat of :data:`CORRECTED_CLASSES` — an artefact-corrected interval rather than a
    measured one. ``classes`` names the classes of those beats in time order. The duration
    covers the last such sample's period, as for :func:`sessions.series.ecg_holes`.

    A sample on a beat takes that beat's RR; one between two beats mixes both. A spurious
    beat correction merged away (``extra`` without a corrected RR) is not in the series;
    the beat after it, which carries the merged interval, is ``extra`` too."""
    kept = sorted(
        (b for b in beats if not (b.beat_class == BeatClass.EXTRA and b.rr_corrected_ms is None)),
        key=lambda b: b.beat_t_s,
    )
    corrected = np.array([b.beat_class in CORRECTED_CLASSES for b in kept], dtype=bool)
    if not corrected.any():
        return []
    bt = np.array([b.beat_t_s for b in kept], dtype=np.float64)
    t = np.arange(rr.shape[0], dtype=np.float64) / fs_hz
    idx = np.flatnonzero(np.isfinite(rr) & (t >= bt[0]) & (t <= bt[-1]))
    k = np.searchsorted(bt, t[idx], side="right") - 1
    nxt = np.minimum(k + 1, bt.shape[0] - 1)
    from_next = (t[idx] != bt[k]) & corrected[nxt]
    flags = np.zeros(rr.shape[0], dtype=np.int8)
    flags[idx[corrected[k] | from_next]] = 1
    edges = np.diff(np.concatenate(([0], flags, [0])))
    out: list[tuple[float, float, str]] = []
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        lo, hi = np.searchsorted(idx, a), np.searchsorted(idx, b)
        here = k[lo:hi][corrected[k[lo:hi]]].tolist() + nxt[lo:hi][from_next[lo:hi]].tolist()
        names = dict.fromkeys(str(kept[j].beat_class) for j in sorted(set(here)))
        out.append((float(a / fs_hz), float((b - a) / fs_hz), ", ".join(names)))
    return out
