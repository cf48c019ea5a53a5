"""How to reach the MQTT broker ``[mqtt]`` names: the daemon, ``settle doctor`` and the
one-shot command clients (``settle mark`` …) all connect through :func:`connect_options`.

Kept apart from :mod:`settle.app` so the command clients can use it without importing the
daemon (about 1.8 s of imports on a small machine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from feedback.mqtt import ConnectOptions
from settle.config import Settings

if TYPE_CHECKING:
    from settle.daemon import BrokerChoice

__all__ = ["connect_options"]


def connect_options(
    settings: Settings, broker: BrokerChoice | None = None, *, one_shot: bool = False
) -> ConnectOptions:
    """How to reach the broker: the embedded one is plain MQTT 3.1.1 on loopback; otherwise
    host, port, login and TLS from ``[mqtt]``. ``one_shot``: a command client, always MQTT
    3.1.1 (it needs nothing of 5, and the embedded broker speaks only 3.1.1)."""
    m = settings.mqtt
    if broker is not None and broker.embedded:
        return ConnectOptions(broker.host, broker.port)
    host, port = (broker.host, broker.port) if broker else (m.host or "127.0.0.1", m.port)
    return ConnectOptions(
        host,
        port,
        username=m.username or None,
        password=m.password_value(),
        tls=m.tls,
        ca_file=str(m.ca_file) if m.ca_file else None,
        cert_file=str(m.cert_file) if m.cert_file else None,
        key_file=str(m.key_file) if m.key_file else None,
        tls_insecure=m.tls_insecure,
        mqtt5=m.protocol == "5" and not one_shot,
    )
