"""Scale and latency: N virtual straps in real time → one daemon → mosquitto → one subscriber.

Usage: ``.venv/bin/python benchmarks/bench_scale.py [--ramp 10,50,100,…] [--window-s 20]``

For each N: a private mosquitto on a free 127.0.0.1 port, a subscriber process
(``_subscriber.py``: every ``settle/+/beat``) and a daemon process (``_scale_worker.py``:
``settle.app.serve`` on N virtual straps at speed 1, one notification per second each, MQTT
to that mosquitto, SQLite in a temporary directory, no dashboard). Once every strap streams
and ``--settle-s`` has passed, a ``--window-s`` window is measured:

* beat → subscriber latency: subscriber receive time minus the beat message's ``ts`` (the
  daemon's notification receive time, epoch ms, truncated: up to +1 ms), same machine clock;
* drops: gaps in each device's ``seq`` among the window's messages, and devices never heard;
* CPU of the daemon process (virtual straps included: they live in the same event loop —
  see the notes printed at the end) and its RSS.

With N = 1 the virtual strap's send times are also logged, for notification → subscriber
latency. The ramp stops at the first N that misses the target (p99 < 50 ms, no drops) or
cannot connect all straps within ``--ramp-timeout-s``. Results: a table and
``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _common import RESULTS, ROOT, pct, print_table, private_mosquitto, write_result

HERE = Path(__file__).resolve().parent
PY = sys.executable


def _stop(proc: subprocess.Popen[Any], grace_s: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            return None
    return proc.returncode


def _readline(proc: subprocess.Popen[str], timeout_s: float) -> str | None:
    """One stdout line within ``timeout_s`` (None on timeout or exit)."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout_s):
            return None
        line = proc.stdout.readline()
        return line.strip() or None
    finally:
        sel.close()


def run_n(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="settle-bench-") as d,
        private_mosquitto(Path(d)) as port,
    ):
        dd = Path(d)
        sub = subprocess.Popen(
            [PY, str(HERE / "_subscriber.py"), str(port), "--out", str(dd / "sub.txt"),
             "--max-s", str(args.ramp_timeout_s + args.window_s + 120)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        worker: subprocess.Popen[str] | None = None
        try:
            if _readline(sub, 10) != "ready":
                raise SystemExit("subscriber did not start")
            cmd = [PY, str(HERE / "_scale_worker.py"), str(n), str(port), str(dd / "s.db")]
            if n == 1:
                cmd += ["--send-log", str(dd / "send.txt")]
            if args.daemon_nodelay:
                cmd += ["--nodelay"]
            t0 = time.monotonic()
            worker = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=open(dd / "worker.err", "w"),  # noqa: SIM115
                text=True, cwd=ROOT,
            )  # fmt: skip
            line = _readline(worker, args.ramp_timeout_s)
            ramp_s = time.monotonic() - t0
            if line is None or not line.startswith("streaming"):
                return {"n": n, "ramp_ok": False, "ramp_s": ramp_s}
            time.sleep(args.settle_s)
            p = psutil.Process(worker.pid)
            c0 = p.cpu_times()
            w0, m0 = time.time(), time.monotonic()
            rss: list[int] = []
            while time.monotonic() - m0 < args.window_s:
                rss.append(p.memory_info().rss)
                time.sleep(1.0)
            c1 = p.cpu_times()
            w1, m1 = time.time(), time.monotonic()
            cpu_s = (c1.user + c1.system) - (c0.user + c0.system)
            time.sleep(1.0)  # let the window's last messages arrive
            stop_t = time.monotonic()
            code = _stop(worker, 120)
            stop_s = time.monotonic() - stop_t
        finally:
            if worker is not None:
                _stop(worker, 5)
            _stop(sub, 30)
        if args.raw:
            (RESULTS / f"scale_{n}_received.txt").write_bytes((dd / "sub.txt").read_bytes())
        rows = [ln.split() for ln in (dd / "sub.txt").read_text().splitlines()]
        lat: list[float] = []
        seqs: dict[str, list[int]] = collections.defaultdict(list)
        first_seq: dict[str, int] = {}
        for t, dev, seq, ts in rows:
            first_seq.setdefault(dev, int(seq))
            if w0 <= int(ts) / 1000 <= w1:
                lat.append(1000 * (float(t) - int(ts) / 1000))
                seqs[dev].append(int(seq))
        gaps = sum(max(s) - min(s) + 1 - len(set(s)) for s in seqs.values())
        res: dict[str, Any] = {
            "n": n, "ramp_ok": True, "ramp_s": round(ramp_s, 1), "window_s": round(m1 - m0, 1),
            "messages": len(lat), "devices_heard": len(seqs),
            "lat_p50_ms": pct(lat, 0.5), "lat_p99_ms": pct(lat, 0.99), "lat_max_ms": max(lat),
            "seq_gaps": gaps, "silent_devices": n - len(seqs),
            "cpu_pct_total": 100 * cpu_s / (m1 - m0),
            "cpu_pct_per_strap": 100 * cpu_s / (m1 - m0) / n,
            "rss_mb": max(rss) / 2**20, "rss_mb_per_strap": max(rss) / 2**20 / n,
            "exit_code": code, "stop_s": round(stop_s, 1),
        }  # fmt: skip
        if n == 1 and (dd / "send.txt").exists():
            sends = [float(x.split()[1]) for x in (dd / "send.txt").read_text().splitlines()]
            by_seq = {int(seq): float(t) for t, _dev, seq, _ts in rows}
            e2e = [1000 * (by_seq[k] - s) for k, s in enumerate(sends) if k in by_seq]
            res["notify_to_sub_p50_ms"] = pct(e2e, 0.5)
            res["notify_to_sub_p99_ms"] = pct(e2e, 0.99)
            res["notify_to_sub_n"] = len(e2e)
        res["ok"] = res["lat_p99_ms"] < 50 and gaps == 0 and res["silent_devices"] == 0
        return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ramp", default="1,10,50,100,200,300,400,500,600")
    ap.add_argument("--window-s", type=float, default=20.0)
    ap.add_argument("--settle-s", type=float, default=5.0)
    ap.add_argument("--ramp-timeout-s", type=float, default=420.0)
    ap.add_argument("--broker-nodelay", action="store_true", help="mosquitto set_tcp_nodelay")
    ap.add_argument("--daemon-nodelay", action="store_true", help="TCP_NODELAY on the daemon")
    ap.add_argument("--raw", action="store_true", help="keep what the subscriber received")
    ap.add_argument("--keep-going", action="store_true", help="measure every N even after a miss")
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    for n in [int(x) for x in args.ramp.split(",")]:
        r = run_n(n, args)
        results.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
        if not (r.get("ok") or args.keep_going):
            break
    best = max((r["n"] for r in results if r.get("ok")), default=0)
    table = []
    for r in results:
        if not r["ramp_ok"]:
            table.append([str(r["n"]), f"{r['ramp_s']:.0f}", "ramp timed out"] + [""] * 6)
            continue
        table.append([
            str(r["n"]), f"{r['ramp_s']:.0f}", f"{r['lat_p50_ms']:.1f}", f"{r['lat_p99_ms']:.1f}",
            str(r["seq_gaps"] + r["silent_devices"]), f"{r['cpu_pct_total']:.0f}",
            f"{r['cpu_pct_per_strap']:.2f}", f"{r['rss_mb']:.0f}", f"{r['rss_mb_per_strap']:.2f}",
        ])  # fmt: skip
    print_table(["N", "ramp s", "p50 ms", "p99 ms", "drops", "CPU %", "CPU %/strap", "RSS MB",
                 "RSS MB/strap"], table)  # fmt: skip
    one = next((r for r in results if r["n"] == 1 and "notify_to_sub_p50_ms" in r), None)
    if one:
        print(f"N=1 strap notification → subscriber: p50 {one['notify_to_sub_p50_ms']:.1f} ms, "
              f"p99 {one['notify_to_sub_p99_ms']:.1f} ms "
              f"({one['notify_to_sub_n']} notifications)")  # fmt: skip
    print(f"largest N with p99 < 50 ms and no drops: {best}")
    name = (
        "scale"
        + ("_broker_nodelay" if args.broker_nodelay else "")
        + ("_daemon_nodelay" if args.daemon_nodelay else "")
    )
    path = write_result(name, {"largest_ok_n": best, "window_s": args.window_s,
                              "broker_nodelay": args.broker_nodelay,
                              "daemon_nodelay": args.daemon_nodelay,
                                  "results": results})  # fmt: skip
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
