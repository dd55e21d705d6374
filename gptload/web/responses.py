"""The one place where errors become HTTP: JSON ``{"error": {"code", "message"}}`` with the error's status."""

from __future__ import annotations

import json
import logging
from typing import Any

from werkzeug.wrappers import Response

from gptload.errors import GptloadError

log = logging.getLogger(__name__)
JSON = "application/json"


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # allow_nan=False: NaN and Infinity are not JSON; better a 500 than a body no client can parse.
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return Response(body, status=status, mimetype=JSON, headers=headers)


def error_response(error: GptloadError) -> Response:
    headers = {}
    retry_after = error.details.get("retry_after") if error.details else None
    if isinstance(retry_after, (int, float)):
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return json_response(error.to_dict(), error.status, headers)


def internal_error(exc: BaseException) -> Response:
    log.exception("unhandled error: %s", type(exc).__name__)
    return json_response({"error": {"code": "INTERNAL", "message": "internal error; see the server log"}}, 500)
