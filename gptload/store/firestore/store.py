"""The Firestore adapter of the Store port (``STORE=firestore``); the data model and costs are in
``docs/firestore.md``.

Where transactions are: key state (``apply_verdict``, ``restore_keys``), ``add_keys`` dedupe and ``delete_keys``
counts run in transactions that read only the keys' own documents (plus the group document when adding); the
marker shard is written blind (Increment, never read inside a transaction), so it adds no read contention.
Counters (``record_usage``) are Increment/Maximum transforms in batches of at most 500 writes, no transaction.
"""

from __future__ import annotations

import heapq
import json
import logging
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from gptload.errors import Conflict, GroupExists, GroupNotFound, NotFound, StoreRejected, StoreUnavailable
from gptload.keypool.classify import Verdict
from gptload.keypool.state import Policy, disabled, enabled, restored, transition
from gptload.models import DISABLED, INVALID, AccessKey, Group, KeyQuery, KeyRecord, KeyState, LogQuery, UsageEvent
from gptload.settings import Settings
from gptload.store import keyquery
from gptload.store.base import Binding, batch_key, chunks
from gptload.store.firestore import logpages
from gptload.store.firestore.client import (
    BATCH_LIMIT,
    RPC_TIMEOUT_SECONDS,
    SCAN_TIMEOUT_SECONDS,
    FirestoreConnection,
    already_applied,
    invalid_request,
)
from gptload.store.firestore.mappers import (
    KEY_VIEW_FIELDS,
    doc_id,
    group_doc,
    key_doc,
    state_fields,
    timestamp,
    to_group,
    to_log,
    to_record,
    with_usage,
)
from gptload.store.firestore.schema import DAY, INSTANCE_TTL, TASK_TTL, USAGE_BATCH_TTL
from gptload.store.firestore.writes import WriteEncoder
from gptload.store.rollup import ACCESS_STAT_FIELDS, STAT_FIELDS, hour_of, rollup

log = logging.getLogger(__name__)

TX_CHUNK = 100  # documents read and written by one multi-key transaction
IMPORT_CHUNK = BATCH_LIMIT - 2  # keys created per batch by add_keys (+ the usage entry and the marker)
SECRET_HANDOFF_SECONDS = 2.0  # see list_keys / get_secrets
LOG_SCAN_PAGES = 200  # log pages (newest first) one filtered query_logs reads at most (up to 100,000 rows)
PAGE_READ = 20  # log pages per query RPC while scanning (a read stops early without paying for the rest)
COMMIT_WRITE_OVERHEAD = 16  # a Write's field tag and length prefix in the CommitRequest, rounded up
COMMIT_REQUEST_OVERHEAD = 4096  # the database name, the batch marker (a usage_batches document), gRPC framing
FIELD_TRANSFORMS_LIMIT = 500  # Firestore: field transforms on one document per commit (the emulator lets more by)
PACE_SECONDS = 0.0002  # pause between steps of a usage flush (see _yield_gil)
PURGE_LIMIT = 2000  # log pages one purge_logs call deletes or rewrites at most (the TTL policy does the bulk)
KEY_VIEW_MAX_AGE = 120.0  # seconds a scanned key list serves query_keys (kept in step with key states meanwhile)
STATE_SYNC_MARGIN_SECONDS = 30.0  # like the pool's: state_at is the server's clock, ours may be behind
SCAN_PAGE = 5000  # documents per RPC of a full scan of a group's keys
INDEXED_PAGE_LIMIT = 2000  # deeper pages of the import order come from a scan (skipped documents are billed)
# Per-key usage counters: one document ``key_usage/{group}`` while the group is small; from this many keys (as this
# instance last counted them) a flush writes ``key_usage/{group}:{shard}`` instead, one per hex digit (see
# ``usage_shard``), and marks the base document ``s: true`` so that readers also read (and sum) the shards.
USAGE_SHARD_THRESHOLD = 4000
USAGE_SHARDS = 16
_HEX = "0123456789abcdef"


def usage_shard(key_id: str) -> str:
    """The shard of a key's usage counters, a stable function of its id: the first hex digit of a key id (ids are
    fingerprints, so they spread evenly), or a digit from a CRC-32 of any other id."""
    first = key_id[:1].lower()
    if first and first in _HEX:
        return first
    return _HEX[zlib.crc32(key_id.encode()) % USAGE_SHARDS]


def _add_usage(into: dict[str, dict[str, Any]], entries: dict[str, Any]) -> None:
    """Sum usage entries (``n``, ``f``, ``tok`` are additive increments; ``at`` a maximum) into ``into``."""
    for kid, e in entries.items():
        if not isinstance(e, dict):
            continue
        have = into.get(kid)
        if have is None:
            into[kid] = dict(e)
            continue
        have["n"] = int(have.get("n") or 0) + int(e.get("n") or 0)
        have["f"] = int(have.get("f") or 0) + int(e.get("f") or 0)
        have["tok"] = int(have.get("tok") or 0) + int(e.get("tok") or 0)
        have["at"] = max(float(have.get("at") or 0.0), float(e.get("at") or 0.0))


class FirestoreStore(FirestoreConnection):
    kind = "firestore"

    def __init__(
        self,
        project: str,
        database: str = "(default)",
        client: Any = None,
        *,
        marker_shards: int = 4,
    ) -> None:
        super().__init__(project, database, client)
        self._shards = max(1, marker_shards)
        self._salt: bytes | None = None
        self._handoff: dict[str, tuple[float, dict[str, bytes]]] = {}
        self._handoff_lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._key_locks_guard = threading.Lock()
        self._retention_days = float(Settings().request_log_retention_days)
        self._encoder = WriteEncoder()
        self._documents_root = f"{self._client._database_string}/documents"
        # query_keys: per group,
        # (monotonic time of the scan, the markers it reflects, records without usage, wall time it started)
        self._key_views: dict[str, tuple[float, tuple[int, int], list[KeyRecord], float]] = {}
        # and the last indexed page: (monotonic time, markers, (status, descending, offset, limit), records, total)
        self._key_pages: dict[str, tuple[float, tuple[int, int], tuple[Any, ...], list[KeyRecord], int]] = {}
        # keys per group as this instance last counted them (list_keys, scans, imports): picks the usage layout
        self._key_counts: dict[str, int] = {}

    # -- document references and markers ------------------------------------------------------------------
    def _meta(self, name: str) -> Any:
        return self._client.collection("meta").document(name)

    def _group_ref(self, name: str) -> Any:
        return self._client.collection("groups").document(name)

    def _keys(self, group: str) -> Any:
        return self._group_ref(group).collection("keys")

    def _binding_ref(self, kind: str, name: str) -> Any:
        # Resource names contain "/", which a document id may not; percent-encoding is reversible and readable.
        return self._client.collection("bindings").document(quote(f"{kind}:{name}", safe=""))

    def _usage_ref(self, group: str, shard: str = "") -> Any:
        """``key_usage/{group}``, or its shard ``key_usage/{group}:{shard}`` (``doc_id`` never yields ':')."""
        name = doc_id(group) if not shard else f"{doc_id(group)}:{shard}"
        return self._client.collection("key_usage").document(name)

    def _count_keys(self, group: str, n: int | None = None, delta: int = 0) -> None:
        """Remember the group's key count (``n``), or move a known one by ``delta``."""
        if n is not None:
            self._key_counts[group] = n
        elif group in self._key_counts:
            self._key_counts[group] = max(0, self._key_counts[group] + delta)

    def _usage_sharded(self, group: str) -> bool:
        """Whether the group's counters may be in shards: the base document's ``s`` mark (1 read, projected)."""
        with self._boundary("usage read"):
            snap = self._usage_ref(group).get(field_paths=["s"], retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        return bool(snap.exists and (snap.to_dict() or {}).get("s"))

    def _bump(self, writer: Any, *names: str) -> None:
        """Move markers: a blind Increment of ``m.<name>`` on one random shard, inside the caller's batch or
        transaction (never read there, so it adds no contention). Nested dict keys are field-path segments, so
        names with ':' or '-' need no quoting."""
        shard = secrets.randbelow(self._shards)
        counters = {name: self._fs.Increment(1) for name in names}
        writer.set(self._meta(f"markers-{shard}"), {"m": counters}, merge=True)

    def _key_lock(self, group: str, key_id: str) -> threading.Lock:
        """Threads of this instance queue here for one key instead of colliding in Firestore transactions."""
        with self._key_locks_guard:
            return self._key_locks.setdefault((group, key_id), threading.Lock())

    def _forget_handoff(self, group: str) -> None:
        with self._handoff_lock:
            self._handoff.pop(group, None)
            self._key_views.pop(group, None)
            self._key_pages.pop(group, None)

    # -- meta -----------------------------------------------------------------------------------------------
    def markers(self) -> dict[str, int]:
        """One batched get of the S marker shards (S reads); each counter is the sum over the shards."""
        refs = [self._meta(f"markers-{i}") for i in range(self._shards)]
        with self._boundary("marker read"):
            snaps = list(self._client.get_all(refs, retry=self._retry, timeout=RPC_TIMEOUT_SECONDS))
        out: dict[str, int] = {}
        for snap in snaps:
            if not snap.exists:
                continue
            for name, value in ((snap.to_dict() or {}).get("m") or {}).items():
                out[name] = out.get(name, 0) + int(value or 0)
        return out

    def salt(self) -> bytes:
        if self._salt is None:
            ref = self._meta("salt")
            with self._boundary("salt"):
                snap = ref.get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)  # one read on every start but the first
                if not snap.exists:
                    try:
                        ref.create({"salt": secrets.token_bytes(32)}, retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
                    except self._api.AlreadyExists:
                        pass  # another instance created it first: theirs wins
                    snap = ref.get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            self._salt = bytes(snap.get("salt"))
        return self._salt

    # -- settings -------------------------------------------------------------------------------------------
    def get_settings(self) -> dict[str, Any]:
        with self._boundary("settings read"):
            snap = (
                self._client.collection("settings")
                .document("system")
                .get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            )
        stored: dict[str, Any] = snap.to_dict() or {}  # type: ignore[union-attr]  # the sync client's snapshot
        values = {name: json.loads(value) for name, value in stored.items()}
        self._remember_retention(values)
        return values

    def _remember_retention(self, values: dict[str, Any]) -> None:
        """Cache the log retention for the ``expires_at`` of log rows (no read on the flush path: the pool
        calls get_settings on every config change, so the cache follows the marker)."""
        try:
            self._retention_days = float(Settings.resolve(values).request_log_retention_days)
        except Exception:  # noqa: BLE001 - a bad stored value keeps the previous retention
            log.debug("unreadable request_log_retention_days; keeping %s days", self._retention_days)

    def put_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        batch = self._client.batch()
        # set(merge=True) treats the dict keys as field names (never as dotted paths) and keeps other settings.
        batch.set(
            self._client.collection("settings").document("system"),
            {name: json.dumps(value) for name, value in values.items()},
            merge=True,
        )
        self._bump(batch, "config")
        with self._boundary("settings write"):
            batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        return self.get_settings()

    # -- groups ---------------------------------------------------------------------------------------------
    def list_groups(self) -> list[Group]:
        """A full scan of ``groups`` (G reads), sorted here: groups are few, and it needs no index."""
        with self._boundary("group list"):
            snaps = list(self._client.collection("groups").stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
        groups = [to_group(s) for s in snaps]
        return sorted(groups, key=lambda g: (g.sort, g.name))

    def get_group(self, name: str) -> Group | None:
        with self._boundary("group read"):
            snap = self._group_ref(name).get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        return to_group(snap) if snap.exists else None

    def create_group(self, group: Group) -> None:
        batch = self._client.batch()
        batch.create(self._group_ref(group.name), group_doc(group))
        self._bump(batch, "config")
        with self._boundary("group create"):
            try:
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            except self._api.AlreadyExists:
                raise GroupExists(f"a group named {group.name!r} already exists") from None

    def update_group(self, group: Group) -> None:
        batch = self._client.batch()
        batch.update(self._group_ref(group.name), group_doc(group))  # update() requires the document to exist
        self._bump(batch, "config")
        with self._boundary("group update"):
            try:
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            except self._api.NotFound:
                raise GroupNotFound(f"no group named {group.name!r}") from None

    def delete_group(self, name: str) -> int:
        """Delete keys, then the group document (transaction + marker bumps), then sweep keys added meanwhile.

        Keys go first so that an interrupted delete leaves a visible, smaller group rather than orphan keys that
        a re-created group of the same name would inherit.
        """
        if self.get_group(name) is None:
            raise GroupNotFound(f"no group named {name!r}")
        self._forget_handoff(name)
        deleted = self._delete_all_keys(name)

        def remove(tx: Any) -> None:
            if not next(iter(tx.get(self._group_ref(name), timeout=RPC_TIMEOUT_SECONDS))).exists:
                raise GroupNotFound(f"no group named {name!r}")
            tx.delete(self._group_ref(name))
            tx.delete(self._usage_ref(name))
            for shard in _HEX[:USAGE_SHARDS]:  # blind deletes: a small group never had shards, 16 cheap no-ops
                tx.delete(self._usage_ref(name, shard))
            self._bump(tx, "config", f"keys:{name}")

        self._transact("group delete", remove)
        self._key_counts.pop(name, None)
        deleted += self._delete_all_keys(name)
        with self._boundary("binding cleanup"):
            query = self._client.collection("bindings").where(filter=self._fs.FieldFilter("group", "==", name))
            refs = [s.reference for s in query.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)]
            self._delete_refs(refs)
        self._forget_handoff(name)
        return deleted

    def _delete_all_keys(self, group: str) -> int:
        with self._boundary("key cleanup"):
            refs = [s.reference for s in self._keys(group).select([]).stream(timeout=SCAN_TIMEOUT_SECONDS)]
            self._delete_refs(refs)
        return len(refs)

    # -- keys -----------------------------------------------------------------------------------------------
    def _usage_of(self, group: str, key_id: str | None = None) -> dict[str, dict[str, Any]]:
        """The group's per-key usage counters: one read of ``key_usage/{group}``; when it is marked sharded (``s``),
        also its ``USAGE_SHARDS`` shard documents (one batched read; only ``key_id``'s shard when given), summed
        with the base document (counters from before the group crossed the threshold stay there)."""
        with self._boundary("usage read"):
            snap = self._usage_ref(group).get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            if not snap.exists:
                return {}
            doc = snap.to_dict() or {}
            usage: dict[str, dict[str, Any]] = {}
            _add_usage(usage, doc.get("k") or {})
            if doc.get("s"):
                shards = [usage_shard(key_id)] if key_id is not None else list(_HEX[:USAGE_SHARDS])
                refs = [self._usage_ref(group, s) for s in shards]
                for part in self._client.get_all(
                    refs, field_paths=["k"], retry=self._retry, timeout=RPC_TIMEOUT_SECONDS
                ):
                    if part.exists:
                        _add_usage(usage, (part.to_dict() or {}).get("k") or {})
        return usage

    def list_keys(self, group: str) -> list[KeyRecord]:
        """One scan of the group's keys (N reads) plus its usage document (1 read), ordered like SQLite:
        created_at, then id.

        The documents carry the ciphertexts too; they are kept for ``SECRET_HANDOFF_SECONDS`` so that the
        ``get_secrets`` that follows (pool reload: list_keys, then vault.load) costs no second N reads.
        """
        snaps = self._scan(self._keys(group), "key list")
        self._count_keys(group, len(snaps))
        usage = self._usage_of(group) if snaps else {}
        records = sorted((to_record(group, s, usage.get(s.id)) for s in snaps), key=lambda r: (r.created_at, r.id))
        secrets_ = {s.id: bytes(s.get("secret")) for s in snaps if s.to_dict().get("secret") is not None}
        with self._handoff_lock:
            self._handoff[group] = (time.monotonic(), secrets_)
        return records

    def changed_keys(self, group: str, since: float) -> list[KeyRecord]:
        """Keys whose ``state_at`` (the commit time of their last state write) is at or after ``since``:
        one range query on the group's keys (1 read + 1 per match, single-field index) and, when something
        matched, the usage document (1 read)."""
        query = self._keys(group).where(filter=self._fs.FieldFilter("state_at", ">=", timestamp(since)))
        with self._boundary("changed keys"):
            snaps = list(query.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
        usage = self._usage_of(group) if snaps else {}
        return sorted((to_record(group, s, usage.get(s.id)) for s in snaps), key=lambda r: (r.created_at, r.id))

    def add_keys(self, group: str, records: list[KeyRecord], secrets: dict[str, bytes]) -> list[str]:
        """Create-if-absent in steps of ``IMPORT_CHUNK`` keys: one batched read of the step's documents, then one
        batch of ``create()`` writes (a create never overwrites: a key imported meanwhile by someone else makes
        the batch fail, and that step is redone in transactions of ``TX_CHUNK`` keys that also read the group).
        The group is read before and after: keys written into a group deleted meanwhile are removed again."""
        unique: dict[str, KeyRecord] = {}
        for r in records:
            unique.setdefault(r.id, r)
        todo = list(unique.values())
        self._forget_handoff(group)
        if self.get_group(group) is None:
            raise GroupNotFound(f"no group named {group!r}")
        if not todo:
            return []
        added: list[str] = []
        sharded = self._usage_sharded(group)  # a key's stale counters may be in a shard: clear those too
        for chunk in chunks(todo, IMPORT_CHUNK - (USAGE_SHARDS if sharded else 0)):
            added += self._create_missing(group, chunk, secrets, sharded)
        self._count_keys(group, delta=len(added))
        self._forget_handoff(group)
        if added and self.get_group(group) is None:  # deleted while we wrote: leave no orphans behind
            self._delete_refs([self._keys(group).document(i) for i in added])
            raise GroupNotFound(f"no group named {group!r}")
        return added

    def _create_missing(
        self, group: str, chunk: list[KeyRecord], secrets: dict[str, bytes], sharded: bool = False
    ) -> list[str]:
        refs = [self._keys(group).document(r.id) for r in chunk]
        with self._boundary("key import"):
            present = {s.id for s in self._client.get_all(refs, field_paths=[]) if s.exists}
        new = [(ref, r) for ref, r in zip(refs, chunk, strict=True) if r.id not in present]
        if not new:
            return []
        batch = self._client.batch()
        for ref, r in new:
            batch.create(ref, {**key_doc(r, secrets.get(r.id)), "state_at": self._fs.SERVER_TIMESTAMP})
        # a key id deleted earlier may still have counters (or a late flush wrote some): start at 0
        self._clear_usage(batch, group, [r.id for _, r in new], sharded)
        self._bump(batch, f"keys:{group}")
        try:
            with self._boundary("key import"):
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        except StoreUnavailable as exc:
            cause = exc.__cause__.cause if isinstance(exc.__cause__, self._api.RetryError) else exc.__cause__
            if not isinstance(cause, self._api.Conflict):
                raise
            added: list[str] = []
            for part in chunks([r for _, r in new], TX_CHUNK):  # someone created one of them meanwhile
                added += self._create_missing_in_transaction(group, part, secrets, sharded)
            return added
        return [r.id for _, r in new]

    def _create_missing_in_transaction(
        self, group: str, chunk: list[KeyRecord], secrets: dict[str, bytes], sharded: bool = False
    ) -> list[str]:
        def create_missing(tx: Any) -> list[str]:
            refs = [self._group_ref(group)] + [self._keys(group).document(r.id) for r in chunk]
            snaps = {s.reference.path: s for s in tx.get_all(refs, timeout=RPC_TIMEOUT_SECONDS)}
            if not snaps[refs[0].path].exists:
                raise GroupNotFound(f"no group named {group!r}")
            new: list[str] = []
            for ref, r in zip(refs[1:], chunk, strict=True):
                if snaps[ref.path].exists:
                    continue
                tx.create(ref, {**key_doc(r, secrets.get(r.id)), "state_at": self._fs.SERVER_TIMESTAMP})
                new.append(r.id)
            if new:
                self._clear_usage(tx, group, new, sharded)
                self._bump(tx, f"keys:{group}")
            return new

        return self._transact("key import", create_missing)

    def delete_keys(self, group: str, ids: list[str]) -> int:
        """Transactions read the documents first, so the count is exact (Firestore deletes never report it)."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        self._forget_handoff(group)
        sharded = self._usage_sharded(group)
        deleted = 0
        for chunk in chunks(ids, TX_CHUNK):

            def remove(tx: Any, chunk: list[str] = chunk) -> int:
                refs = [self._keys(group).document(i) for i in chunk]
                present = [s.reference for s in tx.get_all(refs, timeout=RPC_TIMEOUT_SECONDS) if s.exists]
                for ref in present:
                    tx.delete(ref)
                if present:
                    self._clear_usage(tx, group, [r.id for r in present], sharded)
                    self._bump(tx, f"keys:{group}")
                return len(present)

            deleted += self._transact("key delete", remove)
        self._count_keys(group, delta=-deleted)
        return deleted

    def _clear_usage(self, writer: Any, group: str, ids: list[str], sharded: bool = False) -> None:
        """Blind delete of the keys' entries in the usage map (1 write; nested dict keys are field-path segments,
        so ids need no quoting); of a sharded group, also in the shards of these ids (1 write per shard)."""
        writer.set(self._usage_ref(group), {"k": dict.fromkeys(ids, self._fs.DELETE_FIELD)}, merge=True)
        if sharded:
            by_shard: dict[str, list[str]] = {}
            for i in ids:
                by_shard.setdefault(usage_shard(i), []).append(i)
            for shard, part in sorted(by_shard.items()):
                writer.set(self._usage_ref(group, shard), {"k": dict.fromkeys(part, self._fs.DELETE_FIELD)}, merge=True)

    def apply_verdict(
        self, group: str, key_id: str, verdict: Verdict, model: str, now: float, policy: Policy
    ) -> KeyRecord | None:
        """One transaction on the key's own document: 1 read, and 1-2 writes (key + marker shard) only when the
        state changes."""
        ref = self._keys(group).document(key_id)

        def apply(tx: Any) -> KeyRecord | None:
            snap = next(iter(tx.get(ref, timeout=RPC_TIMEOUT_SECONDS)))
            if not snap.exists:
                return None
            record = to_record(group, snap, None)
            new = transition(record.state, verdict, model, now, policy)
            if new == record.state:
                return record
            tx.update(ref, {**state_fields(new), "state_at": self._fs.SERVER_TIMESTAMP})
            if new.status != record.state.status or new.cooldowns != record.state.cooldowns:
                self._bump(tx, f"state:{group}")
            return record.with_state(new)

        with self._key_lock(group, key_id):
            return self._transact("key state update", apply)

    def restore_keys(self, group: str, ids: list[str] | None) -> int:
        """Reset keys to active, ``TX_CHUNK`` key documents per transaction.

        ``ids=None`` first finds candidates with an equality query on ``restorable`` (single-field index), then
        re-reads them inside the transaction, so a key that changed meanwhile is judged on its current state.
        """
        if ids is None:
            query = self._keys(group).where(filter=self._fs.FieldFilter("restorable", "==", True)).select([])
            with self._boundary("key query"):
                ids = [s.id for s in query.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)]
        return self._change_states(group, ids, restored, "key restore")

    def _scan(self, query: Any, what: str) -> list[Any]:
        """All documents of ``query``, read in pages of ``SCAN_PAGE`` (ordered by document name, each page after
        the last one's name): every RPC stays within ``SCAN_TIMEOUT_SECONDS`` however big the group. Same reads as
        one stream (+1 for a last, empty page)."""
        out: list[Any] = []
        last = None
        while True:
            page = query.order_by("__name__").limit(SCAN_PAGE)
            if last is not None:
                page = page.start_after(last)
            with self._boundary(what):
                snaps = list(page.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
            out += snaps
            if len(snaps) < SCAN_PAGE:
                return out
            last = snaps[-1]

    def _forget_view(self, group: str) -> None:
        with self._handoff_lock:
            self._key_views.pop(group, None)
            self._key_pages.pop(group, None)

    def query_keys(self, group: str, query: KeyQuery, offset: int, limit: int) -> tuple[list[KeyRecord], int]:
        """A key by id (``query.key_id``: 1 read of its document + 1 of the usage document), or a page of the
        group's keys filtered and sorted in memory (``keyquery.select``).

        The import order (optionally of invalid or disabled keys) within its first ``INDEXED_PAGE_LIMIT`` keys
        comes from the index (``_indexed_page``: a count and the page). Anything else costs one scan without
        ciphertexts (N reads) + the marker shards (S reads) + the usage document (1 read). The scanned records are
        kept for ``KEY_VIEW_MAX_AGE`` seconds: while the group's markers do not move, paging, searching, sorting
        and the console's refresh cost S + 1 reads; when only its ``state`` marker moved (cooldowns, verdicts),
        the keys whose state was written since are re-read (1 read each, as the pool does); when keys were added
        or deleted, the group is scanned again. An indexed page is kept while the markers do not move at all.
        This instance's own key writes drop both at once; notes and validation marks written by another instance
        show within ``KEY_VIEW_MAX_AGE``. Counters are always fresh (the usage document is re-read).
        """
        if query.key_id is not None:
            with self._boundary("key read"):
                snap = self._keys(group).document(query.key_id).get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            if not snap.exists:
                return [], 0
            records = [to_record(group, snap, self._usage_of(group, snap.id).get(snap.id))]
            return keyquery.select(records, query, offset, limit)
        markers = self.markers()
        stamp = (markers.get(f"keys:{group}", 0), markers.get(f"state:{group}", 0))
        with self._handoff_lock:
            cached = self._key_views.get(group)
        fresh_enough = cached is not None and time.monotonic() - cached[0] < KEY_VIEW_MAX_AGE
        if cached is not None and fresh_enough and cached[1] == stamp:
            base = cached[2]
        elif cached is not None and fresh_enough and cached[1][0] == stamp[0]:
            # only key states moved (cooldowns, verdicts, restores): re-read those keys, as the pool does
            started = time.time()
            since = timestamp(cached[3] - STATE_SYNC_MARGIN_SECONDS)
            query_changed = self._keys(group).where(filter=self._fs.FieldFilter("state_at", ">=", since))
            with self._boundary("changed keys"):
                changed = {
                    s.id: to_record(group, s, None)
                    for s in query_changed.select(list(KEY_VIEW_FIELDS)).stream(
                        retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS
                    )
                }
            base = [changed.get(r.id, r) for r in cached[2]]
            with self._handoff_lock:
                self._key_views[group] = (cached[0], stamp, base, started)
        elif (
            not query.text
            and query.sort == "created"
            and query.status in (None, INVALID, DISABLED)
            and offset + limit <= INDEXED_PAGE_LIMIT
        ):
            shape = (query.status, query.descending, offset, limit)
            with self._handoff_lock:
                page = self._key_pages.get(group)
            if page is not None and page[1:3] == (stamp, shape) and time.monotonic() - page[0] < KEY_VIEW_MAX_AGE:
                records, total = page[3], page[4]
            else:
                records, total = self._indexed_page(group, query, offset, limit)
                with self._handoff_lock:
                    self._key_pages[group] = (time.monotonic(), stamp, shape, records, total)
            usage = self._usage_of(group) if records else {}
            return [with_usage(r, usage.get(r.id)) for r in records], total
        else:
            started = time.time()
            snaps = self._scan(self._keys(group).select(list(KEY_VIEW_FIELDS)), "key list")
            base = [to_record(group, s, None) for s in snaps]
            del snaps
            self._count_keys(group, len(base))
            with self._handoff_lock:  # aged from now: a scan of a big group may take longer than the maximum age
                self._key_views[group] = (time.monotonic(), stamp, base, started)
        usage = self._usage_of(group) if base else {}
        return keyquery.select((with_usage(r, usage.get(r.id)) for r in base), query, offset, limit)

    def _indexed_page(self, group: str, query: KeyQuery, offset: int, limit: int) -> tuple[list[KeyRecord], int]:
        """The import order (and ``status`` invalid or disabled), read from the index: a count() aggregation (1 read
        per 1,000 matches) and the page (offset + limit reads: Firestore bills skipped documents); the records
        without usage counters. Index: ``(status, created_at)`` for a status; single-field ``created_at``
        otherwise."""
        fs = self._fs
        base = self._keys(group)
        if query.status:
            base = base.where(filter=fs.FieldFilter("status", "==", query.status))
        direction = fs.Query.DESCENDING if query.descending else fs.Query.ASCENDING
        ordered = base.order_by("created_at", direction=direction).order_by("__name__", direction=direction)
        with self._boundary("key page"):
            total = int(base.count().get(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)[0][0].value)
            page = ordered.select(list(KEY_VIEW_FIELDS)).offset(offset).limit(limit)
            snaps = list(page.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
        return [to_record(group, s, None) for s in snaps], total

    def set_disabled(self, group: str, ids: list[str], disable: bool) -> int:
        """``keypool.state.disabled`` (or ``enabled``) on each key, ``TX_CHUNK`` key documents per transaction."""
        return self._change_states(group, ids, disabled if disable else enabled, "key disable")

    def _change_states(self, group: str, ids: list[str], change: Callable[[KeyState], KeyState], what: str) -> int:
        """``change`` applied to the state of each key of ``ids`` that exists, ``TX_CHUNK`` key documents per
        transaction; a key whose state it changes is written (with ``state_at``) and the group's state marker
        bumped. Returns how many keys changed."""
        changed = 0
        for chunk in chunks(list(dict.fromkeys(ids)), TX_CHUNK):

            def apply(tx: Any, chunk: list[str] = chunk) -> int:
                refs = [self._keys(group).document(i) for i in chunk]
                count = 0
                for snap in tx.get_all(refs, timeout=RPC_TIMEOUT_SECONDS):
                    if not snap.exists:
                        continue
                    state = to_record(group, snap, None).state
                    new = change(state)
                    if new != state:
                        tx.update(snap.reference, {**state_fields(new), "state_at": self._fs.SERVER_TIMESTAMP})
                        count += 1
                if count:
                    self._bump(tx, f"state:{group}")
                return count

            changed += self._transact(what, apply)
        return changed

    def record_validations(self, group: str, outcomes: dict[str, str], at: float) -> None:
        """Blind updates of ``validation`` and ``validated_at``, in batches of at most ``BATCH_LIMIT`` writes (no
        read, no marker). A key deleted meanwhile is skipped: its batch is retried without it."""
        items = list(outcomes.items())
        for chunk in chunks(items, BATCH_LIMIT):
            batch = self._client.batch()
            for key_id, outcome in chunk:
                batch.update(self._keys(group).document(key_id), {"validation": outcome, "validated_at": at})
            with self._boundary("validation marks"):
                try:
                    batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
                except self._api.NotFound:  # a key deleted meanwhile: mark the others
                    refs = [self._keys(group).document(k) for k, _ in chunk]
                    present = {s.id for s in self._client.get_all(refs, field_paths=[]) if s.exists}
                    if len(present) < len(chunk):
                        self.record_validations(group, {k: o for k, o in chunk if k in present}, at)
        self._forget_view(group)

    def record_usage(self, events: list[UsageEvent]) -> None:
        """One flush: per group 1 usage write (all its keys' counters as nested Increment/Maximum fields of
        ``key_usage/{group}``; for a group this instance counted at ``USAGE_SHARD_THRESHOLD`` keys or more, 1 write per
        shard ``key_usage/{group}:{usage_shard(id)}`` touched + 1 for the base document's ``s`` mark), 1 write per
        (group, hour) touched (``stats_hourly``, requests per minute in its ``m`` map) and 1 per log page (``logpages``:
        the logged events of one group and hour, up to 500 rows, in one document); no transaction, no read. The
        write messages are built by ``writes.WriteEncoder`` in short steps with pauses between them (``_yield_gil``).

        Commits are self-contained: a batch whose writes do not fit one commit (``BATCH_LIMIT`` writes, or
        ``COMMIT_BYTES`` as measured on the encoded messages: pages with their tags and ids, counter documents,
        statistics) is split into parts *of events* first (``_usage_parts``: sorted by time, the same parts for the
        same events in any order), and each part is written as its own batch in one commit (its own counters,
        statistics and pages). So every commit's events are known.

        Exactly once per part: every commit also *creates* a document named after its part: its first log page
        (``log_pages/{group}:{hour}:{batch_key(part)}-{n}``, the same pages for the same events in any order) or,
        in a commit without one, ``usage_batches/{batch_key(part)}-0``. A commit whose outcome was unknown (a
        timeout after the server applied it, or the SDK's own retry of it) is retried with the same events; its
        create then fails with ALREADY_EXISTS, which means "applied before", so Increment counters are never added
        twice. Any commit that may not have been applied raises StoreUnavailable and the caller retries the same
        batch; parts already applied are skipped.

        Rejection: a part Firestore answers INVALID_ARGUMENT for (a document over 1 MiB, an invalid value), a
        single event whose writes exceed ``COMMIT_BYTES`` (never sent), or a batch whose values cannot be encoded
        at all (an integer out of int64 range: nothing sent) is never applied; the other parts are, and the call
        then raises StoreRejected naming the events of the rejected parts only. Outages, timeouts, ABORTED and
        RESOURCE_EXHAUSTED stay StoreUnavailable.
        """
        if not events:
            return
        try:
            parts = self._usage_parts(events)
        except (ValueError, OverflowError, UnicodeError) as exc:  # a value protobuf refuses (TypeError: a bug)
            raise StoreRejected(
                f"Firestore usage write cannot be encoded: {type(exc).__name__}: {str(exc)[:200]}", events=events
            ) from exc
        rejected: list[UsageEvent] = []
        reasons: list[str] = []
        for part, key, writes in parts:
            try:
                self._commit_usage(key, writes)
            except StoreRejected as exc:
                rejected += part
                reasons.append(exc.message)
        if rejected:
            raise StoreRejected("; ".join(reasons[:3]), events=rejected)

    def _usage_parts(self, events: list[UsageEvent]) -> list[tuple[list[UsageEvent], str, list[tuple[Any, int, bool]]]]:
        """``(events, batch_key(events), writes)`` per commit: the whole batch when its writes fit one commit, else
        the events sorted by time (then id) and cut into as many equal runs as the writes need, each run cut again
        until it fits (one event always makes a part of its own)."""
        key = batch_key(events)
        writes = self._usage_writes(events, key)
        weight = _commit_weight(writes)
        transforms = _most_transforms(writes)
        fits = len(writes) < BATCH_LIMIT and weight <= logpages.COMMIT_BYTES and transforms <= FIELD_TRANSFORMS_LIMIT
        if fits or len(events) == 1:
            return [(events, key, writes)]
        ordered = sorted(events, key=lambda e: (e.at, e.id, e.group, e.key_id, e.attempt))
        runs = max(
            2,
            -(-len(writes) // (BATCH_LIMIT - 1)),
            -(-weight // logpages.COMMIT_BYTES),
            -(-transforms // FIELD_TRANSFORMS_LIMIT),
        )
        size = -(-len(ordered) // min(runs, len(ordered)))
        parts: list[tuple[list[UsageEvent], str, list[tuple[Any, int, bool]]]] = []
        for run in chunks(ordered, size):
            parts += self._usage_parts(run)
        return parts

    def _usage_writes(self, events: list[UsageEvent], key: str) -> list[tuple[Any, int, bool]]:
        """The Write messages of one part (``key``: its batch key, which names its log pages)."""
        usage = rollup(events)
        _yield_gil()
        enc = self._encoder
        root = self._documents_root
        # (Write message, its encoded bytes, is it a log page) in commit order; raw protobuf classes (writes.py)
        writes: list[tuple[Any, int, bool]] = []
        # per (group, shard: "" = the base document) the Increment / Maximum transforms of its keys' counters
        per_doc: dict[tuple[str, str], tuple[dict[str, int], dict[str, float]]] = {}
        threshold = USAGE_SHARD_THRESHOLD
        for (g, kid), u in usage.keys.items():  # no empty key ids here ("" is no Firestore field)
            shard = usage_shard(kid) if self._key_counts.get(g, 0) >= threshold else ""
            inc, top = per_doc.setdefault((g, shard), ({}, {}))
            inc[enc.path("k", kid, "n")] = int(u.requests)
            inc[enc.path("k", kid, "f")] = int(u.failures)
            inc[enc.path("k", kid, "tok")] = int(u.tokens)
            top[enc.path("k", kid, "at")] = float(u.last_used_at)
        for g in sorted({g for g, shard in per_doc if shard}):
            # the mark that makes readers read the shards, before them in commit order (same or earlier commit)
            writes.append(_sized(enc.merge(f"{root}/key_usage/{doc_id(g)}", {"s": True})))
        for (g, shard), (inc, top) in sorted(per_doc.items()):
            name = doc_id(g) if not shard else f"{doc_id(g)}:{shard}"
            writes.append(_sized(enc.merge(f"{root}/key_usage/{name}", {}, inc, top)))
        minutes: dict[tuple[str, float], dict[str, int]] = {}
        for (g, minute), n in usage.minutes.items():  # requests per minute: a map in the hour's document
            minutes.setdefault((g, hour_of(minute)), {})[enc.path("m", str(int(minute)))] = n
        for (g, hour), stats in usage.hours.items():
            counters = {f: int(v) for f, v in zip(STAT_FIELDS, stats.values(), strict=True)}
            counters.update(minutes.get((g, hour), {}))
            path = f"{root}/stats_hourly/{doc_id(g)}:{int(hour)}"
            writes.append(_sized(enc.merge(path, {"group": g, "hour": hour}, counters)))
        access_hours: dict[float, tuple[dict[str, int], dict[str, float]]] = {}
        for (access_key, hour), a in usage.access.items():  # one document per hour holds every access key
            inc, top = access_hours.setdefault(hour, ({}, {}))
            for f, v in zip(ACCESS_STAT_FIELDS, a.counters(), strict=True):
                inc[enc.path("k", access_key, f)] = int(v)
            top[enc.path("k", access_key, "last_used_at")] = float(a.last_used_at)
        for hour, (inc, top) in access_hours.items():
            writes.append(_sized(enc.merge(f"{root}/access_hourly/{int(hour)}", {"hour": hour}, inc, top)))
        _yield_gil()
        if usage.logged:
            expiry = self._retention_days * DAY
            rows = [
                {**e.log_row(), "id": e.id or secrets.token_hex(8), "request_body": e.request_body}
                for e in usage.logged
            ]
            _yield_gil()
            for n, page in enumerate(logpages.pack(rows, hour_of, pause=_yield_gil)):
                fields = page.fields()
                fields["expires_at"] = timestamp(fields["last_at"] + expiry)
                path = f"{root}/log_pages/{doc_id(page.group)}:{int(page.hour)}:{key}-{n}"
                writes.append(_sized(enc.set(path, fields), page=True))
                _yield_gil()
        return writes

    def _commit_usage(self, key: str, writes: list[tuple[Any, int, bool]]) -> None:
        """One part's writes in one commit with its batch marker (see ``record_usage``); applied before: no-op."""
        enc = self._encoder
        # The batch marker: a log page of this commit, written with create() (it is named after the part), or else
        # a usage_batches document. Either fails with ALREADY_EXISTS when the commit was applied.
        first_page = next((i for i, (_w, _size, page) in enumerate(writes) if page), None)
        if first_page is None:
            expires = timestamp(time.time() + USAGE_BATCH_TTL)
            pbs = [enc.create(f"{self._documents_root}/usage_batches/{key}-0", {"expires_at": expires})]
            pbs += [w for w, _size, _page in writes]
        else:
            pbs = [w for w, _size, _page in writes]
            pbs[first_page] = enc.as_create(pbs[first_page])
        weight = _commit_weight(writes)
        if weight > logpages.COMMIT_BYTES:  # one event's writes: no commit could ever carry them
            raise StoreRejected(f"a usage write of {weight} bytes exceeds the {logpages.COMMIT_BYTES}-byte commit")
        batch = self._client.batch()
        batch._add_write_pbs(pbs)
        try:
            with self._boundary("usage write"):
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        except StoreUnavailable as exc:
            if already_applied(exc, self._api):
                return
            if invalid_request(exc, self._api):
                raise StoreRejected(exc.message) from exc.__cause__
            raise

    # -- request logs and statistics ------------------------------------------------------------------------
    def _logs(self) -> Any:
        """Request-log rows of earlier versions, one document per row (read by ``get_log``, purged, TTL)."""
        return self._client.collection("request_logs")

    def _pages(self) -> Any:
        return self._client.collection("log_pages")

    def _page_query(self, q: LogQuery) -> Any:
        """Pages that may hold rows matching ``q``, newest ``last_at`` first: the group, at most one tag
        (``array-contains``) and the time range narrow them; ``row_matches`` judges the rows."""
        ff = self._fs.FieldFilter
        query = self._pages()
        if q.group is not None:
            query = query.where(filter=ff("group", "==", q.group))
        wanted = logpages.query_tag(q)
        if wanted is not None:
            query = query.where(filter=ff("tags", "array_contains", wanted))
        if q.since is not None:
            query = query.where(filter=ff("last_at", ">=", float(q.since)))
        if q.until is not None:  # a page's rows lie in one hour: first_at < until implies last_at < until + 1 h
            query = query.where(filter=ff("last_at", "<", float(q.until) + 3600.0))
        return query.order_by("last_at", direction=self._fs.Query.DESCENDING)

    def _scan_pages(self, query: Any, limit: int, size: Callable[[], int] = lambda: PAGE_READ) -> Iterator[Any]:
        """Page snapshots of ``query``, at most ``limit`` in all, each read asking for ``size()`` documents (a reader
        that stops early pays only for what it asked for)."""
        last = None
        seen = 0
        while seen < limit:
            chunk = query if last is None else query.start_after(last)
            want = max(1, min(size(), limit - seen))
            with self._boundary("log query"):
                snaps = list(chunk.limit(want).stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
            yield from snaps
            seen += len(snaps)
            if len(snaps) < want:
                return
            last = snaps[-1]

    def query_logs(self, query: LogQuery, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Newest first, from log pages (see ``docs/firestore.md`` for what each filter costs).

        Group only (or nothing): the total is a ``sum(count)`` aggregation over the pages (1 read per 1,000
        pages), and pages are read newest first only until the requested rows are certain. Any other filter:
        the pages that may match (by group, one tag, time) are read, up to ``LOG_SCAN_PAGES``, and their rows
        filtered here; the total is exact when fewer pages match, else it covers the newest ``LOG_SCAN_PAGES``.
        """
        pages = self._page_query(query)
        need = max(0, offset) + max(0, limit)
        matches = logpages.row_matches(query)
        if not logpages.has_row_filters(query):
            with self._boundary("log count"):
                result = pages.sum("count").get(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)
            total = int(result[0][0].value or 0)
            if limit <= 0 or offset >= total:
                return [], total
            found: list[dict[str, Any]] = []
            # 2 pages first; once the rows are there, 1 page at a time, to see whether the next is older
            size = lambda: 1 if len(found) >= need else 2  # noqa: E731
            for snap in self._scan_pages(pages, 10**9, size):  # stops once the requested rows are certain
                if len(found) >= need:
                    found.sort(key=logpages.newest_first)
                    del found[need:]
                    if float(snap.get("last_at")) < float(found[-1]["at"]):
                        break  # every later page is older than the rows already certain
                found.extend(r for r in logpages.decode_rows(snap.get("rows")) if matches(r))
            found.sort(key=logpages.newest_first)
            return [logpages.list_row(r) for r in found[offset:need]], total
        count = 0

        def hits() -> Iterator[dict[str, Any]]:
            nonlocal count
            for snap in self._scan_pages(pages, LOG_SCAN_PAGES):
                for r in logpages.decode_rows(snap.get("rows")):
                    if matches(r):
                        count += 1
                        yield r

        rows = hits()
        best = heapq.nsmallest(need, rows, key=logpages.newest_first)
        for _ in rows:  # nsmallest(0, ...) reads nothing: the total still counts every match
            pass
        return [logpages.list_row(r) for r in best[offset:need]], count

    def get_log(self, log_id: str) -> dict[str, Any] | None:
        """1 read: the page whose ``ids`` hold ``log_id`` (an older per-row document: 1 more read). An id that
        Firestore could not name (``.``, ``..``, ``__x__``, ``/``, over 1,500 bytes) belongs to no row: None."""
        if not _nameable(log_id):
            return None
        query = self._pages().where(filter=self._fs.FieldFilter("ids", "array_contains", log_id)).limit(1)
        with self._boundary("log read"):
            snaps = list(query.stream(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS))
            for snap in snaps:
                for r in logpages.decode_rows(snap.get("rows")):
                    if r.get("id") == log_id:
                        return {**logpages.list_row(r), "request_body": r.get("request_body")}
            old = self._logs().document(log_id).get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        if not old.exists:
            return None
        return {**to_log(old), "request_body": old.get("request_body")}

    def purge_logs(self, before: float) -> int:
        """Delete log rows (and minute buckets) older than ``before``: pages wholly older are deleted, a page
        that straddles ``before`` is rewritten with its newer rows; at most ``PURGE_LIMIT`` pages per call.

        The TTL policy on ``expires_at`` (the page's newest row + retention) deletes pages without reads or
        writes billed here, but only within about a day after expiry and with the retention in force when the
        page was written; this catches the rest, costing 1 read + 1 write per page it finds. Returns rows deleted.
        """
        ff = self._fs.FieldFilter
        deleted = 0
        touched = 0
        with self._boundary("log purge"):
            while touched < PURGE_LIMIT:
                query = self._pages().where(filter=ff("first_at", "<", float(before))).limit(BATCH_LIMIT)
                snaps = list(query.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
                if not snaps:
                    break
                batch = self._client.batch()
                for snap in snaps:
                    rows = logpages.decode_rows(snap.get("rows"))
                    keep = [r for r in rows if float(r["at"]) >= before]
                    deleted += len(rows) - len(keep)
                    if not keep:
                        batch.delete(snap.reference)
                        continue
                    page = logpages.Page(str(snap.get("group")), float(snap.get("hour")), tuple(keep), b"")
                    fields = page.fields()
                    fields["rows"] = logpages.encode_rows(keep)
                    fields["expires_at"] = snap.get("expires_at")
                    batch.set(snap.reference, fields)
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
                touched += len(snaps)
            query = self._logs().where(filter=ff("at", "<", float(before))).select([]).limit(BATCH_LIMIT)
            refs = [s.reference for s in query.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)]
            self._delete_refs(refs)
            deleted += len(refs)
            query = self._client.collection("stats_minute").where(filter=ff("minute", "<", float(before)))
            refs = [s.reference for s in query.select([]).limit(BATCH_LIMIT).stream(timeout=SCAN_TIMEOUT_SECONDS)]
            self._delete_refs(refs)
        return deleted

    def _hourly_docs(self, group: str | None, since: float) -> list[dict[str, Any]]:
        ff = self._fs.FieldFilter
        query = self._client.collection("stats_hourly").where(filter=ff("hour", ">=", float(since)))
        if group is not None:
            query = query.where(filter=ff("group", "==", group))
        with self._boundary("stats read"):
            return [s.to_dict() or {} for s in query.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)]

    def hourly_stats(self, group: str | None, since: float) -> list[dict[str, Any]]:
        """One query (1 read per (group, hour) bucket), summed over groups here, oldest first."""
        buckets: dict[float, dict[str, int]] = {}
        for d in self._hourly_docs(group, since):
            b = buckets.setdefault(float(d["hour"]), dict.fromkeys(STAT_FIELDS, 0))
            for f in STAT_FIELDS:
                b[f] += int(d.get(f) or 0)
        return [{"hour": hour, **buckets[hour]} for hour in sorted(buckets)]

    def group_totals(self, since: float) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for d in self._hourly_docs(None, since):
            t = totals.setdefault(d["group"], dict.fromkeys(STAT_FIELDS, 0))
            for f in STAT_FIELDS:
                t[f] += int(d.get(f) or 0)
        return totals

    def requests_since(self, since: float, group: str | None = None) -> int:
        """One query over ``stats_hourly`` from the hour of ``since`` on (1 read per (group, hour): about 1-2 per
        group for the last minute), summing the per-minute map ``m`` from ``since`` on; ``group``: that group's
        only (picked here, so the query needs no composite index)."""
        ff = self._fs.FieldFilter
        query = self._client.collection("stats_hourly").where(filter=ff("hour", ">=", hour_of(float(since))))
        total = 0
        with self._boundary("stats read"):
            for snap in query.select(["m", "group"]).stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS):
                if group is not None and snap.get("group") != group:
                    continue
                per_minute = (snap.to_dict() or {}).get("m") or {}
                total += sum(int(n or 0) for minute, n in per_minute.items() if float(minute) >= since)
        return total

    # -- notes and tasks ------------------------------------------------------------------------------------
    def set_key_notes(self, group: str, key_id: str, notes: str) -> KeyRecord | None:
        """1 write (no marker: notes are not cached state), then 2 reads for the record it returns."""
        ref = self._keys(group).document(key_id)
        with self._boundary("notes write"):
            try:
                ref.update({"notes": notes}, retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            except self._api.NotFound:
                return None
            snap = ref.get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        self._forget_view(group)
        if not snap.exists:
            return None
        return to_record(group, snap, self._usage_of(group, key_id).get(key_id))

    def _task_ref(self, task_id: str) -> Any:
        return self._client.collection("tasks").document(quote(task_id, safe=""))

    def put_task(self, task: dict[str, Any]) -> None:
        now = time.time()
        doc = {"data": json.dumps(task), "updated_at": now, "expires_at": timestamp(now + TASK_TTL)}
        with self._boundary("task write"):
            self._task_ref(str(task["id"])).set(doc, retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        with self._boundary("task read"):
            snap = self._task_ref(task_id).get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        return json.loads(snap.get("data")) if snap.exists else None

    # -- secrets --------------------------------------------------------------------------------------------
    def get_secrets(self, group: str) -> dict[str, bytes]:
        """The group's ciphertexts: from the handoff of a ``list_keys`` of the last 2 s, else a scan (N reads).

        The handoff is safe because a key's ciphertext never changes while its id exists (ids are fingerprints
        and ``add_keys`` never overwrites), and this instance's own key writes drop it.
        """
        with self._handoff_lock:
            hit = self._handoff.pop(group, None)
        if hit is not None and time.monotonic() - hit[0] < SECRET_HANDOFF_SECONDS:
            return dict(hit[1])
        snaps = self._scan(self._keys(group).select(["secret"]), "secret read")
        return {s.id: bytes(s.get("secret")) for s in snaps if s.to_dict().get("secret") is not None}

    # -- affinity -------------------------------------------------------------------------------------------
    def put_binding(self, binding: Binding) -> None:
        doc = {
            "kind": binding.kind,
            "name": binding.name,
            "group": binding.group,
            "key_id": binding.key_id,
            "target": binding.target,
            "expires_at": timestamp(binding.expires_at),
        }
        with self._boundary("binding write"):
            self._binding_ref(binding.kind, binding.name).set(doc, retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)

    def get_binding(self, kind: str, name: str, now: float) -> Binding | None:
        """One read. The TTL policy deletes expired documents lazily (within about a day), so expiry is checked."""
        with self._boundary("binding read"):
            snap = self._binding_ref(kind, name).get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        if not snap.exists:
            return None
        d = snap.to_dict()
        expires_at = d["expires_at"].timestamp()
        if expires_at <= now:
            return None
        return Binding(d["kind"], d["name"], d["group"], d["key_id"], d["target"], expires_at)

    # -- upkeep ---------------------------------------------------------------------------------------------
    def purge_expired(self, now: float) -> int:
        """Nothing to do, and nothing billed: the TTL policies on ``bindings.expires_at`` and
        ``usage_batches.expires_at`` delete expired documents, and ``get_binding`` checks expiry itself."""
        return 0

    # -- access keys ----------------------------------------------------------------------------------------
    def _access_ref(self, key_id: str) -> Any:
        return self._client.collection("access_keys").document(doc_id(key_id))

    def list_access_keys(self) -> list[AccessKey]:
        """A full scan of ``access_keys`` (1 read per key; they are few), sorted here."""
        with self._boundary("access key list"):
            snaps = list(self._client.collection("access_keys").stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
        keys = [AccessKey.from_dict(s.to_dict() or {}) for s in snaps]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    def get_access_key(self, key_id: str) -> AccessKey | None:
        with self._boundary("access key read"):
            snap = self._access_ref(key_id).get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        return AccessKey.from_dict(snap.to_dict() or {}) if snap.exists else None

    def create_access_key(self, key: AccessKey) -> None:
        batch = self._client.batch()
        batch.create(self._access_ref(key.id), key.to_dict())
        self._bump(batch, "access")
        with self._boundary("access key create"):
            try:
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            except self._api.AlreadyExists:
                raise Conflict(f"an access key with id {key.id!r} already exists") from None

    def update_access_key(self, key: AccessKey) -> None:
        batch = self._client.batch()
        batch.update(self._access_ref(key.id), key.to_dict())  # update() requires the document to exist
        self._bump(batch, "access")
        with self._boundary("access key update"):
            try:
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            except self._api.NotFound:
                raise NotFound(f"no access key {key.id!r}") from None

    def delete_access_key(self, key_id: str) -> bool:
        """One transaction: read the document (so the answer is exact), delete it, bump ``access``."""
        ref = self._access_ref(key_id)

        def remove(tx: Any) -> bool:
            if not next(iter(tx.get(ref, timeout=RPC_TIMEOUT_SECONDS))).exists:
                return False
            tx.delete(ref)
            self._bump(tx, "access")
            return True

        return self._transact("access key delete", remove)

    def access_usage(self, since: float, access_key: str | None = None) -> list[dict[str, Any]]:
        """One query over ``access_hourly`` (1 read per hour from ``since`` on: each document holds every access
        key's counters of that hour), flattened here."""
        query = self._client.collection("access_hourly").where(filter=self._fs.FieldFilter("hour", ">=", float(since)))
        with self._boundary("access usage read"):
            snaps = list(query.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
        out: list[dict[str, Any]] = []
        for snap in snaps:
            d = snap.to_dict() or {}
            hour = float(d.get("hour") or 0.0)
            for key_id, c in (d.get("k") or {}).items():
                if access_key is not None and key_id != access_key:
                    continue
                out.append(
                    {
                        "access_key": key_id,
                        "hour": hour,
                        **{f: int(c.get(f) or 0) for f in ACCESS_STAT_FIELDS},
                        "last_used_at": float(c.get("last_used_at") or 0.0),
                    }
                )
        return sorted(out, key=lambda r: (r["hour"], r["access_key"]))

    def heartbeat(self, instance_id: str, now: float, live_after: float) -> int:
        """1 write (``instances/{id}``, expiring after a day by TTL) and one count() aggregation (1 read per
        1,000 live instances)."""
        instances = self._client.collection("instances")
        doc = {"seen_at": now, "expires_at": timestamp(now + INSTANCE_TTL)}
        with self._boundary("heartbeat"):
            instances.document(doc_id(instance_id)).set(doc, retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            query: Any = instances.where(filter=self._fs.FieldFilter("seen_at", ">=", float(live_after)))
            count = int(query.count().get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)[0][0].value)
        return max(1, count)


def _yield_gil() -> None:
    """Let request threads waiting for the GIL run between steps of a flush, so that a flush holds it for one
    step at a time (the roll-up, 100 rows JSON-encoded, one page's Write built: each well under 2 ms for 500
    events) instead of ~10 ms at once. A short real sleep, because ``sleep(0)`` may re-take the GIL before a
    waiting thread wakes; the flush runs in the background, so the few milliseconds it adds cost nobody."""
    time.sleep(PACE_SECONDS)


def _sized(write: Any, page: bool = False) -> tuple[Any, int, bool]:
    """``(write, its encoded bytes in a commit request, is it a log page)``."""
    return write, write._pb.ByteSize() + COMMIT_WRITE_OVERHEAD, page


def _most_transforms(writes: list[tuple[Any, int, bool]]) -> int:
    """The most field transforms (Increment, Maximum) ``writes`` put on any one document."""
    per_doc: dict[str, int] = {}
    for w, _size, _page in writes:
        pb = w._pb
        if pb.update_transforms:
            per_doc[pb.update.name] = per_doc.get(pb.update.name, 0) + len(pb.update_transforms)
    return max(per_doc.values(), default=0)


def _commit_weight(writes: list[tuple[Any, int, bool]]) -> int:
    """The bytes a commit of ``writes`` weighs (its batch marker and the request's own fields included)."""
    return sum(size for _w, size, _page in writes) + COMMIT_REQUEST_OVERHEAD


def _nameable(doc: str) -> bool:
    """Can ``doc`` be a Firestore document id (and an indexed value)? Log ids this proxy writes always are."""
    return (
        0 < len(doc.encode()) <= 1500
        and "/" not in doc
        and doc not in (".", "..")
        and not (len(doc) >= 4 and doc.startswith("__") and doc.endswith("__"))
    )
