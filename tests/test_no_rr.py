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


def _pipeline(store: SessionStore, output: DeviceOutput) -> StrapPipeline:
    """A strap's pipeline with the default settings, its session started at ``T0``."""
    return StrapPipeline(
        output=output,
        session_id="s1",
        started_ms=int(T0 * 1000),
        settings=Settings(),
        writer=BeatWriter(store),
        clock=lambda: T0,
        started_mono_s=0.0,
    )


def _run(
    tmp_path: Path,
    rr_from: list[tuple[float, bool]],
    until_s: float,
    *,
    hr: int = 72,
    reconnect_at: float | None = None,
) -> list[dict]:
    """A pipeline fed one notification a second (heart rate ``hr``) up to ``until_s``; from
    each ``(t, with_rr)`` on, the notifications carry an 833 ms interval or none; a reconnect
    (its window restarted) at ``reconnect_at``. Returns the events it published."""
    sent: list[dict] = []

    def tap(topic: str, payload: bytes | str, _retain: bool) -> None:
        if topic.endswith("/event"):
            sent.append(json.loads(payload))

    with SessionStore.open(tmp_path / "s.db") as store:
        pl = _pipeline(store, DeviceOutput(None, "settle", "dev_1", tap=tap))
        now = 0.0
        while now < until_s:
            now += 1.0
            if reconnect_at is not None and now - 1.0 < reconnect_at <= now:
                pl.restart_window()
            with_rr = [w for t, w in rr_from if t <= now][-1]
            m = HeartRateMeasurement(hr_bpm=hr, rr_raw=(853,) if with_rr else ())
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


def test_a_reconnect_neither_hides_nor_shortens_the_stretch_without_intervals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Warned at 31 s, a reconnect at 50 s, intervals again at 80 s: the INFO line says so,
    with the whole stretch (it said nothing, or counted from the reconnect)."""
    caplog.set_level(logging.INFO, logger="settle.pipeline")
    events = _run(tmp_path, [(0.0, False), (80.0, True)], until_s=100.0, reconnect_at=50.0)
    assert len([e for e in events if e["kind"] == "no-rr"]) == 1
    (back,) = [r.getMessage() for r in caplog.records if "intervals again" in r.getMessage()]
    assert back.endswith("after 79 s without")


def test_a_strap_without_contact_is_not_said_to_send_a_heart_rate(tmp_path: Path) -> None:
    (said,) = [e for e in _run(tmp_path, [(0.0, False)], 40.0, hr=0) if e["kind"] == "no-rr"]
    assert said["text"].startswith("the strap sent no beat-to-beat intervals for 30 s")
    assert "(no skin contact)" in said["text"]


def test_an_absurd_interval_restarts_the_windows_after_the_real_beat_sent_with_it(
    tmp_path: Path,
) -> None:
    """[real beat, 0xFFFF, real beat] in one notification: the windows restarted before the
    real beat before the absurd one was analysed (the gap went first), where `settle
    analyze` of the export restarts them after it. Now in beat order, as offline."""
    calls: list[tuple[str, float]] = []
    with SessionStore.open(tmp_path / "s.db") as store:
        pl = _pipeline(store, DeviceOutput(None, "settle", "dev_1"))
        push, gap = pl.analyzer.push_beat, pl.analyzer.gap

        def spy_push(t: float, rr: float, contact: bool | None = None) -> object:
            calls.append(("beat", t))
            return push(t, rr, contact)

        def spy_gap(t: float) -> object:
            calls.append(("gap", t))
            return gap(t)

        pl.analyzer.push_beat = spy_push  # type: ignore[method-assign]
        pl.analyzer.gap = spy_gap  # type: ignore[method-assign]
        for k in range(1, 41):
            raw = (1024,) if k != 30 else (1024, 0xFFFF, 1024)
            m = HeartRateMeasurement(hr_bpm=60, rr_raw=raw)
            pl.on_notification(Notification(round((T0 + k) * 1000), float(k), m))
    at = [i for i, c in enumerate(calls) if c[0] == "gap"]
    assert at, calls
    before = calls[at[0] - 1]
    assert before[0] == "beat" and before[1] == pytest.approx(30.0 - 1.0, abs=0.05), calls[-12:]
    assert all(t >= calls[at[0]][1] for kind, t in calls[at[0] + 1 :] if kind == "beat")
