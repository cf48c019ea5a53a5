"""MQTT payloads: pydantic models, one per topic. ``v`` is the schema version of each payload;
fields are added, never repurposed. Times: ``ts`` epoch milliseconds; ``*_s`` seconds since the
session started (the session's one time base).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = SCHEMA_VERSION
    ts: int
    """Epoch milliseconds when the message was produced."""

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class BeatPayload(_Payload):
    """``<base>/<dev>/beat`` — every notification from the strap, QoS 0, not retained."""

    seq: int
    """Per-device message counter (gaps show messages lost between daemon and subscriber)."""
    hr: int
    """Heart rate as sent by the strap, beats/min."""
    rr_ms: list[float]
    """RR intervals carried by this notification, ms, oldest first (wire 1/1024 s, exact)."""
    beat_t_s: list[float] = Field(default_factory=list)
    """Beat time of each RR, seconds since session start."""
    contact: bool | None
    """Skin contact, or null when the strap cannot tell (e.g. Polar H10)."""
    session: str | None


class IndicesPayload(_Payload):
    """``<base>/<dev>/indices`` — every ``indices_every_s`` seconds of beat time, QoS 1."""

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
    settling_state: Literal["baseline", "running", "unavailable"]
    components: dict[str, float | None] = Field(default_factory=dict)
    """Each component of the settling score in baseline-spread units (docs/indices.md)."""


class SessionPayload(_Payload):
    """``<base>/<dev>/session`` — retained: the current (or last) session of this device."""

    id: str
    state: Literal["running", "stopped", "interrupted"]
    device: str
    started_ts: int
    stopped_ts: int | None = None
    baseline: Literal["pending", "complete"] = "pending"
    n_beats: int = 0


class MarkerCommand(BaseModel):
    """``<base>/<dev>/cmd/marker`` — add a marker to the running session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    id: str = Field(min_length=1, max_length=64)
    kind: Literal[
        "hold-start",
        "hold-lapse",
        "hold-resume",
        "shame",
        "threat",
        "discomfort",
        "attention",
        "doubt",
        "note",
    ] = "note"
    text: str = Field("", max_length=2000)


class CommandResult(_Payload):
    """``<base>/<dev>/cmd/<name>/result`` — echo of the command's id with its outcome."""

    id: str | None
    status: Literal["ok", "error"]
    error: str | None = None


class EventPayload(_Payload):
    """``<base>/<dev>/event`` — markers and other session events, QoS 1."""

    session: str
    kind: str
    t_s: float
    text: str = ""
    source: str = ""
