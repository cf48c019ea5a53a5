"""The dashboard's heavy work — session reports and export files — in a worker process.

Run in a thread of the daemon, a report (matplotlib) or a JSON export of a long session held
the interpreter for up to ~0.8 s at a time: every live beat waited, and at ``--speed 20`` the
beat timer took the wait for lost beats and stored gaps in the running sessions. The worker
opens the store read-only by its path and returns plain values (errors as text: exception
classes with their own constructors do not always survive pickling).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

__all__ = ["WorkResult", "export_files", "render_report"]

WorkResult = tuple[Literal["ok", "error"], str]
"""``("ok", value)`` or ``("error", one-line message)``."""


def render_report(db_path: str, session_id: str) -> WorkResult:
    """The HTML of ``settle report`` for one session (its PNG inlined, as the CLI writes it)."""
    from sessions.files import ExportError
    from sessions.report import write_report
    from sessions.store import SessionStore
    from settle.errors import SettleError

    try:
        with (
            SessionStore.open_for_reading(Path(db_path)) as store,
            tempfile.TemporaryDirectory(prefix="settle-report-") as tmp,
        ):
            _png, page = write_report(store, session_id, Path(tmp) / "report")
            return "ok", page.read_text()
    except (SettleError, ExportError) as exc:
        return "error", str(exc)


def export_files(db_path: str, session_id: str, fmt: str, subject: str, tmp: str) -> WorkResult:
    """Export one session into the directory ``tmp``; the path of the one file to send (a zip
    of everything the CLI writes when that is several files: BIDS, Kubios)."""
    from sessions.exporters import export_session
    from sessions.files import ExportError
    from sessions.store import SessionStore
    from settle.errors import SettleError

    out = Path(tmp) / "out"
    try:
        out.mkdir()
        with SessionStore.open_for_reading(Path(db_path)) as store:
            written = export_session(store, session_id, fmt, out, subject=subject)  # type: ignore[arg-type]
        if written.is_dir() or sum(1 for _ in out.iterdir()) > 1:
            # Several files, sent as one zip of everything the CLI writes: BIDS is the whole
            # dataset (dataset_description.json, README, sub-…/ses-…/beh/), not only the
            # session's beh/ folder; Kubios is the RR file with its markers.
            zipped = shutil.make_archive(str(Path(tmp) / f"settle-{session_id}-{fmt}"), "zip", out)
            return "ok", zipped
        return "ok", str(written)
    except (SettleError, ExportError) as exc:
        return "error", str(exc)
