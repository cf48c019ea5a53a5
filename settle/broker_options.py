"""How to reach the MQTT broker ``[mqtt]`` names: the daemon, ``settle doctor`` and the
one-shot command clients (``settle mark`` …) all connect through :func:`connect_options`.

Kept apart from :mod:`settle.app` so the command clients can use it without importing the
daemon (about 1.8 s of imports on a small machine).
"""

from __future__ import annotations

import re
import ssl
from typing import TYPE_CHECKING

from feedback.mqtt import ConnectOptions
from settle.config import Settings
from settle.errors import ConfigError

if TYPE_CHECKING:
    from settle.daemon import BrokerChoice

__all__ = ["check_tls_files", "connect_options"]


def connect_options(
    settings: Settings, broker: BrokerChoice | None = None, *, one_shot: bool = False
) -> ConnectOptions:
    """How to reach the broker: the embedded one is plain MQTT 3.1.1 on loopback; otherwise
    host, port, login and TLS from ``[mqtt]``. ``one_shot``: a command client, always MQTT
    3.1.1 (it needs nothing of 5, and the embedded broker speaks only 3.1.1).

    Raises :class:`ConfigError` for a password file that cannot be used and for TLS files
    that are not what their setting names (:func:`check_tls_files`): found here, before
    anything starts, not at the first connect (a CA file that is no certificate let
    ``settle demo`` record a whole session with MQTT broken, then fail as if its output
    could not be written)."""
    m = settings.mqtt
    if broker is not None and broker.embedded:
        return ConnectOptions(broker.host, broker.port)
    host, port = (broker.host, broker.port) if broker else (m.host or "127.0.0.1", m.port)
    options = ConnectOptions(
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
    check_tls_files(options)
    return options


def check_tls_files(options: ConnectOptions) -> None:
    """Build the TLS context ``options`` describe; a file that is not usable is a
    :class:`ConfigError` naming its setting and the file."""
    if not options.tls:
        return
    try:
        ctx = ssl.create_default_context(cafile=options.ca_file)
    except (ssl.SSLError, OSError) as exc:
        if options.ca_file is None:  # the system's trusted CAs
            why = f"cannot load the system's CA certificates ({_why(exc)})"
            raise ConfigError("mqtt.tls", why) from None
        raise ConfigError(
            "mqtt.ca_file", f"{options.ca_file}: not a usable CA certificate file ({_why(exc)})"
        ) from None
    if not options.cert_file:
        return
    try:
        ctx.load_cert_chain(options.cert_file, options.key_file)
    except (ssl.SSLError, OSError) as exc:
        # Which file: one that holds no certificate is the certificate's; else the key.
        try:
            ssl.create_default_context(cafile=options.cert_file)
        except (ssl.SSLError, OSError):
            raise ConfigError(
                "mqtt.cert_file",
                f"{options.cert_file}: not a usable client certificate ({_why(exc)})",
            ) from None
        key = options.key_file or options.cert_file
        raise ConfigError(
            "mqtt.key_file",
            f"{key}: not a usable private key for {options.cert_file} ({_why(exc)})",
        ) from None


def _why(exc: OSError) -> str:
    """An SSL or OS error in a few words (``X509: NO_CERTIFICATE_OR_CRL_FOUND``)."""
    if isinstance(exc, ssl.SSLError) and exc.library and exc.reason:
        return f"{exc.library}: {exc.reason}"
    text = exc.strerror or str(exc) or type(exc).__name__
    return re.sub(r"^\[(\w+)\] (.*?)(?: \(_ssl\.c:\d+\))?$", r"\1: \2", text)
