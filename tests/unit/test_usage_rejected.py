"""A usage batch the store can never accept (``StoreRejected``) must not block the buffer: the rejected events are
isolated by halving, dropped and counted; every other event is written exactly once, and an outage in the middle
keeps each half unchanged for its retry (so that the store's batch markers recognise it)."""

from __future__ import annotations

import logging
from collections import Counter

from gptload.errors import StoreRejected, StoreUnavailable
from gptload.models import UsageEvent
from gptload.usage import UsageBuffer


def ev(i: int, *, poison: bool = False) -> UsageEvent:
    return UsageEvent(
        "g1",
        "bad-key" if poison else f"k{i % 3}",
        float(i),
        True,
        model="gemini-poison" if poison else "gemini-2.5-flash",
        id=f"e{i}",
        request_body="SECRET-BODY-TEXT" if poison else None,
    )


class OneTransactionStore:
    """Like SQLite: a batch is one transaction; a batch holding a poisoned event is rejected whole."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.calls: list[list[str]] = []
        self.outages = 0  # the next N calls fail as an outage (nothing applied)

    def record_usage(self, events: list[UsageEvent]) -> None:
        self.calls.append(sorted(e.id for e in events))
        if self.outages:
            self.outages -= 1
            raise StoreUnavailable("down")
        if any(e.key_id == "bad-key" for e in events):
            raise StoreRejected("rejected", events=events)
        self.applied += [e.id for e in events]


class PartsStore(OneTransactionStore):
    """Like Firestore: a batch is written in self-contained parts of ``part`` events; a rejected part is reported
    alone, every other part is applied."""

    def __init__(self, part: int) -> None:
        super().__init__()
        self.part = part

    def record_usage(self, events: list[UsageEvent]) -> None:
        self.calls.append(sorted(e.id for e in events))
        ordered = sorted(events, key=lambda e: e.id)
        rejected: list[UsageEvent] = []
        for i in range(0, len(ordered), self.part):
            chunk = ordered[i : i + self.part]
            if any(e.key_id == "bad-key" for e in chunk):
                rejected += chunk
            else:
                self.applied += [e.id for e in chunk]
        if rejected:
            raise StoreRejected("part rejected", events=rejected)


def _buffer(store, **kw) -> UsageBuffer:
    return UsageBuffer(store, flush_size=1000, flush_seconds=0, retry_seconds=0, background=False, **kw)


def test_a_poisoned_event_is_dropped_and_everything_else_written_exactly_once(caplog):
    store = OneTransactionStore()
    buf = _buffer(store)
    events = [ev(i, poison=(i == 5)) for i in range(16)]
    for e in events:
        buf.add(e)
    with caplog.at_level(logging.WARNING, logger="gptload.usage"):
        written = buf.flush()
    assert written == 15
    assert Counter(store.applied) == Counter(e.id for e in events if e.id != "e5")
    assert buf.rejected == 1 and buf.dropped == 0 and len(buf) == 0
    # one warning that names the group, model and key id, never the request body
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(lines) == 1
    assert "g1" in lines[0] and "gemini-poison" in lines[0] and "bad-key" in lines[0]
    assert "SECRET-BODY-TEXT" not in caplog.text
    # and recording goes on as usual
    buf.add(ev(100))
    buf.flush()
    assert store.applied[-1] == "e100" and len(buf) == 0


def test_several_poisoned_events_are_all_found():
    store = OneTransactionStore()
    buf = _buffer(store)
    events = [ev(i, poison=i in (0, 7, 8, 30)) for i in range(32)]
    for e in events:
        buf.add(e)
    buf.flush()
    assert sorted(store.applied) == sorted(e.id for e in events if e.key_id != "bad-key")
    assert len(store.applied) == 28 and buf.rejected == 4 and len(buf) == 0


def test_only_the_events_the_store_did_not_write_are_halved():
    """A store that applied part of the batch reports only the rejected part: those events, and only those, are
    re-written (under new batch keys) — nothing the store applied is sent again."""
    store = PartsStore(part=4)
    buf = _buffer(store)
    events = [ev(i, poison=(i == 9)) for i in range(12)]
    for e in events:
        buf.add(e)
    buf.flush()
    assert Counter(store.applied) == Counter(e.id for e in events if e.id != "e9")
    assert all(n == 1 for n in Counter(store.applied).values())
    # after the first call, only events of the rejected part (ids sorted as strings: e6, e7, e8, e9) were sent again
    again = {i for call in store.calls[1:] for i in call}
    assert again == {"e6", "e7", "e8", "e9"}
    assert buf.rejected == 1


def test_an_outage_while_halving_keeps_each_half_unchanged_for_its_retry():
    store = OneTransactionStore()
    buf = _buffer(store)
    for i in range(8):
        buf.add(ev(i, poison=(i == 6)))
    store.outages = 0
    calls_before = len(store.calls)
    # the first call is rejected; the first half then meets an outage
    original = store.record_usage
    state = {"n": 0}

    def flaky(events):
        state["n"] += 1
        if state["n"] == 2:
            store.calls.append(sorted(e.id for e in events))
            raise StoreUnavailable("down")
        original(events)

    store.record_usage = flaky  # type: ignore[method-assign]
    assert buf.flush() == 0
    assert len(buf) == 8 and buf.rejected == 0
    failed_half = store.calls[-1]
    assert len(failed_half) == 4
    buf.add(ev(50))  # arrives during the outage: never merged into a half
    buf.flush()
    assert store.calls[calls_before + 2] == failed_half  # retried alone and unchanged
    assert Counter(store.applied) == Counter(f"e{i}" for i in (0, 1, 2, 3, 4, 5, 7, 50))
    assert buf.rejected == 1 and len(buf) == 0


def test_an_outage_is_still_retried_unchanged_and_never_dropped_as_rejected():
    store = OneTransactionStore()
    buf = _buffer(store)
    for i in range(4):
        buf.add(ev(i))
    store.outages = 3
    for _ in range(3):
        assert buf.flush() == 0
    assert buf.rejected == 0 and len(buf) == 4
    assert buf.flush() == 4
    assert store.calls[0] == store.calls[1] == store.calls[2] == store.calls[3]
    assert sorted(store.applied) == ["e0", "e1", "e2", "e3"]


def test_a_rejection_without_events_counts_the_whole_batch():
    """A store that says "rejected" without naming events: the whole batch is treated as not written."""

    class Vague(OneTransactionStore):
        def record_usage(self, events):
            self.calls.append(sorted(e.id for e in events))
            if any(e.key_id == "bad-key" for e in events):
                raise StoreRejected("rejected")
            self.applied += [e.id for e in events]

    store = Vague()
    buf = _buffer(store)
    for i in range(5):
        buf.add(ev(i, poison=(i == 2)))
    buf.flush()
    assert sorted(store.applied) == ["e0", "e1", "e3", "e4"] and buf.rejected == 1


def test_the_buffer_limit_counts_halves_waiting_for_a_retry():
    store = OneTransactionStore()
    buf = UsageBuffer(store, flush_size=1000, flush_seconds=0, retry_seconds=0, max_events=8, background=False)
    for i in range(8):
        buf.add(ev(i, poison=(i == 1)))
    store.outages = 0
    state = {"n": 0}
    original = store.record_usage

    def fail_second(events):
        state["n"] += 1
        if state["n"] >= 2:
            raise StoreUnavailable("down")
        original(events)

    store.record_usage = fail_second  # type: ignore[method-assign]
    buf.flush()
    assert len(buf) == 8
    buf.add(ev(99))
    assert buf.dropped == 1 and len(buf) == 8
