"""Benchmark subscriber (its own process): records every ``<base>/+/beat`` message's receive
time, device, ``seq`` and ``ts``; prints one JSON summary line when told to stop (SIGTERM) or
after ``--max-s`` seconds.

Usage: ``python benchmarks/_subscriber.py PORT --out FILE [--max-s S] [--sse-url URL
--sse-out FILE]``. It prints ``ready`` once subscribed. Receive times are wall clock
(``time.time()``): the daemon's ``ts`` is too, on the same machine.

``--sse-url``: also read the dashboard's Server-Sent Events (``http://127.0.0.1:P/events``,
one client, connecting as soon as the daemon serves it) and record every beat event the same
way in ``--sse-out``: beat → dashboard latency.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt


def read_sse(url: str, rows: list[tuple[float, bytes]], stop: threading.Event) -> None:
    """Append (receive time, ``data:`` line) for every event of the stream at ``url``."""
    u = urllib.parse.urlsplit(url)
    while not stop.is_set():
        conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=2)
        try:
            conn.request("GET", u.path or "/")
            resp = conn.getresponse()
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
            while not stop.is_set():
                try:
                    line = resp.fp.readline()
                except TimeoutError:
                    continue  # nothing within 2 s: look at the stop flag, read on
                if not line:
                    break
                if line.startswith(b"data: {"):
                    rows.append((time.time(), line))
        except OSError:
            time.sleep(0.2)  # not serving yet (or gone): try again
        finally:
            conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-s", type=float, default=3600.0)
    ap.add_argument("--base", default="settle")
    ap.add_argument("--sse-url")
    ap.add_argument("--sse-out", type=Path)
    args = ap.parse_args()
    sse_rows: list[tuple[float, bytes]] = []
    sse_stop = threading.Event()
    sse = None
    if args.sse_url:
        sse = threading.Thread(target=read_sse, args=(args.sse_url, sse_rows, sse_stop),
                               daemon=True)  # fmt: skip
        sse.start()
    rows: list[tuple[float, str, bytes]] = []
    stop = False

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # Only the receive time is taken here; parsing waits until the end.
        rows.append((time.time(), msg.topic, msg.payload))

    def on_connect(c: mqtt.Client, *_a: Any) -> None:
        c.subscribe(f"{args.base}/+/beat", qos=0)

    def on_term(*_a: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{time.time_ns()}")
    c.on_message = on_message
    c.on_connect = on_connect
    c.connect("127.0.0.1", args.port)
    c.loop_start()
    print("ready", flush=True)
    deadline = time.monotonic() + args.max_s
    while not stop and time.monotonic() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    sse_stop.set()
    if sse is not None:
        sse.join(5)
    if args.sse_out:
        with args.sse_out.open("w") as f:
            for t, line in list(sse_rows):
                ev = json.loads(line[len(b"data: ") :])
                if "topic" not in ev:
                    continue  # a health event
                dev, _, leaf = ev["topic"].partition("/")
                if leaf == "beat":
                    d = json.loads(ev["payload"])
                    f.write(f"{t:.6f} {dev} {d['seq']} {d['ts']}\n")
    with args.out.open("w") as f:
        for t, topic, payload in rows:
            d = json.loads(payload)
            f.write(f"{t:.6f} {topic.split('/')[1]} {d['seq']} {d['ts']}\n")
    print(json.dumps({"messages": len(rows)}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
