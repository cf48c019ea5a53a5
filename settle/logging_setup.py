"""Structured logs on stderr: ``key=value`` text or one JSON object per line.

``log_format = "text"`` (default) prints ``ts=… level=INFO logger=settle.daemon msg="…"``;
``"json"`` prints ``{"ts": …, "level": …, "logger": …, "msg": …}`` — one object per line, for
journald/Loki/jq. Extra fields passed as ``log.info(..., extra={"fields": {...}})`` are added
as keys.

Policy (STYLE.md principle 15): INFO is the default; physiology values (HR, RR, indices)
are health data and are logged at DEBUG only. ``tests/test_operations.py`` checks a demo
run's INFO output for them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any, Literal

LogFormat = Literal["text", "json"]

_HANDLER_NAME = "settle-structured"


def _iso(created: float) -> str:
    t = time.gmtime(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(created % 1 * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": _iso(record.created),
        "level": record.levelname,
        "logger": record.name,
        "msg": record.getMessage(),
    }
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        out.update({str(k): v for k, v in extra.items() if k not in out})
    if record.exc_info and record.exc_info[0] is not None:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises on an odd value (``str()`` of it instead)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``key=value`` pairs (logfmt); values with spaces, quotes or ``=`` are quoted."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_quote(v)}" for k, v in _fields(record).items())


def _quote(value: Any) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=str)
    if s and not any(c in s for c in ' "=\n\t\\'):
        return s
    return json.dumps(s, ensure_ascii=False)


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Install (or replace) Settle's one handler on the root logger; returns it.

    Idempotent: calling it again (e.g. a second command in the same process, or a test)
    replaces the handler rather than adding another.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == _HANDLER_NAME:
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party libraries chat at INFO about every connection; keep them at WARNING
    # unless the user asked for DEBUG.
    if level != "DEBUG":
        for name in ("bumble", "amqtt", "transitions", "bleak"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return handler
