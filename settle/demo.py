"""``settle demo``: the real daemon, fed by virtual straps on an in-process Bluetooth link.

The straps are real bumble GATT servers; the daemon reaches them through the project's bleak
backend on bumble, so the path from "notification" to "stored beat" is the production one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processing.offline import gaps_in_times
from sensors.readers import RRRecording, read_rr_file
from sensors.virtual.air import VirtualAir
from sensors.virtual.ecg_synth import BeatSchedule, SyntheticEcg
from sensors.virtual.model import ModelParams, PhysioModel
from sensors.virtual.pmd import PmdConfig
from sensors.virtual.strap import Silence, VirtualStrap


@dataclass
class VirtualWorld:
    air: VirtualAir
    straps: list[VirtualStrap]
    source_label: str
    speed: float = 1.0
    """Simulated seconds per wall second: the session's time scale."""

    def scanner_kwargs(self) -> dict[str, Any]:
        return self.air.scanner_kwargs()

    def client_kwargs(self) -> dict[str, Any]:
        return self.air.client_kwargs()

    def serve_kwargs(self) -> dict[str, Any]:
        """Everything :func:`settle.app.serve` needs to run against these straps."""
        return {
            "scanner_kwargs": self.scanner_kwargs(),
            "client_kwargs": self.client_kwargs(),
            "addresses": [s.address for s in self.straps],
            "time_scale": self.speed,
            "source": "virtual",
        }


def replay_intervals(rec: RRRecording) -> list[float]:
    """What a virtual strap plays for a recording: its RR intervals, with a :class:`Silence`
    before each beat that follows a gap in the file's beat times (further apart than 3 × the
    interval, where `settle analyze` splits too), so the gap is recorded, not bridged."""
    rr = [float(x) for x in rec.rr_ms]
    out: list[float] = []
    after_gap = set(gaps_in_times(rec.t_s, rec.rr_ms).tolist())
    for i, r in enumerate(rr):
        if i in after_gap:
            out.append(Silence((float(rec.t_s[i]) - float(rec.t_s[i - 1])) * 1000.0 - r))
        out.append(r)
    return out


def rr_source(replay: Path | None, seed: int) -> tuple[Iterable[float], str]:
    """The RR intervals a virtual strap plays, and a label for the session's source."""
    if replay is not None:
        return replay_intervals(read_rr_file(replay)), f"replay:{Path(replay).name}"
    return PhysioModel(ModelParams(), seed=seed), f"model:seed={seed}"


@contextlib.asynccontextmanager
async def virtual_world(
    *, replay: Path | None, speed: float, seed: int, n_straps: int = 1, ecg: bool = False
) -> AsyncIterator[VirtualWorld]:
    """Start ``n_straps`` advertising virtual straps; stop them (cleanly) on exit. With
    ``ecg``, each also offers Polar's PMD service streaming a synthetic ECG whose R peaks end
    the very intervals it notifies (:mod:`sensors.virtual.ecg_synth`)."""
    async with VirtualAir() as air:
        straps: list[VirtualStrap] = []
        label = ""
        try:
            for i in range(n_straps):
                source, label = rr_source(replay, seed + i)
                name = "Settle Virtual HR" if n_straps == 1 else f"Settle Virtual HR {i + 1}"
                pmd = None
                if ecg:
                    source = BeatSchedule(source)
                    synth = SyntheticEcg(source, seed=seed + i)
                    pmd = PmdConfig(ecg_uv=(), live_source=synth.stream_from)
                strap = VirtualStrap(air, source, name=name, speed=speed, keep_sent=False, pmd=pmd)
                await strap.start()
                straps.append(strap)
            yield VirtualWorld(air, straps, label, speed)
        finally:
            for strap in straps:
                with contextlib.suppress(Exception):
                    await strap.stop()
