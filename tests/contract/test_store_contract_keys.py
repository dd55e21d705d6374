"""The key list at scale: server-side search, status filter, sort and paging (``query_keys``), manual disable
(``set_disabled``) and validation marks (``record_validations``). Same tests on SQLite and the Firestore emulator;
``store.keyquery.select`` is the reference both must agree with."""

from __future__ import annotations

import pytest

from gptload.keypool.classify import SUCCESS, Kind, Verdict
from gptload.keypool.state import Policy
from gptload.models import ACTIVE, COOLING, DISABLED, INVALID, KEY_SORTS, KeyQuery, KeyRecord, UsageEvent
from gptload.store import keyquery
from tests.contract.test_store_contract import group, records

POLICY = Policy(blacklist_threshold=3, bare_429_cooldown_seconds=10, default_quota_cooldown_seconds=60)
NOW = 1_800_000_000.0


def _fixture(store) -> float:
    """Twelve keys: k0000..k0011 with different usage, notes, errors and states; returns "now"."""
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 12), {})
    store.set_key_notes("g1", "k0003", "Billing account B")
    store.set_key_notes("g1", "k0007", "billing account c")
    now = NOW + 100
    store.apply_verdict("g1", "k0001", Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m", now, POLICY)
    store.apply_verdict("g1", "k0002", Verdict(Kind.QUOTA_MINUTE, "429 per minute", 600.0, "m"), "m", now, POLICY)
    store.apply_verdict("g1", "k0004", Verdict(Kind.QUOTA_DAY, "429 per day", model="m"), "m", now, POLICY)
    store.apply_verdict("g1", "k0005", Verdict(Kind.QUOTA_MINUTE, "429 gone", 1.0, "m"), "m", now - 50, POLICY)
    store.apply_verdict("g1", "k0006", Verdict(Kind.KEY_INVALID, "403 API_KEY_SERVICE_BLOCKED"), "m", now, POLICY)
    assert store.set_disabled("g1", ["k0008", "k0009"], True) == 2
    events = [
        UsageEvent(group="g1", key_id=f"k{i:04d}", at=NOW + 10 + i * (7 % (i + 1)), success=i % 3 != 0, id=f"e{i}-{j}")
        for i in range(12)
        for j in range((i * 5) % 7)
    ]
    store.record_usage(events)
    return now


def _ids(page: list[KeyRecord]) -> list[str]:
    return [r.id for r in page]


def test_query_keys_agrees_with_the_reference_for_every_filter_sort_and_order(store):
    now = _fixture(store)
    everything = store.list_keys("g1")
    for status in (None, ACTIVE, COOLING, INVALID, DISABLED):
        for sort in KEY_SORTS:
            for descending in (False, True):
                query = KeyQuery(status=status, sort=sort, descending=descending, now=now)
                expected, total = keyquery.select(everything, query, 0, 100)
                page, count = store.query_keys("g1", query, 0, 100)
                assert (_ids(page), count) == (_ids(expected), total), (status, sort, descending)
    counts = {s: store.query_keys("g1", KeyQuery(status=s, now=now), 0, 100)[1] for s in (ACTIVE, COOLING, INVALID)}
    assert counts == {ACTIVE: 6, COOLING: 2, INVALID: 2}  # k0005's cooldown is over: active again
    assert _ids(store.query_keys("g1", KeyQuery(status=DISABLED, now=now), 0, 10)[0]) == ["k0008", "k0009"]


def test_query_keys_searches_masked_tail_notes_and_last_error_case_insensitively(store):
    now = _fixture(store)

    def found(text: str) -> list[str]:
        return _ids(store.query_keys("g1", KeyQuery(text=text, now=now), 0, 100)[0])

    assert found("0011") == ["k0011"]  # the masked tail
    assert found("BILLING account") == ["k0003", "k0007"]  # notes
    assert found("api_key_") == ["k0001", "k0006"]  # last error
    assert found("per day") == ["k0004"]
    assert found("nothing like it") == []
    page, total = store.query_keys("g1", KeyQuery(text="billing", status=ACTIVE, now=now), 0, 100)
    assert _ids(page) == ["k0003", "k0007"] and total == 2


def test_query_keys_pages_with_an_exact_total_and_finds_one_key_by_id(store):
    now = _fixture(store)
    query = KeyQuery(sort="requests", descending=True, now=now)
    pages = [store.query_keys("g1", query, offset, 5) for offset in (0, 5, 10)]
    assert [total for _, total in pages] == [12, 12, 12]
    assert [len(p) for p, _ in pages] == [5, 5, 2]
    seen = [r.id for p, _ in pages for r in p]
    assert sorted(seen) == [f"k{i:04d}" for i in range(12)]
    counts = [r.request_count for p, _ in pages for r in p]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0
    (one,), total = store.query_keys("g1", KeyQuery(key_id="k0003", now=now), 0, 50)
    assert total == 1 and one.notes == "Billing account B" and one.request_count == (3 * 5) % 7
    assert store.query_keys("g1", KeyQuery(key_id="missing", now=now), 0, 50) == ([], 0)
    assert store.query_keys("nope", KeyQuery(now=now), 0, 50) == ([], 0)


def test_query_keys_sees_changes_made_after_an_earlier_query(store):
    now = _fixture(store)
    store.query_keys("g1", KeyQuery(now=now), 0, 100)  # a store may keep what it read
    store.add_keys("g1", records("g1", 1, start=20), {})
    store.apply_verdict("g1", "k0000", Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m", now, POLICY)
    store.set_key_notes("g1", "k0010", "fresh note")
    store.record_usage([UsageEvent(group="g1", key_id="k0011", at=NOW + 500, success=True, id="late")])
    page, total = store.query_keys("g1", KeyQuery(now=now), 0, 100)
    by_id = {r.id: r for r in page}
    assert total == 13 and "k0020" in by_id
    assert by_id["k0000"].state.status == INVALID and by_id["k0010"].notes == "fresh note"
    assert by_id["k0011"].last_used_at == NOW + 500
    store.delete_keys("g1", ["k0020"])
    assert store.query_keys("g1", KeyQuery(now=now), 0, 100)[1] == 12


def test_disable_is_sticky_until_enable_and_moves_the_state_marker(store):
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 3), {})
    store.apply_verdict("g1", "k0001", Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m", NOW, POLICY)
    m = store.markers().get("state:g1", 0)
    assert store.set_disabled("g1", ["k0000", "k0001", "missing"], True) == 2
    assert store.markers()["state:g1"] > m
    assert store.set_disabled("g1", ["k0000"], True) == 0  # already disabled: no change
    state = {r.id: r.state for r in store.list_keys("g1")}
    assert state["k0000"].status == DISABLED and state["k0001"].status == DISABLED
    assert state["k0001"].last_error == "400 API_KEY_INVALID"  # why it was out is kept
    # nothing but enable brings it back: not a success, not key evidence, not restore (all or these ids)
    store.apply_verdict("g1", "k0000", SUCCESS, "m", NOW, POLICY)
    store.apply_verdict("g1", "k0000", Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m", NOW, POLICY)
    assert store.restore_keys("g1", None) == 0
    assert store.restore_keys("g1", ["k0000", "k0001"]) == 0
    assert {r.id: r.state.status for r in store.list_keys("g1")} == {
        "k0000": DISABLED,
        "k0001": DISABLED,
        "k0002": ACTIVE,
    }
    assert store.set_disabled("g1", ["k0000", "k0001", "k0002"], False) == 2
    assert {r.state.status for r in store.list_keys("g1")} == {ACTIVE}
    assert {r.id for r in store.changed_keys("g1", 0)} >= {"k0000", "k0001"}


def test_validation_marks_and_error_times_round_trip(store):
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 3), {})
    m = store.markers()
    store.record_validations("g1", {"k0000": "valid", "k0001": "inconclusive", "gone": "invalid"}, NOW + 5)
    assert store.markers() == m  # marks are not cached state
    store.apply_verdict("g1", "k0002", Verdict(Kind.QUOTA_DAY, "429 per day", model="m"), "m", NOW + 7, POLICY)
    keys = {r.id: r for r in store.list_keys("g1")}
    assert (keys["k0000"].validation, keys["k0000"].validated_at) == ("valid", NOW + 5)
    assert (keys["k0001"].validation, keys["k0001"].validated_at) == ("inconclusive", NOW + 5)
    assert (keys["k0002"].validation, keys["k0002"].validated_at) == ("", 0.0)
    assert keys["k0002"].state.last_error_at == NOW + 7 and keys["k0002"].state.cooldowns[0].daily
    assert "gone" not in keys
    (again,), _ = store.query_keys("g1", KeyQuery(key_id="k0001"), 0, 1)
    assert again.validation == "inconclusive"


@pytest.mark.parametrize("n", [1200])
def test_a_big_group_lists_searches_and_pages_correctly(store, n):
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", n), {})
    page, total = store.query_keys("g1", KeyQuery(sort="created", descending=True), 1000, 50)
    assert total == n and _ids(page) == [f"k{i:04d}" for i in range(n - 1001, n - 1051, -1)]
    assert _ids(store.query_keys("g1", KeyQuery(text="1199"), 0, 10)[0]) == ["k1199"]


def test_every_path_of_the_import_order_agrees_with_the_reference(store):
    """Firestore reads the import order from its index (when nothing is cached) and everything else from a scan;
    both paths, and SQLite, must give the reference's pages."""
    now = _fixture(store)
    everything = store.list_keys("g1")
    for status in (None, INVALID, DISABLED):
        for descending in (False, True):
            query = KeyQuery(status=status, descending=descending, now=now)
            for offset, limit in ((0, 100), (1, 3), (5, 5)):
                expected = keyquery.select(everything, query, offset, limit)
                paths = [store.query_keys]
                if store.kind == "firestore":
                    paths.append(store._indexed_page)  # the index path, whatever is cached
                for path in paths:
                    page, total = path("g1", query, offset, limit)
                    assert (_ids(page), total) == (_ids(expected[0]), expected[1]), (path, status, descending, offset)
                page, _ = store.query_keys("g1", query, offset, limit)
                assert [r.request_count for r in page] == [r.request_count for r in expected[0]]


def test_full_scans_read_a_big_group_in_pages(store, monkeypatch):
    """Firestore reads a whole group in pages (each RPC bounded in time); a page boundary loses or doubles nothing."""
    import gptload.store.firestore.store as firestore_store

    monkeypatch.setattr(firestore_store, "SCAN_PAGE", 7)
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 30), {f"k{i:04d}": b"cipher-%d" % i for i in range(30)})
    assert sorted(r.id for r in store.list_keys("g1")) == [f"k{i:04d}" for i in range(30)]
    if hasattr(store, "_forget_handoff"):
        store._forget_handoff("g1")  # no hand-off from list_keys: get_secrets scans
    assert store.get_secrets("g1") == {f"k{i:04d}": b"cipher-%d" % i for i in range(30)}
    page, total = store.query_keys("g1", KeyQuery(text="AIza", sort="requests"), 0, 100)
    assert total == 30 and len({r.id for r in page}) == 30


def test_an_import_racing_another_one_neither_doubles_nor_loses_keys(store, monkeypatch):
    """Firestore imports a step with one read and one batch of create(): when a key appears between the two (another
    instance imported it), the batch fails as a whole and the step is redone in transactions."""
    store.create_group(group("g1"))
    assert store.add_keys("g1", records("g1", 3), {}) == ["k0000", "k0001", "k0002"]
    if store.kind == "firestore":  # the read sees none of them: as if they were created right after it
        real = store._client.get_all

        def blind(refs, field_paths=None, **kw):  # transactions still read for real
            return real(refs, field_paths=field_paths, **kw) if kw.get("transaction") is not None else iter(())

        monkeypatch.setattr(store._client, "get_all", blind)
    assert sorted(store.add_keys("g1", records("g1", 6), {})) == ["k0003", "k0004", "k0005"]
    monkeypatch.undo()
    assert sorted(r.id for r in store.list_keys("g1")) == [f"k{i:04d}" for i in range(6)]
    assert store.add_keys("g1", records("g1", 6), {}) == []


def test_a_kept_key_list_follows_state_changes_and_keeps_up_with_new_keys(store):
    """What a store keeps between two queries (Firestore: the scan) must show every state change since, whoever
    made it (another instance: only the markers say so)."""
    now = _fixture(store)
    query = KeyQuery(sort="failures", descending=True, now=now)  # a scan on Firestore
    store.query_keys("g1", query, 0, 100)
    other = store
    if store.kind == "firestore":  # another instance: same database, its own memory
        from gptload.store.firestore.store import FirestoreStore

        other = FirestoreStore(store.project, store.database, client=store._client)
    other.apply_verdict("g1", "k0010", Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m", now, POLICY)
    other.set_disabled("g1", ["k0011"], True)
    page, total = store.query_keys("g1", query, 0, 100)
    states = {r.id: r.state.status for r in page}
    assert total == 12 and states["k0010"] == INVALID and states["k0011"] == DISABLED
    other.add_keys("g1", records("g1", 1, start=40), {})
    assert store.query_keys("g1", KeyQuery(status=ACTIVE, sort="failures", now=now), 0, 100)[1] == 5
