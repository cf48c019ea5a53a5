"""Polar H10 raw ECG over PMD on a connected ``BleakClient`` (bleak's public API only).

Usage, on a client that is already connected::

    async with PmdSession(client, sensor_id="polar_h10_1234") as pmd:
        await pmd.start_ecg()
        async for beat in pmd.ecg_beats():        # ECG-derived RR, see processing.ecg
            if beat.plausible:
                use(beat.host_t_s, beat.rr_ms)
    # leaving the block stops the stream BEFORE the caller disconnects (H10 behaviour 4)

Setup order (Polar's PMD protocol; real exchanges in ``tests/test_pmd.py``): indications on
the control point FIRST (else the strap never replies), then read the features, then
subscribe to the data characteristic.
The ATT_MTU (the H10 needs ≥ 232) is not checked here: ``client.mtu_size`` cannot be trusted
(bleak's BlueZ backend always reports 23 although BlueZ negotiated a large MTU on connect), so
the strap's own answer decides: below 232 it refuses START with INVALID MTU (error 10), which
becomes a :class:`~sensors.pmd.PmdRequestRefused` saying so. Every control-point error code
becomes :class:`~sensors.pmd.PmdRequestRefused`
with a sentence saying what it means; no reply within ``reply_timeout_s`` becomes
:class:`PmdNoReply`, a reply that cannot be decoded :class:`PmdMalformedReply`. All are
:class:`~settle.errors.SensorError`. A START that fails is followed by a best-effort STOP (the
strap may have started anyway); "already in state" (a stream left running) is answered by
STOP and one more START.

The notification callbacks only decode and append to bounded buffers. A frame that is
malformed (``malformed``), earlier than the one before it (``out_of_order``) or pushed out
by a consumer that fell behind (``overflowed``) is dropped and counted in ``dropped``
(:class:`DroppedFrames`): one WARNING line at most a minute, the bytes at DEBUG only. A frame
with the previous one's timestamp is the same frame delivered twice: ignored (``repeated``,
DEBUG only), no data is lost.

The strap's clock can step (an app sets the H10's time, which restarts at 2019-01-01 after a
power-off). Each frame's timestamp change is compared with its arrival-time change (monotonic
clock, × ``time_scale``); where the timestamp moved more than ``CLOCK_STEP_S`` (2 s) further
than the arrival, or went back at all while the arrival moved on, the frame carries the step
(:attr:`ReceivedFrame.clock_step_s`) and the clock offset is measured afresh. A frame that
arrives later than its timestamp says (a link retrying) is not a step: frames are only ever late.
Nor is a jump forward of a whole number of frames (130 Hz nominal, within 0.2 % + 10 ms) by a
frame no earlier than the least-delayed frame since the last step allows: frames lost on the
link, the ones before them delivered late in a burst with it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError

import sensors.clock as host_clock
from processing.ecg import DetectorParams, EcgBeat, RPeakDetector
from sensors.drops import DropCounter
from sensors.pmd import (
    ECG_130HZ_14BIT,
    PMD_CONTROL_POINT_UUID,
    PMD_DATA_UUID,
    POLAR_EPOCH_UNIX_NS,
    EcgFrame,
    ErrorCode,
    MalformedPmd,
    MeasurementType,
    PmdCommand,
    PmdFeatures,
    PmdRequestRefused,
    PmdResponse,
    PmdSettings,
)
from settle.errors import SensorError

log = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000

CLOCK_STEP_S = 2.0
"""A strap timestamp change that disagrees with the arrival-time change by more than this
(plus ``CLOCK_STEP_HOST_S`` × time scale) is a step of the strap's clock, s."""
CLOCK_STEP_HOST_S = 0.01
"""Host part of the step threshold, wall s (an event-loop stall at a time-compressed speed)."""
ECG_NOMINAL_HZ = 130.0
"""The H10's nominal ECG rate (it measures 130.05–130.17 Hz): a frame of n samples spans
n / 130 s of strap time, for telling frames lost on the link from a step of the clock."""
FRAMES_LOST_TOLERANCE = 0.002
"""A forward jump within this fraction (+ 10 ms) of a whole number of frame spans is frames
lost: the H10's real rate is within 0.15 % of the nominal."""


class PmdUnavailable(SensorError):
    """The strap has no PMD service, or does not offer ECG over it."""


class PmdNoReply(SensorError):
    """The strap did not answer a control-point request in time."""


class PmdMalformedReply(SensorError):
    """The strap answered a control-point request with bytes that cannot be decoded."""


class PmdStalled(SensorError):
    """The ECG stream sent no frame for ``stall_timeout_s`` while the link stayed up."""


class DroppedFrames(DropCounter):
    """Counts one strap's dropped ECG frames and says so in the log without flooding it
    (:class:`~sensors.drops.DropCounter`: one WARNING line at once, then at most every
    ``warn_every_s`` with the number dropped since; :meth:`flush` reports the rest, a session
    calls it on close). The frame bytes go to DEBUG only (they are ECG: health data). Share
    one instance across a strap's connections so that reconnects do not multiply the
    warnings.
    """

    def __init__(
        self,
        sensor_id: str,
        *,
        warn_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            sensor_id,
            "raw ECG frame",
            "heart rate is unaffected",
            logger=log,
            warn_every_s=warn_every_s,
            clock=clock,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedFrame:
    """An ECG frame with its receive time: ``recv_ts_s`` host epoch seconds."""

    recv_ts_s: float
    frame: EcgFrame
    recv_mono_s: float = 0.0
    """Receive time on the host's elapsed-time clock (:mod:`sensors.clock`), s."""
    clock_step_s: float | None = None
    """The strap's clock stepped just before this frame, by about this much (timestamp change
    minus arrival-time change, s): its timestamp does not continue the previous frame's, so
    re-anchor it to its arrival. None: the clock ran on."""


@dataclasses.dataclass(frozen=True, slots=True)
class EcgRR:
    """One ECG-derived beat, on both clocks."""

    beat: EcgBeat
    """The detector's beat; ``beat.t_s`` is on the strap clock (s since 2000-01-01)."""
    host_t_s: float
    """Beat time on the host clock (epoch s): ``beat.t_s + clock_offset_s`` at detection."""
    recv_ts_s: float
    """Host time the frame that confirmed the beat was received (epoch s)."""

    @property
    def rr_ms(self) -> float | None:
        return self.beat.rr_ms

    @property
    def plausible(self) -> bool:
        return self.beat.plausible


class PmdSession:
    """PMD control and ECG streaming on one connected client. See the module docstring.

    Args:
        client: a connected ``BleakClient`` (any backend).
        sensor_id: used in error messages.
        reply_timeout_s: how long to wait for a control-point indication.
        buffer_frames: frames kept when the consumer falls behind (older ones are dropped).
        stall_timeout_s: :meth:`frames` raises if no frame arrives for this long.
        clock: host epoch clock (seconds), injectable for tests.
        dropped: where dropped frames are counted and reported (a new one if None).
        time_scale: strap seconds per host second (a time-compressed virtual strap), for
            comparing timestamp and arrival-time changes.
        monotonic: the host's elapsed-time clock (seconds; default
            :func:`sensors.clock.elapsed_s`), injectable for tests.
    """

    def __init__(
        self,
        client: BleakClient,
        *,
        sensor_id: str = "",
        reply_timeout_s: float = 5.0,
        buffer_frames: int = 256,
        stall_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        dropped: DroppedFrames | None = None,
        time_scale: float = 1.0,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.sensor_id = sensor_id or client.address
        self.reply_timeout_s = reply_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._clock = clock
        self._buffer_frames = buffer_frames
        self.features: PmdFeatures | None = None
        self.malformed = 0
        """Data or control-point notifications that could not be decoded (dropped)."""
        self.out_of_order = 0
        """Frames whose timestamp is before the previous frame's although they arrived at
        the same host time (not after it: a step back needs time to have moved on): dropped
        (their samples would overlap ones already kept)."""
        self.repeated = 0
        """Frames with the previous frame's timestamp (delivered twice): ignored, nothing lost."""
        self.clock_steps = 0
        """Steps of the strap's clock seen (see :attr:`ReceivedFrame.clock_step_s`)."""
        self.time_scale = time_scale
        self._monotonic = monotonic or (lambda: host_clock.elapsed_s())
        self.overflowed = 0
        """Frames dropped because the consumer fell behind by ``buffer_frames``."""
        self.dropped = dropped if dropped is not None else DroppedFrames(self.sensor_id)
        """Every dropped frame, counted and reported in the log (see :class:`DroppedFrames`)."""
        self.clock_offset_s: float | None = None
        """Host epoch s minus strap s, from the least-delayed frame so far (frames are only
        ever late, so the minimum of ``recv − timestamp`` is the best estimate)."""
        # a reply, or the decode error of a reply that could not be read
        self._replies: asyncio.Queue[PmdResponse | MalformedPmd] = asyncio.Queue()
        self._frames: collections.deque[ReceivedFrame] = collections.deque()
        # timestamp (strap ns) and monotonic receive time (s) of the newest frame kept
        self._last_frame: tuple[int, float] | None = None
        # least (arrival − timestamp) since the stream started or the clock stepped, strap s
        # (arrival on the monotonic clock × time_scale): frames are only ever late
        self._least_delay_s: float | None = None
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._streaming = False
        self._subscribed: list[str] = []
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Indications first, then features, then data notifications.

        No MTU check: ``client.mtu_size`` is 23 on bleak's BlueZ backend whatever BlueZ
        negotiated, so only the strap can tell (INVALID MTU, error 10, in reply to START).
        """
        client = self.client
        if client.services.get_characteristic(PMD_CONTROL_POINT_UUID) is None:
            raise PmdUnavailable(self.sensor_id, "the strap offers no Polar PMD service")
        try:
            await client.start_notify(PMD_CONTROL_POINT_UUID, self._on_control_point)
            self._subscribed.append(PMD_CONTROL_POINT_UUID)
            log.debug(
                "%s: the Bluetooth stack reports ATT MTU %d (not checked: BlueZ says 23 "
                "whatever it negotiated; the strap refuses PMD if it is too small)",
                self.sensor_id,
                client.mtu_size,
            )
            self.features = PmdFeatures.from_bytes(
                await client.read_gatt_char(PMD_CONTROL_POINT_UUID)
            )
            if not self.features.supports(MeasurementType.ECG):
                raise PmdUnavailable(self.sensor_id, "the strap's PMD service offers no ECG")
            await client.start_notify(PMD_DATA_UUID, self._on_data)
            self._subscribed.append(PMD_DATA_UUID)
        except MalformedPmd as exc:
            await self.close()
            raise PmdUnavailable(self.sensor_id, f"unexpected PMD features: {exc}") from exc
        except BleakError as exc:
            await self.close()
            raise SensorError(self.sensor_id, f"PMD setup failed: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the ECG stream (if started) and unsubscribe; never raises on a dead link."""
        if self._closed:
            return
        self._closed = True
        if self._streaming and self.client.is_connected:
            with contextlib.suppress(SensorError, BleakError, TimeoutError, OSError):
                await self.stop_ecg()
        self._streaming = False
        for uuid in reversed(self._subscribed):
            if self.client.is_connected:
                with contextlib.suppress(BleakError, TimeoutError, OSError):
                    async with asyncio.timeout(5):
                        await self.client.stop_notify(uuid)
        self._subscribed.clear()
        self._wakeup.set()
        self.dropped.flush()

    def notify_disconnected(self) -> None:
        """Call from the client's ``disconnected_callback``: ends :meth:`frames` at once."""
        self._closed = True
        self._streaming = False
        self._wakeup.set()

    @property
    def streaming(self) -> bool:
        return self._streaming

    # -- control point -----------------------------------------------------------------------

    async def request(self, command: PmdCommand) -> PmdResponse:
        """Write ``command`` and wait for its indication; raise on an error code, no reply
        (:class:`PmdNoReply`) or an unreadable one (:class:`PmdMalformedReply`)."""
        async with self._lock:
            while not self._replies.empty():  # stale replies (a previous timeout)
                self._replies.get_nowait()
            try:
                await self.client.write_gatt_char(
                    PMD_CONTROL_POINT_UUID, bytes(command), response=True
                )
            except BleakError as exc:
                raise SensorError(self.sensor_id, f"PMD request failed: {exc}") from exc
            try:
                async with asyncio.timeout(self.reply_timeout_s):
                    while True:
                        reply = await self._replies.get()
                        if isinstance(reply, MalformedPmd):
                            raise PmdMalformedReply(
                                self.sensor_id,
                                f"the strap's reply to PMD {command.op.name} could not be read: "
                                f"{reply.reason} ({reply.data.hex() or 'empty'})",
                            )
                        if reply.answers(command):
                            break
                        log.debug("ignored PMD reply %s to another request", bytes(reply).hex())
            except TimeoutError:
                raise PmdNoReply(
                    self.sensor_id,
                    f"no reply to PMD {command.op.name} within {self.reply_timeout_s:g} s "
                    "(are control-point indications enabled? is another app using the strap?)",
                ) from None
        reply.raise_for_error(self.sensor_id)
        return reply

    async def ecg_settings(self) -> PmdSettings:
        """The ECG settings the strap offers (H10: 130 Hz, 14-bit)."""
        reply = await self.request(PmdCommand.get_settings(MeasurementType.ECG))
        try:
            return reply.settings
        except MalformedPmd as exc:
            raise SensorError(self.sensor_id, f"unreadable PMD settings: {exc}") from exc

    async def start_ecg(self, settings: PmdSettings = ECG_130HZ_14BIT) -> None:
        """Start the ECG stream (default 130 Hz / 14-bit, the H10's only option).

        "Already in state" (a stream left running, e.g. by an earlier connection that ended
        without STOP) is answered by STOP and one more START. After any other failure — no
        reply, a refusal, an unreadable reply — a STOP is sent (best effort: a strap that
        started anyway would stream on unseen, draining its battery) and the error raised.
        A session that is already streaming just sends START and raises the strap's answer.
        """
        command = PmdCommand.start(MeasurementType.ECG, settings)
        if self._streaming:
            await self.request(command)
            return
        try:
            try:
                await self._start(command)
            except PmdRequestRefused as exc:
                if exc.code != ErrorCode.ALREADY_IN_STATE:
                    raise
                log.info(
                    "%s: the strap was already streaming ECG; stopping and starting it again",
                    self.sensor_id,
                )
                await self._stop_quietly()
                await self._start(command)
        except SensorError:
            await self._stop_quietly()
            raise
        self._streaming = True

    async def _start(self, command: PmdCommand) -> None:
        # Frames before our START belong to a stream we did not start; a new stream may
        # start its timestamps afresh.
        self._frames.clear()
        self._last_frame = None
        self._least_delay_s = None
        await self.request(command)

    async def _stop_quietly(self) -> None:
        if not self.client.is_connected:
            return
        with contextlib.suppress(SensorError, BleakError, TimeoutError, OSError):
            await self.request(PmdCommand.stop(MeasurementType.ECG))

    async def stop_ecg(self) -> None:
        """Stop the ECG stream. Call before disconnecting (``close`` does it for you)."""
        self._streaming = False
        await self.request(PmdCommand.stop(MeasurementType.ECG))

    # -- data ------------------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[ReceivedFrame]:
        """Decoded ECG frames as they arrive, oldest first.

        Ends with :class:`SensorError` when the link drops, :class:`PmdStalled` when no
        frame comes for ``stall_timeout_s`` with the link up; quietly after :meth:`close`.
        """
        while True:
            while self._frames:
                yield self._frames.popleft()
            if self._closed:
                if not self.client.is_connected:
                    raise SensorError(self.sensor_id, "disconnected")
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self.stall_timeout_s):
                    await self._wakeup.wait()
            except TimeoutError:
                if not self.client.is_connected:
                    raise SensorError(self.sensor_id, "disconnected") from None
                raise PmdStalled(
                    self.sensor_id, f"no ECG frame for {self.stall_timeout_s:g} s, the link up"
                ) from None

    async def ecg_beats(self, params: DetectorParams | None = None) -> AsyncIterator[EcgRR]:
        """ECG-derived beats from :meth:`frames` through :class:`processing.ecg.RPeakDetector`.

        Beats inside the detector's warm-up or with implausible RR come with
        ``plausible=False``: store them as artefacts, do not analyse them.
        """
        detector = RPeakDetector(params)
        async for received in self.frames():
            frame = received.frame
            for beat in detector.update(frame.samples_uv, t_last_ns=frame.timestamp_ns):
                assert self.clock_offset_s is not None  # set by the frame's callback
                yield EcgRR(beat, beat.t_s + self.clock_offset_s, received.recv_ts_s)

    # -- callbacks (synchronous, in the loop) ---------------------------------------------------

    def _on_control_point(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        try:
            reply = PmdResponse.from_bytes(data)
        except MalformedPmd as exc:
            self.malformed += 1
            log.debug("malformed PMD reply from %s: %s", self.sensor_id, exc)
            self._replies.put_nowait(exc)  # fails the request waiting for it
            return
        self._replies.put_nowait(reply)

    def _on_data(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        recv, recv_mono = self._clock(), self._monotonic()
        try:
            frame = EcgFrame.from_bytes(data)
        except MalformedPmd as exc:
            self.malformed += 1
            log.debug("dropped malformed PMD frame from %s: %s", self.sensor_id, exc)
            self.dropped.add(exc.reason)
            return
        step_s: float | None = None
        if self._last_frame is not None:
            last_ns, last_mono = self._last_frame
            if frame.timestamp_ns == last_ns:
                self.repeated += 1
                log.debug("ignored a repeated PMD frame from %s: %s", self.sensor_id, data.hex())
                return
            strap_dt = (frame.timestamp_ns - last_ns) / _NS_PER_S
            host_dt = (recv_mono - last_mono) * self.time_scale
            tolerance = CLOCK_STEP_S + CLOCK_STEP_HOST_S * self.time_scale
            # Frames are only ever late: a timestamp behind the arrival but moving forward is
            # a delayed delivery (link retries), and the strap's clock is right.
            late = 0 < strap_dt <= host_dt
            # A timestamp going back while time went on is a step back of any size: BLE
            # delivers a link's notifications in order, and each frame's timestamp is 0.56 s
            # past the one before. (Under 2 s it was taken for reordered frames: every frame
            # until the clock caught up again was dropped, 1.1 s of ECG for a 1.5 s step.)
            back = strap_dt < 0 < host_dt
            ahead = not late and strap_dt - host_dt > tolerance
            if ahead and self._frames_lost(frame, strap_dt, recv_mono, tolerance):
                # Frames lost on the link, then the ones after them in a burst: the jump is
                # a whole number of frames and this frame is no earlier than its timestamp
                # allows. It used to be "the strap's ECG clock jumped +2.8 s" (a gap record
                # and event) with timing that was right all along.
                log.debug("%s: %.1f s of raw ECG frames lost on the link", self.sensor_id, strap_dt)
                ahead = False
            if back or ahead or (not late and host_dt - strap_dt > tolerance):
                step_s = strap_dt - host_dt
                self.clock_steps += 1
                self.clock_offset_s = None  # measured afresh from this frame on
                log.warning(
                    "%s: the strap's ECG clock jumped %+.1f s; raw ECG re-anchored to its "
                    "arrival time",
                    self.sensor_id,
                    step_s,
                )
            elif strap_dt < 0:
                self.out_of_order += 1
                log.debug("dropped out-of-order PMD frame from %s: %s", self.sensor_id, data.hex())
                self.dropped.add("timestamp before the previous frame's (strap clock stepped back)")
                return
        self._last_frame = (frame.timestamp_ns, recv_mono)
        delay_s = recv_mono * self.time_scale - frame.timestamp_ns / _NS_PER_S
        if step_s is not None or self._least_delay_s is None or delay_s < self._least_delay_s:
            self._least_delay_s = delay_s
        offset = recv - frame.timestamp_ns / _NS_PER_S
        if self.clock_offset_s is None or offset < self.clock_offset_s:
            self.clock_offset_s = offset
        if len(self._frames) >= self._buffer_frames:
            self._frames.popleft()
            self.overflowed += 1
            self.dropped.add("processing fell behind")
        self._frames.append(ReceivedFrame(recv, frame, recv_mono, step_s))
        self._wakeup.set()

    def _frames_lost(
        self, frame: EcgFrame, strap_dt: float, recv_mono: float, tolerance: float
    ) -> bool:
        """A forward jump of ``strap_dt`` (s) before ``frame`` is frames lost, not a step:
        a whole number (≥ 2) of frame spans, and the frame no earlier than the least-delayed
        frame since the last step says it can be (more than ``tolerance``; a step forward
        makes it early by the step)."""
        span = len(frame.samples_uv) / ECG_NOMINAL_HZ
        whole = round(strap_dt / span)
        if whole < 2 or abs(strap_dt - whole * span) > FRAMES_LOST_TOLERANCE * strap_dt + 0.01:
            return False
        if self._least_delay_s is None:
            return False
        delay_s = recv_mono * self.time_scale - frame.timestamp_ns / _NS_PER_S
        return self._least_delay_s - delay_s <= tolerance


def strap_s_to_unix_s(strap_s: float) -> float:
    """A PMD time (s since 2000-01-01) as Unix seconds, if the strap clock was set."""
    return strap_s + POLAR_EPOCH_UNIX_NS / _NS_PER_S
