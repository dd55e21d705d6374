from __future__ import annotations

import threading
import time

from gptload.errors import StoreUnavailable
from gptload.models import UsageEvent
from gptload.usage import UsageBuffer


class Store:
    def __init__(self):
        self.batches = []
        self.fail: Exception | None = None

    def record_usage(self, events):
        if self.fail:
            raise self.fail
        self.batches.append(list(events))


class SlowStore(Store):
    """A store whose writes wait for ``release``; ``entered`` is set when a write begins."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def record_usage(self, events):
        self.entered.set()
        self.release.wait(5)
        super().record_usage(events)


def ev(i):
    return UsageEvent("g", "k", float(i), True)


def test_flushes_when_big_or_old_enough():
    now = [0.0]
    store = Store()
    buf = UsageBuffer(store, flush_size=3, flush_seconds=10, background=False, clock=lambda: now[0])
    buf.add(ev(1))
    buf.maybe_flush()
    assert store.batches == []
    buf.add(ev(2))
    buf.add(ev(3))
    buf.maybe_flush()
    assert [len(b) for b in store.batches] == [3]
    buf.add(ev(4))
    now[0] = 11
    buf.maybe_flush()
    assert [len(b) for b in store.batches] == [3, 1]


def test_a_quiet_buffer_waits_for_min_events_or_max_seconds():
    now = [0.0]
    store = Store()
    buf = UsageBuffer(
        store, flush_size=500, flush_seconds=5, min_events=3, max_seconds=60, background=False, clock=lambda: now[0]
    )
    buf.add(ev(1))
    buf.add(ev(2))
    now[0] = 30  # old enough for flush_seconds, but only 2 events: a store billed per write waits
    buf.maybe_flush()
    assert store.batches == []
    buf.add(ev(3))
    buf.maybe_flush()
    assert [len(b) for b in store.batches] == [3]
    buf.add(ev(4))
    now[0] = 30 + 59
    buf.maybe_flush()
    assert [len(b) for b in store.batches] == [3]
    now[0] = 30 + 60  # max_seconds: written whatever the count
    buf.maybe_flush()
    assert [len(b) for b in store.batches] == [3, 1]


def test_store_down_keeps_events_up_to_the_bound_and_counts_drops(caplog):
    store = Store()
    buf = UsageBuffer(store, flush_size=1, max_events=5)
    store.fail = StoreUnavailable("down")
    for i in range(4):
        buf.add(ev(i))
    assert buf.flush() == 0 and len(buf) == 4
    for i in range(4, 9):
        buf.add(ev(i))  # never blocks, never raises
    assert len(buf) == 5 and buf.dropped == 4
    assert "dropped" in caplog.text
    store.fail = None
    assert buf.flush() == 5
    # the failed batch is retried alone and unchanged (so a store can recognise a retry), then the rest
    assert [[e.at for e in b] for b in store.batches] == [[0.0, 1.0, 2.0, 3.0], [4.0]]


def test_an_unexpected_store_error_never_escapes_a_request_tail():
    store = Store()
    store.fail = TypeError("bug in an adapter")
    buf = UsageBuffer(store, flush_size=1, background=False)
    buf.add(ev(1))
    buf.maybe_flush()  # must not raise
    assert len(buf) == 1


def test_after_a_failed_flush_request_tails_leave_the_store_alone_for_a_while():
    now = [0.0]
    store = Store()
    buf = UsageBuffer(store, flush_size=1, retry_seconds=30, background=False, clock=lambda: now[0])
    store.fail = StoreUnavailable("down")
    buf.add(ev(1))
    buf.maybe_flush()  # one attempt, fails
    calls = []
    store.record_usage = lambda events: calls.append(events)
    buf.add(ev(2))
    now[0] = 29
    buf.maybe_flush()
    assert calls == []  # still quiet: no timed-out attempt per request
    assert buf.flush() == 2  # the maintenance task and shutdown still try
    assert [[e.at for e in b] for b in calls] == [[1.0], [2.0]]
    now[0] = 31
    buf.add(ev(3))
    buf.maybe_flush()
    assert len(calls) == 3


def test_request_tails_hand_the_flush_to_a_helper_thread():
    store = SlowStore()
    entered, release = store.entered, store.release
    buf = UsageBuffer(store, flush_size=1)
    buf.add(ev(1))
    buf.maybe_flush()  # returns at once although the store is slow
    assert entered.wait(5)
    buf.add(ev(2))
    buf.maybe_flush()  # a flush is running: skip, do not queue a second one
    release.set()
    deadline = time.monotonic() + 5
    while not store.batches and time.monotonic() < deadline:
        release.wait(0.01)
    assert [len(b) for b in store.batches] == [1]
    assert len(buf) == 1


def test_background_flushes_reuse_one_thread():
    import threading

    def flushers() -> int:
        return [t.name for t in threading.enumerate()].count("gptload-flush")

    before = flushers()
    store = Store()
    buf = UsageBuffer(store, flush_size=1)
    for i in range(20):
        buf.add(ev(i))
        deadline = time.monotonic() + 5
        while sum(len(b) for b in store.batches) <= i and time.monotonic() < deadline:  # taken, then written
            # A tail that comes while the previous flush still holds its lock (it has written, not yet released)
            # is skipped by design; the next tail flushes. Each round of this loop is such a next tail.
            buf.maybe_flush()
            time.sleep(0.001)
    assert sum(len(b) for b in store.batches) == 20
    assert flushers() == before + 1


def test_drain_writes_what_is_buffered_at_once_and_then_every_event_as_it_comes():
    """Stopping (SIGTERM): the buffer is written now, not at the next interval, and each request tail from then on
    flushes its own event, so that requests ending during the graceful period lose nothing."""
    now = [0.0]
    store = Store()
    buf = UsageBuffer(store, flush_size=500, flush_seconds=3600, background=False, clock=lambda: now[0])
    buf.add(ev(1))
    buf.add(ev(2))
    buf.maybe_flush()
    assert store.batches == []  # not due yet
    assert buf.drain() == 2
    assert [len(b) for b in store.batches] == [2]
    buf.add(ev(3))
    buf.maybe_flush()
    assert [len(b) for b in store.batches] == [2, 1] and len(buf) == 0


def test_draining_ignores_the_quiet_period_after_a_failed_flush():
    store = Store()
    buf = UsageBuffer(store, flush_size=500, flush_seconds=3600, background=False)
    buf.add(ev(1))
    store.fail = StoreUnavailable("down")
    assert buf.flush() == 0  # request tails now leave the store alone for retry_seconds
    store.fail = None
    assert buf.drain() == 1 and len(buf) == 0


def test_while_draining_an_event_added_during_a_running_flush_is_written_after_it():
    store = SlowStore()
    entered, release = store.entered, store.release
    buf = UsageBuffer(store, flush_size=500, flush_seconds=3600)
    buf.drain()  # nothing buffered yet: writes nothing
    buf.add(ev(1))
    buf.maybe_flush()
    assert entered.wait(5)
    buf.add(ev(2))
    buf.maybe_flush()  # a flush is running: while draining, the flusher goes round once more afterwards
    release.set()
    deadline = time.monotonic() + 5  # the flusher thread takes the event out of the buffer, then writes it
    while sum(len(b) for b in store.batches) < 2 and time.monotonic() < deadline:
        release.wait(0.01)
    assert sum(len(b) for b in store.batches) == 2 and len(buf) == 0
