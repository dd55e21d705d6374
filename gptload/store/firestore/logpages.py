"""Request-log pages: many log rows packed into one Firestore document. Pure: no I/O, no clock.

One page holds the logged attempts of one group and one hour bucket from one flush (at most ``PAGE_ROWS`` rows and
``PAGE_BYTES`` compressed), so a flush of 500 logged requests is one document write instead of 500. Rows are
flexible records: the whole ``UsageEvent.log_row()`` dict plus ``request_body``, JSON-encoded and zlib-compressed
into one bytes field, so a field added to log rows passes through without a schema change (and encoding is one C
call instead of the SDK's per-value protobuf conversion).

Beside the rows, a page carries what lets Firestore pick pages without opening them: ``group``, ``hour``,
``first_at``/``last_at`` (the rows' time span), ``count``, ``ids`` (the rows' log ids, for ``get_log``) and
``tags``, one short string per distinct value of each equality filter (``FILTER_TAGS``), queried with
``array-contains``. A query uses at most one tag server-side (Firestore allows one ``array-contains`` per query);
every filter is applied again to the decoded rows by ``row_matches``, so pages only need to be a superset.
Pages carry only tags that ``query_tag`` can ask for: pages written by earlier versions also carry ``m:{model}``
tags (``LEGACY_TAG_PREFIXES``), which no query reads, so they read the same.

To add a log filter: add the ``LogQuery`` field, an entry to ``FILTER_TAGS`` when an equality on a row field
should narrow pages server-side (or to ``PREFIX_FILTERS`` for a prefix match, which no tag serves), and its test
to ``row_matches`` (the single place rows are judged).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gptload.models import LogQuery
from gptload.store.firestore.mappers import log_view

PAGE_ROWS = 500  # rows per page (a flush is 500 events by default: one page per group and hour)
PAGE_BYTES = 900_000  # compressed rows + tags + ids per page; Firestore's document limit is 1 MiB
ENCODE_ROWS = 100  # rows JSON-encoded in one piece (see encode_rows)
COMMIT_BYTES = 3_500_000  # encoded bytes per usage commit (all its writes); the emulator takes 4 MiB, Firestore 10 MiB

# (LogQuery attribute, tag prefix, row field), in order of preference for the server-side tag: the first set
# attribute of a query becomes its ``array-contains`` filter (key ids are the most selective). Every entry is a tag
# some query asks for (tests/unit/test_logpages.py), so pages carry no tag that nothing reads.
FILTER_TAGS: tuple[tuple[str, str, str], ...] = (
    ("key_id", "k", "key_id"),
    ("access_key", "a", "access_key"),
    ("status_code", "s", "status_code"),
    ("success", "ok", "success"),
    ("stream", "st", "stream"),
)
# (LogQuery attribute, row field) matched as a prefix of the row's value: judged on the rows only (no tag serves a
# prefix), so a model filter narrows pages by the other filters, or reads every page in the range.
PREFIX_FILTERS: tuple[tuple[str, str], ...] = (("model", "model"),)
# Tag prefixes that pages written by earlier versions carry and no query asks for (``m:{model}``, before the model
# filter became a prefix): ignored, never written again (a page ``purge_logs`` rewrites loses them).
LEGACY_TAG_PREFIXES: tuple[str, ...] = ("m",)


def tag(prefix: str, value: Any) -> str:
    """The tag of one row value: ``k:abc``, ``s:503``, ``ok:1``."""
    if isinstance(value, bool):
        value = int(value)
    return f"{prefix}:{value}"


def query_tag(q: LogQuery) -> str | None:
    """The one tag a query narrows pages by (None: no equality filter that tags serve)."""
    for attr, prefix, _field in FILTER_TAGS:
        value = getattr(q, attr)
        if value is not None:
            return tag(prefix, value)
    return None


def row_matches(q: LogQuery) -> Callable[[dict[str, Any]], bool]:
    """The predicate of every ``LogQuery`` filter on a decoded row (same meaning as the SQLite adapter's SQL)."""
    checks: list[Callable[[dict[str, Any]], bool]] = []
    if q.group is not None:
        checks.append(lambda r: r.get("group") == q.group)
    for attr, _tag, field in FILTER_TAGS:
        value = getattr(q, attr)
        if value is not None:
            checks.append(_equals(field, value))
    for attr, field in PREFIX_FILTERS:
        value = getattr(q, attr)
        if value is not None:
            checks.append(_prefix(field, value))
    if q.since is not None:
        since = float(q.since)
        checks.append(lambda r: float(r.get("at") or 0) >= since)
    if q.until is not None:
        until = float(q.until)
        checks.append(lambda r: float(r.get("at") or 0) < until)
    if q.text:  # case-insensitive for ASCII letters only, as SQLite's lower() in the SQLite adapter
        needle = q.text.translate(_ASCII_LOWER)
        checks.append(lambda r: needle in str(r.get("error") or "").translate(_ASCII_LOWER))
    return lambda r: all(c(r) for c in checks)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _equals(field: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r.get(field) == value


def _prefix(field: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    start = str(value)
    return lambda r: str(r.get(field) or "").startswith(start)


def has_row_filters(q: LogQuery) -> bool:
    """Does the query filter rows within pages (anything but the group)? Then totals need the rows."""
    attrs = [attr for attr, _p, _f in FILTER_TAGS] + [attr for attr, _f in PREFIX_FILTERS]
    return any(getattr(q, attr) is not None for attr in attrs) or bool(
        q.since is not None or q.until is not None or q.text
    )


def newest_first(row: dict[str, Any]) -> tuple[float, str]:
    """Sort key of log rows: newest first, ties by id ascending (as the SQLite adapter orders them)."""
    return (-float(row.get("at") or 0), str(row.get("id") or ""))


def list_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as ``query_logs`` returns it: every stored field except the request body (fields this version does
    not know pass through), ``LOG_FIELDS`` with the defaults of ``mappers.log_view`` for rows written earlier."""
    out = {k: v for k, v in row.items() if k != "request_body"}
    out.update(log_view(row))
    return out


def encode_rows(rows: list[dict[str, Any]], pause: Callable[[], None] = lambda: None) -> bytes:
    """The rows as one zlib-compressed JSON array, encoded ``ENCODE_ROWS`` rows at a time with ``pause()``
    between the pieces (JSON encoding holds the GIL: ~0.6 ms per 100 rows)."""
    z = zlib.compressobj(6)
    parts = [z.compress(b"[")]
    for i in range(0, len(rows), ENCODE_ROWS):
        if i:
            pause()
            parts.append(z.compress(b","))
        parts.append(z.compress(json.dumps(rows[i : i + ENCODE_ROWS], separators=(",", ":"))[1:-1].encode()))
    parts += [z.compress(b"]"), z.flush()]
    return b"".join(parts)


def decode_rows(blob: bytes) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(zlib.decompress(blob))
    return rows


@dataclass(frozen=True)
class Page:
    """One page as written: ``fields`` minus the TTL timestamp, which the adapter adds."""

    group: str
    hour: float
    rows: tuple[dict[str, Any], ...]
    blob: bytes
    tags: tuple[str, ...] = ()  # ``page_tags(rows)`` when already computed (pack sizes pages with them)

    def fields(self) -> dict[str, Any]:
        ats = [float(r["at"]) for r in self.rows]
        return {
            "group": self.group,
            "hour": self.hour,
            "first_at": min(ats),
            "last_at": max(ats),
            "count": len(self.rows),
            "ids": [str(r["id"]) for r in self.rows],
            "tags": list(self.tags) if self.tags else page_tags(self.rows),
            "rows": self.blob,
        }


def page_tags(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The distinct ``FILTER_TAGS`` values of ``rows``: field by field in ``FILTER_TAGS`` order, each field's values
    in first-seen order. Distinct values are found first (a C-level pass per field), so a page of 500 rows costs a
    few dozen ``tag`` calls, not 3,000, in the usage flush."""
    rows = rows if isinstance(rows, list | tuple) else list(rows)
    tags: dict[str, None] = {}
    for _attr, prefix, field in FILTER_TAGS:
        for value in dict.fromkeys([r.get(field) for r in rows]):
            tags[tag(prefix, value)] = None
    return list(tags)


def page_bytes(rows: list[dict[str, Any]], blob: bytes, tags: list[str]) -> int:
    """About what a page of ``rows`` weighs in Firestore: the compressed rows plus its ``tags`` and ``ids`` arrays
    (the other fields are a few dozen bytes)."""
    return len(blob) + sum(len(t.encode()) + 1 for t in tags) + sum(len(str(r["id"])) + 1 for r in rows)


def pack(
    rows: Iterable[dict[str, Any]], hour_of: Callable[[float], float], pause: Callable[[], None] = lambda: None
) -> list[Page]:
    """Pages of ``rows`` (each with ``group``, ``at``, ``id``): grouped by (group, hour), oldest first, split at
    ``PAGE_ROWS`` rows and halved again while the page (compressed rows, tags and ids) exceeds ``PAGE_BYTES``.
    The same rows in any order give the same pages in the same order (page names derive from it: a retried batch
    must meet its own).
    ``pause`` is called between pieces of work (the adapter lets other threads run there)."""
    buckets: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        buckets.setdefault((str(r["group"]), hour_of(float(r["at"]))), []).append(r)
    pages: list[Page] = []
    for (group, hour), members in sorted(buckets.items()):
        members.sort(key=lambda r: (float(r["at"]), str(r["id"])))
        for i in range(0, len(members), PAGE_ROWS):
            pages.extend(_sized(group, hour, members[i : i + PAGE_ROWS], pause))
    return pages


def _sized(group: str, hour: float, rows: list[dict[str, Any]], pause: Callable[[], None]) -> list[Page]:
    blob = encode_rows(rows, pause)
    pause()
    tags = page_tags(rows)
    pause()
    if page_bytes(rows, blob, tags) <= PAGE_BYTES or len(rows) == 1:
        return [Page(group, hour, tuple(rows), blob, tuple(tags))]
    half = len(rows) // 2
    return _sized(group, hour, rows[:half], pause) + _sized(group, hour, rows[half:], pause)
