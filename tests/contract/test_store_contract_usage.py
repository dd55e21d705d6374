"""The store contract for what ``record_usage`` writes and what the console reads back: per-key counters, request
logs (filters, paging, exact totals), hourly and per-minute statistics; plus notes and tasks. Same tests on SQLite
and on the Firestore emulator."""

from __future__ import annotations

import time

from gptload.models import LOG_FIELDS, LogQuery, UsageEvent
from tests.contract.test_store_contract import NOW, group, records

HOUR = 3600.0
T0 = NOW - NOW % HOUR  # the start of an hour, so bucket arithmetic is obvious


def ev(i: int, **kw) -> UsageEvent:
    base = dict(
        group="g1",
        key_id="k0000",
        at=T0 + i,
        success=True,
        status_code=200,
        model="gemini-2.5-flash",
        method="POST",
        path="/v1beta/models/gemini-2.5-flash:generateContent",
        key_masked="AIza...0000",
        id=f"log-{int(i):05d}",
    )
    base.update(kw)
    return UsageEvent(**base)


def _logged_fixture(store) -> None:
    """20 logged attempts over two groups, keys, models, statuses and stream flags, all at distinct times."""
    store.create_group(group("g1"))
    store.create_group(group("g2"))
    store.add_keys("g1", records("g1", 2), {})
    store.add_keys("g2", records("g2", 1), {})
    events = []
    for i in range(20):
        fail = i % 4 == 3
        events.append(
            ev(
                i,
                group="g2" if i % 5 == 0 else "g1",
                key_id="k0001" if i % 2 else "k0000",
                success=not fail,
                status_code=503 if fail else 200,
                error="503 UNAVAILABLE: The model is Overloaded" if fail else "",
                model="gemini-2.5-pro" if i < 6 else "gemini-2.5-flash",
                stream=i % 3 == 0,
                request_body='{"contents": []}' if i == 7 else None,
                prompt_tokens=i,
                candidates_tokens=2 * i,
                total_tokens=3 * i,
            )
        )
    store.record_usage(events)


def test_usage_counters_are_merged_into_list_keys(store):
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 2), {})
    store.record_usage(
        [
            ev(1, total_tokens=10),
            ev(5, success=False, status_code=503, total_tokens=0),
            ev(3, key_id="k0001", total_tokens=7, logged=False),
        ]
    )
    store.record_usage([ev(2, total_tokens=5, logged=False)])
    keys = {k.id: k for k in store.list_keys("g1")}
    assert (keys["k0000"].request_count, keys["k0000"].failure_total, keys["k0000"].total_tokens) == (3, 1, 15)
    assert keys["k0000"].last_used_at == T0 + 5  # the latest, whatever the flush order
    assert (keys["k0001"].request_count, keys["k0001"].failure_total, keys["k0001"].total_tokens) == (1, 0, 7)
    assert keys["k0001"].last_used_at == T0 + 3


def test_logs_newest_first_with_exact_total_and_paging(store):
    _logged_fixture(store)
    rows, total = store.query_logs(LogQuery(), 0, 100)
    assert total == 20
    assert [r["at"] for r in rows] == [T0 + i for i in range(19, -1, -1)]
    assert set(rows[0]) == set(LOG_FIELDS)
    page, total = store.query_logs(LogQuery(), 5, 5)
    assert total == 20 and [r["id"] for r in page] == [f"log-{i:05d}" for i in (14, 13, 12, 11, 10)]
    page, total = store.query_logs(LogQuery(), 18, 5)
    assert total == 20 and [r["id"] for r in page] == ["log-00001", "log-00000"]
    assert store.query_logs(LogQuery(), 40, 5) == ([], 20)


def test_log_rows_round_trip(store):
    _logged_fixture(store)
    row = store.get_log("log-00007")
    assert row["request_body"] == '{"contents": []}'
    expected = {
        **ev(
            7,
            key_id="k0001",
            success=False,
            status_code=503,
            error="503 UNAVAILABLE: The model is Overloaded",
            prompt_tokens=7,
            candidates_tokens=14,
            total_tokens=21,
        ).log_row(),
        "request_body": '{"contents": []}',
    }
    assert row == expected
    assert isinstance(row["success"], bool) and isinstance(row["stream"], bool) and isinstance(row["final"], bool)
    assert store.get_log("log-00008")["request_body"] is None
    assert store.get_log("missing") is None


def test_log_filters(store):
    _logged_fixture(store)

    def ids(**kw):
        rows, total = store.query_logs(LogQuery(**kw), 0, 100)
        assert total == len(rows)
        return sorted(int(r["id"][4:]) for r in rows)

    assert ids(group="g2") == [0, 5, 10, 15]
    assert ids(group="g1", key_id="k0001") == [1, 3, 7, 9, 11, 13, 17, 19]
    assert ids(model="gemini-2.5-pro") == [0, 1, 2, 3, 4, 5]
    # the model filter matches a prefix (a family, or a name without its version suffix)
    assert ids(model="gemini-2.5") == list(range(20))
    assert ids(model="gemini-2.5-f", group="g2") == [10, 15]
    assert ids(model="gemini-2.5-pro-preview") == []
    assert ids(model="GEMINI") == []  # model names are matched as written
    assert ids(status_code=503) == [3, 7, 11, 15, 19]
    assert ids(success=False) == [3, 7, 11, 15, 19]
    assert ids(success=True, stream=True) == [0, 6, 9, 12, 18]
    assert ids(stream=False, group="g2") == [5, 10]
    assert ids(since=T0 + 10, until=T0 + 14) == [10, 11, 12, 13]
    assert ids(text="overloaded") == [3, 7, 11, 15, 19]
    assert ids(text="OVERLOADED", group="g1", since=T0 + 5) == [7, 11, 19]
    assert ids(text="no such words") == []
    rows, total = store.query_logs(LogQuery(text="Overloaded"), 1, 2)
    assert total == 5 and [r["id"] for r in rows] == ["log-00015", "log-00011"]


def test_only_logged_events_become_log_rows_but_all_count(store):
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 1), {})
    store.record_usage([ev(i, logged=i % 10 == 0) for i in range(30)])
    assert store.query_logs(LogQuery(), 0, 100)[1] == 3
    assert store.list_keys("g1")[0].request_count == 30
    assert store.group_totals(T0)["g1"]["requests"] == 30


def test_hourly_stats_group_totals_and_final_attempts(store):
    store.create_group(group("g1"))
    store.create_group(group("g2"))
    store.record_usage(
        [
            ev(10, prompt_tokens=1, candidates_tokens=2, total_tokens=3),
            ev(20, success=False, status_code=500, final=False, attempt=1),  # retried: not a request of its own
            ev(21, attempt=2, prompt_tokens=4, candidates_tokens=5, total_tokens=9),
            ev(HOUR + 1, group="g2", success=False, status_code=503),
            ev(2 * HOUR + 5, total_tokens=100),
        ]
    )
    store.record_usage([ev(2 * HOUR + 6, total_tokens=1)])
    assert store.hourly_stats("g1", T0) == [
        {
            "hour": T0,
            "requests": 2,
            "failures": 0,
            "prompt_tokens": 5,
            "candidates_tokens": 7,
            "total_tokens": 12,
            "retries": 1,
            "failed_attempts": 1,
            "refused": 0,
        },
        {
            "hour": T0 + 2 * HOUR,
            "requests": 2,
            "failures": 0,
            "prompt_tokens": 0,
            "candidates_tokens": 0,
            "total_tokens": 101,
            "retries": 0,
            "failed_attempts": 0,
            "refused": 0,
        },
    ]
    both = store.hourly_stats(None, T0 + HOUR)
    assert [(b["hour"], b["requests"], b["failures"]) for b in both] == [(T0 + HOUR, 1, 1), (T0 + 2 * HOUR, 2, 0)]
    assert store.hourly_stats("g2", T0 + 2 * HOUR) == []
    totals = store.group_totals(T0)
    assert totals["g1"] == {
        "requests": 4,
        "failures": 0,
        "prompt_tokens": 5,
        "candidates_tokens": 7,
        "total_tokens": 113,
        "retries": 1,
        "failed_attempts": 1,
        "refused": 0,
    }
    assert totals["g2"]["requests"] == 1 and totals["g2"]["failures"] == 1
    assert set(store.group_totals(T0 + HOUR)) == {"g1", "g2"}
    assert set(store.group_totals(T0 + 2 * HOUR)) == {"g1"}
    assert store.list_keys("g1") == []  # no keys were added: counters of unknown keys never create records


def test_requests_since_counts_final_attempts_by_minute(store):
    store.create_group(group("g1"))
    now = time.time()
    minute = now - now % 60
    store.record_usage(
        [
            ev(0, at=minute - 120),
            ev(1, at=minute - 59),
            ev(2, at=minute + 1, group="g2"),
            ev(3, at=minute + 2, final=False),
            ev(4, at=minute + 3),
        ]
    )
    assert store.requests_since(minute) == 2
    assert store.requests_since(minute - 60) == 3
    assert store.requests_since(minute - 600) == 4
    assert store.requests_since(minute, "g1") == 1
    assert store.requests_since(minute, "g2") == 1
    assert store.requests_since(minute - 600, "g1") == 3
    assert store.requests_since(minute, "nope") == 0


def test_purge_logs_deletes_older_rows(store):
    _logged_fixture(store)
    store.purge_logs(T0 + 10)
    rows, total = store.query_logs(LogQuery(), 0, 100)
    assert total == 10 and min(r["at"] for r in rows) == T0 + 10


def test_key_notes(store):
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 2), {})
    store.record_usage([ev(1)])
    m = store.markers()
    rec = store.set_key_notes("g1", "k0000", "billing account B")
    assert rec.notes == "billing account B" and rec.id == "k0000" and rec.request_count == 1
    assert {k.id: k.notes for k in store.list_keys("g1")} == {"k0000": "billing account B", "k0001": ""}
    assert store.markers() == m  # notes are not cached state
    assert store.set_key_notes("g1", "missing", "x") is None


def test_tasks_round_trip_and_replace(store):
    assert store.get_task("t-1") is None
    task = {"id": "t-1", "kind": "validate", "state": "running", "done": 0, "items": [{"k": "a"}]}
    store.put_task(task)
    assert store.get_task("t-1") == task
    store.put_task({**task, "state": "done", "done": 3})
    assert store.get_task("t-1")["state"] == "done"
    store.put_task({"id": "maintenance:g1/x", "last_validation_at": NOW})
    assert store.get_task("maintenance:g1/x") == {"id": "maintenance:g1/x", "last_validation_at": NOW}


def test_retries_failed_attempts_and_refusals_are_counted_per_hour(store):
    store.create_group(group("g1"))
    store.record_usage(
        [
            ev(1, success=False, status_code=429, final=False, attempt=1),
            ev(2, success=False, status_code=503, final=True, attempt=2),
            ev(3, key_id="", success=False, status_code=401, attempt=0),  # bad proxy key
        ]
    )
    store.record_usage([ev(4, key_id="", success=False, status_code=503, attempt=0)])  # breaker open, no key
    (bucket,) = store.hourly_stats("g1", T0)
    assert (bucket["requests"], bucket["failures"]) == (3, 3)
    assert (bucket["retries"], bucket["failed_attempts"], bucket["refused"]) == (1, 2, 2)
