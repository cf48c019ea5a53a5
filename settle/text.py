"""Which control characters a text may hold: one rule for every way text gets in (MQTT and
HTTP payloads, ``settle log set``, journal import). Imports nothing else of the project, so
every layer may use it.
"""

from __future__ import annotations

import re

__all__ = ["control_character"]

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
"""Control characters but tab and line breaks (CR, LF): a NUL or an escape sequence in a
marker's text went verbatim into the CSV export and the report. C1 controls too (U+0080–U+009F:
U+009B is a terminal's escape, U+0085 a line break to Python's ``splitlines``), and the
Unicode line and paragraph separators, which split a line in some viewers and not others."""


def control_character(text: str, *, lines: bool) -> str | None:
    """The first control character in ``text`` (with ``lines``, tab and line breaks are
    allowed), or None."""
    bad = _CONTROL.search(text) or (None if lines else re.search("[\t\n\r]", text))
    return None if bad is None else bad.group()
