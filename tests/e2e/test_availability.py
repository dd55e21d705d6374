"""Availability under Google's real failures, through the real server: an outage never empties the pool, the
breaker holds requests back and lets the first request after recovery through, pool-key errors never reach the
client as the client's, real keys never reach the client, client text never condemns a key."""

from __future__ import annotations

import json
import time

import requests

from tests.e2e.conftest import free_port
from tests.fakes.fake_gemini import FakeGemini, Reply, errors

GEN = "v1beta/models/gemini-2.5-pro:generateContent"
STREAM = "v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
BODY = {"contents": [{"parts": [{"text": "hi"}]}]}


def post(group, path=GEN, body=None, **kw):
    return requests.post(
        f"{group.base}/{path}", headers={"x-goog-api-key": group.proxy_key}, json=body or BODY, timeout=30, **kw
    )


def statuses(group) -> list[str]:
    return [r["status"] for r in group.key_rows()]


def first_success_after(group, started: float, limit: float = 10.0) -> float:
    """Send a request every 50 ms until one succeeds; seconds from ``started`` to that success."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if post(group).status_code == 200:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"no success within {limit} s")


def google_error(r) -> dict:
    body = r.json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_overload_on_every_key_leaves_every_key_active_and_recovers_within_2s(server, fake):
    keys = [fake.add_key() for _ in range(4)]
    group = server.make_group(fake.url, keys)
    for k in keys:  # "The model is overloaded": gemini-2.5-pro only
        fake.set_behavior(k, lambda req: errors.overloaded() if "gemini-2.5-pro" in req.path else None)
    answers = [post(group) for _ in range(20)]
    assert {r.status_code for r in answers} == {503}
    # Google's own 503 for the requests that reached it, the breaker's for those it held back (at once)
    reasons = {(r.json()["error"].get("details") or [{}])[0].get("reason") for r in answers}
    assert "UPSTREAM_UNAVAILABLE" in reasons
    assert all("Retry-After" in r.headers for r in answers[2:])
    # the breaker kept Google from being hammered: far fewer than 20 requests x 4 keys
    assert len(fake.requests_for(path_contains="gemini-2.5-pro")) <= 12
    assert statuses(group) == ["active"] * 4
    # another model on the same keys is not held back
    assert post(group, "v1beta/models/gemini-2.5-flash:generateContent").status_code == 200
    recovered = time.monotonic()
    for k in keys:
        fake.set_behavior(k, None)
    took = first_success_after(group, recovered)
    print(
        f"overload: {len(fake.requests_for(path_contains='gemini-2.5-pro'))} upstream calls for 20 requests; "
        f"first success {took:.2f} s after recovery"
    )
    assert took < 2.0
    assert statuses(group) == ["active"] * 4


def test_upstream_down_for_3s_then_back(server, tmp_path):
    port = free_port()
    upstream = FakeGemini(n_keys=4, port=port).start()
    group = server.make_group(upstream.url, upstream.keys)
    assert post(group).status_code == 200
    upstream.stop()  # connections refused from now on
    down = time.monotonic()
    answers = []
    while time.monotonic() - down < 3.0:
        answers.append(post(group))
        time.sleep(0.05)
    assert {r.status_code for r in answers} <= {502, 503}
    assert {google_error(r)["details"][0]["reason"] for r in answers} <= {
        "UPSTREAM_UNREACHABLE",
        "UPSTREAM_UNAVAILABLE",
    }
    assert any(r.headers.get("Retry-After") for r in answers)
    back = FakeGemini(valid_keys=upstream.keys, port=port).start()
    try:
        recovered = time.monotonic()
        took = first_success_after(group, recovered)
        print(
            f"upstream down 3 s: {len(answers)} requests answered {sorted({r.status_code for r in answers})}; "
            f"first success {took:.2f} s after it came back"
        )
        assert took < 2.0
        assert statuses(group) == ["active"] * 4
    finally:
        back.stop()


def test_one_request_that_makes_google_500_changes_nothing(server, fake):
    keys = [fake.add_key() for _ in range(4)]
    group = server.make_group(fake.url, keys)

    def poison(req):
        return errors.internal() if b"poison" in req.body else None

    for k in keys:
        fake.set_behavior(k, poison)
    for _ in range(3):
        r = post(group, body={"contents": [{"parts": [{"text": "poison"}]}]})
        assert r.status_code == 500 and google_error(r)["status"] == "INTERNAL"
    assert statuses(group) == ["active"] * 4
    # one client's poison request does not hold back anybody else
    assert post(group).status_code == 200


def test_a_key_failing_while_others_serve_is_disabled_as_failing(server, fake):
    keys = [fake.add_key() for _ in range(3)]
    group = server.make_group(fake.url, keys)
    fake.set_behavior(keys[0], errors.internal())
    for _ in range(12):
        assert post(group).status_code == 200
    row = group.row_of(keys[0])
    assert row["status"] == "invalid" and row["last_error"].startswith("failing: 3 failures")
    assert [group.row_of(k)["status"] for k in keys[1:]] == ["active", "active"]


def test_pool_key_errors_are_never_handed_to_the_client_as_its_own(server, fake):
    """Reproduced: flaky, rate-limited, suspended, then invalid key -> the client got 400 "API key not valid"."""
    keys = [fake.add_key() for _ in range(4)]
    group = server.make_group(fake.url, keys)
    fake.set_behavior(keys[0], errors.overloaded())
    fake.set_behavior(keys[1], errors.quota_per_minute("gemini-2.5-pro", "40s"))
    fake.set_behavior(keys[2], errors.suspended())
    fake.set_behavior(keys[3], errors.invalid_key())
    r = post(group)
    assert r.status_code == 503
    error = google_error(r)
    assert error["status"] == "UNAVAILABLE" and error["details"][0]["reason"] == "NO_KEYS_AVAILABLE"
    message = error["message"]
    assert "4 keys tried" in message and "invalid (400 API_KEY_INVALID)" in message
    assert "invalid (403 CONSUMER_SUSPENDED)" in message and "cooling for gemini-2.5-pro until" in message
    assert all(f"{k[:4]}...{k[-4:]}" in message for k in keys)
    assert not any(k in r.text for k in keys)
    assert 30 <= int(r.headers["Retry-After"]) <= 41  # the cooling key's RetryInfo
    # key 0 was only overloaded: it stays in the pool; once it dies too, nothing is left to try and the answer
    # comes at once, without a call upstream
    fake.set_behavior(keys[0], errors.invalid_key())
    assert post(group).status_code == 503
    before = len(fake.requests)
    r = post(group)
    assert r.status_code == 503 and "Retry-After" in r.headers and len(fake.requests) == before
    assert "cooling" in google_error(r)["message"] and "invalid" in google_error(r)["message"]


def _suspended_echoing(key: str) -> Reply:
    """Google's real 403 for a suspended key names the key in full."""
    r = errors.suspended()
    body = json.loads(json.dumps(r.body))
    body["error"]["message"] = f"Permission denied: Consumer 'api_key:{key}' has been suspended."
    return Reply(r.status, body, headers={"X-Debug-Key": key})


def test_real_keys_in_googles_error_text_never_reach_the_client_or_the_logs(server, fake):
    keys = [fake.add_key() for _ in range(2)]
    group = server.make_group(fake.url, keys, settings={"max_retries": 0})
    for k in keys:
        fake.set_behavior(k, _suspended_echoing(k))
    fake.script("*", [Reply(400, {"error": {"code": 400, "message": f"bad {keys[0]} {keys[1]}", "status": "X"}})])
    seen = []
    seen.append(post(group))  # the scripted 400 that names both keys: passed through, scrubbed
    assert seen[-1].status_code == 400
    seen.append(post(group, STREAM, stream=True))
    seen.append(post(group))
    seen.append(
        requests.post(
            f"{group.base}/v1beta/openai/chat/completions",
            headers={"Authorization": f"Bearer {group.proxy_key}"},
            json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
    )
    for r in seen:
        text = r.text + json.dumps(dict(r.headers))
        assert not any(k in text for k in keys), text
    assert "AIza..." in seen[0].text
    logs = server.api("GET", f"/api/logs?group={group.name}&page_size=100").text
    rows = json.dumps(group.key_rows())
    assert not any(k in logs or k in rows for k in keys)
    assert "CONSUMER_SUSPENDED" in rows


def test_field_names_quoted_by_google_never_condemn_keys(server, fake):
    """Google echoes unknown field names in its 400; a field named like a key error must stay the client's."""
    keys = [fake.add_key() for _ in range(5)]
    group = server.make_group(fake.url, keys)
    for name in ("API key not valid", "API key not valid. Please pass a valid API key.", "has been suspended"):
        fake.script(
            "*", [errors.bad_request(f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')]
        )
        r = post(group, body={**BODY, name: 1})
        assert r.status_code == 400 and name in r.json()["error"]["message"]
    for openai_style in ("list", "object"):
        fake.openai_error_style = openai_style
        fake.script(
            "*",
            [Reply(400, {"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}})],
        )
        r = requests.post(
            f"{group.base}/v1beta/openai/chat/completions",
            headers={"Authorization": f"Bearer {group.proxy_key}"},
            json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}]},
            timeout=30,
        )
        assert r.status_code == 400
    assert statuses(group) == ["active"] * 5
    # the genuine OpenAI-layer error (Google's whole sentence, no details) is still key evidence
    fake.set_behavior(keys[0], errors.invalid_key())
    for _ in range(5):
        requests.post(
            f"{group.base}/v1beta/openai/chat/completions",
            headers={"Authorization": f"Bearer {group.proxy_key}"},
            json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}]},
            timeout=30,
        )
    assert group.row_of(keys[0])["status"] == "invalid"


def test_requests_that_never_reach_google_are_counted_and_logged(server, fake):
    keys = [fake.add_key()]
    group = server.make_group(fake.url, keys)
    fake.set_behavior(keys[0], errors.invalid_key())
    wrong = requests.post(f"{group.base}/{GEN}", headers={"x-goog-api-key": "wrong-key-123"}, json=BODY, timeout=10)
    assert wrong.status_code == 401
    assert post(group).status_code == 503  # the key dies
    assert post(group).status_code == 503  # nothing left: refused before any upstream call
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = server.api("GET", f"/api/logs?group={group.name}&page_size=50").json()["logs"]
        if len(rows) >= 3:
            break
        server.api("POST", "/api/tasks/run")  # flushes buffered usage
        time.sleep(0.1)
    by_status = sorted((r["status_code"], r["key_id"] == "") for r in rows)
    assert by_status == [(400, False), (401, True), (503, True)]
    assert not any("wrong-key-123" in json.dumps(r) for r in rows)
    # the last two hours: the current hour alone would miss the rows if an hour ended since the requests
    stats = server.api("GET", f"/api/stats/hourly?group={group.name}&hours=2").json()
    assert sum(h["failures"] for h in stats["series"]) == 3
