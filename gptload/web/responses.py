"""The one place where errors become HTTP.

- Admin and other routes: ``{"error": {"code": "NO_KEYS_AVAILABLE", "message": "..."}}`` with the error's status.
- Proxy routes (``/proxy/...``): Google's envelope, so SDKs raise their usual typed errors::

    {"error": {"code": 503, "message": "...", "status": "UNAVAILABLE",
               "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "NO_KEYS_AVAILABLE", "domain": "gptload"},
                           {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]}}

``details["retry_after"]`` of an error becomes a ``Retry-After`` header (and the RetryInfo detail).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from werkzeug.wrappers import Response

from gptload.errors import GptloadError

log = logging.getLogger(__name__)
JSON = "application/json"


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # allow_nan=False: NaN and Infinity are not JSON; better a 500 than a body no client can parse.
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return Response(body, status=status, mimetype=JSON, headers=headers)


# HTTP status -> google.rpc.Code name, as Google's own error bodies use them.
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    414: "INVALID_ARGUMENT",
    431: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def google_error_body(status: int, message: str, reason: str, retry_after: float | None = None) -> dict[str, Any]:
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "gptload"}
    ]
    if retry_after is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after_seconds(retry_after)}s"}
        )
    return {
        "error": {
            "code": status,
            "message": message,
            "status": GOOGLE_STATUS.get(status, "UNKNOWN"),
            "details": details,
        }
    }


def retry_after_seconds(value: float) -> int:
    return max(1, math.ceil(value))


def error_response(error: GptloadError, *, google: bool = False) -> Response:
    """``google``: render in Google's envelope (proxy routes)."""
    headers = {}
    retry_after = error.details.get("retry_after") if error.details else None
    if not isinstance(retry_after, (int, float)) or isinstance(retry_after, bool):
        retry_after = None
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after_seconds(retry_after))
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if google:
        return json_response(
            google_error_body(error.status, error.message, error.code, retry_after), error.status, headers
        )
    return json_response(error.to_dict(), error.status, headers)


def internal_error(exc: BaseException, *, google: bool = False) -> Response:
    log.exception("unhandled error: %s", type(exc).__name__)
    message = "internal error; see the server log"
    if google:
        return json_response(google_error_body(500, message, "INTERNAL"), 500)
    return json_response({"error": {"code": "INTERNAL", "message": message}}, 500)
