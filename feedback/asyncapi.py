"""The MQTT contract as an AsyncAPI 3.0 document, generated from the payload models.

``python -m feedback.asyncapi > docs/asyncapi.yaml`` writes it; a test regenerates it and
compares, so the document cannot drift from the code, and another test validates every
message of a live run against it.
"""

from __future__ import annotations

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

# channel id: (address, model or string enum, qos, retained, direction, summary)
# direction "send": Settle publishes; "receive": Settle subscribes.
CHANNELS: list[tuple[str, str, type[BaseModel] | list[str], int, bool, str, str]] = [
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
]  # fmt: skip


def build_document(base: str = "settle") -> dict[str, Any]:
    models = sorted({c[2] for c in CHANNELS if isinstance(c[2], type)}, key=lambda m: m.__name__)
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for cid, address, payload, qos, retain, direction, summary in CHANNELS:
        addr = address.replace("{base}", base)
        if isinstance(payload, list):
            schema: dict[str, Any] = {"type": "string", "enum": payload}
            content_type = "text/plain"
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
