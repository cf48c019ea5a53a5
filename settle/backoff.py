"""Capped, jittered exponential backoff — a pure function, so tests drive time themselves.

Used by every reconnect loop (broker, strap). ``attempt`` counts failures since the last
success, from 0. "Full jitter" (AWS Architecture Blog, 2015) spreads reconnecting clients
so that a restarted broker is not hit by all of them in the same instant.
"""

from __future__ import annotations

import random


def backoff_delay_s(
    attempt: int,
    *,
    base_s: float = 0.5,
    cap_s: float = 30.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based).

    Uniform in ``[d/2, d]`` with ``d = min(cap_s, base_s * 2**attempt)``: never zero (no hot
    loop), never above ``cap_s``.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    d = min(cap_s, base_s * 2.0 ** min(attempt, 62))
    r = (rng or random).random()
    return d / 2.0 + r * d / 2.0
