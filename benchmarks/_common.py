"""Shared by the benchmark scripts: the machine, a private mosquitto, percentiles, results.

Every process a benchmark starts binds 127.0.0.1 only and is stopped by the benchmark.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> dict[str, Any]:
    mem_gib = None
    try:
        import psutil

        mem_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "mem_gib": mem_gib,
        "platform": platform.platform(),
    }


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "machine": machine(), "when": time.strftime("%F %T"), **data}
    path.write_text(json.dumps(data, indent=1))
    return path


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]  # fmt: skip
    for line in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_mosquitto(workdir: Path, nodelay: bool = False) -> Iterator[int]:
    """A mosquitto on a free 127.0.0.1 port for the block; yields the port. ``nodelay``:
    ``set_tcp_nodelay true`` (no Nagle delay on small messages to subscribers)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        raise SystemExit("mosquitto not found (Debian: apt-get install mosquitto)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
        "persistence false\nlog_dest stderr\nlog_type error\nmax_queued_messages 100000\n"
        + ("set_tcp_nodelay true\n" if nodelay else "")
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("mosquitto did not start")
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def profile_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """Summarise a ``py-spy record --format raw`` file (collapsed stacks, one per line).

    Returns the share of samples by area (the first matching frame from the leaf up decides:
    bumble, MQTT, SQLite store, processing, …) and the top functions by inclusive share.
    """
    areas = [  # (area, substring of "function (path:line)"); first match from the leaf up
        ("bumble (virtual BLE)", "(bumble/"),
        ("sensors/virtual", "(sensors/virtual/"),
        ("sqlite store", "(sessions/"),
        ("MQTT (aiomqtt/paho)", "(paho/"),
        ("MQTT (aiomqtt/paho)", "(aiomqtt/"),
        ("MQTT link", "(feedback/mqtt.py"),
        ("pydantic/json", "(pydantic"),
        ("pydantic/json", "(json/"),
        ("processing", "(processing/"),
        ("bleak", "(bleak/"),
        ("dashboard", "(feedback/dashboard/"),
        ("dashboard", "(aiohttp/"),
        ("console (rich)", "(rich/"),
        ("pipeline/daemon", "(settle/"),
        ("sensors", "(sensors/"),
        ("feedback", "(feedback/"),
        ("numpy", "(numpy/"),
        ("asyncio/selectors", "(asyncio/"),
        ("asyncio/selectors", "(selectors.py"),
        ("logging", "(logging/"),
        ("threads", "(threading.py"),
        ("threads", "(concurrent/"),
    ]
    # Who the work is for: the simulated hardware (virtual straps, their GATT servers and the
    # software controllers/radio, none of which a real deployment runs on the computer), the
    # BLE host side (bumble's host, GATT client and the bleak backend here; BlueZ and D-Bus
    # on real hardware), or the daemon itself.
    hardware_keys = ("(sensors/virtual/strap.py", "(sensors/virtual/model.py",
                     "(sensors/virtual/pmd.py", "(bumble/controller.py", "(bumble/link.py",
                     "(bumble/gatt_server.py", "_VirtualController.")  # fmt: skip
    host_keys = ("(bumble/", "(sensors/virtual/", "(bleak/", "(pyee/")
    split = {"simulated hardware": 0, "BLE host stack": 0, "daemon": 0}
    total = 0
    by_area: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        total += count
        frames = stack.split(";")
        area = "other"
        for f in reversed(frames):
            hit = next((a for a, key in areas if key in f), None)
            if hit:
                area = hit
                break
        by_area[area] = by_area.get(area, 0) + count
        if any(k in stack for k in hardware_keys):
            split["simulated hardware"] += count
        elif any(k in stack for k in host_keys):
            split["BLE host stack"] += count
        else:
            split["daemon"] += count
        # "function (file:line)" → "function (file)": a function counts once per stack.
        for f in {fr.rsplit(":", 1)[0] + ")" for fr in frames}:
            inclusive[f] = inclusive.get(f, 0) + count

    def pct_of(c: int) -> float:
        return round(100 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "split_pct": {k: pct_of(c) for k, c in split.items()},
        "by_area_pct": {a: pct_of(c) for a, c in sorted(by_area.items(), key=lambda x: -x[1])},
        "top_inclusive_pct": {f: pct_of(c) for f, c in
                              sorted(inclusive.items(), key=lambda x: -x[1])[:top]},
    }  # fmt: skip
