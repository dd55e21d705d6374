"""The one error tree of gptload; turned into HTTP in exactly one place (``web.responses``).

::

    GptloadError                      500 INTERNAL
    ├── ConfigError                   (startup only; never reaches HTTP)
    ├── BadRequest                    400 BAD_REQUEST
    │   ├── InvalidJson               400 INVALID_JSON
    │   ├── IncompleteBody            400 INCOMPLETE_BODY
    │   ├── InvalidPath               400 INVALID_PATH
    │   ├── ValidationFailed          400 VALIDATION_FAILED
    │   ├── BodyTooLarge              413 BODY_TOO_LARGE
    │   └── RequestTimeout            408 REQUEST_TIMEOUT
    ├── Unauthorized                  401 UNAUTHORIZED
    │   └── InvalidProxyKey           401 INVALID_PROXY_KEY
    ├── AccessDenied                  403 ACCESS_DENIED
    ├── RateLimited                   429 RATE_LIMITED
    ├── QuotaExceeded                 429 QUOTA_EXCEEDED
    ├── NotFound                      404 NOT_FOUND
    │   ├── GroupNotFound             404 GROUP_NOT_FOUND
    │   ├── RouteNotFound             404 ROUTE_NOT_FOUND
    │   └── ModelNotAllowed           404 MODEL_NOT_ALLOWED
    ├── MethodNotAllowed              405 METHOD_NOT_ALLOWED
    ├── Conflict                      409 CONFLICT
    │   └── GroupExists               409 GROUP_EXISTS
    ├── NoKeysAvailable               503 NO_KEYS_AVAILABLE
    ├── CircuitOpen                   503 UPSTREAM_UNAVAILABLE
    ├── UpstreamUnreachable           502 UPSTREAM_UNREACHABLE
    │   └── UpstreamTimeout           504 UPSTREAM_TIMEOUT
    ├── StoreUnavailable              503 STORE_UNAVAILABLE
    │   └── StoreRejected             500 STORE_REJECTED (usage writes only; never reaches HTTP)
    ├── LiveSessionsFull              503 LIVE_SESSIONS_FULL
    └── AuthUnavailable               503 AUTH_UNAVAILABLE

Every error carries an HTTP ``status`` and a stable machine-readable ``code``; messages are for people
and must never contain a real API key. Admin routes render them as ``{"error": {"code", "message"}}``; proxy routes
as Google's envelope (numeric code, Google status, ErrorInfo reason = ``code``, domain ``gptload``), so SDKs raise
their usual typed errors (``web.responses``). ``details["retry_after"]`` becomes a ``Retry-After`` header.
"""

from __future__ import annotations

from typing import Any


class GptloadError(Exception):
    """Base of every error gptload raises on purpose."""

    status: int = 500
    code: str = "INTERNAL"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class ConfigError(GptloadError):
    """The environment does not describe a runnable service; raised at startup."""

    code = "CONFIG_ERROR"


class BadRequest(GptloadError):
    status = 400
    code = "BAD_REQUEST"


class InvalidJson(BadRequest):
    code = "INVALID_JSON"


class IncompleteBody(BadRequest):
    """The request body ended before its Content-Length (the client went away): nothing is forwarded."""

    code = "INCOMPLETE_BODY"


class InvalidPath(BadRequest):
    """A proxied path gptload and the upstream could read differently (a dot segment, an encoded slash): refused
    before any upstream call, so that the model gptload checks and counts is the one the upstream is asked for."""

    code = "INVALID_PATH"


class ValidationFailed(BadRequest):
    code = "VALIDATION_FAILED"


class BodyTooLarge(BadRequest):
    status = 413
    code = "BODY_TOO_LARGE"


class RequestTimeout(BadRequest):
    """The client did not send its request (headers, or the next piece of its body) within the read timeout."""

    status = 408
    code = "REQUEST_TIMEOUT"


class Unauthorized(GptloadError):
    status = 401
    code = "UNAUTHORIZED"


class InvalidProxyKey(Unauthorized):
    code = "INVALID_PROXY_KEY"


class AccessDenied(GptloadError):
    """An access key presented for a group or a model it may not use."""

    status = 403
    code = "ACCESS_DENIED"


class RateLimited(GptloadError):
    """An access key over its ``rpm_limit``; ``details["retry_after"]`` says when to try again."""

    status = 429
    code = "RATE_LIMITED"


class QuotaExceeded(GptloadError):
    """An access key over a daily limit; ``details["retry_after"]`` runs until the day resets."""

    status = 429
    code = "QUOTA_EXCEEDED"


class NotFound(GptloadError):
    status = 404
    code = "NOT_FOUND"


class GroupNotFound(NotFound):
    code = "GROUP_NOT_FOUND"


class RouteNotFound(NotFound):
    code = "ROUTE_NOT_FOUND"


class ModelNotAllowed(NotFound):
    """A group in strict redirect mode was asked for a model that is not one of its redirect sources."""

    code = "MODEL_NOT_ALLOWED"


class MethodNotAllowed(GptloadError):
    status = 405
    code = "METHOD_NOT_ALLOWED"


class Conflict(GptloadError):
    status = 409
    code = "CONFLICT"


class GroupExists(Conflict):
    code = "GROUP_EXISTS"


class NoKeysAvailable(GptloadError):
    """No key of the group can serve this model right now (all invalid, cooling or already tried)."""

    status = 503
    code = "NO_KEYS_AVAILABLE"


class CircuitOpen(GptloadError):
    """The upstream failed for this model on consecutive attempts; requests wait out the breaker's period."""

    status = 503
    code = "UPSTREAM_UNAVAILABLE"


class UpstreamUnreachable(GptloadError):
    """Every attempt failed before an HTTP answer arrived (connect error, timeout)."""

    status = 502
    code = "UPSTREAM_UNREACHABLE"


class UpstreamTimeout(UpstreamUnreachable):
    """The upstream answered but its answer did not arrive before the call's deadline, and no byte of it had been
    relayed yet (``request_timeout_seconds``)."""

    status = 504
    code = "UPSTREAM_TIMEOUT"


class StoreUnavailable(GptloadError):
    """The state store could not be reached; adapters raise this ``from`` their SDK's exception."""

    status = 503
    code = "STORE_UNAVAILABLE"


class StoreRejected(StoreUnavailable):
    """The store answered that some usage events can *never* be written (Firestore INVALID_ARGUMENT: a document
    over 1 MiB, a write too large for any commit, a value Firestore cannot hold; SQLite: an integrity or data error,
    an integer out of range, text that cannot be encoded). ``events`` are the events not written; every other event
    of the batch was applied, exactly once. Raised only by ``Store.record_usage`` and only on evidence that the
    request itself is invalid, never on a timeout, UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED or a
    permission error.

    A subclass of StoreUnavailable on purpose: a caller that does not know it keeps treating the write as failed
    and retries it (nothing is lost); only ``UsageBuffer`` tells it apart, isolates the rejected events by
    halving and drops them, counted."""

    status = 500
    code = "STORE_REJECTED"

    def __init__(self, message: str, *, events: list[Any] | None = None) -> None:
        super().__init__(message)
        self.events: list[Any] = list(events or [])


class AuthUnavailable(GptloadError):
    """A token cannot be checked now: Google's OIDC certificates could not be fetched and none is cached."""

    status = 503
    code = "AUTH_UNAVAILABLE"


class LiveSessionsFull(GptloadError):
    """This instance holds ``LIVE_MAX_SESSIONS`` Live API sessions already (each holds a server thread for its
    life): the handshake is refused before the upgrade, so that plain HTTP requests always find a thread."""

    status = 503
    code = "LIVE_SESSIONS_FULL"
