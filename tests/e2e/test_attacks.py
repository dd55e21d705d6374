"""Attacks from outside (QA round h7): each test reproduces a defect found against the real server, a fake Gemini
or a hostile upstream on loopback, and a raw or SDK client. Each failed when it was written and passes since the
fix.

Claims attacked (README "How it treats Gemini's errors", "Limits and timeouts"; docs/api.md "Outages"):
1. a Google-side failure never empties the pool; one client cannot shut a model for others; weighted upstreams;
2. gptload's errors on /proxy/ use Google's envelope;
3. no real key ever reaches a client or the admin API, whatever the encoding of an upstream error;
5. hostile upstreams: broken error bodies, interim 1xx answers;
6. hostile clients: deep JSON, truncated bodies, more slow clients than threads;
7. nothing lost: SIGTERM while a stream waits for its first byte.
"""

from __future__ import annotations

import gzip
import itertools
import json
import secrets
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.parse

import pytest
import requests

from tests.e2e.conftest import Group, start_server
from tests.fakes.fake_gemini import FakeGemini, Reply, errors, make_key
from tests.fakes.hostile_upstream import Act, HostileUpstream, Reset, Trickle, _head

GEN = "v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
BODY = {"contents": [{"parts": [{"text": "hi"}]}]}
POISON = b'{"contents": [{"parts": [{"text": "POISON: a context too large to finish in time"}]}]}'


def post(group, path=GEN, **kw) -> requests.Response:
    if "data" not in kw:
        kw.setdefault("json", BODY)
    kw.setdefault("timeout", 30)
    headers = {"x-goog-api-key": group.proxy_key, "Content-Type": "application/json", **kw.pop("headers", {})}
    return requests.post(f"{group.base}/{path}", headers=headers, **kw)


def reason_of(r) -> str:
    details = r.json()["error"].get("details") or [{}]
    return details[0].get("reason", "")


def group_with_upstreams(server, upstreams: list[dict], keys: list[str]) -> Group:
    name, proxy_key = f"g-{secrets.token_hex(5)}", f"pk-{secrets.token_hex(16)}"
    r = server.api("POST", "/api/groups", json={"name": name, "upstreams": upstreams, "proxy_keys": [proxy_key]})
    assert r.status_code == 201, r.text
    r = server.api("POST", f"/api/groups/{name}/keys", json={"keys": "\n".join(keys)})
    assert r.status_code == 200 and r.json()["added"] == len(keys), r.text
    return Group(server, name, proxy_key, keys)


@pytest.fixture
def hostile():
    with HostileUpstream() as up:
        yield up


# == 1. Google-side failures ==================================================================================
def test_one_client_repeating_a_request_google_times_out_cannot_shut_the_model(server, fake):
    """Google answers 504 DEADLINE_EXCEEDED to a request it cannot finish in time (a huge context, or the client's
    own ``X-Server-Timeout``, which google-genai sends whenever ``HttpOptions(timeout=...)`` is set). That is the
    request's doing, like the poison 500 the breaker already guards against, yet the witness of a 504 is the
    request id: two identical requests from one client open the breaker, and everybody else gets 503."""
    keys = [fake.add_key() for _ in range(4)]
    group = server.make_group(fake.url, keys)
    for k in keys:
        fake.set_behavior(k, lambda req: errors.deadline() if b"POISON" in req.body else None)
    poisoned = [post(group, data=POISON).status_code for _ in range(2)]
    assert poisoned == [504, 504]
    innocent = post(group)
    assert innocent.status_code == 200, (innocent.status_code, innocent.text[:300])


def test_one_client_varying_the_whitespace_of_a_poison_500_cannot_shut_the_model(server, fake):
    """The 500 witness is hash(path, body bytes): the same poison request with one more space is a 'different
    request', so one client shuts the model for everyone with three requests."""
    keys = [fake.add_key() for _ in range(4)]
    group = server.make_group(fake.url, keys)
    for k in keys:
        fake.set_behavior(k, lambda req: errors.internal() if b"POISON" in req.body else None)
    for i in range(3):
        post(group, data=POISON + b" " * i)
    innocent = post(group)
    assert innocent.status_code == 200, (innocent.status_code, innocent.text[:300])


def test_an_intermittent_overload_disables_no_key(server, fake):
    """Google's "model is overloaded" hits calls at random, whatever the key. Here every other call is answered
    503: each request fails on one key and succeeds on the next, which the forwarder counts as an *isolated*
    failure of the first key; after blacklist_threshold (3) of them, keys are disabled for an outage that said
    nothing about them (measured: 3 of 4 keys invalid after 12 requests; from then on the requests fail too)."""
    keys = [fake.add_key() for _ in range(4)]
    group = server.make_group(fake.url, keys)
    calls = itertools.count()
    lock = threading.Lock()

    def every_other_call_overloaded(req):
        with lock:
            n = next(calls)
        return errors.overloaded() if n % 2 == 0 else None

    for k in keys:
        fake.set_behavior(k, every_other_call_overloaded)
    answers = [post(group).status_code for _ in range(12)]
    rows = group.key_rows()
    assert [r["status"] for r in rows] == ["active"] * 4, (answers, [(r["status"], r["last_error"]) for r in rows])
    assert answers == [200] * 12


@pytest.fixture
def two_fakes():
    keys = [make_key(880_000 + i) for i in range(4)]
    with FakeGemini(n_keys=0) as a, FakeGemini(n_keys=0) as b:
        for k in keys:
            a.add_key(k)
            b.add_key(k)
        yield a, b, keys


@pytest.mark.parametrize(("wa", "wb"), [(1, 1), (1, 3)])
def test_weighted_upstreams_share_the_traffic_by_weight(server, two_fakes, wa, wb):
    """Each attempt draws two upstreams from the smooth weighted round robin and takes the first admitted one,
    so with weights 1:1 every request goes to the first upstream (measured 40/0) and with 1:3 every request goes
    to the second (measured 0/40), instead of 20/20 and 10/30."""
    a, b, keys = two_fakes
    group = group_with_upstreams(server, [{"url": a.url, "weight": wa}, {"url": b.url, "weight": wb}], keys)
    assert all(post(group).status_code == 200 for _ in range(40))
    to_a, to_b = len(a.requests_for()), len(b.requests_for())
    expected_a = 40 * wa / (wa + wb)
    assert abs(to_a - expected_a) <= 6, f"weights {wa}:{wb}: A got {to_a}, B got {to_b}"


def test_an_open_upstream_is_skipped_whatever_the_weights(server, fake):
    """Weights 3:1 with the heavy upstream refusing connections: once its breaker is open, half of the requests
    (those whose two draws are both the heavy one) get 503 UPSTREAM_UNAVAILABLE although the other upstream is
    healthy (measured 10/20 OK; 3/20 with weights 10:1)."""
    keys = [fake.add_key() for _ in range(4)]
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    group = group_with_upstreams(server, [{"url": dead, "weight": 3}, {"url": fake.url, "weight": 1}], keys)
    for _ in range(6):  # opens the dead upstream's breaker
        post(group)
    answers = [post(group) for _ in range(20)]
    refused = [(r.status_code, reason_of(r)) for r in answers if r.status_code != 200]
    assert refused == [], f"{len(refused)}/20 refused: {refused[:3]}"


# == 3. real keys in odd encodings ============================================================================
def _real_key(seen) -> str:
    return seen.headers.get("x-goog-api-key") or seen.headers.get("authorization", "").removeprefix("Bearer ")


class KeyInError(Act):
    """A 400 whose body carries the real key the upstream received, in the form ``encode`` gives it."""

    def __init__(self, encode, status: int = 400, content_encoding: str = "", compress=None) -> None:
        self.encode, self.status, self.content_encoding, self.compress = encode, status, content_encoding, compress

    def run(self, h, seen) -> None:
        body = self.encode(_real_key(seen))
        headers = [("Content-Type", "application/json")]
        if self.content_encoding:
            headers.append(("Content-Encoding", self.content_encoding))
            body = self.compress(body)
        _head(h, self.status, [*headers, ("Content-Length", str(len(body)))])
        h.connection.sendall(body)


def _escaped(k: str) -> str:
    """``k`` with its first character as a JSON ``\\uXXXX`` escape."""
    return f"\\u{ord(k[0]):04x}{k[1:]}"


def _percent(k: str) -> str:
    return "".join(f"%{ord(c):02X}" for c in k)


def _envelope(message_json: str, status: int = 400) -> bytes:
    """Google's error envelope with ``message_json`` (already a JSON string literal) as its message."""
    return b'{"error": {"code": %d, "message": %s, "status": "INVALID_ARGUMENT"}}' % (status, message_json.encode())


def _suspended(k: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "code": 403,
                "message": f"Permission denied: Consumer 'api_key:{k}' has been suspended.",
                "status": "PERMISSION_DENIED",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CONSUMER_SUSPENDED"}],
            }
        }
    ).encode()


LEAKS = {
    # the key with one character JSON-escaped: every JSON parser reads the real key
    "json-escaped": KeyInError(lambda k: _envelope(f'"request by {_escaped(k)} failed"')),
    # the key percent-encoded (as in a URL a gateway quotes back)
    "url-encoded": KeyInError(lambda k: _envelope(json.dumps("see " + _percent(k)))),
    # the key straddling the 1 MiB cap of error bodies: the part before the cut is kept unmasked
    "cut-at-1-MiB": KeyInError(
        lambda k: b'{"error": {"code": 400, "message": "' + b"x" * (1024 * 1024 - 56) + k.encode() + b'"}}'
    ),
    # a list of codings (RFC 9110 allows it) gptload does not decode: the raw gzip goes out, Content-Encoding dropped
    "encoding-list": KeyInError(_suspended, status=403, content_encoding="identity, gzip", compress=gzip.compress),
    "double-gzip": KeyInError(
        _suspended, status=403, content_encoding="gzip, gzip", compress=lambda b: gzip.compress(gzip.compress(b))
    ),
}


def _recoverable(keys: list[str], r: requests.Response) -> list[str]:
    """How a client could read a real key out of ``r``: plain, JSON-decoded, URL-decoded, gunzipped, or 20+ of
    its 39 characters."""
    raw = r.content
    found = []
    for k in keys:
        if k.encode() in raw or k in str(r.headers):
            found.append("plain")
        if k[:20].encode() in raw and k.encode() not in raw:
            found.append("first 20 characters")
        try:
            if k in str(json.loads(raw)):
                found.append("json")
        except ValueError:
            pass
        if k in urllib.parse.unquote(raw.decode("latin-1")):
            found.append("url-decoded")
        data = raw
        for _ in range(3):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                break
            if k.encode() in data:
                found.append("gunzipped")
    return found


@pytest.mark.parametrize("form", list(LEAKS))
def test_no_real_key_reaches_the_client_in_any_encoding_of_an_error(server, hostile, form):
    hostile.default = LEAKS[form]
    keys = [make_key(secrets.randbelow(10**9)) for _ in range(2)]
    group = server.make_group(hostile.url, keys)
    r = post(group, headers={"Accept-Encoding": "gzip"})
    assert _recoverable(keys, r) == [], (r.status_code, r.headers, r.content[:200])


class EscapedKey503(Act):
    """Google-shaped 503 whose message names the key with its first character JSON-escaped."""

    def run(self, h, seen) -> None:
        k = _real_key(seen)
        body = _envelope(json.dumps("backend for X overloaded").replace("X", _escaped(k)), 503)
        _head(h, 503, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        h.connection.sendall(body)


def test_no_real_key_reaches_the_admin_api_through_the_breakers_last_failure(server, hostile):
    """The breaker keeps the verdict's reason, decoded from the (byte-scrubbed) JSON, and GET /api/dashboard shows it
    unscrubbed as ``breakers[].last_failure``."""
    hostile.default = EscapedKey503()
    keys = [make_key(secrets.randbelow(10**9)) for _ in range(2)]
    group = server.make_group(hostile.url, keys)
    for _ in range(3):
        post(group)
    dashboard = server.api("GET", "/api/dashboard")
    breakers = [b for b in dashboard.json()["breakers"] if b["group"] == group.name]
    assert breakers, "the breaker did not open"
    assert not any(k in dashboard.text for k in keys), breakers


# == 5. hostile upstreams =====================================================================================
@pytest.mark.parametrize(
    "act",
    [
        Reset(status=400, declared=1000, send=10),
        Reset(status=429, declared=1000, send=10),
        Trickle(status=400, interval=0.5),
    ],
    ids=["400-reset", "429-reset", "400-trickled-past-the-deadline"],
)
def test_an_error_body_that_breaks_off_is_gptloads_502_or_504_not_the_upstreams_status_with_no_body(
    server, hostile, act
):
    """docs/api.md: UPSTREAM_UNREACHABLE when the answer broke off before its first byte was relayed,
    UPSTREAM_TIMEOUT when it did not arrive before request_timeout_seconds. Instead the client gets the upstream's
    status (400, or a pool key's 429) with an empty body: an SDK sees a ClientError of its own making."""
    hostile.default = act
    group = server.make_group(
        hostile.url, [make_key(secrets.randbelow(10**9))], settings={"max_retries": 0, "request_timeout_seconds": 2}
    )
    r = post(group)
    assert r.status_code in (502, 504), (r.status_code, r.content[:200])
    assert reason_of(r) in ("UPSTREAM_UNREACHABLE", "UPSTREAM_TIMEOUT")


class EarlyHints(Act):
    """``103 Early Hints`` and then the real answer, as a CDN or gateway in front of the API may send."""

    def run(self, h, seen) -> None:
        body = b'{"candidates": [{"content": {"parts": [{"text": "the answer"}]}}]}'
        h.connection.sendall(
            b"HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\n"
            + b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )


def test_an_interim_1xx_answer_is_not_taken_for_the_final_one(server, hostile):
    """It was: the client got ``103`` with an empty body, logged as a success. Python's HTTP client skips only
    ``100 Continue``, so an interim answer is now treated as no usable answer from that upstream: retried on
    another key, then 502 UPSTREAM_UNREACHABLE; never relayed as if it were final."""
    hostile.default = EarlyHints()
    group = server.make_group(hostile.url, [make_key(secrets.randbelow(10**9))])
    r = post(group)
    assert r.status_code == 502 and reason_of(r) == "UPSTREAM_UNREACHABLE", (r.status_code, r.content[:200])
    assert "interim 103" in r.json()["error"]["message"]


# == 2. gptload's errors on /proxy/ ===========================================================================
def test_the_http_servers_own_errors_on_proxy_routes_use_googles_envelope(server, group):
    """431/414 on /proxy/... come as {"error": {"code": "HEADERS_TOO_LARGE", "message": ...}}: a string code and
    no status (google-genai raises ClientError with status None)."""
    r = post(group, headers={"X-Big": "a" * 9000})
    assert r.status_code == 431
    error = r.json()["error"]
    assert isinstance(error["code"], int) and error.get("status"), error


# == 6. hostile clients =======================================================================================
def test_deeply_nested_json_on_the_openai_layer_is_not_an_internal_error(server, group):
    """model_of() json.loads the OpenAI-layer body to find the model and catches ValueError only: nesting past
    Python's recursion limit raises RecursionError -> 500 INTERNAL with a traceback in the log, the request is
    neither forwarded nor counted."""
    deep = "[" * 100_000 + "]" * 100_000
    r = post(group, "v1beta/openai/chat/completions", data=deep)
    assert r.status_code != 500, r.text[:200]


def test_a_body_cut_short_by_the_client_is_not_forwarded(server, fake, group):
    """Content-Length: 100, 16 bytes sent, then the client goes away: gptload sends the 16 bytes to Google as the
    whole request, with a pool key (a truncated prompt, or a truncated file upload, executed and billed)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /proxy/{group.name}/{GEN} HTTP/1.1\r\nHost: {host}\r\nx-goog-api-key: {group.proxy_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"contents": []}'
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not fake.requests_for(path_contains="generateContent"):
        time.sleep(0.05)
    sent = [r.body for r in fake.requests_for(path_contains="generateContent")]
    assert sent == [], f"forwarded upstream: {sent}"


# == 7. nothing lost ==========================================================================================
def test_sigterm_while_streams_wait_for_their_first_byte_loses_no_usage(tmp_path):
    """Streams whose upstream has not answered yet (a thinking model takes seconds to its first chunk) when SIGTERM
    arrives: the worker cuts them and exits, and none of them leaves a request-log row or a statistics count
    (measured 0 of 3; the same for non-streamed calls, and for the failed attempts of a request still retrying)."""
    with FakeGemini(n_keys=3) as fake:
        for k in fake.keys:
            fake.set_behavior(k, Reply.ok(delay=20))
        srv = start_server(tmp_path, {"GRACEFUL_TIMEOUT_SECONDS": "4", "USAGE_FLUSH_SECONDS": "3600"})
        socks = []
        try:
            group = srv.make_group(fake.url, fake.keys)
            host, port = srv.url.removeprefix("http://").split(":")
            body = json.dumps(BODY).encode()
            for _ in range(3):
                sock = socket.create_connection((host, int(port)), timeout=10)
                sock.sendall(
                    f"POST /proxy/{group.name}/{STREAM} HTTP/1.1\r\nHost: {host}\r\nx-goog-api-key: {group.proxy_key}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                socks.append(sock)
            fake.wait_for_requests(3, timeout=10)
            srv.process.send_signal(signal.SIGTERM)
            try:
                srv.process.wait(20)
            except subprocess.TimeoutExpired:
                srv.process.kill()
                raise
        finally:
            for sock in socks:
                sock.close()
            srv.stop()
    with sqlite3.connect(srv.data_dir / "gptload.db", timeout=10) as db:
        rows = db.execute("SELECT COUNT(*) FROM request_logs").fetchone()[0]
        counted = db.execute("SELECT COALESCE(SUM(requests), 0) FROM stats_hourly").fetchone()[0]
    assert (rows, counted) == (3, 3), f"{rows} request-log rows, {counted} requests counted for 3 streams"
