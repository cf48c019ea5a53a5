"""Virtual BLE for tests and ``settle demo``: bumble straps behind a bleak backend.

Production code keeps using bleak's public API; only the constructor kwargs change::

    async with VirtualAir() as air:
        strap = VirtualStrap(air, rr_ms, speed=100)
        await strap.start()
        async with BleakClient(strap.address, **air.client_kwargs()) as client:
            ...
"""

from sensors.virtual.air import VirtualAir
from sensors.virtual.backend import BumbleBleakClient, BumbleBleakScanner
from sensors.virtual.strap import VirtualStrap

__all__ = ["BumbleBleakClient", "BumbleBleakScanner", "Silence", "VirtualAir", "VirtualStrap"]
