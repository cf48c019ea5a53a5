"""The session store against real SQLite files in a temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessions.store import (
    SCHEMA_VERSION,
    BeatRow,
    IndicesRow,
    MarkerRow,
    MarkerSource,
    SessionInfo,
    SessionState,
    SessionStore,
)
from settle.errors import SessionNotFound, StoreError

REPO = Path(__file__).resolve().parents[1]
T0_MS = 1_795_000_000_000  # 2026-11-18, an arbitrary fixed epoch


def beats(start: int, n: int, *, t0_s: float = 0.0, rr_raw: int = 820) -> list[BeatRow]:
    """``n`` beats from ``seq=start`` at a steady RR of ``rr_raw`` / 1024 s."""
    rr_ms = rr_raw * 1000 / 1024
    return [
        BeatRow(
            seq=seq,
            beat_t_s=t0_s + (seq + 1) * rr_ms / 1000,
            recv_ts_ms=T0_MS + round((seq + 1) * rr_ms),
            rr_ms=rr_ms,
            rr_raw=rr_raw,
            hr_bpm=75,
            contact=True,
        )
        for seq in range(start, start + n)
    ]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "settle" / "sessions.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SessionStore]:
    with SessionStore.open(db_path) as s:
        yield s


def new_session(
    store: SessionStore, started_ms: int = T0_MS, device: str = "AA:BB:CC:DD:EE:FF"
) -> SessionInfo:
    return store.create_session(device, started_ms, f"ble:{device}", {"intention": "calm"})


# --- opening --------------------------------------------------------------------------------


def test_open_creates_private_wal_file_with_schema(db_path: Path) -> None:
    with SessionStore.open(db_path) as store:
        new_session(store)  # forces a WAL file to exist
        assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
        wal = db_path.with_name(db_path.name + "-wal")
        assert wal.exists()
        # SQLite copies the main file's mode to its -wal/-shm files.
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    probe = sqlite3.connect(db_path)
    try:
        assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert probe.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        probe.close()


def test_every_commit_is_on_the_disk_before_it_returns(db_path: Path) -> None:
    """Power loss: with synchronous = NORMAL a commit reached the disk only at a checkpoint
    (~4 MB of WAL: hours of one strap), and a power cut lost ~30 s of beats, session rows
    included; the docs promise "up to the last second" (one commit a second)."""
    with SessionStore.open(db_path) as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_reopen_keeps_data(db_path: Path) -> None:
    with SessionStore.open(db_path) as store:
        info = new_session(store)
        store.add_beats(info.id, beats(0, 5))
    with SessionStore.open(db_path) as store:
        assert [s.id for s in store.list_sessions()] == [info.id]
        assert len(store.beats(info.id)) == 5


def test_non_database_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, just some text\n" * 50)
    with pytest.raises(StoreError) as err:
        SessionStore.open(path)
    msg = str(err.value)
    assert str(path) in msg and "not a" in msg and "\n" not in msg


def test_newer_schema_is_refused(db_path: Path) -> None:
    SessionStore.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer") as err:
        SessionStore.open(db_path)
    assert str(db_path) in str(err.value)


def test_a_store_of_a_newer_settle_is_refused_untouched(db_path: Path) -> None:
    """Switched to WAL before it was refused: bytes 18-19, 28 and 96 of its header changed,
    though every command refused it."""
    SessionStore.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = db_path.read_bytes()
    with pytest.raises(StoreError, match="newer"):
        SessionStore.open(db_path)
    assert db_path.read_bytes() == before


def test_reading_needs_no_lock_another_program_holds(db_path: Path) -> None:
    """A database browser with unsaved changes holds a write transaction: `sessions list`
    and `export` failed after a 10 s wait with a bare "database is locked" (reading in WAL
    mode needs no lock), and a writing command said no more. Reading goes on; writing says
    what holds it."""
    import sessions.store as store_mod

    with SessionStore.open(db_path) as store:
        info = new_session(store)
        store.add_beats(info.id, beats(0, 5))
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        old = store_mod.BUSY_TIMEOUT_S
        store_mod.BUSY_TIMEOUT_S = 0.2
        try:
            with SessionStore.open_for_reading(db_path) as store:
                assert len(store.beats(info.id)) == 5
            with pytest.raises(StoreError) as err:
                SessionStore.open(db_path)
        finally:
            store_mod.BUSY_TIMEOUT_S = old
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "another program has held a write lock on the session store" in str(err.value)
    assert "\n" not in str(err.value)


def test_foreign_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="another program"):
        SessionStore.open(path)
    with pytest.raises(StoreError, match="another program"):
        SessionStore.open_for_reading(path)  # `sessions list --db other.db`
    # Not a byte changed: it was switched to WAL journaling (header bytes 18-19 1 -> 2).
    assert path.read_bytes() == before
    assert not (tmp_path / "other.db-wal").exists()
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"contacts"}


def test_unusable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create") as err:
        SessionStore.open(blocker / "sessions.db")
    assert str(blocker) in str(err.value)


def test_a_store_path_under_a_file_says_so(tmp_path: Path) -> None:
    """`--db afile/x.db` where afile is a regular file said "cannot create session store:
    File exists"."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(StoreError) as err:
        SessionStore.open(afile / "x.db")
    assert (
        str(err.value)
        == f"{afile / 'x.db'}: cannot create session store: {afile} is not a directory"
    )
    with pytest.raises(StoreError, match=f"{afile} is not a directory"):
        SessionStore.open(afile / "sub" / "x.db")


def test_closed_store_raises_store_error(db_path: Path) -> None:
    store = SessionStore.open(db_path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.list_sessions()


# --- sessions -------------------------------------------------------------------------------


def test_create_and_list(store: SessionStore) -> None:
    a = new_session(store, T0_MS)
    b = new_session(store, T0_MS + 60_000, device="11:22:33:44:55:66")
    assert a.state is SessionState.RUNNING and a.stopped_ms is None
    assert a.meta == {"intention": "calm"}
    assert a.id.startswith("20261118T")  # UTC start second, then random hex
    assert len(a.id.split("-")[1]) == 4
    store.add_beats(a.id, beats(0, 10))
    store.finish_session(a.id, T0_MS + 30_000)
    listed = store.list_sessions()
    assert [s.id for s in listed] == [a.id, b.id]  # oldest first
    first = listed[0]
    assert (first.n_beats, first.state, first.duration_s) == (10, SessionState.STOPPED, 30.0)
    assert listed[1].n_beats == 0 and listed[1].duration_s == 0.0
    assert store.get(a.id).stopped_ms == T0_MS + 30_000


def test_ids_sort_by_start_time(store: SessionStore) -> None:
    starts = [T0_MS + k * 1000 for k in (5, 1, 3, 2, 4)]
    ids = {new_session(store, s).id: s for s in starts}
    assert sorted(ids, key=ids.__getitem__) == sorted(ids)


def test_resolve(store: SessionStore) -> None:
    with pytest.raises(SessionNotFound):
        store.resolve("latest")
    a = new_session(store, T0_MS)
    b = new_session(store, T0_MS + 3_600_000)  # an hour later: ids differ at the hour digits
    assert store.resolve("latest").id == b.id
    assert store.resolve(a.id) == a
    assert store.resolve(a.id[:-2]).id == a.id  # unique prefix
    with pytest.raises(StoreError, match="ambiguous") as err:
        store.resolve("2026")
    assert not isinstance(err.value, SessionNotFound)
    assert a.id in str(err.value) and b.id in str(err.value)
    for ref in ("nope", "", "%", a.id + "0"):
        with pytest.raises(SessionNotFound):
            store.resolve(ref)


def test_resolve_a_group_practices_sessions_by_their_suffix(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group practice's sessions start in the same second, so their ids differ only after
    the dash (20261128T043736-2cd8): `settle export 2cd8` said "no session matches"."""
    import secrets

    suffixes = iter(["2cd8", "0aa1", "2cd8", "2026"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(suffixes))
    anna = new_session(store, T0_MS, "polar_h10_anna")
    ben = new_session(store, T0_MS + 20, "polar_h10_ben")
    assert anna.id.endswith("-2cd8") and anna.id[:-4] == ben.id[:-4]
    assert store.resolve("2cd8") == anna and store.resolve("0aa1") == ben
    # Only the whole part after the dash counts.
    for ref in ("2cd", "cd8", "0aa", "x-2cd8"):
        with pytest.raises(SessionNotFound):
            store.resolve(ref)
    later = new_session(store, T0_MS + 86_400_000, "polar_h10_anna")  # the next day: 2cd8 again
    with pytest.raises(StoreError, match="ambiguous") as err:
        store.resolve("2cd8")
    assert not isinstance(err.value, SessionNotFound)
    assert anna.id in str(err.value) and later.id in str(err.value)
    assert ben.id not in str(err.value)
    # A suffix of digits only also starts every id of that year: the one suffix wins.
    digits = new_session(store, T0_MS + 40, "polar_h10_cleo")
    assert digits.id.startswith("2026") and digits.id.endswith("-2026")
    assert store.resolve("2026") == digits


def test_latest_is_the_session_made_last_even_when_the_clock_dated_it_earlier(
    store: SessionStore,
) -> None:
    """A board whose clock was behind at boot (no real-time clock, NTP not yet there) dates
    its new session before the previous one: `settle export latest` exported the old one."""
    old = new_session(store, T0_MS + 3_600_000)
    new = new_session(store, T0_MS)  # made later, on a clock an hour behind
    assert store.resolve("latest").id == new.id != old.id
    store.set_started_ms(new.id, T0_MS + 7_200_000)  # the clock was corrected meanwhile
    assert store.get(new.id).started_ms == T0_MS + 7_200_000 and store.get(new.id).id == new.id


def test_unknown_session_id_raises_not_found(store: SessionStore) -> None:
    with pytest.raises(SessionNotFound, match="missing"):
        store.add_beats("missing", beats(0, 1))
    with pytest.raises(SessionNotFound):
        store.beats("missing")
    with pytest.raises(SessionNotFound):
        store.delete_session("missing")
    with pytest.raises(SessionNotFound):
        store.finish_session("missing", T0_MS)


def test_finish_rejects_running_state_and_time_travel(store: SessionStore) -> None:
    info = new_session(store)
    with pytest.raises(ValueError):
        store.finish_session(info.id, T0_MS + 1, state="running")
    with pytest.raises(ValueError):
        store.finish_session(info.id, T0_MS - 1)
    assert store.get(info.id).state is SessionState.RUNNING


def test_delete_cascades(store: SessionStore, db_path: Path) -> None:
    keep, drop = new_session(store), new_session(store, T0_MS + 5000)
    for sid in (keep.id, drop.id):
        store.add_beats(sid, beats(0, 3))
        store.add_indices(sid, [IndicesRow(t_s=1.0, ts_ms=T0_MS + 1000, payload_json="{}")])
        store.add_marker(sid, MarkerRow(1.0, T0_MS + 1000, "note", "x", MarkerSource.CLI))
    store.delete_session(drop.id)
    assert [s.id for s in store.list_sessions()] == [keep.id]
    conn = sqlite3.connect(db_path)
    try:
        for table in ("beats", "indices", "markers"):
            ids = {r[0] for r in conn.execute(f"SELECT session_id FROM {table}")}
            assert ids == {keep.id}, table
    finally:
        conn.close()


# --- rows -----------------------------------------------------------------------------------


def test_duplicate_seq_is_ignored_not_duplicated(store: SessionStore) -> None:
    info = new_session(store)
    store.add_beats(info.id, beats(0, 10))
    altered = [BeatRow(seq=3, beat_t_s=99.0, recv_ts_ms=T0_MS, rr_ms=1.0)]
    store.add_beats(info.id, beats(5, 10) + altered + beats(14, 1))  # 5..14 overlap 5..9
    stored = store.beats(info.id)
    assert [b.seq for b in stored] == list(range(15))
    assert stored[3] == beats(3, 1)[0]  # the first write wins
    assert store.list_sessions()[0].n_beats == 15


def test_rows_round_trip_with_nulls(store: SessionStore) -> None:
    info = new_session(store)
    replayed = BeatRow(seq=0, beat_t_s=0.8123, recv_ts_ms=T0_MS + 812, rr_ms=812.3)
    store.add_beats(info.id, [replayed])
    assert store.beats(info.id) == [replayed]
    row = IndicesRow(
        t_s=60.0,
        ts_ms=T0_MS + 60_000,
        payload_json=json.dumps({"schema": 1, "rmssd_ms": 42.5}),
        hr_bpm=61.5,
        rmssd_ms=42.5,
        ln_rmssd=3.7495,
        settling=None,
    )
    store.add_indices(info.id, [row])
    assert store.indices(info.id) == [row]
    mid = store.add_marker(info.id, MarkerRow(12.5, T0_MS + 12_500, "note", "phone", "mqtt"))  # type: ignore[arg-type]
    (marker,) = store.markers(info.id)
    assert marker.id == mid and marker.source is MarkerSource.MQTT and marker.text == "phone"


def test_row_validation() -> None:
    with pytest.raises(ValueError):
        BeatRow(seq=-1, beat_t_s=0.0, recv_ts_ms=0, rr_ms=800.0)
    with pytest.raises(ValueError):
        BeatRow(seq=0, beat_t_s=0.0, recv_ts_ms=0, rr_ms=float("nan"))
    with pytest.raises(ValueError):
        IndicesRow(t_s=0.0, ts_ms=0, payload_json="[1, 2]")
    with pytest.raises(ValueError):
        MarkerRow(0.0, 0, "note", "x", "email")  # type: ignore[arg-type]


def test_failed_batch_writes_nothing(store: SessionStore) -> None:
    info = new_session(store)

    def poisoned() -> Iterator[BeatRow]:
        yield from beats(0, 5)
        raise RuntimeError("producer failed mid-batch")

    class Batch(list[BeatRow]):
        def __iter__(self) -> Iterator[BeatRow]:
            return poisoned()

    with pytest.raises(RuntimeError):
        store.add_beats(info.id, Batch())
    assert store.beats(info.id) == []
    store.add_beats(info.id, beats(0, 2))  # the store is still usable
    assert len(store.beats(info.id)) == 2


# --- crashes and concurrency ----------------------------------------------------------------


def test_interrupted_session_recovery(db_path: Path) -> None:
    store = SessionStore.open(db_path)
    done = new_session(store)
    store.finish_session(done.id, T0_MS + 1000)
    crashed = new_session(store, T0_MS + 10_000)
    empty = new_session(store, T0_MS + 20_000)
    batch = beats(0, 20)
    store.add_beats(crashed.id, batch)
    store.close()  # never finished: as if the daemon had died

    with SessionStore.open(db_path) as store:
        assert store.mark_interrupted_running() == [crashed.id, empty.id]
        assert store.mark_interrupted_running() == []  # nothing left running
        got = store.get(crashed.id)
        assert got.state is SessionState.INTERRUPTED
        # It ends at its last beat, in session time from its start.
        assert got.stopped_ms == crashed.started_ms + round(batch[-1].beat_t_s * 1000)
        assert store.get(empty.id).stopped_ms == T0_MS + 20_000
        assert store.get(done.id).state is SessionState.STOPPED


def test_a_crash_after_the_clock_was_set_back_keeps_the_sessions_length(db_path: Path) -> None:
    """A board's clock an hour fast, set back by NTP 5 min into the session (the daemon
    moves the session's start), then a crash 10 min later: the session was closed at its
    newest beat's arrival on the wall clock, and the beats of the first 5 min arrived on
    the fast clock — listed 65 min long (it ran 15), its EDF padded to match."""
    hour = 3_600_000
    store = SessionStore.open(db_path)
    info = new_session(store, T0_MS + hour)  # the fast clock
    rows = [
        BeatRow(k, (k + 1) * 1.0, T0_MS + (k + 1) * 1000 + (hour if k < 300 else 0), 1000.0)
        for k in range(900)
    ]
    store.add_beats(info.id, rows)
    store.set_started_ms(info.id, T0_MS)  # the daemon followed the step
    store.close()  # the crash
    with SessionStore.open(db_path) as store:
        assert store.mark_interrupted_running() == [info.id]
        (summary,) = store.list_sessions()
    assert summary.stopped_ms == T0_MS + 900_000
    assert summary.duration_s == pytest.approx(900.0)


def test_concurrent_add_beats_from_two_threads(store: SessionStore) -> None:
    info = new_session(store)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(offset: int) -> None:
        try:
            barrier.wait()
            # Interleaved seq ranges with overlaps between the two threads.
            for k in range(50):
                store.add_beats(info.id, beats(offset + 20 * k, 30))
                store.list_sessions()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(off,)) for off in (0, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [b.seq for b in store.beats(info.id)] == list(range(10 + 20 * 49 + 30))


async def test_usable_through_asyncio_to_thread(store: SessionStore) -> None:
    info = await asyncio.to_thread(new_session, store)
    await asyncio.gather(
        *(asyncio.to_thread(store.add_beats, info.id, beats(10 * k, 10)) for k in range(8))
    )
    assert len(await asyncio.to_thread(store.beats, info.id)) == 80


_CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from sessions.store import BeatRow, SessionStore

    path, n_batches = Path(sys.argv[1]), int(sys.argv[2])
    store = SessionStore.open(path)
    info = store.create_session("AA", 1_795_000_000_000, "ble:AA", {})
    def batch(k):
        return [BeatRow(seq=100 * k + i, beat_t_s=float(100 * k + i),
                        recv_ts_ms=1_795_000_000_000 + k, rr_ms=1000.0) for i in range(100)]
    for k in range(n_batches):
        store.add_beats(info.id, batch(k))

    class DiesHalfway(list):
        # The process dies inside the transaction of batch n_batches, after 50 rows.
        def __iter__(self):
            for i, row in enumerate(batch(n_batches)):
                if i == 50:
                    os._exit(9)
                yield row

    store.add_beats(info.id, DiesHalfway())
    """
)


def test_kill_mid_write_leaves_committed_batches_only(db_path: Path) -> None:
    n_batches = 7
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(db_path), str(n_batches), str(REPO)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 9, proc.stderr.decode()
    assert db_path.with_name(db_path.name + "-wal").exists()  # not checkpointed: died open
    with SessionStore.open(db_path) as store:
        (summary,) = store.list_sessions()
        assert summary.state is SessionState.RUNNING
        assert [b.seq for b in store.beats(summary.id)] == list(range(100 * n_batches))
        assert store.mark_interrupted_running() == [summary.id]
        # Ended at the last committed beat (seq 100·n − 1, at t = seq s).
        assert store.get(summary.id).stopped_ms == T0_MS + (100 * n_batches - 1) * 1000


def test_a_store_that_cannot_be_written_is_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store on read-only media (a backup, another user's file) could not even be listed
    or exported: "cannot create session store: Read-only file system". Read commands open
    it read-only; writing to it is a clear error, and a non-store is still refused."""
    import errno

    import sessions.store as st

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", T0_MS, "x", {}).id
        store.add_beats(sid, beats(0, 20))

    def read_only_fs(path: Path) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(st, "_create_private_file", read_only_fs)
    with pytest.raises(StoreError, match="cannot open session store: Read-only file system"):
        SessionStore.open(db)
    with SessionStore.open_for_reading(db) as store:
        (info,) = store.list_sessions()
        assert info.id == sid and info.n_beats == 20
        assert len(store.read_session(sid).beats) == 20
        with pytest.raises(StoreError):
            store.create_session("dev", T0_MS + 1, "y", {})
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite" * 200)
    with pytest.raises(StoreError, match="not a SQLite file"):
        SessionStore.open_for_reading(junk)
    empty = tmp_path / "empty.db"  # `sessions list` turned it into a 64 KiB store
    empty.touch()
    with pytest.raises(StoreError, match="an empty file, not a Settle session store"):
        SessionStore.open_for_reading(empty)
    assert empty.stat().st_size == 0
    fifo = tmp_path / "pipe.db"  # size 0 too: it read "an empty file"
    os.mkfifo(fifo)
    with pytest.raises(StoreError, match=r"pipe\.db: not a regular file, not a Settle session"):
        SessionStore.open_for_reading(fifo)


def test_a_second_open_in_one_process_keeps_the_first_connection_safe(tmp_path: Path) -> None:
    """Opening the store again in a process that already has it open (a test beside its
    daemon; any future in-process reader) opened and closed the file itself, which drops the
    POSIX locks SQLite holds on it. The next process to close its own connection (the
    dashboard's worker, `settle sessions list`) then took itself for the last one and deleted
    the WAL under the first connection: its later commits were lost and the next open read
    "disk I/O error"."""
    db = tmp_path / "s.db"
    with SessionStore.open(db) as first:
        first.create_session("dev", 1_700_000_000_000, "x", {})
        with SessionStore.open(db) as second:
            assert len(second.list_sessions()) == 1
        reader = (
            "import sys; from pathlib import Path; from sessions.store import SessionStore\n"
            "with SessionStore.open_for_reading(Path(sys.argv[1])) as s:\n"
            "    print(len(s.list_sessions()))\n"
        )
        res = subprocess.run([sys.executable, "-c", reader, str(db)], capture_output=True,
                             text=True, timeout=60, cwd=Path(__file__).parents[1])  # fmt: skip
        assert res.stdout.strip() == "1", res.stderr
        first.create_session("dev", 1_700_000_001_000, "x", {})
        with SessionStore.open(db) as third:
            assert len(third.list_sessions()) == 2
    with SessionStore.open(db) as again:  # nothing lost once every connection is closed
        assert len(again.list_sessions()) == 2


def test_the_daemon_lock_holds_through_a_symlink(tmp_path: Path) -> None:
    """A second daemon on ``alias.db -> real.db`` locked ``alias.db-lock``, started, and
    marked the first daemon's live session interrupted ("left running by an earlier
    crash"). The lock is taken beside the real file, whatever name reaches it."""
    from sessions.store import daemon_lock

    real = tmp_path / "real.db"
    SessionStore.open(real).close()
    (tmp_path / "alias.db").symlink_to(real)
    (tmp_path / "dir").symlink_to(tmp_path)
    with daemon_lock(real):
        for other in (tmp_path / "alias.db", tmp_path / "dir" / "real.db"):
            with pytest.raises(StoreError, match="another Settle daemon"), daemon_lock(other):
                pass
    with daemon_lock(tmp_path / "alias.db"):  # released: the next one takes it
        pass


def test_the_daemon_lock_holds_through_a_hard_link(tmp_path: Path) -> None:
    """Two daemons on one store through a hard link (`ln s.db s2.db`, or a name in another
    directory): each locked its own name's `-lock`, both recorded (each through its own
    -wal) and one session was lost without a word. The lock is on the file itself now, with
    the same one-line refusal naming the first daemon's pid; `settle sessions delete` and
    doctor see that daemon through either name."""
    from sessions.store import daemon_lock, daemon_running

    real = tmp_path / "real.db"
    SessionStore.open(real).close()
    (tmp_path / "elsewhere").mkdir()
    names = [tmp_path / "hard.db", tmp_path / "elsewhere" / "other.db"]
    for name in names:
        os.link(real, name)
    with daemon_lock(real):
        for other in names:
            with pytest.raises(StoreError) as err, daemon_lock(other):
                pass
            assert str(err.value) == (
                f"{other}: another Settle daemon (pid {os.getpid()}) is recording into this "
                "store; stop it first, or give this one another --db"
            )
            assert daemon_running(other)
    assert not any(daemon_running(p) for p in (real, *names))
    with daemon_lock(names[1]):  # released: the next one takes it, through any name
        assert daemon_running(real)


def test_a_second_daemon_through_a_hard_link_is_refused_before_it_opens_the_store(
    tmp_path: Path,
) -> None:
    """`settle demo --db hard.db` beside a daemon recording into `s.db` (`ln s.db hard.db`):
    it recorded too. Refused by the lock on the file alone, it had still opened the store
    first — without the first daemon's -wal, where a young store's schema still was: it
    took it for a new store and wrote a schema into `hard.db-wal`, which later overwrote
    the store (every session gone). A store that exists is locked before it is opened."""
    from sessions.store import daemon_lock
    from tests.test_cli import settle

    db, hard = tmp_path / "s.db", tmp_path / "hard.db"
    first = SessionStore.open(db)  # this process plays the first daemon
    try:
        with daemon_lock(db):
            sid = new_session(first).id  # (the schema is in s.db-wal, not yet in s.db)
            os.link(db, hard)
            res = settle("demo", "--duration", "5", "--no-mqtt", "--no-http", "--db", str(hard))
    finally:
        first.close()
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"settle: error: {hard}: another Settle daemon (pid {os.getpid()}) is recording into "
        "this store; stop it first, or give this one another --db"
    )
    assert not Path(f"{hard}-wal").exists()  # nothing was opened through the second name
    with SessionStore.open(hard) as store:
        assert [s.id for s in store.list_sessions()] == [sid]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system with no space left: a 1 MiB tmpfs (root only), filled up after a
    store with two sessions was copied onto it (no -wal/-shm beside it yet)."""
    import os
    import shutil

    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    src = tmp_path / "src.db"
    with SessionStore.open(src) as store:
        for k in range(2):
            sid = new_session(store, T0_MS + k * 60_000).id
            store.add_beats(sid, beats(0, 50))
    mnt = tmp_path / "full"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        db = mnt / "s.db"
        with sqlite3.connect(src) as conn:  # one file, no WAL left beside it
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(src, db)
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        yield db
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_is_named_and_the_store_is_still_read(full_disk: Path, tmp_path: Path) -> None:
    """The disk holding the store is full and its -wal/-shm files do not exist yet: `settle
    sessions list` and `settle export` failed with "cannot open session store: disk I/O
    error", naming neither the cause nor a way out (exporting to another disk). Now they
    read it (read-only), and the daemon says the disk is full."""

    def settle(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "settle.cli", *args, "--db", str(full_disk)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    listed = settle("sessions", "list")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.strip().splitlines()) == 3  # header + two sessions
    out = tmp_path / "latest.csv"
    exported = settle("export", "latest", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert len(out.read_text().splitlines()) > 50
    assert not Path(f"{full_disk}-shm").exists()  # the read-only opens left nothing behind
    demo = settle("demo", "--no-mqtt", "--no-http", "--duration", "1", "--speed", "20")
    assert demo.returncode != 0
    (line,) = [ln for ln in demo.stderr.splitlines() if "error" in ln.lower()]
    assert f"the disk holding {full_disk.parent} is full" in line, demo.stderr
