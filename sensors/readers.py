"""Readers for RR recordings: the files ``settle demo --replay`` and ``settle run --replay`` take.

Formats recognised, by content (not by file name):

* ``t_s,rr_ms`` CSV with that header (``t_s`` = time of the beat closing the interval);
  extra columns are ignored.
* One RR interval in milliseconds per line (Elite HRV / Kubios text export); blank lines and
  ``#`` comments are skipped.
* Polar ``.hrm`` files in RR mode (``[Params]`` … ``[HRData]`` with one RR in ms per line).

A file that is none of these, or holds a value that is not a positive number, raises
:class:`~settle.errors.InputFileError` naming the file and the line.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from settle.errors import InputFileError

MAX_FILE_BYTES = 200 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class RRRecording:
    """An RR series read from a file.

    ``rr_ms`` intervals in milliseconds, in order; ``t_s`` the time of each beat in seconds
    (from the file when it has times, else the cumulative sum of ``rr_ms``); ``fmt`` names
    the format recognised.
    """

    rr_ms: npt.NDArray[np.float64]
    t_s: npt.NDArray[np.float64]
    fmt: str
    path: str


def read_rr_file(path: Path | str) -> RRRecording:
    """Read an RR recording in any supported format (see module docstring)."""
    p = Path(path)
    name = str(p)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise InputFileError(name, "is a directory, not an RR file")
        if size > MAX_FILE_BYTES:
            raise InputFileError(name, f"file is larger than {MAX_FILE_BYTES // 2**20} MiB")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InputFileError(name, "file not found") from None
    except PermissionError:
        raise InputFileError(name, "permission denied") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("latin-1")  # old Polar software wrote .hrm in latin-1
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
            raise InputFileError(name, "not a text file") from None
    if "\x00" in text:
        raise InputFileError(name, "not a text file (binary content)")
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if not first:
        raise InputFileError(name, "file is empty")
    if first.lower() == "[params]" or any(ln.strip().lower() == "[hrdata]" for ln in lines):
        rr, fmt, t = _read_hrm(name, lines), "polar-hrm", None
    elif "," in first and "rr_ms" in [c.strip().lower() for c in first.split(",")]:
        t, rr = _read_csv(name, lines)
        fmt = "csv"
    else:
        rr, fmt, t = _read_one_per_line(name, lines), "rr-per-line", None
    if rr.size == 0:
        raise InputFileError(name, "no RR intervals found")
    if t is None:
        t = np.cumsum(rr) / 1000.0
    return RRRecording(rr_ms=rr, t_s=t, fmt=fmt, path=name)


def _number(name: str, lineno: int, cell: str, what: str) -> float:
    try:
        v = float(cell)
    except ValueError:
        raise InputFileError(name, f"{what} {cell.strip()!r} is not a number", lineno) from None
    if not math.isfinite(v):
        raise InputFileError(name, f"{what} {cell.strip()!r} is not finite", lineno)
    return v


def _rr(name: str, lineno: int, cell: str) -> float:
    v = _number(name, lineno, cell, "RR value")
    if v <= 0:
        raise InputFileError(name, f"RR value {v:g} ms is not positive", lineno)
    return v


def _read_csv(
    name: str, lines: list[str]
) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64]]:
    header = [c.strip().lower() for c in lines[0].split(",")]
    i_rr = header.index("rr_ms")
    i_t = header.index("t_s") if "t_s" in header else None
    ts: list[float] = []
    rr: list[float] = []
    for lineno, ln in enumerate(lines[1:], start=2):
        if not ln.strip() or ln.lstrip().startswith("#"):
            continue
        cells = ln.split(",")
        if len(cells) < len(header):
            raise InputFileError(
                name, f"expected {len(header)} columns, found {len(cells)}", lineno
            )
        rr.append(_rr(name, lineno, cells[i_rr]))
        if i_t is not None:
            ts.append(_number(name, lineno, cells[i_t], "time"))
    t = np.asarray(ts, dtype=np.float64) if i_t is not None else None
    if t is not None and t.size > 1 and np.any(np.diff(t) < 0):
        bad = int(np.argmax(np.diff(t) < 0)) + 3
        raise InputFileError(name, "beat times go backwards", bad)
    return t, np.asarray(rr, dtype=np.float64)


def _read_one_per_line(name: str, lines: list[str]) -> npt.NDArray[np.float64]:
    rr: list[float] = []
    for lineno, ln in enumerate(lines, start=1):
        s = ln.strip()
        if not s or s.startswith("#"):
            continue
        if lineno == 1 and not _looks_numeric(s):
            raise InputFileError(
                name,
                "not a recognised RR file (expected a 't_s,rr_ms' CSV, one RR in ms per line, "
                "or a Polar .hrm file)",
            )
        rr.append(_rr(name, lineno, s))
    return np.asarray(rr, dtype=np.float64)


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _read_hrm(name: str, lines: list[str]) -> npt.NDArray[np.float64]:
    section = ""
    rr: list[float] = []
    for lineno, ln in enumerate(lines, start=1):
        s = ln.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s.lower()
            continue
        if section == "[hrdata]" and s:
            # RR mode: one RR (ms) per line; some exporters add columns (take the first).
            rr.append(_rr(name, lineno, s.split()[0]))
    if not rr and "[hrdata]" not in [ln.strip().lower() for ln in lines]:
        raise InputFileError(name, "Polar .hrm file without an [HRData] section")
    return np.asarray(rr, dtype=np.float64)
