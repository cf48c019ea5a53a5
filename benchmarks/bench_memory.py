"""Memory over a long session, time-compressed: RSS of one daemon over 12 simulated hours.

Usage: ``.venv/bin/python benchmarks/bench_memory.py [--hours 12] [--speed 200]``

One virtual strap (physiological model) at ``--speed`` simulated seconds per wall second →
``settle.app.serve`` (the production pipeline, SQLite in a temporary directory, MQTT to a
private mosquitto on 127.0.0.1 with no subscriber) in this process. RSS is sampled every 10
simulated minutes; the slope (MB per simulated hour) is a least-squares fit after the first
simulated hour (imports, baseline and the analyzer's windows filling). The virtual strap's
own record of sent notifications (``VirtualStrap.sent``, kept for tests) is trimmed so that
the figure is the daemon's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _common import ROOT, print_table, private_mosquitto, write_result
from rich.console import Console

from settle.app import serve
from settle.config import load_config
from settle.demo import virtual_world


async def run(args: argparse.Namespace, port: int, db: Path) -> list[tuple[float, float]]:
    settings = load_config(None, mqtt={"host": "127.0.0.1", "port": port},
                           storage={"db_path": db})  # fmt: skip
    proc = psutil.Process()
    samples: list[tuple[float, float]] = []  # (simulated h, RSS MB)
    wall_s = args.hours * 3600 / args.speed
    async with virtual_world(replay=None, speed=args.speed, seed=1) as world:
        strap = world.straps[0]

        async def sample() -> None:
            every = 600 / args.speed
            while not strap.sent:  # noqa: ASYNC110  (polls a plain list)
                await asyncio.sleep(0.05)
            t0 = time.monotonic()
            k = 0
            while True:
                strap.sent[:-1] = []
                samples.append((k * every * args.speed / 3600, proc.memory_info().rss / 2**20))
                k += 1
                await asyncio.sleep(max(0.0, t0 + k * every - time.monotonic()))

        task = asyncio.create_task(sample())
        kw: dict[str, Any] = world.serve_kwargs()
        await serve(settings, **kw, duration=wall_s + 3, console=Console(quiet=True),
                    handle_signals=False)  # fmt: skip
        task.cancel()
    return samples


def slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=12.0)
    ap.add_argument("--speed", type=float, default=200.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory() as d, private_mosquitto(Path(d)) as port:
        samples = asyncio.run(run(args, port, Path(d) / "s.db"))
    steady = [p for p in samples if p[0] >= 1.0]
    s = slope(steady) if len(steady) > 2 else float("nan")
    rows = [[f"{h:.1f}", f"{mb:.1f}"] for h, mb in samples if abs(h - round(h)) < 1e-6]
    print(f"one strap, physiological model, speed {args.speed:g}x, {args.hours:g} simulated h")
    print_table(["sim. h", "RSS MB"], rows)
    print(f"slope after the first hour: {s:+.3f} MB per simulated hour "
          f"({len(steady)} samples, RSS {steady[0][1]:.1f} → {steady[-1][1]:.1f} MB)")  # fmt: skip
    path = write_result("memory", {"hours": args.hours, "speed": args.speed,
                                   "slope_mb_per_h": s, "samples": samples})  # fmt: skip
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
