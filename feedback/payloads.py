"""MQTT payloads: pydantic models, one per topic (the contract in docs/asyncapi.yaml is
generated from these). ``v`` is the schema version of each payload; fields are added, never
repurposed. Times: ``ts`` epoch milliseconds; ``*_s`` seconds since the session started (the
session's one time base). Streams (``beat``, ``indices``, ``event``) carry a per-device ``seq``
so a subscriber can count what it missed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from settle.text import control_character

SCHEMA_VERSION = 1

ConnectionState = Literal["scanning", "connecting", "streaming", "backoff", "stopped"]
MarkerKind = Literal[
    "hold-start",
    "hold-lapse",
    "hold-resume",
    "shame",
    "threat",
    "discomfort",
    "attention",
    "doubt",
    "note",
]
MARKER_KINDS: tuple[str, ...] = MarkerKind.__args__  # type: ignore[attr-defined]
EVENT_KINDS: tuple[str, ...] = (
    "session-start",
    "session-stop",
    "baseline-start",
    "baseline-complete",
    "baseline-too-short",
    "disconnected",
    "reconnected",
    "gap",
    "unusable-rhythm",
    "rhythm-usable",
    "catching-up",
    "rr-source",
    "clock",
    "ecg-stopped",
    "no-rr",
)
"""Event kinds besides the marker kinds (each is explained in docs/mqtt.md)."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = SCHEMA_VERSION
    ts: int
    """Epoch milliseconds when the message was produced."""

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


STATEMENT_MAX_CHARS = 500
PRACTICE_MAX_CHARS = 100


def _no_control(v: str, *, lines: bool) -> str:
    # settle.text's rule, which journal import and ``settle log set`` hold text to as well.
    bad = control_character(v, lines=lines)
    if bad is not None:
        allowed = " (tab and line breaks are)" if lines else ""
        raise ValueError(f"control character {bad!r} not allowed{allowed}")
    return v


class Intention(BaseModel):
    """What the practitioner holds during a session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field("free", min_length=1, max_length=64)
    """Target model: ``self``, ``future``, ``relational``, or free text."""
    statement: str = Field("", max_length=STATEMENT_MAX_CHARS)
    """The statement being held, e.g. "I am safe"."""
    practice: str = Field("", max_length=PRACTICE_MAX_CHARS)
    """Practice kind, e.g. "loving-kindness", "breathing"."""

    @field_validator("target", "statement", "practice")
    @classmethod
    def _one_line(cls, v: str) -> str:
        return _no_control(v, lines=False)


class BridgeInfoPayload(_Payload):
    """``<base>/bridge/info`` — retained: what this daemon is and serves (no secrets)."""

    version: str
    broker: Literal["embedded", "external"]
    devices: list[str]
    config: dict[str, float | int | str | bool]
    client_id: str | None = None
    """The daemon's MQTT client id (``settle-<host>-<pid>`` unless ``mqtt.client_id`` sets
    one): which daemon wrote this, when two run on one broker and topic base."""


class StatusPayload(_Payload):
    """``<base>/<dev>/status`` — retained: connection state and what the strap reports."""

    state: ConnectionState
    address: str | None = None
    name: str | None = None
    model: str | None = None
    manufacturer: str | None = None
    firmware: str | None = None
    battery_pct: int | None = None
    contact: bool | None = None
    rssi: int | None = None
    """Signal strength (dBm) of the advertisement the strap was found by, read once per
    connection (null when the adapter did not report it)."""
    reconnects: int = 0
    malformed: int = 0
    """0x2A37 notifications that could not be decoded (dropped)."""
    overflowed: int = 0
    """Notifications dropped because processing fell behind."""
    stray_bytes: int = 0
    """0x2A37 notifications with one stray byte after their last whole field, since the
    daemon started: decoded without it (heart rate and whole RR intervals kept, nothing
    dropped); a strap that keeps sending them has a firmware or link fault."""
    ecg_dropped: int = 0
    """Raw ECG (Polar PMD) frames of this strap dropped since the daemon started: malformed,
    repeated, or pushed out because processing fell behind (0 for a strap without raw ECG)."""
    mqtt_dropped: int = 0
    """This strap's live MQTT messages (its topics) dropped from the full queue while the
    broker was away, since the daemon started."""
    last_error: str | None = None


class ClassifiedBeat(BaseModel):
    """One beat after artefact classification (the raw RR stays in the session store)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )

    beat_t_s: float
    cls: Literal[
        "normal", "ectopic", "long", "short", "missed", "extra", "implausible", "warmup"
    ] = Field(alias="class")
    rr_ms: float | None
    """Corrected RR, ms; null for a beat merged away (``extra``) or never analysed."""


class BeatPayload(_Payload):
    """``<base>/<dev>/beat`` — every notification from the strap, QoS 0, not retained."""

    seq: int
    """Per-device message counter (gaps show messages lost between daemon and subscriber)."""
    hr: int
    """Heart rate as sent by the strap, beats/min."""
    rr_ms: list[float]
    """RR intervals carried by this notification, ms, oldest first (wire 1/1024 s, exact)."""
    beat_t_s: list[float] = Field(default_factory=list)
    """Beat time of each RR, seconds since session start (empty outside a session)."""
    classified: list[ClassifiedBeat] = Field(default_factory=list)
    """Beats whose artefact class became final with this notification (a beat is final
    3 beats after it arrived: the correction looks ahead). At a session's end one more
    message, with empty ``rr_ms`` and ``beat_t_s`` and the last ``hr``, carries the classes
    of the beats that were still waiting."""
    contact: bool | None
    """Skin contact, or null when the strap cannot tell (e.g. Polar H10)."""
    session: str | None


class EcgBeatPayload(_Payload):
    """``<base>/<dev>/ecg_beat`` — a beat detected in the Polar H10 raw ECG (QoS 0): timed on
    the strap's ECG clock with sample resolution, about ¼ s sooner than the 0x2A37 RR."""

    seq: int
    session: str | None
    t_s: float
    """R-peak time, seconds since session start."""
    rr_ms: float | None
    plausible: bool
    """False during the detector's warm-up or for RR outside 273–2000 ms."""


class IndicesPayload(_Payload):
    """``<base>/<dev>/indices`` — every ``indices_every_s`` seconds of beat time, QoS 1."""

    seq: int = 0
    session: str
    t_s: float
    window_s: float
    n: int
    """Beats in the window."""
    hr_bpm: float | None
    rmssd_ms: float | None
    ln_rmssd: float | None
    sdnn_ms: float | None
    pnn50_pct: float | None
    settling: float | None
    """Settling score 0–100 (50 = as at baseline); null during the baseline."""
    settling_state: Literal["baseline", "running"]
    """``baseline``: the baseline is being collected (``settling`` is null); ``running``: the
    score is computed against it (null while ``usable`` is false)."""
    components: dict[str, float | None] = Field(default_factory=dict)
    """Each component of the settling score in baseline-spread units (docs/indices.md):
    ``z_hr`` (HR below baseline), ``z_ln_rmssd`` (lnRMSSD above), ``z_slow`` (slow 0.04–0.15 Hz
    power above)."""
    coherence: float | None = None
    """McCraty coherence ratio of the last 64 s."""
    resp_rate_bpm: float | None = None
    """Respiration rate from the RSA peak, breaths/min."""
    lf_ms2: float | None = None
    hf_ms2: float | None = None
    lf_hf: float | None = None
    lf64_ms2: float | None = None
    """LF power (0.04–0.15 Hz) of the 64 s coherence window, ms²: what ``z_slow`` compares
    with the baseline (a report re-scores a session against a baseline set afterwards from
    this, ``hr_bpm`` and ``ln_rmssd``)."""
    trend: Literal["settling", "steady", "unsettling", "unknown"] = "unknown"
    """Trend of the settling score over the last 5 min, from its 30 s means (Theil–Sen +
    Mann–Kendall); ``unknown`` (with a null slope, CI and confidence) until there are 6 of
    them (150–180 s of scores; fewer can never be significant)."""
    trend_slope_per_min: float | None = None
    """Theil–Sen slope of the 30 s means of the score, points per minute."""
    trend_slope_ci_low_per_min: float | None = None
    """Lower bound of the slope's 95 % confidence interval (Sen 1968), points per minute."""
    trend_slope_ci_high_per_min: float | None = None
    """Upper bound of the slope's 95 % confidence interval, points per minute."""
    trend_confidence: float | None = None
    """1 − p of the trend test, 0..1."""
    quality: float | None = None
    """Signal quality 0–1 (share of uncorrected beats, coverage, contact)."""
    usable: bool = True
    """False when the rhythm is not sinus enough to interpret: then do not read the score."""
    reason: str | None = None
    """Why the rhythm is not usable."""
    warming_up: bool = False
    """Not usable only because too few beats arrived yet (the first seconds of a session or
    after a reconnect): a wait, not an unusable rhythm; no ``unusable-rhythm`` event."""
    catching_up_t_s: float | None = None
    """When physiology caught up (session time, s); null until detected."""
    responses_by_kind: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    """Per marker kind: ``n`` (markers whose response was read: not one whose 30 s the fast HR
    covered less than 2/3 of, e.g. in a gap, nor one with the rhythm too irregular to read
    then; 0 if none was), mean ``peak_d_hr_bpm`` (largest signed change of the 5 s HR from
    baseline within 30 s after the marker), ``peak_d_ln_rmssd`` (lnRMSSD of those 30 s less
    baseline), ``recovery_s`` (s from the marker until HR, after that peak, is back within
    its baseline mean ± spread; 0 if the peak stayed within 2 spreads: it did not clearly
    leave)."""


class SessionPayload(_Payload):
    """``<base>/<dev>/session`` — retained: the current (or last) session of this device."""

    id: str
    state: Literal["running", "stopped", "interrupted"]
    """``interrupted``: the daemon ended without closing the session (killed, crashed); its
    next start says so (``stopped_ts``: the session's last stored beat)."""
    device: str
    started_ts: int
    stopped_ts: int | None = None
    intention: Intention | None = None
    baseline: Literal["pending", "collecting", "complete"] = "pending"
    """``pending``: the first N minutes will be the baseline; ``collecting``: a marked rest
    period is being recorded; ``complete``: indices are scored against it."""
    catching_up_t_s: float | None = None
    """When physiology caught up (session time, s); null until detected."""
    n_beats: int = 0


class EventPayload(_Payload):
    """``<base>/<dev>/event`` — markers and other session events, QoS 1."""

    seq: int = 0
    session: str | None
    kind: str = Field(
        description="A marker kind ("
        + ", ".join(MARKER_KINDS)
        + ") or a session event: "
        + ", ".join(EVENT_KINDS)
        + " (docs/mqtt.md). Subscribers should ignore kinds they do not know."
    )
    """A marker kind, or one of :data:`EVENT_KINDS` (``rr-source``: which RR now drives the
    indices, the strap's or the raw ECG's)."""
    t_s: float
    text: str = ""
    source: str = ""


class CommandResult(_Payload):
    """``<base>/<dev>/cmd/<name>/result`` — echo of the command's id with its outcome."""

    id: str | None = Field(
        description="The command's id as sent (at most 64 characters); a number sent as id is "
        'refused and echoed as its JSON text (42 → "42"); null when none could be read, or '
        "when the command gave its id twice (which one would it answer?)."
    )
    status: Literal["ok", "error"]
    error: str | None = None
    stored: bool | None = Field(
        None,
        description="For a command that records something, answered ok (marker, session/start, "
        "session/stop, baseline/stop): whether it is in the session store file when answered. "
        "false: not yet — the store is failing or slow (a full disk, another program's write "
        "lock; the daemon's log says which); the daemon keeps it in memory and writes it as "
        "soon as the store takes writes again (a marker still not stored when the daemon stops "
        "goes to the session's rescue file). null for the other commands and for errors.",
    )


# -- commands (received) -----------------------------------------------------------------


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(
        1,
        description="Schema version: 1, the default when left out (1.0 is the same JSON number, "
        'as JSON Schema reads integer; true and "1" are refused).',
    )
    id: str = Field(
        min_length=1,
        max_length=64,
        description="Chosen by the sender, a string (not a number); echoed in the result.",
    )
    """Chosen by the sender; echoed in the result."""

    @field_validator("id")
    @classmethod
    def _id_is_one_line(cls, v: str) -> str:
        return _no_control(v, lines=False)

    @field_validator("v", mode="before")
    @classmethod
    def _v_is_a_number(cls, v: object) -> object:
        if isinstance(v, bool):  # JSON true would otherwise pass as 1
            raise ValueError("schema version must be the number 1, not a boolean")
        return v


class MarkerCommand(_Command):
    """``<base>/<dev>/cmd/marker`` — add a marker to the running session."""

    kind: MarkerKind = "note"
    text: str = Field("", max_length=2000)

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return _no_control(v, lines=True)


class SessionStartCommand(_Command):
    """``<base>/<dev>/cmd/session/start`` — close the running session (if any), start a new one."""

    intention: Intention = Field(default_factory=Intention)


class SessionStopCommand(_Command):
    """``<base>/<dev>/cmd/session/stop`` — close the running session."""


class BaselineCommand(_Command):
    """``<base>/<dev>/cmd/baseline/start`` and ``…/baseline/stop`` — mark a rest period to use
    as the baseline instead of the first minutes."""


COMMANDS: dict[str, type[_Command]] = {
    "marker": MarkerCommand,
    "session/start": SessionStartCommand,
    "session/stop": SessionStopCommand,
    "baseline/start": BaselineCommand,
    "baseline/stop": BaselineCommand,
}
