"""The daemon records a Polar H10's raw ECG beside its heart-rate stream (virtual H10 replaying
a real recording through the real BLE stack, its client reporting ATT MTU 23 as bleak does on
Linux), and a strap without PMD is unaffected."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sensors.pmd import EcgFrame
from sensors.readers import read_rr_file
from sensors.strap import StrapClient
from sensors.virtual.air import VirtualAir
from sensors.virtual.pmd import PmdConfig
from sensors.virtual.strap import VirtualStrap
from sessions.store import BeatClass, EcgSeries, SessionRecord, SessionStore
from settle.app import DaemonControl
from settle.config import load_config
from settle.daemon import Daemon
from settle.ecg import NOMINAL_SAMPLE_PERIOD_NS, samples_after
from tests.conftest import DATA
from tests.test_e2e import CONFIG
from tests.test_pmd import h10_ecg_uv
from tests.test_reconnect import client_for, until

SPEED = 10.0
H10_FS_HZ = 130.16
"""The real H10's sample rate (the recording's; nominally 130 Hz)."""
ANALYSED = {
    BeatClass.NORMAL,
    BeatClass.ECTOPIC,
    BeatClass.LONG,
    BeatClass.SHORT,
    BeatClass.MISSED,
    BeatClass.EXTRA,
}


@dataclasses.dataclass
class Run:
    """What one daemon recorded from a virtual H10 (real ECG replayed) and a Garmin (no PMD)."""

    daemon: Daemon
    h10: SessionRecord
    garmin: SessionRecord
    ecg: EcgSeries
    garmin_ecg_samples: int
    unclean: list[object]
    ecg_shown: dict[str, bool]
    """What the dashboard's device list says of each strap's raw ECG, while recording."""


def bluez_like_client(air: VirtualAir, strap: VirtualStrap) -> StrapClient:
    """The strap's client as on Linux: bleak's BlueZ backend reports ``mtu_size`` 23 while the
    link runs at the MTU BlueZ negotiated (232 with an H10)."""
    return StrapClient(
        address=strap.address,
        scan_timeout_s=5,
        connect_timeout_s=5,
        scanner_kwargs=air.scanner_kwargs(),
        client_kwargs={**air.client_kwargs(), "reported_mtu": 23},
    )


async def _h10_beside_garmin(tmp_path: Path, min_ecg_beats: int, **overrides: object) -> Run:
    settings = load_config(
        CONFIG, mqtt={"enabled": False}, storage={"db_path": tmp_path / "s.db"}, **overrides
    )
    rr = [float(x) for x in read_rr_file(DATA / "polar_h10_pvc_device.csv").rr_ms]
    async with VirtualAir() as air:
        strap = VirtualStrap(
            air,
            rr,
            name="Polar H10 0A1B2C3D",
            speed=SPEED,
            pmd=PmdConfig(ecg_uv=h10_ecg_uv(), sample_rate_hz=H10_FS_HZ),
        )
        plain = VirtualStrap(air, rr, name="Garmin HRM", speed=SPEED)
        await strap.start()
        await plain.start()
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(
                settings,
                store,
                [bluez_like_client(air, strap), client_for(air, plain)],
                time_scale=SPEED,
            )
            task = asyncio.create_task(daemon.run())
            await until(lambda: daemon.ecg.beats > min_ecg_beats, 40)
            shown = {v.name: v.ecg for v in DaemonControl(daemon, {}).devices()}
            daemon.stop()
            await asyncio.wait_for(task, 15)
            sessions = {s.device_id: s for s in store.list_sessions()}
            h10 = next(s for d, s in sessions.items() if d.startswith("polar_h10"))
            garmin = next(s for d, s in sessions.items() if d.startswith("garmin"))
            run = Run(
                daemon=daemon,
                h10=store.read_session(h10.id),
                garmin=store.read_session(garmin.id),
                ecg=store.ecg(h10.id),
                garmin_ecg_samples=len(store.ecg(garmin.id)),
                unclean=list(strap.pmd.unclean_disconnects) if strap.pmd else ["no pmd"],
                ecg_shown=shown,
            )
        await strap.stop()
        await plain.stop()
    return run


async def test_raw_ecg_is_recorded_and_beats_detected(tmp_path: Path) -> None:
    run = await _h10_beside_garmin(tmp_path, 40)
    ecg, ecg_beats, h10_beats = run.ecg, run.h10.ecg_beats, run.h10.beats
    assert run.garmin_ecg_samples == 0  # no PMD: heart rate only, no error
    assert run.ecg_shown == {"Polar H10 0A1B2C3D": True, "Garmin HRM": False}  # the dashboard
    assert run.garmin.ecg_beats == []
    assert len(run.garmin.beats) > 20
    assert len(ecg) > 130 * 20  # > 20 s of samples at 130 Hz
    t = ecg.t_ns
    assert all(b > a for a, b in itertools.pairwise(t.tolist()))  # one time base, increasing
    # The strap's real rate, not the nominal 130 Hz: sample times follow its clock inside each
    # frame too (they used to be 1/130 s apart, up to 0.73 ms early at each frame's start).
    # Give or take the drift servo's 500 ppm (0.065 Hz): a first frame a little late is
    # slewed away over the whole short recording (CI read 130.225 on an idle machine), still
    # far from the nominal 130 Hz (1 230 ppm off).
    assert ecg.fs_hz == pytest.approx(H10_FS_HZ, abs=0.005 + 5e-4 * H10_FS_HZ)
    spacing = np.diff(t[73:])  # after the first frame (the nominal period until measured)
    # One period, rounded, frames joined evenly; where the drift servo moved the offset (a
    # loaded host delays frames for seconds), by at most its 500 ppm of a period. A frame
    # less delayed than every one before pulls the time base back at once (the samples it
    # would overlap are not stored): a shorter join, a few times at most (a host loaded by
    # other tests pulled it 5.5 ms once: one join of 2.1 ms). Never a longer one, and not
    # one at every frame's start (sample times at 1/130 s made every join 0.73 ms short).
    period = float(np.median(spacing))
    slack = 2 + 5e-4 * NOMINAL_SAMPLE_PERIOD_NS
    assert spacing.max() <= period + slack
    pulled = np.flatnonzero(spacing < period - slack)
    assert pulled.size <= 3, spacing[pulled]
    # After the strap's unreliable first seconds, the samples are the recording's, unchanged.
    recording = np.asarray(h10_ecg_uv())
    tail = ecg.uv[-500:]
    starts = [i for i in np.flatnonzero(recording == tail[0]) if i + 500 <= len(recording)]
    assert any(np.array_equal(recording[i : i + 500], tail) for i in starts)
    # The stream was stopped before the link closed (an H10 would keep draining its battery).
    assert run.unclean == []
    # Both RR sources are stored: every R peak the daemon detected, in order, one time base.
    assert [b.seq for b in ecg_beats] == list(range(len(ecg_beats)))
    assert len(ecg_beats) == run.daemon.ecg.beats
    assert all(b.beat_t_s > a.beat_t_s for a, b in itertools.pairwise(ecg_beats))
    # By default the strap's RR drives the indices: its beats are classified, the ECG's not,
    # except the peaks the detector called implausible (the strap's start-up spikes: RR
    # 300 ms, then a 3 s interval), which CSV/JSON users could not tell from heartbeats.
    assert all(b.beat_class in (None, BeatClass.IMPLAUSIBLE) for b in ecg_beats)
    spikes = [b for b in ecg_beats if b.beat_class is BeatClass.IMPLAUSIBLE]
    assert spikes and all(b.beat_t_s < 10 for b in spikes)
    assert all(b.rr_ms is None or 400 < b.rr_ms < 1500 for b in ecg_beats if b.beat_class is None)
    assert sum(b.beat_class in ANALYSED for b in h10_beats) > 20


async def test_ecg_rr_drives_the_indices_when_configured(tmp_path: Path) -> None:
    """``processing.rr_source = "ecg"``: the H10's R peaks feed the analyzer (classified,
    corrected), its own RR is still stored but not analysed; a strap without raw ECG in the
    same daemon falls back to its own RR."""
    run = await _h10_beside_garmin(tmp_path, 80, processing={"rr_source": "ecg"})
    pipelines = {p.device_id: p for p in run.daemon.finished}
    ecg_beats, h10_beats, garmin_beats = run.h10.ecg_beats, run.h10.beats, run.garmin.beats
    assert pipelines[run.h10.info.device_id].rr_source == "ecg"
    assert pipelines[run.garmin.info.device_id].rr_source == "hrs"
    analysed = [b for b in ecg_beats if b.beat_class in ANALYSED]
    assert len(analysed) > 40
    # A third of this recording's beats are PVCs: the correction sees them in the ECG's RR too.
    assert any(b.beat_class is not BeatClass.NORMAL for b in analysed)
    assert all(b.rr_ms is not None and b.rr_corrected_ms is not None for b in analysed
               if b.beat_class is BeatClass.NORMAL)  # fmt: skip
    # From the switch on, the strap's own RR is recorded (every beat) but not analysed.
    switch_t = min(b.beat_t_s for b in analysed)
    assert [b.seq for b in h10_beats] == list(range(len(h10_beats)))
    after = [b for b in h10_beats if b.beat_t_s > switch_t]
    assert after and all(b.beat_class not in ANALYSED for b in after)
    # The strap without raw ECG is analysed from its own RR as usual.
    assert sum(b.beat_class in ANALYSED for b in garmin_beats) > 20


async def test_a_failing_analysis_of_ecg_beats_keeps_the_ecg_and_its_beats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``rr_source = "ecg"``, an exception in the analysis of the R peaks escaped into
    the ECG task: that batch of ECG beats was never stored, the raw ECG ended until the
    next reconnect, and the session fell back to the strap's RR. Now the beats are stored
    first and the analysis restarts, as for the strap's RR."""
    from processing.live import LiveAnalyzer

    real = LiveAnalyzer.push_beat
    calls = itertools.count()

    def flaky(self: LiveAnalyzer, t_s: float, rr_ms: float, contact: bool | None = None):  # type: ignore[no-untyped-def]
        # Only the H10's R peaks (the Garmin's RR goes through the same analyzer class).
        if sys._getframe(2).f_code.co_name == "on_ecg_beats" and next(calls) == 30:
            raise ValueError("a bug in the analysis")
        return real(self, t_s, rr_ms, contact)

    monkeypatch.setattr(LiveAnalyzer, "push_beat", flaky)
    caplog.set_level(logging.INFO)
    run = await _h10_beside_garmin(tmp_path, 120, processing={"rr_source": "ecg"})
    pipelines = {p.device_id: p for p in run.daemon.finished}
    assert pipelines[run.h10.info.device_id].rr_source == "ecg"  # never fell back
    ecg_beats = run.h10.ecg_beats
    assert [b.seq for b in ecg_beats] == list(range(len(ecg_beats))) and len(ecg_beats) > 120
    late = [b for b in ecg_beats[-40:] if b.beat_class in ANALYSED]
    assert late  # analysed again after the failure
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "the analysis failed" in errors[0].getMessage()


def test_demo_with_ecg_records_an_ecg_that_beats_with_the_strap(tmp_path: Path) -> None:
    """`settle demo --ecg`: the virtual strap streams a synthetic raw ECG over Polar PMD. The
    daemon records it as an H10's, and the R peaks it detects there give the strap's own RR
    intervals beat for beat (the demo had no ECG at all: exports, ecg_beat and rr_source =
    "ecg" could not be tried without an H10)."""
    db = tmp_path / "s.db"
    env = {**os.environ, "SETTLE_CONFIG": str(CONFIG)}
    done = subprocess.run(
        [sys.executable, "-m", "settle.cli", "demo", "--ecg", "--speed", "10", "--duration", "12",
         "--no-mqtt", "--no-http", "--db", str(db)],
        capture_output=True, text=True, env=env, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "recording raw ECG" in done.stderr
    with SessionStore.open(db) as store:
        (session,) = store.list_sessions()
        record, ecg = store.read_session(session.id), store.ecg(session.id)
    assert len(ecg) > 130 * 60  # > 60 simulated s at 130 Hz
    strap_rr = np.array([b.rr_ms for b in record.beats], dtype=float)
    # After the strap's unreliable first seconds (their spikes are flagged implausible).
    beats = [b for b in record.ecg_beats if b.beat_class is None and b.rr_ms is not None]
    ecg_rr = np.array([b.rr_ms for b in beats], dtype=float)
    assert len(ecg_rr) > 0.8 * len(strap_rr) > 80

    def misfit(shift: int) -> npt.NDArray[np.float64]:
        a, b = ecg_rr[max(0, -shift) :], strap_rr[max(0, shift) :]
        n = min(a.size, b.size)
        return np.asarray(np.abs(a[:n] - b[:n]), dtype=np.float64)

    best = min(range(-30, 31), key=lambda k: float(np.median(misfit(k))))
    d = misfit(best)
    assert d.size > 0.8 * ecg_rr.size
    assert np.median(d) < 2.0  # ms: one beat each, the same beats
    assert np.percentile(d, 95) < 8.0


def test_a_drift_correction_is_spread_over_a_frame_not_one_sample_interval() -> None:
    """The servo that follows the strap's clock moves the offset by up to 500 ppm of a frame
    (280 µs for 73 samples at 130 Hz) between two frames. Applied at once, the interval
    across the join was 3.6 % short or long (an ECG sample 280 µs off, a step in a
    resampled export); phased in over the frame, every interval stays within 500 ppm."""
    period = NOMINAL_SAMPLE_PERIOD_NS
    first = EcgFrame(timestamp_ns=10**12, samples_uv=tuple(range(73)))
    second = EcgFrame(timestamp_ns=10**12 + round(73 * period), samples_uv=tuple(range(73)))
    for slew in (280_000, -280_000):
        t1, _ = samples_after(first, 0, -1, period)
        t2, _ = samples_after(second, slew, t1[-1], period, ramp_ns=slew)
        gaps = np.diff(np.array(t1 + t2, dtype=np.int64))
        assert len(t2) == 73 and t2[-1] == second.timestamp_ns + slew  # the new offset
        assert np.abs(gaps - period).max() <= 5e-4 * period + 1, (slew, gaps[70:76])
