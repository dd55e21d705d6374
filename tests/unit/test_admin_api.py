"""The admin API and error surface through the real entry point: functions-framework's app around main.handler."""

from __future__ import annotations

from pathlib import Path

import pytest
from functions_framework import create_app

from gptload.errors import StoreUnavailable
from tests.fakes.fake_gemini import make_key

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer unit-admin-key-123"}
KEYS = [make_key(i) for i in range(4)]


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTH_KEY", "unit-admin-key-123")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("MAINTENANCE_INTERVAL_SECONDS", "0")
    for name in ("STORE", "VAULT", "ENCRYPTION_KEY", "ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://console.example")
    flask_app = create_app("handler", str(ROOT / "main.py"))
    yield flask_app.test_client()
    import sys

    router = sys.modules["main"]._router
    if router is not None:
        router.services.shutdown()


def make_group(app, name="g1", **extra):
    r = app.post("/api/groups", headers=AUTH, json={"name": name, "proxy_keys": ["proxy-key-0001"], **extra})
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()


def error_of(r):
    body = r.get_json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    return body["error"]["code"]


def test_health_needs_no_auth(app):
    r = app.get("/health")
    assert r.status_code == 200 and r.get_json()["status"] == "ok"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "unit-admin-key-123"}])
def test_admin_needs_the_auth_key(app, headers):
    r = app.get("/api/groups", headers=headers)
    assert r.status_code == 401 and error_of(r) == "UNAUTHORIZED"


def test_group_lifecycle(app):
    created = make_group(app, display_name="Prod", upstreams=[{"url": "http://127.0.0.1:9/", "weight": 3}])
    assert created["upstreams"] == [{"url": "http://127.0.0.1:9", "weight": 3}]
    assert created["key_counts"] == {"active": 0, "cooling": 0, "invalid": 0, "disabled": 0, "total": 0}
    assert [g["name"] for g in app.get("/api/groups", headers=AUTH).get_json()["groups"]] == ["g1"]
    r = app.put("/api/groups/g1", headers=AUTH, json={"description": "d", "settings": {"max_retries": 1}})
    assert r.status_code == 200 and r.get_json()["settings"] == {"max_retries": 1}
    assert app.get("/api/groups/g1", headers=AUTH).get_json()["description"] == "d"
    r = app.delete("/api/groups/g1", headers=AUTH)
    assert r.get_json() == {"deleted": "g1", "keys_deleted": 0}
    assert error_of(app.get("/api/groups/g1", headers=AUTH)) == "GROUP_NOT_FOUND"


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "upstreams": [{"url": "ftp://x"}]}, "upstreams"),
        ({"name": "ok", "upstreams": [{"url": "http://x", "weight": 0}]}, "upstreams"),
        ({"name": "ok", "upstreams": []}, "upstreams"),
        ({"name": "ok", "proxy_keys": ["short"]}, "proxy_keys"),
        ({"name": "ok", "proxy_keys": [KEYS[0]]}, "proxy_keys"),
        ({"name": "ok", "settings": {"proxy_keys": ["abcdefghij"]}}, "settings"),
        ({"name": "ok", "settings": {"max_retries": "3"}}, "settings"),
        ({"name": "ok", "colour": "red"}, "colour"),
    ],
)
def test_group_validation_names_the_field(app, payload, field):
    r = app.post("/api/groups", headers=AUTH, json=payload)
    assert r.status_code == 400 and error_of(r) == "VALIDATION_FAILED"
    assert field in r.get_json()["error"]["details"]["fields"]
    if field == "proxy_keys" and payload["proxy_keys"] == [KEYS[0]]:
        assert KEYS[0] not in r.get_data(as_text=True)


def test_duplicate_group_and_malformed_json(app):
    make_group(app)
    r = app.post("/api/groups", headers=AUTH, json={"name": "g1"})
    assert r.status_code == 409 and error_of(r) == "GROUP_EXISTS"
    r = app.post("/api/groups", headers={**AUTH, "Content-Type": "application/json"}, data=b'{"name": ')
    assert r.status_code == 400 and error_of(r) == "INVALID_JSON"
    assert app.get("/api/groups/g1", headers=AUTH).status_code == 200  # nothing lost


def test_keys_import_list_delete_restore(app):
    make_group(app)
    text = f"{KEYS[0]}\n{KEYS[1]}, {KEYS[2]};{KEYS[0]} not-a-key AIzaTooShort"
    r = app.post("/api/groups/g1/keys", headers=AUTH, json={"keys": text})
    assert r.get_json() == {
        "added": 3,
        "duplicate": 1,
        "rejected": 2,
        "rejected_samples": ["********", "********"],
        # a rejected token: its line and enough of it to find it, never enough to use it
        "rejected_lines": [{"line": 2, "text": "no*** (9 characters)"}, {"line": 2, "text": "AI*** (12 characters)"}],
    }
    r = app.post("/api/groups/g1/keys", headers=AUTH, json={"keys": f"{KEYS[1]} {KEYS[3]}"})
    assert r.get_json()["added"] == 1 and r.get_json()["duplicate"] == 1
    listing = app.get("/api/groups/g1/keys?page=1&page_size=3", headers=AUTH)
    body = listing.get_json()
    assert body["total"] == 4 and len(body["keys"]) == 3
    text_out = listing.get_data(as_text=True)
    assert all(k not in text_out for k in KEYS)
    assert body["keys"][0]["key"].startswith("AIza...") and body["keys"][0]["status"] == "active"
    assert app.get("/api/groups/g1/keys?page=2&page_size=3", headers=AUTH).get_json()["keys"][0]["id"]
    assert error_of(app.get("/api/groups/g1/keys?status=weird", headers=AUTH)) == "VALIDATION_FAILED"
    r = app.delete("/api/groups/g1/keys", headers=AUTH, json={"keys": KEYS[0]})
    assert r.get_json() == {"deleted": 1}
    some_id = app.get("/api/groups/g1/keys", headers=AUTH).get_json()["keys"][0]["id"]
    assert app.delete("/api/groups/g1/keys", headers=AUTH, json={"ids": [some_id]}).get_json() == {"deleted": 1}
    assert app.get("/api/groups/g1/keys", headers=AUTH).get_json()["total"] == 2
    assert app.post("/api/groups/g1/keys/restore", headers=AUTH).get_json() == {"restored": 0}
    assert error_of(app.post("/api/groups/nope/keys", headers=AUTH, json={"keys": KEYS[0]})) == "GROUP_NOT_FOUND"
    assert error_of(app.post("/api/groups/g1/keys", headers=AUTH, json={"text": "x"})) == "VALIDATION_FAILED"


def test_settings_are_validated(app):
    body = app.get("/api/settings", headers=AUTH).get_json()
    assert body["settings"]["max_retries"] == 3
    assert {s["name"] for s in body["schema"]} >= {"max_retries", "blacklist_threshold"}
    r = app.put("/api/settings", headers=AUTH, json={"max_retries": 5})
    assert r.get_json()["settings"]["max_retries"] == 5
    r = app.put("/api/settings", headers=AUTH, json={"max_retries": 500, "unknown": 1})
    assert r.status_code == 400 and set(r.get_json()["error"]["details"]["fields"]) == {"max_retries", "unknown"}
    assert app.get("/api/settings", headers=AUTH).get_json()["settings"]["max_retries"] == 5


def google_error_of(r, status: int, google_status: str) -> str:
    """Proxy routes answer in Google's envelope: numeric code, Google status, ErrorInfo reason in domain gptload."""
    body = r.get_json()
    assert r.status_code == status and set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == status and error["status"] == google_status and error["message"]
    (info,) = [d for d in error["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert info["domain"] == "gptload"
    return info["reason"]


def test_proxy_errors_use_googles_envelope_with_stable_reasons(app):
    make_group(app)
    r = app.post("/proxy/g1/v1beta/models/m:generateContent", json={})
    assert google_error_of(r, 401, "UNAUTHENTICATED") == "INVALID_PROXY_KEY"
    r = app.post(
        "/proxy/g1/v1beta/models/m:generateContent", headers={"x-goog-api-key": "proxy-key-0001"}, data=b"x" * 5000
    )
    assert google_error_of(r, 413, "INVALID_ARGUMENT") == "BODY_TOO_LARGE"
    r = app.post("/proxy/g1/v1beta/models/m:generateContent", headers={"x-goog-api-key": "proxy-key-0001"}, json={})
    assert google_error_of(r, 503, "UNAVAILABLE") == "NO_KEYS_AVAILABLE"
    assert "the group has no keys" in r.get_json()["error"]["message"]
    # admin routes keep gptload's own envelope
    assert error_of(app.get("/api/nothing", headers=AUTH)) == "ROUTE_NOT_FOUND"
    r = app.patch("/api/groups", headers=AUTH)
    assert r.status_code == 405 and error_of(r) == "METHOD_NOT_ALLOWED"


def test_group_names_cannot_be_enumerated_without_a_proxy_key(app):
    """An unknown group and a known group answer the same to a request without a valid proxy key."""
    make_group(app)
    known = app.post("/proxy/g1/v1beta/models/m:generateContent", headers={"x-goog-api-key": "wrong"}, json={})
    unknown = app.post("/proxy/nope/v1beta/models/m:generateContent", headers={"x-goog-api-key": "wrong"}, json={})
    assert known.status_code == unknown.status_code == 401
    assert known.get_json() == unknown.get_json()
    # with a valid global proxy key the truth may be told
    app.put("/api/settings", headers=AUTH, json={"proxy_keys": ["global-key-0001"]})
    r = app.post("/proxy/nope/v1beta/models/m:generateContent", headers={"x-goog-api-key": "global-key-0001"}, json={})
    assert google_error_of(r, 404, "NOT_FOUND") == "GROUP_NOT_FOUND"


def test_global_proxy_keys_work_for_every_group(app):
    make_group(app)
    app.put("/api/settings", headers=AUTH, json={"proxy_keys": ["global-key-0001"]})
    r = app.post("/proxy/g1/v1beta/models/m:generateContent", headers={"x-goog-api-key": "global-key-0001"}, json={})
    assert google_error_of(r, 503, "UNAVAILABLE") == "NO_KEYS_AVAILABLE"  # authorised; just no keys in the group


def test_store_unavailable_is_a_clear_503_and_the_proxy_keeps_its_cache(app, monkeypatch):
    import sys

    make_group(app)
    services = sys.modules["main"]._router.services

    def down(*a, **k):
        raise StoreUnavailable("store unreachable (test)")

    monkeypatch.setattr(services.store, "list_groups", down)
    monkeypatch.setattr(services.store, "markers", down)
    r = app.get("/api/groups", headers=AUTH)
    assert r.status_code == 503 and error_of(r) == "STORE_UNAVAILABLE"
    services.pool._checked_at = float("-inf")  # force a refresh attempt: it fails, the cached view still serves
    r = app.post("/proxy/g1/v1beta/models/m:generateContent", headers={"x-goog-api-key": "proxy-key-0001"}, json={})
    assert google_error_of(r, 503, "UNAVAILABLE") == "NO_KEYS_AVAILABLE"


def test_cors_only_for_allowed_origins(app):
    r = app.options("/api/groups", headers={"Origin": "https://console.example"})
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "https://console.example"
    r = app.get("/api/groups", headers={**AUTH, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
