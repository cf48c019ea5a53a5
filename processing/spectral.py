"""Frequency-domain HRV, coherence and respiration rate (numpy only; no scipy import cost).

Pinned conventions (see ``docs/indices.md``):

* **Default method**: the RR series ``(t_s, rr_ms)`` is resampled at ``FS_HZ`` = 4 Hz with a
  natural cubic spline through the beats, linearly detrended, and its PSD is estimated with
  Welch's method (Hann window, segments of ``min(N, 300 s)``, 50 % overlap, one-sided density
  in ms²/Hz, ``PSD = 2·|FFT(w·x)|² / (fs·Σw²)``), divided by the spline's known power gain
  (:func:`spline_power_gain`). Band power = ``Σ PSD·df`` over bins with
  ``lo ≤ f < hi``.
* **Lomb–Scargle option** (gappy data): the classical periodogram ``P(f)`` of the
  mean-removed beats at their own times, converted to a one-sided density
  ``PSD = 2·P·Δt`` with ``Δt = T/N`` (so that ``∫PSD df`` equals the variance), on a grid of
  ``df = 1/(4T)``. ``T`` is the time the beats cover (the sum of their intervals), not the
  span from first to last: across a hole the span would inflate the density by the missing
  share (a 60 s hole in 5 minutes read +25 %). A long or gappy recording is analysed in
  300 s frames, averaged (:func:`lomb_frames`).
* Bands: VLF 0.0033–0.04, LF 0.04–0.15, HF 0.15–0.4 Hz. ``lf_nu = 100·LF/(LF+HF)``.
* Nothing above the beats' own Nyquist frequency ``1/(2·mean RR)`` is counted (below 48
  beats/min it is under 0.4 Hz): beats that far apart cannot carry a faster rhythm, and what
  a spectrum shows there is a mirror image of the power below it. The default method's gain
  correction removes it (:func:`spline_power_gain`), Lomb–Scargle is not evaluated there, and
  :attr:`Spectral.nyquist_hz` says where the HF band (and the respiration band) was cut.
* Both are calibrated: a 5-minute series with a 40 ms sine at 0.1 or 0.25 Hz gives
  800 ms² (= 40²/2) ± 3 % in its band (tested).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from processing.timedomain import NO_VARIABILITY_MS2

__all__ = [
    "BANDS_HZ",
    "FS_HZ",
    "Coherence",
    "Spectral",
    "band_powers",
    "coherence_from_psd",
    "lomb_frames",
    "lomb_psd",
    "nyquist_hz",
    "periodograms",
    "resample_cubic",
    "resp_peak_hz",
    "spectral",
    "spectral_runs",
    "spline_power_gain",
    "welch_psd",
]

FloatArray = npt.NDArray[np.float64]
FS_HZ = 4.0
"""Resampling rate of the default method, Hz."""
BANDS_HZ = {"vlf": (0.0033, 0.04), "lf": (0.04, 0.15), "hf": (0.15, 0.4)}
"""Band edges, Hz (lower inclusive, upper exclusive)."""
COHERENCE_PEAK_HZ = (0.04, 0.26)
COHERENCE_HALF_WIDTH_HZ = 0.015
RESP_BAND_HZ = (0.12, 0.5)
"""Where the respiratory (RSA) peak is searched, Hz (7.2–30 breaths/min)."""
INDICES_MAX_HZ = RESP_BAND_HZ[1]
"""The highest frequency any index reads (the top of the respiration band: its last bin is
the neighbour a peak search compares the band's last bin with); the rolling and live spectra
are computed up to it only (``periodograms(..., f_max=INDICES_MAX_HZ)``)."""
RESP_BACKGROUND_EXPONENT = (-2.0, 0.0)
"""Bounds of the power-law exponent of the background the RSA peak must stand out from:
between a flat (white) and a ``1/f²`` spectrum."""
RESP_PEAK_HALF_WIDTH_HZ = 0.03
"""Half-width of the RSA peak whose power is weighed (±1.8 breaths/min), Hz."""
RESP_MIN_SHARE = 0.01
"""The least share of the spectrum's power (0.04–0.5 Hz) the RSA peak must hold above its
background for a respiration rate to be reported: below it the peak is a harmonic or a noise
ripple beside the rhythms that carry the power (e.g. resonance breathing at 6/min)."""
RESP_MIN_POWER_MS2 = 0.01
"""The least power the RSA peak must hold above its background, ms²: about the quantisation
noise a strap's 1/1024 s RR resolution puts within ±0.03 Hz."""
SEGMENT_S = 300.0
"""Welch segment length, s."""

NO_POWER_MS2 = NO_VARIABILITY_MS2
"""Total power (0.0033–0.4 Hz) below which a spectrum is taken as none at all, ms²: far
below any heart's (a 1 ms beat-to-beat wobble carries ~0.1 ms²), far above rounding noise."""
_NAN = math.nan
Method = Literal["welch", "lomb"]


@dataclasses.dataclass(frozen=True, slots=True)
class Spectral:
    """Frequency-domain HRV of one window. NaN where undefined."""

    vlf_ms2: float
    """Power in 0.0033–0.04 Hz, ms² (NaN if the window is shorter than 1/0.0033 s)."""
    lf_ms2: float
    """Power in 0.04–0.15 Hz, ms²."""
    hf_ms2: float
    """Power in 0.15–0.4 Hz, ms²."""
    lf_hf: float
    """``lf_ms2 / hf_ms2``, dimensionless."""
    lf_nu: float
    """``100 · LF / (LF + HF)``, normalised units."""
    hf_nu: float
    """``100 · HF / (LF + HF)``, normalised units."""
    peak_hz: float
    """Frequency of the PSD maximum in 0.04–0.4 Hz, Hz."""
    resp_rate_bpm: float
    """``60 · f`` of the RSA peak in 0.12–0.5 Hz (:func:`resp_peak_hz`), breaths/min; NaN
    when the band has no peak holding a share of the power worth the name."""
    nyquist_hz: float = _NAN
    """The beats' Nyquist frequency ``1/(2·mean RR)``, Hz: nothing above it is counted. Below
    0.4 Hz (heart rate < 48 beats/min) the HF band, below 0.5 Hz the respiration band, ends
    here. NaN when the caller of :func:`band_powers` did not say."""


@dataclasses.dataclass(frozen=True, slots=True)
class Coherence:
    """Coherence ratio after McCraty et al. (2009) of one 64 s window."""

    ratio: float
    """``CR = P_peak / (P_total − P_peak)``: ``P_peak`` = power within ``f_p ± 0.015 Hz``,
    ``f_p`` = PSD peak in 0.04–0.26 Hz, ``P_total`` = power in 0.0033–0.4 Hz. Dimensionless."""
    peak_hz: float
    """``f_p``, Hz."""
    slow_share: float
    """``LF / P_total``: share of power in 0.04–0.15 Hz (slow oscillation), 0..1."""


def _tridiagonal(a: FloatArray, b: FloatArray, c: FloatArray, d: FloatArray) -> FloatArray:
    """Solve ``a[i]·x[i−1] + b[i]·x[i] + c[i]·x[i+1] = d[i]`` (``a[0]``, ``c[−1]`` unused) for a
    diagonally dominant system by cyclic reduction: each level folds the even-numbered
    equations into the odd ones as whole-array operations, so ~17 levels of numpy replace the
    Thomas algorithm's Python loop over every beat (80 000 beats: 27 → 5 ms)."""
    n = b.size
    if n <= 8:
        x = np.zeros(n)
        bb, dd = b.astype(np.float64), d.astype(np.float64)
        for i in range(1, n):  # Thomas: forward elimination, then back substitution
            w = a[i] / bb[i - 1]
            bb[i] -= w * c[i - 1]
            dd[i] -= w * dd[i - 1]
        if n:
            x[-1] = dd[-1] / bb[-1]
        for i in range(n - 2, -1, -1):
            x[i] = (dd[i] - c[i] * x[i + 1]) / bb[i]
        return x
    # A dummy equation x[n] = 0 after the last, so every odd row has two neighbours.
    a, b, c, d = (np.append(v, z) for v, z in ((a, 0.0), (b, 1.0), (c, 0.0), (d, 0.0)))
    a[0] = 0.0
    c[n - 1] = 0.0
    odd = np.arange(1, n, 2)
    lo, hi = odd - 1, odd + 1
    alpha = -a[odd] / b[lo]
    gamma = -c[odd] / b[hi]
    xo = _tridiagonal(
        alpha * a[lo],
        b[odd] + alpha * c[lo] + gamma * a[hi],
        gamma * c[hi],
        d[odd] + alpha * d[lo] + gamma * d[hi],
    )
    x = np.zeros(n + 1)
    x[odd] = xo
    even = np.arange(0, n, 2)
    left = np.where(even > 0, x[even - 1], 0.0)
    x[even] = (d[even] - a[even] * left - c[even] * x[even + 1]) / b[even]
    return x[:n]


def _spline_second_derivs(t: FloatArray, y: FloatArray) -> FloatArray:
    """Second derivatives of the natural cubic spline through (t, y): a symmetric tridiagonal,
    strictly diagonally dominant system (:func:`_tridiagonal`)."""
    n = t.size
    m = np.zeros(n)
    if n < 3:
        return m
    h = np.diff(t)
    rhs = 6.0 * np.diff(np.diff(y) / h)
    off = np.concatenate(([0.0], h[1:-1]))  # a[i] = h[i] (the row before); a[0] unused
    m[1:-1] = _tridiagonal(off, 2.0 * (h[:-1] + h[1:]), np.append(h[1:-1], 0.0), rhs)
    return m


def resample_cubic(
    t_s: npt.ArrayLike, rr_ms: npt.ArrayLike, fs: float = FS_HZ, t0: float | None = None
) -> tuple[FloatArray, FloatArray]:
    """Natural cubic spline through the beats, sampled at ``fs`` Hz from ``t0`` (default: the
    first beat) to the last beat. Returns ``(t_grid_s, rr_ms_on_grid)``."""
    t = np.asarray(t_s, dtype=np.float64)
    y = np.asarray(rr_ms, dtype=np.float64)
    if t.size < 2:
        return np.empty(0), np.empty(0)
    start = t[0] if t0 is None else t0
    start = start if start >= t[0] else t[0] + ((start - t[0]) % (1.0 / fs))
    grid = np.arange(start, t[-1] + 1e-9, 1.0 / fs)
    m = _spline_second_derivs(t, y)
    idx = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, t.size - 2)
    h = t[idx + 1] - t[idx]
    a = (t[idx + 1] - grid) / h
    b = 1.0 - a
    val = (
        a * y[idx] + b * y[idx + 1] + ((a**3 - a) * m[idx] + (b**3 - b) * m[idx + 1]) * h * h / 6.0
    )
    return grid, np.asarray(val, dtype=np.float64)


def spline_power_gain(f: FloatArray, mean_rr_s: float | FloatArray) -> FloatArray:
    """Power transfer of cubic-spline interpolation of beats spaced ``mean_rr_s`` apart.

    For uniform knots the cardinal cubic spline has the gain
    ``H(f) = sinc⁴(fΔ) · 3 / (2 + cos 2πfΔ)`` (Unser 1999); the resampled PSD is divided by
    ``H²`` up to ``fΔ = 0.5`` (the beats' own Nyquist frequency), which removes the 3 % loss a
    0.25 Hz oscillation otherwise suffers at 60 beats/min. ``f`` and ``mean_rr_s`` broadcast
    (one gain per row: ``f[None, :]``, ``mean_rr_s[:, None]``).

    Above ``fΔ = 0.5`` the spline's output holds no signal, only images of the spectrum below
    (a 0.25 Hz rhythm at 36 beats/min shows a mirror at 0.35 Hz); the gain is ``inf`` there,
    so that dividing by it leaves 0: that power is not counted (dividing by ``H²`` at
    ``fΔ = 0.5``, as before, amplified the images 4.6-fold into the HF band).
    """
    x = np.asarray(f, dtype=np.float64) * mean_rr_s
    px = np.pi * np.minimum(x, 0.5)
    s = np.sin(px)
    r = np.divide(s, px, out=np.ones_like(px), where=px > 0.0)  # sinc, 1 at f = 0
    r *= r
    # cos 2πfΔ = 1 − 2·sin² πfΔ: one sine for both factors (np.sinc and np.cos took 2× as long)
    h = r * r * 3.0 / (3.0 - 2.0 * s * s)
    out: FloatArray = np.where(x <= 0.5 + 1e-12, h * h, np.inf)
    return out


def nyquist_hz(mean_rr_s: float) -> float:
    """The beats' own Nyquist frequency ``1/(2·mean RR)``, Hz (``mean_rr_s`` in seconds)."""
    return 0.5 / mean_rr_s if mean_rr_s > 0 else _NAN


def _detrend_rows(x: FloatArray) -> FloatArray:
    """Remove the least-squares line from each row of ``x``."""
    n = x.shape[-1]
    k = np.arange(n, dtype=np.float64) - 0.5 * (n - 1)
    mean = x.mean(axis=-1, keepdims=True)
    denom = float(np.dot(k, k)) or 1.0
    slope = (x @ k)[..., None] / denom
    out: FloatArray = x - mean - slope * k
    return out


def _hann(n: int) -> FloatArray:
    """Symmetric Hann window without its zero end points."""
    out: FloatArray = np.hanning(n + 2)[1:-1] if n > 2 else np.ones(n)
    return out


@functools.lru_cache(maxsize=8)
def _low_band_dft(n: int, nfft: int, k: int) -> tuple[FloatArray, float]:
    """``(M, scale)``: for rows ``x`` of ``n`` samples, ``x @ M`` holds the real parts (first
    ``k`` columns) and imaginary parts (last ``k``) of DFT bins ``0 … k−1`` (length ``nfft``,
    zero-padded) of ``x`` detrended and Hann-windowed as :func:`periodograms` does;
    ``scale`` turns their squared magnitude into one-sided ms²/Hz (before the halving of the
    0 and Nyquist bins) at ``fs`` = 1 (divide by ``fs``)."""
    t = np.arange(n, dtype=np.float64)
    c = t - 0.5 * (n - 1)
    # Detrend = projection removing the mean and the least-squares line (symmetric).
    proj = np.eye(n) - 1.0 / n - np.outer(c, c) / (float(c @ c) or 1.0)
    w = _hann(n)
    phase = 2.0 * np.pi * np.outer(t, np.arange(k)) / nfft
    dft = np.concatenate([np.cos(phase), -np.sin(phase)], axis=1) * w[:, None]
    m = np.ascontiguousarray(proj @ dft)
    m.setflags(write=False)
    return m, 2.0 / float(np.dot(w, w))


def periodograms(
    x: FloatArray, fs: float, nfft: int | None = None, f_max: float | None = None
) -> tuple[FloatArray, FloatArray]:
    """One-sided Hann periodogram (ms²/Hz) of each detrended row of ``x``.

    With ``f_max``, only the bins up to ``f_max`` (inclusive) are computed and returned, as
    one matrix product whose matrix folds in the detrend, the window and the DFT
    (:func:`_low_band_dft`): for many rows and a band far below Nyquist (rolling HRV spectra
    use 129 of 513 bins) this is about twice as fast as the FFT and leaves a quarter of the
    spectrum to process. The values equal the FFT's to rounding (~1e-12 relative).
    """
    n = x.shape[-1]
    nfft = max(nfft or n, n)
    if f_max is not None:
        k = min(math.floor(f_max * nfft / fs + 1e-9) + 1, nfft // 2 + 1)
        m, scale = _low_band_dft(n, nfft, k)
        y = x @ m
        psd = (y[..., :k] ** 2 + y[..., k:] ** 2) * (scale / fs)
        psd[..., 0] *= 0.5
        if nfft % 2 == 0 and k == nfft // 2 + 1:
            psd[..., -1] *= 0.5
        return np.arange(k, dtype=np.float64) * (fs / nfft), psd
    w = _hann(n)
    spec = np.fft.rfft(_detrend_rows(x) * w, n=nfft, axis=-1)
    psd = (spec.real**2 + spec.imag**2) * (2.0 / (fs * float(np.dot(w, w))))
    psd[..., 0] *= 0.5
    if nfft % 2 == 0:
        psd[..., -1] *= 0.5
    return np.fft.rfftfreq(nfft, 1.0 / fs).astype(np.float64), psd


def welch_psd(
    x: npt.ArrayLike, fs: float = FS_HZ, segment_s: float = SEGMENT_S
) -> tuple[FloatArray, FloatArray]:
    """Welch PSD of an evenly sampled series: Hann segments of ``min(N, segment_s·fs)``
    samples, 50 % overlap, each linearly detrended; one-sided, ms²/Hz."""
    return _welch_runs([np.asarray(x, dtype=np.float64)], fs, segment_s)


def _welch_runs(
    runs: list[FloatArray], fs: float, segment_s: float
) -> tuple[FloatArray, FloatArray]:
    """Welch PSD averaged over the frames of several evenly sampled runs; no frame spans two
    runs. Frames of ``min(longest run, segment_s·fs)`` samples (runs shorter are left out)."""
    seg = min(max((x.size for x in runs), default=0), round(segment_s * fs))
    if seg < 4:
        return np.empty(0), np.empty(0)
    step = max(seg // 2, 1)
    frames = np.concatenate(
        [
            np.lib.stride_tricks.sliding_window_view(x, seg)[np.arange(0, x.size - seg + 1, step)]
            for x in runs
            if x.size >= seg
        ]
    )
    nfft = int(2 ** math.ceil(math.log2(max(seg, round(1.0 / 0.0033 * fs) + 1))))
    # In blocks: thousands of short runs (a file with a host stall every few beats) made
    # one padded array of them all — 0.5 GB for 80 000 beats.
    rows = max(1, _WELCH_CELLS // nfft)
    total = np.zeros(nfft // 2 + 1)
    f = np.empty(0)
    for a in range(0, frames.shape[0], rows):
        f, p = periodograms(frames[a : a + rows], fs, nfft=nfft)
        total[: p.shape[1]] += p.sum(axis=0)
    return f, total[: f.size] / frames.shape[0]


_WELCH_CELLS = 1 << 20
"""Padded samples of one block of Welch frames (8 MiB)."""


_LOMB_CELLS = 1 << 21
"""Complex cells of one block of the Lomb–Scargle sums (32 MiB): beats are taken in blocks."""


def _lomb_sums(
    t: FloatArray, y: FloatArray, k_max: int, df: float
) -> tuple[int, float, npt.NDArray[np.complex128], npt.NDArray[np.complex128],
           npt.NDArray[np.complex128]]:  # fmt: skip
    """What the Lomb–Scargle periodogram at ``f_k = k·df`` (``k = 1…k_max``) needs of some
    beats: ``n``, ``Σy``, ``Σ y·zᵏ``, ``Σ zᵏ`` and ``Σ z²ᵏ`` with ``z = exp(2πi·df·t)``. Sums:
    those of two sets of beats add up (:func:`lomb_frames` builds each frame from two
    half-frames). ``zᵏ`` comes from ``z^(b·j) · z^m`` (``b ≈ √(2·k_max)``): about ``2√k_max``
    complex exponentials per beat instead of ``k_max`` cosines and sines."""
    sy = np.zeros(k_max, np.complex128)
    s1 = np.zeros(k_max, np.complex128)
    s2 = np.zeros(k_max, np.complex128)
    if k_max == 0:
        return t.size, float(y.sum()), sy, s1, s2
    theta = (2.0 * np.pi * df) * t
    kk = 2 * k_max
    b = max(1, math.isqrt(kk))
    nb = -(-kk // b)
    rows = max(1, _LOMB_CELLS // (nb * b))
    for a in range(0, t.size, rows):
        th = theta[a : a + rows, None]
        low = np.exp(1j * th * np.arange(1, b + 1))  # z^1 … z^b
        high = np.exp(1j * th * (b * np.arange(nb)))  # z^0, z^b, z^2b, …
        z = (high[:, :, None] * low[:, None, :]).reshape(th.shape[0], nb * b)
        sy += y[a : a + rows] @ z[:, :k_max]
        s1 += z[:, :k_max].sum(axis=0)
        s2 += z[:, 1:kk:2].sum(axis=0)
    return t.size, float(y.sum()), sy, s1, s2


def _lomb_power(
    n: int,
    sum_y: float,
    sy: npt.NDArray[np.complex128],
    s1: npt.NDArray[np.complex128],
    s2: npt.NDArray[np.complex128],
) -> FloatArray:
    """The classical periodogram ``½[(Σy'cos ω(t−τ))²/Σcos² + (Σy'sin ω(t−τ))²/Σsin²]`` of
    the mean-removed ``y'`` from :func:`_lomb_sums`: ``tan 2ωτ = Σsin 2ωt / Σcos 2ωt``, and
    ``Σcos² ω(t−τ) = (n + |Σz²ᵏ|)/2``, ``Σsin² = (n − |Σz²ᵏ|)/2``."""
    c = sy - (sum_y / n) * s1  # Σ y'·zᵏ
    half = 0.5 * np.arctan2(s2.imag, s2.real)
    ct, st = np.cos(half), np.sin(half)
    r = np.abs(s2)
    return np.asarray(
        (c.real * ct + c.imag * st) ** 2 / (n + r) + (c.imag * ct - c.real * st) ** 2 / (n - r)
    )


def lomb_psd(
    t_s: npt.ArrayLike, rr_ms: npt.ArrayLike, f_max: float = 0.5, df: float | None = None
) -> tuple[FloatArray, FloatArray]:
    """Lomb–Scargle PSD of the beats at their own times, one-sided, ms²/Hz (see module doc),
    at ``df, 2·df, … ≤ min(f_max, 1/(2·mean RR))`` (default ``df = 1/(4T)``, ``T`` = the time
    the beats cover). Not above the beats' Nyquist frequency: there the periodogram mirrors
    the rhythms below it (a 0.25 Hz rhythm at 36 beats/min read as much power at 0.35 Hz)."""
    t = np.asarray(t_s, dtype=np.float64)
    y = np.asarray(rr_ms, dtype=np.float64)
    n = t.size
    if n < 4:
        return np.empty(0), np.empty(0)
    covered = float(np.sum(y)) / 1000.0
    f_max = min(f_max, nyquist_hz(covered / n))
    df = 1.0 / (4.0 * covered) if df is None else df
    f = np.arange(df, f_max + df * 1e-9, df)
    if f.size == 0:
        return f, np.empty(0)
    return f, _lomb_power(*_lomb_sums(t - t[0], y, f.size, df)) * 2.0 * covered / n


def _band(f: FloatArray, psd: FloatArray, lo: float, hi: float) -> float:
    if f.size < 2:
        return _NAN
    sel = (f >= lo) & (f < hi)
    return float(psd[..., sel].sum(axis=-1) * (f[1] - f[0]))


def _peak(f: FloatArray, psd: FloatArray, lo: float, hi: float) -> float:
    sel = np.flatnonzero((f >= lo) & (f < hi))
    if sel.size == 0 or not np.any(psd[sel] > 0):
        return _NAN
    return float(f[sel[int(np.argmax(psd[sel]))]])


def resp_peak_hz(f: FloatArray, psd: FloatArray) -> FloatArray:
    """Frequency (Hz) of the respiratory (RSA) peak of each row of ``psd``; NaN for a row
    with no peak in :data:`RESP_BAND_HZ`, or none that holds a share of the power.

    Candidates are the local maxima of the PSD in the band (higher than the bin below, not
    lower than the bin above; a bin at either end of ``f``, or at the last bin with any
    power, is never one: above the beats' Nyquist frequency the spectrum is zero, see
    :func:`spline_power_gain`). Of these, the one standing highest above the band's
    background wins: a power law ``c·f^b`` fitted to ``log PSD`` over the band by least
    squares, ``b`` limited to :data:`RESP_BACKGROUND_EXPONENT`. The plain maximum would pick
    the falling ``1/f``-like tail of the slow (LF) rhythms at the band's lower edge whenever
    RSA is weaker than that tail, which on a recording with a respiration belt put 30 % of
    the windows more than 2 breaths/min off (see ``docs/indices.md``).

    The winner is reported only if its power above that background within
    ±:data:`RESP_PEAK_HALF_WIDTH_HZ` is at least :data:`RESP_MIN_SHARE` of the power in
    0.04–0.5 Hz and at least :data:`RESP_MIN_POWER_MS2`. Without this rule a band with no
    breathing in it still gave a rate: the 0.2 Hz harmonic (0.1 ms²) of a clean 0.1 Hz rhythm
    of 800 ms² read 12/min, and resonance breathing at 6/min with a little beat noise read
    9–27/min from noise ripples.
    """
    p = np.atleast_2d(np.asarray(psd, dtype=np.float64))
    out = np.full(p.shape[0], _NAN)
    if p.shape[-1] != f.size or f.size < 2:
        return out
    powered = np.flatnonzero(np.any(p > 0, axis=0))
    if powered.size == 0:
        return out
    last = int(powered[-1])  # the band ends where the power does (the beats' Nyquist)
    sel = np.flatnonzero((f >= RESP_BAND_HZ[0]) & (f < RESP_BAND_HZ[1]))
    sel = sel[sel <= last]
    if sel.size < 3:
        return out
    ps = p[:, sel]
    inner = ((sel > 0) & (sel < last))[None, :]
    is_peak = inner & (ps > p[:, np.maximum(sel - 1, 0)]) & (ps >= p[:, np.minimum(sel + 1, last)])
    lp = np.log(np.maximum(ps, 1e-300))
    x = np.log(f[sel])
    xc = x - x.mean()
    slope = np.clip((lp @ xc) / float(xc @ xc), *RESP_BACKGROUND_EXPONENT)
    above = lp - slope[:, None] * x[None, :]  # log of PSD / background shape
    best = np.argmax(np.where(is_peak, above, -np.inf), axis=1)
    fp = f[sel][best]
    # The background itself: the fitted power law, level = mean of log PSD over the band.
    background = np.exp(above.mean(axis=1)[:, None] + slope[:, None] * x[None, :])
    near = np.abs(f[sel][None, :] - fp[:, None]) <= RESP_PEAK_HALF_WIDTH_HZ + 1e-12
    df = float(f[1] - f[0])
    excess = ((ps - background) * near).sum(axis=1) * df
    total = p[:, (f >= BANDS_HZ["lf"][0]) & (f < RESP_BAND_HZ[1])].sum(axis=1) * df
    ok = is_peak.any(axis=1) & (excess >= RESP_MIN_POWER_MS2) & (excess >= RESP_MIN_SHARE * total)
    out[ok] = fp[ok]
    return out


def band_powers(f: FloatArray, psd: FloatArray, window_s: float, nyquist: float = _NAN) -> Spectral:
    """:class:`Spectral` from a one-sided PSD (``f`` evenly spaced from 0) of ``window_s``
    seconds of beats whose Nyquist frequency is ``nyquist`` Hz (:func:`nyquist_hz`).

    A band is reported only when the window holds one whole cycle of its lowest frequency
    (VLF ≥ 303 s, LF ≥ 25 s, HF ≥ 6.7 s; the respiration rate ≥ 8.3 s, the peak frequency
    with LF), and ratios only when both their bands are. A spectrum with no power to speak
    of (below :data:`NO_POWER_MS2`: a constant series, whose PSD is rounding noise) reads
    0 ms² in every band and no ratio, peak or rate. Bins above ``nyquist`` are not counted
    (the spectra of this module have none to count; ``nyquist`` is reported as
    :attr:`Spectral.nyquist_hz`)."""
    if nyquist == nyquist and f.size and f[-1] > nyquist:
        psd = np.where(f <= nyquist + 1e-12, psd, 0.0)

    def band(name: str) -> float:
        lo, hi = BANDS_HZ[name]
        return _band(f, psd, lo, hi) if window_s >= 1.0 / lo else _NAN

    vlf, lf, hf = band("vlf"), band("lf"), band("hf")
    peak = _peak(f, psd, 0.04, 0.4) if lf == lf else _NAN
    resp = 60.0 * float(resp_peak_hz(f, psd)[0]) if window_s >= 1 / RESP_BAND_HZ[0] else _NAN
    if f.size >= 2 and _band(f, psd, BANDS_HZ["vlf"][0], BANDS_HZ["hf"][1]) < NO_POWER_MS2:
        vlf, lf, hf = (0.0 if x == x else x for x in (vlf, lf, hf))
        peak = resp = _NAN
    tot = lf + hf
    return Spectral(
        vlf_ms2=vlf,
        lf_ms2=lf,
        hf_ms2=hf,
        lf_hf=lf / hf if hf > 0 else _NAN,
        lf_nu=100.0 * lf / tot if tot > 0 else _NAN,
        hf_nu=100.0 * hf / tot if tot > 0 else _NAN,
        peak_hz=peak,
        resp_rate_bpm=resp,
        nyquist_hz=nyquist,
    )


def spectral(t_s: npt.ArrayLike, rr_ms: npt.ArrayLike, method: Method = "welch") -> Spectral:
    """Frequency-domain HRV of one unbroken series by the pinned default or Lomb–Scargle."""
    t = np.asarray(t_s, dtype=np.float64)
    rr = np.asarray(rr_ms, dtype=np.float64)
    if t.size < 4:
        return band_powers(np.empty(0), np.empty(0), 0.0)
    span = float(t[-1] - t[0])
    if method == "lomb":
        f, p = lomb_psd(t, rr)
        nyquist = nyquist_hz(float(np.sum(rr)) / 1000.0 / rr.size)  # as lomb_psd's
    else:
        _, x = resample_cubic(t, rr)
        f, p = welch_psd(x)
        p = p / spline_power_gain(f, span / (t.size - 1))
        nyquist = nyquist_hz(span / (t.size - 1))
    return band_powers(f, p, span, nyquist)


def spectral_runs(
    t_s: npt.ArrayLike, rr_ms: npt.ArrayLike, bounds: list[tuple[int, int]]
) -> Spectral:
    """Default-method spectrum of a series broken by gaps: ``bounds`` are the index ranges
    ``[a, b)`` of its unbroken runs. Each run is resampled on its own and the Welch frames are
    cut within runs, never across a gap (a spline across a lost minute invents slow power).
    For a single run this is :func:`spectral`."""
    t = np.asarray(t_s, dtype=np.float64)
    rr = np.asarray(rr_ms, dtype=np.float64)
    runs = [(t[a:b], rr[a:b]) for a, b in bounds if b - a >= 4]
    if not runs:
        return band_powers(np.empty(0), np.empty(0), 0.0)
    if len(runs) == 1:
        return spectral(*runs[0])
    f, p = _welch_runs([resample_cubic(ts, rs)[1] for ts, rs in runs], FS_HZ, SEGMENT_S)
    n = sum(ts.size - 1 for ts, _ in runs)
    spacing = sum(float(ts[-1] - ts[0]) for ts, _ in runs) / max(n, 1)
    longest = max(float(ts[-1] - ts[0]) for ts, _ in runs)
    p = p / spline_power_gain(f, spacing) if f.size else p
    return band_powers(f, p, longest, nyquist_hz(spacing))


def lomb_frames(t_s: npt.ArrayLike, rr_ms: npt.ArrayLike, frame_s: float = SEGMENT_S) -> Spectral:
    """Lomb–Scargle spectrum of a whole recording, gaps and all (the option for gappy data).

    The beats are taken at their own times, holes included: frames of ``frame_s`` with 50 %
    overlap (one frame if the recording is shorter), each frame's PSD from the beats inside
    it on a common grid (``df = 1/(4·frame_s)``), averaged over the frames whose beats cover
    at least half of them. Nothing is resampled, so no spline across a gap invents power. VLF
    is reported when the recording spans ≥ 303 s, as for the default method. The grid ends
    at the lowest Nyquist frequency of those frames (:func:`lomb_psd`).
    """
    t = np.asarray(t_s, dtype=np.float64)
    rr = np.asarray(rr_ms, dtype=np.float64)
    if t.size < 4:
        return band_powers(np.empty(0), np.empty(0), 0.0)
    start = float(t[0] - rr[0] / 1000.0)
    span = float(t[-1]) - start
    frame = min(frame_s, span)
    # Offsets from the start, then the start added: at epoch times (1.7e9 s) the 1e-9 was
    # below one float step, a recording shorter than a frame got no frame, and `starts[-1]`
    # raised IndexError (`settle analyze --spectrum lomb` of a 3 min reading).
    starts = start + np.arange(0.0, span - frame + 1e-9, frame / 2.0)
    # Frame m is half-frames m and m + 1: each half's sums are computed once.
    bounds = np.searchsorted(
        t, np.append(starts, [starts[-1] + frame / 2.0, starts[-1] + frame]), side="right"
    ).tolist()
    frames: list[tuple[int, int, int]] = []
    for m in range(starts.size):
        lo, hi = bounds[m], bounds[m + 2]
        if hi - lo < 4 or float(np.sum(rr[lo:hi])) / 1000.0 < 0.5 * frame:
            continue
        frames.append((m, lo, hi))
    if not frames:
        return band_powers(np.empty(0), np.empty(0), 0.0)
    # One grid for every frame, up to the lowest of their Nyquist frequencies.
    nyquist = min(
        nyquist_hz(float(np.sum(rr[lo:hi])) / 1000.0 / (hi - lo)) for _m, lo, hi in frames
    )
    df = 1.0 / (4.0 * frame)
    f = np.arange(df, min(0.5, nyquist) + df * 1e-9, df)
    halves = {
        h: _lomb_sums(
            t[bounds[h] : bounds[h + 1]] - start, rr[bounds[h] : bounds[h + 1]], f.size, df
        )
        for h in sorted({h for m, _lo, _hi in frames for h in (m, m + 1)})
    }
    psds: list[FloatArray] = []
    for m, lo, hi in frames:
        (na, ya, sya, s1a, s2a), (nb, yb, syb, s1b, s2b) = halves[m], halves[m + 1]
        p = _lomb_power(na + nb, ya + yb, sya + syb, s1a + s1b, s2a + s2b)
        psds.append(p * 2.0 * float(np.sum(rr[lo:hi])) / 1000.0 / (hi - lo))
    return band_powers(f, np.mean(psds, axis=0), span, nyquist)


def coherence_from_psd(f: FloatArray, psd: FloatArray) -> Coherence:
    """Coherence ratio (McCraty) from a one-sided PSD (see :class:`Coherence`)."""
    fp = _peak(f, psd, *COHERENCE_PEAK_HZ)
    if fp != fp:
        return Coherence(_NAN, _NAN, _NAN)
    df = f[1] - f[0]
    total = float(psd[(f >= 0.0033) & (f < 0.4)].sum() * df)
    if total < NO_POWER_MS2:  # a constant series: a ratio of rounding noise means nothing
        return Coherence(_NAN, _NAN, _NAN)
    peak = float(psd[np.abs(f - fp) <= COHERENCE_HALF_WIDTH_HZ + 1e-12].sum() * df)
    lf = _band(f, psd, *BANDS_HZ["lf"])
    rest = total - peak
    return Coherence(
        ratio=peak / rest if rest > 0 else _NAN,
        peak_hz=fp,
        slow_share=lf / total if total > 0 else _NAN,
    )
