"""The dashboard, tested in real Chromium (Debian's ``chromium`` through Python playwright).

One scenario runs the real daemon in-process (virtual strap on the bumble link, private
mosquitto, SQLite file) with the dashboard on a free loopback port, and drives the pages as
a practitioner would: the live page shows HR and it moves; a session is started with an
intention; marker buttons and shortcuts land in the store and on MQTT; the pair page lists
the strap; stop; history lists the session, its report opens and its exports download and
parse; the page says so when the strap drops and when the broker is killed. Screenshots at
desktop and phone sizes go to docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import yarl
from aiohttp import web
from rich.console import Console

from feedback.dashboard import (
    Dashboard,
    Hub,
    NoDaemon,
    is_loopback,
    load_or_create_token,
)
from feedback.dashboard import server as server_module
from feedback.dashboard.hub import BACKLOG
from feedback.dashboard.server import STATIC
from sensors.virtual.strap import VirtualStrap
from sessions import read_export_csv
from sessions.store import MarkerRow, SessionState, SessionStore
from settle.app import serve
from settle.config import Settings, load_config
from settle.demo import virtual_world
from settle.errors import ConfigError
from tests.conftest import Mosquitto
from tests.test_e2e import Collector

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CONFIG = Path(__file__).parents[1] / "configs" / "settle.toml"
SHOTS = Path(__file__).parents[1] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

UPLOT_SHA256 = {
    "LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
}
"""uPlot 1.6.32 (MIT), from the npm package ``uplot``: ``dist/`` files and ``LICENSE``."""


def test_vendored_uplot_is_the_pinned_release() -> None:
    vendor = STATIC / "vendor" / "uplot"
    assert sorted(p.name for p in vendor.iterdir()) == sorted(UPLOT_SHA256)
    for name, digest in UPLOT_SHA256.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert "MIT" in (vendor / "LICENSE").read_text()


def test_pages_load_nothing_from_elsewhere() -> None:
    for f in STATIC.glob("*.*"):
        assert not re.search(r"(src|href)=\"(https?:)?//", f.read_text()), f.name


def test_token_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "http-token"
    token = load_or_create_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token
    # A token the user wrote must not be guessable in a few tries (a 1-letter one was taken).
    path.write_text("abc\n")
    with pytest.raises(ConfigError, match="holds a token of 3 characters; use at least 16"):
        load_or_create_token(path)
    path.write_text("x" * 16 + "\n")
    assert load_or_create_token(path) == "x" * 16
    # The page sends it in a header: printable ASCII only, no spaces, at most 512.
    for bad in ("pass word 0123456789", "mot-de-passe-très-long", "x" * 513):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError, match="holds a token the browser cannot send"):
            load_or_create_token(path)
    path.write_text("q2V+Zk9/3xYbT1+Lw0aPq7uR8sC5dE4f=\n")  # base64 is fine
    assert load_or_create_token(path) == "q2V+Zk9/3xYbT1+Lw0aPq7uR8sC5dE4f="
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")


async def test_token_is_required_for_every_stream_and_command_and_set_in_no_cookie(
    dashboard: Any,
) -> None:
    """Pages and their scripts hold no data: served to anyone (a reload must work without the
    token in the address). Everything with data or effect needs the token, sent by the page
    itself; none is ever put in a cookie, which the browser would send to every server on
    the host whatever its port, and an earlier version's cookie is deleted."""
    jar = aiohttp.CookieJar(unsafe=True)  # accept cookies from an IP address, as browsers do
    async with (
        dashboard(token="s3cret-token") as d,
        aiohttp.ClientSession(cookie_jar=jar) as http,
    ):
        for path in ("", "live", "history", "history/x", "static/app.js"):
            async with http.get(d.url + path) as r:
                assert r.status == 200, path
        for path in ("events", "api/state", "api/sessions", "sessions/x/report",
                     "sessions/x/export/csv"):  # fmt: skip
            async with http.get(d.url + path) as r:
                assert r.status == 401, path
                assert (await r.json())["error"] == (
                    "token required: open the URL printed at start-up"
                )
        async with http.post(d.url + "api/cmd/x/marker", headers={"X-Settle": "1"}) as r:
            assert r.status == 401
        async with http.get(d.url + "live?token=s3cret-token") as r:
            assert r.status == 200 and "Set-Cookie" not in r.headers
        async with http.get(d.url + "api/state?token=s3cret-token") as r:
            assert r.status == 200 and "Set-Cookie" not in r.headers
        bearer = {"Authorization": "Bearer s3cret-token"}
        async with http.get(d.url + "api/sessions", headers=bearer) as r:
            assert r.status == 200
        # Either the query or the header will do: a stale ?token= beside the right
        # header was a 401 (the query was the only one looked at).
        wrong = {"Authorization": "Bearer not-the-token"}
        for query, headers, status in (("wrong", bearer, 200), ("s3cret-token", wrong, 200),
                                       ("wrong", wrong, 401)):  # fmt: skip
            async with http.get(f"{d.url}api/state?token={query}", headers=headers) as r:
                assert r.status == status, (query, headers)
        assert not list(jar)
        # The cookie of an earlier version lets nothing in, and is deleted.
        old = {"Cookie": "settle_token=s3cret-token"}
        async with http.get(d.url + "api/state", headers=old) as r:
            assert r.status == 401
            assert r.cookies["settle_token"]["max-age"] == "0"
        # A command needs the header a cross-site form cannot add, token or not.
        async with http.post(d.url + "api/cmd/x/marker", data=b"{}", headers=bearer) as r:
            assert r.status == 403


class _Recorder(NoDaemon):
    """A back end that records each command and answers it ok through the hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub, self.payloads = hub, []  # type: list[bytes]

    async def command(self, device_id: str, name: str, payload: bytes) -> None:
        self.payloads.append(payload)
        cmd_id = json.loads(payload)["id"]
        self.hub.results[cmd_id] = json.dumps({"v": 1, "id": cmd_id, "status": "ok"})


async def test_downloads_hold_every_file_the_cli_writes_and_notes_go_as_utf8(
    dashboard: Any,
    store: SessionStore,
) -> None:
    """History's "bids" zipped only the session's beh/ folder (no dataset_description.json,
    no sub-/ses- tree: not a BIDS dataset), "kubios" left out the markers file; a note in
    Cyrillic was re-encoded with ASCII escapes, six bytes a letter of the 4 KiB limit."""
    from sessions.store import BeatRow, MarkerRow

    sid = store.create_session("dev_1", 1_700_000_000_000, "test", {}).id
    rows = [BeatRow(i, 0.8 * (i + 1), 1_700_000_000_000 + 800 * (i + 1), 800.0, None, 75,
                    None) for i in range(60)]  # fmt: skip
    store.add_beats(sid, rows)
    store.add_marker(sid, MarkerRow(10.0, 1_700_000_010_000, "shame", "it came back", "cli"))
    store.finish_session(sid, 1_700_000_048_000)
    hub = Hub("settle")
    back = _Recorder(hub)
    async with (
        dashboard(hub, back) as d,
        aiohttp.ClientSession(headers={"X-Settle": "1"}) as http,
    ):
        names = {}
        for fmt in ("bids", "kubios"):
            async with http.get(f"{d.url}sessions/{sid}/export/{fmt}") as r:
                assert r.status == 200, await r.text()
                body = await r.read()
            names[fmt] = sorted(zipfile.ZipFile(io.BytesIO(body)).namelist())
        ses = "ses-" + sid.replace("-", "")
        assert "dataset_description.json" in names["bids"]
        assert f"sub-01/{ses}/beh/sub-01_{ses}_task-settle_events.tsv" in names["bids"]
        assert names["kubios"] == [f"settle-{sid}-rr.txt", f"settle-{sid}-rr_markers.csv"]
        # Each person under their own subject (History's "BIDS subject" field): every
        # download used to land in sub-01, so two straps' wearers merged into one.
        async with http.get(f"{d.url}sessions/{sid}/export/bids?subject=p07") as r:
            assert r.status == 200, await r.text()
            got = zipfile.ZipFile(io.BytesIO(await r.read())).namelist()
        assert f"sub-p07/{ses}/beh/sub-p07_{ses}_task-settle_events.tsv" in got
        for bad, why in [
            ("bids?subject=a-b", "subject: "),
            ("csv?subject=02", "bids export only"),
        ]:
            async with http.get(f"{d.url}sessions/{sid}/export/{bad}") as r:
                assert r.status == 400 and why in await r.text()
        note = "щ" * 1500  # 3000 bytes in UTF-8; 9000 as ASCII escapes
        body = json.dumps({"kind": "note", "text": note}, ensure_ascii=False).encode()
        async with http.post(f"{d.url}api/cmd/dev_1/marker", data=body) as r:  # as a page
            assert r.status == 200, await r.text()
        (sent,) = back.payloads
        assert note.encode() in sent and len(sent) < 4096
        # Too large for the dashboard: refused in the same JSON as every other refusal
        # (aiohttp's own answer was a line of plain text the page could not read).
        body = json.dumps({"kind": "note", "text": "的" * 1500}, ensure_ascii=False).encode()
        async with http.post(f"{d.url}api/cmd/dev_1/marker", data=body) as r:
            assert r.status == 413 and (await r.json())["error"] == (
                "request too large: a command takes at most 4096 bytes"
            )
        assert len(back.payloads) == 1
        # An unknown session's report (shown in the history frame) is a sentence, not
        # the raw JSON error document.
        async with http.get(f"{d.url}sessions/nope/report") as r:
            assert r.status == 404 and r.content_type == "text/html"
            assert "no session matches &#x27;nope&#x27;" in await r.text()


async def test_a_command_with_a_number_out_of_range_is_a_400_and_reaches_no_daemon(
    dashboard: Any,
) -> None:
    """``{"kind": "shame", "x": 1e999}``: the number reads as infinity, which was handed on
    as ``Infinity`` (no JSON), and the daemon refused it without a result: a 500 "the daemon
    gave no result". It is refused at the route with a one-line 400 naming where."""
    hub = Hub("settle")
    back = _Recorder(hub)
    post = {"X-Settle": "1"}
    async with dashboard(hub, back) as d, aiohttp.ClientSession(headers=post) as http:
        for body, where in (
            (b'{"kind": "shame", "x": 1e999}', "'x'"),
            (b'{"kind": "note", "extra": {"a": [1, -1e400]}}', "'extra.a[1]'"),
        ):
            async with http.post(d.url + "api/cmd/dev/marker", data=body) as r:
                assert r.status == 400
                assert (await r.json())["error"] == (
                    f"number out of range at {where} (at most about 1.8e308)"
                )
        assert back.payloads == []
        async with http.post(d.url + "api/cmd/dev/marker", data=b'{"kind": "shame"}') as r:
            assert r.status == 200  # a command without one goes on as before
        assert len(back.payloads) == 1


async def test_a_command_id_longer_than_64_characters_is_a_400_and_reaches_no_daemon(
    dashboard: Any,
) -> None:
    """An ``id`` of 65 characters or more was handed to the daemon, which answers with the
    id cut to 64 (``feedback.commands.MAX_ID_CHARS``); with a back end that echoes the id as
    sent the route found no result: a 500 "the daemon gave no result". It is refused at the
    route with a one-line 400 in the daemon's words, as a non-string id is; 64 characters
    go through."""
    hub = Hub("settle")
    back = _Recorder(hub)  # echoes the id as sent
    post = {"X-Settle": "1"}
    async with dashboard(hub, back) as d, aiohttp.ClientSession(headers=post) as http:
        for n in (65, 300):
            body = json.dumps({"id": "x" * n, "kind": "shame"}).encode()
            async with http.post(d.url + "api/cmd/dev/marker", data=body) as r:
                assert r.status == 400
                assert (await r.json())["error"] == "id: String should have at most 64 characters"
        assert back.payloads == []
        body = json.dumps({"id": "x" * 64, "kind": "shame"}).encode()
        async with http.post(d.url + "api/cmd/dev/marker", data=body) as r:
            assert r.status == 200 and (await r.json())["id"] == "x" * 64
        assert len(back.payloads) == 1


async def _read_events(resp: aiohttp.ClientResponse, want: int) -> list[dict[str, Any]]:
    """The page's view: parse the SSE stream until ``want`` data events (health excluded)."""
    got: list[dict[str, Any]] = []
    buf = b""
    async with asyncio.timeout(20):
        while len(got) < want:
            buf += await resp.content.readany()
            *events, buf = buf.split(b"\n\n")
            for ev in events:
                lines = ev.decode().split("\n")
                if any(line.startswith("event:") for line in lines):
                    continue  # health
                got += [json.loads(x[6:]) for x in lines if x.startswith("data: ")]
    return got


@contextlib.asynccontextmanager
async def _live_page(
    dashboard: Any, queue_size: int
) -> AsyncIterator[tuple[Hub, aiohttp.ClientResponse]]:
    """A dashboard (from the ``dashboard`` fixture) with one page reading ``/events``,
    subscribed before this yields."""
    hub = Hub("settle", queue_size=queue_size)
    async with (
        dashboard(hub, token="t") as d,
        aiohttp.ClientSession() as http,
        http.get(d.url + "events?token=t") as r,
    ):
        while not hub.subscribers:  # noqa: ASYNC110 - the page subscribes once connected
            await asyncio.sleep(0.01)
        yield hub, r


async def test_a_burst_reaches_the_page_whole_and_in_order(dashboard: Any) -> None:
    # 300 straps' worth of beats published at once: the page's writer sends what queued up
    # together, yet the page sees every message as its own event, in publication order.
    async with _live_page(dashboard, queue_size=5000) as (hub, r):
        n = 3000
        for i in range(n):
            hub.publish(f"settle/dev{i % 300}/beat", json.dumps({"seq": i // 300}))
        got = await _read_events(r, n)
        assert [(e["topic"], json.loads(e["payload"])["seq"]) for e in got] == [
            (f"dev{i % 300}/beat", i // 300) for i in range(n)
        ]


async def test_a_page_opened_late_gets_every_straps_history_and_its_markers(
    dashboard: Any,
) -> None:
    """With three straps, one shared backlog of 1 200 messages held only the last 6–7 min of
    each strap and no events at all: a marker made early in a group session was gone from a
    page opened (or reloaded) later. Each strap now keeps its own backlog, events apart."""
    hub = Hub("settle")
    straps = ["d1", "d2", "d3"]
    for dev in straps:
        hub.publish(f"settle/{dev}/event", json.dumps({"kind": "shame", "dev": dev}))
    n = 1500  # per strap: more than a strap's backlog
    for i in range(n):
        for dev in straps:
            hub.publish(f"settle/{dev}/beat", json.dumps({"seq": i}))
    async with (
        dashboard(hub, token="t") as d,
        aiohttp.ClientSession() as http,
        http.get(d.url + "events?token=t") as r,
    ):
        got = await _read_events(r, 3 + 3 * BACKLOG)
    events = [json.loads(e["payload"])["dev"] for e in got if e["topic"].endswith("/event")]
    assert events == straps
    for dev in straps:
        seqs = [json.loads(e["payload"])["seq"] for e in got if e["topic"] == f"{dev}/beat"]
        assert seqs == list(range(n - BACKLOG, n))  # ~15 min each, in order


async def test_a_page_that_names_its_strap_gets_only_that_straps_backlog(dashboard: Any) -> None:
    """Every page opened got every strap's backlog, merged by one sort: with 100 straps
    120 000 messages (3.6 s; the event loop held up to 229 ms) to a page that shows one.
    A page that names its strap (``/events?device=<id>``) gets the retained state of every
    strap and that strap's recent beats and events only, then every strap's live messages
    as before; with ``last``, that strap's messages published after it. A name no device
    can have is a 400."""
    hub = Hub("settle")
    straps = ["d1", "d2", "d3"]
    for dev in straps:
        hub.publish(f"settle/{dev}/session", json.dumps({"dev": dev}), retain=True)
        hub.publish(f"settle/{dev}/event", json.dumps({"kind": "shame", "dev": dev}))
    n, mark = 1500, ""
    for i in range(n):
        for dev in straps:
            hub.publish(f"settle/{dev}/beat", json.dumps({"seq": i}))
            if (dev, i) == ("d2", 1400):
                mark = f"{hub.epoch}.{hub._n}"

    def seen(got: list[dict[str, Any]], dev: str, leaf: str) -> list[Any]:
        return [json.loads(e["payload"]).get("seq") for e in got if e["topic"] == f"{dev}/{leaf}"]

    async def meanwhile() -> None:  # while the backlog goes out, chunk by chunk
        for i in range(n, n + 50):
            for dev in ("d1", "d2"):
                hub.publish(f"settle/{dev}/beat", json.dumps({"seq": i}))
            await asyncio.sleep(0)

    async with dashboard(hub) as d, aiohttp.ClientSession() as http:
        async with http.get(d.url + "events?device=d2") as r:
            assert r.status == 200
            await r.content.readuntil(b"retry: 1000\n\n")  # subscribed
            live = asyncio.create_task(meanwhile())
            got = await _read_events(r, 3 + 1 + BACKLOG + 100)
            await live
        assert sorted(json.loads(e["payload"])["dev"] for e in got[:3]) == straps
        assert [e["topic"] for e in got if e["topic"].endswith("/event")] == ["d2/event"]
        assert seen(got, "d2", "beat") == list(range(n - BACKLOG, n + 50))  # once each
        assert seen(got, "d1", "beat") == list(range(n, n + 50))  # live: every strap's
        assert seen(got, "d3", "beat") == []
        async with http.get(d.url + f"events?device=d2&last={mark}") as r:
            got = await _read_events(r, 3 + 149)
        assert [e["topic"] for e in got[3:]] == ["d2/beat"] * 149
        assert seen(got, "d2", "beat") == list(range(1401, n + 50))
        for bad in ("d%2F2", "%23", "d2%00"):
            async with http.get(d.url + f"events?device={bad}") as r:
                assert r.status == 400 and (await r.json())["error"].startswith("unknown device")


async def test_a_page_that_falls_behind_is_told_how_much_it_lost(dashboard: Any) -> None:
    async with _live_page(dashboard, queue_size=100) as (hub, r):
        for i in range(250):  # synchronously: the page cannot read meanwhile
            hub.publish("settle/dev/beat", json.dumps({"seq": i}))
        got = await _read_events(r, 100)
        assert [json.loads(e["payload"])["seq"] for e in got] == list(range(150, 250))
        health = b""
        async with asyncio.timeout(5):
            while b'"dropped": 150' not in health:
                health += await r.content.readany()


def _chromium_or_skip() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} not found (Debian: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextlib.asynccontextmanager
async def _browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def _until(predicate: Any, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _daemon_settings(db: Path, mqtt: dict[str, object]) -> Settings:
    """The example config with the store at ``db``, ``mqtt`` as given, the dashboard on a
    free loopback port and no Home Assistant discovery."""
    return load_config(
        CONFIG,
        mqtt=mqtt,
        storage={"db_path": db},
        http={"enabled": True, "host": "127.0.0.1", "port": 0},
        homeassistant={"enabled": False},
    )


_MARKER_PIXELS = """() => {
  // Columns of the tachogram drawn in the marker colour over most of the plot's height are
  // marker lines; count marker-coloured pixels (the labels' text) left of the first one.
  const c = document.querySelector('#tacho canvas');
  const {width: w, height: h} = c;
  const px = c.getContext('2d').getImageData(0, 0, w, h).data;
  const mark = (i) => px[i] > 110 && px[i + 1] > 50 && px[i + 1] < 130 && px[i + 2] < 60
    && px[i] - px[i + 2] > 90 && px[i + 3] > 100;
  const cols = [];
  for (let x = 0; x < w; x++) {
    let n = 0;
    for (let y = 0; y < h; y++) if (mark((y * w + x) * 4)) n++;
    cols.push(n);
  }
  const lines = [];
  cols.forEach((n, x) => { if (n > 0.5 * h) lines.push(x); });
  if (!lines.length) return [[], 0];
  let left = 0;
  for (let x = 0; x < lines[0] - 1; x++) left += cols[x];
  return [lines, left];
}"""


@pytest.mark.mosquitto
@pytest.mark.timeout(120)
async def test_dashboard_in_chromium(tmp_path: Path, mosquitto: Mosquitto) -> None:
    _chromium_or_skip()
    SHOTS.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "settle.db"
    settings = _daemon_settings(
        db, {"host": mosquitto.host, "port": mosquitto.port, "keepalive_s": 5}
    )
    buf = io.StringIO()
    console = Console(file=buf, width=200, highlight=False)
    done = asyncio.Event()
    async with (
        virtual_world(replay=None, speed=4.0, seed=3) as world,
        Collector(mosquitto.host, mosquitto.port) as mqtt,
        _browser() as browser,
    ):
        daemon = asyncio.create_task(
            serve(
                settings,
                **world.serve_kwargs(),
                console=console,
                handle_signals=False,
                finished=[done.wait()],
            ),
            name="daemon-under-test",
        )
        try:
            await _until(lambda: _ready(buf), 15, "the dashboard URL")
            url = re.search(r"http:\s+(http://\S+)", buf.getvalue())
            assert url is not None
            base = url.group(1)
            await _scenario(browser, base, world, mosquitto, mqtt, db)
        finally:
            done.set()
            await asyncio.wait_for(daemon, 20)


async def _ready(buf: io.StringIO) -> bool:
    return "http:    http://" in buf.getvalue() and "session:" in buf.getvalue()


async def _scenario(
    browser: Any, base: str, world: Any, broker: Mosquitto, mqtt: Collector, db: Path
) -> None:
    # bypass_csp: playwright evaluates its wait conditions as strings, which the CSP forbids.
    ctx = await browser.new_context(viewport=DESKTOP, accept_downloads=True, bypass_csp=True)
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # Live: HR is shown and it moves (beats keep arriving into the tachogram).
    await page.goto(base + "live")
    await page.wait_for_function("/^\\d+$/.test(document.getElementById('hr').textContent)")
    n0 = await page.evaluate("Object.values(window.__settle.perDev)[0].t.length")
    await page.wait_for_function(
        f"Object.values(window.__settle.perDev)[0].t.length > {n0 + 3}", timeout=10_000
    )
    assert await page.locator("#conn").text_content() is not None
    assert "streaming" in (await page.locator("#conn").text_content() or "")

    # Session control: start with an intention.
    await page.click("nav >> text=Session")
    await page.select_option("#target", "future")
    await page.fill("#statement", "this will work")
    await page.fill("#practice", "breathing")
    # A session runs (one starts when the strap connects): Start asks before it ends it, and
    # the second click of a double click is no answer (tests/test_dashboard_phone.py).
    await page.dblclick("#start")
    await page.locator("#confirm-end").wait_for(state="visible")
    with SessionStore.open(db) as store:
        assert len(store.list_sessions()) == 1
    await page.click("#confirm-yes")
    await page.wait_for_function(
        "document.getElementById('session-line').textContent.includes('this will work')"
    )
    await _said(page, "session stopped and a new one started")
    with SessionStore.open(db) as store:
        sessions = store.list_sessions()  # the one started on connect, and this one
        running = [s for s in sessions if s.state is SessionState.RUNNING]
        assert len(running) == 1 and len(sessions) == 2, sessions
        sid = running[0].id
        info = store.get(sid)
        assert info.intention is not None and info.intention.statement == "this will work"
        assert info.intention.target.value == "future"

    # With a session running, Start says that it stops it first (it did so silently), and
    # Enter in an intention field does not do it unasked (it did).
    assert await page.locator("#start").text_content() == "Stop this session and start a new one"
    await page.press("#statement", "Enter")
    await _said(page, "Enter does not restart the running session")
    with SessionStore.open(db) as store:
        assert len(store.list_sessions()) == 2

    # The report page of a running session offers no exports (they would hold a part of
    # it; the list already hid them); History says from what the latency counts, rounded
    # as the report says it (125.6 s: "2 min 6 s"; History said 2:05). (Listing
    # and report stubbed: no worker process, no analysis, in this part.)
    done = {"id": "s1", "device_id": "d", "started_ms": 0, "state": "stopped",
            "duration_s": 600, "latency_s": 125.6, "reference": "you began holding",
            "reference_t_s": 124.4, "caught_up_t_s": 250.0, "catching_up": "caught_up",
            "score_change": 3.0}  # fmt: skip
    running = {"id": "s2", "device_id": "d", "started_ms": 0, "state": "running",
               "duration_s": 60}  # fmt: skip
    listing = json.dumps({"v": 1, "sessions": [running, done], "formats": ["csv"]})
    await page.route("**/api/sessions", lambda r: r.fulfill(body=listing))
    stub = "**/sessions/s2/report"
    await page.route(stub, lambda r: r.fulfill(body="", content_type="text/html"))
    await page.evaluate("history.pushState(null, '', '/history/s2'); route()")
    await page.wait_for_function(
        "document.getElementById('detail-exports').textContent.startsWith('Still running')"
    )
    assert await page.locator("#detail-exports a").count() == 0
    await page.evaluate("history.pushState(null, '', '/history'); route()")
    await page.wait_for_function(
        "document.getElementById('session-list').textContent"
        ".includes('caught up 2:06 after you began holding (at 4:10)')"
    )
    await page.unroute("**/api/sessions")
    await page.unroute(stub)
    await page.click("nav >> text=Session")

    # Markers: a button with a note, and a keyboard shortcut. A double tap is one marker,
    # and so is a held key (it auto-repeats): they were stored twice and three times.
    await page.fill("#note", "the old voice again")
    await page.dblclick(".markers button[data-kind='shame']")
    await _said(page, "“shame” marker added with the note — Settle Virtual HR (")
    await page.locator("#cmd-result").evaluate("e => e.textContent = ''")
    await page.locator("body").press("3")  # discomfort
    await _said(page, "“discomfort” marker added — Settle Virtual HR (")
    await page.keyboard.down("3")  # held: a first keydown, then repeats, all within 1.5 s
    await page.keyboard.down("3")
    await page.keyboard.up("3")
    await asyncio.sleep(1.0)
    # Hold start has a button and a key (8); a key pressed on the Live page says its result
    # there (it went to the hidden Session page).
    await page.click("nav >> text=Live")
    await page.keyboard.press("8")
    await _said(page, "“hold start” marker added — Settle Virtual HR (")
    assert await page.locator("#cmd-result").is_visible()
    with SessionStore.open(db) as store:
        markers = store.markers(sid)
    assert [(m.kind, m.text, m.source.value) for m in markers] == [
        ("shame", "the old voice again", "dashboard"),
        ("discomfort", "", "dashboard"),
        ("hold-start", "", "dashboard"),
    ]
    # The Live cards agree with their labels; the trend's confidence (1 - p), slope and CI
    # stand only beside settling or unsettling ("steady, trend confidence 91 %" read
    # backwards).
    shown = await page.evaluate(
        """(sid) => { const d = window.__settle.perDev[window.__settle.device];
        const out = {};
        for (const [trend, conf] of [["steady", 0.91], ["settling", 0.97]]) {
          onMessage(`${window.__settle.device}/indices`, JSON.stringify({ ...d.indices,
            session: sid, usable: true, settling: 70, trend, trend_confidence: conf,
            trend_slope_per_min: 2.04, trend_slope_ci_low_per_min: 0.4,
            trend_slope_ci_high_per_min: 3.81, catching_up_t_s: 250 }));
          render();
          out[trend] = document.getElementById("settling-note").textContent;
          out.caught = document.getElementById("caught").textContent;
        }
        return out; }""",
        sid,
    )
    assert shown == {"steady": "50 = as at baseline",
                     "settling": "trend confidence 97 %, +2.0 points/min (95 % CI +0.4 to +3.8)",
                     "caught": "at 4:10"}  # fmt: skip
    await page.click("nav >> text=Session")
    # A note too long for the daemon in UTF-8 is not sent, and the page says why (2000
    # letters fit the field, 6000 bytes did not fit the request: "the daemon did not
    # answer"); an empty one neither; an answer that is not JSON is shown as it came.
    await page.fill("#note", "漢" * 1400)
    await page.click("#note-form button")
    await _said(page, "Add note: note too long: 4200 bytes as UTF-8, at most 4033")
    await page.fill("#note", "")
    await page.click("#note-form button")
    await _said(page, "Add note: the note is empty")
    await page.fill("#note", "x")
    await page.route("**/api/cmd/**", lambda r: r.fulfill(status=413, body="Too big."))
    await page.click("#note-form button")
    await _said(page, "Add note: the server answered HTTP 413")
    assert "— Too big. (" in (await page.text_content("#cmd-result") or "")
    await page.unroute("**/api/cmd/**")
    errors[:] = [e for e in errors if "status of 413" not in e]
    await page.fill("#note", "")
    await _until(lambda: _mqtt_has(mqtt, "event", "discomfort"), 5, "the marker on MQTT")
    events = [json.loads(p) for p in mqtt.payloads("event")]
    shame = next(e for e in events if e["kind"] == "shame")
    assert shame["session"] == sid and shame["text"] == "the old voice again"

    # Baseline start/stop go through the same path (a too-short one is refused, said so).
    await page.click("#baseline-start")
    await _said(page, "baseline recording started")
    await asyncio.sleep(1.0)
    await page.wait_for_function("Object.values(window.__settle.perDev)[0].t.length > 20")
    await page.click("nav >> text=Live")
    await page.locator("#cmd-result").evaluate("e => e.textContent = ''")  # not in the shots
    await asyncio.sleep(1.2)  # let the charts redraw once
    await page.screenshot(path=str(SHOTS / "live-desktop.png"), full_page=True)
    # Marker labels start at their line and run right (they ran left, over the y axis's
    # numbers, for the markers at the start of the chart).
    lines, left_of_first = await page.evaluate(_MARKER_PIXELS)
    assert lines, "no marker line drawn on the tachogram"
    assert left_of_first == 0, f"{left_of_first} marker-coloured pixels left of the first line"
    await page.set_viewport_size(PHONE)
    await page.screenshot(path=str(SHOTS / "live-phone.png"), full_page=False)
    await page.click("nav >> text=Session")
    await page.screenshot(path=str(SHOTS / "session-phone.png"), full_page=True)
    await page.set_viewport_size(DESKTOP)
    await page.screenshot(path=str(SHOTS / "session-desktop.png"), full_page=True)
    await page.click("#baseline-stop")
    await page.wait_for_function(
        "/^(Baseline stop|baseline stopped)/"
        ".test(document.getElementById('cmd-result').textContent)"
    )
    said = await page.text_content("#cmd-result") or ""
    if not said.startswith("baseline stopped"):  # a few seconds of rest: refused, said why
        assert said.startswith("Baseline stop — Settle Virtual HR: baseline "), said
        assert "using the automatic baseline" in said, said
        # the refusal is an HTTP 400, which Chromium logs once as a failed resource load
        refused = [e for e in errors if "status of 400" in e]
        assert len(refused) == 1, errors
        errors.remove(refused[0])

    # Pair: the daemon's strap with live state; a scan runs through the daemon's backend.
    await page.click("nav >> text=Pair")
    await page.wait_for_function(
        "document.getElementById('own-straps').textContent.includes('Settle Virtual HR')"
    )
    await page.wait_for_function(
        "document.getElementById('own-straps').textContent.includes('bpm')"
    )
    # A second strap switched on nearby: the daemon's own scan (through its BLE backend)
    # lists it; "no strap" or "failed" would be a broken scan, not a pass.
    spare = VirtualStrap(world.air, itertools.repeat(900.0), name="Spare Strap", speed=4.0)
    await spare.start()
    try:
        await page.click("#scan")
        await page.wait_for_function(
            "/found|no strap|failed/.test(document.getElementById('scan-state').textContent)",
            timeout=10_000,
        )
        assert "Spare Strap" in (await page.locator("#scan-list").text_content() or "")
        assert "found" in (await page.locator("#scan-state").text_content() or "")
        await page.screenshot(path=str(SHOTS / "pair-desktop.png"), full_page=True)
    finally:
        await spare.stop()

    # Stop; history lists the finished session, opens its report, downloads its exports.
    await page.click("nav >> text=Session")
    await page.click("#stop")
    await page.click("#confirm-yes")  # the session runs: Stop asks first
    await page.wait_for_function(
        "document.getElementById('session-line').textContent.startsWith('Stopped')"
    )
    with SessionStore.open(db) as store:
        assert store.get(sid).state is SessionState.STOPPED
    # The list comes before the analysis (it waited for every session's): the finished
    # sessions' cells read "…" until the page, asking again, gets them.
    async with page.expect_response("**/api/sessions") as listed:
        await page.click("nav >> text=History")
    first = await (await listed.value).json()
    assert [s.get("pending") for s in first["sessions"] if s["id"] == sid] == [True], first
    await page.locator("#cmd-result").evaluate("e => e.textContent = ''")
    item = page.locator(f"li[data-session='{sid}']")
    await item.wait_for(timeout=15_000)
    await page.wait_for_function(
        f"!document.querySelector(\"li[data-session='{sid}'] .pending\")"
        " && !document.getElementById('history-progress').textContent",
        timeout=15_000,
    )
    assert re.search(r"score change [+-–]", await item.text_content() or "")
    await page.screenshot(path=str(SHOTS / "history-desktop.png"), full_page=True)
    async with page.expect_download() as dl_info:
        await item.locator("a", has_text="csv").click()
    download = await dl_info.value
    csv_path = db.parent / download.suggested_filename
    await download.save_as(csv_path)
    rows = read_export_csv(csv_path)
    assert len(rows) > 20 and all(r.session_id == sid for r in rows)
    # A subject the server refuses is not downloaded, and the page says why (it failed
    # silently).
    await page.fill("#bids-subject", "anna-1")
    await item.locator("a.bids").click()
    await _said(page, "BIDS subject “anna-1”: letters A–Z and digits only")
    await page.fill("#bids-subject", "anna")  # the wearer, not sub-01 for everyone
    async with page.expect_download() as dl_info:
        await item.locator("a.bids").click()
    bids_zip = db.parent / (await dl_info.value).suggested_filename
    await (await dl_info.value).save_as(bids_zip)
    assert any(n.startswith("sub-anna/") for n in zipfile.ZipFile(bids_zip).namelist())
    for fmt in ("json", "kubios", "edf", "bids"):
        resp = await page.request.get(f"{base}sessions/{sid}/export/{fmt}")
        assert resp.status == 200, (fmt, await resp.text())
        body = await resp.body()
        assert len(body) > 100, fmt
        if fmt == "json":
            assert json.loads(body)  # parses
    await item.locator("a").first.click()
    frame = page.frame_locator("#report")
    await frame.locator("body").wait_for(timeout=20_000)
    await page.wait_for_function(
        "document.getElementById('report').contentDocument?.body?.textContent.includes(\""
        + sid
        + '")',
        timeout=20_000,
    )

    # After the stop, Live shows no stopped session's values as current (they stayed), and
    # its two charts agree after a reload (the tachogram was empty, the trend was not).
    await page.goto(base + "live")
    await page.wait_for_function(
        "(d => d && d.it.length > 0 && d.t.length > 0)"
        "(window.__settle.perDev[window.__settle.device])"
    )
    await page.evaluate("render()")
    for card in ("lnrmssd", "rmssd", "coherence", "quality", "baseline", "caught"):
        assert await page.text_content(f"#{card}") == "–", card
    assert "of the stopped session" in (await page.text_content("#tacho-cap") or "")

    # The strap drops: the live page says so, and recovers when it is back.
    strap = world.straps[0]
    await strap.drop(reappear_after_s=3.0)
    await page.wait_for_function(
        "document.getElementById('banners').textContent.includes('Strap disconnected')",
        timeout=10_000,
    )
    assert await page.locator("#hr").text_content() == "–"  # no stale HR shown as current
    await page.screenshot(path=str(SHOTS / "live-strap-dropped.png"))
    await page.wait_for_function(
        "!document.getElementById('banners').textContent.includes('Strap disconnected')",
        timeout=20_000,
    )

    # The broker is killed: the page keeps updating and says the broker is down.
    broker.stop()
    await page.wait_for_function(
        "document.getElementById('banners').textContent.includes('MQTT broker unreachable')",
        timeout=15_000,
    )
    n1 = await page.evaluate("Object.values(window.__settle.perDev)[0].beatTs")
    await page.wait_for_function(
        f"Object.values(window.__settle.perDev)[0].beatTs > {n1}", timeout=10_000
    )
    broker.start()
    assert not [e for e in errors if "favicon" not in e], errors
    await ctx.close()


async def _said(page: Any, start: str) -> None:
    """Wait until the status line (in view on every page) begins with ``start``."""
    await page.wait_for_function(
        "s => document.getElementById('cmd-result').textContent.startsWith(s)", arg=start
    )


async def _mqtt_has(mqtt: Collector, leaf: str, kind: str) -> bool:
    return any(json.loads(p).get("kind") == kind for p in mqtt.payloads(leaf))


async def test_remember_in_the_dashboard_says_what_it_replaced(
    tmp_path: Path, dashboard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pair page's Remember goes through the daemon's own pairing: reusing a label for
    another strap answers with the sentence saying which strap the label meant until now
    (the page shows it after "remembered as"), as `settle pair` prints it. A key given
    twice or misspelt is refused (it was taken silently: the last "label" won)."""
    from settle import pairing
    from settle.app import DaemonControl

    paired = tmp_path / "straps.json"
    monkeypatch.setenv("SETTLE_PAIRED_FILE", str(paired))
    pairing.remember("anna", "AA:BB:CC:DD:EE:FF", "Polar H10 1234", "polar_h10_1")
    control = DaemonControl(None, {})  # type: ignore[arg-type]  # pairing needs no daemon
    async with (
        dashboard(control=control) as d,
        aiohttp.ClientSession(headers={"X-Settle": "1"}) as http,
    ):
        body = {"label": "anna", "address": "11:22:33:44:55:66", "name": "Wahoo TICKR",
                "device_id": "wahoo_tickr_5566"}  # fmt: skip
        # A key given twice, or one misspelt, is refused, and nothing is remembered.
        for bad, says in (
            (b'{"label": "anna", "label": "bob", "address": "11:22:33:44:55:66"}',
             "key 'label' appears twice"),
            (b'{"label": "anna", "adress": "11:22:33:44:55:66"}',
             "unknown field 'adress' (expected {label, address, name, device_id})"),
        ):  # fmt: skip
            async with http.post(d.url + "api/pair", data=bad) as r:
                assert (r.status, (await r.json())["error"]) == (400, says)
        assert [p.label for p in pairing.load_paired(paired)] == ["anna"]
        assert pairing.load_paired(paired)[0].address == "AA:BB:CC:DD:EE:FF"
        async with http.post(d.url + "api/pair", json=body) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
    assert answer["replaced"] == [
        "'anna' was Polar H10 1234 (AA:BB:CC:DD:EE:FF) until now; it now means this strap."
    ]
    assert [(p.label, p.address) for p in pairing.load_paired(paired)] == [
        ("anna", "11:22:33:44:55:66")
    ]


async def test_history_summary_follows_edits_and_counts_session_seconds(
    dashboard: Any, store: SessionStore
) -> None:
    """History listed a --speed 10 replay of 5 min as 30 s (wall clock; `settle sessions
    list` says 5 min), and kept a finished session's summary for the daemon's lifetime, so a
    marker imported or a baseline set afterwards (`settle log …`, another process) never
    showed until the daemon restarted."""
    from sessions.store import BeatRow, MarkerRow

    t0 = 1_700_000_000_000
    sid = store.create_session("dev_1", t0, "x", {"time_scale": 10.0}).id
    store.add_beats(sid, [BeatRow(i, 0.8 * (i + 1), t0 + 80 * (i + 1), 800.0, None, 75, None)
                          for i in range(375)])  # fmt: skip
    store.finish_session(sid, t0 + 30_000)
    async with (
        dashboard() as d,
        aiohttp.ClientSession() as http,
    ):

        async def listed() -> dict[str, Any]:
            (s,) = (await _analysed(http, d))["sessions"]
            return cast(dict[str, Any], s)

        first = await listed()
        assert first["duration_s"] == pytest.approx(300.0)
        assert first["n_markers"] == 0 and first["catching_up"] == "no_score"
        store.add_markers(sid, [MarkerRow(100.0, t0 + 10_000, "shame", "", "import")])
        assert (await listed())["n_markers"] == 1
        async with http.get(d.url + "api/sessions") as r:  # and cached again
            (again,) = (await r.json())["sessions"]
            assert again["n_markers"] == 1 and "pending" not in again


async def _listing(http: aiohttp.ClientSession, d: Dashboard) -> dict[str, Any]:
    async with http.get(d.url + "api/sessions") as r:
        assert r.status == 200
        return cast(dict[str, Any], await r.json())


async def _analysed(http: aiohttp.ClientSession, d: Dashboard) -> dict[str, Any]:
    """History's list once no row is pending (the page asks again until then)."""
    for _ in range(300):
        listing = await _listing(http, d)
        assert listing.get("analysis_error") is None, listing["analysis_error"]
        if not listing.get("pending"):
            return listing
        await asyncio.sleep(0.1)
    raise AssertionError(f"still pending: {listing['pending']}")


def _finished_session(store: SessionStore, started_ms: int, n_beats: int) -> str:
    """A stopped session of ``n_beats`` beats 0.8 s apart; its id."""
    from sessions.store import BeatRow

    sid = store.create_session("dev_1", started_ms, "x", {}).id
    rr = [800.0 + 20 * (i % 3) for i in range(n_beats)]
    store.add_beats(sid, [BeatRow(i, 0.8 * (i + 1), started_ms + 800 * (i + 1), rr[i], None, 75,
                                  None) for i in range(n_beats)])  # fmt: skip
    store.finish_session(sid, started_ms + 800 * n_beats)
    return sid


async def test_history_lists_every_session_at_once_and_fills_in_newest_first(
    tmp_path: Path, dashboard: Any, store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart the first History request analysed every finished session in one
    worker call before answering (~30 ms each: 30 s for 1 000 sessions, an empty page all
    that time). Now the list comes at once, every session with what the listing says and
    the finished ones marked pending; they are analysed in the background in small
    batches, newest first, and the rows fill in with the values they always had. A session
    edited meanwhile is analysed again, a deleted one is dropped."""
    from feedback.dashboard.work import summarise_sessions
    from sessions.store import MarkerRow

    # Two sessions a batch (raising=False: the old code has none; it fails the asserts below).
    monkeypatch.setattr(server_module, "HISTORY_BATCH_BEATS", 250, raising=False)
    db = tmp_path / "s.db"
    t0 = 1_700_000_000_000
    ids = [_finished_session(store, t0 + k * 3_600_000, 120) for k in range(7)]
    running = store.create_session("dev_2", t0 + 8 * 3_600_000, "x", {}).id
    newest = ids[::-1]
    async with (
        dashboard() as d,
        aiohttp.ClientSession() as http,
    ):
        batches: list[list[str]] = []
        hold, held = asyncio.Event(), asyncio.Event()
        real_work = d._work

        async def work(fn: Any, *args: str) -> Any:
            if fn is summarise_sessions:
                batches.append(list(json.loads(args[0])))
                if len(batches) == 2:
                    held.set()
                    await hold.wait()  # the second batch waits: a state to look at
            return await real_work(fn, *args)

        monkeypatch.setattr(d, "_work", work)
        first = await _listing(http, d)
        assert [s["id"] for s in first["sessions"]] == [running, *newest]
        assert first.get("pending") == 7
        assert [s.get("pending", False) for s in first["sessions"]] == [False] + [True] * 7
        assert first["sessions"][1]["duration_s"] == pytest.approx(96.0)
        # The newest batch analysed, the rest still pending.
        await asyncio.wait_for(held.wait(), 60)
        second = await _listing(http, d)
        assert second["pending"] == 5
        assert [s.get("pending", False) for s in second["sessions"]] == [False] * 3 + [True] * 5
        # Meanwhile the newest session gets a marker and the oldest is deleted.
        store.add_markers(newest[0], [MarkerRow(10.0, t0 + 10_000, "shame", "", "import")])
        store.delete_session(ids[0])
        third = await _listing(http, d)
        assert [s["id"] for s in third["sessions"]] == [running, *newest[:-1]]
        assert third["sessions"][1]["pending"] and third["pending"] == 5
        hold.set()
        done = await _analysed(http, d)
        assert batches == [newest[0:2], newest[2:4], [newest[0], newest[4]], [newest[5]]]
        # The rows the old code gave: the analysis of each, with the listing's seconds.
        listed = {s.id: s.duration_s for s in store.list_sessions()}
        status, text = summarise_sessions(str(db), json.dumps(listed))
        assert status == "ok"
        assert done["sessions"][1:] == [json.loads(text)[sid] for sid in newest[:-1]]
        assert done["sessions"][1]["n_markers"] == 1
        assert done["sessions"][0]["state"] == "running"
        assert "pending" not in done["sessions"][0]


async def test_history_still_lists_sessions_when_their_analysis_fails(
    dashboard: Any, store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An analysis that failed made the whole History list a 500 (no session listed). The
    list still comes, the rows pending, with the failure's one line; asking again retries."""
    from feedback.dashboard.work import summarise_sessions

    sid = _finished_session(store, 1_700_000_000_000, 120)
    async with (
        dashboard() as d,
        aiohttp.ClientSession() as http,
    ):
        tries: list[str] = []
        tried = asyncio.Event()
        real_work = d._work

        async def work(fn: Any, *args: str) -> Any:
            if fn is summarise_sessions:
                tries.append(args[0])
                tried.set()
                return "error", "the store cannot be read: disk I/O error"
            return await real_work(fn, *args)

        monkeypatch.setattr(d, "_work", work)
        first = await _listing(http, d)
        await asyncio.wait_for(tried.wait(), 10)
        await _until(lambda: asyncio.sleep(0, d._analyser is None), 10, "the task's end")
        again = await _listing(http, d)
        assert [s["id"] for s in again["sessions"]] == [sid] and again["sessions"][0]["pending"]
        assert again["analysis_error"] == "the store cannot be read: disk I/O error"
        assert first.get("analysis_error") is None
        await _until(lambda: asyncio.sleep(0, len(tries) == 2), 10, "a second try")


async def test_a_worker_killed_once_does_not_break_reports_exports_and_history(
    dashboard: Any,
    store: SessionStore,
) -> None:
    """The worker process killed (the OOM killer on a small board): every report, export and
    History analysis after it failed ("the process pool is not usable anymore", 500s) until
    the daemon was restarted. The next request gets a new worker."""
    import os
    import signal

    sid = _finished_session(store, 1_700_000_000_000, 120)
    async with (
        dashboard() as d,
        aiohttp.ClientSession() as http,
    ):
        await _analysed(http, d)
        assert d._pool is not None
        for pid in list(d._pool._processes):  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        for path in ("report", "export/csv"):
            async with http.get(f"{d.url}sessions/{sid}/{path}") as r:
                assert r.status == 200, (path, r.status, await r.text())
        store.add_markers(sid, [MarkerRow(10.0, 1_700_000_010_000, "shame", "", "import")])
        row = (await _analysed(http, d))["sessions"][0]
        assert row["n_markers"] == 1 and "analysis_error" not in row


async def test_reports_exports_and_their_errors_are_kept_in_no_cache(
    dashboard: Any, store: SessionStore
) -> None:
    """A report and an export (session data) had no Cache-Control, nor had the report's 404
    page: Chromium kept them in the profile's disk cache, under a key that held the URL
    (``?token=`` with it). Every answer but the static files now says ``no-store``."""
    sid = _finished_session(store, 1_700_000_000_000, 60)
    async with (
        dashboard() as d,
        aiohttp.ClientSession() as http,
    ):
        answers = ((f"sessions/{sid}/report", 200), ("sessions/nope/report", 404),
                   (f"sessions/{sid}/export/csv", 200), ("sessions/nope/export/csv", 404),
                   ("no-such-page", 404))  # fmt: skip
        for path, status in answers:
            async with http.get(d.url + path) as r:
                await r.read()
                assert (r.status, r.headers.get("Cache-Control")) == (status, "no-store"), path
        async with http.get(d.url + "static/app.js") as r:
            assert r.headers.get("Cache-Control") == "no-cache"  # asked again, not unkept


def test_history_row_of_a_session_the_analysis_cannot_take_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One session whose analysis raised failed its whole batch, and every retry stopped
    there: every older session stayed "being analysed" for good. That session's row now says
    why; the others are analysed."""
    import sessions.report
    from feedback.dashboard.work import summarise_sessions

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        bad, good = (
            _finished_session(store, 1_700_000_000_000 + k * 3_600_000, 120) for k in range(2)
        )
    real = sessions.report.analyse_session

    def analyse(rec: Any) -> Any:
        if rec.info.id == bad:
            raise ValueError("zero-size array to reduction operation maximum")
        return real(rec)

    monkeypatch.setattr(sessions.report, "analyse_session", analyse)
    status, text = summarise_sessions(str(db), json.dumps({bad: 96.0, good: 96.0}))
    assert status == "ok", text
    rows = json.loads(text)
    assert rows[bad]["analysis_error"] == "zero-size array to reduction operation maximum"
    assert rows[bad]["duration_s"] == 96.0 and rows[bad]["n_beats"] == 120
    assert "analysis_error" not in rows[good] and rows[good]["catching_up"]


async def test_history_analysis_ends_with_the_dashboard(
    dashboard: Any, store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The background analysis of History stops with the dashboard, mid-batch too: no task
    is left behind (asyncio: "Task was destroyed but it is pending") and nothing is
    logged as an error."""
    for k in range(3):
        _finished_session(store, 1_700_000_000_000 + k * 3_600_000, 120)
    async with (
        dashboard() as d,
        aiohttp.ClientSession() as http,
    ):
        assert (await _listing(http, d)).get("pending") == 3  # the worker is starting now
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "history analysis"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_bad_tokens_and_malformed_requests_are_one_line_not_a_traceback(
    dashboard: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`?token=é` was a 500 with a traceback (compare_digest on a non-ASCII str), and any
    request aiohttp cannot parse (a duplicate Host header, a control byte in the method)
    logged an ERROR traceback: whoever reaches the port could fill the journal."""
    import logging

    caplog.set_level(logging.DEBUG)
    async with dashboard(token="s3cret-token") as d:
        async with aiohttp.ClientSession() as http:
            async with http.get(d.url + "api/state?token=%C3%A9") as r:
                assert r.status == 401
            bearer = {"Authorization": "Bearer é"}
            async with http.get(d.url + "api/state", headers=bearer) as r:
                assert r.status == 401
        bad = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: x\r\n\r\n",
               b"G\x01T / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # fmt: skip
        # A scanner's flood is one line per 10 s, the next saying how many were left out.
        for i, raw in enumerate([*bad, *bad, bad[0]]):
            if i == 4:
                monkeypatch.setattr(server_module, "BAD_REQUEST_EVERY_S", 0.0)
            reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
            writer.write(raw)
            await writer.drain()
            status = await reader.readline()
            writer.close()
            await writer.wait_closed()
            assert b" 400 " in status, status
    server = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert server and all(r.levelno == logging.WARNING and not r.exc_info for r in server)
    assert all(r.getMessage().startswith("dashboard: malformed HTTP request from ")
               for r in server)  # fmt: skip
    assert len(server) == 2 and server[1].getMessage().endswith(
        "(3 more since the last one not logged)"
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


async def test_a_malformed_request_logs_no_token(
    dashboard: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp quotes the line it cannot parse, and the one WARNING line for it quoted the
    token: `GET /events?token=<token> x HTTP/1.1` (a space in the address) wrote "Bad status
    line … b'GET /events?token=<token> x HTTP/1.1'" to the journal. The token is left out
    of it, in the address, an old cookie or an Authorization header."""
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(server_module, "BAD_REQUEST_EVERY_S", 0.0)  # every line logged
    token = "s3cret-token-0123456789"
    host = b"Host: 127.0.0.1\r\n"
    get = b"GET /api/state HTTP/1.1\r\n" + host
    bad = (b"GET /events?token=%s x HTTP/1.1\r\n" + host + b"\r\n",
           b"GET /api/state?last=1&token=%s HTTP/9.9\r\n" + host + b"\r\n",
           get + b"Authorization: Bearer %s\x00\r\n\r\n",
           get + b"Cookie: settle_token=%s\x01; a=b\r\n\r\n")  # fmt: skip
    async with dashboard(token=token) as d:
        for raw in bad:
            status, _ = await _raw(d.port, raw % token.encode())
            assert b" 400 " in status, (raw, status)
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == len(bad), lines
    assert not [line for line in lines if token in line or token[:8] in line], lines
    said = "\n".join(lines)
    assert said.count("token=…") == 3 and "Authorization:…" in said, lines
    assert token not in caplog.text


async def _raw(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` as is; the status line and the body (up to 4 KiB)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    status = await reader.readline()
    rest = await asyncio.wait_for(reader.read(4096), 5.0)
    writer.close()
    await writer.wait_closed()
    return status, rest


async def test_malformed_bodies_names_and_ids_are_answered_not_a_traceback(
    dashboard: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests that each ended in a 500 and a traceback in the log, past its rate limit (a
    review sent them by hand): a token header or cookie whose bytes are no UTF-8 (before any
    authentication, in the setup recommended for a LAN), a command whose text holds half an
    emoji (JSON.stringify of a cut string writes "\\ud800"), a body labelled gzip that is
    not, a static file name longer than the OS takes, a device name with an MQTT wildcard,
    a Last-Event-ID of '²' (the stream ended after its head), and a pairing whose label is
    an object (it was saved as "{'x': 1}")."""
    import logging

    caplog.set_level(logging.DEBUG)
    post = {"X-Settle": "1"}
    hub = Hub("settle")
    async with dashboard(hub, token="s3cret-token") as d:
        for header in (b"Authorization: Bearer \xff", b"Cookie: settle_token=\xed\xa0\x80"):
            status, _ = await _raw(
                d.port,
                b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header
                + b"\r\nConnection: close\r\n\r\n",
            )  # fmt: skip
            assert b" 401 " in status, status
        auth = {**post, "Authorization": "Bearer s3cret-token"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for body in (b'{"kind": "doubt", "text": "\\ud800"}',
                         b'{"kind": "doubt", "text": "\xed\xa0\x80"}'):  # fmt: skip
                async with http.post(d.url + "api/cmd/x/marker", data=body, headers=auth) as r:
                    assert r.status == 400
                    assert "lone surrogate" in (await r.json())["error"]
            gz = {**auth, "Content-Encoding": "gzip"}
            async with http.post(d.url + "api/cmd/x/marker", data=b"{}", headers=gz) as r:
                assert r.status == 400 and "request body" in (await r.json())["error"]
            async with http.post(d.url + "api/pair", data=b"{}", headers=gz) as r:
                assert r.status == 400
            async with http.get(d.url + "static/" + "b" * 300, headers=auth) as r:
                assert r.status == 404
            for device in ("a%2Bb", "a%23b", "a%00b"):
                url = d.url + f"api/cmd/{device}/marker"
                async with http.post(url, data=b"{}", headers=auth) as r:
                    assert r.status == 400
                    assert (await r.json())["error"].startswith("unknown device")
            pair = b'{"label": {"x": 1}, "address": "C0:5E:77:1E:00:0A"}'
            async with http.post(d.url + "api/pair", data=pair, headers=auth) as r:
                assert r.status == 400 and "must be strings" in (await r.json())["error"]
            lower = {**post, "Authorization": "bearer s3cret-token"}  # schemes: any case
            async with http.get(d.url + "api/state", headers=lower) as r:
                assert r.status == 200
            async with http.post(d.url + "api/scan?timeout=nan", headers=auth) as r:
                assert r.status == 400  # NaN passed the clamp: a scan of no time
            dots = yarl.URL(d.url + "sessions/%2e%2e/report", encoded=True)
            async with http.get(dots, headers=auth) as r:
                assert r.status == 404 and "settle-" not in await r.text()  # no temp path
            dots = yarl.URL(d.url + "sessions/%2e%2e/export/csv", encoded=True)
            async with http.get(dots, headers=auth) as r:
                assert r.status == 404 and (await r.json())["error"] == "no session '..'"
            async with http.head(d.url + "events", headers=auth) as r:
                assert r.status == 405  # it streamed a body, for ever
            # An API client gets JSON for a route or method that does not exist too (it
            # got aiohttp's plain "404: Not Found"); a page keeps aiohttp's answer.
            async with http.get(d.url + "api/stat", headers=auth) as r:
                assert r.status == 404
                assert await r.json() == {"v": 1, "status": "error",
                                          "error": "no API route '/api/stat'"}  # fmt: skip
            async with http.post(d.url + "api/state", headers=auth) as r:
                assert (r.status, r.headers["Allow"]) == (405, "GET, HEAD")
                err = (await r.json())["error"]
                assert err == "POST is not allowed here (allowed: GET, HEAD)"
            async with http.get(d.url + "api/pair", headers=auth) as r:
                assert r.status == 405 and (await r.json())["status"] == "error"
            async with http.get(d.url + "no-such-page", headers=auth) as r:
                assert r.status == 404 and r.content_type == "text/plain"
            hub.publish("settle/dev/beat", b"{}", retain=False)
            for last in (f"{hub.epoch}.²", f"{hub.epoch}." + "9" * 5000):
                events = {**auth, "Last-Event-ID": last}
                async with http.get(d.url + "events", headers=events) as r:
                    assert r.status == 200
                    got = await asyncio.wait_for(r.content.readuntil(b"event: health"), 5.0)
                    assert b'"topic":"dev/beat"' in got  # the whole backlog; on it goes
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


async def test_require_token_protects_a_loopback_dashboard_and_pages_cannot_be_framed(
    tmp_path: Path,
) -> None:
    """Any account on the machine could read every session from a loopback dashboard (and
    a reverse proxy reaches it from loopback for everyone it serves): `require_token`
    makes loopback ask for the token too. No site may frame the pages (clickjacking of
    /control)."""
    from settle.app import dashboard_config

    token_file = tmp_path / "cfg" / "http-token"
    base = {"enabled": True, "host": "127.0.0.1", "port": 0, "token_file": str(token_file)}
    assert dashboard_config(load_config(CONFIG, http=base)).token is None
    cfg = dashboard_config(load_config(CONFIG, http={**base, "require_token": True}))
    assert cfg.token is not None and token_file.read_text().strip() == cfg.token
    with SessionStore.open(tmp_path / "s.db") as store:
        async with (
            Dashboard(Hub("settle"), NoDaemon(), store, cfg) as d,  # type: ignore[arg-type]
            aiohttp.ClientSession() as http,
        ):
            async with http.get(d.url + "api/sessions") as r:
                assert r.status == 401
            async with http.get(d.url + f"api/sessions?token={cfg.token}") as r:
                assert r.status == 200
                assert "frame-ancestors 'self'" in r.headers["Content-Security-Policy"]
                assert r.headers["X-Frame-Options"] == "SAMEORIGIN"


HALF_REQUEST = b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # never finished


async def _half_sent(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HALF_REQUEST)
    await writer.drain()
    return reader, writer


async def test_half_sent_requests_are_closed_and_the_page_still_loads(dashboard: Any) -> None:
    """A connection that sent half a request stayed open ≥ 200 s (aiohttp has no deadline
    for request headers); 1 100 of them used up the open files and the dashboard was gone.
    Now each is closed within seconds, and the page loads while 50 are held open."""
    async with (
        dashboard() as d,
        aiohttp.ClientSession() as http,
    ):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        held = [await _half_sent(d.port) for _ in range(50)]
        # A command whose body never comes in full: refused, not waited for.
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", d.port)
        slow_writer.write(b"POST /api/cmd/dev/marker HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"X-Settle: 1\r\nContent-Length: 100\r\n\r\n{")  # fmt: skip
        for path in ("", "static/app.js", "api/state"):
            async with http.get(d.url + path) as r:
                assert r.status == 200, path
        for reader, writer in held:  # each one ends with EOF (closed), not an answer
            async with asyncio.timeout(8):
                assert await reader.read() == b""
            writer.close()
        assert 4 < loop.time() - t0 < 8  # HEADER_TIMEOUT_S: 5 s
        async with asyncio.timeout(3):
            assert b" 408 " in await slow_reader.readline()
        slow_writer.close()
        async with http.get(d.url + "api/state") as r:
            assert r.status == 200


async def test_connections_and_live_pages_beyond_the_limits_get_a_503(
    dashboard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing capped the open connections or live streams: each held one more open file
    until none was left. Beyond the limits (made small here) the answer is a clear 503."""
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 10, raising=False)
    monkeypatch.setattr(server_module, "MAX_STREAMS", 2, raising=False)
    hub = Hub("settle")
    async with (
        dashboard(hub) as d,
        aiohttp.ClientSession() as http,
        http.get(d.url + "events") as page1,
        http.get(d.url + "events") as page2,
    ):
        assert page1.status == page2.status == 200
        async with http.get(d.url + "events") as page3:
            assert page3.status == 503
            assert (await page3.json())["error"] == "too many live pages open (2): close one"
    async with dashboard(hub) as d:
        held = [await _half_sent(d.port) for _ in range(10)]
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as http, http.get(d.url + "api/state") as r:
            assert r.status == 503
            assert "too many connections" in (await r.json())["error"]
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as http, http.get(d.url + "api/state") as r:
            assert r.status == 200


async def test_connections_refused_after_their_client_left_are_one_line_not_tracebacks(
    dashboard: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At the connection cap, each client that had already gone (a port scanner, an
    impatient client) when its 503 was written logged a 10-line asyncio traceback
    ("Transport endpoint is not connected"): 20 connections, 20 tracebacks; two bursts of
    3 000, 1 266 lines — past the one line every 10 s for refused connections."""
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 10, raising=False)
    async with dashboard() as d:
        held = [await _half_sent(d.port) for _ in range(10)]
        await asyncio.sleep(0.2)
        for _ in range(20):  # each gone before the server (this loop) takes it
            with socket.create_connection(("127.0.0.1", d.port)):
                pass
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as http, http.get(d.url + "api/state") as r:
            assert r.status == 503  # still at the cap, still answered
        for _, writer in held:
            writer.close()
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    refused = [r.getMessage() for r in caplog.records if "connection refused" in r.getMessage()]
    assert refused == ["dashboard: connection refused: 10 open, at most 10"]


async def test_a_burst_of_connections_is_held_to_the_cap_and_the_rest_closed_at_once(
    dashboard: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A burst of connections was counted only once each had been set up, after the whole
    burst was accepted: 272-275 were served of the 256 allowed, and refused ones (each held
    up to 1 s for its 503) were not limited at all — 402-518 at once, 790-896 open files —
    so two bursts of 3 000 under the usual 1 024 open files left the dashboard unable to
    accept anything ("cannot accept connections: Too many open files"). Now at most the cap
    is served, at most as many more wait for their 503, and the rest are closed at once."""
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 10, raising=False)
    async with dashboard() as d:
        burst = []
        for _ in range(60):  # all at once: the server (this loop) takes them afterwards
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", d.port))
            burst.append(s)
        await asyncio.sleep(0.5)
        served = refused = closed = 0
        for s in burst:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                served += 1  # taken, waiting for its request
            except OSError:
                closed += 1  # reset
            else:
                if data.startswith(b"HTTP/1.1 503 "):
                    refused += 1
                else:
                    assert data == b"", data
                    closed += 1
            s.close()
        assert (served, refused, closed) == (10, 10, 40)
        await asyncio.sleep(1.5)  # the refused ones' linger is over, the burst gone
        async with aiohttp.ClientSession() as http, http.get(d.url + "api/state") as r:
            assert r.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def _page_that_never_reads(port: int) -> socket.socket:
    """A live page whose browser takes nothing (a frozen tab, a phone asleep, a stray
    process): its request sent, a small receive buffer, never read."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(s, ("127.0.0.1", port))
    await loop.sock_sendall(s, b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return s


@pytest.mark.parametrize("kernel", [True, False], ids=["tcp-user-timeout", "write-deadline"])
async def test_live_pages_that_take_nothing_are_closed_and_a_new_page_gets_its_stream(
    dashboard: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    kernel: bool,
) -> None:  # fmt: skip
    """32 pages that never read held every live-page place for ever: each new page was
    told "too many live pages open (32): close one", still 150 s later. A stream that takes
    nothing for STREAM_STALL_S (30 s; 1 s here) is closed: on Linux the kernel notices
    (TCP_USER_TIMEOUT), elsewhere a write not done in time does (the Linux option left out
    here: the socket's buffers must fill first, megabytes)."""
    import logging

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(server_module, "MAX_STREAMS", 4)
    monkeypatch.setattr(server_module, "STREAM_STALL_S", 1.0, raising=False)
    if not kernel:
        monkeypatch.setattr(server_module, "_user_timeout", lambda *_: None, raising=False)
    hub = Hub("settle")
    async with dashboard(hub) as d, aiohttp.ClientSession() as http:
        held = [await _page_that_never_reads(d.port) for _ in range(4)]

        async def all_four() -> bool:
            return hub.subscribers == 4

        try:
            await _until(all_four, what="4 live streams")
            async with http.get(d.url + "events") as r:
                assert r.status == 503
            pad = "x" * (1000 if kernel else 64_000)
            for i in range(200 if kernel else 160):  # 0.2 MB, or 10 MB to fill the buffers
                hub.publish("settle/dev/beat", json.dumps({"seq": i, "pad": pad}))
            loop = asyncio.get_running_loop()
            t0, status = loop.time(), 0
            while status != 200 and loop.time() - t0 < 15:
                await asyncio.sleep(0.5)
                async with http.get(d.url + "events") as r:
                    status = r.status
                    if status == 200:  # a working stream: it says how the daemon is
                        async with asyncio.timeout(10):
                            got = b""
                            while b"event: health" not in got[-300:]:
                                got += await r.content.readany()
            assert status == 200, "no live page place freed within 15 s"
        finally:
            for s in held:
                s.close()
    said = [r.getMessage() for r in caplog.records if r.name == server_module.__name__]
    if not kernel:  # (a connection the kernel drops is not told from a page closed)
        assert said == ["dashboard: closed a live page that took nothing for 1 s"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_open_files_limit_is_raised_and_running_out_is_one_line(
    dashboard: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """systemd user services get a soft limit of 1 024 open files; once they were used up,
    asyncio logged "socket.accept() out of system resource" with a traceback on every retry:
    71 526 lines (37 MB) in ~20 s. The dashboard raises the soft limit to the hard one, and
    that error is one line every 10 s."""
    import errno
    import logging
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"hard limit of open files {hard}: nothing to raise")
    caplog.set_level(logging.DEBUG)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        async with dashboard():
            raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            loop = asyncio.get_running_loop()
            for _ in range(1000):  # as asyncio's accept loop reports it
                exc = OSError(errno.EMFILE, "Too many open files")
                context = {
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                }
                loop.call_exception_handler(context)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    (line,) = [r for r in caplog.records if r.name == "asyncio"]
    assert line.getMessage().startswith("cannot accept connections: Too many open files")
    assert not line.exc_info and "Traceback" not in caplog.text
    assert raised > 512 and (raised == hard or hard == resource.RLIM_INFINITY)


class _Scanner(NoDaemon):
    """A back end whose scans are counted and take a moment, as a real one's do."""

    def __init__(self) -> None:
        self.scans = 0

    async def scan(self, timeout_s: float) -> list[dict[str, Any]]:
        self.scans += 1
        await asyncio.sleep(0.5)
        return [{"name": "Polar H10 1", "address": "AA:BB:CC:DD:EE:01", "rssi": -60,
                 "device_id": "polar_h10_1"}]  # fmt: skip


ELSEWHERE = """<!doctype html><meta charset="utf-8"><title>another site</title>
<a id="go" href="{base}live">the dashboard</a>
<script>
window.done = false;
(async () => {{
  const opts = {{mode: "no-cors"}};
  for (const [url, o] of [["{base}api/scan?timeout=1", opts], ["{base}api/sessions", opts],
      ["{base}api/scan?timeout=1", {{...opts, method: "POST", body: "{{}}"}}],
      ["{base}sessions/nope/report", opts]]) {{
    try {{ await fetch(url, o); }} catch (e) {{ }}
  }}
  window.done = true;
}})();
</script>"""
"""A page on another site (``localhost`` is another site than ``127.0.0.1``), as the
reviewer's: requests a page may send anywhere without CORS."""


@pytest.mark.timeout(60)
async def test_another_site_cannot_scan_or_start_the_worker_and_the_page_still_scans(
    dashboard: Any,
    store: SessionStore,
) -> None:
    """Any website the user visited could run `GET /api/scan?timeout=30` (a Bluetooth scan
    in the daemon, any number at once) and `GET /api/sessions` (which starts the analysis
    worker) with a fetch in no-cors mode. Now the scan is a POST needing X-Settle, one at a
    time, and every request another site sends, except opening a page from a link, is
    refused. The pair page's own scan works as before."""
    import multiprocessing

    from sessions.store import BeatRow

    _chromium_or_skip()
    sid = store.create_session("dev_1", 1_700_000_000_000, "x", {}).id
    store.add_beats(sid, [BeatRow(i, 0.8 * (i + 1), 1_700_000_000_000 + 800 * (i + 1),
                                  800.0, None, 75, None) for i in range(60)])  # fmt: skip
    store.finish_session(sid, 1_700_000_048_000)
    back = _Scanner()
    elsewhere = web.Application()
    async with (
        dashboard(control=back) as d,
        _browser() as browser,
    ):
        page_text = ELSEWHERE.format(base=d.url)

        async def attacker(_r: web.Request) -> web.Response:
            return web.Response(text=page_text, content_type="text/html")

        elsewhere.router.add_get("/", attacker)
        runner = web.AppRunner(elsewhere)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            ctx = await browser.new_context(bypass_csp=True)
            page = await ctx.new_page()
            await page.goto(f"http://localhost:{port}/")
            await page.wait_for_function("window.done === true", timeout=15_000)
            await asyncio.sleep(0.3)
            assert back.scans == 0
            assert not multiprocessing.active_children()  # no worker started
            # A link from elsewhere still opens the dashboard.
            await page.click("#go")
            await page.wait_for_url(d.url + "live")
            assert await page.locator("nav a[data-page=pair]").count() == 1
            # The page's own scan.
            await page.goto(d.url + "pair")
            await page.click("#scan")
            await page.wait_for_function(
                "document.getElementById('scan-state').textContent === '1 found'"
            )
            assert back.scans == 1
            assert "Polar H10 1" in (await page.locator("#scan-list").text_content() or "")
            await ctx.close()
        finally:
            await runner.cleanup()
    # One scan at a time: a second one while the first runs is told so.
    async with (
        dashboard(control=back) as d,
        aiohttp.ClientSession(headers={"X-Settle": "1"}) as http,
    ):

        async def scan() -> tuple[int, str]:
            async with http.post(d.url + "api/scan?timeout=1") as r:
                return r.status, (await r.json()).get("error", "")

        answers = sorted(await asyncio.gather(scan(), scan()))
        assert answers == [(200, ""), (409, "a scan is already running: wait for its result")]
        assert back.scans == 2


@pytest.mark.timeout(120)
async def test_the_token_goes_to_its_dashboard_only(dashboard: Any, store: SessionStore) -> None:
    """With a token required, the printed `/?token=…` URL set a cookie (Path=/, SameSite=
    Strict) that the browser then sent to every server on the host, whatever its port: an
    account listening on another 127.0.0.1 port, opened by a link from another site, read
    `Cookie: settle_token=<token>`; and two such dashboards on one host took each other's
    place in that one cookie (the first said "token required" after a reload). Now the
    page keeps the token in the tab and sends it only to its own daemon: the other server
    gets none, each dashboard keeps its own, and the token leaves the address bar, the
    history and every Referer; the report and a download work with it. The report's frame
    and a download had it in their addresses (?token=), which Chromium kept in its list of
    downloads, its disk cache and its session files: they are fetched by the page, the
    token in a header, and handed over as blob: addresses; only the live stream (an
    EventSource sends no header) has it in its address."""
    _chromium_or_skip()
    token, token_b = "s3cret-token-0123456789", "another-token-9876543210"
    seen: list[str] = []

    async def listener(request: web.Request) -> web.Response:
        seen.append(" ".join(f"{k}: {v}" for k, v in request.headers.items()) + request.path_qs)
        if "again" not in request.query:  # reloads itself: a same-site request
            return web.Response(text="<script>location.replace('/?again=1')</script>",
                                content_type="text/html")  # fmt: skip
        return web.Response(text="thanks")

    ports: list[int] = []  # the listener's, the other site's

    async def other_site(_request: web.Request) -> web.Response:
        return web.Response(text=f'<a id=go href="http://127.0.0.1:{ports[0]}/">cats</a>',
                            content_type="text/html")  # fmt: skip

    heard = "window.__settle && window.__settle.lastWord > 0"
    sid = _finished_session(store, 1_700_000_000_000, 60)
    runners: list[web.AppRunner] = []
    async with (
        dashboard(token=token) as d,
        dashboard(token=token_b) as d_b,
        _browser() as browser,
    ):
        try:
            for handler in (listener, other_site):
                app = web.Application()
                app.router.add_get("/", handler)
                runners.append(runner := web.AppRunner(app))
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", 0).start()
                ports.append(runner.addresses[0][1])
            ctx = await browser.new_context(bypass_csp=True, accept_downloads=True)
            page = await ctx.new_page()
            seen_by_us: list[tuple[str, int, str | None]] = []
            page.on("response", lambda r: seen_by_us.append((r.url, r.status, r.headers.get(
                "referrer-policy"))))  # fmt: skip
            referers: list[str] = []
            page.on("request", lambda r: referers.append(r.headers.get("referer", "")))
            asked: list[str] = []
            page.on("request", lambda r: asked.append(r.url))
            await page.goto(f"{d.url}live?token={token}&device=dev_1")
            assert page.url == d.url + "live?device=dev_1"  # the address bar
            await page.wait_for_function(heard)
            await page.click("nav a[data-page=history]")
            await page.click(f"#session-list a[href='/history/{sid}']")
            await page.wait_for_function(
                "document.getElementById('report').contentDocument?.body?.textContent"
                f".includes('Session {sid}')",
                timeout=30_000,
            )
            assert (await page.evaluate("document.getElementById('report').src")).startswith(
                f"blob:{d.url[:-1]}"
            )
            async with page.expect_download() as download:
                await page.click("#detail-exports a.export:text-is('csv')")
            got = await download.value
            assert got.url.startswith("blob:") and got.suggested_filename == f"settle-{sid}.csv"
            assert read_export_csv(Path(await got.path()))
            typed = f"{d.url}live?token={token}&device=dev_1"  # what the user opened
            assert not [u for u in asked if token in u and u != typed
                        and not u.startswith(f"{d.url}events?")], asked  # fmt: skip
            assert token not in await page.evaluate("location.href")
            await page.go_back()
            await page.go_back()  # the history holds no entry with the token
            assert token not in page.url
            await page.reload()  # the tab keeps the token
            await page.wait_for_function(heard)
            # Ctrl+click on one of the page's own links opens it in a new tab, as on any
            # page: the router took the click and opened nothing (this tab went there).
            here = page.url
            async with ctx.expect_page() as opened:
                await page.click("nav a[data-page=pair]", modifiers=["Control"])
            tab = await opened.value
            await tab.wait_for_url(f"{d.url}pair**")
            assert page.url == here
            await tab.close()
            # Another server on the host, reached by a link from another site.
            other = await ctx.new_page()
            await other.goto(f"http://localhost:{ports[1]}/")
            await other.click("#go")
            await other.wait_for_url(f"http://127.0.0.1:{ports[0]}/?again=1")
            assert len(seen) == 2
            assert not [h for h in seen if token in h or "Cookie" in h], seen
            # Another token-protected dashboard on the host, in another tab: each keeps
            # its own token.
            await other.goto(f"{d_b.url}live?token={token_b}")
            await other.wait_for_function(heard)
            await page.reload()
            await page.wait_for_function(heard)
            # A new tab has no token: the page says what to do.
            fresh = await ctx.new_page()
            await fresh.goto(f"{d.url}live")
            await fresh.wait_for_function(
                "document.getElementById('banners').textContent.includes("
                "'Token required — open the address the daemon printed at start-up')"
            )
            assert not [u for u, status, _ in seen_by_us if status == 401], seen_by_us
            assert not await fresh.evaluate("window.__settle.lastWord")
            # ... and takes the token pasted into its field: a wrong one is refused in
            # the banner, the whole printed address works, and no address holds it.
            assert await fresh.is_visible("#token-form")
            await fresh.fill("#token-input", "not-the-token-0123456789")
            await fresh.click("#token-form button[type=submit]")
            await fresh.wait_for_function(
                "document.getElementById('banners').textContent.includes("
                '"The daemon refused this tab\'s token")'
            )
            # Curly quotes from a chat are dropped; what is no token is said in the form
            # (a curly-quoted one could not be sent, and the tab sat "unreachable").
            await fresh.fill("#token-input", "not a token")
            await fresh.click("#token-form button[type=submit]")
            await fresh.wait_for_function(
                "document.getElementById('token-said').textContent"
                ".startsWith('That is not a Settle token')"
            )
            await fresh.fill("#token-input", f"  {d.url}#token={token}\n")
            await fresh.click("#token-form button[type=submit]")
            await fresh.wait_for_function(heard)
            assert not await fresh.is_visible("#token-form")
            assert token not in fresh.url and fresh.url == f"{d.url}live"
            # (A blob: document takes the policies of the page that made it.)
            assert not [u for u, _, policy in seen_by_us
                        if policy != "no-referrer" and not u.startswith("blob:")]  # fmt: skip
            assert not [r for r in referers if token in r]
            # A tab that may keep nothing (site data blocked): a pasted token, in curly
            # quotes as a chat copies it, is kept in the page alone — no reload with it
            # in the address (the browser's history database kept that address).
            blocked = await ctx.new_page()
            await blocked.add_init_script(
                "Storage.prototype.setItem = () => {"
                " throw new DOMException('no', 'SecurityError') };"
            )
            await blocked.goto(f"{d.url}live")
            await blocked.wait_for_selector("#token-form", state="visible")
            await blocked.evaluate("window.__same_page = true")
            await blocked.fill("#token-input", f"\u201c{token}\u201d")
            await blocked.click("#token-form button[type=submit]")
            await blocked.wait_for_function(heard)
            assert await blocked.evaluate("window.__same_page === true")
            assert blocked.url == f"{d.url}live"
            await ctx.close()
            # Under the page's own CSP (the contexts above bypass it for playwright's
            # waits), opened at the printed form of the address (#token=): the report's
            # blob: frame shows, and a download comes.
            strict = await browser.new_context(accept_downloads=True)
            page = await strict.new_page()
            await page.goto(f"{d.url}history/{sid}#token={token}")
            assert page.url == f"{d.url}history/{sid}"

            async def report_shown() -> bool:
                return bool(await page.evaluate(
                    "document.getElementById('report').contentDocument?.body?.textContent"
                    f".includes('Session {sid}')"))  # fmt: skip

            await _until(report_shown, 30, "the report under the page's CSP")
            async with page.expect_download() as download:
                await page.click("#detail-exports a.export:text-is('csv')")
            assert read_export_csv(Path(await (await download.value).path()))
            await strict.close()
        finally:
            for runner in runners:
                await runner.cleanup()


def test_the_printed_address_holds_the_token_in_its_fragment(tmp_path: Path) -> None:
    """The address printed at start-up held the token in its query (…/?token=…): sent to
    the server with the first request, so in a proxy's access log too. In the fragment
    (…/#token=…) no browser sends it anywhere; the page takes it from there."""
    token = tmp_path / "tok"
    token.write_text("s3cret+token/0123456789=\n")  # base64's + read as a space unescaped
    token.chmod(0o600)
    config = tmp_path / "c.toml"
    config.write_text(f'[http]\nport = 0\ntoken_file = "{token}"\nrequire_token = true\n')
    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", "demo", "--duration", "1", "--no-mqtt",
         "--config", str(config), "--db", str(tmp_path / "s.db")],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SETTLE_HTTP__ENABLED": "true"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert re.search(
        r"http: +http://127\.0\.0\.1:\d+/#token=s3cret%2Btoken%2F0123456789%3D\n", res.stdout
    )
    assert "?token=" not in res.stdout


def test_reports_and_exports_are_made_outside_the_daemon(tmp_path: Path) -> None:
    """A report (matplotlib) or a JSON export of a long session, made in a thread of the
    daemon, held its interpreter up to ~0.8 s: every live beat waited, at --speed 20 the
    beat timer stored gaps in four running sessions, and the daemon kept matplotlib and the
    export's memory (RSS 205 → 348 MB after a few reports). They are made in a worker
    process now: in a fresh daemon process, a report and exports leave no matplotlib loaded
    (the worker draws it). So does the analysis behind the History list (catching up of
    every finished session: four 5-hour sessions held the daemon 4.4 s)."""
    from sessions.store import BeatRow

    db = tmp_path / "s.db"
    with SessionStore.open(db) as store:
        sid = store.create_session("dev_1", 1_700_000_000_000, "test", {}).id
        rows = [BeatRow(i, 0.8 * (i + 1), 1_700_000_000_000 + 800 * (i + 1), 800.0 + 20 * (i % 3),
                        None, 75, None) for i in range(600)]  # fmt: skip
        store.add_beats(sid, rows)
        store.finish_session(sid, 1_700_000_480_000)
    script = f"""
import asyncio, sys, aiohttp
from feedback.dashboard import Dashboard, DashboardConfig, Hub, NoDaemon
from sessions.store import SessionStore

async def main():
    with SessionStore.open({str(db)!r}) as store:
        cfg = DashboardConfig(host="127.0.0.1", port=0, token="t" * 16)
        async with Dashboard(Hub("settle"), NoDaemon(), store, cfg) as d:
            auth = {{"Authorization": "Bearer " + "t" * 16}}
            async with aiohttp.ClientSession(headers=auth) as h:
                for path in ("report", "export/json", "export/edf"):
                    async with h.get(d.url + "sessions/{sid}/" + path) as r:
                        body = await r.read()
                        assert r.status == 200 and len(body) > 1000, (path, r.status, body[:200])
                        # The worker's PNG goes with its temporary directory: not "saved".
                        assert b"Also saved as" not in body
                for _ in range(300):  # History fills in its rows in the background
                    async with h.get(d.url + "api/sessions") as r:
                        (row,) = (await r.json())["sessions"]
                    if not row.get("pending"):
                        break
                    await asyncio.sleep(0.1)
                assert row["id"] == "{sid}" and row["catching_up"] == "no_score", row
    loaded = sorted(m for m in sys.modules if m.startswith("matplotlib")
                    or m == "sessions.report")
    print(",".join(loaded) or "none")

asyncio.run(main())
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parents[1])  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "none"


class _Cuttable:
    """A TCP relay on loopback between the browser and the dashboard whose connections can
    all be cut at once: a network drop, after which the page's EventSource reconnects."""

    def __init__(self, port: int) -> None:
        self.up = port
        self.port = 0
        self.conns: set[asyncio.StreamWriter] = set()
        self.opened = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Cuttable:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.up)
        self.opened += 1
        self.conns |= {cw, uw}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pipe(cr, uw), pipe(ur, cw))

    def cut(self) -> None:
        for w in self.conns:
            w.transport.abort()
        self.conns.clear()


@pytest.mark.timeout(150)
async def test_a_coach_watching_one_of_three_straps_in_chromium(tmp_path: Path) -> None:
    """`settle demo --straps 3`, as a coach drove it: the page went back to strap 1 after a
    reload or a link opened anew (the next marker key stored the marker there); a network
    drop replayed the whole backlog (every marker, beat and index twice); a disconnected
    strap's score and HRV values stayed on screen; marker keys after a pick in the strap
    picker were ignored; "caught up" came from the stale retained session message; the
    results, the note and the picker did not say which strap; the tachogram showed the
    previous strap's beats for up to 0.9 s after a switch."""
    _chromium_or_skip()
    db = tmp_path / "settle.db"
    settings = _daemon_settings(db, {"enabled": False})
    buf = io.StringIO()
    console = Console(file=buf, width=200, highlight=False)
    done = asyncio.Event()
    async with (
        virtual_world(replay=None, speed=10.0, seed=5, n_straps=3) as world,
        _browser() as browser,
    ):
        daemon = asyncio.create_task(
            serve(settings, **world.serve_kwargs(), console=console, handle_signals=False,
                  finished=[done.wait()]),
            name="daemon-under-test",
        )  # fmt: skip
        try:
            await _until(lambda: _three_ready(buf), 20, "three straps' sessions")
            url = re.search(r"http:\s+(http://\S+)", buf.getvalue())
            assert url is not None
            port = int(url.group(1).rstrip("/").rsplit(":", 1)[1])
            async with _Cuttable(port) as relay:
                await _coach(browser, f"http://127.0.0.1:{relay.port}/", world, relay, db)
        finally:
            done.set()
            await asyncio.wait_for(daemon, 20)


async def _three_ready(buf: io.StringIO) -> bool:
    return await _ready(buf) and buf.getvalue().count("  session: ") >= 3


def _markers_of(db: Path, device_id: str) -> list[tuple[str, str]]:
    with SessionStore.open(db) as store:
        (ses,) = [s for s in store.list_sessions()
                  if s.device_id == device_id and s.state is SessionState.RUNNING]  # fmt: skip
        return [(m.kind, m.text) for m in store.markers(ses.id)]


async def _coach(browser: Any, base: str, world: Any, relay: _Cuttable, db: Path) -> None:
    ctx = await browser.new_context(viewport=DESKTOP, bypass_csp=True)
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(base + "live")
    await page.wait_for_function(
        "window.__settle.devices.filter(d => d.device_id && d.state === 'streaming').length === 3"
        " && window.__settle.device"
    )
    ids = [x["device_id"] for x in await page.evaluate("window.__settle.devices")]
    one, two, three = ids
    # The picker names each strap and says its state (it listed the bare ids).
    await page.wait_for_function("document.querySelectorAll('#device option').length === 3")
    options = await page.eval_on_selector_all("#device option", "os => os.map(o => o.text)")
    assert options == [f"Settle Virtual HR {i} — streaming" for i in (1, 2, 3)], options

    # Strap 3 picked with the keyboard (the focus stays on the picker: arrow keys go on
    # picking), then a marker key: it was silently ignored there. The result names the strap.
    await page.focus("#device")
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("ArrowDown")
    assert await page.evaluate("window.__settle.device") == three
    assert await page.evaluate("document.activeElement.id") == "device"
    await page.keyboard.press("1")
    await _said(page, "“shame” marker added — Settle Virtual HR 3 (")
    assert _markers_of(db, three) == [("shame", "")]
    assert f"device={three}" in page.url

    # A reload, a link of the page, and a page opened anew without the query all stay on
    # strap 3, and the next marker key goes there (it went to strap 1).
    await page.reload()
    await page.wait_for_function("window.__settle.device && window.__settle.devices.length")
    assert await page.evaluate("window.__settle.device") == three
    assert await page.input_value("#device") == three
    await page.keyboard.press("2")
    await _said(page, "“threat” marker added — Settle Virtual HR 3 (")
    await page.click("nav >> text=Session")
    assert f"/control?device={three}" in page.url
    other = await ctx.new_page()
    await other.goto(base + "control")  # no query: the last strap picked here
    await other.wait_for_function("window.__settle.device")
    assert await other.evaluate("window.__settle.device") == three
    await other.close()
    assert _markers_of(db, one) == []
    assert _markers_of(db, three) == [("shame", ""), ("threat", "")]

    # A note typed for strap 3 does not go with strap 2's marker after a switch; it is kept
    # for strap 3.
    await page.fill("#note", "for three only")
    await page.focus("#device")  # as a click on it would
    await page.select_option("#device", two)
    assert await page.input_value("#note") == ""
    await page.keyboard.press("4")
    await _said(page, "“attention” marker added — Settle Virtual HR 2 (")
    assert _markers_of(db, two) == [("attention", "")]
    await page.select_option("#device", three)
    assert await page.input_value("#note") == "for three only"
    await page.fill("#note", "")

    # The tachogram shows the new strap's beats at once after a switch (0.9 s late).
    await page.click("nav >> text=Live")
    await page.wait_for_function(
        "ids => ids.every(i => (window.__settle.perDev[i] || { t: [] }).t.length > 5)",
        arg=ids,
    )
    for target in (one, two, three):
        same = await page.evaluate(
            """(id) => { const sel = document.getElementById("device"); sel.value = id;
            sel.dispatchEvent(new Event("change"));
            const d = window.__settle.perDev[id], xs = tacho.data[0];
            return xs.length === d.t.length && xs.every((t, i) => t === d.t[i]); }""",
            target,
        )
        assert same, target

    # "Caught up" as the latest indices say (History and the report do): the retained
    # session message keeps the first detection (4:05 after a hold start moved it to 12:55).
    # (Once the strap shown is refilled from its backlog after the switches: until then the
    # page shows what it held, and the messages made up here would go to the refill.)
    await page.wait_for_function("rebuild === null")
    caught = await page.evaluate(
        """() => { const S = window.__settle, d = S.perDev[S.device];
        onMessage(`${S.device}/session`, JSON.stringify({ ...d.session, catching_up_t_s: 245 }));
        onMessage(`${S.device}/indices`, JSON.stringify({ ...d.indices, catching_up_t_s: 775 }));
        render(); d.it.pop(); d.ln.pop(); d.set.pop();  // not a real index: off the chart
        return document.getElementById("caught").textContent; }"""
    )
    assert caught == "at 12:55"

    # A network drop: the EventSource reconnects and gets only what it missed (the whole
    # backlog came again: markers, beats and indices twice, the trend drawn back in time).
    await page.wait_for_function(
        "(d => d.it.length >= 3 && d.events.filter(e => e.kind === 'shame').length === 1)"
        "(window.__settle.perDev[window.__settle.device])"
    )
    seen = relay.opened
    relay.cut()
    await _until(lambda: _opened_more(relay, seen), 10, "the page reconnecting")
    t_cut = await page.evaluate(
        "(d => d.t[d.t.length - 1])(window.__settle.perDev[window.__settle.device])"
    )
    await page.wait_for_function(
        "t => (d => d.t[d.t.length - 1] > t + 20 && d.it[d.it.length - 1] > t + 10)"
        "(window.__settle.perDev[window.__settle.device])",
        arg=t_cut,
        timeout=15_000,
    )
    feed = await page.evaluate(
        """() => { const d = window.__settle.perDev[window.__settle.device];
        const steps = (xs) => xs.slice(1).map((x, i) => x - xs[i]);
        return { beat: steps(d.t), idx: steps(d.it),
                 events: d.events.map((e) => `${e.kind}@${e.t_s}`) }; }"""
    )
    assert all(0 < s < 2.5 for s in feed["beat"]), feed["beat"]  # none twice, none lost
    assert all(4.9 < s < 5.1 for s in feed["idx"]), feed["idx"]
    assert len(feed["events"]) == len(set(feed["events"])), feed["events"]
    assert [e for e in feed["events"] if e.startswith(("shame", "threat"))] != []
    errors[:] = [e for e in errors if "ERR_INCOMPLETE_CHUNKED_ENCODING" not in e]  # the cut

    # The watched strap and another drop: the watched one's values read "–" (they stayed,
    # frozen, under the banner); the other one's state is said in the picker and a banner.
    await page.wait_for_function("/^\\d/.test(document.getElementById('lnrmssd').textContent)")
    await asyncio.gather(world.straps[2].drop(reappear_after_s=6.0),
                         world.straps[0].drop(reappear_after_s=6.0))  # fmt: skip
    await page.wait_for_function(
        "(b => b.includes('Strap disconnected')"
        " && b.includes('Also disconnected: Settle Virtual HR 1'))"
        "(document.getElementById('banners').textContent)",
        timeout=10_000,
    )
    await page.evaluate("render()")
    for card in ("settling", "lnrmssd", "rmssd", "coherence", "resp", "quality", "trend"):
        assert await page.text_content(f"#{card}") in ("–", ""), card
    assert await page.text_content("#settling-note") == "strap disconnected"
    options = await page.eval_on_selector_all("#device option", "os => os.map(o => o.text)")
    assert options[0].startswith("Settle Virtual HR 1 — disconnected ("), options
    await page.wait_for_function(
        "/^\\d/.test(document.getElementById('lnrmssd').textContent)", timeout=30_000
    )
    assert not [e for e in errors if "favicon" not in e], errors
    await ctx.close()


async def _opened_more(relay: _Cuttable, seen: int) -> bool:
    return relay.opened > seen


async def test_static_files_are_revalidated_and_every_body_coding_gets_a_json_answer(
    dashboard: Any,
) -> None:
    """/static/ went out without Cache-Control: after an upgrade a browser could run the old
    app.js from its cache against the new daemon. A command sent with `Content-Encoding: br`
    got aiohttp's plain-text 400 "Can not decode content-encoding: brotli (br)…" (and a log
    line), where every /api/ answer is JSON."""
    import gzip

    hub = Hub("settle")
    back = _Recorder(hub)
    async with (
        dashboard(hub, back) as d,
        aiohttp.ClientSession(headers={"X-Settle": "1"}) as http,
    ):
        for name in ("app.js", "app.css", "vendor/uplot/uPlot.iife.min.js"):
            async with http.get(d.url + "static/" + name) as r:
                assert r.status == 200 and r.headers["Cache-Control"] == "no-cache", name
                etag = r.headers["ETag"]
            async with http.get(d.url + "static/" + name, headers={"If-None-Match": etag}) as r:
                assert r.status == 304, name
        url = d.url + "api/cmd/dev_1/marker"
        body = b'{"kind": "doubt"}'
        for coding in ("br", "zstd", "gzip, br"):
            async with http.post(url, data=body, headers={"Content-Encoding": coding}) as r:
                assert r.status == 400 and r.content_type == "application/json", coding
                assert (await r.json())["error"] == (
                    f"request body: Content-Encoding {coding!r} is not taken "
                    "(identity, gzip or deflate)"
                )
        async with http.post(url, data=gzip.compress(body),
                             headers={"Content-Encoding": "gzip"}) as r:  # fmt: skip
            assert r.status == 200, await r.text()
        # Small when compressed, too large once decoded: refused as any body too large.
        bomb = gzip.compress(b'{"kind": "note", "text": "' + b"x" * 100_000 + b'"}')
        async with http.post(url, data=bomb, headers={"Content-Encoding": "gzip"}) as r:
            assert r.status == 413 and (await r.json())["error"] == (
                "request too large: a command takes at most 4096 bytes"
            )
        assert [json.loads(p)["kind"] for p in back.payloads] == ["doubt"]


async def test_a_body_with_more_after_its_coding_or_with_stacked_codings_is_refused(
    dashboard: Any,
) -> None:
    """Bytes after the end of a gzip or deflate body (a second gzip member too) were
    dropped and the command taken; of two Content-Encoding headers only the first was read
    (a stack of two codings decoded once). Each is now the JSON 400 of a body that does not
    decode, and the connection is closed."""
    import gzip
    import zlib

    hub = Hub("settle")
    back = _Recorder(hub)
    async with dashboard(hub, back) as d:
        body = b'{"kind": "doubt"}'
        second = gzip.compress(b"x")  # a second gzip member
        sent = [
            ("gzip", gzip.compress(body) + b"junk", b"4 bytes after the end of the gzip data"),
            ("gzip", gzip.compress(body) + second, b"%d bytes after the end" % len(second)),
            ("deflate", zlib.compress(body) + b"!", b"1 bytes after the end of the deflate"),
            ("gzip\r\nContent-Encoding: gzip", gzip.compress(gzip.compress(body)),
             b"Content-Encoding 'gzip, gzip' is not taken"),
        ]  # fmt: skip
        for coding, data, why in sent:
            head = (f"POST /api/cmd/dev_1/marker HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"X-Settle: 1\r\nContent-Encoding: {coding}\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n")  # fmt: skip
            status, rest = await _raw(d.port, head.encode() + data)
            assert b" 400 " in status and why in rest, (coding, status, rest)
            assert b"Connection: close" in rest, coding
        assert back.payloads == []
