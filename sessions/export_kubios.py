"""Export one session for Kubios HRV: an RR text file plus a side file of markers.

``<stem>.txt``: one RR interval in milliseconds per line (ASCII, ``\\n``, up to 4 decimals),
the raw RR as the strap sent it — Kubios applies its own artefact correction, so the file
holds what was measured, in beat order. With ``rr_source="ecg"`` the RR are those of the R
peaks detected in the raw ECG (Polar H10), sample-timed; the first peak after each (re)start
of the ECG stream has no interval and is left out, like the time lost in a gap. So are peaks
"detected" on the strap's full-scale start-up spikes (:func:`spike_peaks`: not heartbeats,
whatever their class) and the interval of the peak after one (it is measured from a spike);
``warmup`` / ``implausible`` peaks otherwise stay, as the strap's warm-up beats do. Kubios
builds its time axis as the cumulative sum of these RR values, starting at 0 at the
beginning of the first interval.

``<stem>_markers.csv``: the markers, gaps and baseline, for entering as Kubios samples/events:
``kubios_t_s`` (seconds on Kubios' axis), ``kubios_hms`` (the same as ``H:MM:SS.s``),
``t_s`` (seconds since session start, Settle's time base), ``kind`` (marker kind, ``gap``
or ``baseline``), ``duration_s`` (session seconds), ``text`` (one that begins like a
spreadsheet formula, ``=`` ``+`` ``-`` ``@``, with a leading ``'``), ``kubios_duration_s`` (the
same span on Kubios' axis), ``device_id`` (the strap that recorded the session, on every row,
as in the CSV export; the RR file Kubios reads stays numbers only).

Kubios' axis is the cumulative RR: beat ``i`` ends at ``sum(rr_ms[:i + 1]) / 1000``. It
knows no gaps: time without beats (a gap, lost beats) takes no room on it, so after a gap
its axis runs behind the session by the gap's length. :func:`kubios_time` maps a session
time onto it through the beat whose interval contains it (measured back from that beat's
end); a time inside a gap falls on the point where the gap sits, so a gap's
``kubios_duration_s`` is 0 (or the part of the next RR interval it overlaps), a marker in a
gap lands between the beats before and after it, and a baseline spanning a gap is shorter
on Kubios' axis. Times before the first interval began map to 0 (Kubios' axis starts there);
times after the last beat run on from its end.

The two files are written together (:func:`sessions.files.write_all`): both or neither.
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from sessions.files import (
    ExportError,
    NothingToExport,
    ProgressFn,
    one_line,
    target_file,
    write_all,
)
from sessions.series import baseline_span
from sessions.store import EcgBeatRow, EcgSeries, SessionRecord, SessionStore

__all__ = ["export_kubios", "markers_file"]

#: Longest file name taken where the directory does not say, bytes (ext4, XFS, btrfs, APFS).
_NAME_MAX = 255


_FORMULA_START = ("=", "+", "-", "@")
"""What makes a spreadsheet read a cell as a formula (OWASP's "CSV injection")."""


def _not_a_formula(text: str) -> str:
    """``text`` for the markers file, which is meant to be opened in a spreadsheet: one that
    begins like a formula gets a leading ``'`` (shown as text, not run). A marker's text can
    come from any client of the broker: ``=HYPERLINK("http://…")`` went in verbatim."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def markers_file(rr_file: Path) -> Path:
    """The side file of the RR file ``rr_file``: ``<its stem>_markers.csv`` beside it.

    Whatever name the RR file has (``my rr.txt``, ``rr-ö.txt``: the user chose it, as for
    every other format), this is a name in the same directory, so nothing but its length is
    checked: one longer than the file system takes (the RR file's name plus 8 bytes) is
    :class:`ExportError`."""
    side = rr_file.with_name(f"{rr_file.stem}_markers.csv")
    try:
        most = os.pathconf(rr_file.parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # a missing directory; no pathconf
        most = _NAME_MAX
    size = len(os.fsencode(side.name))
    if size > most:
        raise ExportError(
            side,
            f"the markers file's name would be {size} bytes, more than the file system takes "
            f"({most}): choose a shorter file name",
        )
    return side


def _rr_text(rr_ms: float) -> str:
    return f"{rr_ms:.4f}".rstrip("0").rstrip(".")


def _hms(t: float) -> str:
    """``H:MM:SS.s``, rounded to the tenth before the carry (59.96 s is ``0:01:00.0``, not
    ``0:00:60.0``)."""
    tenths = round(abs(t) * 10.0)
    sign = "-" if t < 0 and tenths else ""
    h, rem = divmod(tenths, 36_000)
    m, s = divmod(rem, 600)
    return f"{sign}{h}:{m:02d}:{s // 10:02d}.{s % 10}"


RrSource = Literal["hrs", "ecg"]

#: An ECG sample this far from 0 is no heart signal, µV (1 V: hundreds of times any surface
#: ECG). The Polar H10 sends its int24 full scale, ±8 388 607 µV, for a dozen samples in the
#: first seconds after the ECG stream starts (the virtual strap's ``unreliable_start_s``).
SPIKE_UV = 1_000_000
#: A peak this close to a spike sample was placed by it, s: the detector puts the R peak at
#: the largest band-passed value in the 150 ms before its feature peak (docs/pmd.md), which a
#: full-scale sample always is. Measured offsets are 5–7 ms.
SPIKE_WINDOW_S = 0.15


def spike_peaks(ecg_beats: list[EcgBeatRow], ecg: EcgSeries | None) -> npt.NDArray[np.bool_]:
    """For each ECG beat: whether its R peak lies within :data:`SPIKE_WINDOW_S` of a raw ECG
    sample beyond ±:data:`SPIKE_UV` — a start-up spike the detector took for a beat."""
    flags = np.zeros(len(ecg_beats), dtype=bool)
    if ecg is None or not len(ecg) or not ecg_beats:
        return flags
    spikes = np.sort(ecg.t_ns[np.abs(ecg.uv.astype(np.int64)) >= SPIKE_UV] / 1e9)
    if spikes.size == 0:
        return flags
    t = np.array([b.beat_t_s for b in ecg_beats], dtype=np.float64)
    i = np.searchsorted(spikes, t)
    after = np.abs(spikes[np.minimum(i, spikes.size - 1)] - t)
    before = np.abs(t - spikes[np.maximum(i - 1, 0)])
    return np.minimum(after, before) <= SPIKE_WINDOW_S


def rr_series(
    rec: SessionRecord, rr_source: RrSource = "hrs", ecg: EcgSeries | None = None
) -> list[tuple[float, float]]:
    """``(beat_t_s, rr_ms)`` of the chosen source in beat order: the strap's beats, or the
    R peaks of the raw ECG that have an interval, without the peaks on start-up spikes of
    ``ecg`` (the session's raw ECG, :func:`spike_peaks`) and without the interval of the
    peak after such a peak (it starts at the spike)."""
    if rr_source == "ecg":
        spike = spike_peaks(rec.ecg_beats, ecg)
        return [
            (b.beat_t_s, b.rr_ms)
            for k, b in enumerate(rec.ecg_beats)
            if b.rr_ms is not None and not spike[k] and not (k > 0 and spike[k - 1])
        ]
    return [(b.beat_t_s, b.rr_ms) for b in rec.beats]


def kubios_axis(series: list[tuple[float, float]]) -> Callable[[float], float]:
    """Session time (s) → Kubios' axis (s), never negative: :func:`kubios_time` with the
    series' times and cumulative RR computed once (every marker and gap of a day-long
    session is placed on it: rebuilt per event, 1 000 events × 100 000 beats took a minute)."""
    times = [t for t, _ in series]
    cum = list(itertools.accumulate(rr / 1000.0 for _, rr in series))

    def at(t_s: float) -> float:
        if not times:
            return max(0.0, t_s)
        i = bisect.bisect_left(times, t_s)  # the first beat ending at or after t_s
        if i == len(times):
            return cum[-1] + (t_s - times[-1])
        before = cum[i - 1] if i > 0 else 0.0
        return min(cum[i], max(before, cum[i] - (times[i] - t_s)))

    return at


def kubios_time(series: list[tuple[float, float]], t_s: float) -> float:
    """Session time ``t_s`` on Kubios' axis (s), never negative. ``series`` as from
    :func:`rr_series`; for many times, :func:`kubios_axis`.

    Inside the interval of beat ``i`` (its last ``rr_ms[i]`` ms before ``beat_t_s[i]``) the
    axis runs with session time, ending at the cumulative RR of beat ``i``; time between the
    end of one beat and the start of the next beat's interval (a gap, lost beats) collapses
    to the point between them. After the last beat the axis runs on with session time.
    """
    return kubios_axis(series)(t_s)


def export_kubios(
    store: SessionStore,
    session_id: str,
    out: Path,
    *,
    progress: ProgressFn | None = None,
    rr_source: RrSource = "hrs",
    replace: bool = True,
) -> Path:
    """Write ``settle-<id>-rr.txt`` (``settle-<id>-ecg-rr.txt`` for the ECG's RR; or ``out``
    if it names a ``.txt`` file) and its ``_markers.csv`` side file beside it; return the RR
    file's path.

    Raises :class:`ExportError` when the session has no beats of that source or a file
    cannot be written.
    """
    suffix = "ecg-rr" if rr_source == "ecg" else "rr"
    target = target_file(Path(out), f"settle-{session_id}-{suffix}.txt", (".txt",))
    side = markers_file(target)
    rec = store.read_session(session_id)
    ecg = store.ecg(session_id) if rr_source == "ecg" and rec.n_ecg else None
    series = rr_series(rec, rr_source, ecg)
    if not series:
        what = "no beats"
        if rr_source == "ecg" and rec.ecg_beats:
            # R peaks were stored, but none has an interval that is not from a spike.
            what = "no ECG-derived RR (its R peaks lack an interval or sit on start-up spikes)"
        elif rr_source == "ecg":
            what = (
                "no ECG-derived beats"
                " (raw ECG is recorded from a Polar H10 with [strap] ecg = true)"
            )
        raise NothingToExport(target, f"session {session_id} has {what} to export")
    rr_lines = []
    for n, (_t, rr) in enumerate(series, start=1):
        rr_lines.append(_rr_text(rr) + "\n")
        if progress is not None and n % 10_000 == 0:
            progress(n, len(series))
    events: list[tuple[float, str, float, str]] = [
        (m.t_s, m.kind, 0.0, m.text) for m in rec.markers
    ]
    events += [(g.start_t_s, "gap", g.end_t_s - g.start_t_s, g.reason) for g in rec.gaps]
    # An open baseline runs to the session's end, as in every export.
    base = baseline_span(rec.info.baseline, store.recorded_span_s(session_id, to_now=False))
    if base is not None:
        events.append((base[0], "baseline", base[1] - base[0], ""))
    events.sort(key=lambda e: e[0])
    side_text = io.StringIO(newline="")
    w = csv.writer(side_text)
    w.writerow(
        [
            "kubios_t_s", "kubios_hms", "t_s", "kind", "duration_s", "text",
            "kubios_duration_s", "device_id",
        ]
    )  # fmt: skip
    axis = kubios_axis(series)
    for t_s, kind, dur, note in events:
        k = axis(t_s)
        k_dur = axis(t_s + dur) - k
        # One line per event, as EDF and BIDS write it: a NUL or line break in a marker's
        # text broke CSV readers (Python's csv: "line contains NUL").
        row = [f"{k:.3f}", _hms(k), repr(t_s), kind, repr(dur), _not_a_formula(one_line(note))]
        w.writerow([*row, f"{k_dur:.3f}", rec.info.device_id])
    # Both or neither: a new RR file beside an old or missing side file (the second write
    # failing) looked like a complete pair and was not.
    write_all([(target, "".join(rr_lines)), (side, side_text.getvalue())], replace=replace)
    if progress is not None:
        progress(len(series), len(series))
    return target
