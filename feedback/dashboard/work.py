"""The dashboard's heavy work — session reports, export files and the analysis behind the
History list — in a worker process.

Run in a thread of the daemon, a report (matplotlib) or a JSON export of a long session held
the interpreter for up to ~0.8 s at a time: every live beat waited, and at ``--speed 20`` the
beat timer took the wait for lost beats and stored gaps in the running sessions. The worker
opens the store read-only by its path and returns plain values (errors as text: exception
classes with their own constructors do not always survive pickling).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Literal

__all__ = ["WorkResult", "export_files", "render_report", "summarise_sessions"]

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
            # The PNG goes with the temporary directory: the page must not say it was saved.
            _png, page = write_report(store, session_id, Path(tmp) / "report", png_kept=False)
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


def summarise_sessions(db_path: str, durations_json: str) -> WorkResult:
    """History rows of the finished sessions ``durations_json`` names, as JSON ``{id:
    row}``: each session analysed as ``settle report`` does (catching up, score change).
    Four 5-hour sessions take ~4 s: in the daemon that held every live beat.

    ``durations_json`` is ``{id: duration_s}``, the session seconds of the daemon's listing
    (as `settle sessions list`; a --speed replay records more of them than wall-clock
    seconds): listing the whole store again for each small batch cost ~50 ms per 300
    sessions. A session deleted meanwhile has no row; one whose analysis fails has the
    listing's fields and ``analysis_error`` (one line) instead of the analysis."""
    from sessions.report import analyse_session, outcome
    from sessions.store import SessionStore
    from settle.errors import SessionNotFound, SettleError

    durations: dict[str, float] = json.loads(durations_json)
    rows: dict[str, dict[str, object]] = {}
    try:
        with SessionStore.open_for_reading(Path(db_path)) as store:
            for sid, duration_s in durations.items():
                try:
                    rec = store.read_session(sid)
                except SessionNotFound:
                    continue
                info = rec.info
                try:
                    a = analyse_session(rec)
                    o = outcome(a)
                except Exception as exc:  # one session, not the whole list
                    # A session the analysis cannot take (a bug, odd data) is listed with why;
                    # it held every older session "being analysed" for good.
                    rows[sid] = {
                        "id": sid,
                        "device_id": info.device_id,
                        "started_ms": info.started_ms,
                        "stopped_ms": info.stopped_ms,
                        "state": info.state.value,
                        "n_beats": len(rec.beats),
                        "duration_s": duration_s,
                        "analysis_error": str(exc) or type(exc).__name__,
                    }
                    continue
                rows[sid] = {
                    "id": sid,
                    "device_id": info.device_id,
                    "started_ms": info.started_ms,
                    "stopped_ms": info.stopped_ms,
                    "state": info.state.value,
                    "n_beats": len(rec.beats),
                    "duration_s": duration_s,
                    "target": o.target,
                    "statement": info.intention.statement if info.intention else "",
                    "latency_s": o.latency_s,
                    # What the latency counts from ("you began holding", "the baseline
                    # ended"; "" without one) and the session time it caught up at, s.
                    "reference": a.reference_kind,
                    "reference_t_s": a.reference_t_s,
                    "caught_up_t_s": a.caught_up_t_s,
                    "catching_up": o.verdict.value,
                    "score_change": o.score_change,
                    "n_markers": len(rec.markers),
                }
    except SettleError as exc:
        return "error", str(exc)
    return "ok", json.dumps(rows)
