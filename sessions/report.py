"""Session reports (PNG + HTML) and progress across sessions (trends).

Definitions (all times in seconds since session start):

* **catching-up point** — the time the daemon detected live (``catching_up_t_s`` in its
  indices messages); for a session recorded without it, the same detector
  (:class:`processing.indices.CatchingUp`: the settling score reaches
  :data:`~processing.indices.CATCH_THRESHOLD` and stays at or above it minus
  :data:`~processing.indices.CATCH_HYSTERESIS` for :data:`~processing.indices.CATCH_HOLD_S`)
  run over the stored scores from the *reference* (the first ``hold-start`` marker, else the
  end of the baseline). The latency is that time minus the reference.
* **reactivity** of a marker — peak minus pre-marker heart rate (bpm): pre = mean of the
  beat-by-beat heart rate over the 30 s before the marker, peak = maximum of its 5 s moving
  average within 60 s after it. Seconds without beats (a stored gap, lost beats) are left
  out, never interpolated across; a marker with fewer than 15 s of beats in the 30 s before
  or :data:`_POST_MIN_S` in the 60 s after had **too few beats** to read (trends leave it
  out of the reactions).
* **recovery** — seconds from the marker until that moving average is back within 1 bpm of
  the pre-marker level after the peak (searched up to 180 s; None if it is not, the summary
  saying whether 180 s passed or the session ended first). A marker whose peak does not
  stand out from the swing before it (more than 1 bpm, :data:`CLEAR_RISE_SDS` SDs of the
  5 s mean over the 30 s before, and 1 bpm above its highest point there) had **no clear
  rise**: the peak of a 60 s window is above a 30 s mean by construction, so there is
  nothing to recover from and no recovery time (None; the summary says so instead of quoting
  a time) — unless the 5 s mean **fell** clearly below the pre-marker level (the same rule
  mirrored, :attr:`MarkerResponse.fell`), which the summary says instead. A marker with
  rows too irregular to score within 30 s before to 60 s after it is not read at all
  (:attr:`MarkerResponse.irregular`). A marker entered when that moving average was already
  at its highest (the peak is the first second of the 60 s window: heart rate was no higher
  at any time after the marker than at the marker itself) is reported as **already up at
  the marker** — the rise, if any, came before it — never as a rise after it.
* **unusable rhythm** — indices rows stored with ``usable`` false for a reason other than
  warming up (``irregular rhythm: N % of recent beats are not sinus``: more than 20 % of the
  last 120 beats needed correction, as with frequent premature beats; or ``… N % of recent
  intervals differ from the one before by more than 20 %``: more than half of them jump)
  carry no score. The summary says for how long and quotes the stored reason of the rule
  that held most, with that rule's range and limit; when the baseline never completed
  because of it, it says so instead of "did not catch up", and the figure shows no baseline.

Beside these beat-level figures every marker also gets the **event-locked response exactly as
the daemon computes and publishes it live** (:func:`processing.indices.reactivity` and
:func:`~processing.indices.event_response` on the stored beats the analysis used, corrected:
the fast HR — the 1 Hz HR of the beats, a centred 5 s mean — against its mean and floored
spread at the baseline's stored rows, and the lnRMSSD of the beats against the baseline rows'
mean): peak ΔHR from the baseline mean within 30 s after the marker, ΔlnRMSSD over those 30 s,
and the seconds from the marker until the fast HR, after that peak, is back within the
baseline band (``docs/indices.md``: counted from the marker since 2026-11-27). These are
the per-marker values behind the ``responses_by_kind`` averages of the indices messages the
daemon published during the session. None where the daemon read no response: the fast HR
covered less than 2/3 of the 30 s (:data:`processing.indices.REACT_MIN_COVER`: a gap), or a
row whose step overlaps them was too irregular to read. As live, every marker but
``hold-start`` is read (notes and hold lapses too; trends count only the reaction kinds). A
response the daemon never showed — a marker imported afterwards, every marker of a session
that completed no baseline, one after the start of a rest period never stopped — is marked
so (:attr:`MarkerResponse.not_live`), its values recomputed the same way.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import html
import io
import itertools
import json
import math
import os
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import numpy.typing as npt

from processing.indices import (
    CATCH_HOLD_S,
    CATCH_HYSTERESIS,
    CATCH_THRESHOLD,
    REACT_S,
    SPREAD_FLOORS,
    Baseline,
    CatchingUp,
    event_response,
    fast_hr,
    mean_spread,
    reactivity,
)
from processing.live import (
    BASELINE_MIN_SAMPLES,
    IRREGULAR_SHARE_MAX,
    JUMP_PHRASE,
    JUMP_SHARE_MAX,
    SETTLING_K,
    WARMING_UP_REASON,
)
from sensors.timing import ECG_ONLY_GAPS
from sessions.files import (
    ExportError,
    ExportRefused,
    atomic_file,
    not_replaceable,
    plain_name,
    refuse_database,
    write_all,
)
from sessions.series import lost_beat_jumps
from sessions.store import (
    BeatClass,
    IntentionTarget,
    MarkerRow,
    MarkerSource,
    SessionRecord,
    SessionState,
    SessionStore,
)
from settle.errors import SettleError

__all__ = [
    "MarkerResponse",
    "OutputExists",
    "ReportError",
    "SessionAnalysis",
    "analyse_session",
    "summary_text",
    "trends",
    "write_report",
    "write_trends_png",
]

_PRE_S, _PEAK_S, _RECOVER_MAX_S, _SMOOTH_S, _BACK_BPM = 30.0, 60.0, 180.0, 5.0, 1.0
_POST_MIN_S = 20
"""Seconds with beats a marker's 60 s after need for its beat-by-beat response to be read
(as the 15 of the 30 s before; live reads one from 20 of its 30 s): a marker 4 s before
the session's end was judged "no clear response" from those 4 s."""
CLEAR_RISE_SDS = 3.0
"""A rise after a marker is clear when its peak exceeds the pre-marker level by more than
this many standard deviations of the 5 s mean HR over the 30 s before (and by more than
1 bpm over that curve's own highest point in those 30 s): random markers on a flat demo
session read "rose" at 71 % of them with the plain 1 bpm rule, at none with this one."""
#: Marker kinds whose response is not read: the practice itself (processing.live reads an
#: event-locked response for every other marker, notes and hold lapses included, and
#: publishes them per kind; the report shows the same markers).
_NO_RESPONSE = frozenset({"hold-start"})
#: Marker kinds trends do not count as reactions: the practice (hold-start, a lapse, a
#: resumption) and plain notes. Their responses are in the report, not in progress.
_NOT_REACTIONS = frozenset({"hold-start", "hold-lapse", "hold-resume", "note"})
NOT_LIVE_IMPORTED = "imported afterwards"
""":attr:`MarkerResponse.not_live` of a marker added with ``settle log import``: the daemon
never had it."""
NOT_LIVE_NO_BASELINE = "no baseline was completed live"
""":attr:`MarkerResponse.not_live` when the daemon completed no baseline in the session
(its responses wait for one); the values are against the baseline set afterwards."""
NOT_LIVE_OPEN = "a new baseline was being collected"
""":attr:`MarkerResponse.not_live` of a marker after the start of a rest period never
stopped: the daemon read it against that baseline, which never completed; the values are
against the baseline before it."""


class ReportError(SettleError):
    """A report could not be produced; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclasses.dataclass(frozen=True, slots=True)
class IndexSeries:
    """Indices rows as arrays: ``t_s`` (s), ``hr_bpm``, ``ln_rmssd``, ``settling`` (0–100),
    ``z_hr`` / ``z_ln_rmssd`` / ``z_slow`` (score components, baseline-spread units; positive
    = more settled), ``in_baseline`` (row published while the baseline was being collected),
    ``running`` (row published with the baseline complete), ``irregular`` (row not usable
    because of the rhythm, not because the window was still warming up) with its stored
    ``reasons``. NaN where a value was null."""

    t_s: npt.NDArray[np.float64]
    hr_bpm: npt.NDArray[np.float64]
    ln_rmssd: npt.NDArray[np.float64]
    settling: npt.NDArray[np.float64]
    z_hr: npt.NDArray[np.float64]
    z_ln_rmssd: npt.NDArray[np.float64]
    z_slow: npt.NDArray[np.float64]
    in_baseline: npt.NDArray[np.bool_]
    running: npt.NDArray[np.bool_]
    irregular: npt.NDArray[np.bool_]
    reasons: tuple[str | None, ...]
    usable: npt.NDArray[np.bool_] | None = None
    """Row published as usable (its score may be read); None: every row."""
    lf64_ms2: npt.NDArray[np.float64] | None = None
    """LF power of the 64 s window (the input of ``z_slow``); NaN where the window was not
    full yet; None when the rows predate it (recorded before Settle stored it)."""


@dataclasses.dataclass(frozen=True, slots=True)
class RhythmSummary:
    """How much of a session the rhythm was too irregular to score: ``irregular_s`` (rows ×
    their 5 s step) of ``recorded_s`` (time of the last indices row), ``throughout`` when no
    row after warming up was usable; ``reason`` the stored reason of the row with the median
    share, and the lowest and highest share quoted (%, None if no reason carried one)."""

    irregular_s: float
    recorded_s: float
    throughout: bool
    reason: str
    share_range_pct: tuple[float, float] | None
    limit_pct: float | None = None
    """The limit of the rule ``reason`` quotes (20 % corrected beats; 50 % jumping
    intervals), None when the reason is neither."""


@dataclasses.dataclass(frozen=True, slots=True)
class MarkerResponse:
    """Heart-rate response to one marker: ``pre_hr_bpm`` and ``peak_hr_bpm`` (beats/min),
    ``rise_bpm`` = peak − pre as the report prints them (each to one decimal, so the table's
    columns subtract: 75.0, 83.3, +8.3 — it read +8.2 from the unrounded values),
    ``recovery_s`` seconds from the marker until back within 1 bpm of pre (None: not within
    180 s, too few beats, or no clear response — see :attr:`responded`)."""

    marker: MarkerRow
    pre_hr_bpm: float | None
    peak_hr_bpm: float | None
    rise_bpm: float | None
    recovery_s: float | None
    d_hr_bpm: float | None = None
    """Live definition: peak deviation of the fast HR (5 s mean) from its baseline mean
    within 30 s after the marker, signed, beats/min (None without a baseline or 30 s of
    beats after, and where the daemon read none: fast HR on fewer than 20 of the 30 s, or a
    row too irregular to read over them)."""
    d_ln_rmssd: float | None = None
    """Live definition: lnRMSSD of the beats in the 30 s after the marker minus the baseline
    mean, ln units (one value over the 30 s)."""
    band_recovery_s: float | None = None
    """Live definition: seconds from the marker until the fast HR, after its peak, is back
    within its baseline mean ± spread; 0 when the peak stayed within 2 spreads (it did not
    clearly leave); None: not back in the data."""
    peak_at_marker: bool = False
    """The 5 s mean HR was highest at the marker itself (the first second of the window):
    it did not rise after the marker, so a ``rise_bpm`` > 1 is a level the marker found, not
    a response to it."""
    clear_bpm: float = _BACK_BPM
    """The rise a clear response needs here: the larger of 1 bpm, :data:`CLEAR_RISE_SDS`
    SDs of the 5 s mean HR over the 30 s before, and 1 bpm above its highest in them (the
    swing heart rate had anyway, breathing included)."""
    followed_s: float | None = None
    """Seconds of beats after the marker (at most 180): under 180 the session ended before
    a recovery could be ruled out."""
    irregular: bool = False
    """The rhythm was too irregular to score within 30 s before to 60 s after the marker:
    its heart rate is not read as a response (premature beats jump it)."""
    trough_hr_bpm: float | None = None
    """Lowest 5 s mean HR within 60 s after the marker (beats/min)."""
    clear_drop_bpm: float = _BACK_BPM
    """The fall a clear drop needs here, mirroring :attr:`clear_bpm`: the larger of 1 bpm,
    :data:`CLEAR_RISE_SDS` SDs of the 5 s mean HR over the 30 s before, and 1 bpm below its
    lowest in them."""
    trough_at_marker: bool = False
    """The 5 s mean HR was lowest at the marker itself: any fall came before it."""
    not_live: str = ""
    """Why the daemon never showed this marker's event-locked response ("" if it did, or
    read none: a gap, an irregular rhythm): :data:`NOT_LIVE_IMPORTED`,
    :data:`NOT_LIVE_NO_BASELINE` or :data:`NOT_LIVE_OPEN`. The ``d_*`` and
    ``band_recovery_s`` fields then hold the values recomputed the daemon's way, against
    the baseline its rule gives (the set one, or the one before), not values it showed."""

    @property
    def drop_bpm(self) -> float | None:
        """pre − trough as printed (one decimal each), beats/min; None if not measured."""
        if self.pre_hr_bpm is None or self.trough_hr_bpm is None:
            return None
        return round(self.pre_hr_bpm, 1) - round(self.trough_hr_bpm, 1)

    @property
    def fell(self) -> bool:
        """Heart rate did not rise clearly (:attr:`responded` False) but its 5 s mean fell
        clearly below the pre-marker level after the marker (more than
        :attr:`clear_drop_bpm`, at the one decimal printed): a drop (a freeze, a vagal
        response) is no "nothing to recover from"."""
        drop = self.drop_bpm
        return (
            self.responded is False
            and drop is not None
            and not self.trough_at_marker
            and round(drop, 1) > round(self.clear_drop_bpm, 1)
        )

    @property
    def responded(self) -> bool | None:
        """True if heart rate rose clearly above the pre-marker level (more than
        :attr:`clear_bpm` after the marker; more than 1 bpm when it was highest at the
        marker itself), False if it did not, None if it could not be measured or the rhythm
        was too irregular. Compared at the one decimal the report prints."""
        if self.rise_bpm is None or self.irregular:
            return None
        need = _BACK_BPM if self.peak_at_marker else self.clear_bpm
        return round(self.rise_bpm, 1) > round(need, 1)

    @property
    def data_ended(self) -> bool:
        """No recovery, and the session ended less than 180 s after the marker."""
        return (
            self.recovery_s is None
            and self.followed_s is not None
            and (self.followed_s < _RECOVER_MAX_S)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class SessionAnalysis:
    """What a report shows: the series, the baseline period (s), the reference for the
    catching-up latency (first hold-start, else baseline end; s), the catching-up time and
    latency (s), the mean settling score over the first and last 5 min after the
    reference, and the marker responses."""

    record: SessionRecord
    series: IndexSeries
    baseline: tuple[float, float] | None
    reference_t_s: float | None
    reference_kind: str
    caught_up_t_s: float | None
    latency_s: float | None
    score_start: float | None
    score_end: float | None
    responses: list[MarkerResponse]
    baseline_complete: bool = True
    """The live baseline completed (a row was published with it complete, or scored)."""
    rhythm: RhythmSummary | None = None
    """Set when some rows were unusable because of an irregular rhythm."""
    baseline_rescored: bool | None = None
    """None: ``baseline`` is the one the live score used. Set after the session: True when
    the scores were recomputed against it, False when they could not be (older rows)."""
    live_baseline: tuple[float, float] | None = None
    """With a baseline set afterwards: the period the live score had used (s), if known."""
    rescore_why: str = ""
    """When ``baseline_rescored`` is False: :data:`RESCORE_OLD` or :data:`RESCORE_FEW`."""
    baseline_rows: npt.NDArray[np.bool_] | None = None
    """The rows ``baseline`` took its samples from (its mean ± 1 SD band, the live marker
    responses' baseline); None: the rows within ``baseline``."""
    open_baseline_t_s: float | None = None
    """The first row of a baseline still being collected when the session ended, after
    ``baseline`` had completed (:func:`open_baseline_from`): no live score from there on."""


def _num(x: object) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def live_catching_up(rec: SessionRecord, not_before: float | None = None) -> float | None:
    """The first ``catching_up_t_s`` the live analysis published at or after ``not_before``
    (the report's reference), if any. Not the last one: the live search restarts at every
    ``hold-start``, so with two holds the last detection belongs to the second, and counted
    from the first it read minutes late."""
    for row in rec.indices:
        try:
            value = json.loads(row.payload_json).get("catching_up_t_s")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, int | float) and (not_before is None or value >= not_before):
            return float(value)
    return None


def provisional_series(rec: SessionRecord) -> IndexSeries:
    """Arrays from the stored indices rows (their published payloads)."""
    rows = [json.loads(r.payload_json) for r in rec.indices]
    comps = [r.get("components") or {} for r in rows]
    irregular = [
        r.get("usable", True) is False
        and r.get("warming_up") is not True
        and r.get("reason") != WARMING_UP_REASON
        for r in rows
    ]
    return IndexSeries(
        t_s=np.array([r.t_s for r in rec.indices], dtype=np.float64),
        hr_bpm=np.array([_num(r.get("hr_bpm")) for r in rows]),
        ln_rmssd=np.array([_num(r.get("ln_rmssd")) for r in rows]),
        settling=np.array([_num(r.get("settling")) for r in rows]),
        z_hr=np.array([_num(c.get("z_hr")) for c in comps]),
        z_ln_rmssd=np.array([_num(c.get("z_ln_rmssd")) for c in comps]),
        z_slow=np.array([_num(c.get("z_slow")) for c in comps]),
        in_baseline=np.array([r.get("settling_state") == "baseline" for r in rows], dtype=bool),
        running=np.array([r.get("settling_state") == "running" for r in rows], dtype=bool),
        irregular=np.array(irregular, dtype=bool),
        reasons=tuple(r.get("reason") if isinstance(r.get("reason"), str) else None for r in rows),
        usable=np.array([r.get("usable", True) is not False for r in rows], dtype=bool),
        lf64_ms2=(
            np.array([_num(r.get("lf64_ms2")) for r in rows])
            if any("lf64_ms2" in r for r in rows)
            else None
        ),
    )


def live_baseline_span(
    s: IndexSeries,
    near: tuple[float, float],
    baseline_s: float = 120.0,
    kept: tuple[float, float] | None = None,
) -> tuple[float, float] | None:
    """The period of the baseline the live score used closest to ``near``: of the baselines
    the daemon completed (:func:`completed_baselines`, the same ``baseline_s`` and
    ``kept``), the one whose period is nearest; None if none completed (rows collecting a
    baseline to the end, e.g. a rhythm too irregular throughout, had no live score to
    speak of)."""
    done = completed_baselines(s, baseline_s, kept)
    if not done:
        return None
    periods = [b.period for b in done]
    return min(periods, key=lambda sp: abs(sp[0] - near[0]) + abs(sp[1] - near[1]))


def baseline_set_afterwards(
    s: IndexSeries, period: tuple[float, float], baseline_s: float = 120.0
) -> bool:
    """Whether the stored baseline ``period`` is not the one the live score used: no
    baseline the daemon completed begins and ends within one step (and a second) of it. A
    rest period marked live — started before, during or after the automatic baseline —,
    or ``log set --baseline 0:120`` over the automatic first 2 min (rows 5–125 s), matches;
    ``10:60`` inside it does not."""
    live = live_baseline_span(s, period, baseline_s, period)
    if live is None:
        return True
    slack = _step_s(s) + 1.0
    return abs(live[0] - period[0]) > slack or abs(live[1] - period[1]) > slack


RESCORE_OLD = "old"
"""Why :func:`rescored` could not: the rows predate the stored 64 s LF power."""
RESCORE_FEW = "few"
"""Why :func:`rescored` could not: too few usable rows in the period for a baseline."""


def rescored(s: IndexSeries, period: tuple[float, float]) -> IndexSeries | str:
    """``s`` scored against a baseline taken from its usable rows within ``period`` (the
    live analyzer's :class:`processing.indices.Baseline` and score over the stored HR,
    lnRMSSD and 64 s LF power; a component not yet defined is left out of the baseline, as
    live): rows in the period are the baseline (no score), every other usable row is
    scored. :data:`RESCORE_OLD` if the rows predate the stored LF power,
    :data:`RESCORE_FEW` if fewer than :data:`processing.live.BASELINE_MIN_SAMPLES` usable
    rows lie in the period."""
    if s.lf64_ms2 is None:
        return RESCORE_OLD
    usable = s.usable if s.usable is not None else np.ones(s.t_s.shape, dtype=bool)
    lf = s.lf64_ms2
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_lf = np.where(lf > 0, np.log(np.where(lf > 0, lf, 1.0)), math.nan)
    inside = (s.t_s >= period[0]) & (s.t_s <= period[1])
    base = Baseline()
    for i in np.flatnonzero(inside & usable):
        base.add(float(s.hr_bpm[i]), float(s.ln_rmssd[i]), float(ln_lf[i]))
    if base.n < BASELINE_MIN_SAMPLES:
        return RESCORE_FEW
    n = s.t_s.shape[0]
    settling, z_hr, z_ln, z_slow = (np.full(n, math.nan) for _ in range(4))
    for i in np.flatnonzero(~inside & usable):
        c = base.score(float(s.hr_bpm[i]), float(s.ln_rmssd[i]), float(ln_lf[i]), SETTLING_K)
        settling[i], z_hr[i], z_ln[i], z_slow[i] = c.score, c.z_hr, c.z_ln_rmssd, c.z_slow
    return dataclasses.replace(
        s, settling=settling, z_hr=z_hr, z_ln_rmssd=z_ln, z_slow=z_slow,
        in_baseline=inside, running=~inside,
    )  # fmt: skip


def baseline_completed(s: IndexSeries) -> bool:
    """Whether the live baseline ever completed: a row published with it complete, or a
    score (a session stored without ``settling_state``)."""
    return bool(s.running.any() or np.isfinite(s.settling).any())


def _step_s(s: IndexSeries) -> float:
    """The indices rows' spacing (5 s unless configured otherwise)."""
    if s.t_s.shape[0] < 2:
        return 5.0
    return float(np.median(np.diff(s.t_s)))


_SHARE = re.compile(r"(\d+(?:\.\d+)?)\s*%")


def rhythm_summary(s: IndexSeries) -> RhythmSummary | None:
    """How long the rhythm was too irregular to score (see :class:`RhythmSummary`); None if
    it never was."""
    if not s.irregular.any():
        return None
    n = int(s.irregular.sum())
    reasons = [
        r or "irregular rhythm" for r, bad in zip(s.reasons, s.irregular, strict=True) if bad
    ]
    # Two rules, two measures (processing.live): the share of corrected beats and the share
    # of jumping intervals. Quote the one that held for most rows, with its own range.
    jump = [JUMP_PHRASE in r for r in reasons]
    rule = sum(jump) * 2 > len(reasons)
    shares = [
        (float(m.group(1)), r)
        for r, j in zip(reasons, jump, strict=True)
        if j == rule and (m := _SHARE.search(r)) is not None
    ]
    limit = None
    if shares:
        shares.sort(key=lambda x: x[0])
        reason = shares[(len(shares) - 1) // 2][1]
        share_range: tuple[float, float] | None = (shares[0][0], shares[-1][0])
        limit = 100 * (JUMP_SHARE_MAX if rule else IRREGULAR_SHARE_MAX)
    else:
        reason = max(set(reasons), key=reasons.count)
        share_range = None
    warming = np.array([r == WARMING_UP_REASON for r in s.reasons], dtype=bool)
    return RhythmSummary(
        irregular_s=n * _step_s(s),
        recorded_s=float(s.t_s.max()),
        throughout=bool(s.irregular[~warming].all()),
        reason=reason,
        share_range_pct=share_range,
        limit_pct=limit,
    )


def _baseline_runs(s: IndexSeries) -> list[npt.NDArray[np.intp]]:
    """Row indexes of each run of rows published while a baseline was collected."""
    idx = np.flatnonzero(s.in_baseline)
    if idx.shape[0] == 0:
        return []
    return np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)


def _completed(s: IndexSeries, run: npt.NDArray[np.intp]) -> bool:
    """A run of baseline rows the daemon completed: a row published with the baseline
    complete follows it (the state only goes from collecting to complete, or back to
    collecting when a rest period is started)."""
    return bool(s.running[int(run[-1]) + 1 :].any())


def session_baseline_s(rec: SessionRecord) -> float:
    """The automatic baseline's length the session was recorded with
    (``meta.settings.baseline_s``; 120 s, the default, when not recorded)."""
    settings = rec.info.meta.get("settings")
    value = settings.get("baseline_s") if isinstance(settings, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return 120.0


def used_baseline(
    s: IndexSeries, baseline_s: float = 120.0, kept: tuple[float, float] | None = None
) -> tuple[tuple[float, float], npt.NDArray[np.bool_]] | None:
    """The baseline the daemon scored the session's last scores against, from the rows'
    ``settling_state``: the last run of rows published while a baseline was collected that
    rows with the baseline complete followed, as (period, the rows its samples came from);
    None if no run completed.

    A run at the end of the session that never completed (a rest period started and never
    stopped, or an automatic baseline collected again after a rest period stopped too early,
    with the session ending first) is not the session's baseline: the scores before it were
    against the one before it. One run can hold more than one baseline collection: a rest
    period started while the automatic baseline was being collected (the daemon discards
    that and samples from the rest period's start), or one stopped too early and
    discarded, followed by the automatic baseline collected from that moment. The samples
    are the rows of the run from where the daemon's scores after it say (:func:`_sampled_from`:
    the rows whose mean and spread reproduce its stored score components). Without such
    scores: the stored rest period's rows when it ends the run (from its start); else a
    run a little longer than ``baseline_s`` is taken as a discarded rest period followed
    by the automatic baseline, its samples the rows of that last ``baseline_s`` (all of
    the run when fewer than :data:`~processing.live.BASELINE_MIN_SAMPLES` usable rows lie
    there: the daemon then went on collecting; a stop exactly at a row's time is taken as
    after it). The period is the stored rest period when that is the one sampled, else
    from one step before the first sample row (a row stands for the step before it) to the
    last row."""
    done = completed_baselines(s, baseline_s, kept)
    return (done[-1].period, done[-1].rows) if done else None


@dataclasses.dataclass(frozen=True, slots=True)
class LiveBaseline:
    """One baseline the daemon completed: its ``period`` and the ``rows`` its samples came
    from (:func:`used_baseline` says which), collected from ``from_t_s`` (its first row's
    step) and complete from ``done_t_s`` (the first row published with it complete)."""

    period: tuple[float, float]
    rows: npt.NDArray[np.bool_]
    from_t_s: float
    done_t_s: float


def completed_baselines(
    s: IndexSeries, baseline_s: float = 120.0, kept: tuple[float, float] | None = None
) -> list[LiveBaseline]:
    """Every baseline the daemon completed in the session, in order (see
    :func:`used_baseline` for the rows of each). ``kept``: the rest period the store holds
    (the daemon kept it whole: a run it ends is no discarded period followed by an
    automatic baseline, however long; one started while the automatic baseline was being
    collected shares its run, and is sampled from its start)."""
    out = []
    step = _step_s(s)
    for run in _baseline_runs(s):
        if not _completed(s, run):
            continue
        period, rows = _run_baseline(s, run, baseline_s, kept)
        # A marker anywhere in the run waited for it (a rest period stopped too early and
        # discarded is followed, in the same run, by the automatic baseline it waited for;
        # one during an automatic baseline a rest period discarded waited for the rest
        # period).
        since = max(0.0, float(s.t_s[run[0]]) - step)
        out.append(LiveBaseline(period, rows, since, float(s.t_s[int(run[-1]) + 1])))
    return out


def baseline_for_marker(done: Sequence[LiveBaseline], t_s: float) -> LiveBaseline | None:
    """The baseline the daemon read a marker at ``t_s`` against (processing.live): the one
    being collected at its time if that one completed (the marker waited for it), else the
    last one complete at its time (a rest period marked later does not re-read it), else
    the first one completed after it (a marker during the first baseline)."""
    for b in done:
        if b.from_t_s < t_s < b.done_t_s:
            return b
    before = [b for b in done if b.done_t_s <= t_s]
    if before:
        return before[-1]
    return done[0] if done else None


_Z_MATCH = 1e-3
"""Largest difference (baseline spreads) between a stored score component and the one
recomputed against a candidate set of baseline rows for that set to be the one the daemon
scored against (stored values carry 6 decimals: the true set is within ~1e-6)."""
_Z_ROWS = 6
"""Scored rows after a baseline run whose components :func:`_sampled_from` checks."""


def _sampled_from(s: IndexSeries, run: npt.NDArray[np.intp]) -> int | None:
    """Where in ``run`` (a run of rows published while a baseline was collected, followed
    by rows with it complete) the daemon's samples began, read from its own scores: the
    position after the last usable row left out of the baseline that reproduces the stored
    components (``z_hr``, ``z_ln_rmssd``) of the first scored rows after the run (0: the
    whole run). The daemon's baseline is always a suffix of the run: a rest period started
    while the automatic baseline was being collected discards it (one run, the rest period
    sampled from its start), one stopped too early is followed by the automatic baseline
    collected from that moment. None when no row after the run carries a component (none
    scored before the next baseline, rows stored without them) or no suffix reproduces
    them."""
    n = s.t_s.shape[0]
    end = int(run[-1]) + 1
    nxt = np.flatnonzero(s.in_baseline[end:])
    stop = end + int(nxt[0]) if nxt.shape[0] else n
    comps = ((s.hr_bpm, s.z_hr, -1.0, SPREAD_FLOORS["hr_bpm"]),
             (s.ln_rmssd, s.z_ln_rmssd, 1.0, SPREAD_FLOORS["ln_rmssd"]))  # fmt: skip
    ev = [i for i in range(end, stop) if any(math.isfinite(c[1][i]) for c in comps)][:_Z_ROWS]
    if not ev:
        return None
    usable = s.usable if s.usable is not None else np.ones(s.t_s.shape, dtype=bool)
    pos = [k for k, i in enumerate(run.tolist()) if usable[i]]
    best, best_err = None, _Z_MATCH
    for j in range(len(pos)):
        sub = run[pos[j:]]
        err = 0.0
        for vals, zs, sign, floor in comps:
            v = vals[sub]
            v = v[np.isfinite(v)]
            if v.shape[0] == 0:
                err = math.inf
                break
            mean = math.fsum(v.tolist()) / v.shape[0]
            sd = max(float(np.std(v, ddof=1)) if v.shape[0] > 1 else 0.0, floor)
            for i in ev:
                if math.isfinite(zs[i]):
                    z = sign * (float(vals[i]) - mean) / sd
                    err = max(err, abs(z - float(zs[i])) if math.isfinite(z) else math.inf)
        if err < best_err:
            best, best_err = (pos[j - 1] + 1 if j else 0), err
    return best


def _run_baseline(
    s: IndexSeries,
    run: npt.NDArray[np.intp],
    baseline_s: float,
    kept: tuple[float, float] | None = None,
) -> tuple[tuple[float, float], npt.NDArray[np.bool_]]:
    """The period and sample rows of the baseline that completed ``run`` (see
    :func:`used_baseline`). Where the rows after it carry the daemon's score components,
    the rows are the ones that reproduce them (:func:`_sampled_from`); else the stored rest
    period ``kept`` when it ends the run (its rows from its start: one started while the
    automatic baseline was collected shares its run with it), else the rule below. The
    period is ``kept`` when that is the rest period sampled, else from one step before the
    first row sampled to the run's last row."""
    step = _step_s(s)
    rows = np.zeros(s.t_s.shape, dtype=bool)
    t = s.t_s
    first, last = float(t[run[0]]), float(t[run[-1]])
    end_kept = kept is not None and abs(last - kept[1]) <= step + 1.0
    j = _sampled_from(s, run)
    if j is None and kept is not None and end_kept:
        if abs(first - step - kept[0]) <= step + 1.0:
            j = 0
        elif first < kept[0] <= last and kept[1] >= last - 0.5:
            # Stopped after the run's last row: a rest period stopped live (a period set
            # afterwards inside the automatic baseline, `30:120`, ends before its last row).
            j = int(np.searchsorted(t[run], kept[0] - 1e-6))
    if j is not None:
        rows[run[j:]] = True
        usable = s.usable if s.usable is not None else np.ones(s.t_s.shape, dtype=bool)
        sampled = np.flatnonzero(rows & usable)
        lead = float(t[sampled[0]]) if sampled.shape[0] else last
        prev = float(t[run[j - 1]]) if j else first - 2.0 * step - 1.0
        if kept is not None and end_kept and prev < kept[0] <= lead + 1.0:
            return kept, rows
        return (max(0.0, float(t[run[j]]) - step), last), rows
    rows[run] = True
    start = max(0.0, first - step)
    usable = s.usable if s.usable is not None else np.ones(s.t_s.shape, dtype=bool)
    # Only a run a little longer than baseline_s: a rest period is discarded when shorter
    # than BASELINE_MIN_SAMPLES steps (the daemon's rule), so a longer run is a rest period
    # kept whole (a 150 s one was read from its last 120 s only).
    discarded_max = BASELINE_MIN_SAMPLES * step + step
    whole = kept is not None and end_kept and abs(first - step - kept[0]) <= step + 1.0
    if not whole and baseline_s + 0.5 * step < last - first <= baseline_s + discarded_max:
        # The row at the discarding stop itself belonged to the discarded period.
        tail = rows & (s.t_s > last - baseline_s + 1e-6)
        if int((tail & usable).sum()) >= BASELINE_MIN_SAMPLES:
            rows = tail
            start = max(start, float(s.t_s[np.flatnonzero(tail)[0]]) - step)
    return (start, last), rows


def open_baseline_from(s: IndexSeries) -> float | None:
    """The first row of a baseline still being collected when the session ended after an
    earlier one had completed (a rest period started and never stopped: no score from
    there on), or None."""
    runs = _baseline_runs(s)
    if len(runs) < 2 or _completed(s, runs[-1]) or not _completed(s, runs[-2]):
        return None
    return float(s.t_s[runs[-1][0]])


def _kept(rec: SessionRecord) -> tuple[float, float] | None:
    """The rest period the store holds, if stopped."""
    b = rec.info.baseline
    return None if b is None or b.stop_t_s is None else (b.start_t_s, b.stop_t_s)


def provisional_baseline(rec: SessionRecord, s: IndexSeries) -> tuple[float, float] | None:
    """The stored baseline period, else the one the daemon used (:func:`used_baseline`)."""
    b = rec.info.baseline
    if b is not None and b.stop_t_s is not None:
        return (b.start_t_s, b.stop_t_s)
    # A baseline still being collected when the session ended (e.g. a rhythm too irregular
    # to take samples from) is no baseline: nothing to shade, nothing to count from.
    used = used_baseline(s, session_baseline_s(rec), _kept(rec))
    return None if used is None else used[0]


def _run_detector(s: IndexSeries, reference_t_s: float) -> CatchingUp:
    cu = CatchingUp()
    cu.hold_start(reference_t_s)
    for t, score in zip(s.t_s.tolist(), s.settling.tolist(), strict=True):
        if cu.update(t, score) is not None:
            break
    return cu


def _open_run(s: IndexSeries, reference_t_s: float) -> float | None:
    """Start of the run above the threshold under way at the last scored row (rows without a
    score after it — the strap taken off before the stop — do not end it here), or None."""
    finite = np.flatnonzero(np.isfinite(s.settling))
    last = int(finite[-1]) + 1 if finite.size else 0
    if last and float(s.t_s[-1] - s.t_s[last - 1]) > TRAILING_UNSCORED_MAX_S:
        last = s.t_s.shape[0]  # minutes unscored at the end: the run ended there
    head = dataclasses.replace(s, t_s=s.t_s[:last], settling=s.settling[:last])
    return _run_detector(head, reference_t_s).run_start_t_s


def catching_up(s: IndexSeries, reference_t_s: float) -> float | None:
    """The daemon's catching-up detector (:class:`processing.indices.CatchingUp`, as
    :class:`processing.live.LiveAnalyzer` feeds it: every step, a step without a score
    ending a run) over the stored scores from ``reference_t_s``; None if it never fires."""
    return _run_detector(s, reference_t_s).detected_t_s


UNDER_WAY_MIN_S = CATCH_HOLD_S / 2
"""How long a run above the catching-up threshold must have held when the session ended for
the report to say physiology was catching up (a score that crossed at the last step is not)."""


TRAILING_UNSCORED_MAX_S = 60.0
"""Unscored rows at the very end (the strap taken off before the stop) up to this long do
not end a run for :data:`Verdict.UNDER_WAY`."""


class Verdict(enum.StrEnum):
    """Whether physiology caught up after the reference, as far as the session can tell."""

    CAUGHT_UP = "caught_up"
    NOT_YET = "not_yet"
    """Scored for at least ``CATCH_HOLD_S`` after the reference and it did not."""
    UNDER_WAY = "under_way"
    """The score crossed the threshold and held for at least ``UNDER_WAY_MIN_S``, but the
    session ended before it had held for ``CATCH_HOLD_S``."""
    TOO_SHORT = "too_short"
    """Less than ``CATCH_HOLD_S`` of scores after the reference: it could not have."""
    NO_SCORE = "no_score"
    """No reference, no completed baseline or no score after the reference."""


def verdict(a: SessionAnalysis) -> Verdict:
    """:class:`Verdict` of one analysed session."""
    if a.latency_s is not None:
        return Verdict.CAUGHT_UP
    s, ref = a.series, a.reference_t_s
    if ref is None or not a.baseline_complete:
        return Verdict.NO_SCORE
    scored = np.isfinite(s.settling) & (s.t_s >= ref)
    if not scored.any():
        return Verdict.NO_SCORE
    run = _open_run(s, ref)
    if run is not None and float(s.t_s[scored].max()) - run >= UNDER_WAY_MIN_S:
        return Verdict.UNDER_WAY
    if float(s.t_s[scored].max()) - ref < CATCH_HOLD_S:
        return Verdict.TOO_SHORT
    return Verdict.NOT_YET


def _hr_1hz(rec: SessionRecord) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The beat-by-beat heart rate, 1 Hz, as a centred 5 s mean (bpm), NaN at seconds
    without beats: inside a stored gap (not one of the raw ECG alone) or between two beats
    further apart than the interval they carry allows (lost beats), as
    :func:`sessions.series.rr_on_grid` leaves them empty. Interpolated across, a marker
    10 s into an 80 s disconnect read "rose 8.2 bpm" from a straight line."""
    # The beats the analysis used (:func:`analysed_beats`): a merged spurious beat's own
    # piece (252 ms, no corrected RR) read as 237 bpm, an implausible 0 ms as infinite, and
    # one extra beat became a "22 bpm reaction" in the table, the summary and the trends.
    bt, rr, span = analysed_beats(rec)
    if bt.size < 2:
        return np.zeros(0), np.zeros(0)
    grid = np.arange(math.ceil(bt[0]), math.floor(bt[-1]) + 1, 1.0)
    hr = np.interp(grid, bt, 60_000.0 / rr)
    for j in lost_beat_jumps(bt, span):
        hr[(grid > bt[j]) & (grid < bt[j + 1])] = math.nan
    for g in rec.gaps:
        if g.reason not in ECG_ONLY_GAPS:
            hr[(grid >= g.start_t_s) & (grid <= g.end_t_s)] = math.nan
    k = int(_SMOOTH_S)
    if hr.shape[0] < k:
        return grid, hr
    # A centred mean over the seconds that exist, at the ends and beside a gap too (zero
    # padding would pull the first and last seconds of the curve towards 0 bpm).
    box = np.ones(k)
    ok = np.isfinite(hr)
    total = np.convolve(np.where(ok, hr, 0.0), box, mode="same")
    count = np.convolve(ok.astype(np.float64), box, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(ok, total / count, math.nan)
    return grid, smooth


def provisional_marker_responses(
    rec: SessionRecord,
    markers: Sequence[MarkerRow],
    irregular: Sequence[tuple[float, float]] = (),
) -> list[MarkerResponse]:
    """Heart-rate reactivity and recovery per marker (see the module docstring); a marker
    within 30 s before to 60 s after which one of the ``irregular`` spans (s) lies is
    flagged :attr:`MarkerResponse.irregular`."""
    grid, hr = _hr_1hz(rec)
    beats = np.isfinite(hr)  # seconds with beats (none in a gap)
    out = []
    for m in markers:
        bad = any(t0 < m.t_s + _PEAK_S and t1 > m.t_s - _PRE_S for t0, t1 in irregular)
        pre_w = (grid >= m.t_s - _PRE_S) & (grid < m.t_s) & beats
        post_w = (grid >= m.t_s) & (grid <= m.t_s + _PEAK_S) & beats
        if pre_w.sum() < _PRE_S / 2 or post_w.sum() < _POST_MIN_S:
            out.append(MarkerResponse(m, None, None, None, None, irregular=bad))
            continue
        before = hr[pre_w]
        pre = float(before.mean())
        clear = max(
            _BACK_BPM,
            CLEAR_RISE_SDS * float(before.std(ddof=1)),
            float(before.max()) - pre + _BACK_BPM,
        )
        clear_drop = max(
            _BACK_BPM,
            CLEAR_RISE_SDS * float(before.std(ddof=1)),
            pre - float(before.min()) + _BACK_BPM,
        )
        post_idx = np.flatnonzero(post_w)
        peak_i = int(post_idx[np.argmax(hr[post_idx])])
        trough_i = int(post_idx[np.argmin(hr[post_idx])])
        peak = float(hr[peak_i])
        # The marker's own second, not the first one after a gap that began at it.
        first = int(post_idx[0]) if grid[post_idx[0]] < m.t_s + 1.0 else -1
        r = MarkerResponse(
            m, pre, peak, round(peak, 1) - round(pre, 1), None,
            peak_at_marker=peak_i == first, clear_bpm=clear,
            followed_s=min(_RECOVER_MAX_S, float(grid[-1] - m.t_s)), irregular=bad,
            trough_hr_bpm=float(hr[trough_i]), clear_drop_bpm=clear_drop,
            trough_at_marker=trough_i == first,
        )  # fmt: skip
        if r.responded:  # else HR never left its band: nothing to recover from
            after = np.flatnonzero(
                (grid >= grid[peak_i]) & (grid <= m.t_s + _RECOVER_MAX_S) & (hr <= pre + _BACK_BPM)
            )
            if after.shape[0]:
                r = dataclasses.replace(r, recovery_s=float(grid[after[0]] - m.t_s))
        out.append(r)
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


_NOT_ANALYSED = frozenset({BeatClass.IMPLAUSIBLE, BeatClass.WARMUP})


def analysed_beats(
    rec: SessionRecord,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The beats the live analysis used, as stored: times (s), corrected RR (ms) and the
    span (ms) each beat's interval covers, sorted by time. The strap's and the raw ECG's
    beats that artefact correction classified (whichever drove the indices), a merged-away
    (``extra``) beat left out; a split (``missed``) beat covers its whole raw interval at the
    rate of its corrected part (the beats the split inserted are not stored). A session
    stored before correction ran: every strap beat, raw."""
    rows: list[tuple[float, float, float]] = []
    stored: list[tuple[float, float | None, float | None, BeatClass | None]] = [
        (b.beat_t_s, b.rr_ms, b.rr_corrected_ms, b.beat_class) for b in rec.beats
    ]
    stored += [(b.beat_t_s, b.rr_ms, b.rr_corrected_ms, b.beat_class) for b in rec.ecg_beats]
    for t, raw, corrected, cls in stored:
        if cls is None or cls in _NOT_ANALYSED or corrected is None:
            continue
        span = raw if cls == BeatClass.MISSED and raw is not None else corrected
        rows.append((t, corrected, span))
    if not rows and not any(b.beat_class is not None for b in rec.beats):
        rows = [(b.beat_t_s, b.rr_ms, b.rr_ms) for b in rec.beats]
    if not rows:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    a = np.array(sorted(rows, key=lambda r: r[0]), dtype=np.float64)
    return a[:, 0], a[:, 1], a[:, 2]


def live_marker_responses(
    rec: SessionRecord,
    s: IndexSeries,
    baseline: tuple[float, float] | None,
    responses: list[MarkerResponse],
    *,
    rows: npt.NDArray[np.bool_] | None = None,
    baselines: Sequence[LiveBaseline] = (),
) -> list[MarkerResponse]:
    """``responses`` with the live event-locked fields filled in (see the module docstring):
    the fast HR of the stored beats, its baseline band from the same fast HR at the usable
    rows of the baseline (as the daemon samples it at its baseline snapshots), the baseline
    lnRMSSD mean from those rows. ``rows``: the rows the baseline took its samples from
    (:attr:`SessionAnalysis.baseline_rows`; None: those within ``baseline``). Left None
    where the daemon did not read a response: the fast HR covering less than 2/3 of the
    30 s after the marker (a gap), or a row too irregular to read whose step overlaps
    them. ``baselines``: every baseline the daemon completed (:func:`completed_baselines`),
    when ``baseline`` is the daemon's own: each marker is then read against the one the
    daemon read it against (:func:`baseline_for_marker`; a rest period marked again later
    in the session does not re-read the markers before it)."""
    if baseline is None or s.t_s.shape[0] == 0:
        return responses
    if rows is None:
        rows = (s.t_s >= baseline[0]) & (s.t_s <= baseline[1])
    bt, rr, span = analysed_beats(rec)
    if bt.shape[0] < 2:
        return responses
    grid = np.arange(math.floor(bt[0] - span[0] / 1000.0), math.floor(bt[-1]) - 1, 1.0)
    fast = fast_hr(bt, rr, grid, span)
    g0 = float(grid[0]) if grid.shape[0] else 0.0
    usable = [json.loads(r.payload_json).get("usable", True) is not False for r in rec.indices]

    def band(rows: npt.NDArray[np.bool_]) -> tuple[tuple[float, float], float] | None:
        base = Baseline()
        base_t: list[float] = []
        for t, hr, ln, ok, inside in zip(s.t_s, s.hr_bpm, s.ln_rmssd, usable, rows, strict=True):
            if ok and inside:
                # Slow-oscillation power is not stored per row; only HR and lnRMSSD are needed.
                base.add(float(hr), float(ln), 0.0)
                base_t.append(math.floor(float(t)))
        if base.n < 3:  # as the daemon: no baseline, no responses
            return None
        at = [int(g - g0) for g in base_t if 0 <= g - g0 < grid.shape[0]]
        return mean_spread(fast[at], SPREAD_FLOORS["hr_bpm"]), base.stats("ln_rmssd")[0]

    bands: dict[int, tuple[tuple[float, float], float] | None] = {}
    whole = band(rows)
    if whole is None and not baselines:
        return responses
    last = float(grid[-1]) if grid.shape[0] else -math.inf
    # Each row stands for the step since the row before it (the first for itself), as the
    # daemon's snapshots: a row too irregular to read whose step overlaps a marker's 30 s
    # leaves that response unread live, so it is not shown here either.
    bad_to = s.t_s[s.irregular]
    bad_from = np.concatenate([s.t_s[:1], s.t_s[:-1]])[s.irregular]
    out = []
    for r in responses:
        m = r.marker
        if last < math.floor(m.t_s + REACT_S):
            out.append(r)  # the daemon waits for the 30 s after a marker in the beats too
            continue
        if np.any((bad_to > m.t_s) & (bad_from < m.t_s + REACT_S)):
            out.append(r)  # not read live: the rhythm was too irregular
            continue
        used = whole
        if baselines:
            b = baseline_for_marker(baselines, m.t_s)
            if b is None:
                out.append(r)
                continue
            key = id(b)
            if key not in bands:
                bands[key] = band(b.rows)
            used = bands[key]
        if used is None:
            out.append(r)
            continue
        react = reactivity(m.t_s, grid, fast, bt, rr, span)
        e = event_response(m.t_s, m.kind, react, grid, fast, *used)
        out.append(
            dataclasses.replace(
                r,
                d_hr_bpm=_finite(e.peak_d_hr_bpm),
                d_ln_rmssd=_finite(e.peak_d_ln_rmssd),
                band_recovery_s=_finite(e.recovery_s),
            )
        )
    return out


def _not_shown_live(responses: list[MarkerResponse], s: IndexSeries) -> list[MarkerResponse]:
    """``responses`` with :attr:`MarkerResponse.not_live` set where the daemon never showed
    a response, whatever was recomputed: a marker imported afterwards, every marker of a
    session whose rows (``s``, as stored) never had a baseline complete, and a marker after
    the start of a rest period never stopped (its baseline never completed; one within a
    step before the run's first row is taken as entered after that start)."""
    none = not baseline_completed(s)
    open_t = open_baseline_from(s)
    open_after = None if open_t is None else open_t - _step_s(s)
    out = []
    for r in responses:
        why = ""
        if r.marker.source is MarkerSource.IMPORT:
            why = NOT_LIVE_IMPORTED
        elif none:
            why = NOT_LIVE_NO_BASELINE
        elif open_after is not None and r.marker.t_s > open_after:
            why = NOT_LIVE_OPEN
        out.append(dataclasses.replace(r, not_live=why) if why else r)
    return out


SCORE_CHANGE_MIN_S = 600.0
"""Scored time after the reference the score change needs: two 5 min means that do not
overlap."""


def analyse_session(rec: SessionRecord) -> SessionAnalysis:
    """Everything a report shows, from one stored session (uses the provisional helpers).

    A baseline period set after the session (``settle log set --baseline``) is not the one
    the live score used: the scores are recomputed against it (:func:`rescored`), and the
    catching-up point with them; where they cannot be (rows recorded before the 64 s LF
    power was stored), they stay as computed live and the summary says so."""
    s = live_s = provisional_series(rec)
    baseline = provisional_baseline(rec, s)
    base_rows = None
    done = completed_baselines(s, session_baseline_s(rec), _kept(rec))
    if baseline is not None:
        # A stored period's rows are those within it; the daemon's own, the rows it sampled.
        used = used_baseline(s, session_baseline_s(rec), _kept(rec))
        within = (s.t_s >= baseline[0]) & (s.t_s <= baseline[1])
        base_rows = used[1] if used is not None and used[0] == baseline else within
    open_from = open_baseline_from(s)
    live_span: tuple[float, float] | None = None
    rescore: bool | None = None  # None: the live baseline; True/False: set afterwards
    rescore_why = ""
    if (
        rec.info.baseline is not None
        and baseline is not None
        and baseline_set_afterwards(s, baseline, session_baseline_s(rec))
    ):
        live_span = live_baseline_span(s, baseline, session_baseline_s(rec), _kept(rec))
        again = rescored(s, baseline)
        rescore = not isinstance(again, str)
        rescore_why = again if isinstance(again, str) else ""
        s = again if not isinstance(again, str) else s
    hold = next((m for m in rec.markers if m.kind == "hold-start"), None)
    if hold is not None:
        reference: float | None = hold.t_s
        ref_kind = "you began holding"
    elif rescore is False and live_span is not None:
        # Scores as computed live: so is the catching-up point, counted from the live
        # baseline's end.
        reference, ref_kind = live_span[1], "the baseline ended"
    elif baseline is not None:
        reference, ref_kind = baseline[1], "the baseline ended"
        detected = live_catching_up(rec) if rescore is None else None
        if detected is None and rescore is None:  # stored without it: as the daemon would
            for b, nxt in itertools.pairwise(done):
                c = catching_up(s, b.period[1])
                if c is not None and c < nxt.from_t_s:
                    detected = c
                    break
        earlier = [b for b in done if detected is not None and b.done_t_s <= detected]
        if earlier and earlier[-1].period[1] < reference:
            # The daemon caught up against an earlier baseline than the last (a rest period
            # marked again afterwards): counted from the last, "did not catch up" was said
            # of a session whose catching up was shown live.
            reference = earlier[-1].period[1]
            ref_kind = (
                "the first baseline ended"
                if earlier[-1] is done[0]
                else "an earlier baseline ended"
            )
    else:
        reference, ref_kind = None, ""
    # The daemon's own detection (processing.live, published in every indices payload) wins,
    # so the report says what the practitioner saw live; the same detector over the stored
    # scores serves sessions recorded without it.
    caught = None if rescore else live_catching_up(rec, reference)
    if reference is not None and caught is None:
        # Recorded without it, or a hold-start imported afterwards that lies past the live
        # detection (which counted from the session start): a latency of -50 s. The same
        # detector runs again from the reference over the stored scores.
        caught = catching_up(s, reference)
    score_start = score_end = None
    if reference is not None:
        after = (s.t_s >= reference) & np.isfinite(s.settling)
        # First and last 5 min must not overlap: under 10 min after the reference they
        # were (partly) the same scores, and under 5 min the change read exactly 0.
        if after.any() and s.t_s[after].max() - reference >= SCORE_CHANGE_MIN_S:
            t_after = s.t_s[after]
            first = after & (s.t_s <= reference + 300.0)
            last = after & (s.t_s >= t_after.max() - 300.0)
            score_start = float(s.settling[first].mean()) if first.any() else None
            score_end = float(s.settling[last].mean()) if last.any() else None
    read = [m for m in rec.markers if m.kind not in _NO_RESPONSE]
    return SessionAnalysis(
        record=rec,
        series=s,
        baseline=baseline,
        reference_t_s=reference,
        reference_kind=ref_kind,
        caught_up_t_s=caught,
        latency_s=None if caught is None or reference is None else caught - reference,
        score_start=score_start,
        score_end=score_end,
        responses=_not_shown_live(
            live_marker_responses(
                rec,
                s,
                baseline,
                provisional_marker_responses(rec, read, irregular_spans(s)),
                rows=base_rows,
                baselines=done,
            ),
            live_s,
        ),
        baseline_complete=baseline_completed(s),
        rhythm=rhythm_summary(s),
        baseline_rescored=rescore,
        live_baseline=live_span,
        rescore_why=rescore_why,
        baseline_rows=base_rows,
        # Rescored, every usable row after the set period has a score again.
        open_baseline_t_s=None if rescore else open_from,
    )


# --- words -----------------------------------------------------------------------------------

_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def duration_words(seconds: float) -> str:
    """``400`` → ``"6 min 40 s"``; under a minute ``"55 s"``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    parts = ([f"{h} h"] if h else []) + [f"{m} min"] + ([f"{sec} s"] if sec else [])
    return " ".join(parts)


def bpm_words(x: float, *, sign: bool = False) -> str:
    """A heart-rate change for a sentence: whole bpm from 10 up, else one decimal, so a
    small change never reads as 0 (``0.3`` → ``"0.3"``, ``12.4`` → ``"12"``; ``sign``:
    ``"+0.3"``)."""
    spec = ("+" if sign else "") + (".0f" if abs(x) >= 9.95 else ".1f")
    return f"{x:{spec}}"


def _count_words(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


def _rhythm_words(r: RhythmSummary) -> str:
    """``"The heart rhythm was too irregular to score for 4 min of 20 min (“…”; …)"``."""
    span = (
        "throughout the session"
        if r.throughout
        else f"for {duration_words(r.irregular_s)} of {duration_words(r.recorded_s)}"
    )
    detail = f"“{r.reason}”"
    if r.share_range_pct is not None and r.share_range_pct[0] != r.share_range_pct[1]:
        lo, hi = r.share_range_pct
        detail += f", {lo:g}–{hi:g} % over that time"
    limit = 100 * IRREGULAR_SHARE_MAX if r.limit_pct is None else r.limit_pct
    detail += (
        f"; a score needs at most {limit:g} %, "
        "and frequent premature beats or a loose strap exceed that"
    )
    return f"The heart rhythm was too irregular to score {span} ({detail})"


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _marker_sentence(kind: str, rs: list[MarkerResponse]) -> str:
    """One sentence on the markers of one kind: a rise after them and its recovery (those
    that came back apart from those that had not, within 3 min or before the session
    ended), heart rate already at its highest when they were entered, no clear rise, a fall,
    too few beats, a rhythm too irregular to read."""
    n = len(rs)
    which = f"the {kind} marker" if n == 1 else f"the {_count_words(n)} {kind} markers"
    irregular = [r for r in rs if r.irregular]
    readable = [r for r in rs if not r.irregular]
    measured = [r for r in readable if r.rise_bpm is not None]
    if not readable:
        return (
            f"Around {which} the heart rhythm was too irregular to read a response "
            "(premature beats jump the heart rate)."
        )
    if not measured:
        return f"Around {which} there were too few beats to measure a response."
    rose = [r for r in measured if r.responded and not r.peak_at_marker]
    up = [r for r in measured if r.responded and r.peak_at_marker]
    fell = [r for r in measured if r.fell]
    flat = [r for r in measured if not r.responded and not r.fell]

    def came_back(group: list[MarkerResponse], level: str = "") -> str:
        """ "came back within 40 s", or which came back and which had not (not within 3 min,
        or the session ended first)."""
        back = [r.recovery_s for r in group if r.recovery_s is not None]
        ended = [r for r in group if r.recovery_s is None and r.data_ended]
        late = [r for r in group if r.recovery_s is None and not r.data_ended]
        parts = []
        if back:
            parts.append((len(back), f"came back{level} within {duration_words(max(back))}"))
        if late:
            parts.append((len(late), f"had not come back{level} after 3 min"))
        if ended:
            left = duration_words(max(cast(float, r.followed_s) for r in ended))
            parts.append(
                (len(ended), f"had not come back{level} by the end of the session, "
                 f"{left} later" if len(ended) == 1 else
                 f"had not come back{level} by the end of the session (at most {left} later)")
            )  # fmt: skip
        if len(parts) == 1:
            return parts[0][1]
        return "; ".join(f"after {_count_words(k)} it {words}" for k, words in parts)

    def mean_rise(group: list[MarkerResponse]) -> str:
        return bpm_words(statistics.fmean(cast(float, r.rise_bpm) for r in group))

    def mean_drop(group: list[MarkerResponse]) -> str:
        on_average = "" if len(group) == 1 else " on average"
        drop = bpm_words(statistics.fmean(cast(float, r.drop_bpm) for r in group))
        return f"{drop} bpm below the 30 s before{on_average}"

    def subset(group: list[MarkerResponse]) -> str:
        k = len(group)
        return which if k == n else f"{_count_words(k)} of the {_count_words(n)} {kind} markers"

    tails = []
    if rose:
        back = came_back(rose)
        joint = " and " if not back.startswith("after ") else "; "
        sentence = f"After {subset(rose)} heart rate rose {mean_rise(rose)} bpm{joint}{back}"
        if up:
            k = len(up)
            tails.append(
                f"at {_count_words(k)}, heart rate was already at its highest when "
                f"{_plural(k, 'it was', 'they were')} entered and did not rise after "
                f"{_plural(k, 'it', 'them')}"
            )
    elif up:
        # The 5 s mean was highest at the marker itself: whatever rise there was came before
        # the marker, so "rose … and came back within 1 s" would describe no response at all.
        k = len(up)
        level = " to the level of the 30 s before"
        if k == 1 and up[0].recovery_s is not None:
            recovered = (
                f"was back to the level of the 30 s before (within 1 bpm) "
                f"{duration_words(up[0].recovery_s)} later"
            )
        elif all(r.recovery_s is not None for r in up):
            recovered = (
                "was back to the level of the 30 s before (within 1 bpm) within "
                f"{duration_words(max(cast(float, r.recovery_s) for r in up))}"
            )
        else:
            recovered = came_back(up, level)
        sentence = (
            f"When {subset(up)} {_plural(k, 'was', 'were')} entered heart rate was already at "
            f"its highest, {mean_rise(up)} bpm above the 30 s before"
            f"{'' if k == 1 else ' on average'}, and did not rise after "
            f"{_plural(k, 'it', 'them')}; it {recovered}"
        )
    elif flat:
        # Heart rate did not leave the swing it had before: no recovery to time.
        peak = statistics.fmean(cast(float, r.rise_bpm) for r in flat)
        swing = ", no more than it swung in them" if round(peak, 1) > _BACK_BPM else ""
        sentence = (
            f"After {subset(flat)} heart rate showed no clear rise (peak "
            f"{bpm_words(peak, sign=True)} bpm against the 30 s before{swing}), so there was "
            "nothing to recover from"
        )
        flat = []
    else:
        # A fall is a response too (a freeze): never "nothing to recover from".
        sentence = (
            f"After {subset(fell)} heart rate showed no clear rise but fell {mean_drop(fell)}"
        )
        fell = []
    if fell:
        k = len(fell)
        tails.append(f"at {_count_words(k)}, heart rate fell instead, {mean_drop(fell)}")
    if flat:
        tails.append(f"{_count_words(len(flat))} showed no clear rise")
    if len(measured) < len(readable):
        tails.append(f"{_count_words(len(readable) - len(measured))} had too few beats to measure")
    if irregular:
        k = len(irregular)
        tails.append(
            f"around {_count_words(k)} the heart rhythm was too irregular to read a response"
        )
    return sentence + "".join(f"; {t}" for t in tails) + "."


def _rhythm_blocked(a: SessionAnalysis) -> bool:
    """The baseline never completed and the rhythm was too irregular for at least half of
    the session: the rhythm, not the session's length, is why there is no score."""
    r = a.rhythm
    return not a.baseline_complete and r is not None and 2 * r.irregular_s >= r.recorded_s


def _last_scores_words(s: IndexSeries) -> str:
    """ "of the session", or, when the session's last rows carry no score (the strap taken
    off, a rhythm too irregular), "of scores, the last one 15 min before the end of the
    session": the session's last minutes were not what was averaged or held."""
    scored = s.t_s[np.isfinite(s.settling)]
    tail = float(s.t_s.max() - scored.max()) if scored.shape[0] else 0.0
    if tail <= 1.5 * _step_s(s):
        return "of the session"
    return f"of scores, the last one {duration_words(tail)} before the end of the session"


def _not_caught_up_words(a: SessionAnalysis) -> str:
    """The summary's first sentence for a session with a baseline and a reference that did
    not catch up: whether it did not, could not have in the time left, or was under way."""
    s, ref, kind = a.series, cast(float, a.reference_t_s), a.reference_kind
    rule = (
        f"reach {CATCH_THRESHOLD:g} and stay at {CATCH_THRESHOLD - CATCH_HYSTERESIS:g} or "
        f"above for {CATCH_HOLD_S:g} s"
    )
    v = verdict(a)
    if v is Verdict.NO_SCORE:
        return f"There was no settling score after {kind} to tell whether physiology caught up."
    scored_t = s.t_s[np.isfinite(s.settling) & (s.t_s >= ref)]
    if v is Verdict.UNDER_WAY:
        run = cast(float, _open_run(s, ref))
        return (
            "Physiology was catching up when the session ended: "
            + (
                f"{duration_words(run - ref)} after {kind} the settling score reached "
                if run - ref >= 0.5
                else f"from when {kind} the settling score was at or above "
            )
            + f"{CATCH_THRESHOLD:g}, and it stayed at "
            f"{CATCH_THRESHOLD - CATCH_HYSTERESIS:g} or above for the last "
            f"{duration_words(float(scored_t.max()) - run)} {_last_scores_words(s)}, short "
            f"of the {CATCH_HOLD_S:g} s that count as caught up."
        )
    if v is Verdict.TOO_SHORT:
        if float(s.t_s.max()) - ref < CATCH_HOLD_S:
            return (
                f"The session ended {duration_words(float(s.t_s.max()) - ref)} after {kind}, "
                f"too soon to tell whether physiology caught up: the settling score has to {rule}."
            )
        return (
            f"There was only {duration_words(float(scored_t.max()) - ref)} of settling score "
            f"after {kind}, too little to tell whether physiology caught up: the score has to "
            f"{rule}."
        )
    return f"Physiology did not catch up after {kind}: the settling score did not {rule}."


def _period_words(p: tuple[float, float]) -> str:
    if p[0] < 1.0:
        return f"the first {duration_words(p[1])}"
    return f"{duration_words(p[0])} to {duration_words(p[1])}"


def _set_baseline_words(
    period: tuple[float, float], live: tuple[float, float] | None, rescored: bool, why: str = ""
) -> str:
    """Say that the baseline was set after the session, and what that changed. ``live``:
    the period of the baseline the live score used, None when the daemon completed none
    (no live score at all: it said "as computed live against the first 9 min 55 s" of a
    session whose baseline never completed)."""
    if rescored:
        was = (
            f"live they were against {_period_words(live)}"
            if live is not None
            else "live there were none, as no baseline was completed"
        )
        return (
            f"The scores are against the baseline set after the session "
            f"({_period_words(period)}), recomputed from the stored indices; {was}."
        )
    because = (
        "fewer than three moments in it had what a baseline needs (a usable rhythm and 64 s "
        "of beats for the slow-oscillation power)"
        if why == RESCORE_FEW
        else "this session was recorded before Settle stored what recomputing the scores needs"
    )
    if live is None:
        return (
            f"The baseline ({_period_words(period)}) was set after the session, but {because}; "
            "no baseline was completed live either, so there is no settling score."
        )
    return (
        f"The baseline ({_period_words(period)}) was set after the session, but {because}: "
        f"the settling score, catching up and score change are as computed live against "
        f"{_period_words(live)}."
    )


def _session_length_s(rec: SessionRecord) -> float:
    """How far the session's time axis reaches (s): its wall-clock length times its time
    scale, or its last beat, indices row or marker if later (a running session: those)."""
    info = rec.info
    wall = 0.0
    if info.stopped_ms is not None:
        wall = max(0.0, (info.stopped_ms - info.started_ms) / 1000.0) * info.time_scale
    times = [b.beat_t_s for b in rec.beats[-1:]] + [b.beat_t_s for b in rec.ecg_beats[-1:]]
    times += [r.t_s for r in rec.indices[-1:]] + [m.t_s for m in rec.markers]
    return max([wall, *times])


def summary_text(a: SessionAnalysis) -> str:
    """A plain-language summary of one session (a few sentences)."""
    rec = a.record
    if len(a.series.t_s) == 0:
        if rec.info.state is SessionState.RUNNING:
            return (
                f"This session holds {len(rec.beats)} beats but no indices yet, "
                "too little to say how physiology moved."
            )
        # Finished: no "yet" (it read "holds 0 beats but no indices yet" for 10 min of none).
        length = duration_words(_session_length_s(rec))
        if not rec.beats and not rec.ecg_beats:
            return (
                f"This session recorded no beats in its {length}, so there is nothing to say "
                "about how physiology moved."
            )
        return (
            f"This session of {length} holds {len(rec.beats) or len(rec.ecg_beats)} beats but "
            "no indices, too little to say how physiology moved."
        )
    parts: list[str] = []
    rhythm = a.rhythm
    if rhythm is not None and _rhythm_blocked(a):
        # Not "did not catch up": there was never a score that could have.
        parts.append(_rhythm_words(rhythm) + ".")
        parts.append(
            "So the baseline could not be completed: this session has no settling score and "
            "no catching-up point."
        )
        rhythm = None  # said
    elif a.latency_s is not None:
        after = duration_words(a.latency_s)
        parts.append(f"Physiology caught up {after} after {a.reference_kind}.")
    elif not a.baseline_complete or a.reference_t_s is None:
        parts.append("No baseline was completed, so there is no settling score to judge.")
    else:
        parts.append(_not_caught_up_words(a))
    if a.open_baseline_t_s is not None:
        parts.append(
            f"From {duration_words(a.open_baseline_t_s)} on a new baseline was being collected "
            "and the session ended before it completed, so there is no settling score after "
            "that."
        )
    if a.baseline_rescored is not None and a.baseline is not None:
        parts.append(
            _set_baseline_words(a.baseline, a.live_baseline, a.baseline_rescored, a.rescore_why)
        )
    if a.score_start is not None and a.score_end is not None:
        again = ""
        if a.reference_kind in ("the first baseline ended", "an earlier baseline ended"):
            again = " (against the baseline taken last)"
        parts.append(
            f"The settling score averaged {a.score_start:.0f} in the first five minutes after "
            f"{a.reference_kind} and {a.score_end:.0f} in the last five minutes "
            f"{_last_scores_words(a.series)}{again} (50 = as at baseline)."
        )
    if rhythm is not None:
        parts.append(_rhythm_words(rhythm) + ": the settling score is missing for that time.")
    by_kind: dict[str, list[MarkerResponse]] = {}
    for r in a.responses:
        by_kind.setdefault(r.marker.kind, []).append(r)
    parts.extend(_marker_sentence(kind, rs) for kind, rs in by_kind.items())
    text = " ".join(parts)
    if rec.info.state is SessionState.RUNNING:
        # A report of a session still being recorded (History's report page, `settle
        # report` meanwhile) said "The session ended 45 s after the baseline ended".
        for ended, so_far in _RUNNING_WORDS:
            text = ended.sub(so_far, text)
        last = duration_words(float(a.series.t_s.max()))
        text = f"This session is still running: what follows covers its first {last}. " + text
    return text


_RUNNING_WORDS = (
    (
        re.compile(r"The session ended (.+?) after (.+?), too soon"),
        r"Only \1 have passed since \2, too soon",
    ),
    (re.compile(r"when the session ended"), "at its latest values"),
    (
        re.compile(r"and the session ended before it completed, so there is no settling score"),
        "and is not complete yet, so there is no settling score",
    ),
    (re.compile(r"by the end of the session"), "so far"),
    (re.compile(r"for the last (.+?) of the session"), r"for the last \1 so far"),
    (re.compile(r"in the last five minutes of the session"), "in the last five minutes so far"),
    (re.compile(r"before the end of the session"), "before its latest values"),
)
"""What a finished session's summary says about its end, and how a running one says it."""


# --- rendering -------------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ReportError(
            "reports need matplotlib (pip install matplotlib, or settle-hrv[report])"
        ) from exc
    return plt


_KIND_COLOURS = {
    "hold-start": "tab:green",
    "hold-lapse": "tab:olive",
    "hold-resume": "tab:green",
    "shame": "tab:red",
    "threat": "tab:purple",
    "discomfort": "tab:orange",
    "attention": "tab:cyan",
    "doubt": "tab:brown",
    "note": "tab:gray",
}


def irregular_spans(s: IndexSeries) -> list[tuple[float, float]]:
    """(start_s, end_s) of each run of rows whose rhythm was too irregular to score; a row
    stands for the step before it."""
    step = _step_s(s)
    spans: list[tuple[float, float]] = []
    for t, bad in zip(s.t_s.tolist(), s.irregular.tolist(), strict=True):
        if not bad:
            continue
        if spans and t - spans[-1][1] <= step * 1.5:
            spans[-1] = (spans[-1][0], t)
        else:
            spans.append((max(0.0, t - step), t))
    return spans


def render_png(a: SessionAnalysis, path: Path | IO[bytes]) -> None:
    """Three panels over minutes: HR, lnRMSSD, settling score with its components; baseline
    band, markers and the catching-up point on each; grey hatching on every panel where
    the rhythm was too irregular to score."""
    plt = _pyplot()
    s = a.series
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    try:
        t_min = s.t_s / 60.0
        grid, hr = _hr_1hz(a.record)
        ax_hr, ax_ln, ax_sc = axes
        if grid.shape[0]:
            ax_hr.plot(grid / 60.0, hr, color="0.6", lw=0.8, label="beat-to-beat (5 s mean)")
        ax_hr.plot(t_min, s.hr_bpm, color="tab:red", lw=1.5, label="60 s window")
        ax_hr.set_ylabel("heart rate (bpm)")
        ax_ln.plot(t_min, s.ln_rmssd, color="tab:blue", lw=1.5)
        ax_ln.set_ylabel("lnRMSSD (ln ms)")
        ax_sc.plot(t_min, s.settling, color="black", lw=1.8, label="settling score")
        ax_sc.axhline(50, color="0.5", lw=0.8, ls=":")
        ax_sc.axhline(CATCH_THRESHOLD, color="tab:green", lw=0.8, ls=":")
        ax_sc.set_ylim(0, 100)
        ax_sc.set_ylabel("settling (0–100)")
        ax_z = ax_sc.twinx()
        ax_z.plot(t_min, s.z_hr, color="tab:red", lw=0.9, alpha=0.7, label="z HR (lower = up)")
        ax_z.plot(t_min, s.z_ln_rmssd, color="tab:blue", lw=0.9, alpha=0.7, label="z lnRMSSD")
        ax_z.plot(t_min, s.z_slow, color="tab:purple", lw=0.9, alpha=0.7, label="z slow (LF)")
        ax_z.set_ylabel("components (baseline SDs)")
        ax_sc.set_xlabel("minutes since session start")
        spans = irregular_spans(s)
        # On every panel: the HR and lnRMSSD of premature beats are not the person's either.
        for ax in axes:
            for i, (t0, t1) in enumerate(spans):
                ax.axvspan(t0 / 60.0, t1 / 60.0, color="0.55", alpha=0.25, hatch="//", lw=0,
                           label="rhythm too irregular to score"
                           if i == 0 and ax is ax_sc else None)  # fmt: skip
        if not np.isfinite(s.settling).any():
            why = ""
            if not a.baseline_complete and not _rhythm_blocked(a):
                why = " (no baseline completed)"
            elif a.rhythm is not None:
                why = " (rhythm too irregular)"
            ax_sc.text(0.5, 0.5, f"no settling score{why}", transform=ax_sc.transAxes,
                       ha="center", va="center", fontsize=11, color="0.25",
                       bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85})  # fmt: skip
        elif spans:
            ax_sc.legend(loc="upper left", fontsize=7)
        if a.baseline is not None:
            b0, b1 = a.baseline[0] / 60.0, a.baseline[1] / 60.0
            for ax in axes:
                ax.axvspan(b0, b1, color="tab:blue", alpha=0.08, lw=0)
            # Only the rows of the baseline used: an automatic one a marked rest period
            # replaced (rows published while it was collected too) pooled 75 and 60 bpm.
            base = (
                a.baseline_rows
                if a.baseline_rows is not None
                else (s.t_s >= a.baseline[0]) & (s.t_s <= a.baseline[1])
            )
            for ax, vals in ((ax_hr, s.hr_bpm), (ax_ln, s.ln_rmssd)):
                v = vals[base & np.isfinite(vals)]
                if v.shape[0] >= 2:
                    mu, sd = float(v.mean()), float(v.std(ddof=1))
                    ax.axhspan(mu - sd, mu + sd, color="tab:blue", alpha=0.12, lw=0)
        for m in a.record.markers:
            for ax in axes:
                ax.axvline(m.t_s / 60.0, color=_KIND_COLOURS.get(m.kind, "0.3"), lw=0.9, ls="--")
            ax_hr.annotate(
                m.kind,
                (m.t_s / 60.0, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color=_KIND_COLOURS.get(m.kind, "0.3"),
            )
        if a.caught_up_t_s is not None:
            for ax in axes:
                ax.axvline(a.caught_up_t_s / 60.0, color="tab:green", lw=2.0)
            ax_sc.annotate(
                "caught up",
                (a.caught_up_t_s / 60.0, 95),
                color="tab:green",
                fontsize=8,
                ha="left",
            )
        if s.t_s.shape[0] == 0 and grid.shape[0] == 0:
            # Nothing plotted: the session's own length, not matplotlib's −0.04..0.04 min.
            times = [0.0, _session_length_s(a.record)] + [m.t_s for m in a.record.markers]
            lo, hi = min(times) / 60.0, max(times) / 60.0
            ax_sc.set_xlim(lo, hi if hi > lo else lo + 1.0)
        ax_hr.legend(loc="lower left", fontsize=7)
        ax_z.legend(loc="lower right", fontsize=7)
        fig.suptitle(f"Settle session {a.record.info.id}")
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:{spec}}{unit}"


def _recovery_cell(r: MarkerResponse) -> str:
    if r.irregular:
        return "rhythm irregular: not read"
    if r.rise_bpm is None:
        return "too few beats"
    if r.responded is False:
        return f"no clear rise (fell {r.drop_bpm:.1f})" if r.fell else "no clear rise"
    if r.responded and r.recovery_s is None:
        back = (
            f"not by the end ({duration_words(cast(float, r.followed_s))} later)"
            if r.data_ended
            else "not within 3 min"
        )
    else:
        back = _fmt(r.recovery_s, ".0f", " s")
    return f"{back} (highest at the marker)" if r.responded and r.peak_at_marker else back


_RECOMPUTED = {
    NOT_LIVE_IMPORTED: "recomputed as the daemon computes it",
    NOT_LIVE_NO_BASELINE: "recomputed against the baseline set afterwards",
    NOT_LIVE_OPEN: "recomputed against the baseline before it",
}


def _live_cells(r: MarkerResponse) -> str:
    """The marker table's three "as shown live" cells; for a response the daemon never
    showed (:attr:`MarkerResponse.not_live`) one cell across them that says so and why,
    with the values recomputed, if any (an imported marker's read "−8.2" under "as the
    daemon showed it live")."""
    if not r.not_live:
        return (
            f"<td>{_fmt(r.d_hr_bpm, '+.1f')}</td><td>{_fmt(r.d_ln_rmssd, '+.2f')}</td>"
            f"<td>{_fmt(r.band_recovery_s, '.0f', ' s')}</td>"
        )
    text = f"not shown live: {r.not_live}"
    if r.d_hr_bpm is not None:
        back = (
            f"back in the baseline band after {r.band_recovery_s:.0f} s"
            if r.band_recovery_s is not None
            else "not back in the baseline band"
        )
        text += (
            f"; {_RECOMPUTED[r.not_live]}: ΔHR peak {r.d_hr_bpm:+.1f} bpm, ΔlnRMSSD "
            f"{_fmt(r.d_ln_rmssd, '+.2f')}, {back}"
        )
    return f'<td colspan="3" class="text">{html.escape(text)}</td>'


def _user(text: str) -> str:
    """User text (an intention, a marker's text, notes, a tag, a strap's name) for the page:
    escaped and isolated in ``<bdi>``, so a bidi control in it (U+202E, right-to-left
    override) cannot reorder the text around it — ``(mqtt)`` after a marker's text read
    ``(tqqm)``."""
    return f"<bdi>{html.escape(text)}</bdi>"


def _beats_cell(rec: SessionRecord) -> str:
    """The beats the analysis used, and what was recorded: an ECG-driven session read "0"
    (the strap's beats) beside indices from 479 R peaks."""
    used = analysed_beats(rec)[0].shape[0]
    if rec.ecg_beats:
        beats = (
            f"{used} analysed ({len(rec.beats)} from the strap, {len(rec.ecg_beats)} R peaks "
            "of the raw ECG)"
        )
    elif used != len(rec.beats):
        beats = f"{used} analysed of {len(rec.beats)}"
    else:
        beats = str(used)
    return f"{beats} / {len(rec.gaps)}"


def _figure_alt(a: SessionAnalysis) -> str:
    """The figure's text alternative: what it plots, the catching-up point if any, and that
    the summary above says what it shows."""
    alt = "Figure: heart rate, lnRMSSD and settling score over the session"
    if a.baseline is not None:
        alt += f", the baseline ({_period_words(a.baseline)}) shaded"
    if a.caught_up_t_s is not None:
        alt += f", caught up at {duration_words(a.caught_up_t_s)} (green line)"
    if a.record.markers:
        k = len(a.record.markers)
        lines = _plural(k, "marker as a dashed line", "markers as dashed lines")
        alt += f", {_count_words(k)} {lines}"
    return alt + ". The summary above says what it shows."


def render_html(a: SessionAnalysis, png: bytes, png_name: str | None) -> str:
    """A self-contained page: summary, session log, the figure (inlined), marker table.
    ``png_name``: the file the figure is also saved as (None: not kept, not mentioned)."""
    info = a.record.info
    e = html.escape
    saved = f"Also saved as {e(png_name)}. " if png_name is not None else ""
    started = info.local(info.started_ms)  # the recording's clock, wherever it is read
    rows = "".join(
        "<tr>"
        f"<td>{e(duration_words(r.marker.t_s))}</td><td>{e(r.marker.kind)}</td>"
        f'<td class="text">{_user(r.marker.text)}</td><td>{_fmt(r.pre_hr_bpm, ".1f")}</td>'
        f"<td>{_fmt(r.peak_hr_bpm, '.1f')}</td><td>{_fmt(r.rise_bpm, '+.1f')}</td>"
        f"<td>{_recovery_cell(r)}</td>{_live_cells(r)}"
        "</tr>"
        for r in a.responses
    )
    all_markers = "".join(
        f"<li>{e(duration_words(m.t_s))} — <b>{e(m.kind)}</b> {_user(m.text)} "
        f"<small>({e(m.source.value)})</small></li>"
        for m in a.record.markers
    )
    intention = "–"
    if info.intention is not None:
        i = info.intention
        intention = e(i.target.value)
        if i.statement:
            intention += f": “{_user(i.statement)}”"
        if i.practice:  # left out when none was given (it read "(practice)")
            intention += f" ({_user(i.practice)})"
    tags = ", ".join(_user(t) for t in info.tags) or "–"
    notes = _user(info.notes) if info.notes else "–"
    img = base64.b64encode(png).decode("ascii")
    shading = "Shaded: baseline period and its mean ± 1 SD."
    if a.baseline is None:
        shading = "No baseline was completed, so none is shaded."
        if a.baseline_complete:
            shading = "No baseline period was stored, so none is shaded."
    if a.rhythm is not None:
        shading += (
            " Grey hatching: rhythm too irregular to score (marker responses there are not read)."
        )
    if a.caught_up_t_s is not None:
        shading += " Green line: catching-up point."
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Settle session {e(info.id)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
  color: #222; background: #fff; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .3em .6em; }}
.wide {{ overflow-x: auto; max-width: 100%; }} h1, p {{ overflow-wrap: break-word; }}
@media (max-width: 30em) {{ body {{ margin: 1em auto; }} h1 {{ font-size: 1.5em; }} }}
.summary {{ font-size: 1.15em; background: #f3f7f3; padding: 1em; border-radius: .4em; }}
small {{ color: #666; }}
.text, .notes, li {{ overflow-wrap: anywhere; }} .notes {{ white-space: pre-wrap; }}
/* Dark as the dashboard around it (a white page glared in its frame); the figure keeps its
   light background, framed. */
@media (prefers-color-scheme: dark) {{
  body {{ color: #e6ebe8; background: #111614; }} td, th {{ border-color: #3d4742; }}
  .summary {{ background: #1f2a24; }} small {{ color: #a7b0ab; }} a {{ color: #7cc4ad; }}
  img {{ border-radius: .3em; }}
}}
</style></head><body>
<h1>Session {e(info.id)}</h1>
<p class="summary" id="summary">{e(summary_text(a))}</p>
<div class="wide"><table aria-label="Session log">
<tr><th scope="row">started</th><td>{e(started.strftime("%Y-%m-%d %H:%M:%S %Z"))}</td></tr>
<tr><th scope="row">state</th><td>{e(info.state.value)}</td></tr>
<tr><th scope="row">device</th><td>{_user(info.device_id)}</td></tr>
<tr><th scope="row">intention</th><td>{intention}</td></tr>
<tr><th scope="row">tags</th><td>{tags}</td></tr>
<tr><th scope="row">notes</th><td class="notes">{notes}</td></tr>
<tr><th scope="row">beats / gaps</th><td>{_beats_cell(a.record)}</td></tr>
</table></div>
<h2>Over time</h2>
<p><img src="data:image/png;base64,{img}" alt="{e(_figure_alt(a))}"
 aria-describedby="summary" style="max-width:100%"><br><small>{saved}{e(shading)}</small></p>
<h2>Reactivity and recovery per marker</h2>
<div class="wide" role="region" tabindex="0"
 aria-label="Reactivity and recovery per marker (scrolls sideways)">
<table><caption>Heart rate after each marker other than hold-start (times since the session
start): beat by beat, and as the daemon showed it live against the baseline</caption>
<tr><th scope="col" rowspan="2">time</th><th scope="col" rowspan="2">kind</th>
<th scope="col" rowspan="2">text</th>
<th scope="colgroup" colspan="4">beat by beat</th>
<th scope="colgroup" colspan="3">as shown live (vs baseline)</th></tr>
<tr><th scope="col">HR before (bpm)</th><th scope="col">peak (bpm)</th><th scope="col">rise</th>
<th scope="col">back within 1 bpm after</th><th scope="col">ΔHR peak (bpm)</th>
<th scope="col">ΔlnRMSSD (30 s)</th><th scope="col">back in baseline band</th></tr>
{rows or '<tr><td colspan="10">no markers other than hold-start</td></tr>'}
</table></div>
<h2>All markers</h2><ul>{all_markers or "<li>none</li>"}</ul>
<p><small>Catching up: the settling score reaches {CATCH_THRESHOLD:g} and stays at
{CATCH_THRESHOLD - CATCH_HYSTERESIS:g} or above for {CATCH_HOLD_S:g} s. Beat by beat: peak of
the 5 s mean heart rate within 60 s after a marker minus the mean over the 30 s before. As
shown live: the daemon's event-locked response (the 5 s mean HR within 30 s after the marker
and the lnRMSSD of those 30 s, against the baseline; back in the baseline band counted from the
marker, after the peak), the values behind the per-kind averages the daemon published in the
session. A marker the daemon never showed a response for (imported afterwards with settle log
import, or entered while no baseline it would complete was in force) says so; its values are
recomputed the same way.
</small></p>
</body></html>
"""


def output_directory(out_dir: Path, what: str, *, create: bool = True) -> Path:
    """``out_dir`` for ``settle report`` / ``trends --out``: an existing directory, or one
    created (mode 0700) when its parent exists (``create=False``: only checked).
    :class:`ExportRefused` for a file, :class:`ExportError` otherwise."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportRefused(out_dir, f"--out must be a directory for {what}")
    if not out_dir.parent.is_dir():
        raise ExportError(out_dir, f"directory {out_dir.parent} does not exist")
    if not create:
        return out_dir
    try:
        out_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ExportError(out_dir, f"cannot create directory: {exc.strerror or exc}") from exc
    return out_dir


class OutputExists(ExportRefused):
    """An output file exists and replacing it was not asked for (``--force``)."""


def _refuse_existing(paths: Sequence[Path], *, force: bool) -> None:
    """:class:`ExportRefused` before anything is written if one of ``paths`` is something no
    file may replace even with ``force`` (a directory, a device, a pipe: as ``export``
    says, not "file exists (use --force to replace it)", which could not help), then
    :class:`OutputExists` without ``force`` if one exists."""
    for p in paths:
        why = not_replaceable(p)
        if why is not None:
            raise ExportRefused(p, why)
    if force:
        return
    for p in paths:
        if os.path.lexists(p):
            raise OutputExists(p, "file exists (use --force to replace it)")


def write_report(
    store: SessionStore,
    session_id: str,
    out_dir: Path,
    *,
    png_kept: bool = True,
    force: bool = True,
) -> tuple[Path, Path]:
    """Write ``settle-<id>-report.png`` and ``.html`` into ``out_dir`` (created if its parent
    exists); return both paths. ``png_kept=False``: the caller will not keep the PNG (the
    page inlines it anyway), so the page does not say it is also saved as that file.
    ``force=False`` (``settle report`` without ``--force``): :class:`OutputExists` before
    anything is written if either file exists (an edited report was silently replaced).
    :class:`ExportRefused` before anything is written, with or without ``force``, if
    either name holds a directory, a device or a pipe. Raises :class:`ExportError` /
    :class:`ReportError`."""
    out_dir = output_directory(out_dir, "a report", create=False)
    png_path = out_dir / plain_name(f"settle-{session_id}-report.png", out_dir)
    html_path = out_dir / plain_name(f"settle-{session_id}-report.html", out_dir)
    _refuse_existing([png_path, html_path], force=force)
    for p in (png_path, html_path):
        refuse_database(p)
    rec = store.read_session(session_id)
    a = analyse_session(rec)
    buf = io.BytesIO()
    render_png(a, buf)
    png = buf.getvalue()
    page = render_html(a, png, png_path.name if png_kept else None)
    # Created only now: a store that could not be read left an empty folder behind.
    output_directory(out_dir, "a report")
    # Both or neither: a new picture beside an old page (or none) looked like a report.
    write_all([(png_path, png), (html_path, page)], replace=force)
    return png_path, html_path


# --- trends ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SessionOutcome:
    """One session in the trends table: ``latency_s`` to catching up (s, None if it did not),
    ``score_change`` last-5-min minus first-5-min mean settling score, ``median_recovery_s``
    over its reaction markers that had a clear response and came back within 3 min (s; None
    if none did), ``n_reactions`` how many reaction markers had a response read (not those
    with too few beats around them — a gap, the session's end — nor those in
    ``n_irregular``), ``n_responses`` how many of them had a clear heart-rate response
    (:attr:`MarkerResponse.responded`) that rose after the marker (not
    :attr:`MarkerResponse.peak_at_marker`)."""

    session_id: str
    started_ms: int
    target: str
    latency_s: float | None
    score_change: float | None
    median_recovery_s: float | None
    n_reactions: int
    n_responses: int = 0
    scored: bool = True
    """Whether any settling score exists after the reference: without one (rhythm too
    irregular, no baseline, no reference) "did not catch up" cannot be told."""
    verdict: Verdict = Verdict.NOT_YET
    """Caught up, not yet, under way or too short when the session ended, or no score."""
    device_id: str = ""
    """The strap the session was recorded from (with several straps: several people)."""
    reference: str | None = None
    """What the latency counts from: ``"hold-start"`` (the first hold-start marker),
    ``"baseline end"``, or None (no reference)."""
    n_irregular: int = 0
    """Reaction markers left out of ``n_reactions``: the rhythm was too irregular around
    them to read a response."""


_REFERENCE_NAMES = {
    "you began holding": "hold-start",
    "the baseline ended": "baseline end",
    "the first baseline ended": "baseline end",
    "an earlier baseline ended": "baseline end",
}


def outcome(a: SessionAnalysis) -> SessionOutcome:
    """The trends line of one analysed session."""
    info = a.record.info
    # Reactions only: the report reads notes and hold lapses too, as the daemon does.
    reactions = [r for r in a.responses if r.marker.kind not in _NOT_REACTIONS]
    # A marker at which heart rate was already at its highest had no rise after it to
    # recover from: neither a response nor a recovery time (as the report words it).
    readable = [r for r in reactions if not r.irregular]
    # Too few beats around it (a gap, the session's end): no response was read either way.
    measured = [r for r in readable if r.rise_bpm is not None]
    rises = [r for r in measured if r.responded and not r.peak_at_marker]
    recov = [r.recovery_s for r in rises if r.recovery_s is not None]
    change = None
    if a.score_start is not None and a.score_end is not None:
        change = a.score_end - a.score_start
    return SessionOutcome(
        session_id=info.id,
        started_ms=info.started_ms,
        target="–" if info.intention is None else info.intention.target.value,
        latency_s=a.latency_s,
        score_change=change,
        median_recovery_s=statistics.median(recov) if recov else None,
        n_reactions=len(measured),
        n_responses=len(rises),
        n_irregular=len(reactions) - len(readable),
        reference=_REFERENCE_NAMES.get(a.reference_kind) if a.reference_t_s is not None else None,
        scored=a.reference_t_s is not None
        and bool(np.any((a.series.t_s >= a.reference_t_s) & np.isfinite(a.series.settling))),
        verdict=verdict(a),
        device_id=info.device_id,
    )


def trends(
    store: SessionStore, target: IntentionTarget | None = None, device: str | None = None
) -> list[SessionOutcome]:
    """One :class:`SessionOutcome` per stored session (oldest first), only those whose
    intention target is ``target`` and, when given, recorded from strap ``device``."""
    out = []
    for summary in store.list_sessions():
        if device is not None and summary.device_id != device:
            continue
        info = store.get(summary.id)
        if target is not None and (info.intention is None or info.intention.target != target):
            continue
        out.append(outcome(analyse_session(store.read_session(summary.id))))
    return out


_VERDICT_LABELS = {
    Verdict.NOT_YET: "not yet", Verdict.UNDER_WAY: "under way", Verdict.TOO_SHORT: "too short",
    Verdict.NO_SCORE: "no score", Verdict.CAUGHT_UP: "",
}  # fmt: skip
_REFERENCE_MARKERS = {"hold-start": "o", "baseline end": "s", None: "o"}


def _trend_time(started_ms: int) -> dt.datetime:
    """A session's x position: its start to the minute, so sessions started together (a
    group's straps, a second apart) share one position instead of spreading over an axis of
    seconds. An absolute time (UTC): placed by local wall time, a session at 02:10 after the
    clocks went back sat before the one at 02:40 half an hour before it, and the line ran
    back."""
    t = dt.datetime.fromtimestamp(started_ms / 1000, tz=dt.UTC)
    return t.replace(second=0, microsecond=0)


def _label_tz(outcomes: Sequence[SessionOutcome]) -> dt.tzinfo:
    """The trends axis' labels: local time at the latest session's start, as a fixed offset
    (matplotlib's date locator, given a zone with daylight-saving rules, took the span of
    two sessions either side of the clocks going back by their wall times, which run
    backwards, and asked for billions of ticks)."""
    latest = max(o.started_ms for o in outcomes)
    return cast(dt.tzinfo, dt.datetime.fromtimestamp(latest / 1000).astimezone().tzinfo)


def _empty_panel(ax: Any, sentence: str) -> None:
    """A trends panel with nothing to plot: the sentence instead of a y axis (the dates stay
    on the x axis the panels share)."""
    ax.yaxis.set_visible(False)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.text(0.5, 0.5, sentence, transform=ax.transAxes, ha="center", va="center",
            fontsize=10, color="0.25")  # fmt: skip


def write_trends_png(
    outcomes: Sequence[SessionOutcome], path: Path, *, force: bool = True
) -> Path | None:
    """Plot latency, score change and median recovery per session over calendar time (to
    the minute, placed by absolute time, labelled in the local time of the latest
    session), one colour per target model (and strap, with several). Latencies are drawn
    with one marker shape per reference (circle: from hold-start; square: from the
    baseline end) and joined only within one; a session that did not catch up is a hollow
    marker at the top of the latency panel, labelled ("not yet", "no score", ...).
    ``force=False``: :class:`OutputExists` if ``path`` exists; :class:`ExportRefused` either
    way if it is a directory, a device or a pipe. Without sessions nothing is
    written (it wrote an empty plot, and matplotlib warned of its empty legend on
    stderr): None."""
    if not outcomes:
        return None
    _refuse_existing([path], force=force)
    refuse_database(path)
    plt = _pyplot()
    import matplotlib.dates as mdates
    import matplotlib.transforms as mtransforms
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True, constrained_layout=True)
    try:
        # One line per target model, and per strap when there are several: the sessions of
        # a group practice are different people, not one person's progress.
        several = len({o.device_id for o in outcomes}) > 1
        groups = sorted({(o.device_id if several else "", o.target) for o in outcomes})
        top = mtransforms.blended_transform_factory(axes[0].transData, axes[0].transAxes)
        refs_seen: set[str | None] = set()
        for dev, tgt in groups:
            sel = [o for o in outcomes if o.target == tgt and (not several or o.device_id == dev)]
            label = f"{dev} · {tgt}" if several else tgt
            x = [_trend_time(o.started_ms) for o in sel]
            colour = None
            for ax, vals in zip(
                axes[1:],
                (
                    [math.nan if o.score_change is None else o.score_change for o in sel],
                    [math.nan if o.median_recovery_s is None else o.median_recovery_s for o in sel],
                ),
                strict=True,
            ):
                (line,) = ax.plot(x, vals, marker="o", color=colour)
                colour = line.get_color()
            for ref in sorted({o.reference for o in sel}, key=str):
                pts = [(xi, o) for xi, o in zip(x, sel, strict=True) if o.reference == ref]
                lat = [math.nan if o.latency_s is None else o.latency_s / 60 for _x, o in pts]
                if any(math.isfinite(v) for v in lat):
                    refs_seen.add(ref)
                axes[0].plot([p[0] for p in pts], lat, marker=_REFERENCE_MARKERS[ref],
                             color=colour, ls="-" if ref == "hold-start" else "--")  # fmt: skip
            # Sessions that did not catch up: hollow markers along the top edge, named.
            for xi, o in zip(x, sel, strict=True):
                if o.latency_s is not None:
                    continue
                xn = float(mdates.date2num(xi))  # type: ignore[no-untyped-call]
                axes[0].plot([xn], [0.97], transform=top, marker="o", mfc="none", color=colour,
                             ls="none", clip_on=False)  # fmt: skip
                axes[0].annotate(_VERDICT_LABELS[o.verdict], (xn, 0.97), xycoords=top,
                                 xytext=(0, -6), textcoords="offset points", fontsize=7,
                                 color=colour, va="top", ha="center", rotation=90)  # fmt: skip
            axes[1].lines[-1].set_label(label)
        # Concise dates: sessions seconds apart were labelled "36:12.000000". Sessions all
        # within a few minutes get an hour around them (one x position would be no axis).
        if outcomes:
            xs = [_trend_time(o.started_ms) for o in outcomes]
            lo, hi = min(xs), max(xs)
            if hi - lo < dt.timedelta(hours=1):
                mid = lo + (hi - lo) / 2
                axes[-1].set_xlim(mid - dt.timedelta(minutes=30), mid + dt.timedelta(minutes=30))
        local = _label_tz(outcomes)
        locator = mdates.AutoDateLocator(tz=local)  # type: ignore[no-untyped-call]
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=local))  # type: ignore[no-untyped-call]
        axes[0].set_ylabel("catching up (min)")
        # Room above the highest latency for the sessions that did not catch up.
        lat = [o.latency_s / 60 for o in outcomes if o.latency_s is not None]
        axes[0].set_ylim(0, 1.4 * max(lat) if lat and max(lat) > 0 else 1.0)
        axes[1].set_ylabel("score change")
        axes[2].set_ylabel("recovery (s)")
        if all(o.score_change is None for o in outcomes):
            _empty_panel(
                axes[1], "no score change: no session had 10 min of scores after its reference"
            )
        if all(o.median_recovery_s is None for o in outcomes):
            # Drawn empty, the panel had an axis of -0.04..0.04 "recovery (s)".
            _empty_panel(
                axes[2],
                "no recovery time: no reaction marker in these sessions had a clear rise "
                "that came back within 3 min",
            )
        axes[1].legend(title="strap · target" if several else "target", fontsize=8)
        shapes = [
            Line2D([], [], color="0.3", marker="o", ls="-", label="from hold-start"),
            Line2D([], [], color="0.3", marker="s", ls="--", label="from baseline end"),
            Line2D([], [], color="0.3", marker="o", mfc="none", ls="none",
                   label="did not catch up (top)"),
        ]  # fmt: skip
        axes[0].legend(handles=shapes, fontsize=7, loc="lower left")
        fig.suptitle("Settle: progress across sessions")
        with atomic_file(path, binary=True, replace=force) as fh:
            fig.savefig(cast(IO[bytes], fh), format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
