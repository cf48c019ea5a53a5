"""Schema v2: the v1 -> v2 migration in place, the session log, beat artefact fields, gaps,
raw ECG, and complete deletion (against real SQLite files)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from sessions import store as store_mod
from sessions.store import (
    SCHEMA_VERSION,
    BaselinePeriod,
    BeatAnnotation,
    BeatClass,
    BeatRow,
    EcgBeatRow,
    GapRow,
    IndicesRow,
    Intention,
    IntentionTarget,
    MarkerRow,
    MarkerSource,
    SessionState,
    SessionStore,
    daemon_lock,
)
from settle.errors import SessionNotFound, StoreError

DATA = Path(__file__).parent / "data"

T0_MS = 1_795_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    with SessionStore.open(tmp_path / "s.db") as s:
        yield s


def _v1_file(path: Path) -> None:
    """A store exactly as schema version 1 wrote it, with one session of data."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    store_mod._migrate_0_to_1(conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO sessions VALUES ('20261118T000000-abcd', 'dev', ?, ?, 'stopped',"
        ' \'ble:AA\', \'{"strap": {"name": "H10"}}\')',
        (T0_MS, T0_MS + 10_000),
    )
    conn.executemany(
        "INSERT INTO beats VALUES ('20261118T000000-abcd', ?, ?, ?, 820, ?, 75, 1)",
        [(i, (i + 1) * 0.8, T0_MS + (i + 1) * 800, 800.78125) for i in range(10)],
    )
    conn.execute(
        "INSERT INTO markers (session_id, t_s, ts_ms, kind, text, source)"
        " VALUES ('20261118T000000-abcd', 2.0, ?, 'shame', 'old', 'cli')",
        (T0_MS + 2000,),
    )
    conn.execute("COMMIT")
    conn.close()


def test_v1_store_is_upgraded_in_place_and_keeps_its_data(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == 4
    path = tmp_path / "old.db"
    _v1_file(path)
    with SessionStore.open(path) as store:
        rec = store.read_session("20261118T000000-abcd")
        assert rec.info.meta == {"strap": {"name": "H10"}}
        assert rec.info.intention is None and rec.info.tags == () and rec.info.notes == ""
        assert [b.rr_ms for b in rec.beats] == [800.78125] * 10
        assert all(b.beat_class is None and b.rr_corrected_ms is None for b in rec.beats)
        assert [(m.kind, m.text) for m in rec.markers] == [("shame", "old")]
        assert rec.gaps == [] and rec.n_ecg == 0
        # The new features work on the upgraded file.
        store.set_intention(rec.info.id, Intention(IntentionTarget.SELF, "I am safe"))
        store.add_gap(rec.info.id, GapRow(3.0, 4.0, "disconnected"))
        # v3: ECG-derived beats beside the strap's own.
        assert rec.ecg_beats == []
        store.add_ecg_beats(rec.info.id, [EcgBeatRow(0, 0.5, None), EcgBeatRow(1, 1.3, 800.0)])
        store.add_ecg_beats(rec.info.id, [EcgBeatRow(1, 1.3, 800.0)])  # re-sent: not twice
        assert [b.rr_ms for b in store.ecg_beats(rec.info.id)] == [None, 800.0]
        assert len(store.beats(rec.info.id)) == 10
    probe = sqlite3.connect(path)
    try:
        assert probe.execute("PRAGMA user_version").fetchone()[0] == 4
        assert probe.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert probe.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        probe.close()


def test_a_v2_store_made_before_warmup_beats_stores_beats_again(tmp_path: Path) -> None:
    """tests/data/store_v2_4ae4df5.db was recorded by `settle demo` at commit 4ae4df5, which
    made schema 2 with a beat-class CHECK built from the enum of the day — no ``warmup``,
    added one commit later. The current daemon classes the first seconds after every
    connect as warm-up, so every flush was refused: no beat of any later session was ever
    stored (all went to rescue files). The upgrade keeps every old beat and takes new ones
    of every class."""
    path = tmp_path / "old.db"
    shutil.copyfile(DATA / "store_v2_4ae4df5.db", path)
    with SessionStore.open(path) as store:
        old = {s.id: s.n_beats for s in store.list_sessions()}
        assert old == {"20261128T025327-450e": 285, "20261128T025353-6a34": 237}
        first = store.beats("20261128T025327-450e")
        sid = store.create_session("dev", T0_MS, "virtual:x", {}).id
        store.add_beats(sid, [
            BeatRow(k, 0.8 * (k + 1), T0_MS + 800 * (k + 1), 800.0, beat_class=c)
            for k, c in enumerate(BeatClass)
        ])  # fmt: skip
        store.add_ecg_beats(sid, [EcgBeatRow(0, 0.5, None, beat_class=BeatClass.WARMUP)])
        assert [b.beat_class for b in store.beats(sid)] == list(BeatClass)
    with SessionStore.open(path) as store:  # and again, as every later run opens it
        assert store.beats("20261128T025327-450e") == first
    probe = sqlite3.connect(path)
    try:
        assert probe.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert probe.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        probe.close()


class _DefensiveConnection:
    """A connection of a SQLite built "defensive" (on by default in some builds, and Python
    3.11 cannot switch it off): it refuses writes to sqlite_master as such a build does."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith("UPDATE SQLITE_MASTER"):
            raise sqlite3.OperationalError("table sqlite_master may not be modified")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        if name == "setconfig":  # Python 3.11
            raise AttributeError(name)
        return getattr(self._conn, name)


def test_the_warmup_upgrade_rebuilds_where_sqlite_refuses_schema_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a defensive SQLite the in-place rewrite of the old beat-class CHECK is refused:
    the store could not be opened at all. The tables are rebuilt instead, with every row and
    index, and take warm-up beats."""
    path = tmp_path / "old.db"
    shutil.copyfile(DATA / "store_v2_4ae4df5.db", path)
    probe = sqlite3.connect(path)
    try:
        before = probe.execute("SELECT * FROM beats ORDER BY session_id, seq").fetchall()
    finally:
        probe.close()
    steps = list(store_mod._MIGRATIONS)
    steps[3] = lambda conn: store_mod._migrate_3_to_4(_DefensiveConnection(conn))  # type: ignore[arg-type]
    monkeypatch.setattr(store_mod, "_MIGRATIONS", tuple(steps))
    with SessionStore.open(path) as store:
        sid = store.create_session("dev", T0_MS, "virtual:x", {}).id
        store.add_beats(sid, [BeatRow(0, 0.8, T0_MS + 800, 800.0, beat_class=BeatClass.WARMUP)])
        store.add_ecg_beats(sid, [EcgBeatRow(0, 0.5, None, beat_class=BeatClass.WARMUP)])
    probe = sqlite3.connect(path)
    try:
        after = probe.execute(
            "SELECT * FROM beats WHERE session_id != ? ORDER BY session_id, seq", (sid,)
        ).fetchall()
        assert after == before and len(before) == 285 + 237
        assert probe.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert probe.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert probe.execute("PRAGMA foreign_key_check").fetchall() == []
        names = {r[0] for r in probe.execute("SELECT name FROM sqlite_master")}
        assert not any(n.startswith("_settle_rebuild") for n in names)
        # Still the WITHOUT ROWID table keyed by (session, seq) the reads rely on.
        sql = probe.execute("SELECT sql FROM sqlite_master WHERE name = 'beats'").fetchone()[0]
        assert "WITHOUT ROWID" in sql and "'warmup'" in sql
    finally:
        probe.close()
    with SessionStore.open(path) as store:  # deleting a session still takes its beats along
        store.delete_session(sid)
    probe = sqlite3.connect(path)
    try:
        n = probe.execute("SELECT count(*) FROM beats WHERE session_id = ?", (sid,)).fetchone()
        assert n[0] == 0
    finally:
        probe.close()


def test_failed_migration_leaves_the_v1_file_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    _v1_file(path)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE sessions ADD COLUMN half_done TEXT")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_mod, "_MIGRATIONS", (store_mod._migrate_0_to_1, broken))
    with pytest.raises(StoreError, match="disk I/O error"):
        SessionStore.open(path)
    probe = sqlite3.connect(path)
    try:
        assert probe.execute("PRAGMA user_version").fetchone()[0] == 1
        cols = [r[1] for r in probe.execute("PRAGMA table_info(sessions)")]
        assert "half_done" not in cols
    finally:
        probe.close()


def test_session_log_round_trip(store: SessionStore) -> None:
    intention = Intention(IntentionTarget.RELATIONAL, "I am accepted", "breath-paced hold")
    sid = store.create_session("dev", T0_MS, "virtual:x", {}, intention=intention).id
    store.set_baseline(sid, BaselinePeriod(0.0, 180.0))
    store.add_tags(sid, ["morning", " evening ", "morning"])
    store.append_notes(sid, "first")
    store.append_notes(sid, "second")
    info = store.get(sid)
    assert info.intention == intention
    assert info.baseline == BaselinePeriod(0.0, 180.0)
    assert info.tags == ("evening", "morning")
    assert info.notes == "first\n\nsecond"
    store.remove_tags(sid, ["evening"])
    store.set_notes(sid, "")
    store.set_intention(sid, None)
    info = store.get(sid)
    assert (info.tags, info.notes, info.intention) == (("morning",), "", None)
    assert store.resolve("latest").tags == ("morning",)


def test_the_store_bounds_notes_for_every_writer(store: SessionStore) -> None:
    """The notes limits (10 000 characters an append, 100 000 a session) were checked by
    `settle log set` alone: any other writer of the store (a script, a future import) put
    megabytes into every `sessions list`, report and JSON export. The store now refuses
    them, one line, nothing written; within the limits it appends as before."""
    sid = store.create_session("dev", T0_MS, "virtual:x", {}).id
    with pytest.raises(ValueError) as exc:
        store.append_notes(sid, "x" * 10_001)
    assert str(exc.value) == "notes: at most 10000 characters, got 10001"
    assert store.get(sid).notes == ""
    for i in range(9):  # 9 x 10 000 + 8 blank-line separators
        store.append_notes(sid, str(i) * 10_000)
    assert len(store.get(sid).notes) == 90_016
    with pytest.raises(ValueError) as exc:
        store.append_notes(sid, "y" * 9_983)  # 90 016 + 2 + 9 983 = 100 001
    assert str(exc.value) == (
        f"notes: session {sid} keeps at most 100000 characters of notes; it holds 90016, "
        "and this would make 100001"
    )
    assert len(store.get(sid).notes) == 90_016
    store.append_notes(sid, "y" * 9_982)  # exactly 100 000
    assert len(store.get(sid).notes) == 100_000
    with pytest.raises(ValueError, match="at most 100000 characters of notes"):
        store.set_notes(sid, "z" * 100_001)
    assert len(store.get(sid).notes) == 100_000
    store.set_notes(sid, "z" * 100_000)
    assert store.get(sid).notes == "z" * 100_000


def test_intention_recorded_in_meta_by_the_daemon_is_read(store: SessionStore) -> None:
    meta = {"intention": {"target": "future", "statement": "this will work", "practice": "p"}}
    a = store.create_session("dev", T0_MS, "x", meta).id
    b = store.create_session("dev", T0_MS, "x", {"intention": {"target": "my sister"}}).id
    assert store.get(a).intention == Intention(IntentionTarget.FUTURE, "this will work", "p")
    assert store.get(b).intention == Intention(IntentionTarget.FREE)
    store.set_intention(a, Intention(IntentionTarget.SELF))  # the columns win
    assert store.get(a).intention == Intention(IntentionTarget.SELF)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Intention("elsewhere"),  # type: ignore[arg-type]
        lambda: BaselinePeriod(10.0, 5.0),
        lambda: BaselinePeriod(-1.0),
        lambda: GapRow(5.0, 4.0, "x"),
        lambda: BeatRow(0, 1.0, T0_MS, 800.0, beat_class="weird"),  # type: ignore[arg-type]
        lambda: BeatRow(0, 1.0, T0_MS, 800.0, rr_corrected_ms=float("nan")),
    ],
)
def test_invalid_log_values_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        bad()  # type: ignore[operator]


def test_beats_carry_artefact_fields_and_can_be_annotated_later(store: SessionStore) -> None:
    sid = store.create_session("dev", T0_MS, "x", {}).id
    old_style = BeatRow(0, 0.8, T0_MS + 800, 800.0)  # as the running daemon builds them
    new_style = BeatRow(
        1, 1.9, T0_MS + 1900, 1100.0, rr_corrected_ms=800.0, beat_class=BeatClass.ECTOPIC,
        timing_uncertain=True,
    )  # fmt: skip
    store.add_beats(sid, [old_style, new_style])
    assert store.beats(sid) == [old_style, new_style]
    store.annotate_beats(sid, [BeatAnnotation(0, 801.0, BeatClass.NORMAL, False)])
    assert store.beats(sid)[0].beat_class is BeatClass.NORMAL
    assert store.beats(sid)[0].rr_corrected_ms == 801.0
    with pytest.raises(StoreError, match="seq 7"):
        store.annotate_beats(
            sid, [BeatAnnotation(1, 1.0, "short"), BeatAnnotation(7, 1.0, "short")]
        )
    assert store.beats(sid)[1].beat_class is BeatClass.ECTOPIC  # nothing half-done


def test_ecg_frames_round_trip_and_resend_is_idempotent(store: SessionStore) -> None:
    sid = store.create_session("dev", T0_MS, "x", {}).id
    t = (np.arange(260) * (1e9 / 130)).astype(np.int64)
    uv = (np.arange(260) * 7 - 900).astype(np.int32)
    store.add_ecg(sid, t[:73].tolist(), uv[:73].tolist())
    store.add_ecg(sid, t[73:].tolist(), uv[73:].tolist())
    store.add_ecg(sid, t[:73].tolist(), uv[:73].tolist())  # re-sent frame
    ecg = store.ecg(sid)
    assert ecg.t_ns.tolist() == t.tolist() and ecg.uv.tolist() == uv.tolist()
    assert ecg.fs_hz == pytest.approx(130.0)
    assert store.read_session(sid).n_ecg == 260
    with pytest.raises(ValueError, match="increasing"):
        store.add_ecg(sid, [5, 3], [1, 2])
    with pytest.raises(ValueError, match="2 times but 1"):
        store.add_ecg(sid, [5, 6], [1])


def _fill(store: SessionStore, sid: str, secret: str) -> None:
    store.add_beats(sid, [BeatRow(i, i + 1.0, T0_MS + 1000 * i, 1000.0) for i in range(50)])
    store.add_indices(sid, [IndicesRow(5.0, T0_MS, '{"v": 1}', hr_bpm=60.0)])
    store.add_marker(sid, MarkerRow(1.0, T0_MS, "shame", secret, MarkerSource.CLI))
    store.add_gap(sid, GapRow(2.0, 3.0, "disconnected"))
    store.add_ecg(sid, [1, 2, 3], [10, 20, 30])
    store.add_tags(sid, ["t"])
    store.set_notes(sid, secret)


def test_delete_removes_everything_and_leaves_other_sessions(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    secret = "zebra-unicorn-4711"
    with SessionStore.open(path) as store:
        gone = store.create_session("dev", T0_MS, "x", {}).id
        kept = store.create_session("dev", T0_MS + 1000, "x", {}).id
        _fill(store, gone, secret)
        _fill(store, kept, "kept-note")
        store.finish_session(gone, T0_MS + 60_000)
        store.delete_session(gone)
        with pytest.raises(SessionNotFound):
            store.get(gone)
        assert len(store.beats(kept)) == 50 and len(store.ecg(kept)) == 3
        # While the store is still open (the daemon may keep it open for days): the deleted
        # text is neither in the main file nor left in the WAL.
        for f in tmp_path.iterdir():
            assert secret.encode() not in f.read_bytes(), f.name
    conn = sqlite3.connect(path)
    try:
        for table in ("beats", "indices", "markers", "gaps", "ecg", "session_tags"):
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE session_id = ?", (gone,))
            assert n.fetchone()[0] == 0, table
    finally:
        conn.close()
    for f in tmp_path.iterdir():
        assert secret.encode() not in f.read_bytes(), f.name


def test_cli_delete_asks_and_refuses_running_sessions(tmp_path: Path) -> None:
    from settle.cli import app

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        running = store.create_session("dev", T0_MS, "x", {}).id
        done = store.create_session("dev", T0_MS + 1000, "x", {}).id
        store.finish_session(done, T0_MS + 5000, SessionState.INTERRUPTED)
    runner = CliRunner()
    res = runner.invoke(app, ["sessions", "delete", done, "--db", str(db)], input="n\n")
    assert res.exit_code == 1 and "nothing deleted" in res.output
    res = runner.invoke(app, ["sessions", "delete", running, "--db", str(db), "--yes"])
    # No daemon holds the store: a crash left it marked running ("stop it first" had
    # nothing to stop).
    assert res.exit_code == 1 and "no daemon is recording it" in res.output
    assert "use --force" in res.output
    res = runner.invoke(app, ["sessions", "delete", done[:-1], "--db", str(db), "--yes"])
    assert res.exit_code == 1  # full id only, and it says so (no session has this id: 1)
    assert (
        f"delete needs the full session id, not {done[:-1]!r} (did you mean {done}?" in res.output
    )
    res = runner.invoke(app, ["sessions", "delete", "nope", "--db", str(db), "--yes"])
    assert res.exit_code == 1 and "no session matches 'nope'" in res.output
    # A prefix of both sessions is ambiguous; it used to read "no session matches".
    common = next(i for i, (a, b) in enumerate(zip(done, running, strict=True)) if a != b)
    res = runner.invoke(app, ["sessions", "delete", done[:common], "--db", str(db), "--yes"])
    assert res.exit_code == 1 and "is ambiguous: matches" in res.output, res.output
    res = runner.invoke(app, ["sessions", "delete", done, "--db", str(db)], input="y\n")
    assert res.exit_code == 0, res.output
    # A session a daemon is recording is never deleted, --force or not (the daemon went on
    # "storing" into nothing and said "N beats stored"); --force is for a crash's leftover.
    with daemon_lock(db):
        res = runner.invoke(app, ["sessions", "delete", running, "--db", str(db), "-y", "--force"])
    assert res.exit_code == 1 and "being recorded by a running daemon" in res.output
    res = runner.invoke(app, ["sessions", "delete", running, "--db", str(db), "-y", "--force"])
    assert res.exit_code == 0, res.output
    with SessionStore.open(db) as store:
        assert store.list_sessions() == []


def test_cli_log_set_fills_in_the_session_log(tmp_path: Path) -> None:
    from settle.cli import app

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", T0_MS, "x", {}).id
    runner = CliRunner()
    args = ["log", "set", "latest", "--db", str(db)]
    res = runner.invoke(app, [*args, "--statement", "x"])
    assert res.exit_code == 2 and "need --target" in res.output
    res = runner.invoke(app, args)  # it said "updated session …" having changed nothing
    assert res.exit_code == 2 and "nothing to set: give --target" in res.output
    res = runner.invoke(
        app,
        [*args, "--target", "future", "--statement", "this will work", "--tag", "a",
         "--tag", "b", "--notes", "calm start", "--baseline", "0:120"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "--target", "elsewhere"])
    assert res.exit_code == 2 and "unknown target 'elsewhere'" in res.output
    res = runner.invoke(app, [*args, "--baseline", "9:1"])
    assert res.exit_code == 2 and "--baseline" in res.output
    with SessionStore.open(db) as store:
        info = store.get(sid)
    assert info.intention == Intention(IntentionTarget.FUTURE, "this will work", "")
    assert (info.tags, info.notes, info.baseline) == (
        ("a", "b"),
        "calm start",
        BaselinePeriod(0.0, 120.0),
    )


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--statement", "x" * 501, "--statement: at most 500 characters, got 501"),
        ("--practice", "y" * 101, "--practice: at most 100 characters, got 101"),
        ("--tag", "z" * 65, "--tag: at most 64 characters, got 65"),
        ("--statement", "I am\x1b[2J safe", "--statement: control characters are not allowed"),
        # --notes was not checked at all: an escape sequence went into the store and report.
        ("--notes", "slept\x1b[2J badly", r"--notes: control character '\x1b' is not allowed"),
        ("--notes", "a\u2028b", r"--notes: control character '\u2028' is not allowed"),
    ],
)
def test_cli_log_set_holds_the_intention_to_what_mqtt_takes(
    tmp_path: Path, option: str, value: str, words: str
) -> None:
    """`settle session start` over MQTT takes a statement of at most 500 characters and a
    practice of 100; `log set` took 100 KB and control characters. Now the same limits,
    one line, exit 2, nothing changed."""
    from settle.cli import app

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", T0_MS, "x", {}).id
    args = ["log", "set", "latest", "--db", str(db), "--target", "self", option, value]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and words in res.output and res.output.count("\n") == 1
    with SessionStore.open(db) as store:
        info = store.get(sid)
    assert info.intention is None and info.tags == () and info.notes == ""


def test_cli_log_set_notes_keep_tab_and_line_breaks(tmp_path: Path) -> None:
    """Notes may hold what a marker's text may: tab and line breaks, no other control
    character."""
    from settle.cli import app

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", T0_MS, "x", {}).id
    notes = "slept badly\n\tthen\r\nwoke at 5"
    res = CliRunner().invoke(app, ["log", "set", "latest", "--db", str(db), "--notes", notes])
    assert res.exit_code == 0, res.output
    with SessionStore.open(db) as store:
        assert store.get(sid).notes == notes


def test_cli_log_set_started_redates_a_session_recorded_with_a_wrong_clock(
    tmp_path: Path,
) -> None:
    """A board without a real-time clock recorded a 20-min session 3 days in the past and
    learnt the time only after it ended: ``log set --started`` dates it afresh (its stop
    moves with it, its length and beats stay), so lists, History and exports show the real
    day. A running session, a time that has not come and an unreadable one are refused with
    one line, and nothing else given with them is stored."""
    import datetime as dt

    from settle.cli import app

    db = tmp_path / "s.db"
    wrong_ms = T0_MS - 3 * 86_400_000
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", wrong_ms, "x", {}).id
        store.add_beats(
            sid, [BeatRow(i, i + 1.0, wrong_ms + 1000 * i, 1000.0) for i in range(1200)]
        )
        store.add_marker(sid, MarkerRow(300.0, wrong_ms + 300_000, "shame", "", MarkerSource.CLI))
        store.finish_session(sid, wrong_ms + 1_200_000)
        running = store.create_session("dev2", T0_MS + 3_600_000, "x", {}).id
        rev = store.revision(sid)
    true_start = dt.datetime.fromtimestamp(T0_MS / 1000).astimezone()  # local, as typed
    typed = true_start.strftime("%Y-%m-%d %H:%M:%S")
    runner = CliRunner()

    res = runner.invoke(app, ["log", "set", running, "--db", str(db), "--started", typed])
    assert res.exit_code == 1 and "still recording" in res.output, res.output
    for bad, why in [
        ("next tuesday", "expected a date and time"),
        ("2999-01-01 07:30", "is in the future"),
        ("1970-01-02 00:00", "before 2000"),
    ]:
        res = runner.invoke(
            app, ["log", "set", sid, "--db", str(db), "--notes", "must not stay", "--started", bad]
        )
        assert res.exit_code == 2 and why in res.output, (bad, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output
    with SessionStore.open(db) as store:
        assert (store.get(sid).started_ms, store.get(sid).notes) == (wrong_ms, "")

    # A start that would end the session in the future (it lasted 20 min).
    soon = dt.datetime.now() - dt.timedelta(minutes=10)
    res = runner.invoke(
        app, ["log", "set", sid, "--db", str(db), "--started", f"{soon:%Y-%m-%d %H:%M}"]
    )
    assert res.exit_code == 2 and "in the future (it lasted 20 min)" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1

    res = runner.invoke(app, ["log", "set", sid, "--db", str(db), "--started", typed])
    assert res.exit_code == 0, res.output
    assert f"it now starts {true_start:%Y-%m-%d %H:%M}" in res.output and "+3 d" in res.output
    with SessionStore.open(db) as store:
        info = store.get(sid)
        assert (info.started_ms, info.stopped_ms) == (T0_MS, T0_MS + 1_200_000)
        assert len(store.beats(sid)) == 1200 and store.markers(sid)[0].t_s == 300.0
        assert store.revision(sid) != rev  # History's cached row is re-made
        assert store.get(running).started_ms == T0_MS + 3_600_000
    res = runner.invoke(app, ["sessions", "list", "--db", str(db)])
    assert f"{true_start:%Y-%m-%d %H:%M}" in res.output, res.output
    out = tmp_path / "s.json"
    res = runner.invoke(
        app, ["export", sid, "--format", "json", "--out", str(out), "--db", str(db)]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert (doc["session"]["started_ms"], doc["session"]["stopped_ms"]) == (
        T0_MS,
        T0_MS + 1_200_000,
    )


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("2026-03-29 02:30", "does not exist here (the clocks went forward)"),
        ("2026-10-25 02:30", "occurs twice here (the clocks went back)"),
    ],
)
def test_cli_log_set_started_refuses_a_local_time_the_clock_change_skips_or_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, typed: str, why: str
) -> None:
    """In Berlin 02:30 on the last Sunday of March never happens and on the last Sunday of
    October happens twice: it was moved an hour back, or the first picked, without a word."""
    import time

    from settle.cli import app

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", T0_MS, "x", {}).id
        store.finish_session(sid, T0_MS + 60_000)
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        args = ["log", "set", sid, "--db", str(db), "--started"]
        res = CliRunner().invoke(app, [*args, typed])
        again = CliRunner().invoke(app, [*args, typed.replace(" ", "T") + "+01:00"])
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert res.exit_code == 2 and why in res.output and "give it with its offset" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert again.exit_code == 0, again.output  # with its offset it is one instant
    with SessionStore.open(db) as store:
        assert store.get(sid).started_ms == round(
            dt.datetime.fromisoformat(typed.replace(" ", "T") + "+01:00").timestamp() * 1000
        )


def _compressed_replay(db: Path) -> str:
    """A 4x time-compressed replay: 300 s of beats recorded in 75 s of wall time."""
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", T0_MS, "x", {}).id
        store.add_beats(
            sid, [BeatRow(i, 0.8 * (i + 1), T0_MS + 200 * i, 800.0) for i in range(375)]
        )
        store.finish_session(sid, T0_MS + 75_000)
    return sid


def test_cli_log_set_is_all_or_nothing_and_checks_the_baseline(tmp_path: Path) -> None:
    """A rejected option stores none of the others; a baseline must lie inside the recording
    and have a length (the report would otherwise say 'caught up -99754 s')."""
    from settle.cli import app

    db = tmp_path / "s.db"
    sid = _compressed_replay(db)
    with SessionStore.open(db) as store:
        store.set_intention(sid, Intention(IntentionTarget.SELF, "I am safe", ""))
    runner = CliRunner()
    args = ["log", "set", sid, "--db", str(db)]

    res = runner.invoke(app, [*args, "--target", "future", "--statement", "new", "--tag", " "])
    assert res.exit_code == 2 and "tag must not be empty" in res.output
    for bad, why in [
        ("0:0", "START < STOP"),
        ("60:30", "START < STOP"),
        ("-5:30", "START < STOP"),
        ("0:inf", "expected START:STOP"),
        ("30", "expected START:STOP"),
        ("0:99999", "past the end of session"),
        # Shorter than a baseline marked live may be (15 s): it was kept and rescored the
        # whole report against 3 samples.
        ("100:110", "10 s is too short (at least 15 s"),
    ]:
        res = runner.invoke(app, [*args, "--notes", "should not stay", "--baseline", bad])
        assert res.exit_code == 2, (bad, res.output)
        assert why in res.output and len(res.output.strip().splitlines()) == 1, res.output
    with SessionStore.open(db) as store:
        info = store.get(sid)
    assert info.intention == Intention(IntentionTarget.SELF, "I am safe", "")
    assert (info.tags, info.notes, info.baseline) == ((), "", None)

    # The replay's own time axis (300 s), not its 75 s of wall time, bounds the baseline.
    res = runner.invoke(app, [*args, "--baseline", "0:240"])
    assert res.exit_code == 0, res.output
    with SessionStore.open(db) as store:
        assert store.get(sid).baseline == BaselinePeriod(0.0, 240.0)


def test_sessions_list_duration_of_a_compressed_replay_and_a_mistyped_db(tmp_path: Path) -> None:
    """A 4x replay lists its 300 s of recording, not its 75 s of wall time; a mistyped --db
    is an error and does not leave an empty store behind."""
    from settle.cli import app

    db = tmp_path / "s.db"
    _compressed_replay(db)
    runner = CliRunner()
    res = runner.invoke(app, ["sessions", "list", "--json", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert [s["duration_s"] for s in json.loads(res.output)["sessions"]] == [300.0]
    typo = tmp_path / "s.bd"
    res = runner.invoke(app, ["sessions", "list", "--db", str(typo)])
    assert res.exit_code == 1 and f"no session store at {typo}" in res.output
    assert not typo.exists()


def test_trends_json_gives_null_for_a_session_without_intention(tmp_path: Path) -> None:
    from settle.cli import app

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", T0_MS, "x", {}).id
        store.finish_session(sid, T0_MS + 60_000)
    res = CliRunner().invoke(app, ["trends", "--json", "--db", str(db)])
    assert res.exit_code == 0, res.output
    (item,) = json.loads(res.output)["sessions"]
    assert item["id"] == sid and item["target"] is None


def test_log_set_refuses_empty_notes_and_takes_a_target_in_any_case(tmp_path: Path) -> None:
    """`--notes ""` printed "updated session" and changed nothing; `--target Self`, which
    `settle session start` takes (as self), was "unknown target" here and in `trends`."""
    from settle.cli import app

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev", T0_MS, "x", {}).id
        store.finish_session(sid, T0_MS + 60_000)
    runner = CliRunner()
    for notes in ("", "  \n"):
        res = runner.invoke(app, ["log", "set", sid, "--notes", notes, "--db", str(db)])
        assert res.exit_code == 2, res.output
        assert "--notes: nothing to append (the text is empty)" in res.output
        assert "updated" not in res.output
    res = runner.invoke(app, ["log", "set", sid, "--target", " Self", "--db", str(db)])
    assert res.exit_code == 0, res.output
    with SessionStore.open(db) as store:
        info = store.get(sid)
    assert info.intention is not None and info.intention.target == "self"
    assert info.notes == ""
    res = runner.invoke(app, ["trends", "--target", "SELF", "--json", "--db", str(db)])
    assert res.exit_code == 0, res.output
