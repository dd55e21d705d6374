"""The classification table, fed with Gemini's real error bodies (../shared/gemini-errors.json, copied here as
tests/unit/gemini_errors.json so the suite runs from a clean clone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptload.keypool.classify import Kind, classify, network_error

CASES = json.loads((Path(__file__).with_name("gemini_errors.json")).read_text())["cases"]
EXPECTED = {
    "invalid key": (Kind.KEY_INVALID, None, None),
    "key not found variant": (Kind.KEY_INVALID, None, None),
    "suspended": (Kind.KEY_INVALID, None, None),
    "api disabled on the key's project": (Kind.KEY_INVALID, None, None),
    "per-minute quota": (Kind.QUOTA_MINUTE, 26.0, "gemini-2.5-flash"),
    "per-minute input tokens quota": (Kind.QUOTA_MINUTE, 41.0, "gemini-2.5-pro"),
    "per-day quota": (Kind.QUOTA_DAY, None, "gemini-2.5-flash"),
    "bare 429": (Kind.QUOTA_BARE, None, None),
    "overloaded": (Kind.TRANSIENT, None, None),
    "internal": (Kind.TRANSIENT, None, None),
    "deadline": (Kind.TRANSIENT, None, None),
    "bad request body": (Kind.REQUEST_ERROR, None, None),
    "unknown model": (Kind.REQUEST_ERROR, None, None),
    "region not supported": (Kind.REQUEST_ERROR, None, None),
    "another project's file": (Kind.REQUEST_ERROR, None, None),
}


def test_every_reference_case_is_covered():
    assert {c["name"] for c in CASES} == set(EXPECTED)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reference_case(case):
    kind, delay, model = EXPECTED[case["name"]]
    verdict = classify(case["http_status"], json.dumps(case["body"]).encode())
    assert verdict.kind is kind
    if kind is Kind.QUOTA_MINUTE:
        assert verdict.retry_delay == delay
    if model:
        assert verdict.model == model
    assert verdict.retryable == (kind not in (Kind.REQUEST_ERROR, Kind.SUCCESS))


def test_day_quota_ignores_retry_delay_and_wins_over_minute():
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"},
                        {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"},
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"},
            ],
        }
    }
    assert classify(429, body).kind is Kind.QUOTA_DAY


def test_success_and_redirects():
    assert classify(200, b"").kind is Kind.SUCCESS
    assert classify(204, b"").kind is Kind.SUCCESS
    assert classify(308, b"").kind is Kind.SUCCESS


def test_openai_layer_list_envelope_is_understood():
    body = [
        {
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
            }
        }
    ]
    assert classify(400, json.dumps(body)).kind is Kind.KEY_INVALID


def test_unparseable_bodies_fall_back_on_status():
    assert classify(503, b"<html>oops</html>").kind is Kind.TRANSIENT
    assert classify(429, b"not json").kind is Kind.QUOTA_BARE
    assert classify(400, b"").kind is Kind.REQUEST_ERROR
    assert classify(401, b"{}").kind is Kind.REQUEST_ERROR


def test_retry_delay_with_fraction_and_garbage():
    def body(delay):
        return {
            "error": {
                "code": 429,
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}],
            }
        }

    assert classify(429, body("1.5s")).retry_delay == 1.5
    assert classify(429, body("soon")).kind is Kind.QUOTA_BARE


def test_a_key_echoed_in_a_message_is_not_in_the_reason():
    secret = "AIza" + "B" * 35
    body = {
        "error": {
            "code": 403,
            "message": f"Permission denied: Consumer 'api_key:{secret}' has been suspended.",
            "status": "PERMISSION_DENIED",
        }
    }
    verdict = classify(403, body)
    assert verdict.kind is Kind.KEY_INVALID
    from gptload.keypool.keytext import scrub

    assert secret not in scrub(verdict.reason)


def test_network_errors_are_transient():
    assert network_error(TimeoutError()).kind is Kind.TRANSIENT
