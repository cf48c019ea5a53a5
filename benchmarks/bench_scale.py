"""Scale and latency: N virtual straps in real time → one daemon → mosquitto → one subscriber.

Usage: ``.venv/bin/python benchmarks/bench_scale.py [--ramp 10,50,100,…] [--window-s 20]
[--broker-nodelay] [--sse] [--profile] [--keep-going]``

For each N: a private mosquitto on a free 127.0.0.1 port, a subscriber process
(``_subscriber.py``: every ``settle/+/beat``) and a daemon process (``_scale_worker.py``:
``settle.app.serve`` on N virtual straps at speed 1, one notification per second each, MQTT
to that mosquitto, SQLite in a temporary directory, no dashboard unless ``--sse``). Once
every strap streams and ``--settle-s`` has passed, a ``--window-s`` window is measured:

* beat → subscriber latency: subscriber receive time minus the beat message's ``ts`` (the
  daemon's notification receive time, epoch ms, truncated: up to +1 ms), same machine clock;
* with ``--sse``: the dashboard also serves on a free 127.0.0.1 port and the subscriber
  process reads its ``/events`` as one SSE client: beat → dashboard latency, same way;
* drops: gaps in each device's ``seq`` among the window's messages, and devices never heard;
* CPU of the daemon process (virtual straps included: they live in the same event loop) and
  its RSS; with ``--profile`` py-spy samples it during the window and the result holds a
  summary (``_common.profile_summary``: simulated hardware / BLE host / daemon, areas, top
  functions);
* then SIGTERM: seconds to exit, and to ``serve()`` returning (the daemon's own part).

With N = 1 the virtual strap's send times are also logged, for notification → subscriber
(and → SSE) latency. The ramp stops at the first N that misses the target (p99 < 50 ms, no
drops) unless ``--keep-going``, or when N straps cannot connect within
``--ramp-timeout-s``. Results: a table and ``benchmarks/results/scale*.json``.
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
from _common import (
    RESULTS,
    ROOT,
    free_port,
    pct,
    print_table,
    private_mosquitto,
    profile_summary,
    write_result,
)

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


def _received(
    path: Path, w0: float, w1: float
) -> tuple[list[list[str]], list[float], dict[str, list[int]], int]:
    """Rows ``t dev seq ts`` of a receiver's log; latencies (ms) and seqs per device of the
    messages whose ``ts`` falls in the window [w0, w1]; seq gaps within the window."""
    rows = [ln.split() for ln in path.read_text().splitlines()]
    lat: list[float] = []
    seqs: dict[str, list[int]] = collections.defaultdict(list)
    for t, dev, seq, ts in rows:
        if w0 <= int(ts) / 1000 <= w1:
            lat.append(1000 * (float(t) - int(ts) / 1000))
            seqs[dev].append(int(seq))
    gaps = sum(max(s) - min(s) + 1 - len(set(s)) for s in seqs.values())
    return rows, lat, seqs, gaps


def run_n(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="settle-bench-") as d,
        private_mosquitto(Path(d), nodelay=args.broker_nodelay) as port,
    ):
        dd = Path(d)
        sub_cmd = [PY, str(HERE / "_subscriber.py"), str(port), "--out", str(dd / "sub.txt"),
                   "--max-s", str(args.ramp_timeout_s + args.window_s + 300)]  # fmt: skip
        http_port = free_port() if args.sse else None
        if http_port is not None:
            sub_cmd += ["--sse-url", f"http://127.0.0.1:{http_port}/events",
                        "--sse-out", str(dd / "sse.txt")]  # fmt: skip
        sub = subprocess.Popen(sub_cmd, stdout=subprocess.PIPE, text=True)
        worker: subprocess.Popen[str] | None = None
        try:
            if _readline(sub, 10) != "ready":
                raise SystemExit("subscriber did not start")
            cmd = [PY, str(HERE / "_scale_worker.py"), str(n), str(port), str(dd / "s.db")]
            if n == 1:
                cmd += ["--send-log", str(dd / "send.txt")]
            if http_port is not None:
                cmd += ["--http-port", str(http_port)]
            if args.gc_threshold:
                cmd += ["--gc-threshold", args.gc_threshold]
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
            spy = None
            if args.profile:
                RESULTS.mkdir(parents=True, exist_ok=True)
                # py-spy samples the daemon (GIL-holding stacks only, so idle waits in
                # select() do not count) for the window; summarised by _profile_summary.
                spy = subprocess.Popen(
                    [str(Path(PY).parent / "py-spy"), "record", "--format", "raw", "--gil",
                     "--nonblocking", "--rate", "50", "--duration", str(int(args.window_s)),
                     "--pid", str(worker.pid), "-o", str(RESULTS / f"scale_{n}_profile.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            while time.monotonic() - m0 < args.window_s:
                rss.append(p.memory_info().rss)
                time.sleep(1.0)
            c1 = p.cpu_times()
            w1, m1 = time.time(), time.monotonic()
            if spy is not None:
                spy.wait(30)
            cpu_s = (c1.user + c1.system) - (c0.user + c0.system)
            time.sleep(1.0)  # let the window's last messages arrive
            stop_t, stop_wall = time.monotonic(), time.time()
            code = _stop(worker, 120)
            stop_s = time.monotonic() - stop_t
            # "stopped <epoch>": when serve() returned, before the virtual world is torn down.
            assert worker.stdout is not None
            said = worker.stdout.read().split() if code is not None else []
            serve_stop_s = (
                float(said[said.index("stopped") + 1]) - stop_wall if "stopped" in said else None
            )
        finally:
            if worker is not None:
                _stop(worker, 5)
            _stop(sub, 30)
        if args.raw:
            (RESULTS / f"scale_{n}_received.txt").write_bytes((dd / "sub.txt").read_bytes())
        rows, lat, seqs, gaps = _received(dd / "sub.txt", w0, w1)
        res: dict[str, Any] = {
            "n": n, "ramp_ok": True, "ramp_s": round(ramp_s, 1), "window_s": round(m1 - m0, 1),
            "messages": len(lat), "devices_heard": len(seqs),
            "lat_p50_ms": pct(lat, 0.5), "lat_p99_ms": pct(lat, 0.99), "lat_max_ms": max(lat),
            "seq_gaps": gaps, "silent_devices": n - len(seqs),
            "cpu_pct_total": 100 * cpu_s / (m1 - m0),
            "cpu_pct_per_strap": 100 * cpu_s / (m1 - m0) / n,
            "rss_mb": max(rss) / 2**20, "rss_mb_per_strap": max(rss) / 2**20 / n,
            "exit_code": code, "stop_s": round(stop_s, 1),
            "serve_stop_s": None if serve_stop_s is None else round(serve_stop_s, 2),
        }  # fmt: skip
        if n == 1 and (dd / "send.txt").exists():
            sends = [float(x.split()[1]) for x in (dd / "send.txt").read_text().splitlines()]
            by_seq = {int(seq): float(t) for t, _dev, seq, _ts in rows}
            e2e = [1000 * (by_seq[k] - s) for k, s in enumerate(sends) if k in by_seq]
            res["notify_to_sub_p50_ms"] = pct(e2e, 0.5)
            res["notify_to_sub_p99_ms"] = pct(e2e, 0.99)
            res["notify_to_sub_n"] = len(e2e)
        if http_port is not None and (dd / "sse.txt").exists():
            sse_rows, sse_lat, sse_seqs, sse_gaps = _received(dd / "sse.txt", w0, w1)
            res.update({
                "sse_messages": len(sse_lat), "sse_p50_ms": pct(sse_lat, 0.5),
                "sse_p99_ms": pct(sse_lat, 0.99),
                "sse_max_ms": max(sse_lat, default=float("nan")),
                "sse_seq_gaps": sse_gaps, "sse_silent_devices": n - len(sse_seqs),
            })  # fmt: skip
            if n == 1 and (dd / "send.txt").exists():
                by_seq = {int(seq): float(t) for t, _dev, seq, _ts in sse_rows}
                e2e = [1000 * (by_seq[k] - s) for k, s in enumerate(sends) if k in by_seq]
                res["notify_to_sse_p50_ms"] = pct(e2e, 0.5)
                res["notify_to_sse_p99_ms"] = pct(e2e, 0.99)
        prof = RESULTS / f"scale_{n}_profile.txt"
        if args.profile and prof.exists():
            res["profile"] = profile_summary(prof)
        res["ok"] = res["lat_p99_ms"] < 50 and gaps == 0 and res["silent_devices"] == 0
        return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ramp", default="1,10,50,100,200,300,400,500,600")
    ap.add_argument("--window-s", type=float, default=20.0)
    ap.add_argument("--settle-s", type=float, default=5.0)
    ap.add_argument("--ramp-timeout-s", type=float, default=420.0)
    ap.add_argument("--broker-nodelay", action="store_true", help="mosquitto set_tcp_nodelay")
    # No-op: the daemon sets TCP_NODELAY itself now (feedback/mqtt.py); kept so that older
    # command lines (the Makefile's) still run.
    ap.add_argument("--daemon-nodelay", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--sse",
        action="store_true",
        help="also serve the dashboard and measure beat → SSE (one client)",
    )
    ap.add_argument("--raw", action="store_true", help="keep what the subscriber received")
    ap.add_argument("--gc-threshold", help="experiment: the daemon's gc.set_threshold(T0,T1,T2)")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the daemon during each window (results/scale_N_profile.txt)",
    )
    ap.add_argument("--keep-going", action="store_true", help="measure every N even after a miss")
    args = ap.parse_args()
    if args.profile and not (Path(PY).parent / "py-spy").exists():
        ap.error("--profile needs py-spy in the venv (.venv/bin/python -m pip install py-spy)")
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
            table.append([str(r["n"]), f"{r['ramp_s']:.0f}", "ramp timed out"] + [""] * 8)
            continue
        sse = f"{r['sse_p50_ms']:.1f} / {r['sse_p99_ms']:.1f}" if "sse_p50_ms" in r else ""
        stop = f"> {r['stop_s']:.0f} (killed)"
        if r["exit_code"] == 0:
            stop = f"{r['stop_s']:.1f}"
            if r.get("serve_stop_s") is not None:
                stop += f" ({r['serve_stop_s']:.1f})"
        table.append([
            str(r["n"]), f"{r['ramp_s']:.0f}", f"{r['lat_p50_ms']:.1f}", f"{r['lat_p99_ms']:.1f}",
            str(r["seq_gaps"] + r["silent_devices"]), sse, f"{r['cpu_pct_total']:.0f}",
            f"{r['cpu_pct_per_strap']:.2f}", f"{r['rss_mb']:.0f}", f"{r['rss_mb_per_strap']:.2f}",
            stop,
        ])  # fmt: skip
    print_table(["N", "ramp s", "p50 ms", "p99 ms", "drops", "SSE p50/p99 ms", "CPU %",
                 "CPU %/strap", "RSS MB", "RSS MB/strap", "stop s (serve)"], table)  # fmt: skip
    one = next((r for r in results if r["n"] == 1 and "notify_to_sub_p50_ms" in r), None)
    if one:
        print(f"N=1 strap notification → subscriber: p50 {one['notify_to_sub_p50_ms']:.1f} ms, "
              f"p99 {one['notify_to_sub_p99_ms']:.1f} ms "
              f"({one['notify_to_sub_n']} notifications)")  # fmt: skip
    print(f"largest N with p99 < 50 ms and no drops: {best}")
    name = (
        "scale"
        + ("_broker_nodelay" if args.broker_nodelay else "")
        + ("_sse" if args.sse else "")
        + ("_gc" if args.gc_threshold else "")
    )
    path = write_result(name, {"largest_ok_n": best, "window_s": args.window_s,
                              "broker_nodelay": args.broker_nodelay,
                                  "results": results})  # fmt: skip
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
