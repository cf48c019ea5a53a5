"""A bleak backend on bumble: production code keeps calling bleak's public API only.

``BleakScanner(backend=BumbleBleakScanner, air=air)`` and
``BleakClient(addr, backend=BumbleBleakClient, air=air)`` (or ``**air.scanner_kwargs()`` /
``**air.client_kwargs()``) run against the bumble devices of a
:class:`~sensors.virtual.air.VirtualAir`. bleak forwards its own platform kwargs
(``bluez=``, ``cb=``, ``winrt=``, ``services=`` …) to every backend; we accept and ignore
the platform ones.

bumble exceptions are translated to bleak's exactly once, in :func:`_bleak_errors`.
bumble calls our callbacks synchronously in the event loop: they only set state and call
the user's (also synchronous) callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, cast

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
)
from bumble import att, core, hci
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement, Connection, Peer

if TYPE_CHECKING:
    from sensors.virtual.air import VirtualAir

logger = logging.getLogger(__name__)


class _LateNotifications(logging.Filter):
    """Drops bumble's "!!! received notification with no subscriber" warning: a notification
    already on its way when the central unsubscribed (every stop of ``settle demo``). A real
    stack (BlueZ, CoreBluetooth) drops such a notification silently; the demo printed a
    WARNING line from the emulation at the end of a clean run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(
            (
                "!!! received notification with no subscriber",
                "!!! received indication with no subscriber",
            )
        )


logging.getLogger("bumble.gatt_client").addFilter(_LateNotifications())

DEFAULT_MTU = 247
"""ATT_MTU requested on connect (bytes), like desktop stacks that negotiate on their own."""

_GAP_DEVICE_NAME = UUID.from_16_bits(0x2A00)
_T = AdvertisingData.Type
_UUID_LISTS = (
    _T.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    _T.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    _T.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
    _T.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
    _T.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
    _T.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
)
_SERVICE_DATA = (
    _T.SERVICE_DATA_16_BIT_UUID,
    _T.SERVICE_DATA_32_BIT_UUID,
    _T.SERVICE_DATA_128_BIT_UUID,
)


def uuid_str(u: UUID) -> str:
    """bumble UUID → bleak's form: full 128-bit, lowercase, dashed."""
    # bumble stores UUIDs little-endian; uuid.UUID wants big-endian bytes.
    return str(uuid.UUID(bytes=u.to_bytes(force_128=True)[::-1]))


def address_str(address: hci.Address) -> str:
    """bumble Address → the "AA:BB:CC:DD:EE:FF" string bleak presents on Linux/Windows."""
    return address.to_string(with_type_qualifier=False)


def _require_air(air: VirtualAir | None) -> VirtualAir:
    if air is None:
        raise BleakError("the bumble backend needs air=VirtualAir (see VirtualAir.*_kwargs())")
    return air


async def _power_on(air: VirtualAir) -> None:
    """Start the air's central, or fail as bleak does when the adapter is off."""
    if air.closed:
        raise BleakBluetoothNotAvailableError(
            "the virtual air is closed", BleakBluetoothNotAvailableReason.POWERED_OFF
        )
    await air.start()


@contextlib.contextmanager
def _bleak_errors(what: str) -> Iterator[None]:
    """Translate bumble exceptions raised inside the block into bleak's."""
    try:
        yield
    except asyncio.CancelledError:
        # bumble's GATT client *cancels* the pending request future when the link drops,
        # so a read on a dead link surfaces as CancelledError in a task nobody cancelled.
        # Turn that into the BleakError a real backend raises; real cancellations pass.
        task = asyncio.current_task()
        if task is not None and task.cancelling() == 0:
            raise BleakError(f"{what}: disconnected") from None
        raise
    except att.ATT_Error as exc:
        raise BleakGATTProtocolError(exc.error_code) from exc
    except (core.TimeoutError, TimeoutError) as exc:
        raise TimeoutError(f"{what}: timed out") from exc
    except (core.BaseBumbleError, core.BaseError, hci.HCI_Error) as exc:
        raise BleakError(f"{what}: {exc}") from exc


class BumbleBleakScanner(BaseBleakScanner):
    """bleak scanner backend listening to the central of a :class:`VirtualAir`.

    ``scanning_mode`` is accepted for bleak compatibility; the virtual controller always
    reports advertising and scan-response data.
    """

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        air: VirtualAir | None = None,
        **kwargs: Any,  # bleak's platform args (bluez=, cb=): irrelevant here
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._air = _require_air(air)
        self._scanning = False

    async def start(self) -> None:
        """Start scanning; ``seen_devices`` is cleared as bleak requires."""
        if self._scanning:
            return
        self.seen_devices = {}
        self._air.central.on("advertisement", self._on_advertisement)
        self._scanning = True
        await _power_on(self._air)
        with _bleak_errors("start scanning"):
            await self._air.acquire_scanning()

    async def stop(self) -> None:
        """Stop scanning (the central keeps scanning while other scanners need it)."""
        if not self._scanning:
            return
        self._scanning = False
        self._air.central.remove_listener("advertisement", self._on_advertisement)
        with _bleak_errors("stop scanning"):
            await self._air.release_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        address = address_str(advertisement.address)
        data = advertisement.data
        name = data.get(_T.COMPLETE_LOCAL_NAME) or data.get(_T.SHORTENED_LOCAL_NAME)
        # get_all's overloads cannot follow a loop variable: state the decoded types.
        uuid_lists = [cast("list[list[UUID]]", data.get_all(t)) for t in _UUID_LISTS]
        service_uuids = [uuid_str(u) for lists in uuid_lists for lst in lists for u in lst]
        data_items = [cast("list[tuple[UUID, bytes]]", data.get_all(t)) for t in _SERVICE_DATA]
        service_data = {uuid_str(u): bytes(v) for items in data_items for u, v in items}
        manufacturer = {cid: bytes(v) for cid, v in data.get_all(_T.MANUFACTURER_SPECIFIC_DATA)}
        tx_power = data.get(_T.TX_POWER_LEVEL)
        if tx_power is not None and tx_power > 127:  # bumble decodes the int8 as unsigned
            tx_power -= 256

        previous = self.seen_devices.get(address)
        if advertisement.is_scan_response and previous is not None:
            # A scan response completes the advertisement: merge like the OS stacks do.
            old = previous[1]
            name = name or old.local_name
            service_uuids = list(dict.fromkeys(old.service_uuids + service_uuids))
            service_data = {**old.service_data, **service_data}
            manufacturer = {**old.manufacturer_data, **manufacturer}
            tx_power = tx_power if tx_power is not None else old.tx_power

        if not self.is_allowed_uuid(service_uuids):
            return
        adv = AdvertisementData(
            local_name=name,
            manufacturer_data=manufacturer,
            service_data=service_data,
            service_uuids=service_uuids,
            tx_power=tx_power,
            rssi=advertisement.rssi,
            platform_data=(advertisement,),
        )
        device = self.create_or_update_device(address, address, name, advertisement, adv)
        self.call_detection_callbacks(device, adv)


class BumbleBleakClient(BaseBleakClient):
    """bleak client backend connecting through the central of a :class:`VirtualAir`.

    Extra kwargs (pass them to ``BleakClient``): ``air`` (required), ``mtu`` (ATT_MTU in
    bytes requested on connect, default 247; ``None`` keeps 23 so that
    :meth:`request_mtu` can be called later — ATT allows one exchange per connection) and
    ``reported_mtu`` (what :attr:`mtu_size` says instead of the link's real MTU; ``23``
    imitates bleak's BlueZ backend, which reports 23 whatever BlueZ negotiated).
    """

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        services: set[str] | None = None,
        *,
        air: VirtualAir | None = None,
        mtu: int | None = DEFAULT_MTU,
        reported_mtu: int | None = None,
        **kwargs: Any,  # disconnected_callback, timeout, plus bleak's bluez=/winrt=
    ) -> None:
        super().__init__(address_or_ble_device, **kwargs)
        self._air = _require_air(air)
        self._requested_mtu = mtu
        self._reported_mtu = reported_mtu
        self._service_filter = services
        self._by_address = not isinstance(address_or_ble_device, BLEDevice)
        self._name = (
            address_or_ble_device.name if isinstance(address_or_ble_device, BLEDevice) else None
        )
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._subscribers: dict[int, Callable[[bytes], None]] = {}

    # -- properties ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """GAP device name read on connect, else the scanned name, else the address."""
        return self._name or self.address

    @property
    def mtu_size(self) -> int:
        """Negotiated ATT_MTU in bytes (23 until an exchange happened), or ``reported_mtu``."""
        if self._reported_mtu is not None:
            return self._reported_mtu
        return self._link_mtu()

    def _link_mtu(self) -> int:
        """The ATT_MTU the link really uses (what BlueZ negotiated, in the BlueZ case)."""
        return self._connection.att_mtu if self._connection else att.ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    # -- connection ------------------------------------------------------------------

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect, exchange MTU and discover services, all within ``timeout`` seconds.

        An address that does not answer raises :class:`BleakDeviceNotFoundError` (given as
        a string, as bleak's scan-then-connect backends do) or :class:`TimeoutError`
        (given as a ``BLEDevice``).
        """
        if self._connection is not None:
            return
        if pair:
            logger.info("bumble backend: pairing not needed on the virtual air; ignored")
        timeout = float(kwargs.get("timeout", self._timeout))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await _power_on(self._air)
        try:
            async with asyncio.timeout_at(deadline):
                await self._air.connect_lock.acquire()
        except TimeoutError:
            raise self._not_found(timeout) from None
        try:
            remaining = max(deadline - loop.time(), 0.001)
            with _bleak_errors(f"connect to {self.address}"):
                connection = await self._air.central.connect(
                    hci.Address(self.address), timeout=remaining
                )
        except asyncio.CancelledError:
            # bumble leaves the controller's attempt pending when its caller is cancelled;
            # abandon it or the next connect() is refused with COMMAND_DISALLOWED — and end
            # the link if it completed meanwhile, or the strap stays taken.
            self._air.abandon_connection(self.address)
            raise
        except TimeoutError:
            raise self._not_found(timeout) from None
        finally:
            self._air.connect_lock.release()

        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        self._connection = connection
        self._peer = Peer(connection)
        try:
            async with asyncio.timeout_at(deadline):
                with _bleak_errors(f"set up {self.address}"):
                    if self._requested_mtu is not None:
                        await self._peer.request_mtu(self._requested_mtu)
                    self.services = await self._discover()
        except BaseException:
            await self.disconnect()
            raise

    def _not_found(self, timeout: float) -> Exception:
        msg = f"{self.address} not connectable within {timeout:g} s"
        return (
            BleakDeviceNotFoundError(self.address, msg) if self._by_address else TimeoutError(msg)
        )

    async def _discover(self) -> BleakGATTServiceCollection:
        peer = self._peer
        assert peer is not None
        uuids = [UUID(u) for u in self._service_filter or ()]
        collection = BleakGATTServiceCollection()
        for service in await peer.discover_services(uuids):
            bleak_service = BleakGATTService(service, service.handle, uuid_str(service.uuid))
            collection.add_service(bleak_service)
            for char in await peer.discover_characteristics(service=service):
                props = [
                    name for bit, name in CHARACTERISTIC_PROPERTIES.items() if char.properties & bit
                ]
                bleak_char = BleakGATTCharacteristic(
                    char,
                    char.handle,
                    uuid_str(char.uuid),
                    props,
                    self._max_write_size,
                    bleak_service,
                )
                collection.add_characteristic(bleak_char)
                for desc in await peer.discover_descriptors(char):
                    collection.add_descriptor(
                        BleakGATTDescriptor(desc, desc.handle, uuid_str(desc.type), bleak_char)
                    )
                if char.uuid == _GAP_DEVICE_NAME:
                    self._name = (await peer.read_value(char)).decode("utf-8", "replace")
        return collection

    def _max_write_size(self) -> int:
        # BlueZ's characteristic "MTU" property is the real one, even when mtu_size says 23.
        return self._link_mtu() - 3

    async def request_mtu(self, mtu: int) -> int:
        """Exchange ATT_MTU now (only if the client was built with ``mtu=None``); return it.

        Reached through ``client._backend`` — bleak has no public MTU request.
        """
        peer = self._require_peer()
        with _bleak_errors("exchange MTU"):
            if peer.gatt_client.mtu_exchange_done:
                raise BleakError("ATT_MTU was already exchanged on this connection")
            return await peer.request_mtu(mtu)

    async def disconnect(self) -> None:
        """Disconnect on our initiative: the disconnected callback is NOT called."""
        connection, self._connection, self._peer = self._connection, None, None
        self._subscribers.clear()
        if connection is None:
            return
        connection.remove_listener(connection.EVENT_DISCONNECTION, self._on_disconnection)
        if connection.handle not in self._air.central.connections:
            return  # already gone (raced with a link loss)
        with _bleak_errors(f"disconnect from {self.address}"):
            await connection.disconnect()

    def _on_disconnection(self, reason: int) -> None:
        """Unsolicited loss of the link (peripheral dropped, supervision timeout …)."""
        logger.debug("bumble backend: %s disconnected, reason=0x%02X", self.address, reason)
        self._connection = self._peer = None
        self._subscribers.clear()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """No-op: virtual straps, like real HR straps, need no bonding."""
        logger.info("bumble backend: pair() is a no-op on the virtual air")

    async def unpair(self) -> None:
        """No-op, see :meth:`pair`."""
        logger.info("bumble backend: unpair() is a no-op on the virtual air")

    # -- GATT I/O --------------------------------------------------------------------

    def _require_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError(f"{self.address}: not connected")
        return self._peer

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        peer = self._require_peer()
        if use_cached and (cached := peer.gatt_client.cached_values.get(characteristic.handle)):
            return bytearray(cached[1])
        with _bleak_errors(f"read {characteristic.uuid}"):
            return bytearray(await peer.read_value(characteristic.handle))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        peer = self._require_peer()
        if use_cached and (cached := peer.gatt_client.cached_values.get(descriptor.handle)):
            return bytearray(cached[1])
        with _bleak_errors(f"read descriptor {descriptor.handle}"):
            return bytearray(await peer.read_value(descriptor.handle))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        peer = self._require_peer()
        with _bleak_errors(f"write {characteristic.uuid}"):
            await peer.write_value(characteristic.handle, bytes(data), with_response=response)

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        peer = self._require_peer()
        with _bleak_errors(f"write descriptor {descriptor.handle}"):
            await peer.write_value(descriptor.handle, bytes(data), with_response=True)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        """Write the CCCD: notifications when offered (as bleak prefers), else indications."""
        peer = self._require_peer()
        if not {"notify", "indicate"} & set(characteristic.properties):
            raise BleakError(f"{characteristic.uuid} supports neither notify nor indicate")
        if characteristic.get_descriptor("00002902-0000-1000-8000-00805f9b34fb") is None:
            # bumble would only log a warning and return: a silent no-op.
            raise BleakError(f"{characteristic.uuid} has no CCCD")

        def on_value(value: bytes) -> None:
            callback(bytearray(value))

        with _bleak_errors(f"subscribe to {characteristic.uuid}"):
            await peer.subscribe(characteristic.obj, on_value, prefer_notify=True)
        self._subscribers[characteristic.handle] = on_value

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Unsubscribe; the CCCD is cleared once our last subscriber is gone."""
        peer = self._require_peer()
        subscriber = self._subscribers.pop(characteristic.handle, None)
        with _bleak_errors(f"unsubscribe from {characteristic.uuid}"):
            await peer.unsubscribe(characteristic.obj, subscriber)
