"""Readers for RR recordings: the files ``settle analyze``, ``settle demo --replay`` and
``settle run --replay`` take.

Formats recognised, by content (not by file name):

* ``t_s,rr_ms`` CSV with that header (``t_s`` = time of the beat closing the interval);
  extra columns are ignored. A CSV with an ``rr_ms`` column and no ``t_s`` (one column with
  just that header, say) is read as consecutive intervals. This and Settle's own files below
  may also be separated by ``;`` or tabs, with a decimal comma (a spreadsheet in German
  re-saving them): the separator is the header's, as for any table.
* Settle's own session export (``settle export --format csv``, header with ``record`` and
  ``rr_ms`` columns): only ``record = beat`` rows are read, their ``t_s`` and ``rr_ms`` — the
  RR as the strap sent it, before artefact correction, so an analysis corrects it afresh
  (``rr_corrected_ms``, ``indices``, markers, gaps and ``ecg_beat`` rows are not read);
  its ``beat_class`` marks the daemon's warm-up beats (:attr:`RRRecording.warmup`), which
  ``settle analyze`` leaves out as the daemon did, and its ``gap`` rows the beats after a
  recorded gap (:attr:`RRRecording.gap_before`), where the analysis breaks as the daemon's did
  (not at a gap of the raw ECG alone, ``raw ECG clock step``: the RR went on through it).
  An RR of 0 (a strap sent it; the daemon kept it as ``implausible``) is read here only.
* ``settle analyze --beats`` output (header ``t_s,rr_raw_ms,rr_ms,class``): its ``rr_raw_ms``,
  the intervals as they were read, so an analysis corrects them afresh, as for an export;
  beats the correction inserted (no raw interval) are not read, ``class`` ``warmup`` marks
  warm-up beats, and an RR of 0 is read as in an export.
* A table whose header names one RR column (``RR``, ``RR (ms)``, ``RR-interval [ms]`` as
  Polar Sensor Logger writes, ``IBI``, ``NN``…; any case, units in brackets), separated by
  ``,``, ``;`` or tabs: that column is read as consecutive intervals in ms, other columns
  (a phone's clock time, say) are not read; with ``;`` or tabs a decimal comma is allowed.
  A header giving the RR column in seconds (``RR (s)``, ``RR [sec]``, ``rr_s``) is refused.
* One RR interval in milliseconds per line (Elite HRV / Kubios text export).
* Polar ``.hrm`` files in RR mode (``[Params]`` … ``[HRData]`` with one RR in ms per line);
  a file whose ``Interval`` is not 238 (R-R data) holds heart rates and is refused.

Blank lines and ``#`` comment lines are skipped anywhere (also before a CSV header). Text is
UTF-8 (a byte-order mark is allowed), UTF-16/32 with a byte-order mark, or latin-1 (old Polar
software). Line numbers in errors count every line of the file, blank and comment lines too.

Every RR value must lie in [:data:`RR_MIN_MS`, :data:`RR_MAX_MS`] — one to 65 535 units of
1/1024 s, all a Bluetooth heart-rate strap can send — and, in a file without beat times and
not written by Settle, their median must be at least :data:`SECONDS_MEDIAN_MS` (RR in seconds
of a slow heart, 1.1 say, pass the first rule); every beat time ``t_s`` within
±:data:`MAX_TIME_S`, and the recording may span at most :data:`MAX_SPAN_S`. Nothing is dropped
silently: a file that is none of these formats, or holds a value outside these limits, raises
:class:`~settle.errors.InputFileError` naming the file and the line.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import itertools
import math
import re
import stat
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sensors.hrs import rr_raw_to_ms
from sensors.timing import ECG_ONLY_GAPS
from settle.errors import InputFileError, shown

__all__ = [
    "MAX_FILE_BYTES", "MAX_SPAN_S", "MAX_TIME_S", "RR_MAX_MS", "RR_MIN_MS",
    "SECONDS_MEDIAN_MS", "RRRecording", "read_rr_file",
]  # fmt: skip

MAX_FILE_BYTES = 200 * 1024 * 1024
#: Shortest RR accepted: one unit of the Heart Rate Service's RR field (1/1024 s, 0.977 ms).
RR_MIN_MS = rr_raw_to_ms(1)
#: Longest RR accepted: the largest value of that 16-bit field (65535/1024 s, ~64.0 s).
RR_MAX_MS = rr_raw_to_ms(0xFFFF)
#: Longest recording accepted (first to last beat): 7 days. The analysis resamples the whole
#: span at 4 Hz, so a longer one would exhaust memory, however few beats it holds.
MAX_SPAN_S = 7 * 86400.0
#: Largest beat time ``t_s`` accepted, either sign: 1e10 s (~317 years; epoch seconds pass).
#: Times further out leave too few float digits for the intervals (1e18 s: a 60 s window
#: ended where it began, and the analysis failed with an IndexError).
MAX_TIME_S = 1e10
#: A file whose median RR is shorter holds RR in seconds (or anything but RR in ms), and is
#: refused: 100 ms, the lowest ``processing.rr_min_ms`` takes, so no setting could analyse
#: most of its intervals. RR in seconds of a heart slower than 61 beats/min are all over
#: :data:`RR_MIN_MS` and were read as milliseconds (``RR (s)`` 1.114, 1.113…: a "recording" of
#: 0.3 s, exit code 0). Not higher: 200 ms is a real (if implausible) interval in ms, which
#: the analysis keeps and says why it is not usable.
SECONDS_MEDIAN_MS = 100.0
_IN_SECONDS = "RR must be in milliseconds, not seconds"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NOT_RECOGNISED = (
    "not a recognised RR file (expected a 't_s,rr_ms' CSV, a table with a header naming its "
    "RR column, a Settle CSV export, one RR in ms per line, or a Polar .hrm file)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class RRRecording:
    """An RR series read from a file.

    ``rr_ms`` intervals in milliseconds, in order; ``t_s`` the time of each beat in seconds
    (from the file when it has times, else the cumulative sum of ``rr_ms``); ``fmt`` names
    the format recognised (``csv``, ``settle-export``, ``settle-beats``, ``rr-column``,
    ``rr-per-line`` or ``polar-hrm``).
    """

    rr_ms: npt.NDArray[np.float64]
    t_s: npt.NDArray[np.float64]
    fmt: str
    path: str
    warmup: npt.NDArray[np.bool_] | None = None
    """Settle export and ``--beats`` file only: the beats the daemon recorded in its warm-up
    after a (re)connect and did not analyse (class ``warmup``); None for other formats."""
    gap_before: npt.NDArray[np.bool_] | None = None
    """Settle export only: the beats that follow a ``gap`` row (beats the daemon knew it had
    lost, such as a missed notification, however short); None for other formats."""
    notification_start: npt.NDArray[np.bool_] | None = None
    """Settle export only: the beats that arrived first in their Heart Rate notification (a
    strap sends up to ~1 s of beats in one: the daemon analysed them together); None for
    other formats, or an export without the arrival times."""
    rest_s: tuple[float, float] | None = None
    """Settle export only: the marked rest period the session's score was computed against
    (its ``baseline`` row: ``t_s`` to ``end_t_s``), s; None without one, or for other
    formats. ``settle analyze`` scores against it, as the daemon and the report did."""


def read_rr_file(path: Path | str) -> RRRecording:
    """Read an RR recording in any supported format (see module docstring)."""
    if isinstance(path, str) and not path:  # Path("") is ".": "is a directory" misleads
        raise InputFileError("''", "the path is empty: name an RR file")
    p = Path(path)
    name = str(p)
    text = _decode(name, _read_bytes(p, name))
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # the final line break ends the last line; it does not start a new one
    # 0-based index of the first line that is neither blank nor a comment
    head = next((i for i, ln in enumerate(lines) if ln.strip() and not _comment(ln)), None)
    if head is None:
        raise InputFileError(name, "file is empty" if not text.strip() else "no RR intervals found")
    first = lines[head].strip()
    t: npt.NDArray[np.float64] | None
    warmup: npt.NDArray[np.bool_] | None = None
    gap_before: npt.NDArray[np.bool_] | None = None
    notification_start: npt.NDArray[np.bool_] | None = None
    rest: tuple[float, float] | None = None
    sample = _first_row(lines, head)  # a header of one name has no separator: the rows say
    if first.lower() == "[params]" or (
        "[hrdata]" in text.lower() and any(ln.strip().lower() == "[hrdata]" for ln in lines)
    ):
        rr, fmt, t = _read_hrm(name, lines), "polar-hrm", None
    elif (delim := _settle_header(first, sample)) is not None:
        t, rr, fmt, warmup, gap_before, notification_start, rest = _read_csv(
            name, lines, head, delim
        )
    elif (column := _rr_column(first, sample)) is not None:
        rr, fmt, t = _read_rr_column(name, lines, head, *column), "rr-column", None
    else:
        rr, fmt, t = _read_one_per_line(name, lines, head), "rr-per-line", None
    if rr.size == 0:
        raise InputFileError(name, "no RR intervals found")
    if t is None and fmt != "settle-beats" and fmt != "settle-export":
        _check_not_seconds(name, rr)
    if t is None:
        t = np.cumsum(rr) / 1000.0
    span = float(t[-1] - t[0]) + float(rr[0]) / 1000.0
    if span > MAX_SPAN_S:
        raise InputFileError(
            name,
            f"the recording spans {span:.0f} s ({span / 86400:.1f} days); at most "
            f"{MAX_SPAN_S:.0f} s ({MAX_SPAN_S / 86400:g} days) can be analysed or replayed "
            "(split the file)",
        )
    return RRRecording(
        rr_ms=rr,
        t_s=t,
        fmt=fmt,
        path=name,
        warmup=warmup,
        gap_before=gap_before,
        notification_start=notification_start,
        rest_s=rest,
    )


def _read_bytes(p: Path, name: str) -> bytes:
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise InputFileError(name, "is a directory, not an RR file")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            raise InputFileError(name, "not a regular file")
        with p.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # also bounds a pipe, whose size stat cannot tell
    except FileNotFoundError:
        raise InputFileError(name, "file not found") from None
    except PermissionError:
        raise InputFileError(name, "permission denied") from None
    except OSError as exc:  # e.g. a name longer than the file system allows, an I/O error
        raise InputFileError(name, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InputFileError(name, f"file is larger than {MAX_FILE_BYTES // 2**20} MiB")
    return raw


def _decode(name: str, raw: bytes) -> str:
    # UTF-32 first: its little-endian mark begins with UTF-16's.
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if raw.startswith(bom):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError:
                raise InputFileError(
                    name, f"not valid {codec.upper()} text; save it as UTF-8"
                ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # old Polar software wrote .hrm in latin-1; decodes any byte
    if "\x00" in text:
        if raw.startswith(b"0       ") and len(raw) >= 256:
            raise InputFileError(
                name,
                "this is an EDF file: analyse a CSV with the beats instead (for a Settle session "
                "`settle export SESSION --format csv`)",
            )
        if _utf16_without_bom(raw):
            raise InputFileError(name, "UTF-16 text without a byte-order mark; save it as UTF-8")
        raise InputFileError(name, "not a text file (binary content)")
    return text


def _utf16_without_bom(raw: bytes) -> bool:
    """ASCII text saved as UTF-16: every second byte is NUL, the others never are."""
    n = len(raw) - len(raw) % 2
    if n < 4:
        return False
    for text_bytes, zero_bytes in ((raw[0:n:2], raw[1:n:2]), (raw[1:n:2], raw[0:n:2])):
        if zero_bytes.count(0) == len(zero_bytes) and 0 not in text_bytes:
            return True
    return False


def _header_cells(line: str, delim: str = ",") -> list[str]:
    """A CSV header's names, lower-case; quoted names too (R, pandas with full quoting)."""
    try:
        return [c.strip().lower() for c in next(csv.reader([line], delimiter=delim), [])]
    except csv.Error:
        return []


def _settle_header(line: str, sample: str) -> str | None:
    """The separator of a header with an ``rr_ms`` column (a ``t_s,rr_ms`` file, Settle's
    export or ``--beats`` file), or None. Re-saved by a spreadsheet in German they are
    ``;``-separated (tab-separated from others): read with commas only, they were taken for
    a table of one RR column, which read the export's empty cells ("RR value '' is not a
    number"), the ``--beats`` file's corrected intervals, and no file's ``t_s`` (a 63 s gap
    joined up). ``sample``: the first row (see :func:`_delimiters`)."""
    for delim in _delimiters(line, sample):
        if "rr_ms" in _header_cells(line, delim):
            return delim
    return None


def _delimiters(line: str, sample: str = "") -> list[str]:
    """The separators to try on a header ``line``: those it holds, in :data:`_DELIMITERS`
    order (``RR;`` with comma first read as the one column ``RR;``, and its rows ``859;``
    as values that are no numbers); for a header of one name, which holds none, those of
    the first row ``sample``, else a comma."""
    return (
        [d for d in _DELIMITERS if d in line]
        or [d for d in _DELIMITERS if d != "," and d in sample]
        or [","]
    )


def _first_row(lines: list[str], head: int) -> str:
    """The first line after the header ``lines[head]`` that is neither blank nor a comment
    ('' if none)."""
    return next((ln for ln in lines[head + 1 :] if ln.strip() and not _comment(ln)), "")


def _point(cell: str) -> str:
    """``cell`` with a decimal comma read as a point (``859,5``, ``1114,0``); any other cell
    as it is, so an error quotes the file."""
    if cell.count(",") == 1 and "." not in cell:
        pointed = cell.replace(",", ".")
        if _DECIMAL.fullmatch(pointed.strip()):
            return pointed
    return cell


def _comment(line: str) -> bool:
    return line.lstrip().startswith("#")


_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
"""A plain decimal number: what float() takes minus ``1_000``, ``inf``, ``nan`` and the
like, which no RR export writes (``8_00`` is a typo, not 800)."""


# Control characters other than tab, line breaks and form feeds: str.strip() drops \x1c-\x1f
# but float() refuses them (`800\x1d` ended in a traceback); a cell holding one is no number.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def _number(name: str, lineno: int, cell: str, what: str) -> float:
    s = cell.strip()
    if not _DECIMAL.fullmatch(s) or _CONTROL.search(cell):
        shown_cell = shown(cell.strip(" \t\r\n"))  # a control character shown, escaped
        raise InputFileError(name, f"{what} {shown_cell} is not a number", lineno)
    v = float(s)
    if not math.isfinite(v):
        raise InputFileError(name, f"{what} {shown(cell.strip())} is not finite", lineno)
    return v


_NOT_DECIMAL_CHAR = re.compile(r"[^0-9.eE+\- \t]")


def _bulk_numbers(cells: list[str]) -> npt.NDArray[np.float64] | None:
    """The cells as numbers when every one is a plain finite decimal, else None.

    One scan for characters outside ``0-9 . e E + - space tab`` and one conversion, instead of
    a regex per cell: with those characters alone, float() reads exactly what ``_DECIMAL``
    matches (no ``inf``, ``nan``, ``1_000``), and refuses anything else.
    """
    if _NOT_DECIMAL_CHAR.search("".join(cells)):
        return None
    try:
        out = np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        return None
    return out if np.all(np.isfinite(out)) else None


def _row_by_row(
    name: str, rr_cells: list[str], t_cells: list[str] | None, linenos: list[int], zero_ok: bool
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """RR and time cells checked one row at a time (raises at the first bad one)."""
    rr, ts = [], []
    for k, lineno in enumerate(linenos):
        # A strap may send an RR of 0; the daemon records it (as implausible), so its own
        # export holds it, and an analysis marks it implausible again.
        rr.append(_rr(name, lineno, rr_cells[k], zero_ok=zero_ok))
        if t_cells is not None:
            ts.append(_number(name, lineno, t_cells[k], "time"))
    return np.asarray(rr, dtype=np.float64), np.asarray(ts, dtype=np.float64)


def _rr(name: str, lineno: int, cell: str, zero_ok: bool = False) -> float:
    v = _number(name, lineno, cell, "RR value")
    if v == 0 and zero_ok:
        return v
    if v <= 0:
        raise InputFileError(name, f"RR value {v:g} ms is not positive", lineno)
    if v < RR_MIN_MS:
        raise InputFileError(
            name,
            f"RR value {v:g} ms is below {RR_MIN_MS:.3f} ms ({_IN_SECONDS})",
            lineno,
        )
    if v > RR_MAX_MS:
        raise InputFileError(
            name,
            f"RR value {v:g} ms is above {RR_MAX_MS:.0f} ms, the longest a heart-rate strap "
            "can send",
            lineno,
        )
    return v


def _check_not_seconds(name: str, rr: npt.NDArray[np.float64]) -> None:
    """Refuse intervals whose median is under :data:`SECONDS_MEDIAN_MS`: RR in seconds."""
    median = float(np.median(rr))
    if median < SECONDS_MEDIAN_MS:
        raise InputFileError(
            name,
            f"the median RR is {median:.4g} ms, under {SECONDS_MEDIAN_MS:g} ms "
            f"({60_000 / SECONDS_MEDIAN_MS:.0f} beats/min): {_IN_SECONDS}",
        )


def _read_csv(
    name: str, lines: list[str], head: int, delim: str
) -> tuple[
    npt.NDArray[np.float64] | None,
    npt.NDArray[np.float64],
    str,
    npt.NDArray[np.bool_] | None,
    npt.NDArray[np.bool_] | None,
    npt.NDArray[np.bool_] | None,
    tuple[float, float] | None,
]:
    """A ``t_s,rr_ms`` CSV, Settle's export (its ``record = beat`` rows) or a ``settle analyze
    --beats`` file (its raw intervals); ``lines[head]`` is the header. Returns beat times
    (None without a ``t_s`` column), RR, the format, for Settle's files which beats are the
    daemon's warm-up beats, and for an export which beats follow a ``gap`` row, which
    arrived first in their notification (by ``recv_ts_ms``) and its ``baseline`` row (the
    marked rest period, ``t_s`` to ``end_t_s``). ``delim``: the header's
    separator; with ``;`` or tabs, times and intervals may have a decimal comma."""
    header = _header_cells(lines[head], delim)
    point = _point if delim != "," else str
    i_rec = header.index("record") if "record" in header else None
    beats_file = i_rec is None and {"t_s", "rr_raw_ms", "class"} <= set(header)
    i_rr = header.index("rr_raw_ms" if beats_file else "rr_ms")
    i_t = header.index("t_s") if "t_s" in header else None
    cls_col = "class" if beats_file else "beat_class" if i_rec is not None else None
    i_cls = header.index(cls_col) if cls_col is not None and cls_col in header else None
    i_reason = header.index("reason") if i_rec is not None and "reason" in header else None
    i_recv = header.index("recv_ts_ms") if i_rec is not None and "recv_ts_ms" in header else None
    i_end = header.index("end_t_s") if i_rec is not None and "end_t_s" in header else None
    rest_row: tuple[int, str, str] | None = None
    recv: list[str] = []
    fmt = "settle-export" if i_rec is not None else "settle-beats" if beats_file else "csv"
    zero_ok = i_rec is not None or beats_file
    t_cells: list[str] = []
    rr_cells: list[str] = []
    warm: list[bool] = []
    gaps: list[bool] = []
    gap_pending = False
    linenos: list[int] = []
    # Line numbers: csv counts the lines it consumed (a quoted cell may span several); the
    # header is line head + 1, so a record that follows ``consumed`` lines starts at ``start``.
    reader = csv.reader(lines[head + 1 :], delimiter=delim)
    consumed = 0
    try:
        for cells in reader:
            prev = consumed
            start, consumed = head + 2 + consumed, reader.line_num
            if consumed - prev > 1 and i_rec is None:
                # No RR file has a cell over several lines (an export may: a marker's note
                # is quoted, line breaks and all): the lines were glued together
                # ("RR value '10002,1000' is not a number"), which hid the real fault.
                raise InputFileError(
                    name, "a quoted cell runs past the end of the line (missing closing quote?)",
                    start,
                )  # fmt: skip
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if "#" in cells[0] and _comment(cells[0]):
                continue
            if len(cells) != len(header) and not _extra_cells_blank(cells, len(header)):
                # A bad cell on an earlier line is reported first, as it comes first.
                _row_by_row(name, rr_cells, t_cells if i_t is not None else None, linenos, zero_ok)
                raise InputFileError(name, _column_count(len(header), cells, delim), start)
            if i_rec is not None and (record := cells[i_rec].strip()) != "beat":
                # A gap of the raw ECG alone (its clock stepped) is none in the RR: the daemon's
                # HRS analysis went on through it.
                gap_pending |= record == "gap" and (
                    i_reason is None or cells[i_reason].strip() not in ECG_ONLY_GAPS
                )
                if record == "baseline" and i_t is not None and i_end is not None:
                    rest_row = (start, point(cells[i_t]), point(cells[i_end]))
                continue
            if beats_file and not cells[i_rr].strip():
                continue  # a beat the correction inserted: not in the recording
            rr_cells.append(point(cells[i_rr]))
            if i_t is not None:
                t_cells.append(point(cells[i_t]))
            if i_cls is not None:
                warm.append(cells[i_cls].strip() == "warmup")
            if i_rec is not None:
                gaps.append(gap_pending)
                gap_pending = False
            if i_recv is not None:
                recv.append(cells[i_recv].strip())
            linenos.append(start)
    except csv.Error as exc:
        raise InputFileError(name, f"malformed CSV: {exc}", head + 2 + consumed) from None
    rr = _bulk_numbers(rr_cells)
    t = _bulk_numbers(t_cells) if i_t is not None else np.empty(0)
    if (
        rr is None
        or t is None
        or not np.all(((rr >= RR_MIN_MS) & (rr <= RR_MAX_MS)) | (zero_ok & (rr == 0)))
    ):
        # Not every cell is a plain in-range number: check row by row, in file order, to name
        # the first bad cell (or to read what only float() reads, such as other scripts' digits).
        rr, t = _row_by_row(name, rr_cells, t_cells if i_t is not None else None, linenos, zero_ok)
    warmup = np.asarray(warm, dtype=bool) if i_cls is not None else None
    gap_before = np.asarray(gaps, dtype=bool) if i_rec is not None else None
    starts = None
    if i_recv is not None and recv and all(recv):
        starts = np.ones(len(recv), dtype=bool)
        starts[1:] = [a != b for a, b in itertools.pairwise(recv)]
    rest = None
    if rest_row is not None:
        lineno, a, b = rest_row
        rest = (_number(name, lineno, a, "baseline start t_s"),
                _number(name, lineno, b, "baseline end_t_s"))  # fmt: skip
        if rest[1] < rest[0]:
            raise InputFileError(
                name, f"the baseline row ends ({rest[1]:g} s) before it starts ({rest[0]:g} s)",
                lineno,
            )  # fmt: skip
    if i_t is None:
        return None, rr, fmt, warmup, gap_before, starts, rest
    far = np.flatnonzero(np.abs(t) > MAX_TIME_S)
    if far.size:
        raise InputFileError(
            name,
            f"beat time t_s {shown(t_cells[int(far[0])].strip())} is beyond ±{MAX_TIME_S:.0e} s "
            "(t_s must be each beat's time in seconds)",
            linenos[int(far[0])],
        )
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        raise InputFileError(
            name,
            "beat times go backwards (two recordings in one file? analyse each on its own)",
            linenos[int(back[0]) + 1],
        )
    _check_times_match(name, t, rr, linenos)
    return t, rr, fmt, warmup, gap_before, starts, rest


def _check_times_match(
    name: str, t: npt.NDArray[np.float64], rr: npt.NDArray[np.float64], linenos: list[int]
) -> None:
    """Beat times must be beat times in seconds: no two beats at one time, and the steps
    between them must agree with the intervals on most beats (a gap makes a step longer than
    its interval, but only now and then). Catches ``t_s`` in milliseconds, times of the
    notification rather than the beat, and columns that belong to different recordings."""
    if t.size < 2:
        return
    step = np.diff(t) * 1000.0
    r = rr[1:]
    beat = r > 0  # an export's 0 ms interval (kept as implausible) closes at its beat's time
    same = np.flatnonzero((step == 0) & beat)
    if same.size:
        raise InputFileError(
            name,
            "two beats at the same time (t_s repeats the line before; if these are the times "
            "the intervals arrived, several to a notification, drop the t_s column: the "
            "intervals are then read as consecutive)",
            linenos[same[0] + 1],
        )
    # Longer than its interval: a gap, or t_s in the wrong unit — only telling with a few
    # steps (two beats around one gap were refused as "times do not match"). Shorter: never.
    longer = (step > 2.0 * r) if step.size >= 3 else np.zeros(step.shape, dtype=bool)
    off = beat & (longer | (step < 0.7 * r))
    if 2 * int(off.sum()) > int(beat.sum()):
        raise InputFileError(
            name,
            "beat times do not match the RR intervals: t_s steps by "
            f"{np.median(step[beat]) / 1000:.4g} s where RR is {np.median(r[beat]):.4g} ms "
            "(t_s must be each beat's time in seconds; the first such step is here)",
            linenos[int(np.flatnonzero(off)[0]) + 1],
        )


_RR_NAMES = frozenset(
    {"rr", "rrms", "rri", "rrinterval", "rrintervals", "rrintervalms", "ibi", "ibims", "nn",
     "nni", "nninterval", "rrnn", "rrintervall", "rrintervalle", "rrintervalo", "rrintervalos",
     "intervalorr", "intervallerr"}
)  # fmt: skip
"""Header names of an RR column, lower-case, units in brackets and non-alphanumerics
removed: ``RR``, ``RR (ms)``, ``RR-interval [ms]`` (Polar Sensor Logger), ``IBI``, ``NN``, and
the German, Spanish and French spellings of spreadsheets saved in those languages
(``RR-Intervall (ms)``, ``intervalo RR``, ``intervalle RR``; only these word orders)."""
_UNIT = re.compile(r"[\[(][^\])]*[\])]")
_DELIMITERS = (",", ";", "\t")


def _extra_cells_blank(cells: list[str], n: int) -> bool:
    """More cells than the header's ``n`` columns, but only empty ones (a trailing
    separator, as some exporters write on every row)."""
    return len(cells) > n and not any(c.strip() for c in cells[n:])


def _column_count(n: int, cells: list[str], delim: str) -> str:
    """The error for a row of ``cells`` under a header of ``n`` columns. A row with one cell
    too many was read silently, its extra cell dropped: under a header ``rr``, ``812,5``
    (a decimal comma) was read as 812 ms."""
    msg = f"expected {n} column{'' if n == 1 else 's'}, found {len(cells)}"
    if delim == "," and len(cells) > n and cells[-1].strip().isdigit():
        msg += " (a decimal comma? it needs ';' or tab separators)"
    return msg


def _rr_column(line: str, sample: str = "") -> tuple[str, int, int] | None:
    """(delimiter, index of the RR column, number of columns) when ``line`` is a header with
    exactly one column named like an RR column (:data:`_RR_NAMES`), else None; ``sample``
    the first row (see :func:`_delimiters`)."""
    found = _rr_columns(line, sample)
    if found is None:
        return None
    delim, hits, n = found
    return (delim, hits[0], n) if len(hits) == 1 else None


def _rr_columns(line: str, sample: str = "") -> tuple[str, list[int], int] | None:
    """(delimiter, indexes of the RR-named columns, number of columns) of a header naming at
    least one RR column, else None. Empty names at the end (``RR;``: a separator closing
    every line) are no columns."""
    for delim in _delimiters(line, sample):
        try:
            cells = next(csv.reader([line], delimiter=delim), [])
        except csv.Error:
            continue
        while len(cells) > 1 and not cells[-1].strip():
            cells.pop()
        hits = [i for i, c in enumerate(cells) if _rr_name(c)[0] in _RR_NAMES]
        if hits and not any(_looks_numeric(c) for c in cells):
            return delim, hits, len(cells)
    return None


_SECONDS_UNITS = frozenset({"s", "sec", "secs", "second", "seconds"})
_SECONDS_SUFFIX = re.compile(r"(.*?[0-9a-z])[\s_-]+(?:s|secs?|seconds?)")


def _rr_name(cell: str) -> tuple[str, bool]:
    """A header name spelt as :data:`_RR_NAMES` spells them (lower-case, units in brackets
    and anything but letters and digits removed), and whether it gives seconds as the unit:
    in brackets (``RR (s)``, ``RR [sec]``) or after the name (``rr_s``, ``IBI sec``)."""
    low = cell.strip().lower()
    seconds = any(u[1:-1].strip() in _SECONDS_UNITS for u in _UNIT.findall(low))
    bare = _UNIT.sub("", low).strip()
    if (m := _SECONDS_SUFFIX.fullmatch(bare)) and _spelt(m.group(1)) in _RR_NAMES:
        bare, seconds = m.group(1), True
    return _spelt(bare), seconds


def _spelt(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name)


def _read_rr_column(
    name: str, lines: list[str], head: int, delim: str, i_rr: int, n_cols: int
) -> npt.NDArray[np.float64]:
    """The RR column of a header-led table (any other column, a phone's clock time say, is
    not read: the intervals are taken as consecutive). With ``;`` or tab separators a
    decimal comma is read as a point (``859,5``). A header giving the column in seconds is
    refused: RR of a heart slower than 61 beats/min in seconds (1.114) are all valid
    milliseconds, and were read as such."""
    column = next(csv.reader([lines[head]], delimiter=delim))[i_rr].strip()
    if _rr_name(column)[1]:
        raise InputFileError(
            name,
            f"the header gives the RR column {shown(column)} in seconds: {_IN_SECONDS} "
            "(multiply the column by 1000)",
            head + 1,
        )
    rr: list[float] = []
    # Line numbers as in _read_csv: csv counts the lines it consumed; every error of it
    # was reported at the first row (line 2), whichever line it was on. Comment lines are
    # blanked, not parsed: a quote in one (`# a;"b`) took the lines after it into a cell.
    rows = ("" if _comment(ln) else ln for ln in lines[head + 1 :])
    reader = csv.reader(rows, delimiter=delim)
    consumed = 0
    try:
        for cells in reader:
            prev = consumed
            lineno, consumed = head + 2 + consumed, reader.line_num
            if consumed - prev > 1:
                # An unclosed quote took the lines after it into one cell: a quote before
                # 800 and the ten lines of 800 after it were read as RR 8.00801e+32 ms.
                raise InputFileError(
                    name, "a quoted cell runs past the end of the line (missing closing quote?)",
                    lineno,
                )  # fmt: skip
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if len(cells) != n_cols and not _extra_cells_blank(cells, n_cols):
                raise InputFileError(name, _column_count(n_cols, cells, delim), lineno)
            cell = cells[i_rr]
            rr.append(_rr(name, lineno, _point(cell) if delim != "," else cell))
    except csv.Error as exc:
        raise InputFileError(name, f"malformed CSV: {exc}", head + 2 + consumed) from None
    return np.asarray(rr, dtype=np.float64)


def _read_one_per_line(name: str, lines: list[str], head: int) -> npt.NDArray[np.float64]:
    first = lines[head].strip()
    if not _looks_numeric(first):
        if (several := _rr_columns(first)) is not None:  # one is read, not several
            delim, hits, _n = several
            cells = next(csv.reader([first], delimiter=delim))
            named = ", ".join(shown(cells[i].strip()) for i in hits[:5])
            named += ", …" if len(hits) > 5 else ""
            raise InputFileError(
                name,
                f"the header names {len(hits)} RR columns ({named}): keep one, or rename the "
                "others",
                head + 1,
            )
        if first.startswith(("{", "[")):
            raise InputFileError(
                name,
                "this is JSON (a Settle JSON export?): analyse a CSV with the beats instead "
                "(`settle export SESSION --format csv`, or a 't_s,rr_ms' file)",
                head + 1,
            )
        if re.fullmatch(r"[+-]?\d+,\d+", first):
            raise InputFileError(
                name,
                f"{shown(first)} is not one RR in ms: a decimal comma needs ';' or tab separators "
                "and a header naming the RR column; two values need a header naming it "
                "(e.g. 't_s,rr_ms')",
                head + 1,
            )
        raise InputFileError(
            name,
            f"{_NOT_RECOGNISED}: {shown(first)} is neither an RR value in ms nor a header naming "
            "an RR column",
            head + 1,
        )
    rr: list[float] = []
    for lineno, ln in enumerate(lines[head:], start=head + 1):
        if not ln.strip() or _comment(ln):
            continue
        rr.append(_rr(name, lineno, ln))
    return np.asarray(rr, dtype=np.float64)


def _looks_numeric(s: str) -> bool:
    return _DECIMAL.fullmatch(s.strip()) is not None


_HRM_CELLS = re.compile(r"[ \t]+")
"""What separates an [HRData] line's columns: tabs (Polar) or spaces (other exporters). Not
``str.split()``'s whitespace, which takes control characters (``\x0b``, ``\x1c``-``\x1f``)
too: ``81\x1d0`` was read as 81 ms, and ``810\x1f`` as 810, where every other reader
refuses the line."""


def _read_hrm(name: str, lines: list[str]) -> npt.NDArray[np.float64]:
    section = ""
    rr: list[float] = []
    for lineno, ln in enumerate(lines, start=1):
        s = ln.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s.lower()
            continue
        if section == "[params]" and s.lower().startswith("interval="):
            # Polar's HRM format: Interval=238 means R-R data; any other value is the
            # recording interval in seconds, and [HRData] then holds heart rates (bpm).
            raw = ln.split("=", 1)[1]
            if _CONTROL.search(raw) is not None:  # as in any cell: "238\x1f" was taken
                cell = raw.strip(" \t")
                raise InputFileError(name, f"Interval {shown(cell)} is not a number", lineno)
            value = raw.strip()
            if value != "238":
                value = value if len(value) <= 40 else value[:39] + "…"
                raise InputFileError(
                    name,
                    f"Polar .hrm file in heart-rate mode (Interval={value}): it holds heart "
                    "rates, not RR intervals (record in R-R mode)",
                    lineno,
                )
        if section == "[hrdata]" and s:
            # RR mode: one RR (ms) per line; some exporters add columns (take the first).
            cells = _HRM_CELLS.split(ln.strip(" \t"))
            rr.append(_rr(name, lineno, cells[0]))  # refuses a control character in it
            bad = next((c for c in cells[1:] if _CONTROL.search(c)), None)
            if bad is not None:
                raise InputFileError(
                    name, f"column {shown(bad)} after the RR value holds a control character",
                    lineno,
                )  # fmt: skip
    if not rr and "[hrdata]" not in [ln.strip().lower() for ln in lines]:
        raise InputFileError(name, "Polar .hrm file without an [HRData] section")
    return np.asarray(rr, dtype=np.float64)
