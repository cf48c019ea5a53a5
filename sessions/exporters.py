"""One entry point for every export format (what ``settle export`` calls).

Before anything is written, :func:`export_session` checks where the export would go: it
never writes onto the session store it reads (its database file or the ``-wal``, ``-shm``
and ``-journal`` files SQLite keeps beside it, compared as resolved paths, so a symbolic link
to them counts too), it does not replace an existing file unless ``force`` is given, and a
one-file format's file name must end in its extension (:data:`SUFFIXES`; an existing
directory gets the default name), and no name may be longer than the file system takes
(:func:`name_too_long`). Each refusal raises :class:`ExportRefused`. A BIDS
export writes into a dataset directory and keeps its behaviour there (a session exported
again replaces its own files), but its ``out`` must not be the store either, and a subject
that holds sessions of another strap there is refused unless ``force``
(:func:`sessions.export_bids.strap_conflict`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

from sessions.export import export_csv
from sessions.export_bids import bids_label, export_bids, not_a_dataset_why, strap_conflict
from sessions.export_edf import export_edf
from sessions.export_json import export_json
from sessions.export_kubios import RrSource, export_kubios, markers_file
from sessions.files import (
    ExportError,
    ExportRefused,
    ProgressFn,
    name_too_long,
    not_replaceable,
    path_too_long,
    refuse_database,
)
from sessions.store import SessionStore

__all__ = [
    "FORMATS",
    "STORE_SIBLINGS",
    "ExportFormat",
    "ExportRefused",
    "export_session",
    "name_too_long",
]

ExportFormat = Literal["csv", "json", "edf", "bids", "kubios"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)

#: Files SQLite keeps beside a database ``x.db`` (``x.db-wal``, ``x.db-shm``, ``x.db-journal``)
#: and the daemon's lock ``x.db-lock`` (:func:`sessions.store.daemon_lock`).
STORE_SIBLINGS: tuple[str, ...] = ("", "-wal", "-shm", "-journal", "-lock")


#: The file name endings of each one-file format (``out`` naming a file, not a directory).
SUFFIXES: dict[str, tuple[str, ...]] = {
    "csv": (".csv",),
    "json": (".json",),
    "edf": (".edf",),
    "kubios": (".txt",),
}


def export_session(
    store: SessionStore,
    session_id: str,
    fmt: ExportFormat,
    out: Path,
    *,
    progress: ProgressFn | None = None,
    subject: str = "01",
    rr_source: RrSource = "hrs",
    force: bool = False,
) -> Path:
    """Export session ``session_id`` as ``fmt`` to ``out`` and return what was written (the
    file, or for ``bids`` the directory holding the session's files). ``subject`` is the
    BIDS subject label; ``rr_source`` picks the strap's RR or the raw ECG's R peaks for
    ``kubios`` (the other formats carry both). ``force``: replace existing files (never the
    store's own); ``bids``: add the session to a subject holding sessions of another strap.
    Raises :class:`ExportRefused` (see the module docstring),
    :class:`sessions.files.ExportError` or :class:`settle.errors.SessionNotFound`."""
    if "\x00" in str(out):
        # No OS takes such a path; the os module would raise ValueError, not a typed error.
        raise ExportError(Path(str(out).replace("\x00", "\\0")), "path contains a NUL byte")
    out = Path(out)
    protected = _store_files(store.path)
    # A name longer than the file system takes is a path of the wrong kind, as Kubios' side
    # file named after one (exit code 2, nothing read or written): it was "cannot use this
    # path: File name too long", exit 1, for csv, json and edf, and a traceback for bids.
    if (why := name_too_long(out)) is not None:
        raise ExportRefused(out, why)
    if path_too_long(out.parent):  # a directory name no file system takes: it cannot be there
        raise ExportError(out, f"directory {out.parent} does not exist")
    try:
        planned = [out] if fmt == "bids" else _planned_files(fmt, out, session_id, rr_source)
    except OSError as exc:  # the path cannot be looked at (a directory without permission)
        raise ExportError(out, f"cannot use this path: {exc.strerror or exc}") from None
    except ExportError as exc:  # Kubios' side file named after a file name too long for it
        raise ExportRefused(exc.path, exc.reason) from None
    for path in planned:
        if (why := name_too_long(path)) is not None:  # out/<default name> past PATH_MAX
            raise ExportRefused(path, why)
    for path in planned:
        real = _resolved(path)
        if real is not None and real in protected:
            raise ExportRefused(
                path,
                f"refusing to write onto the session store {store.path} (choose another --out)",
            )
        if fmt == "bids":
            if not force and out.is_dir():
                # Whose session it is: a subject holding another strap's sessions is most
                # likely another person (a group practice exported without --subject).
                device = store.get(session_id).device_id
                why = strap_conflict(out, bids_label(subject, "subject"), session_id, device)
                if why is not None:
                    raise ExportRefused(out, why)
            if out.is_dir() and (why := not_a_dataset_why(out)) is not None:
                raise ExportRefused(out, why)  # a problem of the command line, as the above
            continue
        suffixes = SUFFIXES[fmt]
        if path == out and not out.name.lower().endswith(suffixes):
            # Every format the same way: the default CSV went into `x.json` (exit 0) while
            # json, edf and kubios refused a wrong name only as they wrote (exit 1).
            article = "an" if fmt == "edf" else "a"  # "ee-dee-eff"; "a csv", "a json"
            raise ExportRefused(
                out, f"{article} {fmt} export's file name must end in {' or '.join(suffixes)}"
            )
        why = not_replaceable(path)
        if why is not None:
            raise ExportRefused(path, why)
        refuse_database(path)
        if not force and os.path.lexists(path):
            raise ExportRefused(path, "file exists (use --force to replace it)")
    # Without force, a file that appears while the export runs is not replaced either.
    if fmt == "csv":
        return export_csv(store, session_id, out, progress=progress, replace=force)
    if fmt == "json":
        return export_json(store, session_id, out, progress=progress, replace=force)
    if fmt == "edf":
        return export_edf(store, session_id, out, progress=progress, replace=force)
    if fmt == "bids":
        return export_bids(
            store, session_id, out, subject=subject, progress=progress, other_strap_ok=force
        )
    if fmt == "kubios":
        return export_kubios(
            store, session_id, out, progress=progress, rr_source=rr_source, replace=force
        )
    raise ValueError(f"unknown export format {fmt!r}")


def _planned_files(fmt: str, out: Path, session_id: str, rr_source: str) -> list[Path]:
    """The files a one-file format writes for ``out``: the exporters' own rule (an existing
    directory gets the default name, anything else is the file), plus Kubios' side file."""
    default = {
        "csv": f"settle-{session_id}.csv",
        "json": f"settle-{session_id}.json",
        "edf": f"settle-{session_id}.edf",
        "kubios": f"settle-{session_id}-{'ecg-rr' if rr_source == 'ecg' else 'rr'}.txt",
    }[fmt]
    target = out / default if out.is_dir() else out
    if fmt == "kubios":
        return [target, markers_file(target)]
    return [target]


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a name the OS rejects
        return None


def _store_files(db: Path) -> set[Path]:
    real = _resolved(Path(db))
    if real is None:
        return set()
    return {real.with_name(real.name + suffix) for suffix in STORE_SIBLINGS}
