"""Raw ECG of a Polar H10 (PMD) alongside the Heart Rate Service: frames → session store,
ECG-derived beats → ``<base>/<dev>/ecg_beat``.

The strap's ECG clock is mapped to session time by :class:`sensors.timing.FrameClock`, fed
each frame's receive time (not when it is processed): from the least-delayed frame so far
(frames are only ever late), its last sample at its arrival, and from then on the strap's own
nanosecond timestamps carry the timing (sample resolution, 7.7 ms at 130 Hz). A frame that
comes sooner after its timestamp than the mapping allows (by more than 8 ms + 5 ms × time
scale: the frames before it came late) pulls the mapping back; what is stored is not revised,
so the frame's samples at or before the newest stored one are not stored, and an R peak that
would go back is put 0.1 ms after the last one given out and flagged implausible (no analysis
measures it). A drifting strap clock is slewed (docs/timing.md).
Inside a frame the samples are spaced by the strap's real sample period, measured from
consecutive frames (time between their last samples / samples in the frame: 130.05–130.17 Hz
on real H10s, not the nominal 130 Hz), so a frame's samples join the previous frame's without a
step. A session keeps every sample from its t = 0 on, including the part of a frame that
straddles its start, and never a sample at or before one it already has.

Where the strap's clock steps (the PMD session compares timestamp and arrival-time changes,
see :mod:`sensors.ecg_stream`), the mapping starts afresh: the frame's last sample at its
arrival, but never before the samples already stored (the samples go on; only
their clock jumped). The seam is recorded as a gap (``raw ECG clock step``) with a ``gap`` event;
the R-peak detector sees the jump in its timestamps as a gap (no RR across it).

A strap without PMD simply has no ECG; a failing ECG stream never disturbs the heart-rate
stream on the same link. An ECG stream that stalls with the link up (no frame for
``stall_timeout_s``, 5 s) is restarted (STOP, a new PMD session, START) after a capped,
jittered backoff, at most :data:`ECG_RESTARTS` times in a row (a stream that then runs for
:data:`ECG_STEADY_S` is back, and a later stall gets them all again); each stall and failed
restart is one WARNING line, the stream coming back one INFO line, the first stall of a
streak and the giving up an ``ecg-stopped`` event (with ``rr_source = "ecg"`` the strap's RR
drive the indices meanwhile, the ECG's again from its first beat after a restart). A strap
whose ECG streamed before and has none at a reconnect is an ECG that stopped (an
``ecg-stopped`` event; with ``rr_source = "ecg"`` the strap's RR drive the indices again).
Frames the PMD session drops (malformed, out of order, or pushed out
by a backlog; a frame delivered twice is ignored, nothing lost) are counted per strap
(:meth:`EcgRecorder.dropped_frames`) and reported as one WARNING line at most a minute.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bleak import BleakClient

from feedback.payloads import EcgBeatPayload
from processing.ecg import RPeakDetector
from sensors.ecg_stream import (
    DroppedFrames,
    PmdSession,
    PmdStalled,
    PmdUnavailable,
    ReceivedFrame,
)
from sensors.pmd import EcgFrame
from sensors.timing import ECG_CLOCK_STEP, FrameClock
from sessions.store import GapRow
from settle.backoff import backoff_delay_s
from settle.errors import SensorError

if TYPE_CHECKING:
    from settle.daemon import StrapRuntime
    from settle.pipeline import BeatWriter, StrapPipeline

log = logging.getLogger(__name__)

NOMINAL_SAMPLE_PERIOD_NS = 1e9 / 130.0
"""The H10's nominal ECG sample period, ns (used until two consecutive frames measured it)."""
SAMPLE_PERIOD_NS = round(NOMINAL_SAMPLE_PERIOD_NS)
"""The nominal sample period rounded to whole ns."""
SAMPLE_RATE_TOLERANCE = 0.01
"""A frame-to-frame sample period further than this (relative) from the nominal one is not
the strap's rate but frames lost (or a clock step) between the two frames."""
RETIME_REPORT_S = 0.1
"""A re-timing (the offset pulled back by a less-delayed frame) at least this large, s, is
logged (INFO): the session's ECG before it was that late."""
ECG_STALL_S = 5.0
"""Wall seconds without an ECG frame, the link up, after which the stream is stalled."""
ECG_RESTARTS = 5
"""Restarts of a stalled ECG stream in a row before it is given up for the connection."""
ECG_RESTART_BASE_S = 2.0
"""Backoff before the first restart, wall s (doubling, capped at ECG_RESTART_CAP_S, with
jitter: :func:`settle.backoff.backoff_delay_s`)."""
ECG_RESTART_CAP_S = 30.0
ECG_STEADY_S = 60.0
"""A stream that delivered frames for this long (wall s) counts as back: restarts in a row
are counted from 0 again at its next stall."""


@dataclasses.dataclass(slots=True)
class _Progress:
    """What one connection's ECG recording keeps across restarts of its stream."""

    session_id: str | None = None
    newest_ns: int = -1
    """Newest sample stored for the session (session ns)."""
    newest_beat_s: float = -math.inf
    """Newest R peak given out for the session (session s)."""
    first_frame_mono_s: float | None = None
    """Arrival of the current stream's first frame (elapsed-time clock, s)."""
    last_frame_mono_s: float | None = None


def measured_sample_period_ns(previous_timestamp_ns: int, frame: EcgFrame) -> float | None:
    """The strap's sample period over ``frame``, ns: time from the previous frame's last sample
    to this frame's last sample, divided by this frame's samples; None unless the two frames
    are consecutive (within :data:`SAMPLE_RATE_TOLERANCE` of the nominal period)."""
    period = (frame.timestamp_ns - previous_timestamp_ns) / len(frame.samples_uv)
    if abs(period / NOMINAL_SAMPLE_PERIOD_NS - 1.0) > SAMPLE_RATE_TOLERANCE:
        return None
    return period


def samples_after(
    frame: EcgFrame,
    offset_ns: int,
    after_ns: int,
    period_ns: float = NOMINAL_SAMPLE_PERIOD_NS,
    ramp_ns: int = 0,
) -> tuple[list[int], list[int]]:
    """The frame's sample times on the session time base (strap ns + ``offset_ns``) and its
    samples (µV), keeping only those later than ``after_ns`` (−1 before the first: t ≥ 0).

    The last sample is at the frame's timestamp, the others ``period_ns`` apart before it
    (rounded to whole ns, not accumulated). ``ramp_ns``, a drift correction by which the
    offset moved since the frame before, is phased in over the frame's samples (the first
    gets 1/n of it): applied at once it made one sample interval 280 µs (3.6 %) off.
    """
    n = len(frame.samples_uv)
    last = frame.timestamp_ns + offset_ns
    t_all = [last - round((n - 1 - i) * (period_ns + ramp_ns / n)) for i in range(n)]
    skip = bisect.bisect_right(t_all, after_ns)
    return t_all[skip:], list(frame.samples_uv[skip:])


class EcgRecorder:
    """Streams one strap's ECG while it is connected (see the module docstring)."""

    def __init__(
        self,
        writer: BeatWriter,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.sleep = sleep
        self.stall_timeout_s = ECG_STALL_S
        self.restarts = ECG_RESTARTS
        self.restart_base_s = ECG_RESTART_BASE_S
        self.restart_cap_s = ECG_RESTART_CAP_S
        self.steady_s = ECG_STEADY_S
        self.frames = 0
        self.beats = 0
        self._dropped: dict[str, DroppedFrames] = {}  # per strap, across its connections
        self.recording: set[str] = set()
        """Straps (device ids) whose raw ECG streams now (the dashboard says so)."""
        self._streamed: set[str] = set()
        """Straps whose raw ECG has streamed at some time: one that has none at a reconnect
        stopped (said, and the session falls back to the strap's RR)."""

    @property
    def dropped(self) -> int:
        """ECG frames dropped by the PMD sessions of every strap (malformed, out of order, or
        pushed out by a backlog)."""
        return sum(d.total for d in self._dropped.values())

    def dropped_frames(self, device_id: str) -> int:
        """ECG frames dropped so far for one strap."""
        d = self._dropped.get(device_id)
        return 0 if d is None else d.total

    async def run(self, rt: StrapRuntime, client: BleakClient) -> None:
        """Record the strap's ECG for as long as the link lasts (cancel to stop), restarting
        a stream that stalls (see the module docstring)."""
        dev = rt.device_id or client.address
        dropped = self._dropped.setdefault(dev, DroppedFrames(dev))
        progress = _Progress()
        failed = 0  # restarts in a row that did not bring the stream back for steady_s
        restarting = False
        while True:
            try:
                await self._stream(rt, client, dev, dropped, progress, failed if restarting else 0)
                return
            except PmdStalled as exc:
                why = exc.reason
            except SensorError as exc:
                if not restarting or not client.is_connected:
                    self._failed(rt, dev, exc)
                    return
                why = exc.reason  # a restart that failed: tried again, within the bound
            except Exception:
                # The daemon awaits this task when the link closes: a bug here must not take
                # the strap's heart rate, its session and the daemon down with the ECG.
                log.exception("%s: raw ECG stopped by an internal error; heart rate continues", dev)
                self._stopped(rt, "internal error")
                return
            first, last = progress.first_frame_mono_s, progress.last_frame_mono_s
            if first is not None and last is not None and last - first >= self.steady_s:
                failed = 0  # it had come back: a new stall, not one more failed restart
            if failed >= self.restarts:
                log.warning(
                    "%s: raw ECG stopped: %d restarts did not bring it back (latest: %s); "
                    "heart rate continues",
                    dev, failed, why,
                )  # fmt: skip
                self._stopped(rt, f"{why}; {failed} restarts did not bring it back")
                return
            delay = backoff_delay_s(failed, base_s=self.restart_base_s, cap_s=self.restart_cap_s)
            what = f"restart {failed} of {self.restarts} failed" if failed else "stalled"
            log.warning(
                "%s: raw ECG %s (%s); restarting it in %.1f s (restart %d of %d); heart rate "
                "continues",
                dev, what, why, delay, failed + 1, self.restarts,
            )  # fmt: skip
            if failed == 0 and rt.session is not None:
                rt.session.event(
                    "ecg-stopped", f"raw ECG stalled ({why}); restarting it; heart rate continues"
                )
                rt.session.ecg_failed(why)
            progress.first_frame_mono_s = progress.last_frame_mono_s = None
            restarting = True
            await self.sleep(delay)
            failed += 1

    async def _stream(
        self,
        rt: StrapRuntime,
        client: BleakClient,
        dev: str,
        dropped: DroppedFrames,
        progress: _Progress,
        restart: int,
    ) -> None:
        """One PMD session: set up, START, record until the stream ends (restart: which
        restart of a stalled stream this is, 0 for the connection's first start)."""
        # Sessions share the daemon's time scale (virtual straps at --speed X).
        scale = rt.session.time_scale if rt.session is not None else 1.0
        pmd_session = PmdSession(
            client,
            sensor_id=dev,
            dropped=dropped,
            time_scale=scale,
            stall_timeout_s=self.stall_timeout_s,
        )
        async with pmd_session as pmd:
            await pmd.start_ecg()
            if not restart:
                log.info("%s: recording raw ECG (Polar PMD, 130 Hz)", dev)
            self.recording.add(dev)
            self._streamed.add(dev)
            try:
                await self._record(rt, pmd, progress, restart)
            finally:
                self.recording.discard(dev)

    def _failed(self, rt: StrapRuntime, dev: str, exc: SensorError) -> None:
        """The ECG could not be started, or ended with the link (not a stall)."""
        if isinstance(exc, PmdUnavailable):
            if dev in self._streamed:
                # It streamed on an earlier connection (a features read that came back empty
                # or garbled at a reconnect): the ECG stopped, as for any other failure. With
                # rr_source = "ecg" the strap's RR drive the indices again: they were recorded
                # but never analysed (indices "warming up", n = 0, for as long as it lasted).
                log.warning("%s: raw ECG stopped (%s); heart rate continues", dev, exc.reason)
                self._stopped(rt, exc.reason)
            elif rt.session is not None and rt.session.settings.processing.rr_source == "ecg":
                log.warning(
                    "%s: rr_source is ecg but the strap has no raw ECG (%s); using its RR",
                    dev,
                    exc.reason,
                )
            else:
                log.debug("%s: no Polar PMD service; heart rate only", dev)
            return
        log.warning("%s: raw ECG stopped (%s); heart rate continues", dev, exc.reason)
        self._stopped(rt, exc.reason)

    @staticmethod
    def _stopped(rt: StrapRuntime, reason: str) -> None:
        """Tell the session (an ``ecg-stopped`` event: the dashboard, MQTT) — not only the
        log: a researcher recording an H10 for its ECG saw nothing of it there."""
        if rt.session is not None:
            rt.session.event("ecg-stopped", f"raw ECG stopped ({reason}); heart rate continues")
            rt.session.ecg_failed(reason)

    async def _record(
        self, rt: StrapRuntime, pmd: PmdSession, progress: _Progress, restart: int
    ) -> None:
        detector = RPeakDetector()
        # Strap ns → host elapsed ns × time scale, from the least-delayed frame so far (a
        # session's t = 0 is subtracted below): kept across the sessions of the stream.
        clock = FrameClock(time_scale=pmd.time_scale)
        # The session, its newest sample and R peak: kept across restarts of the stream (the
        # restarted one never stores a sample or gives out a peak before them).
        p = progress
        period_ns = NOMINAL_SAMPLE_PERIOD_NS  # the strap's, from the last consecutive frames
        previous_ns: int | None = None  # timestamp of the previous frame
        previous_offset_ns: int | None = None  # the clock's offset for the previous frame
        async for received in pmd.frames():
            if p.first_frame_mono_s is None:
                p.first_frame_mono_s = received.recv_mono_s
                if restart:
                    log.info("%s: raw ECG streaming again (restart %d)", pmd.sensor_id, restart)
            p.last_frame_mono_s = received.recv_mono_s
            session = rt.session
            frame = received.frame
            stepped = received.clock_step_s is not None
            measured = None
            if previous_ns is not None and not stepped:
                # After a lost frame, the last measured period (the crystal did not change).
                measured = measured_sample_period_ns(previous_ns, frame)
                period_ns = measured or period_ns
            previous_ns = frame.timestamp_ns
            beats = detector.update(frame.samples_uv, t_last_ns=frame.timestamp_ns)
            if stepped:
                clock.reset()
            # Its receive time, not now: a frame waits in the PMD session's buffer.
            pulled_ns = clock.update(frame.timestamp_ns, _scaled_ns(received.recv_mono_s, pmd))
            if session is None or rt.output is None:
                continue
            start_ns = _scaled_ns(session.started_mono_s, pmd)
            ramp_ns = 0
            assert clock.offset_ns is not None
            if p.session_id != session.session_id:
                p.session_id = session.session_id
                p.newest_ns, p.newest_beat_s = -1, -math.inf
            elif stepped:
                clock.anchor(self._reanchor(session, received, p.newest_ns, period_ns) + start_ns)
            elif measured is not None and not pulled_ns and previous_offset_ns is not None:
                ramp_ns = clock.offset_ns - previous_offset_ns  # the servo's slew, if any
            previous_offset_ns = clock.offset_ns
            offset_ns = clock.offset_ns - start_ns
            t_ns, uv = samples_after(frame, offset_ns, p.newest_ns, period_ns, ramp_ns)
            if pulled_ns >= RETIME_REPORT_S * 1e9 and p.newest_ns >= 0:
                log.info(
                    "%s: raw ECG re-timed %.2f s earlier (the frames before came late); %d "
                    "samples not stored where the late ones already were",
                    pmd.sensor_id,
                    pulled_ns / 1e9,
                    len(frame.samples_uv) - len(t_ns),
                )
            if t_ns:
                self.writer.add_ecg(session.session_id, t_ns, uv)
                self.frames += 1
                p.newest_ns = t_ns[-1]
            timed: list[tuple[float, float | None, bool]] = []
            for b in beats:
                t_s, plausible = round((b.t_s * 1e9 + offset_ns) / 1e9, 4), b.plausible
                if t_s <= p.newest_beat_s:
                    # Re-timed earlier than a peak already given out: never back (as the
                    # strap's beats, docs/timing.md); flagged, so no analysis measures it.
                    t_s, plausible = round(p.newest_beat_s + 1e-4, 4), False
                p.newest_beat_s = t_s
                timed.append((t_s, b.rr_ms, plausible))
            session.on_ecg_beats(timed)
            for b, (t_s, _rr, plausible) in zip(beats, timed, strict=True):
                payload = EcgBeatPayload(
                    ts=int(self.clock() * 1000),
                    seq=rt.output.ecg_seq,
                    session=session.session_id,
                    t_s=t_s,
                    rr_ms=None if b.rr_ms is None else round(b.rr_ms, 2),
                    plausible=plausible,
                )
                rt.output.ecg_seq += 1
                rt.output.publish("ecg_beat", payload.to_json(), 0)
                self.beats += 1

    def _reanchor(
        self, session: StrapPipeline, received: ReceivedFrame, newest_ns: int, period_ns: float
    ) -> int:
        """The strap's clock stepped before ``received``: the new strap ns → session ns offset
        (its last sample at its arrival, after ``newest_ns``), the seam recorded as a gap."""
        frame = received.frame
        n = len(frame.samples_uv)
        arrival_s = (received.recv_mono_s - session.started_mono_s) * session.time_scale
        last_ns = max(int(arrival_s * 1e9), newest_ns + round(n * period_ns))
        if newest_ns >= 0:
            step_s = received.clock_step_s or 0.0
            start_s, end_s = newest_ns / 1e9, (last_ns - round((n - 1) * period_ns)) / 1e9
            self.writer.add_gap(session.session_id, GapRow(start_s, end_s, ECG_CLOCK_STEP))
            session.event(
                "gap",
                f"raw ECG re-anchored: the strap's clock jumped {step_s:+.1f} s",
                t_s=end_s,
            )
        return last_ns - frame.timestamp_ns


def _scaled_ns(mono_s: float, pmd: PmdSession) -> int:
    """A time on the host's elapsed-time clock as session-scale ns (× the time scale)."""
    return round(mono_s * pmd.time_scale * 1e9)
