"""Finding a broker: probe 127.0.0.1:1883, or run an embedded amqtt broker on loopback.

The embedded broker exists so that ``settle demo`` works on a machine with no MQTT broker.
It listens on 127.0.0.1 only (never on other interfaces: health data stays local), speaks
MQTT 3.1.1 only, keeps retained messages in memory, and allows anonymous clients — which is
why it must never listen beyond loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from types import TracebackType

from settle.errors import SettleError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class BrokerError(SettleError):
    """An MQTT broker could not be reached or started."""


async def probe(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections at ``host:port`` within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def free_loopback_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _port_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


class EmbeddedBroker:
    """An amqtt broker on ``127.0.0.1:port`` for the lifetime of an ``async with`` block.

    ``port=0`` takes ``preferred`` (the configured ``mqtt.port``, 1883 by default) when it
    is free — where ``settle mark`` and ``mosquitto_sub`` look — else any free port. The port
    in use is in :attr:`port` once started.
    """

    def __init__(self, port: int = 0, preferred: int = 1883) -> None:
        self.host = LOOPBACK
        self.port = port
        self.preferred = preferred
        self._broker: object | None = None

    async def __aenter__(self) -> EmbeddedBroker:
        # Imported here: amqtt is heavy and only needed when no broker exists.
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if self.port == 0:
            good = 0 < self.preferred < 65536 and _port_bindable(self.preferred)
            self.port = self.preferred if good else free_loopback_port()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{self.port}"}},
            # Only anonymous auth: no $SYS publisher, no packet logger (it would log payloads).
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as exc:  # amqtt raises its own and OSError subclasses
            raise BrokerError(
                f"could not start the embedded MQTT broker on {LOOPBACK}:{self.port}: {exc}"
            ) from exc
        self._broker = broker
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s:%d", LOOPBACK, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            with contextlib.suppress(Exception):
                await broker.shutdown()  # type: ignore[attr-defined]
