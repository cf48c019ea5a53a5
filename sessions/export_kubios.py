"""Export one session for Kubios HRV: an RR text file plus a side file of markers.

``<stem>.txt``: one RR interval in milliseconds per line (ASCII, ``\\n``, up to 4 decimals),
the raw RR as the strap sent it — Kubios applies its own artefact correction, so the file
holds what was measured, in beat order. With ``rr_source="ecg"`` the RR are those of the R
peaks detected in the raw ECG (Polar H10), sample-timed; the first peak after each (re)start
of the ECG stream has no interval and is left out, like the time lost in a gap. Kubios
builds its time axis as the cumulative sum of these RR values, starting at 0 at the
beginning of the first interval.

``<stem>_markers.csv``: the markers, gaps and baseline, for entering as Kubios samples/events:
``kubios_t_s`` (seconds on Kubios' axis), ``kubios_hms`` (the same as ``H:MM:SS.s``),
``t_s`` (seconds since session start, Settle's time base), ``kind`` (marker kind, ``gap``
or ``baseline``), ``duration_s``, ``text``. Kubios' axis is
``t_s - (beat_t_s[0] - rr_ms[0] / 1000)``; it knows no gaps, so after a gap its axis runs
behind the session by the gap's length — ``kubios_t_s`` accounts for that by summing RR up
to the marker.
"""

from __future__ import annotations

import bisect
import csv
import itertools
from pathlib import Path
from typing import IO, Literal, cast

from sessions.files import ExportError, ProgressFn, atomic_file, plain_name, target_file
from sessions.store import SessionRecord, SessionStore

__all__ = ["export_kubios"]


def _rr_text(rr_ms: float) -> str:
    return f"{rr_ms:.4f}".rstrip("0").rstrip(".")


def _hms(t: float) -> str:
    sign = "-" if t < 0 else ""
    t = abs(t)
    h, rem = divmod(t, 3600)
    m, s = divmod(rem, 60)
    return f"{sign}{int(h)}:{int(m):02d}:{s:04.1f}"


RrSource = Literal["hrs", "ecg"]


def rr_series(rec: SessionRecord, rr_source: RrSource = "hrs") -> list[tuple[float, float]]:
    """``(beat_t_s, rr_ms)`` of the chosen source in beat order: the strap's beats, or the
    R peaks of the raw ECG that have an interval."""
    if rr_source == "ecg":
        return [(b.beat_t_s, b.rr_ms) for b in rec.ecg_beats if b.rr_ms is not None]
    return [(b.beat_t_s, b.rr_ms) for b in rec.beats]


def kubios_time(series: list[tuple[float, float]], t_s: float) -> float:
    """Session time ``t_s`` on Kubios' axis: cumulative RR up to the last beat at or before
    ``t_s``, plus the time since that beat (s). ``series`` as from :func:`rr_series`."""
    if not series:
        return t_s
    times = [t for t, _ in series]
    cum = list(itertools.accumulate(rr / 1000.0 for _, rr in series))
    i = bisect.bisect_right(times, t_s) - 1
    if i < 0:
        return t_s - (times[0] - series[0][1] / 1000.0)
    return cum[i] + (t_s - times[i])


def export_kubios(
    store: SessionStore,
    session_id: str,
    out: Path,
    *,
    progress: ProgressFn | None = None,
    rr_source: RrSource = "hrs",
) -> Path:
    """Write ``settle-<id>-rr.txt`` (``settle-<id>-ecg-rr.txt`` for the ECG's RR; or ``out``
    if it names a ``.txt`` file) and its ``_markers.csv`` side file beside it; return the RR
    file's path.

    Raises :class:`ExportError` when the session has no beats of that source or a file
    cannot be written.
    """
    suffix = "ecg-rr" if rr_source == "ecg" else "rr"
    target = target_file(Path(out), f"settle-{session_id}-{suffix}.txt", (".txt",))
    side = target.with_name(plain_name(f"{target.stem}_markers.csv", target.parent))
    rec = store.read_session(session_id)
    series = rr_series(rec, rr_source)
    if not series:
        what = (
            "no ECG-derived beats (raw ECG is recorded from a Polar H10 with [strap] ecg = true)"
            if rr_source == "ecg"
            else "no beats"
        )
        raise ExportError(target, f"session {session_id} has {what} to export")
    with atomic_file(target) as fh:
        text = cast(IO[str], fh)
        for n, (_t, rr) in enumerate(series, start=1):
            text.write(_rr_text(rr) + "\n")
            if progress is not None and n % 10_000 == 0:
                progress(n, len(series))
    events: list[tuple[float, str, float, str]] = [
        (m.t_s, m.kind, 0.0, m.text) for m in rec.markers
    ]
    events += [(g.start_t_s, "gap", g.end_t_s - g.start_t_s, g.reason) for g in rec.gaps]
    base = rec.info.baseline
    if base is not None and base.stop_t_s is not None:
        events.append((base.start_t_s, "baseline", base.stop_t_s - base.start_t_s, ""))
    events.sort(key=lambda e: e[0])
    with atomic_file(side) as fh:
        w = csv.writer(cast(IO[str], fh))
        w.writerow(["kubios_t_s", "kubios_hms", "t_s", "kind", "duration_s", "text"])
        for t_s, kind, dur, note in events:
            k = kubios_time(series, t_s)
            w.writerow([f"{k:.3f}", _hms(k), repr(t_s), kind, repr(dur), note])
    if progress is not None:
        progress(len(series), len(series))
    return target
