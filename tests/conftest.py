"""Shared fixtures: private mosquitto brokers on free loopback ports, an embedded amqtt broker.

Every broker a test starts binds 127.0.0.1 only and is stopped by the fixture. Under
``CI=true`` a missing ``mosquitto`` binary fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from feedback.broker import EmbeddedBroker, free_loopback_port

DATA = Path(__file__).parent / "data"

# Only the dashboard tests serve HTTP (on free ports): no other test (nor the `settle`
# subprocesses they start, which inherit this) may take 127.0.0.1:8765.
os.environ["SETTLE_HTTP__ENABLED"] = "false"


def _mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class Mosquitto:
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    conf: Path
    binary: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def start(self) -> None:
        """(Re)start on the same port: for broker-restart tests."""
        self.proc = _spawn(self.binary, self.conf, self.port)


def _spawn(binary: str, conf: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"mosquitto exited at start: {err.strip()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("mosquitto did not start listening within 10 s")


def need_mosquitto() -> str:
    """The mosquitto binary; without one the test is skipped, or fails under ``CI=true``."""
    binary = _mosquitto_binary()
    if binary is None:
        message = "mosquitto binary not found (Debian: apt-get install mosquitto)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def start_mosquitto(tmp_path: Path, extra_conf: str = "", anonymous: bool = True) -> Mosquitto:
    binary = need_mosquitto()
    port = free_loopback_port()
    conf = tmp_path / f"mosquitto-{port}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"allow_anonymous {'true' if anonymous else 'false'}\n"
        # Started as root, mosquitto would switch to user "mosquitto" and could no longer read
        # the test's password/ACL files; as any other user this line has no effect.
        f"user {getpass.getuser()}\n"
        "persistence false\n"
        "log_dest stderr\n"
        "log_type error\n" + extra_conf
    )
    return Mosquitto("127.0.0.1", port, _spawn(binary, conf, port), conf, binary)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = start_mosquitto(tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def amqtt_broker() -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(free_loopback_port()) as broker:
        yield broker


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[None]:
    """Read-only for this process: mode 0500, or the immutable flag when running as root
    (root ignores modes)."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield
        finally:
            path.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root and cannot set the immutable flag here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def dev_dependency(name: str) -> Any:
    """Import ``name``, a dependency of the ``dev`` extra (a reference library a test checks
    against): without it the test is skipped, or fails under ``CI=true``, where a check
    that silently did not run would read as passed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is not installed (`pip install -e '.[dev]'`)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    """A fresh session store in ``tmp_path`` (``s.db``); a test file may define its own."""
    from sessions.store import SessionStore

    with SessionStore.open(tmp_path / "s.db") as s:
        yield s


@pytest.fixture
def dashboard(store: Any) -> Callable[..., contextlib.AbstractAsyncContextManager[Any]]:
    """``async with dashboard(hub, control, token=…) as d:`` — a dashboard on a free port of
    127.0.0.1 over the test's ``store``, with its own hub and a
    :class:`feedback.dashboard.NoDaemon` unless given; keyword arguments go to its
    ``DashboardConfig``."""
    from feedback.dashboard import Dashboard, DashboardConfig, Hub, NoDaemon

    @contextlib.asynccontextmanager
    async def serve(
        hub: Hub | None = None, control: Any = None, **config: Any
    ) -> AsyncIterator[Dashboard]:
        cfg = DashboardConfig(host="127.0.0.1", port=0, **config)
        async with Dashboard(hub or Hub("settle"), control or NoDaemon(), store, cfg) as d:
            yield d

    return serve


# -- a daemon recording one virtual strap (test_faults, test_reconnect, test_strap_health) --------


def strap_client(
    air: Any, strap: Any, clock: Callable[[], float] = time.time, scan_timeout_s: float = 3.0
) -> Any:
    """A :class:`sensors.strap.StrapClient` for a virtual ``strap`` on ``air`` (a
    ``VirtualAir``): connects within 5 s; ``clock``: the host's wall clock."""
    from sensors.strap import StrapClient

    return StrapClient(
        address=strap.address,
        scan_timeout_s=scan_timeout_s,
        connect_timeout_s=5,
        scanner_kwargs=air.scanner_kwargs(),
        client_kwargs=air.client_kwargs(),
        clock=clock,
    )


@contextlib.asynccontextmanager
async def model_daemon(
    tmp_path: Path,
    *,
    seed: int,
    speed: float = 20.0,
    tap: Callable[[str, bytes | str, bool], None] | None = None,
    clock: Callable[[], float] = time.time,
    processing: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[Any, Any, Any, Any]]:
    """A daemon (no MQTT, store ``tmp_path / "s.db"``) recording one virtual strap that plays
    the physiological model at ``speed``: yields ``(daemon, store, strap, run task)``. Stop it
    with ``daemon.stop()`` and await the task while the store is open; whatever the test
    left running is stopped on the way out. ``clock``: the host's wall clock, for the daemon
    and the strap client alike; ``processing``: ``[processing]`` settings over the project's
    config. (Types: ``Daemon``, ``SessionStore``, ``VirtualStrap``, ``asyncio.Task[None]``.)"""
    import asyncio

    from sensors.virtual.air import VirtualAir
    from sensors.virtual.model import ModelParams, PhysioModel
    from sensors.virtual.strap import VirtualStrap
    from sessions.store import SessionStore
    from settle.config import load_config
    from settle.daemon import Daemon

    settings = load_config(
        Path(__file__).parents[1] / "configs" / "settle.toml",
        mqtt={"enabled": False},
        storage={"db_path": tmp_path / "s.db"},
        homeassistant={"enabled": False},
        **({"processing": processing} if processing else {}),
    )
    async with VirtualAir() as air:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=seed), speed=speed)
        await strap.start()
        client = strap_client(air, strap, clock, scan_timeout_s=5)
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(settings, store, [client], clock=clock, time_scale=speed, tap=tap)
            task = asyncio.create_task(daemon.run())
            try:
                yield daemon, store, strap, task
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 10)
        await strap.stop()
