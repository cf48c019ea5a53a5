"""Raw ECG of a Polar H10 (PMD) alongside the Heart Rate Service: frames → session store,
ECG-derived beats → ``<base>/<dev>/ecg_beat``.

The strap's ECG clock is mapped to session time once per session: the first frame's last
sample is placed at its arrival (monotonic clock, like the beat timer), and from then on the
strap's own nanosecond timestamps carry the timing (sample resolution, 7.7 ms at 130 Hz).
A strap without PMD simply has no ECG; a failing ECG stream never disturbs the heart-rate
stream on the same link.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bleak import BleakClient

from feedback.payloads import EcgBeatPayload
from processing.ecg import RPeakDetector
from sensors.ecg_stream import PmdSession, PmdUnavailable
from settle.errors import SensorError

if TYPE_CHECKING:
    from settle.daemon import StrapRuntime
    from settle.pipeline import BeatWriter

log = logging.getLogger(__name__)

SAMPLE_PERIOD_NS = round(1e9 / 130.0)


class EcgRecorder:
    """Streams one strap's ECG while it is connected (see the module docstring)."""

    def __init__(self, writer: BeatWriter, clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.clock = clock
        self.frames = 0
        self.beats = 0

    async def run(self, rt: StrapRuntime, client: BleakClient) -> None:
        dev = rt.device_id or client.address
        try:
            async with PmdSession(client, sensor_id=dev) as pmd:
                await pmd.start_ecg()
                log.info("%s: recording raw ECG (Polar PMD, 130 Hz)", dev)
                detector = RPeakDetector()
                offset: tuple[str, int] | None = None  # (session id, strap ns → session ns)
                async for received in pmd.frames():
                    session = rt.session
                    frame = received.frame
                    beats = detector.update(frame.samples_uv, t_last_ns=frame.timestamp_ns)
                    if session is None or rt.output is None:
                        continue
                    if offset is None or offset[0] != session.session_id:
                        arrival_s = (time.monotonic() - session.started_mono_s) * session.time_scale
                        offset = (session.session_id, int(arrival_s * 1e9) - frame.timestamp_ns)
                    n = len(frame.samples_uv)
                    last = frame.timestamp_ns + offset[1]
                    t_ns = [last - (n - 1 - i) * SAMPLE_PERIOD_NS for i in range(n)]
                    if t_ns[0] >= 0:
                        self.writer.add_ecg(session.session_id, t_ns, list(frame.samples_uv))
                        self.frames += 1
                    timed = [
                        (round((b.t_s * 1e9 + offset[1]) / 1e9, 4), b.rr_ms, b.plausible)
                        for b in beats
                    ]
                    session.on_ecg_beats(timed)
                    for b, (t_s, _rr, _ok) in zip(beats, timed, strict=True):
                        payload = EcgBeatPayload(
                            ts=int(self.clock() * 1000),
                            seq=rt.output.ecg_seq,
                            session=session.session_id,
                            t_s=t_s,
                            rr_ms=None if b.rr_ms is None else round(b.rr_ms, 2),
                            plausible=b.plausible,
                        )
                        rt.output.ecg_seq += 1
                        rt.output.publish("ecg_beat", payload.to_json(), 0)
                        self.beats += 1
        except PmdUnavailable:
            if rt.session is not None and rt.session.settings.processing.rr_source == "ecg":
                log.warning("%s: rr_source is ecg but the strap has no raw ECG; using its RR", dev)
            else:
                log.debug("%s: no Polar PMD service; heart rate only", dev)
        except SensorError as exc:
            log.warning("%s: raw ECG stopped (%s); heart rate continues", dev, exc.reason)
            if rt.session is not None:
                rt.session.ecg_failed(exc.reason)
