"""The host clock every arrival time is measured on.

Beat and ECG arrival times, silences and warm-ups are differences of one clock that must not
step (NTP, a user setting the time) and must not stop while the machine is suspended: a
laptop closed for 10 minutes mid-session is a 10-minute gap in the session, not 10 minutes
cut out of it. ``time.monotonic()`` does not step, but on Linux and macOS it stops during a
suspend. :func:`elapsed_s` is ``CLOCK_BOOTTIME`` on Linux and ``CLOCK_MONOTONIC`` on macOS
(each counts suspended time there); elsewhere ``time.monotonic()``, and
:data:`COUNTS_SUSPEND` is False: the daemon then cannot tell a suspend from a step of the
wall clock, and does not follow such steps.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable

__all__ = ["COUNTS_SUSPEND", "elapsed_s"]


def _clock_id() -> int | None:
    """The clock_gettime id that counts suspended time on this platform, if it works."""
    name = {"linux": "CLOCK_BOOTTIME", "darwin": "CLOCK_MONOTONIC"}.get(sys.platform)
    clk: int | None = getattr(time, name, None) if name else None
    if clk is None:
        return None
    try:
        time.clock_gettime(clk)
    except OSError:  # a kernel or sandbox without it
        return None
    return clk


_CLOCK = _clock_id()

COUNTS_SUSPEND: bool = _CLOCK is not None
"""Whether :func:`elapsed_s` goes on counting while the machine is suspended."""

elapsed_s: Callable[[], float] = (
    functools.partial(time.clock_gettime, _CLOCK) if _CLOCK is not None else time.monotonic
)
"""Seconds on a clock that never steps (origin arbitrary); it counts time spent suspended
where :data:`COUNTS_SUSPEND` says so."""
