"""Export one session for Kubios HRV: an RR text file plus a side file of markers.

``<stem>.txt``: one RR interval in milliseconds per line (ASCII, ``\\n``, up to 4 decimals),
the raw RR as the strap sent it — Kubios applies its own artefact correction, so the file
holds what was measured, in beat order. Kubios builds its time axis as the cumulative sum of
these RR values, starting at 0 at the beginning of the first interval.

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
from typing import IO, cast

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


def kubios_time(rec: SessionRecord, t_s: float) -> float:
    """Session time ``t_s`` on Kubios' axis: cumulative RR up to the last beat at or before
    ``t_s``, plus the time since that beat (s)."""
    beats = rec.beats
    if not beats:
        return t_s
    times = [b.beat_t_s for b in beats]
    cum = list(itertools.accumulate(b.rr_ms / 1000.0 for b in beats))
    i = bisect.bisect_right(times, t_s) - 1
    if i < 0:
        return t_s - (times[0] - beats[0].rr_ms / 1000.0)
    return cum[i] + (t_s - times[i])


def export_kubios(
    store: SessionStore, session_id: str, out: Path, *, progress: ProgressFn | None = None
) -> Path:
    """Write ``settle-<id>-rr.txt`` (or ``out`` if it names a ``.txt`` file) and its
    ``_markers.csv`` side file beside it; return the RR file's path.

    Raises :class:`ExportError` when the session has no beats or a file cannot be written.
    """
    target = target_file(Path(out), f"settle-{session_id}-rr.txt", (".txt",))
    side = target.with_name(plain_name(f"{target.stem}_markers.csv", target.parent))
    rec = store.read_session(session_id)
    if not rec.beats:
        raise ExportError(target, f"session {session_id} has no beats to export")
    with atomic_file(target) as fh:
        text = cast(IO[str], fh)
        for n, b in enumerate(rec.beats, start=1):
            text.write(_rr_text(b.rr_ms) + "\n")
            if progress is not None and n % 10_000 == 0:
                progress(n, len(rec.beats))
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
            k = kubios_time(rec, t_s)
            w.writerow([f"{k:.3f}", _hms(k), repr(t_s), kind, repr(dur), note])
    if progress is not None:
        progress(len(rec.beats), len(rec.beats))
    return target
