"""Error classification: what an upstream answer says about the key that got it.

``classify(status, body)`` reads Gemini's error envelope (``error.status``, ``details[].reason``, QuotaFailure
``quotaId`` and ``quotaDimensions.model``, RetryInfo ``retryDelay``) and returns a ``Verdict``. The policy, in order:

=============================================  =============  =====  ==============================
answer                                         verdict        retry  effect on the key
=============================================  =============  =====  ==============================
2xx / 3xx                                      SUCCESS        no     failure count reset
ErrorInfo API_KEY_INVALID, CONSUMER_SUSPENDED,  KEY_INVALID    yes    invalid at once
SERVICE_DISABLED, API_KEY_*_BLOCKED
429 with a per-day quota id                    QUOTA_DAY      yes    cooling for the model until
                                                                      midnight Pacific
429 with a per-minute quota id / RetryInfo     QUOTA_MINUTE   yes    cooling for retryDelay
429 without details                            QUOTA_BARE     yes    short cooling, not counted
500, 502, 503, 504, timeouts, connect errors   TRANSIENT      yes    consecutive-failure count + 1
everything else (400, 401, 403, 404, 413...)   REQUEST_ERROR  no     none: the request's fault
=============================================  =============  =====  ==============================

Deliberately *not* key faults: 400 FAILED_PRECONDITION "User location is not supported" (the egress IP's fault),
403 on another project's file (an affinity miss), 401 (Gemini never uses it for API keys; disabling keys on it
would let one malformed client disable a whole pool). Pure module: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

_KEY_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "CONSUMER_SUSPENDED",
        "SERVICE_DISABLED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "API_KEY_ANDROID_APP_BLOCKED",
        "API_KEY_IOS_APP_BLOCKED",
    }
)
# Fallbacks when a proxy or SDK layer has stripped the details (seen with the OpenAI-compatible layer).
_KEY_MESSAGES = re.compile(r"API key not valid|API Key not found|API key expired|has been suspended", re.I)
_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


class Kind(str, Enum):
    SUCCESS = "success"
    KEY_INVALID = "key_invalid"
    QUOTA_DAY = "quota_day"
    QUOTA_MINUTE = "quota_minute"
    QUOTA_BARE = "quota_bare"
    TRANSIENT = "transient"
    REQUEST_ERROR = "request_error"


RETRYABLE = frozenset({Kind.KEY_INVALID, Kind.QUOTA_DAY, Kind.QUOTA_MINUTE, Kind.QUOTA_BARE, Kind.TRANSIENT})


@dataclass(frozen=True)
class Verdict:
    """What one upstream answer means. ``retry_delay`` is RetryInfo's delay in seconds when present;
    ``model`` is the quota's model dimension when Google named one."""

    kind: Kind
    reason: str = ""
    retry_delay: float | None = None
    model: str | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


SUCCESS = Verdict(Kind.SUCCESS)


def classify(status: int, body: bytes | str | Any) -> Verdict:
    """Classify an HTTP answer from Gemini. ``body`` may be raw bytes, text or already-parsed JSON."""
    if status < 400:
        return SUCCESS
    error = _error_object(body)
    message = str(error.get("message", ""))[:300]
    reasons, quota_ids, quota_model, retry_delay = _details(error.get("details"))
    label = _label(status, error, message)

    if reasons & _KEY_REASONS or (status in (400, 403) and _KEY_MESSAGES.search(message)):
        reason = next(iter(sorted(reasons & _KEY_REASONS)), "") or label
        return Verdict(Kind.KEY_INVALID, reason=f"{status} {reason}".strip())
    if status == 429:
        if any("perday" in q.lower() for q in quota_ids):
            return Verdict(Kind.QUOTA_DAY, reason=_quota_reason(quota_ids, label), model=quota_model)
        if quota_ids or retry_delay is not None:
            return Verdict(
                Kind.QUOTA_MINUTE, reason=_quota_reason(quota_ids, label), retry_delay=retry_delay, model=quota_model
            )
        return Verdict(Kind.QUOTA_BARE, reason=label)
    if status in _TRANSIENT_STATUSES:
        return Verdict(Kind.TRANSIENT, reason=label)
    return Verdict(Kind.REQUEST_ERROR, reason=label)


def network_error(exc: BaseException) -> Verdict:
    """Verdict for an attempt that got no HTTP answer (connect error, timeout, reset before headers)."""
    return Verdict(Kind.TRANSIENT, reason=f"network: {type(exc).__name__}")


def _error_object(body: bytes | str | Any) -> dict[str, Any]:
    if isinstance(body, (bytes, bytearray)):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return {}
    elif isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return {}
    # The OpenAI-compatible layer wraps the envelope in a list: [{"error": {...}}].
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    return {}


def _details(details: Any) -> tuple[set[str], list[str], str | None, float | None]:
    reasons: set[str] = set()
    quota_ids: list[str] = []
    model: str | None = None
    delay: float | None = None
    if not isinstance(details, list):
        return reasons, quota_ids, model, delay
    for d in details:
        if not isinstance(d, dict):
            continue
        kind = str(d.get("@type", ""))
        if "ErrorInfo" in kind and d.get("reason"):
            reasons.add(str(d["reason"]))
        elif "QuotaFailure" in kind:
            for v in d.get("violations") or ():
                if isinstance(v, dict):
                    if v.get("quotaId"):
                        quota_ids.append(str(v["quotaId"]))
                    dims = v.get("quotaDimensions")
                    if isinstance(dims, dict) and dims.get("model") and model is None:
                        model = str(dims["model"])
        elif "RetryInfo" in kind:
            match = _DURATION.match(str(d.get("retryDelay", "")))
            if match:
                delay = float(match.group(1))
    return reasons, quota_ids, model, delay


def _label(status: int, error: dict[str, Any], message: str) -> str:
    parts = [str(status)]
    if error.get("status"):
        parts.append(str(error["status"]))
    if message:
        parts.append(message)
    return " ".join(parts)


def _quota_reason(quota_ids: list[str], label: str) -> str:
    return f"429 {quota_ids[0]}" if quota_ids else label
