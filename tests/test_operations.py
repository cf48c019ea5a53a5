"""Operations: SIGTERM (what systemd sends) stops ``settle demo`` cleanly — exit 0, session
``stopped`` in the store, ``bridge/state = offline`` retained on the broker — and logs are
structured (``log_format``), INFO by default, with no physiology values at INFO."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from sessions.store import SessionState, SessionStore
from tests.conftest import Mosquitto

CONFIG = Path(__file__).parents[1] / "configs" / "settle.toml"


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SETTLE_")}
    return {**e, "SETTLE_CONFIG": str(CONFIG), **extra}


async def retained(port: int, topic: str) -> bytes | None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-ops-reader") as c:
        await c.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(3):
                async for m in c.messages:
                    payload = m.payload
                    assert isinstance(payload, bytes)
                    return payload
        except TimeoutError:
            return None
    return None


async def test_sigterm_stops_the_demo_cleanly(mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "settle.cli", "demo", "--speed", "10", "--db", str(db),
        "--mqtt", f"127.0.0.1:{mosquitto.port}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while b"session:" not in (line := await proc.stdout.readline()):
            if not line:  # EOF: readline returns at once, the timeout could never fire
                _, err = await proc.communicate()
                pytest.fail(f"demo exited {proc.returncode} before a session: {err.decode()}")
        assert await retained(mosquitto.port, "settle/bridge/state") == b"online"
        await asyncio.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
    assert s.state == SessionState.STOPPED and s.stopped_ms is not None
    assert s.n_beats > 0
    assert await retained(mosquitto.port, "settle/bridge/state") == b"offline"
    session = await retained(mosquitto.port, f"settle/{s.device_id}/session")
    assert session is not None and json.loads(session)["state"] == "stopped"


@pytest.mark.parametrize("ignored", [False, True], ids=["hangup", "nohup"])
def test_a_terminal_hanging_up_closes_the_session_and_nohup_keeps_recording(
    tmp_path: Path, ignored: bool
) -> None:
    """Closing the terminal (SIGHUP) ended the daemon as `kill -9` does: exit by signal 1, the
    session left `running`, the last second of beats lost. Now it stops cleanly; under
    `nohup` (SIGHUP ignored) the hangup changes nothing and the recording goes on."""
    db = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "settle.cli", "demo", "--speed", "10", "--db", str(db),
         "--no-mqtt", "--duration", "6" if ignored else "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
        # Either way set in the child: a suite started under nohup hands SIGHUP down ignored.
        preexec_fn=lambda: signal.signal(
            signal.SIGHUP, signal.SIG_IGN if ignored else signal.SIG_DFL
        ),
    )  # fmt: skip
    assert proc.stdout is not None
    while b"session:" not in (line := proc.stdout.readline()):
        assert line, proc.communicate()[1].decode()
    time.sleep(1.5)  # some beats stored
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    with SessionStore.open(db) as store:
        (s,) = store.list_sessions()
    assert s.state == SessionState.STOPPED and s.n_beats > 0
    # Under nohup the run went on to its --duration: 6 s at 10x is ~60 s of session.
    assert (s.stopped_ms - s.started_ms) / 1000 * 10 > 50 if ignored else True


# A physiology value in a log line: a number next to bpm/ms/rr/hr/rmssd/settling.
PHYSIO = re.compile(
    r"(\b(hr|rr|rr_ms|rmssd|sdnn|settling|hr_bpm|bpm)\b[\s=:\"]*\[?-?\d)|(\d+(\.\d+)?\s*(bpm|ms)\b)",
    re.IGNORECASE,
)


def demo_stderr(tmp_path: Path, **extra: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", "demo", "--duration", "4", "--speed", "30",
         "--no-mqtt", "--db", str(tmp_path / "s.db")],
        capture_output=True, text=True, timeout=60, env=env(**extra),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "HR" in res.stdout  # the console shows the values to the user …
    return res.stderr  # … the log does not


def test_info_logs_carry_no_physiology_and_json_lines_parse(tmp_path: Path) -> None:
    text = demo_stderr(tmp_path)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert any("level=INFO" in ln and "session" in ln for ln in lines), text
    for ln in lines:
        assert ln.startswith("ts="), ln
        assert not PHYSIO.search(ln), f"physiology value logged at INFO: {ln}"

    text = demo_stderr(tmp_path, SETTLE_LOG_FORMAT="json")
    records = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    assert records and {"ts", "level", "logger", "msg"} <= set(records[0])
    assert {r["level"] for r in records} <= {"INFO", "WARNING", "ERROR"}
    assert not any(PHYSIO.search(r["msg"]) for r in records)


def test_log_format_is_validated(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", "sessions", "list", "--db", str(tmp_path / "s.db")],
        capture_output=True, text=True, timeout=30, env=env(SETTLE_LOG_FORMAT="xml"),
    )  # fmt: skip
    assert res.returncode == 2
    assert "log_format" in res.stderr and "Traceback" not in res.stderr


def test_formatters_quote_and_keep_extra_fields() -> None:
    import io
    import logging

    from settle.logging_setup import configure_logging

    buf = io.StringIO()
    handler = configure_logging("INFO", "text", stream=buf)
    try:
        logging.getLogger("settle.test").info(
            'session "x" = 1', extra={"fields": {"session": "abc", "n": 3}}
        )
        logging.getLogger("settle.test").debug("hidden")
        line = buf.getvalue().strip()
        assert 'msg="session \\"x\\" = 1"' in line and "session=abc n=3" in line
        assert "hidden" not in buf.getvalue()
        buf.truncate(0)
        buf.seek(0)
        configure_logging("INFO", "json", stream=buf)
        logging.getLogger("settle.test").warning("w", extra={"fields": {"k": [1, 2]}})
        rec = json.loads(buf.getvalue())
        assert rec["level"] == "WARNING" and rec["k"] == [1, 2] and rec["logger"] == "settle.test"
    finally:
        logging.getLogger().removeHandler(handler)
        for h in list(logging.getLogger().handlers):
            if h.get_name() == "settle-structured":
                logging.getLogger().removeHandler(h)


async def test_a_socket_closed_under_a_pending_callback_is_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At a broker outage aiomqtt can schedule add_writer for a socket paho has just closed:
    no ERROR with a traceback for the user, while any other callback error is still shown."""
    import logging
    import socket

    from settle.app import quiet_closed_socket_callbacks

    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    quiet_closed_socket_callbacks(loop)
    try:
        a, b = socket.socketpair()
        fd = a.fileno()
        a.close()
        b.close()
        with caplog.at_level(logging.DEBUG):
            loop.call_soon(loop.add_writer, fd, lambda: None)
            await asyncio.sleep(0.05)
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert any("socket closed before its callback ran" in r.message for r in caplog.records)

            def broken() -> None:
                raise RuntimeError("a real bug")

            loop.call_soon(broken)
            await asyncio.sleep(0.05)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "broken" in errors[0].getMessage()
    finally:
        loop.set_exception_handler(previous)
