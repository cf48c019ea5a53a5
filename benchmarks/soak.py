"""Soak: hours of simulated time, many straps, random faults — and every count must agree.

Usage::

    .venv/bin/python benchmarks/soak.py [--hours 12] [--straps 50] [--speed 10] [--seed 1]
                                        [--queue-size 2000] [--faults drop=N,…] [--json PATH]
                                        [--keep DIR] [--progress]
    .venv/bin/python benchmarks/soak.py --reconcile DIR   # again, on a run kept with --keep

Wall time is ``hours × 3600 / speed`` plus about a minute: 72 min for the defaults. Keep
``straps × speed`` (notifications per wall second) at or below about 500 on a 2-core machine:
beyond that the one event loop — virtual straps, daemon and the MQTT link's pump — falls
behind, and the live queue drops messages that a real-time run would have published.

One daemon process (``_soak_worker.py``: the production path — bumble GATT servers → the
project's bleak backend → ``StrapPipeline`` → SQLite store and ``MqttLink``) runs N virtual
straps time-compressed by ``--speed`` (simulated seconds per wall second; the daemon gets the
same ``time_scale``). This process owns everything outside the daemon: a private mosquitto on
a free 127.0.0.1 port, a subscriber on ``settle/+/beat`` (a persistent MQTT session, so a
restarted broker keeps its subscription), the broker faults, and the daemon's RSS.

Faults, at seeded random simulated times (each logged with its simulated time):

* ``drop``: the strap ends the link, advertises again after 1 s;
* ``silent``: the link vanishes (supervision timeout, no goodbye), the strap re-advertises;
* ``absent``: the strap ends the link and stays away for 5 min;
* ``broker``: mosquitto is killed (SIGKILL) and restarted 60 s later;
* ``disk_full`` / ``read_only``: SQLite refuses to write (SQLITE_FULL / read-only) for
  30–120 s.

At the end the straps stop, the daemon stops gracefully, every session is exported to CSV,
and per strap and in total these are reconciled — exactly:

=====================  ======================================================================
sent                   beats the virtual strap notified (``VirtualStrap.beats_sent``); beats
                       that completed while no central listened are ``unsent`` (not sent)
received               beats the daemon recorded (sum of ``StrapPipeline.seq``)
lost in the air        sent − received: beats notified as a link ended; only allowed inside
                       a gap the daemon recorded (between the stored beats around it)
stored                 beat rows in SQLite (one session per strap, seq 0…n−1, RR as sent)
exported               beat rows in the CSV export (RR as stored)
enqueued               beats in the beat messages handed to ``MqttLink.publish``
dropped (queue)        beat messages the bounded live queue dropped (oldest first), counted
dropped, delivered     of those, messages the subscriber got all the same (the queue dropped
                       one the link had already handed to the MQTT client): a wrong count
published              enqueued − dropped (the queue is empty at exit)
lost at broker kill    QoS 0 beat messages the link had written when mosquitto was killed:
                       allowed only straddling a kill (the subscriber got the message before
                       it before the restart and the one after it after the kill)
subscribed             distinct beat messages (by ``seq``) and beats the subscriber got
=====================  ======================================================================

Exit status 1 if any of it disagrees. RSS of the daemon process (virtual straps and harness
included: they share its event loop) is sampled throughout; the slope is reported.
"""

from __future__ import annotations

import argparse
import array
import bisect
import csv
import getpass
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from _common import ROOT, free_port, machine, print_table
from paho.mqtt.enums import CallbackAPIVersion

from sessions.exporters import export_session
from sessions.store import SessionState, SessionStore

HERE = Path(__file__).resolve().parent
PY = sys.executable

STRAP_KINDS = ("drop", "silent", "absent")
STORE_KINDS = ("disk_full", "read_only")
KINDS = (*STRAP_KINDS, "broker", *STORE_KINDS)
BROKER_DOWN_S = 60.0
ABSENT_S = 300.0

# Faults per hour of simulated time: strap faults per strap, the others per daemon.
RATES_PER_H = {"drop": 0.4, "silent": 0.2, "absent": 0.05, "broker": 0.7, "disk_full": 0.5,
               "read_only": 0.5}  # fmt: skip


# -- the fault schedule -------------------------------------------------------------------------


def fault_counts(hours: float, straps: int, override: dict[str, int]) -> dict[str, int]:
    counts = {
        k: round(r * hours * (straps if k in STRAP_KINDS else 1)) for k, r in RATES_PER_H.items()
    }
    counts.update(override)
    return counts


def schedule(
    counts: dict[str, int], hours: float, straps: int, speed: float, seed: int
) -> list[dict[str, Any]]:
    """Seeded fault times in simulated seconds since every strap streamed.

    Faults start after 60 s and end 60 s plus 5 wall seconds before the end (so every
    reconnect and the queue have finished). Faults of one strap are ≥ 30 s plus 2 wall
    seconds apart plus their own length; broker
    outages ≥ 30 s plus 8 wall seconds apart (the link reconnects within a few wall seconds);
    store faults never overlap each other. Kinds do overlap one another, as they would.
    """
    for attempt in range(100):
        try:
            return _schedule(counts, hours, straps, speed, random.Random(seed * 1000 + attempt))
        except LookupError:
            pass
    raise SystemExit(f"cannot place the faults {counts} in {hours} h")


def _schedule(
    counts: dict[str, int], hours: float, straps: int, speed: float, rng: random.Random
) -> list[dict[str, Any]]:
    end = hours * 3600.0
    lo, hi = 60.0, end - 60.0 - 5 * speed
    if hi <= lo + ABSENT_S:
        raise SystemExit("--hours too short for faults")
    out: list[dict[str, Any]] = []
    busy: dict[Any, list[tuple[float, float]]] = defaultdict(list)

    def place(key: Any, length: float, margin: float) -> float | None:
        for _ in range(1000):
            t = rng.uniform(lo, hi - length)
            k = ("strap", rng.randrange(straps)) if key == "strap" else key
            if all(t + length + margin <= a or t >= b + margin for a, b in busy[k]):
                busy[k].append((t, t + length))
                if key == "strap":
                    f["strap"] = k[1]
                return t
        return None

    for kind in ("absent", "broker", *STORE_KINDS, "drop", "silent"):  # the longest first
        for _ in range(counts.get(kind, 0)):
            f: dict[str, Any] = {"kind": kind}
            if kind in STRAP_KINDS:
                length = {"drop": 1.0, "silent": 1.0, "absent": ABSENT_S}[kind]
                t = place("strap", length, 30.0 + 2 * speed)
            elif kind == "broker":
                f["duration_s"] = BROKER_DOWN_S
                t = place("broker", BROKER_DOWN_S, 30.0 + 8 * speed)
            else:
                f["duration_s"] = round(rng.uniform(30.0, 120.0), 1)
                t = place("store", f["duration_s"], 30.0 + 3 * speed)
            if t is None:
                raise LookupError(kind)
            f["t_s"] = round(t, 1)
            out.append(f)
    return sorted(out, key=lambda f: f["t_s"])


# -- outside the daemon: broker and subscriber ----------------------------------------------------


class Broker:
    """A private mosquitto with persistence (the subscriber's session survives a kill)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.access(binary, os.X_OK):
            raise SystemExit("mosquitto not found (Debian: apt-get install mosquitto)")
        self.binary = binary
        self.port = free_port()
        data = workdir / "mosquitto"
        data.mkdir()
        self.conf = workdir / "mosquitto.conf"
        # autosave every second: a SIGKILL loses at most the last second of session state;
        # queue_qos0_messages: beats (QoS 0) are queued for the offline subscriber too.
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
            f"persistence true\npersistence_location {data}/\nautosave_interval 1\n"
            "queue_qos0_messages true\nmax_queued_messages 1000000\nmax_inflight_messages 0\n"
            "log_dest stderr\nlog_type error\n"
        )
        self.log = (workdir / "mosquitto.log").open("a")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=self.log)  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("mosquitto did not start")
            time.sleep(0.01)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Received:
    seq: array.array[int] = field(default_factory=lambda: array.array("q"))
    n_rr: array.array[int] = field(default_factory=lambda: array.array("H"))
    t: array.array[float] = field(default_factory=lambda: array.array("d"))


class Subscriber:
    """Every ``settle/+/beat`` message: device, seq, number of RR, receive time (paho thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.by_dev: dict[str, Received] = defaultdict(Received)
        self.last_t = 0.0
        self.connects = 0
        self._lock = threading.Lock()
        self._c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-sub-{os.getpid()}",
                              clean_session=False)  # fmt: skip
        self._c.on_connect = self._on_connect
        self._c.on_message = self._on_message
        self._c.reconnect_delay_set(1, 2)  # the broker keeps the session meanwhile
        self._connected = threading.Event()

    def _on_connect(self, c: mqtt.Client, *_a: Any) -> None:
        self.connects += 1
        c.subscribe("settle/+/beat", qos=1)
        self._connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        t = time.time()
        d = json.loads(msg.payload)
        r = self.by_dev[msg.topic.split("/")[1]]
        with self._lock:
            r.seq.append(int(d["seq"]))
            r.n_rr.append(len(d["rr_ms"]))
            r.t.append(t)
            self.last_t = t

    def start(self) -> None:
        self._c.connect("127.0.0.1", self.port)
        self._c.loop_start()
        if not self._connected.wait(10):
            raise SystemExit("subscriber did not connect")

    def stop(self) -> None:
        self._c.loop_stop()
        self._c.disconnect()

    def save(self, where: Path) -> None:
        where.mkdir(exist_ok=True)
        for dev, r in self.by_dev.items():
            with (where / f"{dev}.bin").open("wb") as f:
                for a in (r.seq, r.n_rr, r.t):
                    a.tofile(f)

    @classmethod
    def load(cls, where: Path) -> Subscriber:
        """What :meth:`save` wrote (not connected)."""
        self = cls.__new__(cls)
        self.by_dev = defaultdict(Received)
        for path in where.glob("*.bin"):
            data = path.read_bytes()
            n = len(data) // (8 + 2 + 8)
            r = self.by_dev[path.stem]
            r.seq.frombytes(data[: 8 * n])
            r.n_rr.frombytes(data[8 * n : 10 * n])
            r.t.frombytes(data[10 * n :])
        return self


# -- reconciliation -------------------------------------------------------------------------------


def align(sent: array.array[int], stored: list[int]) -> list[int]:
    """``where[j]``: index into ``sent`` of stored beat ``j`` (stored must be sent in order
    with some left out; ValueError otherwise)."""
    where: list[int] = []
    j, n = 0, len(stored)
    for i, rr in enumerate(sent):
        if j < n and stored[j] == rr:
            where.append(i)
            j += 1
    if j != n:
        raise ValueError(f"stored beat {j} of {n} was never sent or is out of order")
    return where


def lost_in_air(
    sent: array.array[int],
    beat_t: list[float],
    stored: list[int],
    gaps: list[tuple[float, float]],
    stop_processed: int,
    unexplained_at: list[int] | None = None,
) -> tuple[int, int]:
    """(explained, unexplained) beats sent but not stored; the index in ``sent`` of each
    unexplained one is appended to ``unexplained_at``.

    A missing beat is explained when it lies inside a gap the daemon recorded — after the
    last stored beat at or before the gap's start and before the first stored beat after its
    end — or was sent after the last beat processed when the run stopped. This is
    sharper than "one beat per fault": every lost beat is where the data says beats are
    unknown."""
    where = align(sent, stored)
    windows = []
    for start, end in gaps:
        a = bisect.bisect_right(beat_t, start) - 1  # last stored beat at or before the start
        # First stored beat after the end: the gap's end is where the next beat's interval
        # begins, so that beat lies after it (for a zero-length gap, after the last one).
        b = bisect.bisect_right(beat_t, end)
        windows.append((where[a] + 1 if a >= 0 else 0, where[b] if b < len(where) else len(sent)))
    p = stop_processed
    windows.append((where[p - 1] + 1 if p else 0, len(sent)))
    windows.sort()
    starts = [a for a, _ in windows]
    explained = unexplained = 0
    k = 0
    for i in range(len(sent)):
        if k < len(where) and where[k] == i:
            k += 1
            continue
        w = bisect.bisect_right(starts, i) - 1
        if any(windows[x][0] <= i < windows[x][1] for x in range(max(0, w - 3), w + 1)):
            explained += 1
        else:
            unexplained += 1
            if unexplained_at is not None:
                unexplained_at.append(i)
    return explained, unexplained


def describe_loss(
    i: int, sent: array.array[int], where: list[int], beat_t: list[float],
    gaps: list[tuple[float, float]], faults: list[dict[str, Any]],
) -> str:  # fmt: skip
    """Where sent beat ``i`` went missing: the stored beats around it (session time), the
    nearest recorded gap and the strap's faults nearby (soak time) — for the report."""
    k = bisect.bisect_left(where, i)
    before = beat_t[k - 1] if k > 0 else None
    after = beat_t[k] if k < len(beat_t) else None
    t = before if before is not None else (after or 0.0)
    near = min(gaps, key=lambda g: min(abs(g[0] - t), abs(g[1] - t)), default=None)
    fl = [f"{f['kind']}@{f['sim_s']}" for f in faults]
    return (f"sent beat {i} (RR {sent[i] * 1000 / 1024:.0f} ms) between stored beats at "
            f"{before} and {after} s; nearest gap {near}; this strap's faults {fl}")  # fmt: skip


def kill_straddled(rec: Received, missing: set[int], kills: list[tuple[float, float]]) -> int:
    """How many of one device's ``missing`` beat messages straddle a broker kill: the
    subscriber got the message before it before the restart and the one after it after the
    kill (a QoS 0 message the link had written when the broker died)."""
    seen: dict[int, float] = {}
    for s, t in zip(rec.seq, rec.t, strict=True):
        seen.setdefault(s, t)
    order = sorted(seen)
    explained = 0
    for s in missing:
        k = bisect.bisect_left(order, s)
        if k == 0 or k == len(order):
            continue
        prev_t, next_t = seen[order[k - 1]], seen[order[k]]
        if any(prev_t <= restart and next_t >= kill for kill, restart in kills):
            explained += 1
    return explained


def reconcile(
    work: Path, worker: dict[str, Any], sub: Subscriber, kills: list[tuple[float, float]]
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    link = worker["link"]
    if link["queued_at_exit"]:
        problems.append(f"{link['queued_at_exit']} messages still queued when the link closed")
    if worker["writer_unflushed_beats"] or worker["writer_failing_at_exit"]:
        problems.append("the store writer still held beats at exit")
    with SessionStore.open(work / "soak.db") as store:
        summaries = {s.id: s for s in store.list_sessions()}
        for st in worker["straps"]:
            dev, i = st["device"], st["index"]
            r: dict[str, Any] = {"strap": i, "device": dev}
            sent = array.array("H")
            sent.frombytes((work / f"sent-{i}.u16").read_bytes())
            r["sent"] = st["beats_sent"]
            r["unsent"] = st["beats_unsent"]
            r["received"] = st["received"]
            sids = st["sessions"]
            stored_rr: list[int] = []
            beat_t: list[float] = []
            gap_spans: list[tuple[float, float]] = []
            exported = 0
            gaps = 0
            for sid in sids:
                beats = store.beats(sid)
                if [b.seq for b in beats] != list(range(len(beats))):
                    problems.append(f"strap {i}: stored seq of {sid} not 0..n-1")
                stored_rr += [b.rr_raw or 0 for b in beats]
                beat_t += [b.beat_t_s for b in beats]
                session_gaps = store.gaps(sid)
                gap_spans += [(g.start_t_s, g.end_t_s) for g in session_gaps]
                gaps += sum(1 for g in session_gaps if g.reason == "reconnect")
                if summaries[sid].state != SessionState.STOPPED:
                    problems.append(f"strap {i}: session {sid} is {summaries[sid].state}")
                path = export_session(store, sid, "csv", work / "export")
                with path.open(newline="") as fh:
                    ex = [
                        int(row["rr_raw"]) for row in csv.DictReader(fh) if row["record"] == "beat"
                    ]
                if ex != [b.rr_raw for b in beats]:
                    problems.append(f"strap {i}: export of {sid} differs from the store")
                exported += len(ex)
                path.unlink()
            r["stored"] = len(stored_rr)
            r["exported"] = exported
            n_faults = sum(1 for f in worker["faults"] if f.get("strap") == i and "processed" in f)
            unexplained_at: list[int] = []
            try:
                if len(sids) != 1:
                    raise ValueError("beat times of several sessions cannot be aligned")
                air_ok, air_bad = lost_in_air(sent, beat_t, stored_rr, gap_spans,
                                              st["stop_point"][0], unexplained_at)  # fmt: skip
            except ValueError as exc:
                problems.append(f"strap {i}: {exc}")
                air_ok, air_bad = 0, len(sent) - len(stored_rr)
            r["lost_air"] = air_ok + air_bad
            dropped = dict(st["dropped_beat_msgs"])  # seq → number of RR
            r["enqueued"] = st["beats_enqueued"]
            r["dropped_q"] = sum(dropped.values())
            rec = sub.by_dev.get(dev, Received())
            got: dict[int, int] = {}
            dups = 0
            for s, nrr in zip(rec.seq, rec.n_rr, strict=True):
                dups += s in got
                got.setdefault(s, nrr)
            all_seqs = set(range(st["beat_msgs_enqueued"]))
            # Counted as dropped, yet delivered: the queue dropped a message the pump had
            # already handed to the client (MqttLink.dropped over-counts the loss).
            dropped_got = dropped.keys() & got.keys()
            missing = all_seqs - got.keys() - dropped.keys()
            kill_ok = kill_straddled(rec, missing, kills)
            r["dropped_deliv"] = sum(dropped[s] for s in dropped_got)
            r["published"] = r["enqueued"] - r["dropped_q"]
            r["subscribed"] = sum(got.values())
            r["lost_kill"] = r["published"] + r["dropped_deliv"] - r["subscribed"]
            r["lost_kill_msgs"] = len(missing)
            r["dup_msgs"] = dups
            r["reconnects"] = st["reconnects"]
            r["faults"] = n_faults
            rows.append(r)

            # -- the checks ------------------------------------------------------------------
            def bad(msg: str, i: int = i) -> None:
                problems.append(f"strap {i}: {msg}")

            if len(sids) != 1:
                bad(f"{len(sids)} sessions (one session throughout expected)")
            if len(sent) != st["beats_sent"]:
                bad(f"sent log holds {len(sent)} beats, the strap counted {st['beats_sent']}")
            if air_bad:
                bad(f"{air_bad} beats sent but not received outside any gap the daemon recorded")
                strap_faults = [f for f in worker["faults"] if f.get("strap") == i]
                where = align(sent, stored_rr)
                for at in unexplained_at[:5]:
                    bad(describe_loss(at, sent, where, beat_t, gap_spans, strap_faults))
            if r["sent"] != r["received"] + r["lost_air"]:
                bad(f"sent {r['sent']} != received {r['received']} + lost {r['lost_air']}")
            if not r["received"] == r["stored"] == r["exported"] == r["enqueued"]:
                bad("received / stored / exported / enqueued disagree")
            if st["overflowed"] or st["malformed"]:
                bad(f"{st['overflowed']} notifications overflowed, {st['malformed']} malformed")
            if stray := sorted(got.keys() - all_seqs):
                bad(f"subscriber got beat messages never enqueued: seqs {stray[:5]}")
            if dropped_got:
                bad(f"{len(dropped_got)} beat messages counted as dropped by the live queue "
                    f"were delivered (seqs {sorted(dropped_got)[:5]}): MqttLink.dropped "
                    "over-counts")  # fmt: skip
            if kill_ok != len(missing):
                bad(f"{len(missing) - kill_ok} beat messages missing at the subscriber, neither "
                    f"dropped nor at a broker kill: seqs {sorted(missing)[:10]}")  # fmt: skip
            if gaps != st["reconnects"]:
                bad(f"{gaps} reconnect gaps stored for {st['reconnects']} reconnects")
            if r["faults"] != st["reconnects"]:
                bad(f"{r['faults']} faults injected but {st['reconnects']} reconnects")
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k not in ("strap", "device")}
    return rows, total, problems


# -- the run --------------------------------------------------------------------------------------


def rss_slope(samples: list[tuple[float, float]], skip_h: float) -> float | None:
    """Least-squares MB per simulated hour over the samples after ``skip_h``."""
    pts = [(h, mb) for h, mb in samples if h >= skip_h]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx = sum(h for h, _ in pts) / n
    my = sum(mb for _, mb in pts) / n
    sxx = sum((h - mx) ** 2 for h, _ in pts)
    return sum((h - mx) * (mb - my) for h, mb in pts) / sxx if sxx else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    override = {}
    for item in filter(None, (args.faults or "").split(",")):
        k, _, v = item.partition("=")
        if k not in KINDS:
            raise SystemExit(f"unknown fault kind {k!r} (known: {', '.join(KINDS)})")
        override[k] = int(v)
    counts = fault_counts(args.hours, args.straps, override)
    faults = schedule(counts, args.hours, args.straps, args.speed, args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="settle-soak-")
    work = Path(args.keep) if args.keep else Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    (work / "export").mkdir(exist_ok=True)
    broker = Broker(work)
    broker.start()
    sub = Subscriber(broker.port)
    sub.start()
    time.sleep(1.5)  # an autosave holds the subscriber's session before anything is published
    plan = {"straps": args.straps, "speed": args.speed, "hours": args.hours, "seed": args.seed,
            "port": broker.port, "db": str(work / "soak.db"), "out": str(work),
            "queue_size": args.queue_size, "faults": faults}  # fmt: skip
    (work / "plan.json").write_text(json.dumps(plan, indent=1))
    wall0 = time.monotonic()
    err = (work / "worker.err").open("w")
    proc = subprocess.Popen([PY, str(HERE / "_soak_worker.py"), str(work / "plan.json")],
                            stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)  # fmt: skip
    kills: list[tuple[float, float]] = []
    broker_log: list[dict[str, Any]] = []
    rss: list[tuple[float, float]] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "streaming":
            raise SystemExit(f"worker did not start: see {work / 'worker.err'}")
        t0 = float(line[1])
        ramp_s = time.monotonic() - wall0
        ps = psutil.Process(proc.pid)
        cpu0 = ps.cpu_times()
        print(f"{args.straps} straps streaming after {ramp_s:.0f} s; {args.hours:g} simulated h "
              f"at {args.speed:g}x ≈ {args.hours * 3600 / args.speed / 60:.1f} min",
              file=sys.stderr, flush=True)  # fmt: skip
        todo = [f for f in faults if f["kind"] == "broker"]
        next_sample = 0.0
        sample_every = max(1.0, 300.0 / args.speed)  # every 5 simulated minutes
        while proc.poll() is None:
            now = time.time()
            sim_s = (now - t0) * args.speed
            if now >= next_sample:
                next_sample = now + sample_every
                try:
                    rss.append((sim_s / 3600, ps.memory_info().rss / 2**20))
                    cpu1 = ps.cpu_times()
                except psutil.NoSuchProcess:
                    break
                if args.progress and len(rss) % 12 == 0:
                    print(f"  sim {sim_s / 3600:5.2f} h  RSS {rss[-1][1]:.0f} MB", file=sys.stderr,
                          flush=True)  # fmt: skip
            if todo and sim_s >= todo[0]["t_s"]:
                f = todo.pop(0)
                kill_t = time.time()
                broker.kill()
                time.sleep(max(0.0, kill_t + f["duration_s"] / args.speed - time.time()))
                broker.start()
                restart_t = time.time()
                kills.append((kill_t, restart_t))
                down_sim_s = round((restart_t - kill_t) * args.speed, 1)
                broker_log.append({**f, "sim_s": round((kill_t - t0) * args.speed, 1),
                                   "down_sim_s": down_sim_s})  # fmt: skip
                continue
            time.sleep(0.05)
        code = proc.wait(args.hours * 3600 / args.speed + 600)
        wall_s = time.monotonic() - wall0
        if code != 0:
            raise SystemExit(f"worker exited with {code}: see {work / 'worker.err'}")
        # Let the subscriber take the last messages (the link drained its queue at close).
        while time.time() - sub.last_t < 2.0:
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sub.stop()
        broker.stop()
        err.close()
    parent = {
        "command": " ".join([Path(PY).name, *sys.argv]),
        "machine": machine(),
        "when": time.strftime("%F %T"),
        "hours": args.hours, "straps": args.straps, "speed": args.speed, "seed": args.seed,
        "queue_size": args.queue_size, "ramp_s": round(ramp_s, 1), "wall_s": round(wall_s, 1),
        "worker_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 1),
        "faults_planned": counts, "kills": kills, "broker_log": broker_log, "rss": rss,
        "subscriber_connects": sub.connects, "load_avg": os.getloadavg(),
    }  # fmt: skip
    (work / "parent.json").write_text(json.dumps(parent, indent=1))
    sub.save(work / "subscriber")
    result = finish(work)
    tmp.cleanup()
    return result


def finish(work: Path) -> dict[str, Any]:
    """Reconcile a finished run kept in ``work`` (also: ``soak.py --reconcile DIR``)."""
    parent = json.loads((work / "parent.json").read_text())
    worker = json.loads((work / "worker.json").read_text())
    sub = Subscriber.load(work / "subscriber")
    kills = [(float(a), float(b)) for a, b in parent["kills"]]
    broker_log = parent["broker_log"]
    rss = [(float(h), float(mb)) for h, mb in parent["rss"]]
    rows, total, problems = reconcile(work, worker, sub, kills)
    strap_faults = [f for f in worker["faults"] if f["kind"] in STRAP_KINDS]
    store_faults = [f for f in worker["faults"] if f["kind"] in STORE_KINDS]
    injected = Counter(f["kind"] for f in strap_faults if "skipped" not in f)
    injected.update(f["kind"] for f in store_faults)
    injected.update(f["kind"] for f in broker_log)
    skipped = Counter(f["kind"] for f in strap_faults if "skipped" in f)
    for f in store_faults:
        if not f.get("failing_seen"):
            problems.append(f"store fault at {f['sim_s']} s never made the writer fail")
    slope = rss_slope(rss, skip_h=min(1.0, parent["hours"] / 4))
    return {
        **{k: v for k, v in parent.items() if k not in ("kills", "broker_log", "rss")},
        "daemon_stop_s": worker["daemon_stop_s"],
        "faults_injected": dict(injected), "faults_skipped": dict(skipped),
        "total": total, "link": worker["link"], "log_warnings": worker["log_warnings"],
        "rss_mb_first": rss[0][1] if rss else None, "rss_mb_last": rss[-1][1] if rss else None,
        "rss_mb_max": max(mb for _, mb in rss) if rss else None,
        "rss_slope_mb_per_sim_h": None if slope is None else round(slope, 3),
        "rss_samples": [(round(h, 3), round(mb, 1)) for h, mb in rss],
        "problems": problems, "ok": not problems,
        "per_strap": rows,
        "fault_log": sorted(worker["faults"] + broker_log, key=lambda f: f["t_s"]),
    }  # fmt: skip


def report(res: dict[str, Any]) -> None:
    cols = ["sent", "unsent", "received", "lost_air", "stored", "exported", "enqueued",
            "dropped_q", "dropped_deliv", "published", "lost_kill", "subscribed", "dup_msgs",
            "reconnects"]  # fmt: skip
    rows = [[str(r["strap"]), *(str(r[c]) for c in cols)] for r in res["per_strap"]]
    rows.append(["total", *(str(res["total"][c]) for c in cols)])
    print_table(["strap", *cols], rows)
    t = res["total"]
    print(f"\nbeats: sent {t['sent']} = received {t['received']} + lost in the air at faults "
          f"{t['lost_air']}; received = stored = exported = enqueued; published {t['published']} "
          f"= enqueued − {t['dropped_q']} dropped by the bounded queue; subscriber "
          f"{t['subscribed']} = published + {t['dropped_deliv']} counted dropped but delivered "
          f"− {t['lost_kill']} lost in flight at broker kills")  # fmt: skip
    print(f"faults injected: {res['faults_injected']}  skipped (strap not streaming): "
          f"{res['faults_skipped']}")  # fmt: skip
    print(f"link: {res['link']['connects']} connects, {res['link']['published']} published, "
          f"{res['link']['dropped']} dropped {res['link']['dropped_by_leaf']}")  # fmt: skip
    print(f"RSS {res['rss_mb_first']:.0f} → {res['rss_mb_last']:.0f} MB (max "
          f"{res['rss_mb_max']:.0f}), slope {res['rss_slope_mb_per_sim_h']} MB per simulated h; "
          f"wall {res['wall_s']:.0f} s, daemon CPU {res['worker_cpu_s']:.0f} s")  # fmt: skip
    for p in res["problems"]:
        print(f"PROBLEM: {p}")
    print("OK: every count agrees" if res["ok"] else "FAILED")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=12.0, help="simulated hours")
    ap.add_argument("--straps", type=int, default=50)
    ap.add_argument("--speed", type=float, default=10.0, help="simulated s per wall s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--queue-size", type=int, default=2000, help="[mqtt] queue_size")
    ap.add_argument("--faults", help="override counts, e.g. drop=5,silent=5,absent=1,broker=2")
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    ap.add_argument("--progress", action="store_true", help="RSS every hour on stderr")
    ap.add_argument("--reconcile", type=Path, help="only reconcile a run kept with --keep")
    args = ap.parse_args()
    res = finish(args.reconcile) if args.reconcile else run(args)
    report(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}")
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
