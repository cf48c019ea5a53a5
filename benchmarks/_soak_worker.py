"""Soak worker (its own process): N virtual straps → one daemon → MQTT, with strap and store
faults injected at scheduled simulated times. Started by ``benchmarks/soak.py``.

Usage: ``python benchmarks/_soak_worker.py PLAN.json`` (written by soak.py: straps, speed,
hours, broker port, database, output directory, and the fault schedule).

The daemon is built as :func:`settle.app.serve` builds it (store → ``Daemon`` → ``MqttLink``
with ``on_command``; serve()'s GC tuning and closed-socket log handler), but run directly so
that the faults can reach it: a store failure is
SQLite's own refusal on the store's connection (``max_page_count`` → SQLITE_FULL, "database
or disk is full"; ``query_only`` → "attempt to write a readonly database"), as in
``tests/test_faults.py``. Broker faults are the parent's job (it owns mosquitto).

Prints ``streaming <epoch_s>`` once every strap has connected: simulated soak time is
``(wall − epoch) × speed`` from then on, on both sides. Writes, in the output directory:

* ``sent-<i>.u16``: every RR (wire unit 1/1024 s) strap ``i`` notified, in order (drained
  from ``VirtualStrap.sent`` every second so the harness does not grow with the run);
* ``worker.json``: counters per strap (sent, unsent, received, enqueued, dropped …), the
  MQTT link's counters, and the fault log with simulated and wall times.
"""

from __future__ import annotations

import array
import asyncio
import collections
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT  # noqa: F401  (puts the checkout on sys.path)

from feedback.mqtt import MqttLink
from sensors.strap import StrapClient
from sensors.virtual.air import VirtualAir
from sensors.virtual.model import ModelParams, PhysioModel
from sensors.virtual.strap import VirtualStrap
from sessions.store import SessionStore
from settle.app import attach_link, quiet_closed_socket_callbacks, tune_garbage_collector
from settle.config import load_config
from settle.daemon import BrokerChoice, Daemon, StrapRuntime

log = logging.getLogger("soak")

DROP_BACK_S = 1.0
"""A dropped strap advertises again after this many simulated seconds."""
ABSENT_S = 300.0
"""A long absence: the strap is away for 5 simulated minutes."""


class CountingLink(MqttLink):
    """An :class:`MqttLink` that also says *which* messages its bounded queue dropped.

    ``MqttLink.dropped`` is one total over every topic; reconciling beats per strap needs the
    topic (and, for a beat message, its ``seq``) of each message dropped. Benchmark only: it
    peeks at the queue the base class owns, the moment before the base class drops from it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enqueued: collections.Counter[str] = collections.Counter()
        """Messages handed to ``publish`` per topic leaf (``beat``, ``indices`` …)."""
        self.dropped_by_leaf: collections.Counter[str] = collections.Counter()
        self.beat_msgs: collections.Counter[str] = collections.Counter()
        """Beat messages per device."""
        self.beat_rr: collections.Counter[str] = collections.Counter()
        """Beats (RR values) in those messages per device."""
        self.dropped_beats: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
        """Per device: (seq, number of RR) of each beat message the full queue dropped."""

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        parts = topic.split("/")
        leaf = parts[-1] if len(parts) == 3 else "/".join(parts[1:])
        self.enqueued[leaf] += 1
        if leaf == "beat":
            self.beat_msgs[parts[1]] += 1
            self.beat_rr[parts[1]] += len(json.loads(payload)["rr_ms"])
        if len(self._queue) >= self.queue_size:
            victim = self._queue[self._victim()]
            vparts = victim.topic.split("/")
            vleaf = vparts[-1] if len(vparts) == 3 else "/".join(vparts[1:])
            self.dropped_by_leaf[vleaf] += 1
            if vleaf == "beat":
                d = json.loads(victim.payload)
                self.dropped_beats[vparts[1]].append((int(d["seq"]), len(d["rr_ms"])))
        super().publish(topic, payload, qos, retain)

    @property
    def queued(self) -> int:
        """Messages not yet taken by the broker (queued, or handed to the client)."""
        return len(self._queue) + len(getattr(self, "_inflight", ()))


class SentLog:
    """Moves what a virtual strap notified out of ``VirtualStrap.sent`` into a file."""

    def __init__(self, strap: VirtualStrap, path: Path) -> None:
        self.strap = strap
        self.path = path
        self.drained = 0
        path.write_bytes(b"")

    def drain(self) -> None:
        msgs, self.strap.sent[:] = list(self.strap.sent), []
        rr = array.array("H", (r for m in msgs for r in m.rr_raw))
        self.drained += len(rr)
        with self.path.open("ab") as f:
            rr.tofile(f)

    @property
    def n_sent(self) -> int:
        """RR values notified so far (drained and not yet drained)."""
        return self.drained + sum(len(m.rr_raw) for m in self.strap.sent)


def _seq(rt: StrapRuntime) -> int:
    return rt.session.seq if rt.session else 0


async def run(plan: dict[str, Any]) -> None:
    out = Path(plan["out"])
    speed = float(plan["speed"])
    n = int(plan["straps"])
    end_sim_s = float(plan["hours"]) * 3600.0
    settings = load_config(
        None,
        mqtt={"host": "127.0.0.1", "port": plan["port"], "protocol": "3.1.1",
              "queue_size": plan["queue_size"], "client_id": "settle-soak"},
        storage={"db_path": plan["db"]},
        strap={"scan_timeout_s": 600.0, "connect_timeout_s": 120.0},
        homeassistant={"enabled": False},
        http={"enabled": False},
    )  # fmt: skip
    faults: list[dict[str, Any]] = []
    warnings: collections.Counter[str] = collections.Counter()

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings[f"{record.levelname} {record.name}"] += 1

    logging.getLogger().addHandler(Count(logging.WARNING))

    async with VirtualAir() as air:
        straps = [
            VirtualStrap(air, PhysioModel(ModelParams(), seed=plan["seed"] * 1000 + i),
                         name=f"Soak HR {i + 1}", speed=speed, advertising_interval_ms=100.0)
            for i in range(n)
        ]  # fmt: skip
        sent = [SentLog(s, out / f"sent-{i}.u16") for i, s in enumerate(straps)]
        clients = [
            StrapClient(
                address=s.address,
                scan_timeout_s=settings.strap.scan_timeout_s,
                connect_timeout_s=settings.strap.connect_timeout_s,
                scanner_kwargs=air.scanner_kwargs(),
                client_kwargs=air.client_kwargs(),
            )
            for s in straps
        ]
        store = SessionStore.open(settings.db_path)
        broker = BrokerChoice("127.0.0.1", int(plan["port"]), embedded=False)
        daemon = Daemon(settings, store, clients, source="virtual", broker=broker,
                        time_scale=speed)  # fmt: skip
        link = attach_link(daemon, settings, broker, CountingLink)
        rts = daemon.runtimes

        def pragma(sql: str) -> None:
            # The store's own connection, under its lock: the fault hits its real error path.
            with store._lock:
                assert store._conn is not None
                store._conn.execute(sql)

        async def start_straps() -> float:
            # One after another (as bench_scale does): N advertisers heard by N scanners at
            # once is O(N²) work on the virtual air, which is not what is measured here.
            for s in straps:
                await s.start()
                while not s.is_connected:  # noqa: ASYNC110 - watching the virtual strap
                    await asyncio.sleep(0.01)
            while not all(rt.state == "streaming" and rt.session for rt in rts):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            return time.time()

        async def drain_loop() -> None:
            while True:
                await asyncio.sleep(1.0)
                for s in sent:
                    s.drain()

        async def strap_fault(f: dict[str, Any], t0: float) -> None:
            i = int(f["strap"])
            strap, rt = straps[i], rts[i]
            entry = {**f, "wall": round(time.time() - t0, 3),
                     "sim_s": round((time.time() - t0) * speed, 1)}  # fmt: skip
            if rt.state != "streaming" or not strap.is_connected:
                entry["skipped"] = f"strap {i} not streaming ({rt.state})"
                faults.append(entry)
                return
            entry["processed"] = _seq(rt)
            entry["n_sent"] = sent[i].n_sent
            faults.append(entry)
            if f["kind"] == "silent":
                strap.lose_link()
            else:
                back = DROP_BACK_S if f["kind"] == "drop" else ABSENT_S
                await strap.drop(reappear_after_s=back / speed)

        async def store_fault(f: dict[str, Any], t0: float) -> None:
            fault, cure = {
                "disk_full": ("PRAGMA max_page_count = 1", "PRAGMA max_page_count = 1073741823"),
                "read_only": ("PRAGMA query_only = 1", "PRAGMA query_only = 0"),
            }[f["kind"]]
            await asyncio.to_thread(pragma, fault)
            entry = {**f, "wall": round(time.time() - t0, 3),
                     "sim_s": round((time.time() - t0) * speed, 1)}  # fmt: skip
            faults.append(entry)
            await asyncio.sleep(float(f["duration_s"]) / speed)
            entry["failing_seen"] = daemon.writer.failing
            entry["buffered_beats"] = sum(len(v) for v in daemon.writer.beats.values())
            await asyncio.to_thread(pragma, cure)
            entry["cured_sim_s"] = round((time.time() - t0) * speed, 1)

        async def run_schedule(t0: float) -> None:
            pending: list[asyncio.Task[None]] = []
            for f in plan["faults"]:
                if f["kind"] == "broker":
                    continue  # the parent's
                await asyncio.sleep(max(0.0, t0 + f["t_s"] / speed - time.time()))
                if f["kind"] in ("disk_full", "read_only"):
                    pending.append(asyncio.create_task(store_fault(f, t0), name="store-fault"))
                else:
                    pending.append(asyncio.create_task(strap_fault(f, t0), name="strap-fault"))
            await asyncio.gather(*pending)

        async with link:
            # As serve() runs the daemon: the same GC tuning and closed-socket log handler.
            quiet_closed_socket_callbacks(asyncio.get_running_loop())
            tune_garbage_collector()
            daemon_task = asyncio.create_task(daemon.run(), name="daemon")
            drain = asyncio.create_task(drain_loop(), name="drain-sent")
            t0 = await start_straps()
            print(f"streaming {t0:.3f}", flush=True)
            await run_schedule(t0)
            await asyncio.sleep(max(0.0, t0 + end_sim_s / speed - time.time()))
            # The end: the straps stop first (stream ended, clean disconnect) so that every
            # beat they notified reaches the daemon; then the daemon stops gracefully.
            stop_sim_s = (time.time() - t0) * speed
            for s in straps:
                await s.stop()
            while any(rt.state == "streaming" for rt in rts):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            stop_points = [(_seq(rt), sl.n_sent) for rt, sl in zip(rts, sent, strict=True)]
            stop_t = time.monotonic()
            daemon.stop()
            await daemon_task
            daemon_stop_s = time.monotonic() - stop_t
            drain.cancel()
            for sl in sent:
                sl.drain()
            link_stop_t = time.monotonic()
        link_close_s = time.monotonic() - link_stop_t
        store.close()

    received: dict[str, int] = collections.Counter()
    sessions: dict[str, list[str]] = collections.defaultdict(list)
    for p in daemon.finished:
        received[p.device_id] += p.seq
        sessions[p.device_id].append(p.session_id)
    per_strap = []
    for i, (s, rt, sl) in enumerate(zip(straps, rts, sent, strict=True)):
        dev = rt.device_id or ""
        per_strap.append({
            "index": i, "address": s.address, "device": dev, "sessions": sessions[dev],
            "beats_sent": s.beats_sent, "beats_unsent": s.beats_unsent, "rr_logged": sl.drained,
            "received": received[dev], "notifications": rt.output.beat_seq if rt.output else 0,
            "overflowed": rt.client.overflowed, "malformed": rt.client.malformed,
            "reconnects": rt.reconnects, "final_state": rt.state,
            "beat_msgs_enqueued": link.beat_msgs[dev], "beats_enqueued": link.beat_rr[dev],
            "dropped_beat_msgs": link.dropped_beats.get(dev, []),
            "stop_point": stop_points[i],
        })  # fmt: skip
    result = {
        "stop_sim_s": round(stop_sim_s, 1),
        "daemon_stop_s": round(daemon_stop_s, 2),
        "link_close_s": round(link_close_s, 2),
        "straps": per_strap,
        "link": {"published": link.published, "dropped": link.dropped, "connects": link.connects,
                 "queued_at_exit": link.queued, "enqueued": dict(link.enqueued),
                 "dropped_by_leaf": dict(link.dropped_by_leaf)},
        "writer_failing_at_exit": daemon.writer.failing,
        "writer_unflushed_beats": sum(len(v) for v in daemon.writer.beats.values()),
        "faults": faults,
        "log_warnings": dict(warnings),
    }  # fmt: skip
    (out / "worker.json").write_text(json.dumps(result, indent=1))


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    asyncio.run(run(plan))


if __name__ == "__main__":
    main()
