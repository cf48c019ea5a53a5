"""Import a practitioner's own timestamped journal as markers of a stored session.

Three layouts are read (``fmt="auto"`` picks by extension, then by the first line):

``text``
    One entry per line, ``HH:MM[:SS[.fff]] text``; the text may start with a marker kind and
    a colon (``14:05:10 shame: it came back``; any case, a space or ``_`` for the hyphen:
    ``Hold start:``), else the kind is ``note``. Blank lines (nothing but spaces and tabs)
    and lines starting with ``#`` are skipped; a line that only looks blank because it holds
    a form feed, U+2028 or another control character is refused, in every format.
``csv``
    A header row (blank lines before it are skipped), then one entry per row. Columns:
    exactly one time column — ``t_s`` (seconds since session start), ``time`` (``HH:MM[:SS]``
    local clock time, or an ISO 8601 date-time), or ``ts_ms`` (epoch milliseconds) — plus
    ``text`` and optionally ``kind``. Separated by ``;`` or tabs (a spreadsheet in a
    comma-decimal locale), ``t_s`` and ``ts_ms`` may have a decimal comma: ``12,5``.
``jsonl``
    One JSON object per line with the same keys as the CSV columns.

Alignment to the session's time base (seconds since its start, ``t_s``):

* ``t_s`` values are taken as they are;
* epoch milliseconds and ISO date-times with a UTC offset are absolute instants;
* clock times (``HH:MM:SS``) and ISO date-times without an offset are read in the **local
  time zone of the computer running the import** (``TZ`` overrides it). A bare clock time
  is placed on the calendar day that puts it inside the session (else closest to its
  start), so sessions across midnight work; in the hour a DST change repeats, the reading
  of the two that falls inside the session is taken, and where both do, the earlier one not
  before the entry above it (a journal is in time order).
* In a time-compressed session (``--speed``, ``meta.time_scale``), a wall-clock instant is
  ``time_scale`` session seconds per second after the start.

Then ``offset_s`` is added to every entry: if the journal's clock was 30 s behind the
computer that recorded the session, pass ``offset_s=30`` (clock seconds; for a ``t_s``
column, session seconds). Identical entries within one file are each imported; an entry
identical to a marker an earlier import stored (time to the ms, kind, text) is skipped.
An entry that falls before the session start or after its end is an error (pointing at
the offset option), as is any line that cannot be read and a text with a control character
other than tab and line breaks (:func:`settle.text.control_character`, the rule of a marker
sent over MQTT or HTTP); all entries are checked before
anything is stored, and all are stored in one transaction, so a journal is never imported
half-way.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import io
import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

from sensors.readers import MAX_TIME_S
from sessions.store import MARKER_KINDS, MarkerRow, MarkerSource, SessionInfo, SessionStore
from settle.errors import InputFileError, shown
from settle.text import control_character, marker_kind_name

__all__ = ["JournalEntry", "JournalFormat", "import_journal", "parse_journal"]

JournalFormat = Literal["auto", "csv", "jsonl", "text"]

#: Largest journal accepted, bytes (a journal is typed by hand; anything larger is a mistake).
MAX_JOURNAL_BYTES = 8 * 2**20
#: Largest ``ts_ms`` accepted: the end of the year 9999 (``1e300`` was placed, and refused
#: with a 430-character number of hours after the session).
MAX_TS_MS = 253_402_300_799_999
#: Longest marker text accepted, characters (as for the MQTT marker command).
MAX_TEXT_CHARS = 2000

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?$")
_TEXT_LINE = re.compile(r"^\s*(\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,6})?)?)(?:\s+(.*))?$")
_KIND_PREFIX = re.compile(r"^([A-Za-z][A-Za-z _-]*?)\s*:\s*(.*)$", re.DOTALL)
_TIME_COLUMNS = ("t_s", "time", "ts_ms")
_AM_PM = re.compile(r"^[AaPp]\.?[Mm]\.?(?:\s|$)")


@dataclasses.dataclass(frozen=True, slots=True)
class JournalEntry:
    """One parsed journal entry before alignment.

    Exactly one of ``t_s`` (seconds since session start), ``ts_ms`` (epoch milliseconds),
    ``clock_s`` (seconds after local midnight, day unknown) or ``local`` (a naive local
    date-time) is set. ``line`` is the 1-based line of the file.
    """

    line: int
    kind: str
    text: str
    t_s: float | None = None
    ts_ms: int | None = None
    clock_s: float | None = None
    local: dt.datetime | None = None


def _fail(path: Path, line: int | None, reason: str) -> InputFileError:
    return InputFileError(str(path), reason, line)


def _parse_clock(value: str) -> float | None:
    m = _CLOCK.match(value.strip())
    if m is None:
        return None
    h, mi, se, frac = int(m[1]), int(m[2]), int(m[3] or 0), m[4] or ""
    if h > 23 or mi > 59 or se > 59:
        return None
    return h * 3600 + mi * 60 + se + (int(frac) / 10 ** len(frac) if frac else 0.0)


_kind_name = marker_kind_name
"""A kind as written by hand: ``Shame``, ``HOLD START``, ``hold_start`` → its name."""


def _no_control_character(path: Path, line: int, text: str) -> None:
    bad = control_character(text, lines=True)
    if bad is not None:
        raise _fail(
            path, line, f"control character {bad!r} in the text (tab and line breaks are allowed)"
        )


def _kind_and_text(path: Path, line: int, kind: str | None, text: str) -> tuple[str, str]:
    if kind is None:
        # Any case, and a space or underscore for the hyphen: a phone capitalises the first
        # word, and "Shame: …" was stored as a note (the CSV kind column was lowercased).
        m = _KIND_PREFIX.match(text)
        if m is not None and _kind_name(m[1]) in MARKER_KINDS:
            kind, text = _kind_name(m[1]), m[2]
        else:
            kind = "note"
    kind = _kind_name(kind) or "note"
    if kind not in MARKER_KINDS:
        raise _fail(
            path, line, f"unknown marker kind {shown(kind)} (known: {', '.join(MARKER_KINDS)})"
        )
    # The rule of a marker's text over MQTT and HTTP: a NUL or an escape sequence went
    # verbatim into the CSV export (where pandas cut the text at the NUL) and the report.
    _no_control_character(path, line, text)
    text = text.strip()
    if len(text) > MAX_TEXT_CHARS:
        raise _fail(path, line, f"text longer than {MAX_TEXT_CHARS} characters")
    return kind, text


_DECIMAL_COMMA = re.compile(r"\s*[+-]?\d+,\d+\s*")
"""A number written with a decimal comma (``12,5``), as a spreadsheet in a comma-decimal
locale saves it in a ``;`` or tab separated file."""


def _entry_from_fields(
    path: Path, line: int, fields: Mapping[str, object], *, decimal_comma: bool = False
) -> JournalEntry:
    """``decimal_comma``: a ``;`` or tab separated CSV, where ``t_s`` and ``ts_ms`` may be
    written ``12,5`` (it was "t_s is not a number: '12,5'")."""
    if decimal_comma:
        fields = {
            k: v.replace(",", ".")
            if k in ("t_s", "ts_ms") and isinstance(v, str) and _DECIMAL_COMMA.fullmatch(v)
            else v
            for k, v in fields.items()
        }
    present = [c for c in _TIME_COLUMNS if fields.get(c) not in (None, "")]
    if len(present) != 1:
        raise _fail(path, line, "needs exactly one of the fields t_s, time, ts_ms")
    raw_kind = fields.get("kind")
    raw_text = fields.get("text", "")
    if not isinstance(raw_text, str) or not (raw_kind is None or isinstance(raw_kind, str)):
        raise _fail(path, line, "'text' and 'kind' must be strings")
    if not (raw_kind or "").strip() and not raw_text.strip():
        # Imported as a `note` without a word: a marker that says nothing.
        raise _fail(path, line, "nothing to mark: the entry has neither a kind nor a text")
    kind, text = _kind_and_text(path, line, raw_kind or None, raw_text)
    col = present[0]
    value = fields[col]
    if col == "t_s":
        if isinstance(value, bool):  # JSON true is not 1 s
            raise _fail(path, line, f"t_s is not a number: {shown(value)}")
        try:
            t_s = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):  # a JSON integer beyond any float
            raise _fail(path, line, f"t_s is not a number: {shown(value)}") from None
        if not math.isfinite(t_s):
            raise _fail(path, line, f"t_s is not finite: {shown(value)}")
        if abs(t_s) > MAX_TIME_S:  # 1e308 overflowed into a traceback placing it
            raise _fail(path, line, f"t_s {shown(value)} is beyond ±{MAX_TIME_S:.0e} s")
        return JournalEntry(line, kind, text, t_s=t_s)
    if col == "ts_ms":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _fail(path, line, f"ts_ms is not epoch milliseconds: {shown(value)}")
        try:
            ts = float(value)
        except (ValueError, OverflowError):
            raise _fail(path, line, f"ts_ms is not epoch milliseconds: {shown(value)}") from None
        if not math.isfinite(ts) or not 0 <= ts <= MAX_TS_MS:
            raise _fail(path, line, f"ts_ms is not epoch milliseconds: {shown(value)}")
        return JournalEntry(line, kind, text, ts_ms=round(ts))
    if not isinstance(value, str):
        raise _fail(path, line, f"time must be text like 14:05:10, got {shown(value)}")
    clock = _parse_clock(value)
    if clock is not None:
        return JournalEntry(line, kind, text, clock_s=clock)
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise _fail(
            path, line, f"cannot read time {shown(value)} (HH:MM:SS or ISO 8601 date-time)"
        ) from None
    if when.tzinfo is not None:
        return JournalEntry(line, kind, text, ts_ms=round(when.timestamp() * 1000))
    return JournalEntry(line, kind, text, local=when)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
"""A line ends at LF, CR LF or CR only, as the CSV reader reads: ``str.splitlines`` also
splits at U+2028, U+2029, VT, FF, FS/GS/RS and NEL, so a line holding one was read as two (the
error named the next line and its second half, never the character) and a raw U+2028 inside
a JSON string was "Unterminated string". Kept in the line, the control-character rule
refuses them and names them."""


def _split_lines(text: str) -> list[str]:
    return _LINE_BREAK.split(text)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    yield from enumerate(_split_lines(text), start=1)


def _blank(path: Path, line: int, raw: str) -> bool:
    """Whether line ``line`` is blank (nothing, or spaces and tabs only), to be skipped.

    A line that only looks blank to :meth:`str.strip` — a form feed, a vertical tab, U+2028,
    U+2029, NEL or FS/GS/RS/US, alone or among spaces — is refused as any other line holding
    a control character is: it was skipped without a word, though it is no blank line to the
    person who wrote the journal and may be the one trace of a damaged file."""
    if raw.strip():
        return False
    bad = control_character(raw, lines=True)
    if bad is not None:
        raise _fail(
            path,
            line,
            f"control character {bad!r} on an otherwise blank line "
            "(a blank line holds nothing but spaces and tabs)",
        )
    return True


def _parse_text(path: Path, text: str) -> list[JournalEntry]:
    out = []
    for n, raw in _lines(text):
        if _blank(path, n, raw):
            continue
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue
        # The whole line: the pattern's \s would take a form feed or U+2028 between the time
        # and the text (or before the time) for a space.
        _no_control_character(path, n, raw)
        m = _TEXT_LINE.match(raw)
        clock = None if m is None else _parse_clock(m[1])
        if m is None or clock is None:
            hint = " (a title or comment line starts with #)" if n == 1 else ""
            raise _fail(path, n, f"expected 'HH:MM:SS text', got {shown(stripped)}{hint}")
        if m is not None and _AM_PM.match(m[2] or ""):
            # "6:07 PM shame" was read as 06:07 with the text "PM shame", or said to fall
            # 12 h before the session.
            h, rest = m[1].split(":", 1)
            pm = (m[2] or "")[0] in "Pp"
            hour = (int(h) % 12) + (12 if pm else 0)
            said = f"{m[1]} {'PM' if pm else 'AM'}"
            raise _fail(path, n, f"12-hour times are not read: write {said} as {hour:02d}:{rest}")
        kind, body = _kind_and_text(path, n, None, m[2] or "")
        out.append(JournalEntry(n, kind, body, clock_s=clock))
    return out


def _parse_jsonl(path: Path, text: str) -> list[JournalEntry]:
    out = []
    for n, raw in _lines(text):
        if _blank(path, n, raw):
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise _fail(path, n, f"not JSON: {exc.args[0] if exc.args else exc}") from None
        if not isinstance(obj, dict):
            raise _fail(path, n, "expected a JSON object")
        unknown = set(obj) - {*_TIME_COLUMNS, "kind", "text"}
        if unknown:
            raise _fail(
                path, n, f"unknown field(s) {', '.join(shown(k) for k in sorted(unknown)[:5])}"
            )
        out.append(_entry_from_fields(path, n, obj))
    return out


def _parse_csv(path: Path, text: str) -> list[JournalEntry]:
    # strict: an unclosed quote is an error, not the rest of the file read as one cell
    first = next((ln for ln in _split_lines(text) if ln.strip()), "")
    # Tab- or semicolon-separated (a .tsv file, a spreadsheet in a comma-decimal locale) as
    # well as comma-separated: the header says which.
    delimiter = max(("\t", ";", ","), key=lambda d: (first.count(d), d == ","))
    if path.suffix.lower() == ".tsv":
        delimiter = "\t"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        # The header is the first line that is not blank, as the delimiter was read from it
        # (a leading blank line was taken as the header: "… got ''").
        header = next(
            (cells for cells in reader if not _blank(path, reader.line_num, "".join(cells))),
            None,
        )
        if header is None:
            raise _fail(path, None, "file is empty")
        cols = [c.strip().lower() for c in header]
        unknown = set(cols) - {*_TIME_COLUMNS, "kind", "text"}
        if unknown or not set(cols) & set(_TIME_COLUMNS) or len(set(cols)) != len(cols):
            raise _fail(
                path,
                reader.line_num,
                "expected a header with one of t_s, time, ts_ms, and text and/or kind, "
                f"got {shown(','.join(header), 80)}",
            )
        out = []
        for cells in reader:
            n = reader.line_num
            if _blank(path, n, "".join(cells)):
                continue
            if len(cells) != len(cols):
                raise _fail(path, n, f"expected {len(cols)} columns, got {len(cells)}")
            fields = dict(zip(cols, cells, strict=True))
            out.append(_entry_from_fields(path, n, fields, decimal_comma=delimiter != ","))
    except csv.Error as exc:
        raise _fail(path, reader.line_num, f"malformed CSV: {exc}") from None
    return out


def _read_text(path: Path) -> str:
    try:
        if path.is_dir():
            raise _fail(path, None, "is a directory, not a journal")
        if path.stat().st_size > MAX_JOURNAL_BYTES:
            raise _fail(path, None, f"larger than {MAX_JOURNAL_BYTES // 2**20} MiB")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, None, "file not found") from None
    except PermissionError:
        raise _fail(path, None, "permission denied") from None
    except OSError as exc:
        raise _fail(path, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Lines counted as they are read; the decoder's offset is past a byte-order mark.
        start = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = len(re.split(rb"\r\n|\r|\n", raw[:start]))
        raise _fail(path, line, "not UTF-8 text") from None
    if "\x00" in text:
        raise _fail(path, None, "not a text file (binary content)")
    return text


def _detect(path: Path, text: str) -> Literal["csv", "jsonl", "text"]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    lines = [ln.strip() for ln in _split_lines(text) if ln.strip()]
    first = lines[0] if lines else ""
    if first.startswith("{"):
        return "jsonl"
    if _TEXT_LINE.match(first) or first.startswith("#"):
        return "text"
    if not any(d in first for d in ",;\t") and any(_TEXT_LINE.match(ln) for ln in lines[1:6]):
        return "text"  # a title line over timed lines: said to be read as a CSV header
    return "csv"


def parse_journal(path: Path, fmt: JournalFormat = "auto") -> list[JournalEntry]:
    """Read and check every entry of a journal file (not yet aligned to a session).

    Raises :class:`settle.errors.InputFileError` naming the file and the first bad line.
    """
    path = Path(path)
    text = _read_text(path)
    chosen = _detect(path, text) if fmt == "auto" else fmt
    if chosen == "text":
        entries = _parse_text(path, text)
    elif chosen == "jsonl":
        entries = _parse_jsonl(path, text)
    elif chosen == "csv":
        entries = _parse_csv(path, text)
    else:
        raise _fail(path, None, f"unknown journal format {fmt!r} (auto, csv, jsonl, text)")
    if not entries:
        raise _fail(path, None, "no entries found")
    return entries


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _epoch_ms(when: dt.datetime) -> int:
    """Epoch milliseconds of an aware date-time, in integers (nearest ms, no float seconds:
    epoch seconds as a float carry ~1e-7 s of noise into every session time)."""
    d = when - _EPOCH
    us = (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
    return (us + 500) // 1000


def _local_ms(naive: dt.datetime, tz: dt.tzinfo | None = None) -> list[int]:
    """Epoch ms of a naive local date-time: both readings in the hour a DST change repeats
    (``fold``), where they differ (the later one used to be unreachable). ``tz``: the
    recording's fixed UTC offset (:attr:`SessionInfo.recording_tz`) where it was recorded in
    another zone than this computer's; one reading."""
    if tz is not None:
        return [_epoch_ms(naive.replace(tzinfo=tz))]
    # A naive datetime's astimezone() reads it in the local zone (DST-aware).
    return sorted({_epoch_ms(naive.replace(fold=f).astimezone()) for f in (0, 1)})


def _nearest(
    candidates: list[int], info: SessionInfo, end_ms: int, after_ms: int | None = None
) -> int:
    """The candidate instant inside the session, else the nearest to its start.

    Where several fall inside (the hour a DST change repeats, in a session across it), the
    earliest not before ``after_ms`` (the previous entry's instant: a journal is written in
    time order), else the earliest: the second ``02:20`` of a notebook was put on the first,
    an hour early and before the ``02:50`` written between them.
    """
    inside = sorted(c for c in candidates if info.started_ms <= c <= end_ms)
    if len(inside) > 1 and after_ms is not None:
        return next((c for c in inside if c >= after_ms), inside[0])
    if inside:
        return inside[0]
    return min(candidates, key=lambda c: abs(c - info.started_ms))


def _align(
    entry: JournalEntry, info: SessionInfo, end_ms: int, after_ms: int | None = None
) -> tuple[float, int]:
    """``(t_s, ts_ms)`` of an entry before the offset: session seconds and epoch ms;
    ``end_ms``: the wall-clock instant the session's recorded span ends at; ``after_ms``:
    the previous entry's ``ts_ms`` (picks between two readings of a repeated local time).

    Computed in integer milliseconds, so ``t_s`` is exactly ``(ts_ms - started_ms) / 1000``
    (a clock time ``09:00:13.701`` in a session started at ``09:00:00.123`` is ``13.578``);
    in a time-compressed session (``--speed``) a wall-clock instant is ``time_scale`` times
    as many session seconds after the start (and a ``t_s`` that many times fewer ms): the
    clock times were once placed as if every session ran in real time, 10 × too early at
    ``--speed 10``.
    """
    scale = info.time_scale
    if entry.t_s is not None:
        return entry.t_s, info.started_ms + round(entry.t_s * 1000 / scale)
    if entry.ts_ms is not None:
        ms = entry.ts_ms
    elif entry.local is not None:
        ms = _nearest(_local_ms(entry.local, info.recording_tz), info, end_ms, after_ms)
    else:
        assert entry.clock_s is not None
        start_local = info.local(info.started_ms // 1000 * 1000)
        whole = math.floor(entry.clock_s)
        frac_ms = round((entry.clock_s - whole) * 1000)
        clock = dt.time(whole // 3600, whole % 3600 // 60, whole % 60)
        candidates = [
            c + frac_ms
            for day in (start_local.date() + dt.timedelta(days=k) for k in (-1, 0, 1))
            for c in _local_ms(dt.datetime.combine(day, clock), info.recording_tz)
        ]
        ms = _nearest(candidates, info, end_ms, after_ms)
    if scale == 1.0:
        return (ms - info.started_ms) / 1000, ms
    return round((ms - info.started_ms) * scale) / 1000, ms


MAX_OFFSET_S = 86400.0
"""Largest ``offset_s`` accepted: clocks a day apart mean the wrong journal or session."""


def import_journal(
    store: SessionStore,
    session_id: str,
    path: Path,
    *,
    fmt: JournalFormat = "auto",
    offset_s: float = 0.0,
    replace: bool = False,
) -> list[MarkerRow]:
    """Import the journal at ``path`` as markers (source ``import``) of session ``session_id``.

    ``offset_s`` (seconds) is added to every entry's time after alignment (see the module
    docstring). Entries identical to markers already imported (same time to the
    millisecond, kind and text) are skipped, so importing a file twice does not duplicate it.
    The same journal again at other times (a corrected ``offset_s``) is refused unless
    ``replace``, which first removes every marker an earlier import stored in the session
    (in the same transaction): it used to add a second, shifted copy of every entry.
    Returns the markers stored. Raises :class:`settle.errors.InputFileError` naming the
    line for anything it cannot read or place, and then stores nothing.
    """
    path = Path(path)
    if not (math.isfinite(offset_s) and abs(offset_s) <= MAX_OFFSET_S):
        raise _fail(
            path,
            None,
            f"offset must be within ±{MAX_OFFSET_S:.0f} s (24 h), got {offset_s!r}",
        )
    entries = parse_journal(path, fmt)
    rec = store.read_session(session_id)
    info = rec.info
    scale = info.time_scale
    # The session's own time axis: for a running or time-compressed (--speed) session it
    # reaches further than its wall-clock length. Imported markers do not extend it.
    end_s = store.recorded_span_s(session_id)
    end_ms = info.started_ms + round(end_s * 1000 / scale)
    imported = [m for m in rec.markers if m.source is MarkerSource.IMPORT]
    # What an earlier import stored already, counted: the same file twice adds nothing, but
    # two identical lines of one file (a paper log kept to the minute) are two markers.
    existing = collections.Counter(
        [] if replace else [(round(m.t_s * 1000), m.kind, m.text) for m in imported]
    )
    rows: list[MarkerRow] = []
    prev_ms: int | None = None  # the previous entry's instant, before the offset
    for e in entries:
        t_s, ts_ms = _align(e, info, end_ms, prev_ms)
        prev_ms = ts_ms
        if offset_s:
            # In the journal's own time: clock seconds for clock times and instants (that
            # many times time_scale session seconds), session seconds for a t_s column.
            on_axis = offset_s if e.t_s is not None else offset_s * scale
            ts_ms += round(on_axis * 1000 / scale)
            t_s = round((t_s + on_axis) * 1000) / 1000  # 13.578 + 0.1 is 13.678, not …7999
        if t_s < 0:
            raise _fail(
                path,
                e.line,
                f"falls {_dur(-t_s)} before the session started "
                f"(wrong session, or the clocks differ: use --offset SECONDS)",
            )
        if t_s > end_s + 1.0:
            raise _fail(
                path,
                e.line,
                f"falls {_dur(t_s - end_s)} after the session "
                f"{'ended' if info.stopped_ms is not None else 'has recorded so far'} "
                f"(wrong session, or the clocks differ: use --offset SECONDS)",
            )
        key = (round(t_s * 1000), e.kind, e.text)
        if existing[key] > 0:
            existing[key] -= 1
            continue
        rows.append(MarkerRow(t_s, ts_ms, e.kind, e.text, MarkerSource.IMPORT))
    # The same journal at other times (a corrected --offset): every entry shifted by one
    # amount. A single entry cannot tell a shift from another journal that holds the same
    # words, so it is imported as a new marker (it used to be refused, and --replace then
    # removed every earlier import, other journals' markers too).
    shift_ms = _shift(rows, imported) if rows else None
    earlier = _at_shift(rows, imported, shift_ms, same_words=True) if shift_ms is not None else []
    if rows and not replace and len(entries) > 1 and len(earlier) == len(rows):
        assert shift_ms is not None
        shift = shift_ms / 1000
        # In the unit of --offset: clock seconds for clock times and instants (a --speed 20
        # session's 20.0 s of session time were said for a 1 s --offset).
        clock = scale != 1.0 and all(e.t_s is None for e in entries)
        said = (
            f"{abs(shift / scale if clock else shift):.1f} s {'earlier' if shift > 0 else 'later'}"
        )
        if clock:
            said += f" on the journal's clock ({abs(shift):.1f} s of session time at {scale:g}×)"
        raise _fail(
            path,
            None,
            f"these entries were imported into session {session_id} already, {said}; to move "
            f"them, import again with --replace (removes those {len(earlier)} earlier markers)",
        )
    if replace:
        # Only the earlier copy of this journal goes — the imported markers at its entries'
        # times less the common shift, whatever their text (a typo corrected since) — all or
        # nothing: only if the new one lands. Markers imported from other journals stay.
        old = _at_shift(rows, imported, shift_ms, same_words=False) if shift_ms is not None else []
        with store.batch():
            store.delete_markers(session_id, MarkerSource.IMPORT, only=old)
            store.add_markers(session_id, rows)
    elif rows:
        store.add_markers(session_id, rows)
    return rows


def _shift(rows: list[MarkerRow], imported: list[MarkerRow]) -> int | None:
    """The shift (ms) between ``rows`` and an earlier import of the same journal: the most
    common difference between an entry and an imported marker with its kind and text (from
    the first 50 entries and 50 such markers each), or None when none shares both."""
    by_words: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for m in imported:
        by_words[(m.kind, m.text)].append(round(m.t_s * 1000))
    counts: collections.Counter[int] = collections.Counter()
    for r in rows[:50]:
        t = round(r.t_s * 1000)
        counts.update(t - u for u in by_words.get((r.kind, r.text), [])[:50])
    return counts.most_common(1)[0][0] if counts else None


def _at_shift(
    rows: list[MarkerRow], imported: list[MarkerRow], shift_ms: int, *, same_words: bool
) -> list[MarkerRow]:
    """The imported markers that sit ``shift_ms`` before an entry (to 1 ms), one per entry;
    ``same_words``: only one with the entry's kind and text."""
    by_time: dict[int, list[MarkerRow]] = collections.defaultdict(list)
    for m in imported:
        by_time[round(m.t_s * 1000)].append(m)
    out: list[MarkerRow] = []
    for r in rows:
        t = round(r.t_s * 1000) - shift_ms
        for k in (t, t - 1, t + 1):
            pool = by_time.get(k, [])
            hit = next((m for m in pool if not same_words or (m.kind, m.text) == (r.kind, r.text)),
                       None)  # fmt: skip
            if hit is not None:
                pool.remove(hit)
                out.append(hit)
                break
    return out


def _dur(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f} s"
    if s >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h} h {m} min {sec} s" if h else f"{m} min {sec} s"
