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
    # Sums are kept in plain lists while the events are walked and turned into the frozen records once per bucket
    # at the end: a frozen dataclass per event and bucket made this ~5x slower, and it runs in the usage flush
    # while request threads wait for the GIL.
    keys: dict[tuple[str, str], list] = {}  # [requests, failures, last_used_at, tokens]
    hours: dict[tuple[str, float], list[int]] = {}  # STAT_FIELDS
    minutes: dict[tuple[str, float], int] = {}
    logged: list[UsageEvent] = []
    access: dict[tuple[str, float], list] = {}  # ACCESS_STAT_FIELDS + [last_used_at]
    for e in events:
        failed = 0 if e.success else 1
        tokens = e.total_tokens
        if e.key_id:
            k = keys.get((e.group, e.key_id))
            if k is None:
                keys[(e.group, e.key_id)] = [1, failed, e.at, tokens]
            else:
                k[0] += 1
                k[1] += failed
                k[2] = max(k[2], e.at)
                k[3] += tokens
        hour = hour_of(e.at)
        h = hours.get((e.group, hour))
        if h is None:
            h = hours[(e.group, hour)] = [0] * len(STAT_FIELDS)
        if e.final:
            h[0] += 1
            h[1] += failed
            h[2] += e.prompt_tokens
            h[3] += e.candidates_tokens
            h[4] += tokens
            if not e.key_id:
                h[7] += 1  # refused: answered without any upstream call
            slot = (e.group, minute_of(e.at))
            minutes[slot] = minutes.get(slot, 0) + 1
            a = access.get((e.access_key, hour))
            if a is None:
                a = access[(e.access_key, hour)] = [0, 0, 0, 0, 0, 0, 0.0]
            a[0] += 1
            a[1] += failed
            a[2] += 1 if e.refused else 0
            a[3] += e.prompt_tokens
            a[4] += e.candidates_tokens
            a[5] += tokens
            a[6] = max(a[6], e.at)
        else:
            h[5] += 1  # a retry: another attempt followed
        if e.key_id:
            h[6] += failed  # failed attempts with a key, final or not
        if e.logged:
            logged.append(e)
    return Rollup(
        {slot: KeyUsage(n, f, at, tok) for slot, (n, f, at, tok) in keys.items()},
        {slot: HourStats(*v) for slot, v in hours.items()},
        minutes,
        tuple(logged),
        {slot: AccessStats(*v) for slot, v in access.items()},
    )
