"""Recording of sessions: the SQLite session store, the session log, exports (CSV, JSON,
EDF+, BIDS, Kubios), journal import and reports.

``sessions`` sits beside the pipeline (``sensors → processing → feedback``) and only records
what it is handed; it imports none of those layers. Reports (``sessions.report``) need
matplotlib and are imported on demand.
"""

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
