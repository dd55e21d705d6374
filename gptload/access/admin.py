"""Admin use cases of access keys: create (the secret is shown once), list with usage, update, rotate, delete, and
moving legacy proxy keys to access keys. Secrets are stored only as HMAC digests (``cipher.digest``)."""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

from gptload import settings as settings_schema
from gptload.access import rules
from gptload.admin import GROUP_NAME
from gptload.cipher import digest
from gptload.errors import Conflict, GroupNotFound, NotFound, ValidationFailed
from gptload.keypool.keytext import mask, scrub
from gptload.models import ANONYMOUS, AccessKey, Group
from gptload.pool import KeyPool
from gptload.store.base import Store
from gptload.store.rollup import hour_of
from gptload.usage import UsageBuffer

DAY = 86400.0
LIMIT_MAX = 10**12
_FIELDS = {
    "name",
    "groups",
    "models",
    "rpm_limit",
    "daily_request_limit",
    "daily_token_limit",
    "expires_at",
    "enabled",
    "notes",
}
SECRET_PREFIX = "sk-"  # noqa: S105 - a prefix, not a password


def new_secret() -> str:
    """A fresh access key: ``sk-`` and 256 random bits (URL-safe base64)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class AccessAdmin:
    def __init__(self, store: Store, pool: KeyPool, usage: UsageBuffer) -> None:
        self._store = store
        self._pool = pool
        self._usage = usage
        self._salt = store.salt()

    # -- create, read, update, delete -----------------------------------------------------------------------
    def create(self, payload: Any) -> dict[str, Any]:
        """``201 {"access_key": {...}, "key": "sk-..."}``: the only answer that ever holds the secret. A ``key``
        in the payload adopts an existing secret (moving a legacy proxy key) instead of generating one."""
        fields = _fields(payload, creating=True)
        secret = payload.get("key") if isinstance(payload, dict) else None
        if secret is None:
            secret = new_secret()
        else:
            secret = _own_secret(secret)
        now = time.time()
        key = AccessKey.from_dict(
            {
                **fields,
                "id": "ak_" + secrets.token_hex(6),
                "digest": self._unused_digest(secret),
                "masked": mask(secret),
                "created_at": now,
                "updated_at": now,
            }
        )
        self._store.create_access_key(key)
        self._pool.reload()
        return {"access_key": self._public(key, self._usage_by_key(now), now), "key": secret}

    def list_keys(self) -> dict[str, Any]:
        now = time.time()
        usage = self._usage_by_key(now)
        keys = self._store.list_access_keys()
        return {
            "access_keys": [self._public(k, usage, now) for k in keys],
            "anonymous": usage.get(ANONYMOUS, _empty_usage()),
            "legacy": self._legacy(),
            "limits_timezone": self._pool.settings.limits_timezone,
        }

    def get(self, key_id: str) -> dict[str, Any]:
        now = time.time()
        return {"access_key": self._public(self._require(key_id), self._usage_by_key(now), now)}

    def update(self, key_id: str, payload: Any) -> dict[str, Any]:
        current = self._require(key_id)
        if isinstance(payload, dict) and "key" in payload:
            raise ValidationFailed(
                "the secret cannot be set; rotate the key instead", details={"fields": {"key": "rotate"}}
            )
        fields = _fields(payload, creating=False)
        now = time.time()
        key = AccessKey.from_dict({**current.to_dict(), **fields, "updated_at": now})
        self._store.update_access_key(key)
        self._pool.reload()
        return {"access_key": self._public(key, self._usage_by_key(now), now)}

    def rotate(self, key_id: str) -> dict[str, Any]:
        """A new secret for the same id, limits and usage; the old secret stops working (on every instance within
        the change-marker poll, ``STATE_REFRESH_SECONDS``)."""
        current = self._require(key_id)
        secret = new_secret()
        now = time.time()
        key = AccessKey.from_dict(
            {**current.to_dict(), "digest": self._unused_digest(secret), "masked": mask(secret), "updated_at": now}
        )
        self._store.update_access_key(key)
        self._pool.reload()
        return {"access_key": self._public(key, self._usage_by_key(now), now), "key": secret}

    def delete(self, key_id: str) -> dict[str, Any]:
        if not self._store.delete_access_key(key_id):
            raise NotFound(f"no access key {key_id!r}")
        self._pool.reload()
        return {"deleted": key_id}

    # -- legacy proxy keys ----------------------------------------------------------------------------------
    def adopt(self, payload: Any) -> dict[str, Any]:
        """Move the legacy proxy keys of a group (``{"group": "name"}``) or the global ones (``{"group": null}``)
        to access keys with the same secrets, so clients keep working unchanged; the legacy entries are removed.
        The answer never holds a secret (the clients already have them)."""
        if not isinstance(payload, dict) or "group" not in payload:
            raise ValidationFailed('body must be {"group": "name"} or {"group": null} (the global proxy keys)')
        name = payload["group"]
        group: Group | None = None
        if name is None:
            legacy = list(settings_schema.effective(self._store.get_settings())["proxy_keys"])
            scope, label = ["*"], "global"
        else:
            group = self._store.get_group(name) if isinstance(name, str) else None
            if group is None:
                raise GroupNotFound(f"no group named {name!r}")
            legacy, scope, label = list(group.proxy_keys), [group.name], group.name
        created = []
        known = {k.digest for k in self._store.list_access_keys()}
        now = time.time()
        for number, secret in enumerate(legacy, start=1):
            d = digest(self._salt, secret).hex()
            if d in known:
                continue  # adopted before (an interrupted move): just drop the legacy entry below
            key = AccessKey(
                id="ak_" + secrets.token_hex(6),
                name=f"{label} legacy {number}",
                digest=d,
                masked=mask(secret),
                groups=tuple(scope),
                notes="moved from a legacy proxy key",
                created_at=now,
                updated_at=now,
            )
            self._store.create_access_key(key)
            known.add(d)
            created.append(key.to_public(now))
        if group is None:
            self._store.put_settings({"proxy_keys": []})
        else:
            self._store.update_group(Group.from_dict({**group.to_dict(), "proxy_keys": [], "updated_at": now}))
        self._pool.reload()
        return {"adopted": created}

    def _legacy(self) -> list[dict[str, Any]]:
        """Where legacy proxy keys are still in use (counts only), for the console's hint."""
        out: list[dict[str, Any]] = []
        global_keys = settings_schema.effective(self._store.get_settings())["proxy_keys"]
        if global_keys:
            out.append({"group": None, "count": len(global_keys)})
        for group in self._store.list_groups():
            if group.proxy_keys:
                out.append({"group": group.name, "count": len(group.proxy_keys)})
        return out

    # -- helpers --------------------------------------------------------------------------------------------
    def _require(self, key_id: str) -> AccessKey:
        key = self._store.get_access_key(key_id)
        if key is None:
            raise NotFound(f"no access key {key_id!r}")
        return key

    def _unused_digest(self, secret: str) -> str:
        d = digest(self._salt, secret).hex()
        if any(k.digest == d for k in self._store.list_access_keys()):
            raise Conflict("this secret is already an access key")
        return d

    def _usage_by_key(self, now: float) -> dict[str, dict[str, Any]]:
        """Per access key: requests, failures, refused and tokens of today (in ``limits_timezone``), the last 7 and
        30 days, and the last use; from the hourly access counters (this instance's buffer flushed first)."""
        self._usage.flush()
        try:
            tz = rules.zone(self._pool.settings.limits_timezone)
        except ValueError:
            tz = rules.zone("UTC")
        windows = {
            "today": hour_of(rules.day_start(now, tz)),
            "7d": hour_of(now - 7 * DAY),
            "30d": hour_of(now - 30 * DAY),
        }
        out: dict[str, dict[str, Any]] = {}
        for row in self._store.access_usage(windows["30d"]):
            entry = out.setdefault(row["access_key"], _empty_usage())
            for label, since in windows.items():
                if row["hour"] >= since:
                    w = entry[label]
                    w["requests"] += row["requests"]
                    w["failures"] += row["failures"]
                    w["refused"] += row["refused"]
                    w["tokens"] += row["total_tokens"]
            entry["last_used_at"] = max(entry["last_used_at"] or 0.0, row["last_used_at"]) or None
        return out

    @staticmethod
    def _public(key: AccessKey, usage: dict[str, dict[str, Any]], now: float) -> dict[str, Any]:
        return {**key.to_public(now), "usage": usage.get(key.id, _empty_usage())}


def _empty_usage() -> dict[str, Any]:
    window = {"requests": 0, "failures": 0, "refused": 0, "tokens": 0}
    return {"today": dict(window), "7d": dict(window), "30d": dict(window), "last_used_at": None}


def _own_secret(raw: Any) -> str:
    if not isinstance(raw, str) or not 8 <= len(raw.strip()) <= 256:
        raise ValidationFailed("key must be a string of 8 to 256 characters", details={"fields": {"key": "8..256"}})
    secret = raw.strip()
    if secret.startswith("AIza"):
        raise ValidationFailed(
            "looks like a real Gemini key; access keys must be your own secrets", details={"fields": {"key": "AIza"}}
        )
    return secret


def _fields(payload: Any, *, creating: bool) -> dict[str, Any]:
    """Validate the fields of a create (``name`` required) or an update (any subset); every bad field named."""
    if not isinstance(payload, dict):
        raise ValidationFailed("body must be a JSON object")
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name in set(payload) - _FIELDS - ({"key"} if creating else set()):
        errors[name] = "unknown field"
    if creating or "name" in payload:
        name = payload.get("name")
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
            errors["name"] = "required: 1 to 100 characters"
        else:
            out["name"] = scrub(name.strip())
    if "groups" in payload:
        groups = payload["groups"]
        if (
            not isinstance(groups, list)
            or not groups
            or not all(isinstance(g, str) and (g == rules.ALL_GROUPS or GROUP_NAME.fullmatch(g)) for g in groups)
        ):
            errors["groups"] = 'must be ["*"] or a non-empty list of group names'
        else:
            out["groups"] = ["*"] if "*" in groups else list(dict.fromkeys(groups))
    if "models" in payload:
        models = payload["models"]
        if not isinstance(models, list) or not all(
            isinstance(m, str) and 1 <= len(m.strip()) <= 200 and "*" not in m.strip()[:-1] for m in models
        ):
            errors["models"] = "must be a list of model names or prefix* globs (empty: every model)"
        else:
            cleaned = [rules.model_name(m.strip()) for m in models]
            out["models"] = [] if "*" in cleaned else list(dict.fromkeys(cleaned))
    for limit in ("rpm_limit", "daily_request_limit", "daily_token_limit"):
        if limit in payload:
            value = payload[limit]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LIMIT_MAX:
                errors[limit] = f"must be a whole number from 0 (no limit) to {LIMIT_MAX}"
            else:
                out[limit] = value
    if "expires_at" in payload:
        value = payload["expires_at"]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and (not number or not math.isfinite(value) or not 0 < value < 1e11):
            errors["expires_at"] = "must be epoch seconds or null (never)"
        else:
            out["expires_at"] = None if value is None else float(value)
    if "enabled" in payload:
        if not isinstance(payload["enabled"], bool):
            errors["enabled"] = "must be true or false"
        else:
            out["enabled"] = payload["enabled"]
    if "notes" in payload:
        notes = payload["notes"]
        if not isinstance(notes, str) or len(notes) > 500:
            errors["notes"] = "must be a string of at most 500 characters"
        else:
            out["notes"] = scrub(notes.strip())
    if errors:
        raise ValidationFailed("invalid access key", details={"fields": errors})
    return out
