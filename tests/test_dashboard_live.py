"""The Live page's feed in real Chromium, against the real dashboard server with a stand-in
daemon (tests/test_dashboard_phone.py's one streaming strap): beats and markers are published
into the hub by the test, so what the page holds can be compared with what was sent."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from feedback.dashboard import Dashboard, Hub
from feedback.dashboard import hub as hub_module
from feedback.dashboard import server as server_module
from feedback.dashboard.server import DeviceView
from tests.test_dashboard import DESKTOP, _browser, _chromium_or_skip, _Cuttable, _until
from tests.test_dashboard_phone import DEV, SID, _Strap


def _beat(hub: Hub, t_s: float, ts_ms: int | None = None) -> None:
    """One beat of the running session, stamped with the daemon's clock (``ts``, ms)."""
    ts = int(time.time() * 1000) if ts_ms is None else ts_ms
    hub.publish(f"settle/{DEV}/beat", json.dumps({
        "v": 1, "ts": ts, "seq": int(t_s), "hr": 75, "rr_ms": [800.0], "beat_t_s": [t_s],
        "classified": [], "contact": True, "session": SID}))  # fmt: skip


def _marker(hub: Hub, kind: str, t_s: float) -> None:
    hub.publish(f"settle/{DEV}/event", json.dumps({
        "v": 1, "ts": int(time.time() * 1000), "kind": kind, "t_s": t_s, "text": "",
        "session": SID}))  # fmt: skip


@contextlib.asynccontextmanager
async def _live(dashboard: Any) -> AsyncIterator[tuple[Any, Hub, Dashboard]]:
    """A dashboard (the ``dashboard`` fixture's) with the stand-in strap and a desktop
    browser context (no page yet): ``(context, hub, dashboard)``."""
    _chromium_or_skip()
    hub = Hub("settle")
    async with dashboard(hub, _Strap(hub)) as d, _browser() as browser:
        ctx = await browser.new_context(viewport=DESKTOP, bypass_csp=True)
        try:
            yield ctx, hub, d
        finally:
            await ctx.close()


HELD = """(() => { const S = window.__settle;
  const d = S.perDev[S.device] || {t: [], it: [], events: []};
  return {t: d.t, events: d.events.map((e) => e.kind)}; })()"""


@pytest.mark.timeout(60)
async def test_a_refused_reconnect_does_not_store_the_backlog_twice(
    dashboard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream dropped and the browser's own reconnect was answered 503 (the 32 live
    pages, the connection cap, a proxy's error): the page's next try, 5 s later, opened a
    fresh stream without the last id it got, and the whole backlog was stored a second
    time — 44 beats twice, the tachogram stepping back in time, markers "shame, doubt,
    shame, doubt". It now resumes after the last message it got."""
    async with _live(dashboard) as (ctx, hub, d):
        for i in range(20):
            _beat(hub, 0.8 * (i + 1))
        _marker(hub, "shame", 3.0)
        _marker(hub, "doubt", 5.0)
        async with _Cuttable(d.port) as relay:
            page = await ctx.new_page()
            statuses: list[int] = []
            page.on("response", lambda r: statuses.append(r.status) if "/events" in r.url else None)
            await page.goto(f"http://127.0.0.1:{relay.port}/live")

            async def held() -> dict[str, Any]:
                return dict(await page.evaluate(HELD))

            await _until(lambda: _has(held, 20, 2), 10, "the backlog on the page")
            monkeypatch.setattr(server_module, "MAX_STREAMS", 0)  # every live page refused
            relay.cut()
            await _until(lambda: _true(503 in statuses), 15, "a refused reconnect")
            monkeypatch.setattr(server_module, "MAX_STREAMS", 32)
            _beat(hub, 0.8 * 21)
            await _until(lambda: _has(held, 21, 2), 20, "the beat after the reconnect")
            got = await held()
            assert got["t"] == [pytest.approx(0.8 * (i + 1)) for i in range(21)]
            assert got["events"] == ["shame", "doubt"]


async def _true(x: bool) -> bool:
    return x


async def _has(held: Any, beats: int, events: int) -> bool:
    got = await held()
    return len(got["t"]) >= beats and len(got["events"]) >= events


@pytest.mark.timeout(60)
async def test_the_heart_rate_shows_whatever_the_browsers_clock_says(dashboard: Any) -> None:
    """A beat's age was the browser's clock minus the daemon's stamp: with the browser 5 s
    or more ahead (a phone on the LAN against a Raspberry Pi without a clock or NTP) the
    heart rate was never shown ("–", greyed) while the strap read streaming; with it
    behind, a beat 8 s old still showed. The age is now measured on the daemon's clock. A
    beat stamped a minute ahead of the daemon's clock (it stepped back after that beat) is
    not current either: its negative age counted as fresh, so it stayed on screen."""
    async with _live(dashboard) as (ctx, hub, d):
        cases = ((6, 0, "75"), (120, 0, "75"), (-6, 8, "–"), (0, -60, "–"))
        for skew_s, beat_age_s, shown in cases:
            page = await ctx.new_page()
            await page.add_init_script(
                f"(() => {{ const real = Date.now; Date.now = () => real() + {skew_s * 1000}; }})()"
            )
            await page.goto(f"{d.url}live")
            # The strap shown, and a word from the daemon (its health event, every second).
            await page.wait_for_function("window.__settle.device && window.__settle.devices.length")
            seq = 100 + skew_s
            _beat(hub, seq, int((time.time() - beat_age_s) * 1000))
            await page.wait_for_function(
                f"window.__settle.perDev[window.__settle.device].t.includes({seq})"
            )
            await page.evaluate("render()")
            assert await page.text_content("#hr") == shown, (skew_s, beat_age_s)
            await page.close()


@pytest.mark.timeout(60)
async def test_a_strap_or_daemon_gone_is_said_at_once_and_no_value_stays(dashboard: Any) -> None:
    """Under the "Strap disconnected" banner every value read "–" but the battery ("80 %",
    the last report); and with the daemon gone the page went on saying "streaming" until
    4 s of silence had passed, though the stream had broken."""
    async with _live(dashboard) as (ctx, _hub, d):
        page = await ctx.new_page()
        strap = d.control
        async with _Cuttable(d.port) as relay:
            await page.goto(f"http://127.0.0.1:{relay.port}/live")
            await page.wait_for_function(
                "document.getElementById('battery').textContent === '80 %'"
            )
            strap.state, strap.last_error = "backoff", "connection lost"  # type: ignore[attr-defined]
            await page.wait_for_function(
                "document.getElementById('banners').textContent.includes('Strap disconnected')"
            )
            await page.evaluate("render()")
            assert await page.text_content("#battery") == "–"
            strap.state, strap.last_error = "streaming", None  # type: ignore[attr-defined]
            await page.wait_for_function(
                "document.getElementById('battery').textContent === '80 %'"
            )
            assert await page.text_content("#conn") == "Settle Virtual HR: streaming · MQTT off"
        # The relay is gone: the stream breaks, and no new one opens.
        await page.wait_for_function("es.readyState !== EventSource.OPEN")
        await page.evaluate("render()")
        assert await page.text_content("#conn") == "daemon unreachable"
        assert "No word from the Settle daemon" in (await page.text_content("#banners") or "")


@pytest.mark.timeout(60)
async def test_history_names_each_strap_and_a_broken_address_is_no_session(
    dashboard: Any,
) -> None:
    """With sessions of several straps, History's rows named the strap by its device id
    (settle_virtual_hr_7d310ebf) where the header's picker says its name; and an address
    like /history/%E0%A4%A (a cut link) threw an uncaught URIError and showed nothing."""
    async with _live(dashboard) as (ctx, _hub, d):
        for device in (DEV, "dev_2"):
            sid = d.store.create_session(device, 1_700_000_000_000, "x", {}).id
            d.store.finish_session(sid, 1_700_000_060_000)
        page = await ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{d.url}history")
        await page.wait_for_function("window.__settle.devices.length")
        await page.evaluate("loadHistory()")  # the strap's name is known by now
        await page.wait_for_function(
            "document.querySelectorAll('#session-list .strap').length === 2"
        )
        straps = await page.locator("#session-list .strap").all_text_contents()
        assert sorted(straps) == ["(Settle Virtual HR)", "(dev_2)"]  # dev_2: not known
        await page.goto(f"{d.url}history/%E0%A4%A")
        await page.wait_for_function(
            "document.getElementById('report').contentDocument?.body?.textContent"
            ".includes('no session')"
        )
        assert not errors, errors


CHART_COLOURS = """[tacho.series[1].stroke(tacho, 1), trendc.series[2].stroke(trendc, 2),
  tacho.axes[0].stroke(tacho, 0)]"""


@pytest.mark.timeout(60)
async def test_charts_follow_a_switch_to_dark_and_the_heart_rate_reads_with_a_space(
    dashboard: Any,
) -> None:
    """The charts' colours were read once, when the page opened: switched to dark while it
    was open, the tachogram and the axes kept their light-mode colours on the dark page
    (#2f6f5e on #111614). A screen reader read the heart rate as "75bpm"."""
    async with _live(dashboard) as (ctx, hub, d):
        page = await ctx.new_page()
        await page.emulate_media(color_scheme="light")
        await page.goto(f"{d.url}live")
        await page.wait_for_function(
            "window.__settle.device && window.__settle.clockAhead !== null"
        )
        light = await page.evaluate(CHART_COLOURS)
        assert light == ["#2f6f5e", "#8a5a9b", "#5b6460"]
        await page.emulate_media(color_scheme="dark")
        before = json.dumps(json.dumps(light, separators=(",", ":")))
        await page.wait_for_function(f"JSON.stringify({CHART_COLOURS}) !== {before}")
        assert await page.evaluate(CHART_COLOURS) == ["#7cc4ad", "#d2a6e0", "#9aa5a0"]
        # The charts still draw what arrives.
        _beat(hub, 1.0)
        await page.wait_for_function("tacho.data[0].length === 1", timeout=5_000)
        assert "75 bpm" in await page.locator(".hero .big").aria_snapshot()


REPORT_COLOURS = """(doc => [getComputedStyle(doc.body).backgroundColor,
  getComputedStyle(doc.body).color])"""


@pytest.mark.timeout(90)
async def test_the_session_report_is_dark_in_dark_mode_alone_and_in_historys_frame(
    dashboard: Any,
) -> None:
    """In dark mode the report (History's frame, `settle report`) stayed a white page:
    in the dashboard a glaring white box, which the frame's own white background forced
    even around it."""
    from tests.test_dashboard import _finished_session

    async with _live(dashboard) as (ctx, _hub, d):
        sid = _finished_session(d.store, 1_700_000_000_000, 60)
        page = await ctx.new_page()
        await page.emulate_media(color_scheme="dark")
        await page.goto(f"{d.url}sessions/{sid}/report")
        dark = ["rgb(17, 22, 20)", "rgb(230, 235, 232)"]
        assert await page.evaluate(f"{REPORT_COLOURS}(document)") == dark
        await page.goto(f"{d.url}history/{sid}")
        await page.wait_for_function(
            "document.getElementById('report').contentDocument?.body?.textContent"
            f".includes('Session {sid}')",
            timeout=30_000,
        )
        frame = f"{REPORT_COLOURS}(document.getElementById('report').contentDocument)"
        assert await page.evaluate(frame) == dark
        assert (
            await page.evaluate(
                "getComputedStyle(document.getElementById('report')).backgroundColor"
            )
            != "rgb(255, 255, 255)"
        )
        await page.emulate_media(color_scheme="light")
        assert await page.evaluate(frame) == ["rgb(255, 255, 255)", "rgb(34, 34, 34)"]


# Each page's visibility, as the test sets it: headless Chromium shows every page, so a tab
# "hidden" behind another is this (document.visibilityState, and its event). Nor does it
# freeze a page it shows (CDP's Page.setWebLifecycleState "frozen" leaves its timers
# running and fires no event): a frozen tab is its `freeze` and `resume` events.
VISIBILITY = """(() => { window.__hidden = false;
  for (const k of ["visibilityState", "hidden"]) Object.defineProperty(document, k, {
    configurable: true,
    get: () => k === "hidden" ? window.__hidden : (window.__hidden ? "hidden" : "visible") });
})()"""


async def _hide(page: Any, hidden: bool) -> None:
    await page.evaluate(
        f"window.__hidden = {str(hidden).lower()}; "
        "document.dispatchEvent(new Event('visibilitychange'))"
    )


async def _tabs(ctx: Any, url: str, n: int) -> list[Any]:
    """``n`` tabs on the Live page, each with the strap shown and its stream open."""
    pages = []
    for _ in range(n):
        page = await ctx.new_page()
        await page.goto(url, wait_until="domcontentloaded")
        pages.append(page)
    for page in pages:
        await page.wait_for_function("window.__settle.device && es && es.readyState === 1")
    return pages


async def _said_in(page: Any, words: str, timeout_s: float) -> str:
    await page.wait_for_function(
        f"document.getElementById('cmd-result').textContent.includes({json.dumps(words)})",
        timeout=timeout_s * 1000,
    )
    return str(await page.text_content("#cmd-result"))


@pytest.mark.timeout(90)
async def test_hidden_and_frozen_tabs_let_go_of_their_connections(dashboard: Any) -> None:
    """A browser keeps 6 connections to one address for all its tabs, and every Settle tab
    held one for its live stream for good, hidden or frozen too: with six tabs open a marker
    key left the status line empty and the button disabled for 15 s and more, and a seventh
    tab never loaded. A hidden or frozen tab now closes its stream and, shown again, opens
    one that resumes after the last message it got (nothing twice)."""
    async with _live(dashboard) as (ctx, hub, d):
        strap = d.control
        await ctx.add_init_script(VISIBILITY)
        for i in range(5):
            _beat(hub, 0.8 * (i + 1))
        pages = await _tabs(ctx, f"{d.url}live", 6)
        assert hub.subscribers == 6
        for page in pages[1:5]:
            await _hide(page, True)
        await pages[5].evaluate("document.dispatchEvent(new Event('freeze'))")
        await _until(lambda: _true(hub.subscribers == 1), 5, "the hidden tabs' streams closed")
        await pages[0].keyboard.press("5")
        said = await _said_in(pages[0], "“doubt” marker", 3)
        assert said.startswith("“doubt” marker added — Settle Virtual HR ("), said
        assert strap.kinds() == ["doubt"]  # type: ignore[attr-defined]
        seventh = await ctx.new_page()
        await seventh.goto(f"{d.url}live", timeout=5000)
        await seventh.wait_for_function("window.__settle.device")
        # Shown again (thawed), each tab gets what it missed, and nothing twice.
        for i in range(5, 8):
            _beat(hub, 0.8 * (i + 1))
        _marker(hub, "doubt", 4.5)
        await _hide(pages[1], False)
        await pages[5].evaluate("document.dispatchEvent(new Event('resume'))")
        for page in (pages[1], pages[5]):
            await page.wait_for_function(f"({HELD}).t.length >= 8 && ({HELD}).events.length")
            got = await page.evaluate(HELD)
            assert got["t"] == [pytest.approx(0.8 * (i + 1)) for i in range(8)]
            assert got["events"] == ["doubt"]


@pytest.mark.timeout(90)
async def test_a_marker_the_browser_cannot_send_is_withdrawn_and_said(dashboard: Any) -> None:
    """Six Settle tabs in view (six windows) hold the browser's six connections to the
    daemon: a marker key waited in the browser, the status line said nothing, and when a
    tab closed 15 s later the marker was sent and stored 15 s late. It is now withdrawn
    after 5 s — a request still waiting in the browser is then never sent — and the page
    says it was not recorded, and why."""
    async with _live(dashboard) as (ctx, _hub, d):
        strap = d.control
        pages = await _tabs(ctx, f"{d.url}live", 6)
        await pages[0].keyboard.press("1")
        said = await _said_in(pages[0], "“shame” marker", 8)
        assert said.startswith(
            "“shame” marker NOT recorded — not sent: the browser is holding too many "
            "connections to Settle (6 at most, for all its tabs and windows): close other "
            "Settle tabs, then press again ("
        ), said
        await pages[5].close()  # a connection is free: nothing goes out late
        await pages[1].wait_for_timeout(2000)
        assert strap.kinds() == []  # type: ignore[attr-defined]
        # With one free, a marker goes at once.
        await pages[0].keyboard.press("2")
        said = await _said_in(pages[0], "“threat” marker", 3)
        assert said.startswith("“threat” marker added — Settle Virtual HR ("), said
        # One that waited in the browser for 2 s, and then went, says it is 2 s late.
        pages[5:] = await _tabs(ctx, f"{d.url}live", 1)
        await pages[0].keyboard.press("3")
        await pages[0].wait_for_timeout(2000)
        await pages[5].close()
        said = await _said_in(pages[0], "“discomfort” marker", 3)
        assert re.match(
            r"“discomfort” marker added — Settle Virtual HR, but sent 2\.\d s after the press "
            r"\(the browser held it back: too many Settle tabs open\), so its time is 2\.\d s "
            r"late \(", said), said  # fmt: skip
        assert strap.kinds() == ["threat", "discomfort"]  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
async def test_a_refused_live_stream_says_why_and_markers_still_work(
    dashboard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the live-page cap reached the stream is answered 503 ("too many live pages open
    (32): close one"), and EventSource says neither that nor why: the page said "daemon
    unreachable" and "No word from the Settle daemon — the values shown are stale", and a
    marker key "no strap has connected yet", though the strap streamed and /api/state
    answered. It now gives the server's reason and takes the straps from /api/state."""
    async with _live(dashboard) as (ctx, _hub, d):
        strap = d.control
        monkeypatch.setattr(server_module, "MAX_STREAMS", 0)  # every live page refused
        page = await ctx.new_page()
        await page.goto(f"{d.url}live")
        await page.wait_for_function(_banners_say("Live updates refused"), timeout=10_000)
        await page.evaluate("render()")
        assert await page.text_content("#banners") == (
            "Live updates refused by the daemon: too many live pages open (0): close one — "
            "trying again every 5 s. The values shown are not live; markers and buttons "
            "still work."
        )
        assert await page.text_content("#conn") == "no live updates"
        assert await page.text_content("#settling-note") == "not current: live updates refused"
        await page.keyboard.press("4")
        said = await _said_in(page, "“attention” marker", 5)
        assert said.startswith("“attention” marker added — Settle Virtual HR ("), said
        assert strap.kinds() == ["attention"]  # type: ignore[attr-defined]
        monkeypatch.setattr(server_module, "MAX_STREAMS", 32)  # a page closed elsewhere
        await page.wait_for_function(
            "document.getElementById('conn').textContent.includes(': streaming')",
            timeout=10_000,
        )
        assert await page.text_content("#banners") == ""


@pytest.mark.timeout(60)
async def test_a_marker_the_store_has_not_taken_says_it_is_kept_in_memory(
    dashboard: Any,
) -> None:
    """With the session store failing (disk full, another program's write lock) the daemon
    answers a marker ok with `"stored": false`: the page said "“shame” marker added" in the
    ok colour, as for one on disk. It now says where the marker is, as `settle mark` does."""
    async with _live(dashboard) as (ctx, _hub, d):
        strap = d.control
        page = await ctx.new_page()
        await page.goto(f"{d.url}live")
        await page.wait_for_function(
            "document.getElementById('conn').textContent.includes(': streaming')",
            timeout=10_000,
        )
        await page.keyboard.press("1")
        said = await _said_in(page, "“shame” marker", 5)
        assert said.startswith("“shame” marker added — Settle Virtual HR ("), said
        assert "kept in memory" not in said
        strap.stored = False  # type: ignore[attr-defined]
        await page.keyboard.press("2")
        said = await _said_in(page, "“threat” marker", 5)
        assert said.startswith(
            "“threat” marker added — Settle Virtual HR, kept in memory: the session store is "
            "not taking writes now (the daemon's log says why); it is written when the store "
            "works again ("
        ), said
        assert "warn" in (await page.get_attribute("#cmd-result", "class") or ""), said
        assert strap.kinds() == ["shame", "threat"]  # type: ignore[attr-defined]


def _banners_say(words: str) -> str:
    return f"document.getElementById('banners').textContent.includes({json.dumps(words)})"


@pytest.mark.timeout(60)
async def test_a_strap_gone_after_a_daemon_restart_is_replaced_and_said(dashboard: Any) -> None:
    """The daemon restarted with other straps and the open tab reconnected by itself: it
    stayed on the strap it showed, which no longer existed — a marker said "unknown device
    …", the score "no session running" with one running. The page now waits while a strap
    is still connecting (the same one has no id until then), then picks again and says so."""
    async with _live(dashboard) as (ctx, hub, d):
        strap = d.control
        page = await ctx.new_page()
        await page.goto(f"{d.url}live")
        await page.wait_for_function(f"window.__settle.device === {json.dumps(DEV)}")
        # Restarted: a strap still connecting (no id yet) — the page keeps its strap.
        strap.views = [  # type: ignore[attr-defined]
            DeviceView(None, 0, "Settle Virtual HR", "AA:BB:CC:DD:EE:FF", "connecting", None,
                       None, None, None)]  # fmt: skip
        await page.wait_for_function(
            "window.__settle.devices.length && !window.__settle.devices[0].device_id"
        )
        await page.wait_for_timeout(2000)
        assert await page.evaluate("window.__settle.device") == DEV
        # It came back with other straps.
        for dev_id in ("strap_b", "strap_c"):
            hub.publish(f"settle/{dev_id}/session", json.dumps({
                "v": 1, "id": f"S-{dev_id}", "state": "running", "baseline": "pending",
                "intention": None}), retain=True)  # fmt: skip
        strap.views = [  # type: ignore[attr-defined]
            DeviceView(f"strap_{x}", i, f"Strap {x.upper()}", f"AA:{i}", "streaming", 80, True,
                       f"S-strap_{x}", None)
            for i, x in enumerate("bc")]  # fmt: skip
        await page.wait_for_function(_banners_say("The strap shown before"), timeout=10_000)
        assert await page.evaluate("window.__settle.device") == "strap_b"
        assert await page.text_content("#banners") == (
            "The strap shown before (Settle Virtual HR) is gone from the daemon (restarted "
            "with other straps?) — now showing Strap B; markers go to it."
        )
        await page.keyboard.press("5")
        said = await _said_in(page, "“doubt” marker", 5)
        assert said.startswith("“doubt” marker added — Strap B ("), said
        # A strap picked by hand ends the banner.
        await page.select_option("#device", "strap_c")
        await page.wait_for_function("!document.getElementById('banners').textContent")


def _unusable(hub: Hub, t_s: float) -> None:
    hub.publish(f"settle/{DEV}/indices", json.dumps({
        "v": 1, "ts": int(time.time() * 1000), "session": SID, "t_s": t_s, "usable": False,
        "warming_up": False, "reason": "62 % premature beats", "ln_rmssd": 3.5,
        "rmssd_ms": 33.0, "settling": None, "coherence": None, "resp_rate_bpm": None,
        "quality": 0.4, "components": None, "trend": None, "trend_confidence": None}))  # fmt: skip


UNUSABLE = "Rhythm unusable (62 % premature beats) — do not read the settling score now."


@pytest.mark.timeout(60)
async def test_rhythm_unusable_is_said_only_while_a_session_measures(dashboard: Any) -> None:
    """The banner "Rhythm unusable — do not read the settling score now" stayed under
    "Strap disconnected", and after the session stopped until the next one started, about a
    score that was not being made. It is said only with a session running on a streaming
    strap."""
    async with _live(dashboard) as (ctx, hub, d):
        strap = d.control
        for i in range(5):
            _beat(hub, i + 1.0)
        _unusable(hub, 5.0)
        page = await ctx.new_page()
        await page.goto(f"{d.url}live")
        await page.wait_for_function(_banners_say(UNUSABLE))
        strap.state = "backoff"  # type: ignore[attr-defined]
        await page.wait_for_function(_banners_say("Strap disconnected"))
        await page.evaluate("render()")
        assert UNUSABLE not in (await page.text_content("#banners") or "")
        strap.state = "streaming"  # type: ignore[attr-defined]
        await page.wait_for_function(_banners_say(UNUSABLE))
        hub.publish(f"settle/{DEV}/session", json.dumps({
            "v": 1, "id": SID, "state": "stopped", "baseline": "pending",
            "intention": None}), retain=True)  # fmt: skip
        await page.wait_for_function("document.getElementById('settling-note').textContent"
                                     " === 'no session running'")  # fmt: skip
        await page.evaluate("render()")
        assert await page.text_content("#banners") == ""


MISSED = "This page missed some live messages"


@pytest.mark.timeout(60)
async def test_a_page_that_fell_behind_says_it_missed_messages(dashboard: Any) -> None:
    """The server drops the oldest messages of a page that falls behind and counts them in
    its health events (`dropped`), which the page ignored: it lost beats, scores and markers
    without a word. It now says so, until the strap's next session."""
    async with _live(dashboard) as (ctx, hub, d):
        hub.queue_size = 20  # each page's queue
        page = await ctx.new_page()
        await page.goto(f"{d.url}live")
        await page.wait_for_function("window.__settle.device && es && es.readyState === 1")
        for i in range(200):  # at once: the page cannot read meanwhile
            _beat(hub, i + 1.0)
        await page.wait_for_function(_banners_say(MISSED), timeout=5000)
        assert (await page.text_content("#banners") or "").startswith(
            "This page missed some live messages (it fell behind, or was in the background "
            "longer than the daemon keeps them) — its charts and markers have gaps. Everything "
            "was stored: reload for the last 15 minutes in full, or see the session's report "
            "in History."
        )
        hub.publish(f"settle/{DEV}/session", json.dumps({
            "v": 1, "id": "S-next", "state": "running", "baseline": "pending",
            "intention": None}), retain=True)  # fmt: skip
        await page.wait_for_function(f"!({_banners_say(MISSED)})")


@pytest.mark.timeout(60)
async def test_a_tab_hidden_longer_than_the_backlog_says_what_it_missed(
    dashboard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tab shown again resumes after the last message it got, from the daemon's backlog
    (~15 min a strap): hidden longer, it gets only the newest, and says it missed some;
    hidden a short while it gets everything and says nothing."""
    monkeypatch.setattr(hub_module, "BACKLOG", 30)
    async with _live(dashboard) as (ctx, hub, d):
        await ctx.add_init_script(VISIBILITY)
        page = await ctx.new_page()
        await page.goto(f"{d.url}live")
        await page.wait_for_function("window.__settle.device && es && es.readyState === 1")
        n = 0
        for hidden_beats in (10, 50):
            await _hide(page, True)
            await _until(lambda: _true(hub.subscribers == 0), 5, "the stream closed")
            for _ in range(hidden_beats):
                n += 1
                _beat(hub, float(n))
            await _hide(page, False)
            await page.wait_for_function(f"({HELD}).t.length && ({HELD}).t.at(-1) === {n}")
            await page.evaluate("render()")
            banners = await page.text_content("#banners") or ""
            if hidden_beats == 10:
                assert (await page.evaluate(HELD))["t"] == [float(i + 1) for i in range(n)]
                assert MISSED not in banners
            else:
                assert MISSED in banners


STRAPS = ("strap_a", "strap_b", "strap_c")
KIND = {"strap_a": "shame", "strap_b": "doubt", "strap_c": "threat"}


def _strap_beats(hub: Hub, dev: str, seqs: range) -> None:
    """Beats of ``dev``'s running session, one a second: beat ``seq`` at ``seq`` s."""
    for seq in seqs:
        hub.publish(f"settle/{dev}/beat", json.dumps({
            "v": 1, "ts": int(time.time() * 1000), "seq": seq, "hr": 60, "rr_ms": [1000.0],
            "beat_t_s": [float(seq)], "classified": [], "contact": True,
            "session": f"S-{dev}"}))  # fmt: skip


TACHO_IS = """(want) => { const xs = tacho.data[0];
  return xs.length === want.length && xs.every((x, i) => x === want[i]); }"""
"""The tachogram (the strap shown) holds exactly the beat times ``want``, in order."""


@pytest.mark.timeout(120)
async def test_a_page_asks_for_the_strap_it_shows_and_a_switch_brings_the_others_history(
    dashboard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page opened ``/events`` naming no strap, so every page got every strap's backlog
    (100 straps: 122 200 messages, 2–4 s) to show one. It now names the strap it shows, and
    on a switch opens the stream again for the other strap: its tachogram then holds that
    strap's history (from the backlog) and what came live meanwhile, each beat once — also
    after beats the page missed while hidden (the backlog fills the hole), and where the
    hole is older than the backlog the page says it missed messages."""
    monkeypatch.setattr(hub_module, "BACKLOG", 60)  # beats kept per strap
    async with _live(dashboard) as (ctx, hub, d):
        strap = d.control
        strap.views = [  # type: ignore[attr-defined]
            DeviceView(dev, i, f"Strap {dev[-1].upper()}", f"AA:{i}", "streaming", 80, True,
                       f"S-{dev}", None)
            for i, dev in enumerate(STRAPS)]  # fmt: skip
        for dev, beats in zip(STRAPS, (40, 30, 20), strict=True):
            hub.publish(f"settle/{dev}/session", json.dumps({
                "v": 1, "id": f"S-{dev}", "state": "running", "baseline": "pending",
                "intention": None}), retain=True)  # fmt: skip
            _strap_beats(hub, dev, range(1, beats + 1))
            hub.publish(f"settle/{dev}/event", json.dumps({
                "v": 1, "ts": int(time.time() * 1000), "seq": 0, "kind": KIND[dev],
                "t_s": 10.0, "text": "", "session": f"S-{dev}"}))  # fmt: skip
        await ctx.add_init_script(VISIBILITY)
        streams: list[dict[str, list[str]]] = []

        def opened(request: Any) -> None:
            if "/events" in request.url:
                streams.append(parse_qs(urlsplit(request.url).query))

        ctx.on("request", opened)

        # Opened with no strap named (nothing picked in this browser): it asks for the
        # first strap's backlog.
        first = await ctx.new_page()
        await first.goto(f"{d.url}live")
        await first.wait_for_function(TACHO_IS, arg=list(range(1, 41)))
        assert streams == [{"device": ["strap_a"]}]
        await first.close()

        page = await ctx.new_page()
        await page.goto(f"{d.url}live?device=strap_b")
        await page.wait_for_function(TACHO_IS, arg=list(range(1, 31)))
        assert streams[1:] == [{"device": ["strap_b"]}]
        assert await page.text_content("#tacho-sum") == (
            "Latest beat-to-beat interval 1000 ms at 0:30; 1000 to 1000 ms over the span "
            "shown. Markers: doubt at 0:10."
        )
        # The other straps' backlogs did not come; their live beats do.
        _strap_beats(hub, "strap_a", range(41, 46))
        _strap_beats(hub, "strap_b", range(31, 36))
        await page.wait_for_function(TACHO_IS, arg=list(range(1, 36)))
        await page.wait_for_function(
            "(S => S.perDev.strap_a.t.length === 5 && !S.perDev.strap_c.t.length)(window.__settle)"
        )

        # Switched: strap A's whole history, each beat once, and its marker.
        await page.select_option("#device", "strap_a")
        await page.wait_for_function(TACHO_IS, arg=list(range(1, 46)))
        assert streams[-1] == {"device": ["strap_a"]}  # its backlog: no `last`
        await page.wait_for_function(
            "document.getElementById('tacho-sum').textContent.endsWith('Markers: shame at 0:10.')"
        )

        # Hidden, the page gets none of strap B's beats (the stream resumes with strap A's
        # only); shown again and switched to B, the backlog fills the hole.
        await _hide(page, True)
        await _until(lambda: _true(hub.subscribers == 0), 5, "the stream closed")
        _strap_beats(hub, "strap_b", range(36, 51))
        await _hide(page, False)
        await _until(lambda: _true(hub.subscribers == 1), 5, "the stream resumed")
        _strap_beats(hub, "strap_b", range(51, 52))
        await page.wait_for_function("window.__settle.perDev.strap_b.t.at(-1) === 51")
        await page.select_option("#device", "strap_b")
        await page.wait_for_function(TACHO_IS, arg=list(range(1, 52)))
        await page.evaluate("render()")
        assert MISSED not in (await page.text_content("#banners") or "")
        # The tab shown again resumed strap A's stream after its last message; the switch
        # asked for strap B's backlog.
        resumed, switched = streams[-2:]
        assert (resumed["device"], len(resumed["last"])) == (["strap_a"], 1)
        assert switched == {"device": ["strap_b"]}

        # A hole older than strap A's backlog (60 beats): its beats 46–91 are nowhere, and
        # the page says so when it shows strap A again.
        await _hide(page, True)
        await _until(lambda: _true(hub.subscribers == 0), 5, "the stream closed")
        _strap_beats(hub, "strap_a", range(46, 151))
        await _hide(page, False)
        await _until(lambda: _true(hub.subscribers == 1), 5, "the stream resumed")
        _strap_beats(hub, "strap_a", range(151, 152))
        await page.wait_for_function("window.__settle.perDev.strap_a.t.at(-1) === 151")
        await page.select_option("#device", "strap_a")
        await page.wait_for_function(TACHO_IS, arg=[*range(1, 46), *range(92, 152)])
        await page.wait_for_function(_banners_say(MISSED))
