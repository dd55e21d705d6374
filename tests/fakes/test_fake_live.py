"""The fake Live upstream refuses and answers as Google's Live API does (what the Live e2e tests rely on)."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fakes.fake_live import INVALID_KEY, QUOTA, FakeLive

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP = json.dumps({"setup": {"model": "models/gemini-live"}})


@pytest.fixture
def fake():
    with FakeLive(["good-key", "quota-key"]) as served:
        served.quota_keys.add("quota-key")
        yield served


def session(fake, key):
    return connect(fake.url.replace("http", "ws") + PATH, additional_headers={"x-goog-api-key": key}, proxy=None)


@pytest.mark.parametrize(("key", "code", "reason"), [("bad-key", 1007, INVALID_KEY), ("quota-key", 1011, QUOTA)])
def test_refusals_are_close_frames_with_google_s_codes_and_words(fake, key, code, reason):
    with session(fake, key) as ws:
        ws.send(SETUP)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd.code == code
    assert closed.value.rcvd.reason == reason.encode()[:123].decode()  # cut to a close frame's 123 bytes


def test_a_turn_is_echoed_with_usage_and_a_resumption_handle(fake):
    with session(fake, "good-key") as ws:
        ws.send(json.dumps({"setup": {"model": "models/gemini-live", "sessionResumption": {}}}))
        assert json.loads(ws.recv(timeout=30)) == {"setupComplete": {}}
        ws.send(json.dumps({"clientContent": {"turns": [{"parts": [{"text": "two words"}]}]}}))
        answer = json.loads(ws.recv(timeout=30))
        update = json.loads(ws.recv(timeout=30))["sessionResumptionUpdate"]
    assert answer["serverContent"]["modelTurn"]["parts"][0]["text"] == "echo: two words"
    assert answer["usageMetadata"] == {"promptTokenCount": 2, "responseTokenCount": 3, "totalTokenCount": 5}
    assert fake.handles[update["newHandle"]] == "good-key"
