"""The route table: every route is documented, admin routes refuse callers without AUTH_KEY, unknown methods and
paths get the right error envelope."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gptload.app import build_services
from gptload.config import Config
from gptload.web.router import ADMIN, PROXY, PUBLIC, SCHEDULER, Router

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def router(tmp_path):
    services = build_services(Config.from_env({"AUTH_KEY": "router-admin-key", "DATA_DIR": str(tmp_path)}))
    yield Router(services)
    services.shutdown()


def call(router, method, path, headers=None):
    return router(Request(EnvironBuilder(path=path, method=method, headers=headers or {}).get_environ()))


def concrete(path: str) -> str:
    return re.sub(r"<(?:path:)?(\w+)>", lambda m: "x-" + m.group(1), path)


def test_every_admin_route_refuses_a_caller_without_the_auth_key(router):
    admin = [r for r in router.routes if r.auth in (ADMIN, SCHEDULER)]
    assert len(admin) >= 25
    for route in admin:
        for method in route.methods:
            r = call(router, method, concrete(route.path), {"Authorization": "Bearer wrong-key"})
            assert r.status_code == 401, (method, route.path)
            assert r.get_json()["error"]["code"] == "UNAUTHORIZED"


def test_every_api_route_is_in_the_reference():
    api = (ROOT / "docs" / "api.md").read_text()
    from gptload.web import router as module

    routes = module.Router.__new__(module.Router)  # the table needs no services to be listed
    routes.services = type("S", (), {"admin": None, "insights": None})()
    for route in routes._route_table():
        if route.path.startswith("/api/"):
            documented = re.sub(r"<(?:\w+_)?id>", "{id}", route.path).replace("<name>", "{name}")
            assert documented in api, route.path


def test_public_and_proxy_routes(router):
    kinds = {r.path: r.auth for r in router.routes}
    assert kinds["/health"] == PUBLIC and kinds["/proxy/<group>/<path:path>"] == PROXY
    assert call(router, "GET", "/health").status_code == 200
    r = call(router, "PATCH", "/api/groups", {"Authorization": "Bearer router-admin-key"})
    assert r.status_code == 405 and r.get_json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    r = call(router, "GET", "/proxy/nothing")  # a proxy path without an upstream path: Google's envelope
    assert r.status_code == 404 and r.get_json()["error"]["status"] == "NOT_FOUND"
