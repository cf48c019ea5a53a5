"""Which control characters a text may hold: one rule for every way text gets in (MQTT and
HTTP payloads, ``settle log set``, journal import), and how long a session's notes may grow.
Imports nothing else of the project, so every layer may use it.
"""

from __future__ import annotations

import re

__all__ = ["NOTES_APPEND_MAX_CHARS", "NOTES_MAX_CHARS", "control_character", "marker_kind_name"]

NOTES_APPEND_MAX_CHARS = 10_000
"""Characters one append to a session's notes may add (``settle log set --notes``; the store
refuses more, :meth:`sessions.store.SessionStore.append_notes`): five times a marker's text
(2000, over MQTT, the dashboard and ``log import``), a page or two of prose."""
NOTES_MAX_CHARS = 100_000
"""Characters of notes a session keeps in all (the blank lines between appends counted; the
store refuses more): notes are read with every session (``sessions list``, History) and
copied into its report and JSON export, so appending cannot grow them without bound."""

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


def marker_kind_name(word: str) -> str:
    """A marker kind as a person writes it — any case, a space or ``_`` for the hyphen, spaces
    around it (``Shame``, ``HOLD START``, ``hold_start``) — as its canonical name
    (``shame``, ``hold-start``): one reading for ``settle mark --kind`` and a journal's
    ``Shame:`` (``--kind Shame`` was refused while the journal took it)."""
    return re.sub(r"[\s_-]+", "-", word.strip().lower())
