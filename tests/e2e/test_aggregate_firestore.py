"""An aggregate group on Firestore (the emulator): its type and members survive in the store, and requests through
it make no Firestore call on the hot path, exactly like a standard group's (the usage flush is counted apart)."""

from __future__ import annotations

import concurrent.futures
import uuid

import pytest

from tests.e2e.test_firestore_system import GEN, App, _emulator_host, _project
from tests.fakes.fake_gemini import FakeGemini

pytestmark = pytest.mark.firestore
BODY = {"contents": [{"parts": [{"text": "hello"}]}]}


@pytest.fixture
def fake():
    with FakeGemini(n_keys=0) as f:
        yield f


def test_requests_through_an_aggregate_make_zero_firestore_calls(tmp_path, monkeypatch, fake):
    from tests.firestore_support import CallCounter

    app = App(tmp_path, _emulator_host(), _project(), monkeypatch)
    try:
        members = [app.make_group(fake.url, [fake.add_key() for _ in range(2)])[0] for _ in range(2)]
        name, proxy_key = f"agg-{uuid.uuid4().hex[:8]}", f"pk-{uuid.uuid4().hex}"
        r = app.api(
            "POST",
            "/api/groups",
            json={
                "name": name,
                "group_type": "aggregate",
                "sub_groups": [{"name": m, "weight": 1} for m in members],
                "proxy_keys": [proxy_key],
            },
        )
        assert r.status_code == 201, r.text
        stored = app.services.store.get_group(name)
        assert stored.is_aggregate and [m.name for m in stored.sub_groups] == members

        def generate():
            return app.client.post(
                f"/proxy/{name}{GEN}", headers={"x-goog-api-key": proxy_key}, json=BODY, buffered=True
            )

        for _ in range(4):  # warm: every member key has served once
            assert generate().status_code == 200
        app.services.usage.flush()
        app.services.usage._flush_seconds = 3600.0  # the request-tail flush is counted apart, below
        counter = CallCounter(app.services.store)
        counter.reset()
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            statuses = list(ex.map(lambda _: generate().status_code, range(100)))
        assert statuses == [200] * 100
        assert counter.snapshot() == (0, 0, 0), counter.calls
        app.services.usage.flush()
        totals = app.services.store.group_totals(0)
        assert totals[members[0]]["requests"] + totals[members[1]]["requests"] == 104
        assert totals[members[0]]["requests"] == totals[members[1]]["requests"] == 52  # weights 1/1
        assert name not in totals  # nothing refused: the aggregate itself counts nothing
    finally:
        app.close()
