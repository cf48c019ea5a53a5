"""Memory over a long session, time-compressed: RSS of one daemon over 12 simulated hours.

Usage: ``.venv/bin/python benchmarks/bench_memory.py [--hours 12] [--speed 200]``

One virtual strap (physiological model) at ``--speed`` simulated seconds per wall second →
``settle.app.serve`` (the production pipeline, SQLite in a temporary directory, MQTT to a
private mosquitto on 127.0.0.1 with no subscriber) in this process. RSS is sampled every 10
simulated minutes; the slope (MB per simulated hour) is a least-squares fit after the first
simulated hour (imports, baseline and the analyzer's windows filling). The virtual strap's
own record of sent notifications (``VirtualStrap.sent``, kept for tests) is trimmed so that
the figure is the daemon's.

``--tracemalloc FRAMES`` also traces Python allocations and prints the allocation sites that
grew most between two snapshots (``--snap-h``, default at 2 and 12 simulated hours). Tracing
slows the process down several times; its RSS figures are then not the daemon's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import psutil
from _common import ROOT, print_table, private_mosquitto, write_result
from rich.console import Console

from settle.app import serve
from settle.config import load_config
from settle.demo import virtual_world


def _snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__),
         tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
         tracemalloc.Filter(False, "<unknown>")]
    )  # fmt: skip


async def run(
    args: argparse.Namespace, port: int, db: Path, snaps: dict[float, tracemalloc.Snapshot]
) -> list[tuple[float, float]]:
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
                h = k * every * args.speed / 3600
                samples.append((h, proc.memory_info().rss / 2**20))
                if args.tracemalloc and any(abs(h - x) < 1e-6 for x in args.snap_h):
                    snaps[round(h, 3)] = _snapshot()
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
    ap.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace Python allocations (FRAMES deep) and diff two snapshots",
    )
    ap.add_argument(
        "--snap-h",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[2.0, 12.0],
        help="simulated hours of the two snapshots",
    )
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    snaps: dict[float, tracemalloc.Snapshot] = {}
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    with tempfile.TemporaryDirectory() as d, private_mosquitto(Path(d)) as port:
        samples = asyncio.run(run(args, port, Path(d) / "s.db", snaps))
    steady = [p for p in samples if p[0] >= 1.0]
    s = slope(steady) if len(steady) > 2 else float("nan")
    rows = [[f"{h:.1f}", f"{mb:.1f}"] for h, mb in samples if abs(h - round(h)) < 1e-6]
    print(f"one strap, physiological model, speed {args.speed:g}x, {args.hours:g} simulated h")
    print_table(["sim. h", "RSS MB"], rows)
    print(f"slope after the first hour: {s:+.3f} MB per simulated hour "
          f"({len(steady)} samples, RSS {steady[0][1]:.1f} → {steady[-1][1]:.1f} MB)")  # fmt: skip
    growth: list[dict[str, Any]] = []
    if len(snaps) >= 2:
        (h0, first), (h1, last) = sorted(snaps.items())[0], sorted(snaps.items())[-1]
        traced0 = sum(st.size for st in first.statistics("filename"))
        traced1 = sum(st.size for st in last.statistics("filename"))
        print(
            f"\ntracemalloc: Python heap {traced0 / 2**20:.2f} MB at {h0:g} h → "
            f"{traced1 / 2**20:.2f} MB at {h1:g} h; largest growth by allocation site:"
        )
        for diff in last.compare_to(first, "traceback")[: args.top]:
            frames = [f"{f.filename.removeprefix(str(ROOT) + '/')}:{f.lineno}"
                      for f in diff.traceback]  # fmt: skip
            growth.append({"size_diff_kb": round(diff.size_diff / 1024, 1),
                           "count_diff": diff.count_diff, "traceback": frames})  # fmt: skip
            print(f"  {diff.size_diff / 1024:+9.1f} KiB {diff.count_diff:+7d} blocks  "
                  + " < ".join(frames[-1:-4:-1]))  # fmt: skip
    path = write_result("memory" + ("_tracemalloc" if args.tracemalloc else ""),
                        {"hours": args.hours, "speed": args.speed, "slope_mb_per_h": s,
                         "samples": samples, "tracemalloc_growth": growth})  # fmt: skip
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
