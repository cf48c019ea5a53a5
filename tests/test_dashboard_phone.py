"""The dashboard on a small phone (375×667, touch) and from the keyboard, in real Chromium.

A practitioner on the floor, eyes half-closed, marks moments from a phone: the status line
swallowed the next taps on the markers, a bad-state banner was off screen once scrolled to
the markers, one mis-tap on Stop (just above the markers) ended the practice, marker keys
died after the pacer was touched, History went blank on a 503, its export links were 15 px
tall and all read "csv", and the session report scrolled sideways. The page runs against
the real dashboard server with a stand-in daemon (one strap, one running session) whose
commands are recorded; the browser set-up is tests/test_dashboard.py's.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from feedback.dashboard import Hub, NoDaemon
from feedback.dashboard.server import DeviceView
from sessions.store import MarkerRow, SessionStore
from tests.test_dashboard import (
    DESKTOP,
    _browser,
    _chromium_or_skip,
    _finished_session,
    _said,
    _until,
)

SMALL_PHONE = {"width": 375, "height": 667}
DEV = "settle_virtual_hr_7d310ebf"
SID = "20261128T044557-adca"


class _Strap(NoDaemon):
    """One streaming strap with a running session; each command is recorded (name and
    payload) and answered ok through the hub, as the daemon does."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.state, self.last_error = "streaming", None  # type: str, str | None
        self.ecg = False  # its raw ECG is being recorded
        self.views: list[DeviceView] | None = None
        """What :meth:`devices` says instead of the one streaming strap (e.g. none yet)."""
        self.stored: bool | None = None
        """The results' ``stored`` (False: the store is failing, kept in memory)."""
        hub.publish(
            f"settle/{DEV}/session",
            json.dumps({"v": 1, "id": SID, "state": "running",
                        "baseline": "pending", "intention": None}),
            retain=True,
        )  # fmt: skip

    def devices(self) -> list[DeviceView]:
        if self.views is not None:
            return self.views
        return [DeviceView(DEV, 0, "Settle Virtual HR", "AA:BB:CC:DD:EE:FF", self.state, 80,
                           True, SID, self.last_error, ecg=self.ecg)]  # fmt: skip

    async def command(self, device_id: str, name: str, payload: bytes) -> None:
        body = json.loads(payload)
        self.sent.append((name, body))
        res = {"v": 1, "id": body["id"], "status": "ok", "stored": self.stored}
        self.hub.results[body["id"]] = json.dumps(res)

    def kinds(self) -> list[str]:
        return [b["kind"] if n == "marker" else n for n, b in self.sent]


@contextlib.asynccontextmanager
async def _phone(
    dashboard: Any, viewport: dict[str, int] = SMALL_PHONE, touch: bool = True
) -> AsyncIterator[tuple[Any, str, _Strap, SessionStore, list[str]]]:
    """A dashboard (the ``dashboard`` fixture's) with :class:`_Strap` behind it and a touch
    phone's page (not yet opened; ``touch=False``: a laptop's): ``(page, base URL, strap,
    store, page errors)``."""
    _chromium_or_skip()
    hub = Hub("settle")
    strap = _Strap(hub)
    async with dashboard(hub, strap) as d, _browser() as browser:
        ctx = await browser.new_context(viewport=viewport, is_mobile=touch, has_touch=touch,
                                        device_scale_factor=2 if touch else 1,
                                        bypass_csp=True)  # fmt: skip
        page = await ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            yield page, d.url, strap, d.store, errors
        finally:
            await ctx.close()


async def _open(page: Any, url: str) -> None:
    """Open ``url`` and wait until the page knows the strap and its running session."""
    await page.goto(url)
    await page.wait_for_function(
        "window.__settle.device && (d => d && d.session && d.session.state === 'running')"
        "(window.__settle.perDev[window.__settle.device])"
    )


async def _centre(page: Any, selector: str) -> tuple[float, float]:
    box = await page.locator(selector).bounding_box()
    assert box is not None, selector
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


_HIT = """([x, y, sel]) => { const e = document.elementFromPoint(x, y);
  return e && e.closest(sel) ? "" : (e ? e.id || e.className || e.tagName : "nothing"); }"""
"""What a tap at (x, y) hits, unless it is (inside) ``sel``: "" when it is."""


@pytest.mark.timeout(60)
async def test_the_status_line_never_takes_a_tap_meant_for_a_marker(dashboard: Any) -> None:
    """After a marker tap the status line (fixed, 188 px wide, four lines) sat over the next
    row of markers for 8 s: a tap on "doubt" hit it and sent nothing."""
    async with _phone(dashboard) as (page, base, strap, _store, errors):
        await _open(page, base + "control")
        await page.evaluate("document.querySelector('.markers').scrollIntoView({block: 'end'})")
        await page.touchscreen.tap(*await _centre(page, ".markers button[data-kind='shame']"))
        await _said(page, "“shame” marker added — Settle Virtual HR (")
        covered = {}
        for kind in ("shame", "threat", "discomfort", "attention", "doubt", "hold-lapse",
                     "hold-resume", "hold-start"):  # fmt: skip
            sel = f".markers button[data-kind='{kind}']"
            x, y = await _centre(page, sel)
            if hit := await page.evaluate(_HIT, [x, y, sel]):
                covered[kind] = hit
        assert not covered, f"marker buttons under another element: {covered}"
        await page.touchscreen.tap(*await _centre(page, ".markers button[data-kind='doubt']"))
        await _until(lambda: _has(strap, "doubt"), 5, "the doubt marker")
        assert strap.kinds() == ["shame", "doubt"]
        # An error (20 s on screen) leaves the note field and its button reachable too.
        await page.route("**/api/cmd/**", lambda r: r.fulfill(status=413, body="Too big."))
        await page.touchscreen.tap(*await _centre(page, ".markers button[data-kind='threat']"))
        await _said(page, "“threat” marker: the server answered HTTP 413")
        await page.unroute("**/api/cmd/**")
        await page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        for sel in ("#note", "#note-form button"):
            assert not await page.evaluate(_HIT, [*await _centre(page, sel), sel]), sel
        assert not errors, errors


async def _has(strap: _Strap, kind: str) -> bool:
    return kind in strap.kinds()


@pytest.mark.timeout(60)
async def test_a_bad_state_banner_stays_in_view_at_the_markers_and_the_pacer(
    dashboard: Any,
) -> None:
    """The banners were in the page's flow: scrolled to the markers (or the pacer), "Strap
    disconnected" was 571 px above the screen."""
    async with _phone(dashboard) as (page, base, strap, _store, errors):
        for path, anchor in (("control", ".markers"), ("live", ".pacer-box")):
            strap.state, strap.last_error = "streaming", None
            await _open(page, base + path)
            await page.evaluate(f"document.querySelector('{anchor}').scrollIntoView()")
            assert await page.evaluate("window.scrollY") > 300, "the page did not scroll"
            strap.state, strap.last_error = "backoff", "connection lost"
            await page.wait_for_function(
                "document.getElementById('banners').textContent.includes('Strap disconnected')"
            )
            box = await page.locator("#banners .banner.bad").bounding_box()
            assert box is not None
            assert box["y"] >= 0 and box["y"] + box["height"] <= SMALL_PHONE["height"], (path, box)
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            assert not await page.evaluate(_HIT, [x, y, "#banners"]), path
        assert not errors, errors


@pytest.mark.timeout(60)
async def test_one_tap_on_stop_does_not_end_the_session_confirming_does(dashboard: Any) -> None:
    """*Stop this session and start a new one* (green, just above the markers) and *Stop
    session* acted at the first tap: one mis-tap ended the practice."""
    async with _phone(dashboard) as (page, base, strap, _store, errors):
        await _open(page, base + "control")
        await page.wait_for_function(
            "document.getElementById('start').textContent.startsWith('Stop this session')"
        )
        for button in ("#stop", "#start"):
            await page.touchscreen.tap(*await _centre(page, button))
            await page.locator("#confirm-end").wait_for(state="visible", timeout=5_000)
            assert strap.sent == [], strap.sent  # nothing ended yet
            await page.touchscreen.tap(*await _centre(page, "#confirm-keep"))
            await page.locator("#confirm-end").wait_for(state="hidden")
        # A double tap on Stop: its second tap is no confirmation.
        await page.dblclick("#stop")
        await page.locator("#confirm-end").wait_for(state="visible")
        assert strap.sent == [], strap.sent
        await page.touchscreen.tap(*await _centre(page, "#confirm-yes"))
        await _said(page, "session stopped — Settle Virtual HR (")
        assert [n for n, _ in strap.sent] == ["session/stop"]
        # From the keyboard: Enter asks, the focus is on keeping the session; Escape keeps
        # it; Tab to the stop button and Enter stops and starts a new one.
        await page.focus("#start")
        await page.keyboard.press("Enter")
        await page.locator("#confirm-end").wait_for(state="visible")
        assert await page.evaluate("document.activeElement.id") == "confirm-keep"
        await page.keyboard.press("Escape")
        await page.locator("#confirm-end").wait_for(state="hidden")
        assert [n for n, _ in strap.sent] == ["session/stop"]
        await page.focus("#start")
        await page.keyboard.press("Enter")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "confirm-yes"
        await page.keyboard.press("Enter")
        await _said(page, "session stopped and a new one started — Settle Virtual HR (")
        assert [n for n, _ in strap.sent] == ["session/stop", "session/start"]
        assert not errors, errors


async def test_confirming_a_stop_never_ends_a_session_started_meanwhile(dashboard: Any) -> None:
    """The question is about the session running when it was asked: one started meanwhile
    (by MQTT, another tab) was the one a late "Stop the session" ended."""
    async with _phone(dashboard) as (page, base, strap, _store, errors):
        await _open(page, base + "control")
        await page.touchscreen.tap(*await _centre(page, "#stop"))
        await page.locator("#confirm-end").wait_for(state="visible", timeout=5_000)
        strap.hub.publish(
            f"settle/{DEV}/session",
            json.dumps({"v": 1, "id": SID[:-4] + "beef", "state": "running",
                        "baseline": "pending", "intention": None}),
            retain=True,
        )  # fmt: skip
        await page.wait_for_function(
            "(d => d && d.session && d.session.id.endsWith('beef'))"
            "(window.__settle.perDev[window.__settle.device])"
        )
        await page.touchscreen.tap(*await _centre(page, "#confirm-yes"))
        await _said(page, "The running session changed while you were asked: nothing was stopped")
        assert strap.sent == [], strap.sent
        assert not errors, errors


@pytest.mark.timeout(60)
async def test_marker_keys_work_after_the_pacer_controls_not_in_text_fields(
    dashboard: Any,
) -> None:
    """Keys 1–8 were ignored from any input: after a click on the pacer's checkbox or a
    touch of its rate slider (the focus stays there), no marker key worked."""
    async with _phone(dashboard, DESKTOP, touch=False) as (page, base, strap, _s, err):
        await _open(page, base + "live")
        await page.click(".pacer-box summary")
        await page.click("#pacer-on")
        assert await page.evaluate("document.activeElement.id") == "pacer-on"
        await page.keyboard.press("2")
        await _said(page, "“threat” marker added — Settle Virtual HR (")
        await page.focus("#pacer-rate")
        rate = await page.input_value("#pacer-rate")
        await page.keyboard.press("ArrowRight" if rate == "4" else "ArrowLeft")
        assert await page.input_value("#pacer-rate") != rate  # the slider keeps its own keys
        await page.keyboard.press("3")
        await _said(page, "“discomfort” marker added — Settle Virtual HR (")
        # A text field keeps every key: a 4 typed in the note is a 4, not a marker.
        await page.click("nav >> text=Session")
        await page.focus("#note")
        await page.keyboard.press("4")
        assert await page.input_value("#note") == "4"
        assert strap.kinds() == ["threat", "discomfort"]
        assert not err, err


@pytest.mark.timeout(60)
async def test_history_says_why_it_cannot_list_and_asks_again(dashboard: Any) -> None:
    """A 401/503/500 from /api/sessions left History blank with a script error ("Cannot read
    properties of undefined (reading 'map')")."""
    async with _phone(dashboard) as (page, base, _strap, store, errors):
        _finished_session(store, 1_700_000_000_000, 120)
        for status, why in ((401, "token required: open the URL printed at start-up"),
                            (503, "too many connections")):  # fmt: skip
            await page.route("**/api/sessions", _answer(status, why))
            await page.goto(base + "history")
            await page.wait_for_function(
                "w => document.getElementById('history-progress').textContent.includes(w)",
                arg=why,
                timeout=10_000,
            )
            assert await page.locator("#history-progress").is_visible()
            assert not errors, errors
        # The 503 is asked again: once the server answers, the list comes.
        await page.unroute("**/api/sessions")
        await page.locator("#session-list li").first.wait_for(timeout=15_000)
        await page.wait_for_function(
            "!document.getElementById('history-progress').textContent.includes('not be listed')"
        )
        assert not errors, errors


def _answer(status: int, error: str) -> Any:
    """A route handler answering as the server does when it refuses: ``{"error": …}``."""
    body = json.dumps({"v": 1, "status": "error", "error": error})

    async def handler(route: Any) -> None:
        await route.fulfill(status=status, body=body, content_type="application/json")

    return handler


@pytest.mark.timeout(90)
async def test_export_links_are_finger_sized_and_say_which_session(dashboard: Any) -> None:
    """The export links were 15–19 px tall, and a screen reader heard "csv" once per row."""
    async with _phone(dashboard) as (page, base, _strap, store, errors):
        ids = [_finished_session(store, 1_700_000_000_000 + k * 3_600_000, 120) for k in range(2)]
        await page.goto(base + "history")
        links = page.locator("#session-list a[download]")
        await page.wait_for_function(
            "document.querySelectorAll('#session-list li a[download]').length >= 10"
        )
        await _finger_sized_and_named(page, links, 10)
        await page.goto(base + f"history/{ids[0]}")
        await page.wait_for_function("document.querySelectorAll('#detail-exports a').length")
        await _finger_sized_and_named(page, page.locator("#detail-exports a[download]"), 5)
        assert not errors, errors


async def _finger_sized_and_named(page: Any, links: Any, n: int) -> None:
    assert await links.count() == n
    names = []
    for i in range(n):
        link = links.nth(i)
        box = await link.bounding_box()
        assert box is not None and box["height"] >= 40 and box["width"] >= 40, box
        text = (await link.text_content() or "").strip()
        name = await link.get_attribute("aria-label") or text
        assert re.fullmatch(rf"{text} export, session .*\d.*", name), name
        names.append(name)
        # the accessible name Chromium computes: exactly one link has it
        assert await page.get_by_role("link", name=name, exact=True).count() == 1, name
    assert len(set(names)) == n, names


@pytest.mark.timeout(120)
async def test_the_session_report_fits_a_phone_screen(dashboard: Any) -> None:
    """The report (History's frame, `settle report`) had no viewport meta and a 796 px wide
    marker table: it scrolled sideways on a phone."""
    async with _phone(dashboard) as (page, base, _strap, store, errors):
        sid = _finished_session(store, 1_700_000_000_000, 300)
        store.add_markers(sid, [MarkerRow(t, 1_700_000_000_000 + int(t * 1000), kind,
                                          "it came back, louder this time", "import")
                                for t, kind in ((60.0, "shame"), (120.0, "doubt"))])  # fmt: skip
        await page.goto(base + f"sessions/{sid}/report")
        await page.locator("h2", has_text="Reactivity").wait_for(timeout=60_000)
        width = await page.evaluate(
            "[document.documentElement.clientWidth, document.documentElement.scrollWidth]"
        )
        assert width[0] == SMALL_PHONE["width"] and width[1] <= width[0], width
        # The marker table scrolls inside itself.
        table = await page.evaluate(
            "(t => [t.scrollWidth, t.parentElement.clientWidth])"
            "([...document.querySelectorAll('table')].pop())"
        )
        assert table[0] > table[1], table
        # In History's frame too.
        await page.goto(base + f"history/{sid}")
        frame = page.frame_locator("#report")
        await frame.locator("h2", has_text="Reactivity").wait_for(timeout=60_000)
        inner = await page.evaluate(
            "(d => [d.documentElement.clientWidth, d.documentElement.scrollWidth])"
            "(document.getElementById('report').contentDocument)"
        )
        assert inner[1] <= inner[0], inner
        assert not errors, errors


# ---- what the practitioner sees and hears of the live values (second UI review) ----


def _indices(t_s: float, settling: float, trend: str) -> str:
    """An indices message of the running session: usable, with a score and its trend."""
    return json.dumps({
        "v": 1, "session": SID, "t_s": t_s, "usable": True, "warming_up": False,
        "reason": None, "settling": settling, "trend": trend, "trend_confidence": 0.4,
        "trend_slope_per_min": None, "trend_slope_ci_low_per_min": None,
        "trend_slope_ci_high_per_min": None, "ln_rmssd": 3.6, "rmssd_ms": 40.0,
        "coherence": 0.3, "resp_rate_bpm": 6.0, "quality": 0.95,
        "components": {"z_hr": 0.1, "z_ln_rmssd": 0.2, "z_slow": 0.3},
    })  # fmt: skip


def _text_is(element_id: str, want: str) -> str:
    return f"document.getElementById('{element_id}').textContent === {json.dumps(want)}"


@pytest.mark.timeout(60)
async def test_a_stale_score_is_not_shown_as_current(dashboard: Any) -> None:
    """With the daemon silent for 4 s the HR read "–" but the settling score kept "41 →
    steady", only greyed: the number the practitioner acts on, read as current."""
    async with _phone(dashboard) as (page, base, strap, _store, errors):
        await _open(page, base + "live")
        strap.hub.publish(f"settle/{DEV}/indices", _indices(120.0, 41.0, "steady"))
        await page.wait_for_function(
            _text_is("settling", "41") + " && " + _text_is("trend", "→ steady")
        )
        await page.evaluate("es.close()")  # the page hears nothing more, as if the daemon stopped
        await page.wait_for_function(_text_is("settling", "–"), timeout=10_000)
        score = await page.text_content(".score") or ""
        assert "41" not in score and "steady" not in score, score
        assert await page.text_content("#trend") == ""
        assert "no word from the daemon" in (await page.text_content("#settling-note") or "")
        await page.evaluate("connect()")  # the daemon is heard again: the score is back
        await page.wait_for_function(
            _text_is("settling", "41") + " && " + _text_is("trend", "→ steady"), timeout=10_000
        )
        assert not errors, errors


@pytest.mark.timeout(60)
async def test_no_strap_yet_says_what_to_do(dashboard: Any) -> None:
    """With no strap the Live page showed dashes and a red "no strap" in the header, and
    nothing said what to do; a strap not yet found read "Strap disconnected … reconnecting;
    beats in the gap are not recorded"."""
    async with _phone(dashboard) as (page, base, strap, _store, errors):
        strap.views = []
        await page.goto(base + "live")
        await page.wait_for_function(_banners_say("No strap yet"), timeout=10_000)
        said = await page.text_content("#banners") or ""
        assert "Pair page" in said, said
        assert await page.locator("#banners .banner").is_visible()
        assert await page.text_content("#conn") == "no strap · MQTT off"
        assert await page.text_content("#settling-note") == "no strap yet"
        strap.views = [DeviceView(None, 0, "Polar H10 1A2B", "AA:BB:CC:DD:EE:01", "scanning",
                                  None, None, None, None)]  # fmt: skip
        await page.wait_for_function(_banners_say("Looking for your strap (scanning)"))
        said = await page.text_content("#banners") or ""
        assert "turn it on" in said and "Strap disconnected" not in said, said
        strap.views = None  # it connected
        await _open(page, base + "live")
        await page.wait_for_function("!document.getElementById('banners').textContent")
        assert not errors, errors


def _banners_say(words: str) -> str:
    return f"document.getElementById('banners').textContent.includes({json.dumps(words)})"


_KEPT = "[...document.querySelectorAll('#banners .banner')].map(b => !!b.kept)"

_BOX = "e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }"


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.timeout(60)
async def test_the_status_line_covers_no_marker_on_a_phone(dashboard: Any) -> None:
    """Taps went through the status line, but for 8 s after a marker tap it sat over the
    bottom row of markers: their words could not be seen."""
    async with _phone(dashboard) as (page, base, _strap, _store, errors):
        await _open(page, base + "control")
        buttons = page.locator(".markers button, #note, #note-form button, #start, #stop")
        for block in ("end", "start"):
            await page.evaluate(
                "b => { document.getElementById('cmd-result').textContent = '';"
                " document.querySelector('.markers').scrollIntoView({block: b}); }",
                block,
            )
            before = await page.locator(".markers button[data-kind='shame']").evaluate(_BOX)
            await page.touchscreen.tap(*await _centre(page, ".markers button[data-kind='shame']"))
            await _said(page, "“shame” marker added — Settle Virtual HR (")
            await page.wait_for_function(
                "!document.querySelector('.markers button[aria-disabled]')", timeout=5_000
            )
            line = await page.locator("#cmd-result").evaluate(_BOX)
            assert line[1] >= 0 and line[3] <= SMALL_PHONE["height"], (block, line)  # in view
            covered = []
            for i in range(await buttons.count()):
                box = await buttons.nth(i).evaluate(_BOX)
                if _overlap(line, box):
                    covered.append(await buttons.nth(i).text_content())
            assert not covered, (block, line, covered)
            for kind in ("shame", "threat", "discomfort", "attention", "doubt", "hold-lapse",
                         "hold-resume", "hold-start"):  # fmt: skip
                sel = f".markers button[data-kind='{kind}']"
                x, y = await _centre(page, sel)
                if 0 < y < SMALL_PHONE["height"]:
                    assert not await page.evaluate(_HIT, [x, y, sel]), (block, kind)
            # The markers did not move under the thumb when the result came.
            after = await page.locator(".markers button[data-kind='shame']").evaluate(_BOX)
            assert after == before, (block, before, after)
        assert not errors, errors


@pytest.mark.timeout(60)
async def test_the_score_and_trend_are_said_politely_when_the_trend_changes(
    dashboard: Any,
) -> None:
    """The docs said live values are announced politely, but none had a live region; the
    banners (an alert) were rebuilt whole at any change and so all said again."""
    async with _phone(dashboard) as (page, base, strap, _store, errors):
        await _open(page, base + "live")
        say = page.locator("#score-say")
        assert await say.get_attribute("aria-live") == "polite"
        strap.hub.publish(f"settle/{DEV}/indices", _indices(120.0, 41.0, "steady"))
        await page.wait_for_function(_text_is("score-say", "Settling score 41, steady"))
        # Another index with the same trend: not said again (not every index or beat).
        strap.hub.publish(f"settle/{DEV}/indices", _indices(125.0, 43.0, "steady"))
        await page.wait_for_function(_text_is("settling", "43"))
        assert await say.text_content() == "Settling score 41, steady"
        strap.hub.publish(f"settle/{DEV}/indices", _indices(130.0, 35.0, "unsettling"))
        await page.wait_for_function(
            _text_is("score-say", "Settling score 35, unsettling"), timeout=20_000
        )
        # Banners: a new one is added beside the others, which stay as they were (not said
        # again); a changed one replaces only itself.
        strap.state, strap.last_error = "backoff", "connection lost"
        await page.wait_for_function(_banners_say("Strap disconnected"))
        await page.evaluate("document.querySelector('#banners .banner').kept = true")
        await page.evaluate("window.__settle.missing = 'settle_virtual_hr_other'")
        await page.wait_for_function("document.querySelectorAll('#banners .banner').length === 2")
        assert await page.evaluate(_KEPT) == [True, False]
        await page.evaluate("document.querySelectorAll('#banners .banner')[1].kept = true")
        strap.last_error = "connection lost again"
        await page.wait_for_function(_banners_say("connection lost again"))
        assert await page.evaluate(_KEPT) == [False, True]
        assert not errors, errors


_LABELS = """() => Object.fromEntries(Object.entries(window.__settle.markerLabels || {})
  .map(([k, ls]) => [k, ls.map((l) => ({ ...l }))]))"""


def _edges(label: dict[str, float]) -> list[float]:
    return [label["left"], label["top"], label["right"], label["bottom"]]


BUTTON_WORDS = {"shame", "threat", "discomfort", "attention", "doubt", "hold lapse",
                "hold resumed", "hold start", "baseline start", "note"}  # fmt: skip


@pytest.mark.timeout(60)
async def test_dense_marker_labels_do_not_overlap_and_use_the_buttons_words(
    dashboard: Any,
) -> None:
    """15 markers within 40 s piled their labels into an illegible stack of four rows, and
    the labels read "hold-start" where the button says "hold start"."""
    async with _phone(dashboard) as (page, base, strap, _store, errors):
        await _open(page, base + "live")
        ts = [float(t) for t in range(0, 301)]
        strap.hub.publish(f"settle/{DEV}/beat", json.dumps({
            "v": 1, "session": SID, "hr": 60, "contact": True, "ts": int(time.time() * 1000),
            "beat_t_s": ts, "rr_ms": [1000.0] * len(ts)}))  # fmt: skip
        for t in range(5, 301, 5):
            strap.hub.publish(f"settle/{DEV}/indices", _indices(float(t), 50.0, "steady"))
        kinds = ["shame", "hold-start", "threat", "hold-resume", "doubt", "hold-lapse", "note",
                 "baseline-start", "attention", "discomfort"]  # fmt: skip
        for k in range(15):
            strap.hub.publish(f"settle/{DEV}/event", json.dumps({
                "v": 1, "session": SID, "kind": kinds[k % len(kinds)], "t_s": 100.0 + k * 2.7,
                "text": ""}))  # fmt: skip
        for viewport in (SMALL_PHONE, DESKTOP):
            await page.set_viewport_size(viewport)
            await page.wait_for_function(
                "w => (l => l && l.tacho && l.trend && l.tacho.reduce((a, x) => a + x.n, 0) === 15"
                " && document.querySelector('#tacho canvas').clientWidth <= w)"
                "(window.__settle.markerLabels)",
                arg=viewport["width"],
                timeout=10_000,
            )
            await page.wait_for_timeout(1_500)  # one more redraw at this size
            drawn = await page.evaluate(_LABELS)
            for chart, labels in drawn.items():
                assert sum(lab["n"] for lab in labels) == 15, (chart, labels)
                for a, b in itertools.combinations(labels, 2):  # none over another
                    assert not _overlap(_edges(a), _edges(b)), (viewport, chart, a, b)
                for lab in labels:
                    words = lab["text"]
                    assert words in BUTTON_WORDS or re.fullmatch(r"\d+ markers", words), lab
            assert any(lab["n"] > 1 for lab in drawn["tacho"]), drawn  # a cluster, said as one
        # The charts in words, for a screen reader.
        said = await page.text_content("#tacho-sum") or ""
        assert "Latest beat-to-beat interval 1000 ms at 5:00" in said, said
        assert "15 markers; the latest:" in said and "hold start" in said and "hold-" not in said
        assert "latest settling score 50 at 5:00" in (await page.text_content("#trend-sum") or "")
        assert await page.get_attribute("#tacho", "aria-describedby") == "tacho-sum"
        assert not errors, errors


@pytest.mark.timeout(60)
async def test_a_stopped_raw_ecg_is_marked_on_the_charts_in_words(dashboard: Any) -> None:
    """A Polar H10's raw ECG, recording or stopped mid-session, was a log line only: the
    strap's state says "raw ECG" while it records, and the charts mark its stop ("raw ECG
    stopped"), as they mark a dropped strap."""
    state = "document.querySelector('#strap-state').textContent"
    async with _phone(dashboard) as (page, base, strap, _store, errors):
        strap.ecg = True
        await _open(page, base + "live")
        await page.wait_for_function(f"{state} === 'streaming · raw ECG'", timeout=10_000)
        strap.ecg = False
        ts = [float(t) for t in range(0, 121)]
        strap.hub.publish(f"settle/{DEV}/beat", json.dumps({
            "v": 1, "session": SID, "hr": 60, "contact": True, "ts": int(time.time() * 1000),
            "beat_t_s": ts, "rr_ms": [1000.0] * len(ts)}))  # fmt: skip
        for t in range(5, 121, 5):
            strap.hub.publish(f"settle/{DEV}/indices", _indices(float(t), 50.0, "steady"))
        strap.hub.publish(f"settle/{DEV}/event", json.dumps({
            "v": 1, "session": SID, "kind": "ecg-stopped", "t_s": 90.0,
            "text": "raw ECG stopped (internal error); heart rate continues"}))  # fmt: skip
        # A strap that sends heart rate but no intervals (the daemon's no-rr event) is
        # marked too: the page showed an empty tachogram and nothing said why.
        strap.hub.publish(f"settle/{DEV}/event", json.dumps({
            "v": 1, "session": SID, "kind": "no-rr", "t_s": 110.0,
            "text": "the strap sent no beat-to-beat intervals for 30 s: …"}))  # fmt: skip
        for words in ("raw ECG stopped", "no beat intervals"):
            await page.wait_for_function(
                f"(l => l && l.tacho && l.tacho.some((x) => x.text === '{words}'))"
                "(window.__settle.markerLabels)",
                timeout=10_000,
            )
        said = await page.text_content("#tacho-sum") or ""
        assert "raw ECG stopped" in said and "no beat intervals" in said, said
        await page.wait_for_function(f"{state} === 'streaming'", timeout=10_000)
        assert not errors, errors


_CONTRAST = """(sels) => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = (c) => { const [r, g, b] = rgb(c).map((v) => { v /= 255;
    return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05); };
  const page = getComputedStyle(document.body).backgroundColor;
  const out = {};
  for (const sel of sels) for (const [i, e] of [...document.querySelectorAll(sel)].entries()) {
    const s = getComputedStyle(e);
    out[`${sel}#${i}`] = parseFloat(s.borderTopWidth) > 0 ? ratio(s.borderTopColor, page) : 0;
  }
  return out;
}"""

_HEIGHTS = """(sels) => Object.fromEntries(sels.flatMap((sel) => [...document.querySelectorAll(sel)]
  .map((e, i) => [`${sel}#${i}`, e.getBoundingClientRect().height])))"""


_EDGED = [".markers button", "#note", "#statement", "#practice", "#target", "#stop",
          "#baseline-start", "#bids-subject"]  # fmt: skip
_ACCENT_AND_BACK = """() => { const p = document.createElement('span');
  p.style.color = 'var(--accent)'; document.body.append(p);
  const a = getComputedStyle(p).color; p.remove();
  return [getComputedStyle(document.querySelector('#session-detail a')).color, a]; }"""


@pytest.mark.timeout(60)
async def test_controls_stand_out_from_the_page_and_are_finger_sized(dashboard: Any) -> None:
    """Borders of inputs and buttons, and the white marker buttons, were 1.07–1.4:1 against
    the off-white page; nav links 36 px tall, the pacer's summary 23 px, the target select
    39 px; in dark mode "← all sessions" had the browser's link colour."""
    async with _phone(dashboard, DESKTOP, touch=False) as (page, base, _strap, _s, errors):
        for scheme in ("light", "dark"):
            await page.emulate_media(color_scheme=scheme)
            await _open(page, base + "control")
            edges = await page.evaluate(_CONTRAST, _EDGED)
            low = {k: round(v, 2) for k, v in edges.items() if v < 3}
            assert not low, (scheme, low)
            heights = await page.evaluate(_HEIGHTS, ["nav a", "#target", "#note", "#statement"])
            await page.click("nav >> text=Live")
            heights |= await page.evaluate(_HEIGHTS, [".pacer-box summary"])
            small = {k: v for k, v in heights.items() if v < 44}
            assert not small, (scheme, small)
            back, accent = await page.evaluate(_ACCENT_AND_BACK)
            assert back == accent, (scheme, back, accent)
        assert not errors, errors


TINY_PHONE = {"width": 320, "height": 568}

_BROKEN_WORDS = """(sel) => {
  // Each word of each cell (a label's words, or a value's) on one line: a Range over a word
  // broken across lines has a box on each.
  const out = [];
  for (const td of document.querySelectorAll(sel)) {
    const walk = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      for (const m of n.data.matchAll(/\\S+/g)) {
        const r = document.createRange();
        r.setStart(n, m.index); r.setEnd(n, m.index + m[0].length);
        if ([...r.getClientRects()].filter((b) => b.width).length > 1) out.push(m[0]);
      }
    }
  }
  return out; }"""
_SIDEWAYS = """(sel) => [document.documentElement.scrollWidth - innerWidth,
  ...[...document.querySelectorAll(sel)].map((t) => t.scrollWidth - t.clientWidth)]"""


@pytest.mark.timeout(60)
async def test_the_pair_tables_fit_a_320_px_screen_without_breaking_words(
    dashboard: Any,
) -> None:
    """On a 320 px phone the Pair page's table of straps broke words mid-word ("strea|ming",
    "bp|m", "Virtua|l") and its battery column was off screen, to be scrolled to sideways.
    Each strap (and each strap in range) is now a block of "label value" lines."""
    async with _phone(dashboard, TINY_PHONE) as (page, base, strap, _store, errors):

        async def scan(_timeout_s: float) -> list[dict[str, Any]]:
            return [{"name": "Polar H10 A1B2C3D4", "address": "C0:5E:77:1E:00:01",
                     "rssi": -60, "device_id": "polar_h10_a1b2c3d4"}]  # fmt: skip

        strap.scan = scan  # type: ignore[method-assign]
        await _open(page, base + "pair")
        strap.hub.publish(f"settle/{DEV}/beat", json.dumps({
            "v": 1, "ts": int(time.time() * 1000), "seq": 1, "hr": 75, "rr_ms": [800.0],
            "beat_t_s": [1.0], "classified": [], "contact": True, "session": SID}))  # fmt: skip
        await page.wait_for_function(
            "document.getElementById('own-straps').textContent.includes('75 bpm')"
        )
        await page.click("#scan")
        await page.wait_for_function("document.querySelector('#scan-list input')")
        tables = "#page-pair table"
        cells = "#page-pair td"
        assert await page.evaluate(_BROKEN_WORDS, cells) == []
        assert await page.evaluate(_SIDEWAYS, tables) == [0, 0, 0]
        texts = await page.locator("#own-straps td").all_inner_texts()
        assert texts == ["Settle Virtual HR", "AA:BB:CC:DD:EE:FF", "streaming", "75 bpm", "yes",
                         "80 %"]  # fmt: skip
        # The Remember button is in view, and works.
        await page.click("#scan-list button")
        await page.wait_for_function(
            "document.getElementById('scan-state').textContent.startsWith('remembered')"
        )
        assert not errors, errors
