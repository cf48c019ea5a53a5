"""Benchmark worker (its own process): N virtual straps in real time → one daemon → MQTT.

Usage: ``python benchmarks/_scale_worker.py N PORT DB [--speed S] [--send-log FILE]``.
Runs ``settle.app.serve`` with ``virtual_world(...).serve_kwargs()`` (the production path:
bumble GATT servers → bleak backend → StrapPipeline → MqttLink) until SIGTERM. Prints
``streaming <epoch_s>`` once every strap has sent its first notification.

``--send-log``: wall time at which each strap begins sending each notification (patches the
virtual strap's private ``_notify_second``; benchmark only), for notification → subscriber
latency.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT  # noqa: F401  (puts the checkout on sys.path)
from rich.console import Console

from feedback.mqtt import ConnectOptions
from sensors.virtual.air import VirtualAir
from sensors.virtual.model import ModelParams, PhysioModel
from sensors.virtual.strap import VirtualStrap
from settle.app import serve
from settle.config import load_config
from settle.demo import VirtualWorld


async def run(args: argparse.Namespace) -> int:
    settings = load_config(
        None,
        mqtt={"host": "127.0.0.1", "port": args.port, "protocol": "3.1.1", "queue_size": 20000},
        storage={"db_path": args.db},
        strap={"scan_timeout_s": 600.0, "connect_timeout_s": 120.0},
    )
    sends: list[tuple[str, float]] = []
    if args.nodelay:
        # Experiment: what TCP_NODELAY on the daemon's broker socket changes (aiomqtt's
        # socket_options; paho does not set it).
        orig_kwargs = ConnectOptions.client_kwargs

        def with_nodelay(self: ConnectOptions) -> dict[str, Any]:
            kw = orig_kwargs(self)
            kw["socket_options"] = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
            return kw

        ConnectOptions.client_kwargs = with_nodelay  # type: ignore[method-assign]
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
        code = await serve(settings, **world.serve_kwargs(), console=Console(quiet=True))
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
    ap.add_argument("--nodelay", action="store_true", help="TCP_NODELAY on the MQTT socket")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
