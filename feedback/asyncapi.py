"""The MQTT contract as an AsyncAPI 3.0 document, generated from the payload models.

``python -m feedback.asyncapi > docs/asyncapi.yaml`` writes it; a test regenerates it and
compares, so the document cannot drift from the code, and another test validates every
message of a live run against it. The Home Assistant discovery configs (whose keys are Home
Assistant's, not a Settle payload) are described by :data:`HA_DISCOVERY_CONFIG`, which a live
test holds every announced config to.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from feedback.payloads import (
    SCHEMA_VERSION,
    BaselineCommand,
    BeatPayload,
    BridgeInfoPayload,
    CommandResult,
    EcgBeatPayload,
    EventPayload,
    IndicesPayload,
    MarkerCommand,
    SessionPayload,
    SessionStartCommand,
    SessionStopCommand,
    StatusPayload,
)

REF = "#/components/schemas/{model}"


def _str() -> dict[str, Any]:
    return {"type": "string"}  # a fresh dict each time: YAML would share one as an anchor


HA_DISCOVERY_CONFIG: dict[str, Any] = {
    "title": "HomeAssistantDiscoveryConfig",
    "description": (
        "A Home Assistant MQTT discovery config (sensor, binary_sensor and button platforms; "
        "keys as Home Assistant's MQTT documentation defines them). Retained; an empty "
        "retained payload on the same topic removes the entity (`settle forget`)."
    ),
    "type": "object",
    "required": ["unique_id", "default_entity_id", "device", "origin"],
    "additionalProperties": False,
    "properties": {
        "name": _str(),
        "unique_id": _str(),
        "default_entity_id": _str(),
        "state_topic": _str(),
        "value_template": {
            "type": "string",
            "description": "Jinja2; renders None (Home Assistant: unknown) when there is no "
            "value to show.",
        },
        "command_topic": _str(),
        "payload_press": {"type": "string", "description": "A command of this document."},
        "payload_on": _str(),
        "payload_off": _str(),
        "qos": {"type": "integer", "enum": [0, 1, 2]},
        "retain": {"type": "boolean"},
        "expire_after": {
            "type": "integer",
            "minimum": 1,
            "description": "Seconds without a message after which Home Assistant shows the "
            "entity unavailable: 3 indices intervals for indices-based sensors, 10 s for "
            "those of the beat topic (longer for a replay slowed below 1x).",
        },
        "unit_of_measurement": _str(),
        "device_class": _str(),
        "state_class": _str(),
        "options": {"type": "array", "items": _str()},
        "suggested_display_precision": {"type": "integer", "minimum": 0},
        "icon": _str(),
        "entity_category": {"type": "string", "enum": ["diagnostic", "config"]},
        "enabled_by_default": {"type": "boolean"},
        "availability": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["topic"],
                "properties": {"topic": _str()},
                "additionalProperties": False,
            },
        },
        "availability_mode": {"type": "string", "enum": ["all", "any", "latest"]},
        "device": {
            "type": "object",
            "required": ["identifiers", "name"],
            "additionalProperties": False,
            "properties": {
                "identifiers": {"type": "array", "items": _str(), "minItems": 1},
                "name": _str(),
                "manufacturer": _str(),
                "model": _str(),
                "sw_version": _str(),
                "via_device": _str(),
            },
        },
        "origin": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": _str(), "sw_version": _str()},
        },
    },
}
"""The schema of every discovery config Settle announces (feedback/homeassistant.py)."""

# channel id: (address, model, string enum or JSON schema with a title, qos, retained,
# direction, summary). Direction "send": Settle publishes; "receive": Settle subscribes.
CHANNELS: list[
    tuple[str, str, type[BaseModel] | list[str] | dict[str, Any], int, bool, str, str]
] = [
    ("bridgeState", "{base}/bridge/state", ["online", "offline"], 1, True, "send",
     "Daemon reachability; the Last Will sets it to offline."),
    ("bridgeInfo", "{base}/bridge/info", BridgeInfoPayload, 1, True, "send",
     "Version, devices, broker kind and a config summary (no secrets)."),
    ("availability", "{base}/{device}/availability", ["online", "offline"], 1, True, "send",
     "Whether the strap is connected."),
    ("status", "{base}/{device}/status", StatusPayload, 1, True, "send",
     "Connection state, battery, contact, model, firmware and dropped-message counters."),
    ("beat", "{base}/{device}/beat", BeatPayload, 0, False, "send",
     "Every notification from the strap."),
    ("ecgBeat", "{base}/{device}/ecg_beat", EcgBeatPayload, 0, False, "send",
     "A beat detected in the raw ECG (Polar H10 PMD)."),
    ("indices", "{base}/{device}/indices", IndicesPayload, 1, False, "send",
     "Rolling indices every indices_every_s seconds of beat time."),
    ("session", "{base}/{device}/session", SessionPayload, 1, True, "send",
     "The current (or last) session."),
    ("event", "{base}/{device}/event", EventPayload, 1, False, "send",
     "Markers, baseline, catching-up, disconnects."),
    ("cmdMarker", "{base}/{device}/cmd/marker", MarkerCommand, 1, False, "receive",
     "Add a marker to the running session. Never retain commands."),
    ("cmdSessionStart", "{base}/{device}/cmd/session/start", SessionStartCommand, 1, False,
     "receive", "Close the running session (if any) and start a new one."),
    ("cmdSessionStop", "{base}/{device}/cmd/session/stop", SessionStopCommand, 1, False,
     "receive", "Close the running session."),
    ("cmdBaselineStart", "{base}/{device}/cmd/baseline/start", BaselineCommand, 1, False,
     "receive", "Begin a marked baseline (rest) period."),
    ("cmdBaselineStop", "{base}/{device}/cmd/baseline/stop", BaselineCommand, 1, False,
     "receive", "End the marked baseline period."),
    ("cmdResult", "{base}/{device}/cmd/{command}/result", CommandResult, 1, False, "send",
     "Outcome of a command, echoing its id."),
    ("haDiscovery", "{prefix}/{component}/{node}/{object}/config", HA_DISCOVERY_CONFIG, 1, True,
     "send", "Home Assistant MQTT discovery: one config per entity ([homeassistant] prefix; "
     "announced at start-up, for each strap as it connects, and on Home Assistant's birth "
     "message). An empty retained payload removes the entity (settle forget)."),
    ("haStatus", "{status_topic}", ["online", "offline"], 1, False, "receive",
     "Home Assistant's birth (online) and last-will (offline) message ([homeassistant] "
     "status_topic): on online Settle announces every discovery config again."),
]  # fmt: skip


def build_document(
    base: str = "settle",
    prefix: str = "homeassistant",
    status_topic: str = "homeassistant/status",
) -> dict[str, Any]:
    """The document for a topic base and Home Assistant discovery prefix and birth topic
    (the defaults are what docs/asyncapi.yaml shows)."""
    models = sorted({c[2] for c in CHANNELS if isinstance(c[2], type)}, key=lambda m: m.__name__)
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for cid, address, payload, qos, retain, direction, summary in CHANNELS:
        addr = address.replace("{base}", base).replace("{prefix}", prefix)
        addr = addr.replace("{status_topic}", status_topic)
        if isinstance(payload, list):
            schema: dict[str, Any] = {"type": "string", "enum": payload}
            content_type = "text/plain"
        elif isinstance(payload, dict):
            schemas[payload["title"]] = copy.deepcopy(payload)
            schema = {"$ref": REF.format(model=payload["title"])}
            content_type = "application/json"
        else:
            schema = {"$ref": REF.format(model=payload.__name__)}
            content_type = "application/json"
        msg_name = cid[0].upper() + cid[1:]
        messages[msg_name] = {
            "name": msg_name,
            "summary": summary,
            "contentType": content_type,
            "payload": schema,
            "bindings": {"mqtt": {"bindingVersion": "0.2.0"}},
        }
        channel: dict[str, Any] = {
            "address": addr,
            "description": summary,
            "messages": {msg_name: {"$ref": f"#/components/messages/{msg_name}"}},
        }
        params = {p: {"description": _PARAMS[p]} for p in _PARAMS if "{" + p + "}" in addr}
        if params:
            channel["parameters"] = params
        channels[cid] = channel
        operations[("publish" if direction == "send" else "handle") + msg_name] = {
            "action": direction,
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": summary,
            "bindings": {"mqtt": {"qos": qos, "retain": retain, "bindingVersion": "0.2.0"}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Settle MQTT API",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": (
                "Live heart-beat data, settling indices, session state and commands of the "
                "Settle daemon. Every JSON payload has `v` (schema version) and `ts` (epoch "
                "ms); streams carry a per-device `seq`. Generated from feedback/payloads.py."
            ),
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:1883",
                "protocol": "mqtt",
                "description": "A local broker (or Settle's embedded one, MQTT 3.1.1 only).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


_PARAMS = {
    "device": "Stable device id of a strap, e.g. polar_h10_a1b2c3d4.",
    "command": "A command name, e.g. marker or session/start.",
    "component": "The Home Assistant platform: sensor, binary_sensor or button.",
    "node": (
        "A strap's device id, preceded by the topic base as a slug when the base is not "
        "settle (lab_polar_h10_a1b2c3d4); settle_bridge for the bridge (settle_bridge_lab)."
    ),
    "object": "The entity within the device, e.g. heart_rate, rmssd, session_start.",
}


def to_yaml(doc: dict[str, Any]) -> str:
    header = (
        "# Generated by `python -m feedback.asyncapi` from feedback/payloads.py; do not edit.\n"
    )
    body: str = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    return header + body


def main() -> None:
    sys.stdout.write(to_yaml(build_document()))


if __name__ == "__main__":
    main()
