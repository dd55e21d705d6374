"""Access keys end to end: the real server, the fake Gemini upstream, and the real SDKs. Refusals (403 scope, 429
rate, 429 daily budget) raise the SDKs' typed errors carrying gptload's reason, reach no upstream and charge no pool
key; admitted requests are served and attributed to the access key in logs and statistics."""

from __future__ import annotations

import openai
import pytest
import requests
from google import genai
from google.genai import types

from tests.e2e.conftest import wait_for

GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = {"contents": [{"parts": [{"text": "hi"}]}]}


def create(server, **fields) -> tuple[dict, str]:
    r = server.api("POST", "/api/access-keys", json={"name": "e2e client", **fields})
    assert r.status_code == 201, r.text
    return r.json()["access_key"], r.json()["key"]


def genai_client(group, secret: str) -> genai.Client:
    return genai.Client(api_key=secret, http_options=types.HttpOptions(base_url=group.base, api_version="v1beta"))


def openai_client(group, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{group.base}/v1beta/openai/", api_key=secret, max_retries=0)


def reason_of(error_json: dict) -> str:
    error = error_json.get("error", error_json)
    (info,) = [d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    return info["reason"]


def charged(group) -> int:
    return sum(row["request_count"] for row in group.key_rows())


def test_genai_rate_limit_and_scope_raise_typed_errors_and_reach_no_upstream(server, group, fake):
    created, secret = create(server, groups=[group.name], models=["gemini-2.5-flash*"], rpm_limit=3)
    c = genai_client(group, secret)
    for _ in range(3):
        assert c.models.generate_content(model="gemini-2.5-flash", contents="hi").text
    served = len(fake.requests)
    assert served == 3
    with pytest.raises(genai.errors.ClientError) as info:
        c.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert reason_of(info.value.details) == "RATE_LIMITED"
    assert 1 <= int(info.value.response.headers["Retry-After"]) <= 61
    with pytest.raises(genai.errors.ClientError) as info:
        c.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"
    assert reason_of(info.value.details) == "ACCESS_DENIED" and "gemini-2.0-flash" in info.value.message
    other = server.make_group(fake.url, [fake.add_key()])
    c_other = genai_client(other, secret)  # keep a reference: a collected Client closes its HTTP client
    with pytest.raises(genai.errors.ClientError) as info:
        c_other.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert info.value.code == 403 and reason_of(info.value.details) == "ACCESS_DENIED"
    assert len(fake.requests) == served  # nothing refused was forwarded
    key_id = created["id"]

    def attributed():
        logs = server.api("GET", f"/api/logs?access_key={key_id}&page_size=50").json()
        return logs if logs["total"] == 6 else None

    logs = wait_for(attributed, what="six log rows of the access key")
    assert sorted(r["status_code"] for r in logs["logs"]) == [200, 200, 200, 403, 403, 429]
    assert all(r["access_key"] == key_id for r in logs["logs"])
    assert charged(group) == 3  # the pool keys served exactly the admitted requests
    row = server.api("GET", f"/api/access-keys/{key_id}").json()["access_key"]
    assert row["usage"]["today"]["requests"] == 6 and row["usage"]["today"]["refused"] == 3
    assert row["usage"]["today"]["tokens"] > 0


def test_openai_sdk_raises_its_typed_errors_with_our_reason(server, group, fake):
    _, secret = create(server, groups=[group.name], models=["gemini-2.5-flash"], rpm_limit=1)
    oa = openai_client(group, secret)
    messages = [{"role": "user", "content": "hi"}]
    assert oa.chat.completions.create(model="gemini-2.5-flash", messages=messages).choices[0].message.content
    with pytest.raises(openai.RateLimitError) as caught:
        oa.chat.completions.create(model="gemini-2.5-flash", messages=messages)
    assert caught.value.status_code == 429 and reason_of(caught.value.body) == "RATE_LIMITED"
    assert caught.value.response.headers["Retry-After"]
    with pytest.raises(openai.PermissionDeniedError) as caught:
        oa.chat.completions.create(model="gemini-2.5-pro", messages=messages)
    assert caught.value.status_code == 403 and reason_of(caught.value.body) == "ACCESS_DENIED"
    wrong = openai_client(group, secret + "x")
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="gemini-2.5-flash", messages=messages)
    assert len(fake.requests) == 1


def test_daily_budget_is_quota_exceeded_until_the_reset(server, group, fake):
    created, secret = create(server, daily_request_limit=2)
    c = genai_client(group, secret)
    for _ in range(2):
        c.models.generate_content(model="gemini-2.5-flash", contents="hi")
    with pytest.raises(genai.errors.ClientError) as info:
        c.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert info.value.code == 429 and reason_of(info.value.details) == "QUOTA_EXCEEDED"
    assert int(info.value.response.headers["Retry-After"]) > 60  # until the next midnight (UTC by default)
    assert len(fake.requests) == 2
    # raising the limit takes effect at once on this instance (the admin call re-reads the keys)
    server.api("PUT", f"/api/access-keys/{created['id']}", json={"daily_request_limit": 3})
    assert c.models.generate_content(model="gemini-2.5-flash", contents="hi").text


def test_legacy_proxy_keys_still_work_and_are_anonymous(server, group, fake):
    r = requests.post(f"{group.base}{GEN}", headers={"x-goog-api-key": group.proxy_key}, json=BODY, timeout=30)
    assert r.status_code == 200

    def row():
        logs = server.api("GET", f"/api/logs?group={group.name}").json()["logs"]
        return logs[0] if logs else None

    assert wait_for(row, what="the request's log row")["access_key"] == "anonymous"
