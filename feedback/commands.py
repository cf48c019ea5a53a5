"""The envelope of a command: what can be judged from its name, retain flag and bytes alone,
before anything decodes it for real (docs/mqtt.md, "Commands").

The checks run in the daemon's order — retained, too large, nested too deeply, not JSON, a
key given twice, an unknown command, an id that is not a string — and each failure is one
error result that echoes the command's id (``null`` when it has none, or two). Two rules
keep every failure a result rather than an exception:

* the size is judged before the payload is parsed;
* nesting is counted by a linear scan before ``json.loads`` sees the payload. CPython's JSON
  scanner recurses once per ``[`` or ``{`` and raises RecursionError near 1000 levels: 3 kB of
  brackets, well under the size limit. No command nests deeper than 2 levels
  (``{"intention": {…}}``), so anything deeper than :data:`MAX_COMMAND_DEPTH` is refused.

What the payload means (which device, which fields) is the handler's business
(``settle.daemon.Daemon.on_command``); :func:`screen_command` only guarantees that what it
lets through decodes safely, and that what it refuses still names the id it was sent with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from feedback.payloads import COMMANDS

MAX_COMMAND_BYTES = 4096
"""Largest command payload (UTF-8 bytes) the daemon accepts."""
MAX_COMMAND_DEPTH = 32
"""Deepest nesting of arrays and objects in a command payload (a valid one has 2)."""
ID_ECHO_BYTES = 16 * MAX_COMMAND_BYTES
"""A payload up to this size is parsed for its id even when it is refused as too large."""
MAX_ID_CHARS = 64
"""The longest ``id`` a command may carry (``feedback.payloads._Command.id``)."""

# A JSON string (possessive: linear even when it is never closed) or a bracket. Strings are
# matched so that the brackets inside them are not counted.
_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)


class CommandDecodeError(ValueError):
    """A payload that cannot be decoded as a command; ``str()`` is the error result's text."""


@dataclass(frozen=True, slots=True)
class Screened:
    """What :func:`screen_command` found: the id to echo, and why the command is refused
    (``None``: hand it to the handler)."""

    id: str | None
    error: str | None = None


def _shallow(text: str, max_depth: int) -> tuple[str, bool]:
    """``text`` with every array or object nested deeper than ``max_depth`` replaced by
    ``null``, and whether any was. ``json.loads`` of the result never nests deeper than
    ``max_depth``, whatever ``text`` is (the scan knows JSON strings and escapes)."""
    depth = 0
    cut_from = -1
    pieces: list[str] = []
    kept_to = 0
    for m in _TOKEN.finditer(text):
        c = text[m.start()]
        if c == '"':
            continue
        if c in "[{":
            depth += 1
            if depth == max_depth + 1:
                cut_from = m.start()
        else:
            if depth == max_depth + 1 and cut_from >= 0:
                pieces += [text[kept_to:cut_from], "null"]
                kept_to, cut_from = m.end(), -1
            # A stray closing bracket ends the document for the decoder (which then fails):
            # never below 0, so what follows it is counted from the top again.
            depth = max(depth - 1, 0)
    if cut_from >= 0:  # never closed
        pieces += [text[kept_to:cut_from], "null"]
        kept_to = len(text)
    if not pieces:
        return text, False
    pieces.append(text[kept_to:])
    return "".join(pieces), True


def decode_json(
    payload: bytes, max_depth: int = MAX_COMMAND_DEPTH, *, unique_keys: bool = False
) -> Any:
    """``json.loads(payload)`` that never raises anything but :class:`CommandDecodeError`:
    not JSON (bad UTF-8 included), or nested deeper than ``max_depth``; with
    ``unique_keys``, also an object that repeats a key (as commands over MQTT are judged)."""
    value, duplicate = _decode(payload, max_depth)
    if unique_keys and duplicate is not None:
        raise CommandDecodeError(f"key {duplicate!r} appears twice")
    return value


class _NotAJsonNumber(ValueError):
    pass


def _not_a_json_number(name: str) -> object:
    """``json.loads`` takes NaN, Infinity and -Infinity, which JSON does not have (an id of
    NaN was echoed as "NaN")."""
    raise _NotAJsonNumber(f"{name} is not a JSON number")


def _decode(payload: bytes, max_depth: int) -> tuple[Any, str | None]:
    """The decoded payload and the first key an object in it repeats (json.loads silently
    keeps the last value), or None."""
    try:
        # As json.loads(bytes) does: UTF-8, -16 or -32, told apart by the first bytes.
        text = payload.decode(json.detect_encoding(payload), "surrogatepass")
    except UnicodeDecodeError:
        raise CommandDecodeError("payload is not valid JSON") from None
    text, cut = _shallow(text, max_depth)
    if cut:
        raise CommandDecodeError(f"payload is nested more than {max_depth} levels deep")
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        keys = [k for k, _ in items]
        if not duplicates and len(set(keys)) != len(keys):
            duplicates.append(next(k for i, k in enumerate(keys) if k in keys[:i]))
        return dict(items)

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=_not_a_json_number)
    except _NotAJsonNumber as e:
        raise CommandDecodeError(f"payload is not valid JSON ({e})") from None
    except (ValueError, RecursionError):  # RecursionError: cannot happen after _shallow
        raise CommandDecodeError("payload is not valid JSON") from None
    if _LONE_SURROGATE.search(text) and _has_lone_surrogate(value):
        # "\ud800" (half of an emoji, as JSON.stringify writes a cut string) or its raw bytes:
        # no text, and it could not be stored or sent on (a 500 and a traceback per request).
        raise CommandDecodeError("payload holds a lone surrogate (half a character): not text")
    return value, duplicates[0] if duplicates else None


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")
"""A surrogate in the text, or a JSON escape of one: the cheap test before the walk."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers which of its keys it was given more than once
    (``json.loads`` keeps the last value silently)."""

    repeated: frozenset[str] = frozenset()


def _object(items: list[tuple[str, Any]]) -> _Object:
    obj = _Object(items)
    if len(obj) != len(items):
        seen: set[str] = set()
        repeated: set[str] = set()
        for k, _ in items:
            (repeated if k in seen else seen).add(k)
        obj.repeated = frozenset(repeated)
    return obj


class _NumberText(str):
    """A JSON number kept as the text it was sent as (``1e400`` is no float: read as one it
    was echoed as ``"Infinity"``)."""


def _id_of(payload: bytes) -> str | None:
    """The ``id`` to echo in the result: a string as sent (at most 64 characters), a number
    as its JSON text as sent (``42`` → ``"42"``, ``1e400`` → ``"1e400"``: the sender can
    still match it); else None — also
    when the payload gives ``id`` twice: the refusal would be attributed to one of two ids,
    chosen by nobody (``json.loads`` keeps the last). Found even in a payload too deeply
    nested to accept (its deep parts are skipped)."""
    if len(payload) > ID_ECHO_BYTES:
        return None
    try:
        text = payload.decode(json.detect_encoding(payload), "surrogatepass")
        raw = json.loads(
            _shallow(text, MAX_COMMAND_DEPTH)[0],
            object_pairs_hook=_object,
            parse_constant=_not_a_json_number,
            parse_float=_NumberText,
            parse_int=_NumberText,
        )
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, _Object) or "id" in raw.repeated:
        return None
    value = raw.get("id")
    if isinstance(value, _NumberText):
        return str(value)[:MAX_ID_CHARS]
    if isinstance(value, str):
        # A lone surrogate (half an emoji, "\ud800") is no text a result can carry: echoed,
        # its serialisation raised in the link and ended it for good.
        return _SURROGATE.sub("\ufffd", value[:MAX_ID_CHARS])
    return None


def screen_nameless(topic: str, payload: bytes) -> Screened:
    """The refusal of a command sent to ``<base>/<dev>/cmd`` itself, with no name after it
    (answered on ``<base>/<dev>/cmd/result``: its sender still gets one result)."""
    why = f"no command name: publish to {topic}/<name> (known: {', '.join(COMMANDS)})"
    return Screened(_id_of(payload), why)


def screen_command(name: str, payload: bytes, retained: bool) -> Screened:
    """The envelope checks of ``<base>/<dev>/cmd/<name>``, in the order the daemon applies
    them. An empty retained payload (someone clearing a stale retained command) passes: the
    handler ignores it without an answer."""
    if retained and not payload:
        return Screened(None)
    cmd_id = _id_of(payload)

    def refuse(error: str) -> Screened:
        return Screened(cmd_id, error)

    if retained:  # it would replay on every reconnect
        return refuse("retained command ignored (publish commands without the retain flag)")
    if len(payload) > MAX_COMMAND_BYTES:
        return refuse(f"command too large ({len(payload)} bytes > {MAX_COMMAND_BYTES})")
    try:
        raw, duplicate = _decode(payload, MAX_COMMAND_DEPTH)
    except CommandDecodeError as exc:
        return refuse(str(exc))
    if duplicate is not None:  # which of the two values was meant?
        said = " (this result echoes neither)" if duplicate == "id" and cmd_id is None else ""
        return refuse(f"key {duplicate!r} appears twice{said}")
    if name not in COMMANDS:
        return refuse(f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
    sent_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(sent_id, int | float) and not isinstance(sent_id, bool):
        # Ids are strings (docs/asyncapi.yaml); the echo above still lets the sender match.
        return refuse(f'id: Input should be a valid string (send "{cmd_id}", not {cmd_id})')
    return Screened(cmd_id)
