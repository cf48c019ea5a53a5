"""The local session store: one SQLite file in WAL mode, stdlib :mod:`sqlite3`.

One :class:`SessionStore` holds one connection. Its API is synchronous; the daemon calls it
from worker threads (``asyncio.to_thread``), so the connection is opened with
``check_same_thread=False`` and every public method runs under one internal lock. Every
public write is exactly one transaction: after a crash (even ``kill -9``) the file holds
either all of a call's rows or none of them.

Time bases, as everywhere in Settle:

* ``*_ms`` columns named ``started_ms``, ``stopped_ms``, ``recv_ts_ms``, ``ts_ms`` are wall-clock
  epoch milliseconds (UTC);
* ``beat_t_s`` / ``t_s`` are seconds since the session started (the session's own time base);
* ``rr_ms`` is the RR interval in float milliseconds; ``rr_raw`` the strap's wire value in
  1/1024 s, kept only for sources that have one.

Schema version 2 adds the session log (intention, baseline period, tags, notes), artefact
fields per beat (``rr_corrected_ms``, ``beat_class``, ``timing_uncertain``), gap records and
raw ECG; a version-1 file is upgraded in place when it is opened. Version 3 adds the
ECG-derived beats; version 4 gives every store the same beat-class CHECKs (a version-2 store
made by commit 4ae4df5 lacked ``warmup`` and refused every later beat).

The schema version lives in ``PRAGMA user_version``; :data:`SCHEMA_VERSION` is the newest this
code knows, and ``_MIGRATIONS[v]`` upgrades a file from version ``v`` to ``v + 1``. A file
written by a newer Settle is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import errno
import json
import math
import os
import re
import secrets
import shlex
import sqlite3
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from settle.errors import SessionNotFound, StoreError
from settle.text import NOTES_APPEND_MAX_CHARS, NOTES_MAX_CHARS

__all__ = [
    "MARKER_KINDS",
    "SCHEMA_VERSION",
    "BaselinePeriod",
    "BeatAnnotation",
    "BeatClass",
    "BeatRow",
    "DaemonLock",
    "EcgBeatRow",
    "EcgSeries",
    "GapRow",
    "IndicesRow",
    "Intention",
    "IntentionTarget",
    "MarkerRow",
    "MarkerSource",
    "NotesTooLong",
    "SessionInfo",
    "SessionRecord",
    "SessionState",
    "SessionStore",
    "SessionSummary",
    "check_notes_append",
    "daemon_lock",
    "daemon_running",
    "foreign_store",
    "utc_offset_s",
]

#: Marker kinds of the MQTT contract (issue 5). :class:`MarkerRow` itself accepts any
#: non-empty kind so that older rows stay readable; imports and commands use these.
MARKER_KINDS: tuple[str, ...] = (
    "hold-start",
    "hold-lapse",
    "hold-resume",
    "shame",
    "threat",
    "discomfort",
    "attention",
    "doubt",
    "note",
)


class NotesTooLong(ValueError):
    """Notes refused for their length (nothing written); ``detail`` says by how much,
    without naming the option or field they came from."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"notes: {detail}")
        self.detail = detail


def check_notes_append(text: str) -> None:
    """:class:`NotesTooLong` if one append of ``text`` would be longer than
    :data:`NOTES_APPEND_MAX_CHARS` (what :meth:`SessionStore.append_notes` refuses; a
    command can ask before opening the store)."""
    if len(text) > NOTES_APPEND_MAX_CHARS:
        raise NotesTooLong(f"at most {NOTES_APPEND_MAX_CHARS} characters, got {len(text)}")


#: ``PRAGMA application_id`` of a Settle store ("STLE"), so that another program's SQLite
#: file is recognised as foreign instead of having our tables added to it.
APPLICATION_ID = 0x53544C45

#: Seconds a writer waits for another process's write lock (e.g. the CLI deleting a session
#: while the daemon records) before giving up with a :class:`StoreError`.
BUSY_TIMEOUT_S = 10.0

WAIT_SLICE_S = 0.1
"""A write waits for another program's write lock in slices this long (SQLite's own busy
wait cannot be cut short: ``sqlite3.Connection.interrupt()`` does not end it), so that a
lower limit (:meth:`SessionStore.limit_waits`) takes effect between two."""


class SessionState(enum.StrEnum):
    """Life cycle of a session: ``running`` until finished, ``interrupted`` after a crash."""

    RUNNING = "running"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"


class MarkerSource(enum.StrEnum):
    """Where a marker was entered."""

    CLI = "cli"
    MQTT = "mqtt"
    DASHBOARD = "dashboard"
    IMPORT = "import"


class IntentionTarget(enum.StrEnum):
    """The model held in a session: about oneself, the future, an accepting other, or free."""

    SELF = "self"
    FUTURE = "future"
    RELATIONAL = "relational"
    FREE = "free"


class BeatClass(enum.StrEnum):
    """Artefact class of one RR interval, as decided by artefact correction."""

    NORMAL = "normal"
    ECTOPIC = "ectopic"
    LONG = "long"
    SHORT = "short"
    MISSED = "missed"
    EXTRA = "extra"
    IMPLAUSIBLE = "implausible"
    """Outside the physiological range (default 250–2000 ms; the ECG detector's own lower
    limit is 273 ms): recorded, never analysed."""
    WARMUP = "warmup"
    """Within the warm-up after a (re)connect (default 5 s): recorded, never analysed."""


def _require_finite(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _check_beat(row: BeatRow | EcgBeatRow) -> None:
    """What a stored beat of either source must satisfy; the class becomes a BeatClass."""
    if row.seq < 0:
        raise ValueError(f"seq must be >= 0, got {row.seq}")
    _require_finite("beat_t_s", row.beat_t_s)
    _require_finite("rr_ms", row.rr_ms)
    _require_finite("rr_corrected_ms", row.rr_corrected_ms)
    if row.beat_class is not None:
        object.__setattr__(row, "beat_class", BeatClass(row.beat_class))


@dataclasses.dataclass(frozen=True, slots=True)
class Intention:
    """What a session practises: the ``target`` model, the ``statement`` held (free text) and
    the ``practice`` kind (free text, e.g. ``"breath-paced hold"``)."""

    target: IntentionTarget
    statement: str = ""
    practice: str = ""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "target", IntentionTarget(self.target))
        except ValueError:
            known = ", ".join(t.value for t in IntentionTarget)
            raise ValueError(
                f"intention target must be one of {known}, got {self.target!r}"
            ) from None


@dataclasses.dataclass(frozen=True, slots=True)
class BaselinePeriod:
    """The session's rest baseline from ``start_t_s`` to ``stop_t_s``, seconds since session
    start; ``stop_t_s`` is None while the baseline is still being recorded."""

    start_t_s: float
    stop_t_s: float | None = None

    def __post_init__(self) -> None:
        _require_finite("start_t_s", self.start_t_s)
        _require_finite("stop_t_s", self.stop_t_s)
        if self.start_t_s < 0:
            raise ValueError(f"baseline start_t_s must be >= 0, got {self.start_t_s}")
        if self.stop_t_s is not None and self.stop_t_s < self.start_t_s:
            raise ValueError(
                f"baseline stop_t_s {self.stop_t_s} is before start_t_s {self.start_t_s}"
            )


@dataclasses.dataclass(frozen=True, slots=True)
class GapRow:
    """A span without usable beats (strap dropped, contact lost, notifications lost).

    ``start_t_s`` / ``end_t_s`` in seconds since session start; ``reason`` a short text
    (``"disconnected"``, ``"no-contact"`` …). ``id`` is assigned by the store: leave it None
    when adding.
    """

    start_t_s: float
    end_t_s: float
    reason: str
    id: int | None = None

    def __post_init__(self) -> None:
        _require_finite("start_t_s", self.start_t_s)
        _require_finite("end_t_s", self.end_t_s)
        if self.end_t_s < self.start_t_s:
            raise ValueError(f"gap end_t_s {self.end_t_s} is before start_t_s {self.start_t_s}")


@dataclasses.dataclass(frozen=True, slots=True)
class BeatAnnotation:
    """Artefact-correction result for the stored beat ``seq``; fields as in :class:`BeatRow`."""

    seq: int
    rr_corrected_ms: float | None
    beat_class: BeatClass | None
    timing_uncertain: bool | None = None

    def __post_init__(self) -> None:
        _require_finite("rr_corrected_ms", self.rr_corrected_ms)
        if self.beat_class is not None:
            object.__setattr__(self, "beat_class", BeatClass(self.beat_class))


@dataclasses.dataclass(frozen=True, slots=True)
class EcgBeatRow:
    """One heartbeat detected in the raw ECG (R peak), stored beside the strap's own RR.

    ``seq`` numbers the session's ECG beats from 0 (its own sequence, independent of the
    strap's beats) and is the idempotency key. ``beat_t_s`` is the R-peak time in seconds
    since session start (sample-level, interpolated). ``rr_ms`` is the interval to the
    previous R peak, None for the first beat after the ECG stream (re)started.
    ``rr_corrected_ms`` and ``beat_class`` are set when these beats drove the indices
    (``processing.rr_source = "ecg"``) and artefact correction has classified them;
    ``implausible``/``warmup`` beats are recorded but never analysed. A beat whose class
    stays empty did not drive the indices.
    """

    seq: int
    beat_t_s: float
    rr_ms: float | None
    rr_corrected_ms: float | None = None
    beat_class: BeatClass | None = None

    def __post_init__(self) -> None:
        _check_beat(self)


@dataclasses.dataclass(frozen=True, slots=True)
class EcgSeries:
    """Raw ECG of a session: ``t_ns`` sample times in nanoseconds since session start (the
    session's time base; int64) and ``uv`` the samples in microvolts (int32), sorted by time.
    Both are empty when no ECG was recorded."""

    t_ns: npt.NDArray[np.int64]
    uv: npt.NDArray[np.int32]

    def __len__(self) -> int:
        return int(self.t_ns.shape[0])

    @property
    def fs_hz(self) -> float | None:
        """Sampling rate from the median sample spacing, Hz (None below 2 samples)."""
        if len(self) < 2:
            return None
        step = float(np.median(np.diff(self.t_ns)))
        return 1e9 / step if step > 0 else None


@dataclasses.dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session's header row.

    ``id`` is ``YYYYMMDDTHHMMSS-xxxx``: the UTC start second plus 4 random hex digits, so ids
    sort by start time. ``started_ms`` / ``stopped_ms`` are epoch milliseconds; ``stopped_ms``
    is None while ``state`` is ``running``. ``source`` names the input (``ble:<address>``,
    ``replay:<file>``). ``meta`` is the JSON object given at creation (intention, strap model,
    config summary).

    The session log (schema v2; the defaults for sessions without one): ``intention`` what
    was practised, ``baseline`` the rest period on the session time base, ``tags`` sorted
    unique labels, ``notes`` free text.
    """

    id: str
    device_id: str
    started_ms: int
    stopped_ms: int | None
    state: SessionState
    source: str
    meta: Mapping[str, object]
    intention: Intention | None = None
    baseline: BaselinePeriod | None = None
    tags: tuple[str, ...] = ()
    notes: str = ""

    @property
    def time_scale(self) -> float:
        """Session seconds per wall-clock second (``meta.time_scale``): > 1 for a
        time-compressed (``--speed``) replay, 1 otherwise."""
        return _scale_of(self.meta)

    @property
    def recording_tz(self) -> dt.timezone | None:
        """The UTC offset of the computer that recorded the session, at its start
        (``meta.utc_offset_s``), where it differs from this computer's at that instant: the
        session was recorded in another time zone. None otherwise — the same zone (its
        daylight-saving changes then apply, as to a session stored without an offset,
        before 2026-11-30): its times are read in this computer's zone."""
        off = self.meta.get("utc_offset_s")
        if isinstance(off, bool) or not isinstance(off, int) or abs(off) >= 86_400:
            return None
        if off == utc_offset_s(self.started_ms):
            return None
        return dt.timezone(dt.timedelta(seconds=off))

    def local(self, epoch_ms: float) -> dt.datetime:
        """The instant ``epoch_ms`` on the recording's local clock (:attr:`recording_tz`;
        this computer's zone when it is unknown), with its offset: the time the
        practitioner saw, wherever the session is read."""
        return dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC).astimezone(self.recording_tz)


def utc_offset_s(epoch_ms: float) -> int:
    """This computer's UTC offset at the instant ``epoch_ms``, whole seconds (its time zone;
    ``TZ`` overrides it): stored with each session as ``meta.utc_offset_s``."""
    off = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC).astimezone().utcoffset()
    return round(off.total_seconds()) if off is not None else 0


def _scale_of(meta: Mapping[str, object]) -> float:
    scale = meta.get("time_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        return 1.0
    return float(scale) if math.isfinite(scale) and scale > 0 else 1.0


def _time_scale(meta_json: str) -> float:
    """:attr:`SessionInfo.time_scale` of a stored ``meta_json`` (1 if it is unreadable)."""
    try:
        meta = json.loads(meta_json)
    except ValueError:
        return 1.0
    return _scale_of(meta) if isinstance(meta, dict) else 1.0


def _last_t_s_sql(session: str) -> str:
    """Two columns for session ``session`` (an SQL expression: a parameter or a column): the
    latest session time (s) its rows reach — its last beat, gap end, indices row and marker
    entered live (imported markers do not count: each journal import is checked against the
    span, and one just past the end moved it for the next) — and the sample times of its
    last ECG frame. Part of :func:`_span_s`, the one definition of a session's span, for
    one session or in a listing of all."""
    imported = MarkerSource.IMPORT.value
    return f"""
        max(coalesce((SELECT max(beat_t_s) FROM beats WHERE session_id = {session}), 0),
            coalesce((SELECT max(end_t_s) FROM gaps WHERE session_id = {session}), 0),
            coalesce((SELECT max(t_s) FROM indices WHERE session_id = {session}), 0),
            coalesce((SELECT max(t_s) FROM markers
                      WHERE session_id = {session} AND source != '{imported}'), 0)),
        (SELECT t_ns FROM ecg WHERE session_id = {session} ORDER BY first_t_ns DESC LIMIT 1)
    """


def _span_s(
    started_ms: int,
    end_ms: int | None,
    scale: float,
    last_t_s: float | None,
    last_ecg: bytes | None,
) -> float:
    """A session's span, session seconds: the largest of its wall-clock length to ``end_ms``
    times its time scale (a ``--speed`` replay records ``scale`` session seconds per
    wall-clock second), ``last_t_s`` and the last sample of its last ECG frame (the
    columns of :func:`_last_t_s_sql`)."""
    span = max(0.0, float(last_t_s or 0.0))
    if end_ms is not None:
        span = max(span, (end_ms - started_ms) / 1000.0 * scale)
    if last_ecg:
        span = max(span, float(np.frombuffer(last_ecg, dtype="<i8").max()) / 1e9)
    return span


@dataclasses.dataclass(frozen=True, slots=True)
class SessionSummary:
    """One line of :meth:`SessionStore.list_sessions`.

    ``n_beats`` counts stored beats. ``duration_s`` is the session's span in session seconds
    (:meth:`SessionStore.recorded_span_s` with ``to_now=False``): once it has ended, its
    wall-clock length times its time scale (or its last beat, gap, indices row, live marker
    or ECG sample, if later); while it is running, the latest of those, or 0.0 before any.
    """

    id: str
    device_id: str
    started_ms: int
    stopped_ms: int | None
    state: SessionState
    n_beats: int
    duration_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class BeatRow:
    """One heart beat as recorded.

    ``seq`` numbers the beats of a session from 0 and is the idempotency key.
    ``beat_t_s`` is the reconstructed beat time in seconds since session start.
    ``recv_ts_ms`` is the epoch millisecond the carrying notification arrived.
    ``rr_ms`` is the RR interval ending at this beat in milliseconds; ``rr_raw`` the same in
    the wire unit 1/1024 s, or None for sources without one (replayed millisecond files).
    ``hr_bpm`` is the heart rate the strap sent with the beat (beats/min), ``contact`` its
    skin-contact flag (None when the strap cannot tell).

    Artefact fields (schema v2, None until artefact correction has run): ``rr_corrected_ms``
    the corrected RR in milliseconds, ``beat_class`` its :class:`BeatClass`,
    ``timing_uncertain`` whether ``beat_t_s`` could not be pinned down exactly (e.g. after
    lost notifications).
    """

    seq: int
    beat_t_s: float
    recv_ts_ms: int
    rr_ms: float
    rr_raw: int | None = None
    hr_bpm: int | None = None
    contact: bool | None = None
    rr_corrected_ms: float | None = None
    beat_class: BeatClass | None = None
    timing_uncertain: bool | None = None

    def __post_init__(self) -> None:
        _check_beat(self)


@dataclasses.dataclass(frozen=True, slots=True)
class IndicesRow:
    """One published set of settling indices.

    ``t_s`` seconds since session start, ``ts_ms`` epoch milliseconds of publication.
    ``payload_json`` is the whole payload exactly as published (a JSON object); the other
    fields are promoted copies for querying: ``hr_bpm`` mean heart rate (beats/min),
    ``rmssd_ms`` / ``sdnn_ms`` in milliseconds, ``ln_rmssd`` natural log of RMSSD in ms,
    ``pnn50_pct`` in percent, ``settling`` the dimensionless settling score.
    """

    t_s: float
    ts_ms: int
    payload_json: str
    hr_bpm: float | None = None
    rmssd_ms: float | None = None
    ln_rmssd: float | None = None
    sdnn_ms: float | None = None
    pnn50_pct: float | None = None
    settling: float | None = None

    def __post_init__(self) -> None:
        _require_finite("t_s", self.t_s)
        try:
            payload = json.loads(self.payload_json)
        except ValueError as exc:
            raise ValueError(f"payload_json is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise ValueError("payload_json must hold a JSON object")


@dataclasses.dataclass(frozen=True, slots=True)
class MarkerRow:
    """A user's marker ("started breathing exercise", "phone rang").

    ``t_s`` seconds since session start, ``ts_ms`` epoch milliseconds when it was entered.
    ``kind`` is a short free-form category, ``text`` the note. ``id`` is assigned by the
    store: leave it None when adding; rows read back carry it.
    """

    t_s: float
    ts_ms: int
    kind: str
    text: str
    source: MarkerSource
    id: int | None = None

    def __post_init__(self) -> None:
        _require_finite("t_s", self.t_s)
        if not self.kind:
            raise ValueError("marker kind must not be empty")
        # Accept plain strings ('cli') from callers; store only known sources.
        object.__setattr__(self, "source", MarkerSource(self.source))


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRecord:
    """Everything stored for one session, read in one consistent snapshot.

    Raw ECG is large and read separately (:meth:`SessionStore.ecg`); ``n_ecg`` counts its
    samples.
    """

    info: SessionInfo
    beats: list[BeatRow]
    indices: list[IndicesRow]
    markers: list[MarkerRow]
    gaps: list[GapRow] = dataclasses.field(default_factory=list)
    n_ecg: int = 0
    ecg_beats: list[EcgBeatRow] = dataclasses.field(default_factory=list)
    """R peaks detected in the raw ECG (Polar PMD), empty when no ECG was recorded."""


# --- schema -------------------------------------------------------------------------------

_SCHEMA_V1 = (
    """
    CREATE TABLE sessions (
        id          TEXT PRIMARY KEY,
        device_id   TEXT NOT NULL,
        started_ms  INTEGER NOT NULL,
        stopped_ms  INTEGER,
        state       TEXT NOT NULL CHECK (state IN ('running', 'stopped', 'interrupted')),
        source      TEXT NOT NULL,
        meta_json   TEXT NOT NULL DEFAULT '{}'
    )
    """,
    "CREATE INDEX sessions_started ON sessions (started_ms, id)",
    # WITHOUT ROWID: beats are read back per session in seq order, which is then the
    # physical order of the table.
    """
    CREATE TABLE beats (
        session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL CHECK (seq >= 0),
        beat_t_s    REAL NOT NULL,
        recv_ts_ms  INTEGER NOT NULL,
        rr_raw      INTEGER,
        rr_ms       REAL NOT NULL,
        hr_bpm      INTEGER,
        contact     INTEGER CHECK (contact IN (0, 1)),
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE indices (
        session_id   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        t_s          REAL NOT NULL,
        ts_ms        INTEGER NOT NULL,
        payload_json TEXT NOT NULL,
        hr_bpm       REAL,
        rmssd_ms     REAL,
        ln_rmssd     REAL,
        sdnn_ms      REAL,
        pnn50_pct    REAL,
        settling     REAL
    )
    """,
    "CREATE INDEX indices_session_t ON indices (session_id, t_s)",
    """
    CREATE TABLE markers (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        t_s         REAL NOT NULL,
        ts_ms       INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        text        TEXT NOT NULL,
        source      TEXT NOT NULL CHECK (source IN ('cli', 'mqtt', 'dashboard', 'import'))
    )
    """,
    "CREATE INDEX markers_session_t ON markers (session_id, t_s)",
)


def _file_size(path: Path) -> int | None:
    """The size of the file at ``path`` (a ``stat``: opening and closing any descriptor of a
    SQLite file would drop this process's locks on it); None if there is none."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _where_open_file_is(identity: tuple[int, int]) -> str | None:
    """Where the file with ``identity`` (device, inode) that this process holds open is now:
    its path, ``""`` if it was deleted, None if that cannot be known (no ``/proc``: not
    Linux). Stats the links in ``/proc/self/fd`` and opens nothing: closing any descriptor of
    a SQLite file would drop the process's POSIX locks on it."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for fd in fds:
        link = f"/proc/self/fd/{fd}"
        try:
            st = os.stat(link)
            if (st.st_dev, st.st_ino) == identity:
                return os.readlink(link) if st.st_nlink > 0 else ""
        except OSError:
            continue
    return None


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    # Not executescript(): it COMMITs first, which would split the migration and the
    # user_version bump into separate transactions.
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


# Literal lists, frozen with the migration that writes them: a released migration must write
# the same schema whenever it runs. (They were built from the enums: a store migrated to v2
# before ``warmup`` was added kept a CHECK without it, and every later beat was refused.)
# Schemas 2–4 write these; a new class needs a new migration with a list of its own.
_TARGETS_SQL = "'self', 'future', 'relational', 'free'"
_CLASSES_SQL = "'normal', 'ectopic', 'long', 'short', 'missed', 'extra', 'implausible', 'warmup'"

_SCHEMA_V2 = (
    f"ALTER TABLE sessions ADD COLUMN intention_target TEXT"
    f" CHECK (intention_target IN ({_TARGETS_SQL}))",
    "ALTER TABLE sessions ADD COLUMN intention_statement TEXT",
    "ALTER TABLE sessions ADD COLUMN practice_kind TEXT",
    "ALTER TABLE sessions ADD COLUMN baseline_start_t_s REAL",
    "ALTER TABLE sessions ADD COLUMN baseline_stop_t_s REAL",
    "ALTER TABLE sessions ADD COLUMN notes TEXT NOT NULL DEFAULT ''",
    """
    CREATE TABLE session_tags (
        session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        tag         TEXT NOT NULL CHECK (length(tag) > 0),
        PRIMARY KEY (session_id, tag)
    ) WITHOUT ROWID
    """,
    "ALTER TABLE beats ADD COLUMN rr_corrected_ms REAL",
    f"ALTER TABLE beats ADD COLUMN beat_class TEXT CHECK (beat_class IN ({_CLASSES_SQL}))",
    "ALTER TABLE beats ADD COLUMN timing_uncertain INTEGER CHECK (timing_uncertain IN (0, 1))",
    """
    CREATE TABLE gaps (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        start_t_s   REAL NOT NULL,
        end_t_s     REAL NOT NULL CHECK (end_t_s >= start_t_s),
        reason      TEXT NOT NULL
    )
    """,
    "CREATE INDEX gaps_session_t ON gaps (session_id, start_t_s)",
    # One row per add_ecg() call (one sensor frame): packed little-endian arrays, so an hour
    # at 130 Hz is ~1 MB and a few thousand rows instead of half a million.
    """
    CREATE TABLE ecg (
        session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        first_t_ns  INTEGER NOT NULL,
        n           INTEGER NOT NULL CHECK (n > 0),
        t_ns        BLOB NOT NULL,
        uv          BLOB NOT NULL,
        PRIMARY KEY (session_id, first_t_ns)
    ) WITHOUT ROWID
    """,
)


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V2:
        conn.execute(statement)


_SCHEMA_V3 = (
    # ECG-derived beats (R peaks of the raw ECG): their own sequence, beside the strap's RR.
    f"""
    CREATE TABLE ecg_beats (
        session_id      TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        seq             INTEGER NOT NULL CHECK (seq >= 0),
        beat_t_s        REAL NOT NULL,
        rr_ms           REAL,
        rr_corrected_ms REAL,
        beat_class      TEXT CHECK (beat_class IN ({_CLASSES_SQL})),
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID
    """,
)


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V3:
        conn.execute(statement)


_CLASS_CHECK = re.compile(r"CHECK \(beat_class IN \([^)]*\)\)")


def _migrate_3_to_4(conn: sqlite3.Connection) -> None:
    """Every store's beat-class CHECKs list the classes of :data:`_CLASSES_SQL` (the list
    schemas 2 and 3 write now).

    A store that commit 4ae4df5 took to version 2 lists no ``warmup`` (the list was built
    from the enum when the migration ran, and ``warmup`` came one commit later): the daemon
    could store no beat in it again. Rewritten in place — SQLite's documented procedure for
    changing a CHECK constraint (``writable_schema``, then a new ``schema_version``): no
    table is copied, whatever its size. SQLite's "defensive" mode forbids it: switched off
    for this connection where Python can (3.12+; it is off by default). Where it stays on
    (Python 3.11 with a SQLite built defensive), the table is rebuilt instead (:func:`_rebuild`).
    Only a table whose CHECK differs is touched; the schema is checked (``quick_check``)
    before the transaction commits."""
    wrong: list[tuple[str, str]] = []
    for name in ("beats", "ecg_beats"):
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        if row is None:
            continue
        fixed = _CLASS_CHECK.sub(f"CHECK (beat_class IN ({_CLASSES_SQL}))", row[0])
        if fixed != row[0]:
            wrong.append((name, fixed))
    if not wrong:
        return
    defensive = getattr(sqlite3, "SQLITE_DBCONFIG_DEFENSIVE", None)
    if defensive is not None and hasattr(conn, "setconfig"):
        conn.setconfig(defensive, False)
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.execute("PRAGMA writable_schema = ON")
    try:
        try:
            for name, fixed in wrong:
                conn.execute(
                    "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
                    (fixed, name),
                )
        except sqlite3.OperationalError:  # "table sqlite_master may not be modified"
            rebuild = True
        else:
            rebuild = False
            conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")
    if rebuild:  # the first UPDATE failed, so nothing of the above was written
        for name, fixed in wrong:
            _rebuild(conn, name, fixed)
    problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:  # raised inside the transaction: the file is left as it was
        raise sqlite3.DatabaseError(f"the upgraded schema does not check: {problems[0]}")


def _rebuild(conn: sqlite3.Connection, name: str, sql: str) -> None:
    """Replace table ``name`` by one made by ``sql`` (its CREATE TABLE, same columns in the
    same order) holding the same rows, its indexes re-made: SQLite's general procedure for a
    schema change ALTER TABLE cannot make, used where ``writable_schema`` is refused. Copies
    the table (a minute for years of beats), inside the caller's transaction."""
    tmp = f"_settle_rebuild_{name}"
    indexes = [
        row[0]
        for row in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
            " AND sql IS NOT NULL",
            (name,),
        )
    ]
    create, n = re.subn(rf'^\s*CREATE TABLE\s+"?{name}"?', f'CREATE TABLE "{tmp}"', sql)
    if n != 1:
        raise sqlite3.DatabaseError(f"unexpected schema of table {name}: {sql[:60]!r}")
    conn.execute(create)
    conn.execute(f'INSERT INTO "{tmp}" SELECT * FROM "{name}"')
    conn.execute(f'DROP TABLE "{name}"')
    conn.execute(f'ALTER TABLE "{tmp}" RENAME TO "{name}"')
    for index_sql in indexes:
        conn.execute(index_sql)


#: ``_MIGRATIONS[v]`` takes a store from schema version ``v`` to ``v + 1`` inside the open
#: transaction. Append new steps; never edit a released one, and write literal values in it
#: (never a list built from an enum: a new member then needs a new step, and a store made
#: by the new code refuses it too until there is one, so the tests notice).
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _migrate_0_to_1,
    _migrate_1_to_2,
    _migrate_2_to_3,
    _migrate_3_to_4,
)

#: Newest schema version this code reads and writes.
SCHEMA_VERSION = len(_MIGRATIONS)

_SESSION_COLUMNS = (
    "id, device_id, started_ms, stopped_ms, state, source, meta_json, intention_target,"
    " intention_statement, practice_kind, baseline_start_t_s, baseline_stop_t_s, notes,"
    " (SELECT group_concat(tag, char(31)) FROM"
    " (SELECT tag FROM session_tags WHERE session_id = sessions.id ORDER BY tag))"
)
_BEAT_COLUMNS = (
    "seq, beat_t_s, recv_ts_ms, rr_ms, rr_raw, hr_bpm, contact, rr_corrected_ms, beat_class,"
    " timing_uncertain"
)
_GAP_COLUMNS = "start_t_s, end_t_s, reason, id"
_ECG_BEAT_COLUMNS = "seq, beat_t_s, rr_ms, rr_corrected_ms, beat_class"
_INDICES_COLUMNS = (
    "t_s, ts_ms, payload_json, hr_bpm, rmssd_ms, ln_rmssd, sdnn_ms, pnn50_pct, settling"
)
_MARKER_COLUMNS = "t_s, ts_ms, kind, text, source, id"


def _session_from_row(row: sqlite3.Row | tuple[Any, ...]) -> SessionInfo:
    (
        sid,
        device_id,
        started_ms,
        stopped_ms,
        state,
        source,
        meta_json,
        target,
        statement,
        practice,
        base_start,
        base_stop,
        notes,
        tags,
    ) = row
    meta = json.loads(meta_json)
    return SessionInfo(
        id=sid,
        device_id=device_id,
        started_ms=started_ms,
        stopped_ms=stopped_ms,
        state=SessionState(state),
        source=source,
        meta=meta,
        intention=_intention_from_meta(meta)
        if target is None
        else Intention(IntentionTarget(target), statement or "", practice or ""),
        baseline=None if base_start is None else BaselinePeriod(base_start, base_stop),
        tags=tuple(sorted(tags.split("\x1f"))) if tags else (),
        notes=notes or "",
    )


def _intention_from_meta(meta: Mapping[str, Any]) -> Intention | None:
    """The intention a daemon put into ``meta["intention"]`` (MQTT ``session/start``) when
    the columns are empty; a free-text target becomes ``free``."""
    raw = meta.get("intention")
    if not isinstance(raw, dict) or not isinstance(raw.get("target"), str):
        return None
    target = raw["target"] if raw["target"] in set(IntentionTarget) else IntentionTarget.FREE
    statement, practice = raw.get("statement", ""), raw.get("practice", "")
    return Intention(
        IntentionTarget(target),
        statement if isinstance(statement, str) else "",
        practice if isinstance(practice, str) else "",
    )


def _bool_or_none(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _beat_from_row(row: tuple[Any, ...]) -> BeatRow:
    (seq, beat_t_s, recv_ts_ms, rr_ms, rr_raw, hr_bpm, contact, rr_corr, cls, uncertain) = row
    return BeatRow(
        seq=seq,
        beat_t_s=beat_t_s,
        recv_ts_ms=recv_ts_ms,
        rr_ms=rr_ms,
        rr_raw=rr_raw,
        hr_bpm=hr_bpm,
        contact=_bool_or_none(contact),
        rr_corrected_ms=rr_corr,
        beat_class=None if cls is None else BeatClass(cls),
        timing_uncertain=_bool_or_none(uncertain),
    )


def _marker_from_row(row: tuple[Any, ...]) -> MarkerRow:
    t_s, ts_ms, kind, text, source, mid = row
    return MarkerRow(t_s=t_s, ts_ms=ts_ms, kind=kind, text=text, source=source, id=mid)


def make_session_id(started_ms: int) -> str:
    """A new session id: UTC start second (``YYYYMMDDTHHMMSS``) plus 4 random hex digits."""
    start = dt.datetime.fromtimestamp(started_ms / 1000, tz=dt.UTC)
    return f"{start:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def _create_private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 unless it exists, before SQLite opens it.

    SQLite gives its -wal and -shm files the main file's permissions, so the whole store
    stays private. An existing file keeps its mode: changing a user's chosen permissions
    behind their back would be a surprise.

    An existing file is not opened here, only checked: closing a descriptor of it drops every
    POSIX lock this process holds on it, the shared lock of a connection already open on the
    store included. Another process closing its own connection then took itself for the last
    one and deleted the WAL under that connection: its later commits went into an unlinked
    file and the next open read "disk I/O error".
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        st = os.stat(path)  # a dangling symlink raises FileNotFoundError, as open did
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)) from None
        if not os.access(path, os.R_OK | os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path)) from None
        return
    os.close(fd)


def _check_side_files(path: Path) -> None:
    """PermissionError naming an existing -wal/-shm file of ``path`` this user cannot
    write: SQLite then opens the store read-only and fails at the first write with "attempt
    to write a readonly database", naming no file (a read-only command on a 0400 store left
    them 0400, and `chmod 600` on the store alone did not help)."""
    for side in (f"{path}-wal", f"{path}-shm"):
        if os.path.exists(side) and not os.access(side, os.R_OK | os.W_OK):
            mode = os.stat(side).st_mode & 0o777
            raise PermissionError(
                errno.EACCES, f"not writable by this user (mode {mode:04o}; chmod 600 it)", side
            )


def _not_a_directory(directory: Path) -> Path | None:
    """The nearest existing ancestor of ``directory`` (itself included) when it is not a
    directory, else None."""
    d = directory
    while not os.path.lexists(d) and d.parent != d:
        d = d.parent
    return None if os.path.isdir(d) else d


class SessionStore:
    """A session store on one SQLite file; create it with :meth:`open`.

    Safe to share between threads: every public method takes an internal lock and runs as
    one transaction. Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Wrap an already configured connection; use :meth:`open` instead."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._identity = _file_identity(path)
        self._size_seen = _file_size(path) or 0
        """The largest size of the file seen: in WAL mode without auto-vacuum (never set
        here) SQLite never makes it smaller, so a smaller file was cut short under us."""
        self._lock = threading.Lock()
        self._batch_thread: int | None = None
        """The thread inside :meth:`batch` (which holds ``_lock``), None outside one."""
        self._savepoints = 0
        self._side_files: list[Path] = []
        """-wal/-shm files a read-only open created: removed at :meth:`close` if unused."""
        self._wait_s = BUSY_TIMEOUT_S
        """How long a write waits for another program's write lock (:meth:`limit_waits`)."""

    # --- life cycle -----------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> SessionStore:
        """Open (creating if needed) the store at ``path`` and bring its schema up to date.

        Creates missing parent directories (the last one with mode 0700) and a new file with
        mode 0600. Raises :class:`StoreError` naming ``path`` when the file cannot be
        created, is not a SQLite database, belongs to another program or was written by a
        newer Settle.
        """
        path = Path(path)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _create_private_file(path)
            _check_side_files(path)
        except OSError as exc:
            what = "open" if os.path.lexists(path) else "create"  # not "create" one that exists
            why = exc.strerror
            blocker = _not_a_directory(path.parent)
            if blocker is not None:  # `--db afile/x.db`: not "File exists"
                why = f"{blocker} is not a directory"
            elif exc.filename and Path(exc.filename) != path:
                why = f"{exc.filename}: {exc.strerror}"
            raise StoreError(f"{path}: cannot {what} session store: {why}") from exc
        try:
            # isolation_level=None: the stdlib's implicit transactions are off; this class
            # issues BEGIN/COMMIT itself so each public call is exactly one transaction.
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open session store: {exc}") from exc
        try:
            _configure(conn, path)
        except StoreError as exc:
            conn.close()
            full = disk_full(path)
            if full is None or not _io_failure(exc):
                raise
            # SQLite says only "disk I/O error" when it cannot grow the -shm or -wal file.
            raise StoreError(f"{path}: cannot open session store: {full}") from exc.__cause__
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    @classmethod
    def open_existing(cls, path: Path) -> SessionStore:
        """Open an existing store to change it (``log set``, ``log import``, ``sessions
        delete``): as :meth:`open`, but an empty file (or a pipe, a device) is refused as
        :meth:`open_for_reading` refuses it, not made into a store (mode 0644 kept)."""
        path = Path(path)
        _refuse_no_store(path)
        return cls.open(path)

    @classmethod
    def open_for_reading(cls, path: Path) -> SessionStore:
        """Open an existing store to read it (``sessions list``, ``export``, ``report``,
        ``trends``): as :meth:`open` wherever the file can be written (so an older schema is
        upgraded as usual), else read-only — a backup on read-only media, another user's
        file: SQLite's ``mode=ro``, or ``immutable`` where not even its shared-memory file
        can be made (nothing can be writing there either). A read-only store of an older
        schema is refused (it cannot be upgraded in place); writing calls raise
        :class:`StoreError`."""
        path = Path(path)
        _refuse_no_store(path)
        side = [Path(f"{path}{suffix}") for suffix in ("-wal", "-shm")]
        created = [p for p in side if not os.path.lexists(p)]
        try:
            return cls.open(path)
        except StoreError as exc:
            # A full disk: SQLite cannot make its -shm/-wal files, but reading needs none.
            full = _io_failure(exc) and disk_full(path) is not None
            # Held by another program's write transaction: reading needs no lock in WAL
            # mode (`sessions list` and `export` failed after a 10 s wait while a database
            # browser had unsaved changes).
            locked = "write lock" in str(exc)
            if not (_read_only_failure(exc) or full or locked) or not path.is_file():
                raise
            first = exc
        uri = path.resolve().as_uri()
        for query in ("mode=ro", "mode=ro&immutable=1"):
            try:
                conn = sqlite3.connect(
                    f"{uri}?{query}",
                    uri=True,
                    timeout=BUSY_TIMEOUT_S,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error:
                continue
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                foreign = foreign_store(conn)
            except sqlite3.DatabaseError as exc:
                conn.close()
                if "not a database" in str(exc):
                    raise StoreError(
                        f"{path}: not a Settle session store (not a SQLite file)"
                    ) from exc
                continue  # e.g. the -shm file cannot be created: try immutable
            if foreign or version == 0:
                conn.close()
                raise StoreError(f"{path}: not a Settle session store (read-only, no sessions)")
            if version != SCHEMA_VERSION:
                conn.close()
                _remove_side_files(path, created)
                raise StoreError(
                    f"{path}: session store schema version {version} on a read-only file "
                    f"(this Settle reads {SCHEMA_VERSION}; copy it somewhere writable to "
                    "upgrade it)"
                )
            store = cls(conn, path)
            store._side_files = created
            return store
        _remove_side_files(path, created)
        raise first

    @property
    def path(self) -> Path:
        """The store's file."""
        return self._path

    def _copy_locked(self, path: Path) -> None:
        """``VACUUM INTO`` the new file ``path`` (mode 0600, its directory created 0700; it
        must not exist), with :attr:`_lock` held. It reads a store file deleted or moved under
        the open connection too. :class:`StoreError` if it cannot."""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise StoreError(f"{path}: cannot create a copy of the store: {exc.strerror}") from exc
        try:
            if self._conn is None:
                raise StoreError(f"{self._path}: session store is closed")
            self._conn.execute("VACUUM INTO ?", (str(path),))
        except (sqlite3.Error, StoreError) as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{path}: cannot copy the store: {exc}") from exc

    def recover_to(self, path: Path) -> None:
        """After :meth:`replaced` said the file opened is no longer at :attr:`path`: copy the
        whole store, as this connection still sees it, into the new file ``path`` (mode
        0600; it must not exist) and go on there. This object moves, so everything holding it (the
        beat writer, the dashboard) reads and writes the copy from now on.

        First the connection's WAL is checkpointed into the file it opened: a store moved
        away while open (``mv settle.db archive/``: its -wal and -shm files stay behind) is
        then whole where it went. Then that connection is closed before the copy is opened:
        two databases on one -wal/-shm pair corrupt each other. :class:`StoreError` if the
        copy cannot be made (this object is unchanged) or opened (it is closed)."""
        path = Path(path)
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"{self._path}: session store is closed")
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._copy_locked(path)
            conn.close()
            self._conn = None
            fresh = SessionStore.open(path)
            self._conn, fresh._conn = fresh._conn, None
            self._path, self._identity = path, fresh._identity
            self._size_seen = fresh._size_seen
            self._side_files = []

    def replaced(self) -> str | None:
        """Why writes no longer reach the file at :attr:`path` — ``"was deleted"``, ``"was
        moved to …"`` (Linux names where; elsewhere ``"was deleted or moved away"``) or ``"was
        replaced by another file"`` since it was opened (SQLite goes on writing into the file
        it opened, and everything written is lost to the store at :attr:`path`); None while
        it is the file opened. A ``stat``, cheap enough for every flush."""
        if self._identity is None:
            return None
        now = _file_identity(self._path)
        if now == self._identity:
            # The same file, emptied or cut short in place (`: > s.db`, `truncate`, a smaller
            # backup copied over it): the daemon wrote on into it and reported its beats
            # stored, and the store could not be opened again.
            size = _file_size(self._path)
            if size is not None and size < self._size_seen:
                return f"was cut short ({size} bytes, was {self._size_seen}) by another program"
            if size is not None:
                self._size_seen = size
            return None
        if now is not None:
            return "was replaced by another file"
        where = _where_open_file_is(self._identity)
        if where is None:
            return "was deleted or moved away"
        return f"was moved to {where}" if where else "was deleted"

    def damage(self) -> str | None:
        """What ``PRAGMA quick_check`` finds wrong with the file, or None (:func:`damage_of`).
        The daemon asks before it records: a damaged file failed only at the first write,
        and the whole session was then kept in memory alone."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"{self._path}: session store is closed")
            return damage_of(self._conn)

    def close(self) -> None:
        """Close the connection; further calls raise :class:`StoreError`. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                _remove_side_files(self._path, self._side_files)

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def limit_waits(self, seconds: float) -> None:
        """From now on a write waits at most ``seconds`` (not :data:`BUSY_TIMEOUT_S`) for
        another program's write lock — also one waiting now, within :data:`WAIT_SLICE_S`.
        The daemon calls it once it records (its writer keeps the rows in memory and retries
        every second: a 10 s wait only kept the outage unsaid and the rescue file unwritten
        for 10 s) and again, lower, when it stops: its retries before writing the rescue
        files each waited 10 s, and a stop took a minute where the unit allows 20 s."""
        self._wait_s = min(self._wait_s, seconds)

    def _begin_write(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting up to :attr:`_wait_s` for another program's write
        lock in slices of :data:`WAIT_SLICE_S` (see :meth:`limit_waits`)."""
        started = time.monotonic()
        conn.execute(f"PRAGMA busy_timeout = {round(WAIT_SLICE_S * 1000)}")
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_BUSY) & 0xFF
                    if code != sqlite3.SQLITE_BUSY or time.monotonic() - started >= self._wait_s:
                        raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {round(self._wait_s * 1000)}")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Run several public calls from this thread as ONE write transaction.

        ``with store.batch(): store.add_beats(a, …); store.add_beats(b, …); …`` commits
        everything together or, when anything raises out of the block, nothing. Each call
        inside still behaves as a unit (a savepoint): one that raises leaves no partial rows
        in the batch, so the caller may catch e.g. :meth:`add_ecg`'s ValueError and go on.
        Other threads wait for the whole batch. Used by the daemon to commit every session's
        buffered rows with one thread hop and one commit per flush.
        """
        with self._transaction(write=True):
            self._batch_thread = threading.get_ident()
            try:
                yield
            finally:
                self._batch_thread = None

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """Hold the lock and one transaction; map sqlite3 errors to :class:`StoreError`.

        Writes take the write lock up front (``BEGIN IMMEDIATE``) so a busy database fails at
        BEGIN, never half-way; reads use a deferred transaction for a consistent snapshot.
        Inside :meth:`batch` (same thread) it is a savepoint of the batch's transaction.
        """
        if self._batch_thread == threading.get_ident():
            with self._savepoint() as sp_conn:
                yield sp_conn
            return
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"{self._path}: session store is closed")
            try:
                if write:
                    self._begin_write(conn)
                else:
                    conn.execute("BEGIN")
                try:
                    yield conn
                except BaseException:
                    # Some errors (disk full, I/O) already rolled back inside SQLite.
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"{self._path}: {_failure(exc)}") from exc

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self._path}: session store is closed")
        if not conn.in_transaction:
            # An earlier error rolled the batch's transaction back: going on would write
            # in autocommit mode, one statement at a time.
            raise StoreError(f"{self._path}: the batch transaction was rolled back")
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        try:
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield conn
            except BaseException:
                # After an error SQLite may have rolled back the whole transaction (disk
                # full, I/O); then there is no savepoint left and the batch fails as a whole.
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
                raise
            conn.execute(f"RELEASE {name}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: {exc}") from exc
        finally:
            self._savepoints -= 1

    # --- writes ---------------------------------------------------------------------------

    def create_session(
        self,
        device_id: str,
        started_ms: int,
        source: str,
        meta: Mapping[str, object],
        *,
        intention: Intention | None = None,
        session_id: str | None = None,
    ) -> SessionInfo:
        """Start a new ``running`` session and return it.

        ``started_ms`` is the epoch millisecond the session starts (its ``t_s = 0``).
        ``meta`` must be JSON-serialisable (it is stored as a JSON object); ``intention``
        may also be set later with :meth:`set_intention`.

        ``session_id``: the id to give it (:func:`make_session_id`), drawn by the caller
        (the daemon records into a session before the store has taken its row); default
        drawn here. One already stored for the same device and start is this session,
        stored by an earlier try (returned as it is: a retried batch is harmless); one of
        another session is a ValueError.
        """
        meta_json = json.dumps(dict(meta), sort_keys=True, ensure_ascii=False, allow_nan=False)
        with self._transaction(write=True) as conn:
            if session_id is not None:
                sid = session_id
                row = conn.execute(
                    "SELECT device_id, started_ms FROM sessions WHERE id = ?", (sid,)
                ).fetchone()
                if row is not None:
                    if tuple(row) != (device_id, started_ms):
                        raise ValueError(f"session id {sid} is taken by another session")
                    return _require_session(conn, sid)
            else:
                # Two sessions started in the same second collide with odds 1/65536; draw
                # again.
                for _attempt in range(8):
                    sid = make_session_id(started_ms)
                    exists = conn.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone()
                    if exists is None:
                        break
                else:
                    raise StoreError(f"{self._path}: could not draw a free session id")
            conn.execute(
                "INSERT INTO sessions (id, device_id, started_ms, stopped_ms, state, source,"
                " meta_json, intention_target, intention_statement, practice_kind)"
                " VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)",
                (
                    sid,
                    device_id,
                    started_ms,
                    SessionState.RUNNING.value,
                    source,
                    meta_json,
                    None if intention is None else intention.target.value,
                    None if intention is None else intention.statement,
                    None if intention is None else intention.practice,
                ),
            )
        return SessionInfo(
            id=sid,
            device_id=device_id,
            started_ms=started_ms,
            stopped_ms=None,
            state=SessionState.RUNNING,
            source=source,
            meta=json.loads(meta_json),
            intention=intention,
        )

    def add_beats(self, session_id: str, beats: Sequence[BeatRow]) -> None:
        """Append beats in one transaction; a ``seq`` already stored is skipped, not duplicated.

        Re-sending a batch after an uncertain failure is therefore safe. The first row
        stored for a ``seq`` wins; later ones are ignored even if their values differ.
        """
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            # ON CONFLICT names the key on purpose: a bare INSERT OR IGNORE would also
            # silently drop rows violating NOT NULL or CHECK constraints.
            conn.executemany(
                f"INSERT INTO beats (session_id, {_BEAT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id, seq) DO NOTHING",
                (
                    (
                        session_id,
                        b.seq,
                        b.beat_t_s,
                        b.recv_ts_ms,
                        b.rr_ms,
                        b.rr_raw,
                        b.hr_bpm,
                        _int_or_none(b.contact),
                        b.rr_corrected_ms,
                        None if b.beat_class is None else b.beat_class.value,
                        _int_or_none(b.timing_uncertain),
                    )
                    for b in beats
                ),
            )

    def annotate_beats(self, session_id: str, annotations: Sequence[BeatAnnotation]) -> None:
        """Store artefact-correction results for already stored beats, in one transaction.

        Raises :class:`StoreError` naming the first ``seq`` that is not stored (and then
        changes nothing).
        """
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            for a in annotations:
                # A None timing flag leaves the stored one alone (the correction does not know).
                cur = conn.execute(
                    "UPDATE beats SET rr_corrected_ms = ?, beat_class = ?,"
                    " timing_uncertain = COALESCE(?, timing_uncertain)"
                    " WHERE session_id = ? AND seq = ?",
                    (
                        a.rr_corrected_ms,
                        None if a.beat_class is None else a.beat_class.value,
                        _int_or_none(a.timing_uncertain),
                        session_id,
                        a.seq,
                    ),
                )
                if cur.rowcount != 1:
                    raise StoreError(f"session {session_id}: no stored beat with seq {a.seq}")

    def add_indices(self, session_id: str, rows: Sequence[IndicesRow]) -> None:
        """Append published indices rows in one transaction."""
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            conn.executemany(
                f"INSERT INTO indices (session_id, {_INDICES_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        session_id,
                        r.t_s,
                        r.ts_ms,
                        r.payload_json,
                        r.hr_bpm,
                        r.rmssd_ms,
                        r.ln_rmssd,
                        r.sdnn_ms,
                        r.pnn50_pct,
                        r.settling,
                    )
                    for r in rows
                ),
            )

    def add_marker(self, session_id: str, marker: MarkerRow) -> int:
        """Store one marker and return its id (``marker.id`` is ignored)."""
        return self.add_markers(session_id, [marker])[0]

    def delete_markers(
        self, session_id: str, source: MarkerSource, *, only: Sequence[MarkerRow] | None = None
    ) -> int:
        """Delete the session's markers from ``source`` (e.g. an earlier journal import) —
        ``only`` those equal to these rows (one stored marker per row), if given; returns
        how many. One transaction (inside :meth:`batch`, part of its)."""
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            if only is None:
                cur = conn.execute(
                    "DELETE FROM markers WHERE session_id = ? AND source = ?",
                    (session_id, source.value),
                )
                return cur.rowcount
            n = 0
            for m in only:
                cur = conn.execute(
                    "DELETE FROM markers WHERE id = (SELECT id FROM markers WHERE session_id = ?"
                    " AND source = ? AND t_s = ? AND kind = ? AND text = ? LIMIT 1)",
                    (session_id, source.value, m.t_s, m.kind, m.text),
                )
                n += cur.rowcount
        return n

    def add_markers(self, session_id: str, markers: Sequence[MarkerRow]) -> list[int]:
        """Store several markers in one transaction (all or none); return their ids."""
        ids: list[int] = []
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            for marker in markers:
                cur = conn.execute(
                    "INSERT INTO markers (session_id, t_s, ts_ms, kind, text, source)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        session_id,
                        marker.t_s,
                        marker.ts_ms,
                        marker.kind,
                        marker.text,
                        marker.source.value,
                    ),
                )
                assert cur.lastrowid is not None  # an INSERT into a rowid table sets it
                ids.append(cur.lastrowid)
        return ids

    def add_gap(self, session_id: str, gap: GapRow) -> int:
        """Store one gap record and return its id (``gap.id`` is ignored)."""
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            cur = conn.execute(
                "INSERT INTO gaps (session_id, start_t_s, end_t_s, reason) VALUES (?, ?, ?, ?)",
                (session_id, gap.start_t_s, gap.end_t_s, gap.reason),
            )
            gid = cur.lastrowid
        assert gid is not None
        return gid

    def add_ecg(self, session_id: str, t_ns: Sequence[int], uv: Sequence[int]) -> None:
        """Append raw ECG samples: ``t_ns`` nanoseconds since session start, ``uv`` microvolts.

        Call once per sensor frame; the frame is stored as one row keyed by its first sample
        time, so re-sending the same frame is ignored (idempotent like :meth:`add_beats`).
        Raises ValueError when the lengths differ, the times are not strictly increasing or a
        value does not fit (int64 ns, int32 µV).
        """
        if len(t_ns) != len(uv):
            raise ValueError(f"add_ecg: {len(t_ns)} times but {len(uv)} samples")
        if len(t_ns) == 0:
            return
        try:
            t = np.asarray(t_ns, dtype=np.int64)
            v = np.asarray(uv, dtype=np.int32)
        except OverflowError as exc:
            raise ValueError(f"add_ecg: value out of range: {exc}") from None
        if t.ndim != 1 or (t.shape[0] > 1 and not bool(np.all(np.diff(t) > 0))):
            raise ValueError("add_ecg: t_ns must be strictly increasing")
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            conn.execute(
                "INSERT INTO ecg (session_id, first_t_ns, n, t_ns, uv) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id, first_t_ns) DO NOTHING",
                (
                    session_id,
                    int(t[0]),
                    int(t.shape[0]),
                    t.astype("<i8").tobytes(),
                    v.astype("<i4").tobytes(),
                ),
            )

    def add_ecg_beats(self, session_id: str, beats: Sequence[EcgBeatRow]) -> None:
        """Append ECG-derived beats in one transaction; a ``seq`` already stored is skipped
        (idempotent like :meth:`add_beats`)."""
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            conn.executemany(
                f"INSERT INTO ecg_beats (session_id, {_ECG_BEAT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id, seq) DO NOTHING",
                (
                    (
                        session_id,
                        b.seq,
                        b.beat_t_s,
                        b.rr_ms,
                        b.rr_corrected_ms,
                        None if b.beat_class is None else b.beat_class.value,
                    )
                    for b in beats
                ),
            )

    def annotate_ecg_beats(self, session_id: str, annotations: Sequence[BeatAnnotation]) -> None:
        """Store artefact-correction results for already stored ECG beats (one transaction;
        :class:`StoreError` naming the first ``seq`` not stored, and then nothing changes)."""
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            for a in annotations:
                cur = conn.execute(
                    "UPDATE ecg_beats SET rr_corrected_ms = ?, beat_class = ?"
                    " WHERE session_id = ? AND seq = ?",
                    (
                        a.rr_corrected_ms,
                        None if a.beat_class is None else a.beat_class.value,
                        session_id,
                        a.seq,
                    ),
                )
                if cur.rowcount != 1:
                    raise StoreError(f"session {session_id}: no stored ECG beat with seq {a.seq}")

    # --- the session log --------------------------------------------------------------------

    def set_intention(self, session_id: str, intention: Intention | None) -> None:
        """Set (or with None clear) what the session practises."""
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            conn.execute(
                "UPDATE sessions SET intention_target = ?, intention_statement = ?,"
                " practice_kind = ? WHERE id = ?",
                (
                    None if intention is None else intention.target.value,
                    None if intention is None else intention.statement,
                    None if intention is None else intention.practice,
                    session_id,
                ),
            )

    def set_started_ms(self, session_id: str, started_ms: int) -> None:
        """Move the session's start on the wall clock (epoch ms; its ``t_s`` stay as they
        are): the daemon found the host's clock stepped since the session started. The id,
        made from the clock at the start, stays."""
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            conn.execute(
                "UPDATE sessions SET started_ms = ? WHERE id = ?", (int(started_ms), session_id)
            )

    def move_session(self, session_id: str, started_ms: int) -> int:
        """Date a finished session afresh: its start becomes ``started_ms`` (epoch ms) and its
        stop moves by as much, so its length stays; its ``t_s`` stay. For a session recorded
        while the host's clock was wrong and corrected only after it ended (``settle log set
        --started``). Returns the shift, ms. A running session is refused (the daemon moves
        its start itself when the clock is corrected: ``follow_wall_clock``)."""
        with self._transaction(write=True) as conn:
            info = _require_session(conn, session_id)
            if info.state is SessionState.RUNNING:
                raise StoreError(
                    f"session {session_id} is still recording: its start can be set once it "
                    "has stopped"
                )
            shift = int(started_ms) - info.started_ms
            conn.execute(
                "UPDATE sessions SET started_ms = ?, stopped_ms = stopped_ms + ? WHERE id = ?",
                (int(started_ms), shift, session_id),
            )
        return shift

    def set_baseline(self, session_id: str, baseline: BaselinePeriod | None) -> None:
        """Set (or with None clear) the rest baseline period, seconds since session start."""
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            conn.execute(
                "UPDATE sessions SET baseline_start_t_s = ?, baseline_stop_t_s = ? WHERE id = ?",
                (
                    None if baseline is None else baseline.start_t_s,
                    None if baseline is None else baseline.stop_t_s,
                    session_id,
                ),
            )

    def add_tags(self, session_id: str, tags: Sequence[str]) -> None:
        """Add labels to a session (a tag already present is kept once). Tags are stripped;
        an empty tag or one with control characters raises ValueError."""
        clean = [_clean_tag(t) for t in tags]
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            conn.executemany(
                "INSERT INTO session_tags (session_id, tag) VALUES (?, ?)"
                " ON CONFLICT (session_id, tag) DO NOTHING",
                ((session_id, t) for t in clean),
            )

    def remove_tags(self, session_id: str, tags: Sequence[str]) -> None:
        """Remove labels from a session; absent tags are ignored."""
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            conn.executemany(
                "DELETE FROM session_tags WHERE session_id = ? AND tag = ?",
                ((session_id, t.strip()) for t in tags),
            )

    def set_notes(self, session_id: str, notes: str) -> None:
        """Replace the session's free-text notes; :class:`NotesTooLong` (nothing written)
        beyond :data:`NOTES_MAX_CHARS`."""
        if len(notes) > NOTES_MAX_CHARS:
            raise NotesTooLong(
                f"session {session_id} keeps at most {NOTES_MAX_CHARS} characters of notes, "
                f"got {len(notes)}"
            )
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            conn.execute("UPDATE sessions SET notes = ? WHERE id = ?", (notes, session_id))

    def append_notes(self, session_id: str, text: str) -> None:
        """Append a paragraph to the session's notes (separated by a blank line).
        :class:`NotesTooLong`, nothing written, for more than :data:`NOTES_APPEND_MAX_CHARS`
        at once or notes that would grow past :data:`NOTES_MAX_CHARS` (checked inside the
        write transaction: two appends at once cannot both pass on the same old length)."""
        check_notes_append(text)
        with self._transaction(write=True) as conn:
            held = _require_session(conn, session_id).notes
            total = len(held) + 2 + len(text) if held else len(text)
            if total > NOTES_MAX_CHARS:
                raise NotesTooLong(
                    f"session {session_id} keeps at most {NOTES_MAX_CHARS} characters of "
                    f"notes; it holds {len(held)}, and this would make {total}"
                )
            conn.execute(
                "UPDATE sessions SET notes = CASE WHEN notes = '' THEN ?"
                " ELSE notes || char(10) || char(10) || ? END WHERE id = ?",
                (text, text, session_id),
            )

    def finish_session(
        self,
        session_id: str,
        stopped_ms: int,
        state: SessionState | str = SessionState.STOPPED,
    ) -> None:
        """End a session at epoch millisecond ``stopped_ms`` as ``stopped`` or ``interrupted``.

        Finishing an already finished session overwrites its end, so a retried shutdown
        path does no harm.
        """
        final = SessionState(state)
        if final is SessionState.RUNNING:
            raise ValueError("finish_session: state must be 'stopped' or 'interrupted'")
        with self._transaction(write=True) as conn:
            info = _require_session(conn, session_id)
            if stopped_ms < info.started_ms:
                raise ValueError(f"stopped_ms {stopped_ms} is before started_ms {info.started_ms}")
            conn.execute(
                "UPDATE sessions SET stopped_ms = ?, state = ? WHERE id = ?",
                (stopped_ms, final.value, session_id),
            )

    def mark_interrupted_running(self) -> list[str]:
        """Mark sessions still ``running`` as ``interrupted``; return their ids, oldest first.

        Call once at daemon start, before recording: a session still running then was left
        by a crash. It ends at its last stored beat — its start plus that beat's session time
        (wall seconds: divided by ``meta.time_scale``) — or at its start when it has none. Not
        at the beat's wall-clock arrival (``recv_ts_ms``): the daemon moves a session's start
        when the host's clock is stepped, and beats that arrived before the step carry the
        old clock (an hour-fast clock set back made a 15 min session 65 min long). Only one
        daemon may use a store at a time, or this would also end the other daemon's live
        session.
        """
        with self._transaction(write=True) as conn:
            rows = conn.execute(
                "SELECT id, started_ms, meta_json,"
                " (SELECT max(beat_t_s) FROM beats WHERE beats.session_id = sessions.id)"
                " FROM sessions WHERE state = 'running' ORDER BY started_ms, id"
            ).fetchall()
            for sid, started_ms, meta_json, last_t_s in rows:
                scale = _time_scale(meta_json)
                ran_ms = max(0, round(last_t_s * 1000 / scale)) if last_t_s is not None else 0
                conn.execute(
                    "UPDATE sessions SET state = 'interrupted', stopped_ms = ? WHERE id = ?",
                    (started_ms + ran_ms, sid),
                )
        return [row[0] for row in rows]

    def delete_session(self, session_id: str) -> None:
        """Delete a session and all its beats, indices, markers, gaps, tags and ECG.

        The freed pages are overwritten with zeros (``secure_delete``) and the WAL is
        checkpointed afterwards, so the data do not linger in the file; the checkpoint is
        best effort while another process (the daemon) holds a read snapshot.
        """
        with self._transaction(write=True) as conn:
            _require_session(conn, session_id)
            # Children are removed by ON DELETE CASCADE (foreign_keys is on).
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        with self._lock:
            conn2 = self._conn
            if conn2 is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn2.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # --- reads ----------------------------------------------------------------------------

    def list_sessions(self) -> list[SessionSummary]:
        """All sessions, oldest first, with beat counts and durations."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                f"""
                SELECT s.id, s.device_id, s.started_ms, s.stopped_ms, s.state, s.meta_json,
                       (SELECT count(*) FROM beats b WHERE b.session_id = s.id),
                       {_last_t_s_sql("s.id")}
                FROM sessions s ORDER BY s.started_ms, s.id
                """
            ).fetchall()
        out = []
        for sid, device_id, started_ms, stopped_ms, state, meta_json, n_beats, *last in rows:
            # As recorded_span_s(to_now=False): session seconds, so a --speed replay's.
            duration_s = _span_s(started_ms, stopped_ms, _time_scale(meta_json), *last)
            out.append(
                SessionSummary(
                    id=sid,
                    device_id=device_id,
                    started_ms=started_ms,
                    stopped_ms=stopped_ms,
                    state=SessionState(state),
                    n_beats=n_beats,
                    duration_s=duration_s,
                )
            )
        return out

    def revision(self, session_id: str) -> tuple[object, ...]:
        """A value that changes whenever an edit after the session could change its
        analysis or its summary row: its start and end, intention, baseline period or markers
        (``settle log set``, ``log import``, a marker added or replaced). Cheap (no beats
        read): for caches of per-session summaries. Empty for an unknown session."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT started_ms, stopped_ms, state, intention_target, intention_statement,"
                " practice_kind, baseline_start_t_s, baseline_stop_t_s,"
                " (SELECT count(*) FROM markers m WHERE m.session_id = s.id),"
                " (SELECT max(id) FROM markers m WHERE m.session_id = s.id)"
                " FROM sessions s WHERE id = ?",
                (session_id,),
            ).fetchone()
        return tuple(row) if row is not None else ()

    def get(self, session_id: str) -> SessionInfo:
        """The session with exactly this id; :class:`SessionNotFound` otherwise."""
        with self._transaction(write=False) as conn:
            return _require_session(conn, session_id)

    def resolve(self, ref: str) -> SessionInfo:
        """Find a session by ``'latest'``, its full id, a unique prefix of its id, or — when
        no id starts with ``ref`` — a unique suffix after its ``-`` (``2cd8`` for
        ``20261128T043736-2cd8``: the sessions of a group practice share the start second,
        so only their suffixes tell them apart).

        ``'latest'`` is the session created last (the last to start — by the order the store
        made them, not by ``started_ms``: a board whose clock was behind at boot dated its new
        session before the previous one, and ``latest`` named the old one). Raises
        :class:`SessionNotFound` when nothing matches and :class:`StoreError` listing
        candidates when a prefix (or, failing any prefix, a suffix) matches several sessions.
        """
        with self._transaction(write=False) as conn:
            if ref == "latest":
                row = conn.execute(
                    f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY rowid DESC LIMIT 1"
                ).fetchone()
                if row is None:
                    raise SessionNotFound(ref)
                return _session_from_row(row)
            if not ref:
                raise SessionNotFound(ref)
            row = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (ref,)
            ).fetchone()
            if row is not None:
                return _session_from_row(row)
            # substr() rather than LIKE: no wildcard escaping, and ids are case-sensitive.
            rows = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE substr(id, 1, ?) = ?"
                " ORDER BY id LIMIT 6",
                (len(ref), ref),
            ).fetchall()
            by_suffix = len(rows) != 1 and "-" not in ref
            if by_suffix:
                # The part after the (last) dash, whole: ids are <start second>-<4 hex>. Also
                # when the text starts several ids: a suffix of digits only (``2026``) reads
                # as the start of every id of that year.
                suffixed = conn.execute(
                    f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE substr(id, -?) = ?"
                    " ORDER BY id LIMIT 6",
                    (len(ref) + 1, "-" + ref),
                ).fetchall()
                if not rows or len(suffixed) == 1:
                    rows = suffixed
                else:
                    by_suffix = False
        if not rows:
            raise SessionNotFound(ref)
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:5]) + (", …" if len(rows) > 5 else "")
            raise StoreError(
                f"session ref {ref!r} is ambiguous: matches {shown} "
                + (
                    "(give more of the id, from its start)"
                    if by_suffix
                    else "(give more characters)"
                )
            )
        return _session_from_row(rows[0])

    def recorded_span_s(
        self, session_id: str, *, now_ms: int | None = None, to_now: bool = True
    ) -> float:
        """How far the session's time axis reaches, seconds since its start: the one
        definition of a session's span, which the EDF and BIDS exports and
        :meth:`list_sessions` (``settle sessions list``) use too.

        The largest of: its wall-clock length times :attr:`SessionInfo.time_scale` (a
        time-compressed replay, ``--speed``, records more session seconds than wall-clock
        seconds, so the wall clock alone is too short or, below speed 1, too long), its last
        beat, gap end, indices row, marker entered live and ECG sample. While it runs, its
        wall-clock length is to ``now_ms`` (default: now); with ``to_now=False`` a running
        session reaches only as far as it has recorded (an export, a listing: a session a
        crash left running would otherwise grow without data). Imported markers do not
        count: each journal import is checked against this span, and one just past the end
        moved the end for the next (markers crept 5 s past a session, and a baseline with
        them)."""
        with self._transaction(write=False) as conn:
            info = _require_session(conn, session_id)
            end_ms = info.stopped_ms
            if end_ms is None and to_now:
                end_ms = int(time.time() * 1000) if now_ms is None else now_ms
            last = conn.execute(f"SELECT {_last_t_s_sql(':s')}", {"s": session_id}).fetchone()
        return _span_s(info.started_ms, end_ms, info.time_scale, *last)

    def beats(self, session_id: str) -> list[BeatRow]:
        """The session's beats in ``seq`` order."""
        with self._transaction(write=False) as conn:
            _require_session(conn, session_id)
            return _read_beats(conn, session_id)

    def indices(self, session_id: str) -> list[IndicesRow]:
        """The session's indices rows ordered by ``t_s``, then insertion."""
        with self._transaction(write=False) as conn:
            _require_session(conn, session_id)
            return _read_indices(conn, session_id)

    def markers(self, session_id: str) -> list[MarkerRow]:
        """The session's markers ordered by ``t_s``, then id."""
        with self._transaction(write=False) as conn:
            _require_session(conn, session_id)
            return _read_markers(conn, session_id)

    def gaps(self, session_id: str) -> list[GapRow]:
        """The session's gap records ordered by start time."""
        with self._transaction(write=False) as conn:
            _require_session(conn, session_id)
            return _read_gaps(conn, session_id)

    def ecg(self, session_id: str) -> EcgSeries:
        """The session's raw ECG (empty arrays when none was recorded)."""
        with self._transaction(write=False) as conn:
            _require_session(conn, session_id)
            rows = conn.execute(
                "SELECT t_ns, uv FROM ecg WHERE session_id = ? ORDER BY first_t_ns",
                (session_id,),
            ).fetchall()
        if not rows:
            return EcgSeries(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32))
        t = np.concatenate([np.frombuffer(r[0], dtype="<i8") for r in rows]).astype(np.int64)
        v = np.concatenate([np.frombuffer(r[1], dtype="<i4") for r in rows]).astype(np.int32)
        # Frames re-sent with a shifted first sample could overlap: keep times unique.
        t, first = np.unique(t, return_index=True)
        return EcgSeries(t, v[first])

    def ecg_beats(self, session_id: str) -> list[EcgBeatRow]:
        """The session's ECG-derived beats in ``seq`` order (empty without ECG)."""
        with self._transaction(write=False) as conn:
            _require_session(conn, session_id)
            return _read_ecg_beats(conn, session_id)

    def read_session(self, session_id: str) -> SessionRecord:
        """Header, beats, indices, markers and gaps of one session from one snapshot.

        Use this rather than separate calls when the session may still be recording, so
        that the parts agree with each other (as exports need).
        """
        with self._transaction(write=False) as conn:
            info = _require_session(conn, session_id)
            n_ecg = conn.execute(
                "SELECT coalesce(sum(n), 0) FROM ecg WHERE session_id = ?", (session_id,)
            ).fetchone()[0]
            return SessionRecord(
                info=info,
                beats=_read_beats(conn, session_id),
                indices=_read_indices(conn, session_id),
                markers=_read_markers(conn, session_id),
                gaps=_read_gaps(conn, session_id),
                n_ecg=int(n_ecg),
                ecg_beats=_read_ecg_beats(conn, session_id),
            )


# --- helpers that run inside a transaction ------------------------------------------------


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    """Set the pragmas and migrate; raise :class:`StoreError` naming ``path`` on failure."""
    try:
        # The first statement reads the header: this is where a non-SQLite file fails. Another
        # program's database is refused before anything is set: switching it to WAL first
        # changed its header for good (bytes 18-19), though every command then refused it.
        if foreign_store(conn):
            raise StoreError(
                f"{path}: not a Settle session store (a SQLite file of another program)"
            )
        # Likewise a store a newer Settle wrote: refused untouched (it was switched to WAL
        # first, bytes 18-19, 28 and 96 of its header changed, then refused).
        newer = newer_schema(conn, path)
        if newer is not None:
            raise StoreError(newer)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot enable WAL journaling (got {mode!r})")
        # FULL: every commit is on the disk before it returns (one fdatasync of the WAL per
        # commit; the daemon commits once a second). With NORMAL a commit reached the disk
        # only at a checkpoint (~4 MB of WAL, hours of one strap), so a power loss took
        # whatever the kernel had not yet written back (~30 s here), session rows included.
        conn.execute("PRAGMA synchronous = FULL")
        # Per connection, and only outside a transaction.
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows (health data) are overwritten with zeros instead of left in free pages.
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            _migrate(conn, path)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise StoreError(f"{path}: not a Settle session store (not a SQLite file)") from exc
        if "database is locked" in str(exc):
            # Said as what it is: a bare "database is locked" after a 10 s wait.
            raise StoreError(
                f"{path}: another program has held a write lock on the session store for "
                f"{BUSY_TIMEOUT_S:g} s (a database browser with unsaved changes?): close it "
                "and try again"
            ) from exc
        raise StoreError(f"{path}: cannot open session store: {exc}") from exc


def damage_of(conn: sqlite3.Connection) -> str | None:
    """The first problem ``PRAGMA quick_check`` finds in the file, on one line, or None. It
    reads every page once: ≈ 0.2 s for 17 MB (18 hours of one strap)."""
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    text = " ".join(
        line.strip()
        for row in rows
        for line in str(row[0]).splitlines()
        if line.strip() and not line.startswith("*** in database")
    )
    return None if text == "ok" else text or "no answer"


def damaged_store_hint(path: Path) -> str:
    """What to do with a damaged store (one line; nothing is changed in it)."""
    q = shlex.quote(str(path))
    return (
        f"copy what it holds into a new store (`sqlite3 {q} .recover | sqlite3 recovered.db`) "
        "and use that with --db, or start a new one with --db; the damaged file is left as it is"
    )


def _lock_path(db_path: Path) -> Path:
    """``<db>-lock`` beside the file itself: through a symlink (``alias.db -> real.db``) a
    second daemon locked ``alias.db-lock`` and took the first one's live session for a
    crashed one. (A hard link is another name of the file, with a ``-lock`` of its own:
    :func:`daemon_lock` also locks the database file itself.)"""
    try:
        real = Path(db_path).resolve()
    except (OSError, RuntimeError):  # a link loop: opening the store fails and says so
        real = Path(db_path)
    return Path(f"{real}-lock")


def _flock_holder(path: Path) -> int | None:
    """The pid holding an exclusive ``flock`` on the file at ``path`` (Linux's
    ``/proc/locks``; read, the file not opened), or None: none, or not known here."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        # "3: FLOCK  ADVISORY  WRITE 1234 fe:00:2146517 0 EOF" ("->" marks a waiter)
        fields = line.split()
        if fields[1:4] == ["FLOCK", "ADVISORY", "WRITE"] and fields[5:6] == [where]:
            return int(fields[4]) if fields[4].isdigit() else None
    return None


def _lock_store_file(db_path: Path) -> int | None:
    """Take the exclusive ``flock`` on the database file itself and return its descriptor
    (None where it cannot be opened — it does not exist yet — or locked: the ``-lock`` file
    still holds); raise :class:`StoreError` if another daemon holds it. Through a hard link
    (``ln s.db other.db``, in any directory of the file system) a second daemon locked
    ``other.db-lock`` and both recorded, each through its own -wal: one session was lost
    without a word.

    The descriptor must stay open while this process has the store open: closing any
    descriptor of the file drops the POSIX locks SQLite holds on it (``flock`` locks are
    not those: SQLite never takes them)."""
    import fcntl

    try:
        # Non-blocking: opening a FIFO given as the store would wait for a writer (the store
        # refuses it then); a regular file only.
        fd = os.open(db_path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _flock_holder(Path(db_path))
        os.close(fd)  # (before this process opens the store, or while it is refused)
        if pid is None:  # no /proc/locks: the pid the -lock file holds, through this name
            with contextlib.suppress(OSError, ValueError):
                pid = int(_lock_path(db_path).read_text(encoding="ascii").strip())
        raise StoreError(_another_daemon(db_path, pid)) from None
    except OSError:  # a file system without flock: the -lock file alone
        os.close(fd)
        return None
    return fd


def _another_daemon(db_path: Path, pid: int | None) -> str:
    who = f" (pid {pid})" if pid is not None else ""
    return (
        f"{db_path}: another Settle daemon{who} is recording into this store; "
        "stop it first, or give this one another --db"
    )


class DaemonLock:
    """The store's daemon lock (:func:`daemon_lock`) in two steps, for ``settle.app.serve``:
    :meth:`lock_file` before the store is opened (a store opened through a second name of
    its file while another daemon records in it is damaged by the opening alone), then
    :meth:`lock` once it opened (the ``-lock`` file is made beside it: the store's own
    errors, a full disk say, come first). :meth:`release` after the store is closed."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self._fd: int | None = None
        self._file_fd: int | None = None

    def lock_file(self) -> None:
        """Lock the database file itself, if it exists (every name of it reaches it)."""
        if self._file_fd is None and sys.platform != "win32":
            self._file_fd = _lock_store_file(self.db_path)

    def lock(self) -> None:
        """Lock ``<db>-lock`` (writing this process's pid into it) and the file itself."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on the platforms Settle runs on
            return
        lock = _lock_path(self.db_path)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"{lock}: cannot create the daemon lock: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
            os.close(fd)
            pid = int(held) if held.isdigit() else None
            raise StoreError(_another_daemon(self.db_path, pid)) from None
        self._fd = fd
        self.lock_file()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)

    def release(self) -> None:
        for fd in (self._file_fd, self._fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._file_fd = None


@contextlib.contextmanager
def daemon_lock(db_path: Path) -> Iterator[None]:
    """Hold the store's daemon lock while recording: one daemon per store.

    A second daemon on the same store took the first one's live session for a crashed one
    (marked it interrupted, published its strap offline) and split markers between them.
    The lock is an exclusive ``flock`` on ``<db>-lock`` beside the store (which holds the
    holder's pid for the message) and one on the database file itself, which every name of
    it reaches (a hard link too; see :func:`_lock_store_file`: leave this context after the
    store is closed). Released when the process ends, however it ends. Raises
    :class:`StoreError` if another process holds either. Where ``flock`` does not exist
    (Windows) there is no lock.
    """
    lock = DaemonLock(db_path)
    try:
        lock.lock()
        yield
    finally:
        lock.release()


def daemon_running(db_path: Path) -> bool:
    """Whether a daemon holds :func:`daemon_lock` on the store at ``db_path`` now (also
    through another name of the file: a hard link)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return False
    if _flock_holder(Path(db_path)) is not None:  # the file itself (never opened here)
        return True
    try:
        fd = os.open(_lock_path(db_path), os.O_RDONLY)
    except OSError:
        return False  # no lock file: no daemon has recorded here since it was made
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock just taken
    return False


def _failure(exc: sqlite3.Error) -> str:
    """What a failed statement or transaction says to the user: SQLite's words, and for a
    write lock held elsewhere (its bare "database is locked") whose lock it is."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_BUSY:
        return (
            f"{exc}: another program holds a write lock on it (a database browser with "
            "unsaved changes?)"
        )
    return str(exc)


def _read_only_failure(exc: StoreError) -> bool:
    """Whether :meth:`SessionStore.open` failed only because the store cannot be written."""
    cause = exc.__cause__
    if isinstance(cause, OSError):
        return cause.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    if isinstance(cause, sqlite3.OperationalError):
        text = str(cause)
        return "readonly" in text or "read-only" in text or "unable to open" in text
    return False


_SHM_DMS_BYTE = 128
"""The byte of the -shm file every SQLite connection to the store holds a shared lock on
(``UNIX_SHM_DMS`` in SQLite's os_unix.c): whoever can lock it exclusively is alone."""


def _remove_side_files(path: Path, created: Sequence[Path]) -> None:
    """Remove the -wal/-shm files of ``created`` (made by a read-only open, which cannot
    remove them itself) when nothing else uses the store: no daemon holds its lock, no
    connection its -shm, the -wal is empty. Left as they were, they keep the mode of a 0400
    store, and after `chmod 600` on the store the daemon still failed ("attempt to write a
    readonly database"). Linux only (the lock query's layout is Linux's)."""
    if not created or not sys.platform.startswith("linux") or daemon_running(path):
        return
    import fcntl

    shm = Path(f"{path}-shm")
    wal = Path(f"{path}-wal")
    try:
        if wal in created and wal.exists() and wal.stat().st_size != 0:
            return  # never drop committed pages (a read-only open writes none)
        fd = os.open(shm, os.O_RDONLY)
    except FileNotFoundError:
        fd = None
    except OSError:
        return
    try:
        if fd is not None:
            # Would an exclusive lock on the byte every connection holds shared be granted?
            # (F_GETLK: only asks; works on a descriptor opened read-only.)
            query = struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS_BYTE, 1, 0)
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
            if struct.unpack("@hhqqi4x", answer)[0] != fcntl.F_UNLCK:
                return  # another connection uses the store
        for side in created:
            with contextlib.suppress(OSError):
                side.unlink()
    except OSError:
        return
    finally:
        if fd is not None:
            os.close(fd)


FULL_BELOW_BYTES = 1 << 20
"""Free space under which a failing open is put down to a full disk: SQLite needs a 32 kB
-shm file and WAL pages to open a store for writing."""


def disk_full(path: Path) -> str | None:
    """``the disk holding DIR is full (N kB free)`` when the file system of ``path`` has less
    than :data:`FULL_BELOW_BYTES` free for this user; None otherwise or when unknown."""
    directory = Path(path).parent
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    free = st.f_bavail * st.f_frsize
    if free >= FULL_BELOW_BYTES:
        return None
    return (
        f"the disk holding {directory} is full ({free // 1024} kB free): free some space; "
        "`settle sessions list` and `settle export … --out` (onto another disk) still read it"
    )


def _io_failure(exc: StoreError) -> bool:
    """Whether :meth:`SessionStore.open` failed with an error a full disk causes."""
    cause = exc.__cause__
    if isinstance(cause, OSError):
        return cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO)
    if isinstance(cause, sqlite3.Error):
        text = str(cause).lower()
        return "disk i/o error" in text or "full" in text or "unable to open" in text
    return False


def foreign_store(conn: sqlite3.Connection) -> bool:
    """Whether the SQLite file behind ``conn`` belongs to another program: another
    ``application_id``, or tables without Settle's schema version (`settle doctor` asks
    this too, so it agrees with :meth:`SessionStore.open`)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    return bool(
        app_id not in (0, APPLICATION_ID)
        or (
            version == 0
            and conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None
        )
    )


def _refuse_no_store(path: Path) -> None:
    """:class:`StoreError` for an existing file a command given it must not turn into a store:
    an empty one, or not a regular file. A missing or unreadable path passes (opening it
    says which)."""
    try:
        st = path.stat()
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        # A pipe or a device has size 0 too: it read "an empty file".
        raise StoreError(f"{path}: not a regular file, not a Settle session store")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise StoreError(f"{path}: an empty file, not a Settle session store")


def newer_schema(conn: sqlite3.Connection, path: Path) -> str | None:
    """Why the store behind ``conn`` cannot be used: a schema version newer than this Settle
    reads (``settle doctor`` asks this too, so it agrees with :meth:`SessionStore.open`), or
    None."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        return (
            f"{path}: session store schema version {version} is newer than this Settle "
            f"supports ({SCHEMA_VERSION}); upgrade Settle"
        )
    return None


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if foreign_store(conn):
        raise StoreError(f"{path}: not a Settle session store (a SQLite file of another program)")
    newer = newer_schema(conn, path)
    if newer is not None:
        raise StoreError(newer)
    for step in range(version, SCHEMA_VERSION):
        _MIGRATIONS[step](conn)
    if version != SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _require_session(conn: sqlite3.Connection, session_id: str) -> SessionInfo:
    row = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    if row is None:
        raise SessionNotFound(session_id)
    return _session_from_row(row)


def _read_beats(conn: sqlite3.Connection, session_id: str) -> list[BeatRow]:
    cur = conn.execute(
        f"SELECT {_BEAT_COLUMNS} FROM beats WHERE session_id = ? ORDER BY seq", (session_id,)
    )
    return [_beat_from_row(row) for row in cur]


def _read_ecg_beats(conn: sqlite3.Connection, session_id: str) -> list[EcgBeatRow]:
    cur = conn.execute(
        f"SELECT {_ECG_BEAT_COLUMNS} FROM ecg_beats WHERE session_id = ? ORDER BY seq",
        (session_id,),
    )
    return [
        EcgBeatRow(seq, t, rr, corr, None if cls is None else BeatClass(cls))
        for seq, t, rr, corr, cls in cur
    ]


def _read_indices(conn: sqlite3.Connection, session_id: str) -> list[IndicesRow]:
    cur = conn.execute(
        f"SELECT {_INDICES_COLUMNS} FROM indices WHERE session_id = ? ORDER BY t_s, rowid",
        (session_id,),
    )
    return [IndicesRow(*row) for row in cur]


def _read_markers(conn: sqlite3.Connection, session_id: str) -> list[MarkerRow]:
    cur = conn.execute(
        f"SELECT {_MARKER_COLUMNS} FROM markers WHERE session_id = ? ORDER BY t_s, id",
        (session_id,),
    )
    return [_marker_from_row(row) for row in cur]


def _read_gaps(conn: sqlite3.Connection, session_id: str) -> list[GapRow]:
    cur = conn.execute(
        f"SELECT {_GAP_COLUMNS} FROM gaps WHERE session_id = ? ORDER BY start_t_s, id",
        (session_id,),
    )
    return [GapRow(*row) for row in cur]


def _int_or_none(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _clean_tag(tag: str) -> str:
    clean = tag.strip()
    if not clean:
        raise ValueError("tag must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in clean):
        raise ValueError(f"tag {clean!r} contains control characters")
    return clean
