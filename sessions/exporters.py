"""One entry point for every export format (what ``settle export`` calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from sessions.export import export_csv
from sessions.export_bids import export_bids
from sessions.export_edf import export_edf
from sessions.export_json import export_json
from sessions.export_kubios import RrSource, export_kubios
from sessions.files import ExportError, ProgressFn
from sessions.store import SessionStore

__all__ = ["FORMATS", "ExportFormat", "export_session"]

ExportFormat = Literal["csv", "json", "edf", "bids", "kubios"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)


def export_session(
    store: SessionStore,
    session_id: str,
    fmt: ExportFormat,
    out: Path,
    *,
    progress: ProgressFn | None = None,
    subject: str = "01",
    rr_source: RrSource = "hrs",
) -> Path:
    """Export session ``session_id`` as ``fmt`` to ``out`` and return what was written (the
    file, or for ``bids`` the directory holding the session's files). ``subject`` is the
    BIDS subject label; ``rr_source`` picks the strap's RR or the raw ECG's R peaks for
    ``kubios`` (the other formats carry both). Raises :class:`sessions.files.ExportError` or
    :class:`settle.errors.SessionNotFound`."""
    if "\x00" in str(out):
        # No OS takes such a path; the os module would raise ValueError, not a typed error.
        raise ExportError(Path(str(out).replace("\x00", "\\0")), "path contains a NUL byte")
    if fmt == "csv":
        return export_csv(store, session_id, out, progress=progress)
    if fmt == "json":
        return export_json(store, session_id, out, progress=progress)
    if fmt == "edf":
        return export_edf(store, session_id, out, progress=progress)
    if fmt == "bids":
        return export_bids(store, session_id, out, subject=subject, progress=progress)
    if fmt == "kubios":
        return export_kubios(store, session_id, out, progress=progress, rr_source=rr_source)
    raise ValueError(f"unknown export format {fmt!r}")
