"""Usage roll-up: what a batch of finished attempts adds to the stored counters. Pure: no I/O, no clock.

Both adapters' ``record_usage`` compute ``rollup(events)`` and only write it out:

- per key, keyed by (group, key_id): requests, failures, last use and total tokens, over every attempt. Events with
  an empty ``key_id`` are requests refused before any key was tried; they count for the group only.
- per hour, keyed by (group, hour): requests, failures and tokens of the *final* attempts (what clients got),
  and over every attempt: ``retries`` (attempts followed by another one), ``failed_attempts`` (attempts with a key
  that failed, final or not) and ``refused`` (requests answered without any upstream call: bad proxy key, body too
  large, no key, breaker open).
- per minute, keyed by (group, minute): the number of final attempts (requests per minute).
- the events whose request-log row is written (``logged``).
- per access key and hour, keyed by (access_key, hour): the final attempts, those refused by the access gate, tokens
  and the last use (``access``; "anonymous" for legacy proxy keys). Daily budgets are read from these.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gptload.models import UsageEvent

# Fields of an hourly bucket, in this order everywhere (stores, statistics read models).
STAT_FIELDS = (
    "requests",
    "failures",
    "prompt_tokens",
    "candidates_tokens",
    "total_tokens",
    "retries",
    "failed_attempts",
    "refused",
)


def hour_of(at: float) -> float:
    """The start of the hour (epoch seconds) ``at`` falls in."""
    return at - at % 3600


def minute_of(at: float) -> float:
    """The start of the minute (epoch seconds) ``at`` falls in."""
    return at - at % 60


@dataclass(frozen=True)
class KeyUsage:
    requests: int = 0
    failures: int = 0
    last_used_at: float = 0.0
    tokens: int = 0


@dataclass(frozen=True)
class HourStats:
    requests: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    total_tokens: int = 0
    retries: int = 0
    failed_attempts: int = 0
    refused: int = 0

    def values(self) -> tuple[int, ...]:
        """The counters in ``STAT_FIELDS`` order."""
        return (
            self.requests,
            self.failures,
            self.prompt_tokens,
            self.candidates_tokens,
            self.total_tokens,
            self.retries,
            self.failed_attempts,
            self.refused,
        )


@dataclass(frozen=True)
class AccessStats:
    """An access key's hour: final attempts (what its clients got), those the access gate refused, tokens, last use."""

    requests: int = 0
    failures: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    total_tokens: int = 0
    last_used_at: float = 0.0

    def counters(self) -> tuple[int, int, int, int, int, int]:
        """The counters in ``ACCESS_STAT_FIELDS`` order."""
        return (
            self.requests,
            self.failures,
            self.refused,
            self.prompt_tokens,
            self.candidates_tokens,
            self.total_tokens,
        )


# Counters of an access key's hourly bucket, in this order everywhere (plus ``last_used_at``, a maximum).
ACCESS_STAT_FIELDS = ("requests", "failures", "refused", "prompt_tokens", "candidates_tokens", "total_tokens")


@dataclass(frozen=True)
class Rollup:
    """Sums of one batch; every mapping keeps the order in which its keys first appeared in the events."""

    keys: dict[tuple[str, str], KeyUsage]  # (group, key_id) -> usage
    hours: dict[tuple[str, float], HourStats]  # (group, hour_of(at)) -> final attempts' sums
    minutes: dict[tuple[str, float], int]  # (group, minute_of(at)) -> final attempts
    logged: tuple[UsageEvent, ...]  # events with a request-log row, in batch order
    access: dict[tuple[str, float], AccessStats] = field(default_factory=dict)  # (access key, hour) -> final attempts


def rollup(events: Iterable[UsageEvent]) -> Rollup:
    keys: dict[tuple[str, str], KeyUsage] = {}
    hours: dict[tuple[str, float], HourStats] = {}
    minutes: dict[tuple[str, float], int] = {}
    logged: list[UsageEvent] = []
    access: dict[tuple[str, float], AccessStats] = {}
    for e in events:
        failed = 0 if e.success else 1
        if e.key_id:
            k = keys.get((e.group, e.key_id), KeyUsage())
            keys[(e.group, e.key_id)] = KeyUsage(
                k.requests + 1, k.failures + failed, max(k.last_used_at, e.at), k.tokens + e.total_tokens
            )
        h = hours.get((e.group, hour_of(e.at)), HourStats())
        final = 1 if e.final else 0
        hours[(e.group, hour_of(e.at))] = HourStats(
            h.requests + final,
            h.failures + failed * final,
            h.prompt_tokens + e.prompt_tokens * final,
            h.candidates_tokens + e.candidates_tokens * final,
            h.total_tokens + e.total_tokens * final,
            h.retries + (1 - final),
            h.failed_attempts + (failed if e.key_id else 0),
            h.refused + (final if not e.key_id else 0),
        )
        if e.final:
            slot = (e.group, minute_of(e.at))
            minutes[slot] = minutes.get(slot, 0) + 1
            bucket = (e.access_key, hour_of(e.at))
            a = access.get(bucket, AccessStats())
            access[bucket] = AccessStats(
                a.requests + 1,
                a.failures + failed,
                a.refused + (1 if e.refused else 0),
                a.prompt_tokens + e.prompt_tokens,
                a.candidates_tokens + e.candidates_tokens,
                a.total_tokens + e.total_tokens,
                max(a.last_used_at, e.at),
            )
        if e.logged:
            logged.append(e)
    return Rollup(keys, hours, minutes, tuple(logged), access)
