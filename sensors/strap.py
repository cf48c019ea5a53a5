"""Strap client: find any Heart Rate Service strap, connect, and stream its measurements.

Talks only to bleak's public API. Which Bluetooth stack sits underneath is decided by the
caller through ``scanner_kwargs`` / ``client_kwargs`` (empty: the platform's; the virtual
strap's air passes ``backend=`` and ``air=``) — nothing here knows which.

Straps are found by the Heart Rate Service UUID 0x180D in their advertisement, never by
name: Polar, Garmin, Wahoo, Coospo… all qualify. The notification callback only decodes and
appends to a bounded buffer (STYLE.md principle 10); a malformed packet is dropped, counted
and reported in the log (:class:`~sensors.drops.DropCounter`: one WARNING line at once, then
at most one a minute with the count, the bytes at DEBUG only), and the stream goes on. A
full buffer (the reader fell behind) drops its oldest notification, counted and reported
the same way. A notification with one stray byte after its last whole field is decoded
without it (heart rate and whole RR intervals kept) and the byte counted and reported so.

A strap's name is taken from its advertisement (the Complete Local Name), as ``settle scan``
shows it, falling back to the name the Bluetooth stack reports: BlueZ reports no name until
it has learnt one, or the alias a user gave the device, so the two can differ.

Battery Level (0x2A19) is read on connect and, where the strap offers notifications, kept
current for the life of the link (:attr:`StrapStream.battery_pct`). A level over 100 (the
characteristic is a uint8) is never shown: one WARNING says a strap sent one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

import sensors.clock as host_clock
from sensors.drops import DropCounter
from sensors.hrs import (
    BATTERY_LEVEL_UUID,
    BODY_SENSOR_LOCATION_UUID,
    HEART_RATE_MEASUREMENT_UUID,
    HEART_RATE_SERVICE_UUID,
    HeartRateMeasurement,
    MalformedMeasurement,
)
from sensors.pmd import PMD_SERVICE_UUID
from settle.errors import SensorError, shown

log = logging.getLogger(__name__)

DIS_MODEL_UUID = "00002a24-0000-1000-8000-00805f9b34fb"
DIS_FIRMWARE_UUID = "00002a26-0000-1000-8000-00805f9b34fb"
DIS_MANUFACTURER_UUID = "00002a29-0000-1000-8000-00805f9b34fb"

NOT_FOUND_HINT = (
    "wear the strap with wet electrodes so it wakes up, and make sure no phone or watch "
    "holds its connection (Polar allows one or two)"
)
CONNECT_HINT = (
    "the strap is awake (it advertised) but the link failed: keep it near the adapter, and "
    "make sure no phone or watch holds its connection (Polar allows one or two)"
)


SETUP_FAILURES: tuple[type[Exception], ...] = (BleakError, TimeoutError, OSError)
"""What a GATT read, or a subscription, on a link just connected may raise: bleak's own
error, a timeout, or a plain :class:`OSError` (bleak's Windows backend passes WinRT errors
on as such). During set-up each means the link is unusable and is retried as a lost link."""


def bluetooth_unavailable(exc: BaseException) -> str:
    """One line for "the Bluetooth stack cannot be used at all" (adapter, power, permissions)."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        detail = "no BlueZ / system D-Bus found"
    elif isinstance(exc, PermissionError):
        detail = "permission denied (is your user allowed to use Bluetooth?)"
    return (
        f"Bluetooth is unavailable ({detail}) — check that an adapter is present and switched "
        "on (`bluetoothctl show`), or try `settle demo` for a virtual strap"
    )


def device_id_for(name: str | None, address: str) -> str:
    """Stable, topic-safe id of a strap, e.g. ``polar_h10_a1b2c3d4``.

    The name part is lower-case ``[a-z0-9_]`` (vendors put serial numbers in names; the hash of
    the address keeps ids distinct and stable when two straps share a model name).
    """
    stem = re.sub(r"[^a-z0-9]+", "_", (name or "strap").lower()).strip("_")[:24] or "strap"
    digest = hashlib.sha1(address.upper().encode()).hexdigest()[:8]
    return f"{stem}_{digest}"


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    """One 0x2A37 notification as received: ``recv_ts_ms`` epoch ms, ``recv_mono_s``
    seconds on :func:`sensors.clock.elapsed_s` (never steps, counts through a suspend)."""

    recv_ts_ms: int
    recv_mono_s: float
    measurement: HeartRateMeasurement


@dataclasses.dataclass(frozen=True, slots=True)
class StrapInfo:
    """What the strap told us about itself after connecting."""

    address: str
    name: str
    device_id: str
    battery_pct: int | None = None
    model: str | None = None
    manufacturer: str | None = None
    firmware: str | None = None
    body_location: str | None = None
    """From 0x2A38: chest, wrist, finger, hand, ear lobe, foot or other."""
    rssi_dbm: int | None = None
    """Signal strength of the advertisement the strap was found by, dBm (None when not
    reported). Measured once per connection, before connecting: bleak offers no RSSI of an
    established link on every platform."""


BODY_LOCATIONS = {0: "other", 1: "chest", 2: "wrist", 3: "finger", 4: "hand", 5: "ear lobe",
                  6: "foot"}  # fmt: skip


SCAN_QUEUE_SIZE = 256
"""Advertisements waiting to be looked at; more are dropped (every strap repeats its own)."""


def _strap_row(device: BLEDevice, adv: AdvertisementData) -> dict[str, Any] | None:
    uuids = [u.lower() for u in adv.service_uuids]
    if HEART_RATE_SERVICE_UUID not in uuids:
        return None
    name = adv.local_name or device.name or ""
    return {
        "name": name,
        "address": device.address,
        "rssi": adv.rssi,
        "device_id": device_id_for(name, device.address),
        "pmd": PMD_SERVICE_UUID in uuids,
    }


def _strongest_first(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: -int(r["rssi"] if r["rssi"] is not None else -127))


async def watch_straps(
    scan_s: float, scanner_kwargs: dict[str, Any]
) -> AsyncIterator[list[dict[str, Any]]]:
    """Scan for ``scan_s`` seconds; yield every strap advertising the Heart Rate Service seen
    so far (rows as in :func:`scan_straps`, strongest first) each time one appears or its
    name, RSSI or services change. Other devices never appear. Bluetooth that cannot be used
    at all becomes one :class:`SensorError` line."""
    # The detection callback only queues (bounded); rows are built here, outside bleak.
    queue: asyncio.Queue[tuple[BLEDevice, AdvertisementData]] = asyncio.Queue(SCAN_QUEUE_SIZE)

    def detected(device: BLEDevice, adv: AdvertisementData) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait((device, adv))

    seen: dict[str, dict[str, Any]] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scan_s
    try:
        scanner = BleakScanner(detected, **scanner_kwargs)
        await scanner.start()
    except (BleakError, OSError) as exc:
        raise SensorError("scan", bluetooth_unavailable(exc)) from exc
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                device, adv = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                break
            row = _strap_row(device, adv)
            if row is None or seen.get(device.address) == row:
                continue
            seen[device.address] = row
            yield _strongest_first(seen.values())
    finally:
        with contextlib.suppress(BleakError, OSError):
            await scanner.stop()


async def scan_straps(scan_s: float, scanner_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every strap advertising the Heart Rate Service within ``scan_s`` seconds (any vendor),
    strongest first: name, address, rssi, device_id and whether it offers Polar PMD (raw ECG).
    Bluetooth that cannot be used at all becomes one :class:`SensorError` line. For rows as
    they arrive, iterate :func:`watch_straps` instead."""
    rows: list[dict[str, Any]] = []
    async for snapshot in watch_straps(scan_s, scanner_kwargs):
        rows = snapshot
    return rows


async def _disconnect_quietly(client: BleakClient) -> None:
    """Disconnect if connected, within 5 s, ignoring a link that is already gone."""
    if client.is_connected:
        with contextlib.suppress(BleakError, TimeoutError, OSError):
            async with asyncio.timeout(5):
                await client.disconnect()


def _offers_hrs(adv: AdvertisementData) -> bool:
    return HEART_RATE_SERVICE_UUID in (u.lower() for u in adv.service_uuids)


class StrapClient:
    """Finds and streams one strap. See the module docstring."""

    def __init__(
        self,
        *,
        address: str = "",
        name: str = "",
        scan_timeout_s: float = 15.0,
        connect_timeout_s: float = 20.0,
        scanner_kwargs: dict[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        buffer_size: int = 512,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = address
        self.name = name
        self.scan_timeout_s = scan_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._scanner_kwargs = scanner_kwargs or {}
        self._client_kwargs = client_kwargs or {}
        self._buffer_size = buffer_size
        self._clock = clock
        self.malformed_drops = DropCounter(
            address or name or "strap", "malformed heart-rate notification", logger=log
        )
        """Notifications that could not be decoded: dropped, counted, warned about (its
        ``sensor_id`` becomes the strap's device id once connected)."""
        self.overflow_drops = DropCounter(
            address or name or "strap",
            "heart-rate notification",
            "their beats are missing from the session",
            verb="dropped (the reader fell behind)",
            logger=log,
        )
        """Notifications dropped, oldest first, because the consumer fell ``buffer_size``
        behind: counted and warned about as :attr:`malformed_drops` are."""
        self.stray_bytes = DropCounter(
            address or name or "strap",
            "stray trailing byte",
            "their heart rate and whole RR intervals were kept",
            verb="ignored in heart-rate notifications",
            logger=log,
        )
        """Notifications with one stray byte after their last whole field (decoded without
        it, see :mod:`sensors.hrs`): counted and warned about as :attr:`malformed_drops`
        are."""
        self._found_rssi: tuple[str, int | None] = ("", None)
        self._bad_battery_said = False
        self._found_name: tuple[str, str] = ("", "")
        self._passed_over: dict[str, str] = {}
        self._pinned = False
        """Looking for one address since :meth:`keep_to` (not from the config)."""
        """Heart-rate straps the last scan saw but did not want (another address), by address:
        named when the wanted one is not found."""

    @property
    def overflowed(self) -> int:
        """Notifications dropped because the consumer fell behind (see :attr:`overflow_drops`)."""
        return self.overflow_drops.total

    @property
    def malformed(self) -> int:
        """Notifications that could not be decoded (dropped; see :attr:`malformed_drops`)."""
        return self.malformed_drops.total

    def keep_to(self, address: str) -> None:
        """From now on find only the strap at ``address``: the one that connected. Without
        it, a client with no address (the default before ``settle pair``) or with a name
        filter took whichever matching strap advertised first at a reconnect — someone
        else's strap nearby. Its name is no longer checked: the address says which strap it
        is, and a name may change (an alias, a name BlueZ learns later)."""
        self.address = address
        self.name = ""
        self._pinned = True

    def _wanted(self, device: BLEDevice, adv: AdvertisementData) -> bool:
        if not _offers_hrs(adv):
            return False
        if self.address and device.address.upper() != self.address.upper():
            if len(self._passed_over) < 8 or device.address in self._passed_over:
                self._passed_over[device.address] = adv.local_name or device.name or ""
            return False
        if self.name:
            shown = adv.local_name or device.name or ""
            if self.name.lower() not in shown.lower():
                return False
        # HCI reports 127 for "not available"; real readings lie far below 20 dBm.
        rssi = adv.rssi if isinstance(adv.rssi, int) and -127 <= adv.rssi <= 20 else None
        self._found_rssi = (device.address, rssi)
        self._found_name = (device.address, adv.local_name or device.name or "")
        return True

    async def find(self) -> BLEDevice:
        """Scan until a wanted strap advertises; :class:`SensorError` after ``scan_timeout_s``."""
        target = self.address or self.name or "any heart-rate strap"
        self._passed_over = {}
        try:
            device = await BleakScanner.find_device_by_filter(
                self._wanted, timeout=self.scan_timeout_s, **self._scanner_kwargs
            )
        except (BleakError, OSError) as exc:
            raise SensorError(target, bluetooth_unavailable(exc)) from exc
        if device is None:
            if self._pinned and self._passed_over:
                # Another strap is in range: "no strap found" was false, and did not say that
                # only the one that connected is looked for (the user configured none).
                others = ", ".join(
                    f"{a} {shown(n)}" if n else a for a, n in list(self._passed_over.items())[:3]
                )
                raise SensorError(
                    target,
                    f"strap {self.address} not found within {self.scan_timeout_s:g} s "
                    f"(ignoring {others}: only {self.address} is looked for; if your strap's "
                    "address changed, restart settle)",
                )
            raise SensorError(
                target,
                f"no strap offering the Heart Rate Service found within "
                f"{self.scan_timeout_s:g} s — {NOT_FOUND_HINT}",
            )
        return device

    @contextlib.asynccontextmanager
    async def connect(self, device: BLEDevice) -> AsyncIterator[StrapStream]:
        """Connect, read what the strap says about itself, subscribe to 0x2A37.

        On exit notifications are stopped and the strap is disconnected (an unclean exit can
        make the next connection hang during service discovery on some straps).
        """
        stream = StrapStream(self, device)
        client = BleakClient(
            device,
            disconnected_callback=lambda _c: stream._on_disconnect(),
            timeout=self.connect_timeout_s,
            **self._client_kwargs,
        )
        try:
            async with asyncio.timeout(self.connect_timeout_s + 5):
                await client.connect()
        except (BleakError, TimeoutError, OSError) as exc:
            raise SensorError(
                device.address,
                f"found but could not connect ({self._connect_failure(exc)}) — {CONNECT_HINT}",
            ) from exc
        except asyncio.CancelledError:
            # Stopped while connecting: a link that came up all the same is closed, or the
            # strap stays connected to nobody and advertises no more until it times out.
            await _disconnect_quietly(client)
            raise
        stream.client = client
        battery_notify = False
        try:
            try:
                stream.info = await self._read_info(client, device)
                self.malformed_drops.sensor_id = stream.info.device_id
                self.overflow_drops.sensor_id = stream.info.device_id
                self.stray_bytes.sensor_id = stream.info.device_id
                await client.start_notify(HEART_RATE_MEASUREMENT_UUID, stream._on_notify)
                battery_notify = await self._follow_battery(client, stream)
            except SETUP_FAILURES as exc:
                # bleak's Windows backend raises a plain OSError here ("[WinError
                # -2147467260] Operation aborted" from start_notify, bleak issue #1590): it
                # ended the strap task, and with it the daemon, instead of being retried.
                # A bare TimeoutError here is a GATT request's, not connect_timeout_s.
                why = "no answer" if type(exc) is TimeoutError and not str(exc) else None
                raise SensorError(
                    device.address,
                    f"lost while setting up: {why or self._connect_failure(exc)}",
                ) from exc
            yield stream
        except BleakError as exc:
            raise SensorError(device.address, f"lost: {self._connect_failure(exc)}") from exc
        finally:
            try:
                if client.is_connected:
                    with contextlib.suppress(BleakError, TimeoutError, OSError):
                        async with asyncio.timeout(5):
                            await client.stop_notify(HEART_RATE_MEASUREMENT_UUID)
                            if battery_notify:
                                await client.stop_notify(BATTERY_LEVEL_UUID)
            finally:
                # Even when a stop cancels the stop_notify: a link left up keeps the strap
                # connected to nobody (and not advertising) until it times out.
                await _disconnect_quietly(client)
                # Last: notifications dropped while the link was being taken down count too
                # (flushed before, the closing line said 5 of 20).
                self.malformed_drops.flush()
                self.overflow_drops.flush()
                self.stray_bytes.flush()

    def battery_level(self, who: str, data: bytes | bytearray) -> int | None:
        """A Battery Level (0x2A19) value, percent; None for an empty one or one over 100
        (uint8: a strap may send up to 255), which is warned about once per client (a
        strap that sends it sends it again) and never shown as a level."""
        if not data:
            return None
        if data[0] > 100:
            if not self._bad_battery_said:
                self._bad_battery_said = True
                log.warning("%s: battery level %d %% reported (over 100); not shown", who, data[0])
            return None
        return int(data[0])

    def _connect_failure(self, exc: BaseException) -> str:
        """What went wrong, for one line: a bare ``TimeoutError()`` (or any exception whose
        text is empty) said nothing at all, "could not connect ()"."""
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"no answer within {self.connect_timeout_s:g} s"
        return str(exc) or type(exc).__name__

    @staticmethod
    async def _follow_battery(client: BleakClient, stream: StrapStream) -> bool:
        """Subscribe to Battery Level notifications where the strap offers them (a session
        lasts hours; the level read on connect goes stale). True when subscribed."""
        char = client.services.get_characteristic(BATTERY_LEVEL_UUID)
        if char is None or "notify" not in char.properties:
            return False
        try:
            await client.start_notify(char, stream._on_battery)
        except SETUP_FAILURES as exc:
            log.debug("%s: no battery notifications (%s)", stream.info.device_id, exc)
            return False
        return True

    def advertised_name(self, device: BLEDevice) -> str:
        """The strap's name as its advertisement gave it when found (as ``settle scan``
        shows it), else the name the Bluetooth stack reports, else ""."""
        if self._found_name[0] == device.address and self._found_name[1]:
            return self._found_name[1]
        return device.name or ""

    async def _read_info(self, client: BleakClient, device: BLEDevice) -> StrapInfo:
        async def text(uuid: str) -> str | None:
            with contextlib.suppress(*SETUP_FAILURES, KeyError, ValueError):
                raw = await client.read_gatt_char(uuid)
                return bytes(raw).decode("utf-8", "replace").strip("\x00 ") or None
            return None

        battery: int | None = None
        with contextlib.suppress(*SETUP_FAILURES, KeyError, ValueError, IndexError):
            battery = self.battery_level(
                device.address, await client.read_gatt_char(BATTERY_LEVEL_UUID)
            )
        location: str | None = None
        with contextlib.suppress(*SETUP_FAILURES, KeyError, ValueError, IndexError):
            code = int((await client.read_gatt_char(BODY_SENSOR_LOCATION_UUID))[0])
            location = BODY_LOCATIONS.get(code, f"reserved ({code})")
        name = self.advertised_name(device)
        return StrapInfo(
            address=device.address,
            name=name,
            device_id=device_id_for(name, device.address),
            battery_pct=battery,
            model=await text(DIS_MODEL_UUID),
            manufacturer=await text(DIS_MANUFACTURER_UUID),
            firmware=await text(DIS_FIRMWARE_UUID),
            body_location=location,
            rssi_dbm=self._found_rssi[1] if self._found_rssi[0] == device.address else None,
        )


class StrapStream:
    """Async iterator of :class:`Notification` from one connected strap.

    Ends by raising :class:`SensorError` (reason ``"disconnected"``) when the link drops.
    """

    def __init__(self, owner: StrapClient, device: BLEDevice) -> None:
        self._owner = owner
        self.device = device
        self.client: BleakClient | None = None
        """The connected client (e.g. for the Polar PMD ECG stream on the same link)."""
        self.info = StrapInfo(
            device.address, device.name or "", device_id_for(device.name, device.address)
        )
        self._buffer: collections.deque[Notification] = collections.deque()
        self._wakeup = asyncio.Event()
        self._disconnected = False

    def _on_notify(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        try:
            m = HeartRateMeasurement.from_bytes(data)
        except MalformedMeasurement as exc:
            log.debug("dropped malformed notification from %s: %s", self.device.address, exc)
            self._owner.malformed_drops.add(exc.reason)
            return
        if m.stray:
            after = (
                "RR intervals" if m.rr_raw
                else "energy expended" if m.energy_expended_kj is not None
                else "heart rate"
            )  # fmt: skip
            self._owner.stray_bytes.add(f"one byte after the {after}")
        if len(self._buffer) >= self._owner._buffer_size:
            self._buffer.popleft()
            self._owner.overflow_drops.add(
                f"over {self._owner._buffer_size} notifications waiting to be read"
            )
        self._buffer.append(
            Notification(int(self._owner._clock() * 1000), host_clock.elapsed_s(), m)
        )
        self._wakeup.set()

    def _on_battery(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        pct = self._owner.battery_level(self.info.device_id, data)
        if pct is not None:
            self.info = dataclasses.replace(self.info, battery_pct=pct)
            self._wakeup.set()

    @property
    def battery_pct(self) -> int | None:
        """The latest Battery Level (percent): read on connect, then as the strap notifies."""
        return self.info.battery_pct

    def _on_disconnect(self) -> None:
        self._disconnected = True
        self._wakeup.set()

    def __aiter__(self) -> StrapStream:
        return self

    async def __anext__(self) -> Notification:
        while not self._buffer:
            if self._disconnected:
                raise SensorError(self.info.device_id, "disconnected")
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._buffer.popleft()
