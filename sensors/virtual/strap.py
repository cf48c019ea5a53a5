"""A virtual BLE heart-rate chest strap: a real bumble GATT server on a :class:`VirtualAir`.

Services: Heart Rate 0x180D (0x2A37 notify, 0x2A38 Body Sensor Location, 0x2A39 Control
Point), Battery 0x180F (0x2A19 read + notify), Device Information 0x180A (strings).
It advertises, connectable, its name and 0x180D, and accepts one central at a time
(advertising stops while connected, like a Polar H10 without "dual connection").

Beat timing lives in SIMULATED time: beat k happens at ``sum(rr_ms[:k+1])`` ms after the
simulated clock starts, which is when a central first enables 0x2A37 notifications; the
clock then runs on whatever happens to the link. One simulated second lasts
``1/speed`` wall seconds. At each simulated second the strap notifies the RR of the beats
completed during that second (usually 0–3), as real straps do; beats completed while no
central is subscribed are lost and counted in ``beats_unsent``.

``clock_ppm`` gives the strap's own crystal an error, as real ones have (typically ±20–100
ppm): its clock runs fast by that many parts per million (negative: slow) against the
simulated — the host's — clock. The beats themselves happen on the simulated clock
(``rr_source`` holds the true intervals); the strap *measures* each interval with its own
clock, so it reports ``rr × (1 + clock_ppm·1e-6)``, and it notifies once per second of its
own clock. Over 12 h, 200 ppm is 8.6 s: the cumulative sum of the reported RR runs ahead of
the host's clock by that much, which is what :class:`sensors.timing.BeatTimer` must correct.

With ``pmd=PmdConfig(...)`` the strap also offers Polar's PMD service and streams raw ECG,
emulating the H10 behaviours listed in :mod:`sensors.virtual.pmd` (then ``max_centrals=2``
keeps it advertising for a second central, like Polar's "dual connection").
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable, Iterator

from bumble import att, gatt, hci
from bumble.core import AdvertisingData
from bumble.device import Connection

from sensors.hrs import HeartRateMeasurement, rr_ms_to_raw
from sensors.virtual.air import VirtualAir
from sensors.virtual.pmd import PmdConfig, VirtualPmd
from settle.errors import SensorError

logger = logging.getLogger(__name__)

HR_WINDOW_MS = 5000.0
"""The HR field is 60000 / mean(RR) over the beats of the last HR_WINDOW_MS simulated ms."""

_HR_CONTROL_RESET_EE = 0x01
_ATT_CONTROL_POINT_NOT_SUPPORTED = 0x80  # HRS 1.0 §3.3.1: "Control Point Not Supported"
_HEADER_BYTES = 2  # flags + uint8 HR: the only format this strap sends
_LEGACY_ADV_MAX = 31  # bytes of legacy advertising data


def _const(text: str) -> Callable[[Connection], bytes]:
    encoded = text.encode()
    return lambda _conn: encoded


def _read_refused(_conn: Connection) -> bytes:
    raise att.ATT_Error(att.ATT_READ_NOT_PERMITTED_ERROR)


def _write_refused(_conn: Connection, _value: bytes) -> None:
    raise att.ATT_Error(att.ATT_WRITE_NOT_PERMITTED_ERROR)


def _guarded(
    read: Callable[[Connection], bytes] = _read_refused,
    write: Callable[[Connection, bytes], None] = _write_refused,
) -> gatt.CharacteristicValue[bytes]:
    """A value that refuses the access it does not offer, as a real GATT server does.

    bumble 0.0.236 ignores the READABLE/WRITEABLE permissions: a read of a notify-only
    value would return its bytes, and a write would silently replace a read-only one.
    """
    return gatt.CharacteristicValue(read=read, write=write)


SENT_KEPT = 64
"""Notifications :attr:`VirtualStrap.sent` holds with ``keep_sent=False``."""


class Silence(float):
    """An entry of a strap's ``rr_source``: this many milliseconds pass without a beat (the
    strap lost the signal, as in a recording's gap). The strap goes on notifying once a
    second, with no RR intervals, as a real strap does without skin contact; the daemon then
    sees the beats after it arrive late and records a gap."""

    def __new__(cls, ms: float) -> Silence:
        if not ms > 0:
            raise ValueError(f"a silence must last > 0 ms, got {ms}")
        return super().__new__(cls, ms)


class VirtualStrap:
    """A heart-rate strap that streams ``rr_source`` (RR intervals in ms) over BLE.

    Args:
        air: the virtual air to live in.
        rr_source: RR intervals in milliseconds, consumed lazily (may be infinite); a
            :class:`Silence` entry is time without beats.
        name: advertised and GAP device name.
        address: random static address "AA:BB:…"; default: a fresh one from ``air``.
        speed: simulated seconds per wall second (e.g. 100 in tests).
        clock_ppm: error of the strap's clock in parts per million (positive: fast); see
            the module docstring.
        contact: None → flags like a Polar H10 (contact not supported, 0x10);
            True/False → contact supported with that "detected" bit (Polar H7: 0x16).
        battery_pct: Battery Level in percent.
        body_sensor_location: 0x2A38 value (1 = chest).
        max_mtu: largest ATT_MTU (bytes) the strap accepts (Polar H10: 232).
        advertising_interval_ms: wall milliseconds between advertisements.
        manufacturer, model, serial, firmware, hardware, software: 0x180A strings.
        pmd: offer the Polar PMD service (raw ECG) with this configuration; None: no PMD.
        keep_sent: keep every notification sent in :attr:`sent` (tests compare them with
            what arrived); False keeps the last :data:`SENT_KEPT` only, for long runs (the
            demo: a whole record grew by about 1 MB per simulated hour).
    """

    def __init__(
        self,
        air: VirtualAir,
        rr_source: Iterable[float],
        *,
        name: str = "Settle Virtual HR",
        address: str | None = None,
        speed: float = 1.0,
        clock_ppm: float = 0.0,
        contact: bool | None = None,
        battery_pct: int = 87,
        body_sensor_location: int = 1,
        max_mtu: int = 232,
        advertising_interval_ms: float = 20.0,
        manufacturer: str = "Settle",
        model: str = "Virtual HR",
        serial: str = "0000000001",
        firmware: str = "1.0.0",
        hardware: str = "1",
        software: str = "1.0.0",
        pmd: PmdConfig | None = None,
        keep_sent: bool = True,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if not abs(clock_ppm) < 1e5:
            raise ValueError("clock_ppm must be within ±100000")
        if not 0 <= battery_pct <= 100:
            raise ValueError("battery_pct must be within 0..100")
        self.name = name
        self._speed = speed
        self._clock_rate = 1.0 + clock_ppm * 1e-6  # strap seconds per simulated second
        self.contact = contact
        self._air = air
        self._rr_source = rr_source
        self._battery_pct = battery_pct
        self._adv_interval_ms = advertising_interval_ms
        self._device = air.create_device(name, address)
        self._device.gatt_server.max_mtu = max_mtu
        self._address = self._device.random_address.to_string(with_type_qualifier=False)
        self._origin: float | None = None  # loop time of the simulated clock's start
        self.pmd: VirtualPmd | None = (
            VirtualPmd(self._device, speed, pmd, clock=self.simulated_s) if pmd else None
        )
        """The PMD emulation (requests, replies, unclean disconnects …) when enabled."""
        self._max_centrals = pmd.max_centrals if pmd else 1

        self.sent: list[HeartRateMeasurement] = []
        """Every 0x2A37 notification sent, in order (one entry per notification); with
        ``keep_sent=False`` only the latest ones (between SENT_KEPT and 2 × SENT_KEPT)."""
        self._keep_sent = keep_sent
        self.beats_sent = 0
        """Beats whose RR was notified."""
        self.beats_unsent = 0
        """Beats lost because no central was subscribed when they completed."""
        self.connections_accepted = 0

        self._connections: set[Connection] = set()
        self._subscribed: set[Connection] = set()  # 0x2A37 notifications enabled
        self._started = False
        self._stopped = False
        self._readvertise = True  # re-advertise when a central goes away
        self._stream_task: asyncio.Task[None] | None = None
        self._advertise_task: asyncio.Task[None] | None = None
        self._finished = asyncio.Event()
        self._stream_error: BaseException | None = None

        self._hrm: gatt.Characteristic[bytes] = gatt.Characteristic(
            gatt.GATT_HEART_RATE_MEASUREMENT_CHARACTERISTIC,
            gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.READABLE,
            _guarded(),  # notify-only, as the spec says
        )
        self._hrm.on(self._hrm.EVENT_SUBSCRIPTION, self._on_hrm_subscription)
        self._battery: gatt.Characteristic[bytes] = gatt.Characteristic(
            gatt.GATT_BATTERY_LEVEL_CHARACTERISTIC,
            gatt.Characteristic.Properties.READ | gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.READABLE,
            _guarded(read=lambda _conn: bytes([self._battery_pct])),
        )
        dis = {
            gatt.GATT_MANUFACTURER_NAME_STRING_CHARACTERISTIC: manufacturer,
            gatt.GATT_MODEL_NUMBER_STRING_CHARACTERISTIC: model,
            gatt.GATT_SERIAL_NUMBER_STRING_CHARACTERISTIC: serial,
            gatt.GATT_FIRMWARE_REVISION_STRING_CHARACTERISTIC: firmware,
            gatt.GATT_HARDWARE_REVISION_STRING_CHARACTERISTIC: hardware,
            gatt.GATT_SOFTWARE_REVISION_STRING_CHARACTERISTIC: software,
        }
        read = gatt.Characteristic.Properties.READ
        self._device.add_services(
            [
                gatt.Service(
                    gatt.GATT_HEART_RATE_SERVICE,
                    [
                        self._hrm,
                        gatt.Characteristic(
                            gatt.GATT_BODY_SENSOR_LOCATION_CHARACTERISTIC,
                            read,
                            gatt.Characteristic.READABLE,
                            _guarded(read=lambda _conn: bytes([body_sensor_location])),
                        ),
                        gatt.Characteristic(
                            gatt.GATT_HEART_RATE_CONTROL_POINT_CHARACTERISTIC,
                            gatt.Characteristic.Properties.WRITE,
                            gatt.Characteristic.WRITEABLE,
                            _guarded(write=self._on_control_point),
                        ),
                    ],
                ),
                gatt.Service(gatt.GATT_BATTERY_SERVICE, [self._battery]),
                *([self.pmd.service] if self.pmd else []),
                gatt.Service(
                    gatt.GATT_DEVICE_INFORMATION_SERVICE,
                    [
                        gatt.Characteristic(
                            uuid, read, gatt.Characteristic.READABLE, _guarded(read=_const(text))
                        )
                        for uuid, text in dis.items()
                    ],
                ),
            ]
        )
        self._device.advertising_data = self._advertising_data()
        self._device.on(self._device.EVENT_CONNECTION, self._on_connection)
        air.add_closer(self.stop)

    # -- public API ------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The strap's address as bleak presents it ("C0:5E:77:1E:00:01")."""
        return self._address

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second (fixed: the beat schedule depends on it)."""
        return self._speed

    @property
    def clock_ppm(self) -> float:
        """Error of the strap's clock, parts per million (positive: it runs fast)."""
        return (self._clock_rate - 1.0) * 1e6

    @property
    def is_connected(self) -> bool:
        """True while at least one central is connected."""
        return bool(self._connections)

    @property
    def battery_pct(self) -> int:
        return self._battery_pct

    async def set_battery_pct(self, pct: int) -> None:
        """Change the Battery Level (percent) and notify subscribed centrals."""
        if not 0 <= pct <= 100:
            raise ValueError("battery_pct must be within 0..100")
        self._battery_pct = pct
        for connection in list(self._connections):
            await self._device.notify_subscriber(connection, self._battery, bytes([pct]))

    async def start(self) -> None:
        """Power on and advertise. A stopped strap cannot be started again."""
        if self._stopped:
            raise SensorError(self.address, "a stopped virtual strap cannot restart")
        if self._started:
            return
        await self._air.start()
        await self._device.power_on()
        self._started = True
        await self._advertise()

    async def stop(self) -> None:
        """Stop streaming, stop advertising and disconnect cleanly; await every task."""
        if self._stopped:
            return
        self._stopped = True
        self._readvertise = False
        if self.pmd is not None:
            await self.pmd.stop()
        tasks = [t for t in (self._stream_task, self._advertise_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._started:
            await self._device.stop_advertising()
            for connection in list(self._connections):
                await self._disconnect(
                    connection, hci.HCI_ErrorCode.REMOTE_USER_TERMINATED_CONNECTION_ERROR
                )

    @property
    def readvertise(self) -> bool:
        """Whether the strap advertises again when a central disconnects (as real straps do).
        Benchmarks with hundreds of straps turn it off once all stream, so that stopping the
        daemon does not flood every controller with advertisements."""
        return self._readvertise

    @readvertise.setter
    def readvertise(self, on: bool) -> None:
        self._readvertise = on

    async def drop(self, reappear_after_s: float = 0.0) -> None:
        """The strap ends the link itself (strap taken off, power saving …).

        It advertises again after ``reappear_after_s`` wall seconds. The simulated clock
        keeps running meanwhile: beats in the gap are lost (``beats_unsent``).
        """
        self._require_running()
        self._readvertise = False
        try:
            await self._cancel_advertising()
            await self._device.stop_advertising()
            for connection in list(self._connections):
                await self._disconnect(
                    connection, hci.HCI_ErrorCode.REMOTE_USER_TERMINATED_CONNECTION_ERROR
                )
        finally:
            self._readvertise = True
        self._schedule_advertising(reappear_after_s)

    def lose_link(self) -> None:
        """Make the link vanish silently (out of range): both ends see a supervision timeout.

        The strap advertises again immediately, as a real one does after losing a link.
        """
        self._require_running()
        if not self._connections:
            raise SensorError(self.address, "no link to lose: not connected")
        self._air.lose_link(self.address)

    async def wait_finished(self) -> None:
        """Wait until ``rr_source`` is exhausted and its last beats notified (or lost).

        Also returns once the strap is stopped; raises :class:`SensorError` if
        ``rr_source`` raised or yielded an RR <= 0 ms.
        """
        await self._finished.wait()
        if self._stream_error is not None:
            raise SensorError(self.address, f"rr_source failed: {self._stream_error!r}")

    # -- GATT callbacks (synchronous, in the loop) -----------------------------------

    def _on_connection(self, connection: Connection) -> None:
        self._connections.add(connection)
        self.connections_accepted += 1
        connection.on(
            connection.EVENT_DISCONNECTION,
            lambda reason: self._on_disconnection(connection, reason),
        )
        if len(self._connections) < self._max_centrals and self._readvertise:
            self._schedule_advertising(0.0)  # "dual connection": room for another central

    def _on_disconnection(self, connection: Connection, reason: int) -> None:
        self._connections.discard(connection)
        self._subscribed.discard(connection)
        if self.pmd is not None:
            self.pmd.on_disconnection(connection)
        logger.debug("virtual strap %s: link ended, reason=0x%02X", self.address, reason)
        if self._readvertise and not self._stopped:
            self._schedule_advertising(0.0)

    def _on_hrm_subscription(
        self, connection: Connection, notify_enabled: bool, indicate_enabled: bool
    ) -> None:
        if notify_enabled:
            self._subscribed.add(connection)
            if self._stream_task is None and not self._stopped:
                # The simulated clock starts at the first subscription, then never stops.
                self._stream_task = asyncio.create_task(
                    self._stream(), name=f"virtual-strap-stream-{self.address}"
                )
        else:
            self._subscribed.discard(connection)

    def _on_control_point(self, _connection: Connection, value: bytes) -> None:
        if value != bytes([_HR_CONTROL_RESET_EE]):
            raise att.ATT_Error(_ATT_CONTROL_POINT_NOT_SUPPORTED)
        # Energy Expended is never sent by this strap: a reset has nothing to reset.

    # -- streaming -------------------------------------------------------------------

    def simulated_s(self) -> float:
        """Simulated seconds since the strap's clock started (at the first subscription to
        its heart rate, or at this first call): the time its beats and its ECG share."""
        now = asyncio.get_running_loop().time()
        if self._origin is None:
            self._origin = now
        return (now - self._origin) * self._speed

    async def _stream(self) -> None:
        loop = asyncio.get_running_loop()
        self.simulated_s()  # starts the clock unless the ECG did
        assert self._origin is not None
        t0 = self._origin
        rr_iter: Iterator[float] = iter(self._rr_source)
        recent: collections.deque[tuple[float, float]] = collections.deque()  # (beat_ms, rr_ms)
        hr_bpm = 0
        beat_ms = 0.0
        try:
            pending_rr = next(rr_iter, None)
            second = 0
            while pending_rr is not None:
                second += 1
                # The strap notifies once per second of ITS clock; in simulated time that
                # second ends at second / clock_rate.
                now_ms = second * 1000.0 / self._clock_rate
                # Absolute deadlines: the wall clock never drifts from the simulated one.
                await asyncio.sleep(max(0.0, t0 + now_ms / 1000.0 / self._speed - loop.time()))
                completed: list[float] = []
                while pending_rr is not None and beat_ms + pending_rr <= now_ms:
                    if isinstance(pending_rr, Silence):  # time passes, no beat
                        beat_ms += pending_rr
                        pending_rr = next(rr_iter, None)
                        continue
                    # 0 is sent as it is (a real strap sends it now and then; an export that
                    # recorded one replays it); a negative or endless run of them is a bug.
                    if not pending_rr >= 0 or (pending_rr == 0 and len(completed) >= 255):
                        raise ValueError(f"RR must be > 0 ms, got {pending_rr}")
                    beat_ms += pending_rr
                    measured = pending_rr * self._clock_rate  # on the strap's own clock
                    completed.append(measured)
                    recent.append((beat_ms, measured))
                    pending_rr = next(rr_iter, None)
                while recent and recent[0][0] < now_ms - HR_WINDOW_MS:
                    recent.popleft()
                beating = [rr for _, rr in recent if rr > 0]
                if beating:
                    mean_rr = sum(beating) / len(beating)
                    hr_bpm = min(255, round(60000.0 / mean_rr))
                await self._notify_second(hr_bpm, completed)
        except Exception as exc:  # surfaced by wait_finished(), never swallowed
            self._stream_error = exc
        finally:
            self._finished.set()

    async def _notify_second(self, hr_bpm: int, rr_ms: list[float]) -> None:
        """Send one simulated second's measurement, split so it never exceeds ATT_MTU-3."""
        targets = [c for c in self._subscribed if c in self._connections]
        if not targets:
            self.beats_unsent += len(rr_ms)
            return
        # bumble's server would silently TRUNCATE an oversized notification (dropping RR)
        # where a real strap splits them: at MTU 23, 9 RR per uint8-HR notification.
        per_notification = (min(c.att_mtu for c in targets) - 3 - _HEADER_BYTES) // 2
        raw = [rr_ms_to_raw(rr) for rr in rr_ms]
        chunks = [raw[i : i + per_notification] for i in range(0, len(raw), per_notification)]
        for chunk in chunks or [[]]:
            measurement = HeartRateMeasurement(
                hr_bpm,
                rr_raw=tuple(chunk),
                contact_supported=self.contact is not None,
                contact_bit=bool(self.contact),
            )
            payload = bytes(measurement)
            for connection in targets:
                if connection in self._connections:  # may have vanished meanwhile
                    await self._device.notify_subscriber(connection, self._hrm, payload)
            self.sent.append(measurement)
            if not self._keep_sent and len(self.sent) > 2 * SENT_KEPT:
                del self.sent[:-SENT_KEPT]
        self.beats_sent += len(rr_ms)

    # -- advertising -----------------------------------------------------------------

    def _advertising_data(self) -> bytes:
        encoded = self.name.encode()
        flags = (
            AdvertisingData.LE_GENERAL_DISCOVERABLE_MODE_FLAG
            | AdvertisingData.BR_EDR_NOT_SUPPORTED_FLAG
        )
        structures: list[tuple[int, bytes]] = [
            (AdvertisingData.FLAGS, bytes([flags])),
            (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, bytes.fromhex("0d18")),
        ]
        room = _LEGACY_ADV_MAX - 3 - 4 - 2
        name_type = AdvertisingData.COMPLETE_LOCAL_NAME
        if len(encoded) > room:
            encoded, name_type = encoded[:room], AdvertisingData.SHORTENED_LOCAL_NAME
        structures.append((name_type, encoded))
        return bytes(AdvertisingData(structures))

    async def _advertise(self) -> None:
        await self._device.start_advertising(
            advertising_interval_min=self._adv_interval_ms,
            advertising_interval_max=self._adv_interval_ms,
        )

    def _schedule_advertising(self, delay_s: float) -> None:
        if self._advertise_task is not None and not self._advertise_task.done():
            self._advertise_task.cancel()
        self._advertise_task = asyncio.create_task(
            self._advertise_after(delay_s), name=f"virtual-strap-advertise-{self.address}"
        )

    async def _advertise_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if not self._stopped and len(self._connections) < self._max_centrals:
            await self._advertise()

    async def _cancel_advertising(self) -> None:
        task, self._advertise_task = self._advertise_task, None
        if task is not None:
            task.cancel()
            # asyncio.wait, not `await task`: our own cancellation must still propagate.
            await asyncio.wait([task])

    async def _disconnect(self, connection: Connection, reason: int) -> None:
        if connection.handle in self._device.connections:
            await connection.disconnect(reason)

    def _require_running(self) -> None:
        if not self._started or self._stopped:
            raise SensorError(self.address, "virtual strap is not running")
