"""Real-time R-peak detection on single-lead chest ECG → ECG-derived RR (pure numpy/scipy).

Built for the Polar H10 raw ECG (130 Hz, µV, 73-sample PMD frames) but any sampling rate works.
Feed samples in the order they arrive; :meth:`RPeakDetector.update` returns the beats it could
confirm with the samples seen so far. No clock is read: time comes with each chunk.

Method (a causal Pan–Tompkins variant, tuned for low latency rather than offline accuracy):

1. Band-pass 5–20 Hz (2nd-order Butterworth, second-order sections, state carried across
   chunks) → ``y``; this removes baseline wander and most of the T wave.
2. Energy ``y²`` averaged over ``integration_s`` (50 ms) → feature ``m``.
3. A QRS candidate is the maximum of ``m`` above the threshold
   ``T = threshold_fraction · SPK``; it is confirmed once ``lookahead_s`` (50 ms) of samples
   after it are no larger. ``SPK`` (signal-peak level) is an exponential average of confirmed
   peaks (weight 1/8, each peak clipped to 4·SPK), learned over the first ``learn_s`` after a
   (re)start, halved whenever no beat was confirmed for ``max(1.5 · mean RR, 1 s)``, and
   never above the largest feature value of the last ``memory_s`` (2.5 s): so the absurd
   values of a stream's first seconds blind the detector for at most that long.
4. Refractory period ``refractory_s`` (250 ms); a candidate within 360 ms of the previous
   beat with less than half its feature peak is taken as a T wave and ignored.
5. Pauses. The decay of step 3 looks for beats that got smaller; in a pause of the heart
   there are none, and left alone it takes the threshold down to the P waves and the noise
   (a P wave's refractory period then hides its QRS, SPK learns from P waves and the
   detector stays on them: see docs/pmd.md). So once SPK has decayed to a quarter of
   ``SPK_ref``, the level the last beat left (two halvings, or the cap after 2.5 s without
   a beat), and until the next beat as large as those before: ``SPK_ref`` is kept; the
   threshold does not fall below ``noise_factor`` (50) times the noise level (lower quartile
   of the feature over the last ``memory_s``), or ``noise_factor_long`` (20) times once no
   beat came for ``pause_hold_s`` (5 s), unless it was lower before the pause: beats that
   shrank into more noise are found again, noise alone rarely passes (the largest feature
   of 2.5 s of Gaussian noise: ~10 times the level, 16 at the 95th percentile); a candidate
   below ``threshold_fraction · SPK_ref`` (one only the decay lets through: a P wave, noise)
   is confirmed only after ``refractory_s`` without a larger value, so a QRS right behind it
   replaces it, and is a T wave if below half the last beat's peak within √2 · ``t_wave_s``
   (510 ms) of it (QT lengthens with RR: the first beat after a pause has a later T wave);
   the first beat above ``threshold_fraction · SPK_ref`` restores ``SPK = SPK_ref`` before
   learning from it (as in Pan–Tompkins, whose searchback lowers a threshold, never the
   signal level). After ``relearn_beats`` (4) smaller beats in a row (each within
   ``rr_max_ms`` of the one before) the signal did shrink (or the level learned at the start
   was absurd): the median of their feature peaks becomes the level (not SPK as the decay
   left it, which can lie under the P waves and lock the detector on them).
6. Fiducial point: the sample of largest ``|y|`` in the 150 ms before the feature peak,
   refined by fitting a parabola through it and its two neighbours (sub-sample timing; the
   sample period is 7.7 ms at 130 Hz), minus the filter's group delay at 10 Hz so that beat
   times sit on the caller's clock. RR is the difference of consecutive fiducial times.
   The fiducial is not the R peak itself: the largest band-passed deflection trails it by a
   few ms that depend on the QRS shape (8.2 ms median, 7.5–9.4 ms p5–p95, on the real H10
   recording; 9–14 ms on synthetic Gaussian R waves of σ 8–20 ms) but barely from beat to
   beat, so RR is unaffected. See docs/pmd.md.
7. Noise. On noise alone (a strap streaming while not worn, muscle noise) the adaptive
   threshold finds "beats" all the same: ~350 in 120 s of Gaussian noise, two thirds with a
   plausible RR (median 367 ms). A beat is plausible only if its feature peak stands at least
   ``qrs_ratio`` (8) times above the noise level — the larger of step 5's and the lower
   quartile of the last 0.5-s block alone, which follows noise that has just begun — and the
   median of that ratio over the last ``qrs_ratio_beats`` (8) beats is at least
   ``qrs_ratio_run`` (12); a beat right after one that failed is not either (its RR starts at
   noise). Noise gives ratios of ~4.5 (median; the largest 21–31 in 120 s), a chest ECG far
   more (the real H10 recording: ≥ 127, every beat; the virtual strap's at 220 beats/min:
   ≥ 29). Detection itself is unchanged: such beats are still reported, flagged. The cost: the
   first ~5 s of ECG after noise are flagged too (the run's median must recover), and beats
   of a weak ECG in strong noise (feature peaks ~17 × the noise level, median) about half:
   no threshold separates them from noise beat by beat (docs/pmd.md).

Latency: a beat is confirmed ``lookahead_s`` after its feature peak, which itself trails the
R peak by the filter delay plus half the integration window (≈ 3 + 3 samples at 130 Hz); so the
algorithmic delay is about 0.09 s at 130 Hz. On top of it comes whatever buffering the source
imposes (a PMD frame holds 0.56 s of samples: 0–0.56 s, 0.28 s on average). Each beat carries
``confirmed_t_s`` (the time of the newest sample when it was confirmed) so callers can measure
it; see docs/pmd.md for the figures on the real H10 recording.

A jump in the chunk timestamps larger than ``gap_tolerance_s`` is a gap: samples are never
bridged across it and the first beat after it has no RR. A gap forward of up to ``gap_keep_s``
(a lost PMD frame is 0.56 s) restarts only the filter and keeps what was learned about the
signal (SPK, mean RR), so beats are found again within the filter's settling time; a longer gap,
or timestamps going back, relearns from scratch. The warm-up (``warmup_s``, electrodes settling)
applies to the start of the stream only, not after a gap.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt
from scipy import signal

__all__ = ["DetectorParams", "EcgBeat", "RPeakDetector", "detect_rpeaks"]

_NS_PER_S = 1_000_000_000
_PAUSE_DECAY = 0.25  # SPK at or below this fraction of SPK_ref: a pause (module doc, step 5)


@dataclasses.dataclass(frozen=True, slots=True)
class DetectorParams:
    """Parameters of :class:`RPeakDetector`; defaults suit the Polar H10 at 130 Hz."""

    fs_hz: float = 130.0
    """Sampling rate of the ECG, Hz (the H10's nominal rate; it measures 130.05–130.17)."""
    band_hz: tuple[float, float] = (5.0, 20.0)
    """Pass band of the QRS filter, Hz."""
    integration_s: float = 0.05
    """Length of the moving average of the squared filtered ECG, s."""
    lookahead_s: float = 0.05
    """A feature peak is confirmed when no larger value follows within this time, s."""
    refractory_s: float = 0.25
    """No second beat within this time of a beat, s (≈ 240 beats/min)."""
    t_wave_s: float = 0.36
    """A candidate this close to the previous beat must reach half its feature peak, s."""
    threshold_fraction: float = 0.3
    """Detection threshold as a fraction of the signal-peak level SPK."""
    memory_s: float = 2.5
    """SPK never exceeds the largest feature value of this recent past, s."""
    learn_s: float = 1.5
    """After a (re)start, SPK is learned for this long before any beat is reported, s."""
    warmup_s: float = 4.0
    """Beats within this time of the stream's start (the first sample given to the detector)
    are reported with ``plausible=False``, s: the electrodes settle."""
    rr_min_ms: float = 273.0
    """Shortest plausible RR, ms (220 beats/min)."""
    rr_max_ms: float = 2000.0
    """Longest plausible RR, ms (30 beats/min)."""
    gap_tolerance_s: float = 0.1
    """A chunk starting further than this from where the previous one ended is a gap, s."""
    gap_keep_s: float = 3.0
    """A gap forward up to this long keeps SPK and the mean RR (only the filter restarts); a
    longer one, or one backwards, relearns them from scratch, s."""
    gap_settle_s: float = 0.1
    """After a gap that kept the learned levels, no beat is taken from the filter's settling
    transient for this long, s."""
    relearn_beats: int = 4
    """After a pause, this many beats in a row (each within ``rr_max_ms`` of the one before)
    smaller than ``threshold_fraction`` times the level learned before it (found only by the
    decayed threshold) replace that level with the median of their feature peaks."""
    noise_factor: float = 50.0
    """After a pause, the decayed threshold stays at least this many times the noise level
    (lower quartile of the feature over the last ``memory_s``)..."""
    noise_factor_long: float = 20.0
    """... and at least this many times once no beat came for ``pause_hold_s``, until the
    pause ends."""
    pause_hold_s: float = 5.0
    """See ``noise_factor_long``, s."""
    qrs_ratio: float = 8.0
    """A beat is plausible only if its feature peak is at least this many times the noise
    level (lower quartile of the feature over the last ``memory_s``, or of the last 0.5 s if
    larger)..."""
    qrs_ratio_run: float = 12.0
    """... and the median of that ratio over the last ``qrs_ratio_beats`` beats (this one
    included) at least this: noise alone (an unworn strap, muscle) gives beats whose ratio is
    ~4.5 (median), a real chest ECG ≥ 127 (the H10 recording)."""
    qrs_ratio_beats: int = 8
    """See ``qrs_ratio_run``."""

    def __post_init__(self) -> None:
        lo, hi = self.band_hz
        if not (self.fs_hz > 0 and math.isfinite(self.fs_hz)):
            raise ValueError(f"fs_hz must be finite and > 0, got {self.fs_hz!r}")
        if not 0 < lo < hi < self.fs_hz / 2:
            raise ValueError(f"band_hz must satisfy 0 < lo < hi < fs/2, got {self.band_hz!r}")
        if not self.gap_keep_s >= self.gap_tolerance_s >= 0 or self.gap_settle_s < 0:
            raise ValueError("need gap_keep_s >= gap_tolerance_s >= 0 and gap_settle_s >= 0")
        for name in ("integration_s", "lookahead_s", "refractory_s", "learn_s", "memory_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if not self.relearn_beats >= 1:
            raise ValueError("relearn_beats must be >= 1")
        if not 0 < self.noise_factor_long <= self.noise_factor:
            raise ValueError("need 0 < noise_factor_long <= noise_factor")
        if not self.pause_hold_s >= 0:
            raise ValueError("pause_hold_s must be >= 0")
        if not (self.qrs_ratio >= 0 and self.qrs_ratio_run >= 0 and self.qrs_ratio_beats >= 1):
            raise ValueError("need qrs_ratio >= 0, qrs_ratio_run >= 0 and qrs_ratio_beats >= 1")
        if not 0 < self.threshold_fraction < 1:
            raise ValueError("threshold_fraction must be within (0, 1)")
        if not 0 < self.rr_min_ms < self.rr_max_ms:
            raise ValueError("need 0 < rr_min_ms < rr_max_ms")


@dataclasses.dataclass(frozen=True, slots=True)
class EcgBeat:
    """One detected heartbeat (R peak)."""

    t_s: float
    """Time of the beat's fiducial point, s, on the clock of the timestamps given to
    ``update`` (sub-sample: parabolic interpolation of the filtered ECG, group delay removed);
    it trails the R peak by a steady few ms (8.2 ms median on the real H10 recording)."""
    rr_ms: float | None
    """``1000 · (t_s − previous t_s)``, ms; None for the first beat of the stream and after a
    gap."""
    plausible: bool
    """False if ``rr_ms`` is None or outside [``rr_min_ms``, ``rr_max_ms``], within
    ``warmup_s`` of the stream's start, or if this beat or the one before does not stand
    out of the noise (``qrs_ratio``, ``qrs_ratio_run``: noise, not a QRS); such beats should
    be stored as artefacts, not analysed."""
    confirmed_t_s: float
    """Time of the newest sample when the beat was confirmed, s; ``confirmed_t_s − t_s`` is
    the detection latency (excluding transport)."""
    amplitude_uv: float
    """Filtered ECG at the fiducial point, µV (sign kept: R or S dominant)."""


class RPeakDetector:
    """Streaming R-peak detector. See the module docstring for the method.

    ``update(samples_uv, t_first_s=…)`` or ``update(samples_uv, t_last_ns=…)`` (PMD frames
    carry the timestamp of their LAST sample) → list of :class:`EcgBeat`, oldest first.
    """

    def __init__(self, params: DetectorParams | None = None) -> None:
        self.params = p = params or DetectorParams()
        fs = p.fs_hz
        self._sos = signal.butter(2, p.band_hz, btype="bandpass", fs=fs, output="sos")
        b, a = signal.sos2tf(self._sos)
        _, gd = signal.group_delay((b, a), w=[10.0], fs=fs)
        self.group_delay_s = float(gd[0]) / fs
        """Delay of the QRS filter at 10 Hz, s; subtracted from every beat time."""
        self._w = max(1, round(p.integration_s * fs))
        self._look = max(1, round(p.lookahead_s * fs))
        self._refr = round(p.refractory_s * fs)
        self._twave = round(p.t_wave_s * fs)
        self._twave_paused = round(math.sqrt(2.0) * p.t_wave_s * fs)
        self._learn = max(1, round(p.learn_s * fs))
        self._search = max(3, round(0.15 * fs))
        self._block = max(1, round(0.5 * fs))
        self._n_blocks = max(1, math.ceil(p.memory_s / 0.5))
        # the fiducial search reaches back _search samples from a candidate confirmed up to
        # _refr samples after it; the noise level needs a whole block of the feature
        self._keep = max(self._search + max(self._look, self._refr) + self._w + 4, self._block)
        self.beats_total = 0
        """Beats reported since construction."""
        self.gaps = 0
        """Gaps (timestamp jumps) seen; none is ever bridged."""
        self.resets = 0
        """Of those, the ones that relearned from scratch (long, or backwards)."""
        self._stream_n = 0  # samples of the stream before the current run
        self._reset()

    # -- state -------------------------------------------------------------------------

    def _reset(self) -> None:
        self._zi = np.zeros((self._sos.shape[0], 2))
        self._zi_primed = False
        self._n = 0  # global index of the next sample since (re)start
        self._anchors: list[tuple[int, float]] = []  # (first index of a chunk, its time)
        self._y = np.zeros(0)  # tail of the filtered ECG, ends at index n-1
        self._e_tail = np.zeros(0)  # last w-1 squared values (for the moving average)
        self._m = np.zeros(0)  # tail of the feature
        self._spk = 0.0  # signal-peak level, decayed while no beat comes
        self._spk_ref = 0.0  # SPK as the last beat before a pause left it: never decayed
        self._paused = False  # SPK decayed to _PAUSE_DECAY · _spk_ref: a pause, until a beat
        self._small: list[float] = []  # feature peaks of the smaller beats in a row since it
        self._floor = self.params.noise_factor  # the threshold's floor then, × the noise level
        self._cand_idx = -1
        self._cand_val = 0.0
        self._last_idx = -(10**9)
        self._last_val = 0.0
        self._last_t_s: float | None = None
        self._decay_from = 0
        self._rr_mean_s = 0.8
        self._next_t_s: float | None = None
        self._blocks: list[float] = []  # feature maxima of the last completed 0.5-s blocks
        self._block_lows: list[float] = []  # lower quartiles of the feature in those blocks
        self._noise = 0.0  # noise level: their median
        self._block_max = 0.0
        self._quiet_until = 0  # no candidate before this index (filter settling after a gap)
        self._ratios: list[float] = []  # feature peak / noise level of the last beats
        self._last_noise = False  # the last beat did not stand out of the noise

    def _bridge(self, gap_s: float) -> None:
        """A short gap forward: restart the filter, keep SPK, the mean RR and the indices in
        step with time (the missing samples are counted), forget the pending candidate."""
        self._zi_primed = False
        self._y = np.zeros(0)
        self._e_tail = np.zeros(0)
        self._m = np.zeros(0)
        self._n += round(gap_s * self.params.fs_hz)
        self._cand_idx, self._cand_val = -1, 0.0
        self._last_t_s = None  # no RR across the gap
        self._decay_from = self._n
        self._quiet_until = self._n + round(self.params.gap_settle_s * self.params.fs_hz)

    # -- time --------------------------------------------------------------------------

    def _time_of(self, idx: float) -> float:
        """Time of (fractional) sample index ``idx``, from the chunk that holds it."""
        anchor_idx, anchor_t = self._anchors[0]
        for a_idx, a_t in self._anchors:
            if a_idx <= idx:
                anchor_idx, anchor_t = a_idx, a_t
            else:
                break
        return anchor_t + (idx - anchor_idx) / self.params.fs_hz

    # -- main entry --------------------------------------------------------------------

    def update(
        self,
        samples_uv: npt.ArrayLike,
        *,
        t_first_s: float | None = None,
        t_last_ns: int | None = None,
    ) -> list[EcgBeat]:
        """Process the next chunk of ECG samples (µV); return beats confirmed by it.

        Exactly one of ``t_first_s`` (time of the first sample, s) and ``t_last_ns`` (time of
        the last sample, ns, as in a PMD frame) must be given.
        """
        x = np.asarray(samples_uv, dtype=np.float64).reshape(-1)
        if (t_first_s is None) == (t_last_ns is None):
            raise ValueError("give exactly one of t_first_s and t_last_ns")
        if x.size == 0:
            return []
        if not np.all(np.isfinite(x)):
            raise ValueError("samples_uv must be finite")
        fs = self.params.fs_hz
        if t_first_s is None:
            assert t_last_ns is not None
            t_first_s = t_last_ns / _NS_PER_S - (x.size - 1) / fs
        if self._next_t_s is not None:
            jump_s = t_first_s - self._next_t_s
            if abs(jump_s) > self.params.gap_tolerance_s:
                self.gaps += 1
                if 0 < jump_s <= self.params.gap_keep_s:
                    self._bridge(jump_s)
                else:
                    self.resets += 1
                    self._stream_n += self._n
                    self._reset()
        self._anchors.append((self._n, t_first_s))
        self._next_t_s = t_first_s + x.size / fs
        return self._process(x)

    def _process(self, x: npt.NDArray[np.float64]) -> list[EcgBeat]:
        if not self._zi_primed:
            # Start the filter in steady state for the first value: no step transient.
            self._zi = signal.sosfilt_zi(self._sos) * x[0]
            self._zi_primed = True
        y, self._zi = signal.sosfilt(self._sos, x, zi=self._zi)
        e = np.concatenate([self._e_tail, y * y])
        csum = np.concatenate([[0.0], np.cumsum(e)])
        w = self._w
        # moving mean over the last w values (fewer at the very start of a run)
        start = self._n - self._e_tail.size  # global index of e[0]
        idx = np.arange(self._e_tail.size, e.size)
        lo = np.maximum(idx - w + 1, 0)
        m_new = (csum[idx + 1] - csum[lo]) / (idx + 1 - lo)
        self._e_tail = e[-(w - 1) :] if w > 1 else np.zeros(0)
        del start

        base = self._n - self._y.size  # global index of self._y[0] before appending
        y_all = np.concatenate([self._y, y])
        m_all = np.concatenate([self._m, m_new])
        beats: list[EcgBeat] = []
        first_new = self._n
        self._n += x.size
        t_newest = self._time_of(self._n - 1)
        for n in range(first_new, self._n):
            beat = self._step(n, m_all, y_all, base, t_newest)
            if beat is not None:
                beats.append(beat)
        keep = min(self._keep, y_all.size)
        self._y = y_all[-keep:]
        self._m = m_all[-keep:]
        # anchors older than the kept tail are no longer needed (keep the one covering it)
        oldest = self._n - keep
        while len(self._anchors) > 1 and self._anchors[1][0] <= oldest:
            self._anchors.pop(0)
        return beats

    def _step(
        self,
        n: int,
        m_all: npt.NDArray[np.float64],
        y_all: npt.NDArray[np.float64],
        base: int,
        t_newest: float,
    ) -> EcgBeat | None:
        v = float(m_all[n - base])
        self._block_max = max(self._block_max, v)
        if n % self._block == self._block - 1:
            self._blocks.append(self._block_max)
            self._block_max = 0.0
            del self._blocks[: -self._n_blocks]
            block = m_all[max(n - self._block + 1, base) - base : n + 1 - base]
            q = block.size // 4  # the lower quartile (np.percentile is slower)
            self._block_lows.append(float(np.partition(block, q)[q]))
            del self._block_lows[: -self._n_blocks]
            self._noise = float(np.median(self._block_lows))
            if n >= self._learn:
                self._spk = min(self._spk, max(self._blocks))
        if n < self._learn:
            self._spk = self._spk_ref = max(self._spk, v)
            self._decay_from = n
            return None
        p = self.params
        fs = p.fs_hz
        if n - max(self._last_idx, self._decay_from) > max(1.5 * self._rr_mean_s, 1.0) * fs:
            self._spk *= 0.5
            self._decay_from = n
        if not self._paused and self._spk <= _PAUSE_DECAY * self._spk_ref:
            self._paused, self._floor, self._small = True, p.noise_factor, []
        if self._paused and n - self._last_idx > p.pause_hold_s * fs:
            # no beat for that long: more likely beats that shrank into more noise than a
            # pause; the lower floor stays until the pause ends, so a run of them can form
            self._floor = p.noise_factor_long
        if n - self._last_idx < self._refr or n < self._quiet_until:
            return None
        threshold = p.threshold_fraction * self._spk
        learned = p.threshold_fraction * self._spk_ref  # the threshold before the pause
        if self._paused:
            # The decayed threshold looks for smaller beats, but not among the noise.
            threshold = max(threshold, min(learned, self._floor * self._noise))
        if v > threshold and v > self._cand_val:
            self._cand_idx, self._cand_val = n, v
        # A candidate that only the decayed threshold lets through may be a P wave (or noise)
        # just before a QRS: it waits out the refractory period, so a larger peak replaces it.
        wait = self._refr if self._paused and self._cand_val < learned else self._look
        if self._cand_idx < 0 or n - self._cand_idx < wait:
            return None
        cand, cand_val = self._cand_idx, self._cand_val
        self._cand_idx, self._cand_val = -1, 0.0
        if cand_val < 0.5 * self._last_val:
            twave = self._twave
            if self._paused and cand_val < learned:
                # the decayed threshold lets T waves through, and QT lengthens with RR
                # (Bazett): the T wave of the first beat after a pause comes later
                twave = self._twave_paused
            if cand - self._last_idx < twave:
                return None  # a T wave
        return self._confirm(cand, cand_val, y_all, base, t_newest)

    def _confirm(
        self,
        cand: int,
        cand_val: float,
        y_all: npt.NDArray[np.float64],
        base: int,
        t_newest: float,
    ) -> EcgBeat:
        p = self.params
        lo = max(cand - self._search, base, self._last_idx + 1)
        seg = np.abs(y_all[lo - base : cand - base + 1])
        k = int(np.argmax(seg)) + lo
        frac = 0.0
        if base < k < cand:
            y0, y1, y2 = (abs(float(y_all[j - base])) for j in (k - 1, k, k + 1))
            denom = y0 - 2.0 * y1 + y2
            if denom < 0:
                frac = max(-0.5, min(0.5, 0.5 * (y0 - y2) / denom))
        t_s = self._time_of(k + frac) - self.group_delay_s
        rr_ms = None if self._last_t_s is None else 1000.0 * (t_s - self._last_t_s)
        # Does it stand out of the noise? (module docstring, step 7; the last block's level
        # alone follows noise that has just begun, the median of the blocks only after 1.5 s)
        level = max(self._noise, self._block_lows[-1]) if self._block_lows else 0.0
        ratio = cand_val / level if level > 0 else math.inf
        self._ratios.append(ratio)
        del self._ratios[: -p.qrs_ratio_beats]
        noise = ratio < p.qrs_ratio or float(np.median(self._ratios)) < p.qrs_ratio_run
        plausible = (
            rr_ms is not None
            and p.rr_min_ms <= rr_ms <= p.rr_max_ms
            and (self._stream_n + k + frac) / p.fs_hz - self.group_delay_s >= p.warmup_s
            and not noise
            and not self._last_noise  # its RR starts at noise
        )
        self._last_noise = noise
        if rr_ms is not None and p.rr_min_ms <= rr_ms <= p.rr_max_ms:
            self._rr_mean_s = 0.875 * self._rr_mean_s + 0.125 * rr_ms / 1000.0
        relearnt = False
        if self._paused:
            if cand_val >= p.threshold_fraction * self._spk_ref:
                # As large as the beats before the pause: the decay found nothing smaller,
                # so it is undone (Pan–Tompkins lowers a searchback's threshold, never the
                # signal level; learning from P waves here used to lock the detector on them).
                self._spk = self._spk_ref
                self._paused = False
            else:
                # smaller beats, one after another (each within rr_max_ms of the one before):
                # the signal did shrink (or the level learned was absurd, as at a stream's
                # start). They set the level themselves: the decayed SPK may lie far below
                # them, at the P waves, and would lock the detector on them.
                if rr_ms is None or rr_ms > p.rr_max_ms:
                    self._small = []
                self._small.append(cand_val)
                if len(self._small) >= p.relearn_beats:
                    self._spk = float(np.median(self._small))
                    self._paused, relearnt = False, True
        if not relearnt:
            self._spk = 0.875 * self._spk + 0.125 * min(cand_val, 4.0 * self._spk)
        if not self._paused:
            self._spk_ref = self._spk
        self._last_idx, self._last_val, self._last_t_s = cand, cand_val, t_s
        self._decay_from = cand
        self.beats_total += 1
        return EcgBeat(
            t_s=t_s,
            rr_ms=rr_ms,
            plausible=plausible,
            confirmed_t_s=t_newest,
            amplitude_uv=float(y_all[k - base]),
        )


def detect_rpeaks(
    ecg_uv: npt.ArrayLike,
    t_s: npt.ArrayLike | None = None,
    params: DetectorParams | None = None,
    chunk: int = 73,
) -> list[EcgBeat]:
    """Run :class:`RPeakDetector` over a whole recording, ``chunk`` samples at a time.

    ``t_s`` (per-sample times, s) defaults to ``index / fs_hz``; the time of the first sample
    of each chunk anchors that chunk, as PMD frame timestamps do live.
    """
    x = np.asarray(ecg_uv, dtype=np.float64).reshape(-1)
    det = RPeakDetector(params)
    fs = det.params.fs_hz
    times = np.arange(x.size) / fs if t_s is None else np.asarray(t_s, dtype=np.float64)
    if times.shape != x.shape:
        raise ValueError("t_s must have one time per sample")
    out: list[EcgBeat] = []
    for i in range(0, x.size, chunk):
        out.extend(det.update(x[i : i + chunk], t_first_s=float(times[i])))
    return out
