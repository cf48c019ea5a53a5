"""Export one session as one CSV file on one time base.

The file is plain RFC 4180 CSV (UTF-8, ``\\r\\n`` line ends, one header row, no comment lines)
readable by :mod:`csv`, pandas or a spreadsheet. Every row is one record; the ``record``
column says which kind, and columns that do not apply to a kind are empty.

=============  =========================================================================
column         meaning
=============  =========================================================================
session_id     the session's id (on every row, so exports can be concatenated)
started_ms     epoch milliseconds (UTC) of the session start, i.e. of ``t_s = 0``
record         ``beat``, ``indices``, ``marker``, ``gap``, ``baseline`` or ``ecg_beat`` (an
               R peak of the raw ECG, Polar H10 only)
t_s            seconds since session start: ``beat_t_s`` for beats, publication time for
               indices, entry time for markers, start of a gap
seq            beat / ecg_beat: sequence number within the session, from 0 (each
               kind has its own sequence)
rr_raw         beat: RR interval in the strap's wire unit 1/1024 s (empty if the source
               had none, e.g. a replayed millisecond file)
rr_ms          beat / ecg_beat: RR interval in milliseconds (ecg_beat: empty for the
               first peak after the ECG stream (re)started)
hr_bpm         beat: heart rate sent by the strap; indices: mean heart rate (beats/min)
contact        beat: skin contact 1/0, empty when the strap cannot tell
recv_ts_ms     beat: epoch milliseconds the notification carrying the beat arrived
ts_ms          indices/marker: epoch milliseconds of publication / entry
rmssd_ms       indices: RMSSD in milliseconds
ln_rmssd       indices: natural log of RMSSD in ms
sdnn_ms        indices: SDNN in milliseconds
pnn50_pct      indices: pNN50 in percent
settling       indices: settling score (dimensionless)
kind           marker: category
text           marker: free text
source         marker: where it was entered (cli, mqtt, dashboard, import)
rr_corrected_  beat / ecg_beat: artefact-corrected RR in milliseconds (empty until
ms             artefact correction has run, or when this source did not drive the
               indices — see ``processing.rr_source``)
beat_class     beat / ecg_beat: normal, ectopic, long, short, missed, extra,
               implausible or warmup (empty until classified, or not analysed)
timing_uncer-  beat: 1 if the beat time could not be pinned down exactly (e.g. after lost
tain           notifications), 0 if it could, empty if unknown
end_t_s        gap / baseline: end of the gap or of the baseline period, seconds since
               session start
reason         gap: why there are no beats (disconnected, no-contact …); indices: why the
               rhythm was not usable (empty when it was)
usable         indices: 1 if the rhythm was usable (a score could be computed), else 0
quality        indices: signal quality 0–1 (share of uncorrected beats, coverage, contact)
device_id      the strap that recorded the session, as ``settle sessions list`` shows it
               (on every row, like ``session_id``: whose recording this is)
=============  =========================================================================

Records: ``beat``, ``ecg_beat``, ``indices``, ``marker``, ``gap`` and ``baseline`` (the
marked rest period the score was computed against, ``t_s`` to ``end_t_s``; absent when the
session used the automatic baseline; one never closed ends at the session's end, as in every
export: :func:`sessions.series.baseline_span`). Columns ``rr_corrected_ms`` … ``reason``
were added with schema v2, ``usable`` and ``quality`` later, ``device_id`` after them; columns
are only ever appended (:func:`read_export_csv` also reads a file written before ``device_id``).
Rows are sorted by ``t_s``; at equal ``t_s`` beats come before ECG beats before indices before
markers before gaps, and
each kind keeps its stored order (beats by ``seq``). Floats are written with :func:`repr`,
the shortest text that parses back to the same double, so ``rr_ms`` and ``t_s`` round-trip
exactly. The file is written to a temporary file in the target directory and renamed into
place, so a reader never sees half an export; it is created with mode 0600 (health data).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from sessions.files import ExportError, ProgressFn, atomic_file, target_file
from sessions.series import baseline_span
from sessions.store import SessionRecord, SessionStore

__all__ = ["COLUMNS", "ExportError", "ExportRow", "export_csv", "read_export_csv"]

COLUMNS: tuple[str, ...] = (
    "session_id",
    "started_ms",
    "record",
    "t_s",
    "seq",
    "rr_raw",
    "rr_ms",
    "hr_bpm",
    "contact",
    "recv_ts_ms",
    "ts_ms",
    "rmssd_ms",
    "ln_rmssd",
    "sdnn_ms",
    "pnn50_pct",
    "settling",
    "kind",
    "text",
    "source",
    "rr_corrected_ms",
    "beat_class",
    "timing_uncertain",
    "end_t_s",
    "reason",
    "usable",
    "quality",
    "device_id",
)

# Tie-break at equal t_s: a beat is the cause, indices are computed from it, markers annotate.
_RECORD_ORDER = {"beat": 0, "ecg_beat": 1, "indices": 2, "marker": 3, "gap": 4, "baseline": 5}


@dataclasses.dataclass(frozen=True, slots=True)
class ExportRow:
    """One parsed row of an export; fields mirror :data:`COLUMNS` (None where empty)."""

    session_id: str
    started_ms: int
    record: str
    t_s: float
    seq: int | None = None
    rr_raw: int | None = None
    rr_ms: float | None = None
    hr_bpm: float | None = None
    contact: bool | None = None
    recv_ts_ms: int | None = None
    ts_ms: int | None = None
    rmssd_ms: float | None = None
    ln_rmssd: float | None = None
    sdnn_ms: float | None = None
    pnn50_pct: float | None = None
    settling: float | None = None
    kind: str | None = None
    text: str | None = None
    source: str | None = None
    rr_corrected_ms: float | None = None
    beat_class: str | None = None
    timing_uncertain: bool | None = None
    end_t_s: float | None = None
    reason: str | None = None
    usable: bool | None = None
    quality: float | None = None
    device_id: str | None = None


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        # Explicit repr: the shortest round-tripping form, whatever csv's defaults become.
        return repr(value)
    return str(value)


def _rows(rec: SessionRecord, end_s: float) -> Iterator[list[str]]:
    sid, started, device = rec.info.id, rec.info.started_ms, rec.info.device_id
    keyed: list[tuple[float, int, dict[str, object]]] = []
    for b in rec.beats:
        keyed.append(
            (
                b.beat_t_s,
                _RECORD_ORDER["beat"],
                {
                    "record": "beat",
                    "t_s": b.beat_t_s,
                    "seq": b.seq,
                    "rr_raw": b.rr_raw,
                    "rr_ms": b.rr_ms,
                    "hr_bpm": b.hr_bpm,
                    "contact": b.contact,
                    "recv_ts_ms": b.recv_ts_ms,
                    "rr_corrected_ms": b.rr_corrected_ms,
                    "beat_class": None if b.beat_class is None else b.beat_class.value,
                    "timing_uncertain": b.timing_uncertain,
                },
            )
        )
    for e in rec.ecg_beats:
        keyed.append(
            (
                e.beat_t_s,
                _RECORD_ORDER["ecg_beat"],
                {
                    "record": "ecg_beat",
                    "t_s": e.beat_t_s,
                    "seq": e.seq,
                    "rr_ms": e.rr_ms,
                    "rr_corrected_ms": e.rr_corrected_ms,
                    "beat_class": None if e.beat_class is None else e.beat_class.value,
                },
            )
        )
    for r in rec.indices:
        payload = json.loads(r.payload_json)
        usable = payload.get("usable")
        quality = payload.get("quality")
        keyed.append(
            (
                r.t_s,
                _RECORD_ORDER["indices"],
                {
                    "record": "indices",
                    "t_s": r.t_s,
                    "ts_ms": r.ts_ms,
                    "hr_bpm": r.hr_bpm,
                    "rmssd_ms": r.rmssd_ms,
                    "ln_rmssd": r.ln_rmssd,
                    "sdnn_ms": r.sdnn_ms,
                    "pnn50_pct": r.pnn50_pct,
                    "settling": r.settling,
                    "usable": usable if isinstance(usable, bool) else None,
                    "quality": float(quality) if isinstance(quality, int | float) else None,
                    "reason": payload.get("reason") if usable is False else None,
                },
            )
        )
    for m in rec.markers:
        keyed.append(
            (
                m.t_s,
                _RECORD_ORDER["marker"],
                {
                    "record": "marker",
                    "t_s": m.t_s,
                    "ts_ms": m.ts_ms,
                    "kind": m.kind,
                    "text": m.text,
                    "source": m.source.value,
                },
            )
        )
    for g in rec.gaps:
        keyed.append(
            (
                g.start_t_s,
                _RECORD_ORDER["gap"],
                {"record": "gap", "t_s": g.start_t_s, "end_t_s": g.end_t_s, "reason": g.reason},
            )
        )
    period = baseline_span(rec.info.baseline, end_s)  # an open one: to the session's end
    if period is not None:
        keyed.append(
            (
                period[0],
                _RECORD_ORDER["baseline"],
                {"record": "baseline", "t_s": period[0], "end_t_s": period[1]},
            )
        )
    # sort() is stable, so each kind keeps the order the store returned it in.
    keyed.sort(key=lambda k: (k[0], k[1]))
    for _t, _rank, fields in keyed:
        fields["session_id"] = sid
        fields["started_ms"] = started
        fields["device_id"] = device
        yield [_cell(fields.get(col)) for col in COLUMNS]


def export_csv(
    store: SessionStore,
    session_id: str,
    out: Path,
    *,
    progress: ProgressFn | None = None,
    replace: bool = True,
) -> Path:
    """Write session ``session_id`` to ``out`` as CSV and return the path written.

    If ``out`` is an existing directory the file is ``<out>/settle-<session_id>.csv``;
    otherwise ``out`` is the file, whose name must end in ``.csv`` (as the other formats
    check theirs: CSV went into ``x.json``). An existing file is replaced (a link by a
    file, never written through) unless ``replace`` is false, when a file that exists by
    the time the export is complete is left alone (:class:`ExportError`); the other
    one-file exporters take ``replace`` likewise. :func:`sessions.exporters.export_session`, what
    ``settle export`` calls, first refuses an existing file without ``force`` and the
    session store always, and passes ``replace=force``.
    Raises
    :class:`settle.errors.SessionNotFound` for an unknown id and :class:`ExportError` when
    the file cannot be written. Columns are documented in this module's docstring.
    ``progress(done, total)`` is called every 10 000 rows and at the end.
    """
    out = Path(out)
    target = target_file(out, f"settle-{session_id}.csv", (".csv",))
    # Read first: an unknown session must not leave a file behind.
    rec = store.read_session(session_id)
    end_s = store.recorded_span_s(session_id, to_now=False)  # where an open baseline ends
    total = len(rec.beats) + len(rec.indices) + len(rec.markers) + len(rec.gaps)
    with atomic_file(target, replace=replace) as fh:
        writer = csv.writer(cast(IO[str], fh))
        writer.writerow(COLUMNS)
        for n, row in enumerate(_rows(rec, end_s), start=1):
            writer.writerow(row)
            if progress is not None and n % 10_000 == 0:
                progress(n, total)
    if progress is not None:
        progress(total, total)
    return target


def read_export_csv(path: Path) -> list[ExportRow]:
    """Parse a file written by :func:`export_csv` back into typed rows, in file order.

    Raises :class:`ExportError` if the file cannot be read or its header is not
    :data:`COLUMNS` (or, from a version before ``device_id``, all of them but that one).
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or tuple(header) not in (COLUMNS, COLUMNS[:-1]):
                raise ExportError(path, "not a Settle session export (unexpected header)")
            columns = tuple(header)
            rows = list(reader)
    except OSError as exc:
        raise ExportError(path, f"cannot read export: {exc.strerror or exc}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ExportError(path, f"malformed export: {exc}") from exc
    out = []
    for n, cells in enumerate(rows, start=1):
        if len(cells) != len(columns):
            raise ExportError(path, f"data row {n}: expected {len(columns)} columns")
        c = dict(zip(columns, cells, strict=True))
        try:
            out.append(
                ExportRow(
                    session_id=c["session_id"],
                    started_ms=int(c["started_ms"]),
                    record=c["record"],
                    t_s=float(c["t_s"]),
                    seq=_int(c["seq"]),
                    rr_raw=_int(c["rr_raw"]),
                    rr_ms=_float(c["rr_ms"]),
                    hr_bpm=_float(c["hr_bpm"]),
                    contact=None if c["contact"] == "" else c["contact"] == "1",
                    recv_ts_ms=_int(c["recv_ts_ms"]),
                    ts_ms=_int(c["ts_ms"]),
                    rmssd_ms=_float(c["rmssd_ms"]),
                    ln_rmssd=_float(c["ln_rmssd"]),
                    sdnn_ms=_float(c["sdnn_ms"]),
                    pnn50_pct=_float(c["pnn50_pct"]),
                    settling=_float(c["settling"]),
                    kind=c["kind"] if c["record"] == "marker" else None,
                    text=c["text"] if c["record"] == "marker" else None,
                    source=c["source"] or None,
                    rr_corrected_ms=_float(c["rr_corrected_ms"]),
                    beat_class=c["beat_class"] or None,
                    timing_uncertain=None
                    if c["timing_uncertain"] == ""
                    else c["timing_uncertain"] == "1",
                    end_t_s=_float(c["end_t_s"]),
                    reason=(c["reason"] or None) if c["record"] in ("gap", "indices") else None,
                    usable=None if c["usable"] == "" else c["usable"] == "1",
                    quality=_float(c["quality"]),
                    device_id=c.get("device_id") or None,
                )
            )
        except ValueError as exc:
            raise ExportError(path, f"data row {n}: {exc}") from exc
    return out


def _int(text: str) -> int | None:
    return int(text) if text else None


def _float(text: str) -> float | None:
    return float(text) if text else None
