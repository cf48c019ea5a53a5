"""Home Assistant MQTT discovery for Settle's topics.

One HA device per strap, linked to a "Settle bridge" device (``via_device``); every entity is
available only while both the bridge (``<base>/bridge/state``) and the strap
(``<base>/<dev>/availability``) say ``online`` (``availability_mode: all``). Configs are
retained under ``<prefix>/<component>/<node>/<object>/config``; an empty retained payload on
the same topics removes the entities (:func:`removal_messages`). Keys follow Home Assistant's
MQTT discovery documentation (sensor, binary_sensor, button platforms); entity ids are
suggested with ``default_entity_id`` (``object_id`` was deprecated in Home Assistant 2025.10 and
removed in 2026.4). Pure functions, no I/O.

Values that are only current while something keeps arriving carry ``expire_after`` (Home
Assistant: "the number of seconds after the value expires if it's not updated. After expiry,
the sensor's state becomes unavailable"): the indices-based sensors, because indices stop when
a session stops while the strap stays connected (they froze at "Settling score 46, RMSSD
33.5 ms" until the next session), and heart rate and skin contact, because availability says
the strap is connected, not that it still notifies. Values the dashboard would not show read
unknown (the template renders ``None``): heart rate 0 (no skin contact), RMSSD, coherence,
score and trend while the rhythm is not usable.

The bridge's node id (topic) and entity id carry the topic base, so daemons with different
bases on one broker are distinct bridges in Home Assistant; the default base ``settle`` keeps
the plain ``settle_bridge`` (what earlier versions announced).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

BRIDGE_NODE = "settle_bridge"
DEFAULT_BASE = "settle"

CONTACT_TEMPLATE = (
    "{{ none if value_json is not defined or value_json.contact is none "
    "else ('ON' if value_json.contact else 'OFF') }}"
)
"""Skin contact: ``None`` (Home Assistant: unknown) when the strap cannot tell (null)."""
TRENDS = ("settling", "steady", "unsettling")
"""The trend sensor's states (an enum in Home Assistant)."""
TREND_TEMPLATE = (
    "{% set j = value_json if value_json is defined else {} %}"
    "{{ j.trend if j.usable | default(false) and j.settling | default(none) is not none"
    " and j.trend | default('unknown') in " + repr(list(TRENDS)) + " else none }}"
)
"""The trend, unknown unless there is a score it is the trend of: not while the rhythm is
unusable (the payload's trend still said "steady" then) nor during the baseline."""
INDICES_EXPIRY_INTERVALS = 3
"""An indices-based sensor expires (unavailable) after this many indices intervals without a
message: one or two late or lost messages are not a stopped session."""
BEAT_EXPIRE_S = 10.0
"""Heart rate and skin contact expire after this long without a beat message (a strap
notifies about once a second)."""


@dataclass(frozen=True, slots=True)
class DeviceDescription:
    device_id: str
    name: str
    model: str | None = None
    manufacturer: str | None = None
    firmware: str | None = None


def _origin(sw_version: str) -> dict[str, str]:
    return {"name": "Settle", "sw_version": sw_version}


def _availability(base: str, device_id: str | None) -> dict[str, Any]:
    topics = [{"topic": f"{base}/bridge/state"}]
    if device_id is not None:
        topics.append({"topic": f"{base}/{device_id}/availability"})
    return {"availability": topics, "availability_mode": "all"}


def base_scope(base: str) -> str:
    """What makes the ids of one topic base distinct from every other's: empty for the
    default base (what earlier versions announced), else the base as a slug — plus a short
    hash of the base when the slug is not the base itself, so ``lab/2``, ``lab_2``, ``lab-2``
    and ``Lab_2`` never share a node id, unique id or device identifier."""
    if base == DEFAULT_BASE:
        return ""
    slug = re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "base"
    if slug != base:
        slug += "_" + hashlib.sha1(base.encode()).hexdigest()[:6]
    return slug


def bridge_node(base: str) -> str:
    """The bridge's node id: ``settle_bridge``, plus the base's scope when it is not the
    default (``settle_bridge_lab`` for ``lab``, ``settle_bridge_lab_2_<hash>`` for ``lab/2``)."""
    scope = base_scope(base)
    return f"{BRIDGE_NODE}_{scope}" if scope else BRIDGE_NODE


def _bridge_id(base: str) -> str:
    """The bridge device's identifier (the default base keeps ``settle_bridge_settle``)."""
    return f"{BRIDGE_NODE}_{DEFAULT_BASE}" if base == DEFAULT_BASE else bridge_node(base)


def strap_node(base: str, device_id: str) -> str:
    """A strap's node id: the device id, scoped by the base when it is not the default, so
    the same strap (or the demo's fixed ids) under two daemons are two devices in Home
    Assistant instead of one overwriting the other."""
    scope = base_scope(base)
    return f"{scope}_{device_id}" if scope else device_id


def _guarded(expr: str) -> str:
    """A value template that renders ``None`` (Home Assistant: unknown) when the state
    topic was cleared (an empty retained message has no ``value_json``)."""
    return "{{ (" + expr + ") if value_json is defined else none }}"


def _if_usable(expr: str) -> str:
    """An indices value template that renders ``None`` (unknown) while the rhythm is not
    usable, as the dashboard blanks it (RMSSD read 80 ms on a run of premature beats)."""
    return _guarded("(" + expr + ") if value_json.usable | default(false) else none")


def _expire_s(seconds: float) -> int:
    # Home Assistant takes whole seconds (cv.positive_int truncates; 0 would mean never).
    return max(1, math.ceil(seconds))


def bridge_messages(prefix: str, base: str, sw_version: str) -> list[tuple[str, bytes]]:
    """The bridge device: one connectivity binary sensor on ``<base>/bridge/state``."""
    node = bridge_node(base)
    # No "name": Home Assistant names it from its device class, in the user's language.
    config = {
        "unique_id": f"{_bridge_id(base)}_state",
        "default_entity_id": f"binary_sensor.{node}_state",
        "state_topic": f"{base}/bridge/state",
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "device": {
            "identifiers": [_bridge_id(base)],
            "name": "Settle bridge" if base == DEFAULT_BASE else f"Settle bridge ({base})",
            "manufacturer": "Settle",
            "model": "Settle daemon",
            "sw_version": sw_version,
        },
        "origin": _origin(sw_version),
    }
    return [(f"{prefix}/binary_sensor/{node}/state/config", _dump(config))]


def device_messages(
    prefix: str,
    base: str,
    dev: DeviceDescription,
    sw_version: str,
    *,
    indices_every_s: float,
    time_scale: float = 1.0,
) -> list[tuple[str, bytes]]:
    """Every entity of one strap, as (retained topic, payload) pairs.

    ``indices_every_s`` is the configured indices interval (``processing.indices_every_s``,
    session seconds) and ``time_scale`` the session seconds per wall second (a replay slowed
    below 1x sends everything less often): together they set ``expire_after``, which Home
    Assistant counts in wall seconds."""
    wall = max(1.0, 1.0 / time_scale)  # wall seconds per session second, at least 1
    indices_expiry = {"expire_after": _expire_s(INDICES_EXPIRY_INTERVALS * indices_every_s * wall)}
    beat_expiry = {"expire_after": _expire_s(BEAT_EXPIRE_S * wall)}
    d = dev.device_id
    node = strap_node(base, d)
    t = f"{base}/{d}"
    device: dict[str, Any] = {
        "identifiers": [f"settle_{node}"],
        "name": dev.name or d,
        "model": dev.model or "Heart rate strap",
        "via_device": _bridge_id(base),
    }
    if dev.manufacturer:  # else left out: Home Assistant showed the word "unknown"
        device["manufacturer"] = dev.manufacturer
    if dev.firmware:
        device["sw_version"] = dev.firmware
    common = {**_availability(base, d), "device": device, "origin": _origin(sw_version)}
    # State topics are published at QoS 1; Home Assistant subscribes at 0 unless told.
    state = {"qos": 1}

    def sensor(
        obj: str, name: str | None, topic: str, template: str, **extra: Any
    ) -> tuple[str, bytes]:
        cfg = {
            **({"name": name} if name else {}),  # None: named from its device class
            "unique_id": f"settle_{node}_{obj}",
            "default_entity_id": f"sensor.settle_{node}_{obj}",
            "state_topic": topic,
            "value_template": template,
            **state,
            **extra,
            **common,
        }
        return f"{prefix}/sensor/{node}/{obj}/config", _dump(cfg)

    def binary(obj: str, name: str, topic: str, template: str, **extra: Any) -> tuple[str, bytes]:
        cfg = {
            "name": name,
            "unique_id": f"settle_{node}_{obj}",
            "default_entity_id": f"binary_sensor.settle_{node}_{obj}",
            "state_topic": topic,
            "value_template": template,
            "payload_on": "ON",
            "payload_off": "OFF",
            **state,
            **extra,
            **common,
        }
        return f"{prefix}/binary_sensor/{node}/{obj}/config", _dump(cfg)

    def button(obj: str, name: str, cmd: str, body: dict[str, Any], icon: str) -> tuple[str, bytes]:
        cfg = {
            "name": name,
            "unique_id": f"settle_{node}_{obj}",
            "default_entity_id": f"button.settle_{node}_{obj}",
            "command_topic": f"{t}/cmd/{cmd}",
            "payload_press": json.dumps({"v": 1, "id": f"ha-{obj}", **body}),
            "qos": 1,
            "retain": False,
            "icon": icon,
            **common,
        }
        return f"{prefix}/button/{node}/{obj}/config", _dump(cfg)

    measurement = {"state_class": "measurement"}

    def precision(digits: int) -> dict[str, Any]:
        # The payloads carry ~6 decimals (RMSSD 36.491407 ms): shown as the metric deserves.
        return {**measurement, "suggested_display_precision": digits}

    g = _guarded
    u = _if_usable
    return [
        # 0 is what a strap sends without skin contact: no heart rate, not 0 bpm in statistics.
        sensor("heart_rate", "Heart rate", f"{t}/beat",
               g("value_json.hr if value_json.hr else none"),
               unit_of_measurement="bpm", icon="mdi:heart-pulse", **beat_expiry, **precision(0)),
        sensor("rmssd", "RMSSD", f"{t}/indices", u("value_json.rmssd_ms"),
               unit_of_measurement="ms", icon="mdi:heart-flash", **indices_expiry, **precision(1)),
        sensor("settling", "Settling score", f"{t}/indices", u("value_json.settling"),
               icon="mdi:meditation", **indices_expiry, **precision(0)),
        # An enum: automations get the list of states; "unknown" (fewer than 6 block means) is
        # Home Assistant's own unknown.
        sensor("trend", "Settling trend", f"{t}/indices", TREND_TEMPLATE,
               icon="mdi:trending-down", device_class="enum", options=list(TRENDS),
               **indices_expiry),
        sensor("coherence", "Coherence", f"{t}/indices",
               u("value_json.coherence | default(none)"), icon="mdi:sine-wave",
               **indices_expiry, **precision(2)),
        # In per cent, as the dashboard shows it (the payload's 0–1 fraction read "0.22"); also
        # while the rhythm is unusable: it says how good the signal is either way.
        sensor("signal_quality", "Signal quality", f"{t}/indices",
               g("(value_json.quality * 100) if value_json.quality is defined"
                 " and value_json.quality is not none else none"),
               unit_of_measurement="%", icon="mdi:signal", entity_category="diagnostic",
               **indices_expiry, **precision(0)),
        sensor("battery", None, f"{t}/status", g("value_json.battery_pct"),
               unit_of_measurement="%", device_class="battery", entity_category="diagnostic",
               **measurement),
        sensor("rssi", None, f"{t}/status", g("value_json.rssi"),
               unit_of_measurement="dBm", device_class="signal_strength",
               entity_category="diagnostic", enabled_by_default=False, **measurement),
        binary("contact", "Skin contact", f"{t}/beat", CONTACT_TEMPLATE,
               icon="mdi:gesture-tap", **beat_expiry),
        binary("caught_up", "Caught up", f"{t}/session",
               # Of the running session: the stopped one's stays in the retained payload.
               g("'ON' if value_json.state == 'running'"
                 " and value_json.catching_up_t_s is not none else 'OFF'"),
               icon="mdi:check-circle-outline"),
        button("session_start", "Start session", "session/start", {}, "mdi:play"),
        button("session_stop", "Stop session", "session/stop", {}, "mdi:stop"),
        button("marker", "Mark moment", "marker",
               {"kind": "note", "text": "from Home Assistant"}, "mdi:map-marker"),
        # Catching up is timed from the latest hold start (as the dashboard's button).
        button("hold_start", "Hold start", "marker", {"kind": "hold-start"}, "mdi:flag"),
    ]  # fmt: skip


def removal_messages(prefix: str, base: str, device_id: str) -> list[str]:
    """The retained config topics to clear (empty payload) to remove a strap's entities."""
    dev = DeviceDescription(device_id, device_id)
    return [topic for topic, _ in device_messages(prefix, base, dev, "0", indices_every_s=5.0)]


def _dump(cfg: dict[str, Any]) -> bytes:
    return json.dumps(cfg, separators=(",", ":")).encode()
