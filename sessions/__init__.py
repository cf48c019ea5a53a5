"""Recording of sessions: the SQLite session store, the session log, exports (CSV, JSON,
EDF+, BIDS, Kubios), journal import and reports.

``sessions`` sits beside the pipeline (``sensors → processing → feedback``) and only records
what it is handed; it imports none of those layers. Reports (``sessions.report``) need
matplotlib and are imported on demand.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sessions.export import ExportRow, export_csv, read_export_csv
    from sessions.exporters import FORMATS, export_session
    from sessions.files import ExportError
    from sessions.journal import import_journal
    from sessions.store import (
        MARKER_KINDS,
        SCHEMA_VERSION,
        BaselinePeriod,
        BeatAnnotation,
        BeatClass,
        BeatRow,
        EcgSeries,
        GapRow,
        IndicesRow,
        Intention,
        IntentionTarget,
        MarkerRow,
        MarkerSource,
        SessionInfo,
        SessionRecord,
        SessionState,
        SessionStore,
        SessionSummary,
    )

# The names below are imported on first use, so that a light submodule (``sessions.files``,
# which ``settle analyze`` uses) does not load the exporters, pydantic and the store.
_HOME = {
    "ExportRow": "export",
    "export_csv": "export",
    "read_export_csv": "export",
    "FORMATS": "exporters",
    "export_session": "exporters",
    "ExportError": "files",
    "import_journal": "journal",
}


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = importlib.import_module(f"sessions.{_HOME.get(name, 'store')}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sessions' has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "MARKER_KINDS",
    "SCHEMA_VERSION",
    "BaselinePeriod",
    "BeatAnnotation",
    "BeatClass",
    "BeatRow",
    "EcgSeries",
    "ExportError",
    "ExportRow",
    "GapRow",
    "IndicesRow",
    "Intention",
    "IntentionTarget",
    "MarkerRow",
    "MarkerSource",
    "SessionInfo",
    "SessionRecord",
    "SessionState",
    "SessionStore",
    "SessionSummary",
    "export_csv",
    "export_session",
    "import_journal",
    "read_export_csv",
]
