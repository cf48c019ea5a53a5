"""Benchmark subscriber (its own process): records every ``<base>/+/beat`` message's receive
time, device, ``seq`` and ``ts``; prints one JSON summary line when told to stop (SIGTERM) or
after ``--max-s`` seconds.

Usage: ``python benchmarks/_subscriber.py PORT --out FILE [--max-s S]``. It prints ``ready``
once subscribed. Receive times are wall clock (``time.time()``): the daemon's ``ts`` is too,
on the same machine.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-s", type=float, default=3600.0)
    ap.add_argument("--base", default="settle")
    args = ap.parse_args()
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
    with args.out.open("w") as f:
        for t, topic, payload in rows:
            d = json.loads(payload)
            f.write(f"{t:.6f} {topic.split('/')[1]} {d['seq']} {d['ts']}\n")
    print(json.dumps({"messages": len(rows)}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
