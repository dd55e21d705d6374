from __future__ import annotations

import pytest

from gptload.config import Config
from gptload.errors import ConfigError


def test_defaults():
    c = Config.from_env({"AUTH_KEY": "admin-key-123"})
    assert (c.port, c.store, c.vault, c.data_dir, c.host) == (8080, "sqlite", "store", "./data", "127.0.0.1")
    assert "admin-key-123" not in repr(c)
    assert c.threads == 128  # python main.py: room for slow clients while their read timeouts run
    assert (c.request_header_timeout_seconds, c.request_body_timeout_seconds) == (10.0, 30.0)
    assert c.graceful_timeout_seconds == 30
    assert c.trusted_proxy_hops == 0  # X-Forwarded-* believed from nobody unless configured


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "AUTH_KEY is not set"),
        ({"AUTH_KEY": "short"}, "at least 8"),
        ({"AUTH_KEY": "admin-key-123", "ENCRYPTION_KEY": "too short"}, "at least 32"),
        ({"AUTH_KEY": "admin-key-123", "STORE": "redis"}, "STORE must be one of"),
        ({"AUTH_KEY": "admin-key-123", "VAULT": "kms"}, "VAULT must be one of"),
        ({"AUTH_KEY": "admin-key-123", "PORT": "http"}, "PORT must be an integer"),
        ({"AUTH_KEY": "admin-key-123", "PORT": "70000"}, "PORT must be between"),
        ({"AUTH_KEY": "admin-key-123", "STORE": "firestore"}, "GOOGLE_CLOUD_PROJECT is required"),
        (
            {"AUTH_KEY": "admin-key-123", "REQUEST_HEADER_TIMEOUT_SECONDS": "0"},
            "REQUEST_HEADER_TIMEOUT_SECONDS must be",
        ),
        ({"AUTH_KEY": "admin-key-123", "REQUEST_BODY_TIMEOUT_SECONDS": "x"}, "REQUEST_BODY_TIMEOUT_SECONDS must be"),
        (
            {"AUTH_KEY": "admin-key-123", "GRACEFUL_TIMEOUT_SECONDS": "2.5"},
            "GRACEFUL_TIMEOUT_SECONDS must be an integer",
        ),
        (
            {"AUTH_KEY": "admin-key-123", "STORE": "firestore", "GOOGLE_CLOUD_PROJECT": "p"},
            "ENCRYPTION_KEY is required",
        ),
    ],
)
def test_refuses_bad_environments_with_a_clear_message(env, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env)


def test_serverless_environment():
    c = Config.from_env(
        {
            "AUTH_KEY": "admin-key-123",
            "STORE": "firestore",
            "VAULT": "secretmanager",
            "GOOGLE_CLOUD_PROJECT": "proj",
            "ALLOWED_ORIGINS": "https://a.example/, https://b.example",
        }
    )
    assert c.google_cloud_project == "proj" and c.allowed_origins == ("https://a.example", "https://b.example")


def test_usage_flushes_wait_for_more_events_on_firestore_only():
    fs = {"AUTH_KEY": "admin-key-123", "STORE": "firestore", "VAULT": "secretmanager", "GOOGLE_CLOUD_PROJECT": "p"}
    assert Config.from_env(fs).usage_flush_min_events == 100
    assert Config.from_env({"AUTH_KEY": "admin-key-123"}).usage_flush_min_events == 1
    tuned = Config.from_env({**fs, "USAGE_FLUSH_MIN_EVENTS": "7", "USAGE_FLUSH_MAX_SECONDS": "20"})
    assert (tuned.usage_flush_min_events, tuned.usage_flush_max_seconds) == (7, 20.0)
