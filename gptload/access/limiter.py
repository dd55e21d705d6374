"""Per-instance enforcement of an access key's limits: pure (no I/O, no clock, not thread-safe; the gate locks).

**Rate (``rpm_limit``).** Each instance admits at most its *share* of the limit in any 60 s window:
``share = max(1, rpm_limit / live_instances)``, where the live instance count comes from the heartbeats instances
publish in the store (``gate.py``). The window is counted in one-second slots (at most 61 slots, so memory is
bounded whatever the limit); a slot leaves the window once all of it is more than 60 s old, so a request holds its
place for 60 to 61 s (never less: a one-second slot must not let a burst through early), and a refusal says when
the oldest slot that must leave does (``retry_after``). Only admitted requests take a place in the window.

**Daily budgets (``daily_request_limit``, ``daily_token_limit``).** Used today = what the whole deployment has
flushed to the store (read by the gate every few seconds: ``synced``) + what this instance admitted since that
read (``local``). Requests admitted by other instances and not yet flushed or read are the error (see
docs/api.md, "Access keys"). Tokens are known only when an answer ends, so they come from the flushed counters
only. A new day (in ``limits_timezone``) starts every counter at 0.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gptload.models import AccessKey

WINDOW_SECONDS = 60
RATE_LIMITED = "RATE_LIMITED"
QUOTA_EXCEEDED = "QUOTA_EXCEEDED"


@dataclass(frozen=True)
class Refusal:
    reason: str  # RATE_LIMITED or QUOTA_EXCEEDED
    retry_after: float  # seconds
    message: str


def share(rpm_limit: int, instances: int) -> float:
    """How many requests per minute one of ``instances`` live instances may admit (at least 1)."""
    return max(1.0, rpm_limit / max(1, instances))


class RateWindow:
    """Admitted requests of the last ``WINDOW_SECONDS`` s, in one-second slots (oldest first)."""

    __slots__ = ("_slots", "_total")

    def __init__(self) -> None:
        self._slots: deque[list[int]] = deque()  # [second, count]
        self._total = 0

    def count(self, now: float) -> int:
        self._evict(int(now))
        return self._total

    def try_admit(self, now: float, limit: float) -> float | None:
        """Admit one request (None) when fewer than ``limit`` were admitted in the window; else the seconds until
        one more would be."""
        second = int(now)
        self._evict(second)
        if self._total + 1 > limit:
            return self._retry_after(now, limit)
        if self._slots and self._slots[-1][0] == second:
            self._slots[-1][1] += 1
        else:
            self._slots.append([second, 1])
        self._total += 1
        return None

    def _evict(self, second: int) -> None:
        while self._slots and self._slots[0][0] < second - WINDOW_SECONDS:
            self._total -= self._slots.popleft()[1]

    def _retry_after(self, now: float, limit: float) -> float:
        excess = self._total + 1 - int(limit)  # places that must free up
        freed = 0
        for second, count in self._slots:
            freed += count
            if freed >= excess:
                return max(0.0, second + WINDOW_SECONDS + 1 - now)
        return float(WINDOW_SECONDS)


@dataclass
class DayUsage:
    day: float  # start of the day (epoch seconds) these counters belong to
    synced_requests: int = 0
    synced_tokens: int = 0
    local_requests: int = 0  # admitted by this instance since the last sync


class Limiter:
    """Rate windows and daily usage of every access key seen by this instance."""

    def __init__(self) -> None:
        self._windows: dict[str, RateWindow] = {}
        self._days: dict[str, DayUsage] = {}

    def admit(self, key: AccessKey, now: float, *, instances: int, day: float, reset_at: float) -> Refusal | None:
        """Admit one request of ``key`` at ``now`` (None: admitted and counted) or say why not. ``day`` and
        ``reset_at`` are the start of the current day and the next reset, in the limits' time zone."""
        usage = self._day(key.id, day)
        if key.daily_request_limit and usage.synced_requests + usage.local_requests >= key.daily_request_limit:
            return Refusal(
                QUOTA_EXCEEDED,
                max(1.0, reset_at - now),
                f"access key {key.name!r} used its {key.daily_request_limit} requests of today",
            )
        if key.daily_token_limit and usage.synced_tokens >= key.daily_token_limit:
            return Refusal(
                QUOTA_EXCEEDED,
                max(1.0, reset_at - now),
                f"access key {key.name!r} used its {key.daily_token_limit} tokens of today",
            )
        if key.rpm_limit:
            window = self._windows.get(key.id)
            if window is None:
                window = self._windows[key.id] = RateWindow()
            wait = window.try_admit(now, share(key.rpm_limit, instances))
            if wait is not None:
                return Refusal(
                    RATE_LIMITED,
                    max(1.0, wait),
                    f"access key {key.name!r} is over its limit of {key.rpm_limit} requests per minute",
                )
        usage.local_requests += 1
        return None

    def synced(self, key_id: str, day: float, requests: int, tokens: int) -> None:
        """The deployment's flushed usage of ``key_id`` for ``day``, as just read from the store: it replaces the
        previous reading, and this instance's local count starts again from 0."""
        usage = self._day(key_id, day)
        if usage.day != day:
            return
        usage.synced_requests, usage.synced_tokens, usage.local_requests = requests, tokens, 0

    def used_today(self, key_id: str, day: float) -> tuple[int, int]:
        """(requests, tokens) this instance believes ``key_id`` used on ``day``."""
        usage = self._day(key_id, day)
        return usage.synced_requests + usage.local_requests, usage.synced_tokens

    def forget(self, keep: set[str]) -> None:
        """Drop the state of keys not in ``keep`` (deleted keys)."""
        for table in (self._windows, self._days):
            for key_id in [k for k in table if k not in keep]:
                del table[key_id]

    def _day(self, key_id: str, day: float) -> DayUsage:
        usage = self._days.get(key_id)
        if usage is None or usage.day < day:
            usage = self._days[key_id] = DayUsage(day)
        return usage
