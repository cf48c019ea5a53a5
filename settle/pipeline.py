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
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from feedback.mqtt import MqttLink
from feedback.payloads import (
    EventPayload,
    IndicesPayload,
    Intention,
    SessionPayload,
)
from processing.settling import SettlingIndex
from processing.timedomain import RollingTimeDomain, TimeDomain
from sensors.strap import Notification
from sensors.timing import BeatTimer, TimingGap
from sessions.store import BeatRow, IndicesRow, MarkerRow, MarkerSource, SessionStore
from settle.config import Settings
from settle.errors import StoreError

log = logging.getLogger(__name__)

SessionStateName = Literal["running", "stopped", "interrupted"]


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


@dataclass
class DeviceOutput:
    """One device's MQTT topics and its stream counters (continuous across sessions)."""

    link: MqttLink | None
    base: str
    device_id: str
    beat_seq: int = 0
    indices_seq: int = 0
    event_seq: int = 0

    def topic(self, leaf: str) -> str:
        return f"{self.base}/{self.device_id}/{leaf}"

    def publish(self, leaf: str, payload: bytes | str, qos: int, retain: bool = False) -> None:
        if self.link is not None:
            self.link.publish(self.topic(leaf), payload, qos=qos, retain=retain)

    def event(self, session: str | None, kind: str, t_s: float, text: str = "", source: str = "",
              ts: int | None = None) -> None:  # fmt: skip
        ev = EventPayload(
            ts=ts if ts is not None else int(time.time() * 1000),
            seq=self.event_seq, session=session, kind=kind, t_s=round(t_s, 3),
            text=text, source=source,
        )  # fmt: skip
        self.event_seq += 1
        self.publish("event", ev.to_json(), 1)


@dataclass
class BeatWriter:
    """Buffers rows and commits them at least every ``flush_every_s`` (from :meth:`run`).

    A failing store (disk full, read-only) is reported once per outage and the rows stay in
    memory to be retried: measuring goes on and nothing is dropped.
    """

    store: SessionStore
    flush_every_s: float = 1.0
    beats: dict[str, list[BeatRow]] = field(default_factory=dict)
    indices: dict[str, list[IndicesRow]] = field(default_factory=dict)
    failing: bool = False
    stored_beats: int = 0

    def add_beats(self, session_id: str, rows: Sequence[BeatRow]) -> None:
        self.beats.setdefault(session_id, []).extend(rows)

    def add_indices(self, session_id: str, row: IndicesRow) -> None:
        self.indices.setdefault(session_id, []).append(row)

    async def flush(self) -> None:
        beats, self.beats = self.beats, {}
        indices, self.indices = self.indices, {}
        try:
            for sid, rows in beats.items():
                await asyncio.to_thread(self.store.add_beats, sid, rows)
                self.stored_beats += len(rows)
            for sid, irows in indices.items():
                await asyncio.to_thread(self.store.add_indices, sid, irows)
        except StoreError as exc:
            # Put everything back (in order, before anything newer) to retry next time;
            # add_beats is idempotent on (session, seq), so a partial success is harmless.
            for sid, rows in beats.items():
                self.beats[sid] = rows + self.beats.get(sid, [])
            for sid, irows in indices.items():
                self.indices[sid] = irows + self.indices.get(sid, [])
            if not self.failing:
                log.error("cannot write to the session store (%s); keeping data in memory", exc)
            self.failing = True
            return
        if self.failing:
            log.info("session store writable again; buffered data saved")
        self.failing = False

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
        self.rolling = RollingTimeDomain(window_s=p.window_s)
        self.settling = SettlingIndex(baseline_s=p.baseline_s)
        self.seq = 0
        """Next beat sequence number (= beats recorded so far)."""
        self.beat_t_s: float | None = None
        self.next_indices_t_s = p.indices_every_s
        self.last_td: TimeDomain | None = None
        self.baseline: Literal["pending", "collecting", "complete"] = "pending"
        self.last_contact: bool | None = None
        self.gaps: list[tuple[float, float, str]] = []
        """(start_t_s, end_t_s, reason) of every interruption: beats there are unknown."""
        self.timer = BeatTimer()
        self.started_mono_s = time.monotonic() if started_mono_s is None else started_mono_s

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def now_t_s(self) -> float:
        """The session's current time: the latest beat time (the one time base)."""
        return self.beat_t_s or 0.0

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
            n_beats=self.seq,
        )

    def publish_session(self, state: SessionStateName, stopped_ms: int | None = None) -> None:
        self.out.publish("session", self.session_payload(state, stopped_ms).to_json(), 1, True)

    def event(self, kind: str, text: str = "", source: str = "", t_s: float | None = None) -> None:
        t = self.now_t_s() if t_s is None else t_s
        self.out.event(self.session_id, kind, t, text, source, ts=self.now_ms())

    def restart_window(self, reason: str = "reconnect") -> None:
        """After a reconnect: the next beats are re-anchored to their arrival time, the gap
        is recorded (``gaps``, and an event once its end is known) and no successive
        difference ever spans it."""
        self.rolling.reset()
        self.timer.mark_gap()

    def _record_gap(self, gap: TimingGap) -> None:
        self.gaps.append((gap.start_t_s, gap.end_t_s, gap.reason))
        self.rolling.reset()
        span = gap.end_t_s - gap.start_t_s
        self.event("gap", f"{gap.reason}: {span:.1f} s without beats", t_s=gap.end_t_s)

    def start_baseline(self) -> None:
        self.settling.start_baseline(self.now_t_s())
        self.baseline = "collecting"
        self.event("baseline-start")
        self.publish_session("running")

    def stop_baseline(self) -> None:
        """Raises ValueError when no baseline is being collected."""
        self.settling.stop_baseline(self.now_t_s())
        self.baseline = "complete" if self.settling.state == "running" else "pending"
        self.event("baseline-complete" if self.baseline == "complete" else "baseline-too-short")
        self.publish_session("running")

    def on_notification(self, n: Notification) -> list[float]:
        """Record the notification's beats; return their beat times (s since session start)."""
        m = n.measurement
        self.last_contact = m.contact
        # Session time of arrival, from the monotonic clock (immune to wall-clock steps).
        arrival_s = max(0.0, (n.recv_mono_s - self.started_mono_s) * self.time_scale)
        timed, gap = self.timer.push(arrival_s, m.rr_ms)
        if gap is not None:
            self._record_gap(gap)
        rows: list[BeatRow] = []
        times: list[float] = []
        for raw, tb in zip(m.rr_raw, timed, strict=True):
            t = tb.t_s
            self.beat_t_s = t
            rows.append(
                BeatRow(
                    seq=self.seq,
                    beat_t_s=t,
                    recv_ts_ms=n.recv_ts_ms,
                    rr_ms=tb.rr_ms,
                    rr_raw=raw,
                    hr_bpm=m.hr_bpm,
                    contact=m.contact,
                )
            )
            times.append(round(t, 4))
            self.seq += 1
            self.last_td = self.rolling.update(t, tb.rr_ms)
        if rows:
            self.writer.add_beats(self.session_id, rows)
        while self.beat_t_s is not None and self.beat_t_s >= self.next_indices_t_s:
            self._emit_indices(self.next_indices_t_s)
            self.next_indices_t_s += self.settings.processing.indices_every_s
        return times

    def _emit_indices(self, t_s: float) -> None:
        td = self.last_td
        if td is None:
            return
        snap = self.settling.update(t_s, td)
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
            settling=_num(snap.score),
            settling_state=snap.state,
            components={k: _num(v) for k, v in snap.components.items()},
        )
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
        if snap.state == "running" and self.baseline == "pending":
            self.baseline = "complete"
            self.publish_session("running")
            self.event("baseline-complete", t_s=t_s)

    def marker_row(self, kind: str, text: str, source: str) -> MarkerRow:
        """A marker at the current beat time (the session's one time base)."""
        return MarkerRow(
            t_s=self.now_t_s(),
            ts_ms=self.now_ms(),
            kind=kind,
            text=text,
            source=MarkerSource(source),
        )
