"""Error classification: what an upstream answer says about the key that got it, and about the upstream.

``classify(status, body)`` reads Gemini's error envelope (``error.status``, ``details[].reason``, QuotaFailure
``quotaId`` and ``quotaDimensions.model``, RetryInfo ``retryDelay``) and returns a ``Verdict``. The policy, in order
(docs/architecture.md, "Error policy"):

=============================================  =============  =====  ==========================================
answer                                         verdict        retry  effect
=============================================  =============  =====  ==========================================
2xx / 3xx                                      SUCCESS        no     failure count reset; breaker closes
ErrorInfo API_KEY_INVALID, API_KEY_EXPIRED,    KEY_INVALID    yes    the key is invalid at once
CONSUMER_SUSPENDED, SERVICE_DISABLED,
API_KEY_*_BLOCKED (or, only when the body has
no ErrorInfo, Google's whole message sentence)
429 with a per-day quota id                    QUOTA_DAY      yes    the key cools for the model until
                                                                     midnight Pacific
429 with a per-minute quota id / RetryInfo     QUOTA_MINUTE   yes    the key cools for retryDelay
429 without details                            QUOTA_BARE     yes    the key cools briefly
500, 502, 503, 504, timeouts, connect errors   TRANSIENT      yes    nothing on the key; 502/503/network: a
                                                                     breaker failure for (group, upstream,
                                                                     model); a 500 counts against the key only
                                                                     when another key then served the same
                                                                     request (``isolated``)
everything else (400, 401, 403, 404, 413...)   REQUEST_ERROR  no     none: the request's fault, passed through
=============================================  =============  =====  ==========================================

Key evidence is Google's ErrorInfo ``reason``, never free text: Google echoes parts of the request in its messages
(``Invalid JSON payload received. Unknown name "..."``), so a substring match on the message would let a client
condemn keys. The fallback for bodies without details (the OpenAI-compatible layer drops them) matches Google's
whole message, anchored. Deliberately *not* key faults: 400 FAILED_PRECONDITION "User location is not supported"
(the egress IP's fault), 403 on another project's file (an affinity miss), 401 (Gemini never uses it for API keys).
Pure module: no I/O.
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
# Fallbacks when a layer has stripped the details (the OpenAI-compatible layer): Google's *whole* message, anchored,
# mapped to the reason it stands for. Never a substring: messages can quote the client's request.
_KEY_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"API key not valid\. Please pass a valid API key\."), "API_KEY_INVALID"),
    (re.compile(r"API Key not found\. Please pass a valid API key\."), "API_KEY_INVALID"),
    (re.compile(r"API key expired\. Please renew the API key\."), "API_KEY_EXPIRED"),
    (
        re.compile(r"Permission denied: Consumer '(?:api_key:[0-9A-Za-z_.-]*|projects?/\d+)' has been suspended\."),
        "CONSUMER_SUSPENDED",
    ),
    (
        re.compile(
            r"Generative Language API has not been used in project \d+ before or it is disabled\."
            r"(?: Enable it by visiting https://console\.developers\.google\.com/apis/api/"
            r"generativelanguage\.googleapis\.com/overview\?project=\d+ then retry\. If you enabled this API "
            r"recently, wait a few minutes for the action to propagate to our systems and retry\.)?"
        ),
        "SERVICE_DISABLED",
    ),
)
_KEY_MESSAGE_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED"}
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

    isolated: bool = False  # TRANSIENT only: another key served the same request afterwards
    network: bool = False  # TRANSIENT only: no HTTP answer at all (connect error, timeout, reset)

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    @property
    def upstream_failure(self) -> bool:
        """A failure that says something about the upstream or the model, nothing about the key."""
        return self.kind is Kind.TRANSIENT


SUCCESS = Verdict(Kind.SUCCESS)


def classify(status: int, body: bytes | str | Any) -> Verdict:
    """Classify an HTTP answer from Gemini. ``body`` may be raw bytes, text or already-parsed JSON."""
    if status < 400:
        return SUCCESS
    error = _error_object(body)
    message = str(error.get("message", ""))[:300]
    reasons, quota_ids, quota_model, retry_delay = _details(error.get("details"))
    label = _label(status, error, message)

    key_reason = next(iter(sorted(reasons & _KEY_REASONS)), "")
    if not key_reason and not reasons:
        key_reason = _message_reason(status, error)
    if key_reason:
        return Verdict(Kind.KEY_INVALID, reason=f"{status} {key_reason}")
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
    return Verdict(Kind.TRANSIENT, reason=f"network: {type(exc).__name__}", network=True)


def is_key_evidence(reason: str) -> bool:
    """Was a key condemned for ``reason`` (a ``Verdict.reason`` or a stored ``last_error``) by evidence about the
    key itself, i.e. ``"<status> <ErrorInfo reason>"`` with a key reason?"""
    parts = reason.split(" ", 2)
    return len(parts) >= 2 and parts[0].isdigit() and parts[1] in _KEY_REASONS


def key_message_reason(message: str) -> str:
    """The key reason Google's *whole* message stands for ("API key not valid. Please pass a valid API key." ->
    API_KEY_INVALID), "" for any other text. Anchored: a message quoting a client's words never matches."""
    text = message.strip()
    for pattern, reason in _KEY_MESSAGES:
        if pattern.fullmatch(text):
            return reason
    return ""


def _message_reason(status: int, error: dict[str, Any]) -> str:
    """The key reason Google's whole message stands for, when the body carries no details (OpenAI layer)."""
    expected = _KEY_MESSAGE_STATUS.get(status)
    message = error.get("message")
    if expected is None or not isinstance(message, str) or error.get("status", expected) != expected:
        return ""
    text = message.strip()
    for pattern, reason in _KEY_MESSAGES:
        if pattern.fullmatch(text):
            return reason
    return ""


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
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return error
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
