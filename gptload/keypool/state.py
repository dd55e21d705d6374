"""The key state machine: ``transition(state, verdict, model, now, policy) -> KeyState``. Pure.

::

    active ──KEY_INVALID (ErrorInfo evidence)─────────────────────────▶ invalid (key evidence)
    active ──isolated TRANSIENT (failure_count reaches threshold)─────▶ invalid (failing; re-probed every
                                                                         maintenance round)
    active ──QUOTA_* ──▶ cooling(model, until)  ──time passes──▶ active
    any    ──SUCCESS──▶ failure_count = 0, the model's cooldown dropped
    invalid ──restore / successful validation──▶ active (cooldowns cleared, counters reset)
    any    ──admin disable──▶ disabled ──admin enable──▶ active

``disabled`` is an admin's decision and only an admin's: while disabled, no verdict (not a success, not key
evidence), no restore (one key or all), no validation and no maintenance round changes the key's state, and the
pool never hands it out. Only ``enabled`` brings it back.

A TRANSIENT verdict (5xx, timeout, connect error) says nothing about a key and changes nothing, unless it is
``isolated``: the same request then succeeded on another key for the same model, so this key failed where others
did not. ``blacklist_threshold`` consecutive isolated failures disable the key; any success resets the count.

Cooling is per key *and model*: a per-day quota on gemini-2.5-pro leaves the key serving gemini-2.5-flash.
``QUOTA_BARE`` cools briefly and never counts toward the threshold; ``REQUEST_ERROR`` changes nothing.
Store adapters run this function inside their per-key transaction, so every backend applies the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from gptload.keypool.classify import Kind, Verdict, is_key_evidence
from gptload.keypool.keytext import scrub
from gptload.models import ACTIVE, ANY_MODEL, DISABLED, INVALID, CoolDown, KeyState

PACIFIC = ZoneInfo("America/Los_Angeles")


@dataclass(frozen=True)
class Policy:
    blacklist_threshold: int = 3
    bare_429_cooldown_seconds: float = 10.0
    default_quota_cooldown_seconds: float = 60.0


def next_daily_reset(now: float) -> float:
    """Gemini's per-day quotas reset at midnight Pacific time; return that instant after ``now``."""
    local = datetime.fromtimestamp(now, PACIFIC)
    midnight = datetime(local.year, local.month, local.day, tzinfo=PACIFIC) + timedelta(days=1)
    return midnight.timestamp()


def changes_state(state: KeyState, verdict: Verdict, model: str, now: float) -> bool:
    """True when ``transition`` would produce a different state; lets callers skip a write on the hot path."""
    if state.status == DISABLED:
        return False
    if verdict.kind is Kind.REQUEST_ERROR or (verdict.kind is Kind.TRANSIENT and not verdict.isolated):
        return False
    if verdict.kind is Kind.SUCCESS:
        return state.failure_count > 0 or any(c.model == model for c in state.cooldowns)
    return True


def transition(state: KeyState, verdict: Verdict, model: str, now: float, policy: Policy) -> KeyState:
    """Apply one attempt's verdict to a key's state. ``model`` is the model the request named ("" if none)."""
    if state.status == DISABLED:
        return state  # an admin's decision: no answer from upstream changes it
    live = tuple(c for c in state.cooldowns if c.until > now)
    kind = verdict.kind
    if kind is Kind.REQUEST_ERROR or (kind is Kind.TRANSIENT and not verdict.isolated):
        return state
    if kind is Kind.SUCCESS:
        return replace(state, failure_count=0, cooldowns=tuple(c for c in live if c.model != model))
    if kind is Kind.KEY_INVALID:
        return replace(state, status=INVALID, cooldowns=(), last_error=scrub(verdict.reason), last_error_at=now)
    if kind is Kind.TRANSIENT:
        failures = state.failure_count + 1
        if failures >= policy.blacklist_threshold > 0:
            error = f"failing: {failures} failures while other keys served; last {verdict.reason}"
            return replace(
                state, status=INVALID, failure_count=failures, cooldowns=(), last_error=scrub(error), last_error_at=now
            )
        return replace(
            state, failure_count=failures, cooldowns=live, last_error=scrub(verdict.reason), last_error_at=now
        )
    # quota verdicts: cool the model down
    target = verdict.model or model or ANY_MODEL
    if kind is Kind.QUOTA_DAY:
        until = next_daily_reset(now)
    elif kind is Kind.QUOTA_MINUTE:
        until = now + (
            verdict.retry_delay if verdict.retry_delay is not None else policy.default_quota_cooldown_seconds
        )
    else:
        until = now + policy.bare_429_cooldown_seconds
    others = tuple(c for c in live if c.model != target)
    existing = next((c for c in live if c.model == target), None)
    if existing is not None and existing.until > until:
        until = existing.until
    daily = kind is Kind.QUOTA_DAY or (existing is not None and existing.daily and existing.until == until)
    cooldown = CoolDown(model=target, until=until, reason=scrub(verdict.reason), daily=daily)
    return replace(state, cooldowns=(*others, cooldown), last_error=scrub(verdict.reason), last_error_at=now)


def condemned_by_key_evidence(state: KeyState) -> bool:
    """Is the key invalid because Google said so about this key (not because it kept failing, or an older
    version's outage counting)? Such keys are re-probed on the group's validation schedule; the others every
    maintenance round."""
    return state.status == INVALID and is_key_evidence(state.last_error)


def restored(state: KeyState) -> KeyState:
    """The state after an admin restore or a successful validation; a disabled key stays as it is."""
    if state.status == DISABLED:
        return state
    return KeyState(status=ACTIVE)


def disabled(state: KeyState) -> KeyState:
    """The state after an admin disables the key: out of rotation until ``enabled``; its last error is kept."""
    return KeyState(status=DISABLED, last_error=state.last_error, last_error_at=state.last_error_at)


def enabled(state: KeyState) -> KeyState:
    """The state after an admin enables the key: a disabled key starts afresh as active (as after a restore);
    any other key is left as it is (enabling is not a restore)."""
    if state.status != DISABLED:
        return state
    return KeyState(status=ACTIVE, last_error=state.last_error, last_error_at=state.last_error_at)
