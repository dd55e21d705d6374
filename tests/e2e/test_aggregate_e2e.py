"""Aggregate groups end to end: the real server (``python main.py``), the real google-genai and OpenAI SDKs, and the
fake Gemini upstream on a real socket. Two member groups (their own keys) inside one aggregate with its own proxy
key; which member served a call is told by the real key that reached the fake."""

from __future__ import annotations

import io
import uuid
from collections import Counter

import openai
import pytest
import requests
from google import genai
from google.genai import types

from tests.e2e.conftest import Group, free_port, wait_for
from tests.fakes.fake_gemini import RecordedRequest, errors


def make_aggregate(server, members: list[tuple[Group, int]], settings: dict | None = None) -> Group:
    name = f"agg-{uuid.uuid4().hex[:10]}"
    proxy_key = f"pk-{uuid.uuid4().hex}"
    r = server.api(
        "POST",
        "/api/groups",
        json={
            "name": name,
            "group_type": "aggregate",
            "sub_groups": [{"name": g.name, "weight": w} for g, w in members],
            "proxy_keys": [proxy_key],
            "settings": settings or {},
        },
    )
    assert r.status_code == 201, r.text
    return Group(server, name, proxy_key, [])


@pytest.fixture
def members(server, fake):
    """Members ``a`` and ``b`` with two keys each, on the same fake upstream."""
    a = server.make_group(fake.url, [fake.add_key() for _ in range(2)])
    b = server.make_group(fake.url, [fake.add_key() for _ in range(2)])
    return a, b


def client(group: Group) -> genai.Client:
    return genai.Client(api_key=group.proxy_key, http_options=types.HttpOptions(base_url=group.base))


def served_by(fake, a: Group, b: Group, path_contains: str = ":generateContent") -> list[str]:
    owner = {**dict.fromkeys(a.keys, "a"), **dict.fromkeys(b.keys, "b")}
    return [owner[r.key] for r in fake.requests_for(path_contains=path_contains)]


def logs(server, **query) -> list[dict]:
    r = server.api("GET", "/api/logs", params={"page_size": 500, **query})
    assert r.status_code == 200, r.text
    return r.json()["logs"]


def test_requests_spread_by_weight_within_ten_percent_over_300(server, fake, members):
    a, b = members
    agg = make_aggregate(server, [(a, 3), (b, 1)])
    c = client(agg)
    for i in range(300):
        assert c.models.generate_content(model="gemini-2.5-flash", contents=f"n{i}").text == f"echo: n{i}"
    counts = Counter(served_by(fake, a, b))
    assert sum(counts.values()) == 300
    assert abs(counts["a"] / 300 - 0.75) <= 0.10 * 0.75 and abs(counts["b"] / 300 - 0.25) <= 0.10 * 0.25, counts
    # counted once each, under the member that served, naming the aggregate
    rows = wait_for(
        lambda: (r := logs(server, since=0)) and sum(1 for x in r if x["aggregate"] == agg.name) >= 300 and r
    )
    mine = [x for x in rows if x["aggregate"] == agg.name]
    assert Counter(x["group"] for x in mine) == {a.name: counts["a"], b.name: counts["b"]}
    totals = {g["name"]: g["24h"]["requests"] for g in server.api("GET", "/api/stats/groups").json()["groups"]}
    assert totals[a.name] == counts["a"] and totals[b.name] == counts["b"] and totals[agg.name] == 0


def test_each_member_applies_its_own_rules(server, fake, members):
    a, b = members
    rules = {
        a.name: {
            "model_redirect_rules": {"fast": "gemini-2.5-flash"},
            "header_rules": [{"key": "X-Member", "value": "a:${GROUP_NAME}", "action": "set"}],
        },
        b.name: {
            "model_redirect_rules": {"fast": "gemini-2.5-flash-lite"},
            "header_rules": [{"key": "X-Member", "value": "b:${GROUP_NAME}", "action": "set"}],
        },
    }
    for name, fields in rules.items():
        assert server.api("PUT", f"/api/groups/{name}", json=fields).status_code == 200
    agg = make_aggregate(server, [(a, 1), (b, 1)])
    c = client(agg)
    for i in range(6):
        assert c.models.generate_content(model="fast", contents=f"r{i}").text == f"echo: r{i}"
    seen = [(r.key, r.model, r.headers.get("x-member")) for r in fake.requests_for(path_contains=":generateContent")]
    assert len(seen) == 6
    for key, model, header in seen:
        if key in a.keys:
            assert (model, header) == ("gemini-2.5-flash", f"a:{a.name}")
        else:
            assert key in b.keys and (model, header) == ("gemini-2.5-flash-lite", f"b:{b.name}")
    assert {k in a.keys for k, _, _ in seen} == {True, False}  # both members served
    rows = wait_for(lambda: (r := [x for x in logs(server) if x["aggregate"] == agg.name]) and len(r) == 6 and r)
    assert {x["requested_model"] for x in rows} == {"fast"}
    assert {(x["group"], x["model"]) for x in rows} == {(a.name, "gemini-2.5-flash"), (b.name, "gemini-2.5-flash-lite")}


def test_a_member_whose_keys_cool_for_a_model_is_skipped_for_that_model_only(server, fake, members):
    a, b = members

    def pro_quota(req: RecordedRequest):
        return errors.quota_per_day("gemini-2.5-pro") if req.model == "gemini-2.5-pro" else None

    for key in a.keys:
        fake.set_behavior(key, pro_quota)
    agg = make_aggregate(server, [(a, 1), (b, 1)])
    c = client(agg)
    for i in range(6):  # the first one tries a's two keys (both cool for pro), then b serves: no error reaches us
        assert c.models.generate_content(model="gemini-2.5-pro", contents=f"p{i}").text == f"echo: p{i}"
    assert served_by(fake, a, b, "gemini-2.5-pro:generateContent") == ["a", "a"] + ["b"] * 6
    assert all(row["status"] == "cooling" for row in a.key_rows())
    fake.requests.clear()
    for i in range(6):  # a still serves the other models
        assert c.models.generate_content(model="gemini-2.5-flash", contents=f"f{i}").text == f"echo: f{i}"
    assert Counter(served_by(fake, a, b)) == {"a": 3, "b": 3}


def test_a_member_whose_keys_are_all_invalid_fails_over_to_the_next_member(server, fake, members):
    a, b = members
    for key in a.keys:
        fake.set_behavior(key, errors.invalid_key())
    agg = make_aggregate(server, [(a, 10), (b, 1)], settings={"max_retries": 3})
    c = client(agg)
    reply = c.models.generate_content(model="gemini-2.5-flash", contents="over")
    assert reply.text == "echo: over"
    assert served_by(fake, a, b) == ["a", "a", "b"]  # one request: a's two keys, then b within the same budget
    assert {row["status"] for row in a.key_rows()} == {"invalid"}
    rows = wait_for(lambda: (r := [x for x in logs(server) if x["aggregate"] == agg.name]) and len(r) == 3 and r)
    assert sorted((x["group"], x["success"], x["final"]) for x in rows) == sorted(
        [(a.name, False, False), (a.name, False, False), (b.name, True, True)]
    )
    assert not any(k in str(rows) for k in a.keys + b.keys)
    # a is now skipped without a call; the OpenAI layer goes through the aggregate too
    fake.requests.clear()
    oa = openai.OpenAI(base_url=f"{agg.base}/v1beta/openai/", api_key=agg.proxy_key, max_retries=0)
    done = oa.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content
    assert [r.key for r in fake.requests] and {r.key for r in fake.requests} <= set(b.keys)


def test_a_member_whose_upstream_is_down_is_left_for_the_next_member(server, fake, members):
    _, b = members
    down = server.make_group(f"http://127.0.0.1:{free_port()}", [fake.add_key() for _ in range(3)])  # refused
    agg = make_aggregate(server, [(down, 3), (b, 1)], settings={"max_retries": 2})
    c = client(agg)
    for i in range(20):  # never an error: the first attempt on the dead member fails over, then its breaker opens
        assert c.models.generate_content(model="gemini-2.5-flash", contents=f"d{i}").text == f"echo: d{i}"
    assert {r.key for r in fake.requests} <= set(b.keys) and len(fake.requests) == 20
    rows = wait_for(
        lambda: (r := [x for x in logs(server) if x["aggregate"] == agg.name and x["final"]]) and len(r) == 20 and r
    )
    assert {x["group"] for x in rows} == {b.name}
    failed = [x for x in logs(server) if x["aggregate"] == agg.name and not x["success"]]
    assert 1 <= len(failed) < 20 and {x["group"] for x in failed} == {down.name}  # the breaker stopped the attempts
    assert {row["status"] for row in down.key_rows()} == {"active"}  # an outage condemns no key


def test_no_member_able_to_serve_is_no_keys_available_per_member(server, fake, members):
    a, b = members
    for key in a.keys + b.keys:
        fake.set_behavior(key, errors.invalid_key())
    agg = make_aggregate(server, [(a, 1), (b, 1)], settings={"max_retries": 5})
    c = client(agg)  # keep a reference: a collected Client closes its HTTP client
    with pytest.raises(genai.errors.ServerError) as caught:
        c.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert caught.value.code == 503
    text = str(caught.value)
    assert f"member {a.name}: 2 keys tried" in text and f"member {b.name}: 2 keys tried" in text
    assert "API_KEY_INVALID" in text and not any(k in text for k in a.keys + b.keys)


def test_a_file_uploaded_through_the_aggregate_stays_with_its_member_and_key(server, fake, members):
    a, b = members
    agg = make_aggregate(server, [(a, 1), (b, 1)])
    c = client(agg)
    uploaded = c.files.upload(file=io.BytesIO(b"hello file" * 100), config={"mime_type": "text/plain"})
    owner = fake.file_owner(uploaded.name)
    assert owner in a.keys + b.keys
    assert {r.key for r in fake.requests_for(path_contains="/upload/")} == {owner}  # start and chunks
    for _ in range(6):  # weights 1/1 and two keys per member would spread these over four keys
        reply = c.models.generate_content(
            model="gemini-2.5-flash",
            contents=[types.Part.from_uri(file_uri=uploaded.uri, mime_type="text/plain"), "summarise"],
        )
        assert reply.text
        assert c.files.get(name=uploaded.name).name == uploaded.name
    used = [r.effective_key or r.key for r in fake.requests if ":generateContent" in r.path or "/files/" in r.path]
    assert len(used) == 12 and set(used) == {owner}
    member = a if owner in a.keys else b
    rows = wait_for(lambda: (r := [x for x in logs(server) if x["aggregate"] == agg.name]) and len(r) >= 14 and r)
    assert {x["group"] for x in rows} == {member.name}


def test_a_client_configures_itself_from_integration_info(server, fake, members):
    a, b = members
    agg = make_aggregate(server, [(a, 1), (b, 1)])
    info = requests.get(f"{server.url}/api/integration/info", params={"key": agg.proxy_key}, timeout=10)
    assert info.status_code == 200, info.text
    (entry,) = info.json()["groups"]
    assert entry["name"] == agg.name and entry["group_type"] == "aggregate"
    native = genai.Client(api_key=agg.proxy_key, http_options=types.HttpOptions(base_url=entry["endpoints"]["gemini"]))
    assert native.models.generate_content(model="gemini-2.5-flash", contents="cfg").text == "echo: cfg"
    oa = openai.OpenAI(base_url=entry["endpoints"]["openai"], api_key=agg.proxy_key, max_retries=0)
    assert oa.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}]).choices
    names = [m.name for m in native.models.list()]
    assert "models/gemini-2.5-flash" in names
    bad = requests.get(f"{server.url}/api/integration/info", params={"key": "not-a-key-000"}, timeout=10)
    assert bad.status_code == 401 and agg.name not in bad.text
