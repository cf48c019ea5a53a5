"""The host clock every arrival time is measured on.

Beat and ECG arrival times, silences and warm-ups are differences of one clock that must not
step (NTP, a user setting the time) and must not stop while the machine is suspended: a
laptop closed for 10 minutes mid-session is a 10-minute gap in the session, not 10 minutes
cut out of it. ``time.monotonic()`` does not step but stops during suspend on Linux;
``CLOCK_BOOTTIME`` (Linux) counts suspended time too. Elsewhere (macOS, Windows) the
monotonic clock already counts suspended time, and :func:`elapsed_s` is
``time.monotonic()``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

__all__ = ["elapsed_s"]

_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def _usable_boottime() -> bool:
    if _BOOTTIME is None:
        return False
    try:
        time.clock_gettime(_BOOTTIME)
    except OSError:  # a kernel or sandbox without it
        return False
    return True


elapsed_s: Callable[[], float] = (
    functools.partial(time.clock_gettime, _BOOTTIME)
    if _BOOTTIME is not None and _usable_boottime()
    else time.monotonic
)
"""Seconds on a clock that never steps and counts time spent suspended (origin arbitrary)."""
