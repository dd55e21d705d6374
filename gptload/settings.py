"""Runtime settings: one schema, validated on write, stored system-wide with per-group overrides.

``Settings`` is the resolved, typed view a request uses (system values overlaid with the group's overrides); each of
its fields declares its default, description, range and whether a group may override it, and ``SCHEMA`` (validation,
defaults, the admin API's schema endpoint, the console's forms) is derived from those fields, so nothing is written
twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from gptload import proxyurl
from gptload.errors import ValidationFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    name: str
    type: type
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    group_overridable: bool = True
    secret: bool = False  # shown masked by the admin API (proxyurl.mask)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": {int: "integer", float: "number", bool: "boolean", str: "string", list: "string_list"}[self.type],
            "default": self.default,
            "description": self.description,
            "min": self.min,
            "max": self.max,
            "group_overridable": self.group_overridable,
            "secret": self.secret,
        }


def _setting(
    default: Any,
    description: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    group: bool = True,
    secret: bool = False,
) -> Any:
    """A field of ``Settings`` with what the schema says about it (``SCHEMA`` is derived from these fields)."""
    return field(
        default=default,
        metadata={"description": description, "min": lo, "max": hi, "group": group, "secret": secret},
        repr=not secret,  # a resolved secret (the clear proxy_url) never reaches a log line through repr()
    )


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one group: defaults < system values < group overrides. Each field declares its
    default, description, range and whether a group may override it, once: ``SCHEMA`` is built from them."""

    max_retries: int = _setting(3, "Extra attempts on other keys after a retryable failure.", 0, 20)
    blacklist_threshold: int = _setting(3, "500s in a row on a key while other keys served, that disable it.", 1, 100)
    request_timeout_seconds: float = _setting(
        600.0, "Deadline of a non-streamed upstream call: its headers and whole body relayed.", 1, 3600
    )
    connect_timeout_seconds: float = _setting(10.0, "Timeout for connecting to the upstream.", 0.1, 120)
    first_byte_timeout_seconds: float = _setting(
        600.0,
        "Longest wait for the upstream's response headers (non-streamed calls: also within the request timeout).",
        1,
        3600,
    )
    stream_idle_timeout_seconds: float = _setting(120.0, "Longest silence allowed between streamed chunks.", 1, 3600)
    bare_429_cooldown_seconds: float = _setting(10.0, "Cooldown after a 429 without quota details.", 0, 3600)
    default_quota_cooldown_seconds: float = _setting(
        60.0, "Cooldown after a per-minute 429 without RetryInfo.", 1, 3600
    )
    key_validation_interval_minutes: int = _setting(60, "How often invalid keys are re-validated.", 1, 10080)
    key_validation_concurrency: int = _setting(10, "Parallel validation requests.", 1, 100)
    key_validation_timeout_seconds: float = _setting(20.0, "Timeout of one validation request.", 1, 300)
    request_log_retention_days: int = _setting(7, "Days request logs are kept.", 1, 365, group=False)
    enable_request_body_logging: bool = _setting(False, "Store request bodies in request logs.", group=False)
    log_failures_only: bool = _setting(False, "Record request logs only for failed attempts.", group=False)
    affinity_ttl_hours: float = _setting(48.0, "How long a created file/cache/batch stays bound to its key.", 1, 720)
    app_url: str = _setting(
        "", "Public base URL of this proxy (for upload URLs); empty: taken from the request.", group=False
    )
    proxy_keys: tuple[str, ...] = _setting((), "Global proxy keys accepted by every group.", group=False)
    live_idle_timeout_seconds: float = _setting(
        600.0, "Live API (WebSocket) session: longest time without a message either way, then closed (1008).", 1, 3600
    )
    live_max_session_seconds: float = _setting(
        3600.0,
        "Live API (WebSocket) session: longest life, then closed (1008); Cloud Run caps it at 60 min.",
        1,
        86400,
    )
    live_max_message_bytes: int = _setting(
        1024 * 1024,
        "Live API (WebSocket): largest message either way; a bigger one closes its sender with 1009 (1 MiB: what the "
        "google-genai SDK accepts from Google; a session holds at most about 10 of them in memory).",
        1024,
        2**28,
    )
    live_setup_timeout_seconds: float = _setting(
        15.0,
        "Live API (WebSocket): longest wait for the client's setup message after the upgrade, then closed (1008) "
        "without any upstream call.",
        1,
        600,
    )
    limits_timezone: str = _setting(
        "UTC", "IANA time zone whose midnight resets access keys' daily limits (e.g. Europe/Berlin).", group=False
    )
    proxy_url: str = _setting(
        "",
        "HTTP(S) or SOCKS5 proxy for upstream traffic (http://user:pass@host:port); empty: direct (a group: the "
        "system setting); 'direct': no proxy, even when the system setting names one. Proxies from the environment "
        "(HTTPS_PROXY...) are never used.",
        secret=True,
    )

    @classmethod
    def resolve(cls, system: Mapping[str, Any], group: Mapping[str, Any] | None = None) -> Settings:
        merged = {s.name: s.default for s in SCHEMA}
        merged.update(valid_stored(system))
        if group:
            merged.update(valid_stored(group, for_group=True))
        merged["proxy_keys"] = tuple(merged["proxy_keys"])
        if merged["proxy_url"] == proxyurl.DIRECT:  # a group's "no proxy" wins over the system's proxy
            merged["proxy_url"] = ""
        return cls(**merged)


# The schema, derived from ``Settings``' fields: the single source for validation, defaults, the admin API's schema
# endpoint and the console's forms.
_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str, "tuple[str, ...]": list}
SCHEMA: tuple[Spec, ...] = tuple(
    Spec(
        f.name,
        _TYPES[str(f.type)],
        list(f.default) if isinstance(f.default, tuple) else f.default,
        f.metadata["description"],
        f.metadata["min"],
        f.metadata["max"],
        f.metadata["group"],
        f.metadata["secret"],
    )
    for f in fields(Settings)
)
BY_NAME: dict[str, Spec] = {s.name: s for s in SCHEMA}


def validate(values: Mapping[str, Any], *, for_group: bool = False) -> dict[str, Any]:
    """Return ``values`` coerced to the schema's types; raise ValidationFailed naming every bad entry."""
    if not isinstance(values, Mapping):
        raise ValidationFailed("settings must be a JSON object")
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    for name, raw in values.items():
        spec = BY_NAME.get(name)
        if spec is None:
            errors[name] = "unknown setting"
            continue
        if for_group and not spec.group_overridable:
            errors[name] = "cannot be overridden per group"
            continue
        try:
            clean[name] = _coerce(spec, raw)
        except (ValueError, OverflowError) as exc:
            errors[name] = str(exc)
    if errors:
        raise ValidationFailed("invalid settings", details={"fields": errors})
    return clean


def _coerce(spec: Spec, raw: Any) -> Any:
    if spec.type is bool:
        if not isinstance(raw, bool):
            raise ValueError("must be true or false")
        return raw
    if spec.type is str:
        # a sealed proxy_url is longer than the clear text it was accepted as: it must not be dropped (go direct)
        limit = proxyurl.SEALED_MAX_LENGTH if isinstance(raw, str) and spec.secret and proxyurl.is_sealed(raw) else 2048
        if not isinstance(raw, str) or len(raw) > limit:
            raise ValueError("must be a string of at most 2048 characters")
        return _CHECKS.get(spec.name, str.strip)(raw)
    if spec.type is list:
        if not isinstance(raw, list) or not all(isinstance(x, str) and 8 <= len(x.strip()) <= 256 for x in raw):
            raise ValueError("must be a list of strings of 8 to 256 characters")
        return [x.strip() for x in raw]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ValueError(f"must be a {'whole number' if spec.type is int else 'number'}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ValueError("must be a finite number")
    if spec.type is int and isinstance(raw, float) and not raw.is_integer():
        raise ValueError("must be a whole number")
    # Compare before converting: a huge int (10**400) does not fit in a float.
    if (spec.min is not None and raw < spec.min) or (spec.max is not None and raw > spec.max):
        raise ValueError(f"must be between {spec.min:g} and {spec.max:g}")
    return spec.type(raw)


def _check_app_url(raw: str) -> str:
    """``app_url``: empty, or an absolute http(s) URL with a host and no query or fragment (clients get it as the
    base of upload URLs), without its trailing slash."""
    value = raw.strip()
    if not value:
        return ""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("must be an http(s) URL such as https://gptload.example.com") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in value)
    ):
        raise ValueError("must be an http(s) URL such as https://gptload.example.com")
    return value.rstrip("/")


def _time_zone(raw: str) -> str:
    """An IANA time zone name (``limits_timezone``); ValueError naming a zone that does not exist."""
    from gptload.access.rules import zone

    zone(raw.strip())
    return raw.strip()


# Settings whose text has rules of its own: name -> function returning the clean value or raising ValueError.
_CHECKS: dict[str, Callable[[str], str]] = {
    "proxy_url": proxyurl.check,
    "app_url": _check_app_url,
    "limits_timezone": _time_zone,
}


def masked(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as the admin API shows them: secret settings masked (proxyurl.mask)."""
    return {k: proxyurl.mask(v) if k in BY_NAME and BY_NAME[k].secret and v else v for k, v in values.items()}


def keep_stored(sent: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """``sent`` (validated) with each secret setting whose value is the stored value's masked form replaced by the
    stored value: the console sends back what it was shown, and that must not erase the secret."""
    out = dict(sent)
    for name, value in sent.items():
        if name in BY_NAME and BY_NAME[name].secret and isinstance(value, str):
            previous = stored.get(name)
            out[name] = proxyurl.keep_stored(value, previous if isinstance(previous, str) else "")
    return out


def valid_stored(values: Mapping[str, Any], *, for_group: bool = False) -> dict[str, Any]:
    """The valid entries of stored settings. A value this version would refuse (NaN written by an older version,
    a range since narrowed) is left out, so its default applies, and logged: it must never break a request."""
    out: dict[str, Any] = {}
    for name, raw in values.items():
        spec = BY_NAME.get(name)
        if spec is None or (for_group and not spec.group_overridable):
            continue
        try:
            out[name] = _coerce(spec, raw)
        except (ValueError, OverflowError, TypeError) as exc:
            shown = proxyurl.mask(raw) if spec.secret and isinstance(raw, str) else raw
            log.warning("ignoring stored setting %s=%.40r (%s); using the default %r", name, shown, exc, spec.default)
    return out


def effective(system: Mapping[str, Any]) -> dict[str, Any]:
    """System settings with defaults filled in, as the admin API shows them."""
    out = {s.name: s.default for s in SCHEMA}
    out.update(valid_stored(system))
    return out
