"""The metrics registry and its Prometheus text exposition, parsed back with prometheus_client's own parser; and
``GET /metrics`` through the router in process (who may read it, what it shows)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gptload.config import Config
from gptload.errors import ConfigError
from gptload.keypool.classify import Kind, Verdict
from gptload.metrics import CONTENT_TYPE, LATENCY_BUCKETS, Family, Metrics, Sample, gauge, render
from gptload.models import UsageEvent
from tests.unit.admin_client import AUTH_KEY, AdminClient

METRICS_TOKEN = "scraper-token-0123456789"


def event(group: str = "g", **kw) -> UsageEvent:
    base = dict(group=group, key_id="k1", at=0.0, success=True, status_code=200, attempt=1, final=True)
    return UsageEvent(**{**base, **kw})


def parse(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """family name -> [(sample name, labels, value)], by the reference parser."""
    return {
        f.name: [(s.name, dict(s.labels), s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


def value(parsed, family: str, sample: str, **labels: str) -> float:
    found = [v for n, lab, v in parsed[family] if n == sample and lab == labels]
    assert len(found) == 1, (family, sample, labels, parsed.get(family))
    return found[0]


def test_requests_failures_attempts_retries_and_tokens_are_counted_from_usage_events():
    m = Metrics()
    # a request that failed on key 1 (429), then succeeded on key 2 with tokens
    m.observe(event(success=False, status_code=429, attempt=1, final=False))
    m.observe(event(attempt=2, prompt_tokens=5, candidates_tokens=7, total_tokens=12))
    # a request refused before any attempt (bad proxy key): a request and a failure, no attempt
    m.observe(event(success=False, status_code=401, attempt=0))
    # a stream that broke after its headers: one attempt, a failed request with status 200
    m.observe(event(group="other", success=False, status_code=200))
    p = parse(render(m.families()))
    s = "gptload_requests"  # the parser names counter families without _total
    assert value(p, s, "gptload_requests_total", group="g", code="200") == 1
    assert value(p, s, "gptload_requests_total", group="g", code="401") == 1
    assert value(p, s, "gptload_requests_total", group="other", code="200") == 1
    assert not [1 for _, lab, _ in p[s] if lab.get("code") == "429"]  # not final: an attempt, not a request
    f = "gptload_request_failures"
    assert value(p, f, "gptload_request_failures_total", group="g", code="401") == 1
    assert value(p, f, "gptload_request_failures_total", group="other", code="200") == 1
    assert len(p[f]) == 2
    a = "gptload_attempts"
    assert value(p, a, "gptload_attempts_total", group="g", outcome="failure") == 1
    assert value(p, a, "gptload_attempts_total", group="g", outcome="success") == 1
    assert value(p, a, "gptload_attempts_total", group="other", outcome="failure") == 1
    assert value(p, "gptload_retries", "gptload_retries_total", group="g") == 1
    t = "gptload_tokens"
    assert value(p, t, "gptload_tokens_total", group="g", type="prompt") == 5
    assert value(p, t, "gptload_tokens_total", group="g", type="candidates") == 7
    assert value(p, t, "gptload_tokens_total", group="g", type="total") == 12


def test_latency_histogram_is_cumulative_with_sum_count_and_inf():
    m = Metrics()
    for seconds in (0.01, 0.05, 0.3, 7.0, 1000.0):
        m.upstream_answered("g", seconds)
    p = parse(render(m.families()))
    h = "gptload_upstream_latency_seconds"
    buckets = {float(lab["le"]): v for n, lab, v in p[h] if n == f"{h}_bucket"}
    assert buckets[0.05] == 2  # le is inclusive: 0.05 falls in the 0.05 bucket
    assert buckets[0.25] == 2 and buckets[0.5] == 3 and buckets[5] == 3 and buckets[10] == 4
    assert buckets[math.inf] == 5
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    counts = [buckets[k] for k in sorted(buckets)]
    assert counts == sorted(counts)
    assert value(p, h, f"{h}_count", group="g") == 5
    assert math.isclose(value(p, h, f"{h}_sum", group="g"), 1007.36)


def test_label_values_and_help_are_escaped_so_that_they_parse_back_unchanged():
    nasty = 'a "quoted"\\back\nslash'
    text = render([gauge("x_gauge", "help with \\ and\nnewline", [((("group", nasty),), 3)])])
    (family,) = text_string_to_metric_families(text)
    assert family.documentation == "help with \\ and\nnewline"
    assert family.samples[0].labels == {"group": nasty} and family.samples[0].value == 3


def test_numbers_render_as_prometheus_expects():
    text = render([Family("n", "gauge", "h", (Sample("n", (("i", "a"),), 2.0), Sample("n", (("i", "b"),), 0.25)))])
    assert 'n{i="a"} 2\n' in text and 'n{i="b"} 0.25\n' in text
    assert text.endswith("\n") and "# TYPE n gauge" in text


def test_metrics_token_is_checked_at_start():
    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        Config.from_env({"AUTH_KEY": AUTH_KEY, "METRICS_TOKEN": "short"})
    assert Config.from_env({"AUTH_KEY": AUTH_KEY, "METRICS_TOKEN": METRICS_TOKEN}).metrics_token == METRICS_TOKEN
    assert METRICS_TOKEN not in repr(Config.from_env({"AUTH_KEY": AUTH_KEY, "METRICS_TOKEN": METRICS_TOKEN}))


@pytest.fixture
def client(tmp_path):
    c = AdminClient(tmp_path, METRICS_TOKEN=METRICS_TOKEN)
    yield c
    c.close()


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer ", "Bearer wrong-token-0123456789", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"],
)
def test_metrics_refuses_without_the_token(client, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {"Authorization": ""}
    r = client.open("GET", "/metrics", headers=headers)
    assert r.status_code == 401
    body = r.get_json()
    assert body["error"]["code"] == "UNAUTHORIZED" and "gptload_" not in r.get_data(as_text=True)


def test_metrics_takes_the_metrics_token_but_never_the_admin_key_in_the_url(client):
    assert client.open("GET", f"/metrics?token={METRICS_TOKEN}", headers={"Authorization": ""}).status_code == 200
    assert client.open("GET", f"/metrics?token={AUTH_KEY}", headers={"Authorization": ""}).status_code == 401
    assert client.open("GET", "/metrics?token=", headers={"Authorization": ""}).status_code == 401


def test_without_a_metrics_token_only_the_admin_key_opens_metrics(tmp_path):
    c = AdminClient(tmp_path)  # no METRICS_TOKEN: an empty token must not match an unset one
    try:
        assert c.open("GET", "/metrics?token=", headers={"Authorization": "Bearer "}).status_code == 401
        assert c.open("GET", "/metrics").status_code == 200
    finally:
        c.close()


@pytest.mark.parametrize("token", [METRICS_TOKEN, AUTH_KEY])
def test_metrics_accepts_the_metrics_token_or_the_admin_key(client, token):
    r = client.open("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.headers["Content-Type"] == CONTENT_TYPE
    p = parse(r.get_data(as_text=True))
    assert (
        value(
            p,
            "gptload_build_info",
            "gptload_build_info",
            version=p["gptload_build_info"][0][1]["version"],
            store="sqlite",
        )
        == 1
    )
    assert value(p, "process_resident_memory_bytes", "process_resident_memory_bytes") > 0


def test_metrics_shows_keys_by_state_breakers_and_the_usage_buffer(client):
    assert client.open("POST", "/api/groups", body={"name": "g1", "proxy_keys": ["pk-123456789"]}).status_code == 201
    keys = [f"AIza{c * 35}" for c in "ABC"]
    assert client.open("POST", "/api/groups/g1/keys", body={"keys": "\n".join(keys)}).status_code == 200
    services = client.services
    view = services.pool.view("g1")
    a, b, _ = view.keys
    services.pool.report(view, a, Verdict(Kind.KEY_INVALID, reason="API_KEY_INVALID"), "gemini-2.5-flash")
    services.pool.report(view, b, Verdict(Kind.QUOTA_MINUTE, reason="quota", retry_delay=60), "gemini-2.5-flash")
    breakers = services.forwarder.breakers
    circuit = ("g1", "https://up.example", "gemini-2.5-flash")
    for witness in (1, 2, 3):
        breakers.failure(circuit, 0.0 + witness, witness, "503")
    services.usage.add(event("g1"))
    services.usage.dropped = 4
    r = client.open("GET", "/metrics")
    p = parse(r.get_data(as_text=True))
    assert value(p, "gptload_keys", "gptload_keys", group="g1", state="invalid") == 1
    assert value(p, "gptload_keys", "gptload_keys", group="g1", state="cooling") == 1
    assert value(p, "gptload_keys", "gptload_keys", group="g1", state="active") == 1
    labels = dict(group="g1", upstream="https://up.example", model="gemini-2.5-flash")
    assert value(p, "gptload_breaker_open", "gptload_breaker_open", **labels, state="open") == 1
    assert value(p, "gptload_breaker_open_circuits", "gptload_breaker_open_circuits") == 1
    assert value(p, "gptload_usage_buffer_events", "gptload_usage_buffer_events") == 1
    assert value(p, "gptload_usage_dropped", "gptload_usage_dropped_total") == 4
    assert value(p, "gptload_requests", "gptload_requests_total", group="g1", code="200") == 1
    assert value(p, "gptload_streams_open", "gptload_streams_open") == 0
    text = r.get_data(as_text=True)
    assert not any(k in text for k in keys) and "pk-123456789" not in text  # no secret in the exposition


def test_usage_events_reach_the_metrics_even_when_the_buffer_drops_them(client):
    usage = client.services.usage
    usage._max = 1
    usage.add(event("g"))
    usage.add(replace(event("g"), status_code=500, success=False))
    assert usage.dropped == 1
    p = parse(render(client.services.metrics.families()))
    assert value(p, "gptload_requests", "gptload_requests_total", group="g", code="500") == 1


def test_metrics_log_lines_carry_deltas_per_group_and_the_instance_gauges(client):
    from gptload.metrics_log import MetricsLog

    assert client.open("POST", "/api/groups", body={"name": "g1", "proxy_keys": ["pk-123456789"]}).status_code == 201
    assert client.open("POST", "/api/groups/g1/keys", body={"keys": "AIza" + "A" * 35}).status_code == 200
    ticks = iter([0.0, 60.0, 120.0, 180.0])
    builder = MetricsLog(client.services, clock=lambda: next(ticks))
    metrics = client.services.metrics
    metrics.observe(event("g1", total_tokens=10))
    metrics.observe(event("g1", success=False, status_code=503))
    first = builder.lines()
    (group_line,) = [line for line in first if line["message"] == "gptload metrics"]
    assert group_line == {
        "severity": "INFO",
        "message": "gptload metrics",
        "group": "g1",
        "interval_seconds": 60.0,
        "requests": 2,
        "failures": 1,
        "attempts": 2,
        "retries": 0,
        "prompt_tokens": 0,
        "candidates_tokens": 0,
        "total_tokens": 10,
        "keys_active": 1,
        "keys_cooling": 0,
        "keys_invalid": 0,
        "keys_disabled": 0,
    }
    (instance,) = [line for line in first if line["message"] == "gptload instance metrics"]
    assert instance["usage_buffer_events"] == 0 and instance["streams_open"] == 0 and instance["rss_bytes"] > 0
    # nothing moved: only the instance line
    assert [line["message"] for line in builder.lines()] == ["gptload instance metrics"]
    metrics.observe(event("g1"))
    (again,) = [line for line in builder.lines() if line["message"] == "gptload metrics"]
    assert again["requests"] == 1 and again["failures"] == 0 and again["total_tokens"] == 0  # deltas, not totals
