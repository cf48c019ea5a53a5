"""Per-strap, per-session pipeline: beats → rolling indices → MQTT payloads + stored rows.

Synchronous and cheap per notification; the daemon calls :meth:`StrapPipeline.on_notification`
from the strap's task. All I/O is handed on: MQTT through :class:`DeviceOutput` (non-blocking,
bounded) and storage through :class:`BeatWriter` (flushed from its own task).

Beat times (``beat_t_s``, seconds since session start) come from
:class:`sensors.timing.BeatTimer`: cumulative RR anchored to notification arrival times,
drift-corrected, with lost beats turned into explicit gaps (docs/timing.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sensors.clock as host_clock
from feedback.mqtt import MqttLink
from feedback.payloads import (
    BeatPayload,
    ClassifiedBeat,
    EventPayload,
    IndicesPayload,
    Intention,
    SessionPayload,
)
from processing.artefacts import ProcessedBeat, may_be_repaired
from processing.indices import EventResponse
from processing.live import BASELINE_MIN_SAMPLES, IndicesSnapshot, LiveAnalyzer
from sensors.hrs import HeartRateMeasurement
from sensors.strap import Notification
from sensors.timing import BeatTimer, TimedBeat, TimingGap
from sessions.store import (
    BaselinePeriod,
    BeatAnnotation,
    BeatClass,
    BeatRow,
    EcgBeatRow,
    GapRow,
    IndicesRow,
    MarkerRow,
    MarkerSource,
    SessionState,
    SessionStore,
)
from sessions.store import Intention as StoredIntention
from settle.config import Settings
from settle.errors import SessionNotFound, StoreError

log = logging.getLogger(__name__)

ANALYSIS_ERROR_EVERY_S = 60.0
"""After the first failure of the analysis (logged with its traceback), at most one ERROR
line this often, s, with the count."""

SILENT_S = 3.0
"""Session seconds without a beat after which "now" runs on from the latest beat time with
the host's elapsed-time clock (:meth:`StrapPipeline.now_t_s`): longer than any RR a strap sends in
practice (3 s = 20 beats/min) and than the delay of a batched notification."""

NO_RR_WARN_S = 30.0
"""Session seconds of notifications with a heart rate but no beat-to-beat interval after
which the session says so (a ``no-rr`` event and a WARNING, once per stretch)."""

WALL_STEP_S = 2.0
"""A change of the host's wall clock against its elapsed-time clock by more than this is a
step (NTP at boot on a board without a real-time clock, the user setting the time; NTP's
gradual corrections are far below it): the running session's start is moved by it."""

SessionStateName = Literal["running", "stopped", "interrupted"]


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


_SETTLING_STATE: dict[str, Literal["baseline", "running"]] = {
    "collecting": "baseline",
    "complete": "running",
}


def _mean(xs: Sequence[float]) -> float | None:
    finite = [x for x in xs if math.isfinite(x)]
    return _num(sum(finite) / len(finite)) if finite else None


@dataclass
class DeviceOutput:
    """One device's MQTT topics and its stream counters (continuous across sessions)."""

    link: MqttLink | None
    base: str
    device_id: str
    beat_seq: int = 0
    indices_seq: int = 0
    event_seq: int = 0
    ecg_seq: int = 0
    tap: Callable[[str, bytes | str, bool], None] | None = None
    """Also gets every message (topic, payload, retain): the dashboard's live feed, which
    works with MQTT off or the broker down."""

    def topic(self, leaf: str) -> str:
        return f"{self.base}/{self.device_id}/{leaf}"

    def publish(self, leaf: str, payload: bytes | str, qos: int, retain: bool = False) -> None:
        if self.link is not None:
            self.link.publish(self.topic(leaf), payload, qos=qos, retain=retain)
        if self.tap is not None:
            self.tap(self.topic(leaf), payload, retain)

    def event(self, session: str | None, kind: str, t_s: float, text: str = "", source: str = "",
              ts: int | None = None) -> None:  # fmt: skip
        ev = EventPayload(
            ts=ts if ts is not None else int(time.time() * 1000),
            seq=self.event_seq, session=session, kind=kind, t_s=round(t_s, 3),
            text=text, source=source,
        )  # fmt: skip
        self.event_seq += 1
        self.publish("event", ev.to_json(), 1)


_Batch = tuple[dict[str, list[Any]], Callable[[str, Any], None]]
"""Rows by session id, and the store call that writes one session's rows."""

RESCUE_COLUMNS = "t_s,rr_ms"

VANISHED = "its session was deleted from the store while recording"
"""Why a session's rows are not stored after ``settle sessions delete`` removed it."""

STORE_FAILURE_LOG_EVERY_S = 60.0
"""The store failing again for the reason it was last said to fail is said again only this
long after that line (monotonic s): a program taking the write lock over and over made an
ERROR and an INFO line each time. An outage of another cause is said at once."""


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(s: float) -> str:
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.1f} s"


def rescue_name(session_id: str) -> str:
    """The rescue file of a session: ``settle-unsaved-<id>.csv``."""
    return f"settle-unsaved-{session_id}.csv"


def _rescue_lines(rows: Sequence[BeatRow]) -> str:
    # A strap's 0 ms RR (kept as implausible) would make the file unreadable to
    # `settle analyze` / `--replay`: kept as a comment.
    return "".join(
        f"{b.beat_t_s!r},{b.rr_ms!r}\n" if b.rr_ms > 0 else f"# {b.beat_t_s!r},0 ms RR\n"
        for b in rows
    )


def _marker_lines(markers: Sequence[MarkerRow]) -> str:
    return "".join(f"# marker t_s={m.t_s!r}: {m.kind} {json.dumps(m.text)}\n" for m in markers)


@dataclass
class _Spill:
    """A rescue file written while the store fails: it holds the first ``rows`` beats the
    writer keeps in memory for its session (all of them, once appended)."""

    path: Path
    rows: int


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session's row, to be created by the writer (:meth:`BeatWriter.create_session`)."""

    device_id: str
    started_ms: int
    source: str
    meta: dict[str, object]
    intention: StoredIntention | None = None


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """A session's end, to be stored by the writer (:meth:`BeatWriter.close_session`)."""

    started_ms: int
    """Its start as the session keeps it (a step of the wall clock moved it)."""
    stopped_ms: int
    state: SessionState


@dataclass
class BeatWriter:
    """Buffers rows and commits them at least every ``flush_every_s`` (from :meth:`run`).

    A failing store (disk full, read-only, another program holding its write lock) is
    reported once per outage and the rows stay in memory to be retried: measuring goes on
    and nothing is dropped — a session's own row and its end included, so a session
    started or stopped during the outage is stored whole once the store is back. While it
    fails, the beats not yet stored are also appended, at every flush, to the session's
    rescue file (:meth:`rescue`), so a crash during the outage loses at most one flush
    interval; once the store takes them the file is removed (everything in it is stored
    then).

    A session deleted from the store while it records (``settle sessions delete``) costs
    only that session: the others are committed as usual, its beats go to its rescue file.

    An outage is said in one ERROR line at its first failed flush, its end in one INFO line;
    outages of the cause last said within :data:`STORE_FAILURE_LOG_EVERY_S` (on ``clock``)
    are said, with their count, once that time has passed (if one still lasts then).
    """

    store: SessionStore
    flush_every_s: float = 1.0
    beats: dict[str, list[BeatRow]] = field(default_factory=dict)
    annotations: dict[str, list[BeatAnnotation]] = field(default_factory=dict)
    indices: dict[str, list[IndicesRow]] = field(default_factory=dict)
    gaps: dict[str, list[GapRow]] = field(default_factory=dict)
    ecg: dict[str, list[tuple[list[int], list[int]]]] = field(default_factory=dict)
    ecg_beats: dict[str, list[EcgBeatRow]] = field(default_factory=dict)
    ecg_annotations: dict[str, list[BeatAnnotation]] = field(default_factory=dict)
    starts: dict[str, list[int]] = field(default_factory=dict)
    """Corrected session starts (epoch ms) after a step of the wall clock; the last counts."""
    markers: dict[str, list[MarkerRow]] = field(default_factory=dict)
    """Markers the store has not taken yet (a marker sent while it fails is kept, as beats
    are; it was dropped)."""
    baselines: dict[str, list[BaselinePeriod | None]] = field(default_factory=dict)
    """Marked rest periods (None: discarded) the store has not taken yet; the last counts."""
    creates: dict[str, list[NewSession]] = field(default_factory=dict)
    """Sessions whose row the store has not taken yet (written before their other rows)."""
    closes: dict[str, list[SessionEnd]] = field(default_factory=dict)
    """Sessions whose end the store has not taken yet (written after their other rows);
    the last counts."""
    failing: bool = False
    last_error: str | None = None
    """Why the store failed last (None once a flush succeeds) — or, while the store works,
    why a session's beats could not go into it (its session was deleted)."""
    stored_beats: int = 0
    stored_by_session: dict[str, int] = field(default_factory=dict)
    """Beats committed per session (what "N beats stored" may say)."""
    vanished: dict[str, str] = field(default_factory=dict)
    """Sessions deleted from the store while recording: why their rows are not stored. Their
    beats go to the rescue file from then on, their other rows are dropped."""
    rescue_dirs: Sequence[Path] | None = None
    """Where rescue files go, the first that takes one; default the store's directory, then
    the temporary directory, then home (as the daemon's :meth:`rescue` at stop)."""
    clock: Callable[[], float] = time.monotonic
    """Seconds, for :data:`STORE_FAILURE_LOG_EVERY_S`."""
    _spills: dict[str, _Spill] = field(default_factory=dict, repr=False)
    _spill_failed: set[str] = field(default_factory=set, repr=False)
    _flush_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _said: tuple[str, float] | None = field(default=None, repr=False)
    """The cause of the last outage line, and when it was logged (:attr:`clock`)."""
    _outage_said: bool = field(default=False, repr=False)
    """Whether the current (or last) outage was said: its end is said only then."""
    _unsaid: int = field(default=0, repr=False)
    """Outages of that cause since that line that ended unsaid (within that time)."""

    def add_beats(self, session_id: str, rows: Sequence[BeatRow]) -> None:
        self.beats.setdefault(session_id, []).extend(rows)

    def annotate(self, session_id: str, rows: Sequence[BeatAnnotation]) -> None:
        self.annotations.setdefault(session_id, []).extend(rows)

    def add_indices(self, session_id: str, row: IndicesRow) -> None:
        self.indices.setdefault(session_id, []).append(row)

    def add_gap(self, session_id: str, gap: GapRow) -> None:
        self.gaps.setdefault(session_id, []).append(gap)

    def add_ecg(self, session_id: str, t_ns: list[int], uv: list[int]) -> None:
        """One ECG frame: sample times (ns since session start) and values (µV)."""
        self.ecg.setdefault(session_id, []).append((t_ns, uv))

    def add_ecg_beats(self, session_id: str, rows: Sequence[EcgBeatRow]) -> None:
        self.ecg_beats.setdefault(session_id, []).extend(rows)

    def annotate_ecg(self, session_id: str, rows: Sequence[BeatAnnotation]) -> None:
        self.ecg_annotations.setdefault(session_id, []).extend(rows)

    def move_start(self, session_id: str, started_ms: int) -> None:
        """The session's start on the wall clock is ``started_ms`` (the clock was stepped)."""
        self.starts.setdefault(session_id, []).append(started_ms)

    def add_marker(self, session_id: str, row: MarkerRow) -> None:
        self.markers.setdefault(session_id, []).append(row)

    def set_baseline(self, session_id: str, period: BaselinePeriod | None) -> None:
        """The session's marked rest period (None: none, the automatic one is used)."""
        self.baselines[session_id] = [period]

    def create_session(self, session_id: str, new: NewSession) -> None:
        """Create the session ``session_id`` (its row in the store) at the next flush, before
        any of its rows: the daemon records into it from now on, whether or not the store
        takes it now."""
        self.creates.setdefault(session_id, []).append(new)

    def close_session(self, session_id: str, end: SessionEnd) -> None:
        """Store the session's end at the next flush, after the rows buffered before it (a
        later call replaces it: the daemon closing it ``interrupted`` after all)."""
        self.closes[session_id] = [end]

    def _buffers(self) -> list[_Batch]:
        # The session's row first, its end last; beats before annotations, which refer to
        # stored beats.
        return [
            (self.creates, self._store_create),
            (self.beats, self.store.add_beats),
            (self.annotations, self.store.annotate_beats),
            (self.indices, self.store.add_indices),
            (self.gaps, self._store_gaps),
            (self.ecg, self._store_ecg),
            (self.ecg_beats, self.store.add_ecg_beats),
            (self.ecg_annotations, self.store.annotate_ecg_beats),
            (self.markers, self._store_markers),
            (self.baselines, self._store_baseline),
            (self.starts, self._store_starts),
            (self.closes, self._store_close),
        ]

    def rescue_where(self) -> list[Path]:
        if self.rescue_dirs is not None:
            return list(self.rescue_dirs)
        return [self.store.path.parent, Path(tempfile.gettempdir()), Path.home()]

    async def flush(self) -> None:
        """Commit everything buffered, every session and every kind of row, as ONE store
        transaction from one worker thread (a thread hop and a commit per session and kind
        cost a third of the daemon's CPU at a few hundred straps).

        Flushes run one at a time, in call order. When the store fails nothing of the batch
        is committed: every row goes back in front of anything newer, to be retried whole,
        and the beats are appended to the rescue files. A session that no longer exists in
        the store fails alone (each call is a savepoint of the batch): the others commit.
        """
        async with self._flush_lock:
            buffers = self._buffers()
            taken = [(dict(buf), fn, buf) for buf, fn in buffers]
            for buf, _fn in buffers:
                buf.clear()
            for sid in self.vanished:  # its rows never reach the store again
                self._set_aside(sid, [(data, buf) for data, _fn, buf in taken])
            if any(data for data, _fn, _buf in taken):
                await self._commit(taken)
            # Beats that are only in memory (the store fails, or their session is gone)
            # are also written to the rescue files: a crash loses at most this interval.
            todo = {
                sid: (rows[self._spills[sid].rows if sid in self._spills else 0 :], len(rows))
                for sid, rows in self.beats.items()
                if rows and (self.failing or sid in self.vanished)
            }
            todo = {sid: v for sid, v in todo.items() if v[0]}
            if todo:
                reason = self.last_error or "the session store failed"
                await asyncio.to_thread(self._spill_all, todo, reason)

    def _set_aside(
        self, sid: str, taken: list[tuple[dict[str, list[Any]], dict[str, Any]]]
    ) -> None:
        """Take the rows of a vanished session out of a batch: its beats back in memory (for
        the rescue file), the rest dropped."""
        for data, buf in taken:
            rows = data.pop(sid, None)
            if rows and buf is self.beats:
                self.beats[sid] = rows + self.beats.get(sid, [])

    async def _commit(self, taken: list[tuple[dict[str, list[Any]], Any, dict[str, Any]]]) -> None:
        try:
            beats = next(data for data, _fn, buf in taken if buf is self.beats)
            lost, removed = await asyncio.to_thread(
                self._write, [(data, fn) for data, fn, _buf in taken], list(beats)
            )
        except StoreError as exc:
            for data, _fn, buf in taken:
                for sid, rows in data.items():
                    buf[sid] = rows + buf.get(sid, [])
            self._say_outage(str(exc))
            self.failing = True
            self.last_error = str(exc)
            return
        for sid, reason in lost.items():
            n_stored = self.stored_by_session.get(sid, 0)
            self.vanished[sid] = reason
            self._set_aside(sid, [(data, buf) for data, _fn, buf in taken])
            log.error(
                "session %s was deleted from the session store while recording (%d beats "
                "stored before went with it); its beats from now on are written to %s in "
                "the first of %s that takes it, its indices are not kept; the other sessions "
                "are stored as usual", sid, n_stored, rescue_name(sid),
                ", ".join(str(d) for d in self.rescue_where()),
            )  # fmt: skip
        n_saved = sum(len(rows) for rows in beats.values())
        self.stored_beats += n_saved
        for sid, rows in beats.items():
            self.stored_by_session[sid] = self.stored_by_session.get(sid, 0) + len(rows)
        if self.failing:
            note = ""
            if removed:
                note = (
                    f"; every beat of the rescue file {', '.join(str(p) for p in removed)} "
                    "written during the outage is stored now, so it was removed"
                )
            if not self._outage_said:
                self._unsaid += 1
            log.log(
                logging.INFO if self._outage_said else logging.DEBUG,
                "session store writable again; %d buffered beats saved%s", n_saved, note,
            )  # fmt: skip
        self._spill_failed.clear()
        self.failing = False
        self.last_error = VANISHED if self.vanished else None

    def _say_outage(self, cause: str) -> None:
        """A flush failed for ``cause``: say so in one ERROR line at the first failure of an
        outage, unless the store last failed for the same cause less than
        :data:`STORE_FAILURE_LOG_EVERY_S` ago — then once that time has passed, if it still
        fails."""
        if not self.failing:
            self._outage_said = False
        if self._outage_said:
            return
        now = self.clock()
        if self._said is not None and self._said[0] == cause:
            if now - self._said[1] < STORE_FAILURE_LOG_EVERY_S:
                if not self.failing:
                    log.debug("session store failing again (%s)", cause)
                return
        else:
            self._unsaid = 0
        again = ""
        if self._unsaid:
            again = f"; it failed so {self._unsaid} time(s) briefly since the last such line"
        where = ", ".join(str(d) for d in self.rescue_where())
        log.error(
            "cannot write to the session store (%s)%s; keeping data in memory and writing "
            "the beats to settle-unsaved-<session>.csv (in the first of %s that takes it) "
            "until it is back", cause, again, where,
        )  # fmt: skip
        self._said = (cause, now)
        self._outage_said = True
        self._unsaid = 0

    def _write(
        self, batches: list[_Batch], beat_sessions: list[str]
    ) -> tuple[dict[str, str], list[Path]]:
        """One transaction for every batch. Returns the sessions that no longer exist (their
        rows left out, the others committed) and the rescue files removed because every
        beat in them (of ``beat_sessions``: those with beats in the batch) is now
        committed."""
        # SQLite goes on writing into a store file deleted or replaced under it, and all of
        # it is gone when the daemon ends: keep the rows in memory instead (the daemon
        # writes them to a rescue file at stop if the store does not come back).
        gone = self.store.replaced()
        if gone is not None:
            raise StoreError(f"{self.store.path}: the session store file {gone} while recording")
        lost: dict[str, str] = {}
        with self.store.batch():
            for data, fn in batches:
                for sid, rows in data.items():
                    if sid in lost:
                        continue
                    try:
                        fn(sid, rows)  # a savepoint: a missing session leaves nothing behind
                    except SessionNotFound:
                        lost[sid] = VANISHED
        # Committed. A rescue file holds only beats that were kept in memory, every one of
        # them in this batch: all are stored now.
        removed: list[Path] = []
        for sid in beat_sessions:
            spill = self._spills.get(sid)
            if spill is not None and sid not in lost:
                del self._spills[sid]
                with contextlib.suppress(OSError):
                    spill.path.unlink()
                    removed.append(spill.path)
        return lost, removed

    def _spill_all(self, todo: dict[str, tuple[list[BeatRow], int]], reason: str) -> None:
        where = self.rescue_where()
        for sid, (new, total) in todo.items():
            try:
                self._spill(sid, new, total, reason, where)
            except OSError as exc:
                if sid not in self._spill_failed:
                    self._spill_failed.add(sid)
                    log.error(
                        "session %s: cannot write the rescue file in %s either (%s); %d beats "
                        "are kept in memory only", sid,
                        ", ".join(str(d) for d in where), exc.strerror, total,
                    )  # fmt: skip

    def _spill(
        self, sid: str, new: Sequence[BeatRow], total: int, reason: str, where: Sequence[Path]
    ) -> Path:
        """Add ``new`` — beats ``total - len(new)`` … ``total - 1`` of the session's buffer —
        to its rescue file (created as needed); OSError if no directory takes it. Runs in a
        worker thread; the bookkeeping is done here, so a cancelled flush cannot lose it."""
        spill = self._spills.get(sid)
        if spill is not None:
            try:
                _append(spill.path, _rescue_lines(new))
                spill.rows = total
                return spill.path
            except OSError:
                pass  # that disk is full too: move the whole file to the next directory
        every = self.beats.get(sid, [])[:total]
        if len(every) != total:  # taken by a flush meanwhile (it cannot be, under the lock)
            every = [*every[: total - len(new)], *new]
        head = (
            f"# Settle: beats of session {sid} the session store could not take ({reason}); "
            f"t_s in seconds since the session start\n{RESCUE_COLUMNS}\n"
        )
        path = _create_rescue(sid, head + _rescue_lines(every), where)
        if spill is not None:
            with contextlib.suppress(OSError):
                spill.path.unlink()
        self._spills[sid] = _Spill(path, total)
        return path

    def unsaved_beats(self, session_id: str) -> int:
        """Beats of ``session_id`` waiting for the store (it failed, or no flush yet), or
        not stored because the session was deleted from the store."""
        return len(self.beats.get(session_id, []))

    def holds(self, session_id: str) -> bool:
        """Whether any row of ``session_id`` waits for the store (its end included)."""
        return any(session_id in buf for buf, _fn in self._buffers())

    def unsaved_markers(self, session_id: str) -> int:
        """Markers of ``session_id`` waiting for the store."""
        return len(self.markers.get(session_id, []))

    def rescue(self, session_id: str, reason: str, where: Sequence[Path]) -> Path | None:
        """Write the beats of ``session_id`` the store would not take to
        ``settle-unsaved-<id>.csv`` (``t_s,rr_ms``: `settle analyze` and `settle run
        --replay` read it) in the first directory of ``where`` that takes it, mode 0600,
        and drop them from the buffer — completing the file written during the outage, if
        there is one. Its markers follow as comment lines (``# marker t_s=…: kind "text"``:
        the readers skip them). None (the beats kept here) if none does."""
        rows = list(self.beats.get(session_id, []))
        markers = self.markers.get(session_id, [])
        if not rows and not markers:
            return None
        spill = self._spills.get(session_id)
        done = spill.rows if spill is not None else 0
        try:
            path = self._spill(session_id, rows[done:], len(rows), reason, where)
            if markers:
                _append(path, _marker_lines(markers))
        except OSError:
            return None
        # Final: never removed as "stored" (these beats leave the buffer).
        self._spills.pop(session_id, None)
        self.beats.pop(session_id, None)
        self.annotations.pop(session_id, None)  # they refer to those beats
        self.markers.pop(session_id, None)
        return path

    def _store_gaps(self, session_id: str, gaps: list[GapRow]) -> None:
        # add_gap is not idempotent: the batch commits all of them or none, never a part.
        for gap in gaps:
            self.store.add_gap(session_id, gap)

    def _store_starts(self, session_id: str, starts: list[int]) -> None:
        self.store.set_started_ms(session_id, starts[-1])

    def _store_markers(self, session_id: str, rows: list[MarkerRow]) -> None:
        self.store.add_markers(session_id, rows)

    def _store_baseline(self, session_id: str, periods: list[BaselinePeriod | None]) -> None:
        self.store.set_baseline(session_id, periods[-1])

    def _store_create(self, session_id: str, new: list[NewSession]) -> None:
        n = new[-1]
        try:
            self.store.create_session(n.device_id, n.started_ms, n.source, n.meta,
                                      intention=n.intention, session_id=session_id)  # fmt: skip
        except ValueError as exc:  # its id taken by another session: never stored, as deleted
            log.error("session %s cannot be stored: %s", session_id, exc)
            raise SessionNotFound(session_id) from exc

    def _store_close(self, session_id: str, ends: list[SessionEnd]) -> None:
        end = ends[-1]
        # The start as the session keeps it (a clock step moved it; the buffered move may
        # not be stored yet if the store failed meanwhile).
        self.store.set_started_ms(session_id, end.started_ms)
        try:
            self.store.finish_session(session_id, end.stopped_ms, end.state)
        except ValueError as exc:  # an end before its start: the other sessions go on
            log.error("could not close session %s: %s", session_id, exc)

    def _store_ecg(self, session_id: str, frames: Sequence[tuple[list[int], list[int]]]) -> None:
        for t_ns, uv in frames:
            try:
                self.store.add_ecg(session_id, t_ns, uv)
            except ValueError as exc:  # e.g. a frame overlapping the previous one
                log.debug("ECG frame not stored: %s", exc)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every_s)
            await self.flush()


class StrapPipeline:
    """Everything that happens to one strap's data within one session."""

    def __init__(
        self,
        *,
        output: DeviceOutput,
        session_id: str,
        started_ms: int,
        settings: Settings,
        writer: BeatWriter,
        intention: Intention | None = None,
        clock: Callable[[], float] = time.time,
        on_indices: Callable[[IndicesPayload], None] | None = None,
        time_scale: float = 1.0,
        started_mono_s: float | None = None,
    ) -> None:
        self.time_scale = time_scale
        """Session seconds per wall-clock second: 1 for a real strap, the speed factor of a
        time-compressed virtual one (so that anchoring to arrival times stays consistent)."""
        self.out = output
        self.device_id = output.device_id
        self.session_id = session_id
        self.started_ms = started_ms
        self.settings = settings
        self.writer = writer
        self.intention = intention
        self.clock = clock
        self.on_indices = on_indices
        """Called with every indices payload (the demo prints them)."""
        p = settings.processing
        self.analyzer = LiveAnalyzer(
            window_s=p.window_s,
            baseline_s=p.baseline_s,
            correction=p.correction,
            rr_max_ms=p.rr_max_ms,
            rr_min_ms=p.rr_min_ms,
        )
        self._pending_seqs: collections.deque[int] = collections.deque()
        """Stored beats fed to the analyzer whose class is not final yet, oldest first."""
        self._analysis_errors = 0
        self._analysis_logged_mono = -math.inf
        self._classified: list[ClassifiedBeat] = []
        self.warmup_until_mono_s = 0.0
        self.last_snapshot: IndicesSnapshot | None = None
        self.catching_up_t_s: float | None = None
        self.usable = True
        self.seq = 0
        """Next beat sequence number (= beats recorded so far)."""
        self._prev_rr_ms = math.nan
        """The strap's previous interval (any class): see processing.artefacts.may_be_repaired."""
        self.beat_t_s: float | None = None
        self.next_indices_t_s = p.indices_every_s
        self.baseline: Literal["pending", "collecting", "complete"] = "pending"
        self.baseline_marked: tuple[float, float | None] | None = None
        self.last_contact: bool | None = None
        self._last_beat_mono_s = 0.0
        """Monotonic time the latest beat arrived (see :meth:`now_t_s`)."""
        self.last_hr: int | None = None
        """Heart rate of the last notification (for the closing beat message)."""
        self.gaps: list[tuple[float, float, str]] = []
        """(start_t_s, end_t_s, reason) of every interruption: beats there are unknown."""
        self.timer = BeatTimer(time_scale=time_scale)
        self._held: list[Notification] = []
        """Notifications whose beats the timer holds back (:meth:`on_notification`)."""
        self._no_rr_since_s: float | None = None
        """Session time of the first notification without an interval since the last with."""
        self._no_rr_warned = False
        self.ecg_seq = 0
        """Next ECG-derived beat sequence number (R peaks recorded so far)."""
        self.rr_source: Literal["hrs", "ecg"] = "hrs"
        """Which RR feeds the analyzer now. With ``processing.rr_source = "ecg"`` it turns to
        ``ecg`` at the first R peak of the session and back to ``hrs`` if the ECG fails."""
        self._ecg_from_t_s = -math.inf
        """ECG beats at or before this time are recorded, not analysed (the switch point)."""
        self.started_mono_s = host_clock.elapsed_s() if started_mono_s is None else started_mono_s
        self._wall_offset_s = (
            self.clock() - self.started_mono_s
            if started_mono_s is None
            else started_ms / 1000.0 - started_mono_s
        )
        """Wall clock minus elapsed-time clock, s, as the session's start was taken."""

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def follow_wall_clock(self, wall_s: float, elapsed: float) -> float | None:
        """The host's wall clock read ``wall_s`` when its elapsed-time clock read ``elapsed``:
        if it was stepped since the session started (by more than :data:`WALL_STEP_S`), move
        the session's start by the step and say so; return the step (s), or None.

        The clock after a step is taken as the right one (NTP setting a board's clock after
        boot): a session started on a clock 3 days behind was listed 3 days long, dated 3
        days early, and exported with 3 days of padding. Session times (``t_s``) are on the
        elapsed-time clock and do not move; rows stored with the wall time of their arrival
        (``recv_ts_ms``, ``ts_ms``) keep what the clock read then. Only where the
        elapsed-time clock counts a suspend (:data:`sensors.clock.COUNTS_SUSPEND`: Linux,
        macOS); elsewhere a suspend would look like a step."""
        step = wall_s - elapsed - self._wall_offset_s
        if not abs(step) > WALL_STEP_S or not host_clock.COUNTS_SUSPEND:
            # Where the elapsed-time clock stops during a suspend, a suspend looks like a
            # step: there the start is never moved.
            return None
        self._wall_offset_s += step
        was = self.started_ms
        self.started_ms += round(step * 1000)
        self.writer.move_start(self.session_id, self.started_ms)
        moved = f"{'+' if step > 0 else '−'}{_span(abs(step))}"
        log.warning(
            "session %s: the system clock was set %s; the session's start moved from %s to %s",
            self.session_id, moved, _utc(was), _utc(self.started_ms),
        )  # fmt: skip
        self.event("clock", f"system clock set {moved}: session start moved to "
                   f"{_utc(self.started_ms)}")  # fmt: skip
        self.publish_session("running")
        return step

    def now_t_s(self) -> float:
        """The session's current time: the latest beat time (the one time base) — unless the
        strap has been silent for more than :data:`SILENT_S` of session time (a dropout, or
        no beat yet), then that beat time plus the silence so far on the elapsed-time clock: a
        marker pressed 30 s into a dropout was stored at the dropout's start, beside the
        ``disconnected`` and ``reconnected`` events."""
        base = self.beat_t_s if self.beat_t_s is not None else 0.0
        since = self._last_beat_mono_s if self.beat_t_s is not None else self.started_mono_s
        silent = (host_clock.elapsed_s() - since) * self.time_scale
        return base + silent if silent > SILENT_S else base

    def session_payload(
        self, state: SessionStateName, stopped_ms: int | None = None
    ) -> SessionPayload:
        return SessionPayload(
            ts=self.now_ms(),
            id=self.session_id,
            state=state,
            device=self.device_id,
            started_ts=self.started_ms,
            stopped_ts=stopped_ms,
            intention=self.intention,
            baseline=self.baseline,
            catching_up_t_s=self.catching_up_t_s,
            n_beats=self.seq,
        )

    def publish_session(self, state: SessionStateName, stopped_ms: int | None = None) -> None:
        self.out.publish("session", self.session_payload(state, stopped_ms).to_json(), 1, True)

    def event(self, kind: str, text: str = "", source: str = "", t_s: float | None = None) -> None:
        t = self.now_t_s() if t_s is None else t_s
        self.out.event(self.session_id, kind, t, text, source, ts=self.now_ms())

    def connected(self) -> None:
        """A (re)connect: beats of the next ``warmup_s`` are recorded but not analysed."""
        warmup = self.settings.processing.warmup_s / max(self.time_scale, 1e-9)
        self.warmup_until_mono_s = host_clock.elapsed_s() + warmup

    def _watch_rr(self, arrival_s: float, has_rr: bool, m: HeartRateMeasurement) -> None:
        """Say once when the strap has sent heart rate without a beat-to-beat interval for
        :data:`NO_RR_WARN_S`: nothing is recorded then, and the session looked as if it ran
        (a strap that sends no intervals, or one not worn that still sends a heart rate)."""
        if has_rr:
            if self._no_rr_warned and self._no_rr_since_s is not None:
                log.info(
                    "session %s: beat-to-beat intervals again after %.0f s without",
                    self.session_id, arrival_s - self._no_rr_since_s,
                )  # fmt: skip
            self._no_rr_since_s = None
            self._no_rr_warned = False
            return
        if self._no_rr_since_s is None:
            self._no_rr_since_s = arrival_s
        elif not self._no_rr_warned and arrival_s - self._no_rr_since_s >= NO_RR_WARN_S:
            self._no_rr_warned = True
            span = f"{arrival_s - self._no_rr_since_s:.0f} s"
            if m.hr_bpm == 0 or m.contact is False:
                what = f"the strap sent no beat-to-beat intervals for {span} (no skin contact)"
            else:
                what = f"the strap sent heart rate but no beat-to-beat intervals for {span}"
            if self.rr_source == "ecg":
                result = "its beats are not recorded (the raw ECG's beats drive the indices)"
            else:
                result = "no beats are recorded and no HRV is computed"
            why = (
                f"{what}: {result} (a strap not worn or with dry electrodes, or one that "
                "does not send RR intervals)"
            )
            log.warning("session %s: %s", self.session_id, why)
            self.event("no-rr", why, t_s=arrival_s)

    def restart_window(self, reason: str = "reconnect") -> None:
        """After a reconnect: the next beats are re-anchored to their arrival time, the gap
        is recorded and no metric ever spans it. Beats the timer still held are recorded
        first."""
        self._release_held(reconnect=True)
        if not self._no_rr_warned:  # counted again from the first notification after it
            self._no_rr_since_s = None
        self._finalise(self.analyzer.gap(self.now_t_s()))

    def _record_gap(self, gap: TimingGap) -> None:
        """Store and announce a gap of the beat timer; the analyzer gets it in its place
        among the notification's beats (:meth:`on_notification`)."""
        self.gaps.append((gap.start_t_s, gap.end_t_s, gap.reason))
        self.writer.add_gap(self.session_id, GapRow(gap.start_t_s, gap.end_t_s, gap.reason))
        span = gap.end_t_s - gap.start_t_s
        # "0.0 s without beats" said nothing (an interval that cannot have fit, beats right
        # after it): the time of its beats is what is unknown.
        said = f"{gap.reason}: {span:.1f} s without beats" if span >= 0.05 else gap.reason
        self.event("gap", said, t_s=gap.end_t_s)

    def start_baseline(self) -> None:
        self.analyzer.start_baseline(self.now_t_s())
        self.baseline_marked = (self.now_t_s(), None)
        # Stored open (its stop unknown) at once: a session stopped or interrupted while it
        # is collected keeps the rest period's start, which every export then runs to the
        # session's end; it was only in memory, and lost.
        self.writer.set_baseline(self.session_id, BaselinePeriod(self.now_t_s(), None))
        self.baseline = "collecting"
        self.event("baseline-start")
        self.publish_session("running")

    def stop_baseline(
        self, t_s: float | None = None, why: str = ""
    ) -> tuple[float, float, str | None]:
        """End the marked rest period (now, or at ``t_s``); returns it and, when it was too
        short to use, why. ``why`` is said in the ``baseline-complete`` event (e.g. that a
        ``hold-start`` ended it).

        A too-short period is discarded by the analyzer, which collects the automatic baseline
        from now on (``baseline`` is ``pending`` again). ValueError when none is being recorded.
        """
        if self.baseline_marked is None:
            raise ValueError("send baseline/start first")
        stop = self.now_t_s() if t_s is None else t_s
        need_s = BASELINE_MIN_SAMPLES * self.settings.processing.indices_every_s
        self.analyzer.stop_baseline(stop, min_span_s=need_s)
        start = self.baseline_marked[0]
        self.baseline_marked = None
        # Not analyzer.indices(stop): an extra snapshot off the indices grid would add a score
        # to the trend and the catching-up detector, and a sample to a restarted baseline.
        self.baseline = "complete" if self.analyzer.baseline_status == "complete" else "pending"
        discarded = None
        if self.baseline == "complete":
            self.event("baseline-complete", why, t_s=stop)
        else:
            discarded = self._too_short(stop - start)
            self.event("baseline-too-short", f"{why}: {discarded}" if why else discarded, t_s=stop)
        self.publish_session("running")
        return start, stop, discarded

    def _too_short(self, span_s: float) -> str:
        """Why a marked baseline was discarded, and what the score uses instead."""
        p = self.settings.processing
        need_s = BASELINE_MIN_SAMPLES * p.indices_every_s
        instead = f"using the automatic baseline (the next {p.baseline_s:g} s) instead"
        if span_s < need_s:
            return f"baseline too short ({int(span_s)} s < {need_s:g} s); {instead}"
        return (
            f"baseline not usable (fewer than {BASELINE_MIN_SAMPLES} complete indices in "
            f"{int(span_s)} s: the rhythm was not usable, or the slow-oscillation component "
            f"had less than 64 s of beats); {instead}"
        )

    def finish(self) -> None:
        """At session end: beats the timer still held are recorded, and the beats still
        waiting for look-ahead are classified now."""
        self._release_held(reconnect=False)
        self._finalise(self.analyzer.gap(self.now_t_s()))

    def release(self) -> None:
        """After the session is closed and stored: drop the analysis state. The daemon keeps
        every closed session's pipeline for its summary, and a long session's analyzer holds
        a few hundred kB: a daemon left running for weeks kept all of them."""
        p = self.settings.processing
        self.analyzer = LiveAnalyzer(
            window_s=p.window_s,
            baseline_s=p.baseline_s,
            correction=p.correction,
            rr_max_ms=p.rr_max_ms,
            rr_min_ms=p.rr_min_ms,
        )
        self.last_snapshot = None
        self._pending_seqs.clear()
        self._classified.clear()

    def marker(self, kind: str, t_s: float) -> None:
        self.analyzer.marker(t_s, kind)

    def on_notification(self, n: Notification) -> list[float]:
        """Record the notification's beats and publish its ``beat`` message; return the beat
        times recorded now (s since session start).

        A notification the beat timer holds back (later than its lag limit: beats lost, or
        only held back by the host and about to arrive in a burst) is recorded and published
        when the timer has decided, with the notification that decided it (docs/timing.md):
        every notification still gets one beat message, its ``beat_t_s`` beside its
        ``rr_ms``."""
        m = n.measurement
        self.follow_wall_clock(n.recv_ts_ms / 1000.0, n.recv_mono_s)
        self.last_contact = m.contact
        self.last_hr = m.hr_bpm
        # Session time of arrival, on the elapsed-time clock (immune to wall-clock steps, and
        # counting through a suspend: :mod:`sensors.clock`).
        arrival_s = max(0.0, (n.recv_mono_s - self.started_mono_s) * self.time_scale)
        self._watch_rr(arrival_s, bool(m.rr_ms), m)
        n_gaps = len(self.timer.gaps)
        timed, _gap = self.timer.push(arrival_s, m.rr_ms)
        self._held.append(n)
        if self.timer.holding:
            return []  # decided with a later notification (or at a reconnect, at the end)
        held, self._held = self._held, []
        return self._record(held, timed, self.timer.gaps[n_gaps:])

    def _release_held(self, reconnect: bool) -> None:
        """Record and publish the notifications the beat timer still holds, decided now
        with what is known: at a reconnect (then the timer re-anchors the next one) or at
        the session's end."""
        n_gaps = len(self.timer.gaps)
        timed, _gap = self.timer.mark_gap() if reconnect else self.timer.flush()
        held, self._held = self._held, []
        if held:
            self._record(held, timed, self.timer.gaps[n_gaps:])

    def _publish_beat(self, n: Notification, times: list[float]) -> None:
        """The notification's ``beat`` message, with the classes that became final."""
        m = n.measurement
        beat = BeatPayload(
            ts=n.recv_ts_ms,
            seq=self.out.beat_seq,
            hr=m.hr_bpm,
            rr_ms=list(m.rr_ms),
            beat_t_s=times,
            classified=self.take_classified(),
            contact=m.contact,
            session=self.session_id,
        )
        self.out.beat_seq += 1
        self.out.publish("beat", beat.to_json(), 0)

    def _record(
        self, notes: Sequence[Notification], timed: Sequence[TimedBeat], gaps: Sequence[TimingGap]
    ) -> list[float]:
        """Store ``notes``' beats (timed: ``timed``, in order) and the timer's ``gaps``,
        feed the analyzer, publish one beat message per notification; return the times."""
        if timed:
            self._last_beat_mono_s = notes[-1].recv_mono_s
        for gap in gaps:
            self._record_gap(gap)
        gaps_at = collections.deque(g.start_t_s for g in gaps)
        rows: list[BeatRow] = []
        times: list[float] = []
        # What the analyzer gets, in beat order: (seq, t, rr) to push, or (None, t, nan) for
        # a gap, per notification (with its contact). Run after the beats are handed to the
        # store, so a failure of the analysis cannot lose them.
        todos: list[tuple[bool | None, list[tuple[int | None, float, float]]]] = []
        per_note: list[list[float]] = []
        beats = iter(timed)
        for n in notes:
            m = n.measurement
            warming = n.recv_mono_s < self.warmup_until_mono_s
            todo: list[tuple[int | None, float, float]] = []
            todos.append((m.contact, todo))
            per_note.append([])
            for raw, tb in zip(m.rr_raw, beats, strict=False):
                t = tb.t_s
                while gaps_at and t > gaps_at[0]:
                    # The windows restart at the gap, after the beats before it (an interval
                    # that cannot have fit leaves a gap behind beats of its own notification).
                    todo.append((None, gaps_at.popleft(), math.nan))
                self.beat_t_s = t
                cls = self._classify(tb, warming, todo)
                rows.append(
                    BeatRow(
                        seq=self.seq,
                        beat_t_s=t,
                        recv_ts_ms=n.recv_ts_ms,
                        rr_ms=tb.rr_ms,
                        rr_raw=raw,
                        hr_bpm=m.hr_bpm,
                        contact=m.contact,
                        beat_class=cls,
                        timing_uncertain=tb.uncertain,
                    )
                )
                times.append(round(t, 4))
                per_note[-1].append(round(t, 4))
                self._prev_rr_ms = tb.rr_ms
                if self.rr_source == "ecg":
                    pass  # recorded beside the ECG beats that drive the indices (class empty)
                elif cls is None:
                    todo.append((self.seq, t, tb.rr_ms))
                else:
                    self._classified.append(
                        ClassifiedBeat(beat_t_s=round(t, 4), cls=cls, rr_ms=None)
                    )
                self.seq += 1
        assert next(beats, None) is None and len(times) == len(timed)
        while gaps_at:
            todos[-1][1].append((None, gaps_at.popleft(), math.nan))
        if rows:
            self.writer.add_beats(self.session_id, rows)
        for (contact, todo), n, t_s in zip(todos, notes, per_note, strict=True):
            self._analyse(todo, contact, emit=True)
            self._publish_beat(n, t_s)
        return times

    def _classify(
        self, tb: TimedBeat, warming: bool, todo: list[tuple[int | None, float, float]]
    ) -> BeatClass | None:
        """The class a beat is stored with before the analysis (None: the analysis decides);
        an implausible interval restarts the windows (a gap in ``todo``)."""
        p = self.settings.processing
        cls: BeatClass | None = None
        if warming:
            cls = BeatClass.WARMUP
        elif not p.rr_min_ms <= tb.rr_ms <= p.rr_max_ms and not (
            # Perhaps a missed beat at a slow heart, or a piece of an interval a spurious
            # beat split (right after a plausible interval: not noise): the correction
            # splits or merges it, or the analyzer makes it implausible after all
            # (LiveAnalyzer.rr_max_ms / rr_min_ms), as settle analyze does.
            p.correction
            and self.rr_source == "hrs"
            and may_be_repaired(tb.rr_ms, self._prev_rr_ms, p.rr_min_ms, p.rr_max_ms)
        ):
            cls = BeatClass.IMPLAUSIBLE
            if self.rr_source == "hrs":
                # No successive difference may span an interval nobody can interpret.
                todo.append((None, tb.t_s, math.nan))
        return cls

    def _analyse(
        self, todo: Sequence[tuple[int | None, float, float]], contact: bool | None, *,
        emit: bool = False,
    ) -> None:  # fmt: skip
        """Feed the analyzer ``todo`` — ``(seq, t, rr)`` to push, ``(None, t, nan)`` for a
        gap — after the beats were handed to the store; with ``emit``, publish the indices
        steps the beats reached. A failure of the analysis never ends the recording."""
        try:
            for seq, t, rr in todo:
                # Without correction a beat is final as it is pushed: a step it is past is
                # taken first, so the window ends at the step, as in `settle analyze`. (With
                # correction the look-ahead holds the newest 3 beats back anyway, and pushing
                # first finalises the beats up to the step.)
                while emit and not self.analyzer.correction and t > self.next_indices_t_s:
                    self._emit_next_indices()
                if seq is None:
                    self._finalise(self.analyzer.gap(t))
                else:
                    self._pending_seqs.append(seq)
                    self._finalise(self.analyzer.push_beat(t, rr, contact))
            while emit and self.beat_t_s is not None and self.beat_t_s >= self.next_indices_t_s:
                self._emit_next_indices()
        except Exception:  # a bug in the analysis must not end the recording
            self._analysis_failed()

    def _emit_next_indices(self) -> None:
        t_next = self.next_indices_t_s
        self.next_indices_t_s += self.settings.processing.indices_every_s
        self._emit_indices(t_next)

    def _analysis_failed(self) -> None:
        """The analysis raised: log it (the first time with the traceback; then at most once
        a minute, with a count), restart every window as after a gap, and go on recording.
        The beats are already stored."""
        self._analysis_errors += 1
        now = time.monotonic()
        if self._analysis_errors == 1:
            log.exception(
                "session %s: the analysis failed at t=%.1f s; beats are still recorded, the "
                "indices restart (please report this with the log)",
                self.session_id,
                self.beat_t_s or 0.0,
            )
            self._analysis_logged_mono = now
        elif now - self._analysis_logged_mono >= ANALYSIS_ERROR_EVERY_S:
            log.error(
                "session %s: the analysis failed again at t=%.1f s (%d times in all)",
                self.session_id,
                self.beat_t_s or 0.0,
                self._analysis_errors,
            )
            self._analysis_logged_mono = now
        self._pending_seqs.clear()
        with contextlib.suppress(Exception):
            self.analyzer.gap(self.now_t_s())

    def on_ecg_beats(self, beats: Sequence[tuple[float, float | None, bool]]) -> None:
        """Record R peaks of the raw ECG, ``(t_s, rr_ms, plausible)`` in session time, oldest
        first; with ``processing.rr_source = "ecg"`` they also drive the indices."""
        p = self.settings.processing
        if p.rr_source == "ecg" and self.rr_source == "hrs" and beats:
            self._switch_source("ecg", "RR from the raw ECG (R peaks) drives the indices")
        warming = host_clock.elapsed_s() < self.warmup_until_mono_s
        rows: list[EcgBeatRow] = []
        todo: list[tuple[int | None, float, float]] = []  # as in on_notification
        for t, rr, plausible in beats:
            cls: BeatClass | None = None
            if self.rr_source == "ecg" and t > self._ecg_from_t_s:
                if rr is None:
                    # First peak after the stream (re)started: no interval, a new segment.
                    todo.append((None, t, math.nan))
                elif warming:
                    cls = BeatClass.WARMUP
                elif not plausible or not p.rr_min_ms <= rr <= p.rr_max_ms:
                    cls = BeatClass.IMPLAUSIBLE
                    todo.append((None, t, math.nan))
                else:
                    todo.append((self.ecg_seq, t, rr))
                    # Keep feeding from here even if older peaks arrive late.
                    self._ecg_from_t_s = t
                if cls is not None:
                    self._classified.append(
                        ClassifiedBeat(beat_t_s=round(t, 4), cls=cls, rr_ms=None)
                    )
            elif not plausible:
                # Not driving the indices, but the detector's verdict is kept (a "peak" on
                # the strap's start-up spikes): CSV/JSON users can leave it out.
                cls = BeatClass.IMPLAUSIBLE
            rows.append(EcgBeatRow(self.ecg_seq, t, rr, beat_class=cls))
            self.ecg_seq += 1
        if rows:
            self.writer.add_ecg_beats(self.session_id, rows)
        self._analyse(todo, self.last_contact)

    def ecg_failed(self, reason: str) -> None:
        """The raw ECG stopped for good (not a reconnect): the strap's RR drives again."""
        if self.rr_source == "ecg":
            self._switch_source(
                "hrs", f"raw ECG stopped ({reason}); the strap's RR drives the indices"
            )

    def _switch_source(self, source: Literal["hrs", "ecg"], why: str) -> None:
        # Beats of the old source still waiting for look-ahead are finalised first (into the
        # old source's table); no metric spans the switch.
        self._analyse([(None, self.now_t_s(), math.nan)], None)
        self.rr_source = source
        self._ecg_from_t_s = self.now_t_s()
        log.info("session %s: %s", self.session_id, why)
        self.event("rr-source", why)

    def take_classified(self) -> list[ClassifiedBeat]:
        """Beats classified since the last call (for the next beat message)."""
        out, self._classified = self._classified, []
        return out

    def _finalise(self, beats: Sequence[ProcessedBeat]) -> None:
        """Map the analyzer's final beats back to stored beats (by order) and annotate them.
        Beats the correction inserted (a split missed beat) have no stored row."""
        notes: list[BeatAnnotation] = []
        for b in beats:
            if not math.isfinite(b.rr_raw_ms):
                continue  # inserted by splitting a missed beat: part of the stored one
            if not self._pending_seqs:
                break
            seq = self._pending_seqs.popleft()
            corrected = b.rr_ms if math.isfinite(b.rr_ms) else None
            notes.append(BeatAnnotation(seq, corrected, BeatClass(b.beat_class)))
            self._classified.append(
                ClassifiedBeat(
                    beat_t_s=round(b.t_s, 4),
                    cls=b.beat_class,
                    rr_ms=None if corrected is None else round(corrected, 3),
                )
            )
        if notes:
            if self.rr_source == "ecg":
                self.writer.annotate_ecg(self.session_id, notes)
            else:
                self.writer.annotate(self.session_id, notes)

    def _emit_indices(self, t_s: float) -> None:
        snap = self.analyzer.indices(t_s)
        self.last_snapshot = snap
        td = snap.td
        state = _SETTLING_STATE[snap.baseline]
        by_kind: dict[str, list[EventResponse]] = {}
        for r in snap.responses:
            # A response not read (a gap or an irregular rhythm over its 30 s: all NaN) is in
            # neither the means nor ``n``; its kind is listed still, with n 0.
            read = by_kind.setdefault(r.kind, [])
            if math.isfinite(r.peak_d_hr_bpm):
                read.append(r)
        has_trend = math.isfinite(snap.trend.slope_per_min)
        payload = IndicesPayload(
            ts=self.now_ms(),
            seq=self.out.indices_seq,
            session=self.session_id,
            t_s=round(t_s, 3),
            window_s=self.settings.processing.window_s,
            n=td.n,
            hr_bpm=_num(td.hr_bpm),
            rmssd_ms=_num(td.rmssd_ms),
            ln_rmssd=_num(td.ln_rmssd),
            sdnn_ms=_num(td.sdnn_ms),
            pnn50_pct=_num(td.pnn50_pct),
            settling=_num(snap.score) if snap.usable else None,
            settling_state=state,
            components={
                "z_hr": _num(snap.z_hr),
                "z_ln_rmssd": _num(snap.z_ln_rmssd),
                "z_slow": _num(snap.z_slow),
            },
            coherence=_num(snap.coherence),
            resp_rate_bpm=_num(snap.resp_rate_bpm),
            lf_ms2=_num(snap.lf_ms2),
            hf_ms2=_num(snap.hf_ms2),
            lf_hf=_num(snap.lf_hf),
            lf64_ms2=_num(snap.lf64_ms2),
            # Fewer than 4 block means: no slope, no test, so no trend yet (not "steady").
            trend=snap.trend.label if has_trend else "unknown",
            trend_slope_per_min=_num(snap.trend.slope_per_min),
            trend_slope_ci_low_per_min=_num(snap.trend.ci_low),
            trend_slope_ci_high_per_min=_num(snap.trend.ci_high),
            trend_confidence=_num(snap.trend.confidence) if has_trend else None,
            quality=_num(snap.quality),
            usable=snap.usable,
            reason=snap.reason,
            warming_up=snap.warming_up,
            catching_up_t_s=_num(snap.catching_up_t_s),
            responses_by_kind={
                kind: {
                    "n": float(len(rs)),
                    "peak_d_hr_bpm": _mean([r.peak_d_hr_bpm for r in rs]),
                    "peak_d_ln_rmssd": _mean([r.peak_d_ln_rmssd for r in rs]),
                    "recovery_s": _mean([r.recovery_s for r in rs]),
                }
                for kind, rs in by_kind.items()
            },
        )  # fmt: skip
        self.out.indices_seq += 1
        data = payload.to_json()
        self.out.publish("indices", data, 1)
        self.writer.add_indices(
            self.session_id,
            IndicesRow(
                t_s=payload.t_s,
                ts_ms=payload.ts,
                payload_json=data.decode(),
                hr_bpm=payload.hr_bpm,
                rmssd_ms=payload.rmssd_ms,
                ln_rmssd=payload.ln_rmssd,
                sdnn_ms=payload.sdnn_ms,
                pnn50_pct=payload.pnn50_pct,
                settling=payload.settling,
            ),
        )
        if self.on_indices is not None:
            self.on_indices(payload)
        changed = False
        if snap.baseline == "complete" and self.baseline == "pending":
            self.baseline = "complete"
            self.event("baseline-complete", t_s=t_s)
            changed = True
        # Too few beats yet (start, reconnect) is a wait, not a change of rhythm: no event.
        if snap.usable != self.usable and td.n > 0 and not snap.warming_up:
            self.usable = snap.usable
            if snap.usable:
                self.event("rhythm-usable", t_s=t_s)
            else:
                self.event("unusable-rhythm", snap.reason or "", t_s=t_s)
        if snap.catching_up_t_s != self.catching_up_t_s:
            # Detected, or reset by a hold-start (then null until caught up after it): the
            # retained session message kept the first time for good (4:05 after a hold at
            # 12:50 whose catching-up the indices put at 12:55).
            self.catching_up_t_s = snap.catching_up_t_s
            if snap.catching_up_t_s is not None:
                mins, secs = divmod(int(snap.catching_up_t_s), 60)
                self.event("catching-up", f"physiology caught up at {mins}:{secs:02d}",
                           t_s=snap.catching_up_t_s)  # fmt: skip
            changed = True
        if changed:
            self.publish_session("running")

    def marker_row(self, kind: str, text: str, source: str) -> MarkerRow:
        """A marker at the current beat time (the session's one time base)."""
        return MarkerRow(
            t_s=self.now_t_s(),
            ts_ms=self.now_ms(),
            kind=kind,
            text=text,
            source=MarkerSource(source),
        )


def _create_rescue(session_id: str, text: str, where: Sequence[Path]) -> Path:
    """Create ``settle-unsaved-<id>.csv`` holding ``text`` (mode 0600) in the first directory
    of ``where`` that takes all of it; OSError (the last one) if none does."""
    data = text.encode()
    error: OSError = FileNotFoundError("no directory to write the rescue file in")
    for directory in where:
        path = directory / rescue_name(session_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            error = exc
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                # On the disk before it is named as holding the beats: a power cut after
                # the line saying so must not leave an empty file (ext4 allocates late).
                os.fsync(f.fileno())
        except OSError as exc:  # e.g. that disk is full too: try the next directory
            error = exc
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        _fsync_dir(directory)
        return path
    raise error


def _fsync_dir(directory: Path) -> None:
    """Make a new file's name in ``directory`` durable (its data is fsynced already); best
    effort: some file systems refuse to sync a directory, and the file is whole anyway."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _append(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` whole, or leave the file as it was and raise OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        data = text.encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # no half line: the whole file moves elsewhere
            raise
    finally:
        os.close(fd)
