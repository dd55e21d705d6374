"""Access keys through the router in process (SQLite): the admin API, and the gate on the proxy path. Requests
the gate admits go on to a group without keys (503 NO_KEYS_AVAILABLE), so "passed the gate" and "refused" are told apart by status;
that refused requests never reach an upstream is checked end to end in tests/e2e/test_access_keys.py."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from gptload.models import ANONYMOUS
from tests.unit.admin_client import UNREACHABLE, AdminClient, error_of

GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = {"contents": [{"parts": [{"text": "hi"}]}]}


@pytest.fixture
def client(tmp_path):
    c = AdminClient(tmp_path)
    for name in ("alpha", "beta"):
        r = c.open("POST", "/api/groups", body={"name": name, "upstreams": [{"url": UNREACHABLE}]})
        assert r.status_code == 201, r.get_data(as_text=True)
    yield c
    c.close()


def create(client, **fields):
    r = client.open("POST", "/api/access-keys", body={"name": "client", **fields})
    assert r.status_code == 201, r.get_data(as_text=True)
    body = r.get_json()
    return body["access_key"], body["key"]


def call(client, secret, group="alpha", path=GEN, body=BODY, how="x-goog-api-key"):
    headers = {"Authorization": ""}  # no admin key on the proxy path
    url = f"/proxy/{group}{path}"
    if how == "x-goog-api-key":
        headers["x-goog-api-key"] = secret
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {secret}"
    elif how == "x-api-key":
        headers["X-Api-Key"] = secret
    else:
        url += f"?key={secret}"
    return client.client.post(url, headers=headers, json=body)


def test_create_reveals_the_secret_once_and_lists_it_masked_with_an_id(client, tmp_path):
    created, secret = create(client, groups=["alpha"], rpm_limit=10, notes="team A")
    assert secret.startswith("sk-") and len(secret) >= 40
    assert created["id"].startswith("ak_") and created["key"] == f"{secret[:4]}...{secret[-4:]}"
    assert created["status"] == "active" and created["groups"] == ["alpha"] and created["rpm_limit"] == 10
    listed = client.open("GET", "/api/access-keys").get_json()
    (row,) = listed["access_keys"]
    one = client.open("GET", f"/api/access-keys/{created['id']}").get_json()["access_key"]
    for shown in (json.dumps(listed), json.dumps(one), json.dumps(created)):
        assert secret not in shown and "digest" not in shown
    assert row["id"] == created["id"] and row["key"] == created["key"]
    assert row["usage"]["today"] == {"requests": 0, "failures": 0, "refused": 0, "tokens": 0}
    # stored only as a digest: the secret is nowhere in the database files
    for path in tmp_path.glob("gptload.db*"):
        assert secret.encode() not in path.read_bytes()


@pytest.mark.parametrize("how", ["x-goog-api-key", "bearer", "x-api-key", "query"])
def test_a_client_presents_it_like_a_proxy_key(client, how):
    _, secret = create(client)
    r = call(client, secret, how=how)
    assert error_of(r) == (503, "NO_KEYS_AVAILABLE")  # passed the gate; the group has no keys


def test_validation_names_every_bad_field(client):
    r = client.open(
        "POST",
        "/api/access-keys",
        body={
            "name": "",
            "groups": ["Bad Name"],
            "models": ["gem*ini"],
            "rpm_limit": -1,
            "daily_request_limit": 1.5,
            "daily_token_limit": True,
            "expires_at": "tomorrow",
            "enabled": "yes",
            "color": "red",
        },
    )
    assert error_of(r) == (400, "VALIDATION_FAILED")
    fields = r.get_json()["error"]["details"]["fields"]
    assert set(fields) == {
        "name",
        "groups",
        "models",
        "rpm_limit",
        "daily_request_limit",
        "daily_token_limit",
        "expires_at",
        "enabled",
        "color",
    }
    assert client.open("GET", "/api/access-keys").get_json()["access_keys"] == []
    r = client.open("POST", "/api/access-keys", body={"name": "x", "key": "AIza" + "x" * 35})
    assert error_of(r) == (400, "VALIDATION_FAILED")


def test_scope_refusals_are_403_access_denied_in_googles_envelope(client):
    _, secret = create(client, groups=["alpha"], models=["gemini-2.5-pro", "gemini-2.0*"])
    r = call(client, secret, group="beta", path="/v1beta/models/gemini-2.5-pro:generateContent")
    assert error_of(r) == (403, "ACCESS_DENIED")
    assert r.get_json()["error"]["status"] == "PERMISSION_DENIED"
    assert error_of(call(client, secret)) == (403, "ACCESS_DENIED")  # gemini-2.5-flash is not allowed
    assert error_of(call(client, secret, path="/v1beta/models/gemini-2.0-flash-lite:generateContent"))[0] == 503
    openai = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
    r = call(client, secret, path="/v1beta/openai/chat/completions", body=openai, how="bearer")
    assert error_of(r) == (403, "ACCESS_DENIED")
    # an unknown group is refused like a group it may not use: a scoped key learns nothing about other groups
    assert error_of(call(client, secret, group="nope")) == (403, "ACCESS_DENIED")
    _, everywhere = create(client)  # a key for every group (like a global proxy key) is told it does not exist
    assert error_of(call(client, everywhere, group="nope")) == (404, "GROUP_NOT_FOUND")


def test_disabled_expired_unknown_rotated_and_deleted_keys_are_401(client):
    created, secret = create(client)
    key_id = created["id"]
    assert error_of(call(client, "sk-" + "x" * 43)) == (401, "INVALID_PROXY_KEY")
    r = client.open("PUT", f"/api/access-keys/{key_id}", body={"enabled": False})
    assert r.status_code == 200 and r.get_json()["access_key"]["status"] == "disabled"
    assert error_of(call(client, secret)) == (401, "INVALID_PROXY_KEY")
    r = client.open("PUT", f"/api/access-keys/{key_id}", body={"enabled": True, "expires_at": time.time() - 1})
    assert r.get_json()["access_key"]["status"] == "expired"
    assert error_of(call(client, secret)) == (401, "INVALID_PROXY_KEY")
    client.open("PUT", f"/api/access-keys/{key_id}", body={"expires_at": None})
    assert error_of(call(client, secret))[0] == 503
    r = client.open("POST", f"/api/access-keys/{key_id}/rotate")
    assert r.status_code == 200
    rotated = r.get_json()
    assert rotated["access_key"]["id"] == key_id and rotated["key"] != secret
    assert error_of(call(client, secret)) == (401, "INVALID_PROXY_KEY")
    assert error_of(call(client, rotated["key"]))[0] == 503
    assert client.open("DELETE", f"/api/access-keys/{key_id}").get_json() == {"deleted": key_id}
    assert error_of(call(client, rotated["key"])) == (401, "INVALID_PROXY_KEY")
    assert error_of(client.open("GET", f"/api/access-keys/{key_id}")) == (404, "NOT_FOUND")
    assert error_of(client.open("DELETE", f"/api/access-keys/{key_id}")) == (404, "NOT_FOUND")
    assert error_of(client.open("PUT", f"/api/access-keys/{key_id}", body={"name": "x"})) == (404, "NOT_FOUND")


def test_rpm_limit_is_429_rate_limited_with_retry_after(client):
    _, secret = create(client, rpm_limit=2)
    assert [error_of(call(client, secret))[0] for _ in range(2)] == [503, 503]
    r = call(client, secret)
    assert error_of(r) == (429, "RATE_LIMITED")
    assert r.get_json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(r.headers["Retry-After"]) <= 61
    retry = [d for d in r.get_json()["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert retry and retry[0]["retryDelay"] == f"{r.headers['Retry-After']}s"


def test_daily_limit_is_429_quota_exceeded_until_midnight_of_the_limits_timezone(client):
    _, secret = create(client, daily_request_limit=2)
    assert [error_of(call(client, secret))[0] for _ in range(2)] == [503, 503]
    r = call(client, secret)
    assert error_of(r) == (429, "QUOTA_EXCEEDED")
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(r.headers["Retry-After"]) - (midnight - now).total_seconds()) <= 5
    r = client.open("PUT", "/api/settings", body={"limits_timezone": "Mars/Olympus"})
    assert error_of(r) == (400, "VALIDATION_FAILED")
    assert "Mars/Olympus" in r.get_json()["error"]["details"]["fields"]["limits_timezone"]
    assert client.open("PUT", "/api/settings", body={"limits_timezone": "Asia/Kolkata"}).status_code == 200
    r = call(client, secret)
    kolkata_reset = (now + timedelta(hours=5, minutes=30) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    ) - timedelta(hours=5, minutes=30)
    assert abs(int(r.headers["Retry-After"]) - (kolkata_reset.replace(tzinfo=UTC) - now).total_seconds()) <= 5


def test_usage_logs_and_statistics_carry_the_access_key(client):
    created, secret = create(client, rpm_limit=1)
    key_id = created["id"]
    call(client, secret)  # admitted (503: the group has no keys)
    call(client, secret)  # refused: 429
    client.client.post(f"/proxy/alpha{GEN}", headers={"x-goog-api-key": "nothing-known-123"}, json=BODY)
    logs = client.open("GET", f"/api/logs?access_key={key_id}").get_json()
    assert logs["total"] == 2 and {row["access_key"] for row in logs["logs"]} == {key_id}
    assert sorted(row["status_code"] for row in logs["logs"]) == [429, 503]
    anonymous = client.open("GET", f"/api/logs?access_key={ANONYMOUS}").get_json()
    assert anonymous["total"] == 1 and anonymous["logs"][0]["status_code"] == 401
    hourly = client.open("GET", f"/api/stats/hourly?access_key={key_id}&hours=3").get_json()
    assert hourly["access_key"] == key_id and len(hourly["series"]) == 3
    last = hourly["series"][-1]
    assert (last["requests"], last["failures"], last["refused"]) == (2, 2, 1)
    (row,) = client.open("GET", "/api/access-keys").get_json()["access_keys"]
    assert row["usage"]["today"] == {"requests": 2, "failures": 2, "refused": 1, "tokens": 0}
    assert row["usage"]["30d"]["requests"] == 2 and row["usage"]["last_used_at"] > 0
    top = client.open("GET", "/api/dashboard").get_json()["top_access_keys"]
    assert top["by_requests"][0]["id"] == key_id and top["by_requests"][0]["name"] == "client"
    assert {t["id"] for t in top["by_requests"]} == {key_id, ANONYMOUS}


def test_legacy_proxy_keys_move_to_access_keys_and_keep_working(client):
    legacy = "legacy-proxy-key-0001"
    r = client.open("PUT", "/api/groups/alpha", body={"proxy_keys": [legacy]})
    assert r.status_code == 200
    client.open("PUT", "/api/settings", body={"proxy_keys": ["global-proxy-key-01"]})
    before = client.open("GET", "/api/access-keys").get_json()["legacy"]
    assert {"group": "alpha", "count": 1} in before and {"group": None, "count": 1} in before
    assert error_of(call(client, legacy))[0] == 503
    r = client.open("POST", "/api/access-keys/adopt", body={"group": "alpha"})
    assert r.status_code == 200, r.get_data(as_text=True)
    (adopted,) = r.get_json()["adopted"]
    assert adopted["groups"] == ["alpha"] and legacy not in r.get_data(as_text=True)
    assert client.open("GET", "/api/groups/alpha").get_json()["proxy_keys"] == []
    assert error_of(call(client, legacy))[0] == 503  # same secret, now an access key
    assert error_of(call(client, legacy, group="beta")) == (403, "ACCESS_DENIED")
    logs = client.open("GET", f"/api/logs?access_key={adopted['id']}").get_json()
    assert logs["total"] == 2
    r = client.open("POST", "/api/access-keys/adopt", body={"group": None})
    (global_key,) = r.get_json()["adopted"]
    assert global_key["groups"] == ["*"]
    assert error_of(call(client, "global-proxy-key-01", group="beta"))[0] == 503
    assert client.open("GET", "/api/access-keys").get_json()["legacy"] == []
    assert error_of(client.open("POST", "/api/access-keys/adopt", body={"group": "nope"})) == (404, "GROUP_NOT_FOUND")


def test_allowed_groups_for_a_presented_key(client):
    _, secret = create(client, groups=["beta"])
    gate = client.services.access
    assert gate.allowed_groups(secret, ["alpha", "beta"]) == ["beta"]
    assert gate.allowed_groups("unknown-secret-123", ["alpha", "beta"]) is None


def test_integration_info_lists_the_groups_an_access_key_may_use(client):
    _, scoped = create(client, groups=["beta"])
    r = client.client.get("/api/integration/info", headers={"x-goog-api-key": scoped})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert [g["name"] for g in r.get_json()["groups"]] == ["beta"]
    _, everywhere = create(client)
    r = client.client.get("/api/integration/info", headers={"Authorization": f"Bearer {everywhere}"})
    assert [g["name"] for g in r.get_json()["groups"]] == ["alpha", "beta"]
    _, disabled = create(client, enabled=False)
    r = client.client.get("/api/integration/info", headers={"x-goog-api-key": disabled})
    assert error_of(r) == (401, "INVALID_PROXY_KEY")
