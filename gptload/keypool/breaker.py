"""Circuit breakers per (group, upstream, model): stop sending a model's requests to an upstream that is failing.

An outage of Google (``503 The model is overloaded``, refused connections, 5xx, timeouts) says nothing about any
key, so it never disables keys (``state.transition``); without a breaker, though, every request during an outage
would still try ``1 + max_retries`` keys and hammer Google. The breaker remembers the failures instead::

    closed ──``threshold`` consecutive upstream failures, from at least 2 witnesses──▶ open(period)
    open   ──period over: the next request is let through as the probe──▶ half-open
    half-open ──the probe's upstream answers (any 2xx/3xx/4xx)──▶ closed (backoff reset)
    half-open ──the probe fails again──▶ open(next period)      (other requests wait while the probe runs)
    any    ──an upstream answer from any request──▶ closed

The period is ``base * 2**n`` capped at ``cap``, times a jitter factor in ``[1 - jitter, 1 + jitter]`` so many
instances do not probe in step. Requests refused while open get ``retry_after`` (the rest of the period).

Two witnesses (requests) at least are needed to open it, and the caller reports only failures that are the
upstream's own state (502, 503, network errors; see ``proxy/forwarder.py``): a 500 or a 504 can be caused by a
client, so a client cannot shut a model for everyone.
A probe whose outcome never arrives (a stuck call) frees its slot after ``probe_timeout`` seconds. Each
instance keeps its own breakers (nothing in the store): an instance learns of an outage from its own traffic,
which costs at most ``threshold`` failed attempts per instance.

Pure and thread-safe: time comes in as ``now`` (monotonic seconds), randomness through ``rng``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

# The model is the client's (a path segment or an OpenAI body's "model"): circuits are keyed by its first
# MODEL_CHARS characters, and at most MAX_CIRCUITS are kept (stale ones are forgotten to make room).
MODEL_CHARS = 200
MAX_CIRCUITS = 10_000

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


@dataclass(frozen=True)
class Admission:
    """Whether a request may try this (upstream, model) now. ``probe``: it is the one request let through after
    an open period; ``retry_after``: seconds until a request may be let through again (when refused)."""

    allowed: bool
    probe: bool = False
    retry_after: float = 0.0


@dataclass
class _Circuit:
    state: str = CLOSED
    failures: int = 0  # consecutive upstream failures while closed
    requests: set[int] | None = None  # distinct witnesses among those failures (at most 2 kept)
    level: int = 0  # how many times it opened in a row without an upstream answer in between
    until: float = 0.0  # open: when the period ends
    probe_since: float = 0.0  # half-open: when the probe was let through
    last_failure: str = ""


class Breakers:
    """All circuits of one instance, keyed by ``(group, upstream, model)``."""

    def __init__(
        self,
        *,
        threshold: int = 3,
        base: float = 0.5,
        cap: float = 60.0,
        jitter: float = 0.1,
        probe_timeout: float = 30.0,
        rng: Callable[[], float] = random.random,
        max_circuits: int = MAX_CIRCUITS,
    ) -> None:
        self.threshold = max(1, threshold)
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.probe_timeout = probe_timeout
        self._rng = rng
        self.max_circuits = max(1, max_circuits)
        self._circuits: dict[tuple[str, str, str], _Circuit] = {}
        self._lock = threading.Lock()

    def admit(self, key: tuple[str, str, str], now: float) -> Admission:
        """May a request try ``key`` now? In half-open state exactly one request (the probe) is let through."""
        key = _bounded(key)
        with self._lock:
            c = self._circuits.get(key)
            if c is None or c.state == CLOSED:
                return Admission(True)
            if c.state == OPEN:
                if now < c.until:
                    return Admission(False, retry_after=c.until - now)
                c.state, c.probe_since = HALF_OPEN, now
                return Admission(True, probe=True)
            # half-open: a probe is running
            if now - c.probe_since >= self.probe_timeout:
                c.probe_since = now
                return Admission(True, probe=True)
            return Admission(False, retry_after=max(1.0, self._period(c.level)))

    def success(self, key: tuple[str, str, str]) -> None:
        """The upstream answered (any HTTP answer that is not a 5xx): close the circuit."""
        key = _bounded(key)
        with self._lock:
            c = self._circuits.get(key)
            if c is not None and (c.state != CLOSED or c.failures):
                del self._circuits[key]

    def failure(self, key: tuple[str, str, str], now: float, witness: int, reason: str = "") -> bool:
        """An upstream failure (5xx, timeout, connect error) seen by ``witness``; True when it (re)opened."""
        key = _bounded(key)
        with self._lock:
            c = self._circuits.get(key)
            if c is None:
                if len(self._circuits) >= self.max_circuits and not self._prune(now):
                    return False  # full of live circuits: this one is not tracked (requests still pass)
                c = self._circuits[key] = _Circuit()
            c.last_failure = reason
            if c.state == HALF_OPEN:
                c.level += 1
                self._open(c, now)
                return True
            if c.state == OPEN:  # a request admitted before it opened: keep the period
                return False
            c.failures += 1
            if c.requests is None:
                c.requests = set()
            if len(c.requests) < 2:
                c.requests.add(witness)
            if c.failures >= self.threshold and len(c.requests) >= 2:
                self._open(c, now)
                return True
            return False

    def state(self, key: tuple[str, str, str], now: float) -> tuple[str, float, str]:
        """(state, seconds until a request may be let through, last failure) for status displays and errors."""
        key = _bounded(key)
        with self._lock:
            c = self._circuits.get(key)
            if c is None:
                return CLOSED, 0.0, ""
            wait = max(0.0, c.until - now) if c.state == OPEN else 0.0
            return c.state, wait, c.last_failure

    def open_circuits(self, now: float) -> list[dict[str, object]]:
        """Every circuit that is not closed, for the dashboard and logs."""
        with self._lock:
            return [
                {
                    "group": g,
                    "upstream": u,
                    "model": m,
                    "state": c.state,
                    "retry_after": round(max(0.0, c.until - now), 1) if c.state == OPEN else 0.0,
                    "last_failure": c.last_failure,
                }
                for (g, u, m), c in self._circuits.items()
                if c.state != CLOSED
            ]

    def _prune(self, now: float) -> bool:
        """Forget circuits that hold no outage now (closed ones counting failures, open ones whose period ended
        at least ``cap`` ago, stuck probes); True when there is room for one more."""
        for key, c in list(self._circuits.items()):
            if (
                c.state == CLOSED
                or (c.state == OPEN and now >= c.until + self.cap)
                or (c.state == HALF_OPEN and now - c.probe_since >= self.probe_timeout)
            ):
                del self._circuits[key]
        return len(self._circuits) < self.max_circuits

    def _open(self, c: _Circuit, now: float) -> None:
        c.state = OPEN
        c.until = now + self._period(c.level)
        c.failures = 0
        c.requests = None

    def _period(self, level: int) -> float:
        period = min(self.cap, self.base * (2 ** min(level, 30)))
        return float(period * (1 + self.jitter * (2 * self._rng() - 1)))


def _bounded(key: tuple[str, str, str]) -> tuple[str, str, str]:
    group, upstream, model = key
    return (group, upstream, model[:MODEL_CHARS]) if len(model) > MODEL_CHARS else key
