"""The first settling index: heart rate and lnRMSSD against the session's own baseline.

Formula (see ``docs/indices.md`` for rationale, references and limits)::

    z_hr       = −(HR − mean_b(HR)) / spread_b(HR)               (HR falling is settling)
    z_ln_rmssd =  (lnRMSSD − mean_b(lnRMSSD)) / spread_b(lnRMSSD)  (lnRMSSD rising is settling)
    spread_b   = max(SD_b(ddof=1), floor)                        floors: 1.0 bpm, 0.1 ln units
    score      = clip(50 + 50 · tanh(mean(z_hr, z_ln_rmssd) / k), 0, 100),  k = 2

50 means "as at baseline"; > 50 more settled, < 50 less. ``mean_b`` / ``SD_b`` are over the
baseline samples: the snapshots passed to :meth:`SettlingIndex.update` during the baseline.

This module is sans-I/O: time is passed in, nothing is logged.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from typing import Literal

from processing.timedomain import TimeDomain

__all__ = ["SettlingIndex", "SettlingSnapshot", "SettlingState"]

SettlingState = Literal["baseline", "running", "unavailable"]
"""``baseline``: collecting baseline samples, no score. ``running``: scored against the
baseline. ``unavailable``: an explicitly stopped baseline had too few valid samples, so there
is nothing to score against; call :meth:`SettlingIndex.start_baseline` again."""


@dataclasses.dataclass(frozen=True, slots=True)
class SettlingSnapshot:
    """The settling index at one time. NaN marks a value not (yet) defined."""

    t_s: float
    """Time of the update, s (the caller's clock, same as the beat times)."""
    state: SettlingState
    """Phase of the index; see :data:`SettlingState`."""
    score: float | None
    """``clip(50 + 50·tanh(mean(z_hr, z_ln_rmssd)/k), 0, 100)``, dimensionless 0..100.
    None outside ``running`` and whenever a component is not finite."""
    components: Mapping[str, float]
    """Each component in baseline-spread units (read-only), keyed by name:
    ``"z_hr"`` = ``−(hr_bpm − baseline_hr_bpm) / baseline_hr_spread_bpm`` and
    ``"z_ln_rmssd"`` = ``(ln_rmssd − baseline_ln_rmssd) / baseline_ln_rmssd_spread``.
    NaN outside ``running`` or when the input value is not finite."""
    baseline_hr_bpm: float
    """Mean heart rate over the baseline samples, beats/min (so far, while collecting)."""
    baseline_hr_spread_bpm: float
    """``max(SD(ddof=1) of baseline HR, spread_floor_hr_bpm)``, beats/min."""
    baseline_ln_rmssd: float
    """Mean of ln(RMSSD in ms) over the baseline samples, ln units (so far, while collecting)."""
    baseline_ln_rmssd_spread: float
    """``max(SD(ddof=1) of baseline lnRMSSD, spread_floor_ln_rmssd)``, ln units."""
    n_baseline: int
    """Number of valid baseline samples (both HR and lnRMSSD finite)."""

    @property
    def z_hr(self) -> float:
        """``components["z_hr"]``: heart rate below baseline, baseline-spread units."""
        return self.components["z_hr"]

    @property
    def z_ln_rmssd(self) -> float:
        """``components["z_ln_rmssd"]``: lnRMSSD above baseline, baseline-spread units."""
        return self.components["z_ln_rmssd"]


def _mean_spread(values: list[float], floor: float) -> tuple[float, float]:
    """Mean and floored sample SD (ddof=1) of ``values``; (NaN, floor) when empty."""
    n = len(values)
    if n == 0:
        return math.nan, floor
    mean = math.fsum(values) / n
    if n < 2:
        return mean, floor
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, max(sd, floor)


class SettlingIndex:
    """Settling score against the session's own baseline, fed with rolling HRV snapshots.

    Call :meth:`update` at a regular cadence (the daemon: every 5 s of beat time, with the
    current 60 s :class:`~processing.timedomain.TimeDomain`). By default the baseline is the
    first ``baseline_s`` seconds after the first update; it is extended past that until at
    least ``min_baseline_samples`` valid samples exist. :meth:`start_baseline` /
    :meth:`stop_baseline` instead mark an explicit rest period (and may re-baseline later);
    the score is None while a baseline is being collected.

    Parameters
    ----------
    baseline_s : float
        Length of the automatic baseline, s. Default 120 s.
    spread_floor_hr_bpm : float
        Smallest baseline spread of HR, beats/min. Default 1.0.
    spread_floor_ln_rmssd : float
        Smallest baseline spread of ln(RMSSD), ln units (0.1 ≈ a 10 % RMSSD change). Default 0.1.
    k : float
        Softness of the tanh squashing, in baseline-spread units: a mean z of ``k`` gives
        ≈ 88. Default 2.0.
    min_baseline_samples : int
        Valid samples needed before scoring. Default 3.
    """

    __slots__ = (
        "_auto_pending",
        "_auto_until_s",
        "_collecting",
        "_explicit_from_s",
        "_hr",
        "_ln",
        "_stats",
        "_stopped_short",
        "baseline_s",
        "k",
        "min_baseline_samples",
        "spread_floor_hr_bpm",
        "spread_floor_ln_rmssd",
    )

    def __init__(
        self,
        baseline_s: float = 120.0,
        *,
        spread_floor_hr_bpm: float = 1.0,
        spread_floor_ln_rmssd: float = 0.1,
        k: float = 2.0,
        min_baseline_samples: int = 3,
    ) -> None:
        if not (math.isfinite(baseline_s) and baseline_s >= 0.0):
            raise ValueError(f"baseline_s must be finite and >= 0, got {baseline_s!r}")
        if not (spread_floor_hr_bpm > 0.0 and spread_floor_ln_rmssd > 0.0):
            raise ValueError("spread floors must be > 0")
        if not (math.isfinite(k) and k > 0.0):
            raise ValueError(f"k must be finite and > 0, got {k!r}")
        if min_baseline_samples < 2:
            raise ValueError("min_baseline_samples must be >= 2")
        self.baseline_s = float(baseline_s)
        self.spread_floor_hr_bpm = float(spread_floor_hr_bpm)
        self.spread_floor_ln_rmssd = float(spread_floor_ln_rmssd)
        self.k = float(k)
        self.min_baseline_samples = int(min_baseline_samples)
        self._hr: list[float] = []
        self._ln: list[float] = []
        self._auto_pending = True  # the automatic baseline starts at the first update
        self._auto_until_s = math.inf
        self._collecting = True
        self._explicit_from_s: float | None = None
        self._stopped_short = False
        self._stats = (math.nan, self.spread_floor_hr_bpm, math.nan, self.spread_floor_ln_rmssd)

    @property
    def state(self) -> SettlingState:
        """Current phase."""
        if self._collecting:
            return "baseline"
        return "unavailable" if self._stopped_short else "running"

    def start_baseline(self, t_s: float) -> None:
        """Discard the current baseline and collect a new one from ``t_s`` (s) until
        :meth:`stop_baseline`. Replaces the automatic first-``baseline_s`` baseline."""
        self._hr.clear()
        self._ln.clear()
        self._auto_pending = False
        self._auto_until_s = math.inf
        self._explicit_from_s = float(t_s)
        self._collecting = True
        self._stopped_short = False
        self._refresh_stats()

    def stop_baseline(self, t_s: float) -> None:
        """End the baseline being collected (explicit or automatic) at ``t_s`` (s).

        With fewer than ``min_baseline_samples`` valid samples the state becomes
        ``unavailable`` until :meth:`start_baseline` is called again.
        """
        if not self._collecting:
            raise ValueError("no baseline is being collected")
        self._auto_pending = False
        self._collecting = False
        self._explicit_from_s = None
        self._stopped_short = len(self._hr) < self.min_baseline_samples

    def update(self, t_s: float, td: TimeDomain) -> SettlingSnapshot:
        """Feed one rolling HRV snapshot taken at ``t_s`` (s) and return the index.

        Snapshots whose ``hr_bpm`` or ``ln_rmssd`` is not finite are skipped as baseline
        samples and give ``score=None`` when running; they never raise.
        """
        if self._auto_pending:
            self._auto_pending = False
            self._auto_until_s = t_s + self.baseline_s
        hr, ln = td.hr_bpm, td.ln_rmssd
        valid = math.isfinite(hr) and math.isfinite(ln)

        if self._collecting:
            from_s = self._explicit_from_s
            if (
                from_s is None
                and t_s > self._auto_until_s
                and len(self._hr) >= self.min_baseline_samples
            ):
                self._collecting = False  # automatic baseline complete; score this sample
            else:
                if valid and (from_s is None or t_s >= from_s):
                    self._hr.append(hr)
                    self._ln.append(ln)
                    self._refresh_stats()
                return self._snapshot(t_s, "baseline", math.nan, math.nan, None)

        mean_hr, spread_hr, mean_ln, spread_ln = self._stats
        if self._stopped_short:
            return self._snapshot(t_s, "unavailable", math.nan, math.nan, None)
        z_hr = -(hr - mean_hr) / spread_hr
        z_ln = (ln - mean_ln) / spread_ln
        score: float | None = None
        if math.isfinite(z_hr) and math.isfinite(z_ln):
            score = 50.0 + 50.0 * math.tanh(0.5 * (z_hr + z_ln) / self.k)
            score = min(max(score, 0.0), 100.0)
        return self._snapshot(t_s, "running", z_hr, z_ln, score)

    def _refresh_stats(self) -> None:
        mean_hr, spread_hr = _mean_spread(self._hr, self.spread_floor_hr_bpm)
        mean_ln, spread_ln = _mean_spread(self._ln, self.spread_floor_ln_rmssd)
        self._stats = (mean_hr, spread_hr, mean_ln, spread_ln)

    def _snapshot(
        self, t_s: float, state: SettlingState, z_hr: float, z_ln: float, score: float | None
    ) -> SettlingSnapshot:
        mean_hr, spread_hr, mean_ln, spread_ln = self._stats
        return SettlingSnapshot(
            t_s=t_s,
            state=state,
            score=score,
            components=types.MappingProxyType({"z_hr": z_hr, "z_ln_rmssd": z_ln}),
            baseline_hr_bpm=mean_hr,
            baseline_hr_spread_bpm=spread_hr,
            baseline_ln_rmssd=mean_ln,
            baseline_ln_rmssd_spread=spread_ln,
            n_baseline=len(self._hr),
        )
