"""Export one session as EDF+ (European Data Format, continuous: ``EDF+C``).

Written directly to the EDF+ specification (https://www.edfplus.info/specs/edfplus.html);
no third-party writer is needed. Layout:

* header: the patient field is ``<device id> X X X`` — its first subfield (the patient
  code) is the id of the strap that recorded (:func:`patient_field`), so a group practice's
  files say whose each is; sex, birthdate and name stay unknown (``X``);
* data records of 1 s, or up to 5 s when an annotation is long (:func:`_record_seconds`):
  annotations are spread over the records in onset order, each record holding the same
  modest room, rather than every record padded to the most annotations of any one second;
* signal ``RR`` — RR interval in ms, resampled at 4 Hz by linear interpolation of the
  tachogram (artefact-corrected RR where correction has run, else raw), physical range
  0–5000 ms; the samples drawn from a corrected interval are annotated
  (:func:`corrected_spans`);
* signal ``HR`` — heart rate ``60000 / RR`` in beats/min at 4 Hz, physical range 0–600;
* signal ``ECG`` — only when raw ECG was recorded: µV at the recorded rate rounded to whole
  Hz, resampled onto that grid by band-limited (windowed-sinc) interpolation within each
  unbroken stretch of samples (:func:`sessions.series.ecg_on_grid`; a recorded sample that
  falls on the grid is written unchanged, and the JSON export holds them all), as its
  prefilter field says; physical range fixed at :data:`ECG_RANGE_UV` (1 µV per digital
  step); samples beyond it are clipped to its edge and annotated;
* ``EDF Annotations`` — markers as ``kind: text``, gaps as ``gap: reason`` with their
  duration, the baseline as ``baseline`` with its duration, at onset 0 the exact start with
  its UTC offset (``recording start: …``: the header holds local time), the RR/HR samples
  drawn from artefact-corrected intervals as ``corrected: <classes>``, spans whose RR
  depends on beats that are not analysed as ``not analysed: implausible`` / ``not analysed:
  warmup`` with their duration, clipped ECG as :data:`ECG_CLIPPED` with its duration, every
  stretch of the ECG signal without recorded ECG as :data:`ECG_NOT_RECORDED` with its
  duration, the intention at onset 0 as three annotations (``intention target: …``,
  ``intention statement: …``, ``intention practice: …``). A text longer than
  :data:`MAX_ANNOTATION_BYTES` UTF-8 bytes (what EDFlib-based readers such as pyedflib and
  EDFbrowser keep) is cut and ends in ``…``; the CSV, JSON and BIDS exports hold it whole.

EDF has no "missing" value. Where RR has no value — before the first beat, in gaps, and
where it would depend on an ``implausible`` or ``warmup`` beat — RR and HR both hold 0 (the
physical and digital minimum, which no heartbeat has); gaps and such spans are annotated. The
physical ranges cover every RR that ``settle.toml`` can make plausible (100–5000 ms), so a
value is never clipped; anything outside them (e.g. an unclassified raw beat) is written as
missing in both RR and HR too. ECG holds 0 µV (digital 0) where it was not recorded (before
its first sample, across holes in it such as a dropped frame, after its last sample), and
every such stretch is annotated :data:`ECG_NOT_RECORDED`.

Time: the header start date/time is the session start in **local time** — the clock of the
place it was recorded, as the EDF+ specification has it (EDF has no time zone field), read in
the time zone of the computer exporting (``TZ`` overrides it) — truncated to the second;
the recording field's ``Startdate`` is that local date. The sub-second part of the start is
carried by the EDF+ time-keeping annotation of each record, so annotation onsets are
``started_ms % 1000 / 1000 + t_s`` seconds after the header start, and the first sample of
each signal is at session time ``t_s = 0``; the offset of that local time from UTC is in an
annotation at onset 0, ``recording start: <ISO 8601 with milliseconds and offset>``
(:func:`recording_start`), which gives the exact instant.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, cast

import numpy as np
import numpy.typing as npt

from sessions.export_json import package_version
from sessions.files import ProgressFn, atomic_file, one_line, target_file
from sessions.series import (
    CORRECTED_CLASSES,
    DEFAULT_FS_HZ,
    ECG_KERNEL_HALF_WIDTH,
    baseline_span,
    corrected_runs,
    ecg_holes,
    ecg_on_grid,
    ecg_rate_hz,
    not_analysed_spans,
    rr_on_grid,
)
from sessions.store import BeatRow, EcgSeries, SessionRecord, SessionStore

__all__ = [
    "CORRECTED",
    "CORRECTED_CLASSES",
    "ECG_CLIPPED",
    "ECG_NOT_RECORDED",
    "ECG_RANGE_UV",
    "HR_RANGE_BPM",
    "MAX_ANNOTATION_BYTES",
    "RECORDING_START",
    "RR_RANGE_MS",
    "corrected_spans",
    "export_edf",
    "local_start",
    "patient_field",
    "recording_start",
]

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DIG_MIN, _DIG_MAX = -32768, 32767

#: Physical ranges of the RR (ms) and HR (beats/min) signals: every RR that the widest
#: ``processing.rr_min_ms`` / ``rr_max_ms`` settings accept (100–5000 ms) fits both.
RR_RANGE_MS = (0.0, 5000.0)
HR_RANGE_BPM = (0.0, 600.0)

#: Physical range of the ECG signal, µV: fixed, equal to the digital range, so one digital
#: step is exactly 1 µV (the strap's own resolution: the H10 sends whole µV), a recorded
#: sample on the grid is written unchanged and "no data" (0 µV) is digital 0. ±32.7 mV is
#: ~10x any surface ECG. A range from the data's extremes would let the H10's full-scale
#: start-up spikes (±8 388 607 µV) set it — ~256 µV per step, a QRS in a handful of values —
#: and one from percentiles would still vary per file and clip real QRS in a short record.
ECG_RANGE_UV = (float(_DIG_MIN), float(_DIG_MAX))
#: Annotation over ECG samples clipped to :data:`ECG_RANGE_UV` (start-up spikes, saturation);
#: clipped samples closer than :data:`_CLIP_MERGE_S` share one annotation.
ECG_CLIPPED = f"ECG clipped: outside {_DIG_MIN}..{_DIG_MAX} uV"
_CLIP_MERGE_S = 1.0
#: Annotation over every stretch of the ECG signal with no recorded ECG (before the first
#: sample, a dropped frame, after the last): the signal holds 0 µV there, which a recorded
#: 0 µV cannot be told from without it.
ECG_NOT_RECORDED = "ECG not recorded (0 uV here)"
#: Start of the annotation at onset 0 that gives the start's UTC offset (:func:`recording_start`).
RECORDING_START = "recording start"
#: Start of the annotation over RR/HR samples computed from corrected intervals
#: (:func:`corrected_spans`): ``corrected: ectopic``, ``corrected: missed, long``.
CORRECTED = "corrected"

#: Longest annotation text written, UTF-8 bytes: EDFlib (pyedflib, EDFbrowser) keeps this
#: many of each annotation; a longer text is cut on a character boundary and ends in "…".
MAX_ANNOTATION_BYTES = 512
_ELLIPSIS = "…"

#: Room for annotations in each second of the file, bytes: the time-keeping TAL every data
#: record starts with and a marker or two. Annotations are spread over the records (in
#: onset order, each from the record of its onset on, or before it when the file's end is
#: full), so room per record does not grow with the number of annotations at one moment.
_ANN_BYTES_PER_S = 64
#: Most annotation room per second of the file, bytes. A TAL cannot span data records, so
#: every record must hold the longest one whole (up to ~560 bytes with a text cut to
#: :data:`MAX_ANNOTATION_BYTES`); when that is more than this per second the data records
#: are made longer instead (at most 5 s), which keeps a long note from multiplying the
#: size of a long file.
_ANN_MAX_BYTES_PER_S = 128


class _Signal:
    def __init__(
        self,
        label: str,
        dim: str,
        phys_min: float,
        phys_max: float,
        per_record: int,
        values: npt.NDArray[np.float64],
        prefilter: str = "",
        transducer: str = "",
        clip: bool = False,
    ) -> None:
        self.label, self.dim, self.prefilter, self.transducer = label, dim, prefilter, transducer
        self.phys_min, self.phys_max, self.per_record = phys_min, phys_max, per_record
        # NaN (no data) -> physical minimum, or 0 where 0 lies inside the range. A value
        # outside the range is no data either: never clip it to a value nobody measured —
        # except with ``clip`` (ECG), where a value beyond the range was measured as beyond
        # it (a saturated or start-up sample) and its edge says so; the caller annotates it.
        fill = 0.0 if phys_min <= 0.0 <= phys_max else phys_min
        if clip:
            v = np.where(np.isnan(values), fill, np.clip(values, phys_min, phys_max))
        else:
            inside = (values >= phys_min) & (values <= phys_max)  # False for NaN
            v = np.where(inside, values, fill)
        scale = (_DIG_MAX - _DIG_MIN) / (phys_max - phys_min)
        self.digital = np.round((v - phys_min) * scale + _DIG_MIN).astype("<i2")


def _field(text: str, width: int) -> bytes:
    data = text.encode("ascii", "replace")[:width]
    return data.ljust(width, b" ")


def _num(x: float, width: int = 8) -> str:
    """A whole number in at most ``width`` ASCII characters (every range here is whole)."""
    s = str(int(x))
    if not float(x).is_integer() or len(s) > width:
        raise ValueError(f"{x} is not a whole number of at most {width} characters")
    return s


def _onset(x: float) -> str:
    s = f"{abs(x):.6f}".rstrip("0").rstrip(".")
    return ("-" if x < 0 else "+") + s


def _clean(text: str) -> str:
    """One line (TAL separators are 0x14, 0x15 and 0x00) of at most
    :data:`MAX_ANNOTATION_BYTES` UTF-8 bytes, cut texts ending in "…"."""
    text = one_line(text)
    if len(text.encode("utf-8")) <= MAX_ANNOTATION_BYTES:
        return text
    room = MAX_ANNOTATION_BYTES - len(_ELLIPSIS.encode("utf-8"))
    cut = text.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip()
    return cut + _ELLIPSIS


def _tal(onset: float, duration: float | None, text: str) -> bytes:
    head = _onset(onset) + ("" if duration is None else "\x15" + _onset(duration)[1:])
    return (head + "\x14" + _clean(text) + "\x14\x00").encode("utf-8")


def local_start(started_ms: int, tz: dt.tzinfo | None = None) -> dt.datetime:
    """The header's start: the instant ``started_ms`` (epoch ms) on the local clock of the
    recording (``tz``, :attr:`sessions.store.SessionInfo.recording_tz`; without it, of the
    computer exporting: its time zone, ``TZ`` overrides it), to the whole second, with its
    UTC offset (``tzinfo``)."""
    return dt.datetime.fromtimestamp(started_ms // 1000, tz=dt.UTC).astimezone(tz)


def recording_start(started_ms: int, tz: dt.tzinfo | None = None) -> str:
    """The text of the annotation at onset 0 that completes the header's local start:
    ``recording start: 2026-11-18T16:36:40.123+05:30`` (ISO 8601: the same local time with
    its milliseconds and its offset from UTC, i.e. the exact instant)."""
    when = local_start(started_ms, tz) + dt.timedelta(milliseconds=started_ms % 1000)
    return f"{RECORDING_START}: {when.isoformat(timespec='milliseconds')}"


def _annotations(rec: SessionRecord, end_s: float) -> list[tuple[float, float | None, str]]:
    info = rec.info
    # First at 0: the header's start is local time, and EDF has no field for its time zone.
    out: list[tuple[float, float | None, str]] = [
        (0.0, None, recording_start(info.started_ms, info.recording_tz))
    ]
    if info.intention is not None:
        # One annotation per field: no separator that a statement could also contain.
        i = info.intention
        out.append((0.0, None, f"intention target: {i.target.value}"))
        if i.statement:
            out.append((0.0, None, f"intention statement: {i.statement}"))
        if i.practice:
            out.append((0.0, None, f"intention practice: {i.practice}"))
    baseline = baseline_span(info.baseline, end_s)  # an open one: to the session's end
    if baseline is not None:
        out.append((baseline[0], baseline[1] - baseline[0], "baseline"))
    for m in rec.markers:
        out.append((m.t_s, None, f"{m.kind}: {m.text}" if m.text else m.kind))
    for g in rec.gaps:
        out.append((g.start_t_s, g.end_t_s - g.start_t_s, f"gap: {g.reason}"))
    for start, end, classes in not_analysed_spans(rec.beats):
        out.append((start, end - start, f"not analysed: {classes}"))
    out.sort(key=lambda a: a[0])  # stable: the intention's fields stay in order
    return out


def corrected_spans(
    beats: Sequence[BeatRow], rr: npt.NDArray[np.float64], fs_hz: float
) -> list[tuple[float, float | None, str]]:
    """``(onset s, duration s, "corrected: <classes>")`` for every run of samples of ``rr``
    drawn from an artefact-corrected interval (:func:`sessions.series.corrected_runs`)."""
    return [(a, d, f"{CORRECTED}: {c}") for a, d, c in corrected_runs(beats, rr, fs_hz)]


def _clipped_spans(
    values: npt.NDArray[np.float64], fs_hz: float, lo: float, hi: float
) -> list[tuple[float, float | None, str]]:
    """One :data:`ECG_CLIPPED` annotation per run of samples outside ``lo``–``hi``, runs
    less than :data:`_CLIP_MERGE_S` apart merged (the H10's start-up spikes come every few
    hundred ms); the duration covers the last clipped sample's period."""
    idx = np.flatnonzero((values < lo) | (values > hi))  # False for NaN
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > _CLIP_MERGE_S * fs_hz)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]]))
    return [
        (a / fs_hz, (b - a + 1) / fs_hz, ECG_CLIPPED) for a, b in zip(starts, ends, strict=True)
    ]


def _ecg_prefilter(ecg: EcgSeries, fs_hz: int) -> str:
    """The ECG signal's prefilter field (80 characters at most): how it was resampled."""
    rate = ecg_rate_hz(ecg)
    src = "?" if rate is None else f"{rate:.2f}"
    kernel = f"Lanczos-windowed sinc, {ECG_KERNEL_HALF_WIDTH} taps/side"
    return f"resampled {src}->{fs_hz} Hz, {kernel}"[:80]


def patient_field(device_id: str) -> str:
    """The EDF+ local patient identification: ``<code> X X X``, the code being the strap's
    device id with every space (and anything but printable ASCII) as ``_`` — subfields are
    separated by spaces — cut to fit the 80-character field; ``X`` (unknown) if empty."""
    code = "".join(c if 33 <= ord(c) <= 126 else "_" for c in device_id)
    return f"{code[: 80 - len(' X X X')] or 'X'} X X X"


def _header(
    rec: SessionRecord,
    signals: Sequence[_Signal],
    n_records: int,
    record_s: int,
    ann_samples: int,
) -> bytes:
    # Local time, as the EDF+ specification has it (what EDFbrowser and pyedflib
    # show as the start): the header held UTC, so a session begun at 07:30 in Berlin read
    # 06:30. The sub-second part and the UTC offset are in annotations (recording_start).
    start = local_start(rec.info.started_ms, rec.info.recording_tz)
    ns = len(signals) + 1
    recording = (
        f"Startdate {start.day:02d}-{_MONTHS[start.month - 1]}-{start.year} "
        f"{rec.info.id} X Settle_{package_version('settle-hrv')}"
    )
    head = b"".join(
        [
            _field("0", 8),
            _field(patient_field(rec.info.device_id), 80),
            _field(recording, 80),
            # Two-digit years mean 1985–2084 (EDF+ 2.1.3.2); outside them the spec writes
            # "yy" and the year stands only in Startdate above (a host clock left at 1970
            # read 2070).
            _field(f"{start:%d.%m.}" + (f"{start:%y}" if 1985 <= start.year <= 2084 else "yy"), 8),
            _field(f"{start:%H.%M.%S}", 8),
            _field(str(256 * (ns + 1)), 8),
            _field("EDF+C", 44),
            _field(str(n_records), 8),
            _field(str(record_s), 8),
            _field(str(ns), 4),
        ]
    )
    labels = [s.label for s in signals] + ["EDF Annotations"]
    cols: list[list[bytes]] = [
        [_field(x, 16) for x in labels],
        [_field(s.transducer, 80) for s in signals] + [_field("", 80)],
        [_field(s.dim, 8) for s in signals] + [_field("", 8)],
        [_field(_num(s.phys_min), 8) for s in signals] + [_field("-1", 8)],
        [_field(_num(s.phys_max), 8) for s in signals] + [_field("1", 8)],
        [_field(str(_DIG_MIN), 8)] * ns,
        [_field(str(_DIG_MAX), 8)] * ns,
        [_field(s.prefilter, 80) for s in signals] + [_field("", 80)],
        [_field(str(s.per_record), 8) for s in signals] + [_field(str(ann_samples), 8)],
        [_field("", 32)] * ns,
    ]
    out = head + b"".join(b"".join(c) for c in cols)
    assert len(out) == 256 * (ns + 1)
    return out


def _longest_record(
    frac: float, span: float, annotations: Sequence[tuple[float, float | None, str]]
) -> int:
    """Bytes of the longest time-keeping TAL (at the file's end) plus the longest of
    ``annotations``' TALs: what every data record must be able to hold."""
    keeping = len(_tal(frac + math.ceil(span) + 5, None, ""))
    return keeping + max((len(_tal(frac + o, d, t)) for o, d, t in annotations), default=0)


def _record_seconds(longest: int) -> int:
    """Data record duration, whole seconds: 1, or as many as keep a record that holds
    ``longest`` bytes of TALs within :data:`_ANN_MAX_BYTES_PER_S` per second."""
    return max(1, math.ceil(longest / _ANN_MAX_BYTES_PER_S))


def _pack(tals: Sequence[tuple[int, bytes]], n_records: int, room: int) -> list[list[bytes]] | None:
    """Spread ``(home record, TAL)`` pairs (in the order they are to be read) over
    ``n_records`` records holding ``room`` bytes of TALs each, keeping their order: each
    goes into its home record or, when that is full, the next with room; what the last
    record cannot hold moves back into the records before it. ``None`` if they do not fit."""
    out: list[list[bytes]] = [[] for _ in range(n_records)]
    used = [0] * n_records
    k = 0
    for home, tal in tals:
        k = max(k, min(home, n_records - 1))
        while k < n_records - 1 and used[k] + len(tal) > room:
            k += 1
        out[k].append(tal)
        used[k] += len(tal)
    for k in range(n_records - 1, 0, -1):  # the end overflowed: move its excess back
        while used[k] > room:
            tal = out[k].pop(0)
            used[k] -= len(tal)
            out[k - 1].append(tal)
            used[k - 1] += len(tal)
    return None if used[0] > room else out


def export_edf(
    store: SessionStore,
    session_id: str,
    out: Path,
    *,
    progress: ProgressFn | None = None,
    replace: bool = True,
) -> Path:
    """Write session ``session_id`` as EDF+ to ``out`` (an ``.edf`` file, or a directory for
    ``settle-<id>.edf``); return the path written. Raises :class:`ExportError`."""
    target = target_file(Path(out), f"settle-{session_id}.edf", (".edf",))
    rec = store.read_session(session_id)
    ecg: EcgSeries | None = store.ecg(session_id) if rec.n_ecg else None
    info = rec.info
    # Session seconds (a --speed replay's wall-clock length times its speed), as BIDS has it;
    # the file also reaches the last annotation (an imported marker may be 1 s past it).
    span = store.recorded_span_s(session_id, to_now=False)
    annotations = _annotations(rec, span)
    if annotations:
        span = max(span, annotations[-1][0])
    frac = (info.started_ms % 1000) / 1000.0
    # The record length follows from the longest TAL a record must hold with its time-keeping
    # TAL; the ECG's and the corrected RR's annotations are made on the signals' grid, so they
    # are estimated here (the latter with every class named).
    ecg_texts = [] if ecg is None or ecg.fs_hz is None else [ECG_CLIPPED, ECG_NOT_RECORDED]
    if any(b.beat_class in CORRECTED_CLASSES for b in rec.beats):
        ecg_texts.append(f"{CORRECTED}: {', '.join(CORRECTED_CLASSES)}")
    record_s = _record_seconds(
        _longest_record(frac, span, [*annotations, *((span, span, t) for t in ecg_texts)])
    )
    n_records = max(1, math.ceil((span + 1e-9) / record_s))
    n_s = n_records * record_s
    fs_rr = int(DEFAULT_FS_HZ)
    rr = rr_on_grid(rec.beats, rec.gaps, n_s * fs_rr, DEFAULT_FS_HZ)
    with np.errstate(divide="ignore", invalid="ignore"):
        hr = np.where(rr > 0, 60_000.0 / rr, np.nan)
    # A sample is missing in RR and HR together: never a value in one and none in the other.
    ok = (rr >= RR_RANGE_MS[0]) & (rr <= RR_RANGE_MS[1])
    ok &= (hr >= HR_RANGE_BPM[0]) & (hr <= HR_RANGE_BPM[1])
    rr, hr = np.where(ok, rr, np.nan), np.where(ok, hr, np.nan)
    # Which samples come from an artefact-corrected interval, not a measured one: EDF has
    # no field for it, and a reader could not tell them apart (annotations, as the spans
    # without data are: EDFbrowser lists and shades them, MNE reads them into annotations).
    annotations += corrected_spans(rec.beats, rr, DEFAULT_FS_HZ)
    annotations.sort(key=lambda a: a[0])  # stable, as in _annotations
    resampled = f"tachogram linearly interpolated at {fs_rr} Hz"
    signals = [
        _Signal("RR", "ms", *RR_RANGE_MS, fs_rr * record_s, rr, resampled, "chest strap RR"),
        _Signal("HR", "bpm", *HR_RANGE_BPM, fs_rr * record_s, hr, resampled, "chest strap RR"),
    ]
    if ecg is not None and ecg.fs_hz is not None:
        fs_ecg = max(1, round(ecg.fs_hz))
        values = ecg_on_grid(ecg, n_s * fs_ecg, float(fs_ecg))
        # Fixed range, identity digital<->µV mapping (see ECG_RANGE_UV): whole µV, the
        # recorded value where a grid point falls on a recorded sample (else band-limited
        # interpolation), 0 µV where nothing was recorded, annotated; start-up spikes are
        # clipped and annotated.
        signals.append(
            _Signal(
                "ECG", "uV", *ECG_RANGE_UV, fs_ecg * record_s, values,
                _ecg_prefilter(ecg, fs_ecg),
                "chest strap ECG", True,
            )
        )  # fmt: skip
        # Within the file's span, so n_records (from the span) still covers them.
        annotations += _clipped_spans(values, float(fs_ecg), *ECG_RANGE_UV)
        annotations += [
            (onset, duration, ECG_NOT_RECORDED)
            for onset, duration in ecg_holes(values, float(fs_ecg))
        ]
        annotations.sort(key=lambda a: a[0])  # stable, as in _annotations

    # EDF+ takes a TAL in any data record (its onset is absolute), but a TAL cannot span
    # records: every record gets the same room, enough for the longest annotation and a
    # modest share per second, and the annotations are spread over the records rather than
    # each record padded to the most that share one second (12 long notes at one moment
    # made a 26 h file 590 MB).
    keeping = [_tal(frac + k * record_s, None, "") for k in range(n_records)]
    tals = [
        (max(0, math.floor(onset / record_s)), _tal(frac + onset, duration, text))
        for onset, duration, text in annotations
    ]
    size = max(
        _ANN_BYTES_PER_S * record_s,
        max(map(len, keeping)) + max((len(tal) for _home, tal in tals), default=0),
    )
    while (per_record := _pack(tals, n_records, size - max(map(len, keeping)))) is None:
        size += size // 2  # more annotations than the whole file has room for
    size += size % 2
    blocks = [keep + b"".join(more) for keep, more in zip(keeping, per_record, strict=True)]
    ann_samples = size // 2

    with atomic_file(target, binary=True, replace=replace) as raw:
        fh = cast(IO[bytes], raw)
        fh.write(_header(rec, signals, n_records, record_s, ann_samples))
        for k in range(n_records):
            for s in signals:
                fh.write(s.digital[k * s.per_record : (k + 1) * s.per_record].tobytes())
            fh.write(blocks[k].ljust(2 * ann_samples, b"\x00"))
            if progress is not None and k % 600 == 0:
                progress(k, n_records)
    if progress is not None:
        progress(n_records, n_records)
    return target
