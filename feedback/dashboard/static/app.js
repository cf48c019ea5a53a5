/* Settle dashboard: one page, four views, live data by Server-Sent Events.
   Never shows a number it cannot stand behind: stale or unusable values are greyed out and a
   banner says why. */
"use strict";

const TACHO_S = 300;          // tachogram span, seconds
const STALE_MS = 4000;        // no word from the daemon for this long: say so
const EVENT_KINDS_SHOWN = new Set([
  "shame", "threat", "discomfort", "attention", "doubt", "hold-start", "hold-lapse",
  "hold-resume", "note", "baseline-start", "baseline-complete", "catching-up", "disconnected",
  "reconnected", "gap", "ecg-stopped", "no-rr",
]);
const KEYS = { "1": "shame", "2": "threat", "3": "discomfort", "4": "attention", "5": "doubt",
  "6": "hold-lapse", "7": "hold-resume", "8": "hold-start" };
// What the daemon takes in one command (feedback/commands.py MAX_COMMAND_BYTES), counted as
// the server forwards it: json.dumps with ", " and ": ", UTF-8, "v" and an "id" added. The
// request body itself (server.py MAX_BODY, also 4096) is the same JSON without the spaces
// and the two fields, so it is always smaller.
const MAX_COMMAND_BYTES = 4096;
const FORWARDED_ID = "http-000000000000";  // server.py: "http-" and 12 hex digits

const $ = (id) => document.getElementById(id);

/* ---- access token ---- */
// With a token required, the address printed at start-up (…/#token=…) hands it to the page,
// which keeps it in this tab (sessionStorage: a reload and the page's own links keep it; it
// is kept per origin, so per port) and sends it itself: as `Authorization: Bearer` on its
// requests, the report and the downloads too (fetched here and handed over as blob:
// addresses: with ?token= in theirs, the browser's list of downloads, its cache and its
// session files kept the token), and as ?token= on the live stream only (EventSource sends
// no headers; it is in no history or download list). It was a cookie, which the browser
// sent to every server on the host whatever its port: anyone who could listen on a port
// got it.
const TOKEN_KEY = "settle.token";
// What a token file may hold (feedback/dashboard/auth.py): printable ASCII without spaces,
// 16–512 characters — what an Authorization header can carry.
const TOKEN_RE = /^[\x21-\x7e]{16,512}$/;
function takeToken() {
  const u = new URL(location.href);
  const hash = new URLSearchParams(u.hash.slice(1));
  const raw = u.searchParams.get("token") || hash.get("token");
  const given = raw && TOKEN_RE.test(raw) ? raw : null;
  if (raw) {
    // Out of the address bar and this history entry (a projector or a shared screen showed it).
    u.searchParams.delete("token");
    hash.delete("token");
    const rest = hash.toString();
    history.replaceState(history.state, "", u.pathname + u.search + (rest ? "#" + rest : ""));
    if (given) {
      try { sessionStorage.setItem(TOKEN_KEY, given); } catch { /* no storage: this page only */ }
      return given;
    }
  }
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}
let TOKEN = takeToken();
let tokenRefused = false;  // the daemon answered 401: the page says what to do
function withToken(path) {  // the live stream's address
  if (!TOKEN) return path;
  const u = new URL(path, location.href);
  u.searchParams.set("token", TOKEN);
  return u.pathname + u.search;
}
// A token pasted into the form the "Token required" banner shows: the token itself, or the
// whole printed address (…/#token=… or ?token=…). Kept in this tab as the printed address
// leaves it, then the page starts again with it (a wrong one is refused as before).
// Quotes a chat or a document put around it and invisible characters are dropped; what is
// left must be a token (TOKEN_RE): a curly-quoted one could not be sent at all (a header
// takes no such character) and the tab sat on "daemon unreachable" for good.
function tokenFromPaste(text) {
  const s = text.replace(/[\u200b-\u200d\u2060\ufeff]/g, "").trim()
    .replace(/^["'`<\u2018\u201c\u00ab]+|["'`>\u2019\u201d\u00bb]+$/g, "").trim();
  const m = /(?:^|[#?&])token=([^&#\s]+)/.exec(s);
  if (m) { try { return decodeURIComponent(m[1]); } catch { return m[1]; } }
  return s;
}
document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token-input");
  const said = document.getElementById("token-said");
  const given = tokenFromPaste(input.value);
  if (!TOKEN_RE.test(given)) {
    said.textContent = given
      ? "That is not a Settle token: it has 16–512 letters, digits and punctuation, no spaces."
      : "Paste the token, or the whole address the daemon printed.";
    input.focus();
    return;
  }
  input.value = "";
  said.textContent = "";
  try {
    sessionStorage.setItem(TOKEN_KEY, given);
  } catch {
    // No storage for this tab (site data blocked): kept in this page only. Handed over in
    // the address and reloaded, it was kept in the browser's history database.
    TOKEN = given;
    tokenRefused = false;
    connect();
    render();
    return;
  }
  location.reload();
});
// fetch with the token; a 401 is said in a banner (and in the caller's own words).
// `timeoutMs`: given up (an AbortError) without an answer by then — a request still waiting
// in the browser for a free connection is then never sent.
async function api(url, init, timeoutMs) {
  init = init || {};
  const headers = { ...(init.headers || {}) };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const stop = timeoutMs ? new AbortController() : null;
  const timer = stop ? setTimeout(() => stop.abort(), timeoutMs) : null;
  let r;
  try { r = await fetch(url, { ...init, headers, ...(stop ? { signal: stop.signal } : {}) }); }
  finally { clearTimeout(timer); }
  if (r.status === 401) tokenRefused = true;
  return r;
}
const DEVICE_KEY = "settle.device";
function wantedDevice() {
  const q = new URLSearchParams(location.search).get("device");
  if (q) return q;
  try { return localStorage.getItem(DEVICE_KEY); } catch { return null; }
}
const S = {
  device: null,            // device id shown (and the one marker keys and buttons go to)
  wanted: wantedDevice(),  // the strap asked for (?device=, else the last one picked here)
  missing: null,           // the wanted strap, while the daemon does not know it
  gone: null,              // {id, name}: the strap shown until the daemon no longer knew it
  notes: {},               // device id -> the note typed for it, kept while another is shown
  devices: [],             // from health events
  mqtt: "off",
  lastWord: 0,             // Date.now() of the last message from the daemon
  refused: null,           // {why, at}: the live stream refused (the server's reason), state from /api/state
  clockAhead: null,        // ms the browser's clock is ahead of the daemon's (health events)
  perDev: {},              // device id -> {status, availability, session, indices, beats, ...}
  markerLabels: {},        // chart -> the marker labels last drawn (text, count, box)
};

// One strap's state. Beside each beat (bn), index (inum) and event (en) the number of the
// message that brought it (its event id's number, `<hub epoch>.<number>`): a strap shown after
// another is refilled from its backlog by these (see followStream).
function newDev() {
  return { status: null, availability: null, session: null, indices: null,
    hr: null, contact: null, beatTs: 0, t: [], rr: [], bn: [], it: [], ln: [], set: [], inum: [],
    events: [], en: [], epoch: null, firstN: {}, firstSeq: {}, seqs: {}, seqSid: {}, gapFrom: {},
    missed: false };
}
function dev(id) {
  if (!S.perDev[id]) S.perDev[id] = newDev();
  return S.perDev[id];
}
// A beat's age on the daemon's clock, which stamps it (`ts`): measured on the browser's, a
// phone 5 s ahead of a Raspberry Pi without NTP never showed the heart rate. Unknown (no
// health event yet): Infinity, nothing shown.
function beatAge(d) {
  return S.clockAhead === null ? Infinity : Date.now() - S.clockAhead - d.beatTs;
}
// The last beat is current within 5 s either way: a beat stamped ahead (the daemon's clock
// stepped back after it, NTP on a board that booted without a clock) stayed "current" for
// as long as the step, its heart rate on screen with the strap gone.
const BEAT_CURRENT_MS = 5000;
function beatCurrent(d) { return Math.abs(beatAge(d)) < BEAT_CURRENT_MS; }
function fmt(x, digits) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
function mmss(s) { s = Math.floor(s); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; }
function text(id, v) { const el = $(id); if (el.textContent !== v) el.textContent = v; }

/* ---- routing ---- */
// The strap shown goes with the page's own links (?device=): a reload or a link opened
// anew went back to strap 1, and the next marker key stored the marker there.
function withDevice(href) {
  const u = new URL(href, location.href);
  const id = new URLSearchParams(location.search).get("device");
  if (id && !u.searchParams.has("device")) u.searchParams.set("device", id);
  return u.pathname + u.search + u.hash;
}
function go(href) { history.pushState(null, "", withDevice(href)); route(); }
function view() {
  const p = location.pathname.split("/").filter(Boolean);
  return p.length ? p[0] : "live";
}
function route() {
  const v = view();
  for (const sec of document.querySelectorAll("[data-view]")) sec.hidden = sec.dataset.view !== v;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === v) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `Settle — ${{ live: "Live", control: "Session", pair: "Pair", history: "History" }[v] || ""}`;
  clearTimeout(historyTimer);  // the list's polling ends with the view (and restarts with it)
  historyTimer = null;
  if (v === "history") loadHistory();
  if (v === "live") resizeCharts();
  placeStatus();
}
// On a narrow screen the status line is no overlay: on the Session page it sits in the
// space kept for it just above the markers (at the bottom of the window it hid the last row
// of markers for 8 s after every tap), elsewhere at the top of the page. It is moved only
// here (a page change, the window crossing the width), never as it speaks.
const NARROW = matchMedia("(max-width: 520px)");
function placeStatus() {
  const el = $("cmd-result");
  const to = NARROW.matches && view() === "control" ? $("say-markers") : $("say-home");
  if (el.parentNode !== to) to.appendChild(el);
}
NARROW.addEventListener("change", placeStatus);
document.addEventListener("click", (e) => {
  // A click with Ctrl, Cmd, Shift or Alt (a new tab or window, a saved link), or with another
  // button, is the browser's: the router took it and opened nothing new.
  if (e.defaultPrevented || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest("a[href^='/']");
  if (!a || a.target || a.hasAttribute("download") || a.getAttribute("href").startsWith("/sessions/")) return;
  e.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

/* ---- live feed ---- */
// `eventId`: the stream's id of the message (`<hub epoch>.<number>`), if it has one.
function onMessage(topic, payload, eventId) {
  const slash = topic.indexOf("/");
  if (slash < 0) return;
  const id = topic.slice(0, slash), leaf = topic.slice(slash + 1);
  if (id === "bridge") return;
  // The strap being refilled from its backlog: into its new state (see followStream).
  const d = rebuild && rebuild.id === id ? rebuild.d : dev(id);
  let p = payload;
  if (leaf !== "availability") { try { p = JSON.parse(payload); } catch { return; } }
  let n;  // the message's number, for the streams kept in order
  if (eventId && SEQ_STREAMS.has(leaf)) {
    const dot = eventId.lastIndexOf(".");
    n = Number(eventId.slice(dot + 1));
    d.epoch = eventId.slice(0, dot);
    if (d.firstN[leaf] === undefined) d.firstN[leaf] = n;
  }
  if (p && typeof p.seq === "number" && SEQ_STREAMS.has(leaf)) noteSeq(d, leaf, p);
  switch (leaf) {
    case "availability": d.availability = p; break;
    case "status": d.status = p; break;
    case "session":
      if (!d.session || d.session.id !== p.id) {
        d.t = []; d.rr = []; d.bn = []; d.it = []; d.ln = []; d.set = []; d.inum = []; d.events = []; d.en = [];
        d.indices = null; d.missed = false; d.gapFrom = {};
      }
      d.session = p; break;
    case "beat":
      d.hr = p.hr; d.contact = p.contact; d.beatTs = p.ts;
      // The shown session's beats, also after it stopped (none arrive then): the tachogram
      // and the trend chart both hold the most recent session (a reload after a stop showed
      // the trend of the stopped session beside an empty tachogram).
      if (d.session && p.session === d.session.id) {
        p.beat_t_s.forEach((t, i) => { d.t.push(t); d.rr.push(p.rr_ms[i]); d.bn.push(n); });
        cutBeats(d);
      }
      break;
    case "indices":
      if (d.session && p.session !== d.session.id) break;
      // An unusable rhythm's lnRMSSD is not plotted either: no number nobody can stand behind.
      d.indices = p; d.it.push(p.t_s); d.ln.push(p.usable ? p.ln_rmssd : null); d.set.push(p.usable ? p.settling : null);
      d.inum.push(n);
      break;
    case "event":
      if (d.session && p.session === d.session.id && EVENT_KINDS_SHOWN.has(p.kind)) { d.events.push(p); d.en.push(n); }
      break;
    default: return;
  }

}
// The tachogram's span: the last TACHO_S seconds of beats.
function cutBeats(d) {
  const cut = d.t.length ? d.t[d.t.length - 1] - TACHO_S : 0;
  let k = 0; while (k < d.t.length && d.t[k] < cut) k++;
  if (k) { d.t.splice(0, k); d.rr.splice(0, k); d.bn.splice(0, k); }
}

// Messages this page never got. Each strap's beats, indices and events are numbered (`seq`,
// per strap and stream): a number skipped is a message missed — one the server dropped for
// this page (it fell behind: its queue is bounded, oldest dropped, and counted in the health
// events' `dropped`), or one gone from the daemon's backlog (~15 min a strap) before a tab
// shown again resumed its stream. The page lost them silently, markers among them: it now
// says so while the strap's session lasts (its charts start again with the next).
const SEQ_STREAMS = new Set(["beat", "indices", "event"]);
// Where the first hole of the session begins is kept (gapFrom): the strap's backlog may fill
// it when the strap is shown after another (see followStream).
function noteSeq(d, leaf, p) {
  const last = d.seqs[leaf];
  if (d.firstSeq[leaf] === undefined) d.firstSeq[leaf] = p.seq;
  // A smaller number: the daemon started again (new numbers), nothing missed.
  if (last !== undefined && p.seq > last + 1 && d.session && p.session === d.session.id) {
    d.missed = true;
    if (d.gapFrom[leaf] === undefined) d.gapFrom[leaf] = last + 1;
  }
  d.seqs[leaf] = p.seq;
  d.seqSid[leaf] = p.session;
}
function missedMessages() {
  for (const x of S.devices) if (x.device_id) dev(x.device_id).missed = true;
  for (const id of Object.keys(S.perDev)) S.perDev[id].missed = true;
  if (rebuild) rebuild.d.missed = true;
}

let es = null;
// The id of the last message got: a stream the page opens anew (after a refused reconnect,
// or when the tab is shown again) names it, as the browser's own reconnect does
// (Last-Event-ID), and gets only what followed: opened without it, the whole backlog came
// again and every beat and marker was stored twice.
let lastEventId = "";
let retryTimer = null;
// A tab holds its live stream only while it is shown. A browser keeps at most 6 connections
// to one address (host and port) for all its tabs together: each tab's stream held one for
// good, hidden or frozen too (old tabs reconnect to each new daemon by themselves), so with
// six Settle tabs open a marker key waited in the browser for a free connection — the status
// line empty, the button disabled — and was stored 15 s late when a tab closed; a seventh
// tab never loaded. Hidden (another tab in front, the window minimised, the phone locked),
// frozen or put away (pagehide), the tab closes its stream; shown again it opens a new one
// that resumes after the last message it got (?last=).
let paused = false;
let resumedAt = Date.now();  // the page opened, or was shown again: "connecting", not "no word"
let heardSince = false;      // …until the first word from the daemon since then
let starting = !S.wanted;    // the page asks the daemon for its straps before its stream opens
function tabShown() { return document.visibilityState !== "hidden"; }
// The strap whose backlog the stream asks for (/events?device=): the strap shown. Without
// it, every page got every strap's backlog (100 straps: 122 200 messages, 2–4 s) to show
// one. After the backlog the stream brings every strap's live messages, kept for each
// strap; a reconnect (with the last id) gets only the named strap's messages it missed.
// null: no stream opened yet; "": none named (no strap known when the stream opened: it
// got every strap's backlog, and every strap's messages are whole on the page).
let streamDevice = null;
function streamUrl(path) {
  const url = new URL(withToken(path), location.href);
  if (streamDevice) url.searchParams.set("device", streamDevice);
  return url;
}
function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (es) { es.close(); es = null; }
  if (paused) return;
  if (!streamDevice) streamDevice = S.device || S.wanted || "";
  const url = streamUrl("/events");
  if (lastEventId) url.searchParams.set("last", lastEventId);
  const src = es = new EventSource(url.pathname + url.search);
  let dropped = 0;  // as the server counts them for this stream
  let backlogIn = false;  // the stream's first health event came: its backlog is in
  src.onmessage = (e) => {
    S.lastWord = Date.now(); heardSince = true;
    if (e.lastEventId) lastEventId = e.lastEventId;
    const m = JSON.parse(e.data);
    onMessage(m.topic, m.payload, e.lastEventId);
  };
  src.addEventListener("health", (e) => {
    S.lastWord = Date.now(); heardSince = true;
    tokenRefused = false;
    S.refused = null;
    const h = JSON.parse(e.data);
    if (typeof h.dropped === "number" && h.dropped > dropped) { dropped = h.dropped; missedMessages(); }
    // The first health event of a stream follows its backlog: a strap being refilled is whole.
    if (rebuild) finishRebuild();
    takeState(h);
    if (!backlogIn) { backlogIn = true; render(); }  // shown at once, not up to 250 ms later
  });
  // EventSource retries a dropped stream by itself, but not one the server answered with an
  // error (a 503: too many pages open, or connections): that one is retried here.
  // A 401 (no token, or not this daemon's) is not retried: the page says what to do.
  src.onerror = () => {
    if (src !== es) return;  // closed meanwhile (the tab was hidden)
    // The stream broke (the daemon stopped, the network went): no word from it from now on,
    // said at once (the page said "streaming" for up to 4 s more).
    S.lastWord = 0;
    if (src.readyState !== EventSource.CLOSED) { S.refused = null; return; }
    es = null;
    streamRefused();
  };
}
// The daemon's state (a health event, or /api/state): its straps, MQTT, its clock.
function takeState(h) {
  if (typeof h.ts === "number") S.clockAhead = Date.now() - h.ts;
  const shownName = S.device ? strapName(S.device) : null;  // before the list changes
  S.mqtt = h.mqtt; S.devices = h.devices;
  chooseDevice(shownName);
  if (!S.pacerInit) { S.pacerInit = true; $("pacer-rate").value = h.pacer_bpm; setPacer(); }
}
// The live stream was answered with an error, and EventSource tells neither which nor why:
// the page said "daemon unreachable" and "No word from the Settle daemon", and a marker key
// "no strap has connected yet", with the daemon answering and the strap streaming (a 503:
// "too many live pages open (32): close one"). It now asks the daemon for its state — the
// straps, so markers and buttons still work — and for the stream again, to read its reason;
// and tries again in 5 s.
const RETRY_MS = 5000;
async function streamRefused() {
  const st = await api("/api/state", {}, RETRY_MS).catch(() => null);
  if (paused || es) return;
  if (st && st.status === 401) return;  // "Token required": asking again will not help
  const h = st && st.ok ? await st.json().catch(() => null) : null;
  let why = null;
  if (h && Array.isArray(h.devices)) {
    takeState(h);
    why = await refusal();
  }
  if (paused || es) return;
  S.refused = why === null ? null : { why, at: Date.now() };
  render();
  // Taken this time (another page closed meanwhile): at once.
  retryTimer = setTimeout(connect, h && why === null ? 1000 : RETRY_MS);
}
// Why /events is refused, in the server's words; null if it is not (any more).
async function refusal() {
  let r;
  const url = new URL(streamUrl("/events"));
  url.searchParams.delete("token");  // api() sends it in its header
  try { r = await api(url.pathname + url.search, {}, RETRY_MS); } catch { return "it did not answer"; }
  if (r.ok) { r.body && r.body.cancel().catch(() => {}); return null; }
  const res = await r.json().catch(() => null);
  return (res && typeof res.error === "string" && res.error) || `HTTP ${r.status}${r.statusText ? " " + r.statusText : ""}`;
}
// Live updates refused, said while the daemon's own answer is recent (a daemon that stops
// answering is "No word…" again).
function refusedNow() { return !!S.refused && Date.now() - S.refused.at < 2 * RETRY_MS + 2000; }
function pauseStream() {
  paused = true;
  clearTimeout(retryTimer);
  retryTimer = null;
  if (es) { es.close(); es = null; }
}
function resumeStream() {
  if (!paused || !tabShown()) return;
  paused = false;
  resumedAt = Date.now(); heardSince = false;
  connect();
}
// Another strap shown than the one the stream named: the stream is opened again, naming it,
// without the last id (that strap's backlog begins before it), and the strap is refilled
// from its backlog into a state of its own while the charts still show what the page held.
// Its first health event follows the backlog: the new state then takes the page's older
// beats, indices and events (those before the backlog's first) and replaces the old one,
// so nothing is held twice (the page kept the strap's live messages meanwhile) and nothing
// of the backlog is missed. A stream that drops meanwhile resumes after the last message it
// got, as ever; a strap picked again meanwhile drops the unfinished refill. The other straps
// may miss what was published while the stream was opened again: it is found by their
// numbers (noteSeq), and their backlog fills it when they are shown.
let rebuild = null;  // {id, d}: the strap being refilled and its new state
function followStream() {
  if (!S.device || !streamDevice || streamDevice === S.device) return;
  streamDevice = S.device;
  rebuild = { id: S.device, d: newDev() };
  lastEventId = "";
  if (!paused) connect();
}
function finishRebuild() {
  const { id, d } = rebuild;
  rebuild = null;
  const old = S.perDev[id];
  if (old && old.session && d.session && old.session.id === d.session.id && old.epoch === d.epoch) {
    // The page's messages of the strap before the backlog's first (by message number).
    const before = (nums, first) => {
      if (first === undefined) return nums.length;  // none in the backlog
      let k = 0; while (k < nums.length && nums[k] < first) k++;
      return k;
    };
    const kb = before(old.bn, d.firstN.beat);
    d.t = old.t.slice(0, kb).concat(d.t); d.rr = old.rr.slice(0, kb).concat(d.rr); d.bn = old.bn.slice(0, kb).concat(d.bn);
    cutBeats(d);
    const ki = before(old.inum, d.firstN.indices);
    d.it = old.it.slice(0, ki).concat(d.it); d.ln = old.ln.slice(0, ki).concat(d.ln);
    d.set = old.set.slice(0, ki).concat(d.set); d.inum = old.inum.slice(0, ki).concat(d.inum);
    const ke = before(old.en, d.firstN.event);
    d.events = old.events.slice(0, ke).concat(d.events); d.en = old.en.slice(0, ke).concat(d.en);
    if (!d.indices) d.indices = old.indices;
    // A hole in what the page held that the backlog does not reach is still a hole.
    for (const leaf of SEQ_STREAMS) {
      const first = d.firstSeq[leaf];
      if (first === undefined) continue;
      if (old.gapFrom[leaf] !== undefined && old.gapFrom[leaf] < first) { d.missed = true; d.gapFrom[leaf] = old.gapFrom[leaf]; }
      if (old.seqSid[leaf] === d.session.id && old.seqs[leaf] < first - 1) { d.missed = true; if (d.gapFrom[leaf] === undefined) d.gapFrom[leaf] = old.seqs[leaf] + 1; }
    }
  }
  S.perDev[id] = d;
  if (id === S.device) drawnAt = 0;
}
document.addEventListener("visibilitychange", () => { if (tabShown()) resumeStream(); else pauseStream(); });
document.addEventListener("freeze", pauseStream);
document.addEventListener("resume", resumeStream);
window.addEventListener("pagehide", pauseStream);
window.addEventListener("pageshow", resumeStream);

/* ---- the strap shown ---- */
// The strap asked for (link or last pick) once the daemon knows it; never another one
// silently: if the daemon does not know it (after a few seconds to connect), the first
// strap is shown under a banner saying so.
const LOADED_AT = Date.now();
const CONNECT_WAIT_MS = 10000;
let goneSince = 0, goneName = null;  // the strap shown is missing from the daemon's list since then
function chooseDevice(shownName) {
  const ids = S.devices.map((x) => x.device_id).filter(Boolean);
  const waiting = S.devices.some((x) => !x.device_id);
  if (S.device && !ids.includes(S.device)) {
    // The strap shown is gone (the daemon was restarted with other straps, and the tab
    // reconnected by itself): the page stayed on it, a marker said "unknown device …" and
    // the score "no session running" with one running. Picked again, and said — after up to
    // 10 s while a strap is still connecting (the same one has no id until it connects).
    if (!goneSince) { goneSince = Date.now(); goneName = shownName; }
    if (waiting && Date.now() - goneSince < CONNECT_WAIT_MS) return;
    S.gone = { id: S.device, name: goneName || S.device };
    if (S.device) S.notes[S.device] = $("note").value;
    S.device = null;
    drawnAt = 0;
  }
  goneSince = 0;
  if (S.device || !ids.length) return;
  if (S.wanted && ids.includes(S.wanted)) { setDevice(S.wanted, false); return; }
  if (S.wanted && waiting && Date.now() - LOADED_AT < CONNECT_WAIT_MS) return;
  S.missing = S.gone && S.gone.id === S.wanted ? null : S.wanted;  // said once: it is gone
  setDevice(ids[0], false);
}
function setDevice(id, picked) {
  if (S.device === id) return;
  if (S.device) S.notes[S.device] = $("note").value;  // a note typed for one strap stays its own
  const before = S.device;
  S.device = id;
  $("note").value = S.notes[id] || "";
  if (picked) S.gone = null;
  if (picked || id === S.wanted) {
    S.wanted = id; S.missing = null;
    try { localStorage.setItem(DEVICE_KEY, id); } catch { /* private mode: the URL still has it */ }
    const u = new URL(location.href);
    u.searchParams.set("device", id);
    history.replaceState(history.state, "", u.pathname + u.search + u.hash);
  }
  if (before !== null) drawnAt = 0;  // the charts show the new strap now, not up to 0.9 s later
  followStream();
  render();
}
function strapName(id) {
  const x = S.devices.find((r) => r.device_id === id);
  const name = x && x.name ? x.name : id;
  const twins = x && x.name && S.devices.filter((r) => r.name === x.name).length > 1;
  return twins ? `${name} (${id})` : name;
}
function stateWords(x) { return x.state === "streaming" ? "streaming" : `disconnected (${x.state})`; }

/* ---- rendering ---- */
function currentRuntime() {
  return S.devices.find((x) => x.device_id === S.device) || S.devices[0] || null;
}
// The stream is being opened (the page just opened, or was shown again after its stream was
// closed while hidden) and nothing has come yet: "connecting", for up to STALE_MS, not the
// alert "No word from the Settle daemon" each time the tab comes to the front.
function connecting() {
  return (!!es || starting) && !heardSince && Date.now() - resumedAt < STALE_MS;
}
function banners() {
  const out = [];
  const alive = Date.now() - S.lastWord < STALE_MS;
  if (tokenRefused) {
    out.push(["bad", TOKEN
      ? "The daemon refused this tab's token (it was restarted with another, or this is another daemon) — open the address it printed at start-up again (the line “http:”, ending in #token=…), or paste the token below."
      : "Token required — open the address the daemon printed at start-up (the line “http:”, ending in #token=…), or paste the token below; this tab then keeps it until it is closed."]);
  } else if (!alive && refusedNow()) {
    out.push(["bad", `Live updates refused by the daemon: ${S.refused.why} — trying again every ${RETRY_MS / 1000} s. ` +
      "The values shown are not live; markers and buttons still work."]);
  } else if (!alive && !connecting()) out.push(["bad", "No word from the Settle daemon — the values shown are stale."]);
  // The straps' states are known from the stream, or while it is refused from /api/state.
  const known = alive || refusedNow();
  const rt = currentRuntime();
  const d = S.device ? dev(S.device) : null;
  // No strap has connected yet (a daemon with none to look for, or one still looking for
  // its strap): the page showed dashes and a red "no strap", and nothing said what to do.
  if (known && !S.devices.length) {
    out.push(["warn", "No strap yet — this daemon has no strap to connect to. Pair one on the Pair page (Scan, then Remember) and start settle run again."]);
  } else if (known && rt && !rt.device_id) {
    out.push(["warn", `Looking for your strap (${rt.state}) — turn it on: wet the electrodes and put it on; it connects by itself. ` +
      "A phone or watch connected to it may hold its only connection. A new strap is paired on the Pair page."]);
  } else if (known && rt && rt.state !== "streaming") {
    // The state says what the daemon does now; the last error why, unless it only repeats
    // the banner ("Strap disconnected (scanning: disconnected)").
    const why = rt.last_error && rt.last_error !== "disconnected" ? ": " + rt.last_error : "";
    out.push(["bad", `Strap disconnected (${rt.state}${why}) — reconnecting; beats in the gap are not recorded.`]);
  } else if (alive && d && d.contact === false) {
    out.push(["warn", "No skin contact — wet the electrodes and check the strap sits snugly."]);
  }
  // Only about a running session on a streaming strap: it stayed after a stop until the next
  // session, and under "Strap disconnected".
  const measuring = !!d && !!d.session && d.session.state === "running" &&
    !!rt && rt.device_id === S.device && rt.state === "streaming";
  if (alive && measuring && d.indices && d.indices.usable === false && !d.indices.warming_up) {
    out.push(["bad", `Rhythm unusable${d.indices.reason ? " (" + d.indices.reason + ")" : ""} — do not read the settling score now.`]);
  }
  // Another strap than the one shown is down: said here too (only the shown one's was).
  if (known) {
    const others = S.devices.filter((x) => x.device_id && x.device_id !== S.device && x.state !== "streaming");
    if (others.length) {
      out.push(["warn", `Also disconnected: ${others.map((x) => `${strapName(x.device_id)} (${x.state})`).join(", ")} — beats in the gap are not recorded.`]);
    }
  }
  if (S.gone && S.device) {
    const back = S.devices.some((x) => x.device_id === S.gone.id);
    out.push(["warn", back
      ? `The strap shown before (${S.gone.name}) is back — pick it in the Strap picker to watch it; showing ${strapName(S.device)}.`
      : `The strap shown before (${S.gone.name}) is gone from the daemon (restarted with other straps?) — now showing ${strapName(S.device)}; markers go to it.`]);
  }
  if (S.missing && S.device) {
    const back = S.devices.some((x) => x.device_id === S.missing);
    out.push(["warn", back
      ? `The strap asked for (${strapName(S.missing)}) is back — pick it in the Strap picker to watch it; showing ${strapName(S.device)}.`
      : `The strap asked for (${S.missing}) is not known to this daemon — showing ${strapName(S.device)}; markers go to it.`]);
  }
  if (d && d.missed) {
    out.push(["warn", "This page missed some live messages (it fell behind, or was in the background longer than the daemon keeps them) — " +
      "its charts and markers have gaps. Everything was stored: reload for the last 15 minutes in full, or see the session's report in History."]);
  }
  if (known && S.mqtt === "down") {
    out.push(["warn", "MQTT broker unreachable — measuring and storing go on; messages are queued."]);
  }
  showBanners(out);
  const conn = $("conn");
  const label = tokenRefused && !alive ? "token required" : !alive && refusedNow() ? "no live updates"
    : !alive && connecting() ? "connecting…" : !alive ? "daemon unreachable" : rt ? `${rt.name || rt.device_id || "strap"}: ${rt.state}` : "no strap";
  text("conn", label + (alive ? ` · MQTT ${S.mqtt}` : ""));
  conn.className = "pill " + (alive && rt && rt.state === "streaming" ? "ok" : "bad");
  return alive && rt && rt.state === "streaming";
}
// Only what changed is touched: the box is an alert, and rebuilding it whole re-announced
// every banner whenever one of them changed (or a new one came).
function showBanners(out) {
  const box = $("banners");
  const want = out.map(([cls, msg]) => [`${cls}|${msg}`, cls, msg]);
  for (const el of [...box.children]) if (!want.some(([k]) => k === el.dataset.key)) el.remove();
  let prev = null;
  for (const [k, cls, msg] of want) {
    let el = [...box.children].find((e) => e.dataset.key === k);
    if (!el) {
      el = document.createElement("div");
      el.className = `banner ${cls}`; el.textContent = msg; el.dataset.key = k;
    }
    const at = prev ? prev.nextSibling : box.firstChild;
    if (el !== at) box.insertBefore(el, at);
    prev = el;
  }
}
function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function render() {
  const live = banners();
  const form = $("token-form");
  if (form.hidden === tokenRefused) form.hidden = !tokenRefused;
  const pick = document.querySelector(".device-pick");
  const straps = S.devices.filter((x) => x.device_id);
  pick.hidden = straps.length < 2;
  const sel = $("device");
  // Each strap by its name and connection state (the ids alone told the coach neither).
  const opts = straps.map((x) => `<option value="${escapeHtml(x.device_id)}">${escapeHtml(`${strapName(x.device_id)} — ${stateWords(x)}`)}</option>`).join("");
  if (sel.dataset.html !== opts) {
    sel.innerHTML = opts;
    sel.dataset.html = opts;
  }
  if (S.device) sel.value = S.device;
  for (const a of document.querySelectorAll("nav a")) {
    const href = withDevice(`/${a.dataset.page}`);
    if (a.getAttribute("href") !== href) a.setAttribute("href", href);
  }
  renderPair();
  if (!S.device) {
    const heard = Date.now() - S.lastWord < STALE_MS;
    text("settling-note", !heard ? "" : S.devices.length ? "waiting for the strap to connect" : "no strap yet");
    return;
  }
  const d = dev(S.device), ix = d.indices, rt = currentRuntime();
  const fresh = live && beatCurrent(d);
  document.querySelector(".hero").classList.toggle("stale", !fresh);
  text("hr", fresh && d.hr ? String(d.hr) : "–");
  const usable = ix && ix.usable;
  const ses = d.session;
  const running = !!ses && ses.state === "running";
  // A strap not streaming has no current values: its last ones stayed on screen, frozen,
  // under the "Strap disconnected" banner.
  const streaming = !!rt && rt.device_id === S.device && rt.state === "streaming";
  // Stale data is no score: with the daemon silent the last one ("41 → steady") stayed on
  // screen, only greyed, and it is the number the practitioner acts on.
  const heard = Date.now() - S.lastWord < STALE_MS;
  let shown = false;
  if (!heard) { text("settling", "–"); text("settling-note", `not current: ${refusedNow() ? "live updates refused" : "no word from the daemon"}`); text("trend", ""); }
  else if (ses && !running) { text("settling", "–"); text("settling-note", "no session running"); text("trend", ""); }
  else if (!streaming) { text("settling", "–"); text("settling-note", "strap disconnected"); text("trend", ""); }
  else if (!ix) { text("settling", "–"); text("settling-note", "waiting for the first indices"); text("trend", ""); }
  else if (!usable && ix.warming_up) { text("settling", "–"); text("settling-note", "waiting for beats…"); text("trend", ""); }
  else if (!usable) { text("settling", "–"); text("settling-note", "rhythm unusable"); text("trend", ""); }
  else if (ix.settling === null) { text("settling", "–"); text("settling-note", "collecting the baseline…"); text("trend", ""); }
  else {
    shown = true;
    text("settling", ix.settling.toFixed(0));
    const arrow = { settling: "↑ settling", steady: "→ steady", unsettling: "↓ unsettling" }[ix.trend] || "";
    text("trend", arrow);
    // Confidence is 1 − p of the trend test (docs/indices.md): beside "steady" it read
    // backwards ("steady, trend confidence 91 %" meant a trend is likely), so only a
    // settling or unsettling trend shows it.
    const directed = ix.trend === "settling" || ix.trend === "unsettling";
    let note = "50 = as at baseline";
    if (directed && ix.trend_confidence !== null) {
      note = `trend confidence ${(ix.trend_confidence * 100).toFixed(0)} %`;
      // The slope and its 95 % CI, from the same 30 s means as the test (docs/indices.md).
      const lo = ix.trend_slope_ci_low_per_min, hi = ix.trend_slope_ci_high_per_min;
      const sl = ix.trend_slope_per_min;
      const pts = (v) => `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(1)}`;
      if (sl != null && lo != null && hi != null) note += `, ${pts(sl)} points/min (95 % CI ${pts(lo)} to ${pts(hi)})`;
    }
    text("settling-note", note);
  }
  sayScore(shown ? `trend:${ix.trend}` : "none", shown
    ? `Settling score ${ix.settling.toFixed(0)}${ix.trend ? ", " + ix.trend : ""}`
    : `Settling score not shown: ${$("settling-note").textContent}`);
  // HRV values only while the daemon is heard, a session runs and the rhythm is usable (they
  // read RMSSD 55 ms and coherence 0.32 on a rhythm with 62 % premature beats, stayed on
  // screen after the daemon stopped, and a stopped session's stayed for as long as the page
  // was open); the signal quality says how good the signal is either way, while a session runs.
  const alive = Date.now() - S.lastWord < STALE_MS;
  const hrv = alive && running && streaming && ix && ix.usable ? ix : null;
  text("lnrmssd", hrv ? fmt(hrv.ln_rmssd, 2) : "–");
  text("rmssd", hrv && hrv.rmssd_ms !== null ? `${fmt(hrv.rmssd_ms, 1)} ms` : "–");
  text("coherence", hrv ? fmt(hrv.coherence, 2) : "–");
  text("resp", hrv && hrv.resp_rate_bpm !== null ? `${fmt(hrv.resp_rate_bpm, 1)} /min` : "–");
  const c = (hrv && hrv.components) || {};
  text("z-hr", fmt(c.z_hr, 2)); text("z-ln", fmt(c.z_ln_rmssd, 2)); text("z-slow", fmt(c.z_slow, 2));
  text("baseline", running ? { pending: "first minutes", collecting: "recording…", complete: "complete" }[ses.baseline] : "–");
  // Card "caught up": when physiology caught up, in session time (it read "catching up at
  // 4:10" under the label "caught up"), as the latest indices say (History and the report
  // do too): the retained session message keeps the first detection, 4:05 after a hold
  // start moved it to 12:55.
  const caught = ix && ix.catching_up_t_s !== undefined ? ix.catching_up_t_s : ses && ses.catching_up_t_s;
  text("caught", !running ? "–" : caught !== null && caught !== undefined ? `at ${mmss(caught)}` : "not yet");
  text("quality", alive && running && streaming && ix && ix.quality !== null ? `${(ix.quality * 100).toFixed(0)} %` : "–");
  text("contact", !streaming ? "–" : d.contact === null ? "not reported" : d.contact ? "yes" : "NO");
  const bat = rt ? rt.battery_pct : d.status && d.status.battery_pct;
  // Not the last report under "Strap disconnected" (every other value there reads "–").
  text("battery", !alive || !streaming || bat === null || bat === undefined ? "–" : `${bat} %`);
  // A Polar H10 recording its raw ECG says so (a stop is a mark on the charts).
  text("strap-state", !alive ? "unknown (no word from the daemon)"
    : rt ? rt.state + (rt.ecg ? " · raw ECG" : "") : d.status ? d.status.state : "–");
  const line = ses ? `${ses.state === "running" ? "Running" : "Stopped"}: session ${ses.id}` +
    (ses.intention && ses.intention.statement ? ` — “${ses.intention.statement}” (${ses.intention.target})` : "")
    : "No session yet.";  // (n_beats is only as fresh as the last retained session message)
  text("session-line", line);
  // With a session running (one starts by itself when a strap connects), Start stops it and
  // starts a new one with the intention: the button says so instead of doing it silently.
  text("start", running ? "Stop this session and start a new one" : "Start session");
  const was = ses && !running ? " of the stopped session (not live)" : "";
  text("tacho-cap", `Beat-to-beat intervals (ms), last 5 minutes${was}`);
  text("trend-cap", `Rolling lnRMSSD and settling score${was}`);
  if (view() === "live") drawCharts(d);
}

// The score and its trend, said politely when the trend's word changes (or the score goes
// or comes back), at most once every SCORE_SAY_MS: never every beat or index. The state the
// page opens in is not said.
const SCORE_SAY_MS = 10000;
const scoreSaid = { key: null, at: 0 };
function sayScore(key, msg) {
  if (scoreSaid.key === null) { scoreSaid.key = key; return; }
  if (key === scoreSaid.key || Date.now() - scoreSaid.at < SCORE_SAY_MS) return;
  scoreSaid.key = key; scoreSaid.at = Date.now();
  text("score-say", msg);
}

/* ---- charts ---- */
let tacho = null, trendc = null;
function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
// Markers and events in the page's words, as the Session page's buttons say them (the
// charts said "hold-start").
const EVENT_WORDS = { "hold-lapse": "hold lapse", "hold-resume": "hold resumed", "hold-start": "hold start",
  "baseline-start": "baseline start", "baseline-complete": "baseline complete", "catching-up": "caught up",
  disconnected: "strap disconnected", reconnected: "strap reconnected", gap: "gap", note: "note",
  "ecg-stopped": "raw ECG stopped", "no-rr": "no beat intervals" };
function eventWords(kind) { return EVENT_WORDS[kind] || String(kind).replace(/-/g, " "); }
// Labels in two rows, never over each other (at least 8 px apart): a marker whose label fits in neither row
// joins the label before it, which then reads "N markers" (15 markers within 40 s piled
// into an illegible stack of four rows). Every line is drawn. `measure(text)` gives a width
// in the canvas's pixels; the labels come back in them too, each with its row.
const LABEL_ROWS = 2;
function markerLabels(evs, x0, x1, toX, measure, left, right, pad, gap) {
  const items = evs.filter((e) => e.t_s >= x0 && e.t_s <= x1)
    .map((e) => ({ x: toX(e.t_s), words: eventWords(e.kind) })).sort((a, b) => a.x - b.x);
  const place = (c) => {
    c.text = c.items.length === 1 ? c.items[0].words : `${c.items.length} markers`;
    c.w = measure(c.text);
    c.x0 = c.items[0].x + pad;
    if (c.x0 + c.w > right) c.x0 = Math.max(left, right - c.w);  // at the plot's right edge
    c.x1 = c.x0 + c.w;
    return c;
  };
  const out = [], ends = Array(LABEL_ROWS).fill(-Infinity);
  for (const it of items) {
    const c = place({ items: [it] });
    const row = ends.findIndex((end) => c.x0 >= end + gap);
    if (row >= 0) { c.row = row; out.push(c); ends[row] = c.x1; continue; }
    const last = out[out.length - 1];
    last.items.push(it); place(last); ends[last.row] = Math.max(ends[last.row], last.x1);
  }
  // A label grown (or pushed left by the edge) into its row's neighbour: one label.
  for (let merged = true; merged;) {
    merged = false;
    for (let i = 0; i < out.length && !merged; i++) {
      for (let j = i + 1; j < out.length && !merged; j++) {
        const [a, b] = [out[i], out[j]];
        if (a.row !== b.row || a.x1 + gap <= b.x0 || b.x1 + gap <= a.x0) continue;
        a.items.push(...b.items); a.items.sort((p, q) => p.x - q.x); place(a);
        out.splice(j, 1); merged = true;
      }
    }
  }
  return out;
}
function markerHook(name, getEvents) {
  return { draw: [(u) => {
    const ctx = u.ctx, evs = getEvents();
    const [x0, x1] = [u.scales.x.min, u.scales.x.max];
    const dpr = devicePixelRatio;
    ctx.save();
    ctx.strokeStyle = css("--mark"); ctx.fillStyle = css("--mark");
    ctx.font = `${12 * dpr}px system-ui`; ctx.lineWidth = dpr;
    // uPlot leaves the alignment of its last axis labels (right) in the saved state: a
    // label then ran left of its line, over the y axis's numbers for an early marker.
    ctx.textBaseline = "alphabetic"; ctx.textAlign = "left";
    for (const ev of evs) {
      if (ev.t_s < x0 || ev.t_s > x1) continue;
      const x = u.valToPos(ev.t_s, "x", true);
      ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
    }
    const labels = markerLabels(evs, x0, x1, (t) => u.valToPos(t, "x", true), (t) => ctx.measureText(t).width,
      u.bbox.left, u.bbox.left + u.bbox.width, 3 * dpr, 8 * dpr);
    const base = (c) => u.bbox.top + (12 + 14 * c.row) * dpr;
    for (const c of labels) ctx.fillText(c.text, c.x0, base(c));
    ctx.restore();
    // What was drawn, in CSS pixels of the canvas (read by the browser tests).
    S.markerLabels[name] = labels.map((c) => ({ text: c.text, n: c.items.length, row: c.row,
      left: c.x0 / dpr, right: c.x1 / dpr, top: base(c) / dpr - 11, bottom: base(c) / dpr + 3 }));
  }] };
}
function chartWidth(el) { return Math.max(260, el.clientWidth || 600); }
function makeCharts() {
  if (typeof uPlot === "undefined") return;
  const axis = { stroke: css("--muted"), grid: { stroke: css("--line") }, ticks: { stroke: css("--line") } };
  // Whole-second steps (uPlot's default steps gave 2.5 s: "0:05 0:07 0:10").
  const xaxis = { ...axis, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400],
    values: (u, vals) => vals.map((v) => mmss(v)) };
  const t = $("tacho");
  tacho = new uPlot({ width: chartWidth(t), height: 200, scales: { x: { time: false } },
    legend: { show: false }, cursor: { show: false },
    axes: [xaxis, { ...axis, label: "RR ms" }],
    series: [{}, { label: "RR (ms)", stroke: css("--tacho"), width: 1.5, points: { show: false } }],
    plugins: [{ hooks: markerHook("tacho", () => (S.device ? dev(S.device).events : [])) }] }, [[], []], t);
  const r = $("trendchart");
  trendc = new uPlot({ width: chartWidth(r), height: 200, scales: { x: { time: false }, s: { range: [0, 100] } },
    legend: { show: true, live: false }, cursor: { show: false },
    axes: [xaxis, { ...axis, label: "lnRMSSD" }, { ...axis, scale: "s", side: 1, label: "settling", grid: { show: false } }],
    series: [{}, { label: "lnRMSSD", stroke: css("--ln"), width: 2 },
      { label: "settling", stroke: css("--set"), width: 2, scale: "s" }],
    plugins: [{ hooks: markerHook("trend", () => (S.device ? dev(S.device).events : [])) }] }, [[], [], []], r);
}
// The colours are read from the CSS when the charts are made: switched to light or dark while
// the page is open, the charts are made again (they kept the other scheme's colours).
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  if (!tacho) return;
  tacho.destroy(); trendc.destroy();
  makeCharts();
  drawnAt = 0;
  render();
});
function resizeCharts() {
  if (tacho) tacho.setSize({ width: chartWidth($("tacho")), height: 200 });
  if (trendc) trendc.setSize({ width: chartWidth($("trendchart")), height: 200 });
}
let drawnAt = 0;
function drawCharts(d) {
  if (!tacho) return;
  if (Date.now() - drawnAt < 900) return;   // calm: about one redraw a second
  drawnAt = Date.now();
  tacho.setData([d.t.slice(), d.rr.slice()]);
  trendc.setData([d.it.slice(), d.ln.slice(), d.set.slice()]);
  chartSummaries(d);
}
// Each chart in words, for a screen reader (the charts are pictures): the latest values
// and the markers in view. Not live regions: read when the reader gets there.
function chartSummaries(d) {
  const lastOf = (ts, vs) => { for (let i = vs.length - 1; i >= 0; i--) if (vs[i] !== null && vs[i] !== undefined) return [ts[i], vs[i]]; return null; };
  const marks = (from) => {
    const evs = d.events.filter((e) => e.t_s >= from).sort((a, b) => a.t_s - b.t_s);
    if (!evs.length) return " No markers.";
    const latest = evs.slice(-5).map((e) => `${eventWords(e.kind)} at ${mmss(e.t_s)}`).join(", ");
    return evs.length > 5 ? ` ${evs.length} markers; the latest: ${latest}.` : ` Markers: ${latest}.`;
  };
  const rr = lastOf(d.t, d.rr);
  text("tacho-sum", !rr ? "No beats yet." : `Latest beat-to-beat interval ${Math.round(rr[1])} ms at ${mmss(rr[0])}; ` +
    `${Math.round(Math.min(...d.rr))} to ${Math.round(Math.max(...d.rr))} ms over the span shown.${marks(d.t[0])}`);
  const ln = lastOf(d.it, d.ln), st = lastOf(d.it, d.set);
  text("trend-sum", !ln && !st ? "No usable indices yet." :
    `${ln ? `Latest lnRMSSD ${ln[1].toFixed(2)} at ${mmss(ln[0])}` : "No lnRMSSD yet"}; ` +
    `${st ? `latest settling score ${st[1].toFixed(0)} at ${mmss(st[0])}` : "no settling score yet"}.${marks(d.it.length ? d.it[0] : 0)}`);
}
window.addEventListener("resize", resizeCharts);

/* ---- pacer ---- */
let pacerTimer = null;
function setPacer() {
  const bpm = Number($("pacer-rate").value);
  text("pacer-rate-out", String(bpm));
  const on = $("pacer-on").checked;
  $("pacer").hidden = !on;
  clearInterval(pacerTimer);
  if (!on) return;
  const half = 30000 / bpm;
  const dot = document.querySelector(".pacer .dot");
  dot.style.transitionDuration = `${half}ms`;
  let inhale = true;
  const step = () => { $("pacer").classList.toggle("in", inhale); text("pacer-word", inhale ? "breathe in" : "breathe out"); inhale = !inhale; };
  step(); pacerTimer = setInterval(step, half);
}
$("pacer-rate").addEventListener("input", setPacer);
$("pacer-on").addEventListener("change", setPacer);

/* ---- commands ---- */
// The page speaks of its buttons, not of the MQTT commands behind them ("send session/start
// first" meant nothing beside a button reading "Start session").
const WORDS = { "session/start": "Start session", "session/stop": "Stop session",
  "baseline/start": "Baseline start", "baseline/stop": "Baseline stop" };
const CMD_NAME = /\b(session\/start|session\/stop|baseline\/start|baseline\/stop)\b/g;
function buttonWords(msg) {
  return String(msg).replace(/\bsend (?=(session|baseline)\/)/g, "press ").replace(CMD_NAME, (c) => WORDS[c]);
}
// The command as the server forwards it to the daemon (Python's json.dumps separators).
function pyJson(v) {
  if (Array.isArray(v)) return `[${v.map(pyJson).join(", ")}]`;
  if (v && typeof v === "object") return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pyJson(x)}`).join(", ")}}`;
  return JSON.stringify(v);
}
function utf8Bytes(s) { return new TextEncoder().encode(s).length; }
function sessionRunning() {
  const d = S.device ? dev(S.device) : null;
  return !!(d && d.session && d.session.state === "running");
}

// A command not answered within COMMAND_TIMEOUT_MS is withdrawn (see `unanswered`): the
// browser kept one waiting for a free connection as long as another Settle tab held it
// (15 s and more with six tabs open), the status line empty, and then sent it — a marker
// then stored that much late, its time wrong, without a word.
const COMMAND_TIMEOUT_MS = 5000;
const PROBE_TIMEOUT_MS = 1500;
// Sent this long after the press (it waited in the browser for a connection), the answer
// says so: the daemon times a marker (and a session or baseline start) when it gets it.
const LATE_MS = 1000;
// What the browser measured of a request (its Resource Timing): how long it waited before
// it was sent — for a free connection, and to make one. Null if not known.
function waitedToSend(path, since) {
  const url = new URL(path, location.href).href;
  const e = performance.getEntriesByName(url, "resource").filter((x) => x.startTime >= since - 1).pop();
  return e && e.requestStart > 0 ? e.requestStart - e.startTime : null;
}
// The buffer holds 250 entries, then takes no more (the History list polls): emptied then.
performance.addEventListener("resourcetimingbufferfull", () => performance.clearResourceTimings());
// What to say of a command withdrawn unanswered. Still waiting in the browser for a
// connection, it was never sent (a fetch aborted before it goes out never does); sent, the
// daemon has it. A second request tells them apart: if the daemon answers it at once, there
// was a connection, and the command went out; if it waits too while the live stream shows
// the daemon alive, the browser holds no free connection to it.
async function unanswered(name, label) {
  const recorded = name === "marker" ? "NOT recorded" : "not done";
  const answered = await api("/api/state", {}, PROBE_TIMEOUT_MS).then(() => true, () => false);
  if (!answered && Date.now() - S.lastWord < STALE_MS) {
    return `${label} ${recorded} — not sent: the browser is holding too many connections to Settle ` +
      "(6 at most, for all its tabs and windows): close other Settle tabs, then press again";
  }
  return answered
    ? `${label}: no answer from the daemon within ${COMMAND_TIMEOUT_MS / 1000} s — it may have been done ` +
      "all the same (a marker at the moment the daemon got it): check before pressing again"
    : `${label}: no answer within ${COMMAND_TIMEOUT_MS / 1000} s and no word from the daemon — not known ` +
      "to be done (a marker, if the daemon got it, at the moment it got it): check before pressing again";
}

// `label`: what the user pressed, in the page's words; `done`: what to say when it worked.
async function command(name, body, label, done) {
  body = body || {};
  const rt = currentRuntime();
  const id = S.device || (rt && rt.device_id);
  if (!id) { say(`${label}: no strap has connected yet`, "bad"); return null; }
  // Which strap it went to, in every answer (with three straps "“doubt” marker added" did
  // not say on whom).
  const who = strapName(id);
  // 2000 letters of a non-Latin script are up to 6000 bytes of UTF-8: the server refused
  // the request (413, in plain text) and the page said the daemon did not answer.
  const wire = utf8Bytes(pyJson({ ...body, v: 1, id: FORWARDED_ID }));
  if (wire > MAX_COMMAND_BYTES) {
    if (typeof body.text === "string" && body.text) {
      const n = utf8Bytes(body.text);
      say(`${label}: note too long: ${n} bytes as UTF-8, at most ${MAX_COMMAND_BYTES - (wire - n)} — nothing was sent`, "bad");
    } else {
      say(`${label}: too long to send: ${wire} bytes as UTF-8, at most ${MAX_COMMAND_BYTES} — nothing was sent`, "bad");
    }
    return null;
  }
  const path = `/api/cmd/${encodeURIComponent(id)}/${name}`;
  const pressed = performance.now();
  let r;
  try {
    r = await api(path, { method: "POST", headers: { "Content-Type": "application/json", "X-Settle": "1" },
      body: JSON.stringify(body) }, COMMAND_TIMEOUT_MS);
  } catch (e) {
    say(e && e.name === "AbortError" ? await unanswered(name, label) : `${label}: the daemon did not answer`, "bad");
    return null;
  }
  const raw = await r.text().catch(() => "");
  let res = null;
  try { res = JSON.parse(raw); } catch { res = null; }
  if (!res || typeof res !== "object" || !res.status) {
    // Not the daemon's answer (a plain-text 413, a proxy's error page): say what came back.
    const head = `HTTP ${r.status}${r.statusText ? " " + r.statusText : ""}`;
    let said = raw.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200);
    if (said === `${r.status} ${r.statusText}`) said = "";  // a bare error page repeats it
    say(`${label}: the server answered ${head}${said ? " — " + said : ""}`, "bad");
    return null;
  }
  if (res.status !== "ok") say(`${label} — ${who}: ${buttonWords(res.error)}`, "bad");
  else {
    // Sent late (it waited in the browser for a connection): its time is that much late.
    const waited = waitedToSend(path, pressed);
    const took = performance.now() - pressed;
    const late = waited !== null ? waited : took;
    if (res.stored === false) {
      // Answered ok while the session store refuses writes (disk full, another program's
      // lock): kept in the daemon's memory, written when the store is back.
      say(`${done} — ${who}, kept in memory: the session store is not taking writes now (the daemon's log says why); it is written when the store works again`, "warn");
    } else if (late < LATE_MS) say(`${done} — ${who}`, "ok");
    else {
      const s = `${(late / 1000).toFixed(1)} s`;
      say(waited !== null
        ? `${done} — ${who}, but sent ${s} after the press (the browser held it back: too many Settle tabs open), so its time is ${s} late`
        : `${done} — ${who}, but answered ${s} after the press: its time may be up to ${s} late`, "warn");
    }
  }
  return res;
}

// Command results on every page, in a status line that stays in view (a marker key pressed
// on the Live page reported "no session running" into the hidden Session page).
let sayTimer = null;
function clock() {
  const n = new Date();
  return [n.getHours(), n.getMinutes(), n.getSeconds()].map((x) => String(x).padStart(2, "0")).join(":");
}
function say(msg, tone) {
  const el = $("cmd-result");
  // The time makes a repeated result a new text, which a screen reader announces again.
  el.textContent = `${msg} (${clock()})`;
  el.className = `toast ${tone || ""}`;
  clearTimeout(sayTimer);
  sayTimer = setTimeout(() => { el.textContent = ""; }, tone === "bad" ? 20000 : 8000);
}

// Start and Stop take one command at a time (a double click started two sessions).
let sessionBusy = false;
async function sessionCommand(button, name, body, done) {
  if (sessionBusy) return;
  sessionBusy = true;
  for (const b of [$("start"), $("stop")]) b.setAttribute("aria-disabled", "true");
  try { await command(name, body, button.textContent, done); }
  finally { sessionBusy = false; for (const b of [$("start"), $("stop")]) b.removeAttribute("aria-disabled"); }
}
// Ending a running session (Stop, or Start while one runs) asks first, in a dialog whose
// focus is on keeping it: one mis-tap (the buttons sit just above the markers on a phone)
// ended the practice. Keyboard: Tab to the stop button, Enter; Escape keeps the session.
let confirmAction = null;
let confirmFor = null;  // the running session the question is about (strap, session id)
function runningId() {
  const d = S.device ? dev(S.device) : null;
  return d && d.session && d.session.state === "running" ? `${S.device}/${d.session.id}` : null;
}
function confirmEnd(question, more, yes, action) {
  const dlg = $("confirm-end");
  $("confirm-end-q").firstChild.textContent = question;
  text("confirm-end-more", more);
  text("confirm-yes", yes);
  confirmAction = action;
  confirmFor = runningId();
  if (!dlg.open) dlg.showModal();
  $("confirm-keep").focus();
}
$("confirm-keep").addEventListener("click", () => $("confirm-end").close());
$("confirm-yes").addEventListener("click", (e) => {
  // The second tap of a double tap (detail 2) on Stop is no answer: it lands here.
  if (e.detail > 1) return;
  const act = confirmAction, asked = confirmFor;
  $("confirm-end").close();
  // A session started elsewhere (MQTT, another tab, another strap picked) while the question
  // was open is not the one the answer was about: it would have been the one stopped.
  if (act && runningId() !== asked) {
    say("The running session changed while you were asked: nothing was stopped", "warn");
    return;
  }
  if (act) act();
});
$("confirm-end").addEventListener("close", () => { confirmAction = null; });
function startSession() {
  const restart = sessionRunning();
  sessionCommand($("start"), "session/start",
    { intention: { target: $("target").value, statement: $("statement").value.trim(), practice: $("practice").value.trim() } },
    restart ? "session stopped and a new one started" : "session started");
}
$("start-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!sessionRunning()) { startSession(); return; }
  confirmEnd("Stop the running session and start a new one?",
    "The running session is stopped and stored; the new one holds the intention above.",
    "Stop it and start a new one", startSession);
});
// Enter in an intention field submitted the form: it stopped the running session and
// started a new one, unasked. While one runs, only the button does that.
for (const f of ["statement", "practice"]) {
  $(f).addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.isComposing || !sessionRunning()) return;
    e.preventDefault();
    say("Enter does not restart the running session: press “Stop this session and start a new one” for that", "warn");
  });
}
function stopSession() { sessionCommand($("stop"), "session/stop", {}, "session stopped"); }
$("stop").addEventListener("click", () => {
  if (!sessionRunning()) { stopSession(); return; }  // the daemon says there is none
  confirmEnd("Stop the running session?", "It is stopped and stored; markers then go nowhere until a new one starts.",
    "Stop the session", stopSession);
});
$("baseline-start").addEventListener("click", () => command("baseline/start", {}, "Baseline start", "baseline recording started"));
$("baseline-stop").addEventListener("click", () => command("baseline/stop", {}, "Baseline stop", "baseline stopped: scores count from it"));
const MARKER_COOLDOWN_MS = 1500;  // a double tap or a held key is one marker, not three
for (const b of document.querySelectorAll(".markers button")) {
  const words = `“${b.firstChild.textContent.trim()}” marker`;
  b.addEventListener("click", () => {
    if (b.dataset.busy) return;
    b.dataset.busy = "1"; b.setAttribute("aria-disabled", "true");
    const done = () => setTimeout(() => { delete b.dataset.busy; b.removeAttribute("aria-disabled"); b.classList.remove("sent"); }, MARKER_COOLDOWN_MS);
    const note = $("note").value.trim(), to = S.device;
    command("marker", { kind: b.dataset.kind, text: note }, words, `${words} added${note ? " with the note" : ""}`).then((r) => {
      // Shown at the button too: on a phone the status line may be out of sight.
      if (r && r.status === "ok") { clearNote(to); b.classList.add("sent"); }
      done();
    }, done);
  });
}
// The note went with a marker of strap `id`: cleared there (the field, or the note kept for
// it if another strap is shown by now).
function clearNote(id) { if (S.device === id) $("note").value = ""; else delete S.notes[id]; }
$("note-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = $("note").value.trim();
  if (!t) { say("Add note: the note is empty — type it first", "bad"); $("note").focus(); return; }
  const to = S.device;
  command("marker", { kind: "note", text: t }, "Add note", "note added").then((r) => { if (r && r.status === "ok") clearNote(to); });
});
$("device").addEventListener("change", (e) => setDevice(e.target.value, true));
// Fields that take typed text keep every key; other controls keep only the keys they use.
const TEXT_TYPES = new Set(["text", "search", "number", "email", "password", "tel", "url",
  "date", "datetime-local", "month", "week", "time"]);
function takesText(el) {
  if (el.isContentEditable || el.tagName === "TEXTAREA") return true;
  return el.tagName === "INPUT" && TEXT_TYPES.has(el.type);
}
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target instanceof Element ? e.target : null;
  if (t && takesText(t)) { if (e.key === "Escape") t.blur(); return; }
  // A select (the strap picker keeps the focus after a pick: arrow keys go on picking) uses
  // letters to jump to an option, not digits: marker keys work there. The pacer's checkbox
  // and rate slider use no letter or digit: every key works after them (markers stopped).
  if (t && t.closest("select") && !KEYS[e.key]) { if (e.key === "Escape") t.blur(); return; }
  if ($("confirm-end").open && !KEYS[e.key]) return;  // Escape answers it; markers still go
  const v = view();
  if (KEYS[e.key] && (v === "live" || v === "control")) {
    e.preventDefault();
    if (e.repeat) return;  // a held key auto-repeats: one marker
    document.querySelector(`.markers button[data-kind="${KEYS[e.key]}"]`).click();
  } else if (e.key === "n") { e.preventDefault(); if (v !== "control") go("/control"); $("note").focus(); }
  else if (e.key === "l") { go("/live"); }
});

/* ---- pair ---- */
// A table cell named for its column: on a narrow screen it is shown beside the value.
function cell(label, html) { return `<td role="cell" data-label="${label}">${html}</td>`; }
function renderPair() {
  if (view() !== "pair") return;
  const rows = S.devices.map((x) => {
    const d = x.device_id ? dev(x.device_id) : null;
    const fresh = d && beatCurrent(d);
    return `<tr role="row">${cell("name", escapeHtml(x.name || "–"))}${cell("address", escapeHtml(x.address || "–"))}` +
      `${cell("state", escapeHtml(x.state))}${cell("HR", fresh && d.hr ? d.hr + " bpm" : "–")}` +
      `${cell("contact", d && d.contact !== null ? (d.contact ? "yes" : "no") : "–")}` +
      `${cell("battery", x.battery_pct !== null ? x.battery_pct + " %" : "–")}</tr>`;
  }).join("");
  const body = $("own-straps");
  if (body.dataset.html !== rows) { body.innerHTML = rows || '<tr role="row"><td role="cell" colspan="6">none yet</td></tr>'; body.dataset.html = rows; }
}
$("scan").addEventListener("click", async () => {
  text("scan-state", "scanning…");
  $("scan").disabled = true;
  try {
    const r = await api("/api/scan?timeout=3", { method: "POST", headers: { "X-Settle": "1" } });
    const res = await r.json();
    if (!r.ok) { text("scan-state", res.error); return; }
    const rows = res.straps.map((s, i) => `<tr role="row">${cell("name", escapeHtml(s.name || "–"))}` +
      `${cell("address", escapeHtml(s.address))}${cell("signal", `${s.rssi} dBm`)}` +
      cell("remember as", `<input aria-label="label for ${escapeHtml(s.name || s.address)}" id="label-${i}" value="${escapeHtml(s.name || "strap")}" size="10"> ` +
        `<button type="button" data-i="${i}">Remember</button>`) + "</tr>").join("");
    $("scan-list").innerHTML = rows || '<tr role="row"><td role="cell" colspan="4">no strap advertising the Heart Rate Service (a connected strap does not advertise)</td></tr>';
    for (const b of $("scan-list").querySelectorAll("button")) {
      b.addEventListener("click", async () => {
        const s = res.straps[Number(b.dataset.i)];
        const label = $(`label-${b.dataset.i}`).value.trim();
        const pr = await api("/api/pair", { method: "POST", headers: { "Content-Type": "application/json", "X-Settle": "1" },
          body: JSON.stringify({ label, address: s.address, name: s.name, device_id: s.device_id }) });
        const body = await pr.json();
        text("scan-state", pr.ok ? [`remembered as “${label}”: settle run uses it`, ...body.replaced].join(" ") : body.error);
      });
    }
    text("scan-state", `${res.straps.length} found`);
  } catch { text("scan-state", "scan failed: the daemon did not answer"); }
  finally { $("scan").disabled = false; }
});

/* ---- history ---- */
function dur(s) { return s === null || s === undefined ? "–" : mmss(s); }
// The list comes at once; finished sessions the daemon has not analysed yet (all of them
// after a restart: ~30 ms each) come as "pending" and are asked for again until none is.
const HISTORY_POLL_MS = 1500;
const HISTORY_RETRY_MS = 5000;  // after a 503 (busy) or another server error
let historyTimer = null;
let historyLoad = 0;
async function loadHistory() {
  const parts = location.pathname.split("/").filter(Boolean);
  // A cut address (/history/%E0%A4%A) is no session, said in the frame (it threw a URIError).
  let detail = parts[1] || null;
  try { if (detail) detail = decodeURIComponent(detail); } catch { /* looked up as it is */ }
  const path = location.pathname;
  const load = ++historyLoad;
  clearTimeout(historyTimer);
  historyTimer = null;
  $("session-detail").hidden = !detail;
  $("session-list").hidden = !!detail;
  $("history-progress").hidden = !!detail;
  let r = null, res = null;
  try { r = await api("/api/sessions"); res = await r.json(); } catch { res = null; }
  // An answer for a view the user has left, or overtaken by a newer load, is dropped.
  if (load !== historyLoad || location.pathname !== path) return;
  if (!r || !r.ok || !res || !Array.isArray(res.sessions) || !Array.isArray(res.formats)) {
    // The server's one line (a 401 "token required…", a 503 "too many connections"); the
    // list shown stays. Busy or failing: asked again; refused (401/403): asking again will
    // not help, the page must be opened anew.
    const why = !r ? "the daemon did not answer" : (res && typeof res.error === "string" && res.error) ||
      `HTTP ${r.status}${r.statusText ? " " + r.statusText : ""}`;
    const again = !r || r.status >= 500 || r.status === 429;
    const msg = `Sessions could not be listed: ${why}${again ? " — asking again in a few seconds" : ""}`;
    historyNote(detail ? "" : msg);
    if (detail) $("detail-exports").textContent = msg;
    if (again) historyTimer = setTimeout(loadHistory, HISTORY_RETRY_MS);
    return;
  }
  // Finger-sized links, each named for its session (a screen reader heard "csv" five times
  // a row).
  const exports = (id, when) => `<span class="exports">Export: ${res.formats.map((f) =>
    `<a href="/sessions/${encodeURIComponent(id)}/export/${f}" class="export${f === "bids" ? " bids" : ""}"` +
    ` aria-label="${escapeHtml(`${f} export, session ${when}`)}" download>${f}</a>`).join(" ")}</span>`;
  const whenOf = (s) => new Date(s.started_ms).toLocaleString();
  // With several straps, each row names its strap (three sessions of a group practice
  // otherwise read as identical rows with the same start time).
  const several = new Set(res.sessions.map((s) => s.device_id)).size > 1;
  if (detail) {
    showReport(`/sessions/${encodeURIComponent(detail)}/report`, () => load === historyLoad && location.pathname === path);
    // As in the list: a running session's exports would be a part of it, given silently.
    const row = res.sessions.find((s) => s.id === detail);
    $("detail-exports").innerHTML = !row ? "" : row.state === "running"
      ? "Still running: the report covers it up to now; the exports are offered once it stops."
      : exports(detail, whenOf(row));
    return;
  }
  // sessions/report.py Verdict, in a sentence (`settle trends` words them as a table cell).
  const VERDICTS = { not_yet: "did not catch up", under_way: "was catching up at the end",
    too_short: "too short to tell", no_score: "no score" };
  // The latency counts from a reference ("caught up after 2:05" did not say from what).
  const caughtUp = (s) => {
    const has = (x) => x !== null && x !== undefined;
    if (!has(s.latency_s)) {
      const v = VERDICTS[s.catching_up] || "no catching up";
      return s.catching_up === "not_yet" && s.reference ? `${v} after ${s.reference}` : v;
    }
    // To the nearest second, as the report and `settle trends` (the clock time stays floored).
    return `caught up ${mmss(Math.round(s.latency_s))}${s.reference ? " after " + s.reference : ""}` +
      (has(s.caught_up_t_s) ? ` (at ${mmss(s.caught_up_t_s)})` : "");
  };
  const waiting = '<span class="pending" title="being analysed">…<span class="sr-only"> (being analysed)</span></span>';
  const items = res.sessions.map((s) => {
    const when = whenOf(s);
    const summary = s.state === "running" ? `running, ${dur(s.duration_s)} so far` :
      s.pending ? `${dur(s.duration_s)}; catching up ${waiting}; score change ${waiting}` :
      s.analysis_error ? `${dur(s.duration_s)}; could not be analysed: ${escapeHtml(s.analysis_error)}` :
      `${dur(s.duration_s)}; ${escapeHtml(caughtUp(s))}; ` +
      `score change ${s.score_change !== null && s.score_change !== undefined ? (s.score_change >= 0 ? "+" : "") + s.score_change.toFixed(1) : "–"}` +
      `${s.target && s.target !== "–" ? "; " + escapeHtml(s.target) : ""}${s.statement ? " “" + escapeHtml(s.statement) + "”" : ""}`;
    // By its name, as the Strap picker says it, when the daemon knows the strap.
    const strap = several && s.device_id ? ` <span class="strap">(${escapeHtml(strapName(s.device_id))})</span>` : "";
    return [s.id, `<a href="/history/${encodeURIComponent(s.id)}">${escapeHtml(when)}</a>${strap} — ${summary}` +
      (s.state === "running" ? "" : `<small>${exports(s.id, when)}</small>`)];
  });
  showSessions(items);
  const pending = res.pending || 0;
  historyNote(res.analysis_error ? `Could not analyse every session: ${res.analysis_error}` :
    pending ? `Analysing ${pending} of ${res.sessions.length} sessions…` : "", !!res.analysis_error);
  // After a failed analysis the server tries again at the next request: ask again, slower.
  if (pending) historyTimer = setTimeout(loadHistory, res.analysis_error ? HISTORY_RETRY_MS : HISTORY_POLL_MS);
}
// The report, fetched with the token in its header, shown in the frame from a blob: address
// (the same origin's, so it is the page's CSP that applies; a fragment link in it stays in
// it). A refusal is shown as a sentence there, as the server says a missing session.
let reportShown = null;  // the blob: address in the frame
async function showReport(path, current) {
  const frame = $("report");
  if (reportShown) { frame.src = "about:blank"; URL.revokeObjectURL(reportShown); reportShown = null; }
  const sentence = (why) => '<!doctype html><meta charset="utf-8"><title>No report</title>' +
    `<p style="font: 16px system-ui, sans-serif">${escapeHtml(why)}</p>`;
  let page;
  try {
    const r = await api(path);
    if ((r.headers.get("Content-Type") || "").startsWith("text/html")) page = await r.text();
    else {
      const res = await r.json().catch(() => null);
      page = sentence((res && typeof res.error === "string" && res.error) || `HTTP ${r.status}`);
    }
  } catch { page = sentence("The report could not be fetched: the daemon did not answer."); }
  if (!current()) return;  // the user has gone on meanwhile
  if (reportShown) URL.revokeObjectURL(reportShown);
  reportShown = URL.createObjectURL(new Blob([page], { type: "text/html;charset=utf-8" }));
  frame.src = reportShown;
}
function historyNote(msg, bad) {
  text("history-progress", msg);
  $("history-progress").classList.toggle("why", bad === undefined ? !!msg : bad);
}
// Rows are replaced only where they changed: a poll must not take the focus (or the
// screen reader's place) from a link the user is on.
function showSessions(items) {
  const list = $("session-list");
  if (!items.length) { list.innerHTML = "<p>No sessions yet.</p>"; return; }
  const ul = list.querySelector("ul.sessions");
  const same = ul && ul.children.length === items.length &&
    items.every(([id], i) => ul.children[i].dataset.session === id);
  if (!same) {
    list.innerHTML = `<ul class="sessions">${items.map(([id, html]) => `<li data-session="${escapeHtml(id)}">${html}</li>`).join("")}</ul>`;
    items.forEach(([, html], i) => { list.querySelector("ul.sessions").children[i].settleHtml = html; });
    return;
  }
  items.forEach(([, html], i) => {
    const li = ul.children[i];
    if (li.settleHtml !== html) { li.innerHTML = html; li.settleHtml = html; }
  });
}

// A bids download carries the subject typed above, checked as the server does
// (sessions/export_bids.py bids_label): "anna-1" or "Änne" made the download fail silently.
function subjectProblem(v) {
  if (/^[A-Za-z0-9]+$/.test(v)) return "";
  const rest = v.slice(4);
  const hint = v.toLowerCase().startsWith("sub-") && /^[A-Za-z0-9]+$/.test(rest) ? ` (give it without “sub-”: ${rest})` : "";
  return `BIDS subject “${v}”: letters A–Z and digits only, no dashes, spaces or accents${hint}`;
}
$("bids-subject").addEventListener("input", (e) => {
  const bad = subjectProblem(e.target.value.trim() || "01");
  if (bad) e.target.setAttribute("aria-invalid", "true"); else e.target.removeAttribute("aria-invalid");
  text("bids-why", bad);
});
document.addEventListener("click", (ev) => {
  const a = ev.target instanceof Element ? ev.target.closest("a.export") : null;
  if (!a) return;
  const url = new URL(a.getAttribute("href"), location.href);
  if (a.classList.contains("bids")) {
    const subject = $("bids-subject").value.trim() || "01";
    const bad = subjectProblem(subject);
    if (bad) { ev.preventDefault(); say(`${bad} — not downloaded`, "bad"); $("bids-subject").focus(); return; }
    url.searchParams.set("subject", subject);
  }
  ev.preventDefault();
  download(url.pathname + url.search, `${a.textContent} export`);
});
// A download is fetched here, the token in its header, and handed to the browser as a blob:
// address under the server's file name: with ?token= in its address the browser kept the
// token in its list of downloads. A refusal is said in the status line (the browser's own
// download of a 404 failed without a word why).
async function download(path, what) {
  say(`${what}: being made…`);
  let r = null;
  try { r = await api(path); } catch { /* said below */ }
  if (!r || !r.ok) {
    const res = r ? await r.json().catch(() => null) : null;
    const why = !r ? "the daemon did not answer" : (res && typeof res.error === "string" && res.error) || `HTTP ${r.status}`;
    say(`${what}: ${why} — not downloaded`, "bad");
    return;
  }
  let blob;
  try { blob = await r.blob(); } catch { say(`${what}: cut off — not downloaded`, "bad"); return; }
  const name = /filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "");
  const once = document.createElement("a");
  once.href = URL.createObjectURL(blob);
  once.download = name ? name[1] : "";
  document.body.appendChild(once);
  once.click();
  once.remove();
  say(`${what} downloaded`, "ok");
  // Kept a while: the browser reads a blob: download after the click returns.
  setTimeout(() => URL.revokeObjectURL(once.href), 60_000);
}

/* ---- start ---- */
window.__settle = S;  // read by the browser tests (and handy in the developer console)
makeCharts();
route();
// A page that names no strap (nothing picked in this browser, no ?device=) asks the daemon
// for its straps first (`starting`), so that its stream names the one it shows (the
// first): it got every strap's backlog.
async function start() {
  if (starting) {
    const st = await api("/api/state", {}, RETRY_MS).catch(() => null);
    const h = st && st.ok ? await st.json().catch(() => null) : null;
    if (h && Array.isArray(h.devices) && !es) takeState(h);
  }
  starting = false;  // (after takeState: its render said "No word from the Settle daemon")
  if (es) return;  // opened meanwhile (the tab was hidden and shown again)
  if (tabShown()) connect(); else paused = true;  // opened in the background: when shown
}
start();
setInterval(render, 250);  // also when nothing arrives: staleness is news too
