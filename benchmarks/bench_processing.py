"""Processing benchmarks: live per-beat cost, live spectral/coherence update, and
``settle analyze --rolling`` on the 24 h recording against NeuroKit2 (same run).

Usage: ``.venv/bin/python benchmarks/bench_processing.py [RR_FILE] [--json OUT]``
(default file: the 24 h recording shipped gzip-compressed in ``benchmarks/data/``, unpacked
into a temporary file for the run; attribution in ``benchmarks/data/README.md``). Prints a
table and writes JSON. NeuroKit2 is timed on a subset of rolling windows and extrapolated to
every beat (said so in the output).
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DAY = ROOT / "benchmarks/data/physionet_healthy_000_24h.csv.gz"
"""PhysioNet healthy-subject record 000, 80 441 beats over 21 h (benchmarks/data/README.md)."""
sys.path.insert(0, str(ROOT))

from processing.live import LiveAnalyzer  # noqa: E402
from sensors.readers import read_rr_file  # noqa: E402


def live_costs(t: np.ndarray, rr: np.ndarray, n_beats: int = 20_000) -> dict[str, float]:
    la = LiveAnalyzer()
    per_beat: list[float] = []
    per_idx: list[float] = []
    nxt = t[0] + 5.0
    clock = time.perf_counter_ns
    for ti, ri in zip(t[:n_beats].tolist(), rr[:n_beats].tolist(), strict=True):
        a = clock()
        la.push_beat(ti, ri)
        per_beat.append((clock() - a) / 1000.0)
        while ti >= nxt:
            a = clock()
            la.indices(nxt)
            per_idx.append((clock() - a) / 1000.0)
            nxt += 5.0
    pb = sorted(per_beat)
    pi = sorted(per_idx)
    return {
        "beats": float(len(per_beat)),
        "per_beat_median_us": statistics.median(pb),
        "per_beat_p99_us": pb[int(0.99 * len(pb))],
        "indices_median_ms": statistics.median(pi) / 1000.0,
        "indices_p99_ms": pi[int(0.99 * len(pi))] / 1000.0,
    }


def analyze_wall(path: Path) -> float:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "settle.cli", "analyze", str(path), "--json", "--force",
               "--rolling", str(Path(d) / "r.csv")]  # fmt: skip
        best = float("inf")
        for _ in range(3):
            a = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
            best = min(best, time.perf_counter() - a)
    return best


def neurokit_rolling_estimate(t: np.ndarray, rr: np.ndarray, n_windows: int = 300) -> dict:
    try:
        import neurokit2 as nk
    except ImportError:
        return {"available": False}
    import warnings

    idx = np.linspace(200, t.size - 1, n_windows).astype(int)
    peaks_all = np.concatenate([[0], np.cumsum(rr)]).astype(np.int64)
    a = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in idx:
            lo = int(np.searchsorted(t, t[i] - 60.0, side="right"))
            nk.hrv_time(peaks_all[lo : i + 2], sampling_rate=1000)
    per = (time.perf_counter() - a) / n_windows
    return {"available": True, "windows_timed": n_windows, "s_per_window": per,
            "extrapolated_s_all_beats": per * t.size}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results_processing.json")
    args = ap.parse_args()
    if args.file is None:
        # The command under test reads a plain file, as a user's would: unpack it once.
        tmp = tempfile.mkdtemp(prefix="settle-bench-")
        atexit.register(shutil.rmtree, tmp, True)
        unpacked = Path(tmp) / DAY.name.removesuffix(".gz")
        unpacked.write_bytes(gzip.decompress(DAY.read_bytes()))
        args.file = unpacked
    rec = read_rr_file(args.file)
    # Best of 3 passes (each a fresh analyzer over the same 20 000 beats), as for the command:
    # on a shared machine one pass can read 1.5x slower than the next.
    live = min((live_costs(rec.t_s, rec.rr_ms) for _ in range(3)),
               key=lambda r: r["per_beat_median_us"])  # fmt: skip
    wall = analyze_wall(args.file)
    nk = neurokit_rolling_estimate(rec.t_s, rec.rr_ms)
    res = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "file": args.file.name,
        "n_beats": int(rec.rr_ms.size),
        "live": live,
        "analyze_rolling_wall_s": wall,
        "neurokit2_rolling_time_domain": nk,
    }
    print(f"file {args.file.name}: {rec.rr_ms.size} beats; {os.cpu_count()} CPUs")
    print(f"{'measure':48s} {'value':>12s}")
    print(f"{'live push_beat median (µs)':48s} {live['per_beat_median_us']:12.1f}")
    print(f"{'live push_beat p99 (µs)':48s} {live['per_beat_p99_us']:12.1f}")
    print(f"{'live indices() median (ms)':48s} {live['indices_median_ms']:12.2f}")
    print(f"{'live indices() p99 (ms)':48s} {live['indices_p99_ms']:12.2f}")
    print(f"{'settle analyze --rolling --json, wall (s, best of 3)':48s} {wall:12.2f}")
    if nk.get("available"):
        ext = nk["extrapolated_s_all_beats"]
        print(f"{'NeuroKit2 hrv_time per 60 s window (ms)':48s} {1000 * nk['s_per_window']:12.2f}")
        print(f"{'NeuroKit2 rolling time domain, extrapolated (s)':48s} {ext:12.1f}")
        print(f"{'ratio NeuroKit2 (time domain only) / settle':48s} {ext / wall:12.0f}")
        print(f"(NeuroKit2 timed on {nk['windows_timed']} windows, extrapolated to every beat)")
    args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
