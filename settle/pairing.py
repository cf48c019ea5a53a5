"""Remembered straps: the small state file ``settle pair`` writes and ``settle run`` reads.

JSON in the user config directory (``straps.json``, mode 0600, written atomically):
``{"v": 1, "straps": [{"label", "address", "name", "device_id", "paired_ms"}]}``. A label
names a strap in a group ("chest", "anna"); pairing the same address or label again replaces
that entry, a new one is added.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from settle.config import default_config_dir
from settle.errors import ConfigError


@dataclass(frozen=True, slots=True)
class PairedStrap:
    label: str
    address: str
    name: str
    device_id: str
    paired_ms: int


def paired_file() -> Path:
    env = os.environ.get("SETTLE_PAIRED_FILE")
    return Path(env) if env else default_config_dir() / "straps.json"


def load_paired(path: Path | None = None) -> list[PairedStrap]:
    p = path or paired_file()
    if not p.exists():
        return []
    try:
        raw = json.loads(p.read_text())
        return [PairedStrap(**item) for item in raw["straps"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            str(p), f"remembered straps file is unreadable ({exc}); re-pair or delete it"
        ) from None


def save_paired(straps: list[PairedStrap], path: Path | None = None) -> Path:
    p = path or paired_file()
    p.parent.mkdir(parents=True, exist_ok=True)
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


def remember(
    label: str, address: str, name: str, device_id: str, path: Path | None = None
) -> list[PairedStrap]:
    """Add or replace (same label or same address) and save; returns the new list."""
    entry = PairedStrap(label, address, name, device_id, int(time.time() * 1000))
    kept = [
        s for s in load_paired(path) if s.label != label and s.address.upper() != address.upper()
    ]
    straps = [*kept, entry]
    save_paired(straps, path)
    return straps


def forget(label_or_address: str, path: Path | None = None) -> PairedStrap | None:
    straps = load_paired(path)
    key = label_or_address.upper()
    gone = next((s for s in straps if key in (s.label.upper(), s.address.upper())), None)
    if gone is not None:
        save_paired([s for s in straps if s is not gone], path)
    return gone
