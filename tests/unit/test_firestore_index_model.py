"""The index model (tests/firestore_indexes.py) on the examples of Firestore's index documentation: which queries
the automatic single-field indexes serve and which need a composite index."""

from __future__ import annotations

import pytest

from tests.firestore_indexes import Need, Unmodelled, covered, need_of, serves, shape_of


def _ff(field: str, op: str) -> dict:
    return {"field_filter": {"field": {"field_path": field}, "op": op, "value": {"integer_value": "1"}}}


def _request(*filters: dict, orders=(), collection="cities", group=False, sums=()) -> dict:
    query: dict = {"from_": [{"collection_id": collection, "all_descendants": group}]}
    if len(filters) == 1:
        query["where"] = filters[0]
    elif filters:
        query["where"] = {"composite_filter": {"op": "AND", "filters": list(filters)}}
    if orders:
        query["order_by"] = [{"field": {"field_path": f}, "direction": d} for f, d in orders]
    if sums:
        aggs = [{"alias": "s", "sum": {"field": {"field_path": f}}} for f in sums]
        return {"structured_aggregation_query": {"structured_query": query, "aggregations": aggs}}
    return {"structured_query": query}


def need(*filters, **kw) -> Need:
    return need_of(shape_of(_request(*filters, **kw)))


ASC, DESC = "ASCENDING", "DESCENDING"


def test_what_single_field_indexes_serve():
    assert need() == Need("cities")  # no filter: the built-in document-name index
    assert need(orders=[("__name__", ASC)]) == Need("cities")
    assert need(_ff("state", "EQUAL")).single == {("state", ASC)}
    assert need(_ff("state", "EQUAL"), _ff("capital", "EQUAL")).single == {("state", ASC), ("capital", ASC)}  # merged
    assert need(_ff("regions", "ARRAY_CONTAINS")).single == {("regions", "CONTAINS")}
    assert need(_ff("population", "GREATER_THAN")).single == {("population", ASC)}
    assert need(_ff("population", "LESS_THAN"), orders=[("population", DESC)]).single == {("population", DESC)}
    assert need(orders=[("population", DESC), ("__name__", DESC)]).single == {("population", DESC)}
    assert need(_ff("state", "EQUAL"), orders=[("__name__", ASC)]).single == {("state", ASC)}  # paging a scan
    assert need(_ff("a", "EQUAL"), sums=["count"]).single == {("a", ASC)}  # an aggregation uses its query's index


def test_what_needs_a_composite_index():
    n = need(_ff("state", "EQUAL"), orders=[("population", DESC)])
    assert n.single == frozenset() and n.composite == ("COLLECTION", {("state", ASC)}, (("population", DESC),))
    n = need(_ff("state", "EQUAL"), _ff("population", "GREATER_THAN_OR_EQUAL"))  # implicit order by the range
    assert n.composite == ("COLLECTION", {("state", ASC)}, (("population", ASC),))
    n = need(_ff("regions", "ARRAY_CONTAINS"), _ff("state", "EQUAL"), orders=[("at", DESC), ("__name__", DESC)])
    assert n.composite == ("COLLECTION", {("regions", "CONTAINS"), ("state", ASC)}, (("at", DESC),))
    assert need(orders=[("state", ASC), ("population", DESC)]).composite == (
        "COLLECTION",
        frozenset(),
        (("state", ASC), ("population", DESC)),
    )


@pytest.mark.parametrize(
    "request_",
    [
        _request(_ff("a", "NOT_EQUAL")),
        _request(_ff("a", "IN")),
        _request(_ff("a", "LESS_THAN"), _ff("b", "GREATER_THAN")),
        _request(_ff("a", "EQUAL"), collection="keys", group=True),
        _request(orders=[("a", ASC), ("__name__", DESC)]),
        _request(_ff("a", "LESS_THAN"), orders=[("b", ASC)]),
        {"structured_query": {"from_": [{"collection_id": "c"}], "where": {"composite_filter": {"op": "OR"}}}},
    ],
)
def test_shapes_outside_the_model_are_refused(request_):
    with pytest.raises(Unmodelled):
        need_of(shape_of(request_))


def test_a_composite_serves_its_shape_only():
    n = need(_ff("group", "EQUAL"), _ff("tags", "ARRAY_CONTAINS"), orders=[("last_at", DESC)], collection="log_pages")
    index = ("log_pages", "COLLECTION", (("group", ASC), ("tags", "CONTAINS"), ("last_at", DESC)))
    assert serves(index, n)
    assert serves(("log_pages", "COLLECTION", (("tags", "CONTAINS"), ("group", ASC), ("last_at", DESC))), n)
    assert not serves(("log_pages", "COLLECTION", (("group", ASC), ("tags", "CONTAINS"), ("last_at", ASC))), n)
    assert not serves(("log_pages", "COLLECTION", (("group", ASC), ("last_at", DESC))), n)
    assert not serves(("request_logs", "COLLECTION", index[2]), n)
    assert not serves(("log_pages", "COLLECTION_GROUP", index[2]), n)
    assert not serves(index, need(_ff("group", "EQUAL"), collection="log_pages"))  # single-field needs no composite


def test_an_exempted_map_covers_its_subfields():
    assert covered("k", {"k"}) and covered("k.abc.n", {"k"}) and covered("m.1700000000", {"m"})
    assert not covered("kk", {"k"}) and not covered("group", {"k", "m"})


def test_index_entries_of_a_usage_document_and_the_limit():
    from tests.firestore_indexes import LIMIT_ENTRIES, single_field_entries

    page = {"group": "g", "count": 2, "ids": ["a", "b"], "tags": ["k:1", "s:200", "s:200"], "rows": b"x" * 10}
    assert single_field_entries(page, set()) == 2 + 2 + 2 + 2 + 2 and single_field_entries(page, {"rows"}) == 8
    usage = {"s": True, "k": {f"{i:016x}": {"n": 1, "f": 0, "tok": 10, "at": 1.0} for i in range(5000)}}
    assert single_field_entries(usage, set()) == 40_002 > LIMIT_ENTRIES  # 5,000 keys with counters: over
    assert single_field_entries(usage, {"k"}) == 2
