"""More of the store contract: what only shows with several clients, lost keys or an unreachable backend."""

from __future__ import annotations

import os
import threading
import time

import pytest

from gptload.errors import StoreUnavailable
from gptload.keypool.classify import Kind, Verdict
from gptload.models import INVALID, UsageEvent
from gptload.store.base import RESOURCE, Binding
from tests.conftest import require
from tests.contract.test_store_contract import NOW, POLICY, group, records


def _second_store(store, tmp_path):
    """Another handle on the same data with its own connection/client, as a second instance would have."""
    if store.kind == "sqlite":
        from gptload.store.sqlite_store import SqliteStore

        return SqliteStore(store.path)
    from tests.firestore_support import firestore_store

    return firestore_store(os.environ["FIRESTORE_EMULATOR_HOST"])


def test_concurrent_failures_from_separate_clients_are_exact(store, tmp_path):
    """Threads each with their OWN store/client hit one key at once: exact counter, one active->invalid."""
    store.create_group(group())
    store.add_keys("g1", records("g1", 1), {})
    # 3 clients x 4: on the emulator every collision waits out its ~2 s lock timeout; more clients mostly add time
    n_threads, per_thread = 3, 4
    policy = type(POLICY)(blacklist_threshold=n_threads * per_thread, bare_429_cooldown_seconds=10)
    handles = [_second_store(store, tmp_path) for _ in range(n_threads)]
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []
    became_invalid: list[int] = []

    def work(handle):
        try:
            barrier.wait()
            for _ in range(per_thread):
                rec = handle.apply_verdict(
                    "g1", "k0000", Verdict(Kind.TRANSIENT, "503", isolated=True), "m", NOW, policy
                )
                if rec.state.status == INVALID and rec.state.failure_count == n_threads * per_thread:
                    became_invalid.append(1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(h,)) for h in handles]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for h in handles:
        h.close()
    assert errors == []
    (key,) = store.list_keys("g1")
    assert key.state.failure_count == n_threads * per_thread
    assert key.state.status == INVALID
    assert len(became_invalid) == 1  # exactly one writer observed the transition


def test_a_change_made_through_one_client_moves_the_markers_seen_by_another(store, tmp_path):
    other = _second_store(store, tmp_path)
    try:
        store.create_group(group())
        store.add_keys("g1", records("g1", 2), {})
        m = other.markers()
        assert m["config"] > 0 and m["keys:g1"] > 0
        since = time.time() - 1
        store.apply_verdict("g1", "k0000", Verdict(Kind.KEY_INVALID, "x"), "m", NOW, POLICY)
        after = other.markers()
        assert after["state:g1"] > m.get("state:g1", 0)
        assert {k: v for k, v in after.items() if k != "state:g1"} == m
        assert other.list_keys("g1")[0].state.status == INVALID
        changed = {k.id: k for k in other.changed_keys("g1", since)}
        assert changed["k0000"].state.status == INVALID
    finally:
        other.close()


def test_usage_for_a_deleted_key_is_skipped_and_the_rest_counted(store):
    store.create_group(group())
    store.add_keys("g1", records("g1", 2), {})
    store.delete_keys("g1", ["k0001"])
    store.record_usage([UsageEvent("g1", "k0000", NOW, True), UsageEvent("g1", "k0001", NOW, False)])
    (key,) = store.list_keys("g1")
    assert key.id == "k0000" and key.request_count == 1
    assert [k.id for k in store.list_keys("g1")] == ["k0000"]  # no ghost record for the deleted key
    store.add_keys("g1", records("g1", 2), {})  # re-added: starts from zero, like a new key
    assert {k.id: k.request_count for k in store.list_keys("g1")} == {"k0000": 1, "k0001": 0}


def test_usage_over_one_batch(store):
    store.create_group(group())
    store.add_keys("g1", records("g1", 600), {})
    store.record_usage([UsageEvent("g1", f"k{i:04d}", NOW + i, i % 2 == 0) for i in range(600)])
    keys = store.list_keys("g1")
    assert sum(k.request_count for k in keys) == 600
    assert sum(k.failure_total for k in keys) == 300


def test_re_adding_a_deleted_key_works(store):
    store.create_group(group())
    store.add_keys("g1", records("g1", 1), {"k0000": b"ct"})
    assert store.delete_keys("g1", ["k0000"]) == 1
    assert store.add_keys("g1", records("g1", 1), {"k0000": b"ct2"}) == ["k0000"]
    assert store.get_secrets("g1") == {"k0000": b"ct2"}


def test_binding_overwrite_and_group_delete_removes_bindings(store):
    now = time.time()
    store.create_group(group("g1"))
    store.put_binding(Binding(RESOURCE, "files/a", "g1", "k0000", "http://up", now + 100))
    store.put_binding(Binding(RESOURCE, "files/a", "g1", "k0001", "http://up2", now + 200))
    got = store.get_binding(RESOURCE, "files/a", now)
    assert got.key_id == "k0001" and got.target == "http://up2"
    store.delete_group("g1")
    assert store.get_binding(RESOURCE, "files/a", now) is None


def test_purge_expired_keeps_live_bindings_and_recent_usage_batches(store):
    """Expired bindings may go (a TTL store leaves that to its TTL policies and returns 0); live ones stay, and a
    usage batch recorded just before is still recognised as a retry afterwards."""
    now = time.time()
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 1), {})
    store.put_binding(Binding(RESOURCE, "files/live", "g1", "k0000", "http://up", now + 100))
    store.put_binding(Binding(RESOURCE, "files/gone", "g1", "k0000", "http://up", now - 1))
    batch = [UsageEvent("g1", "k0000", now, True, id="p1")]
    store.record_usage(batch)
    purged = store.purge_expired(now)
    assert purged == (1 if store.kind == "sqlite" else 0)
    assert store.purge_expired(now) == 0
    assert store.get_binding(RESOURCE, "files/live", now).key_id == "k0000"
    assert store.get_binding(RESOURCE, "files/gone", now) is None
    store.record_usage(batch)  # a retry of the batch after the purge: still counted once
    assert store.list_keys("g1")[0].request_count == 1


@pytest.mark.firestore
def test_unreachable_firestore_fails_fast_with_store_unavailable(monkeypatch):
    require(bool(os.environ.get("FIRESTORE_EMULATOR_HOST")), "FIRESTORE_EMULATOR_HOST is not set")
    from gptload.store.firestore import FirestoreStore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")  # nothing listens on the discard port
    store = FirestoreStore(project="gptload-test")
    try:
        for call in (
            store.markers,
            lambda: store.apply_verdict("g", "k", Verdict(Kind.TRANSIENT, "x", isolated=True), "m", NOW, POLICY),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                call()
            assert time.monotonic() - started < 8.0
    finally:
        store.close()
