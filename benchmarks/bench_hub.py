"""The dashboard's backlog: its memory per strap, and what a page opening costs.

Usage: ``.venv/bin/python benchmarks/bench_hub.py [--straps 3,20,100,300]``

One strap's traffic as the daemon publishes it: the live pipeline (as ``bench_live.py``: the
physiological model's wire notifications → ``StrapPipeline`` → beat payloads, the indices
every 5 s and its session events, through ``DeviceOutput``'s tap) for 20 minutes, with a
marker every minute and the retained session message. For each N, a ``Hub`` takes N straps'
copies of it (distinct strings per strap, so nothing is shared that a real daemon would not
share; the garbage collector tuned as the daemon tunes it): the memory its backlogs hold
once full (``tracemalloc``), per strap. Then the dashboard serves it on a free 127.0.0.1
port (a stand-in daemon, a temporary store) and a page opens ``/events`` — every strap's
backlog, as a page that names no strap — and ``/events?device=<one strap>``, and reads
until its first ``health`` event: messages, seconds (the page is a process of its own
reading the socket), the dashboard's CPU time for it, and its event loop's longest stall
meanwhile, by a 10 ms ticker in its loop: on the wall clock, and in the thread's CPU time
(what the loop itself spent between two ticks; on a machine shared with other work the wall
clock adds the time the process waited for a core).
Writes ``benchmarks/results/hub.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from _common import ROOT, print_table, write_result

from feedback.dashboard import Dashboard, DashboardConfig, Hub, NoDaemon
from feedback.payloads import BeatPayload, SessionPayload
from sensors.hrs import HeartRateMeasurement
from sensors.strap import Notification
from sessions.store import SessionStore
from settle.app import tune_garbage_collector
from settle.config import load_config
from settle.pipeline import BeatWriter, DeviceOutput, StrapPipeline

MINUTES = 20
"""Longer than a strap's backlog (1 200 messages, ~15 min): it is full."""


def one_strap() -> list[tuple[str, str, bool]]:
    """(leaf below the strap, payload, retained) of one strap's 20 minutes, in order."""
    from bench_live import wire_notifications  # the same notifications as bench_live.py

    notes = [n for n in wire_notifications(MINUTES * 80) if n[0] <= MINUTES * 60]
    out: list[tuple[str, str, bool]] = []
    sid = "20261130T011502-1074"
    started_ms = 1_796_000_000_000
    session = SessionPayload(ts=started_ms, id=sid, state="running", device="dev",
                             started_ts=started_ms)  # fmt: skip
    out.append(("session", session.to_json().decode(), True))

    def tap(topic: str, payload: bytes | str, retain: bool) -> None:
        text = payload.decode() if isinstance(payload, bytes) else payload
        out.append((topic.split("/", 2)[2], text, retain))

    settings = load_config(None, mqtt={"enabled": False})
    with tempfile.TemporaryDirectory() as d:
        store = SessionStore.open(Path(d) / "s.db")
        writer = BeatWriter(store)
        dev = DeviceOutput(None, "settle", "dev", tap=tap)
        p = StrapPipeline(output=dev, session_id=sid, started_ms=started_ms,
                          settings=settings, writer=writer, started_mono_s=0.0)  # fmt: skip
        for seq, (t_s, data, _k) in enumerate(notes):
            m = HeartRateMeasurement.from_bytes(data)
            n = Notification(started_ms + int(t_s * 1000), t_s, m)
            times = p.on_notification(n)
            beat = BeatPayload(ts=n.recv_ts_ms, seq=seq, hr=m.hr_bpm, rr_ms=list(m.rr_ms),
                               beat_t_s=times, classified=p.take_classified(),
                               contact=m.contact, session=sid)  # fmt: skip
            dev.publish("beat", beat.to_json(), 0)
            if seq and seq % 60 == 0:
                dev.event(sid, "shame", t_s, source="dashboard", ts=n.recv_ts_ms)
            writer.beats.clear()
            writer.annotations.clear()
            writer.indices.clear()
        store.close()
    return out


def fill(hub: Hub, strap: list[tuple[str, str, bool]], straps: int) -> None:
    """``straps`` straps' copies, interleaved as they would arrive."""
    for leaf, payload, retain in strap:
        for k in range(straps):
            # A copy per strap: the same string object in every backlog would hide memory.
            hub.publish(f"settle/strap{k}/{leaf}", payload.encode().decode(), retain)


PAGE = r"""
import socket, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter()
s = socket.create_connection((host, port))
s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
body = bytearray()
while True:
    data = s.recv(1 << 20)
    if not data:
        break
    body += data
    if b"event: health" in body[-len(data) - 16 :]:
        break
print(body[: body.find(b"event: health")].count(b"\ndata: "), time.perf_counter() - t0)
"""
"""A page in its own process (a reader in the dashboard's loop would stall it itself):
prints the messages before the first health event and the seconds it took."""


async def open_page(port: int, path: str) -> dict[str, float]:
    """A page opening ``path``: messages and seconds until its first health event, and the
    dashboard's event loop's longest stall meanwhile."""
    lags: list[float] = []
    cpu: list[float] = []

    async def ticker() -> None:
        while True:
            t, c = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)
            cpu.append(time.thread_time() - c)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.2)
    lags.clear()
    cpu.clear()
    cpu0 = time.process_time()
    page = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PAGE, "127.0.0.1", str(port), path, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await page.communicate()
    cpu_s = time.process_time() - cpu0
    tick.cancel()
    n, seconds = out.split()
    return {"messages": int(n), "seconds": float(seconds), "dashboard_cpu_s": cpu_s,
            "stall_max_ms": 1000 * max(lags, default=0.0),
            "stall_max_cpu_ms": 1000 * max(cpu, default=0.0),
            "stalls_over_50ms": sum(lag > 0.05 for lag in lags)}  # fmt: skip


async def one_n(strap: list[tuple[str, str, bool]], straps: int) -> dict[str, Any]:
    tune_garbage_collector()  # as the daemon, at its start (else full collections of the
    # backlogs' objects, not the dashboard, make the longest stalls)
    hub = Hub("settle")
    tracemalloc.start()
    fill(hub, strap, straps)
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with tempfile.TemporaryDirectory() as d, SessionStore.open(Path(d) / "s.db") as store:
        cfg = DashboardConfig(host="127.0.0.1", port=0)
        async with Dashboard(hub, NoDaemon(), store, cfg) as dash:
            every = await open_page(dash.port, "/events")
            one = await open_page(dash.port, "/events?device=strap0")
    return {"straps": straps, "backlog_mb_per_strap": held / 1e6 / straps,
            "every_strap": every, "one_strap": one}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--straps", default="3,20,100,300", help="comma-separated strap counts")
    args = ap.parse_args()
    strap = one_strap()
    kinds = {leaf: sum(x[0] == leaf for x in strap) for leaf, _p, _r in strap}
    size = sum(len(p) for _leaf, p, _r in strap) / len(strap)
    print(f"one strap's {MINUTES} min: {kinds}, {size:.0f} characters a payload on average")
    results = [asyncio.run(one_n(strap, int(n))) for n in args.straps.split(",")]
    rows = []
    for r in results:
        e, o = r["every_strap"], r["one_strap"]
        rows.append([str(r["straps"]), f"{r['backlog_mb_per_strap']:.2f}", f"{e['messages']}",
                     f"{e['seconds']:.2f}", f"{e['dashboard_cpu_s']:.2f}",
                     f"{e['stall_max_ms']:.0f}", f"{e['stall_max_cpu_ms']:.0f}",
                     f"{o['messages']}", f"{o['seconds']:.3f}",
                     f"{o['stall_max_ms']:.0f}", f"{o['stall_max_cpu_ms']:.0f}"])  # fmt: skip
    print_table(["straps", "backlog MB/strap", "page: messages", "s", "CPU s", "stall ms", "CPU ms",
                 "?device=: messages", "s", "stall ms", "CPU ms"], rows)  # fmt: skip
    path = write_result("hub", {"minutes": MINUTES, "strap_messages": kinds, "results": results})
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
