"""Export one session into a BIDS dataset (Brain Imaging Data Structure, physiological
recordings in the ``beh`` datatype).

``out`` is the dataset root; it is created if missing, and a session is added to an existing
dataset without touching its other files. A directory that is not a dataset yet (no
``dataset_description.json``) and holds other files (the CSV and EDF exports, say) is refused:
it would become a dataset root that the BIDS validator rejects (``NOT_INCLUDED``).
Written (``<sub>`` = ``sub-<subject>``, ``<ses>`` = ``ses-<session id without the dash>``,
task label ``settle``)::

    dataset_description.json       only if missing (Name, BIDSVersion, GeneratedBy)
    README                         only if missing
    <sub>/<ses>/beh/<sub>_<ses>_task-settle_physio.tsv.gz   RR and HR at 4 Hz
    <sub>/<ses>/beh/<sub>_<ses>_task-settle_physio.json     sidecar
    <sub>/<ses>/beh/<sub>_<ses>_task-settle_recording-ecg_physio.tsv.gz / .json  (if ECG)
    <sub>/<ses>/beh/<sub>_<ses>_task-settle_events.tsv      markers, gaps, baseline, not analysed
    <sub>/<ses>/beh/<sub>_<ses>_task-settle_events.json     column descriptions
    <sub>/<ses>/<sub>_<ses>_scans.tsv                        filename, acq_time of each physio file

``*_physio.tsv.gz``: gzip, tab-separated, **no header row** (the sidecar's ``Columns`` names
them): ``rr_ms`` (RR in ms, tachogram interpolated at 4 Hz; artefact-corrected where
correction has run) and ``hr_bpm`` (``60000 / rr_ms``), ``n/a`` where there are no beats, in
gaps and wherever the value would depend on an ``implausible`` or ``warmup`` beat (as the EDF
export). The ECG file has one column ``cardiac`` in µV at the recorded rate rounded to whole
Hz, resampled onto that grid by band-limited (windowed-sinc) interpolation within each unbroken
stretch of samples and rounded to whole µV — the same values as the EDF export's ``ECG``
(so the recorded samples only where they fall on the grid; the JSON export has them all) —
and ``n/a`` wherever no ECG was recorded (the EDF's 0 µV), each such stretch an
``ecg-not-recorded`` event. Other values are written to 4 decimals. Both files start at the
session start (``StartTime`` 0) and run to its end; events' ``onset`` is seconds since session
start, the same time base.

Subjects: the sidecar names the strap that recorded (``SettleDeviceId``, its device id). A
subject that already holds sessions of another strap in the dataset does not get this one
(:func:`strap_conflict`, :class:`ExportError`, nothing written): a group practice exported
without a subject per person filed four people as ``sub-01``. Sessions exported before the
field existed do not count; ``other_strap_ok`` (``settle export --force``) adds it anyway
(the same person on a new strap).

A session's files are written into a hidden staging folder beside ``<ses>`` and moved into
place together, replacing an earlier export of the same session whole: an interrupted export
(Ctrl-C) leaves the dataset as it was, never a session folder with some of its files.

``*_scans.tsv``: one row per physio file, ``filename`` (relative to the session folder,
``beh/…``) and ``acq_time``, the session's start (its first sample) in UTC,
``YYYY-MM-DDThh:mm:ss.ffffffZ``: BIDS allows no UTC offset, and a time without ``Z`` is read
in the time zone of whoever looks at the dataset.

``*_events.tsv``: ``onset`` (s), ``duration`` (s, 0 for markers), ``trial_type`` (marker kind,
``gap``, ``baseline``, ``not-analysed`` — the spans the physio file leaves ``n/a`` around
``implausible``/``warmup`` beats, their classes in ``text`` —, ``corrected`` — the physio
samples drawn from artefact-corrected intervals, as the EDF's ``corrected:`` annotations,
the beats' classes in ``text`` — or ``ecg-not-recorded`` — the spans the ECG file leaves
``n/a``), ``source``, ``text``; tabs and line breaks in texts become spaces.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import numpy.typing as npt

from sessions.export_json import package_version
from sessions.files import (
    ExportError,
    ExportRefused,
    ProgressFn,
    atomic_file,
    inside,
    one_line,
    path_too_long,
    plain_name,
)
from sessions.series import (
    DEFAULT_FS_HZ,
    ECG_KERNEL_HALF_WIDTH,
    baseline_span,
    corrected_runs,
    ecg_holes,
    ecg_on_grid,
    ecg_rate_hz,
    n_samples_for,
    not_analysed_spans,
    rr_on_grid,
)
from sessions.store import SessionRecord, SessionStore
from settle.errors import shown

__all__ = [
    "BIDS_VERSION",
    "DEVICE_FIELD",
    "acq_time",
    "bids_label",
    "export_bids",
    "strap_conflict",
]

BIDS_VERSION = "1.8.0"
TASK = "settle"
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
MAX_NAME_CHARS = 200
"""Longest file name the export writes (:func:`sessions.files.plain_name`'s limit): every
name holds the subject and session labels, and a subject too long for it failed as "cannot
create directory: File name too long" blamed on ``--out``."""
#: Sidecar field holding the device id of the strap that recorded the session.
DEVICE_FIELD = "SettleDeviceId"


def bids_label(value: str, what: str, *, drop_dashes: bool = False) -> str:
    """``value`` as a BIDS label (letters and digits only), else :class:`ExportError` (this
    also stops path tricks such as ``../x``). ``drop_dashes``: remove ``-`` and ``_`` first
    (for labels Settle derives itself, such as a session id); a label the user typed is taken
    as given, so ``a-b`` does not silently become ``ab``."""
    label = value.replace("-", "").replace("_", "") if drop_dashes else value
    if not _LABEL.match(label):
        hint = ""
        prefix = f"{what[:3]}-"
        if value.lower().startswith(prefix) and _LABEL.match(value[len(prefix) :]):
            hint = f" (give it without {prefix!r}: {value[len(prefix) :]})"
        raise ExportError(
            Path(what), f"{what} label must be letters and digits only, got {shown(value)}{hint}"
        )
    if len(label) > MAX_NAME_CHARS - 4:  # never fits, whatever the session ("sub-" + label)
        raise ExportError(
            Path(what), f"{what} label is too long for a file name ({len(label)} characters)"
        )
    return label


def _sidecar_straps(root: Path, pattern: str) -> list[tuple[str, str, str]]:
    """``(subject dir, session dir, device id)`` of every Settle physio sidecar under
    ``root`` matching ``pattern`` (relative to ``root``) that names its strap; unreadable
    sidecars and those of versions before :data:`DEVICE_FIELD` are skipped."""
    found = []
    for path in sorted(root.glob(pattern)):
        try:
            sidecar = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        device = sidecar.get(DEVICE_FIELD) if isinstance(sidecar, dict) else None
        if isinstance(device, str):
            found.append((path.parents[2].name, path.parents[1].name, device))
    return found


def strap_conflict(root: Path, subject: str, session_id: str, device_id: str) -> str | None:
    """Why session ``session_id`` of strap ``device_id`` must not go to ``sub-<subject>``
    of the dataset at ``root`` (one line), or None: the subject already holds a session of
    another strap (an earlier export of this same session does not count, nor does a session
    exported without :data:`DEVICE_FIELD`)."""
    sub = f"sub-{subject}"
    ses = f"ses-{bids_label(session_id, 'session', drop_dashes=True)}"
    if (root / sub).is_symlink() or not (root / sub).is_dir():
        return None  # export_bids refuses a link; nothing of this dataset is there
    physio = f"ses-*/beh/{sub}_ses-*_task-{TASK}_physio.json"
    others = sorted(
        {d for _sub, s, d in _sidecar_straps(root / sub, physio) if s != ses and d != device_id}
    )
    if not others:
        return None
    # Suggest the subject this strap already has in the dataset, else a free number.
    mine = [
        s.removeprefix("sub-")
        for s, _ses, d in _sidecar_straps(root, f"sub-*/ses-*/beh/sub-*_task-{TASK}_physio.json")
        if d == device_id and s != sub
    ]
    free = next(f"{k:02d}" for k in range(1, 10_000) if not (root / f"sub-{k:02d}").exists())
    hint = mine[0] if mine else free
    straps = "strap" if len(others) == 1 else "straps"
    return (
        f"{sub} already holds sessions of {straps} {', '.join(others)}; this session is of "
        f"strap {device_id}: give --subject, e.g. --subject {hint} (the same person on "
        "another strap: --force)"
    )


def _device_fields(meta: Mapping[str, Any]) -> dict[str, str]:
    """BIDS equipment fields of the strap that recorded (as the daemon stored what the strap
    said about itself): ``Manufacturer``, ``ManufacturersModelName``, ``SoftwareVersions``
    (its firmware). A field the strap did not report is left out, not invented."""
    strap = meta.get("strap")
    if not isinstance(strap, Mapping):
        return {}
    out = {}
    for key, field in (
        ("manufacturer", "Manufacturer"),
        ("model", "ManufacturersModelName"),
        ("firmware", "SoftwareVersions"),
    ):
        value = strap.get(key)
        if isinstance(value, str) and value.strip():
            out[field] = value.strip()
    return out


def _tsv_cell(x: float) -> str:
    return "n/a" if not np.isfinite(x) else repr(round(float(x), 4))


def _physio_bytes(columns: list[npt.NDArray[np.float64]]) -> bytes:
    buf = io.StringIO()
    for row in zip(*columns, strict=True):
        buf.write("\t".join(_tsv_cell(x) for x in row))
        buf.write("\n")
    # mtime=0: the same session gives byte-identical files.
    return gzip.compress(buf.getvalue().encode("ascii"), mtime=0)


def _text_cell(text: str) -> str:
    clean = one_line(text)
    return clean or "n/a"


#: ``trial_type`` of the spans the ECG file leaves ``n/a`` (the EDF: 0 µV, annotated).
ECG_NOT_RECORDED = "ecg-not-recorded"


def _events_tsv(
    rec: SessionRecord,
    ecg_holes_s: list[tuple[float, float]],
    end_s: float,
    corrected: list[tuple[float, float, str]],
) -> str:
    rows: list[tuple[float, float, str, str, str]] = []
    for m in rec.markers:
        rows.append((m.t_s, 0.0, m.kind, m.source.value, m.text))
    for g in rec.gaps:
        rows.append((g.start_t_s, g.end_t_s - g.start_t_s, "gap", "settle", g.reason))
    b = baseline_span(rec.info.baseline, end_s)  # an open one: to the session's end
    if b is not None:
        rows.append((b[0], b[1] - b[0], "baseline", "settle", ""))
    for start, end, classes in not_analysed_spans(rec.beats):
        rows.append((start, end - start, "not-analysed", "settle", classes))
    for onset, duration in ecg_holes_s:
        rows.append((onset, duration, ECG_NOT_RECORDED, "settle", "no ECG: cardiac is n/a"))
    for onset, duration, classes in corrected:
        rows.append((onset, duration, "corrected", "settle", classes))
    rows.sort(key=lambda r: r[0])
    lines = ["onset\tduration\ttrial_type\tsource\ttext"]
    for onset, dur, kind, source, text in rows:
        lines.append(
            f"{onset!r}\t{dur!r}\t{_text_cell(kind)}\t{_text_cell(source)}\t{_text_cell(text)}"
        )
    return "\n".join(lines) + "\n"


_EVENTS_JSON: dict[str, Any] = {
    "onset": {"Description": "Seconds since the session started", "Units": "s"},
    "duration": {"Description": "Length of the event (0 for markers)", "Units": "s"},
    "trial_type": {
        "Description": "Marker kind, or 'gap' (no usable beats), 'baseline' (rest period), "
        "'not-analysed' (beats recorded but not analysed: 'implausible' or 'warmup' in text; "
        "the physio file is n/a there), 'corrected' (physio samples drawn from an "
        "artefact-corrected interval, not a measured one: the beats' classes in text) or "
        "'ecg-not-recorded' (no ECG samples: before the first, a dropped frame, after the "
        "last; the recording-ecg physio file is n/a there)",
    },
    "source": {
        "Description": "Where the marker was entered: cli, mqtt, dashboard, import; "
        "settle for the rows Settle itself adds (gap, baseline, not-analysed, corrected, "
        "ecg-not-recorded)"
    },
    "text": {"Description": "The practitioner's note; for Settle's own rows, what they mean"},
}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def acq_time(started_ms: int) -> str:
    """A ``*_scans.tsv`` ``acq_time``: the instant ``started_ms`` (epoch ms) in UTC, as BIDS
    writes a date-time (``YYYY-MM-DDThh:mm:ss.ffffffZ``; no offset is allowed, and without
    ``Z`` it would be read in the reader's local time zone). Exact to the millisecond."""
    t = _EPOCH + dt.timedelta(milliseconds=started_ms)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond:06d}Z"


def _scans_tsv(filenames: list[str], started_ms: int) -> bytes:
    when = acq_time(started_ms)
    rows = ["filename\tacq_time", *(f"{name}\t{when}" for name in filenames)]
    return ("\n".join(rows) + "\n").encode("utf-8")


def _write(root: Path, path: Path, data: bytes) -> None:
    inside(root, path.parent)
    with atomic_file(path, binary=True) as fh:
        cast(IO[bytes], fh).write(data)


def _json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def not_a_dataset_why(root: Path) -> str | None:
    """Why ``root`` (an existing directory) should not become this export's dataset root
    (one line), or None (see :func:`not_a_dataset`)."""
    stray = not_a_dataset(root)
    if stray is None:
        return None
    return (
        f"not a BIDS dataset (no dataset_description.json) and it holds other files "
        f"({stray!r}…): the export would make it a dataset's root, which the BIDS validator "
        f"then refuses; give an empty or new directory (e.g. {root / 'bids'})"
    )


def not_a_dataset(root: Path) -> str | None:
    """The name of an entry that makes ``root`` (an existing directory) a poor dataset root:
    one that is not a dataset yet (no ``dataset_description.json``) and holds something
    other than what this export writes, hidden entries aside; None if it is fine."""
    if (root / "dataset_description.json").exists():
        return None
    try:
        names = sorted(p.name for p in root.iterdir())
    except OSError:
        return None  # the export itself says why it cannot write there
    return next((n for n in names if not n.startswith((".", "sub-")) and n not in _BIDS_TOP), None)


_BIDS_TOP = frozenset(
    {"README", "README.md", "README.txt", "README.rst", "CHANGES", "LICENSE", "CITATION.cff",
     "participants.tsv", "participants.json", "samples.tsv", "samples.json", "genetic_info.json",
     "code", "derivatives", "sourcedata", "stimuli", "phenotype"}
)  # fmt: skip
"""What a BIDS dataset's root may hold besides ``dataset_description.json`` and ``sub-*``:
a folder of only these is a dataset being started, not a folder of other files."""


_STAGING_SUFFIX = ".partial-"
"""After ``.<ses>`` in the name of the hidden folder a session's files are written into."""


def export_bids(
    store: SessionStore,
    session_id: str,
    out: Path,
    *,
    subject: str = "01",
    progress: ProgressFn | None = None,
    other_strap_ok: bool = False,
) -> Path:
    """Add session ``session_id`` to the BIDS dataset at ``out`` (see the module docstring)
    and return the directory of its files. Raises :class:`ExportError`, also when
    ``sub-<subject>`` holds sessions of another strap (:func:`strap_conflict`) unless
    ``other_strap_ok``."""
    root = Path(out)
    sub = f"sub-{bids_label(subject, 'subject')}"
    rec = store.read_session(session_id)
    ses = f"ses-{bids_label(session_id, 'session', drop_dashes=True)}"
    longest = f"{sub}_{ses}_task-{TASK}_{'recording-ecg_' if rec.n_ecg else ''}physio.tsv.gz"
    if len(longest) > MAX_NAME_CHARS:
        # A value of the command line, as a subject too long for any session (exit 2): it
        # was exit 1, as if the disk had failed.
        most = len(sub) - 4 - (len(longest) - MAX_NAME_CHARS)
        raise ExportRefused(
            Path("--subject"),
            f"too long for the file names of session {session_id} (at most {most} characters "
            f"here, got {len(sub) - 4})",
        )
    if root.exists() and not root.is_dir():
        raise ExportRefused(root, "BIDS export needs a directory (the dataset root)")
    if not root.parent.is_dir():
        raise ExportError(root, f"directory {root.parent} does not exist")
    # One recording, one person: the same session under a second subject (re-exported to
    # fix its subject) would count as two people's data in every analysis of the dataset.
    if root.is_dir():
        for other in sorted(root.glob(f"sub-*/{ses}")):
            if other.parent.name != sub and other.is_dir():
                raise ExportError(
                    root,
                    f"session {session_id} is already in this dataset as {other.parent.name} "
                    f"(remove {other} first to export it as {sub})",
                )
        why = strap_conflict(root, subject, session_id, rec.info.device_id)
        if why is not None and not other_strap_ok:
            raise ExportError(root, why)
        if (why := not_a_dataset_why(root)) is not None:
            raise ExportError(root, why)
    # The deepest file written: one in the staging folder (_STAGING_SUFFIX's random part is
    # tempfile's 8 characters). Past the system's path limit it failed half-way, exit 1,
    # naming that hidden folder ("…/sub-01/.ses-….partial-f4u0r2rv/beh/…physio.tsv.gz:
    # cannot write: File name too long", or "cannot create directory" for the dataset root).
    deepest = root / sub / f".{ses}{_STAGING_SUFFIX}XXXXXXXX" / "beh" / longest
    if path_too_long(deepest) and not path_too_long(root):
        raise ExportRefused(
            root,
            f"the export's files below it would have paths of {len(os.fsencode(deepest))} "
            "bytes, longer than the system takes: choose a shorter path",
        )
    final = root / sub / ses
    # What this export adds besides the session, removed again if it fails: a dataset root
    # holding only a dataset_description.json and an empty sub-01 looked like a dataset.
    made = [p for p in (root, root / sub) if not p.exists()]
    made += [p for p in (root / "dataset_description.json", root / "README") if not p.exists()]
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        inside(root, final)  # before creating anything below the root
        (root / sub).mkdir(mode=0o700, exist_ok=True)
        inside(root, root / sub)
        # The session's files are written into a hidden staging directory and moved into
        # place together: Ctrl-C in the middle left a session folder with 3 of its 4 files
        # (or, with an earlier export there, old and new files mixed).
        staging = Path(tempfile.mkdtemp(prefix=f".{ses}{_STAGING_SUFFIX}", dir=root / sub))
        beh_staged = staging / "beh"
        beh_staged.mkdir(mode=0o700)
    except OSError as exc:
        _undo(made)
        raise ExportError(root, f"cannot create directory: {exc.strerror or exc}") from exc
    try:
        _write_session(store, rec, root, beh_staged, sub, ses, progress)
        _move_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _undo(made)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "beh"


def _undo(made: list[Path]) -> None:
    """Remove what a failed export created (files; directories only if empty), newest first."""
    for p in reversed(made):
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            elif p.exists():
                p.unlink()


def _move_into_place(staging: Path, final: Path) -> None:
    """Replace ``final`` (an earlier export of the session, if any) by ``staging``: the old
    one is moved aside first and deleted only once the new one is in place."""
    old = None
    try:
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            final.rename(old / final.name)
        staging.rename(final)
    except OSError as exc:
        if old is not None and not final.exists():
            (old / final.name).rename(final)  # put the earlier export back
        raise ExportError(
            final, f"cannot move the export into place: {exc.strerror or exc}"
        ) from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_session(
    store: SessionStore,
    rec: SessionRecord,
    root: Path,
    beh: Path,
    sub: str,
    ses: str,
    progress: ProgressFn | None,
) -> None:
    """Write the session's files into ``beh`` (and the dataset's own files, once)."""
    session_id = rec.info.id
    inside(root, beh)
    stem = plain_name(f"{sub}_{ses}_task-{TASK}", beh)

    if not (root / "dataset_description.json").exists():
        _write(
            root,
            root / "dataset_description.json",
            _json_bytes(
                {
                    "Name": "Settle sessions",
                    "BIDSVersion": BIDS_VERSION,
                    "DatasetType": "raw",
                    "GeneratedBy": [{"Name": "Settle", "Version": package_version("settle-hrv")}],
                }
            ),
        )
    if not (root / "README").exists():
        _write(
            root,
            root / "README",
            b"Heart-rate recordings exported by Settle (chest strap RR intervals, markers).\n"
            b"See docs/sessions.md of Settle for every column.\n",
        )

    ecg = store.ecg(session_id) if rec.n_ecg else None
    info = rec.info
    # Session seconds (a --speed replay's wall-clock length times its speed), as the EDF.
    span_s = store.recorded_span_s(session_id, to_now=False)
    n = n_samples_for(span_s, DEFAULT_FS_HZ)
    rr = rr_on_grid(rec.beats, rec.gaps, n, DEFAULT_FS_HZ)
    with np.errstate(divide="ignore", invalid="ignore"):
        hr = np.where(rr > 0, 60_000.0 / rr, np.nan)
    if progress is not None:
        progress(0, 3)
    device = _device_fields(info.meta)
    # Both sidecars: the ECG file alone also says which session and strap it is.
    settle_fields = {
        "SettleVersion": package_version("settle-hrv"),
        "SettleSessionId": info.id,
        DEVICE_FIELD: info.device_id,
        "SettleStartedMs": info.started_ms,
        "SettleTimeScale": info.meta.get("time_scale", 1.0),
    }
    sidecar = {
        "SamplingFrequency": DEFAULT_FS_HZ,
        "StartTime": 0,
        "Columns": ["rr_ms", "hr_bpm"],
        "rr_ms": {
            "Description": "RR interval, tachogram linearly interpolated at 4 Hz "
            "(artefact-corrected where correction has run)",
            "Units": "ms",
        },
        "hr_bpm": {"Description": "Heart rate, 60000 / rr_ms", "Units": "beats/min"},
        **device,
        **settle_fields,
    }
    _write(root, beh / f"{stem}_physio.tsv.gz", _physio_bytes([rr, hr]))
    _write(root, beh / f"{stem}_physio.json", _json_bytes(sidecar))
    if progress is not None:
        progress(1, 3)
    holes: list[tuple[float, float]] = []
    if ecg is not None and ecg.fs_hz is not None:
        fs = float(max(1, round(ecg.fs_hz)))
        # Whole µV, as the EDF (and the strap) has them; + 0.0 turns -0.0 into 0.0.
        values = np.round(ecg_on_grid(ecg, n_samples_for(span_s, fs), fs)) + 0.0
        holes = ecg_holes(values, fs)
        rate = ecg_rate_hz(ecg)
        cardiac = (
            f"ECG of the chest strap, recorded at {rate:.2f} Hz on its own clock and "
            if rate is not None
            else "ECG of the chest strap, "
        ) + (
            f"resampled onto this {fs:g} Hz grid from the session start by band-limited "
            f"interpolation (Lanczos-windowed sinc, {ECG_KERNEL_HALF_WIDTH} samples each side) "
            "within each unbroken stretch of samples, rounded to whole uV: a recorded sample "
            "on a grid point keeps its value. n/a where no ECG was recorded (events: "
            "ecg-not-recorded). Settle's JSON export has the recorded samples and their times."
        )
        _write(root, beh / f"{stem}_recording-ecg_physio.tsv.gz", _physio_bytes([values]))
        _write(
            root,
            beh / f"{stem}_recording-ecg_physio.json",
            _json_bytes(
                {
                    "SamplingFrequency": fs,
                    "StartTime": 0,
                    "Columns": ["cardiac"],
                    "cardiac": {"Description": cardiac, "Units": "uV"},
                    **device,
                    **settle_fields,
                }
            ),
        )
    if progress is not None:
        progress(2, 3)
    events = _events_tsv(rec, holes, span_s, corrected_runs(rec.beats, rr, DEFAULT_FS_HZ))
    _write(root, beh / f"{stem}_events.tsv", events.encode("utf-8"))
    _write(root, beh / f"{stem}_events.json", _json_bytes(_EVENTS_JSON))
    # When each recording began (both files start at the session start): the sidecars' own
    # StartTime is 0, relative to it, so without this the dataset held no date at all but
    # the Settle-specific SettleStartedMs.
    physio = sorted(p.name for p in beh.iterdir() if p.name.endswith("_physio.tsv.gz"))
    scans = _scans_tsv([f"{beh.name}/{name}" for name in physio], info.started_ms)
    _write(root, beh.parent / f"{sub}_{ses}_scans.tsv", scans)
    if progress is not None:
        progress(3, 3)
