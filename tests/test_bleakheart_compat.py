"""A third-party client, unmodified: bleakheart (PyPI, test-only dependency) reads HR and PMD
ECG from the virtual strap through our bumble backend.

If bleakheart can use the virtual strap the way it uses a real Polar H10, the emulation is
faithful at least to what bleakheart relies on: CCCD handling, indications on the control
point, the features read, the GET settings reply layout, the start/stop replies, and the ECG
frame layout.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bleak import BleakClient
from bleakheart import BatteryLevel, HeartRate, PolarMeasurementData

from sensors.hrs import rr_ms_to_raw
from sensors.virtual import VirtualAir, VirtualStrap
from sensors.virtual.pmd import PmdConfig

DATA = Path(__file__).parent / "data"
LIMIT_S = 10.0
SPEED = 50.0


@functools.cache
def h10_ecg_uv() -> tuple[int, ...]:
    raw = np.loadtxt(DATA / "polar_h10_pvc_ecg.csv", delimiter=",", skiprows=1, dtype=np.int64)
    return tuple(int(v) for v in raw[:, 1])


@pytest.fixture
async def air() -> AsyncIterator[VirtualAir]:
    async with VirtualAir() as virtual_air:
        yield virtual_air


async def test_bleakheart_reads_hr_and_ecg(air: VirtualAir) -> None:
    rr_ms = [812.0, 862.0, 918.0, 790.0] * 20
    strap = VirtualStrap(
        air,
        rr_ms,
        speed=SPEED,
        battery_pct=64,
        pmd=PmdConfig(ecg_uv=h10_ecg_uv(), unreliable_start_s=0.0),
    )
    await strap.start()
    hr_queue: asyncio.Queue[Any] = asyncio.Queue()
    ecg_queue: asyncio.Queue[Any] = asyncio.Queue()
    async with (
        asyncio.timeout(LIMIT_S),
        BleakClient(strap.address, **air.client_kwargs()) as client,
    ):
        assert await BatteryLevel(client).read() == 64

        heart = HeartRate(client, queue=hr_queue, unpack=True)
        await heart.start_notify()
        beats = [await hr_queue.get() for _ in range(8)]
        await heart.stop_notify()
        # ('HR', t_est_ns, (hr, rr_ms), energy): bleakheart rounds RR to whole ms
        expected = [round(rr_ms_to_raw(rr) * 1000 / 1024) for rr in rr_ms[:8]]
        assert [b[2][1] for b in beats] == expected
        assert all(b[0] == "HR" and 60 <= b[2][0] <= 80 for b in beats)

        pmd = PolarMeasurementData(client, ecg_queue=ecg_queue)
        assert await pmd.available_measurements() == ["ECG", "ACC"]
        ecg_settings = await pmd.available_settings("ECG")
        assert ecg_settings["error_code"] == 0
        assert ecg_settings["SAMPLE_RATE"] == [130] and ecg_settings["RESOLUTION"] == [14]
        assert (await pmd.start_streaming("ECG"))[:2] == (0, "SUCCESS")
        frames = [await ecg_queue.get() for _ in range(4)]
        assert await pmd.stop_streaming("ECG") == (0, "SUCCESS")
    ecg = h10_ecg_uv()
    for k, (kind, _t_ns, samples) in enumerate(frames):
        assert kind == "ECG"
        assert samples == list(ecg[73 * k : 73 * (k + 1)])
    assert strap.pmd is not None and strap.pmd.unclean_disconnects == []


async def test_bleakheart_sees_the_h10_refusals(air: VirtualAir) -> None:
    """Its error codes come from our replies: a second START is "ALREADY IN STATE"."""
    strap = VirtualStrap(air, [800.0] * 50, speed=SPEED, pmd=PmdConfig(ecg_uv=h10_ecg_uv()))
    await strap.start()
    async with (
        asyncio.timeout(LIMIT_S),
        BleakClient(strap.address, **air.client_kwargs()) as client,
    ):
        pmd = PolarMeasurementData(client, ecg_queue=asyncio.Queue())
        assert (await pmd.start_streaming("ECG"))[:2] == (0, "SUCCESS")
        assert (await pmd.start_streaming("ECG"))[:2] == (6, "ALREADY IN STATE")
        assert (await pmd.start_streaming("ECG", sample_rate=250))[:2] == (6, "ALREADY IN STATE")
        assert await pmd.stop_streaming("ECG") == (0, "SUCCESS")
        assert (await pmd.start_streaming("ECG", sample_rate=250))[:2] == (
            8,
            "INVALID SAMPLE RATE",
        )
        assert (await pmd.start_streaming("ACC"))[:2] == (3, "NOT SUPPORTED")
