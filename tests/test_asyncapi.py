"""The MQTT contract document cannot drift from the code, and a live run obeys it."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import numpy as np
import pytest
import yaml

from feedback.asyncapi import build_document, to_yaml
from settle.app import serve
from settle.config import load_config
from settle.demo import virtual_world
from tests.conftest import Mosquitto
from tests.test_e2e import CONFIG

DOC_PATH = Path(__file__).parents[1] / "docs" / "asyncapi.yaml"


def test_document_matches_the_models() -> None:
    assert yaml.safe_load(DOC_PATH.read_text()) == build_document(), (
        "docs/asyncapi.yaml is stale: run `python -m feedback.asyncapi > docs/asyncapi.yaml`"
    )
    assert DOC_PATH.read_text() == to_yaml(build_document())


def _matchers(doc: dict[str, Any]) -> list[tuple[re.Pattern[str], dict[str, Any], str]]:
    out = []
    for cid, ch in doc["channels"].items():
        pattern = re.escape(ch["address"]).replace(r"\{device\}", "[^/]+")
        pattern = pattern.replace(r"\{command\}", ".+")
        (msg_ref,) = ch["messages"].values()
        msg = doc["components"]["messages"][msg_ref["$ref"].rsplit("/", 1)[1]]
        out.append((re.compile(pattern + "$"), msg, cid))
    return out


def _validate(doc: dict[str, Any], msg: dict[str, Any], payload: bytes) -> None:
    schema = {**doc, **msg["payload"]}  # refs like #/components/schemas/X resolve in the doc
    if msg["contentType"] == "application/json":
        jsonschema.validate(json.loads(payload), schema)
    else:
        jsonschema.validate(payload.decode(), schema)


@pytest.mark.mosquitto
async def test_every_message_of_a_live_run_matches_the_document(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    doc = build_document()
    matchers = _matchers(doc)
    settings = load_config(
        CONFIG,
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        storage={"db_path": tmp_path / "s.db"},
        processing={"baseline_s": 20},
        homeassistant={"enabled": False},
    )
    got: list[tuple[str, bytes]] = []
    async with virtual_world(replay=None, speed=10, seed=6) as world:
        task = asyncio.create_task(
            serve(
                settings,
                **world.serve_kwargs(),
                duration=7,
                handle_signals=False,
            )
        )
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
            await c.subscribe("settle/#", qos=1)
            dev = None
            async with asyncio.timeout(20):
                async for m in c.messages:
                    got.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]
                    if str(m.topic).endswith("/indices") and dev is None:
                        dev = str(m.topic).split("/")[1]
                        cmds = [
                            ("baseline/start", {}), ("marker", {"kind": "shame", "text": "x"}),
                            ("baseline/stop", {}),
                            ("session/start", {"intention": {"target": "self",
                                                             "statement": "I am safe"}}),
                            ("session/stop", {}), ("marker", {"kind": "bogus"}),
                        ]  # fmt: skip
                        for i, (name, body) in enumerate(cmds):
                            payload = json.dumps({"v": 1, "id": str(i), **body})
                            await c.publish(f"settle/{dev}/cmd/{name}", payload, qos=1)
                    if str(m.topic).endswith("/cmd/marker/result") and b'"5"' in m.payload:  # type: ignore[operator]
                        break
            await asyncio.sleep(0.5)
        assert await task == 0

    seen_channels = set()
    for topic, payload in got:
        matched = [(msg, cid) for rx, msg, cid in matchers if rx.match(topic)]
        assert matched, f"topic not in the contract: {topic}"
        msg, cid = matched[0]
        if cid.startswith("cmd") and cid != "cmdResult" and json.loads(payload)["id"] == "5":
            with pytest.raises(jsonschema.ValidationError):  # the deliberately bad command
                _validate(doc, msg, payload)
            continue
        _validate(doc, msg, payload)
        seen_channels.add(cid)
    # Everything the daemon publishes appeared at least once in this run.
    assert {"bridgeState", "bridgeInfo", "availability", "status", "beat", "indices",
            "session", "event", "cmdResult"} <= seen_channels  # fmt: skip
    results = {json.loads(p)["id"]: json.loads(p) for t, p in got if t.endswith("/result")}
    # The baseline stopped right after it started is too short to use: the command says so.
    assert [results[str(i)]["status"] for i in range(6)] == ["ok", "ok", "error", "ok", "ok",
                                                             "error"]  # fmt: skip
    assert str(results["2"]["error"]).startswith("baseline too short (")
    indices = [json.loads(p) for t, p in got if t.endswith("/indices")]
    # No trend before there are scores to test: "unknown" with a null slope, never a "steady"
    # that nothing measured; every trend label comes with its slope.
    assert (indices[0]["trend"], indices[0]["trend_slope_per_min"]) == ("unknown", None)
    assert all((i["trend"] == "unknown") == (i["trend_slope_per_min"] is None) for i in indices)
    # No slope without its 95 % CI, no confidence without a test (this 70 s run has no trend
    # yet; the CI's values: tests/test_processing_live.py).
    trend_keys = ("trend_slope_ci_low_per_min", "trend_slope_per_min",
                  "trend_slope_ci_high_per_min", "trend_confidence")  # fmt: skip
    for i in indices:
        vals = [i[k] for k in trend_keys]
        assert (i["trend"] == "unknown") == (vals == [None] * 4), i
    sessions = [json.loads(p) for t, p in got if t.endswith("/session")]
    assert any(s.get("intention", {}) and s["intention"]["statement"] == "I am safe"
               for s in sessions)  # fmt: skip
    events = [json.loads(p)["kind"] for t, p in got if t.endswith("/event")]
    for kind in ["session-start", "baseline-start", "shame", "baseline-too-short",
                 "session-stop"]:  # fmt: skip
        assert kind in events, events


def test_marker_kinds_agree_between_contract_and_store() -> None:
    """The MQTT contract and the session store each list the marker kinds (the layers do not
    import each other); they must not drift apart."""
    from feedback.payloads import MARKER_KINDS as CONTRACT
    from sessions.store import MARKER_KINDS as STORED

    assert tuple(CONTRACT) == tuple(STORED)


def test_enums_in_the_contract_are_values_the_daemon_sends() -> None:
    """A documented value nobody ever sends misleads a subscriber (``settling_state
    unavailable`` was one): the schema's enums are exactly what the pipeline maps to."""
    from settle.pipeline import _SETTLING_STATE

    schema = build_document()["components"]["schemas"]["IndicesPayload"]["properties"]
    assert set(schema["settling_state"]["enum"]) == set(_SETTLING_STATE.values())
    # The trend labels the analysis gives a rising, a flat and a falling score (the pipeline
    # sends one of them, or "unknown" before there are enough scores); Home Assistant's
    # enum sensor lists the same states (a label it does not know would read as an error).
    from feedback.homeassistant import TRENDS
    from processing.indices import trend

    t = np.arange(0.0, 300.0, 5.0)
    wobble = 3.0 * np.sin(t / 7.0)
    sent = {trend(t, 50.0 + k * t / 10.0 + wobble).label for k in (1.0, 0.0, -1.0)}
    assert len(sent) == 3
    assert set(schema["trend"]["enum"]) == sent | {"unknown"}
    assert set(TRENDS) == sent


MQTT_DOC = Path(__file__).parents[1] / "docs" / "mqtt.md"


def test_every_event_kind_and_payload_field_is_documented() -> None:
    """docs/mqtt.md names every event kind the daemon sends and every field of the beat,
    status and session payloads (in that topic's row)."""
    from feedback.payloads import EVENT_KINDS, BeatPayload, SessionPayload, StatusPayload

    root = Path(__file__).parents[1]
    sent = set()
    for src in (root / "settle").glob("*.py"):
        sent |= set(re.findall(r'\.event\(\s*"([a-z-]+)"', src.read_text()))
    assert sent, "no event kinds found in settle/"
    assert sent <= set(EVENT_KINDS), sent - set(EVENT_KINDS)
    doc = MQTT_DOC.read_text()
    missing = [k for k in EVENT_KINDS if f"`{k}`" not in doc]
    assert not missing, f"event kinds missing from docs/mqtt.md: {missing}"
    schema = build_document()["components"]["schemas"]["EventPayload"]["properties"]["kind"]
    assert all(k in schema["description"] for k in EVENT_KINDS)

    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `settle/<dev>/(\w+)` .*$", doc, re.M)}
    for leaf, model in (("beat", BeatPayload), ("status", StatusPayload),
                        ("session", SessionPayload)):  # fmt: skip
        fields = set(model.model_fields) - {"v", "ts"}
        undocumented = [f for f in fields if not re.search(rf"\b{f}\b", rows[leaf])]
        assert not undocumented, f"{leaf} fields missing from docs/mqtt.md: {undocumented}"
