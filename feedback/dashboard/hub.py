"""The dashboard's live feed: every message the daemon publishes, fanned out to Server-Sent
Events subscribers without going through a broker (so it works with MQTT off or down).

:meth:`Hub.publish` is called synchronously from the daemon's tasks and never blocks: each
subscriber has a bounded queue that drops its *oldest* message when full and counts the loss
(STYLE.md principle 10). A page that opens mid-session gets the retained state and the last
minutes of beats and indices of every strap (or of the one strap it names), and its recent
events, first, so its charts and marker list are not empty.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import dataclasses
import heapq
import itertools
import json
import operator
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Hub", "Message", "Subscription"]

SSE_BATCH = 512
"""Most queued messages written to a page in one chunk (see :meth:`Subscription.take`)."""
BACKLOG = 1200
"""Recent stream messages replayed to a new page, per strap (about 15 min of beats at
1 message/s, with the indices every 5 s)."""
EVENTS_KEPT = 200
"""Recent events (markers, session start, baseline, catching up…) replayed, per strap: kept
apart from the beats, which would otherwise push them out within minutes."""
RESULTS_KEPT = 64

_NUMBER = operator.itemgetter(0)
"""A backlog entry's publication number (entries are ``(number, message)``)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One published message: ``topic`` below the base (``<dev>/beat``), text payload."""

    topic: str
    payload: str
    retain: bool = False
    event_id: str = ""
    """``<hub epoch>.<publication number>``: sent as the event's ``id``, so a page that
    reconnects names the last message it got (``Last-Event-ID``) and gets only what followed."""

    def sse(self) -> bytes:
        """As one Server-Sent Event: ``id: …`` and ``data: {"topic": …, "payload": …}``."""
        body = json.dumps({"topic": self.topic, "payload": self.payload}, separators=(",", ":"))
        head = f"id: {self.event_id}\n" if self.event_id else ""
        return f"{head}data: {body}\n\n".encode()


@dataclass(eq=False)  # compared (and hashed) by identity: one per client
class Subscription:
    """One SSE client's bounded queue."""

    size: int
    queue: collections.deque[Message] = field(default_factory=collections.deque)
    dropped: int = 0
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, m: Message) -> None:
        if len(self.queue) >= self.size:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(m)
        self._ready.set()

    async def get(self, timeout_s: float) -> Message | None:
        """The next message, or None after ``timeout_s`` without one (time for a heartbeat)."""
        if not self.queue:
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self.queue.popleft()

    def take(self, limit: int = SSE_BATCH) -> list[Message]:
        """Up to ``limit`` messages already queued, oldest first, without waiting.

        The page's writer sends them with the one it waited for as one chunk: under load (many
        straps) that is one write and one wake-up per batch instead of per message, and with
        little traffic the batch is just that one message, so nothing waits for company."""
        q = self.queue
        n = min(limit, len(q))
        return [q.popleft() for _ in range(n)]


class Hub:
    """Fan-out of the daemon's messages to dashboard pages."""

    def __init__(self, topic_base: str, *, queue_size: int = 2000) -> None:
        self.prefix = topic_base.rstrip("/") + "/"
        self.queue_size = queue_size
        self.retained: dict[str, Message] = {}
        self._backlog: dict[tuple[str, bool], collections.deque[tuple[int, Message]]] = {}
        """Recent stream messages by (strap, is an event), with their arrival order."""
        self._n = 0
        self.epoch = secrets.token_hex(4)
        """Names this hub in event ids: a page that reconnects to a restarted daemon (whose
        numbers start again) gets the whole backlog."""
        self.results: collections.OrderedDict[str, str] = collections.OrderedDict()
        """Recent command results by command id (the HTTP command route reads its own)."""
        self._subs: set[Subscription] = set()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        """Take one message (called synchronously by the daemon; never blocks)."""
        if not topic.startswith(self.prefix):
            return
        leaf = topic[len(self.prefix) :]
        text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
        result = leaf.endswith("/result") and "/cmd/" in leaf
        if result:
            self._keep_result(text)
        self._n += 1
        m = Message(leaf, text, retain, f"{self.epoch}.{self._n}")
        if result:
            # Live only, never in a backlog: a command result is its sender's answer (kept in
            # :attr:`results`), and a backlog per first topic level let commands to made-up
            # devices grow the daemon by 465 MB in 50 000 messages, all replayed to new pages.
            pass
        elif retain:
            self.retained[leaf] = m
        elif not leaf.endswith("/ecg_beat"):
            event = leaf.endswith("/event")
            key = (leaf.split("/", 1)[0], event)
            kept = self._backlog.get(key)
            if kept is None:
                kept = self._backlog[key] = collections.deque(
                    maxlen=EVENTS_KEPT if event else BACKLOG
                )
            kept.append((self._n, m))
        for sub in self._subs:
            sub.put(m)

    def _keep_result(self, text: str) -> None:
        try:
            cmd_id = json.loads(text).get("id")
        except (ValueError, AttributeError):
            return
        if isinstance(cmd_id, str):
            self.results[cmd_id] = text
            while len(self.results) > RESULTS_KEPT:
                self.results.popitem(last=False)

    def snapshot(
        self, last_event_id: str | None = None, device: str | None = None
    ) -> list[Message]:
        """:meth:`replay` as a list."""
        return list(self.replay(last_event_id, device))

    def replay(
        self, last_event_id: str | None = None, device: str | None = None
    ) -> Iterator[Message]:
        """What a new page needs first: retained state, then the recent streams of every
        strap — or of ``device`` only — (each strap's own last :data:`BACKLOG` messages and
        :data:`EVENTS_KEPT` events), in the order they were published.

        A page that reconnects sends the id of the last message it got (``Last-Event-ID``):
        it gets the retained state (idempotent) and only the stream messages published
        after that one — the whole backlog again stored every marker, beat and index twice
        on the page. An id of another hub (the daemon restarted) or none: everything.

        The backlogs are copied now (so the caller, which subscribed first, gets nothing
        twice and can publish between its reads) and merged as the caller reads: one sort
        of every strap's backlog at once (100 straps: 120 000 messages) held the event loop
        ~230 ms."""
        after = self._after(last_event_id)
        # The retained state goes without its id: its old number would take the page's place
        # back, and the next reconnect would replay what the page already has.
        state = [dataclasses.replace(m, event_id="") for m in self.retained.values()]
        runs = []
        for (dev, _event), kept in self._backlog.items():
            if device is not None and dev != device:
                continue
            run = list(kept)  # a copy: publish() appends to (and drops from) the deque
            start = bisect.bisect_right(run, after, key=_NUMBER)
            runs.append(itertools.islice(run, start, None))
        recent = heapq.merge(*runs)  # by number: each is unique, no Message is compared
        return itertools.chain(state, (m for _, m in recent))

    def _after(self, last_event_id: str | None) -> int:
        """The publication number ``last_event_id`` names, if it is this hub's; else 0."""
        if last_event_id:
            epoch, _, n = last_event_id.strip().partition(".")
            # ASCII digits that fit a counter: "²" passes isdigit() and 5 000 digits pass
            # int()'s limit, and either ended the stream right after its head.
            if epoch == self.epoch and n.isascii() and n.isdigit() and len(n) <= 18:
                return int(n)
        return 0

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """``with hub.subscribe() as sub:`` — unsubscribed on exit."""
        sub = Subscription(self.queue_size)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)
