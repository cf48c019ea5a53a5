"""Benchmark worker (its own process): N virtual straps in real time → one daemon → MQTT.

Usage: ``python benchmarks/_scale_worker.py N PORT DB [--speed S] [--send-log FILE]
[--http-port P]``.
Runs ``settle.app.serve`` with ``virtual_world(...).serve_kwargs()`` (the production path:
bumble GATT servers → bleak backend → StrapPipeline → MqttLink) until SIGTERM. Prints
``streaming <epoch_s>`` once every strap has sent its first notification, and
``stopped <epoch_s>`` when ``serve`` has returned (before the virtual straps are stopped).

``--send-log``: wall time at which each strap begins sending each notification (patches the
virtual strap's private ``_notify_second``; benchmark only), for notification → subscriber
latency.

``--http-port``: also serve the dashboard on 127.0.0.1:P (for the SSE latency probe);
without it the dashboard is off.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT  # noqa: F401  (puts the checkout on sys.path)
from rich.console import Console

from sensors.virtual.air import VirtualAir
from sensors.virtual.model import ModelParams, PhysioModel
from sensors.virtual.strap import VirtualStrap
from settle.app import GC_THRESHOLDS, serve
from settle.config import load_config
from settle.demo import VirtualWorld


async def run(args: argparse.Namespace) -> int:
    settings = load_config(
        None,
        mqtt={"host": "127.0.0.1", "port": args.port, "protocol": "3.1.1", "queue_size": 20000},
        storage={"db_path": args.db},
        strap={"scan_timeout_s": 600.0, "connect_timeout_s": 120.0},
        # The dashboard only for the SSE latency probe, on loopback (no token needed there).
        http={"enabled": args.http_port is not None, "host": "127.0.0.1",
              "port": args.http_port or 0},
    )  # fmt: skip
    sends: list[tuple[str, float]] = []
    async with VirtualAir() as air:
        # Built like settle.demo.virtual_world, but each strap starts advertising only once
        # the previous one is connected: N scanners hearing N advertisers is O(N²) callbacks
        # on the virtual air and would dominate (and stall) the ramp-up, not the daemon.
        straps = [
            VirtualStrap(air, PhysioModel(ModelParams(), seed=1 + i),
                         name=f"Settle Virtual HR {i + 1}", speed=args.speed,
                         advertising_interval_ms=100.0)
            for i in range(args.n)
        ]  # fmt: skip
        world = VirtualWorld(air, straps, "model:seed=1", args.speed)
        if args.send_log:
            for strap in world.straps:
                orig = strap._notify_second

                async def traced(hr: int, rr: list[float], _o: Any = orig, _a: str = strap.address
                                 ) -> None:  # fmt: skip
                    sends.append((_a, time.time()))
                    await _o(hr, rr)

                strap._notify_second = traced  # type: ignore[method-assign]

        async def start_one_by_one() -> None:
            t0 = time.monotonic()
            for i, strap in enumerate(world.straps):
                await strap.start()
                deadline = time.monotonic() + 60
                while not strap.is_connected and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                if args.progress and (i + 1) % 10 == 0:
                    print(f"{i + 1} straps streaming after {time.monotonic() - t0:.1f} s",
                          file=sys.stderr, flush=True)  # fmt: skip

        async def announce() -> None:
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                if all(s.sent for s in world.straps):
                    if not args.readvertise:
                        # When the daemon lets go of them at SIGTERM, N straps advertising to
                        # N controllers on the in-process air cost O(N²) callbacks in THIS
                        # process (400 000 a second at 200 straps): the stop would measure
                        # the virtual air, not the daemon. A real strap's advertising costs
                        # the computer nothing. (Private attribute: VirtualStrap has no
                        # public switch; benchmark only. A strap that drops while measuring
                        # then stays silent, which the benchmark reports as a drop.)
                        for s in world.straps:
                            s.readvertise = False
                    print(f"streaming {time.time():.3f}", flush=True)
                    return
                await asyncio.sleep(0.2)

        async def clear_sent() -> None:
            # VirtualStrap.sent keeps every notification (for tests); a long benchmark would
            # measure that list's growth, not the daemon's.
            while True:
                await asyncio.sleep(5)
                for s in world.straps:
                    s.sent[:-1] = []

        tasks = [
            asyncio.create_task(start_one_by_one()),
            asyncio.create_task(announce()),
            asyncio.create_task(clear_sent()),
        ]
        gc_t = (
            tuple(int(x) for x in args.gc_threshold.split(","))
            if args.gc_threshold
            else GC_THRESHOLDS
        )
        code = await serve(
            settings,
            **world.serve_kwargs(),
            console=Console(quiet=True),
            gc_thresholds=gc_t,  # type: ignore[arg-type]
        )
        print(f"stopped {time.time():.3f}", flush=True)  # the daemon is done; the air is not
        for t in tasks:
            t.cancel()
    if args.send_log:
        args.send_log.write_text("".join(f"{a} {t:.6f}\n" for a, t in sends))
    return code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("port", type=int)
    ap.add_argument("db", type=Path)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--send-log", type=Path)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--http-port", type=int, help="serve the dashboard on 127.0.0.1:PORT")
    ap.add_argument(
        "--gc-threshold",
        help="daemon gc thresholds instead of settle.app.GC_THRESHOLDS (2000,10,10: Python's)",
    )
    ap.add_argument(
        "--readvertise",
        action="store_true",
        help="let the straps advertise again when the daemon disconnects (stop)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
