"""The session commands of the ``settle`` CLI: export, report, trends, log import/set and
sessions delete. :func:`register` adds them to the main app (``settle.cli``).

Like the rest of the CLI, every failure a user can cause is one line on stderr: exit code 2
for a bad command line or config, 1 for anything else.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from settle.console import err, one_line, out
from settle.console import fail as _fail
from settle.console import print_table as _print_table
from settle.errors import ConfigError, SessionNotFound, SettleError, shown
from settle.text import NOTES_APPEND_MAX_CHARS, NOTES_MAX_CHARS

if TYPE_CHECKING:
    from sessions.store import SessionInfo, SessionStore

__all__ = ["register"]


def a_path_text(value: str) -> str:
    """A path option's value kept as text (``parser=``): an empty one is a usage error.
    ``Path("")`` is the working directory, so ``--out ""`` wrote there and ``--db ""``
    opened it."""
    if value == "":
        raise typer.BadParameter("the path is empty")
    if "\x00" in value:  # no file name holds one ("ValueError: embedded null byte")
        raise typer.BadParameter("a path cannot contain a NUL character")
    return value


def a_path(value: str) -> Path:
    """:func:`a_path_text` as a :class:`~pathlib.Path`."""
    return Path(a_path_text(value))


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (default: $SETTLE_CONFIG or the user config).",
        parser=a_path,
    ),
]
DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="SQLite session store (default: user data dir).", parser=a_path),
]
SessionArg = Annotated[str, typer.Argument(help="Session id, unique id prefix, or 'latest'.")]

FORMAT_NAMES = ("csv", "json", "edf", "bids", "kubios")

TARGET_NAMES = ("self", "future", "relational", "free")


def _target_name(value: str) -> str:
    """``--target`` as the store names it, in any case and without surrounding spaces, as
    the daemon reads `settle session start --target Self` (here it was "unknown target");
    else exit 2."""
    name = value.strip().lower()
    if name not in TARGET_NAMES:
        _fail(f"unknown target {shown(value)} (available: {', '.join(TARGET_NAMES)})", 2)
    return name


def _resolve(store: SessionStore, ref: str) -> SessionInfo:
    """``store.resolve(ref)``; for ``latest``, a note on stderr when other straps recorded at
    the same time (a group practice): ``latest`` is only the last of them to start."""
    info = store.resolve(ref)
    if ref == "latest":
        end = info.stopped_ms if info.stopped_ms is not None else math.inf
        also = [
            s for s in store.list_sessions()
            if s.id != info.id and s.device_id != info.device_id and s.started_ms <= end
            and (s.stopped_ms is None or s.stopped_ms >= info.started_ms)
        ]  # fmt: skip
        if also:
            others = ", ".join(f"{s.id} ({s.device_id})" for s in also[:5])
            err.print(
                f"note: latest is {info.id} ({info.device_id}); other straps recorded at the "
                f"same time: {others}{', …' if len(also) > 5 else ''} — give a session id "
                "to pick one",
                markup=False,
            )
    return info


def baseline_bounds(text: str) -> tuple[float, float]:
    """``--baseline START:STOP`` (seconds of session time) as numbers; exit code 2 with one
    line when it is not two finite numbers with ``0 <= START < STOP``."""
    a, sep, b = text.partition(":")
    try:
        bounds = (float(a), float(b))
    except ValueError:
        bounds = None
    if not sep or bounds is None or not all(math.isfinite(x) for x in bounds):
        _fail(f"--baseline: expected START:STOP seconds, e.g. 0:120, got {shown(text)}", 2)
    if not 0 <= bounds[0] < bounds[1]:
        _fail(f"--baseline: need 0 <= START < STOP, got {shown(text)}", 2)
    return bounds


def check_baseline_span(bounds: tuple[float, float], every_s: float, text: str) -> None:
    """Refuse (exit code 2) a period the daemon would discard: shorter than
    :data:`processing.live.BASELINE_MIN_SAMPLES` steps of ``every_s``."""
    from processing.live import BASELINE_MIN_SAMPLES

    # As the live rule (baseline/stop): a 10 s period was kept here and rescored the
    # whole report, while the daemon always discards one under 15 s.
    need_s = BASELINE_MIN_SAMPLES * every_s
    if bounds[1] - bounds[0] < need_s:
        _fail(
            f"--baseline: {bounds[1] - bounds[0]:g} s is too short (at least {need_s:g} s, "
            f"as a baseline marked live), got {shown(text)}",
            2,
        )


def config_error_text(exc: ConfigError, db: Path | None) -> str:
    """A config error's line, naming ``--db`` when the flag gave the store's path (it read
    "config: storage.db_path: …")."""
    if exc.field == "storage.db_path" and db is not None:
        return f"--db: {exc.reason} (got {shown(str(db), 200)})"
    return str(exc)


def _db_path(config: Path | None, db: Path | None, *, must_exist: bool = True) -> Path:
    from settle.config import load_config

    try:
        path = load_config(config, storage={"db_path": db}).db_path
    except ConfigError as exc:
        _fail(config_error_text(exc, db), 2)
    if must_exist and not path.exists():
        _fail(f"no session store at {path} (run `settle demo` or `settle run` first)")
    return path


@contextmanager
def _progress(what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal; None (no output) otherwise."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    with Progress(
        TextColumn(what), BarColumn(), TaskProgressColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# -- export ---------------------------------------------------------------------------------


def export(
    session: SessionArg,
    out_arg: Annotated[
        str,
        typer.Option(
            "--out",
            help="File or existing directory to write (bids: the dataset root directory).",
            parser=a_path_text,
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", help="csv, json, edf, bids or kubios.")] = "csv",
    subject: Annotated[
        str | None,
        typer.Option(help="bids: the subject label (letters and digits; default 01)."),
    ] = None,
    rr_source: Annotated[
        str | None,
        typer.Option(
            "--rr-source",
            help="kubios: the strap's RR (hrs, default) or the R peaks of a Polar H10's raw "
            "ECG (ecg).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace existing files (never the session store itself); bids: add the "
            "session to a subject that holds sessions of another strap.",
        ),
    ] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Export a session: beats, indices, markers and gaps on one time base."""
    from sessions.exporters import ExportRefused, export_session
    from sessions.store import SessionStore

    if fmt not in FORMAT_NAMES:
        _fail(f"unknown export format {shown(fmt)} (available: {', '.join(FORMAT_NAMES)})", 2)
    # Options of one format are refused with another, not silently ignored (an EDF+
    # "--subject 02" kept its anonymous patient field; "--rr-source ecg" wrote the strap's RR).
    if subject is not None and fmt != "bids":
        _fail(f"--subject applies to --format bids only (not {fmt})", 2)
    if rr_source is not None and fmt != "kubios":
        _fail(f"--rr-source applies to --format kubios only (not {fmt})", 2)
    subject = "01" if subject is None else subject
    rr_source = "hrs" if rr_source is None else rr_source
    if rr_source not in ("hrs", "ecg"):
        _fail(f"unknown RR source {shown(rr_source)} (available: hrs, ecg)", 2)
    if fmt == "bids":
        from sessions.export_bids import bids_label
        from sessions.files import ExportError

        try:
            bids_label(subject, "subject")
        except ExportError as exc:  # a bad option value: a usage error, before the store
            _fail(f"--subject: {exc.reason}", 2)
    out_path = Path(out_arg)
    if not out_arg.endswith(("/", os.sep)):
        from sessions.files import name_too_long

        # Before anything asks the system about the path: is_dir() raised on a name too long
        # (kubios said "File name too long", exit 1, where the other formats say this, 2).
        if (why := name_too_long(out_path)) is not None:
            _fail(f"{out_arg}: {why}", 2)  # as the export itself says it
    # os.path.isdir, not Path.is_dir: on Python 3.11 the latter raises on a name too long
    # ("File name too long", exit 1) where this says the directory does not exist.
    if out_arg.endswith(("/", os.sep)) and fmt != "bids" and not os.path.isdir(out_path):
        # Path() drops the trailing slash: without this, `--out missing/` would write a file
        # called `missing`. An existing file read "directory a.csv does not exist".
        if os.path.lexists(out_path):
            _fail(f"{out_arg}: {out_path} is not a directory", 2)  # wrong kind of path
        _fail(f"{out_arg}: directory {out_path} does not exist")
    if fmt == "kubios" and not os.path.isdir(out_path):
        from sessions.export_kubios import markers_file
        from sessions.files import ExportError

        try:
            markers_file(out_path)  # named after --out: a usage error, before the store
        except ExportError as exc:
            _fail(str(exc), 2)
    path = _db_path(config, db)
    try:
        with SessionStore.open_for_reading(path) as store:
            info = _resolve(store, session)
            with _progress(f"export {fmt}") as progress:
                written = export_session(
                    store,
                    info.id,
                    fmt,  # type: ignore[arg-type]  # checked against FORMAT_NAMES above
                    out_path,
                    progress=progress,
                    subject=subject,
                    rr_source=rr_source,  # type: ignore[arg-type]  # checked above
                    force=force,
                )
    except ExportRefused as exc:  # onto the store, an existing file, another strap's subject
        _fail(str(exc), 2)
    except SettleError as exc:
        _fail(str(exc))
    out.print(f"wrote {one_line(str(written))}", markup=False)
    if fmt == "kubios":  # its side file was written too: say so
        from sessions.export_kubios import markers_file

        out.print(f"wrote {one_line(str(markers_file(written)))}", markup=False)


# -- report / trends ------------------------------------------------------------------------


def report(
    session: SessionArg,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Directory for the PNG and HTML (created if missing).", parser=a_path
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a report of this session already there.")
    ] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write a session report: a PNG and an HTML page with a plain-language summary."""
    from sessions.files import ExportRefused
    from sessions.report import write_report
    from sessions.store import SessionStore

    path = _db_path(config, db)
    try:
        with SessionStore.open_for_reading(path) as store:
            info = _resolve(store, session)
            png, page = write_report(store, info.id, out_dir, force=force)
    except ExportRefused as exc:  # a problem of the command line, nothing written
        _fail(str(exc), 2)
    except SettleError as exc:
        _fail(str(exc))
    out.print(f"wrote {one_line(str(page))}", markup=False)
    out.print(f"wrote {one_line(str(png))}", markup=False)


def _opt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def _reactions_cell(n: int, clear: int, irregular: int) -> str:
    """``"3 (1 clear)"``; markers whose rhythm was too irregular to read are named apart."""
    cell = f"{n} ({clear} clear)" if n else "0"
    return cell + (f" +{irregular} rhythm irregular" if irregular else "")


def trends_cmd(
    target: Annotated[
        str | None, typer.Option(help="Only sessions held with this target model.")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Also write settle-trends.png into this directory.", parser=a_path
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="Only sessions of this strap (device id, or its `settle pair` label)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a settle-trends.png already in --out.")
    ] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Progress across sessions: settling latency, score change, recovery after markers."""
    from sessions.files import ExportRefused, plain_name
    from sessions.report import (
        Verdict,
        duration_words,
        output_directory,
        trends,
        write_trends_png,
    )
    from sessions.store import IntentionTarget, SessionStore

    target = None if target is None else _target_name(target)
    path = _db_path(config, db)
    try:
        with SessionStore.open_for_reading(path) as store:
            if device is not None:
                from settle.pairing import device_for_label

                typed = device
                try:
                    device = device_for_label(device)
                except ConfigError as exc:
                    _fail(str(exc), 2)
                if device not in {s.device_id for s in store.list_sessions()}:
                    # "no session of strap 'anna'" when no strap was paired as anna misled.
                    hint = (
                        f" (no strap is paired as {shown(typed)}: `settle pair --list` shows the "
                        "labels, `settle sessions list` the straps)"
                        if device == typed
                        else ""
                    )
                    _fail(f"no session of strap {shown(device)} in {path}{hint}")
            rows = trends(store, None if target is None else IntentionTarget(target), device)
        png = None
        if out_dir is not None:
            out_dir = output_directory(out_dir, "the trends plot")
            png_path = out_dir / plain_name("settle-trends.png", out_dir)
            png = write_trends_png(rows, png_path, force=force)
    except ExportRefused as exc:  # a problem of the command line, nothing written
        _fail(str(exc), 2)
    except SettleError as exc:
        _fail(str(exc))
    verdict_words = {
        Verdict.NOT_YET: "not yet", Verdict.UNDER_WAY: "under way at end",
        Verdict.TOO_SHORT: "too short", Verdict.NO_SCORE: "no score", Verdict.CAUGHT_UP: "",
    }  # fmt: skip
    if as_json:
        items = [
            {
                "id": r.session_id,
                "started_ms": r.started_ms,
                "target": None if r.target == "–" else r.target,  # the table's dash
                "latency_s": r.latency_s,
                "reference": r.reference,
                "score_change": r.score_change,
                "median_recovery_s": r.median_recovery_s,
                "n_reactions": r.n_reactions,
                "n_responses": r.n_responses,
                "n_irregular_rhythm": r.n_irregular,
                "scored": r.scored,
                "catching_up": r.verdict.value,
                "device_id": r.device_id,
            }
            for r in rows
        ]
        out.print(json.dumps({"v": 1, "sessions": items}), markup=False, soft_wrap=True)
    elif not rows:
        out.print("No sessions" + (f" with target {target}" if target else "") + ".")
    else:
        # With several straps the rows are different people: each names its strap.
        several = len({r.device_id for r in rows}) > 1
        _print_table(
            ["started (local)", "id", *(["strap"] if several else []), "target",
             "caught up after", "from", "score change", "median recovery", "reactions"],
            [
                [
                    _local_minute(r.started_ms),
                    r.session_id,
                    *([r.device_id] if several else []),
                    r.target,
                    duration_words(r.latency_s) if r.latency_s is not None
                    else verdict_words[r.verdict],
                    r.reference or "",
                    _opt(r.score_change, "+.1f"),
                    "" if r.median_recovery_s is None else duration_words(r.median_recovery_s),
                    _reactions_cell(r.n_reactions, r.n_responses, r.n_irregular),
                ]
                for r in rows
            ],
        )  # fmt: skip
    if png is not None:  # on stderr after --json, so stdout stays one JSON document
        (err if as_json else out).print(f"wrote {one_line(str(png))}", markup=False)


# -- log ------------------------------------------------------------------------------------


def log_import(
    session: SessionArg,
    file: Annotated[
        Path, typer.Argument(help="Journal: CSV, JSON lines or 'HH:MM:SS text'.", parser=a_path)
    ],
    offset: Annotated[
        float,
        typer.Option(
            help="Seconds added to every journal time (journal clock behind: positive; "
            "session seconds for a t_s column)."
        ),
    ] = 0.0,
    fmt: Annotated[str, typer.Option("--format", help="auto, csv, jsonl or text.")] = "auto",
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="First remove the earlier import of this journal (its markers, at any shift).",
        ),
    ] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Import a timestamped journal as markers of a session (all lines or none)."""
    from sessions.journal import MAX_OFFSET_S, import_journal
    from sessions.store import SessionStore

    if fmt not in ("auto", "csv", "jsonl", "text"):
        _fail(f"unknown journal format {shown(fmt)} (available: auto, csv, jsonl, text)", 2)
    if not (math.isfinite(offset) and abs(offset) <= MAX_OFFSET_S):
        _fail(f"--offset must be within ±{MAX_OFFSET_S:.0f} s (24 h), got {offset:g}", 2)
    path = _db_path(config, db)
    try:
        with SessionStore.open_existing(path) as store:
            info = _resolve(store, session)
            rows = import_journal(
                store,
                info.id,
                file,
                fmt=fmt,  # type: ignore[arg-type]  # checked above
                offset_s=offset,
                replace=replace,
            )
    except SettleError as exc:
        _fail(str(exc))
    n = len(rows)
    if n == 0:
        out.print(f"nothing new to import into session {info.id}: every entry was imported "
                  "already", markup=False)  # fmt: skip
    else:
        what = f"{n} marker" + ("s" if n != 1 else "")
        out.print(f"imported {what} into session {info.id}", markup=False)


def log_set(
    session: SessionArg,
    target: Annotated[
        str | None, typer.Option(help="Target model: self, future, relational or free.")
    ] = None,
    statement: Annotated[str | None, typer.Option(help="The statement held.")] = None,
    practice: Annotated[str | None, typer.Option(help="Practice kind.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Add a tag (repeatable).")] = None,
    notes: Annotated[
        str | None,
        typer.Option(
            help=f"Append to the session's notes (at most {NOTES_APPEND_MAX_CHARS} characters; "
            f"a session keeps at most {NOTES_MAX_CHARS}).",
        ),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(metavar="START:STOP", help="Baseline period, seconds.")
    ] = None,
    started: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN",
            help="When the session really began, 'YYYY-MM-DD HH:MM[:SS]' local time (or ISO "
            "8601 with an offset): for a session recorded while the host's clock was wrong. "
            "Its stop moves with it.",
        ),
    ] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Fill in a session's log afterwards: intention, tags, notes, baseline period, start.

    All changes are checked first and stored in one transaction: if one is rejected, none
    is stored.
    """
    from sessions.store import (
        BaselinePeriod,
        Intention,
        IntentionTarget,
        NotesTooLong,
        SessionStore,
        check_notes_append,
    )

    started_ms = None if started is None else _parse_started(started)

    bounds: tuple[float, float] | None = None
    if baseline is not None:
        bounds = baseline_bounds(baseline)
        from settle.config import load_config

        try:
            every_s = load_config(config, storage={"db_path": db}).processing.indices_every_s
        except ConfigError as exc:
            _fail(config_error_text(exc, db), 2)
        check_baseline_span(bounds, every_s, baseline)
    target = None if target is None else _target_name(target)
    # As the same fields sent over MQTT (feedback.payloads.Intention): they are shown on the
    # dashboard, in reports and on the terminal, where a control character (an escape
    # sequence) would act on the terminal.
    from feedback.payloads import PRACTICE_MAX_CHARS, STATEMENT_MAX_CHARS
    from settle.text import control_character

    for option, text, most in (
        ("--statement", statement, STATEMENT_MAX_CHARS),
        ("--practice", practice, PRACTICE_MAX_CHARS),
        *(("--tag", t, 64) for t in tag or []),
    ):
        if text is None:
            continue
        if len(text) > most:
            _fail(f"{option}: at most {most} characters, got {len(text)}", 2)
        if control_character(text, lines=False) is not None:
            _fail(f"{option}: control characters are not allowed, got {shown(text)}", 2)
    if notes is not None:
        # It took any length, and any number of appends: megabytes of notes went into the
        # store, and with them into every `sessions list`, report and JSON export. The store
        # refuses them (append_notes); asked here first, before the store is opened.
        try:
            check_notes_append(notes)
        except NotesTooLong as exc:
            _fail(f"--notes: {exc.detail}", 2)
    # Notes may hold tab and line breaks (a marker's text may), nothing else: an escape
    # sequence went into the store, the report and History unchecked.
    bad = None if notes is None else control_character(notes, lines=True)
    if bad is not None:
        _fail(f"--notes: control character {bad!r} is not allowed (tab and line breaks are)", 2)
    if notes is not None and not notes.strip():
        # It printed "updated session …" and appended nothing (or a blank paragraph).
        _fail("--notes: nothing to append (the text is empty)", 2)
    if all(x is None for x in (target, statement, practice, notes, baseline, started)) and not tag:
        # It printed "updated session …" having changed nothing.
        _fail(
            "nothing to set: give --target, --statement, --practice, --tag, --notes, "
            "--baseline or --started",
            2,
        )
    path = _db_path(config, db)
    try:
        with SessionStore.open_existing(path) as store:
            info = _resolve(store, session)
            if started_ms is not None and info.stopped_ms is not None:
                end_ms = started_ms + info.stopped_ms - info.started_ms
                if end_ms > time.time() * 1000 + 60_000:
                    _fail(
                        f"--started: session {info.id} would then end "
                        f"{_local_minute(end_ms)}, in the future (it lasted "
                        f"{_signed_duration((info.stopped_ms - info.started_ms) / 1000)[1:]})",
                        2,
                    )
            if bounds is not None:
                span = store.recorded_span_s(info.id)
                if bounds[1] > span + 1.0:
                    _fail(
                        f"--baseline: STOP {bounds[1]:g} s is past the end of session "
                        f"{info.id} ({span:.1f} s recorded)",
                        2,
                    )
            with store.batch():  # all or nothing
                if target is not None or statement is not None or practice is not None:
                    old = info.intention
                    if target is not None:
                        new_target = IntentionTarget(target)
                    elif old is not None:
                        new_target = old.target
                    else:
                        _fail("--statement/--practice need --target for a session without one", 2)
                    store.set_intention(
                        info.id,
                        Intention(
                            new_target,
                            statement if statement is not None else (old.statement if old else ""),
                            practice if practice is not None else (old.practice if old else ""),
                        ),
                    )
                if tag:
                    store.add_tags(info.id, tag)
                if notes:
                    store.append_notes(info.id, notes)  # NotesTooLong: all rolled back
                if bounds is not None:
                    store.set_baseline(info.id, BaselinePeriod(*bounds))
                shift_ms = 0 if started_ms is None else store.move_session(info.id, started_ms)
    except NotesTooLong as exc:
        _fail(f"--notes: {exc.detail}", 2)
    except ValueError as exc:
        _fail(str(exc), 2)
    except SettleError as exc:
        _fail(str(exc))
    out.print(f"updated session {info.id}", markup=False)
    if shift_ms:
        out.print(
            f"it now starts {_local_minute(info.started_ms + shift_ms)} (was "
            f"{_local_minute(info.started_ms)}: {_signed_duration(shift_ms / 1000)})",
            markup=False,
        )


def _local_minute(epoch_ms: int) -> str:
    """Local time to the minute with the zone's abbreviation: across a clock change the
    same wall time comes twice (a trends table read 02:40 and then 02:10 for the later
    session, the night the clocks went back)."""
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(epoch_ms / 1000))


def _signed_duration(s: float) -> str:
    """``+3 d 2 h``, ``-45 min``, ``+12 s``: the size of a moved start, roughly."""
    sign, s = ("-" if s < 0 else "+"), abs(s)
    if s >= 86_400:
        d, h = divmod(round(s / 3600), 24)
        return f"{sign}{d} d" + (f" {h} h" if h else "")
    if s >= 3600:
        h, m = divmod(round(s / 60), 60)
        return f"{sign}{h} h" + (f" {m} min" if m else "")
    if s >= 60:
        return f"{sign}{round(s / 60)} min"
    return f"{sign}{round(s)} s"


def _parse_started(text: str) -> int:
    """``--started`` as epoch ms: a local date and time, or ISO 8601 with its offset. Exits
    with one line on anything else, or on a time not yet come."""
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        _fail(
            f"--started: expected a date and time like '2026-11-28 07:30' (local) or "
            f"'2026-11-28T07:30:00+01:00', got {shown(text)}",
            2,
        )
    if when.tzinfo is None:
        # The host's local time, as `settle sessions list` shows it. A clock time that the
        # change to summer time skips, or that the change back repeats, names no one instant:
        # it was moved or picked silently.
        early, late = when.replace(fold=0).astimezone(), when.replace(fold=1).astimezone()
        if early.utcoffset() != late.utcoffset():
            both = early.timestamp() != late.timestamp() and early.replace(tzinfo=None) == when
            _fail(
                f"--started: {shown(text)} "
                + ("occurs twice here (the clocks went back)" if both else "does not exist "
                   "here (the clocks went forward)")
                + "; give it with its offset, e.g. "
                f"'{when:%Y-%m-%dT%H:%M}{early:%z}'",
                2,
            )  # fmt: skip
        when = early
    ms = round(when.timestamp() * 1000)
    if ms > time.time() * 1000 + 60_000:
        _fail(f"--started: {shown(text)} is in the future", 2)
    if ms < 946_684_800_000:  # 2000-01-01T00:00Z
        _fail(f"--started: {shown(text)} is before 2000", 2)
    return ms


# -- sessions delete ------------------------------------------------------------------------


def sessions_delete(
    session: Annotated[str, typer.Argument(help="Full session id (see `settle sessions list`).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option(help="Also delete a session that is still marked running.")
    ] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Delete a session completely: beats, indices, markers, gaps, ECG and its log."""
    from sessions.store import SessionState, SessionStore, daemon_running

    path = _db_path(config, db)
    try:
        with SessionStore.open_existing(path) as store:
            # The full id only: a prefix or 'latest' is too easy to get wrong for a deletion.
            try:
                info = store.get(session)
            except SessionNotFound:
                try:
                    meant = store.resolve(session).id
                except SessionNotFound:
                    raise
                except SettleError as exc:  # a prefix of several: say so, not "no session"
                    _fail(f"delete needs the full session id: {exc}")
                _fail(
                    f"delete needs the full session id, not {shown(session)} (did you mean "
                    f"{meant}? see `settle sessions list`)"
                )
            if info.state is SessionState.RUNNING and daemon_running(path):
                # --force is for a session a crash left marked running; deleting one a
                # daemon is recording lost every beat after it while the daemon said
                # "N beats stored".
                _fail(f"session {info.id} is being recorded by a running daemon (stop it first)")
            if info.state is SessionState.RUNNING and not force:
                _fail(
                    f"session {info.id} is marked running but no daemon is recording it (a "
                    "crash left it so; the next `settle run`/`demo` marks it interrupted): "
                    "use --force to delete it now"
                )
            if not yes:
                n = next((s.n_beats for s in store.list_sessions() if s.id == info.id), 0)
                started = _local_minute(info.started_ms)
                try:
                    ok = typer.confirm(
                        f"Delete session {info.id} (started {started}, {n} beats) for good?",
                        err=True,
                    )
                except typer.Abort:  # end of input (Ctrl-D): end the prompt's line first
                    err.print()
                    ok = False
                if not ok:
                    _fail("nothing deleted")
            store.delete_session(info.id)
    except SettleError as exc:
        _fail(str(exc))
    out.print(f"deleted session {info.id}", markup=False)


def register(app: typer.Typer, sessions_app: typer.Typer) -> None:
    """Add the session commands to ``app`` (and ``delete`` to its ``sessions`` group)."""
    app.command()(export)
    app.command()(report)
    app.command("trends")(trends_cmd)
    log_app = typer.Typer(help="The session log: import a journal, fill in the intention.")
    log_app.command("import")(log_import)
    log_app.command("set")(log_set)
    app.add_typer(log_app, name="log", no_args_is_help=True)
    sessions_app.command("delete")(sessions_delete)
