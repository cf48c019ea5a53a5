"""Home Assistant MQTT discovery for Settle's topics.

One HA device per strap, linked to a "Settle bridge" device (``via_device``); every entity is
available only while both the bridge (``<base>/bridge/state``) and the strap
(``<base>/<dev>/availability``) say ``online`` (``availability_mode: all``). Configs are
retained under ``<prefix>/<component>/<node>/<object>/config``; an empty retained payload on
the same topics removes the entities (:func:`removal_messages`). Keys follow Home Assistant's
MQTT discovery documentation (sensor, binary_sensor, button platforms); entity ids are
suggested with ``default_entity_id`` (``object_id`` was deprecated in Home Assistant 2025.10 and
removed in 2026.4). Pure functions, no I/O.

The bridge's node id (topic) and entity id carry the topic base, so daemons with different
bases on one broker are distinct bridges in Home Assistant; the default base ``settle`` keeps
the plain ``settle_bridge`` (what earlier versions announced).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

BRIDGE_NODE = "settle_bridge"
DEFAULT_BASE = "settle"

CONTACT_TEMPLATE = (
    "{{ none if value_json.contact is none else ('ON' if value_json.contact else 'OFF') }}"
)
"""Skin contact: ``None`` (Home Assistant: unknown) when the strap cannot tell (null)."""


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


def bridge_node(base: str) -> str:
    """The bridge's node id: ``settle_bridge``, plus the topic base when it is not the
    default (``settle_bridge_lab_2`` for ``lab/2``)."""
    if base == DEFAULT_BASE:
        return BRIDGE_NODE
    slug = re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_")
    return f"{BRIDGE_NODE}_{slug or 'base'}"


def bridge_messages(prefix: str, base: str, sw_version: str) -> list[tuple[str, bytes]]:
    """The bridge device: one connectivity binary sensor on ``<base>/bridge/state``."""
    node = bridge_node(base)
    config = {
        "name": "Connection",
        "unique_id": f"{BRIDGE_NODE}_{base.replace('/', '_')}_state",
        "default_entity_id": f"binary_sensor.{node}_state",
        "state_topic": f"{base}/bridge/state",
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "device": {
            "identifiers": [f"{BRIDGE_NODE}_{base.replace('/', '_')}"],
            "name": "Settle bridge" if base == DEFAULT_BASE else f"Settle bridge ({base})",
            "manufacturer": "Settle",
            "model": "Settle daemon",
            "sw_version": sw_version,
        },
        "origin": _origin(sw_version),
    }
    return [(f"{prefix}/binary_sensor/{node}/state/config", _dump(config))]


def device_messages(
    prefix: str, base: str, dev: DeviceDescription, sw_version: str
) -> list[tuple[str, bytes]]:
    """Every entity of one strap, as (retained topic, payload) pairs."""
    d = dev.device_id
    t = f"{base}/{d}"
    device = {
        "identifiers": [f"settle_{d}"],
        "name": dev.name or d,
        "manufacturer": dev.manufacturer or "unknown",
        "model": dev.model or "Heart rate strap",
        "via_device": f"{BRIDGE_NODE}_{base.replace('/', '_')}",
    }
    if dev.firmware:
        device["sw_version"] = dev.firmware
    common = {**_availability(base, d), "device": device, "origin": _origin(sw_version)}

    def sensor(obj: str, name: str, topic: str, template: str, **extra: Any) -> tuple[str, bytes]:
        cfg = {
            "name": name,
            "unique_id": f"settle_{d}_{obj}",
            "default_entity_id": f"sensor.settle_{d}_{obj}",
            "state_topic": topic,
            "value_template": template,
            **extra,
            **common,
        }
        return f"{prefix}/sensor/{d}/{obj}/config", _dump(cfg)

    def binary(obj: str, name: str, topic: str, template: str, **extra: Any) -> tuple[str, bytes]:
        cfg = {
            "name": name,
            "unique_id": f"settle_{d}_{obj}",
            "default_entity_id": f"binary_sensor.settle_{d}_{obj}",
            "state_topic": topic,
            "value_template": template,
            "payload_on": "ON",
            "payload_off": "OFF",
            **extra,
            **common,
        }
        return f"{prefix}/binary_sensor/{d}/{obj}/config", _dump(cfg)

    def button(obj: str, name: str, cmd: str, body: dict[str, Any], icon: str) -> tuple[str, bytes]:
        cfg = {
            "name": name,
            "unique_id": f"settle_{d}_{obj}",
            "default_entity_id": f"button.settle_{d}_{obj}",
            "command_topic": f"{t}/cmd/{cmd}",
            "payload_press": json.dumps({"v": 1, "id": f"ha-{obj}", **body}),
            "qos": 1,
            "retain": False,
            "icon": icon,
            **common,
        }
        return f"{prefix}/button/{d}/{obj}/config", _dump(cfg)

    measurement = {"state_class": "measurement"}
    return [
        sensor("heart_rate", "Heart rate", f"{t}/beat", "{{ value_json.hr }}",
               unit_of_measurement="bpm", icon="mdi:heart-pulse", **measurement),
        sensor("rmssd", "RMSSD", f"{t}/indices", "{{ value_json.rmssd_ms }}",
               unit_of_measurement="ms", icon="mdi:heart-flash", **measurement),
        sensor("settling", "Settling score", f"{t}/indices", "{{ value_json.settling }}",
               icon="mdi:meditation", **measurement),
        sensor("trend", "Settling trend", f"{t}/indices",
               "{{ value_json.trend | default('unknown') }}", icon="mdi:trending-down"),
        sensor("coherence", "Coherence", f"{t}/indices",
               "{{ value_json.coherence | default(none) }}", icon="mdi:sine-wave", **measurement),
        sensor("signal_quality", "Signal quality", f"{t}/indices",
               "{{ value_json.quality | default(none) }}", icon="mdi:signal",
               entity_category="diagnostic", **measurement),
        sensor("battery", "Battery", f"{t}/status", "{{ value_json.battery_pct }}",
               unit_of_measurement="%", device_class="battery", entity_category="diagnostic",
               **measurement),
        sensor("rssi", "Signal strength", f"{t}/status", "{{ value_json.rssi }}",
               unit_of_measurement="dBm", device_class="signal_strength",
               entity_category="diagnostic", enabled_by_default=False, **measurement),
        binary("contact", "Skin contact", f"{t}/beat", CONTACT_TEMPLATE,
               icon="mdi:gesture-tap"),
        binary("caught_up", "Caught up", f"{t}/session",
               "{{ 'ON' if value_json.catching_up_t_s is not none else 'OFF' }}",
               icon="mdi:check-circle-outline"),
        button("session_start", "Start session", "session/start", {}, "mdi:play"),
        button("session_stop", "Stop session", "session/stop", {}, "mdi:stop"),
        button("marker", "Mark moment", "marker",
               {"kind": "note", "text": "from Home Assistant"}, "mdi:map-marker"),
    ]  # fmt: skip


def removal_messages(prefix: str, base: str, device_id: str) -> list[str]:
    """The retained config topics to clear (empty payload) to remove a strap's entities."""
    dev = DeviceDescription(device_id, device_id)
    return [topic for topic, _ in device_messages(prefix, base, dev, "0")]


def _dump(cfg: dict[str, Any]) -> bytes:
    return json.dumps(cfg, separators=(",", ":")).encode()
