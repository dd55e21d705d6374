"""Which index a Firestore query needs: a model of Firestore's documented rules (Native mode, Standard edition), for
tests that derive the indexes from the queries the adapter really sends. The emulator runs any query without an
index, so this model is what stands between a query and a FAILED_PRECONDITION ("The query requires an index") in
production; tests/unit/test_firestore_index_model.py pins it on Firestore's documented examples.

A query is read from the request the SDK sends (``RunQuery`` / ``RunAggregationQuery``, as a dict in the proto's
field names). The rules (firebase.google.com/docs/firestore/query-data/index-overview and /indexing):

- no filter and no order other than the document name: no index (the built-in ``__name__`` index);
- equality filters (``==``, ``array-contains``) only: the automatic single-field index of each field, merged;
- one field ordered or ranged, nothing else: that field's automatic single-field index (either direction);
- anything else (an equality plus an order or range on another field, two ordered fields): a composite index
  holding the equality fields (any order; ``array-contains`` as CONTAINS) followed by the ordered fields in the
  query's order and directions. A trailing order on ``__name__`` in the direction of the last order is implied.
  The dedicated composite is required: merging composites (zig-zag) is possible in Firestore but not modelled, so
  a query it would serve counts as needing its own index (the adapter declares exactly those).

Anything outside this (``!=``, ``in``, ``or``, several range fields, collection-group scope, a ``__name__`` order
against the last order's direction) raises ``Unmodelled``: a test then fails instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EQUALITY = {"EQUAL": "ASCENDING", "ARRAY_CONTAINS": "CONTAINS"}
RANGE = {"LESS_THAN", "LESS_THAN_OR_EQUAL", "GREATER_THAN", "GREATER_THAN_OR_EQUAL"}
NAME = "__name__"


class Unmodelled(ValueError):
    """A query shape this model does not decide (fail the test, extend the model with a documented rule)."""


@dataclass(frozen=True)
class Shape:
    """What of a query decides its index: where it reads, what it filters, orders and aggregates."""

    collection: str
    scope: str  # COLLECTION | COLLECTION_GROUP
    equalities: frozenset[tuple[str, str]]  # (field, ASCENDING | CONTAINS)
    ranges: frozenset[str]  # fields with <, <=, >, >=
    orders: tuple[tuple[str, str], ...]  # explicit order_by (field, ASCENDING | DESCENDING), ``__name__`` included
    aggregated: frozenset[str] = frozenset()  # fields of sum() / avg()
    filters: frozenset[tuple[str, str]] = frozenset()  # every (field, operator) as sent, e.g. ("hour", "LESS_THAN")

    def fields(self) -> set[str]:
        """Every field the query filters, orders or aggregates on (``__name__`` excluded)."""
        out = {f for f, _ in self.equalities} | set(self.ranges) | {f for f, _ in self.orders} | set(self.aggregated)
        return out - {NAME}


@dataclass(frozen=True)
class Need:
    """The index a shape needs: ``single`` (field, mode) automatic single-field indexes, or one ``composite``."""

    collection: str
    single: frozenset[tuple[str, str]] = frozenset()
    composite: tuple[str, frozenset[tuple[str, str]], tuple[tuple[str, str], ...]] | None = None
    # composite: (scope, equality fields with their mode, ordered fields with their direction)


def _field(ref: dict[str, Any]) -> str:
    return str(ref["field_path"])


def _filters(where: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not where:
        return []
    if "composite_filter" in where:
        cf = where["composite_filter"]
        if cf.get("op") != "AND":
            raise Unmodelled(f"composite filter {cf.get('op')}")
        return [pair for f in cf.get("filters", []) for pair in _filters(f)]
    if "field_filter" in where:
        ff = where["field_filter"]
        return [(_field(ff["field"]), str(ff["op"]))]
    raise Unmodelled(f"filter {sorted(where)}")


def shape_of(request: dict[str, Any]) -> Shape:
    """The shape of a ``RunQuery`` or ``RunAggregationQuery`` request (proto field names, enums by name)."""
    aggregated: set[str] = set()
    if "structured_aggregation_query" in request:
        agg = request["structured_aggregation_query"]
        query = agg["structured_query"]
        for a in agg.get("aggregations", []):
            for kind in ("sum", "avg"):
                if a.get(kind):
                    aggregated.add(_field(a[kind]["field"]))
    else:
        query = request["structured_query"]
    (source,) = query.get("from_") or query["from"]
    scope = "COLLECTION_GROUP" if source.get("all_descendants") else "COLLECTION"
    equalities: set[tuple[str, str]] = set()
    ranges: set[str] = set()
    filters = _filters(query.get("where"))
    for field, op in filters:
        if op in EQUALITY:
            equalities.add((field, EQUALITY[op]))
        elif op in RANGE:
            ranges.add(field)
        else:
            raise Unmodelled(f"operator {op} on {field}")
    orders = tuple((_field(o["field"]), str(o.get("direction") or "ASCENDING")) for o in query.get("order_by", []))
    return Shape(
        str(source["collection_id"]),
        scope,
        frozenset(equalities),
        frozenset(ranges),
        orders,
        frozenset(aggregated),
        frozenset(filters),
    )


def need_of(shape: Shape) -> Need:
    """The index ``shape`` needs under the rules above."""
    if shape.scope != "COLLECTION":
        raise Unmodelled("collection-group queries need single-field exemptions or composites of their own")
    if len(shape.ranges) > 1:
        raise Unmodelled(f"range filters on several fields {sorted(shape.ranges)}")
    orders = list(shape.orders)
    if shape.ranges and not orders:
        orders = [(next(iter(shape.ranges)), "ASCENDING")]  # Firestore orders by the range field first
    elif shape.ranges and orders[0][0] not in shape.ranges:
        raise Unmodelled("a range filter must be on the first ordered field")
    if orders and orders[-1][0] == NAME:
        name_dir = orders.pop()[1]
        last_dir = orders[-1][1] if orders else "ASCENDING"
        if orders and name_dir != last_dir:
            raise Unmodelled("__name__ ordered against the last order's direction")
    if any(f == NAME for f, _ in orders):
        raise Unmodelled("__name__ ordered before another field")
    if not orders:
        return Need(shape.collection, single=shape.equalities)
    if not shape.equalities and len(orders) == 1:
        return Need(shape.collection, single=frozenset(orders))
    return Need(shape.collection, composite=(shape.scope, shape.equalities, tuple(orders)))


def serves(index: tuple[str, str, tuple[tuple[str, str], ...]], need: Need) -> bool:
    """Does the declared composite ``(collection, scope, ((field, mode), ...))`` serve ``need``'s composite?"""
    collection, scope, fields = index
    if need.composite is None or collection != need.collection:
        return False
    want_scope, equalities, orders = need.composite
    n = len(equalities)
    return (
        scope == want_scope
        and len(fields) == n + len(orders)
        and set(fields[:n]) == equalities
        and (tuple(fields[n:]) == orders)
    )


def covered(field: str, exempt: set[str]) -> bool:
    """Is ``field`` (a dotted path) exempted, itself or through a map it lies in?"""
    parts = field.split(".")
    return any(".".join(parts[:i]) in exempt for i in range(1, len(parts) + 1))


LIMIT_ENTRIES = 40_000  # index entries per document (Firestore's limit)


def single_field_entries(doc: dict[str, Any], exempt: set[str], prefix: str = "") -> int:
    """Index entries the automatic single-field indexes hold for ``doc``: 2 per value that is neither an array nor
    a map (ascending and descending), 1 per distinct array element (array-contains), map subfields recursively;
    nothing under an exempted path."""
    total = 0
    for name, value in doc.items():
        path = f"{prefix}{name}"
        if covered(path, exempt):
            continue
        if isinstance(value, dict):
            total += single_field_entries(value, exempt, f"{path}.")
        elif isinstance(value, list):
            total += len({repr(v) for v in value})
        else:
            total += 2
    return total
