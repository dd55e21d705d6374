"""Console endpoints through the real server: token statistics, logs, export, validation tasks, notes, copy."""

from __future__ import annotations

import csv
import io
import time

import pytest
import requests
from google import genai
from google.genai import types

from tests.e2e.conftest import start_server, wait_for
from tests.fakes.fake_gemini import errors

BODY = {"contents": [{"parts": [{"text": "count my tokens please"}]}]}


def generate(group, model="gemini-2.5-flash", stream=False, **kw):
    verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return requests.post(
        f"{group.base}/v1beta/models/{model}:{verb}",
        headers={"x-goog-api-key": group.proxy_key},
        json=BODY,
        timeout=30,
        **kw,
    )


@pytest.fixture
def own_server(tmp_path):
    """A server of its own, so that dashboard totals are not shared with other tests."""
    srv = start_server(tmp_path)
    yield srv
    srv.stop()


def clear_of_a_minute_end(margin: float = 10.0) -> None:
    """Wait for the next minute if this one ends within ``margin`` seconds. The dashboard's rpm counts the requests
    of the current calendar minute (stats_minute buckets from now - 60 s on: the bucket holding now - 60 s starts
    before it) and the hourly series ends with the current hour, so a test comparing them with the requests it
    just made must not straddle a minute's end (each hour's end is one too)."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.1)


def test_dashboard_counts_requests_errors_and_tokens_of_plain_and_streamed_answers(own_server, fake):
    fake.gzip = True  # the SDKs ask for gzip; the token tap must read through it
    group = own_server.make_group(fake.url, [fake.add_key() for _ in range(3)])
    clear_of_a_minute_end()
    c = genai.Client(api_key=group.proxy_key, http_options=types.HttpOptions(base_url=group.base, api_version="v1beta"))
    plain = c.models.generate_content(model="gemini-2.5-flash", contents="one two three")
    streamed = list(c.models.generate_content_stream(model="gemini-2.5-flash", contents="four five six seven"))
    expected_total = plain.usage_metadata.total_token_count + streamed[-1].usage_metadata.total_token_count
    expected_prompt = plain.usage_metadata.prompt_token_count + streamed[-1].usage_metadata.prompt_token_count
    fake.set_behavior(group.keys[0], errors.overloaded())
    fake.set_behavior(group.keys[1], errors.overloaded())
    fake.set_behavior(group.keys[2], errors.overloaded())
    assert generate(group).status_code == 503

    # the plain answer's row is added as its relay ends, just after the SDK read the last byte
    wait_for(lambda: own_server.api("GET", "/api/dashboard").json()["last_24h"]["requests"] >= 3, what="3 rows")
    d = own_server.api("GET", "/api/dashboard").json()
    assert d["last_24h"]["requests"] == 3 and d["last_24h"]["failures"] == 1
    assert d["last_24h"]["error_rate"] == pytest.approx(33.33, abs=0.01)
    assert d["last_24h"]["total_tokens"] == expected_total > 0
    assert d["last_24h"]["prompt_tokens"] == expected_prompt
    assert d["last_24h"]["candidates_tokens"] > 0
    assert d["rpm"] == 3
    assert d["keys"]["total"] == 3 and d["groups"] == 1
    assert d["previous_24h"]["requests"] == 0 and d["trend"]["requests"] is None

    hourly = own_server.api("GET", f"/api/stats/hourly?group={group.name}&hours=24").json()["series"]
    assert len(hourly) == 24 and hourly[-1]["requests"] == 3 and hourly[-1]["total_tokens"] == expected_total
    assert sum(h["requests"] for h in hourly[:-1]) == 0
    totals = own_server.api("GET", "/api/stats/groups").json()["groups"]
    assert totals == [
        {
            "name": group.name,
            "24h": {"requests": 3, "failures": 1, "total_tokens": expected_total},
            "7d": {"requests": 3, "failures": 1, "total_tokens": expected_total},
            "30d": {"requests": 3, "failures": 1, "total_tokens": expected_total},
        }
    ]
    rows = group.key_rows()
    assert sum(r["total_tokens"] for r in rows) == expected_total


def test_request_logs_filters_detail_and_csv(server, fake):
    group = server.make_group(fake.url, [fake.add_key() for _ in range(2)])
    fake.script(group.keys[0], [errors.quota_per_minute("gemini-2.5-flash", retry_delay="20s")])
    fake.script(group.keys[1], [errors.quota_per_minute("gemini-2.5-flash", retry_delay="20s")])
    generate(group)  # two 429 attempts, the last final
    fake.reset()
    server.api("POST", f"/api/groups/{group.name}/keys/restore")
    assert generate(group, model="gemini-2.5-pro", stream=True).status_code == 200

    # the streamed answer's row is added as its relay ends, which may be just after the client read the last byte
    logs = wait_for(
        lambda: (r := server.api("GET", f"/api/logs?group={group.name}").json())["total"] >= 3 and r,
        what="the streamed request's row",
    )
    assert logs["total"] == 3
    newest = logs["logs"][0]
    assert newest["success"] and newest["stream"] and newest["model"] == "gemini-2.5-pro" and newest["final"]
    assert newest["total_tokens"] > 0 and newest["key"].startswith("AIza...")
    failed = server.api("GET", f"/api/logs?group={group.name}&success=false").json()["logs"]
    assert [r["attempt"] for r in failed] == [2, 1] and [r["final"] for r in failed] == [True, False]
    assert all(r["status_code"] == 429 for r in failed)
    assert server.api("GET", f"/api/logs?group={group.name}&q=PerMinute").json()["total"] == 2
    assert server.api("GET", f"/api/logs?group={group.name}&status_code=200").json()["total"] == 1
    assert server.api("GET", f"/api/logs?group={group.name}&stream=false").json()["total"] == 2
    assert server.api("GET", f"/api/logs?group={group.name}&since={time.time() + 60}").json()["total"] == 0
    assert server.api("GET", "/api/logs?success=maybe").status_code == 400
    detail = server.api("GET", f"/api/logs/{newest['id']}").json()["log"]
    assert detail["id"] == newest["id"] and detail["request_body"] is None  # body logging is off by default
    assert server.api("GET", "/api/logs/nope").json()["error"]["code"] == "NOT_FOUND"

    exported = server.api("GET", f"/api/logs/export.csv?group={group.name}")
    assert exported.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in exported.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(table) == 3 and table[0]["id"] == newest["id"]
    everything = exported.text + str(logs)
    # CSV: ISO 8601 times (UTC) with the epoch beside them, true/false booleans, the request id
    assert list(table[0])[:2] == ["at", "at_epoch"]
    assert abs(float(table[0]["at_epoch"]) - newest["at"]) < 0.001
    assert table[0]["at"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(newest["at"])) + table[0]["at"][19:]
    assert table[0]["at"].endswith("Z") and len(table[0]["at"]) == len("2026-01-01T00:00:00.000Z")
    assert {r["success"] for r in table} == {"true", "false"} and {r["stream"] for r in table} == {"true", "false"}
    assert table[1]["final"] == "true" and table[2]["final"] == "false"
    assert table[1]["request_id"] == table[2]["request_id"] != table[0]["request_id"]

    # the attempts of one request share a request id; any attempt's detail lists them all, first to last
    assert failed[0]["request_id"] == failed[1]["request_id"] != newest["request_id"]
    attempts = server.api("GET", f"/api/logs/{failed[0]['id']}").json()["attempts"]
    assert [a["id"] for a in attempts] == [failed[1]["id"], failed[0]["id"]]
    assert [a["attempt"] for a in attempts] == [1, 2] and all("request_body" not in a for a in attempts)
    assert [a["id"] for a in server.api("GET", f"/api/logs/{failed[1]['id']}").json()["attempts"]] == [
        failed[1]["id"],
        failed[0]["id"],
    ]
    single = server.api("GET", f"/api/logs/{newest['id']}").json()["attempts"]
    assert [a["id"] for a in single] == [newest["id"]]
    # the model filter matches a prefix
    assert server.api("GET", f"/api/logs?group={group.name}&model=gemini-2.5").json()["total"] == 3
    assert server.api("GET", f"/api/logs?group={group.name}&model=gemini-2.5-p").json()["total"] == 1
    assert all(key not in everything for key in group.keys)


def test_failure_only_logging_and_body_logging(tmp_path, fake):
    srv = start_server(tmp_path)
    try:
        group = srv.make_group(fake.url, [fake.add_key() for _ in range(2)])
        srv.api("PUT", "/api/settings", json={"log_failures_only": True, "enable_request_body_logging": True})
        fake.script(group.keys[0], [errors.internal()])
        fake.script(group.keys[1], [errors.internal()])
        generate(group)
        generate(group)
        logs = wait_for(lambda: (r := srv.api("GET", "/api/logs").json())["total"] >= 2 and r, what="2 failure rows")
        assert logs["total"] == 2 and all(not r["success"] for r in logs["logs"])
        detail = srv.api("GET", f"/api/logs/{logs['logs'][0]['id']}").json()["log"]
        assert "count my tokens please" in detail["request_body"]
        assert srv.api("GET", "/api/dashboard").json()["last_24h"]["requests"] == 2  # still counted
    finally:
        srv.stop()


def test_export_validate_clear_notes_and_copy(server, fake):
    keys = [fake.add_key() for _ in range(4)]
    group = server.make_group(fake.url, keys)
    fake.set_behavior(keys[0], errors.invalid_key())
    fake.set_behavior(keys[1], errors.overloaded())  # the probe's answer is inconclusive, never a verdict
    fake.set_behavior(keys[2], errors.quota_per_day("gemini-2.5-flash"))
    r = server.api("POST", f"/api/groups/{group.name}/keys/validate", json={"scope": "all"})
    assert r.status_code == 202
    task_id = r.json()["task"]["id"]
    deadline = time.monotonic() + 20
    while (task := server.api("GET", f"/api/tasks/{task_id}").json()["task"])["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert task["status"] == "done" and task["total"] == task["done"] == 4
    assert (task["valid"], task["invalid"], task["inconclusive"]) == (2, 1, 1)
    probes = [r for r in fake.requests if ":generateContent" in r.path]
    assert all(r.json()["generationConfig"]["maxOutputTokens"] == 1 for r in probes)
    assert group.row_of(keys[0])["status"] == "invalid"
    assert group.row_of(keys[1])["status"] == "active" and group.row_of(keys[1])["failure_count"] == 0
    assert group.row_of(keys[2])["status"] == "cooling"

    export = server.api("GET", f"/api/groups/{group.name}/keys/export?status=invalid")
    assert export.text == keys[0] + "\n"
    assert export.headers["Cache-Control"] == "no-store" and "attachment" in export.headers["Content-Disposition"]
    assert sorted(server.api("GET", f"/api/groups/{group.name}/keys/export").text.split()) == sorted(keys)
    assert requests.get(f"{group.base.replace('/proxy/', '/api/groups/')}/keys/export", timeout=5).status_code == 401

    key_id = group.row_of(keys[3])["id"]
    row = server.api("PUT", f"/api/groups/{group.name}/keys/{key_id}", json={"notes": "billing account A"}).json()
    assert row["notes"] == "billing account A" and group.row_of(keys[3])["notes"] == "billing account A"
    assert server.api("PUT", f"/api/groups/{group.name}/keys/nope", json={"notes": "x"}).status_code == 404

    copy = server.api("POST", f"/api/groups/{group.name}/copy", json={"name": f"{group.name}-copy", "with_keys": True})
    assert copy.status_code == 201 and copy.json()["key_counts"]["total"] == 4 and copy.json()["proxy_keys"] == []
    bare = server.api("POST", f"/api/groups/{group.name}/copy", json={"name": f"{group.name}-bare"})
    assert bare.json()["key_counts"]["total"] == 0

    assert server.api("POST", f"/api/groups/{group.name}/keys/clear-invalid").json() == {"deleted": 1}
    assert len(group.key_rows()) == 3


def test_reorder_groups_and_schema(tmp_path, fake):
    srv = start_server(tmp_path)
    try:
        for name in ("a", "b", "c"):
            srv.api("POST", "/api/groups", json={"name": name, "upstreams": [{"url": fake.url, "weight": 1}]})
        srv.api("POST", "/api/groups", json={"name": "0-first-by-name", "upstreams": [{"url": fake.url}]})
        srv.api("POST", "/api/groups/a/copy", json={"name": "a-copy"})
        names = [g["name"] for g in srv.api("GET", "/api/groups").json()["groups"]]
        assert names == ["a", "b", "c", "0-first-by-name", "a-copy"]  # new groups go last, not alphabetically
        for extra in ("0-first-by-name", "a-copy"):
            srv.api("DELETE", f"/api/groups/{extra}")
        r = srv.api("PUT", "/api/groups-order", json={"names": ["c", "a", "b"]})
        assert [g["name"] for g in r.json()["groups"]] == ["c", "a", "b"]
        assert srv.api("PUT", "/api/groups-order", json={"names": ["c", "a"]}).status_code == 400
        schema = srv.api("GET", "/api/settings/schema").json()["schema"]
        by_name = {s["name"]: s for s in schema}
        assert by_name["max_retries"]["type"] == "integer" and by_name["max_retries"]["default"] == 3
        assert by_name["proxy_keys"]["group_overridable"] is False
    finally:
        srv.stop()


def test_dashboard_follows_group_and_range_and_counts_retries_refusals_and_cooling(own_server, fake):
    busy = own_server.make_group(fake.url, [fake.add_key() for _ in range(2)])
    other = own_server.make_group(fake.url, [fake.add_key()])
    clear_of_a_minute_end()
    assert generate(busy).status_code == 200
    for key in busy.keys:  # the next request: a 429 on each key, so two attempts (one retry), then no key left
        fake.script(key, [errors.quota_per_minute("gemini-2.5-flash", retry_delay="600s")])
    assert generate(busy).status_code == 503
    bad = requests.post(
        f"{busy.base}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": "not-a-proxy-key"},
        json=BODY,
        timeout=30,
    )
    assert bad.status_code in (401, 403)  # refused before reaching Google
    fake.set_behavior(other.keys[0], errors.invalid_key())
    assert generate(other).status_code == 503  # its only key is disabled: the group cannot serve

    def scoped():
        return own_server.api("GET", f"/api/dashboard?group={busy.name}&hours=168").json()

    wait_for(lambda: scoped()["range"]["current"]["requests"] >= 3, what="the busy group's three requests")
    d = scoped()
    now = d["range"]["current"]
    assert d["group"] == busy.name and d["range"]["hours"] == 168 and d["groups"] == 1
    assert (now["requests"], now["failures"], now["retries"], now["failed_attempts"], now["refused"]) == (3, 2, 1, 2, 1)
    assert d["last_24h"]["requests"] == 3 and d["rpm"] == 3
    assert d["keys"]["total"] == 2 and d["keys"]["invalid"] == 0 and d["keys"]["active"] == 0
    # 429 per minute on one model: limited (some models), not cooling for all models
    assert d["keys"]["limited"] == 2 and d["keys"]["cooling_all"] == 0 and d["keys"]["cooling"] == 2
    assert d["unservable_groups"] == []
    everything = own_server.api("GET", "/api/dashboard").json()
    assert everything["groups"] == 2 and everything["keys"]["total"] == 3
    assert everything["last_24h"]["requests"] == 4 and everything["rpm"] == 4
    assert everything["unservable_groups"] == [other.name]
    o = own_server.api("GET", f"/api/dashboard?group={other.name}").json()
    assert o["keys"]["invalid"] == 1 and o["unservable_groups"] == [other.name]
    assert own_server.api("GET", "/api/dashboard?group=nope").status_code == 404
    assert own_server.api("GET", "/api/dashboard?hours=721").status_code == 400


def test_python_main_prints_the_console_url_at_start_up(server):
    wait_for(lambda: f"console: {server.url}/ (log in with AUTH_KEY)" in server.log(), what="the console line")


def test_dashboard_warns_of_an_aggregate_only_through_its_members(server, fake):
    """An aggregate has no keys of its own: it is not "a group with no key that can serve" while a member can."""
    member = server.make_group(fake.url, [fake.add_key()])
    name = f"agg-{member.name}"
    r = server.api(
        "POST",
        "/api/groups",
        json={"name": name, "group_type": "aggregate", "sub_groups": [{"name": member.name, "weight": 1}]},
    )
    assert r.status_code == 201, r.text
    d = server.api("GET", "/api/dashboard").json()
    assert name not in d["unservable_groups"] and member.name not in d["unservable_groups"]
    assert server.api("GET", f"/api/dashboard?group={name}").json()["unservable_groups"] == []
