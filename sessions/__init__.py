"""Recording of sessions: the SQLite session store and its CSV export.

``sessions`` sits beside the pipeline (``sensors → processing → feedback``) and only records
what it is handed; it imports none of those layers.
"""

from sessions.export import ExportError, ExportRow, export_csv, read_export_csv
from sessions.store import (
    SCHEMA_VERSION,
    BeatRow,
    IndicesRow,
    MarkerRow,
    MarkerSource,
    SessionInfo,
    SessionRecord,
    SessionState,
    SessionStore,
    SessionSummary,
)

__all__ = [
    "SCHEMA_VERSION",
    "BeatRow",
    "ExportError",
    "ExportRow",
    "IndicesRow",
    "MarkerRow",
    "MarkerSource",
    "SessionInfo",
    "SessionRecord",
    "SessionState",
    "SessionStore",
    "SessionSummary",
    "export_csv",
    "read_export_csv",
]
