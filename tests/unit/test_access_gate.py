"""The access gate on a real SQLite store with an injected clock: the daily usage readings (hours read once when
complete, the day's rollover), heartbeats and the live-instance share, key reloads on the ``access`` marker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gptload.access.gate import AccessGate
from gptload.cipher import digest
from gptload.errors import QuotaExceeded, RateLimited
from gptload.models import AccessKey, UsageEvent
from gptload.store.sqlite_store import SqliteStore

T0 = datetime(2026, 3, 10, 12, 30, tzinfo=UTC).timestamp()
HOUR = 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(str(tmp_path / "gptload.db"))
    yield s
    s.close()


def add_key(store, key_id: str, secret: str, **limits) -> AccessKey:
    key = AccessKey(id=key_id, name=key_id, digest=digest(store.salt(), secret).hex(), masked="sk-...", **limits)
    store.create_access_key(key)
    return key


def used(store, key_id: str, at: float, n: int, *, refused: int = 0, tokens: int = 0) -> None:
    events = [
        UsageEvent(group="g", key_id="", at=at, success=True, access_key=key_id, id=f"{key_id}-{at}-{i}")
        for i in range(n)
    ]
    events += [
        UsageEvent(group="g", key_id="", at=at, success=False, refused=True, access_key=key_id, id=f"r-{at}-{i}")
        for i in range(refused)
    ]
    if tokens:
        events.append(
            UsageEvent(group="g", key_id="", at=at, success=True, access_key=key_id, total_tokens=tokens, id=f"t-{at}")
        )
    store.record_usage(events)


def gate_on(store, clock) -> AccessGate:
    gate = AccessGate(store, store.salt(), clock=clock, instance_id="me")
    gate.on_markers(store.markers())
    return gate


def test_identify_by_digest_and_reload_on_the_access_marker(store):
    clock = Clock(T0)
    add_key(store, "ak_a", "secret-a-0123456789")
    gate = gate_on(store, clock)
    assert gate.identify("secret-a-0123456789").id == "ak_a"
    assert gate.identify("secret-b-0123456789") is None and gate.identify(None) is None
    add_key(store, "ak_b", "secret-b-0123456789")
    assert gate.identify("secret-b-0123456789") is None  # not re-read until the marker moves
    gate.on_markers(store.markers())
    assert gate.identify("secret-b-0123456789").id == "ak_b"


def test_daily_readings_count_flushed_usage_minus_refusals_since_local_midnight(store):
    clock = Clock(T0)
    key = add_key(store, "ak_a", "secret-a-0123456789", daily_request_limit=10, daily_token_limit=1000)
    used(store, "ak_a", T0 - 13 * HOUR, 50)  # yesterday: not counted
    used(store, "ak_a", T0 - 2 * HOUR, 4, refused=3)  # an hour that is complete: read once
    used(store, "ak_a", T0, 3, tokens=20)
    gate = gate_on(store, clock)  # loading limited keys reads the day at once
    assert gate.used_today("ak_a") == (4 + 3 + 1, 20)
    gate.admit(key)
    assert gate.used_today("ak_a") == (9, 20)  # + this instance's own admission
    used(store, "ak_a", T0 + 10, 1)
    gate.sync_usage()
    assert gate.used_today("ak_a") == (9, 20)  # the reading replaced the local count: 4 + 3 + 1 + 1
    gate.admit(key)
    with pytest.raises(QuotaExceeded) as info:
        gate.admit(key)
    assert info.value.details["retry_after"] == pytest.approx(11.5 * HOUR)
    clock.now = T0 + 12 * HOUR  # past midnight UTC: a new day
    gate.sync_usage()
    assert gate.used_today("ak_a") == (0, 0)
    gate.admit(key)


def test_the_daily_token_limit_reads_flushed_tokens(store):
    clock = Clock(T0)
    key = add_key(store, "ak_t", "secret-t-0123456789", daily_token_limit=100)
    gate = gate_on(store, clock)
    gate.admit(key)
    used(store, "ak_t", T0, 1, tokens=150)
    gate.sync_usage()
    with pytest.raises(QuotaExceeded):
        gate.admit(key)


def test_the_rate_share_follows_the_live_instances(store):
    clock = Clock(T0)
    key = add_key(store, "ak_r", "secret-r-0123456789", rpm_limit=4)
    gate = gate_on(store, clock)  # the first heartbeat: alone
    assert gate.instances == 1
    store.heartbeat("other", T0, T0 - 15)
    assert gate.heartbeat() == 2
    for _ in range(2):
        gate.admit(key)
    with pytest.raises(RateLimited) as info:
        gate.admit(key)
    assert 60 <= info.value.details["retry_after"] <= 61
    clock.now = T0 + 30  # the other instance fell silent more than 15 s ago
    assert gate.heartbeat() == 1
    for _ in range(2):
        gate.admit(key)
    with pytest.raises(RateLimited):
        gate.admit(key)


def test_daily_budgets_make_the_usage_buffer_flush_on_time(store):
    from gptload.usage import UsageBuffer

    clock = Clock(100.0)
    usage = UsageBuffer(store, flush_seconds=5, min_events=100, max_seconds=60, background=False, clock=clock)
    gate = gate_on(store, Clock(T0))
    usage.hurry = gate.has_daily_limits
    usage.add(UsageEvent(group="g", key_id="", at=T0, success=True, id="one"))
    clock.now += 6
    assert not usage.due()  # a handful of events waits for 100 (or 60 s) on a store billed per write
    add_key(store, "ak_d", "secret-d-0123456789", daily_request_limit=10)
    gate.on_markers(store.markers())
    assert usage.due()  # a daily budget is read from flushed counters: flush every flush_seconds
