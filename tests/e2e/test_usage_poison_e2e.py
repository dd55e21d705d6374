"""A usage event the store can never accept must not stop the usage recording of a running app: the real handler
(Router over build_services, on SQLite and on Firestore on the emulator) serves real proxied requests to the fake
Gemini on a real socket while its usage buffer holds an event no store can take (a token count beyond int64).
Today every client- or upstream-chosen value is capped before it becomes an event (proxy/trace.py, proxy/tokens.py),
so the event is put into the running app's buffer directly, standing for any future path. The poisoned event is
isolated and dropped (``gptload_usage_rejected_total``); the requests around it reach the request logs."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from gptload.models import UsageEvent
from tests.conftest import require
from tests.e2e.conftest import AUTH_KEY
from tests.fakes.fake_gemini import FakeGemini

GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = {"contents": [{"parts": [{"text": "hello"}]}]}


@pytest.fixture
def fake():
    with FakeGemini(n_keys=0) as f:
        yield f


def _app(tmp_path, monkeypatch, backend: str):
    from werkzeug.test import Client
    from werkzeug.wrappers import Request

    from gptload.app import build_services
    from gptload.config import Config
    from gptload.web.router import Router

    env = {"AUTH_KEY": AUTH_KEY, "DATA_DIR": str(tmp_path / "data"), "USAGE_FLUSH_SECONDS": "0.1"}
    if backend == "firestore":
        host = os.environ.get("FIRESTORE_EMULATOR_HOST", "")
        require(bool(host), "FIRESTORE_EMULATOR_HOST is not set (.ci/firestore-emulator.sh start)")
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
        env.update(
            STORE="firestore",
            GOOGLE_CLOUD_PROJECT=f"poison-{uuid.uuid4().hex[:10]}",
            ENCRYPTION_KEY="poison-test-encryption-key-0123456789abcdef",
            USAGE_FLUSH_MIN_EVENTS="1",
        )
    services = build_services(Config.from_env(env))
    router = Router(services)
    return services, Client(lambda environ, start: router(Request(environ))(environ, start))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("firestore", marks=pytest.mark.firestore)])
def test_a_poisoned_usage_event_does_not_stop_usage_recording(tmp_path, monkeypatch, fake, backend, caplog):
    services, client = _app(tmp_path, monkeypatch, backend)
    admin = {"Authorization": f"Bearer {AUTH_KEY}"}
    try:
        name, proxy_key = f"g-{uuid.uuid4().hex[:8]}", f"pk-{uuid.uuid4().hex}"
        r = client.post(
            "/api/groups",
            headers=admin,
            json={"name": name, "upstreams": [{"url": fake.url}], "proxy_keys": [proxy_key]},
        )
        assert r.status_code == 201, r.text
        keys = [fake.add_key() for _ in range(2)]
        assert client.post(f"/api/groups/{name}/keys", headers=admin, json={"keys": "\n".join(keys)}).status_code == 200

        def generate():
            r = client.post(f"/proxy/{name}{GEN}", headers={"x-goog-api-key": proxy_key}, json=BODY, buffered=True)
            assert r.status_code == 200, r.text

        generate()
        services.usage.add(
            UsageEvent(name, "poisoned-key", time.time(), True, model="gemini-2.5-flash", total_tokens=2**70, id="p1")
        )
        generate()
        generate()
        page = client.get(f"/api/logs?group={name}", headers=admin).json  # an admin read flushes first
        assert page["total"] == 3 and {row["status_code"] for row in page["logs"]} == {200}
        assert services.usage.rejected == 1 and services.usage.dropped == 0 and len(services.usage) == 0
        metrics = client.get("/metrics", headers=admin).text
        assert "gptload_usage_rejected_total 1" in metrics
        assert "poisoned-key" in caplog.text and "rejected by the store" in caplog.text
        generate()  # and recording goes on
        assert client.get(f"/api/logs?group={name}", headers=admin).json["total"] == 4
    finally:
        services.shutdown()
