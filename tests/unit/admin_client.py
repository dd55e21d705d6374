"""An in-process WSGI client of the Router on a fresh SQLite store, for tests of hostile admin input.

It goes through the same ``Router.__call__`` as ``main.handler`` (without functions-framework's Flask app around
it), so a test can build several independent services and look into their store directly.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from werkzeug.test import Client
from werkzeug.wrappers import Request

from gptload.app import build_services
from gptload.config import Config
from gptload.web.router import Router

AUTH_KEY = "unit-admin-key-123"
AUTH = {"Authorization": f"Bearer {AUTH_KEY}"}
UNREACHABLE = "http://127.0.0.1:9"  # connection refused at once: nothing ever leaves the machine


class AdminClient:
    def __init__(self, data_dir: Path, vault: Any = None, **env: str) -> None:
        config = Config.from_env(
            {"AUTH_KEY": AUTH_KEY, "DATA_DIR": str(data_dir), "MAINTENANCE_INTERVAL_SECONDS": "0", **env}
        )
        self.services = build_services(config, vault=vault)
        self.router = Router(self.services)
        self.client = Client(self._wsgi)

    def _wsgi(self, environ, start_response):
        return self.router(Request(environ))(environ, start_response)

    def open(self, method: str, path: str, *, body: Any = None, raw: bytes | None = None, **kw: Any):
        headers = {**AUTH, **kw.pop("headers", {})}
        if body is not None:
            raw = json.dumps(body).encode()
        if raw is not None:
            kw["data"] = raw
            headers.setdefault("Content-Type", "application/json")
        return self.client.open(path, method=method, headers=headers, **kw)

    def snapshot(self) -> dict[str, Any]:
        """Everything an admin call may change: settings, groups, keys (state and secrets), in stored form; after
        the background tasks that earlier calls started (validation, import) have finished."""
        self.join_tasks()
        store = self.services.store
        groups = store.list_groups()
        return {
            "settings": store.get_settings(),
            "groups": [g.to_dict() for g in groups],
            "keys": {g.name: store.list_keys(g.name) for g in groups},
            "secrets": {g.name: self.services.vault.load(g.name) for g in groups},
        }

    def join_tasks(self) -> None:
        for thread in threading.enumerate():
            if thread.name in ("gptload-validate", "gptload-import"):
                thread.join(10)

    def close(self) -> None:
        self.join_tasks()  # tasks started by a test must not outlive the store
        self.services.shutdown()


def error_of(response) -> tuple[int, str]:
    """(status, code) of a gptload JSON error; asserts the envelope: gptload's own on admin routes, Google's on
    proxy routes (numeric code, Google status, the code as ErrorInfo reason)."""
    body = json.loads(response.get_data())
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    error = body["error"]
    if isinstance(error["code"], int):
        assert error["code"] == response.status_code and error["status"], body
        (info,) = [d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
        assert info["domain"] == "gptload", body
        return response.status_code, info["reason"]
    return response.status_code, error["code"]


def strict_json(response) -> Any:
    """The body parsed as strict JSON: NaN and Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"invalid JSON constant {name} in the response")

    return json.loads(response.get_data(), parse_constant=refuse)
