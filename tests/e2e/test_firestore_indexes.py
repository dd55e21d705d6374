"""The Firestore indexes and index exemptions the adapter declares (gptload/store/firestore/schema.py) against the
queries it really runs.

Every query method of the store runs on the emulator with every filter combination it can send, while the
client's ``RunQuery`` / ``RunAggregationQuery`` requests are recorded. From each request the index model
(tests/firestore_indexes.py: Firestore's documented rules) derives the index it needs; then

- every declared composite index serves at least one recorded query, and every query needing a composite finds
  one: the declared set is exactly what the queries need (the retired ones serve none);
- no field a query filters, orders or aggregates on is exempted from single-field indexing (a query on an
  exempted field fails in production with "The query requires an index");
- every exempted field is one the store really writes (a misspelt exemption would silently exempt nothing);
- every field filter, order and aggregation written in store.py was recorded (the run covers the source).

The emulator neither needs nor enforces indexes, so the queries succeeding here proves nothing by itself; the
model is what decides. See docs/firestore.md, "Indexes".
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gptload.models import DISABLED, INVALID, AccessKey, KeyQuery, LogQuery, UsageEvent
from gptload.store.base import Binding
from gptload.store.firestore import schema
from tests.conftest import require
from tests.contract.test_store_contract import group, records
from tests.firestore_indexes import (
    EQUALITY,
    LIMIT_ENTRIES,
    RANGE,
    Shape,
    covered,
    need_of,
    serves,
    shape_of,
    single_field_entries,
)
from tests.firestore_support import firestore_store

pytestmark = pytest.mark.firestore

STORE_SOURCE = Path(__file__).resolve().parents[2] / "gptload" / "store" / "firestore" / "store.py"
SDK_OPS = {"==": "EQUAL", "array_contains": "ARRAY_CONTAINS", "<": "LESS_THAN", "<=": "LESS_THAN_OR_EQUAL"}
SDK_OPS |= {">": "GREATER_THAN", ">=": "GREATER_THAN_OR_EQUAL"}


def _plain(value: Any) -> Any:
    """A request as plain data with the proto's field names and enums by name (``from`` spelt ``from_``)."""
    if hasattr(type(value), "to_dict") and hasattr(type(value), "pb"):
        value = type(value).to_dict(value, use_integers_for_enums=False, preserving_proto_field_name=True)
    if isinstance(value, dict):
        return {("from_" if k == "from" else k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class QueryRecorder:
    """Records every query request a store's client sends (installed on its GAPIC object)."""

    def __init__(self, store: Any) -> None:
        self.requests: list[dict[str, Any]] = []
        self.on = True  # off while the test itself reads documents
        api = store._client._firestore_api
        for name in ("run_query", "run_aggregation_query"):
            setattr(api, name, self._wrap(getattr(api, name)))

    def _wrap(self, original):
        def call(*args, **kwargs):
            if self.on:
                self.requests.append(_plain(kwargs.get("request", args[0] if args else None)))
            return original(*args, **kwargs)

        return call

    def shapes(self) -> set[Shape]:
        return {shape_of(r) for r in self.requests}


def _event(i: int, now: float, name: str, **kw) -> UsageEvent:
    fail = i % 5 == 0
    fields: dict[str, Any] = {
        "status_code": 503 if fail else 200,
        "model": "gemini-2.5-pro" if i % 2 else "gemini-2.5-flash",
        "stream": i % 3 == 0,
        "error": "503 UNAVAILABLE" if fail else "",
        "id": f"{name}-row-{i:04d}",
        "access_key": "ak_0123456789ab" if i % 4 == 0 else "anonymous",
        "total_tokens": 10,
    }
    fields.update(kw)
    return UsageEvent(name, f"k{i % 3:04d}", now - 600 + i, not fail, **fields)


def _log_queries(now: float) -> list[LogQuery]:
    """Every filter combination the log list can send: no group or a group, each tag filter or none (the model
    prefix), with and without a time range and text."""
    singles: list[dict[str, Any]] = [
        {},
        {"key_id": "k0001"},
        {"access_key": "ak_0123456789ab"},
        {"status_code": 503},
        {"success": False},
        {"stream": True},
        {"model": "gemini-2.5-p"},
        {"model": "gemini", "status_code": 200},
        {"text": "unavailable"},
    ]
    out = []
    for g in (None, "g1"):
        for one in singles:
            for span in ({}, {"since": now - 300}, {"until": now - 100}, {"since": now - 500, "until": now}):
                out.append(LogQuery(group=g, **one, **span))
    return out


@pytest.fixture(scope="module")
def run():
    """The store's every query method, on the emulator, recorded; and the documents it wrote."""
    host = os.environ.get("FIRESTORE_EMULATOR_HOST", "")
    require(bool(host), "FIRESTORE_EMULATOR_HOST is not set (.ci/firestore-emulator.sh start)")
    store = firestore_store(host, f"indexes-{uuid.uuid4().hex[:10]}")  # a project of its own
    recorder = QueryRecorder(store)
    now = time.time()
    try:
        store.create_group(group("g1"))
        store.create_group(group("g2"))
        store.add_keys("g1", records("g1", 6), {f"k{i:04d}": b"ciphertext-%d" % i for i in range(6)})
        store.add_keys("g2", records("g2", 2), {})
        store.set_key_notes("g1", "k0001", "a note")
        store.put_task({"id": "t1", "kind": "import", "state": "done"})
        store.put_binding(Binding("resource", "files/abc", "g2", "k0000", "http://127.0.0.1:1", now + 600))
        store.create_access_key(AccessKey(id="ak_0123456789ab", name="a", digest="00" * 32, masked="sk-a...0000"))
        events = [_event(i, now, "g1") for i in range(40)] + [_event(i, now, "g2") for i in range(10)]
        store.record_usage(events)
        store.record_usage([_event(99, now, "g1", logged=False, id="unlogged")])  # its commit's batch marker
        # the key list: import order from the index (each status it serves, both directions), then a scan
        for status in (None, INVALID, DISABLED):
            for descending in (False, True):
                store.query_keys("g1", KeyQuery(status=status, descending=descending), 0, 3)
        store.query_keys("g1", KeyQuery(text="AIza"), 0, 10)  # scan, kept as the view
        store.set_disabled("g1", ["k0002"], True)  # only the state marker moves: the view re-reads changed keys
        store.query_keys("g1", KeyQuery(text="AIza"), 0, 10)
        store.list_keys("g1")
        store.get_secrets("g1")
        store.changed_keys("g1", now - 60)
        store.restore_keys("g1", None)
        for q in _log_queries(now):
            store.query_logs(q, 0, 5)
            store.query_logs(q, 0, 0)  # a count alone
        store.get_log("g1-row-0007")
        store.get_log("no-such-row")
        store.hourly_stats("g1", now - 7200)
        store.hourly_stats(None, now - 7200)
        store.group_totals(now - 7200)
        store.requests_since(now - 60)
        store.requests_since(now - 60, "g1")
        store.access_usage(now - 7200)
        store.access_usage(now - 7200, "ak_0123456789ab")
        store.heartbeat("instance-1", now, now - 30)
        store.list_groups()
        store.list_access_keys()
        store.get_settings()
        store.purge_logs(now - 580)  # rewrites the page straddling the cut, deletes g2's
        store.purge_expired(now)
        recorder.on = False
        written = _documents(store)
        recorder.on = True
        store.delete_group("g2")  # keys scan and the bindings query
        yield recorder, written
    finally:
        store.close()


def _documents(store: Any) -> dict[str, list[dict[str, Any]]]:
    """Every document of every collection the exemptions name, as stored (subcollections by collection id)."""
    client = store._client
    names = {c for c, _f in schema.index_exempt_fields()}
    return {name: [s.to_dict() or {} for s in client.collection_group(name).stream()] for name in names}


def _declared() -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    return [
        (ix["collection"], ix.get("query_scope", "COLLECTION"), tuple((f, o) for f, o in ix["fields"]))
        for ix in schema.FIRESTORE_INDEXES
    ]


def test_every_query_ran_and_the_model_decides_each(run):
    recorder, _written = run
    shapes = recorder.shapes()
    assert len(recorder.requests) > 150 and len(shapes) > 20
    needs = [need_of(s) for s in shapes]  # raises on a shape the model does not decide
    print(f"{len(recorder.requests)} query requests, {len(shapes)} shapes")
    for collection in ("log_pages", "keys", "stats_hourly", "bindings", "access_hourly", "instances"):
        assert any(n.collection == collection for n in needs), collection


def test_declared_composite_indexes_are_exactly_those_the_queries_need(run):
    recorder, _written = run
    needs = {need_of(s) for s in recorder.shapes()}
    composite = {n for n in needs if n.composite is not None}
    declared = _declared()
    unserved = [n for n in composite if not any(serves(ix, n) for ix in declared)]
    unused = [ix for ix in declared if not any(serves(ix, n) for n in composite)]
    assert unserved == [], "queries that would fail in production without these indexes"
    assert unused == [], "declared indexes no query of the adapter uses"
    assert len(declared) == len(set(declared))
    retired = [
        (ix["collection"], ix["query_scope"], tuple((f, o) for f, o in ix["fields"])) for ix in schema.RETIRED_INDEXES
    ]
    assert not [ix for ix in retired if any(serves(ix, n) for n in needs)], "a retired index is used again"
    assert not [n for n in needs if n.collection == "request_logs" and n.composite is not None]


def _conflicts(shapes: set[Shape], exempt: set[tuple[str, str]]) -> list[tuple[str, str, Shape]]:
    out = []
    for s in shapes:
        fields = {f for c, f in exempt if c == s.collection}
        out += [(s.collection, f, s) for f in sorted(s.fields()) if covered(f, fields)]
    return out


def test_no_queried_field_is_exempted(run):
    recorder, _written = run
    shapes = recorder.shapes()
    assert _conflicts(shapes, schema.index_exempt_fields()) == []
    # the check can fail: exempting the ids get_log looks a row up by, or the tags the log list narrows by
    for planted in (("log_pages", "ids"), ("log_pages", "tags"), ("keys", "status"), ("stats_hourly", "group")):
        assert _conflicts(shapes, schema.index_exempt_fields() | {planted}), planted


def test_every_exempted_field_is_one_the_store_writes(run):
    _recorder, written = run
    for collection, field in sorted(schema.index_exempt_fields()):
        docs = written[collection]
        if collection in ("request_logs", "stats_minute"):
            continue  # written by earlier versions only (their TTL policies remove what is left)
        assert any(field in d for d in docs), (collection, field, [sorted(d) for d in docs][:3])
    pages = written["log_pages"]
    assert pages and all(isinstance(p["rows"], bytes) and p["ids"] for p in pages)
    assert all(not t.startswith("m:") for p in pages for t in p["tags"]), "pages carry no model tags"


def test_the_run_covers_every_filter_order_and_aggregation_in_the_source(run):
    recorder, _written = run
    source = STORE_SOURCE.read_text()
    filters = {(f, SDK_OPS[op]) for f, op in re.findall(r'(?:FieldFilter|ff)\(\s*"([\w.]+)",\s*"([^"]+)"', source)}
    orders = set(re.findall(r'order_by\(\s*"([\w.]+)"', source))
    sums = set(re.findall(r'\.sum\(\s*"([\w.]+)"', source))
    assert len(filters) >= 12 and orders >= {"__name__", "created_at", "last_at"} and sums == {"count"}
    recorded_filters = {pair for s in recorder.shapes() for pair in s.filters}
    assert filters <= recorded_filters, filters - recorded_filters
    assert orders <= {f for s in recorder.shapes() for f, _d in s.orders}
    assert sums <= {f for s in recorder.shapes() for f in s.aggregated}
    # and every operator the source uses is one the model knows
    assert {op for _f, op in filters} <= set(EQUALITY) | RANGE


def test_index_entries_the_exemptions_save_on_the_documents_written(run):
    _recorder, written = run
    exempt = schema.index_exempt_fields()
    lines = []
    for collection in sorted(written):
        docs = written[collection]
        if not docs:
            continue
        fields = {f for c, f in exempt if c == collection}
        before = sum(single_field_entries(d, set()) for d in docs)
        after = sum(single_field_entries(d, fields) for d in docs)
        assert after < before and all(single_field_entries(d, fields) < LIMIT_ENTRIES for d in docs), collection
        lines.append(f"ITEM index entries {collection}: {len(docs)} documents, {before} -> {after}")
    print("\n" + "\n".join(lines))
