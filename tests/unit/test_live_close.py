"""The Live API's refusals (close frames) classified with the HTTP policy, and the pure pieces of the relay."""

from __future__ import annotations

import pytest

from gptload.config import Config
from gptload.errors import ConfigError
from gptload.keypool.classify import Kind, is_key_evidence
from gptload.keypool.live_close import classify_close, cut_reason, is_quota_reason
from gptload.proxy.live import LiveRequest, setup_facts, upstream_headers, upstream_url
from gptload.server import gunicorn_options

QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("API key not valid. Please pass a valid API key.", "API_KEY_INVALID"),
        ("API key expired. Please renew the API key.", "API_KEY_EXPIRED"),
    ],
)
def test_google_s_key_sentences_in_a_1007_condemn_the_key(reason, kind):
    verdict = classify_close(1007, reason)
    assert verdict.kind is Kind.KEY_INVALID and verdict.reason == f"1007 {kind}"
    assert is_key_evidence(verdict.reason)


@pytest.mark.parametrize(
    "reason",
    [
        "Invalid setup: API key not valid. Please pass a valid API key.",  # not the whole sentence
        'Unknown name "API key not valid. Please pass a valid API key." at setup',  # quotes a client's words
        "API key not valid",
        "",
    ],
)
def test_other_1007_reasons_are_the_session_s_own_fault(reason):
    verdict = classify_close(1007, reason)
    assert verdict.kind is Kind.REQUEST_ERROR and not is_key_evidence(verdict.reason)


@pytest.mark.parametrize(
    "reason", [QUOTA, cut_reason(QUOTA), "RESOURCE_EXHAUSTED", f"RESOURCE_EXHAUSTED: {QUOTA[:60]}"]
)
def test_the_quota_sentence_in_a_1011_cools_the_key_whole_or_cut(reason):
    verdict = classify_close(1011, reason)
    assert verdict.kind is Kind.QUOTA_MINUTE and verdict.retryable


@pytest.mark.parametrize(
    "reason", ["You exceeded", "models/You exceeded your current quota is not found", QUOTA + " extra", "quota"]
)
def test_text_that_is_not_google_s_quota_sentence_is_no_quota(reason):
    assert not is_quota_reason(reason)
    assert classify_close(1011, reason).kind is Kind.TRANSIENT


@pytest.mark.parametrize("code", [1011, 1013, 1014, 1006, 1012])
def test_google_side_closes_are_transient_and_never_about_the_key(code):
    verdict = classify_close(code, "Internal error occurred.")
    assert verdict.kind is Kind.TRANSIENT and verdict.upstream_failure and verdict.retryable
    assert verdict.network == (code == 1006)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1008, 4000])
def test_other_closes_pass_through_without_penalty(code):
    verdict = classify_close(code, "models/x is not found for API version v1beta")
    assert verdict.kind is Kind.REQUEST_ERROR and not verdict.retryable


def test_cut_reason_keeps_123_bytes_on_a_character_boundary():
    assert cut_reason("short") == "short"
    cut = cut_reason("é" * 100)
    assert len(cut.encode()) <= 123 and cut == "é" * 61


def test_setup_facts():
    assert setup_facts('{"setup": {"model": "models/gemini-live"}}') == ("gemini-live", "")
    assert setup_facts(b'{"setup": {"model": "m", "sessionResumption": {"handle": "h1"}}}') == ("m", "h1")
    assert setup_facts('{"setup": {"model": "m", "session_resumption": {"handle": "h2"}}}') == ("m", "h2")
    for bad in ("not json", "[]", '{"clientContent": {}}', '{"setup": {}}', '{"setup": {"model": 3}}', "[" * 5000):
        assert setup_facts(bad)[0] is None


def test_upstream_url_follows_the_upstream_s_scheme():
    path = "ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    assert upstream_url("https://generativelanguage.googleapis.com", path, "") == (
        f"wss://generativelanguage.googleapis.com/{path}"
    )
    assert upstream_url("http://127.0.0.1:9/base/", path, "a=1") == f"ws://127.0.0.1:9/base/{path}?a=1"


def test_upstream_headers_carry_the_pool_key_or_the_token_never_the_proxy_key():
    headers = [("x-goog-api-key", "proxy-key"), ("User-Agent", "sdk"), ("Cookie", "c"), ("Authorization", "Bearer p")]
    out = upstream_headers(LiveRequest(path="p", query="", headers=headers), "AIzaREAL")
    assert out == [("User-Agent", "sdk"), ("x-goog-api-key", "AIzaREAL")]
    out = upstream_headers(LiveRequest(path="p", query="", headers=headers, token="auth_tokens/t"), "AIzaREAL")
    assert out == [("User-Agent", "sdk"), ("Authorization", "Token auth_tokens/t")]


def test_tls_files_go_together_and_must_exist(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    base = {"AUTH_KEY": "a-long-admin-key"}
    with pytest.raises(ConfigError, match="go together"):
        Config.from_env({**base, "TLS_CERT_FILE": str(cert)})
    with pytest.raises(ConfigError, match="TLS_KEY_FILE"):
        Config.from_env({**base, "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(tmp_path / "missing")})
    config = Config.from_env({**base, "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)})
    options = gunicorn_options(config)
    assert (options["certfile"], options["keyfile"]) == (str(cert), str(key))
    assert "certfile" not in gunicorn_options(Config.from_env(base))


SERVICE_DISABLED = (
    "Generative Language API has not been used in project 123456789012 before or it is disabled. Enable it by "
    "visiting https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project="
    "123456789012 then retry. If you enabled this API recently, wait a few minutes for the action to propagate to "
    "our systems and retry."
)


def test_google_s_service_disabled_sentence_cut_by_the_close_frame_still_condemns_the_key():
    """Google's sentence is 300+ bytes: a close frame carries its first 123, which the anchored match of the whole
    sentence missed (the key stayed in rotation, every session on it refused)."""
    verdict = classify_close(1007, cut_reason(SERVICE_DISABLED))
    assert verdict.kind is Kind.KEY_INVALID and verdict.reason == "1007 SERVICE_DISABLED"


@pytest.mark.parametrize(
    "reason",
    [
        cut_reason(SERVICE_DISABLED)[:100],  # shorter than the frame's limit: not a cut sentence
        cut_reason("Generative Language API has not been used in project 1 before or it is disabled. Enable me" * 2),
        cut_reason('Invalid "Generative Language API has not been used in project 1 before or it is disabled."' * 2),
    ],
)
def test_a_cut_service_disabled_sentence_must_be_google_s_own(reason):
    assert classify_close(1007, reason).kind is Kind.REQUEST_ERROR
