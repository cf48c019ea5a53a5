"""Commands and the command-line client under hostile or unlucky input, against real brokers.

What a user or a peer on the broker notices: every command payload gets exactly one result
(deep nesting, numeric ids, oversized payloads included) and never a traceback in the
daemon's log; `settle mark` is quick and imports nothing of the daemon; a bad `--timeout` is
one line; a timeout after sending says the command was sent; an `unknown device` answer
waits for another daemon's `ok`; notes go out as UTF-8; `settle forget` leaves no retained
command behind and says what an account the ACL denies could not clear; the documented ACL
keeps results unforgeable; and docs/mqtt.md states the limits and the baseline messages the
code really has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import aiomqtt
import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback.commands import (
    MAX_COMMAND_DEPTH,
    CommandDecodeError,
    decode_json,
    screen_command,
    screen_nameless,
)
from feedback.dashboard import Dashboard, DashboardConfig, Hub
from feedback.dashboard.server import DeviceView
from feedback.mqtt import ConnectOptions, MqttLink
from feedback.payloads import COMMANDS, Intention, MarkerCommand
from sensors.strap import StrapClient, StrapInfo
from sessions.store import SessionStore
from settle.cli import _find_device
from settle.config import load_config
from settle.daemon import Daemon
from settle.errors import SettleError
from settle.pipeline import DeviceOutput, StrapPipeline
from tests.conftest import Mosquitto, start_mosquitto
from tests.test_e2e import CONFIG
from tests.test_mqtt import any_broker  # noqa: F401  (the fixture: mosquitto and amqtt)

DOCS = Path(__file__).parents[1] / "docs" / "mqtt.md"
ASYNCAPI = DOCS.with_name("asyncapi.yaml")
DEV = "hard_1"
ENV = {**os.environ, "SETTLE_CONFIG": str(CONFIG)}


@dataclass
class RunningDaemon:
    host: str
    port: int
    daemon: Daemon
    store: SessionStore
    session_id: str


@pytest.fixture
async def daemon_on_broker(
    any_broker: tuple[str, int, str],  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[RunningDaemon]:
    """The real daemon's command handler behind the real MQTT link, one strap (``hard_1``)
    with a running session; no BLE (commands need none)."""
    host, port, protocol = any_broker
    settings_ = load_config(
        CONFIG,
        mqtt={"host": host, "port": port, "protocol": protocol},
        storage={"db_path": tmp_path / "s.db"},
        homeassistant={"enabled": False},
    )
    store = SessionStore.open(settings_.db_path)
    daemons: list[Daemon] = []

    async def on_command(device: str, name: str, payload: bytes, retained: bool) -> None:
        await daemons[0].on_command(device, name, payload, retained)

    options = ConnectOptions(host, port, mqtt5=protocol == "5")
    async with MqttLink(options, on_command=on_command) as link:
        daemon = Daemon(settings_, store, [StrapClient(address="AA:BB:CC:DD:EE:01")], link=link)
        daemons.append(daemon)
        rt = daemon.runtimes[0]
        rt.info = StrapInfo("AA:BB:CC:DD:EE:01", "Hardening", DEV)
        rt.output = DeviceOutput(link, "settle", DEV)
        pipeline = await daemon.start_session(rt, None)
        assert await link.wait_connected(10)
        try:
            yield RunningDaemon(host, port, daemon, store, pipeline.session_id)
        finally:
            if rt.session is not None:
                await daemon._finish_session(rt)
    store.close()


async def send_commands(
    host: str, port: int, commands: list[tuple[str, bytes]], expect: int
) -> list[dict[str, Any]]:
    """Publish ``(name, payload)`` to ``settle/hard_1/cmd/<name>`` in order; the first
    ``expect`` results (plus any that arrive within 0.5 s after them: there must be none)."""
    results: list[dict[str, Any]] = []
    async with aiomqtt.Client(host, port) as c:
        await c.subscribe(f"settle/{DEV}/cmd/#", qos=1)
        for name, payload in commands:
            await c.publish(f"settle/{DEV}/cmd/{name}", payload, qos=1)

        async def collect(until: int | None) -> None:
            async for m in c.messages:
                if str(m.topic).endswith("/result"):
                    results.append(json.loads(bytes(m.payload)))
                    if until is not None and len(results) >= until:
                        return

        async with asyncio.timeout(15):
            await collect(expect)
        try:
            async with asyncio.timeout(0.5):
                await collect(None)
        except TimeoutError:
            pass
    return results


@pytest.mark.mosquitto
async def test_a_wildcard_device_cannot_end_the_mqtt_link(
    daemon_on_broker: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """`POST /api/cmd/%23/marker` made the daemon answer on `settle/#/cmd/marker/result`;
    paho refused the topic inside the link task, which ended for good: nothing was published
    any more, silently, and `bridge/state` stayed online. Such a command now has no topic to
    answer on and is only logged; the link goes on."""
    d = daemon_on_broker
    caplog.set_level(logging.WARNING, logger="settle.daemon")
    body = b'{"v":1,"id":"w1","kind":"note","text":"x"}'
    for device, name in [("#", "marker"), ("+", "marker"), (DEV, "#"), ("a\x00b", "marker")]:
        await d.daemon.on_command(device, name, body, False, source="dashboard")
    with pytest.raises(ValueError, match="not a topic to publish on"):
        d.daemon.link.publish("settle/#/cmd/marker/result", b"{}")  # type: ignore[union-attr]
    # The link still delivers: a marker on the real strap gets its result.
    (res,) = await send_commands(d.host, d.port, [("marker", body.replace(b"w1", b"w2"))], 1)
    assert res["id"] == "w2" and res["status"] == "ok"
    warned = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(warned) == 1 and "not a device and command" in warned[0]


@pytest.mark.mosquitto
async def test_commands_to_made_up_devices_grow_neither_memory_nor_the_log(
    daemon_on_broker: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone on the broker can send commands to thousands of made-up device ids: each
    result was kept in a dashboard backlog of its own (50 000 of them: +465 MB, all replayed
    to every new page) and each refusal was a WARNING line. Each still gets its error result
    (the sender learns the device is unknown); the backlog and the log stay put."""
    d = daemon_on_broker
    hub = Hub("settle")
    d.daemon.tap = hub.publish
    caplog.set_level(logging.WARNING, logger="settle.daemon")
    before = len(hub.snapshot())
    for i in range(300):
        body = b'{"v":1,"id":"m%d","kind":"note","text":"x"}' % i
        await d.daemon.on_command(f"ghost_{i}", "marker", body, False, source="dashboard")
    assert json.loads(hub.results["m299"])["error"] == "unknown device 'ghost_299'"
    assert len(hub.snapshot()) == before  # nothing kept for a new page
    warned = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("commands: 1 command rejected"), warned


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def marker_with_nested_text(cmd_id: str, depth: int) -> bytes:
    return b'{"v":1,"id":"%s","kind":"note","text":%s}' % (cmd_id.encode(), nested(depth))


# -- 1, 2: every command payload gets exactly one result --------------------------------------


@pytest.mark.mosquitto
async def test_deeply_nested_commands_get_one_error_result_and_no_traceback(
    daemon_on_broker: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """Nesting json.loads cannot handle (a RecursionError at ~1000 levels, 3 kB) used to log
    a traceback and answer nothing; now each gets its one error result, the id echoed when
    it can be read, and the link goes on handling commands."""
    d = daemon_on_broker
    caplog.set_level(logging.WARNING)
    valid = json.dumps({"v": 1, "id": "fine", "kind": "note", "text": "still here"}).encode()
    results = await send_commands(
        d.host,
        d.port,
        [
            ("marker", nested(1500)),  # 3000 bytes: under the size limit
            ("marker", marker_with_nested_text("m1", 1100)),
            ("session/start", b'{"v":1,"id":"s1","intention":%s}' % nested(1200)),
            ("marker", valid),
        ],
        expect=4,
    )
    assert len(results) == 4, results
    by_id = {r["id"]: r for r in results}
    deep = f"payload is nested more than {MAX_COMMAND_DEPTH} levels deep"
    assert (by_id[None]["status"], by_id[None]["error"]) == ("error", deep)
    assert (by_id["m1"]["status"], by_id["m1"]["error"]) == ("error", deep)
    assert (by_id["s1"]["status"], by_id["s1"]["error"]) == ("error", deep)
    assert by_id["fine"]["status"] == "ok"
    assert [m.text for m in d.store.markers(d.session_id)] == ["still here"]
    assert d.daemon.runtimes[0].session is not None  # session/start changed nothing
    assert d.daemon.runtimes[0].session.session_id == d.session_id
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.mosquitto
async def test_size_is_judged_before_the_payload_is_parsed(
    daemon_on_broker: RunningDaemon,
) -> None:
    """6–7.5 kB of nesting is "command too large", not a RecursionError (the size limit is
    checked first); a large but shallow one still has its id echoed."""
    d = daemon_on_broker
    big = json.dumps({"v": 1, "id": "big", "text": "x" * 5000}).encode()
    results = await send_commands(
        d.host,
        d.port,
        [
            ("marker", nested(3000)),
            ("marker", marker_with_nested_text("n2", 3700)),
            ("marker", big),
        ],
        expect=3,
    )
    assert len(results) == 3, results
    too_large = [r["error"] for r in results]
    assert too_large[0] == "command too large (6000 bytes > 4096)"
    assert re.fullmatch(r"command too large \(\d+ bytes > 4096\)", too_large[1])
    assert [r["id"] for r in results] == [None, "n2", "big"]


@pytest.mark.mosquitto
async def test_an_id_that_is_half_a_character_is_refused_and_the_link_goes_on(
    daemon_on_broker: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """A command whose `id` is a lone surrogate (JSON "\\ud800", or its raw bytes) was
    refused, but echoing that id in the result raised inside the MQTT link: the link ended
    for good, silently (a clean disconnect, so no last will), and the broker kept showing
    the daemon online while nothing was published any more. Now the result carries the id
    with the half character replaced, and the link goes on. Refusals at the link are logged
    once, then at most once a minute (a flood of bad commands was a WARNING line each)."""
    d = daemon_on_broker
    caplog.set_level(logging.WARNING)
    valid = json.dumps({"v": 1, "id": "after", "kind": "note", "text": "still here"}).encode()
    junk = [("marker", b"not json %d" % i) for i in range(30)]
    results = await send_commands(
        d.host,
        d.port,
        [
            ("marker", b'{"v":1,"id":"\\ud800","kind":"note"}'),
            ("marker", b'{"v":1,"id":"x\xed\xa0\x80","kind":"note"}'),
            *junk,
            ("marker", valid),
        ],
        expect=33,
    )
    assert len(results) == 33, results
    assert [(r["id"], r["status"]) for r in results[:2]] == [
        ("\ufffd", "error"),
        ("x\ufffd", "error"),
    ]
    assert all("lone surrogate" in r["error"] for r in results[:2])
    assert (results[-1]["id"], results[-1]["status"]) == ("after", "ok")
    assert [m.text for m in d.store.markers(d.session_id)] == ["still here"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].startswith("1 MQTT command refused"), refused


@pytest.mark.mosquitto
async def test_a_numeric_id_is_echoed_so_the_sender_can_match_the_refusal(
    daemon_on_broker: RunningDaemon,
) -> None:
    """Ids are strings (docs/asyncapi.yaml); ``"id": 42`` is refused, but its result says
    ``"id": "42"`` instead of null, and why."""
    d = daemon_on_broker
    results = await send_commands(
        d.host,
        d.port,
        [
            ("marker", b'{"v":1,"id":42,"kind":"note","text":"n"}'),
            ("marker", b'{"v":1,"id":7.5,"kind":"note"}'),
        ],
        expect=2,
    )
    assert [(r["id"], r["status"]) for r in results] == [("42", "error"), ("7.5", "error")]
    assert results[0]["error"] == 'id: Input should be a valid string (send "42", not 42)'
    assert d.store.markers(d.session_id) == []


@pytest.mark.mosquitto
async def test_an_id_longer_than_64_characters_gets_one_error_result(
    daemon_on_broker: RunningDaemon,
) -> None:
    """An id over 64 characters (``feedback.commands.MAX_ID_CHARS``) gets one error result
    saying so, echoing the id cut to 64 characters (docs/mqtt.md), and stores nothing; 64
    characters go through. (The dashboard refuses it in the same words: tests/test_dashboard.py.)"""
    d = daemon_on_broker
    results = await send_commands(
        d.host,
        d.port,
        [
            ("marker", json.dumps({"v": 1, "id": "a" * 65, "kind": "shame"}).encode()),
            ("marker", json.dumps({"v": 1, "id": "b" * 64, "kind": "doubt"}).encode()),
        ],
        expect=2,
    )
    assert [(r["id"], r["status"], r["error"]) for r in results] == [
        ("a" * 64, "error", "id: String should have at most 64 characters"),
        ("b" * 64, "ok", None),
    ]
    assert [m.kind for m in d.store.markers(d.session_id)] == ["doubt"]


@pytest.mark.mosquitto
async def test_a_command_giving_its_id_twice_is_refused_in_nobodys_name(
    daemon_on_broker: RunningDaemon,
) -> None:
    """``{"id": "a", …, "id": "b"}`` was refused with ``"id": "b"`` in the result: the refusal
    went to whichever id came last, one the sender may never have meant (a sender waiting for
    "b" took it as the answer to its own "b"). Now the result carries no id and says why; a
    key other than the id given twice still echoes the id; nothing is stored."""
    d = daemon_on_broker
    results = await send_commands(
        d.host,
        d.port,
        [
            ("marker", b'{"v":1,"id":"a","kind":"note","id":"b"}'),
            ("marker", b'{"v":1,"id":"c","kind":"note","kind":"shame"}'),
        ],
        expect=2,
    )
    assert [(r["id"], r["status"], r["error"]) for r in results] == [
        (None, "error", "key 'id' appears twice (this result echoes neither)"),
        ("c", "error", "key 'kind' appears twice"),
    ]
    assert d.store.markers(d.session_id) == []


def test_an_id_given_twice_is_echoed_by_no_refusal() -> None:
    """The same for every refusal judged before the duplicate key (retained, too large) and
    for a command sent without a name: none echoes the last of two ids."""
    twice = b'{"v":1,"id":"a","id":"b","kind":"note"}'
    large = b'{"v":1,"id":"a","id":"b","text":"%s"}' % (b"x" * 5000)
    screened = [
        screen_command("marker", twice, True),
        screen_command("marker", large, False),
        screen_nameless(f"settle/{DEV}/cmd", twice),
    ]
    assert [s.id for s in screened] == [None, None, None]
    # An "id" twice in a nested object is not the command's id: echoed, and not said to be
    # echoed by neither.
    nested = screen_command("marker", b'{"v":1,"id":"a","x":{"id":1,"id":2}}', False)
    assert (nested.id, nested.error) == ("a", "key 'id' appears twice")
    assert all(s.error for s in screened)
    assert screen_command("marker", large.replace(b'"id":"b",', b""), False).id == "a"


VERSIONS = {"1": b'"v":1,', "none": b"", "1.0": b'"v":1.0,', "1e0": b'"v":1e0,',
            "str": b'"v":"1",', "true": b'"v":true,', "2": b'"v":2,', "1.5": b'"v":1.5,',
            "null": b'"v":null,'}  # fmt: skip


@pytest.mark.mosquitto
async def test_the_daemon_takes_exactly_the_versions_the_contract_takes(
    daemon_on_broker: RunningDaemon,
) -> None:
    """``v`` as docs/asyncapi.yaml has it: ``type: integer, const: 1, default: 1``, not
    required. Left out it is 1; ``1.0`` is the integer 1 to JSON Schema (draft 7, which
    AsyncAPI 3.0 builds on) and to the daemon alike; anything else is one error result naming
    ``v``, and no marker. A sender that validates against the contract is never refused."""
    d = daemon_on_broker
    doc = yaml.safe_load(ASYNCAPI.read_text())
    schema = {**doc, "$ref": "#/components/schemas/MarkerCommand"}
    sent = {k: b'{%s"id":"%s","kind":"note","text":"%s"}' % (v, k.encode(), k.encode())
            for k, v in VERSIONS.items()}  # fmt: skip
    results = await send_commands(
        d.host, d.port, [("marker", p) for p in sent.values()], expect=len(sent)
    )
    by_id = {r["id"]: r for r in results}
    for key, payload in sent.items():
        valid = jsonschema.Draft7Validator(schema).is_valid(json.loads(payload))
        assert (by_id[key]["status"] == "ok") == valid, (key, by_id[key])
        if not valid:
            assert by_id[key]["error"].startswith("v: "), by_id[key]
    stored = [m.text for m in d.store.markers(d.session_id)]
    assert stored == ["1", "none", "1.0", "1e0"]


@pytest.mark.mosquitto
async def test_a_command_without_a_name_gets_a_result_that_says_where_to_send_it(
    daemon_on_broker: RunningDaemon,
) -> None:
    """Published to ``settle/<dev>/cmd`` itself (the name forgotten), a command got no result
    at all: its sender waited for its timeout. Now one error result, on ``…/cmd/result``,
    echoing the id and naming the topic to use; nothing is stored."""
    d = daemon_on_broker
    async with aiomqtt.Client(d.host, d.port) as c:
        await c.subscribe(f"settle/{DEV}/cmd/#", qos=1)
        await c.publish(f"settle/{DEV}/cmd", b'{"v":1,"id":"n1","kind":"note"}', qos=1)
        async with asyncio.timeout(15):
            async for m in c.messages:
                if str(m.topic).endswith("/result"):
                    break
    assert str(m.topic) == f"settle/{DEV}/cmd/result"
    result = json.loads(bytes(m.payload))
    assert (result["id"], result["status"]) == ("n1", "error")
    assert result["error"].startswith(f"no command name: publish to settle/{DEV}/cmd/<name>")
    assert "marker" in result["error"]
    assert d.store.markers(d.session_id) == []


class _Control:
    """A dashboard back end that records the commands that reach it."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    def devices(self) -> list[DeviceView]:
        return []

    def mqtt_state(self) -> str:
        return "off"

    async def command(self, device_id: str, name: str, payload: bytes) -> None:
        self.commands.append(payload)

    async def scan(self, timeout_s: float) -> list[dict[str, Any]]:
        return []

    def remember(self, label: str, address: str, name: str, device_id: str) -> None:
        return None


async def test_dashboard_refuses_nested_json_with_one_line_not_a_server_error(
    tmp_path: Path,
) -> None:
    """The dashboard's command and pair endpoints parsed with json.loads too: deep nesting
    was a 500 and a traceback; now a 400 saying why, and nothing reaches the daemon."""
    control = _Control()
    with SessionStore.open(tmp_path / "s.db") as store:
        cfg = DashboardConfig(host="127.0.0.1", port=0)
        async with (
            Dashboard(Hub("settle"), control, store, cfg) as d,  # type: ignore[arg-type]
            aiohttp.ClientSession(headers={"X-Settle": "1"}) as http,
        ):
            for path, body in [
                ("api/cmd/x/marker", nested(1500)),
                ("api/cmd/x/marker", marker_with_nested_text("m1", 1100)),
                ("api/pair", nested(1500)),
            ]:
                async with http.post(d.url + path, data=body) as r:
                    text = await r.text()
                    assert r.status == 400, (path, r.status, text)
            async with http.post(d.url + "api/cmd/x/marker", data=nested(1500)) as r:
                assert "nested more than 32 levels" in await r.text()
            # A repeated key was taken (the last value won) where MQTT refuses it.
            twice = b'{"kind": "shame", "kind": "note", "text": "x"}'
            async with http.post(d.url + "api/cmd/x/marker", data=twice) as r:
                assert r.status == 400 and "key 'kind' appears twice" in await r.text()
    assert control.commands == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ax,:é\n'),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\a'), children, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(value=json_values)
def test_decode_json_agrees_with_json_loads_on_shallow_documents(value: object) -> None:
    """Strings full of brackets, quotes and backslashes never fool the nesting count."""
    payload = json.dumps(value, ensure_ascii=False).encode()
    assert decode_json(payload) == json.loads(payload)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.text(alphabet='[]{}"\\a,:1 ', max_size=3000), depth=st.integers(0, 2500))
def test_screen_never_raises_on_any_payload(text: str, depth: int) -> None:
    """Whatever the bytes: a verdict, never an exception (RecursionError included); what it
    lets through decodes."""
    for payload in (text.encode(), b"[" * depth + text.encode(), text.encode("utf-16")):
        if screen_command("marker", payload, False).error is None:
            decode_json(payload)
    if depth > MAX_COMMAND_DEPTH:
        with pytest.raises(CommandDecodeError, match="nested more than 32 levels"):
            decode_json(nested(depth))


def test_half_a_character_is_refused_over_mqtt_and_a_whole_one_taken() -> None:
    """A lone surrogate (JSON "\\ud800", or its raw bytes) is no text: it cannot be stored
    or sent on (over HTTP it was a 500 and a traceback). Refused as the payload's fault;
    an escaped pair (an emoji) is one character and goes through."""
    for payload in (b'{"kind": "doubt", "text": "\\ud800"}', b'{"text": "\xed\xa0\x80"}',
                    b'{"\\udfff": 1}'):  # fmt: skip
        assert "lone surrogate" in (screen_command("marker", payload, False).error or "")
    emoji = b'{"kind": "doubt", "text": "\\ud83d\\ude00"}'
    assert screen_command("marker", emoji, False).error is None
    assert decode_json(emoji)["text"] == "\U0001f600"


def test_nan_and_infinity_are_not_json() -> None:
    """Python's json reads NaN and Infinity, which JSON does not have: `{"id": NaN}` was
    refused as "not a string" with the id echoed as "NaN", and a NaN anywhere else in a
    command went on to validation. Now the payload is not JSON, and says why."""
    for word in ("NaN", "Infinity", "-Infinity"):
        screened = screen_command("marker", b'{"v":1,"id":%s,"kind":"note"}' % word.encode(), False)
        assert screened.error == f"payload is not valid JSON ({word} is not a JSON number)"
        assert screened.id is None
        with pytest.raises(CommandDecodeError, match="not a JSON number"):
            decode_json(b'{"text": [1, %s]}' % word.encode())


@pytest.mark.parametrize(
    "name, payload, verdict",
    [
        ("marker", {"kind": "shame", "text": "came back\r\nat 5 min\twhile holding"}, None),
        ("marker", {"kind": "note", "text": "nul\x00"}, "control character '\\x00'"),
        ("marker", {"kind": "note", "text": "\x1b[2J cleared"}, "control character '\\x1b'"),
        ("session/start", {"intention": {"target": "self", "statement": "I am\nsafe"}},
         "control character '\\n'"),
        ("marker", {"kind": "note", "text": "csi\x9b31m red"}, "control character '\\x9b'"),
        ("marker", {"kind": "note", "text": "next\x85line"}, "control character '\\x85'"),
        ("session/start", {"intention": {"target": "self", "statement": "I am\u2028safe"}},
         "control character '\\u2028'"),
        ("marker", {"kind": "note", "text": "un\u00e9 \u00a0ok"}, None),
        ("marker", {"id": "two\nlines", "kind": "note"}, "control character '\\n'"),
    ],
)  # fmt: skip
def test_control_characters_stay_out_of_markers_and_intentions(
    name: str, payload: dict[str, Any], verdict: str | None
) -> None:
    """A NUL or an escape sequence in a marker's text (from any MQTT client or the HTTP
    route) went verbatim into the CSV export and the report; a statement is one line. A
    note keeps its tabs and line breaks (CR, LF), not C1 controls (U+009B is a terminal's
    escape too) nor the Unicode line separators; an id is one line."""
    from pydantic import ValidationError

    from feedback.payloads import COMMANDS

    body = {"id": "c1", **payload}
    if verdict is None:
        COMMANDS[name].model_validate(body)
    else:
        with pytest.raises(ValidationError, match=re.escape(verdict)):
            COMMANDS[name].model_validate(body)


# -- 3: the command-line client is light and quick ------------------------------------------

HEAVY = ("settle.app", "settle.daemon", "scipy", "feedback.dashboard", "sessions.report")


async def _settle(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "settle.cli", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or ENV,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.mosquitto
async def test_mark_imports_nothing_of_the_daemon(daemon_on_broker: RunningDaemon) -> None:
    """`settle mark` used to import settle.app (scipy, the dashboard, the daemon: ~1.8 s on a
    small machine) before sending; the marker landed that much later."""
    d = daemon_on_broker
    script = (
        "import json, sys\n"
        "from settle.cli import main\n"
        f"sys.argv = ['settle', 'mark', 'quick', '--mqtt', '{d.host}:{d.port}']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        f"heavy = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    out, err = await proc.communicate()
    lines = out.decode().strip().splitlines()
    assert lines[0] == f"note: ok ({DEV})", (out, err)
    assert json.loads(lines[-1]) == {"code": 0, "heavy": []}
    assert [m.text for m in d.store.markers(d.session_id)] == ["quick"]


async def _retain(host: str, port: int, messages: dict[str, bytes]) -> None:
    async with aiomqtt.Client(host, port) as c:
        for topic, payload in messages.items():
            await c.publish(topic, payload, qos=1, retain=True)


def _running(dev: str) -> bytes:
    return json.dumps({"id": f"s-{dev}", "state": "running", "device": dev}).encode()


@pytest.mark.mosquitto
async def test_device_discovery_returns_once_the_retained_state_is_in(
    any_broker: tuple[str, int, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Discovery used to wait a fixed second. Now it returns as soon as the broker has sent
    what it retains, and misses nothing: with 25 running straps it names all 25 (mosquitto
    and the embedded amqtt broker). The quiet period it would otherwise wait for is made
    30 s here, so a return within 10 s can only be the early one (no tight timing)."""
    import settle.cli

    monkeypatch.setattr(settle.cli, "RETAINED_QUIET_S", 30.0)
    host, port, _ = any_broker
    devices = [f"strap_{i:02d}" for i in range(25)]
    retained = {"settle/bridge/state": b"online"}
    for dev in devices:
        retained[f"settle/{dev}/availability"] = b"online"
        retained[f"settle/{dev}/session"] = _running(dev)
    await _retain(host, port, retained)
    options = ConnectOptions(host, port)
    async with aiomqtt.Client(**options.client_kwargs()) as client:
        with pytest.raises(SettleError) as exc:
            async with asyncio.timeout(10):
                await _find_device(client, "settle", need_session=True)
    assert str(exc.value) == (
        f"several devices are active ({', '.join(devices)}); pick --device, or --all"
    )

    # One strap left running: that one, as quickly.
    await _retain(host, port, {f"settle/{dev}/session": b"" for dev in devices[1:]})
    async with aiomqtt.Client(**options.client_kwargs()) as client, asyncio.timeout(10):
        found = await _find_device(client, "settle", need_session=True)
    assert found == devices[0]


@pytest.mark.mosquitto
async def test_all_sends_to_every_running_strap_together(mosquitto: Mosquitto) -> None:
    """A coach starting a group's hold needed one `settle mark --device` per strap, which
    put the markers 1-2 s apart. `--all` sends to every strap with a running session (not
    to one merely connected), back to back, and reports each result; a refusal by one strap
    is an error naming it, after the others' confirmations."""
    host, port = mosquitto.host, mosquitto.port
    await _retain(host, port, {
        "settle/bridge/state": b"online",
        **{f"settle/{d}/availability": b"online" for d in ("ghost_1", "ghost_2", "idle_3")},
        "settle/ghost_1/session": _running("ghost_1"),
        "settle/ghost_2/session": _running("ghost_2"),
    })  # fmt: skip
    arrived: list[tuple[str, float]] = []
    refuse: set[str] = set()

    async def answer(c: aiomqtt.Client) -> None:
        async for m in c.messages:
            dev = str(m.topic).split("/")[1]
            arrived.append((dev, time.monotonic()))
            cmd = json.loads(bytes(m.payload))
            status = "error" if dev in refuse else "ok"
            res = {"v": 1, "id": cmd["id"], "status": status,
                   "error": "no session is running" if dev in refuse else None}  # fmt: skip
            await c.publish(f"{m.topic}/result", json.dumps(res), qos=1)

    async with aiomqtt.Client(host, port) as c:
        await c.subscribe("settle/+/cmd/marker", qos=1)
        task = asyncio.create_task(answer(c))
        where = f"{host}:{port}"
        code, out, err = await _settle("mark", "--kind", "hold-start", "--all", "--mqtt", where)
        assert (code, err) == (0, "")
        assert out.splitlines() == ["hold-start: ok (ghost_1)", "hold-start: ok (ghost_2)"]
        assert sorted(d for d, _ in arrived) == ["ghost_1", "ghost_2"]  # not the idle strap
        assert abs(arrived[0][1] - arrived[1][1]) < 0.5

        refuse.add("ghost_2")
        code, out, err = await _settle("mark", "x", "--all", "--mqtt", where)
        assert code == 1
        assert out.splitlines() == ["note: ok (ghost_1)"]
        assert err.splitlines() == [
            "settle: error: the daemon refused marker for 1 of 2 straps (ghost_2: no session "
            "is running)"
        ]
        task.cancel()
    code, out, err = await _settle("mark", "x", "--all", "--device", "ghost_1", "--mqtt", where)
    assert (code, out, err.splitlines()) == (2, "", ["settle: error: --all and --device: pick one"])


@pytest.mark.mosquitto
async def test_an_unknown_device_answer_waits_for_the_daemon_that_has_the_strap(
    mosquitto: Mosquitto,
) -> None:
    """Two daemons on one base, one of them a Settle that answers for every strap (an older
    version, or one that has not yet heard what the other serves): its `unknown device`
    came first, and `settle mark` reported the stored marker refused (exit 1), `--all`
    "refused for 2 of 3 straps". Now such an answer is final only when no `ok` follows
    within a grace; alone, it is still the refusal it was, not a timeout."""
    host, port = mosquitto.host, mosquitto.port
    devs = ("anna_1", "ben_2")
    await _retain(host, port, {
        "settle/bridge/state": b"online",
        **{f"settle/{d}/availability": b"online" for d in devs},
        **{f"settle/{d}/session": _running(d) for d in devs},
    })  # fmt: skip
    serving: set[str] = set(devs)

    async def two_daemons(c: aiomqtt.Client) -> None:
        async for m in c.messages:
            dev = str(m.topic).split("/")[1]
            cmd_id = json.loads(bytes(m.payload))["id"]
            unknown = {"v": 1, "id": cmd_id, "status": "error",
                       "error": f"unknown device '{dev}'"}  # fmt: skip
            await c.publish(f"{m.topic}/result", json.dumps(unknown), qos=1)
            if dev in serving:  # the daemon with the strap, a moment later
                await asyncio.sleep(0.2)
                ok = {"v": 1, "id": cmd_id, "status": "ok", "error": None, "stored": True}
                await c.publish(f"{m.topic}/result", json.dumps(ok), qos=1)

    where = f"{host}:{port}"
    async with aiomqtt.Client(host, port) as c:
        await c.subscribe("settle/+/cmd/marker", qos=1)
        task = asyncio.create_task(two_daemons(c))
        code, out, err = await _settle("mark", "x", "--device", "anna_1", "--mqtt", where)
        assert (code, out, err) == (0, "note: ok (anna_1)\n", "")
        code, out, err = await _settle("mark", "x", "--all", "--mqtt", where)
        assert (code, out.splitlines(), err) == (0, ["note: ok (anna_1)", "note: ok (ben_2)"], "")

        serving.discard("ben_2")  # nobody serves it now: the refusal stands
        code, out, err = await _settle("mark", "x", "--all", "--mqtt", where)
        assert (code, out.splitlines()) == (1, ["note: ok (anna_1)"])
        assert err.splitlines() == [
            "settle: error: the daemon refused marker for 1 of 2 straps (ben_2: unknown device "
            "'ben_2')"
        ]
        code, out, err = await _settle("mark", "x", "--device", "ben_2", "--mqtt", where)
        assert (code, out) == (1, "")
        assert err.splitlines() == [
            "settle: error: the daemon refused marker: unknown device 'ben_2'"
        ]
        task.cancel()


# -- 4: --timeout ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["mark", "x", "--timeout", "0"],
        ["mark", "x", "--timeout", "-1"],
        ["mark", "x", "--timeout", "nan"],
        ["session", "stop", "--timeout", "0.1"],
        ["baseline", "start", "--timeout", "0"],
        ["forget", "dev_1", "--timeout", "0"],
    ],
)
async def test_a_timeout_under_half_a_second_is_one_line_and_exit_2(args: list[str]) -> None:
    """Used to be accepted, and ended in paho/asyncio tracebacks ("Event loop is closed")."""
    code, out, err = await _settle(*args, "--mqtt", "127.0.0.1:1")
    value = args[-1]
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"settle: error: --timeout: expected 0.5 to 3600 seconds, got {float(value):g}"
    ]


@pytest.mark.mosquitto
async def test_a_timeout_after_sending_says_the_command_was_sent(mosquitto: Mosquitto) -> None:
    """A daemon is online but does not answer in time: the marker was published, so the user
    must not be told there is no daemon (they would send it again: a duplicate marker)."""
    host, port = mosquitto.host, mosquitto.port
    await _retain(
        host, port, {"settle/bridge/state": b"online", "settle/ghost_1/availability": b"online"}
    )
    seen: list[bytes] = []
    async with aiomqtt.Client(host, port) as c:
        await c.subscribe("settle/ghost_1/cmd/marker", qos=1)
        code, _, err = await _settle(
            "mark", "x", "--device", "ghost_1", "--timeout", "1", "--mqtt", f"{host}:{port}"
        )
        async with asyncio.timeout(5):
            async for m in c.messages:
                seen.append(bytes(m.payload))
                break
    assert code == 1
    assert err.splitlines() == [
        "settle: error: marker sent to ghost_1, but no confirmation from the daemon within 1 s: "
        "it may still have been carried out (check before sending it again)"
    ]
    assert json.loads(seen[0])["text"] == "x"


@pytest.mark.mosquitto
async def test_with_device_but_no_daemon_nothing_is_sent(mosquitto: Mosquitto) -> None:
    host, port = mosquitto.host, mosquitto.port
    await _retain(host, port, {"settle/bridge/state": b"offline"})
    async with aiomqtt.Client(host, port) as c:
        await c.subscribe("settle/ghost_1/cmd/#", qos=1)
        t0 = time.monotonic()
        code, _, err = await _settle("mark", "x", "--device", "ghost_1", "--mqtt", f"{host}:{port}",
                                     "--timeout", "120")  # fmt: skip
        took_s = time.monotonic() - t0
        await asyncio.sleep(0.3)  # what the broker forwards has arrived by now
        assert len(c.messages) == 0  # nothing was published
    assert code == 1
    assert err.splitlines() == [
        f"settle: error: no Settle daemon is online on the MQTT broker mqtt://{host}:{port} "
        "(start `settle demo` or `settle run`, or point --mqtt at the broker it uses)"
    ]
    # It says so once the broker's retained state is in, not after the whole --timeout (a
    # wide margin: a subprocess start on a loaded machine takes seconds).
    assert took_s < 60


@pytest.mark.mosquitto
async def test_device_takes_a_paired_label_and_an_unknown_name_is_refused(
    daemon_on_broker: RunningDaemon, tmp_path: Path
) -> None:
    """`settle pair --label anna` named a strap nowhere after pairing: `settle mark x
    --device anna` was sent to a device "anna" and refused as "unknown device 'anna'",
    without saying which straps there are."""
    from settle.pairing import remember

    d = daemon_on_broker
    where = f"{d.host}:{d.port}"
    straps = tmp_path / "straps.json"
    remember("Anna", "AA:BB:CC:DD:EE:01", "Hardening", DEV, straps)
    env = {**ENV, "SETTLE_PAIRED_FILE": str(straps)}
    code, out, err = await _settle("mark", "x", "--device", "anna", "--mqtt", where, env=env)
    assert (code, out.strip()) == (0, f"note: ok ({DEV})"), err
    assert [m.text for m in d.store.markers(d.session_id)] == ["x"]
    code, out, err = await _settle("mark", "y", "--device", "bob", "--mqtt", where, env=env)
    assert code == 1
    assert err.splitlines() == [
        f"settle: error: no strap 'bob' on this daemon (it serves {DEV}; --device takes a "
        "device id or a label from `settle pair --list`)"
    ]
    assert [m.text for m in d.store.markers(d.session_id)] == ["x"]


@pytest.mark.mosquitto
async def test_an_unknown_device_names_only_the_straps_the_daemon_online_serves(
    mosquitto: Mosquitto,
) -> None:
    """`settle mark --device nobody` said "it serves …" listing every strap the broker
    retained a state of: of earlier runs and of other daemons long stopped (the demo's).
    Now it names those of the daemon online (its bridge/info, any strap connected or with a
    running session) and counts the rest."""
    host, port = mosquitto.host, mosquitto.port
    info = {"v": 1, "ts": 1, "version": "0", "broker": "external", "devices": ["live_1"],
            "config": {}, "client_id": "settle-x"}  # fmt: skip
    await _retain(host, port, {
        "settle/bridge/info": json.dumps(info).encode(),
        "settle/live_1/availability": b"offline",  # reconnecting: still served
        "settle/live_2/availability": b"online",  # another daemon's, connected
        "settle/live_3/session": _running("live_3"),
        "settle/old_1/availability": b"offline",
        "settle/old_1/session": json.dumps({"id": "s", "state": "stopped"}).encode(),
        "settle/old_2/session": json.dumps({"id": "t", "state": "interrupted"}).encode(),
        "settle/bridge/state": b"online",
    })  # fmt: skip
    code, _, err = await _settle("mark", "x", "--device", "nobody", "--mqtt", f"{host}:{port}")
    assert code == 1
    assert err.splitlines() == [
        "settle: error: no strap 'nobody' on this daemon (it serves live_1, live_2, live_3; the "
        "broker also retains 2 other straps, of earlier runs or other daemons; --device takes "
        "a device id or a label from `settle pair --list`)"
    ]


@pytest.mark.mosquitto
async def test_mark_takes_a_kind_in_any_case_as_the_journal_does(
    daemon_on_broker: RunningDaemon,
) -> None:
    """`settle mark --kind Shame` was refused ("unknown marker kind 'Shame'", exit 2) while
    `--target Self` and a journal's `Shame:` or `Hold start:` were taken in any case."""
    d = daemon_on_broker
    where = f"{d.host}:{d.port}"
    for kind, name in [
        ("Shame", "shame"),
        ("HOLD START", "hold-start"),
        ("hold_lapse", "hold-lapse"),
    ]:
        code, out, err = await _settle(
            "mark", "x", "--kind", kind, "--device", DEV, "--mqtt", where
        )
        assert (code, out.strip()) == (0, f"{name}: ok ({DEV})"), err
    assert [m.kind for m in d.store.markers(d.session_id)] == ["shame", "hold-start", "hold-lapse"]
    code, _, err = await _settle("mark", "x", "--kind", "Anger", "--device", DEV, "--mqtt", where)
    assert code == 2
    assert err.splitlines() == [
        "settle: error: --kind: unknown marker kind 'Anger' (one of: hold-start, hold-lapse, "
        "hold-resume, shame, threat, discomfort, attention, doubt, note)"
    ]


# -- 5: UTF-8 -------------------------------------------------------------------------------------


@pytest.mark.mosquitto
async def test_mark_sends_utf8_so_a_long_cyrillic_note_fits(
    daemon_on_broker: RunningDaemon,
) -> None:
    """With \\uXXXX escapes (6 bytes a character) a note hit the 4 KiB limit at ~680
    characters; as UTF-8, 1500 Cyrillic and 100 CJK characters are ~3.4 kB."""
    d = daemon_on_broker
    note = "Ж" * 1500 + "的" * 100
    where = f"{d.host}:{d.port}"
    code, out, err = await _settle("mark", note, "--device", DEV, "--mqtt", where)
    assert (code, out.strip()) == (0, f"note: ok ({DEV})"), err
    assert [m.text for m in d.store.markers(d.session_id)] == [note]
    # Too long even as UTF-8 (2000 CJK characters, 6 kB): said before anything is sent.
    code, out, err = await _settle("mark", "的" * 2000, "--device", DEV, "--mqtt", where)
    assert code == 2
    assert err.splitlines() == [
        "settle: error: too long to send: the command is 6058 bytes as UTF-8, the daemon takes "
        "at most 4096"
    ]


# -- 6: forget -----------------------------------------------------------------------------------


@pytest.mark.mosquitto
async def test_forget_also_clears_retained_commands(mosquitto: Mosquitto) -> None:
    """A command published with the retain flag is refused by the daemon but kept by the
    broker; `settle forget` used to leave it there (it looked at `<dev>/+` only)."""
    host, port = mosquitto.host, mosquitto.port
    stale = json.dumps({"v": 1, "id": "old", "kind": "shame"}).encode()
    await _retain(
        host,
        port,
        {
            "settle/bridge/state": b"offline",
            "settle/old_1/availability": b"offline",
            "settle/old_1/session": json.dumps({"state": "stopped"}).encode(),
            "settle/old_1/cmd/marker": stale,
            "settle/old_1/cmd/session/start": b'{"v":1,"id":"s"}',
            "settle/other_1/cmd/marker": stale,
        },
    )

    done = asyncio.Event()

    async def beats() -> None:  # live traffic under old_1/# must not hold forget up
        async with aiomqtt.Client(host, port) as c:
            while not done.is_set():
                await c.publish("settle/old_1/beat", b'{"hr":60}', qos=0)
                await asyncio.sleep(0.01)

    # Stopped by an event, not by cancel(): under load aiomqtt 2.5.1 sometimes swallowed the
    # cancellation and the await below waited until the test timed out.
    beating = asyncio.create_task(beats())
    try:
        code, out, err = await _settle("forget", "old_1", "--mqtt", f"{host}:{port}")
    finally:
        done.set()
        await beating
    assert (code, out.strip()) == (
        0,
        "forgot old_1: cleared 4 retained messages; no Home Assistant discovery config was "
        "visible (none retained, or this account may not read homeassistant/#)",
    ), err
    left: dict[str, bytes] = {}
    async with aiomqtt.Client(host, port) as c:
        await c.subscribe("settle/#", qos=1)
        try:
            async with asyncio.timeout(1):
                async for m in c.messages:
                    left[str(m.topic)] = bytes(m.payload)
        except TimeoutError:
            pass
    assert sorted(left) == ["settle/bridge/state", "settle/other_1/cmd/marker"]


# -- 7: docs ---------------------------------------------------------------------------------------


def _documented_acl() -> str:
    text = DOCS.read_text()
    block = text.split("A minimal mosquitto ACL", 1)[1]
    return block.split("```", 2)[1].strip() + "\n"


@pytest.fixture
def documented_acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto with users ``settle`` and ``dashboard`` (password: user + ``-pw``) under
    the ACL docs/mqtt.md gives."""
    pw = tmp_path / "passwd"
    pw.touch(mode=0o600)
    for user in ("settle", "dashboard"):
        subprocess.run(["mosquitto_passwd", "-b", str(pw), user, f"{user}-pw"], check=True)
    acl = tmp_path / "acl"
    acl.write_text(_documented_acl())
    broker = start_mosquitto(
        tmp_path, extra_conf=f"password_file {pw}\nacl_file {acl}\n", anonymous=False
    )
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.mosquitto
async def test_documented_acl_lets_the_dashboard_send_commands_but_not_forge_results(
    documented_acl_broker: Mosquitto,
) -> None:
    """The ACL in docs/mqtt.md, on a real mosquitto: the dashboard user may send every command
    and read everything, but may not publish a command's result (or data)."""
    broker = documented_acl_broker
    allowed = [f"settle/d1/cmd/{name}" for name in COMMANDS]
    forged = [f"{t}/result" for t in allowed] + ["settle/d1/indices", "settle/d1/cmd/x/y"]
    seen: list[str] = []
    async with (
        aiomqtt.Client(broker.host, broker.port, username="settle", password="settle-pw") as s,
        aiomqtt.Client(
            broker.host, broker.port, username="dashboard", password="dashboard-pw"
        ) as dash,
    ):
        await s.subscribe("settle/#", qos=1)
        await dash.subscribe("settle/+/cmd/+/result", qos=1)
        await s.publish("settle/d1/cmd/marker/result", b"{}", qos=1)  # the daemon may
        for topic in [*forged, *allowed]:  # the last allowed one arrives last
            await dash.publish(topic, b"{}", qos=1)
        async with asyncio.timeout(10):
            async for m in s.messages:
                seen.append(str(m.topic))
                if str(m.topic) == allowed[-1]:
                    break
        async with asyncio.timeout(10):  # the dashboard user reads the daemon's result
            async for m in dash.messages:
                assert str(m.topic) == "settle/d1/cmd/marker/result"
                break
    assert seen == ["settle/d1/cmd/marker/result", *allowed]


@pytest.mark.mosquitto
async def test_forget_as_an_account_that_may_not_publish_says_nothing_was_cleared(
    documented_acl_broker: Mosquitto,
) -> None:
    """`settle forget` as the dashboard user of the documented ACL, who may read `settle/#`
    but publish commands only: over MQTT 3.1.1 mosquitto acknowledges a denied publish and
    drops it, and forget said "cleared 3 retained messages", exit 0, while all of them
    stayed. Now it reads them back and says what is still there (exit 1), and that no
    discovery config was visible to this account (it may not read homeassistant/#). As the
    daemon's own account the same command clears everything."""
    broker = documented_acl_broker
    kept = {
        "settle/bridge/state": b"offline",
        "settle/old_1/availability": b"offline",
        "settle/old_1/session": json.dumps({"state": "stopped"}).encode(),
        "homeassistant/sensor/old_1/heart_rate/config": b'{"name": "Heart rate"}',
    }
    async with aiomqtt.Client(
        broker.host, broker.port, username="settle", password="settle-pw"
    ) as c:
        for topic, payload in kept.items():
            await c.publish(topic, payload, qos=1, retain=True)

    async def forget(user: str) -> tuple[int, str, str]:
        env = {**ENV, "SETTLE_MQTT__USERNAME": user, "SETTLE_MQTT__PASSWORD": f"{user}-pw"}
        return await _settle("forget", "old_1", "--mqtt", f"{broker.host}:{broker.port}", env=env)

    async def held() -> set[str]:
        seen: set[str] = set()
        async with aiomqtt.Client(
            broker.host, broker.port, username="settle", password="settle-pw"
        ) as c:
            await c.subscribe("#", qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    async for m in c.messages:
                        seen.add(str(m.topic))
        return seen

    code, out, err = await forget("dashboard")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "settle: error: old_1: cleared 0 of 2 retained messages; the broker still holds 2 "
        "(settle/old_1/availability, settle/old_1/session): its ACL may not let 'dashboard' "
        "publish there; no Home Assistant discovery config was visible (none retained, or "
        "this account may not read homeassistant/#)"
    ]
    assert await held() == set(kept)

    code, out, err = await forget("settle")
    assert (code, out, err) == (0, "forgot old_1: cleared 3 retained messages\n", "")
    assert await held() == {"settle/bridge/state"}


def test_docs_state_the_command_limits_the_models_enforce() -> None:
    text = " ".join(DOCS.read_text().split())
    limits = {
        "`id` 1–64 characters": MarkerCommand.model_fields["id"],
        "`text` at most 2000 characters": MarkerCommand.model_fields["text"],
        "`intention.target` 1–64": Intention.model_fields["target"],
        "`intention.statement` at most 500": Intention.model_fields["statement"],
        "`intention.practice` at most 100": Intention.model_fields["practice"],
    }
    for phrase, field in limits.items():
        assert phrase in text, phrase
        max_len = next(m.max_length for m in field.metadata if hasattr(m, "max_length"))
        assert str(max_len) in phrase
    assert "4096 bytes of UTF-8" in text


def test_docs_quote_the_real_baseline_messages() -> None:
    """The docs said a marked baseline is too short only below 15 s; the rule also needs 3
    complete snapshots, each with 64 s of beats behind it (the slow-oscillation component)."""
    fake = SimpleNamespace(settings=load_config(CONFIG))
    text = " ".join(DOCS.read_text().split())
    for span_s in (8.0, 40.0):
        message = StrapPipeline._too_short(fake, span_s)  # type: ignore[arg-type]
        assert f'`"{message}"`' in text, message
    assert "64 s of uninterrupted beats" in text
