"""Live per-beat cost of the whole pipeline, without Bluetooth or a broker.

Usage: ``.venv/bin/python benchmarks/bench_live.py [--beats 20000]``

Each step is what the daemon does per 0x2A37 notification: decode the wire bytes
(``HeartRateMeasurement.from_bytes``) → ``StrapPipeline.on_notification`` (beat timing,
artefact correction with look-ahead, rolling metrics, every 5 s of beat time the spectral /
coherence / settling update and the indices payload) → the beat payload's JSON (as
``Daemon._on_notification`` builds it). The writer and the MQTT output are the real classes
with no store flush and no link (``DeviceOutput(link=None)``): I/O is measured by
``bench_scale.py``. Input: the physiological model, one notification per simulated second.
Reports median/p99 µs per notification and per beat, and per spectral (indices) update.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import ROOT, pct, print_table, write_result

from feedback.payloads import BeatPayload
from sensors.hrs import HeartRateMeasurement, rr_ms_to_raw
from sensors.strap import Notification
from sensors.virtual.model import ModelParams, PhysioModel
from sessions.store import SessionStore
from settle.config import load_config
from settle.pipeline import BeatWriter, DeviceOutput, StrapPipeline


def wire_notifications(n_beats: int) -> list[tuple[float, bytes, int]]:
    """(simulated second, 0x2A37 bytes, beats in it): the virtual strap's framing."""
    model = PhysioModel(ModelParams(), seed=1)
    out: list[tuple[float, bytes, int]] = []
    t_ms, second, pending = 0.0, 0, next(model)
    beats = 0
    while beats < n_beats:
        second += 1
        rr: list[float] = []
        while t_ms + pending <= second * 1000.0:
            t_ms += pending
            rr.append(pending)
            pending = next(model)
        hr = round(60000 / (sum(rr) / len(rr))) if rr else 60
        m = HeartRateMeasurement(hr, rr_raw=tuple(rr_ms_to_raw(x) for x in rr))
        out.append((float(second), bytes(m), len(rr)))
        beats += len(rr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beats", type=int, default=20_000)
    args = ap.parse_args()
    import tempfile

    notes = wire_notifications(args.beats)
    settings = load_config(None, mqtt={"enabled": False})
    with tempfile.TemporaryDirectory() as d:
        store = SessionStore.open(Path(d) / "s.db")
        writer = BeatWriter(store)
        out = DeviceOutput(None, "settle", "bench")
        p = StrapPipeline(output=out, session_id="bench", started_ms=0, settings=settings,
                          writer=writer, started_mono_s=0.0)  # fmt: skip
        per_note: list[float] = []
        per_beat: list[float] = []
        with_indices: list[float] = []
        clock = time.perf_counter_ns
        for seq, (t_s, data, k) in enumerate(notes):
            a = clock()
            m = HeartRateMeasurement.from_bytes(data)
            n = Notification(int(t_s * 1000), t_s, m)
            before = out.indices_seq
            times = p.on_notification(n)
            payload = BeatPayload(ts=n.recv_ts_ms, seq=seq, hr=m.hr_bpm, rr_ms=list(m.rr_ms),
                                  beat_t_s=times, classified=p.take_classified(),
                                  contact=m.contact, session=p.session_id).to_json()  # fmt: skip
            us = (clock() - a) / 1000.0
            assert payload
            (with_indices if out.indices_seq != before else per_note).append(us)
            if k:
                per_beat.append(us / k)
            # The writer's buffers would be flushed every second by the daemon.
            writer.beats.clear()
            writer.annotations.clear()
            writer.indices.clear()
        store.close()
    res = {
        "beats": args.beats,
        "notifications": len(notes),
        "per_notification_median_us": pct(per_note, 0.5),
        "per_notification_p99_us": pct(per_note, 0.99),
        "per_beat_median_us": pct(per_beat, 0.5),
        "per_beat_p99_us": pct(per_beat, 0.99),
        "indices_updates": len(with_indices),
        "notification_with_indices_median_us": pct(with_indices, 0.5),
        "notification_with_indices_p99_us": pct(with_indices, 0.99),
    }
    print(f"live pipeline, {len(notes)} notifications / {args.beats} beats (model, seed 1)")
    print_table(["measure", "median µs", "p99 µs"], [
        ["per notification (no indices update)", f"{res['per_notification_median_us']:.1f}",
         f"{res['per_notification_p99_us']:.1f}"],
        ["per beat (all notifications)", f"{res['per_beat_median_us']:.1f}",
         f"{res['per_beat_p99_us']:.1f}"],
        ["notification with indices update (every 5 s)",
         f"{res['notification_with_indices_median_us']:.0f}",
         f"{res['notification_with_indices_p99_us']:.0f}"],
    ])  # fmt: skip
    path = write_result("live", res)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
