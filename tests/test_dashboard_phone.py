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
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from feedback.dashboard import Dashboard, DashboardConfig, Hub
from feedback.dashboard.server import DeviceView
from sessions.store import MarkerRow, SessionStore
from tests.test_dashboard import (
    DESKTOP,
    _browser,
    _chromium_or_skip,
    _finished_session,
    _NoDaemon,
    _said,
    _until,
)

SMALL_PHONE = {"width": 375, "height": 667}
DEV = "settle_virtual_hr_7d310ebf"


class _Strap(_NoDaemon):
    """One streaming strap with a running session; each command is recorded (name and
    payload) and answered ok through the hub, as the daemon does."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.state, self.last_error = "streaming", None  # type: str, str | None
        hub.publish(
            f"settle/{DEV}/session",
            json.dumps({"v": 1, "id": "20261128T044557-adca", "state": "running",
                        "baseline": "pending", "intention": None}),
            retain=True,
        )  # fmt: skip

    def devices(self) -> list[DeviceView]:
        return [DeviceView(DEV, 0, "Settle Virtual HR", "AA:BB:CC:DD:EE:FF", self.state, 80,
                           True, "20261128T044557-adca", self.last_error)]  # fmt: skip

    async def command(self, device_id: str, name: str, payload: bytes) -> None:
        body = json.loads(payload)
        self.sent.append((name, body))
        self.hub.results[body["id"]] = json.dumps({"v": 1, "id": body["id"], "status": "ok"})

    def kinds(self) -> list[str]:
        return [b["kind"] if n == "marker" else n for n, b in self.sent]


@contextlib.asynccontextmanager
async def _phone(
    tmp_path: Path, viewport: dict[str, int] = SMALL_PHONE, touch: bool = True
) -> AsyncIterator[tuple[Any, str, _Strap, SessionStore, list[str]]]:
    """A dashboard with :class:`_Strap` behind it and a touch phone's page (not yet opened;
    ``touch=False``: a laptop's): ``(page, base URL, strap, store, page errors)``."""
    _chromium_or_skip()
    with SessionStore.open(tmp_path / "s.db") as store:
        hub = Hub("settle")
        strap = _Strap(hub)
        cfg = DashboardConfig(host="127.0.0.1", port=0)
        async with (
            Dashboard(hub, strap, store, cfg) as d,  # type: ignore[arg-type]
            _browser() as browser,
        ):
            ctx = await browser.new_context(viewport=viewport, is_mobile=touch, has_touch=touch,
                                            device_scale_factor=2 if touch else 1,
                                            bypass_csp=True)  # fmt: skip
            page = await ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            try:
                yield page, d.url, strap, store, errors
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
async def test_the_status_line_never_takes_a_tap_meant_for_a_marker(tmp_path: Path) -> None:
    """After a marker tap the status line (fixed, 188 px wide, four lines) sat over the next
    row of markers for 8 s: a tap on "doubt" hit it and sent nothing."""
    async with _phone(tmp_path) as (page, base, strap, _store, errors):
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
    tmp_path: Path,
) -> None:
    """The banners were in the page's flow: scrolled to the markers (or the pacer), "Strap
    disconnected" was 571 px above the screen."""
    async with _phone(tmp_path) as (page, base, strap, _store, errors):
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
async def test_one_tap_on_stop_does_not_end_the_session_confirming_does(tmp_path: Path) -> None:
    """*Stop this session and start a new one* (green, just above the markers) and *Stop
    session* acted at the first tap: one mis-tap ended the practice."""
    async with _phone(tmp_path) as (page, base, strap, _store, errors):
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


@pytest.mark.timeout(60)
async def test_marker_keys_work_after_the_pacer_controls_not_in_text_fields(
    tmp_path: Path,
) -> None:
    """Keys 1–8 were ignored from any input: after a click on the pacer's checkbox or a
    touch of its rate slider (the focus stays there), no marker key worked."""
    async with _phone(tmp_path, DESKTOP, touch=False) as (page, base, strap, _s, err):
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
async def test_history_says_why_it_cannot_list_and_asks_again(tmp_path: Path) -> None:
    """A 401/503/500 from /api/sessions left History blank with a script error ("Cannot read
    properties of undefined (reading 'map')")."""
    async with _phone(tmp_path) as (page, base, _strap, store, errors):
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
async def test_export_links_are_finger_sized_and_say_which_session(tmp_path: Path) -> None:
    """The export links were 15–19 px tall, and a screen reader heard "csv" once per row."""
    async with _phone(tmp_path) as (page, base, _strap, store, errors):
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
async def test_the_session_report_fits_a_phone_screen(tmp_path: Path) -> None:
    """The report (History's frame, `settle report`) had no viewport meta and a 796 px wide
    marker table: it scrolled sideways on a phone."""
    async with _phone(tmp_path) as (page, base, _strap, store, errors):
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
