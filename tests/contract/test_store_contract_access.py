"""The store contract for access keys: CRUD with the ``access`` change marker, the hourly usage per access key that
``record_usage`` writes (final attempts, refusals, tokens, last use), the ``access_key`` log filter, and instance
heartbeats. Same tests on SQLite and on the Firestore emulator."""

from __future__ import annotations

import pytest

from gptload.errors import Conflict, NotFound
from gptload.models import ANONYMOUS, AccessKey, LogQuery, UsageEvent
from tests.contract.test_store_contract import NOW, group

HOUR = 3600.0
T0 = NOW - NOW % HOUR


def access_key(key_id: str = "ak_1", **kw) -> AccessKey:
    base = dict(id=key_id, name="client", digest="ab" * 32, masked="sk-a...wxyz", created_at=NOW, updated_at=NOW)
    base.update(kw)
    return AccessKey(**base)


def ev(i: int, access: str, **kw) -> UsageEvent:
    base = dict(group="g1", key_id="k1", at=T0 + i, success=True, status_code=200, id=f"e-{access}-{i}")
    base.update(kw)
    return UsageEvent(access_key=access, **base)


def test_access_keys_round_trip_and_move_the_access_marker(store):
    assert store.list_access_keys() == []
    before = store.markers().get("access", 0)
    a = access_key(
        "ak_a",
        groups=("g1", "g2"),
        models=("gemini-2.5*",),
        rpm_limit=60,
        daily_request_limit=100,
        daily_token_limit=5000,
        expires_at=NOW + 86400,
        enabled=False,
        notes="team A",
    )
    store.create_access_key(a)
    store.create_access_key(access_key("ak_b", digest="cd" * 32, created_at=NOW + 1))
    assert store.markers()["access"] > before
    assert store.get_access_key("ak_a") == a
    assert [k.id for k in store.list_access_keys()] == ["ak_a", "ak_b"]
    with pytest.raises(Conflict):
        store.create_access_key(access_key("ak_a"))
    marker = store.markers()["access"]
    changed = access_key("ak_a", name="renamed", digest="ef" * 32, rpm_limit=0, expires_at=None)
    store.update_access_key(changed)
    assert store.get_access_key("ak_a") == changed
    assert store.markers()["access"] > marker
    with pytest.raises(NotFound):
        store.update_access_key(access_key("ak_missing"))
    marker = store.markers()["access"]
    assert store.delete_access_key("ak_a") is True
    assert store.delete_access_key("ak_a") is False
    assert store.get_access_key("ak_a") is None
    assert [k.id for k in store.list_access_keys()] == ["ak_b"]
    assert store.markers()["access"] == marker + 1


def test_usage_per_access_key_and_hour(store):
    store.create_group(group("g1"))
    events = [
        ev(1, "ak_a", prompt_tokens=3, candidates_tokens=4, total_tokens=7),
        ev(2, "ak_a", success=False, status_code=429, refused=True, key_id=""),
        ev(3, "ak_a", final=False, success=False, status_code=503),  # a retried attempt: not a request
        ev(HOUR + 5, "ak_a", total_tokens=10),
        ev(4, ANONYMOUS, total_tokens=1),
    ]
    store.record_usage(events)
    store.record_usage(events)  # the same batch again (a retry): counted once
    rows = store.access_usage(T0)
    by = {(r["access_key"], r["hour"]): r for r in rows}
    a0 = by[("ak_a", T0)]
    assert (a0["requests"], a0["failures"], a0["refused"]) == (2, 1, 1)
    assert (a0["prompt_tokens"], a0["candidates_tokens"], a0["total_tokens"]) == (3, 4, 7)
    assert a0["last_used_at"] == T0 + 2
    assert by[("ak_a", T0 + HOUR)]["total_tokens"] == 10
    assert by[(ANONYMOUS, T0)]["requests"] == 1
    assert [r["hour"] for r in rows] == sorted(r["hour"] for r in rows)
    assert [(r["access_key"], r["hour"]) for r in store.access_usage(T0 + HOUR, "ak_a")] == [("ak_a", T0 + HOUR)]
    assert store.access_usage(T0, "ak_none") == []
    store.record_usage([ev(6, "ak_a", total_tokens=1, id="later")])  # counters add up across flushes
    assert {(r["access_key"], r["hour"]): r for r in store.access_usage(T0)}[("ak_a", T0)]["requests"] == 3


def test_log_rows_carry_and_filter_by_access_key(store):
    store.create_group(group("g1"))
    store.record_usage([ev(1, "ak_a"), ev(2, "ak_b"), ev(3, "ak_a", status_code=429, success=False)])
    rows, total = store.query_logs(LogQuery(access_key="ak_a"), 0, 10)
    assert total == 2 and {r["access_key"] for r in rows} == {"ak_a"}
    rows, total = store.query_logs(LogQuery(access_key="ak_a", success=False), 0, 10)
    assert total == 1 and rows[0]["status_code"] == 429
    assert store.get_log(rows[0]["id"])["access_key"] == "ak_a"
    _, total = store.query_logs(LogQuery(), 0, 10)
    assert total == 3


def test_heartbeats_count_live_instances(store):
    assert store.heartbeat("i1", NOW, NOW - 15) == 1
    assert store.heartbeat("i2", NOW + 1, NOW - 14) == 2
    assert store.heartbeat("i1", NOW + 2, NOW - 13) == 2  # a repeated heartbeat is the same instance
    assert store.heartbeat("i3", NOW + 20, NOW + 5) == 1  # i1 and i2 fell silent more than 15 s ago
