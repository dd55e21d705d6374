"""The request-log contract at volume: paging, totals, filters and the detail view over more rows than one
Firestore log page holds (the Firestore adapter packs rows into pages, SQLite keeps one row per attempt), and a
retried batch logging nothing twice. Same tests on SQLite and on the Firestore emulator."""

from __future__ import annotations

import pytest

from gptload.models import LogQuery, UsageEvent
from tests.contract.test_store_contract import group, records
from tests.contract.test_store_contract_usage import T0

N = 1234  # > 2 pages of 500 rows for one group, across an hour edge


def _events() -> list[UsageEvent]:
    out = []
    for i in range(N):
        fail = i % 7 == 0
        out.append(
            UsageEvent(
                group="g2" if i % 3 == 0 else "g1",
                key_id=f"k{i % 4:04d}",
                at=T0 + 3600 - 600 + i,  # the last 600 s of one hour and the first 634 of the next
                success=not fail,
                status_code=429 if fail else 200,
                model="gemini-2.5-pro" if i % 5 == 0 else "gemini-2.5-flash",
                stream=i % 2 == 0,
                error="429 RESOURCE_EXHAUSTED: quota" if fail else "",
                request_body=f'{{"n": {i}}}' if i % 100 == 1 else None,
                id=f"row-{i:05d}",
            )
        )
    return out


def _expected(events: list[UsageEvent], keep) -> list[str]:
    rows = sorted((e for e in events if keep(e)), key=lambda e: (-e.at, e.id))
    return [e.id for e in rows]


@pytest.fixture
def logged(store):
    store.create_group(group("g1"))
    store.create_group(group("g2"))
    store.add_keys("g1", records("g1", 4), {})
    store.add_keys("g2", records("g2", 4), {})
    events = _events()
    store.record_usage(events)
    return events


def test_paging_over_many_rows_is_exact_and_newest_first(store, logged):
    everything = _expected(logged, lambda e: True)
    for offset, limit in ((0, 50), (450, 100), (990, 60), (1200, 50)):
        rows, total = store.query_logs(LogQuery(), offset, limit)
        assert total == N
        assert [r["id"] for r in rows] == everything[offset : offset + limit]
    rows, total = store.query_logs(LogQuery(group="g1"), 700, 30)
    g1 = _expected(logged, lambda e: e.group == "g1")
    assert total == len(g1) and [r["id"] for r in rows] == g1[700:730]


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        (LogQuery(key_id="k0002"), lambda e: e.key_id == "k0002"),
        (LogQuery(group="g2", success=False), lambda e: e.group == "g2" and not e.success),
        (LogQuery(model="gemini-2.5-pro", stream=True), lambda e: e.model == "gemini-2.5-pro" and e.stream),
        (LogQuery(status_code=429, text="quota"), lambda e: e.status_code == 429),
        (LogQuery(since=T0 + 3600 - 10, until=T0 + 3600 + 20), lambda e: T0 + 3590 <= e.at < T0 + 3620),
        (LogQuery(model="no-such-model"), lambda e: False),
    ],
)
def test_filters_over_many_rows(store, logged, query, keep):
    want = _expected(logged, keep)
    rows, total = store.query_logs(query, 3, 40)
    assert total == len(want) and [r["id"] for r in rows] == want[3:43]
    assert store.query_logs(query, 0, 0) == ([], len(want))  # a count alone


def test_detail_of_rows_in_every_page_and_a_retried_batch_adds_nothing(store, logged):
    for i in (1, 601, 1201):
        row = store.get_log(f"row-{i:05d}")
        assert row["id"] == f"row-{i:05d}" and row["request_body"] == f'{{"n": {i}}}'
        assert row["at"] == T0 + 3000 + i and row["key_id"] == f"k{i % 4:04d}"
    assert store.get_log("row-00002")["request_body"] is None
    store.record_usage(list(reversed(logged)))  # the same batch again (a retry after an unknown outcome)
    assert store.query_logs(LogQuery(), 0, 0)[1] == N
    assert sum(k.request_count for k in store.list_keys("g1")) == len([e for e in logged if e.group == "g1"])


def test_purge_keeps_exactly_the_newer_rows(store, logged):
    store.purge_logs(T0 + 3600 + 100)
    rows, total = store.query_logs(LogQuery(), 0, 2000)
    assert total == N - 700 and [r["id"] for r in rows] == _expected(logged, lambda e: e.at >= T0 + 3700)
    assert store.get_log("row-00001") is None and store.get_log("row-00700")["id"] == "row-00700"


def test_what_the_log_list_reads(store, logged):
    """The costs docs/firestore.md states for log pages (Firestore; SQLite answers the same and bills nothing): the
    default view reads its pages only, a filter on a value no page carries reads nothing but the empty query, the
    detail view one page."""
    reads = _reads(store)
    assert len(store.query_logs(LogQuery(), 0, 50)[0]) == 50
    # the sum(count) aggregation + the 2 pages of the newest hour (both groups) + 1 to see that the next is older
    assert reads() <= 1 + 2 + 1
    assert store.query_logs(LogQuery(key_id="no-such-key"), 0, 50) == ([], 0)
    one = 1 if store.kind == "firestore" else 0
    assert reads() == one  # an empty query is billed one read
    assert store.get_log("row-00601")["id"] == "row-00601"
    assert reads() == one


def _reads(store):
    """A function returning the billed reads since its last call (always 0 on SQLite)."""
    if store.kind != "firestore":
        return lambda: 0
    from tests.firestore_support import CallCounter

    counter = CallCounter(store)

    def since_last() -> int:
        n = counter.snapshot()[1]
        counter.reset()
        return n

    return since_last


@pytest.mark.parametrize("logged", [False, True], ids=["no-log-rows", "log-rows"])
def test_a_retried_batch_is_counted_once_with_or_without_log_rows(store, logged):
    """The batch marker is the first log page of a commit, or a usage_batches document when nothing is logged
    (log_failures_only and no failure): a retry is recognised either way."""
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 1), {})
    batch = [UsageEvent("g1", "k0000", T0 + i, True, logged=logged, id=f"r{i}") for i in range(5)]
    store.record_usage(batch)
    store.record_usage(batch[::-1])
    assert store.list_keys("g1")[0].request_count == 5
    assert store.group_totals(0)["g1"]["requests"] == 5
    assert store.query_logs(LogQuery(), 0, 10)[1] == (5 if logged else 0)
