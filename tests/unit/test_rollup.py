"""The usage roll-up both stores write out: plain events in, plain sums out."""

from __future__ import annotations

from gptload.models import UsageEvent
from gptload.store.rollup import STAT_FIELDS, AccessStats, HourStats, KeyUsage, Rollup, hour_of, minute_of, rollup

HOUR0 = 1_800_000_000.0  # a whole hour (1_800_000_000 = 500_000 * 3600)


def ev(group="g", key_id="k1", at=HOUR0 + 10, success=True, **kw) -> UsageEvent:
    return UsageEvent(group=group, key_id=key_id, at=at, success=success, **kw)


def test_empty_batch():
    assert rollup([]) == Rollup({}, {}, {}, ())


def test_hour_and_minute_edges():
    assert HOUR0 % 3600 == 0
    assert hour_of(HOUR0) == HOUR0
    assert hour_of(HOUR0 + 3599.999) == HOUR0
    assert hour_of(HOUR0 + 3600) == HOUR0 + 3600
    assert hour_of(HOUR0 - 0.001) == HOUR0 - 3600
    assert minute_of(HOUR0 + 59.999) == HOUR0
    assert minute_of(HOUR0 + 60) == HOUR0 + 60
    assert minute_of(HOUR0 - 0.5) == HOUR0 - 60


def test_one_success():
    r = rollup([ev(prompt_tokens=3, candidates_tokens=4, total_tokens=7)])
    assert r.keys == {("g", "k1"): KeyUsage(requests=1, failures=0, last_used_at=HOUR0 + 10, tokens=7)}
    assert r.hours == {("g", HOUR0): HourStats(1, 0, 3, 4, 7)}
    assert r.minutes == {("g", HOUR0): 1}


def test_retried_attempts_count_per_key_but_only_the_final_one_per_hour_and_minute():
    events = [
        ev(key_id="k1", at=HOUR0 + 1, success=False, attempt=1, final=False, status_code=503),
        ev(key_id="k2", at=HOUR0 + 2, success=False, attempt=2, final=False, status_code=429),
        ev(key_id="k3", at=HOUR0 + 3, success=True, attempt=3, final=True, total_tokens=5, prompt_tokens=5),
    ]
    r = rollup(events)
    assert r.keys == {
        ("g", "k1"): KeyUsage(1, 1, HOUR0 + 1, 0),
        ("g", "k2"): KeyUsage(1, 1, HOUR0 + 2, 0),
        ("g", "k3"): KeyUsage(1, 0, HOUR0 + 3, 5),
    }
    # the two retried attempts count apart: retries and failed upstream attempts, never as requests
    assert r.hours == {("g", HOUR0): HourStats(1, 0, 5, 0, 5, retries=2, failed_attempts=2)}
    assert r.minutes == {("g", HOUR0): 1}


def test_final_failure_counts_as_a_failed_request():
    r = rollup([ev(success=False, final=True, status_code=500)])
    assert r.keys[("g", "k1")] == KeyUsage(1, 1, HOUR0 + 10, 0)
    assert r.hours[("g", HOUR0)] == HourStats(requests=1, failures=1, failed_attempts=1)


def test_per_key_sums_and_latest_use_whatever_the_order():
    events = [
        ev(at=HOUR0 + 50, total_tokens=10),
        ev(at=HOUR0 + 20, success=False, total_tokens=1),
        ev(at=HOUR0 + 30, total_tokens=100),
    ]
    assert rollup(events).keys == {("g", "k1"): KeyUsage(3, 1, HOUR0 + 50, 111)}


def test_same_key_id_in_two_groups_is_two_keys():
    r = rollup([ev(group="a"), ev(group="b"), ev(group="a")])
    assert r.keys == {("a", "k1"): KeyUsage(2, 0, HOUR0 + 10, 0), ("b", "k1"): KeyUsage(1, 0, HOUR0 + 10, 0)}
    assert r.hours == {("a", HOUR0): HourStats(2), ("b", HOUR0): HourStats(1)}


def test_events_are_bucketed_by_hour_and_minute_at_the_edges():
    events = [
        ev(at=HOUR0 - 0.5, total_tokens=1),  # last minute of the previous hour
        ev(at=HOUR0, total_tokens=2),  # first second of the hour
        ev(at=HOUR0 + 59.9, total_tokens=4),
        ev(at=HOUR0 + 60, total_tokens=8),
        ev(at=HOUR0 + 3600, total_tokens=16),
    ]
    r = rollup(events)
    assert r.hours == {
        ("g", HOUR0 - 3600): HourStats(1, 0, 0, 0, 1),
        ("g", HOUR0): HourStats(3, 0, 0, 0, 14),
        ("g", HOUR0 + 3600): HourStats(1, 0, 0, 0, 16),
    }
    assert r.minutes == {
        ("g", HOUR0 - 60): 1,
        ("g", HOUR0): 2,
        ("g", HOUR0 + 60): 1,
        ("g", HOUR0 + 3600): 1,
    }


def test_requests_refused_before_any_key_count_for_the_group_only():
    refused = ev(key_id="", success=False, status_code=503, error="NO_KEYS_AVAILABLE")
    r = rollup([refused, ev(key_id="k1")])
    assert r.keys == {("g", "k1"): KeyUsage(1, 0, HOUR0 + 10, 0)}
    assert r.hours == {("g", HOUR0): HourStats(requests=2, failures=1, refused=1)}
    assert r.minutes == {("g", HOUR0): 2}
    assert r.logged == (refused, ev(key_id="k1"))


def test_logged_keeps_only_logged_events_in_batch_order():
    a = ev(id="a", logged=False)
    b = ev(id="b", success=False, final=False)
    c = ev(id="c", key_id="")
    d = ev(id="d", logged=False, final=False)
    r = rollup([a, b, c, d])
    assert r.logged == (b, c)
    # whether an event is logged changes none of the counters
    assert r.keys[("g", "k1")] == KeyUsage(3, 1, HOUR0 + 10, 0)
    assert r.hours[("g", HOUR0)] == HourStats(2, retries=2, failed_attempts=1, refused=1)


def test_mappings_keep_first_appearance_order():
    r = rollup([ev(group="b", key_id="x"), ev(group="a", key_id="y"), ev(group="b", key_id="z")])
    assert list(r.keys) == [("b", "x"), ("a", "y"), ("b", "z")]
    assert list(r.hours) == [("b", HOUR0), ("a", HOUR0)]


def test_hour_values_follow_stat_fields():
    stats = HourStats(1, 2, 3, 4, 5, 6, 7, 8)
    assert dict(zip(STAT_FIELDS, stats.values(), strict=True)) == {
        "requests": 1,
        "failures": 2,
        "prompt_tokens": 3,
        "candidates_tokens": 4,
        "total_tokens": 5,
        "retries": 6,
        "failed_attempts": 7,
        "refused": 8,
    }


def test_a_refused_request_after_failed_attempts_is_no_refusal():
    """Attempts that reached Google and then "no key available": failed attempts, not a request refused before
    reaching Google (the trace writes no keyless row then)."""
    events = [
        ev(key_id="k1", success=False, attempt=1, final=False, status_code=429),
        ev(key_id="k2", success=False, attempt=2, final=True, status_code=429),
    ]
    assert rollup(events).hours[("g", HOUR0)] == HourStats(requests=1, failures=1, retries=1, failed_attempts=2)


def test_an_hour_with_retries_only_still_gets_a_bucket():
    r = rollup([ev(at=HOUR0 + 3599, success=False, final=False), ev(at=HOUR0 + 3600, final=True)])
    assert r.hours == {
        ("g", HOUR0): HourStats(retries=1, failed_attempts=1),
        ("g", HOUR0 + 3600): HourStats(requests=1),
    }
    assert r.minutes == {("g", HOUR0 + 3600): 1}


def test_access_keys_count_final_attempts_per_hour_with_refusals_tokens_and_last_use():
    events = [
        ev(key_id="k1", at=HOUR0 + 5, success=False, final=False, access_key="ak1", status_code=503),
        ev(
            key_id="k2",
            at=HOUR0 + 9,
            final=True,
            access_key="ak1",
            prompt_tokens=2,
            candidates_tokens=3,
            total_tokens=5,
        ),
        ev(key_id="", at=HOUR0 + 7, success=False, final=True, access_key="ak1", refused=True, status_code=429),
        ev(key_id="k1", at=HOUR0 + 3600, final=True, access_key="ak1", total_tokens=1),
        ev(key_id="k1", at=HOUR0 + 1, final=True, total_tokens=4),  # a legacy proxy key: "anonymous"
    ]
    r = rollup(events)
    assert r.access == {
        ("ak1", HOUR0): AccessStats(
            requests=2,
            failures=1,
            refused=1,
            prompt_tokens=2,
            candidates_tokens=3,
            total_tokens=5,
            last_used_at=HOUR0 + 9,
        ),
        ("ak1", HOUR0 + 3600): AccessStats(requests=1, total_tokens=1, last_used_at=HOUR0 + 3600),
        ("anonymous", HOUR0): AccessStats(requests=1, total_tokens=4, last_used_at=HOUR0 + 1),
    }
    assert list(r.access) == [("ak1", HOUR0), ("ak1", HOUR0 + 3600), ("anonymous", HOUR0)]
