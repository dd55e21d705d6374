"""Aggregate groups in the forwarder, with an in-memory upstream per member (tests/fakes/memory_transport.py):
weighted member choice, model-aware skipping, failover to the next member within one budget, breakers, the
no-keys summary per member, affinity to the member and key that created a resource, usage rows naming both."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import requests

from gptload.cipher import Cipher
from gptload.errors import ModelNotAllowed, NoKeysAvailable
from gptload.keypool.breaker import Breakers
from gptload.models import AGGREGATE, Group, KeyRecord, LogQuery, SubGroup, Upstream
from gptload.pool import KeyPool
from gptload.proxy.affinity import AffinityMap
from gptload.proxy.forwarder import Forwarder
from gptload.proxy.request import IncomingRequest
from gptload.proxy.upstream import make_session
from gptload.store.base import RESOURCE, Binding
from gptload.usage import UsageBuffer
from gptload.vault.store_vault import StoreVault
from tests.fakes.fake_gemini import errors, make_key
from tests.fakes.memory_transport import Answer, MemoryTransport

OK = {"candidates": [{"content": {"parts": [{"text": "hi"}]}}], "usageMetadata": {"totalTokenCount": 3}}


def up(member: str) -> str:
    return f"http://{member}.test"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rig(sqlite_store):
    """Members ``a`` and ``b`` (``n`` keys each, their own upstream) inside aggregate ``agg``."""

    def build(weights=(("a", 3), ("b", 1)), n=2, handler=None, max_retries=3):
        vault = StoreVault(sqlite_store, Cipher(b"k" * 32))
        secrets: dict[str, dict[str, str]] = {}
        for index, (member, _) in enumerate(weights):
            sqlite_store.create_group(Group(member, (Upstream(up(member), 1),), settings={"max_retries": 0}))
            secrets[member] = {f"{member}{i}": make_key(100 * index + i) for i in range(n)}
            records = [KeyRecord(i, member, f"{s[:4]}...{s[-4:]}") for i, s in secrets[member].items()]
            sqlite_store.add_keys(member, records, vault.add(member, secrets[member]))
        sqlite_store.create_group(
            Group(
                "agg",
                (),
                settings={"max_retries": max_retries},
                group_type=AGGREGATE,
                sub_groups=tuple(SubGroup(m, w) for m, w in weights),
            )
        )
        pool = KeyPool(sqlite_store, vault)
        transport = MemoryTransport(handler or (lambda req: Answer(200, OK)))
        session = make_session(8)
        for member, _ in weights:
            session.mount(up(member), transport)
        usage = UsageBuffer(sqlite_store, background=False)
        fwd = Forwarder(pool, AffinityMap(sqlite_store), usage, session, Breakers(rng=lambda: 0.5), clock=Clock())
        owner = {s: m for m, keys in secrets.items() for s in keys.values()}
        return fwd, pool, transport, owner, usage

    return build


def request(model="gemini-2.5-pro", body=b'{"contents":[]}', path=None, method="POST"):
    return IncomingRequest(
        method=method,
        path=path or f"v1beta/models/{model}:generateContent",
        query="",
        headers=[("Content-Type", "application/json"), ("x-goog-api-key", "proxy-key")],
        body=body,
        public_base="http://proxy",
        content_type="application/json",
    )


def member_of(seen) -> str:
    return seen.url.split("//")[1].split(".")[0]


def test_requests_spread_over_members_by_weight(rig):
    fwd, pool, transport, *_ = rig(weights=(("a", 3), ("b", 1)))
    for _ in range(40):
        assert fwd.forward(pool.view("agg"), request()).status == 200
    assert Counter(member_of(s) for s in transport.seen) == {"a": 30, "b": 10}


def test_a_paused_member_gets_nothing(rig):
    fwd, pool, transport, *_ = rig(weights=(("a", 0), ("b", 1)))
    for _ in range(5):
        fwd.forward(pool.view("agg"), request())
    assert {member_of(s) for s in transport.seen} == {"b"}


def test_a_member_whose_keys_cool_for_a_model_is_skipped_for_that_model_only(rig):
    def handler(req):
        if member_of(req) == "a" and "gemini-2.5-pro" in req.url:
            return Answer(429, errors.quota_per_day("gemini-2.5-pro").body)
        return Answer(200, OK)

    fwd, pool, transport, *_ = rig(weights=(("a", 1), ("b", 1)), handler=handler)
    for _ in range(10):
        assert fwd.forward(pool.view("agg"), request()).status == 200
    cooled = len(transport.seen)
    pro = [member_of(s) for s in transport.seen if "gemini-2.5-pro" in s.url]
    assert pro.count("a") == 2  # a's two keys, once each: then a is skipped for this model
    transport.seen.clear()
    for _ in range(10):
        assert fwd.forward(pool.view("agg"), request()).status == 200
    assert {member_of(s) for s in transport.seen} == {"b"} and len(transport.seen) == 10
    transport.seen.clear()
    for _ in range(10):
        assert fwd.forward(pool.view("agg"), request(model="gemini-2.5-flash")).status == 200
    assert Counter(member_of(s) for s in transport.seen) == {"a": 5, "b": 5}
    assert cooled == 12


def test_a_member_out_of_keys_fails_over_to_the_next_within_one_budget(rig, sqlite_store):
    def handler(req):
        return Answer(400, errors.invalid_key().body) if member_of(req) == "a" else Answer(200, OK)

    fwd, pool, transport, _, usage = rig(weights=(("a", 5), ("b", 1)), handler=handler)
    answer = fwd.forward(pool.view("agg"), request())
    assert answer.status == 200 and answer.attempts == 3
    assert [member_of(s) for s in transport.seen] == ["a", "a", "b"]
    b"".join(answer.body)  # the relay's end records the successful attempt
    usage.flush()
    rows, _ = sqlite_store.query_logs(LogQuery(), 0, 10)
    assert sorted((r["group"], r["aggregate"], r["success"], r["final"]) for r in rows) == [
        ("a", "agg", False, False),
        ("a", "agg", False, False),
        ("b", "agg", True, True),
    ]


def test_the_budget_is_the_aggregates_max_retries(rig):
    fwd, pool, transport, *_ = rig(
        weights=(("a", 1), ("b", 1)), n=3, max_retries=1, handler=lambda req: Answer(503, errors.overloaded().body)
    )
    answer = fwd.forward(pool.view("agg"), request())
    assert answer.status == 503  # Google's own 503 after 1 + max_retries attempts, one per member
    assert [member_of(s) for s in transport.seen] == ["a", "b"]


def test_after_an_upstream_failure_the_next_attempt_prefers_another_member(rig):
    def handler(req):
        if member_of(req) == "a":
            return Answer(raise_=requests.exceptions.ConnectionError("refused"))
        return Answer(200, OK)

    fwd, pool, transport, *_ = rig(weights=(("a", 5), ("b", 1)), n=4, handler=handler)
    answer = fwd.forward(pool.view("agg"), request())
    assert answer.status == 200 and [member_of(s) for s in transport.seen] == ["a", "b"]


def test_with_one_member_an_upstream_failure_retries_its_other_keys(rig):
    fwd, pool, transport, *_ = rig(
        weights=(("a", 1),), n=3, max_retries=2, handler=lambda req: Answer(503, errors.overloaded().body)
    )
    assert fwd.forward(pool.view("agg"), request()).status == 503
    assert [member_of(s) for s in transport.seen] == ["a", "a", "a"] and len({s.key for s in transport.seen}) == 3


def test_no_keys_anywhere_says_what_happened_in_each_member(rig):
    def handler(req):
        if member_of(req) == "a":
            return Answer(400, errors.invalid_key().body)
        return Answer(429, errors.quota_per_minute("gemini-2.5-pro").body)

    fwd, pool, transport, owner, _ = rig(weights=(("a", 1), ("b", 1)), handler=handler, max_retries=5)
    with pytest.raises(NoKeysAvailable) as caught:
        fwd.forward(pool.view("agg"), request())
    message = caught.value.message
    assert "aggregate group 'agg'" in message
    assert "member a: 2 keys tried" in message and "invalid (400 API_KEY_INVALID)" in message
    assert "member b: 2 keys tried" in message and "cooling for gemini-2.5-pro" in message
    assert not any(secret in message for secret in owner)
    assert len(transport.seen) == 4 and caught.value.details["retry_after"] > 0


def test_an_open_breaker_moves_the_request_to_the_next_member(rig):
    fwd, pool, transport, *_ = rig(weights=(("a", 1), ("b", 1)))
    for witness in range(10):  # a's upstream fails for this model for several requests: its breaker opens
        fwd.breakers.failure(("a", up("a"), "gemini-2.5-pro"), fwd._clock(), witness, "503")
    assert fwd.breakers.state(("a", up("a"), "gemini-2.5-pro"), fwd._clock())[0] == "open"
    for _ in range(4):
        assert fwd.forward(pool.view("agg"), request()).status == 200
    assert {member_of(s) for s in transport.seen} == {"b"}


def test_a_resource_is_served_by_the_member_and_key_that_created_it(rig):
    fwd, pool, transport, owner, _ = rig(weights=(("a", 1), ("b", 1)))
    fwd._affinity.bind(Binding(RESOURCE, "files/abc", "b", "b1", up("b"), 4e9))
    body = b'{"contents":[{"parts":[{"fileData":{"fileUri":"x/files/abc"}}]}]}'
    for _ in range(3):
        assert fwd.forward(pool.view("agg"), request(body=body)).status == 200
    assert [(member_of(s), owner[s.key]) for s in transport.seen] == [("b", "b")] * 3
    assert {s.key for s in transport.seen} == {make_key(101)}


def test_a_resource_of_a_group_outside_the_aggregate_is_not_pinned(rig, sqlite_store):
    fwd, pool, transport, *_ = rig(weights=(("a", 1),))
    fwd._affinity.bind(Binding(RESOURCE, "files/zzz", "elsewhere", "x0", "http://else.test", 4e9))
    body = b'{"contents":[{"parts":[{"fileData":{"fileUri":"x/files/zzz"}}]}]}'
    assert fwd.forward(pool.view("agg"), request(body=body)).status == 200
    assert [member_of(s) for s in transport.seen] == ["a"]


def test_a_file_created_through_the_aggregate_binds_to_its_member(rig):
    created = {"file": {"name": "files/new1", "uri": "u"}}
    fwd, pool, transport, *_ = rig(
        weights=(("a", 1), ("b", 1)), handler=lambda req: Answer(200, created, {"Content-Type": "application/json"})
    )
    fwd.forward(pool.view("agg"), request(path="v1beta/files", body=b'{"file":{}}'))
    first = transport.seen[0]
    transport.seen.clear()
    body = b'{"contents":[{"parts":[{"fileData":{"fileUri":"x/files/new1"}}]}]}'
    for _ in range(4):
        fwd.forward(pool.view("agg"), request(body=body))
    assert {(member_of(s), s.key) for s in transport.seen} == {(member_of(first), first.key)}


def test_model_lists_come_from_the_first_member_that_can_serve(rig):
    fwd, pool, transport, *_ = rig(weights=(("a", 1), ("b", 3)))
    for path in ("v1beta/models", "v1/models", "v1beta/openai/models") * 2:
        assert fwd.forward(pool.view("agg"), request(path=path, method="GET", body=b"")).status == 200
    assert {member_of(s) for s in transport.seen} == {"a"}
    transport.seen.clear()
    for key in pool.view("a").keys:  # a cannot serve any more: b lists the models
        key.state = replace(key.state, status="invalid")
    assert fwd.forward(pool.view("agg"), request(path="v1beta/models", method="GET", body=b"")).status == 200
    assert [member_of(s) for s in transport.seen] == ["b"]


def strict_rig(sqlite_store, rig, a_rules: dict, b_rules: dict):
    """The rig, then members' redirect rules set in the store (the pool picks them up on reload)."""
    built = rig(weights=(("a", 1), ("b", 1)))
    for name, rules in (("a", a_rules), ("b", b_rules)):
        group = sqlite_store.get_group(name)
        sqlite_store.update_group(replace(group, **rules))
    built[1].reload(force=True)
    return built


def test_a_member_whose_strict_mode_refuses_the_model_is_skipped(rig, sqlite_store):
    strict = {"model_redirect_rules": {"fast": "gemini-2.5-flash"}, "model_redirect_strict": True}
    fwd, pool, transport, *_ = strict_rig(sqlite_store, rig, strict, {})
    for _ in range(4):
        assert fwd.forward(pool.view("agg"), request(model="gemini-2.5-pro")).status == 200
    assert {member_of(s) for s in transport.seen} == {"b"}
    transport.seen.clear()
    for _ in range(4):  # the alias: a sends its target, b (no rules) the name as asked
        fwd.forward(pool.view("agg"), request(model="fast"))
    assert sorted((member_of(s), s.url.rsplit("/", 1)[1]) for s in transport.seen) == [
        ("a", "gemini-2.5-flash:generateContent"),
        ("a", "gemini-2.5-flash:generateContent"),
        ("b", "fast:generateContent"),
        ("b", "fast:generateContent"),
    ]


def test_a_model_every_member_refuses_is_refused_once_without_an_upstream_call(rig, sqlite_store):
    strict = {"model_redirect_rules": {"fast": "gemini-2.5-flash"}, "model_redirect_strict": True}
    fwd, pool, transport, _, usage = strict_rig(sqlite_store, rig, strict, strict)
    with pytest.raises(ModelNotAllowed) as caught:
        fwd.forward(pool.view("agg"), request(model="gemini-2.5-pro"))
    assert caught.value.status == 404 and "aggregate group 'agg'" in caught.value.message
    assert transport.seen == []
    usage.flush()
    rows, total = sqlite_store.query_logs(LogQuery(), 0, 10)
    assert total == 1 and (rows[0]["group"], rows[0]["aggregate"], rows[0]["status_code"]) == ("agg", "agg", 404)


def test_an_aggregate_with_every_member_paused_says_so(rig):
    fwd, pool, transport, *_ = rig(weights=(("a", 0), ("b", 0)))
    with pytest.raises(NoKeysAvailable) as caught:
        fwd.forward(pool.view("agg"), request())
    assert "no active members" in caught.value.message and transport.seen == []
