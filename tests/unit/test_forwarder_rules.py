"""A group's request rules through the forwarder, over an in-memory upstream (tests/fakes/memory_transport.py): what
goes upstream (path, body merged once and replayed, rule headers), strict mode without an upstream call, the model
used for cooldowns, statistics, breaker and logs, model lists, and the egress proxy's session."""

from __future__ import annotations

import json

import pytest

from gptload.cipher import Cipher
from gptload.errors import InvalidPath, ModelNotAllowed, NoKeysAvailable
from gptload.keypool.breaker import Breakers
from gptload.models import Group, KeyRecord, LogQuery, Upstream
from gptload.pool import KeyPool
from gptload.proxy.affinity import AffinityMap
from gptload.proxy.forwarder import Forwarder
from gptload.proxy.request import IncomingRequest
from gptload.proxy.upstream import Sessions, make_session
from gptload.usage import UsageBuffer
from gptload.validation import probe
from gptload.vault.store_vault import StoreVault
from tests.fakes.fake_gemini import errors, make_key
from tests.fakes.memory_transport import Answer, MemoryTransport

UP = "http://up.test"
OK = {"candidates": [{"content": {"parts": [{"text": "hi"}]}}], "usageMetadata": {"totalTokenCount": 3}}
REDIRECTS = {"alias": "gemini-2.5-flash"}


@pytest.fixture
def rig(sqlite_store):
    def build(n=3, handler=None, settings=None, **rules):
        vault = StoreVault(sqlite_store, Cipher(b"k" * 32))
        sqlite_store.create_group(Group("g", (Upstream(UP, 1),), settings=settings or {"max_retries": 3}, **rules))
        secrets = {f"k{i}": make_key(i) for i in range(n)}
        records = [KeyRecord(i, "g", f"{s[:4]}...{s[-4:]}") for i, s in secrets.items()]
        sqlite_store.add_keys("g", records, vault.add("g", secrets))
        pool = KeyPool(sqlite_store, vault)
        transport = MemoryTransport(handler or (lambda req: Answer(200, OK)))
        session = make_session(8)
        session.mount(UP, transport)
        usage = UsageBuffer(sqlite_store, background=False)
        fwd = Forwarder(pool, AffinityMap(sqlite_store), usage, session, Breakers(rng=lambda: 0.5))
        return fwd, pool, transport, usage

    return build


def request(path, body=b"", method="POST", query="", headers=()):
    return IncomingRequest(
        method=method,
        path=path,
        query=query,
        headers=[("Content-Type", "application/json"), ("x-goog-api-key", "proxy-key"), *headers],
        body=body,
        public_base="http://proxy",
        content_type="application/json",
        source_ip="192.0.2.44",
    )


def body_of(answer) -> bytes:
    return answer.body if isinstance(answer.body, bytes) else b"".join(answer.body)


def logs(sqlite_store, usage):
    usage.flush()
    return sqlite_store.query_logs(LogQuery(group="g"), 0, 50)[0]


def test_the_upstream_gets_the_redirected_path_merged_body_and_rule_headers_on_every_attempt(rig, sqlite_store):
    calls = []

    def handler(req):
        calls.append(req)
        return Answer(503, {"error": {"code": 503, "status": "UNAVAILABLE"}}) if len(calls) == 1 else Answer(200, OK)

    fwd, pool, _transport, usage = rig(
        handler=handler,
        model_redirect_rules=REDIRECTS,
        param_overrides={"generationConfig": {"temperature": 0.2, "topK": None}},
        header_rules=(
            {"key": "X-Caller", "value": "${CLIENT_IP}@${GROUP_NAME}", "action": "set"},
            {"key": "X-Drop-Me", "value": "", "action": "remove"},
        ),
    )
    body = json.dumps({"contents": [], "generationConfig": {"maxOutputTokens": 9, "topK": 4}}).encode()
    answer = fwd.forward(
        pool.view("g"), request("v1beta/models/alias:generateContent", body, headers=[("X-Drop-Me", "1")])
    )
    assert answer.status == 200 and len(calls) == 2 and body_of(answer)
    assert calls[0].key != calls[1].key
    for seen in calls:
        assert seen.url == f"{UP}/v1beta/models/gemini-2.5-flash:generateContent"
        assert json.loads(seen.body)["generationConfig"] == {"maxOutputTokens": 9, "temperature": 0.2}
        assert seen.headers["x-caller"] == "192.0.2.44@g" and "x-drop-me" not in seen.headers
    assert calls[0].body == calls[1].body  # merged once, replayed
    rows = logs(sqlite_store, usage)
    assert {(r["model"], r["requested_model"]) for r in rows} == {("gemini-2.5-flash", "alias")}


def test_the_breaker_counts_failures_for_the_model_sent_upstream(rig):
    overloaded = errors.overloaded()
    fwd, pool, _transport, _usage = rig(
        handler=lambda req: Answer(overloaded.status, overloaded.body), model_redirect_rules=REDIRECTS
    )
    for _ in range(2):  # two requests: the breaker opens on failures seen by two of them
        answer = fwd.forward(pool.view("g"), request("v1beta/models/alias:generateContent", b"{}"))
        assert answer.status == 503
    assert fwd.breakers.state(("g", UP, "gemini-2.5-flash"), 1000.0)[0] == "open"
    assert fwd.breakers.state(("g", UP, "alias"), 1000.0)[0] == "closed"


def test_cooldowns_are_for_the_model_sent_upstream(rig):
    fwd, pool, _transport, _usage = rig(
        n=1, handler=lambda req: Answer(*_quota("gemini-2.5-flash")), model_redirect_rules=REDIRECTS
    )
    with pytest.raises(NoKeysAvailable):
        fwd.forward(pool.view("g"), request("v1beta/models/alias:generateContent", b"{}"))
    pool.reload(force=True)
    key = pool.view("g").keys[0]
    assert [c.model for c in key.state.cooldowns] == ["gemini-2.5-flash"]


def _quota(model):
    r = errors.quota_per_minute(model)
    return r.status, r.body


def test_strict_mode_refuses_without_an_upstream_call_and_logs_the_refusal(rig, sqlite_store):
    fwd, pool, transport, usage = rig(model_redirect_rules=REDIRECTS, model_redirect_strict=True)
    with pytest.raises(ModelNotAllowed):
        fwd.forward(pool.view("g"), request("v1beta/models/gemini-2.5-pro:generateContent", b"{}"))
    assert transport.seen == []
    [row] = logs(sqlite_store, usage)
    assert (row["status_code"], row["model"], row["key"]) == (404, "gemini-2.5-pro", "")


def test_openai_layer_redirect_and_overrides(rig, sqlite_store):
    fwd, pool, transport, usage = rig(model_redirect_rules={"gpt-4o": "gemini-2.5-flash"}, param_overrides={"n": 1})
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "n": 3}).encode()
    answer = fwd.forward(pool.view("g"), request("v1beta/openai/chat/completions", body))
    assert answer.status == 200 and body_of(answer)  # relayed: its usage row is written at the end
    sent = json.loads(transport.seen[0].body)
    assert sent["model"] == "gemini-2.5-flash" and sent["n"] == 1
    assert transport.seen[0].headers["authorization"].startswith("Bearer AIza")
    assert [(r["model"], r["requested_model"]) for r in logs(sqlite_store, usage)] == [("gemini-2.5-flash", "gpt-4o")]


def test_a_model_list_is_merged_unencoded_with_a_fresh_length(rig):
    listed = {"models": [{"name": "models/gemini-2.5-flash", "displayName": "Flash"}], "nextPageToken": "n"}
    fwd, pool, transport, _usage = rig(handler=lambda req: Answer(200, listed), model_redirect_rules=REDIRECTS)
    answer = fwd.forward(pool.view("g"), request("v1beta/models", method="GET", headers=[("Accept-Encoding", "gzip")]))
    assert transport.seen[0].headers["accept-encoding"] == "identity"
    body = body_of(answer)
    doc = json.loads(body)
    assert [m["name"] for m in doc["models"]] == ["models/alias", "models/gemini-2.5-flash"]
    assert doc["nextPageToken"] == "n"
    assert dict(answer.headers)["Content-Length"] == str(len(body))


def test_a_group_without_rules_sends_the_request_as_it_came(rig):
    fwd, pool, transport, _usage = rig()
    body = b'{"contents": [],   "x": 1}'
    assert pool.view("g").rules is None
    fwd.forward(pool.view("g"), request("v1beta/models/alias:generateContent", body))
    assert transport.seen[0].body == body and transport.seen[0].url.endswith("/models/alias:generateContent")


def test_one_session_per_distinct_proxy_and_direct_without_one():
    direct = make_session(4)
    sessions = Sessions(direct)
    assert sessions.for_proxy("") is direct
    first = sessions.for_proxy("http://127.0.0.1:3128")
    assert first is sessions.for_proxy("http://127.0.0.1:3128") and first is not direct
    assert first.proxies == {"http": "http://127.0.0.1:3128", "https": "http://127.0.0.1:3128"}
    assert first.trust_env is False and direct.proxies == {}
    assert sessions.for_proxy("http://127.0.0.1:3129") is not first
    sessions.close()


@pytest.mark.parametrize(
    "path",
    [
        "v1beta/models/alias/../gemini-2.5-pro:generateContent",  # requests resolves it: models/gemini-2.5-pro
        "v1beta/models/alias/x/../../gemini-2.5-pro:generateContent",
        "v1beta/models/alias/%2e%2E/gemini-2.5-pro:generateContent",  # an upstream may resolve it too
        "v1beta/models/alias/./../gemini-2.5-pro:streamGenerateContent",
        "v1beta/models%2Fgemini-2.5-pro:generateContent",  # names no model to gptload; an upstream may decode it
        "v1beta/models/alias%5C..%5Cgemini-2.5-pro:generateContent",
        "v1beta/models/alias/..\\..\\models\\gemini-2.5-pro:generateContent",  # requests sends %5C for a raw one
    ],
)
def test_a_path_gptload_and_the_upstream_could_read_differently_is_refused_before_any_call(rig, sqlite_store, path):
    # strict mode would check "alias" while the upstream is asked for gemini-2.5-pro
    fwd, pool, transport, usage = rig(model_redirect_rules=REDIRECTS, model_redirect_strict=True)
    with pytest.raises(InvalidPath) as caught:
        fwd.forward(pool.view("g"), request(path, b"{}"))
    assert caught.value.status == 400 and transport.seen == []
    [row] = logs(sqlite_store, usage)
    assert row["status_code"] == 400 and row["key"] == ""


def test_a_group_without_rules_refuses_dot_segments_too(rig):
    # cooldowns and statistics would be kept for the model gptload read ("cheap"), not the one that was called
    fwd, pool, transport, _usage = rig()
    with pytest.raises(InvalidPath):
        fwd.forward(pool.view("g"), request("v1beta/models/cheap/../gemini-2.5-pro:generateContent", b"{}"))
    assert transport.seen == []
    fwd.forward(pool.view("g"), request("v1beta/models/gemini-2.5-pro..x:generateContent", b"{}"))  # dots in a name
    assert transport.seen[0].url == f"{UP}/v1beta/models/gemini-2.5-pro..x:generateContent"


def test_a_validation_probe_answered_407_by_the_egress_proxy_blames_no_key(rig):
    # an HTTP upstream through an HTTP proxy: the 407 is the proxy's, whatever its body says
    bad = errors.invalid_key()
    settings = {"max_retries": 3, "proxy_url": "http://user:wrong@127.0.0.1:3128"}
    _fwd, pool, _transport, _usage = rig(handler=lambda req: Answer(407, bad.body), settings=settings)
    view = pool.view("g")
    session = make_session(2)
    session.mount(UP, MemoryTransport(lambda req: Answer(407, bad.body)))
    verdict = probe(session, view, view.keys[0], 5.0)
    assert verdict.network and verdict.kind.value == "transient" and "407" in verdict.reason
