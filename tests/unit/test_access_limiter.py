"""The access limiter and rules: pure code, time passed in as ``now`` (an injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gptload.access import rules
from gptload.access.limiter import QUOTA_EXCEEDED, RATE_LIMITED, Limiter, RateWindow, share
from gptload.models import AccessKey

T0 = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC).timestamp()
DAY = rules.day_start(T0, UTC)
RESET = rules.next_reset(T0, UTC)


def key(**kw) -> AccessKey:
    return AccessKey(id=kw.pop("id", "ak_1"), name="client", digest="00", masked="sk-...", **kw)


def admit(limiter: Limiter, k: AccessKey, now: float, instances: int = 1):
    return limiter.admit(k, now, instances=instances, day=DAY, reset_at=RESET)


# -- rate window ----------------------------------------------------------------------------------------------
def test_window_admits_the_limit_then_refuses_until_the_oldest_second_leaves():
    w = RateWindow()
    for i in range(10):
        assert w.try_admit(T0 + 0.9 + i * 0.5, 10) is None  # T0 is a whole second: the first two share a slot
    wait = w.try_admit(T0 + 5.0, 10)
    assert wait == pytest.approx(56.0)  # the slot of T0 + 0.9 leaves once all of it is over 60 s old: T0 + 61
    assert w.try_admit(T0 + 60.95, 10) is not None  # 60.05 s after the first request: still inside
    assert w.try_admit(T0 + 61.0, 10) is None  # the request at T0 + 0.9 left (T0 + 1.4 is in the next slot)
    assert w.count(T0 + 61.0) == 10


def test_refused_requests_take_no_place_in_the_window():
    w = RateWindow()
    assert w.try_admit(T0, 1) is None
    for i in range(100):
        assert w.try_admit(T0 + 1 + i * 0.1, 1) is not None
    assert w.try_admit(T0 + 61, 1) is None


@pytest.mark.parametrize("offset", [0.0, 0.3, 0.97])
def test_a_sustained_hammer_gets_exactly_the_limit_in_every_60_s_window(offset):
    w = RateWindow()
    admitted: list[int] = []  # steps of 50 ms (integers: no float rounding at the minute edges)
    for step in range(180 * 20):  # 20 requests per second for 3 minutes, starting anywhere within a second
        if w.try_admit(T0 + offset + step * 0.05, 60) is None:
            admitted.append(step)
    assert [sum(1 for s in admitted if s // 1200 == m) for m in range(3)] == [60, 60, 60]
    assert max(sum(1 for u in admitted if s <= u < s + 1200) for s in admitted) == 60


def test_the_window_keeps_at_most_sixty_slots_whatever_the_limit():
    w = RateWindow()
    for step in range(6000):
        w.try_admit(T0 + step * 0.05, 10**9)
    assert len(w._slots) <= 62


def test_share_of_the_limit_per_live_instance_is_at_least_one():
    assert share(60, 3) == 20
    assert share(60, 0) == 60
    assert share(2, 3) == 1


# -- limiter --------------------------------------------------------------------------------------------------
def test_an_unlimited_key_is_always_admitted():
    limiter = Limiter()
    assert all(admit(limiter, key(), T0 + i * 0.001) is None for i in range(1000))


def test_rpm_share_shrinks_with_the_live_instances():
    limiter = Limiter()
    k = key(rpm_limit=60)
    results = [admit(limiter, k, T0 + i * 0.01, instances=3) for i in range(30)]
    assert results[:20] == [None] * 20
    refusal = results[20]
    assert refusal is not None and refusal.reason == RATE_LIMITED
    assert 60 <= refusal.retry_after <= 61
    assert "60 requests per minute" in refusal.message


def test_daily_request_limit_counts_synced_and_local_usage_and_resets_with_the_day():
    limiter = Limiter()
    k = key(daily_request_limit=100)
    limiter.synced(k.id, DAY, requests=95, tokens=0)
    assert [admit(limiter, k, T0 + i) for i in range(5)] == [None] * 5
    refusal = admit(limiter, k, T0 + 10)
    assert refusal is not None and refusal.reason == QUOTA_EXCEEDED
    assert refusal.retry_after == pytest.approx(RESET - (T0 + 10))
    # a new reading from the store replaces the synced figure; the local count starts again
    limiter.synced(k.id, DAY, requests=99, tokens=0)
    assert admit(limiter, k, T0 + 11) is None
    assert admit(limiter, k, T0 + 12) is not None
    # the next day starts at zero
    tomorrow = limiter.admit(k, RESET + 1, instances=1, day=RESET, reset_at=RESET + 86400)
    assert tomorrow is None
    assert limiter.used_today(k.id, RESET) == (1, 0)


def test_a_late_reading_of_yesterday_does_not_overwrite_today():
    limiter = Limiter()
    k = key(daily_request_limit=10)
    assert limiter.admit(k, RESET + 1, instances=1, day=RESET, reset_at=RESET + 86400) is None
    limiter.synced(k.id, DAY, requests=10, tokens=0)  # yesterday's figure, read late
    assert limiter.used_today(k.id, RESET) == (1, 0)


def test_daily_token_limit_uses_the_flushed_tokens():
    limiter = Limiter()
    k = key(daily_token_limit=1000)
    assert admit(limiter, k, T0) is None
    limiter.synced(k.id, DAY, requests=1, tokens=1000)
    refusal = admit(limiter, k, T0 + 1)
    assert refusal is not None and refusal.reason == QUOTA_EXCEEDED and "1000 tokens" in refusal.message


def test_a_quota_refusal_does_not_use_up_the_rate_window():
    limiter = Limiter()
    k = key(rpm_limit=1, daily_request_limit=1)
    assert admit(limiter, k, T0) is None
    assert admit(limiter, k, T0 + 1).reason == QUOTA_EXCEEDED
    limiter.synced(k.id, DAY, requests=0, tokens=0)  # e.g. an operator raised the budget meanwhile
    assert admit(limiter, k, T0 + 2).reason == RATE_LIMITED


def test_forget_drops_deleted_keys():
    limiter = Limiter()
    a, b = key(id="a", rpm_limit=1), key(id="b", rpm_limit=1)
    admit(limiter, a, T0)
    admit(limiter, b, T0)
    limiter.forget({"b"})
    assert admit(limiter, a, T0 + 1) is None
    assert admit(limiter, b, T0 + 1) is not None


# -- rules ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("patterns", "model", "allowed"),
    [
        ((), "gemini-2.5-pro", True),
        (("gemini-2.5-flash",), "gemini-2.5-flash", True),
        (("gemini-2.5-flash",), "models/gemini-2.5-flash", True),
        (("gemini-2.5-flash",), "gemini-2.5-flash-lite", False),
        (("gemini-2.5-flash*",), "gemini-2.5-flash-lite", True),
        (("models/gemini-2.5*",), "gemini-2.5-pro", True),
        (("gemini-2.5*",), "gemini-2.0-flash", False),
        (("gemini-2.5-flash",), "", True),  # a request naming no model (uploads, list models)
        (("text-embedding*", "gemini-2.5-flash"), "text-embedding-004", True),
    ],
)
def test_model_globs(patterns, model, allowed):
    assert rules.model_allowed(patterns, model) is allowed


def test_groups():
    assert rules.group_allowed(key(), "any")
    scoped = key(groups=("a", "b"))
    assert rules.group_allowed(scoped, "a") and not rules.group_allowed(scoped, "c")
    assert rules.allowed_groups(scoped, ["c", "b", "a"]) == ["b", "a"]


def test_days_in_utc_and_in_a_named_zone():
    assert datetime.fromtimestamp(DAY, UTC) == datetime(2026, 3, 10, tzinfo=UTC)
    assert datetime.fromtimestamp(RESET, UTC) == datetime(2026, 3, 11, tzinfo=UTC)
    berlin = rules.zone("Europe/Berlin")
    assert datetime.fromtimestamp(rules.day_start(T0, berlin), UTC) == datetime(2026, 3, 9, 23, tzinfo=UTC)
    # the night DST starts in Berlin (2026-03-29): that day is 23 hours long
    before = datetime(2026, 3, 29, 12, tzinfo=UTC).timestamp()
    assert rules.next_reset(before, berlin) - rules.day_start(before, berlin) == 23 * 3600
    kolkata = rules.zone("Asia/Kolkata")
    assert datetime.fromtimestamp(rules.next_reset(T0, kolkata), UTC) == datetime(2026, 3, 10, 18, 30, tzinfo=UTC)


def test_unknown_zone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        rules.zone("Mars/Olympus")
