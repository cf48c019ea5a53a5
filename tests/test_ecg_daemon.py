"""The daemon records a Polar H10's raw ECG beside its heart-rate stream (virtual H10 replaying
a real recording through the real BLE stack), and a strap without PMD is unaffected."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np

from sensors.readers import read_rr_file
from sensors.virtual.air import VirtualAir
from sensors.virtual.pmd import PmdConfig
from sensors.virtual.strap import VirtualStrap
from sessions.store import SessionStore
from settle.config import load_config
from settle.daemon import Daemon
from tests.conftest import DATA
from tests.test_e2e import CONFIG
from tests.test_pmd import h10_ecg_uv
from tests.test_reconnect import client_for, until

SPEED = 10.0


async def test_raw_ecg_is_recorded_and_beats_detected(tmp_path: Path) -> None:
    settings = load_config(CONFIG, mqtt={"enabled": False}, storage={"db_path": tmp_path / "s.db"})
    rr = [float(x) for x in read_rr_file(DATA / "polar_h10_pvc_device.csv").rr_ms]
    async with VirtualAir() as air:
        strap = VirtualStrap(
            air, rr, name="Polar H10 0A1B2C3D", speed=SPEED, pmd=PmdConfig(ecg_uv=h10_ecg_uv())
        )
        plain = VirtualStrap(air, rr, name="Garmin HRM", speed=SPEED)
        await strap.start()
        await plain.start()
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(
                settings, store, [client_for(air, strap), client_for(air, plain)], time_scale=SPEED
            )
            task = asyncio.create_task(daemon.run())
            await until(lambda: daemon.ecg.beats > 40, 30)
            daemon.stop()
            await asyncio.wait_for(task, 15)
            unclean = list(strap.pmd.unclean_disconnects) if strap.pmd else ["no pmd"]
            sessions = {s.device_id: s for s in store.list_sessions()}
            h10 = next(s for d, s in sessions.items() if d.startswith("polar_h10"))
            garmin = next(s for d, s in sessions.items() if d.startswith("garmin"))
            ecg = store.ecg(h10.id)
            assert len(store.ecg(garmin.id)) == 0  # no PMD: heart rate only, no error
            assert garmin.n_beats > 20
        await strap.stop()
        await plain.stop()
    assert len(ecg) > 130 * 20  # > 20 s of samples at 130 Hz
    t = ecg.t_ns
    assert all(b > a for a, b in itertools.pairwise(t.tolist()))  # one time base, increasing
    assert ecg.fs_hz is not None and abs(ecg.fs_hz - 130) < 2
    # After the strap's unreliable first seconds, the samples are the recording's, unchanged.
    recording = np.asarray(h10_ecg_uv())
    tail = ecg.uv[-500:]
    starts = [i for i in np.flatnonzero(recording == tail[0]) if i + 500 <= len(recording)]
    assert any(np.array_equal(recording[i : i + 500], tail) for i in starts)
    # The stream was stopped before the link closed (an H10 would keep draining its battery).
    assert unclean == []
