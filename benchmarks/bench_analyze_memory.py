"""Peak memory and wall time of ``settle analyze FILE --json`` on large and awkward files.

Usage: ``.venv/bin/python benchmarks/bench_analyze_memory.py [--beats 80000]``

Each case runs the real command in a child process and reads its peak resident set size
(``getrusage(RUSAGE_CHILDREN)``, one child per case, so the maxima do not mix):

* ``day``: the 21 h recording shipped in ``benchmarks/data/`` (attribution beside it);
* ``stalls``: a sinus series of ``--beats`` beats in which every 5th beat closes 0.3 of its
  interval after the one before — a host stall's burst, where the analysis starts
  afresh, so the recording is broken into ~``beats/5`` short runs (it peaked at 577 MB before
  the whole-recording Welch frames were taken in blocks);
* ``gaps``: the same series with a 30 s hole every 50 beats (runs of 50 beats).

Prints a table (peak MB, wall s, beats) and writes ``benchmarks/results/analyze_memory.json``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import ROOT, print_table, write_result

DAY = ROOT / "benchmarks/data/physionet_healthy_000_24h.csv.gz"


def sinus(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    rr = 850.0 + 40.0 * np.sin(i / 4.0) + 25.0 * np.sin(i / 60.0) + rng.normal(0.0, 8.0, n)
    return np.cumsum(rr) / 1000.0, rr


def write_csv(path: Path, t: np.ndarray, rr: np.ndarray) -> None:
    with path.open("w") as f:
        f.write("t_s,rr_ms\n")
        f.writelines(f"{a:.4f},{b:.1f}\n" for a, b in zip(t.tolist(), rr.tolist(), strict=True))


def run(path: Path) -> tuple[float, float]:
    """(peak RSS MB, wall s) of one ``settle analyze PATH --json`` in a child process."""
    code = (
        "import resource, subprocess, sys, time; t0 = time.perf_counter(); "
        "p = subprocess.run([sys.executable, '-m', 'settle.cli', 'analyze', sys.argv[1], "
        "'--json'], capture_output=True); dt = time.perf_counter() - t0; "
        "assert p.returncode == 0, p.stderr.decode(); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, dt)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=True
    )
    mb, wall = out.stdout.split()
    return float(mb), float(wall)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beats", type=int, default=80_000)
    args = ap.parse_args()
    rows: list[list[str]] = []
    result: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        day = tmp / "day.csv"
        day.write_bytes(gzip.decompress(DAY.read_bytes()))
        t, rr = sinus(args.beats)
        step = rr / 1000.0
        step[4::5] *= 0.3  # each 5th beat arrives 0.3 of its interval after the one before
        write_csv(tmp / "stalls.csv", np.cumsum(step), rr)
        gaps_t = t + 30.0 * (np.arange(t.size) // 50)
        write_csv(tmp / "gaps.csv", gaps_t, rr)
        for name in ("day", "stalls", "gaps"):
            path = tmp / f"{name}.csv"
            n = sum(1 for _ in path.open()) - 1
            mb, wall = run(path)
            result[name] = {"peak_mb": mb, "wall_s": wall, "beats": n}
            rows.append([name, f"{mb:.0f}", f"{wall:.2f}", str(n)])
    print_table(["file", "peak MB", "wall s", "beats"], rows)
    path = write_result("analyze_memory", result)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
