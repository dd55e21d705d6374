"""GET /metrics of the real server: refused without the token, and its counters move with real proxied requests
(the google-genai SDK through the proxy to the fake Gemini), parsed with prometheus_client's parser."""

from __future__ import annotations

import json

import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import AUTH_KEY, start_server, wait_for
from tests.fakes.fake_gemini import errors

METRICS_TOKEN = "e2e-scraper-token-0123456789"


def scrape(server, token: str = AUTH_KEY) -> dict[tuple[str, tuple], float]:
    r = requests.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }


def of(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def client(group) -> genai.Client:
    return genai.Client(api_key=group.proxy_key, http_options=types.HttpOptions(base_url=group.base))


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-key-0123456789", f"Basic {AUTH_KEY}"])
def test_metrics_refuses_without_the_token(server, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    r = requests.get(f"{server.url}/metrics", headers=headers, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHORIZED"
    assert "gptload_requests_total" not in r.text


def test_counters_move_after_real_proxied_requests(server, group, fake):
    g = group.name
    before = scrape(server)
    assert of(before, "gptload_requests_total", group=g, code="200") == 0  # a fresh group
    c = client(group)
    # 1: a plain call, its first attempt refused with a per-minute quota, retried on another key
    fake.script("*", [errors.quota_per_minute("gemini-2.5-flash", retry_delay="30s")], path_contains=":generate")
    answer = c.models.generate_content(model="gemini-2.5-flash", contents="hello there")
    assert answer.text
    # 2: a stream
    chunks = list(c.models.generate_content_stream(model="gemini-2.5-flash", contents="one two three four"))
    assert len(chunks) >= 2
    # 3: a request refused by Google as the request's own fault (passed through, no retry)
    fake.script("*", [errors.bad_request()], path_contains=":generate")
    with pytest.raises(genai_errors.ClientError):
        c.models.generate_content(model="gemini-2.5-flash", contents="bad")
    # 4: a wrong proxy key
    bad = genai.Client(api_key="wrong-proxy-key", http_options=types.HttpOptions(base_url=group.base))
    with pytest.raises(genai_errors.ClientError):
        bad.models.generate_content(model="gemini-2.5-flash", contents="x")

    def settled():  # a relayed answer's usage event is recorded as its relay ends, just after the client read it
        m = scrape(server)
        counted = [of(m, "gptload_requests_total", group=g, code=code) for code in ("200", "400", "401")]
        return m if counted[0] >= 2 and counted[1] >= 1 and counted[2] >= 1 else None

    after = wait_for(settled, what="the four requests counted")
    assert of(after, "gptload_requests_total", group=g, code="200") == 2
    assert of(after, "gptload_requests_total", group=g, code="400") == 1
    assert of(after, "gptload_requests_total", group=g, code="401") == 1
    assert of(after, "gptload_request_failures_total", group=g, code="400") == 1
    assert of(after, "gptload_request_failures_total", group=g, code="401") == 1
    assert of(after, "gptload_attempts_total", group=g, outcome="success") == 2
    assert of(after, "gptload_attempts_total", group=g, outcome="failure") == 2  # the 429 and the 400
    assert of(after, "gptload_retries_total", group=g) == 1
    assert of(after, "gptload_tokens_total", group=g, type="total") > 0
    assert of(after, "gptload_upstream_latency_seconds_count", group=g) == 4  # every attempt that got headers
    assert of(after, "gptload_keys", group=g, state="cooling") == 1  # the key that answered 429
    assert of(after, "gptload_keys", group=g, state="active") == 2
    assert of(after, "gptload_streams_open") == 0
    assert of(after, "process_resident_memory_bytes") > 0


def test_a_separate_metrics_token_opens_metrics_and_nothing_else_and_the_metrics_log(tmp_path):
    srv = start_server(tmp_path, {"METRICS_TOKEN": METRICS_TOKEN, "METRICS_LOG_SECONDS": "0.2"})
    try:
        # METRICS_LOG_SECONDS: the same figures as one JSON line per group and one per instance, on stdout
        line = wait_for(
            lambda: next((x for x in srv.log().splitlines() if '"gptload instance metrics"' in x), None),
            what="a metrics log line",
        )
        entry = json.loads(line)
        assert entry["severity"] == "INFO" and entry["rss_bytes"] > 0 and entry["usage_dropped"] == 0
        assert of(scrape(srv, METRICS_TOKEN), "gptload_breaker_open_circuits") == 0
        assert of(scrape(srv, AUTH_KEY), "gptload_usage_dropped_total") == 0
        r = requests.get(f"{srv.url}/api/groups", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
        assert r.status_code == 401  # the scraper's token is not an admin password
        assert METRICS_TOKEN not in srv.log()
    finally:
        srv.stop()
