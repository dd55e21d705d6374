"""The circuit breaker's rules, with time and jitter passed in."""

from __future__ import annotations

import pytest

from gptload.keypool.breaker import CLOSED, HALF_OPEN, OPEN, Breakers

K = ("g", "http://up", "gemini-2.5-pro")


def make(**kw) -> Breakers:
    return Breakers(threshold=3, base=0.5, cap=60.0, jitter=0.1, rng=lambda: 0.5, **kw)


def test_one_request_failing_on_every_key_does_not_open_it():
    b = make()
    for _ in range(10):
        assert not b.failure(K, 0.0, witness=1)
    assert b.admit(K, 0.0).allowed
    assert b.state(K, 0.0)[0] == CLOSED


def test_consecutive_failures_from_two_requests_open_it_for_the_base_period():
    b = make()
    b.failure(K, 0.0, 1)
    b.failure(K, 0.0, 1)
    assert b.failure(K, 0.0, 2, "503 UNAVAILABLE")
    refused = b.admit(K, 0.1)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.4)
    assert b.state(K, 0.1) == (OPEN, pytest.approx(0.4), "503 UNAVAILABLE")
    # other models and other upstreams are not affected
    assert b.admit(("g", "http://up", "gemini-2.5-flash"), 0.1).allowed
    assert b.admit(("g", "http://other", "gemini-2.5-pro"), 0.1).allowed


def test_an_answer_in_between_resets_the_count():
    b = make()
    b.failure(K, 0.0, 1)
    b.failure(K, 0.0, 2)
    b.success(K)
    assert not b.failure(K, 0.0, 3)
    assert b.admit(K, 0.0).allowed


def opened(b: Breakers, now: float = 0.0) -> None:
    for rid in (1, 2, 3):
        b.failure(K, now, rid)


def test_one_probe_per_period_and_backoff_doubles_to_the_cap():
    b = make()
    opened(b)
    now, periods = 0.0, []
    for _ in range(10):
        closed_until = now + b.state(K, now)[1]
        periods.append(round(closed_until - now, 3))
        now = closed_until
        probe = b.admit(K, now)
        assert probe.allowed and probe.probe
        assert b.state(K, now)[0] == HALF_OPEN
        waiting = b.admit(K, now)  # while the probe runs, nobody else goes through
        assert not waiting.allowed and waiting.retry_after >= 1.0
        assert b.failure(K, now, 99)  # the probe failed: open again, longer
    assert periods == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_a_successful_probe_closes_it_and_resets_the_backoff():
    b = make()
    opened(b)
    assert b.admit(K, 0.5).probe
    b.success(K)
    assert b.state(K, 0.5)[0] == CLOSED and b.admit(K, 0.5).allowed
    opened(b, 1.0)
    assert b.state(K, 1.0)[1] == pytest.approx(0.5)  # back to the base period


def test_jitter_spreads_periods_within_its_bounds():
    lo = Breakers(base=10, jitter=0.1, rng=lambda: 0.0)
    hi = Breakers(base=10, jitter=0.1, rng=lambda: 0.999999)
    for b in (lo, hi):
        opened(b)
    assert lo.state(K, 0.0)[1] == pytest.approx(9.0)
    assert hi.state(K, 0.0)[1] == pytest.approx(11.0, abs=1e-4)


def test_a_stuck_probe_frees_its_slot_after_the_probe_timeout():
    b = make(probe_timeout=5.0)
    opened(b)
    assert b.admit(K, 0.5).probe
    assert not b.admit(K, 4.0).allowed
    assert b.admit(K, 5.6).probe


def test_failures_of_requests_admitted_before_it_opened_keep_the_period():
    b = make()
    opened(b)
    until = b.state(K, 0.0)[1]
    assert not b.failure(K, 0.2, 7)
    assert b.state(K, 0.0)[1] == until


def test_open_circuits_lists_what_is_not_closed():
    b = make()
    opened(b)
    (row,) = b.open_circuits(0.0)
    assert row["group"] == "g" and row["model"] == "gemini-2.5-pro" and row["state"] == OPEN


def test_client_chosen_models_cannot_grow_the_circuits_without_bound():
    # The model is the client's (an OpenAI body's "model", up to 4 MiB): during an outage every new name would
    # add a circuit kept for ever (and an open one is a /metrics series and a dashboard line for ever).
    b = make(max_circuits=50)
    for i in range(500):
        for witness in (1, 2, 1):
            b.failure(("g", "u", f"m{i}-" + "x" * 5000), float(i), witness)
    circuits = b.open_circuits(500.0)
    assert 0 < len(circuits) <= 50 and all(len(str(c["model"])) <= 200 for c in circuits)
    assert b.failure(("g", "u", "m1-" + "x" * 5000), 500.0, 1) is False  # no error once the table is full
    # a real outage of one model is still seen after the table filled up with stale circuits
    for witness in (7, 8, 7):
        b.failure(("g", "u", "gemini-2.5-pro"), 10_000.0, witness)
    assert b.state(("g", "u", "gemini-2.5-pro"), 10_000.0)[0] == OPEN
