"""Reports of sessions at the edges: a rest period discarded or never stopped, a marker in a
gap or at the very end, a heart-rate drop, an empty session, user text with bidi controls.

Sessions come from the daemon's own ``LiveAnalyzer``, stored as the daemon stores them
(``settle/pipeline.py``, ``settle/daemon.py``); the assertions are on what a user reads or
sees: the page, the summary, the figure, trends."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
import time
import warnings
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pytest

from processing.live import BASELINE_MIN_SAMPLES, LiveAnalyzer
from sessions.report import (
    SessionOutcome,
    Verdict,
    analyse_session,
    duration_words,
    outcome,
    render_png,
    summary_text,
    write_report,
    write_trends_png,
)
from sessions.store import (
    BaselinePeriod,
    BeatClass,
    BeatRow,
    EcgBeatRow,
    GapRow,
    IndicesRow,
    Intention,
    IntentionTarget,
    MarkerRow,
    MarkerSource,
    SessionStore,
)
from tests.test_report_wording import _SETTLING_STATE as _STATE
from tests.test_report_wording import T0_MS


def _num(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


class Built:
    """A stored session and what the daemon's analyzer showed at its last step."""

    def __init__(self, sid: str, live: LiveAnalyzer, last: Any) -> None:
        self.sid, self.live, self.last = sid, live, last


def _build(
    store: SessionStore,
    rr_at: Callable[[float], float],
    duration_s: float,
    *,
    markers: Sequence[tuple[float, str, str]] = (),
    gaps: Sequence[tuple[float, float]] = (),
    rest: tuple[float, float | None] | None = None,
    rests: Sequence[tuple[float, float | None]] = (),
    edit: Callable[[dict[str, Any]], None] | None = None,
    finish: bool = True,
) -> Built:
    """Beats from ``rr_at(t)`` through a ``LiveAnalyzer``, an indices row every 5 s with the
    payload fields the daemon stores; ``gaps`` (start, end): no beats, the analyzer told of
    the gap and a gap row stored; ``rest`` (start, stop): a rest period marked live
    (baseline/start, baseline/stop at those times; stop None: never stopped), stored as the
    daemon stores it — nothing when never stopped, and none when the analyzer discarded it
    as too short (``settle/daemon.py`` ``_end_baseline``)."""
    sid = store.create_session("dev", T0_MS, "x", {}).id
    live = LiveAnalyzer()
    beats: list[BeatRow] = []
    rows: list[IndicesRow] = []
    t, next_i = 0.0, 5.0
    pending = sorted(markers)
    todo_rest: list[tuple[float, str]] = []
    started: list[float] = []
    for r0, r1 in [*([rest] if rest is not None else []), *rests]:
        todo_rest.append((r0, "start"))
        if r1 is not None:
            todo_rest.append((r1, "stop"))
    stored_rest: BaselinePeriod | None = None
    while t < duration_s:
        rr = rr_at(t)
        t += rr / 1000
        gap = next((g for g in gaps if g[0] <= t < g[1]), None)
        if gap is not None:
            live.gap(gap[0])
            t = gap[1]
            continue
        while pending and pending[0][0] <= t:
            live.marker(pending[0][0], pending[0][1])
            pending.pop(0)
        beats.append(BeatRow(len(beats), t, T0_MS + round(t * 1000), rr))
        live.push_beat(t, rr)
        while todo_rest and t >= todo_rest[0][0]:
            at, what = todo_rest.pop(0)
            if what == "start":
                live.start_baseline(at)
                started.append(at)
            else:
                live.stop_baseline(at, min_span_s=BASELINE_MIN_SAMPLES * 5.0)
                # As the daemon: the period kept, or none when it was discarded.
                kept = live.baseline_status == "complete"
                stored_rest = BaselinePeriod(started[-1], at) if kept else None
        while t >= next_i and next_i <= duration_s:
            snap = live.indices(next_i)
            payload: dict[str, Any] = {
                "v": 1, "t_s": next_i, "hr_bpm": _num(snap.td.hr_bpm),
                "ln_rmssd": _num(snap.td.ln_rmssd),
                "settling": _num(snap.score) if snap.usable else None,
                "settling_state": _STATE[snap.baseline],
                "components": {"z_hr": _num(snap.z_hr), "z_ln_rmssd": _num(snap.z_ln_rmssd),
                               "z_slow": _num(snap.z_slow)},
                "usable": snap.usable, "reason": snap.reason, "warming_up": snap.warming_up,
                "lf64_ms2": _num(snap.lf64_ms2), "catching_up_t_s": _num(snap.catching_up_t_s),
            }  # fmt: skip
            if edit is not None:
                edit(payload)
            rows.append(
                IndicesRow(next_i, T0_MS + round(next_i * 1000), json.dumps(payload),
                           hr_bpm=payload["hr_bpm"], ln_rmssd=payload["ln_rmssd"],
                           settling=payload["settling"])
            )  # fmt: skip
            last = snap
            next_i += 5.0
    store.add_beats(sid, beats)
    store.add_indices(sid, rows)
    for g0, g1 in gaps:
        store.add_gap(sid, GapRow(g0, g1, "disconnected"))
    store.add_markers(
        sid,
        [MarkerRow(m, T0_MS + round(m * 1000), k, x, MarkerSource.MQTT) for m, k, x in markers],
    )
    if stored_rest is not None:
        store.set_baseline(sid, stored_rest)
    if finish:
        store.finish_session(sid, T0_MS + round(duration_s * 1000))
    return Built(sid, live, last)


def _sinus(seed: int = 1, bpm: float = 75.0, sd: float = 15.0) -> Callable[[float], float]:
    rng = np.random.default_rng(seed)
    return lambda t: 60_000.0 / bpm + sd * rng.standard_normal()


def _summary(page: str) -> str:
    return page.split('<p class="summary" id="summary">')[1].split("</p>")[0]


def _figure(a: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The figure :func:`render_png` draws, kept open to read what it shows."""
    kept: list[Any] = []
    monkeypatch.setattr(plt, "close", kept.append)
    render_png(a, io.BytesIO())
    monkeypatch.undo()
    (fig,) = kept
    return fig


# --- the baseline the daemon used ------------------------------------------------------------


def test_markers_before_a_rest_period_marked_later_read_as_they_were_shown_live(
    store: SessionStore, tmp_path: Path
) -> None:
    """A rest period marked at 450–580 s (stored as the session's baseline): the daemon read
    the markers before it against the automatic baseline and kept them so. The report's "as
    shown live" columns read them against the stored period: a surge shown as +16.4 bpm,
    back in 17 s, read −12.5 and 102 s; HR up for good after a shame shown as +13.6 read
    −1.7. A marker after it is read against it, as live."""
    rng = np.random.default_rng(5)

    def rr(t: float) -> float:
        bpm = 70.0 + (12.0 if 200 <= t < 215 else 0.0) + (9.0 if t >= 300 else 0.0)
        bpm += 12.0 if 700 <= t < 715 else 0.0
        return 60_000.0 / bpm + 8 * rng.standard_normal()

    marks = [(200.0, "threat", ""), (300.0, "shame", ""), (700.0, "doubt", "")]
    b = _build(store, rr, 900, rests=[(450.0, 580.0)], markers=marks)
    rec = store.read_session(b.sid)
    assert rec.info.baseline is not None and rec.info.baseline.start_t_s == 450.0
    live = {r.kind: r for r in b.last.responses}
    a = analyse_session(rec)
    got = {r.marker.kind: r for r in a.responses}
    assert live["threat"].peak_d_hr_bpm > 10.0 and live["shame"].peak_d_hr_bpm > 6.0
    for kind in ("threat", "shame", "doubt"):
        assert got[kind].d_hr_bpm == pytest.approx(live[kind].peak_d_hr_bpm, rel=1e-9), kind
        assert got[kind].d_ln_rmssd == pytest.approx(live[kind].peak_d_ln_rmssd, rel=1e-9)
        want = live[kind].recovery_s
        assert got[kind].band_recovery_s == (want if math.isfinite(want) else None), kind


def test_a_rest_period_longer_than_the_automatic_baseline_is_read_whole(
    store: SessionStore,
) -> None:
    """A rest period of 150 s, then one that was stopped too early (the store then holds
    none): the report took the first one's last 120 s as its samples, as if its first 30 s
    had been a rest period discarded before an automatic baseline, and a marker after it
    did not read as the daemon showed it."""
    rng = np.random.default_rng(7)

    def rr(t: float) -> float:
        bpm = 72.0 + (4.0 if 200 <= t < 230 else 0.0) + (12.0 if 450 <= t < 465 else 0.0)
        return 60_000.0 / bpm + 8 * rng.standard_normal()

    b = _build(store, rr, 900, rests=[(200.0, 350.0), (600.0, 605.0)],
               markers=[(450.0, "threat", "")])  # fmt: skip
    rec = store.read_session(b.sid)
    assert rec.info.baseline is None  # the second, discarded, left none stored
    (live,) = b.last.responses
    (got,) = analyse_session(rec).responses
    assert got.d_hr_bpm == pytest.approx(live.peak_d_hr_bpm, rel=1e-9)


def test_a_rest_period_stopped_too_early_leaves_the_automatic_baseline_collected_after_it(
    store: SessionStore, tmp_path: Path
) -> None:
    """A rest period marked at 298–311 s is too short: the daemon discards it (no baseline
    stored) and collects the automatic baseline again from 311 s for 2 min, while scores
    130–295 s were against the first automatic one. The report shaded 0–430 s, both
    stretches at once, and its "as shown live" columns read −7.0 bpm, 0 s for a marker the
    daemon showed +10.6 bpm, 25 s for (its baseline pooled 75 and 60 bpm)."""
    rng = np.random.default_rng(8)

    def rr(t: float) -> float:
        bpm = (75.0 if t < 200 else 60.0) + (10.0 if 602 <= t < 622 else 0.0)
        return 60_000.0 / bpm + 8 * rng.standard_normal()

    b = _build(store, rr, 1000, rest=(298.2, 311.3), markers=[(600.0, "threat", "")])
    rec = store.read_session(b.sid)
    assert rec.info.baseline is None  # discarded, as the daemon stores it
    (live,) = b.last.responses
    a = analyse_session(rec)
    assert a.baseline == (310.0, 430.0)
    # Caught up live against the first automatic baseline, before the rest period: counted
    # from its end, as shown live (the one collected after the discarded rest period came
    # later).
    shown = b.last.catching_up_t_s
    assert shown is not None and shown < 298.0
    assert (a.reference_t_s, a.caught_up_t_s) == (125.0, shown)
    (r,) = a.responses
    assert r.d_hr_bpm == pytest.approx(live.peak_d_hr_bpm, rel=1e-9)
    assert r.d_ln_rmssd == pytest.approx(live.peak_d_ln_rmssd, rel=1e-9)
    assert r.band_recovery_s == live.recovery_s
    page = write_report(store, b.sid, tmp_path)[1].read_text()
    assert f"<td>{live.peak_d_hr_bpm:+.1f}</td>" in page


def test_a_rest_period_never_stopped_is_no_baseline_and_the_scores_before_it_count(
    store: SessionStore, tmp_path: Path
) -> None:
    """Rest started at 300 s and never stopped (the store holds no baseline): the rows from
    300 s are collecting to the end. The report took 0–900 s as the baseline, shaded the
    whole session and said "There was no settling score after the baseline ended" though
    130–295 s were scored against the automatic baseline; trends said "no score"."""
    b = _build(store, _sinus(3), 900, rest=(300.0, None), markers=[(500.0, "shame", "")])
    rec = store.read_session(b.sid)
    assert rec.info.baseline is None
    a = analyse_session(rec)
    assert a.baseline == (0.0, 125.0)
    assert a.reference_t_s == 125.0
    summary = _summary(write_report(store, b.sid, tmp_path)[1].read_text())
    assert "no settling score after the baseline ended" not in summary, summary
    assert summary.startswith("Physiology did not catch up after the baseline ended"), summary
    assert (
        "From 5 min on a new baseline was being collected and the session ended before it "
        "completed, so there is no settling score after that." in summary
    ), summary
    o = outcome(a)
    assert o.scored and o.verdict is Verdict.NOT_YET


def test_the_baseline_band_is_drawn_from_the_baseline_used(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HR 75 bpm until 200 s, then 60; a rest period marked at 300–420 s replaces the
    automatic baseline (5–125 s). The shaded mean ± 1 SD band pooled both (67.5 ± 7.6 bpm
    beside a shaded period at 60 bpm); it is the rest period's own."""
    rng = np.random.default_rng(2)
    b = _build(
        store,
        lambda t: (800.0 if t < 200 else 1000.0) + 15 * rng.standard_normal(),
        900,
        rest=(300.0, 420.0),
    )
    a = analyse_session(store.read_session(b.sid))
    assert a.baseline == (300.0, 420.0)
    fig = _figure(a, monkeypatch)
    try:
        ax_hr = fig.axes[0]
        # The band spans the axes' width (x 0–1 in axes units); the baseline period is a
        # span of minutes, its height the axes' (0–1).
        (band,) = [p for p in ax_hr.patches if (p.get_x(), p.get_width()) == (0.0, 1.0)]
        s = a.series
        inside = (s.t_s >= 300.0) & (s.t_s <= 420.0)
        mu = float(np.nanmean(s.hr_bpm[inside]))
        assert band.get_y() < mu < band.get_y() + band.get_height()
        assert band.get_height() < 2.0, band.get_height()  # 2 SD of HR at rest, not 15 bpm
    finally:
        plt.close(fig)


def _surges(seed: int) -> Callable[[float], float]:
    """72 bpm, 66 after 150 s; +12 bpm for 15 s at 303 s, +10 for 12 s at 700 s."""
    rng = np.random.default_rng(seed)

    def rr(t: float) -> float:
        bpm = 72.0 - (6.0 if t > 150 else 0.0) + (12.0 if 303 <= t < 318 else 0.0)
        bpm += 10.0 if 700 <= t < 712 else 0.0
        return 60_000.0 / bpm + 10 * rng.standard_normal()

    return rr


def _no_components(p: dict[str, Any]) -> None:
    del p["components"]


@pytest.mark.parametrize(
    ("rests", "edit"),
    [
        pytest.param([(2.0, 130.0)], None, id="before-the-automatic-baseline"),
        pytest.param([(66.66, 204.92)], None, id="during-it"),
        pytest.param([(30.0, 100.0)], None, id="during-it-stopped-before-its-end"),
        pytest.param([(66.66, 204.92)], _no_components, id="during-it-rows-without-components"),
        pytest.param([(60.0, 68.0)], None, id="during-it-too-short-discarded"),
        pytest.param([(66.66, 204.92), (600.0, 605.0)], None, id="during-it-none-stored"),
        pytest.param([(240.0, 290.0)], None, id="after-it"),
    ],
)
def test_a_rest_period_reads_as_shown_live_wherever_it_starts(
    store: SessionStore,
    tmp_path: Path,
    rests: list[tuple[float, float]],
    edit: Callable[[dict[str, Any]], None] | None,
) -> None:
    """A rest period started while the automatic baseline was being collected (the audit's
    session: rest 66.66–204.92 s, a shame marker at 303 s): the daemon discards the
    automatic baseline and samples from the rest period's start, but the rows of both are
    one run of "baseline" rows. The report took the whole run (rows 5–200 s) for the live
    baseline: its "as shown live" columns read the markers against it (−8.2 / +0.16 where
    the daemon showed −7.97 / +0.12) and the summary said "The scores are against the
    baseline set after the session (1 min 7 s to 3 min 25 s) … live they were against the
    first 3 min 20 s", both false. Every marker now reads as the daemon's own analyzer read
    it, whether the rest period started before, during or after the automatic baseline, was
    discarded as too short, or is not the one the store holds; nothing is said of a baseline
    set afterwards."""
    marks = [(40.0, "doubt", ""), (303.0, "shame", ""), (700.0, "threat", "")]
    b = _build(store, _surges(3), 900, rests=rests, markers=marks, edit=edit)
    rec = store.read_session(b.sid)
    live = {r.kind: r for r in b.last.responses}
    assert sorted(live) == ["doubt", "shame", "threat"]
    assert all(math.isfinite(r.peak_d_hr_bpm) for r in live.values())
    a = analyse_session(rec)
    assert [r.marker.kind for r in a.responses] == ["doubt", "shame", "threat"]
    for r in a.responses:
        want = live[r.marker.kind]
        assert r.d_hr_bpm == pytest.approx(want.peak_d_hr_bpm, rel=1e-9), r.marker.kind
        assert r.d_ln_rmssd == pytest.approx(want.peak_d_ln_rmssd, rel=1e-9), r.marker.kind
        back = want.recovery_s if math.isfinite(want.recovery_s) else None
        assert r.band_recovery_s == back, r.marker.kind
    stored = rec.info.baseline
    if stored is not None:
        assert a.baseline == (stored.start_t_s, stored.stop_t_s)
        assert a.reference_t_s == stored.stop_t_s and a.reference_kind == "the baseline ended"
    assert a.baseline_rescored is None and a.live_baseline is None
    page = write_report(store, b.sid, tmp_path)[1].read_text()
    summary = _summary(page)
    assert "set after the session" not in summary and "live they were" not in summary, summary
    # One baseline: the reference was its last row (125 s for a rest period stopped at
    # 130 s), short of the stored end, and the summary counted "after the first baseline
    # ended … (against the baseline taken last)".
    for said in ("first baseline", "earlier baseline", "taken last"):
        assert said not in summary, summary
    shame = live["shame"]
    assert f"<td>{shame.peak_d_hr_bpm:+.1f}</td><td>{shame.peak_d_ln_rmssd:+.2f}</td>" in page


def test_notes_and_hold_lapses_read_as_the_daemon_published_them(
    store: SessionStore, tmp_path: Path
) -> None:
    """The daemon reads an event-locked response for every marker but hold-start and
    publishes it per kind (``responses_by_kind.note``); the report left notes, hold lapses
    and resumptions out, so a published note response had no row anywhere. They are in the
    table and the summary now, with the daemon's values; trends still count only the
    reactions (shame, threat, ...)."""
    marks = [
        (200.0, "hold-start", ""),
        (303.0, "note", "a memory"),
        (500.0, "hold-lapse", ""),
        (520.0, "hold-resume", ""),
        (700.0, "shame", ""),
    ]
    b = _build(store, _surges(4), 900, markers=marks)
    live = {r.kind: r for r in b.last.responses}
    assert sorted(live) == ["hold-lapse", "hold-resume", "note", "shame"]
    a = analyse_session(store.read_session(b.sid))
    assert [r.marker.kind for r in a.responses] == ["note", "hold-lapse", "hold-resume", "shame"]
    for r in a.responses:
        assert r.d_hr_bpm == pytest.approx(live[r.marker.kind].peak_d_hr_bpm, rel=1e-9)
    page = write_report(store, b.sid, tmp_path)[1].read_text()
    rows = {row[1]: row for row in _marker_rows(page)}
    assert sorted(rows) == ["hold-lapse", "hold-resume", "note", "shame"]
    assert rows["note"][7] == f"{live['note'].peak_d_hr_bpm:+.1f}"
    summary = _summary(page)
    assert "After the note marker heart rate rose" in summary, summary
    assert "hold-lapse marker" in summary and "hold-resume marker" in summary, summary
    o = outcome(a)
    assert o.n_reactions == 1 and o.n_irregular == 0


def test_markers_the_daemon_never_showed_are_not_in_its_live_columns(
    store: SessionStore, tmp_path: Path
) -> None:
    """A shame marker imported afterwards (``settle log import``) and one entered after a
    rest period that was never stopped: the daemon showed neither (it never had the first;
    the second waited for a baseline that never completed), yet both had numbers under "as
    shown live". Their rows say the daemon did not show them, and why, with the values
    recomputed the daemon's way; a marker entered live keeps its plain cells."""
    marks = [(303.0, "shame", "live"), (700.0, "threat", "after the rest began")]
    b = _build(store, _surges(5), 900, rest=(600.0, None), markers=marks)
    live = {r.kind: r for r in b.last.responses}
    assert sorted(live) == ["shame"]  # the threat waited for the rest period's baseline
    store.add_markers(
        b.sid, [MarkerRow(400.0, T0_MS + 400_000, "shame", "journal", MarkerSource.IMPORT)]
    )
    page = write_report(store, b.sid, tmp_path)[1].read_text()
    rows = {row[2]: row for row in _marker_rows(page)}
    assert rows["live"][7] == f"{live['shame'].peak_d_hr_bpm:+.1f}" and len(rows["live"]) == 10
    a = analyse_session(store.read_session(b.sid))
    got = {r.marker.text: r for r in a.responses}
    assert got["live"].d_hr_bpm == pytest.approx(live["shame"].peak_d_hr_bpm, rel=1e-9)
    imported, late = got["journal"], got["after the rest began"]
    assert imported.d_hr_bpm is not None and late.d_hr_bpm is not None
    assert rows["journal"][7:] == [
        "not shown live: imported afterwards; recomputed as the daemon computes it: ΔHR peak "
        f"{imported.d_hr_bpm:+.1f} bpm, ΔlnRMSSD {imported.d_ln_rmssd:+.2f}, "
        + (
            f"back in the baseline band after {imported.band_recovery_s:.0f} s"
            if imported.band_recovery_s is not None
            else "not back in the baseline band"
        )
    ]
    assert rows["after the rest began"][7].startswith(
        "not shown live: a new baseline was being collected; recomputed against the baseline "
        f"before it: ΔHR peak {late.d_hr_bpm:+.1f} bpm"
    ), rows["after the rest began"]
    assert got["live"].not_live == ""


# --- seconds without beats --------------------------------------------------------------------


def test_a_marker_inside_a_gap_is_not_read_from_a_line_drawn_across_it(
    store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """75 bpm, an 80 s disconnect at 400–480 s, 85 bpm after it; a shame marker 10 s into the
    gap. The 1 Hz heart rate was interpolated straight across the gap, and the summary read
    "rose 8.2 bpm and had not come back after 3 min" with no beat in the 60 s after the
    marker. Seconds without beats are empty: too few beats to read, not counted in trends,
    and the figure's beat-to-beat line breaks at the gap."""
    rng = np.random.default_rng(3)
    b = _build(
        store,
        lambda t: (800.0 if t < 400 else 706.0) + 10 * rng.standard_normal(),
        900,
        gaps=[(400.0, 480.0)],
        markers=[(100.0, "hold-start", ""), (410.0, "shame", "phone rang")],
    )
    page = write_report(store, b.sid, tmp_path)[1].read_text()
    summary = _summary(page)
    assert "Around the shame marker there were too few beats to measure a response." in summary
    assert "rose" not in summary and "come back" not in summary, summary
    row = re.search(r"<tr><td>6 min 50 s</td>.*?</tr>", page)
    assert row is not None and "too few beats" in row.group(), page
    a = analyse_session(store.read_session(b.sid))
    o = outcome(a)
    assert (o.n_reactions, o.n_responses) == (0, 0)
    fig = _figure(a, monkeypatch)
    try:
        line = fig.axes[0].lines[0]  # beat-to-beat (5 s mean)
        assert line.get_label().startswith("beat-to-beat")
        x, y = np.asarray(line.get_xdata()) * 60.0, np.asarray(line.get_ydata())
        assert np.isnan(y[(x > 401) & (x < 479)]).all()
        assert np.isfinite(y[(x > 300) & (x < 398)]).all()
        assert np.isfinite(y[(x > 482) & (x < 800)]).all()
    finally:
        plt.close(fig)


def test_a_marker_seconds_before_the_end_has_too_few_beats_to_read(
    store: SessionStore, tmp_path: Path
) -> None:
    """A threat marker 4 s before the session ends was judged "no clear response" from those
    4 s and counted in trends (1 reaction, 0 clear); one 40 s before the end is read."""
    b = _build(
        store, _sinus(7, sd=8.0), 600,
        markers=[(560.0, "doubt", ""), (596.0, "threat", "phone rang")],
    )  # fmt: skip
    page = write_report(store, b.sid, tmp_path)[1].read_text()
    summary = _summary(page)
    assert "Around the threat marker there were too few beats to measure a response." in summary
    assert "After the doubt marker heart rate showed no clear" in summary, summary
    a = analyse_session(store.read_session(b.sid))
    doubt, threat = a.responses
    assert doubt.rise_bpm is not None and threat.rise_bpm is None
    assert outcome(a).n_reactions == 1


# --- what the beat-by-beat figures say ----------------------------------------------------------


def _marker_rows(page: str) -> list[list[str]]:
    """The marker table's rows, as the text of their cells."""
    table = page.split("<h2>Reactivity and recovery per marker</h2>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(<td>.*?)</tr>", table)
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in rows
    ]


def test_a_clear_heart_rate_drop_after_a_marker_is_said_not_called_no_response(
    store: SessionStore, tmp_path: Path
) -> None:
    """Heart rate falls 12 bpm for 40 s right after a threat marker (a freeze). The summary
    said "showed no clear response (peak +1.0 bpm …), so there was nothing to recover from"
    beside a table whose live columns read ΔHR −12.6; it says the rise was not clear and
    how far heart rate fell, and the table says it fell."""
    rng = np.random.default_rng(5)
    b = _build(
        store,
        lambda t: 60_000.0 / (75.0 - (12.0 if 402 <= t < 442 else 0.0)) + 8 * rng.standard_normal(),
        900,
        markers=[(400.0, "threat", "froze")],
    )
    page = write_report(store, b.sid, tmp_path)[1].read_text()
    summary = _summary(page)
    m = re.search(r"After the threat marker heart rate showed no clear rise but fell "
                  r"(\d+) bpm below the 30 s before\.", summary)  # fmt: skip
    assert m is not None and 10 <= int(m.group(1)) <= 14, summary
    assert "nothing to recover from" not in summary and "no clear response" not in summary
    (row,) = _marker_rows(page)
    assert re.fullmatch(r"no clear rise \(fell 1[0-4]\.\d\)", row[6]), row
    assert float(row[7]) < -10  # the live ΔHR peak: the same drop


def test_the_table_rise_is_the_difference_of_the_values_it_shows(
    store: SessionStore, tmp_path: Path
) -> None:
    """+8 bpm for 25 s after a shame marker: the table read 75.0 | 83.3 | +8.2 (each rounded
    on its own); the rise is the difference of the two values shown, and the summary says
    the same number."""
    rng = np.random.default_rng(11)

    def rr(t: float) -> float:
        return 60_000.0 / (75.0 + (8.0 if 402 <= t < 427 else 0.0)) + 8 * rng.standard_normal()

    b = _build(store, rr, 900, markers=[(400.0, "shame", "a")])
    page = write_report(store, b.sid, tmp_path)[1].read_text()
    (row,) = _marker_rows(page)
    before, peak, rise = (float(c) for c in row[3:6])
    assert f"{peak - before:+.1f}" == row[5], row
    assert f"heart rate rose {rise:.1f} bpm" in _summary(page)


# --- the end of a session without scores --------------------------------------------------------


def test_catching_up_at_the_last_score_does_not_claim_the_sessions_last_minute(
    store: SessionStore,
) -> None:
    """A run above 85 from 400 s to the last score at 460 s, then the strap taken off
    (rows to 520 s unscored): "stayed at 75 or above for the last 1 min of the session"
    claimed the minute without scores; it says the last minute of scores, and when they
    stopped."""

    def edit(p: dict[str, Any]) -> None:
        p["catching_up_t_s"] = None
        if p["settling_state"] != "running":
            return
        if p["t_s"] > 460:
            p.update(settling=None, usable=False, reason="not enough beats yet", warming_up=True)
        else:
            p["settling"] = 90.0 if p["t_s"] >= 400 else 50.0

    b = _build(store, _sinus(1), 520, markers=[(200.0, "hold-start", "")], edit=edit)
    text = summary_text(analyse_session(store.read_session(b.sid)))
    assert "last 1 min of the session" not in text, text
    assert (
        "and it stayed at 75 or above for the last 1 min of scores, the last one 1 min before "
        "the end of the session, short of the 90 s that count as caught up." in text
    ), text


def test_the_last_five_minutes_are_of_scores_when_the_sessions_end_had_none(
    store: SessionStore,
) -> None:
    """Scores to 900 s (30, then 70 from 600 s), then the rhythm too irregular to score to
    the end at 1300 s: "averaged 70 in the last five minutes of the session" was of minutes
    that had no score; it says of scores, and how long before the end they stopped."""

    def edit(p: dict[str, Any]) -> None:
        if p["settling_state"] != "running":
            return
        if p["t_s"] > 900:
            p.update(settling=None, usable=False, warming_up=False,
                     reason="irregular rhythm: 35 % of recent beats are not sinus")  # fmt: skip
        else:
            p["settling"] = 30.0 if p["t_s"] < 600 else 70.0

    b = _build(store, _sinus(1), 1300, edit=edit)
    text = summary_text(analyse_session(store.read_session(b.sid)))
    assert (
        "averaged 30 in the first five minutes after the baseline ended and 70 in the last five "
        "minutes of scores, the last one 6 min 40 s before the end of the session" in text
    ), text
    b = _build(store, _sinus(1), 1300, edit=edit, finish=False)
    running = summary_text(analyse_session(store.read_session(b.sid)))
    assert "of scores, the last one 6 min 40 s before its latest values" in running, running


# --- the page ---------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Each text node of a page with the tags open around it."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.texts: list[tuple[str, tuple[str, ...]]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in {"meta", "img", "br"}:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.texts.append((data, tuple(self.open)))


def _parsed(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def test_a_bidi_override_in_user_text_cannot_reorder_the_page_around_it(
    store: SessionStore, tmp_path: Path
) -> None:
    """A right-to-left override (U+202E) in a marker's text, the intention or the notes —
    accepted by `log set` and `log import` — reversed the text after it on the page (the
    marker list's "(mqtt)" read "(tqqm)"). Each user text is isolated in <bdi>, with nothing
    else inside it."""
    rlo = "\u202e"
    b = _build(store, _sinus(1), 300, markers=[(150.0, "shame", f"{rlo}I felt small")])
    store.set_intention(b.sid, Intention(IntentionTarget.SELF, f"{rlo}I am safe", "breath"))
    store.set_notes(b.sid, f"{rlo}slept badly")
    page = _parsed(write_report(store, b.sid, tmp_path)[1].read_text())
    user = {f"{rlo}I felt small", f"{rlo}I am safe", f"{rlo}slept badly"}
    with_rlo = [(text, tags) for text, tags in page.texts if rlo in text]
    assert len(with_rlo) == 4  # the marker twice (table and list), the intention, the notes
    for text, tags in with_rlo:
        assert tags[-1] == "bdi" and text in user, (text, tags)
    # What follows a user text is outside its isolation: "(mqtt)" after the marker's text,
    # the closing quote after the statement.
    after = {text for text, tags in page.texts if "bdi" not in tags}
    assert "(mqtt)" in after and any(t.startswith("” (") for t in after), after


def test_an_empty_finished_session_says_so_and_spans_its_length(
    store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished 10 min session with no beats read "This session holds 0 beats but no
    indices yet", and its figure's time axis ran −0.04 to 0.04 min."""
    sid = store.create_session("dev", T0_MS, "x", {}).id
    store.finish_session(sid, T0_MS + 600_000)
    page = write_report(store, sid, tmp_path)[1].read_text()
    assert _summary(page) == (
        "This session recorded no beats in its 10 min, so there is nothing to say about how "
        "physiology moved."
    )
    fig = _figure(analyse_session(store.read_session(sid)), monkeypatch)
    try:
        assert fig.axes[0].get_xlim() == pytest.approx((0.0, 10.0))
    finally:
        plt.close(fig)


def test_an_ecg_driven_session_shows_the_beats_its_analysis_used(
    store: SessionStore, tmp_path: Path
) -> None:
    """A session whose indices came from the raw ECG's R peaks (the strap sent no intervals)
    read "beats / gaps 0 / 0"; it shows the beats analysed and where they came from."""
    sid = store.create_session("dev", T0_MS, "x", {}).id
    t, rows = 0.0, []
    for seq in range(300):
        t += 0.8
        rows.append(EcgBeatRow(seq, t, 800.0, 800.0, BeatClass.NORMAL))
    store.add_ecg_beats(sid, rows)
    store.finish_session(sid, T0_MS + 245_000)
    page = write_report(store, sid, tmp_path)[1].read_text()
    assert (
        '<tr><th scope="row">beats / gaps</th><td>300 analysed (0 from the strap, 300 R peaks '
        "of the raw ECG) / 0</td></tr>" in page
    )


def test_the_page_names_its_table_headers_and_describes_its_figure(
    store: SessionStore, tmp_path: Path
) -> None:
    """Screen readers: every table header says what it heads (the marker table's columns,
    the session log's rows), the marker table has a caption, and the figure's text
    alternative names what it plots, the catching-up time, and points to the summary (it
    was "heart rate, lnRMSSD and settling score")."""
    from tests.test_sessions_report import _session

    sid = _session(store)
    a = analyse_session(store.read_session(sid))
    assert a.caught_up_t_s is not None
    page = write_report(store, sid, tmp_path)[1].read_text()
    parsed = _parsed(page)
    headers = [attrs for tag, attrs in parsed.tags if tag == "th"]
    assert len(headers) == 7 + 12  # the session log's rows, the marker table's two header rows
    assert all(attrs.get("scope") in {"row", "col", "colgroup"} for attrs in headers), headers
    assert sum(attrs.get("scope") == "row" for attrs in headers) == 7
    assert any(tag == "caption" for tag, _attrs in parsed.tags)
    (img,) = [attrs for tag, attrs in parsed.tags if tag == "img"]
    alt = img.get("alt") or ""
    assert f"caught up at {duration_words(a.caught_up_t_s)}" in alt, alt
    assert "summary" in alt and img.get("aria-describedby") == "summary"


# --- trends -------------------------------------------------------------------------------------


def _outcome(sid: str, started_ms: int, latency_s: float | None = 120.0) -> SessionOutcome:
    return SessionOutcome(sid, started_ms, "self", latency_s, 10.0, 30.0, 1, 1)


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time Europe/Berlin (the clocks go back at 03:00 CEST on 2026-10-25)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_trends_place_sessions_by_absolute_time_across_a_clock_change(
    berlin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions at 02:40 CEST and 02:10 CET on the night the clocks go back (the second half
    an hour later): placed by local wall time, the second sat before the first and
    the trends line ran backwards. (`settle trends`' table gives each time its zone,
    CEST then CET: tests/test_cli.py.)"""
    berlin_tz = zoneinfo.ZoneInfo("Europe/Berlin")

    def ms(h: int, m: int, fold: int) -> int:
        return int(dt.datetime(2026, 10, 25, h, m, fold=fold, tzinfo=berlin_tz).timestamp() * 1000)

    first, second = ms(2, 40, 0), ms(2, 10, 1)
    assert second - first == 30 * 60_000
    kept: list[Any] = []
    monkeypatch.setattr(plt, "close", kept.append)
    out = write_trends_png([_outcome("a", first), _outcome("b", second)], tmp_path / "t.png")
    monkeypatch.undo()
    (fig,) = kept
    try:
        assert out is not None and out.is_file()
        for ax in fig.axes[:3]:
            (line,) = [ln for ln in ax.lines if len(ln.get_xdata()) == 2]
            x = mdates.date2num(line.get_xdata())
            assert x[1] - x[0] == pytest.approx(30 / (24 * 60), abs=1e-6), ax.get_ylabel()
    finally:
        plt.close(fig)


def test_trends_panel_with_nothing_to_plot_says_so_without_an_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions without a recovery time (no reaction marker came back within 3 min) and
    without a score change: both panels were drawn empty, with a y axis of -0.04..0.04
    "recovery (s)" / "score change". Each now says why in one sentence and has no y axis;
    the latency panel, which has values, keeps its axis."""
    empty = [
        SessionOutcome(sid, T0_MS + i * 86_400_000, "self", 120.0, None, None, 0)
        for i, sid in enumerate("ab")
    ]
    kept: list[Any] = []
    monkeypatch.setattr(plt, "close", kept.append)
    assert write_trends_png(empty, tmp_path / "t.png") is not None
    monkeypatch.undo()
    (fig,) = kept
    try:
        lat_ax, score_ax, recov_ax = fig.axes[:3]
        assert lat_ax.yaxis.get_visible() and not lat_ax.texts
        assert not score_ax.yaxis.get_visible() and not recov_ax.yaxis.get_visible()
        assert [t.get_text() for t in score_ax.texts] == [
            "no score change: no session had 10 min of scores after its reference"
        ]
        assert [t.get_text() for t in recov_ax.texts] == [
            "no recovery time: no reaction marker in these sessions had a clear rise that "
            "came back within 3 min"
        ]
        # The dates stay under the bottom panel.
        assert recov_ax.xaxis.get_visible()
    finally:
        plt.close(fig)
    # One session with a recovery time: that panel is plotted as before.
    kept.clear()
    monkeypatch.setattr(plt, "close", kept.append)
    one = [*empty, SessionOutcome("c", T0_MS + 2 * 86_400_000, "self", 90.0, 5.0, 40.0, 1, 1)]
    assert write_trends_png(one, tmp_path / "u.png") is not None
    monkeypatch.undo()
    (fig,) = kept
    try:
        assert all(ax.yaxis.get_visible() and not ax.texts for ax in fig.axes[1:3])
    finally:
        plt.close(fig)


def test_trends_of_no_session_write_no_empty_plot(store: SessionStore, tmp_path: Path) -> None:
    """`settle trends --target relational --out DIR` with no such session wrote an empty
    settle-trends.png and printed matplotlib's "No artists with labels found to put in
    legend" warning; nothing is plotted, and the one line says there were no sessions."""
    from typer.testing import CliRunner

    from settle.cli import app

    _build(store, _sinus(1), 300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert write_trends_png([], tmp_path / "t.png") is None
        res = CliRunner().invoke(
            app,
            ["trends", "--target", "relational", "--db", str(store.path), "--out",
             str(tmp_path / "out")],
        )  # fmt: skip
    assert not caught, [str(w.message) for w in caught]
    assert res.exit_code == 0, res.output
    assert res.output == "No sessions with target relational.\n"
    assert not (tmp_path / "t.png").exists()
    assert not (tmp_path / "out" / "settle-trends.png").exists()


@pytest.mark.parametrize("stored_live", [True, False])
def test_catching_up_before_a_rest_period_marked_later_is_reported(
    store: SessionStore, tmp_path: Path, stored_live: bool
) -> None:
    """The daemon showed catching up at about 4 min; a rest period marked again at 10 min
    moved the report's reference to its end, and the report said "Physiology did not catch
    up after the baseline ended". It now counts from the baseline the daemon caught up
    against, as it was shown live (or, for rows stored without the live detection, as the
    daemon's detector finds it over the scores before the new rest period)."""
    rng = np.random.default_rng(4)

    def rr(t: float) -> float:
        calm = min(1.0, max(0.0, (t - 150.0) / 60.0))
        return 60_000.0 / (76.0 - 12.0 * calm) + (8.0 + 30.0 * calm) * rng.standard_normal()

    def strip(p: dict[str, Any]) -> None:
        if not stored_live:
            p.pop("catching_up_t_s")

    b = _build(store, rr, 900, rests=[(600.0, 720.0)], edit=strip)
    shown = b.last.catching_up_t_s
    assert shown is not None and shown < 600.0
    a = analyse_session(store.read_session(b.sid))
    assert a.reference_t_s == 125.0 and a.caught_up_t_s == shown
    summary = _summary(write_report(store, b.sid, tmp_path)[1].read_text())
    assert summary.startswith(
        f"Physiology caught up {duration_words(shown - 125.0)} after the first baseline ended."
    ), summary
