"""The one exception root of Settle.

Every layer raises a subclass of :class:`SettleError` carrying its data as attributes
(``sensor_id``, ``reason`` …). Adapters translate third-party exceptions into these once,
at the boundary; the CLI turns any ``SettleError`` into one line on stderr, never a traceback.

This module imports nothing from the rest of the project, so every layer may import it.
"""

from __future__ import annotations


def shown(value: object, n: int = 40) -> str:
    """``value`` as a one-line error quotes it (``repr``), cut to about ``n`` characters: a
    file's bad cell or line may be megabytes long (one 5 MB line of digits was echoed whole)."""
    if isinstance(value, str):
        return repr(value if len(value) <= n else value[: n - 1] + "…")
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


class SettleError(Exception):
    """Root of every error Settle raises on purpose."""


class ConfigError(SettleError):
    """The configuration (file, environment or flags) is invalid.

    ``field`` is the dotted name of the offending setting (or the flag, ``--device``: then the
    message does not say "config: "), ``reason`` a short explanation.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        where = field if field.startswith("--") else f"config: {field}"
        super().__init__(f"{where}: {reason}")


class DecodeError(SettleError):
    """Bytes from a sensor could not be decoded.

    ``what`` names the wire format, ``reason`` says what is wrong, ``data`` holds the bytes.
    """

    def __init__(self, what: str, reason: str, data: bytes) -> None:
        self.what = what
        self.reason = reason
        self.data = bytes(data)
        super().__init__(f"{what}: {reason} (data={self.data.hex() or 'empty'})")


class SensorError(SettleError):
    """A strap could not be found, reached or streamed from."""

    def __init__(self, sensor_id: str, reason: str) -> None:
        self.sensor_id = sensor_id
        self.reason = reason
        super().__init__(f"{sensor_id}: {reason}")


class InputFileError(SettleError):
    """A file given by the user (recording, journal) cannot be read.

    ``path`` is the file, ``line`` the 1-based line number when one is to blame.
    """

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


class StoreError(SettleError):
    """The session store cannot be opened, read or written."""


class SessionNotFound(StoreError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no session matches {shown(ref)} (see `settle sessions list`)")
