"""The per-instance pool: what a refresh reads, and that serving reads nothing."""

from __future__ import annotations

import time
from collections import Counter

from gptload.cipher import Cipher
from gptload.keypool.classify import Kind, Verdict
from gptload.models import INVALID, Group, KeyRecord, Upstream
from gptload.pool import KeyPool
from gptload.vault.store_vault import StoreVault
from tests.fakes.fake_gemini import make_key


class Counting:
    """Wraps a store and counts calls by method name."""

    def __init__(self, inner):
        self._inner = inner
        self.calls: Counter = Counter()

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*a, **k):
            self.calls[name] += 1
            return attr(*a, **k)

        return counted


def setup(sqlite_store, groups=("a", "b"), n=3):
    vault = StoreVault(sqlite_store, Cipher(b"k" * 32))
    for g in groups:
        sqlite_store.create_group(Group(g, (Upstream("http://127.0.0.1:1"),), proxy_keys=(f"proxy-{g}-123",)))
        secrets = {f"{g}{i}": make_key(hash((g, i)) % 10_000) for i in range(n)}
        sqlite_store.add_keys(
            g, [KeyRecord(i, g, "AIza...", created_at=time.time()) for i in secrets], vault.add(g, secrets)
        )
    return vault


def test_serving_reads_nothing_and_an_unchanged_store_costs_one_marker_read(sqlite_store):
    vault = setup(sqlite_store)
    store = Counting(sqlite_store)
    pool = KeyPool(store, vault, refresh_seconds=3600)
    pool.reload()
    store.calls.clear()
    view = pool.view("a")
    for _ in range(100):
        assert pool.authorize(view, "proxy-a-123")
        assert pool.acquire(view, "m", set()) is not None
    assert not pool.authorize(view, "proxy-b-123")
    assert store.calls == Counter()
    pool.reload()
    assert store.calls == Counter({"markers": 1})


def test_a_state_change_elsewhere_reads_only_that_groups_changed_keys(sqlite_store):
    vault = setup(sqlite_store)
    store = Counting(sqlite_store)
    pool = KeyPool(store, vault, refresh_seconds=3600)
    pool.reload()
    other = KeyPool(sqlite_store, vault)  # another instance
    other.report(other.view("a"), other.view("a").by_id["a1"], Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m")
    store.calls.clear()
    pool.reload()
    assert store.calls == Counter({"markers": 1, "changed_keys": 1})
    assert pool.view("a").by_id["a1"].state.status == INVALID
    assert pool.acquire(pool.view("a"), "m", {"a0", "a2"}) is None


def test_a_key_set_change_reloads_that_group_only(sqlite_store):
    vault = setup(sqlite_store)
    store = Counting(sqlite_store)
    pool = KeyPool(store, vault, refresh_seconds=3600)
    pool.reload()
    sqlite_store.add_keys(
        "b", [KeyRecord("b9", "b", "AIza...", created_at=time.time())], vault.add("b", {"b9": make_key(99_999)})
    )
    store.calls.clear()
    pool.reload()
    assert store.calls == Counter({"markers": 1, "list_keys": 1})  # (secrets are read through the vault)
    assert "b9" in pool.view("b").by_id


def test_sqlite_store_closes_connections_of_ended_threads(sqlite_store):
    import threading

    def read():
        sqlite_store.list_groups()

    for _ in range(20):
        t = threading.Thread(target=read)
        t.start()
        t.join()
    read()
    assert len(sqlite_store._all) <= 2  # this thread's, and at most the last helper's


def test_requests_never_wait_for_a_background_refresh_that_is_stuck_in_the_store(sqlite_store):
    """With background refresh, a request that finds the view stale while a refresh is still waiting on the
    store (e.g. Firestore unreachable) serves from the cache instead of queueing behind that I/O."""
    import threading

    vault = setup(sqlite_store)
    store = Counting(sqlite_store)
    pool = KeyPool(store, vault, refresh_seconds=0.0, background_refresh=True)
    pool.reload()
    release, entered = threading.Event(), threading.Event()
    real_markers = sqlite_store.markers

    def stuck_markers():
        entered.set()
        release.wait(10)
        return real_markers()

    store.markers = stuck_markers  # the next refresh hangs in the store
    try:
        pool.view("a")  # starts the background refresh
        assert entered.wait(5)
        served = threading.Event()
        request = threading.Thread(target=lambda: (pool.view("a"), served.set()))
        request.start()
        assert served.wait(5), "a request waited for the stuck refresh"
    finally:
        release.set()


def test_a_key_disabled_elsewhere_is_never_acquired_and_is_counted_as_disabled(sqlite_store):
    vault = setup(sqlite_store, groups=("a",), n=3)
    pool = KeyPool(sqlite_store, vault, refresh_seconds=3600)
    pool.reload()
    assert sqlite_store.set_disabled("a", ["a0", "a1"], True) == 2  # another instance's admin call
    pool.reload()  # the state marker moved: the changed keys are read
    view = pool.view("a")
    assert {pool.acquire(view, "m", set()).id for _ in range(20)} == {"a2"}
    assert pool.census(view, "m", set()) == {"invalid": 0, "disabled": 2, "cooling": 0, "available": 1}
    assert pool.acquire(view, "m", {"a2"}) is None
