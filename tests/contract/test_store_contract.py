"""One contract, every store: the same tests run on SQLite and on the real Firestore emulator."""

from __future__ import annotations

import threading
import time

import pytest

from gptload.errors import GroupExists, GroupNotFound
from gptload.keypool.classify import SUCCESS, Kind, Verdict
from gptload.keypool.state import Policy
from gptload.models import ACTIVE, INVALID, Group, KeyRecord, KeyState, Upstream, UsageEvent
from gptload.store.base import RESOURCE, UPLOAD, Binding

POLICY = Policy(blacklist_threshold=3, bare_429_cooldown_seconds=10, default_quota_cooldown_seconds=60)
NOW = 1_800_000_000.0


def group(name="g1", **kw) -> Group:
    return Group(name=name, upstreams=(Upstream("http://127.0.0.1:1", 1),), proxy_keys=("proxy-key-1",), **kw)


def records(group_name: str, n: int, start: int = 0) -> list[KeyRecord]:
    return [
        KeyRecord(id=f"k{i:04d}", group=group_name, masked=f"AIza...{i:04d}", created_at=NOW + i)
        for i in range(start, start + n)
    ]


def test_salt_is_stable_and_long(store):
    first = store.salt()
    assert len(first) >= 32
    assert store.salt() == first


def test_settings_merge_and_move_the_config_marker(store):
    assert store.markers().get("config", 0) == 0
    assert store.get_settings() == {}
    store.put_settings({"max_retries": 5})
    m1 = store.markers()["config"]
    assert m1 > 0
    store.put_settings({"blacklist_threshold": 7})
    assert store.get_settings() == {"max_retries": 5, "blacklist_threshold": 7}
    assert store.markers()["config"] > m1


def test_group_crud(store):
    store.create_group(group("b", sort=2))
    store.create_group(group("a", sort=2, display_name="A"))
    store.create_group(group("c", sort=1))
    assert [g.name for g in store.list_groups()] == ["c", "a", "b"]
    with pytest.raises(GroupExists):
        store.create_group(group("a"))
    got = store.get_group("a")
    assert got.display_name == "A" and got.upstreams == (Upstream("http://127.0.0.1:1", 1),)
    assert got.proxy_keys == ("proxy-key-1",)
    store.update_group(Group.from_dict({**got.to_dict(), "description": "changed", "settings": {"max_retries": 1}}))
    assert store.get_group("a").description == "changed"
    assert store.get_group("a").settings == {"max_retries": 1}
    with pytest.raises(GroupNotFound):
        store.update_group(group("zzz"))
    assert store.get_group("zzz") is None


def test_delete_group_removes_keys_and_secrets(store):
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 3), {"k0000": b"ct0", "k0001": b"ct1", "k0002": b"ct2"})
    before = store.markers()
    assert store.delete_group("g1") == 3
    after = store.markers()
    assert after["config"] > before["config"] and after["keys:g1"] > before["keys:g1"]
    assert store.get_group("g1") is None
    assert store.list_keys("g1") == []
    assert store.get_secrets("g1") == {}
    with pytest.raises(GroupNotFound):
        store.delete_group("g1")


def test_add_keys_is_idempotent_and_keeps_ciphertext(store):
    store.create_group(group())
    added = store.add_keys("g1", records("g1", 3), {f"k{i:04d}": f"ct{i}".encode() for i in range(3)})
    assert sorted(added) == ["k0000", "k0001", "k0002"]
    again = store.add_keys("g1", records("g1", 4), {f"k{i:04d}": b"other" for i in range(4)})
    assert again == ["k0003"]
    keys = store.list_keys("g1")
    assert [k.id for k in keys] == ["k0000", "k0001", "k0002", "k0003"]
    assert all(k.state == KeyState() for k in keys)
    assert store.get_secrets("g1")["k0001"] == b"ct1"  # the duplicate did not overwrite
    with pytest.raises(GroupNotFound):
        store.add_keys("nope", records("nope", 1), {})


def test_delete_keys(store):
    store.create_group(group())
    store.add_keys("g1", records("g1", 5), {f"k{i:04d}": b"x" for i in range(5)})
    assert store.delete_keys("g1", ["k0001", "k0003", "missing"]) == 2
    assert [k.id for k in store.list_keys("g1")] == ["k0000", "k0002", "k0004"]
    assert set(store.get_secrets("g1")) == {"k0000", "k0002", "k0004"}
    assert store.delete_keys("g1", []) == 0


def test_apply_verdict_runs_the_state_machine(store):
    store.create_group(group())
    store.add_keys("g1", records("g1", 2), {})
    m0 = store.markers()
    rec = store.apply_verdict(
        "g1",
        "k0000",
        Verdict(Kind.QUOTA_MINUTE, "429 PerMinute", 26.0, "gemini-2.5-flash"),
        "gemini-2.5-flash",
        NOW,
        POLICY,
    )
    assert rec.state.cooldowns[0].model == "gemini-2.5-flash"
    assert rec.state.cooldowns[0].until == NOW + 26
    m1 = store.markers()
    assert m1.get("state:g1", 0) > m0.get("state:g1", 0)
    assert m1["config"] == m0["config"] and m1["keys:g1"] == m0["keys:g1"]
    stored = {k.id: k for k in store.list_keys("g1")}["k0000"]
    assert stored.state == rec.state
    rec = store.apply_verdict("g1", "k0001", Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m", NOW, POLICY)
    assert rec.state.status == INVALID
    assert store.apply_verdict("g1", "missing", SUCCESS, "m", NOW, POLICY) is None


def test_transient_failures_count_and_success_resets(store):
    store.create_group(group())
    store.add_keys("g1", records("g1", 1), {})
    t = Verdict(Kind.TRANSIENT, "503 UNAVAILABLE", isolated=True)
    assert store.apply_verdict("g1", "k0000", t, "m", NOW, POLICY).state.failure_count == 1
    assert store.apply_verdict("g1", "k0000", t, "m", NOW, POLICY).state.failure_count == 2
    assert store.apply_verdict("g1", "k0000", SUCCESS, "m", NOW, POLICY).state.failure_count == 0
    for _ in range(3):
        rec = store.apply_verdict("g1", "k0000", t, "m", NOW, POLICY)
    assert rec.state.status == INVALID and rec.state.failure_count == 3


def test_concurrent_failures_on_one_key_are_exact(store):
    """Several writers with their own connections report failures on one key at once: exact counter,
    exactly one transition to invalid."""
    store.create_group(group())
    store.add_keys("g1", records("g1", 1), {})
    n_threads, per_thread = 6, 3
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work():
        try:
            barrier.wait()
            for _ in range(per_thread):
                store.apply_verdict("g1", "k0000", Verdict(Kind.TRANSIENT, "503", isolated=True), "m", NOW, POLICY)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    (key,) = store.list_keys("g1")
    assert key.state.failure_count == n_threads * per_thread
    assert key.state.status == INVALID


def test_restore_all_and_by_id(store):
    store.create_group(group())
    store.add_keys("g1", records("g1", 3), {})
    store.apply_verdict("g1", "k0000", Verdict(Kind.KEY_INVALID, "x"), "m", NOW, POLICY)
    store.apply_verdict("g1", "k0001", Verdict(Kind.QUOTA_DAY, "day"), "m", NOW, POLICY)
    m = store.markers().get("state:g1", 0)
    assert store.restore_keys("g1", ["k0000"]) == 1
    assert store.markers()["state:g1"] > m
    states = {k.id: k.state for k in store.list_keys("g1")}
    assert states["k0000"] == KeyState(status=ACTIVE)
    assert states["k0001"].cooldowns
    assert store.restore_keys("g1", None) == 1
    assert all(k.state == KeyState() for k in store.list_keys("g1"))
    assert store.restore_keys("g1", None) == 0


def test_record_usage_adds_up(store):
    store.create_group(group())
    store.add_keys("g1", records("g1", 2), {})
    m = store.markers()
    store.record_usage(
        [
            UsageEvent("g1", "k0000", NOW + 5, True),
            UsageEvent("g1", "k0000", NOW + 9, False),
            UsageEvent("g1", "k0001", NOW + 1, True),
        ]
    )
    store.record_usage([UsageEvent("g1", "k0000", NOW + 7, True)])
    keys = {k.id: k for k in store.list_keys("g1")}
    assert keys["k0000"].request_count == 3 and keys["k0000"].failure_total == 1
    assert keys["k0000"].last_used_at == NOW + 9
    assert keys["k0001"].request_count == 1
    assert store.markers() == m  # usage is not cached state


def test_usage_of_requests_refused_before_any_key_counts_for_the_group_only(store):
    """A 401 / 503 NO_KEYS_AVAILABLE row has no key: it adds to the group's statistics and the log, to no key."""
    store.create_group(group())
    store.add_keys("g1", records("g1", 1), {})
    store.record_usage(
        [UsageEvent("g1", "", NOW + 1, False, status_code=401), UsageEvent("g1", "k0000", NOW + 2, True)]
    )
    (key,) = store.list_keys("g1")
    assert key.request_count == 1 and key.failure_total == 0
    (row,) = [h for h in store.hourly_stats("g1", NOW - 3600) if h["requests"]]
    assert row["requests"] == 2 and row["failures"] == 1


def test_bindings_expire(store):
    now = time.time()
    store.put_binding(Binding(RESOURCE, "files/abc", "g1", "k0000", "http://up", now + 100))
    store.put_binding(Binding(UPLOAD, "up-1", "g1", "k0001", "http://up/upload?upload_id=up-1", now - 1))
    got = store.get_binding(RESOURCE, "files/abc", now)
    assert got == Binding(RESOURCE, "files/abc", "g1", "k0000", "http://up", pytest.approx(now + 100))
    assert store.get_binding(UPLOAD, "up-1", now) is None
    assert store.get_binding(RESOURCE, "up-1", now) is None
    assert store.get_binding(RESOURCE, "files/other", now) is None


def test_key_set_changes_move_the_keys_marker_only(store):
    store.create_group(group())
    m0 = store.markers()
    store.add_keys("g1", records("g1", 2), {})
    m1 = store.markers()
    assert m1["keys:g1"] > m0.get("keys:g1", 0) and m1["config"] == m0["config"]
    store.add_keys("g1", records("g1", 2), {})  # nothing new: no change
    assert store.markers() == m1
    store.delete_keys("g1", ["k0000"])
    assert store.markers()["keys:g1"] > m1["keys:g1"]


def test_changed_keys_returns_keys_whose_state_was_written_since(store):
    store.create_group(group())
    store.add_keys("g1", records("g1", 3), {})
    before = time.time() - 1
    store.apply_verdict("g1", "k0001", Verdict(Kind.KEY_INVALID, "x"), "m", NOW, POLICY)
    changed = store.changed_keys("g1", before)
    assert "k0001" in [k.id for k in changed]
    assert {k.id: k for k in changed}["k0001"].state.status == INVALID
    assert store.changed_keys("g1", time.time() + 3600) == []


def test_a_retried_usage_batch_is_counted_once(store):
    """A flush whose outcome was unknown is retried with the same events: nothing may be added twice."""
    store.create_group(group())
    store.add_keys("g1", records("g1", 1), {})
    batch = [UsageEvent("g1", "k0000", NOW + i, True, final=True, id=f"e{i}") for i in range(3)]
    store.record_usage(batch)
    store.record_usage(list(reversed(batch)))  # the retry (order does not matter)
    (key,) = store.list_keys("g1")
    assert key.request_count == 3
    assert store.group_totals(0)["g1"]["requests"] == 3
    store.record_usage([UsageEvent("g1", "k0000", NOW + 9, True, id="e9")])  # a new batch still counts
    assert store.list_keys("g1")[0].request_count == 4
