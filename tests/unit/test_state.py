from __future__ import annotations

from datetime import datetime

from gptload.keypool.classify import SUCCESS, Kind, Verdict, network_error
from gptload.keypool.state import (
    PACIFIC,
    Policy,
    changes_state,
    condemned_by_key_evidence,
    disabled,
    enabled,
    next_daily_reset,
    restored,
    transition,
)
from gptload.models import ACTIVE, ANY_MODEL, COOLING, DISABLED, INVALID, CoolDown, KeyState

P = Policy(blacklist_threshold=3, bare_429_cooldown_seconds=10, default_quota_cooldown_seconds=60)
NOW = datetime(2026, 3, 10, 15, 30, tzinfo=PACIFIC).timestamp()


def test_invalid_key_is_disabled_at_once():
    s = transition(KeyState(), Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m", NOW, P)
    assert s.status == INVALID and s.last_error == "400 API_KEY_INVALID"
    assert s.display_status(NOW) == INVALID and not s.can_serve("m", NOW)


def test_per_minute_quota_cools_only_that_model_for_the_retry_delay():
    s = transition(KeyState(), Verdict(Kind.QUOTA_MINUTE, "429", 26.0, "gemini-2.5-flash"), "gemini-2.5-flash", NOW, P)
    assert s.status == ACTIVE and s.display_status(NOW) == COOLING
    assert not s.can_serve("gemini-2.5-flash", NOW + 25.9)
    assert s.can_serve("gemini-2.5-flash", NOW + 26)
    assert s.can_serve("gemini-2.5-pro", NOW)
    assert s.failure_count == 0


def test_per_minute_quota_without_delay_uses_the_default():
    s = transition(KeyState(), Verdict(Kind.QUOTA_MINUTE, "429"), "m", NOW, P)
    assert s.cooldowns == (CoolDown("m", NOW + 60, "429"),)


def test_per_day_quota_lasts_until_midnight_pacific():
    s = transition(KeyState(), Verdict(Kind.QUOTA_DAY, "429 day", None, "gemini-2.5-pro"), "gemini-2.5-pro", NOW, P)
    midnight = datetime(2026, 3, 11, 0, 0, tzinfo=PACIFIC).timestamp()
    assert s.cooldowns[0].until == midnight
    assert s.can_serve("gemini-2.5-flash", NOW)


def test_daily_reset_across_dst_change():
    before_dst = datetime(2026, 3, 7, 23, 0, tzinfo=PACIFIC).timestamp()  # DST starts 2026-03-08
    assert next_daily_reset(before_dst) == datetime(2026, 3, 8, 0, 0, tzinfo=PACIFIC).timestamp()
    day = datetime(2026, 3, 8, 12, 0, tzinfo=PACIFIC).timestamp()
    assert next_daily_reset(day) - datetime(2026, 3, 8, 0, 0, tzinfo=PACIFIC).timestamp() == 23 * 3600


def test_bare_429_is_short_and_never_counted():
    s = KeyState()
    for _ in range(5):
        s = transition(s, Verdict(Kind.QUOTA_BARE, "429"), "m", NOW, P)
    assert s.status == ACTIVE and s.failure_count == 0
    assert s.cooldowns == (CoolDown("m", NOW + 10, "429"),)


def test_a_quota_without_any_model_blocks_every_model():
    s = transition(KeyState(), Verdict(Kind.QUOTA_BARE, "429"), "", NOW, P)
    assert s.cooldowns[0].model == ANY_MODEL
    assert not s.can_serve("anything", NOW)


def test_longer_cooldown_is_not_shortened():
    s = transition(KeyState(), Verdict(Kind.QUOTA_DAY, "day"), "m", NOW, P)
    s2 = transition(s, Verdict(Kind.QUOTA_BARE, "bare"), "m", NOW, P)
    assert s2.cooldowns[0].until == s.cooldowns[0].until


def test_an_outage_never_counts_against_a_key():
    """A 5xx, timeout or connect error on its own says nothing about the key: any number of them change nothing."""
    s = KeyState()
    for v in (Verdict(Kind.TRANSIENT, "503 UNAVAILABLE"), network_error(TimeoutError()), network_error(OSError())):
        for _ in range(10):
            assert transition(s, v, "m", NOW, P) is s
            assert not changes_state(s, v, "m", NOW)


def test_isolated_failures_reach_the_threshold_and_success_resets():
    """A key that fails while another key then serves the same request is counted; at the threshold it is disabled
    as *failing*, which is not key evidence (maintenance re-probes it every round)."""
    t = Verdict(Kind.TRANSIENT, "503 UNAVAILABLE", isolated=True)
    s = transition(transition(KeyState(), t, "m", NOW, P), t, "m", NOW, P)
    assert s.failure_count == 2 and s.status == ACTIVE
    s = transition(s, SUCCESS, "m", NOW, P)
    assert s.failure_count == 0
    for _ in range(3):
        s = transition(s, t, "m", NOW, P)
    assert s.status == INVALID and s.failure_count == 3
    assert s.last_error.startswith("failing: 3 failures") and not condemned_by_key_evidence(s)
    bad = transition(KeyState(), Verdict(Kind.KEY_INVALID, "403 CONSUMER_SUSPENDED"), "m", NOW, P)
    assert condemned_by_key_evidence(bad)
    # an older version disabled keys on outages: such a key is not condemned by key evidence either
    assert not condemned_by_key_evidence(
        KeyState(status=INVALID, last_error="503 UNAVAILABLE The model is overloaded.")
    )


def test_request_errors_change_nothing():
    s = KeyState(failure_count=2)
    assert transition(s, Verdict(Kind.REQUEST_ERROR, "400"), "m", NOW, P) is s
    assert not changes_state(s, Verdict(Kind.REQUEST_ERROR, "400"), "m", NOW)


def test_success_drops_only_the_served_models_cooldown_and_expired_ones():
    s = KeyState(cooldowns=(CoolDown("a", NOW + 5, "x"), CoolDown("b", NOW + 5, "x"), CoolDown("c", NOW - 1, "x")))
    assert transition(s, SUCCESS, "a", NOW, P).cooldowns == (CoolDown("b", NOW + 5, "x"),)


def test_changes_state_skips_steady_success():
    assert not changes_state(KeyState(), SUCCESS, "m", NOW)
    assert changes_state(KeyState(failure_count=1), SUCCESS, "m", NOW)
    assert not changes_state(KeyState(), Verdict(Kind.TRANSIENT), "m", NOW)
    assert changes_state(KeyState(), Verdict(Kind.TRANSIENT, isolated=True), "m", NOW)


def test_restore_clears_everything():
    s = KeyState(status=INVALID, cooldowns=(CoolDown("a", NOW + 5, "x"),), failure_count=4, last_error="e")
    assert restored(s) == KeyState()


def test_last_error_never_holds_a_key():
    secret = "AIza" + "x" * 35
    s = transition(KeyState(), Verdict(Kind.KEY_INVALID, f"403 Consumer api_key:{secret} suspended"), "m", NOW, P)
    assert secret not in s.last_error and "AIza...xxxx" in s.last_error


# -- disabled: an admin's decision, undone only by an admin -----------------------------------------------------
def _every_verdict() -> list[Verdict]:
    return [
        SUCCESS,
        Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"),
        Verdict(Kind.QUOTA_DAY, "429 day", model="m"),
        Verdict(Kind.QUOTA_MINUTE, "429 minute", 5.0, "m"),
        Verdict(Kind.QUOTA_BARE, "429"),
        Verdict(Kind.TRANSIENT, "503", isolated=True),
        network_error(TimeoutError("timed out")),
    ]


def test_a_disabled_key_serves_nothing_and_no_verdict_changes_it():
    key = disabled(KeyState(last_error="429 minute", last_error_at=NOW - 5, failure_count=2))
    assert key.status == DISABLED and key.display_status(NOW) == DISABLED
    assert key.last_error == "429 minute" and key.last_error_at == NOW - 5  # the reason it was disabled stays
    assert key.failure_count == 0 and key.cooldowns == ()
    assert not key.can_serve("m", NOW) and not key.can_serve("other", NOW)
    for verdict in _every_verdict():
        assert transition(key, verdict, "m", NOW, P) == key
        assert not changes_state(key, verdict, "m", NOW)


def test_restore_and_successful_validation_leave_a_disabled_key_disabled():
    key = disabled(transition(KeyState(), Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m", NOW, P))
    assert restored(key) == key and not condemned_by_key_evidence(key)


def test_only_enable_brings_a_disabled_key_back_and_enable_is_no_restore():
    key = disabled(KeyState(cooldowns=(CoolDown("m", NOW + 60, "429"),)))
    back = enabled(key)
    assert back.status == ACTIVE and back.cooldowns == () and back.can_serve("m", NOW)
    invalid = transition(KeyState(), Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m", NOW, P)
    assert enabled(invalid) == invalid  # enabling an invalid key is not a restore
    assert enabled(KeyState()) == KeyState()


def test_errors_carry_their_time_and_a_daily_quota_is_marked():
    s = transition(KeyState(), Verdict(Kind.TRANSIENT, "503", isolated=True), "m", NOW, P)
    assert s.last_error == "503" and s.last_error_at == NOW
    day = transition(KeyState(), Verdict(Kind.QUOTA_DAY, "429 day", model="m"), "m", NOW + 1, P)
    (cool,) = day.cooldowns
    assert cool.daily and cool.until == next_daily_reset(NOW + 1) and day.last_error_at == NOW + 1
    minute = transition(KeyState(), Verdict(Kind.QUOTA_MINUTE, "429", 5.0, "m"), "m", NOW, P)
    assert not minute.cooldowns[0].daily
    # a per-minute 429 while the day's quota is out keeps the longer, daily, cooldown
    again = transition(day, Verdict(Kind.QUOTA_MINUTE, "429", 5.0, "m"), "m", NOW + 2, P)
    assert again.cooldowns[0].daily and again.cooldowns[0].until == cool.until
