"""What access keys cost in Firestore: the same 1,000 requests as ``test_firestore_system``'s cost test
(failure-only logging, one instance, 16 clients), once with the legacy proxy key and once with an access key that
has an ``rpm_limit`` and daily limits (so its instance publishes heartbeats and reads the day's usage). The
difference is the heartbeats (1 write + 1 read each, every 5 s), the readings (1-2 reads a second) and one
``access_hourly`` write per flush; the figures print as ``ACCESS COST`` lines (docs/firestore.md)."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from tests.e2e.test_firestore_system import _emulator_host, _steady_app

pytestmark = pytest.mark.firestore


def test_firestore_cost_of_an_access_key_with_limits(tmp_path, monkeypatch, fake):
    app, name, proxy_key, counter = _steady_app(
        tmp_path, monkeypatch, fake, _emulator_host(), STATE_REFRESH_SECONDS="5"
    )
    try:
        assert app.api("PUT", "/api/settings", json={"log_failures_only": True}).status_code == 200
        r = app.api(
            "POST",
            "/api/access-keys",
            json={"name": "cost", "rpm_limit": 10**6, "daily_request_limit": 10**6, "daily_token_limit": 10**9},
        )
        assert r.status_code == 201, r.text
        access_key = r.json["key"]
        figures = {}
        for label, secret in (("legacy proxy key", proxy_key), ("access key with limits", access_key)):
            assert app.generate(name, secret).status_code == 200  # settings and keys picked up
            app.services.usage.flush()
            counter.reset()
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(16) as ex:
                statuses = list(ex.map(lambda _, s=secret: app.generate(name, s).status_code, range(1000)))
            app.services.usage.flush()
            elapsed = time.monotonic() - started
            calls, reads, writes = counter.snapshot()
            assert statuses == [200] * 1000
            figures[label] = (reads, writes, elapsed)
            print(
                f"\nACCESS COST ({label}): 1,000 requests in {elapsed:.1f} s -> {reads} reads, {writes} writes, "
                f"{calls} RPCs ({', '.join(sorted(set(counter.calls)))})"
            )
        legacy_reads, legacy_writes, _ = figures["legacy proxy key"]
        reads, writes, elapsed = figures["access key with limits"]
        heartbeats = elapsed / 5 + 2  # one every 5 s (plus the first, and one already under way)
        flushes = 1000 / 500 + elapsed / 5 + 1
        assert writes <= legacy_writes + heartbeats + flushes  # + 1 access_hourly write per flush
        assert reads <= legacy_reads + heartbeats + 2 * (elapsed + 2)  # count() per heartbeat, 1-2 per reading
        day = app.services.store.access_usage(0)
        assert sum(row["requests"] for row in day if row["access_key"] != "anonymous") == 1 + 1000
    finally:
        app.close()
