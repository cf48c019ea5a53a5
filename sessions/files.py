"""Writing export files safely: atomically, privately, and only inside the chosen place.

Every export file is written to a hidden temporary file in its target directory, fsynced
and renamed into place, so a reader never sees half a file and an interrupted export leaves
nothing behind. Files are created with mode 0600 (health data). Names derived from data
(session ids, labels) are checked to be plain file names, and every path is checked to lie
inside the directory the user chose, so neither a crafted id nor a symbolic link inside an
export directory can make an export write elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from settle.errors import SettleError

__all__ = [
    "ExportError",
    "ProgressFn",
    "atomic_file",
    "fsync_dir",
    "inside",
    "name_too_long",
    "not_replaceable",
    "one_line",
    "path_too_long",
    "place",
    "plain_name",
    "target_file",
    "temp_prefix",
]

#: ``progress(done, total)``: called as an export advances (units are the export's own,
#: e.g. beats); ``done == total`` at the end. For a progress bar; never required.
ProgressFn = Callable[[int, int], None]

#: Where a link leads to a device or another process's stream rather than to a file.
_STREAM_DIRS = ("/dev/", "/proc/")

_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ExportError(SettleError):
    """An export could not be written to ``path``; ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ExportRefused(ExportError):
    """The output path is of the wrong kind, nothing written: the session store itself, an
    existing file without ``force``, a file where a directory is wanted (``settle report
    --out``), a file name without the format's extension. A problem of the command line
    (exit code 2)."""


_TEMP_SUFFIX = ".tmp"
#: Bytes a temporary name adds to the part of the target's name it keeps: its leading dot,
#: the dot after that part, :mod:`tempfile`'s 8 random characters and ``.tmp``.
_TEMP_EXTRA = 1 + 1 + 8 + len(_TEMP_SUFFIX)


def temp_prefix(name: str) -> str:
    """The prefix of the temporary file written beside the file ``name`` (a
    :mod:`tempfile` name, ``O_EXCL``, in the same directory): a dot and as much of ``name``
    (whole characters) as keeps the temporary name no longer than ``name`` itself — or 14
    bytes, the least every POSIX file system takes. So any name the file system takes as a
    final name can be written: ``.<name>.XXXXXXXX.tmp`` was 14 bytes longer, and a name of
    242–255 bytes failed at write time ("File name too long"), after the session was read."""
    room = len(os.fsencode(name)) - _TEMP_EXTRA
    size = 0
    keep = 0
    for ch in name:
        size += len(os.fsencode(ch))
        if size > room:
            break
        keep += 1
    return f".{name[:keep]}."


class NothingToExport(ExportError):
    """The session holds nothing of what was asked (no beats, no ECG-derived RR): its
    fault, not the output's, so the message names the session alone (it read
    "/tmp/o.txt: session … has no ECG-derived beats", as if the path were to blame)."""

    def __str__(self) -> str:
        return self.reason


def one_line(text: str) -> str:
    """``text`` on one line for a file format with line or field structure (EDF
    annotations, BIDS events, the Kubios markers file): control characters (NUL, tab, line
    breaks, EDF's 0x14/0x15 separators) become spaces; ends trimmed."""
    return "".join(" " if ord(c) < 32 else c for c in text).strip()


def plain_name(name: str, where: Path) -> str:
    """``name`` if it is a plain file name (letters, digits, ``._+-``, no leading dot and
    no ``..``); :class:`ExportError` otherwise."""
    if not _PLAIN.match(name) or ".." in name or len(name) > 200:
        raise ExportError(where, f"refusing unsafe file name {name!r}")
    return name


def inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves (following links) to ``root`` or below; :class:`ExportError`
    otherwise."""
    real_root = root.resolve()
    real = path.resolve()
    if real != real_root and real_root not in real.parents:
        raise ExportError(path, f"refusing to write outside {root}")
    return path


def path_too_long(path: Path) -> bool:
    """Whether the system refuses ``path`` for its length (``ENAMETOOLONG``: one of its
    names, or the whole path, is longer than it takes), asked of the system with ``lstat``;
    a path that does not exist yet is asked about too."""
    try:
        os.lstat(path)
    except OSError as exc:
        return exc.errno == errno.ENAMETOOLONG
    except ValueError:  # a NUL byte: no length question
        return False
    return False


#: Longest file name taken where the directory does not say, bytes (ext4, XFS, btrfs, APFS).
_NAME_MAX = 255


def name_too_long(path: Path) -> str | None:
    """Why the system cannot take ``path`` as a name to write (one line: its own name, or the
    whole path, is longer than it takes), or None. Asked of the system (``lstat`` fails with
    ``ENAMETOOLONG``), so the limit is that of the file system ``path`` would be on. A
    directory on the way with a name too long for any file system is no such case: it
    cannot exist, which the export says as for any missing directory."""
    if not path_too_long(path):
        return None  # missing, or any other trouble: the export says it where it matters
    size = len(os.fsencode(path.name))
    try:
        most = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):  # a parent that is not there, no pathconf
        most = _NAME_MAX
    if size > most:
        return (
            f"the file name is {size} bytes, more than the file system takes ({most}): "
            "choose a shorter file name"
        )
    if any(len(os.fsencode(part)) > _NAME_MAX for part in path.parent.parts):
        return None
    return (
        f"the path is {len(os.fsencode(path))} bytes, longer than the system takes: "
        "choose a shorter one"
    )


def target_file(out: Path, default_name: str, suffixes: tuple[str, ...]) -> Path:
    """Where a one-file export goes: ``out/default_name`` if ``out`` is an existing
    directory, else ``out`` itself, which must end in one of ``suffixes`` and sit in an
    existing directory. Raises :class:`ExportError`."""
    out = Path(out)
    if out.is_dir():
        return out / plain_name(default_name, out)
    parent = out.parent
    if not parent.exists():
        raise ExportError(out, f"directory {parent} does not exist")
    if not parent.is_dir():
        raise ExportError(out, f"{parent} is not a directory")
    if suffixes and not out.name.lower().endswith(suffixes):
        raise ExportError(out, f"file name must end in {' or '.join(suffixes)}")
    return out


_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_MAGIC = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
DB_SIBLINGS = ("-wal", "-shm", "-journal", "-lock")
"""Files SQLite (and the daemon's lock) keep beside a database ``x.db``."""


def _head(p: Path, n: int) -> bytes:
    """The first ``n`` bytes of ``p`` if it is a regular file, else b"" (opening a FIFO to
    read would block until a writer came: `settle report --force` onto one hung)."""
    try:
        if not stat.S_ISREG(p.stat().st_mode):
            return b""
        with p.open("rb") as fh:
            return fh.read(n)
    except (OSError, ValueError):
        return b""


def sqlite_database_of(p: Path) -> Path | None:
    """The SQLite database ``p`` is, or belongs to (its ``-wal``, ``-shm``, ``-journal`` or
    the daemon's ``-lock``), else None."""
    head = _head(p, 16)
    if head == _SQLITE_MAGIC or head[:4] in _WAL_MAGIC:
        return p
    for suffix in DB_SIBLINGS:
        if p.name.endswith(suffix) and len(p.name) > len(suffix):
            db = p.with_name(p.name[: -len(suffix)])
            if _head(db, 16) == _SQLITE_MAGIC:
                return db
    return None


def refuse_database(path: Path) -> None:
    """:class:`ExportRefused` if ``path`` is a SQLite database or one of its side files, even
    with ``--force``: `settle export … --out other.db --force` replaced another session store
    (only the ``--db`` store itself was protected), as ``settle analyze`` never did."""
    db = sqlite_database_of(path)
    if db is not None:
        raise ExportRefused(
            path,
            f"refusing to write onto the SQLite database {db} (a session store?); "
            "choose another file",
        )


def not_replaceable(target: Path) -> str | None:
    """Why ``target`` must not be replaced by a file even with ``--force``, or None.

    A missing name, a regular file, a symbolic link to one and a dangling link may be
    replaced (a link by a file, never written through). A directory, a device, a pipe or a
    socket — or a link to one, such as ``/dev/stdout`` — is not a file an export owns:
    renaming over it would destroy it (as root, ``/dev/null`` itself)."""
    try:
        hop = os.fspath(target)
        for _ in range(40):  # as the kernel: a longer chain does not resolve
            if not os.path.islink(hop):
                break
            hop = os.path.normpath(os.path.join(os.path.dirname(hop), os.readlink(hop)))
            # /dev/stdout -> /proc/self/fd/1 -> a terminal, a pipe, whatever stdout is
            if hop.startswith(_STREAM_DIRS) and not hop.startswith("/dev/shm/"):
                return "a link to a device or process stream; refusing to replace it"
        mode = os.stat(target).st_mode  # follows links
    except (OSError, ValueError):
        return None  # missing, dangling, or unreadable: writing will tell
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory (name a file)"
    return "not a regular file (a device, pipe or socket); refusing to replace it"


def place(tmp_name: str, target: Path, *, replace: bool) -> None:
    """Move the finished temporary file ``tmp_name`` to ``target`` (same directory).

    ``replace``: an atomic rename over whatever is there. Otherwise the move fails with
    :class:`FileExistsError` if ``target`` exists *at that moment* — a file that appeared
    since the caller checked (another export, the user) is never overwritten: a hard link,
    which the OS refuses onto an existing name, then the temporary name is removed. Where
    hard links are not supported, the name is claimed with ``O_EXCL`` and renamed over.
    """
    if replace:
        why = not_replaceable(target)  # checked again: the name may have changed meanwhile
        if why is not None:
            raise ExportError(target, why)
        os.replace(tmp_name, target)
        return
    try:
        os.link(tmp_name, target)
    except FileExistsError:
        raise
    except OSError:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.replace(tmp_name, target)
        return
    os.unlink(tmp_name)


@contextlib.contextmanager
def atomic_file(
    target: Path, *, binary: bool = False, replace: bool = True
) -> Iterator[IO[str] | IO[bytes]]:
    """Open a temporary file beside ``target`` (mode 0600); on success fsync it and move it
    to ``target`` (see :func:`place`; ``replace=False`` never overwrites a file that exists
    by then). On any error the temporary file is removed and OS errors become
    :class:`ExportError`."""
    tmp_name: str | None = None
    why = not_replaceable(target)
    if why is not None:
        raise ExportError(target, why)
    try:
        # Same directory as the target, so os.replace is an atomic rename on one filesystem.
        fh = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, renamed on success
            mode="wb" if binary else "w",
            encoding=None if binary else "utf-8",
            newline=None if binary else "",
            dir=target.parent,
            prefix=temp_prefix(target.name),
            suffix=_TEMP_SUFFIX,
            delete=False,
        )
        tmp_name = fh.name
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        place(tmp_name, target, replace=replace)
        tmp_name = None
    except FileExistsError:
        raise ExportError(target, "file exists (use --force to replace it)") from None
    except OSError as exc:
        raise ExportError(target, f"cannot write: {exc.strerror or exc}") from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    fsync_dir(target.parent)


def write_all(files: Sequence[tuple[Path, str | bytes]], *, replace: bool = True) -> None:
    """Write every one of ``files`` (target, text or bytes) or none of them: each goes to a
    temporary file beside its target (mode 0600, fsynced), and only once all are written are
    they moved into place, one after the other (:func:`place`). A failure while writing (a
    full disk, a directory that cannot be written) leaves every target as it was — a pair of
    outputs of which one is new and the other old or missing looks complete and is not.
    Without ``replace``, whatever stops the placing (a target that appeared meanwhile, an
    error, Ctrl-C between two renames) removes the files this call had already placed (new
    ones); with it, the replaced ones cannot be put back (that window is two renames wide).
    Raises :class:`ExportError` naming the file."""
    for target, _data in files:
        why = not_replaceable(target)
        if why is not None:
            raise ExportError(target, why)
    pending: list[tuple[str, Path]] = []
    placed: list[Path] = []
    current = files[0][0] if files else Path()
    try:
        for target, data in files:
            current = target
            fd, tmp_name = tempfile.mkstemp(
                dir=target.parent, prefix=temp_prefix(target.name), suffix=_TEMP_SUFFIX
            )
            pending.append((tmp_name, target))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        while pending:
            tmp_name, current = pending[0]
            place(tmp_name, current, replace=replace)
            pending.pop(0)
            placed.append(current)
    except BaseException as exc:
        if placed and not replace:
            # New files (placing refuses an existing one): gone again, so no new file is
            # left beside a missing partner — whatever stopped the placing (a file that
            # appeared, another error, Ctrl-C between two renames). Replaced ones cannot
            # be put back.
            for p in placed:
                with contextlib.suppress(OSError):
                    os.unlink(p)
        if isinstance(exc, FileExistsError):
            raise ExportError(current, "file exists (use --force to replace it)") from None
        if isinstance(exc, OSError):
            raise ExportError(current, f"cannot write: {exc.strerror or exc}") from exc
        raise
    finally:
        for tmp_name, _target in pending:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    for directory in dict.fromkeys(t.parent for t, _data in files):
        fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable. Best effort: not every platform can open a
    directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
