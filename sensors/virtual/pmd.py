"""Polar Measurement Data (PMD) emulation for :class:`~sensors.virtual.strap.VirtualStrap`.

Pass ``pmd=PmdConfig(ecg_uv=…)`` to ``VirtualStrap`` and the strap offers the PMD service
(``FB005C80-…``): control point (read → ``0f 05 00``: ECG + ACC, write, indicate) and data
(notify). ECG START (130 Hz / 14-bit, the only settings a Polar H10 takes) replays ``ecg_uv``
as frames of ``(MTU − 3 − 10) / 3`` samples (73 at MTU 232), each sent when the simulated
clock reaches its last sample (every 73/130 ≈ 0.56 simulated s), with that sample's
timestamp (ns since 2000-01-01). The simulated clock of a stream starts at its START.

The H10 behaviours of ``../shared/ble/README.md``, each switchable in :class:`PmdConfig`
(all on by default, as on a real H10):

1. ``require_indications``: a control-point write from a central that has not enabled
   indications on the control point is ignored — no reply, nothing starts (counted in
   ``VirtualPmd.ignored_requests``). Off: the request is served and the reply indicated
   anyway (bumble's ``force``), even though the central will not see it.
2. ``min_mtu`` (232): below it every request gets ``f0 op type 0a`` (INVALID MTU).
   ``None``: any MTU is served and frames shrink to fit it.
3. ``max_centrals`` (1): while one central is connected the strap stops advertising, so a
   second central (a phone, another daemon) cannot even find it — its connect times out.
   2 emulates Polar's "dual connection": the strap keeps advertising for a second central.
4. ``track_unclean_disconnects``: a central that disconnects while its ECG stream runs is
   recorded in ``VirtualPmd.unclean_disconnects`` (the real strap keeps draining its battery;
   tests assert the daemon stopped the stream first). Off: not recorded.
5. ``unreliable_start_s`` (3.5 s): the first seconds of every stream carry a decaying
   baseline offset of tens of mV plus full-scale spikes every 0.3 s — absurd values a daemon
   must discard as warm-up. 0 replays the recording untouched.

``clock_steps`` (none by default) sets the strap's clock forward or back mid-stream.
:meth:`VirtualPmd.stall` hangs the ECG stream with the link (and the heart rate) up: no more
frames, as a real H10's PMD stream now and then stops; a STOP and a new START stream again,
unless the stall is ``for_good`` (then no stream ever sends, as firmware that needs a power
cycle).

bumble calls the GATT callbacks synchronously in the event loop; replies are indicated from
a task, after the write response, as a real strap does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bumble import att, gatt
from bumble.device import Connection, Device

from sensors.pmd import (
    ECG_130HZ_14BIT,
    PMD_CONTROL_POINT_UUID,
    PMD_DATA_UUID,
    PMD_SERVICE_UUID,
    EcgFrame,
    ErrorCode,
    MalformedPmd,
    MeasurementType,
    Op,
    PmdCommand,
    PmdFeatures,
    PmdResponse,
    SettingType,
    ecg_samples_per_frame,
)

logger = logging.getLogger(__name__)

H10_FEATURES = PmdFeatures((1 << MeasurementType.ECG) | (1 << MeasurementType.ACC))
"""What a Polar H10 offers: ECG and ACC (read as ``0f 05 00``)."""
DEFAULT_FIRST_TIMESTAMP_NS = 768_182_400 * 1_000_000_000
"""2024-05-05T00:00:00Z as ns since 2000-01-01: timestamp of the first replayed sample."""
INT24_MAX = (1 << 23) - 1


@dataclasses.dataclass(frozen=True, slots=True)
class PmdConfig:
    """What the virtual strap's PMD service replays and which H10 quirks it emulates."""

    ecg_uv: Sequence[int]
    """ECG samples to replay, µV (int24 range), at ``sample_rate_hz``."""
    sample_rate_hz: float = 130.0
    """Rate of ``ecg_uv`` and of the simulated stream, Hz."""
    first_timestamp_ns: int = DEFAULT_FIRST_TIMESTAMP_NS
    """PMD timestamp (ns since 2000-01-01) of the first sample of every stream."""
    loop: bool = False
    """Replay ``ecg_uv`` again when it ends (timestamps keep increasing) instead of stopping."""
    require_indications: bool = True
    """Behaviour 1: ignore control-point writes until indications are enabled."""
    min_mtu: int | None = 232
    """Behaviour 2: INVALID MTU below this ATT_MTU; None accepts any MTU."""
    max_centrals: int = 1
    """Behaviour 3: centrals connected at once (1; 2 = Polar "dual connection")."""
    track_unclean_disconnects: bool = True
    """Behaviour 4: record centrals that disconnect while streaming."""
    unreliable_start_s: float = 3.5
    """Behaviour 5: seconds of absurd values at the start of every stream (0 = none)."""
    clock_steps: tuple[tuple[float, float], ...] = ()
    """``(at_s, step_s)`` pairs: the strap's clock is set ``step_s`` forward (negative: back)
    at ``at_s`` of stream time, as when an app sets an H10's time mid-stream; every frame
    whose last sample is at or after ``at_s`` carries the shifted timestamp."""
    live_source: Callable[[float], Sequence[int]] | None = None
    """Instead of replaying ``ecg_uv``: called as a stream starts with the strap's simulated
    time (s since its clock started), it returns what that stream sends (sample ``i`` at that
    time + ``i / sample_rate_hz``), e.g. a synthetic ECG beating with the strap's RR
    (:meth:`sensors.virtual.ecg_synth.SyntheticEcg.stream_from`). ``ecg_uv`` may be empty."""

    def __post_init__(self) -> None:
        if not self.ecg_uv and self.live_source is None:
            raise ValueError("ecg_uv must not be empty")
        if not self.sample_rate_hz > 0:
            raise ValueError("sample_rate_hz must be > 0")
        if self.max_centrals not in (1, 2):
            raise ValueError("max_centrals must be 1 or 2")
        if self.unreliable_start_s < 0:
            raise ValueError("unreliable_start_s must be >= 0")
        if any(not (math.isfinite(at) and math.isfinite(step)) for at, step in self.clock_steps):
            raise ValueError("clock_steps must be finite (at_s, step_s) pairs")


def unreliable_start(
    samples: Sequence[int], start_index: int, fs_hz: float, span_s: float
) -> list[int]:
    """Samples with behaviour 5 applied; ``start_index`` is the index of ``samples[0]``.

    Adds ``30 mV · exp(−t / 1 s)`` of baseline and a full-scale spike every 0.3 s while
    ``t < span_s`` (t = sample time since the stream started), then clips to int24.
    """
    out = list(samples)
    spike_every = max(1, round(0.3 * fs_hz))
    for i in range(len(out)):
        n = start_index + i
        t = n / fs_hz
        if t >= span_s:
            break
        value = out[i] + 30_000.0 * math.exp(-t)
        if n % spike_every == 0:
            value = INT24_MAX if (n // spike_every) % 2 else -INT24_MAX
        out[i] = max(-INT24_MAX, min(INT24_MAX, round(value)))
    return out


@dataclasses.dataclass(slots=True)
class _Stream:
    connection: Connection
    task: asyncio.Task[None] | None = None
    frames_sent: int = 0
    stalled: bool = False


class VirtualPmd:
    """The PMD service of one virtual strap. Built by ``VirtualStrap(pmd=…)``; see module doc.

    ``device`` is the strap's bumble Device, ``speed`` its simulated seconds per wall second.
    """

    def __init__(
        self,
        device: Device,
        speed: float,
        config: PmdConfig,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._device = device
        self._speed = speed
        self._clock = clock
        """The strap's simulated time now, s (for ``config.live_source``)."""
        self._address = device.random_address.to_string(with_type_qualifier=False)
        self.requests: list[bytes] = []
        """Every control-point write received, in order."""
        self.replies: list[bytes] = []
        """Every control-point reply indicated, in order."""
        self.ignored_requests = 0
        """Writes ignored because indications were not enabled (behaviour 1)."""
        self.unclean_disconnects: list[str] = []
        """Peer addresses of centrals that disconnected while streaming (behaviour 4)."""
        self.frames_sent = 0
        """ECG data notifications sent (all streams)."""
        self.frames_unsent = 0
        """ECG frames lost because the streaming central had not enabled data notifications."""
        self.streams_started = 0
        self.frames_withheld = 0
        """ECG frames not sent because the stream was stalled (:meth:`stall`)."""
        self._stalled_for_good = False
        self._indications: set[Connection] = set()
        self._data_subscribed: set[Connection] = set()
        self._streams: dict[Connection, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.control_point: gatt.Characteristic[bytes] = gatt.Characteristic(
            PMD_CONTROL_POINT_UUID,
            gatt.Characteristic.Properties.READ
            | gatt.Characteristic.Properties.WRITE
            | gatt.Characteristic.Properties.INDICATE,
            gatt.Characteristic.READABLE | gatt.Characteristic.WRITEABLE,
            gatt.CharacteristicValue(read=self._on_read, write=self._on_write),
        )
        self.control_point.on(self.control_point.EVENT_SUBSCRIPTION, self._on_cp_subscription)
        self.data: gatt.Characteristic[bytes] = gatt.Characteristic(
            PMD_DATA_UUID,
            gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.READABLE,
            gatt.CharacteristicValue(read=_refuse_read, write=_refuse_write),
        )
        self.data.on(self.data.EVENT_SUBSCRIPTION, self._on_data_subscription)
        self.service = gatt.Service(PMD_SERVICE_UUID, [self.control_point, self.data])

    # -- state queries ---------------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        """True while an ECG stream runs for some central."""
        return bool(self._streams)

    def stall(self, *, for_good: bool = False) -> None:
        """Stop sending the running ECG streams' frames; the streams stay started and the
        link up (a hung PMD stream). A STOP and a new START stream again, unless
        ``for_good``: then no stream sends a frame any more."""
        for stream in self._streams.values():
            stream.stalled = True
        self._stalled_for_good = self._stalled_for_good or for_good

    # -- hooks called by VirtualStrap ---------------------------------------------------------

    def on_disconnection(self, connection: Connection) -> None:
        stream = self._streams.pop(connection, None)
        self._indications.discard(connection)
        self._data_subscribed.discard(connection)
        if stream is None:
            return
        if stream.task is not None:
            stream.task.cancel()
        if self.config.track_unclean_disconnects:
            peer = connection.peer_address.to_string(with_type_qualifier=False)
            self.unclean_disconnects.append(peer)
            logger.debug("virtual PMD: %s disconnected while streaming ECG", peer)

    async def stop(self) -> None:
        """Cancel every stream and pending reply; await them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._streams.clear()

    # -- GATT callbacks ------------------------------------------------------------------------

    def _on_cp_subscription(
        self, connection: Connection, notify_enabled: bool, indicate_enabled: bool
    ) -> None:
        if indicate_enabled:
            self._indications.add(connection)
        else:
            self._indications.discard(connection)

    def _on_data_subscription(
        self, connection: Connection, notify_enabled: bool, indicate_enabled: bool
    ) -> None:
        if notify_enabled:
            self._data_subscribed.add(connection)
        else:
            self._data_subscribed.discard(connection)

    def _on_read(self, _connection: Connection) -> bytes:
        return bytes(H10_FEATURES) + b"\x00"

    def _on_write(self, connection: Connection, value: bytes) -> None:
        value = bytes(value)
        self.requests.append(value)
        if self.config.require_indications and connection not in self._indications:
            self.ignored_requests += 1
            logger.debug("virtual PMD: request %s ignored: indications off", value.hex())
            return
        reply = self._handle(connection, value)
        self._spawn(self._indicate(connection, reply), "pmd-reply")

    # -- request handling ------------------------------------------------------------------------

    def _handle(self, connection: Connection, value: bytes) -> PmdResponse:
        op = value[0] if value else 0
        mtype = value[1] if len(value) > 1 else 0
        min_mtu = self.config.min_mtu
        if min_mtu is not None and connection.att_mtu < min_mtu:
            return PmdResponse(op, mtype, ErrorCode.INVALID_MTU, more=None)
        try:
            command = PmdCommand.from_bytes(value)
        except MalformedPmd:
            known_op = op in {o.value for o in Op}
            code = ErrorCode.INVALID_LENGTH if known_op else ErrorCode.INVALID_OP_CODE
            return PmdResponse(op, mtype, code)
        if not H10_FEATURES.bitmask >> command.measurement_type & 1:
            return PmdResponse(op, mtype, ErrorCode.INVALID_MEASUREMENT_TYPE)
        if command.measurement_type != MeasurementType.ECG:
            return PmdResponse(op, mtype, ErrorCode.NOT_SUPPORTED)  # ACC: not emulated
        if command.op == Op.GET_SETTINGS:
            return PmdResponse(op, mtype, ErrorCode.SUCCESS, 0, bytes(ECG_130HZ_14BIT))
        if command.op == Op.STOP:
            stream = self._streams.pop(connection, None)
            if stream is None:
                return PmdResponse(op, mtype, ErrorCode.ALREADY_IN_STATE)
            if stream.task is not None:
                stream.task.cancel()
            return PmdResponse(op, mtype, ErrorCode.SUCCESS)
        # START
        if self._streams:
            return PmdResponse(op, mtype, ErrorCode.ALREADY_IN_STATE)
        rate = command.settings.get(SettingType.SAMPLE_RATE)
        resolution = command.settings.get(SettingType.RESOLUTION)
        if not rate or not resolution:
            return PmdResponse(op, mtype, ErrorCode.INVALID_PARAMETER)
        if rate != ECG_130HZ_14BIT.get(SettingType.SAMPLE_RATE):
            return PmdResponse(op, mtype, ErrorCode.INVALID_SAMPLE_RATE)
        if resolution != ECG_130HZ_14BIT.get(SettingType.RESOLUTION):
            return PmdResponse(op, mtype, ErrorCode.INVALID_RESOLUTION)
        stream = _Stream(connection)
        self._streams[connection] = stream
        self.streams_started += 1
        stream.task = self._spawn(self._stream(stream), "pmd-ecg")
        return PmdResponse(op, mtype, ErrorCode.SUCCESS, 0, b"\x00")

    async def _indicate(self, connection: Connection, reply: PmdResponse) -> None:
        payload = bytes(reply)
        if connection.handle not in self._device.connections:
            return
        self.replies.append(payload)
        force = connection not in self._indications  # only when behaviour 1 is off
        await self._device.indicate_subscriber(connection, self.control_point, payload, force=force)

    # -- streaming ----------------------------------------------------------------------------

    async def _stream(self, stream: _Stream) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        fs = cfg.sample_rate_hz
        speed = self._speed
        connection = stream.connection
        if cfg.live_source is not None:
            ecg = cfg.live_source(self._clock() if self._clock is not None else 0.0)
        else:
            ecg = cfg.ecg_uv
        n_total = len(ecg)
        per_frame = max(1, ecg_samples_per_frame(connection.att_mtu))
        start = 0
        while stream is self._streams.get(connection):
            if start >= n_total and not cfg.loop:
                return
            idx = [(start + i) % n_total for i in range(per_frame)]
            if not cfg.loop:
                idx = [i for i in idx if i < n_total]
            last = start + len(idx) - 1
            # Sent when the simulated clock reaches the frame's last sample.
            await asyncio.sleep(max(0.0, t0 + last / fs / speed - loop.time()))
            samples = [int(ecg[i]) for i in idx]
            if cfg.unreliable_start_s > 0 and start / fs < cfg.unreliable_start_s:
                samples = unreliable_start(samples, start, fs, cfg.unreliable_start_s)
            ts = cfg.first_timestamp_ns + round(last * 1e9 / fs)
            ts += sum(round(step * 1e9) for at, step in cfg.clock_steps if last / fs >= at)
            frame = EcgFrame(ts, tuple(max(-INT24_MAX, min(INT24_MAX, s)) for s in samples))
            start = last + 1
            if stream.stalled or self._stalled_for_good:
                self.frames_withheld += 1
                continue
            if connection not in self._data_subscribed:
                self.frames_unsent += 1
                continue
            if connection.handle not in self._device.connections:
                return
            await self._device.notify_subscriber(connection, self.data, bytes(frame))
            stream.frames_sent += 1
            self.frames_sent += 1

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"virtual-{name}-{self._address}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _refuse_read(_conn: Connection) -> bytes:
    raise att.ATT_Error(att.ATT_READ_NOT_PERMITTED_ERROR)


def _refuse_write(_conn: Connection, _value: bytes) -> None:
    raise att.ATT_Error(att.ATT_WRITE_NOT_PERMITTED_ERROR)
