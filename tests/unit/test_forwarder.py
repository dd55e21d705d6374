"""The forwarder's rules, pinned with an in-memory upstream (tests/fakes/memory_transport.py): attempts and keys,
body replay, no retry after the first byte, what the client gets when nothing succeeds, pinned keys, scrubbing,
the breaker and isolated failures."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import requests

from gptload.cipher import Cipher
from gptload.errors import CircuitOpen, NoKeysAvailable, UpstreamUnreachable
from gptload.keypool.breaker import Breakers
from gptload.models import Group, KeyRecord, Upstream
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

UP = "http://up.test"
OK = {"candidates": [{"content": {"parts": [{"text": "hi"}]}}], "usageMetadata": {"totalTokenCount": 3}}
BODY = b'{"contents":[{"parts":[{"text":"hello \\u00e9"}]}], "x": 1}'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rig(sqlite_store):
    """A forwarder over a real SQLite store, a group of ``n`` keys and an in-memory upstream."""

    def build(n=4, handler=None, upstreams=((UP, 1),), settings=None):
        vault = StoreVault(sqlite_store, Cipher(b"k" * 32))
        sqlite_store.create_group(
            Group("g", tuple(Upstream(u, w) for u, w in upstreams), settings=settings or {"max_retries": 3})
        )
        secrets = {f"k{i}": make_key(i) for i in range(n)}
        records = [KeyRecord(i, "g", f"{s[:4]}...{s[-4:]}") for i, s in secrets.items()]
        sqlite_store.add_keys("g", records, vault.add("g", secrets))
        pool = KeyPool(sqlite_store, vault)
        transport = MemoryTransport(handler or (lambda req: Answer(200, OK)))
        session = make_session(8)
        for u, _ in upstreams:
            session.mount(u, transport)
        clock = Clock()
        breakers = Breakers(rng=lambda: 0.5)
        usage = UsageBuffer(sqlite_store, background=False)
        fwd = Forwarder(pool, AffinityMap(sqlite_store), usage, session, breakers, clock=clock)
        return fwd, pool, transport, secrets, clock, usage

    return build


def request(model="gemini-2.5-pro", body=BODY, stream=False, path=None):
    method = "streamGenerateContent" if stream else "generateContent"
    return IncomingRequest(
        method="POST",
        path=path or f"v1beta/models/{model}:{method}",
        query="alt=sse" if stream else "",
        headers=[("Content-Type", "application/json"), ("x-goog-api-key", "proxy-key")],
        body=body,
        public_base="http://proxy",
        content_type="application/json",
    )


def body_of(answer) -> bytes:
    return answer.body if isinstance(answer.body, bytes) else b"".join(answer.body)


def reply(r) -> Answer:
    """A fake_gemini ``Reply`` as an in-memory answer."""
    return Answer(r.status, r.body)


def test_attempts_are_one_plus_max_retries_on_distinct_keys_with_the_body_replayed(rig):
    fwd, pool, transport, secrets, *_ = rig(n=6, handler=lambda req: reply(errors.overloaded()))
    answer = fwd.forward(pool.view("g"), request())
    assert answer.status == 503  # Google's own 503: every attempt failed upstream
    keys = [s.key for s in transport.seen]
    assert len(keys) == 4 and len(set(keys)) == 4 and set(keys) <= set(secrets.values())
    assert all(s.body == BODY for s in transport.seen)
    assert all(s.headers["x-goog-api-key"] != "proxy-key" for s in transport.seen)


def test_a_request_error_is_passed_through_at_once(rig):
    fwd, pool, transport, *_ = rig(handler=lambda req: reply(errors.bad_request()))
    answer = fwd.forward(pool.view("g"), request())
    assert answer.status == 400 and len(transport.seen) == 1
    assert b"Unknown name" in body_of(answer)


def test_pool_key_errors_become_no_keys_available_with_a_summary(rig):
    def handler(req):
        return reply(errors.invalid_key() if req.key == make_key(0) else errors.quota_per_minute("gemini-2.5-pro"))

    fwd, pool, transport, secrets, *_ = rig(n=2, handler=handler)
    with pytest.raises(NoKeysAvailable) as caught:
        fwd.forward(pool.view("g"), request())
    message = caught.value.message
    assert "2 keys tried" in message and "invalid (400 API_KEY_INVALID)" in message and "cooling for" in message
    assert not any(s in message for s in secrets.values())
    assert 0 < caught.value.details["retry_after"] <= 26
    # nothing left to try: refused without an upstream call
    with pytest.raises(NoKeysAvailable):
        fwd.forward(pool.view("g"), request())
    assert len(transport.seen) == 2


def test_no_retry_once_bytes_reached_the_client(rig):
    chunks = [b'data: {"a":1}\n\n', ConnectionResetError("reset")]
    fwd, pool, transport, *_ = rig(handler=lambda req: Answer(200, iter(chunks), {"Content-Type": "text/event-stream"}))
    answer = fwd.forward(pool.view("g"), request(stream=True))
    relay = iter(answer.body)
    assert next(relay) == b'data: {"a":1}\n\n'
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # re-raised: the server aborts the connection
        next(relay)
    assert len(transport.seen) == 1


def test_a_pinned_key_is_used_once(rig, sqlite_store):
    fwd, pool, transport, secrets, *_ = rig(handler=lambda req: reply(errors.overloaded()))
    view = pool.view("g")
    fwd._affinity.bind(Binding(RESOURCE, "files/abc", "g", "k2", UP, 4e9))
    answer = fwd.forward(view, request(body=b'{"contents":[{"parts":[{"fileData":{"fileUri":"x/files/abc"}}]}]}'))
    assert answer.status == 503 and [s.key for s in transport.seen] == [secrets["k2"]]


def test_every_pool_key_is_scrubbed_from_error_answers(rig):
    def handler(req):
        text = f"Permission denied: Consumer 'api_key:{req.key}' has been suspended."
        body = json.loads(json.dumps(errors.suspended().body))
        body["error"]["message"] = text
        return Answer(403, body, {"X-Echo": req.key})

    fwd, pool, transport, secrets, *_ = rig(n=2, handler=handler, settings={"max_retries": 0})
    with pytest.raises(NoKeysAvailable) as caught:
        fwd.forward(pool.view("g"), request())
    assert "CONSUMER_SUSPENDED" in caught.value.message
    assert not any(s in caught.value.message for s in secrets.values())
    # a request error that quotes every key (by exact value) is passed through without them
    echo = " ".join(secrets.values())
    transport.handler = lambda req: Answer(400, {"error": {"code": 400, "message": echo}}, {"X-Echo": echo})
    answer = fwd.forward(pool.view("g"), request())
    text = body_of(answer).decode() + json.dumps(answer.headers)
    assert answer.status == 400 and not any(s in text for s in secrets.values()) and "AIza..." in text


def test_outages_never_change_keys_and_open_the_breaker(rig, sqlite_store):
    fwd, pool, transport, _secrets, clock, _ = rig(n=4, handler=lambda req: reply(errors.overloaded()))
    view = pool.view("g")
    assert fwd.forward(view, request()).status == 503  # 4 failures, one witness: still closed
    answer = fwd.forward(view, request())  # a second witness: it opens after this request's first failure
    assert answer.status == 503 and ("Retry-After", "1") in answer.headers
    assert len(transport.seen) == 5
    with pytest.raises(CircuitOpen) as caught:
        fwd.forward(view, request())
    assert caught.value.details["retry_after"] == pytest.approx(0.5)
    assert len(transport.seen) == 5  # held back: no call upstream
    assert fwd.forward(view, request("gemini-2.5-flash")).status == 503  # another model is not held back
    assert {k.state.status for k in sqlite_store.list_keys("g")} == {"active"}
    assert all(k.state.failure_count == 0 for k in sqlite_store.list_keys("g"))
    # Google recovers; after the period one probe goes through and closes it
    transport.handler = lambda req: Answer(200, OK)
    clock.now += 0.6
    assert fwd.forward(view, request()).status == 200
    assert fwd.breakers.state(("g", UP, "gemini-2.5-pro"), clock.now)[0] == "closed"


def test_connect_errors_on_every_attempt_are_upstream_unreachable(rig):
    fwd, pool, _transport, *_ = rig(handler=lambda req: Answer(raise_=requests.exceptions.ConnectionError("refused")))
    with pytest.raises(UpstreamUnreachable) as caught:
        fwd.forward(pool.view("g"), request())
    assert "4 keys tried" in caught.value.message and "no answer (ConnectionError)" in caught.value.message


def test_an_open_upstream_is_skipped_while_another_can_serve(rig):
    other = "http://other.test"

    def handler(req):
        return reply(errors.overloaded()) if req.url.startswith(UP) else Answer(200, OK)

    fwd, pool, transport, *_ = rig(handler=handler, upstreams=((UP, 1), (other, 1)))
    view = pool.view("g")
    for rid in (1, 2, 3):
        fwd.breakers.failure(("g", UP, "gemini-2.5-pro"), 1000.0, rid)
    for _ in range(4):
        assert fwd.forward(view, request()).status == 200
    assert all(s.url.startswith(other) for s in transport.seen)


def test_a_key_failing_while_another_serves_is_counted_and_disabled_at_the_threshold(rig, sqlite_store):
    def handler(req):
        return reply(errors.internal()) if req.key == make_key(0) else Answer(200, OK)

    fwd, pool, _transport, _secrets, *_ = rig(n=2, handler=handler)
    view = pool.view("g")
    for _ in range(8):
        assert fwd.forward(view, request()).status == 200
    states = {k.id: k.state for k in sqlite_store.list_keys("g")}
    assert states["k0"].status == "invalid" and states["k0"].last_error.startswith("failing: 3 failures")
    assert states["k1"].status == "active"


def test_usage_rows_for_refused_requests_have_no_key(rig, sqlite_store):
    fwd, pool, _transport, _secrets, _clock, usage = rig(n=1, handler=lambda req: reply(errors.invalid_key()))
    view = pool.view("g")
    for _ in range(2):
        with pytest.raises(NoKeysAvailable):
            fwd.forward(view, request())
    usage.flush()
    from gptload.models import LogQuery

    rows, total = sqlite_store.query_logs(LogQuery(group="g"), 0, 10)
    assert total == 2 and sorted((r["status_code"], r["key_id"]) for r in rows) == [(400, "k0"), (503, "")]


def test_replace_keeps_incoming_request_frozen():
    req = request()
    assert replace(req, body=b"x").body == b"x" and req.body == BODY


def test_the_dashboard_lists_open_breakers(rig, sqlite_store):
    from gptload.insights import Insights

    fwd, pool, _, _, _, usage = rig(n=2, handler=lambda req: reply(errors.overloaded()))
    for _ in range(2):
        fwd.forward(pool.view("g"), request())
    insights = Insights(sqlite_store, pool, usage, fwd.breakers)
    (row,) = insights.dashboard()["breakers"]
    assert row["group"] == "g" and row["model"] == "gemini-2.5-pro" and row["state"] == "open"
    assert "503" in row["last_failure"]


def test_event_ids_are_unique_and_drawn_again_in_a_forked_process():
    import os

    from gptload.proxy.trace import EventIds

    ids = EventIds()
    drawn = [ids.next() for _ in range(10_000)]
    assert len(set(drawn)) == 10_000 and all(len(i) >= 16 for i in drawn)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new prefix, never the parent's
        os.write(write, ids.next().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert child[:10] != drawn[0][:10] and child not in drawn


def test_the_attempts_of_one_request_share_a_request_id_and_log_ids_name_their_attempt(rig, sqlite_store):
    from gptload.insights import Insights
    from gptload.models import LogQuery, request_id_of

    fwd, pool, _transport, _secrets, _clock, usage = rig(n=3, handler=lambda req: reply(errors.quota_per_minute()))
    view = pool.view("g")
    for _ in range(2):  # each: three 429 attempts on the three keys, the last final
        with pytest.raises(NoKeysAvailable):
            fwd.forward(view, request())
    usage.flush()
    rows, _ = sqlite_store.query_logs(LogQuery(group="g"), 0, 10)
    second, first = request_id_of(rows[0]["id"]), request_id_of(rows[-1]["id"])
    assert second != first
    for rid in (first, second):
        attempts = sorted((r for r in rows if request_id_of(r["id"]) == rid), key=lambda r: r["attempt"])
        assert [r["id"] for r in attempts] == [f"{rid}-1", f"{rid}-2", f"{rid}-3"]
        assert [r["final"] for r in attempts] == [False, False, True]
    # the read model adds request_id to every row and lists the request's attempts from any one of them
    insights = Insights(sqlite_store, pool, usage)
    listed = insights.logs(LogQuery(group="g"), 1, 10)["logs"]
    assert [r["request_id"] for r in listed] == [second] * 3 + [first] * 3
    for attempt in (1, 2, 3):
        detail = insights.log(f"{first}-{attempt}")
        assert detail["log"]["id"] == f"{first}-{attempt}"
        assert [a["id"] for a in detail["attempts"]] == [f"{first}-1", f"{first}-2", f"{first}-3"]


def test_a_request_refused_before_any_attempt_is_attempt_0_of_its_own_request(rig, sqlite_store):
    from gptload.insights import Insights
    from gptload.models import LogQuery

    fwd, pool, _transport, _secrets, _clock, usage = rig(n=1, handler=lambda req: reply(errors.invalid_key()))
    view = pool.view("g")
    for _ in range(2):  # the key is disabled by the first; the second request finds no key at all
        with pytest.raises(NoKeysAvailable):
            fwd.forward(view, request())
    usage.flush()
    refused = sqlite_store.query_logs(LogQuery(group="g"), 0, 10)[0][0]
    assert refused["attempt"] == 0 and refused["key_id"] == "" and refused["id"].endswith("-0")
    detail = Insights(sqlite_store, pool, usage).log(refused["id"])
    assert detail["log"]["request_id"] == refused["id"][:-2]
    assert [a["id"] for a in detail["attempts"]] == [refused["id"]]


def test_request_ids_of_log_ids():
    from gptload.models import attempt_log_id, request_id_of

    assert attempt_log_id("ab12", 3) == "ab12-3" and request_id_of("ab12-3") == "ab12"
    assert request_id_of(attempt_log_id("ab12", 0)) == "ab12"
    assert request_id_of("log-00017") == "log"  # any "-" splits: ids are made by attempt_log_id
    assert request_id_of("0123abcd") == "0123abcd"  # an id without "-" (older rows) is its own request


def test_a_client_chosen_model_name_is_logged_at_a_bounded_length(rig, sqlite_store):
    # The OpenAI layer takes the model from the JSON body (up to MAX_SCAN_BYTES): a 1 MB name must not become
    # a 1 MB log row, tag or statistic (on Firestore such a row is a document over 1 MiB, which never commits).
    fwd, pool, *_rest, usage = rig(n=1)
    huge = "m" * 1_000_000
    body = json.dumps({"model": huge, "messages": [{"role": "user", "content": "hi"}]}).encode()
    fwd.forward(pool.view("g"), request(body=body, path="v1beta/openai/chat/completions"))
    usage.flush()
    from gptload.models import LogQuery

    rows, total = sqlite_store.query_logs(LogQuery(group="g"), 0, 10)
    assert total == 1 and 0 < len(rows[0]["model"]) <= 200 and huge.startswith(rows[0]["model"])
    assert len(rows[0]["requested_model"]) <= 200 and len(rows[0]["path"]) <= 2000


def test_a_lone_surrogate_in_the_model_name_does_not_stop_the_usage_flush(rig, sqlite_store):
    # JSON may escape a lone surrogate ("\udc80"): Python decodes it into a str that no UTF-8 encoder accepts, so
    # the store rejected the whole batch on every retry and every later event of the instance waited behind it.
    fwd, pool, *_rest, usage = rig(n=1)
    body = b'{"model": "gem\\udc80ini", "messages": [{"role": "user", "content": "hi"}]}'
    fwd.forward(pool.view("g"), request(body=body, path="v1beta/openai/chat/completions"))
    fwd.forward(pool.view("g"), request())
    assert usage.flush() == 2 and len(usage) == 0
    from gptload.models import LogQuery

    rows, total = sqlite_store.query_logs(LogQuery(group="g"), 0, 10)
    assert total == 2 and sorted(r["model"] for r in rows) == ["gemini-2.5-pro", "gem\ufffdini"]


@pytest.mark.parametrize("count", ["99999999999999999999999", "9" * 5000])
def test_a_token_count_past_int64_does_not_stop_the_usage_flush(rig, sqlite_store, count):
    # usageMetadata is the upstream's text: a count past 2**63 - 1 is no SQLite INTEGER (nor a Firestore integer)
    # and was kept for ever in the failed batch, holding back every later event; past 4,300 digits int() raised.
    body = b'{"candidates": [], "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": ' + count.encode() + b"}}"
    fwd, pool, *_rest, usage = rig(n=1, handler=lambda req: Answer(200, body))
    fwd.forward(pool.view("g"), request())
    fwd.forward(pool.view("g"), request())
    assert usage.flush() == 2 and len(usage) == 0
