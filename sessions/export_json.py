"""Export one session as one JSON document with a manifest, so results are reproducible.

Layout (UTF-8, one JSON object)::

    {
      "manifest": {...},          # ExportManifest: versions, parameters, units, time base
      "session":  {...},          # id, device_id, started_ms, stopped_ms, state, source,
                                  # meta, intention, baseline, tags, notes
      "beats":    [{seq, beat_t_s, recv_ts_ms, rr_ms, rr_raw, hr_bpm, contact,
                    rr_corrected_ms, beat_class, timing_uncertain}, ...],
      "indices":  [{t_s, ts_ms, hr_bpm, rmssd_ms, ln_rmssd, sdnn_ms, pnn50_pct, settling,
                    payload}, ...],   # payload: the indices message exactly as published
      "markers":  [{id, t_s, ts_ms, kind, text, source}, ...],
      "gaps":     [{id, start_t_s, end_t_s, reason}, ...],
      "ecg_beats": [{seq, beat_t_s, rr_ms, rr_corrected_ms, beat_class}, ...],
                                  # R peaks of the raw ECG (empty without ECG); rr_ms null
                                  # for the first peak after the stream (re)started
      "ecg":      {"t_ns": [...], "uv": [...]} | null
    }

Floats are written with the shortest repr that parses back to the same double, so the
document round-trips exactly (:func:`read_export_json`). Field names carry their units.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any, Literal, cast

from pydantic import BaseModel, ConfigDict

from sessions.files import ExportError, ProgressFn, atomic_file, target_file
from sessions.store import (
    SCHEMA_VERSION,
    BaselinePeriod,
    BeatRow,
    EcgBeatRow,
    EcgSeries,
    GapRow,
    IndicesRow,
    Intention,
    MarkerRow,
    SessionInfo,
    SessionRecord,
    SessionState,
    SessionStore,
)

__all__ = ["ExportManifest", "export_json", "read_export_json"]

#: Version of this document layout; fields are added, never repurposed.
JSON_EXPORT_VERSION = 1


def package_version(name: str) -> str:
    """Installed version of distribution ``name``, or ``"unknown"``."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


class ExportManifest(BaseModel):
    """What produced an export and with which parameters (JSON ``"manifest"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = JSON_EXPORT_VERSION
    format: Literal["settle-session"] = "settle-session"
    exported_ms: int
    """Epoch milliseconds of the export."""
    settle_version: str
    store_schema_version: int
    python: str
    libraries: dict[str, str]
    """Versions of the numerical libraries the indices depend on."""
    recording: dict[str, Any]
    """The session's stored meta: strap, processing settings at recording time
    (``window_s``, ``baseline_s`` …), as the daemon recorded them."""
    indices_payload_versions: list[int]
    """Distinct ``v`` (schema version) of the stored indices payloads."""
    time_base: str = (
        "t_s, beat_t_s, start_t_s, end_t_s: seconds since session start (started_ms); "
        "*_ms: epoch milliseconds UTC; t_ns: nanoseconds since session start"
    )
    units: dict[str, str] = {
        "rr_ms": "ms",
        "rr_corrected_ms": "ms",
        "rr_raw": "1/1024 s",
        "hr_bpm": "beats/min",
        "rmssd_ms": "ms",
        "sdnn_ms": "ms",
        "ln_rmssd": "ln(ms)",
        "pnn50_pct": "%",
        "settling": "0-100, 50 = as at baseline",
        "uv": "µV",
    }


def _manifest(rec: SessionRecord) -> ExportManifest:
    versions = set()
    for r in rec.indices:
        v = json.loads(r.payload_json).get("v")
        if isinstance(v, int):
            versions.add(v)
    return ExportManifest(
        exported_ms=int(time.time() * 1000),
        settle_version=package_version("settle-hrv"),
        store_schema_version=SCHEMA_VERSION,
        python=platform.python_version(),
        libraries={n: package_version(n) for n in ("numpy", "scipy")},
        recording=dict(rec.info.meta),
        indices_payload_versions=sorted(versions),
    )


def _session_obj(info: SessionInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "device_id": info.device_id,
        "started_ms": info.started_ms,
        "stopped_ms": info.stopped_ms,
        "state": info.state.value,
        "source": info.source,
        "meta": dict(info.meta),
        "intention": None
        if info.intention is None
        else {
            "target": info.intention.target.value,
            "statement": info.intention.statement,
            "practice": info.intention.practice,
        },
        "baseline": None
        if info.baseline is None
        else {"start_t_s": info.baseline.start_t_s, "stop_t_s": info.baseline.stop_t_s},
        "tags": list(info.tags),
        "notes": info.notes,
    }


def _beat_obj(b: BeatRow | EcgBeatRow) -> dict[str, Any]:
    d = dataclasses.asdict(b)
    d["beat_class"] = None if b.beat_class is None else b.beat_class.value
    return d


def _indices_obj(r: IndicesRow) -> dict[str, Any]:
    d = dataclasses.asdict(r)
    d["payload"] = json.loads(d.pop("payload_json"))
    return d


def document(rec: SessionRecord, ecg: EcgSeries | None) -> dict[str, Any]:
    """The export document as a JSON-ready dict (see the module docstring)."""
    return {
        "manifest": _manifest(rec).model_dump(mode="json"),
        "session": _session_obj(rec.info),
        "beats": [_beat_obj(b) for b in rec.beats],
        "indices": [_indices_obj(r) for r in rec.indices],
        "markers": [
            {
                "id": m.id,
                "t_s": m.t_s,
                "ts_ms": m.ts_ms,
                "kind": m.kind,
                "text": m.text,
                "source": m.source.value,
            }
            for m in rec.markers
        ],
        "gaps": [dataclasses.asdict(g) for g in rec.gaps],
        "ecg_beats": [_beat_obj(b) for b in rec.ecg_beats],
        "ecg": None
        if ecg is None or len(ecg) == 0
        else {"t_ns": ecg.t_ns.tolist(), "uv": ecg.uv.tolist()},
    }


def export_json(
    store: SessionStore,
    session_id: str,
    out: Path,
    *,
    progress: ProgressFn | None = None,
    replace: bool = True,
) -> Path:
    """Write session ``session_id`` as JSON to ``out`` (a ``.json`` file, or a directory
    for ``settle-<id>.json``); return the path written. Raises :class:`ExportError`."""
    target = target_file(Path(out), f"settle-{session_id}.json", (".json",))
    rec = store.read_session(session_id)
    ecg = store.ecg(session_id) if rec.n_ecg else None
    doc = document(rec, ecg)
    if progress is not None:
        progress(0, 1)
    with atomic_file(target, replace=replace) as fh:
        json.dump(doc, cast(IO[str], fh), ensure_ascii=False, allow_nan=False, indent=1)
        cast(IO[str], fh).write("\n")
    if progress is not None:
        progress(1, 1)
    return target


def read_export_json(path: Path) -> tuple[ExportManifest, SessionRecord, EcgSeries | None]:
    """Parse a file written by :func:`export_json` back into typed objects."""
    import numpy as np

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        manifest = ExportManifest.model_validate(doc["manifest"])
        s = doc["session"]
        intention = s["intention"]
        baseline = s["baseline"]
        info = SessionInfo(
            id=s["id"],
            device_id=s["device_id"],
            started_ms=s["started_ms"],
            stopped_ms=s["stopped_ms"],
            state=SessionState(s["state"]),
            source=s["source"],
            meta=s["meta"],
            intention=None if intention is None else Intention(**intention),
            baseline=None if baseline is None else BaselinePeriod(**baseline),
            tags=tuple(s["tags"]),
            notes=s["notes"],
        )
        beats = [BeatRow(**b) for b in doc["beats"]]
        indices = []
        for r in doc["indices"]:
            r = dict(r)
            r["payload_json"] = json.dumps(r.pop("payload"))
            indices.append(IndicesRow(**r))
        markers = [MarkerRow(**m) for m in doc["markers"]]
        gaps = [GapRow(**g) for g in doc["gaps"]]
        # Exports written before ECG-derived beats were stored have no such key.
        ecg_beats = [EcgBeatRow(**b) for b in doc.get("ecg_beats", [])]
        e = doc["ecg"]
        ecg = (
            None
            if e is None
            else EcgSeries(np.asarray(e["t_ns"], dtype=np.int64), np.asarray(e["uv"], np.int32))
        )
    except OSError as exc:
        raise ExportError(path, f"cannot read export: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(path, f"not a Settle JSON export: {exc}") from exc
    rec = SessionRecord(
        info, beats, indices, markers, gaps, 0 if ecg is None else len(ecg), ecg_beats
    )
    return manifest, rec, ecg
