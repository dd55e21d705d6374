"""Per-key usage counters of big groups on the Firestore emulator (``key_usage`` shards).

A group's counters live in one document ``key_usage/{group}`` while the group is small; Firestore caps a document
at 1 MiB, so from ``USAGE_SHARD_THRESHOLD`` keys on a flush spreads them over ``key_usage/{group}:{shard}``
documents and readers sum the base document and the shards. The threshold is lowered here to keep the tests
fast; one test runs the real limit (20,000 keys with usage in one group). Skips without FIRESTORE_EMULATOR_HOST
locally, fails in CI (``tests.conftest.require``).
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid

import pytest

from gptload.models import UsageEvent
from gptload.store.firestore import store as fs_store
from tests.conftest import require
from tests.contract.test_store_contract import NOW, group
from tests.firestore_support import CallCounter, firestore_store

pytestmark = pytest.mark.firestore


@pytest.fixture
def store():
    host = os.environ.get("FIRESTORE_EMULATOR_HOST", "")
    require(bool(host), "FIRESTORE_EMULATOR_HOST is not set (.ci/firestore-emulator.sh start)")
    s = firestore_store(host, f"shards-{uuid.uuid4().hex[:10]}")  # a project of its own: no reset needed
    yield s
    s.close()


def hex_records(name: str, ids: list[str]):
    from gptload.models import KeyRecord

    return [KeyRecord(id=i, group=name, masked=f"AIza...{i[-4:]}", created_at=NOW + n) for n, i in enumerate(ids)]


def key_ids(n: int, start: int = 0) -> list[str]:
    """Fingerprint-like ids (16 hex digits) whose first digits spread over every shard."""
    return [f"{(i * 0x9E3779B1) % 16**4:04x}{i:012x}" for i in range(start, start + n)]


def use(name: str, ids: list[str], at: float, n: int = 1, failures: int = 0) -> list[UsageEvent]:
    events = []
    for kid in ids:
        for j in range(n):
            events.append(
                UsageEvent(
                    group=name,
                    key_id=kid,
                    at=at,
                    success=j >= failures,
                    status_code=200 if j >= failures else 503,
                    model="gemini-2.5-flash",
                    logged=False,
                    total_tokens=10,
                    id=f"{kid}-{at}-{j}",
                )
            )
    return events


def usage_docs(store, name: str) -> dict[str, dict]:
    """Every ``key_usage`` document of the group (the base one as ``""``, shards by their suffix)."""
    out = {}
    for snap in store._client.collection("key_usage").stream():
        if snap.id == name:
            out[""] = (snap.to_dict() or {}).get("k") or {}
        elif snap.id.startswith(f"{name}:"):
            out[snap.id.split(":", 1)[1]] = (snap.to_dict() or {}).get("k") or {}
    return out


def counters(store, name: str) -> dict[str, tuple[int, int, float, int]]:
    return {r.id: (r.request_count, r.failure_total, r.last_used_at, r.total_tokens) for r in store.list_keys(name)}


def test_a_group_crossing_the_threshold_keeps_its_figures_and_spreads_new_ones(store, monkeypatch):
    monkeypatch.setattr(fs_store, "USAGE_SHARD_THRESHOLD", 20)
    store.create_group(group("big"))
    first = key_ids(10)
    store.add_keys("big", hex_records("big", first), {})
    store.list_keys("big")  # what a pool reload does: the store learns the group's size (10 < 20)
    store.record_usage(use("big", first, NOW + 100, n=2, failures=1))
    assert set(usage_docs(store, "big")) == {""}, "a small group keeps its one document"

    more = key_ids(30, start=10)
    store.add_keys("big", hex_records("big", more), {})
    assert len(store.list_keys("big")) == 40  # 40 >= 20: the next flush spreads its counters
    store.record_usage(use("big", first[:5] + more, NOW + 200))
    docs = usage_docs(store, "big")
    assert set(docs) - {""}, "no shard document was written"
    assert set(docs[""]) == set(first), "new counters went to the base document"
    for shard, entries in docs.items():
        if shard:
            assert entries and all(fs_store.usage_shard(k) == shard for k in entries)
    got = counters(store, "big")
    for kid in first[:5]:  # base (2 requests, 1 failure, at +100) + a shard (1 request, at +200)
        assert got[kid] == (3, 1, NOW + 200, 30)
    for kid in first[5:]:
        assert got[kid] == (2, 1, NOW + 100, 20)
    for kid in more:
        assert got[kid] == (1, 0, NOW + 200, 10)

    # deleting a key clears its entries wherever they are; the same id added again starts at zero
    victim = first[0]
    assert store.delete_keys("big", [victim]) == 1
    assert all(victim not in entries for entries in usage_docs(store, "big").values())
    store.add_keys("big", hex_records("big", [victim]), {})
    assert counters(store, "big")[victim] == (0, 0, 0.0, 0)

    # deleting the group removes the base document and every shard
    store.delete_group("big")
    assert usage_docs(store, "big") == {}


def test_writes_and_reads_per_flush_small_and_big_groups(store, monkeypatch):
    monkeypatch.setattr(fs_store, "USAGE_SHARD_THRESHOLD", 50)
    store.create_group(group("small"))
    store.create_group(group("big"))
    small_ids, big_ids = key_ids(40), key_ids(200, start=100)
    store.add_keys("small", hex_records("small", small_ids), {})
    store.add_keys("big", hex_records("big", big_ids), {})
    store.list_keys("small")
    store.list_keys("big")
    counter = CallCounter(store)

    store.record_usage(use("small", small_ids, NOW + 10))
    calls, reads, writes = counter.snapshot()
    small_writes = writes
    # as before shards existed: 1 key_usage + 1 stats_hourly + 1 access_hourly + 1 usage_batches marker, one commit
    assert (calls, reads, writes) == (1, 0, 4), counter.calls
    counter.reset()
    store.list_keys("small")
    _, small_reads, _ = counter.snapshot()
    assert small_reads == 40 + 1  # the keys + the one usage document

    counter.reset()
    store.record_usage(use("big", big_ids, NOW + 10))
    calls, reads, writes = counter.snapshot()
    big_writes = writes
    shards = len(usage_docs(store, "big")) - 1
    assert shards == fs_store.USAGE_SHARDS  # 200 fingerprint-like ids fill every shard
    # the base document's shard mark + one write per shard touched + stats_hourly + access_hourly + marker
    assert (calls, reads, writes) == (1, 0, 1 + shards + 3), counter.calls
    counter.reset()
    assert sum(r.request_count for r in store.list_keys("big")) == 200
    _, big_reads, _ = counter.snapshot()
    assert big_reads == 200 + 1 + fs_store.USAGE_SHARDS
    print(
        f"\nkey_usage: small group (40 keys) flush -> {small_writes} writes; big group (200 keys, threshold lowered "
        f"to 50) flush -> {big_writes} writes; reload reads {small_reads} / {big_reads}"
    )


def test_the_real_document_limit_twenty_thousand_keys_with_usage(store):
    """No lowered threshold: 20,000 keys of one group each serve a request, in one flush. One ``key_usage``
    document for all of them would exceed Firestore's 1 MiB; the flush must succeed and every counter read back."""
    n = 20_000
    ids = key_ids(n)
    store.create_group(group("huge"))
    started = time.monotonic()
    assert len(store.add_keys("huge", hex_records("huge", ids), {})) == n
    assert len(store.list_keys("huge")) == n
    store.record_usage(use("huge", ids, NOW + 5))
    got = store._usage_of("huge")  # what list_keys merges into the records (without re-reading 20,000 keys)
    assert sorted(got) == sorted(ids) and all(e["n"] == 1 and e["at"] == NOW + 5 for e in got.values())
    assert len(usage_docs(store, "huge")) == 1 + fs_store.USAGE_SHARDS
    print(f"\n20,000 keys with usage: import + reload + flush + usage read in {time.monotonic() - started:.1f} s")


def test_proxied_traffic_of_a_big_group_lands_in_shards_and_the_console_sums_them(tmp_path, monkeypatch):
    """The real app: the pool's reload tells the store the group's size, so the request-tail flushes of a group
    past the (lowered) threshold write shards, and the console's key list shows every request."""
    from tests.e2e.test_firestore_system import _steady_app
    from tests.fakes.fake_gemini import FakeGemini

    monkeypatch.setattr(fs_store, "USAGE_SHARD_THRESHOLD", 10)
    host = os.environ.get("FIRESTORE_EMULATOR_HOST", "")
    require(bool(host), "FIRESTORE_EMULATOR_HOST is not set (.ci/firestore-emulator.sh start)")
    with FakeGemini(n_keys=0) as fake:
        app, name, proxy_key, _counter = _steady_app(tmp_path, monkeypatch, fake, host, n_keys=12)
        try:
            for _ in range(48):
                assert app.generate(name, proxy_key).status_code == 200
            app.services.usage.flush()
            store = app.services.store
            docs = usage_docs(store, name)
            assert len(docs) > 1 and sum(len(e) for s, e in docs.items() if s) == 12
            r = app.api("GET", f"/api/groups/{name}/keys", query_string={"page_size": 100})
            assert r.status_code == 200, r.text
            items = r.json["keys"]
            assert len(items) == 12 and sum(k["request_count"] for k in items) == 12 + 48
        finally:
            app.close()


def test_no_commit_puts_more_than_500_field_transforms_on_one_document(store, monkeypatch):
    """Firestore refuses a commit with more than 500 field transforms on one document (the emulator does not
    enforce it). A key's counters are 4 transforms (3 increments, 1 maximum) and an access key's 7, so one flush
    that touches 300 keys of a group under the shard threshold, or 100 access keys in one hour, must be cut into
    commits that each stay within the limit, and still count every event once."""
    store.create_group(group("wide"))
    ids = key_ids(300)
    store.add_keys("wide", hex_records("wide", ids), {})
    store.list_keys("wide")  # 300 keys: under USAGE_SHARD_THRESHOLD, so one key_usage document
    events = [dataclasses.replace(e, access_key=f"ak{i % 100:03d}") for i, e in enumerate(use("wide", ids, NOW + 10))]
    commits: list[list] = []
    real = store._commit_usage

    def recording(key, writes):
        commits.append([w for w, _size, _page in writes])
        return real(key, writes)

    monkeypatch.setattr(store, "_commit_usage", recording)
    store.record_usage(events)
    for pbs in commits:
        per_doc: dict[str, int] = {}
        for w in pbs:
            pb = getattr(w, "_pb", w)
            per_doc[pb.update.name] = per_doc.get(pb.update.name, 0) + len(pb.update_transforms)
        assert max(per_doc.values()) <= fs_store.FIELD_TRANSFORMS_LIMIT, per_doc
    got = counters(store, "wide")
    assert all(got[kid] == (1, 0, NOW + 10, 10) for kid in ids)
    store.record_usage(events)  # the same batch again (an unknown outcome retried): nothing counted twice
    assert counters(store, "wide") == got
