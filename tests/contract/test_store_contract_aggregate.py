"""Aggregate groups on every store: the group's type and members round-trip, and usage through an aggregate is
counted once, under the member that served it, with the aggregate named on its log rows."""

from __future__ import annotations

from gptload.models import AGGREGATE, STANDARD, Group, LogQuery, SubGroup
from tests.contract.test_store_contract import group, records
from tests.contract.test_store_contract_usage import HOUR, T0, ev


def test_aggregate_type_and_members_round_trip(store):
    store.create_group(group("a"))
    store.create_group(
        Group(
            "agg",
            (),
            display_name="All",
            proxy_keys=("proxy-key-agg",),
            group_type=AGGREGATE,
            sub_groups=(SubGroup("a", 3), SubGroup("b", 0)),
        )
    )
    got = store.get_group("agg")
    assert got.is_aggregate and got.upstreams == () and got.proxy_keys == ("proxy-key-agg",)
    assert got.sub_groups == (SubGroup("a", 3), SubGroup("b", 0))
    assert store.get_group("a").group_type == STANDARD and store.get_group("a").sub_groups == ()
    store.update_group(Group.from_dict({**got.to_dict(), "sub_groups": [{"name": "a", "weight": 1000}]}))
    assert store.get_group("agg").sub_groups == (SubGroup("a", 1000),)
    assert {g.name: g.group_type for g in store.list_groups()} == {"a": STANDARD, "agg": AGGREGATE}


def test_usage_through_an_aggregate_counts_once_under_the_member(store):
    store.create_group(group("a"))
    store.create_group(group("b"))
    store.create_group(Group("agg", (), group_type=AGGREGATE, sub_groups=(SubGroup("a"), SubGroup("b"))))
    store.add_keys("a", records("a", 1), {})
    store.add_keys("b", records("b", 1), {})
    store.record_usage(
        [
            # one request: a's key failed (retried on b), b's key served it
            ev(1, group="a", aggregate="agg", success=False, status_code=429, final=False, id="log-1"),
            ev(2, group="b", aggregate="agg", attempt=2, total_tokens=5, id="log-2"),
            # one request refused before any member was tried: the aggregate's own row
            ev(3, group="agg", aggregate="agg", key_id="", success=False, status_code=503, id="log-3"),
            # one request straight to b
            ev(4, group="b", total_tokens=1, id="log-4"),
        ]
    )
    totals = store.group_totals(T0)
    assert totals["a"]["requests"] == 0 and totals["b"]["requests"] == 2 and totals["agg"]["requests"] == 1
    # a's failed attempt is no request of a's, but it is counted where it happened: a failed attempt and a retry
    assert (totals["a"]["failed_attempts"], totals["a"]["retries"]) == (1, 1)
    assert (totals["agg"]["refused"], totals["b"]["failed_attempts"]) == (1, 0)
    assert sum(t["requests"] for t in totals.values()) == 3  # three client requests, whatever the route
    assert sum(row["requests"] for row in store.hourly_stats(None, T0 - HOUR)) == 3
    assert store.list_keys("a")[0].failure_total == 1 and store.list_keys("b")[0].request_count == 2
    rows, _ = store.query_logs(LogQuery(), 0, 10)
    assert {r["id"]: (r["group"], r["aggregate"]) for r in rows} == {
        "log-1": ("a", "agg"),
        "log-2": ("b", "agg"),
        "log-3": ("agg", "agg"),
        "log-4": ("b", ""),
    }
    assert store.get_log("log-2")["aggregate"] == "agg"
