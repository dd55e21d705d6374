"""The store contract for usage batches the store can never accept: ``record_usage`` raises ``StoreRejected``
naming the events it did not write, every other event of the batch is applied exactly once (also when the
Firestore adapter writes the batch in several commits and a later one is rejected), a retry of the same batch adds
nothing, and ``UsageBuffer`` over the real store drops only the poisoned event. Same tests on SQLite and on the
Firestore emulator."""

from __future__ import annotations

import os

import pytest

from gptload.errors import StoreRejected
from gptload.models import UsageEvent
from gptload.usage import UsageBuffer
from tests.contract.test_store_contract import NOW, group, records

HOUR = 3600.0
T0 = NOW - NOW % HOUR


def ev(i: int, **kw) -> UsageEvent:
    base = dict(
        group="g1",
        key_id="k0000",
        at=T0 - i * HOUR,  # one hour each: many statistics documents and log pages, so several commits
        success=True,
        status_code=200,
        model="gemini-2.5-flash",
        key_masked="AIza...0000",
        id=f"log-{i:05d}",
        total_tokens=1,
    )
    base.update(kw)
    return UsageEvent(**base)


def _setup(store) -> None:
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 2), {})


def _counts(store) -> tuple[int, int]:
    k = {r.id: r for r in store.list_keys("g1")}["k0000"]
    return k.request_count, k.total_tokens


def _buffer(store) -> UsageBuffer:
    return UsageBuffer(store, flush_size=100_000, flush_seconds=0, retry_seconds=0, background=False)


def test_an_integer_out_of_range_is_rejected_and_the_rest_is_written_once(store):
    _setup(store)
    events = [ev(i) for i in range(40)]
    events[17] = ev(17, total_tokens=2**70)  # a token count no store can hold (an upstream's usageMetadata)
    with pytest.raises(StoreRejected) as caught:
        store.record_usage(events)
    unwritten = caught.value.events
    assert ev(17, total_tokens=2**70) in unwritten
    written = len(events) - len(unwritten)
    assert _counts(store) == (written, written)
    buf = _buffer(store)
    for e in unwritten:
        buf.add(e)
    buf.flush()
    assert buf.rejected == 1 and len(buf) == 0
    assert _counts(store) == (39, 39)
    # the rejected batch again: still rejected, nothing counted twice
    with pytest.raises(StoreRejected):
        store.record_usage(events)
    assert _counts(store) == (39, 39)


def test_a_log_row_too_big_for_a_document_spoils_only_its_own_commit(store):
    """~600 writes: the Firestore adapter writes this batch in several commits; the one that holds the poisoned
    page is rejected (INVALID_ARGUMENT), the others are applied, and only the rejected commit's events are
    reported — halving them under new batch keys cannot count an applied commit twice. SQLite takes the row."""
    _setup(store)
    events = [ev(i) for i in range(200)]
    events[10] = ev(10, request_body=os.urandom(1_200_000).hex())  # 2.4 MB: ~1.2 MB compressed
    rejected_by_store = store.kind == "firestore"
    if rejected_by_store:  # the case that matters: an earlier commit of the batch applied, a later one rejected
        parts = [[e.id for e in part] for part, _key, _writes in store._usage_parts(events)]
        assert len(parts) >= 2 and events[10].id not in parts[0]
    try:
        store.record_usage(events)
        unwritten: list[UsageEvent] = []
    except StoreRejected as exc:
        unwritten = exc.events
    assert bool(unwritten) == rejected_by_store
    if rejected_by_store:
        assert events[10] in unwritten and len(unwritten) < len(events)  # not the whole batch
    written = len(events) - len(unwritten)
    assert _counts(store) == (written, written)
    # a retry of the very same batch (its outcome unknown to the caller) adds nothing
    if rejected_by_store:
        with pytest.raises(StoreRejected) as again:
            store.record_usage(events)
        assert sorted(e.id for e in again.value.events) == sorted(e.id for e in unwritten)
        assert _counts(store) == (written, written)
    buf = _buffer(store)
    for e in unwritten:
        buf.add(e)
    buf.flush()
    assert buf.rejected == (1 if rejected_by_store else 0) and len(buf) == 0
    assert _counts(store) == ((199, 199) if rejected_by_store else (200, 200))
    _rows, total = store.query_logs(_query(), 0, 500)
    assert total == (199 if rejected_by_store else 200)


def test_the_buffer_over_the_real_store_goes_on_after_a_poisoned_event(store):
    _setup(store)
    buf = _buffer(store)
    for i in range(10):
        buf.add(ev(i, at=T0 + i))
    buf.add(ev(10, at=T0 + 10, prompt_tokens=2**64))
    buf.flush()
    assert buf.rejected == 1 and len(buf) == 0
    assert _counts(store) == (10, 10)
    for i in range(11, 16):
        buf.add(ev(i, at=T0 + i))
    assert buf.flush() == 5
    assert _counts(store) == (15, 15)


def test_a_big_batch_of_long_model_names_is_never_rejected_for_size(store):
    """Many distinct long values (model names are chosen by clients): the log pages' tags and ids and the counter
    documents weigh as much as the rows; the adapter's commits must stay under the request limit (the emulator's
    is 4 MiB, production's 10 MiB)."""
    _setup(store)
    events = [
        ev(
            i,
            at=T0 + i * 0.5,
            model="gemini-" + os.urandom(600).hex(),
            path="/v1beta/models/x:generateContent",
            access_key=f"ak{i % 40:04d}",
        )
        for i in range(3000)
    ]
    store.record_usage(events)
    assert _counts(store) == (3000, 3000)
    rows, total = store.query_logs(_query(), 0, 10)
    assert total == 3000 and len(rows) == 10


def _query():
    from gptload.models import LogQuery

    return LogQuery(group="g1")


def test_text_that_cannot_be_encoded_is_rejected_not_retried_forever(store):
    """A lone surrogate (what ``surrogateescape`` decoding leaves for undecodable bytes) is no UTF-8: neither store
    can hold it. The buffer drops that one event and writes the rest."""
    _setup(store)
    buf = _buffer(store)
    for i in range(6):
        buf.add(ev(i, at=T0 + i, model="gemini-\udc80x" if i == 3 else "gemini-2.5-flash"))
    buf.flush()
    assert buf.rejected == 1 and len(buf) == 0
    assert _counts(store) == (5, 5)
