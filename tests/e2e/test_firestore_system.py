"""System tests of the Firestore deployment shape (issue "Managed state on Google Cloud", items 3, 5, 7, 8).

- zero calls: the real handler in process on a Firestore store whose client counts its RPCs; a burst of proxied
  requests in steady state makes none (the flush that follows is counted separately);
- many instances: three real server processes on one emulator and one fake upstream;
- degrade: a private emulator on its own port is stopped mid-run and started again;
- cost: billed document reads and writes per 1,000 proxied requests, logging every request or failures only.

They skip without FIRESTORE_EMULATOR_HOST locally and fail in CI (``tests.conftest.require``).
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from gptload.models import LogQuery
from tests.conftest import require
from tests.e2e.conftest import AUTH_KEY, ROOT, free_port, start_server
from tests.fakes.fake_gemini import FakeGemini, errors

pytestmark = pytest.mark.firestore

BODY = {"contents": [{"parts": [{"text": "hello"}]}]}
ENCRYPTION_KEY = "system-test-encryption-key-0123456789abcdef"
GEN = "/v1beta/models/gemini-2.5-flash:generateContent"


def _emulator_host() -> str:
    host = os.environ.get("FIRESTORE_EMULATOR_HOST", "")
    require(bool(host), "FIRESTORE_EMULATOR_HOST is not set (.ci/firestore-emulator.sh start)")
    return host


def _project() -> str:
    return f"sys-{uuid.uuid4().hex[:10]}"  # a project of its own: no reset, no interference with other tests


def _wait(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# -- in-process app -----------------------------------------------------------------------------------------
class App:
    """The real handler (Router over build_services) behind werkzeug's test client, on a Firestore store."""

    def __init__(self, tmp_path: Path, host: str, project: str, monkeypatch, **env: str) -> None:
        from werkzeug.test import Client
        from werkzeug.wrappers import Request

        from gptload.app import build_services
        from gptload.config import Config
        from gptload.web.router import Router

        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)  # the SDK reads it when the client is created
        config = Config.from_env(
            {
                "AUTH_KEY": AUTH_KEY,
                "STORE": "firestore",
                "GOOGLE_CLOUD_PROJECT": project,
                "ENCRYPTION_KEY": ENCRYPTION_KEY,
                "DATA_DIR": str(tmp_path / "data"),
                "STATE_REFRESH_SECONDS": "60",
                **env,
            }
        )
        self.services = build_services(config)
        router = Router(self.services)

        def wsgi(environ, start_response):
            return router(Request(environ))(environ, start_response)

        self.client = Client(wsgi)

    def api(self, method: str, path: str, **kw):
        return self.client.open(path, method=method, headers={"Authorization": f"Bearer {AUTH_KEY}"}, **kw)

    def make_group(self, upstream: str, keys: list[str]) -> tuple[str, str]:
        name, proxy_key = f"g-{uuid.uuid4().hex[:8]}", f"pk-{uuid.uuid4().hex}"
        r = self.api(
            "POST", "/api/groups", json={"name": name, "upstreams": [{"url": upstream}], "proxy_keys": [proxy_key]}
        )
        assert r.status_code == 201, r.text
        r = self.api("POST", f"/api/groups/{name}/keys", json={"keys": "\n".join(keys)})
        assert r.status_code == 200 and r.json["added"] == len(keys), r.text
        return name, proxy_key

    def generate(self, name: str, proxy_key: str):
        # buffered: the response is read and closed, so call_on_close (the request-tail flush) runs, as in gunicorn
        return self.client.post(f"/proxy/{name}{GEN}", headers={"x-goog-api-key": proxy_key}, json=BODY, buffered=True)

    def close(self) -> None:
        self.services.shutdown()


@pytest.fixture
def fake():
    with FakeGemini(n_keys=0) as f:
        yield f


def _steady_app(tmp_path, monkeypatch, fake, host, n_keys=4, **env):
    from tests.firestore_support import CallCounter

    app = App(tmp_path, host, _project(), monkeypatch, **env)
    keys = [fake.add_key() for _ in range(n_keys)]
    name, proxy_key = app.make_group(fake.url, keys)
    for _ in range(n_keys):  # warm: the view is built, every key has served once
        assert app.generate(name, proxy_key).status_code == 200
    app.services.usage.flush()
    app.keys = keys
    return app, name, proxy_key, CallCounter(app.services.store)


# -- item 3: nothing on the hot path ------------------------------------------------------------------------
def test_a_burst_of_proxied_requests_makes_zero_firestore_calls(tmp_path, monkeypatch, fake):
    app, name, proxy_key, counter = _steady_app(tmp_path, monkeypatch, fake, _emulator_host())
    try:
        # The request-tail flush (at 500 events or after 5 s) is the only store call a request may make; it is
        # held off during the burst so the burst is measured alone, then run and counted on its own below.
        app.services.usage._flush_seconds = 3600.0
        counter.reset()
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            statuses = list(ex.map(lambda _: app.generate(name, proxy_key).status_code, range(200)))
        burst = time.monotonic() - started
        calls, reads, writes = counter.snapshot()
        assert statuses == [200] * 200
        assert (calls, reads, writes) == (0, 0, 0), counter.calls
        assert len(app.services.usage) == 200
        app.services.usage.flush()
        flush_calls, _, flush_writes = counter.snapshot()
        print(
            f"\nITEM 3: 200 proxied requests in {burst:.2f} s -> 0 Firestore calls; "
            f"the flush afterwards: {flush_calls} call(s) {counter.calls}, {flush_writes} document writes"
        )
        # 200 log rows (every request is logged by default) in 1 log page, which is also the commit's batch marker,
        # + key_usage + stats_hourly (with the minute counts); across an hour edge 1 more page and 1 more hour
        assert flush_calls == 1 and 3 <= flush_writes <= 5
        totals = app.services.store.group_totals(0)[name]
        assert totals["requests"] == 200 + 4
    finally:
        app.close()


# -- item 8: cost per 1,000 requests --------------------------------------------------------------------------
@pytest.mark.parametrize("failures_only", [True, False], ids=["log-failures-only", "log-every-request"])
def test_firestore_reads_and_writes_per_thousand_requests(tmp_path, monkeypatch, fake, failures_only):
    app, name, proxy_key, counter = _steady_app(
        tmp_path, monkeypatch, fake, _emulator_host(), STATE_REFRESH_SECONDS="5"
    )
    try:
        r = app.api("PUT", "/api/settings", json={"log_failures_only": failures_only})
        assert r.status_code == 200, r.text
        app.generate(name, proxy_key)  # picks up the new settings
        app.services.usage.flush()
        counter.reset()
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            statuses = list(ex.map(lambda _: app.generate(name, proxy_key).status_code, range(1000)))
        app.services.usage.flush()  # what is still buffered belongs to these requests
        elapsed = time.monotonic() - started
        calls, reads, writes = counter.snapshot()
        assert statuses == [200] * 1000
        mode = "failures only" if failures_only else "every request"
        print(
            f"\nITEM 8 ({mode}): 1,000 proxied requests in {elapsed:.1f} s -> {reads} document reads, "
            f"{writes} document writes, {calls} RPCs ({', '.join(sorted(set(counter.calls)))})"
        )
        if failures_only:
            assert writes <= 30
        else:  # 1,000 log rows in log pages of up to 500: the target is at most 50 writes per 1,000
            assert writes <= 50
        pages = app.services.store.query_logs(LogQuery(group=name), 0, 1000)
        assert pages[1] == (4 if failures_only else 4 + 1 + 1000)  # the warm-up requests were logged too
        assert app.services.store.group_totals(0)[name]["requests"] == 4 + 1 + 1000
    finally:
        app.close()


def test_cost_with_one_percent_transient_failures(tmp_path, monkeypatch, fake):
    """Failures cost more than their log row: each transient failure and the success after it change the key's
    failure count (a transaction on the key document). Reported, with the target asserted on the usage path."""
    app, name, proxy_key, counter = _steady_app(tmp_path, monkeypatch, fake, _emulator_host())
    try:
        assert app.api("PUT", "/api/settings", json={"log_failures_only": True}).status_code == 200
        app.generate(name, proxy_key)
        app.services.usage.flush()
        flaky, seen, lock = app.keys[0], [0], threading.Lock()

        def every_25th(request):
            if ":generate" not in request.path:
                return None
            with lock:
                seen[0] += 1
                return errors.overloaded() if seen[0] % 25 == 0 else None

        fake.set_behavior(flaky, every_25th)  # ~250 requests reach this key: ~10 transient 503s in 1,000
        counter.reset()
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            statuses = list(ex.map(lambda _: app.generate(name, proxy_key).status_code, range(1000)))
        app.services.usage.flush()
        _calls, reads, writes = counter.snapshot()
        assert statuses == [200] * 1000
        commits = counter.calls.count("commit")
        tx = counter.calls.count("begin_transaction")
        print(
            f"\nITEM 8 (failures only, 1% transient 503s retried): {reads} reads, {writes} writes "
            f"({tx} key-state transactions writing {counter.tx_writes}, {commits - tx} usage flushes writing "
            f"{writes - counter.tx_writes}); 503s served: {seen[0] // 25}"
        )
        usage_writes = writes - counter.tx_writes
        assert usage_writes <= 30
    finally:
        app.close()


# -- item 7: degrade, don't fail ------------------------------------------------------------------------------
class PrivateEmulator:
    """An emulator of this test's own, on its own port, via .ci/firestore-emulator.sh (never the shared one)."""

    def __init__(self, tmp_path: Path) -> None:
        self.host = f"127.0.0.1:{free_port()}"
        self.env = {**os.environ, "HOST_PORT": self.host, "STATE_DIR": str(tmp_path / "emulator")}

    def _run(self, command: str) -> None:
        subprocess.run(
            ["bash", str(ROOT / ".ci/firestore-emulator.sh"), command], env=self.env, check=True, timeout=120
        )

    def start(self) -> None:
        """Start it and wait until it serves real RPCs, not just HTTP: a JVM that has just come up answers its
        first commits and queries slowly, past the store's 4 s RPC deadline on a loaded machine, which would fail
        the app's set-up (or its catch-up) for a reason that is not the one under test."""
        self._run("start")
        _wait(self._serves, 120, f"the private emulator on {self.host} to serve a write, a read and a query", 0.5)

    def _serves(self) -> bool:
        from unittest import mock

        from google.api_core import exceptions as gexc
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        with mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": self.host}):
            client = firestore.Client(project="warm-up")
        try:
            doc = client.collection("warm").document(uuid.uuid4().hex)
            doc.set({"n": 1}, timeout=60)
            list(client.collection("warm").where(filter=FieldFilter("n", "==", 1)).limit(1).stream(timeout=60))
            return doc.get(timeout=60).exists
        except (gexc.GoogleAPICallError, gexc.RetryError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        self._run("stop")


def test_firestore_down_serves_from_cache_buffers_bounded_and_catches_up(tmp_path, monkeypatch, fake, caplog):
    _emulator_host()
    require(shutil.which("gcloud") is not None, "gcloud (Firestore emulator) is not installed")
    emulator = PrivateEmulator(tmp_path)
    emulator.start()
    app = None
    try:
        app, name, proxy_key, _ = _steady_app(tmp_path, monkeypatch, fake, emulator.host, STATE_REFRESH_SECONDS="0.2")
        emulator.stop()
        app.services.usage._max = 25  # the buffer bound (UsageBuffer(max_events=...)), small for the test
        caplog.set_level(logging.WARNING)
        slowest = 0.0
        statuses = []
        for _ in range(30):
            started = time.monotonic()
            statuses.append(app.generate(name, proxy_key).status_code)
            slowest = max(slowest, time.monotonic() - started)
        assert statuses == [200] * 30  # served from the cache (marker polls fail in the background)
        assert len(app.services.usage) == 25 and app.services.usage.dropped == 5
        assert any("usage buffer full" in r.getMessage() for r in caplog.records)
        assert app.services.usage.flush() == 0 and len(app.services.usage) == 25  # kept for later
        print(f"\nITEM 7: 30 requests with Firestore down: all 200, slowest {slowest:.2f} s; 25 buffered, 5 dropped")

        emulator.start()  # the same port; an emulator restart starts empty
        _wait(lambda: app.services.usage.flush() == 25, 60, "the buffered events to be written")
        totals = app.services.store.group_totals(0)
        assert totals[name]["requests"] == 25
        assert app.services.store.requests_since(0) == 25
        assert app.generate(name, proxy_key).status_code == 200
    finally:
        if app is not None:
            app.close()
        emulator.stop()


# -- item 5: many instances, nothing lost ---------------------------------------------------------------------
def test_three_instances_on_one_emulator(tmp_path, fake):
    host = _emulator_host()
    env = {
        "STORE": "firestore",
        "GOOGLE_CLOUD_PROJECT": _project(),
        "FIRESTORE_EMULATOR_HOST": host,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "STATE_REFRESH_SECONDS": "1",
        "THREADS": "8",
    }
    for i in range(3):
        (tmp_path / f"s{i}").mkdir()
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        servers = list(ex.map(lambda i: start_server(tmp_path / f"s{i}", extra_env=env), range(3)))
    try:
        keys = [fake.add_key() for _ in range(6)]
        group = servers[0].make_group(fake.url, keys)

        def generate(server) -> int:
            return requests.post(
                f"{server.url}/proxy/{group.name}{GEN}",
                headers={"x-goog-api-key": group.proxy_key},
                json=BODY,
                timeout=30,
            ).status_code

        for s in servers[1:]:  # the other instances learn about the group within their refresh interval
            _wait(lambda s=s: generate(s) == 200, 10, f"{s.url} to serve the new group")

        def flush_all() -> None:
            for s in servers:
                assert s.api("POST", "/api/tasks/run").status_code == 200

        flush_all()
        base = len(fake.requests)
        with concurrent.futures.ThreadPoolExecutor(24) as ex:
            statuses = list(ex.map(lambda i: generate(servers[i % 3]), range(600)))
        assert statuses == [200] * 600
        assert len(fake.requests) - base == 600
        warm = 2  # the two requests that found the group on servers 1 and 2

        def counted() -> int:
            flush_all()
            r = servers[1].api("GET", "/api/stats/groups")
            rows = r.json()["groups"] if isinstance(r.json(), dict) else r.json()
            (row,) = [g for g in rows if g["name"] == group.name]
            return row["24h"]["requests"]

        # the last answers' rows are added as their relays end, just after the client read the last byte
        _wait(lambda: counted() >= 600 + warm, 10, "every request's usage row")
        total = counted()
        per_key = {k["key"]: k["request_count"] for k in group.key_rows()}
        assert total == 600 + warm
        assert sum(per_key.values()) == 600 + warm
        even = (600 + warm) / len(keys)
        assert all(abs(n - even) <= 0.25 * even for n in per_key.values()), per_key
        print(
            f"\nITEM 5: 600 requests over 3 instances -> stats total {total - warm} (+{warm} warm-up); per key {per_key}"
        )

        # a dead key: disabled by the instance that meets it, skipped by all three within the staleness bound
        dead = keys[0]
        used_before = fake.keys_used(":generate").count(dead)
        fake.set_behavior(dead, errors.invalid_key())
        _wait(
            lambda: generate(servers[0]) == 200 and fake.keys_used(":generate").count(dead) > used_before,
            10,
            "the dead key's use",
        )
        disabled_at = time.monotonic()
        for s in servers:
            _wait(
                lambda s=s: s.api("GET", "/api/dashboard").json()["keys"]["invalid"] == 1,
                10,
                f"{s.url} to see the key disabled",
            )
        seen_within = time.monotonic() - disabled_at
        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            assert list(ex.map(lambda i: generate(servers[i % 3]), range(120))) == [200] * 120
        assert fake.keys_used(":generate").count(dead) - used_before == 1  # disabled after its one use
        assert group.row_of(dead)["status"] == "invalid"

        # restored through one instance, used again by the others
        fake.set_behavior(dead, None)
        r = servers[1].api("POST", f"/api/groups/{group.name}/keys/restore", json={})
        assert r.status_code == 200 and r.json()["restored"] == 1, r.text
        restored_at = time.monotonic()
        for s in (servers[0], servers[2]):
            _wait(lambda s=s: s.api("GET", "/api/dashboard").json()["keys"]["invalid"] == 0, 10, "the restore")
        back_within = time.monotonic() - restored_at
        for s in (servers[0], servers[2]):
            before = fake.keys_used(":generate").count(dead)
            assert [generate(s) for _ in range(12)] == [200] * 12
            assert fake.keys_used(":generate").count(dead) - before >= 1, f"{s.url} did not use the restored key"
        print(
            f"ITEM 5: dead key used once, seen disabled by all three within {seen_within:.2f} s; "
            f"restored via one instance, seen by the others within {back_within:.2f} s (STATE_REFRESH_SECONDS=1)"
        )
        assert seen_within < 1 + 5 and back_within < 1 + 5
    finally:
        for s in servers:
            s.stop()


# -- console on log pages ---------------------------------------------------------------------------------------
def test_console_log_list_filters_detail_and_csv_on_log_pages(tmp_path, monkeypatch, fake):
    """The admin API's request-log views read log pages: several pages of rows, a page of the list, filters, the
    detail view and the CSV export, as on SQLite (tests/e2e/test_console_api.py)."""
    app, name, proxy_key, _counter = _steady_app(tmp_path, monkeypatch, fake, _emulator_host())
    try:
        assert app.api("PUT", "/api/settings", json={"enable_request_body_logging": True}).status_code == 200
        flaky = app.keys[0]
        fake.script(flaky, [errors.overloaded()] * 3)  # 3 failed attempts, each retried on another key
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            statuses = list(ex.map(lambda _: app.generate(name, proxy_key).status_code, range(1200)))
        assert statuses == [200] * 1200
        everything = 4 + 1200 + 3  # the warm-up requests, these, the failed attempts

        listed = app.api("GET", f"/api/logs?group={name}&page=5&page_size=100").json
        assert listed["total"] == everything and len(listed["logs"]) == 100
        ats = [r["at"] for r in listed["logs"]]
        assert ats == sorted(ats, reverse=True)
        first = app.api("GET", f"/api/logs?group={name}&page=1&page_size=100").json["logs"]
        assert first[-1]["at"] >= ats[0] and not {r["id"] for r in first} & {r["id"] for r in listed["logs"]}

        failed = app.api("GET", f"/api/logs?group={name}&success=false").json
        assert failed["total"] == 3 and all(r["key"].endswith(flaky[-4:]) for r in failed["logs"])
        assert app.api("GET", f"/api/logs?group={name}&status_code=503").json["total"] == 3
        assert app.api("GET", f"/api/logs?group={name}&q=overloaded").json["total"] == 3
        assert app.api("GET", "/api/logs?model=no-such-model").json["total"] == 0

        detail = app.api("GET", f"/api/logs/{failed['logs'][0]['id']}").json["log"]
        assert detail["id"] == failed["logs"][0]["id"] and "contents" in detail["request_body"]
        assert app.api("GET", "/api/logs/nope").status_code == 404

        exported = app.api("GET", f"/api/logs/export.csv?group={name}&success=false")
        table = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
        assert [r["id"] for r in table] == [r["id"] for r in failed["logs"]]
        assert all(k not in exported.get_data(as_text=True) for k in app.keys)
    finally:
        app.close()
