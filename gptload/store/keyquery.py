"""``KeyQuery`` applied to key records in memory: the reference the SQLite adapter's SQL must agree with, and what
the Firestore adapter runs on its scan of a group's keys. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

from gptload.models import STATUS_RANK, KeyQuery, KeyRecord


def matches(record: KeyRecord, query: KeyQuery) -> bool:
    """Does ``record`` pass every filter of ``query``?"""
    if query.key_id is not None and record.id != query.key_id:
        return False
    if query.status and record.state.display_status(query.now) != query.status:
        return False
    if query.text:
        needle = query.text.lower()
        if not any(needle in field.lower() for field in (record.masked, record.notes, record.state.last_error)):
            return False
    return True


def sort_value(record: KeyRecord, query: KeyQuery) -> float:
    """The value ``query.sort`` orders by."""
    if query.sort == "requests":
        return record.request_count
    if query.sort == "failures":
        return record.failure_total
    if query.sort == "last_used":
        return record.last_used_at
    if query.sort == "status":
        return STATUS_RANK[record.state.display_status(query.now)]
    return record.created_at


def select(records: Iterable[KeyRecord], query: KeyQuery, offset: int, limit: int) -> tuple[list[KeyRecord], int]:
    """The page ``[offset, offset + limit)`` of the matching records in ``query``'s order, and the match count.
    Ties are broken by created_at, then id, in the same direction (what an index scan in one direction gives)."""
    found = sorted(
        (r for r in records if matches(r, query)), key=lambda r: (r.created_at, r.id), reverse=query.descending
    )
    if query.sort != "created":
        found.sort(key=lambda r: sort_value(r, query), reverse=query.descending)  # stable: ties keep their order
    return found[offset : offset + limit], len(found)
