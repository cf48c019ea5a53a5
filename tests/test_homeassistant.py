"""Home Assistant MQTT discovery: documented keys only, templates that render against the
daemon's real payloads, buttons that send commands the daemon accepts, one device per strap,
re-announce on HA's birth message, removal by empty retained configs."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiomqtt
import jinja2
import jsonschema
import pytest

from feedback import homeassistant as ha
from feedback.asyncapi import build_document
from feedback.payloads import COMMANDS
from settle.app import serve
from settle.config import load_config
from settle.demo import virtual_world
from tests.conftest import Mosquitto
from tests.test_e2e import CONFIG, Collector

# Keys from Home Assistant's MQTT discovery documentation for these platforms (plus the
# shared availability/device/origin keys). HA's discovery schemas drop any other key
# silently (extra=vol.REMOVE_EXTRA): a misspelt key would just do nothing.
COMMON = {
    "name", "unique_id", "default_entity_id", "availability", "availability_mode", "device",
    "origin", "icon", "entity_category", "qos", "enabled_by_default",
}  # fmt: skip
PLATFORM_KEYS = {
    "sensor": COMMON | {"state_topic", "value_template", "unit_of_measurement", "device_class",
                        "state_class", "options", "suggested_display_precision", "expire_after"},
    "binary_sensor": COMMON | {"state_topic", "value_template", "payload_on", "payload_off",
                               "device_class", "expire_after"},
    "button": COMMON | {"command_topic", "payload_press", "retain"},
}  # fmt: skip
DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version", "via_device"}


def test_discovery_payloads_use_documented_keys_and_unique_ids() -> None:
    dev = ha.DeviceDescription("polar_h10_a1b2c3d4", "Polar H10 A1B2C3D4", "H10", "Polar", "5.0")
    msgs = ha.device_messages("homeassistant", "settle", dev, "0.1.0", indices_every_s=5)
    msgs += ha.bridge_messages("homeassistant", "settle", "0.1.0")
    uids = set()
    for topic, payload in msgs:
        prefix, platform, _node, _obj, leaf = topic.split("/")
        assert (prefix, leaf) == ("homeassistant", "config")
        cfg = json.loads(payload)
        assert set(cfg) <= PLATFORM_KEYS[platform], set(cfg) - PLATFORM_KEYS[platform]
        assert set(cfg["device"]) <= DEVICE_KEYS
        uids.add(cfg["unique_id"])
        assert cfg["default_entity_id"].startswith(platform + ".")
        if platform == "button":
            # What HA sends when the button is pressed is a command the daemon accepts.
            cmd = cfg["command_topic"].split("/cmd/")[1]
            COMMANDS[cmd].model_validate_json(cfg["payload_press"])
            assert cfg["retain"] is False
    assert len(uids) == len(msgs)
    kinds = sorted(t.split("/")[1] + ":" + t.split("/")[3] for t, _ in msgs)
    for needed in ["sensor:heart_rate", "sensor:rmssd", "sensor:settling", "sensor:trend",
                   "sensor:coherence", "sensor:battery", "sensor:signal_quality", "sensor:rssi",
                   "binary_sensor:contact", "binary_sensor:caught_up", "button:session_start",
                   "button:session_stop", "button:marker", "button:hold_start"]:  # fmt: skip
        assert needed in kinds
    # Shown as the metric deserves (the payloads carry ~6 decimals: RMSSD 36.491407 ms).
    shown = {t.split("/")[3]: json.loads(p).get("suggested_display_precision") for t, p in msgs}
    assert [shown[k] for k in ("heart_rate", "rmssd", "settling", "coherence")] == [0, 1, 0, 2]
    hold = json.loads(dict(msgs)["homeassistant/button/polar_h10_a1b2c3d4/hold_start/config"])
    assert json.loads(hold["payload_press"])["kind"] == "hold-start"


def test_skin_contact_is_unknown_when_the_strap_cannot_tell() -> None:
    """A strap that does not report skin contact (``contact: null``, e.g. a Polar H10) shows
    "unknown" in Home Assistant, not "off": the template renders ``None``, which Home
    Assistant's MQTT binary sensor takes as unknown."""
    dev = ha.DeviceDescription("polar_h10_a1b2c3d4", "Polar H10")
    configs = {t.split("/")[3]: json.loads(p) for t, p in ha.device_messages(
        "homeassistant", "settle", dev, "1", indices_every_s=5)}  # fmt: skip
    cfg = configs["contact"]
    assert (cfg["payload_on"], cfg["payload_off"]) == ("ON", "OFF")
    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        cfg["value_template"]
    )
    rendered = {
        c: template.render(value_json={"hr": 60, "contact": c}) for c in (True, False, None)
    }
    assert rendered == {True: "ON", False: "OFF", None: "None"}


def test_caught_up_turns_on_when_the_session_caught_up() -> None:
    """The "Caught up" binary sensor reads the session payload as the daemon publishes it:
    OFF while ``catching_up_t_s`` is null, ON once physiology caught up, OFF again once the
    session stopped (the stopped session's payload, retained, keeps its catching-up time:
    the sensor stayed ON until the next session started)."""
    from feedback.payloads import SessionPayload

    dev = ha.DeviceDescription("polar_h10_a1b2c3d4", "Polar H10")
    configs = {t.split("/")[3]: json.loads(p) for t, p in ha.device_messages(
        "homeassistant", "settle", dev, "1", indices_every_s=5)}  # fmt: skip
    cfg = configs["caught_up"]
    assert cfg["state_topic"] == "settle/polar_h10_a1b2c3d4/session"
    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        cfg["value_template"]
    )
    rendered = []
    for state, caught in (("running", None), ("running", 312.5), ("stopped", 312.5)):
        payload = SessionPayload(
            ts=1_790_000_300_000, id="20261129T020000-ab12", state=state,
            device=dev.device_id,
            started_ts=1_790_000_000_000, catching_up_t_s=caught,
        )  # fmt: skip
        rendered.append(template.render(value_json=json.loads(payload.model_dump_json())))
    assert rendered == [cfg["payload_off"], cfg["payload_on"], cfg["payload_off"]]
    assert rendered == ["OFF", "ON", "OFF"]


def test_bridges_of_different_topic_bases_are_distinct() -> None:
    """Two daemons with different ``topic_base`` on one broker: two bridge devices in Home
    Assistant, neither overwriting the other's discovery config or entity id."""
    ((topic_a, raw_a),) = ha.bridge_messages("homeassistant", "settle", "1")
    ((topic_b, raw_b),) = ha.bridge_messages("homeassistant", "lab/2", "1")
    a, b = json.loads(raw_a), json.loads(raw_b)
    assert topic_a != topic_b
    assert a["default_entity_id"] != b["default_entity_id"]
    assert a["unique_id"] != b["unique_id"]
    assert a["device"]["identifiers"] != b["device"]["identifiers"]
    assert a["device"]["name"] != b["device"]["name"]
    assert b["state_topic"] == "lab/2/bridge/state"
    # HA node ids allow only [a-zA-Z0-9_-]; the default base keeps what earlier versions sent.
    assert topic_b.startswith("homeassistant/binary_sensor/settle_bridge_lab_2_")
    assert b["default_entity_id"].startswith("binary_sensor.settle_bridge_lab_2_")
    assert topic_a == "homeassistant/binary_sensor/settle_bridge/state/config"
    assert a["default_entity_id"] == "binary_sensor.settle_bridge_state"
    assert a["device"]["identifiers"] == ["settle_bridge_settle"]  # as earlier versions
    # Each strap's entities go with the bridge of its own base.
    dev = ha.DeviceDescription("x_1", "X")
    (_, strap_b), *_ = ha.device_messages("homeassistant", "lab/2", dev, "1", indices_every_s=5)
    assert json.loads(strap_b)["device"]["via_device"] in b["device"]["identifiers"]


def test_one_strap_id_under_two_topic_bases_is_two_devices() -> None:
    """The same strap id under bases `settle` and `lab` (two daemons, or two demos: the demo's
    ids are fixed) shared discovery topics, unique ids and the device: in Home Assistant the
    second overwrote the first, and `settle forget` under one base removed the other's
    entities. And `lab/2`, `lab_2`, `lab-2` all made the bridge `settle_bridge_lab_2`."""
    dev = ha.DeviceDescription("settle_virtual_hr_7d310ebf", "Settle Virtual HR")
    seen: dict[str, set[str]] = {"topic": set(), "uid": set(), "device": set(), "bridge": set()}
    bases = ["settle", "lab", "lab/2", "lab_2", "lab-2", "Lab_2"]
    for base in bases:
        msgs = ha.device_messages("homeassistant", base, dev, "1", indices_every_s=5)
        cfgs = [json.loads(p) for _, p in msgs]
        seen["topic"] |= {t for t, _ in msgs}
        seen["uid"] |= {c["unique_id"] for c in cfgs}
        seen["device"] |= {c["device"]["identifiers"][0] for c in cfgs}
        ((bt, bp),) = ha.bridge_messages("homeassistant", base, "1")
        seen["bridge"] |= {
            bt,
            json.loads(bp)["unique_id"],
            json.loads(bp)["device"]["identifiers"][0],
        }
        assert ha.removal_messages("homeassistant", base, dev.device_id) == [t for t, _ in msgs]
    assert len(seen["topic"]) == len(seen["uid"]) == 14 * len(bases)
    assert len(seen["device"]) == len(bases) and len(seen["bridge"]) == 3 * len(bases)
    # The default base and a plain one keep the ids earlier versions announced.
    (_, p), *_ = ha.device_messages("homeassistant", "settle", dev, "1", indices_every_s=5)
    assert json.loads(p)["unique_id"] == "settle_settle_virtual_hr_7d310ebf_heart_rate"
    (_, p), *_ = ha.device_messages("homeassistant", "lab", dev, "1", indices_every_s=5)
    assert json.loads(p)["device"]["via_device"] == "settle_bridge_lab"


def test_templates_survive_a_cleared_state_topic_and_the_trend_is_an_enum() -> None:
    """`settle forget` empties the state topics; an entity still subscribed rendered its
    template without `value_json` and Home Assistant logged template errors. Every template
    now renders None (unknown) then. The trend is an enum of its three states."""
    dev = ha.DeviceDescription("x_1", "X")
    cfgs = {t.split("/")[3]: json.loads(p) for t, p in ha.device_messages(
        "homeassistant", "settle", dev, "1", indices_every_s=5)}  # fmt: skip
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    for obj, cfg in cfgs.items():
        if "value_template" in cfg:
            assert env.from_string(cfg["value_template"]).render() == "None", obj
            assert cfg["qos"] == 1, obj  # published at QoS 1: subscribed at 1
    trend = cfgs["trend"]
    assert (trend["device_class"], trend["options"]) == (
        "enum",
        ["settling", "steady", "unsettling"],
    )
    assert "state_class" not in trend and "unit_of_measurement" not in trend
    render = env.from_string(trend["value_template"]).render
    scored = {"usable": True, "settling": 61.0}  # a trend is shown only with its score
    assert render(value_json={**scored, "trend": "steady"}) == "steady"
    assert render(value_json={**scored, "trend": "unknown"}) == "None"
    assert render(value_json={}) == "None"
    # Named from their device class by Home Assistant (translated); no "unknown" maker.
    assert "name" not in cfgs["battery"] and "name" not in cfgs["rssi"]
    assert "manufacturer" not in cfgs["battery"]["device"]


def _configs(**kw: float) -> dict[str, dict[str, Any]]:
    dev = ha.DeviceDescription("polar_h10_a1b2c3d4", "Polar H10")
    msgs = ha.device_messages("homeassistant", "settle", dev, "1", **kw)
    return {t.split("/")[3]: json.loads(p) for t, p in msgs}


INDICES_SENSORS = ("rmssd", "settling", "trend", "coherence", "signal_quality")


def test_sensors_of_values_that_stopped_coming_go_unavailable() -> None:
    """After "Stop session" no indices come while the strap stays connected: Home Assistant
    kept showing the last RMSSD, score, trend, coherence and signal quality ("Settling score
    46, RMSSD 33.5 ms") until the next session, where the dashboard shows none. Each now
    expires (Home Assistant: unavailable) after 3 indices intervals without a message, of the
    configured interval; heart rate and skin contact after 10 s without a beat (a strap that
    stays connected but stopped notifying); entities of retained topics never."""
    cfgs = _configs(indices_every_s=5)
    expiry = {obj: cfg.get("expire_after") for obj, cfg in cfgs.items()}
    on_indices = {o for o, c in cfgs.items() if c.get("state_topic", "").endswith("/indices")}
    assert on_indices == set(INDICES_SENSORS)  # one added later expires too, or this fails
    assert {o: expiry[o] for o in INDICES_SENSORS} == dict.fromkeys(INDICES_SENSORS, 15)
    assert expiry["heart_rate"] == expiry["contact"] == 10
    assert cfgs["heart_rate"]["state_topic"] == cfgs["contact"]["state_topic"]
    assert cfgs["contact"]["state_topic"].endswith("/beat")
    # Retained state (status, session) and buttons: nothing to expire.
    others = set(cfgs) - set(INDICES_SENSORS) - {"heart_rate", "contact"}
    assert others and all(expiry[o] is None for o in others), {o: expiry[o] for o in others}
    # The configured interval, in the whole seconds Home Assistant takes, rounded up.
    assert _configs(indices_every_s=7.5)["rmssd"]["expire_after"] == 23
    assert _configs(indices_every_s=60)["trend"]["expire_after"] == 180
    # A replay slowed to 0.25x sends everything 4 times less often (Home Assistant counts
    # wall seconds); a time-compressed one keeps the plain values.
    slow = _configs(indices_every_s=5, time_scale=0.25)
    assert (slow["rmssd"]["expire_after"], slow["heart_rate"]["expire_after"]) == (60, 40)
    fast = _configs(indices_every_s=5, time_scale=25)
    assert (fast["rmssd"]["expire_after"], fast["heart_rate"]["expire_after"]) == (15, 10)


def _indices(**fields: Any) -> dict[str, Any]:
    from feedback.payloads import IndicesPayload

    payload = IndicesPayload(
        ts=1_790_000_300_000, session="20261129T020000-ab12", t_s=300.0, window_s=60.0, n=70,
        hr_bpm=68.0, rmssd_ms=80.2, ln_rmssd=4.38, sdnn_ms=71.0, pnn50_pct=40.0,
        settling=61.3, settling_state="running", coherence=0.41, quality=0.62, trend="steady",
    ).model_copy(update=fields)  # fmt: skip
    return dict(json.loads(payload.model_dump_json()))


def test_hrv_sensors_are_unknown_while_the_rhythm_is_unusable() -> None:
    """With frequent premature beats the daemon sends ``usable: false`` (score null) but the
    payload still carries an RMSSD and a trend: Home Assistant showed "RMSSD 80 ms" and "trend:
    steady" while the dashboard blanks them (the premature beats make them meaningless). Now
    RMSSD, coherence, score and trend are unknown then, as while the score is still waiting
    for its baseline (the trend); the signal quality is shown either way, as on the
    dashboard."""
    cfgs = _configs(indices_every_s=5)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    shown = ("rmssd", "coherence", "settling", "trend", "signal_quality")

    def render(payload: dict[str, Any]) -> dict[str, str]:
        return {o: env.from_string(cfgs[o]["value_template"]).render(value_json=payload)
                for o in shown}  # fmt: skip

    usable = render(_indices())
    assert usable == {"rmssd": "80.2", "coherence": "0.41", "settling": "61.3",
                      "trend": "steady", "signal_quality": "62.0"}  # fmt: skip
    reason = "too irregular to interpret: 31 % premature or ectopic beats"
    unusable = render(_indices(usable=False, reason=reason, settling=None))
    assert unusable == {"rmssd": "None", "coherence": "None", "settling": "None",
                        "trend": "None", "signal_quality": "62.0"}  # fmt: skip
    warming = render(_indices(usable=False, warming_up=True, settling=None, trend="unknown"))
    assert warming["rmssd"] == warming["trend"] == "None"
    baseline = render(_indices(settling=None, settling_state="baseline"))
    assert (baseline["rmssd"], baseline["settling"], baseline["trend"]) == ("80.2", "None", "None")


def test_heart_rate_zero_without_skin_contact_is_unknown() -> None:
    """A strap taken off keeps notifying with heart rate 0 and contact not detected: Home
    Assistant recorded "0 bpm" (in its long-term statistics too) where the dashboard shows
    "–". The payload is built from the wire bytes as the daemon builds it."""
    from feedback.payloads import BeatPayload
    from sensors.hrs import HeartRateMeasurement

    cfgs = _configs(indices_every_s=5)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    states = []
    # Flags: contact supported and detected, RR present, 72 bpm; contact supported, not
    # detected, 0 bpm, no RR.
    for wire in (bytes([0x16, 72, 0x55, 0x03]), bytes([0x04, 0])):
        m = HeartRateMeasurement.from_bytes(wire)
        beat = BeatPayload(ts=0, seq=0, hr=m.hr_bpm, rr_ms=list(m.rr_ms), contact=m.contact,
                           session=None)  # fmt: skip
        value_json = json.loads(beat.to_json())
        states.append(tuple(env.from_string(cfgs[o]["value_template"]).render(
            value_json=value_json) for o in ("heart_rate", "contact")))  # fmt: skip
    assert states == [("72", "ON"), ("None", "OFF")]


def _channels(doc: dict[str, Any], topic: str) -> list[str]:
    """The channels of an AsyncAPI document whose address matches a topic (a parameter
    matching one topic level)."""
    out = []
    for cid, ch in doc["channels"].items():
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(ch["address"]))
        if re.fullmatch(pattern, topic):
            out.append(cid)
    return out


def test_the_contract_lists_the_discovery_configs_and_the_birth_topic() -> None:
    """docs/mqtt.md says docs/asyncapi.yaml lists every topic, but the discovery configs
    (retained, QoS 1) and Home Assistant's birth topic, which Settle subscribes to, were not
    in it. Every config Settle announces, for any topic base and discovery prefix, is on the
    document's discovery channel and valid against its schema."""
    dev = ha.DeviceDescription("polar_h10_a1b2c3d4", "Polar H10 A1B2C3D4", "H10", "Polar", "5")
    for base, prefix in (("settle", "homeassistant"), ("lab/2", "ha")):
        doc = build_document(base=base, prefix=prefix)
        op = doc["operations"]["publishHaDiscovery"]
        assert (op["action"], op["bindings"]["mqtt"]["qos"], op["bindings"]["mqtt"]["retain"]) == (
            "send", 1, True)  # fmt: skip
        schema = {**doc, "$ref": "#/components/schemas/HomeAssistantDiscoveryConfig"}
        msgs = ha.device_messages(prefix, base, dev, "1", indices_every_s=5)
        for topic, payload in msgs + ha.bridge_messages(prefix, base, "1"):
            assert _channels(doc, topic) == ["haDiscovery"], topic
            jsonschema.Draft7Validator(schema).validate(json.loads(payload))
    birth = build_document(status_topic="hass/status")
    assert _channels(birth, "hass/status") == ["haStatus"]
    assert birth["operations"]["handleHaStatus"]["action"] == "receive"
    assert _channels(build_document(), "homeassistant/status") == ["haStatus"]


def test_removal_clears_every_config_topic() -> None:
    dev = ha.DeviceDescription("x_1", "X")
    assert ha.removal_messages("homeassistant", "settle", "x_1") == [
        t for t, _ in ha.device_messages("homeassistant", "settle", dev, "1", indices_every_s=5)
    ]


async def _retained(host: str, port: int, topic: str, quiet_s: float = 1.0) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    async with aiomqtt.Client(host, port) as c:
        await c.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(quiet_s):
                async for m in c.messages:
                    got[str(m.topic)] = bytes(m.payload)  # type: ignore[arg-type]
        except TimeoutError:
            pass
    return got


@pytest.mark.mosquitto
@pytest.mark.parametrize("n_straps", [1, 3])
async def test_discovery_live_one_and_three_straps(
    mosquitto: Mosquitto, tmp_path: Path, n_straps: int
) -> None:
    # With three straps, a discovery prefix of its own: Home Assistant's birth topic stays
    # homeassistant/status whatever its discovery prefix (a restart went unnoticed).
    prefix = "homeassistant" if n_straps == 1 else "ha"
    settings = load_config(
        CONFIG,
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        storage={"db_path": tmp_path / "s.db"},
        processing={"baseline_s": 20, "indices_every_s": 4},
        homeassistant={"prefix": prefix},
    )
    doc = build_document(prefix=prefix)  # the contract, for this discovery prefix
    async with Collector(mosquitto.host, mosquitto.port) as col, virtual_world(
        replay=None, speed=25, seed=5, n_straps=n_straps
    ) as world:  # fmt: skip
        task = asyncio.create_task(
            serve(
                settings,
                **world.serve_kwargs(),
                duration=6,
                handle_signals=False,
            )
        )
        async with asyncio.timeout(30):
            await col.wait_for("indices", 6 * n_straps)
        configs = await _retained(mosquitto.host, mosquitto.port, f"{prefix}/#")

        # Home Assistant restarts: its birth message makes Settle announce again.
        seen_before = len(col.messages)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
            await c.subscribe(f"{prefix}/+/+/+/config", qos=1)
            await asyncio.sleep(0.3)
            # Where the contract says Settle listens for Home Assistant's birth message.
            birth = doc["channels"]["haStatus"]["address"]
            assert birth == "homeassistant/status"
            await c.publish(birth, "online", qos=1)
            again: set[str] = set()
            async with asyncio.timeout(5):
                async for m in c.messages:
                    if not m.retain:
                        again.add(str(m.topic))
                    if len(again) == len(configs):
                        break
        assert again == set(configs)
        assert len(col.messages) > seen_before
        assert await task == 0

    devices = {json.loads(p)["device"]["identifiers"][0] for p in configs.values()}
    assert len(devices) == n_straps + 1  # one per strap plus the bridge
    assert len(configs) == 1 + 14 * n_straps
    # Each config is on the contract's discovery channel and valid against its schema, and
    # the indices sensors expire after 3 of the configured 4 s intervals.
    schema = {**doc, "$ref": "#/components/schemas/HomeAssistantDiscoveryConfig"}
    for topic, payload in configs.items():
        assert _channels(doc, topic) == ["haDiscovery"], topic
        jsonschema.Draft7Validator(schema).validate(json.loads(payload))
        if json.loads(payload).get("state_topic", "").endswith("/indices"):
            assert json.loads(payload)["expire_after"] == 12, topic
    # Every template renders against the real payload on its state topic.
    latest = {t: json.loads(p) for t, p, _ in col.messages if t.startswith("settle/")
              and p[:1] == b"{"}  # fmt: skip
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    rendered = {}
    for topic, payload in configs.items():
        cfg = json.loads(payload)
        if "value_template" not in cfg:
            continue
        assert cfg["state_topic"] in latest, cfg["state_topic"]
        out = env.from_string(cfg["value_template"]).render(value_json=latest[cfg["state_topic"]])
        rendered[topic.split("/")[3]] = out
        if topic.endswith("/signal_quality/config"):  # per cent, as on the dashboard
            quality = latest[cfg["state_topic"]]["quality"]
            assert cfg["unit_of_measurement"] == "%"
            assert out == "None" if quality is None else float(out) == pytest.approx(100 * quality)
        avail = [a["topic"] for a in cfg["availability"]]
        assert avail[0] == "settle/bridge/state" and avail[1].endswith("/availability")
        # Unavailable as soon as the daemon's Last Will sets bridge/state offline.
        assert cfg["availability_mode"] == "all"
    assert 40 < float(rendered["heart_rate"]) < 120
    assert float(rendered["rmssd"]) > 0
    assert 0 <= float(rendered["settling"]) <= 100
    assert 0 <= float(rendered["signal_quality"]) <= 100
    assert rendered["contact"] == "None"  # unknown: the virtual strap, like an H10, cannot tell
    assert rendered["caught_up"] == "OFF"
    assert int(rendered["battery"]) == 87
    assert -127 <= int(rendered["rssi"]) <= 20  # dBm, from the advertisement it was found by


async def _settle(*args: str) -> tuple[int, str]:
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "settle.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SETTLE_CONFIG": str(CONFIG)},
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.mark.mosquitto
async def test_forget_removes_a_strap_from_the_broker_and_home_assistant(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """`settle forget DEV` clears the strap's retained state and discovery configs (a strap you
    replaced would otherwise stay in Home Assistant for good), refuses while it is connected,
    and leaves the bridge alone."""
    where = f"{mosquitto.host}:{mosquitto.port}"
    settings = load_config(
        CONFIG,
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        storage={"db_path": tmp_path / "s.db"},
    )
    async with Collector(mosquitto.host, mosquitto.port) as col, virtual_world(
        replay=None, speed=25, seed=5
    ) as world:  # fmt: skip
        task = asyncio.create_task(
            serve(settings, **world.serve_kwargs(), duration=5, handle_signals=False)
        )
        async with asyncio.timeout(30):
            await col.wait_for("indices", 2)
        dev = json.loads(col.payloads("session")[0])["device"]
        code, said = await _settle("forget", dev, "--mqtt", where)
        assert code == 1 and f"strap {dev} is connected to a running daemon" in said, said
        assert await task == 0

    before = await _retained(mosquitto.host, mosquitto.port, "#")
    assert any(dev in t for t in before if t.startswith("homeassistant/"))
    code, said = await _settle("forget", dev, "--mqtt", where)
    assert code == 0, said
    after = await _retained(mosquitto.host, mosquitto.port, "#")
    assert not [t for t in after if dev in t], after
    assert [t for t in after if "bridge" in t] == [t for t in before if "bridge" in t]
    code, said = await _settle("forget", dev, "--mqtt", where)
    assert code == 1 and "holds nothing retained" in said
    code, said = await _settle("forget", "../x", "--mqtt", where)
    assert code == 2 and "not a device id" in said
