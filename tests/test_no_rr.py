"""A strap that sends a heart rate but no beat-to-beat intervals (an optical armband, some
firmware, a strap not worn that still reports a heart rate) records nothing: the session
says so once, instead of seeming to run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from feedback.payloads import EVENT_KINDS
from sensors.hrs import HeartRateMeasurement
from sensors.strap import Notification
from sessions.store import SessionStore
from settle.config import Settings
from settle.pipeline import NO_RR_WARN_S, BeatWriter, DeviceOutput, StrapPipeline

T0 = 1_700_000_000.0


def _run(tmp_path: Path, rr_from: list[tuple[float, bool]], until_s: float) -> list[dict]:
    """A pipeline fed one notification a second (HR 72) up to ``until_s``; from each
    ``(t, with_rr)`` on, the notifications carry an 833 ms interval or none. Returns the
    events it published."""
    sent: list[dict] = []

    def tap(topic: str, payload: bytes | str, _retain: bool) -> None:
        if topic.endswith("/event"):
            sent.append(json.loads(payload))

    with SessionStore.open(tmp_path / "s.db") as store:
        pl = StrapPipeline(
            output=DeviceOutput(None, "settle", "dev_1", tap=tap),
            session_id="s1",
            started_ms=int(T0 * 1000),
            settings=Settings(),
            writer=BeatWriter(store),
            clock=lambda: T0,
            started_mono_s=0.0,
        )
        now = 0.0
        while now < until_s:
            now += 1.0
            with_rr = [w for t, w in rr_from if t <= now][-1]
            m = HeartRateMeasurement(hr_bpm=72, rr_raw=(853,) if with_rr else ())
            pl.on_notification(Notification(round((T0 + now) * 1000), now, m))
    return sent


def test_heart_rate_without_intervals_is_said_once_and_again_after_they_came_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="settle.pipeline")
    # No intervals for 100 s, then 60 s with, then 40 s without again.
    events = _run(tmp_path, [(0.0, False), (100.0, True), (160.0, False)], until_s=200.0)
    said = [e for e in events if e["kind"] == "no-rr"]
    assert "no-rr" in EVENT_KINDS
    assert [e["t_s"] for e in said] == pytest.approx([1.0 + NO_RR_WARN_S, 160.0 + NO_RR_WARN_S])
    assert said[0]["text"].startswith("the strap sent heart rate but no beat-to-beat intervals")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and "no HRV is computed" in warned[0]
    back = [r.getMessage() for r in caplog.records if "intervals again" in r.getMessage()]
    assert len(back) == 1


def test_a_strap_sending_intervals_is_never_told_it_sends_none(tmp_path: Path) -> None:
    events = _run(tmp_path, [(0.0, True)], until_s=120.0)
    assert not [e for e in events if e["kind"] == "no-rr"]
