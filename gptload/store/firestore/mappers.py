"""Firestore documents <-> gptload models (see ``docs/firestore.md`` for every field). No I/O."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from gptload.models import ACTIVE, ANONYMOUS, DISABLED, INVALID, LOG_FIELDS, CoolDown, Group, KeyRecord, KeyState

LOG_DOC_FIELDS = LOG_FIELDS  # log_row() field names, stored as is (``key`` is the masked key)


def group_doc(group: Group) -> dict[str, Any]:
    data = group.to_dict()
    # Any JSON object may be an override (arrays of arrays, "__x__" or empty names, which Firestore refuses in a map):
    # stored as JSON text.
    data["param_overrides"] = json.dumps(data["param_overrides"], separators=(",", ":"))
    return {"name": group.name, "sort": group.sort, "data": data}


def to_group(snap: Any) -> Group:
    data = dict(snap.get("data"))
    data["name"] = snap.id
    if isinstance(data.get("param_overrides"), str):
        data["param_overrides"] = json.loads(data["param_overrides"])
    return Group.from_dict(data)


def key_doc(record: KeyRecord, secret: bytes | None) -> dict[str, Any]:
    return {
        "id": record.id,
        "masked": record.masked,
        "created_at": record.created_at,
        "notes": record.notes,
        "secret": secret,
        **state_fields(record.state),
    }


def state_fields(state: KeyState) -> dict[str, Any]:
    return {
        "status": state.status,
        "cooldowns": [
            {"model": c.model, "until": c.until, "reason": c.reason, **({"daily": True} if c.daily else {})}
            for c in state.cooldowns
        ],
        "failure_count": state.failure_count,
        "last_error": state.last_error,
        "last_error_at": state.last_error_at,
        # what restore_keys(None) looks for, kept beside the state so one equality query finds it
        "restorable": state.status == INVALID or bool(state.cooldowns),
    }


def to_record(group: str, snap: Any, usage: dict[str, Any] | None) -> KeyRecord:
    """A key document plus its entry of the group's usage map (``n`` requests, ``f`` failures, ``at`` last use,
    ``tok`` tokens). Key documents written by older versions may carry their own counters; they are added."""
    d = snap.to_dict() or {}
    u = usage or {}
    status = d.get("status", ACTIVE)
    state = KeyState(
        status=status if status in (ACTIVE, INVALID, DISABLED) else ACTIVE,
        cooldowns=tuple(
            CoolDown(c["model"], float(c["until"]), c.get("reason", ""), bool(c.get("daily", False)))
            for c in d.get("cooldowns") or ()
        ),
        failure_count=int(d.get("failure_count", 0)),
        last_error=d.get("last_error", ""),
        last_error_at=float(d.get("last_error_at") or 0.0),
    )
    return KeyRecord(
        id=snap.id,
        group=group,
        masked=d.get("masked", ""),
        state=state,
        request_count=int(d.get("request_count", 0)) + int(u.get("n") or 0),
        failure_total=int(d.get("failure_total", 0)) + int(u.get("f") or 0),
        last_used_at=max(float(d.get("last_used_at", 0.0)), float(u.get("at") or 0.0)),
        created_at=float(d.get("created_at", 0.0)),
        notes=d.get("notes", ""),
        total_tokens=int(u.get("tok") or 0),
        validated_at=float(d.get("validated_at") or 0.0),
        validation=d.get("validation") or "",
    )


KEY_VIEW_FIELDS = (
    "masked",
    "created_at",
    "notes",
    "status",
    "cooldowns",
    "failure_count",
    "last_error",
    "last_error_at",
    "request_count",
    "failure_total",
    "last_used_at",
    "validated_at",
    "validation",
)  # a key document without its ciphertext: what the admin key list reads


def with_usage(record: KeyRecord, usage: dict[str, Any] | None) -> KeyRecord:
    """``record`` (read with no usage entry) plus its entry of the group's usage map, as ``to_record`` adds it."""
    u = usage or {}
    return replace(
        record,
        request_count=record.request_count + int(u.get("n") or 0),
        failure_total=record.failure_total + int(u.get("f") or 0),
        last_used_at=max(record.last_used_at, float(u.get("at") or 0.0)),
        total_tokens=int(u.get("tok") or 0),
    )


def to_log(snap: Any) -> dict[str, Any]:
    out = log_view(snap.to_dict() or {})
    out["id"] = snap.id
    return out


def log_view(d: dict[str, Any]) -> dict[str, Any]:
    """The ``LOG_FIELDS`` of a stored log row (a document or a log-page row), defaults for older rows applied."""
    out = {f: d.get(f) for f in LOG_FIELDS}
    out["requested_model"] = out["requested_model"] or out["model"]  # rows written before redirects existed
    out["aggregate"] = out.get("aggregate") or ""  # rows written before aggregates existed have none
    out["access_key"] = out.get("access_key") or ANONYMOUS  # rows written before access keys existed
    return out


def timestamp(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def doc_id(name: str) -> str:
    """A document id from a group name ([a-z0-9_-] today: unchanged) or anything else (percent-encoded)."""
    return quote(name, safe="")
