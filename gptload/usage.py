"""Buffered usage counters: finished attempts are kept in memory and written to the store in batches.

The buffer never blocks a request: a request tail that finds the buffer big or old enough wakes one long-lived
flusher thread (one thread for the life of the process: a thread per flush would also mean a new SQLite
connection per flush), so the store round trip delays neither that response nor the next request on the same
keep-alive connection. Shutdown and the maintenance task flush synchronously. When the store is unreachable the
batch is kept, up to ``max_events``; beyond that events are dropped and counted, with a warning. When the store
rejects a batch as invalid (``StoreRejected``: it could never be written), the rejected events are isolated by
halving and dropped, counted in ``rejected``; the rest of the batch is written exactly once (see ``flush``).
A flush is due at ``flush_size`` events, or after ``flush_seconds`` once at least ``min_events`` are buffered, or
after ``max_seconds`` whatever the count: on a store that bills per write (Firestore, ~3 writes per flush), a
quiet instance then writes every ``max_seconds`` instead of every ``flush_seconds`` with a handful of events.
After a failed flush, request tails leave the store alone for ``retry_seconds`` (the maintenance task and shutdown
still try), so an unreachable store costs one timed-out attempt per interval, not one per request.

When the process is stopping, ``drain()`` writes what is buffered at once and switches to writing every event as
soon as it is added, so that requests ending during the graceful period are not left in memory at exit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gptload.errors import StoreRejected, StoreUnavailable
from gptload.models import UsageEvent
from gptload.store.base import Store

log = logging.getLogger(__name__)


class UsageBuffer:
    def __init__(
        self,
        store: Store,
        *,
        flush_size: int = 500,
        flush_seconds: float = 5.0,
        min_events: int = 1,
        max_seconds: float = 0.0,
        max_events: int = 50_000,
        retry_seconds: float = 30.0,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._flush_size = flush_size
        self._flush_seconds = flush_seconds
        self._min_events = max(1, min_events)
        # Waives ``min_events`` while it answers True: access keys' daily budgets are read from flushed counters,
        # so while any is in force this instance flushes every ``flush_seconds`` (gptload/access/gate.py).
        self.hurry: Callable[[], bool] = lambda: False
        self._max_seconds = max(flush_seconds, max_seconds)
        self._max = max_events
        self._clock = clock
        self._events: list[UsageEvent] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._last_flush = clock()
        self._retry_seconds = retry_seconds
        self._background = background
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self._quiet_until = float("-inf")
        self._draining = False
        self.dropped = 0
        self.rejected = 0  # events the store can never accept (StoreRejected), isolated and dropped
        self.observer: Callable[[UsageEvent], None] | None = None  # sees every event added (gptload.metrics)
        # Batches whose write failed, oldest first: each is retried alone and unchanged, so that a store which
        # applies batches exactly once (see Store.record_usage) can recognise it. More than one only while a
        # rejected batch is being halved (see flush).
        self._failed: list[list[UsageEvent]] = []

    def add(self, event: UsageEvent) -> None:
        if self.observer is not None:
            self.observer(event)
        with self._lock:
            if len(self._events) + self._waiting() >= self._max:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("usage buffer full (%d events): dropped %d so far", self._max, self.dropped)
                return
            self._events.append(event)

    def __len__(self) -> int:
        return len(self._events) + self._waiting()

    def due(self) -> bool:
        if self._draining:
            return bool(self._events or self._failed)
        if self._clock() < self._quiet_until:
            return False
        buffered = len(self._events)
        age = self._clock() - self._last_flush
        return (
            bool(self._failed)
            or buffered >= self._flush_size
            or ((buffered >= self._min_events or self.hurry()) and age >= self._flush_seconds)
            or (buffered > 0 and age >= self._max_seconds)
        )

    def maybe_flush(self) -> None:
        """Called from request tails: flush if due and nobody else is flushing (while draining, the flusher goes
        round once more after the running flush). Never raises, never waits."""
        if not self.due() or (self._flushing.locked() and not self._draining):
            return
        if not self._background:
            self.flush(blocking=False)
            return
        if self._flusher is None:
            with self._lock:
                if self._flusher is None:
                    self._flusher = threading.Thread(target=self._flush_loop, name="gptload-flush", daemon=True)
                    self._flusher.start()
        self._wake.set()

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self.flush(blocking=self._draining)

    def drain(self) -> int:
        """The process is stopping: write what is buffered now, and from now on every event as soon as it is
        added (ignoring the flush interval and the quiet period after a failure). Returns how many were written;
        safe to call more than once."""
        self._draining = True
        self._quiet_until = float("-inf")
        return self.flush()

    def flush(self, *, blocking: bool = True) -> int:
        """Write buffered events (first the batches whose write failed, each alone and unchanged); return how many
        were written (0 when the store is unavailable).

        A batch the store rejects (``StoreRejected``: it can never be written) is not retried as it is: its events
        the store did not write are halved, each half written as a batch of its own, until the rejected events
        are alone; those are dropped (``rejected``, one warning each) and everything else is written exactly
        once. Halves wait in the retry queue like any failed batch, so an outage while halving keeps them intact.
        """
        if not self._flushing.acquire(blocking=blocking):
            return 0
        try:
            written = 0
            while True:
                with self._lock:
                    retrying = bool(self._failed)
                    if retrying:
                        batch = self._failed[0]
                    else:
                        batch, self._events = self._events, []
                self._last_flush = self._clock()
                if not batch:
                    return written
                try:
                    self._store.record_usage(batch)
                except StoreRejected as exc:
                    # The store answered: no quiet period, go on at once with the halves.
                    written += self._isolate(batch, exc, retrying)
                    continue
                except Exception as exc:
                    if isinstance(exc, StoreUnavailable):
                        log.warning("usage flush failed, keeping %d events: %s", len(batch), exc)
                    else:
                        log.exception("usage flush failed unexpectedly, keeping %d events", len(batch))
                    self._quiet_until = self._clock() + self._retry_seconds
                    with self._lock:
                        if not retrying:
                            self._failed.insert(0, batch)
                        over = len(self._events) + self._waiting() - self._max
                        if over > 0:  # make room by dropping the newest unsent events, never part of a batch
                            del self._events[len(self._events) - over :]
                            self.dropped += over
                    return written
                with self._lock:
                    if retrying:
                        self._failed.pop(0)
                written += len(batch)
                self._quiet_until = float("-inf")
                if not retrying:
                    return written
        finally:
            self._flushing.release()

    def _waiting(self) -> int:
        """Events in batches waiting for a retry (called with ``_lock`` held)."""
        return sum(len(b) for b in self._failed)

    def _isolate(self, batch: list[UsageEvent], exc: StoreRejected, retrying: bool) -> int:
        """``batch`` was rejected: queue the halves of its unwritten events first (or drop the one event left);
        return how many of its events the store did write."""
        ids = {id(e) for e in batch}
        unwritten = [e for e in exc.events if id(e) in ids] or list(batch)
        with self._lock:
            if retrying:
                self._failed.pop(0)
            if len(unwritten) == 1:
                e = unwritten[0]
                self.rejected += 1
                log.warning(
                    "usage event rejected by the store, dropped (%d so far): group=%s model=%s key_id=%s "
                    "access_key=%s at=%.0f: %s",
                    self.rejected,
                    e.group,
                    e.model,
                    e.key_id,
                    e.access_key,
                    e.at,
                    str(exc)[:200],
                )
            else:
                half = len(unwritten) // 2
                self._failed[0:0] = [unwritten[:half], unwritten[half:]]
                log.info("the store rejected %d usage events: writing them in halves", len(unwritten))
        return len(batch) - len(unwritten)
