from __future__ import annotations

import random

import pytest

from settle.backoff import backoff_delay_s


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff_delay_s(a, base_s=0.5, cap_s=30, rng=rng) for a in range(20)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(15 <= d <= 30 for d in delays[8:])  # capped
    assert len({round(d, 6) for d in delays[8:]}) > 5  # jittered: reconnects spread out
    assert backoff_delay_s(10**6, cap_s=2, rng=rng) <= 2


def test_backoff_rejects_negative_attempt() -> None:
    with pytest.raises(ValueError):
        backoff_delay_s(-1)
