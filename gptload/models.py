"""Plain dataclasses shared by every layer. No I/O, no SDK imports.

Times are Unix epoch seconds (float) throughout; adapters convert at their boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

ACTIVE = "active"
COOLING = "cooling"
INVALID = "invalid"
DISABLED = "disabled"  # set and cleared by an admin only (see keypool.state.disabled / enabled)
KEY_STATUSES = (ACTIVE, COOLING, INVALID, DISABLED)
ANY_MODEL = "*"
STANDARD = "standard"
AGGREGATE = "aggregate"
GROUP_TYPES = (STANDARD, AGGREGATE)


@dataclass(frozen=True)
class Upstream:
    url: str
    weight: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "weight": self.weight}


@dataclass(frozen=True)
class SubGroup:
    """A member of an aggregate group: a standard group's name and its weight (0..1000, 0 = paused)."""

    name: str
    weight: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight}


@dataclass(frozen=True)
class Group:
    """A named pool of real keys behind ``/proxy/{name}/...``."""

    name: str
    upstreams: tuple[Upstream, ...]
    display_name: str = ""
    description: str = ""
    proxy_keys: tuple[str, ...] = ()
    test_model: str = "gemini-2.5-flash"
    settings: dict[str, Any] = field(default_factory=dict)
    sort: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    # Per-group request rules (gptload/proxy/group_rules.py applies them; admin.py validates them):
    model_redirect_rules: dict[str, str] = field(default_factory=dict)  # requested model -> model sent upstream
    model_redirect_strict: bool = False  # refuse (404) every model that is not a redirect source
    param_overrides: dict[str, Any] = field(default_factory=dict)  # deep-merged into JSON bodies of model calls
    header_rules: tuple[dict[str, str], ...] = ()  # [{"key", "value", "action": "set" | "remove"}]
    group_type: str = STANDARD  # AGGREGATE: no keys, no upstreams; requests go to ``sub_groups``
    sub_groups: tuple[SubGroup, ...] = ()

    @property
    def is_aggregate(self) -> bool:
        return self.group_type == AGGREGATE

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "upstreams": [u.to_dict() for u in self.upstreams],
            "proxy_keys": list(self.proxy_keys),
            "test_model": self.test_model,
            "settings": dict(self.settings),
            "sort": self.sort,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "model_redirect_rules": dict(self.model_redirect_rules),
            "model_redirect_strict": self.model_redirect_strict,
            "param_overrides": dict(self.param_overrides),
            "header_rules": [dict(r) for r in self.header_rules],
            "group_type": self.group_type,
            "sub_groups": [m.to_dict() for m in self.sub_groups],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Group:
        return cls(
            name=d["name"],
            upstreams=tuple(Upstream(u["url"], int(u.get("weight", 1))) for u in d.get("upstreams", [])),
            display_name=d.get("display_name", ""),
            description=d.get("description", ""),
            proxy_keys=tuple(d.get("proxy_keys", ())),
            test_model=d.get("test_model") or "gemini-2.5-flash",
            settings=dict(d.get("settings") or {}),
            sort=int(d.get("sort", 0)),
            created_at=float(d.get("created_at", 0.0)),
            updated_at=float(d.get("updated_at", 0.0)),
            model_redirect_rules={str(k): str(v) for k, v in (d.get("model_redirect_rules") or {}).items()},
            model_redirect_strict=bool(d.get("model_redirect_strict", False)),
            param_overrides=dict(d.get("param_overrides") or {}),
            header_rules=tuple(dict(r) for r in d.get("header_rules") or ()),
            group_type=AGGREGATE if d.get("group_type") == AGGREGATE else STANDARD,
            sub_groups=tuple(SubGroup(m["name"], int(m.get("weight", 1))) for m in d.get("sub_groups") or ()),
        )


@dataclass(frozen=True)
class CoolDown:
    """A key may not serve ``model`` (or any model when ``ANY_MODEL``) before ``until``."""

    model: str
    until: float
    reason: str
    daily: bool = False  # a per-day quota: ends at the next midnight Pacific time


@dataclass(frozen=True)
class KeyState:
    """The part of a key that the state machine reads and writes (see ``keypool.state``)."""

    status: str = ACTIVE  # ACTIVE, INVALID or DISABLED; COOLING is derived from ``cooldowns``
    cooldowns: tuple[CoolDown, ...] = ()
    failure_count: int = 0
    last_error: str = ""
    last_error_at: float = 0.0  # when ``last_error`` was written (0: unknown)

    def live_cooldowns(self, now: float) -> tuple[CoolDown, ...]:
        return tuple(c for c in self.cooldowns if c.until > now)

    def display_status(self, now: float) -> str:
        if self.status in (INVALID, DISABLED):
            return self.status
        return COOLING if self.live_cooldowns(now) else ACTIVE

    def can_serve(self, model: str, now: float) -> bool:
        if self.status != ACTIVE:
            return False
        for c in self.cooldowns:
            if c.until > now and (c.model == ANY_MODEL or c.model == model):
                return False
        return True


@dataclass(frozen=True)
class KeyRecord:
    """A stored key without its secret. ``id`` is a fingerprint (HMAC) prefix, stable across instances."""

    id: str
    group: str
    masked: str
    state: KeyState = KeyState()
    request_count: int = 0
    failure_total: int = 0
    last_used_at: float = 0.0
    created_at: float = 0.0
    notes: str = ""
    total_tokens: int = 0
    validated_at: float = 0.0  # when the key was last validated (0: never)
    validation: str = ""  # outcome of that validation: VALIDATION_OUTCOMES, or "" (never)

    def with_state(self, state: KeyState) -> KeyRecord:
        return replace(self, state=state)

    def to_public(self, now: float) -> dict[str, Any]:
        """The admin view of a key: masked, never the secret."""
        return {
            "id": self.id,
            "key": self.masked,
            "status": self.state.display_status(now),
            "cooldowns": [
                {
                    "model": c.model,
                    "until": c.until,
                    "reason": c.reason,
                    "daily": c.daily,
                    "all_models": c.model == ANY_MODEL,
                }
                for c in self.state.live_cooldowns(now)
            ],
            "failure_count": self.state.failure_count,
            "failure_total": self.failure_total,
            "request_count": self.request_count,
            "total_tokens": self.total_tokens,
            "last_used_at": self.last_used_at or None,
            "last_error": self.state.last_error,
            "last_error_at": self.state.last_error_at or None,
            "created_at": self.created_at,
            "notes": self.notes,
            "validated_at": self.validated_at or None,
            "validation": self.validation or None,
        }


@dataclass(frozen=True)
class UsageEvent:
    """One finished upstream attempt, buffered and flushed in batches: key counters, hourly statistics and
    (when ``logged``) a request-log row. ``final`` marks the attempt whose answer the client got."""

    group: str
    key_id: str
    at: float
    success: bool
    status_code: int = 0
    model: str = ""
    method: str = ""
    path: str = ""
    stream: bool = False
    duration_ms: int = 0
    attempt: int = 1
    final: bool = True
    key_masked: str = ""
    source_ip: str = ""
    user_agent: str = ""
    error: str = ""
    upstream: str = ""
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    total_tokens: int = 0
    request_body: str | None = None
    logged: bool = True
    id: str = ""
    requested_model: str = ""  # the model the client named, when a redirect sent ``model`` upstream instead
    aggregate: str = ""  # the aggregate group the request came in through ("" = none); ``group`` is the member
    access_key: str = "anonymous"  # the access key's id, or ANONYMOUS (legacy proxy keys, no key)
    refused: bool = False  # refused by the access gate (401/403/429): not counted against a daily budget

    def log_row(self) -> dict[str, Any]:
        """The request-log view of this attempt (never a real key: ``key_masked`` only)."""
        return {
            "id": self.id,
            "at": self.at,
            "group": self.group,
            "key_id": self.key_id,
            "key": self.key_masked,
            "model": self.model,
            "method": self.method,
            "path": self.path,
            "status_code": self.status_code,
            "success": self.success,
            "stream": self.stream,
            "duration_ms": self.duration_ms,
            "attempt": self.attempt,
            "final": self.final,
            "source_ip": self.source_ip,
            "user_agent": self.user_agent,
            "error": self.error,
            "upstream": self.upstream,
            "prompt_tokens": self.prompt_tokens,
            "candidates_tokens": self.candidates_tokens,
            "total_tokens": self.total_tokens,
            "requested_model": self.requested_model or self.model,
            "aggregate": self.aggregate,
            "access_key": self.access_key,
        }


@dataclass(frozen=True)
class LogQuery:
    """Filters of the request-log list; ``None`` means "any"."""

    group: str | None = None
    key_id: str | None = None
    model: str | None = None  # a prefix of the model name
    status_code: int | None = None
    success: bool | None = None
    stream: bool | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None
    access_key: str | None = None


VALIDATION_OUTCOMES = ("valid", "invalid", "inconclusive")
KEY_SORTS = ("created", "requests", "failures", "last_used", "status")
STATUS_RANK = {ACTIVE: 0, COOLING: 1, INVALID: 2, DISABLED: 3}  # the order of ``sort=status``


@dataclass(frozen=True)
class KeyQuery:
    """What ``Store.query_keys`` returns: keys of a group matching every given filter, sorted.

    ``key_id``: exactly this key (a full pasted key, fingerprinted by the caller); ``text``: a case-insensitive
    substring of the masked key, the notes or the last error; ``status``: a display status (``KEY_STATUSES``,
    judged at ``now``); ``sort``: one of ``KEY_SORTS`` (ties by created_at, then id, in the same direction);
    ``descending`` for ``order=desc``."""

    key_id: str | None = None
    text: str | None = None
    status: str | None = None
    sort: str = "created"
    descending: bool = False
    now: float = 0.0


LOG_FIELDS = tuple(UsageEvent("", "", 0.0, True).log_row())


ANONYMOUS = "anonymous"  # the access key id of requests made with a legacy proxy key (or with none)


@dataclass(frozen=True)
class AccessKey:
    """A client's named key: which groups and models it may use and its limits. The secret itself is never kept:
    ``digest`` is HMAC-SHA256(salt, secret) (hex), ``masked`` its recognisable form (``sk-a...x7Qc``).

    ``groups``: ``("*",)`` or group names; ``models``: exact names or ``prefix*`` globs, empty = every model.
    Limits of 0 mean none; ``expires_at`` None means never."""

    id: str
    name: str
    digest: str
    masked: str
    groups: tuple[str, ...] = ("*",)
    models: tuple[str, ...] = ()
    rpm_limit: int = 0
    daily_request_limit: int = 0
    daily_token_limit: int = 0
    expires_at: float | None = None
    enabled: bool = True
    notes: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    def status(self, now: float) -> str:
        """``disabled``, ``expired`` or ``active``."""
        if not self.enabled:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        """Everything stored (the digest included: never shown by the admin API, see ``to_public``)."""
        return {
            "id": self.id,
            "name": self.name,
            "digest": self.digest,
            "masked": self.masked,
            "groups": list(self.groups),
            "models": list(self.models),
            "rpm_limit": self.rpm_limit,
            "daily_request_limit": self.daily_request_limit,
            "daily_token_limit": self.daily_token_limit,
            "expires_at": self.expires_at,
            "enabled": self.enabled,
            "notes": self.notes,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AccessKey:
        expires = d.get("expires_at")
        return cls(
            id=str(d["id"]),
            name=str(d.get("name", "")),
            digest=str(d.get("digest", "")),
            masked=str(d.get("masked", "")),
            groups=tuple(d.get("groups") or ("*",)),
            models=tuple(d.get("models") or ()),
            rpm_limit=int(d.get("rpm_limit") or 0),
            daily_request_limit=int(d.get("daily_request_limit") or 0),
            daily_token_limit=int(d.get("daily_token_limit") or 0),
            expires_at=None if expires is None else float(expires),
            enabled=bool(d.get("enabled", True)),
            notes=str(d.get("notes", "")),
            created_at=float(d.get("created_at") or 0.0),
            updated_at=float(d.get("updated_at") or 0.0),
        )

    def to_public(self, now: float) -> dict[str, Any]:
        """The admin view: the masked key and an id, never the digest or the secret."""
        out = self.to_dict()
        del out["digest"], out["masked"]
        return {**out, "key": self.masked, "status": self.status(now)}


def attempt_log_id(request_id: str, attempt: int) -> str:
    """The request-log id of attempt ``attempt`` (0: a request refused before any upstream call) of a request:
    the attempts of one request share the part before the last "-", so they can be found from any one of them."""
    return f"{request_id}-{attempt}"


def request_id_of(log_id: str) -> str:
    """The request id in a log id made by ``attempt_log_id`` (a log id without "-" is its own request)."""
    return log_id.rsplit("-", 1)[0] if "-" in log_id else log_id
