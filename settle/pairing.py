"""Remembered straps: the small state file ``settle pair`` writes and ``settle run`` reads.

JSON in the user config directory (``straps.json``, mode 0600, written atomically):
``{"v": 1, "straps": [{"label", "address", "name", "device_id", "paired_ms"}]}``. A label
names a strap in a group ("chest", "anna"; any case: "Anna" is the same label) and is what
``--device`` of ``settle mark`` / ``session`` / ``baseline`` accepts besides the device id;
pairing the same address or label again replaces that entry, a new one is added.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from settle.config import default_config_dir
from settle.errors import ConfigError, shown


@dataclass(frozen=True, slots=True)
class PairedStrap:
    label: str
    address: str
    name: str
    device_id: str
    paired_ms: int


def is_virtual(strap: PairedStrap) -> bool:
    """A virtual strap (``settle pair --virtual``, the demo's Pair page): its label works in
    ``settle demo``, but ``settle run`` could never reach it."""
    from sensors.virtual.air import PERIPHERAL_ADDRESS_PREFIX

    return strap.address.upper().startswith(PERIPHERAL_ADDRESS_PREFIX + ":")


def paired_file() -> Path:
    env = os.environ.get("SETTLE_PAIRED_FILE")
    return Path(env) if env else default_config_dir() / "straps.json"


def load_paired(path: Path | None = None) -> list[PairedStrap]:
    p = path or paired_file()
    if not p.exists():
        return []
    try:
        return _parse_paired(json.loads(p.read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            str(p), f"remembered straps file is unreadable ({exc}); re-pair or delete it"
        ) from None


_FIELDS: dict[str, type] = {
    "label": str, "address": str, "name": str, "device_id": str, "paired_ms": int,
}  # fmt: skip


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {str: "text", int: "a number", float: "a number", list: "a list", dict: "an object"}[
        type(value)
    ]


def _parse_paired(raw: object) -> list[PairedStrap]:
    """The straps of a parsed straps file; ValueError naming the first thing wrong (a file
    edited by hand: a null label crashed every command that reads it)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("straps"), list):
        raise ValueError('not {"v": 1, "straps": [...]}')
    out = []
    for n, item in enumerate(raw["straps"], start=1):
        if not isinstance(item, dict):
            raise ValueError(f"strap {n} is {_json_kind(item)}, not an object")
        missing = [k for k in _FIELDS if k not in item]
        extra = sorted(k for k in item if k not in _FIELDS)
        if missing or extra:
            what = f"lacks {missing[0]!r}" if missing else f"has an unknown field {shown(extra[0])}"
            raise ValueError(f"strap {n} {what}")
        if isinstance(item["paired_ms"], float) and item["paired_ms"].is_integer():
            item = {**item, "paired_ms": int(item["paired_ms"])}  # 1795960988159.0, by hand
        for k, kind in _FIELDS.items():
            v = item[k]
            if not isinstance(v, kind) or isinstance(v, bool):
                want = "text" if kind is str else "a whole number"
                raise ValueError(f"strap {n}: {k} is {_json_kind(v)}, not {want}")
        out.append(PairedStrap(**item))
    return out


def save_paired(straps: list[PairedStrap], path: Path | None = None) -> Path:
    p = path or paired_file()
    # 0700 where it creates it: the config directory also holds the dashboard token.
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps({"v": 1, "straps": [asdict(s) for s in straps]}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".straps-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


_ADDRESS = re.compile(
    r"(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}"  # a Bluetooth address (Linux, Windows)
    r"|[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}"  # CoreBluetooth's UUID (macOS)
)
_DEVICE_ID = re.compile(r"[a-z0-9_]{1,64}")
MAX_LABEL_CHARS = 64


class PairingError(ConfigError):
    """A strap to remember with a bad label, address or device id (nothing is saved)."""


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a strap's label (empty, too long, a control character), or
    None: what :func:`check_strap` refuses, for ``settle pair --label`` to say before it
    scans."""
    if not label or len(label) > MAX_LABEL_CHARS or not label.isprintable():
        return f"1–{MAX_LABEL_CHARS} printable characters, got {shown(label)}"
    return None


def check_strap(label: str, address: str, name: str, device_id: str) -> None:
    """Refuse what ``settle run`` could not use: a label that is empty, too long or holds
    control characters, an address that is neither a Bluetooth address nor a macOS UUID,
    a device id that is not topic-safe ``[a-z0-9_]`` (it names MQTT topics and Home
    Assistant entities). :class:`PairingError`."""
    problem = label_problem(label)
    if problem is not None:
        raise PairingError("label", problem)
    if not _ADDRESS.fullmatch(address):
        raise PairingError("address", f"not a Bluetooth address or UUID: {shown(address)}")
    if len(name) > 248 or not name.isprintable():  # 248: the longest BLE device name
        raise PairingError("name", f"not a strap name: {shown(name)}")
    if not _DEVICE_ID.fullmatch(device_id):
        raise PairingError(
            "device_id", f"lower-case letters, digits and _ only: {shown(device_id)}"
        )


def device_for_label(name: str, path: Path | None = None) -> str:
    """``--device`` may name a strap by the label it was paired under (``settle pair --label
    anna``, any case): its device id; anything else (a device id) as given.

    A straps file written before labels were one whatever their case can hold "Anna" and
    "anna" for two straps: the label as typed picks its own; another case of it names both
    and is refused (:class:`ConfigError`) — the first in the file took the markers of the
    other person's strap."""
    try:
        paired = load_paired(path)
    except (ConfigError, OSError):
        return name
    found = [p for p in paired if p.label.casefold() == name.casefold() and p.device_id]
    exact = [p for p in found if p.label == name]
    if exact:
        return exact[0].device_id
    if len({p.device_id for p in found}) > 1:
        both = ", ".join(f"{p.label!r} ({p.device_id}, {p.address})" for p in found)
        raise ConfigError(
            "--device",
            f"{shown(name)} names two remembered straps: {both}; type the label as remembered or "
            "its device id, or forget one by its address (`settle pair --forget ADDRESS`)",
        )
    return found[0].device_id if found else name


def remember(
    label: str, address: str, name: str, device_id: str, path: Path | None = None
) -> list[PairedStrap]:
    """Add or replace (same label or same address) and save; returns the new list.
    :class:`PairingError` (nothing saved) for what :func:`check_strap` refuses."""
    check_strap(label, address, name, device_id)
    entry = PairedStrap(label, address, name, device_id, int(time.time() * 1000))
    kept = [
        s
        for s in load_paired(path)
        if s.label.casefold() != label.casefold() and s.address.upper() != address.upper()
    ]
    straps = [*kept, entry]
    save_paired(straps, path)
    return straps


def displaced(label: str, address: str, path: Path | None = None) -> list[PairedStrap]:
    """The entries :func:`remember` with this label and address would replace (same label
    for another strap, or the same strap under another label); not the one it refreshes."""
    return [
        s
        for s in load_paired(path)
        if (s.label.casefold() == label.casefold()) != (s.address.upper() == address.upper())
    ]


def displaced_words(gone: PairedStrap, label: str) -> str:
    """One sentence for a user about an entry :func:`remember` replaced."""
    if gone.label.casefold() == label.casefold():
        return (
            f"{gone.label!r} was {gone.name or 'a strap'} ({gone.address}) until now; "
            "it now means this strap."
        )
    return f"This strap was remembered as {gone.label!r}; that label is gone (one label per strap)."


def forget(label_or_address: str, path: Path | None = None) -> PairedStrap | None:
    straps = load_paired(path)
    key = label_or_address.upper()
    gone = next((s for s in straps if key in (s.label.upper(), s.address.upper())), None)
    if gone is not None:
        save_paired([s for s in straps if s is not gone], path)
    return gone
