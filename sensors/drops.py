"""Counting what a strap's stream dropped, and saying so in the log without flooding it.

A strap that sends bad bytes sends them again and again (a failing firmware, a marginal
link): one WARNING line per packet would bury everything else, and one DEBUG line says
nothing at the default level. :class:`DropCounter` says it once at once, then at most once
per interval with the count since, and :meth:`DropCounter.flush` reports the rest when a
stream ends. The dropped bytes never go into these lines (they may be health data).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["DropCounter"]


class DropCounter:
    """Counts one sensor's dropped ``what`` (singular noun, e.g. ``"raw ECG frame"``).

    The first drop is logged on ``logger`` as one WARNING line at once, later ones at most
    every ``warn_every_s`` (default 60 s, on ``clock``, monotonic s) with the number dropped
    since the previous warning and the latest reason; :meth:`flush` reports the rest (call
    it when the stream ends). ``consequence`` ends the line (e.g. ``"heart rate is
    unaffected"``); ``verb`` says what happened to them (default ``"dropped"``). Share one
    instance across a sensor's connections so that reconnects do not multiply the warnings.
    """

    def __init__(
        self,
        sensor_id: str,
        what: str,
        consequence: str = "",
        *,
        verb: str = "dropped",
        logger: logging.Logger | None = None,
        warn_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sensor_id = sensor_id
        """Named at the start of every line; may be changed (e.g. once a strap is known)."""
        self.what = what
        self.consequence = consequence
        self.verb = verb
        self.warn_every_s = warn_every_s
        self._log = logger or logging.getLogger(__name__)
        self._clock = clock
        self.total = 0
        """Dropped so far."""
        self.unreported = 0
        """Dropped since the last warning."""
        self._warned_s: float | None = None
        self._latest = ""

    def add(self, reason: str) -> None:
        """One dropped, for ``reason`` (no payload bytes in it)."""
        self.total += 1
        self.unreported += 1
        self._latest = reason
        now = self._clock()
        if self._warned_s is None or now - self._warned_s >= self.warn_every_s:
            self._warn(now)

    def flush(self) -> None:
        """Warn now about those dropped since the last warning, if any."""
        if self.unreported:
            self._warn(self._clock())

    def _warn(self, now: float) -> None:
        self._log.warning(
            "%s: %d %s%s %s since the last warning, %d in all (latest: %s)%s",
            self.sensor_id,
            self.unreported,
            self.what,
            "" if self.unreported == 1 else "s",
            self.verb,
            self.total,
            self._latest,
            f"; {self.consequence}" if self.consequence else "",
        )
        self._warned_s = now
        self.unreported = 0
