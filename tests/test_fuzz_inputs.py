"""Bad input (issue 8): every input a user or a network peer controls, fuzzed with hypothesis.

The property is the same everywhere: a typed :class:`SettleError` (one clear line) or a valid
result, never another exception, and never a side effect from an input that was refused.
Bounded (``max_examples``) so the file runs in well under 40 s; the counts tried are in
docs/reliability.md. The BLE decoders have their own fuzz (tests/test_hrs_codec.py,
tests/test_pmd.py).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback.mqtt import MqttLink
from feedback.payloads import COMMANDS, CommandResult
from sensors.readers import RR_MAX_MS, RR_MIN_MS, read_rr_file
from sensors.strap import StrapClient, StrapInfo
from sessions.exporters import FORMATS, ExportRefused, export_session
from sessions.journal import import_journal
from sessions.store import BeatRow, SessionStore
from settle.config import Settings, load_config
from settle.daemon import Daemon
from settle.errors import ConfigError, InputFileError, SettleError
from settle.pipeline import DeviceOutput

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def fresh_store(tmp: Path, n_beats: int = 0) -> tuple[SessionStore, str]:
    store = SessionStore.open(tmp / "s.db")
    info = store.create_session("dev_1", 1_700_000_000_000, "fuzz", {})
    t = 3600.0  # an hour without beats, unless some are asked for
    if n_beats:
        rows, t = [], 0.0
        for i in range(n_beats):
            rr = 800.0 + 40.0 * ((i * 7) % 5)
            t += rr / 1000
            rows.append(BeatRow(i, t, 1_700_000_000_000 + round(t * 1000), rr, None, 70, None))
        store.add_beats(info.id, rows)
    store.finish_session(info.id, 1_700_000_000_000 + round(t * 1000))
    return store, info.id


# -- command payloads ------------------------------------------------------------------------


class RecordingLink(MqttLink):
    """A link that is never connected and keeps what the daemon publishes."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 1)
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, payload.encode() if isinstance(payload, str) else payload))


def command_payloads() -> st.SearchStrategy[bytes]:
    valid_ish = st.fixed_dictionaries(
        {"id": st.text(max_size=70)},
        optional={
            "v": st.sampled_from([1, 2, "1", None]),
            "kind": st.sampled_from(["note", "shame", "anger", "", "hold-start"]),
            "text": st.text(max_size=50),
            "intention": json_values,
            "extra": json_values,
        },
    )
    valid = st.sampled_from(
        [{"id": "1"}, {"id": "2", "kind": "note", "text": "hello"}, {"v": 1, "id": "3"}]
    )
    return st.one_of(
        valid.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        valid_ish.map(lambda v: json.dumps(v).encode()),
        st.just(b"x" * 5000),
        # Nested deep enough to crash json.loads (RecursionError) while under 4 KiB, also
        # inside a valid command: the handler itself must answer, not only the MQTT link.
        st.integers(33, 1900).map(lambda n: b"[" * n + b"]" * n),
        st.integers(33, 1500).map(
            lambda n: b'{"id": "d", "kind": "note", "text": ' + b"[" * n + b"]" * n + b"}"
        ),
    )


def test_commands_always_one_result_and_no_side_effect_when_refused(tmp_path: Path) -> None:
    settings_ = load_config(None, mqtt={"enabled": False}, storage={"db_path": tmp_path / "s.db"})
    store = SessionStore.open(settings_.db_path)
    link = RecordingLink()
    daemon = Daemon(settings_, store, [StrapClient(address="AA:BB:CC:DD:EE:FF")], link=link)
    rt = daemon.runtimes[0]
    rt.info = StrapInfo("AA:BB:CC:DD:EE:FF", "Fuzz", "fuzz_1")
    rt.output = DeviceOutput(link, "settle", "fuzz_1")
    loop = asyncio.new_event_loop()
    loop.run_until_complete(daemon.start_session(rt, None))
    tried = {"n": 0, "ok": 0}

    def state() -> tuple[Any, ...]:
        sessions = store.list_sessions()
        s = rt.session
        return (
            [(x.id, x.state) for x in sessions],
            [len(store.markers(x.id)) for x in sessions],
            None if s is None else (s.session_id, s.baseline, s.baseline_marked),
        )

    @FUZZ
    @given(
        device=st.sampled_from(["fuzz_1", "other", ""]),
        name=st.sampled_from([*COMMANDS, "frobnicate", "", "marker/x"]),
        payload=command_payloads(),
        retained=st.booleans(),
    )
    def check(device: str, name: str, payload: bytes, retained: bool) -> None:
        before = state()
        link.sent.clear()
        loop.run_until_complete(daemon.on_command(device, name, payload, retained))
        tried["n"] += 1
        if retained and not payload:
            assert link.sent == []  # clearing a retained command: nothing to answer
            return
        results = [p for t, p in link.sent if t == f"settle/{device}/cmd/{name}/result"]
        assert len(results) == 1, link.sent
        res = CommandResult.model_validate_json(results[0])
        if res.status == "error":
            assert res.error
            assert state() == before  # a refused command changed nothing
        else:
            tried["ok"] += 1

    try:
        check()
    finally:
        if rt.session is not None:
            loop.run_until_complete(daemon._finish_session(rt))
        loop.close()
        store.close()
    assert tried["n"] >= 150
    print(f"commands tried: {tried['n']}, accepted: {tried['ok']}")


# -- config files ----------------------------------------------------------------------------

_SECTIONS = {name: list(type(getattr(Settings(), name)).model_fields) for name in
             ("mqtt", "homeassistant", "strap", "processing", "storage", "demo")}  # fmt: skip


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else "nan"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string is JSON-compatible for these


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(string.printable, max_size=20),
    st.lists(st.integers(-5, 5), max_size=3),
)


@st.composite
def toml_documents(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    lines = []
    for section in draw(st.lists(st.sampled_from([*_SECTIONS, "bogus"]), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        keys = [*_SECTIONS.get(section, []), "unknown_key"]
        for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            lines.append(f"{key} = {toml_value(draw(toml_scalars))}")
    if draw(st.booleans()):
        lines.insert(0, f"log_level = {toml_value(draw(st.sampled_from(['INFO', 'LOUD', 3])))}")
    return "\n".join(lines).encode()


def test_config_files_give_settings_or_one_config_error(tmp_path: Path) -> None:
    path = tmp_path / "settle.toml"
    outcome = {"valid": 0, "error": 0}
    keep = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("SETTLE_")}
    try:

        @FUZZ
        @given(doc=toml_documents())
        def check(doc: bytes) -> None:
            path.write_bytes(doc)
            try:
                s = load_config(path)
            except ConfigError as exc:
                assert str(exc).startswith("config: ") and "\n" not in str(exc).strip()
                outcome["error"] += 1
                return
            assert isinstance(s, Settings)
            outcome["valid"] += 1

        check()
    finally:
        os.environ.update(keep)
    assert outcome["valid"] > 10 and outcome["error"] > 10
    print(f"config files tried: {sum(outcome.values())} {outcome}")


# -- journal import files --------------------------------------------------------------------


@st.composite
def journal_files(draw: st.DrawFn) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".txt", ".csv", ".jsonl", ".md", ""]))
    how = draw(st.integers(0, 4))
    if how == 0:
        return suffix, draw(st.binary(max_size=300))
    if how == 4:  # near-valid: session-seconds CSV inside (or just past) the 1 h session
        kinds = st.sampled_from(["note", "shame", "doubt", "hold-start", "", "anger"])
        times = st.one_of(st.floats(0, 3500), st.floats(-5, 3700, allow_nan=False))
        text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
        rows = draw(st.lists(st.tuples(times, kinds, text), min_size=1, max_size=4))
        buf = io.StringIO()
        csv.writer(buf).writerows([("t_s", "kind", "text"), *rows])
        return ".csv", buf.getvalue().encode()
    if how == 1:  # text lines
        clock = st.from_regex(r"\A\d{1,2}:\d{2}(:\d{2}(\.\d{1,7})?)?\Z")
        lines = draw(st.lists(st.tuples(clock, st.text(max_size=20)), max_size=5))
        return suffix, "\n".join(f"{c} {t}" for c, t in lines).encode()
    if how == 2:  # jsonl objects
        keys = st.sampled_from(["t_s", "time", "ts_ms", "kind", "text", "x"])
        values = st.one_of(
            json_values,
            st.floats(0, 4000),
            st.sampled_from(["note", "shame", 10**400]),  # 10**400: no float holds it
        )
        objs = draw(st.lists(st.dictionaries(keys, values, max_size=4), max_size=4))
        return suffix, "\n".join(json.dumps(o) for o in objs).encode()
    header = draw(st.lists(st.sampled_from(["t_s", "time", "ts_ms", "kind", "text"]),
                           min_size=1, max_size=3))  # fmt: skip
    cells = st.text(string.printable.replace("\n", "").replace("\r", ""), max_size=15)
    rows = draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header)), max_size=4))
    return suffix, "\n".join(",".join(r) for r in [header, *rows]).encode()


def test_journal_import_stores_all_or_nothing_with_typed_errors(tmp_path: Path) -> None:
    store, sid = fresh_store(tmp_path)
    outcome = {"imported": 0, "error": 0}

    @FUZZ
    @given(f=journal_files(), offset=st.sampled_from([0.0, 0.0, 30.0, -1e9, float("nan")]))
    def check(f: tuple[str, bytes], offset: float) -> None:
        suffix, data = f
        path = tmp_path / f"journal{suffix}"
        path.write_bytes(data)
        before = len(store.markers(sid))
        try:
            rows = import_journal(store, sid, path, offset_s=offset)
        except InputFileError as exc:
            assert str(path) in str(exc)
            assert len(store.markers(sid)) == before  # nothing half-imported
            outcome["error"] += 1
            return
        assert len(store.markers(sid)) == before + len(rows)
        outcome["imported"] += 1

    try:
        check()
    finally:
        store.close()
    assert outcome["imported"] > 5 and outcome["error"] > 5  # both paths exercised
    print(f"journal files tried: {sum(outcome.values())} {outcome}")


# -- RR files --------------------------------------------------------------------------------


@st.composite
def rr_files(draw: st.DrawFn) -> bytes:
    how = draw(st.integers(0, 5))
    if how == 5:  # plausible files too, so the readable path is always well exercised
        rr = draw(st.lists(st.integers(300, 2000), min_size=1, max_size=8))
        return "\n".join(map(str, rr)).encode()
    num = st.one_of(
        st.floats(), st.integers(-5, 3000), st.integers(60_000, 70_000), st.text(max_size=6)
    ).map(str)
    if how == 0:
        return draw(st.binary(max_size=300))
    if how == 1:
        return "\n".join(draw(st.lists(num, max_size=8))).encode()
    if how == 2:
        rows = draw(st.lists(st.tuples(num, num), max_size=6))
        return ("t_s,rr_ms\n" + "\n".join(f"{a},{b}" for a, b in rows)).encode()
    if how == 3:  # blank and comment lines anywhere, saved as UTF-16 (with its mark)
        parts = draw(st.lists(st.one_of(num, st.sampled_from(["", "# c", "t_s,rr_ms"])),
                              max_size=8))  # fmt: skip
        return "\n".join(parts).encode("utf-16")
    body = "\n".join(draw(st.lists(num, max_size=6)))
    return f"[Params]\nVersion=106\n[HRData]\n{body}\n".encode("latin-1", "replace")


def test_rr_files_read_or_one_input_file_error(tmp_path: Path) -> None:
    path = tmp_path / "rr.txt"
    outcome = {"read": 0, "error": 0}

    @FUZZ
    @given(data=rr_files())
    def check(data: bytes) -> None:
        path.write_bytes(data)
        try:
            rec = read_rr_file(path)
        except InputFileError:
            outcome["error"] += 1
            return
        assert rec.rr_ms.size > 0
        assert bool(((rec.rr_ms >= RR_MIN_MS) & (rec.rr_ms <= RR_MAX_MS)).all())
        assert rec.rr_ms.size == rec.t_s.size
        outcome["read"] += 1

    check()
    assert outcome["read"] > 5
    print(f"RR files tried: {sum(outcome.values())} {outcome}")


# -- export paths ----------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            st_ = p.lstat()
            out[str(p)] = (st_.st_mtime_ns, st_.st_size)
    return out


def test_export_paths_never_write_outside_the_chosen_directory(tmp_path: Path) -> None:
    """Random ``--out`` strings (``..``, absolute, symlinks planted where an export would
    write) and BIDS subject labels: a write lands only in the directory the user named (the
    resolved ``--out`` directory, or the resolved parent of an ``--out`` file), a planted link
    is replaced, never followed; anything else is one :class:`SettleError`."""
    store, sid = fresh_store(tmp_path, n_beats=120)
    chosen = tmp_path / "a" / "b" / "c" / "d" / "exports"  # four ".." stay in tmp_path
    outside = tmp_path / "outside"
    for d in (chosen, outside):
        d.mkdir(parents=True)
    victim = outside / "victim.csv"
    victim.write_text("keep me\n")
    (chosen / "link_out").symlink_to(outside, target_is_directory=True)
    (chosen / f"settle-{sid}.csv").symlink_to(victim)
    (chosen / "sub-01").symlink_to(outside, target_is_directory=True)
    (chosen / "x.csv").symlink_to(victim)
    parts = st.sampled_from(["..", ".", "link_out", "sub-01", "x.csv", "new", "a.json", "b.edf",
                             "k.txt", f"settle-{sid}.csv", "", "\x00", "é"])  # fmt: skip
    outcome = {"written": 0, "refused": 0}

    @FUZZ
    @given(
        rel=st.lists(parts, max_size=4),
        absolute=st.booleans(),
        fmt=st.sampled_from(FORMATS),
        subject=st.sampled_from(["01", "../x", "a/b", "", "-", "é"]),
    )
    def check(rel: list[str], absolute: bool, fmt: str, subject: str) -> None:
        raw = "/".join(rel)
        out = Path(str(chosen.resolve()) + "/" + raw) if absolute else chosen / raw
        try:
            where = (out if out.is_dir() else out.parent).resolve()
        except (ValueError, OSError):
            where = None
        before = snapshot(tmp_path)
        victim_before = victim.read_text()
        try:
            written = export_session(store, sid, fmt, out, subject=subject)  # type: ignore[arg-type]
        except SettleError:
            outcome["refused"] += 1
            assert snapshot(tmp_path) == before
            return
        outcome["written"] += 1
        assert where is not None
        changed = {p for p, v in snapshot(tmp_path).items() if before.get(p) != v}
        assert changed, "an export reported success but wrote nothing"
        for p in changed:
            assert where == Path(p).parent.resolve() or where in Path(p).resolve().parents, (
                p, where)  # fmt: skip
        assert written.resolve() == where or where in written.resolve().parents
        if where != outside.resolve():
            assert victim.read_text() == victim_before  # a planted link was not followed

    try:
        check()
    finally:
        store.close()
    assert outcome["written"] > 5 and outcome["refused"] > 5
    print(f"export paths tried: {sum(outcome.values())} {outcome}")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_over_a_planted_link_replaces_the_link(tmp_path: Path, fmt: str) -> None:
    store, sid = fresh_store(tmp_path, n_beats=20)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    out = tmp_path / "exports"
    out.mkdir()
    (out / f"settle-{sid}.{fmt}").symlink_to(victim)
    try:
        # An existing name, even a link, is kept unless the user says --force ...
        with pytest.raises(ExportRefused, match="file exists"):
            export_session(store, sid, fmt, out)  # type: ignore[arg-type]
        assert (out / f"settle-{sid}.{fmt}").is_symlink()
        # ... and then the link is replaced, never followed.
        written = export_session(store, sid, fmt, out, force=True)  # type: ignore[arg-type]
    finally:
        store.close()
    assert victim.read_text() == "keep me\n"
    assert not written.is_symlink() and written.parent == out
    assert written.stat().st_size > 0


@pytest.mark.parametrize(
    ("sent", "echo"), [("1e400", "1e400"), ("-1e400", "-1e400"), ("42", "42"), ("1.50", "1.50")]
)
def test_a_number_sent_as_an_id_is_echoed_as_it_was_sent(sent: str, echo: str) -> None:
    """An id of 1e400 was read as a float (inf) and echoed as "Infinity", with the advice
    'send "Infinity", not Infinity': a sender matching its results by id never found it."""
    from feedback.commands import screen_command

    screened = screen_command(
        "marker", f'{{"v": 1, "id": {sent}, "kind": "shame"}}'.encode(), False
    )
    assert screened.id == echo
    assert screened.error == f'id: Input should be a valid string (send "{echo}", not {echo})'
