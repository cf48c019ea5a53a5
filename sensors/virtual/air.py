"""An in-process Bluetooth LE "air": bumble controllers on one ``LocalLink``.

:class:`VirtualAir` owns the link plus ONE central bumble :class:`~bumble.device.Device`
that plays the computer's Bluetooth adapter. Every ``BleakScanner``/``BleakClient`` built
with :meth:`VirtualAir.scanner_kwargs` / :meth:`VirtualAir.client_kwargs` shares it, so
several clients can be connected to different virtual straps at once, as with a real
adapter. Peripherals (virtual straps, other advertisers) get their own controller and
host from :meth:`VirtualAir.create_device`.

Two behaviours of bumble's software controller (pinned bumble==0.0.236) are fixed here,
because a daemon tested against them would otherwise learn the wrong lessons:

* A cancelled LE connection is never completed, so ``Device.connect(timeout=...)`` to an
  absent peripheral hangs forever (:class:`_VirtualController` completes it with
  UNKNOWN_CONNECTION_IDENTIFIER, as real controllers do).
* Nothing ever times out a link: a peripheral that vanishes is never noticed.
  :meth:`VirtualAir.lose_link` injects a supervision timeout on both ends.

Two of its costs are removed, so that hundreds of virtual straps measure the daemon rather
than the simulation (docs/performance.md): the link's O(N) search for the receiver of every
packet (:class:`_VirtualLink`), and HCI packets formatted for debug lines nobody logs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from bumble import hci
from bumble.controller import Controller
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from settle.errors import SensorError

if TYPE_CHECKING:
    from bumble.controller import Connection as ControllerConnection

logger = logging.getLogger(__name__)
# bumble formats every HCI packet it passes (``logger.debug(f"... {packet}")``) whether or not
# DEBUG is on: ≈ 8 % of the process's CPU with 300 virtual straps. The four per-packet paths
# are re-done below without that line unless these loggers want DEBUG.
_HOST_LOG = logging.getLogger("bumble.host")
_CONTROLLER_LOG = logging.getLogger("bumble.controller")

# Random static addresses need the two most significant bits set (Core Vol 6 B 1.3.2.1).
CENTRAL_ADDRESS = "F0:5E:77:1E:00:00"
PERIPHERAL_ADDRESS_PREFIX = "C0:5E:77:1E"
"""Every virtual strap's address starts with this (``settle run`` skips remembered ones)."""


class _VirtualLink(LocalLink):
    """bumble's ``LocalLink`` with a constant-time controller lookup.

    Stock bumble finds the receiver of every ACL packet by scanning every controller and
    every connection on the link: O(N) per packet, O(N²) per second with N straps streaming
    (a fifth of the CPU at 300 straps). Addresses on a :class:`VirtualAir` are unique, so the
    controller found for an address is remembered and only re-checked.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # bumble leaves it untyped
        self._by_address: dict[hci.Address, Controller] = {}

    def find_le_controller(self, address: hci.Address) -> Controller | None:
        c = self._by_address.get(address)
        if (
            c is not None
            and c in self.controllers
            and (c.random_address == address or c.public_address == address)
        ):
            return c
        found: Controller | None = super().find_le_controller(address)
        if found is not None and (
            found.random_address == address or found.public_address == address
        ):
            self._by_address[address] = found
        return found

    def remove_controller(self, controller: Controller) -> None:
        super().remove_controller(controller)
        self._by_address = {a: c for a, c in self._by_address.items() if c is not controller}


class _VirtualController(Controller):
    """bumble's software controller with a working LE Create Connection Cancel.

    Stock bumble answers the cancel with "success" but keeps the pending connection and
    never sends the LE Connection Complete event the spec requires (Core Vol 4 E 7.8.13),
    so bumble's own ``Device.connect`` timeout path waits forever. Real controllers end
    the attempt with status UNKNOWN_CONNECTION_IDENTIFIER (0x02); so do we.
    """

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        # Deferred with call_soon so the host sees Command Complete first, then the
        # Connection Complete event, in the order a real controller emits them.
        asyncio.get_running_loop().call_soon(self.abort_pending_connection)
        # With nothing pending a real controller says COMMAND_DISALLOWED; we keep
        # bumble's SUCCESS so a connect that completed in the same instant as its
        # timeout is not turned into an HCI error by bumble's host.
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    # bumble 0.0.236's Controller.on_hci_packet / send_hci_packet without the eager debug line.
    def on_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if _CONTROLLER_LOG.isEnabledFor(logging.DEBUG):
            super().on_hci_packet(packet)
        elif isinstance(packet, hci.HCI_Command):
            self.on_hci_command_packet(packet)
        elif isinstance(packet, hci.HCI_AclDataPacket):
            self.on_hci_acl_data_packet(packet)
        else:  # events and unknown packets: bumble's own handling (warnings)
            super().on_hci_packet(packet)

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if _CONTROLLER_LOG.isEnabledFor(logging.DEBUG):
            super().send_hci_packet(packet)
        elif self.host:
            asyncio.get_running_loop().call_soon(self.host.on_packet, bytes(packet))

    def abort_pending_connection(self) -> None:
        """End a pending LE connection attempt, if any, with UNKNOWN_CONNECTION_IDENTIFIER."""
        pending = self.pending_le_connection
        if pending is None:
            return
        self.pending_le_connection = None
        self.send_hci_packet(
            hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=pending.peer_address.address_type,
                peer_address=pending.peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
        )

    def drop_le_connection(self, peer_address: hci.Address, reason: int) -> bool:
        """Forget the link to ``peer_address`` without any LL exchange; report ``reason``.

        Returns False when there is no such link.
        """
        connection: ControllerConnection | None = self.le_connections.get(peer_address)
        if connection is None:
            return False
        # on_le_disconnected sends Disconnection Complete to our host and removes the
        # link; unlike HCI Disconnect it sends no LL_TERMINATE_IND to the peer.
        self.on_le_disconnected(connection, reason)
        return True

    def silence(self) -> None:
        """Stop every advertiser and forget every link (used when the air closes)."""
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.pending_le_connection = None


class _VirtualHost(Host):
    """bumble's Host, tolerant of a command answer that arrives after its waiter was cancelled.

    When a strap is stopped while one of its HCI commands (e.g. advertising enable) is in
    flight, bumble's host tries to set the result of the cancelled future and asyncio logs an
    ``InvalidStateError`` traceback at every demo exit. A real controller answer for an abandoned
    command is simply dropped here.
    """

    # bumble 0.0.236's Host.send_hci_packet / on_hci_packet without the eager debug line.
    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if _HOST_LOG.isEnabledFor(logging.DEBUG) or self.snooper:
            super().send_hci_packet(packet)
        elif self.hci_sink:
            self.hci_sink.on_packet(bytes(packet))

    def on_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if _HOST_LOG.isEnabledFor(logging.DEBUG) or self.snooper:
            super().on_hci_packet(packet)
        elif isinstance(packet, hci.HCI_Event):
            self.on_hci_event_packet(packet)
        elif isinstance(packet, hci.HCI_AclDataPacket):
            self.on_hci_acl_data_packet(packet)
        else:  # commands, SCO, ISO: not used by a virtual strap; bumble's own handling
            super().on_hci_packet(packet)

    def on_command_processed(self, event: Any) -> None:
        pending = self.pending_response
        if pending is not None and pending.done():
            self.pending_response = None
            return
        super().on_command_processed(event)


class VirtualAir:
    """One virtual radio environment: a ``LocalLink`` and the computer's adapter.

    Create it inside a running event loop (bumble's controllers need one)::

        async with VirtualAir() as air:
            strap = VirtualStrap(air, rr_ms)
            ...
            scanner = BleakScanner(**air.scanner_kwargs())

    ``central`` is the bumble Device every bleak scanner/client on this air uses.
    """

    def __init__(self) -> None:
        asyncio.get_running_loop()  # fail early and clearly outside a loop
        self.link = _VirtualLink()
        self._central_controller = _VirtualController("central", link=self.link)
        self.central = Device(
            name="settle-virtual-adapter",
            address=hci.Address(CENTRAL_ADDRESS),
            host=_VirtualHost(self._central_controller, AsyncPipeSink(self._central_controller)),
        )
        self._controllers: list[_VirtualController] = [self._central_controller]
        self._devices: list[Device] = [self.central]
        self._address_counter = itertools.count(1)
        # bumble's Device allows one pending LE connection at a time, like most real
        # controllers; concurrent BleakClient.connect() calls queue on this lock.
        self.connect_lock = asyncio.Lock()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._scan_users = 0
        self._scan_lock = asyncio.Lock()
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` began: the "adapter" is gone for good."""
        return self._closed

    async def start(self) -> None:
        """Power on the central (idempotent)."""
        if self._closed:
            raise SensorError("virtual-air", "this VirtualAir is closed")
        if not self._started:
            await self.central.power_on()
            self._started = True

    async def close(self) -> None:
        """Stop what lives on this air, silence every controller, power off every device."""
        if self._closed:
            return
        self._closed = True
        # Straps first, newest first: they own tasks (streaming, re-advertising) that
        # would otherwise be left pending, or be mid-HCI-command when the hosts flush.
        for closer in reversed(self._closers):
            await closer()
        for controller in self._controllers:
            controller.silence()
        for device in self._devices:
            # power_off flushes the host, which cancels anything still waiting on it.
            await device.power_off()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- bleak integration -----------------------------------------------------------

    def scanner_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make ``BleakScanner(**kw)`` scan this air."""
        from sensors.virtual.backend import BumbleBleakScanner

        return {"backend": BumbleBleakScanner, "air": self}

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make ``BleakClient(address, **kw)`` connect through this air."""
        from sensors.virtual.backend import BumbleBleakClient

        return {"backend": BumbleBleakClient, "air": self}

    async def acquire_scanning(self) -> None:
        """Start scanning on the central unless another scanner already did."""
        await self.start()
        async with self._scan_lock:
            if self._scan_users == 0:
                await self.central.start_scanning(filter_duplicates=False)
            self._scan_users += 1

    async def release_scanning(self) -> None:
        """Stop scanning when the last scanner using this air stops."""
        async with self._scan_lock:
            self._scan_users -= 1
            if self._scan_users == 0 and not self._closed:
                await self.central.stop_scanning()

    def _peripheral_controller(self, address: hci.Address) -> _VirtualController | None:
        return next((c for c in self._controllers[1:] if c.random_address == address), None)

    def link_layer_connected(self, peripheral_address: str) -> bool:
        """Does the central's controller hold a link to ``peripheral_address``? (Whatever
        the hosts know of it yet: tests cancel a connect at that moment.)"""
        return hci.Address(peripheral_address) in self._central_controller.le_connections

    def abandon_connection(self, peripheral_address: str) -> None:
        """The central's connect to ``peripheral_address`` was cancelled: end its pending
        attempt, and end the link if the controllers completed it meanwhile.

        The cancellation can arrive after the link layer connected but before our host
        delivered the connection (Python 3.11's ``wait_for`` may even swallow it): the
        strap then held a link nobody owned, never advertised again, and the next
        ``settle`` could not find it (1 stop in ~360 during a connect, on a loaded
        machine). Both hosts are told the local host ended it; no await, as the caller is
        being cancelled."""
        self._central_controller.abort_pending_connection()
        peer = hci.Address(peripheral_address)
        central_addr = self._central_controller.random_address
        if not self._central_controller.drop_le_connection(
            peer, hci.HCI_ErrorCode.CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR
        ):
            return
        peripheral = self._peripheral_controller(peer)
        if peripheral is not None:
            peripheral.drop_le_connection(
                central_addr, hci.HCI_ErrorCode.REMOTE_USER_TERMINATED_CONNECTION_ERROR
            )
        logger.debug("virtual air: link to %s ended, its connect was cancelled", peer)

    # -- peripherals -----------------------------------------------------------------

    def allocate_address(self) -> str:
        """A fresh random static address for a peripheral on this air."""
        n = next(self._address_counter)
        return f"{PERIPHERAL_ADDRESS_PREFIX}:{n >> 8:02X}:{n & 0xFF:02X}"

    def create_device(self, name: str, address: str | None = None) -> Device:
        """A new bumble Device (own controller + host) on this air; not yet powered on."""
        if self._closed:
            raise SensorError(name, "this VirtualAir is closed")
        controller = _VirtualController(name, link=self.link)
        device = Device(
            name=name,
            address=hci.Address(address or self.allocate_address()),
            host=_VirtualHost(controller, AsyncPipeSink(controller)),
        )
        self._controllers.append(controller)
        self._devices.append(device)
        return device

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Have :meth:`close` await ``closer()`` (e.g. ``VirtualStrap.stop``) first."""
        self._closers.append(closer)

    def lose_link(self, peripheral_address: str) -> None:
        """Make the central↔peripheral link vanish as a supervision timeout on both ends.

        Both hosts receive Disconnection Complete with reason CONNECTION_TIMEOUT (0x08) and
        no LL_TERMINATE_IND is exchanged — what happens when a strap walks out of range.
        Raises :class:`SensorError` when there is no such link.
        """
        peer = hci.Address(peripheral_address)
        central_addr = self._central_controller.random_address
        peripheral = self._peripheral_controller(peer)
        reason = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR
        dropped_central = self._central_controller.drop_le_connection(peer, reason)
        dropped_peripheral = (
            peripheral.drop_le_connection(central_addr, reason) if peripheral else False
        )
        if not (dropped_central or dropped_peripheral):
            raise SensorError(peripheral_address, "no link to lose on this virtual air")
        logger.debug("virtual air: injected link loss with %s", peripheral_address)
