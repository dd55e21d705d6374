"""Firestore adapter of the Store port (``STORE=firestore``); the data model and costs are in ``docs/firestore.md``.

Layout (Native mode)::

    meta/version-{0..S-1}      {n: int}           version shards, bumped with Increment beside every cached change
    meta/salt                  {salt: bytes}      created once (create() = first writer wins)
    settings/system            {<name>: json}     one field per setting, values JSON-encoded (lossless)
    groups/{name}              {data: map, sort, name}
    groups/{name}/keys/{id}    key record + state + counters + ``secret`` (store-vault ciphertext, bytes)
    bindings/{kind}:{name}     affinity; ``expires_at`` Timestamp carries the TTL policy

Where transactions are: key state (``apply_verdict``, ``restore_keys``), ``add_keys`` dedupe and ``delete_keys``
counts run in transactions that read only the keys' own documents (plus the group document when adding); the
version shard is written blind (Increment, never read inside a transaction), so it adds no read contention.
Counters (``record_usage``) are Increment/Maximum transforms in batches of at most 500 writes, no transaction.

Deadlines: the SDK's defaults retry for 60-300 s, which would hang a proxied request when Firestore is
unreachable. Every RPC of this client gets a short retry budget and timeout, so such a call fails with
``StoreUnavailable`` within a few seconds; list scans get a longer timeout because they legitimately stream.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from gptload.errors import GroupExists, GroupNotFound, StoreUnavailable
from gptload.keypool.classify import Verdict
from gptload.keypool.state import Policy, restored, transition
from gptload.models import ACTIVE, INVALID, LOG_FIELDS, CoolDown, Group, KeyRecord, KeyState, LogQuery, UsageEvent
from gptload.settings import Settings
from gptload.store.base import Binding, batch_key, chunks
from gptload.store.rollup import STAT_FIELDS, rollup

log = logging.getLogger(__name__)
T = TypeVar("T")

RPC_RETRY_SECONDS = 3.0  # total retry budget of one unary call (connection refused, UNAVAILABLE...)
RPC_TIMEOUT_SECONDS = 4.0  # one attempt of a unary call
SCAN_TIMEOUT_SECONDS = 30.0  # a whole streamed query (list_keys of a big group)
TX_DEADLINE_SECONDS = 30.0  # contention retries of one transaction (the store answers, but is busy)
TX_CHUNK = 100  # documents read and written by one multi-key transaction
BATCH_LIMIT = 500  # Firestore's maximum writes per batched write
SECRET_HANDOFF_SECONDS = 2.0  # see list_keys / get_secrets
TEXT_SCAN_LIMIT = 5000  # log rows (newest first, other filters applied) searched in memory for a ``text`` filter
PURGE_LIMIT = 5000  # log rows one purge_logs call deletes at most (the TTL policy does the bulk)
MINUTE_STATS_TTL = 86400.0  # stats_minute buckets serve requests_since (requests per minute) only
TASK_TTL = 30 * 86400.0  # task documents (maintenance markers, validation jobs)
DAY = 86400.0
_LOG_DOC_FIELDS = LOG_FIELDS  # log_row() field names, stored as is (``key`` is the masked key)

# -- what the deployment must provision (imported by infra code and its tests) ---------------------------------
# Composite indexes of every query this adapter runs that single-field indexes cannot serve. The request-log
# list filters on any subset of six equality fields, ordered by ``at`` (and ranged on it): one (field, at DESC)
# index per field, which Firestore merges (zig-zag join) for any combination of equalities, instead of 2^6 indexes.
_LOG_EQUALITY_FIELDS = ("group", "key_id", "model", "status_code", "success", "stream")
FIRESTORE_INDEXES: list[dict] = [
    *(
        {
            "collection": "request_logs",
            "query_scope": "COLLECTION",
            "fields": [(f, "ASCENDING"), ("at", "DESCENDING")],
        }
        for f in _LOG_EQUALITY_FIELDS
    ),
    # hourly_stats(group, since): group == g and hour >= since, ordered by hour
    {
        "collection": "stats_hourly",
        "query_scope": "COLLECTION",
        "fields": [("group", "ASCENDING"), ("hour", "ASCENDING")],
    },
]
# (collection, field) pairs holding a Timestamp after which the document may be deleted (Firestore TTL policies).
# "keys" is the collection id of the subcollection groups/{name}/keys (TTL policies apply per collection id).
FIRESTORE_TTL_FIELDS: list[tuple[str, str]] = [
    ("bindings", "expires_at"),
    ("request_logs", "expires_at"),
    ("stats_minute", "expires_at"),
    ("tasks", "expires_at"),
    ("usage_batches", "expires_at"),
]


class FirestoreStore:
    kind = "firestore"

    def __init__(
        self,
        project: str,
        database: str = "(default)",
        client: Any = None,
        *,
        marker_shards: int = 4,
    ) -> None:
        # Imported here: only this backend pays for the SDK import (cold starts matter on serverless).
        from google.api_core import exceptions as api_exceptions
        from google.api_core import retry as api_retry
        from google.cloud import firestore

        self._fs = firestore
        self._api = api_exceptions
        self._errors: tuple[type[BaseException], ...] = (api_exceptions.GoogleAPICallError, api_exceptions.RetryError)
        self._retry = api_retry.Retry(
            initial=0.1,
            maximum=1.0,
            multiplier=2.0,
            timeout=RPC_RETRY_SECONDS,
            predicate=api_retry.if_exception_type(
                api_exceptions.ServiceUnavailable,
                api_exceptions.InternalServerError,
                api_exceptions.DeadlineExceeded,
                api_exceptions.ResourceExhausted,
            ),
        )
        try:
            self._client = client if client is not None else firestore.Client(project=project, database=database)
            _bound_deadlines(self._client, self._retry, RPC_TIMEOUT_SECONDS)
        except Exception as exc:  # auth or transport setup errors of any kind mean "no store"
            raise StoreUnavailable(f"cannot create the Firestore client: {type(exc).__name__}") from exc
        self.project = project
        self.database = database
        self._shards = max(1, marker_shards)
        self._salt: bytes | None = None
        self._handoff: dict[str, tuple[float, dict[str, bytes]]] = {}
        self._handoff_lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._key_locks_guard = threading.Lock()
        self._retention_days = float(Settings().request_log_retention_days)

    # -- plumbing -------------------------------------------------------------------------------------------
    @contextmanager
    def _boundary(self, what: str) -> Iterator[None]:
        """Translate SDK errors into StoreUnavailable; gptload errors raised inside pass through untouched."""
        try:
            yield
        except self._errors as exc:
            raise StoreUnavailable(f"Firestore {what} failed: {type(exc).__name__}: {_short(exc)}") from exc

    def _transact(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(transaction)`` in a read-write transaction; on contention, retry with jittered backoff.

        Every attempt is a fresh transaction (SDK ``max_attempts=1``) after a random pause. Measured on the
        emulator, 6 clients x 3 failures on one key: the SDK's immediate retries took 68 s (each loser waits out
        the emulator's ~2 s lock timeout and collides again); fresh transactions after a jittered pause, 5-30 s.
        Gives up with StoreUnavailable after ``TX_DEADLINE_SECONDS``.
        """
        deadline = time.monotonic() + TX_DEADLINE_SECONDS
        pause = 0.05
        while True:
            transaction = self._client.transaction(max_attempts=1)
            try:
                with self._boundary(what):
                    return self._fs.transactional(fn)(transaction)
            except StoreUnavailable as exc:  # an Aborted read (lock contention) arrives here
                if not isinstance(exc.__cause__, self._api.Aborted) or time.monotonic() > deadline:
                    raise
            except ValueError as exc:
                # The SDK's "Failed to commit transaction in 1 attempts" wraps an Aborted commit; a failed
                # BeginTransaction surfaces as the rollback's "no transaction in progress", chained to the cause.
                if not isinstance(exc.__cause__, self._api.Aborted):
                    cause = exc.__cause__ or exc.__context__
                    if isinstance(cause, self._errors):
                        raise StoreUnavailable(f"Firestore {what} failed: {type(cause).__name__}") from cause
                    raise
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"Firestore {what}: contention did not clear, gave up") from exc
            time.sleep(random.uniform(0, pause))
            pause = min(pause * 2, 2.0)

    def _meta(self, name: str) -> Any:
        return self._client.collection("meta").document(name)

    def _group_ref(self, name: str) -> Any:
        return self._client.collection("groups").document(name)

    def _keys(self, group: str) -> Any:
        return self._group_ref(group).collection("keys")

    def _binding_ref(self, kind: str, name: str) -> Any:
        # Resource names contain "/", which a document id may not; percent-encoding is reversible and readable.
        return self._client.collection("bindings").document(quote(f"{kind}:{name}", safe=""))

    def _usage_ref(self, group: str) -> Any:
        return self._client.collection("key_usage").document(_id(group))

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

    def close(self) -> None:
        try:
            self._client.close()
        except Exception as exc:  # noqa: BLE001 - closing must not fail the caller
            log.debug("closing the Firestore client: %s", type(exc).__name__)

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
        values = {name: json.loads(value) for name, value in (snap.to_dict() or {}).items()}
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
        groups = [_group(s) for s in snaps]
        return sorted(groups, key=lambda g: (g.sort, g.name))

    def get_group(self, name: str) -> Group | None:
        with self._boundary("group read"):
            snap = self._group_ref(name).get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        return _group(snap) if snap.exists else None

    def create_group(self, group: Group) -> None:
        batch = self._client.batch()
        batch.create(self._group_ref(group.name), _group_doc(group))
        self._bump(batch, "config")
        with self._boundary("group create"):
            try:
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            except self._api.AlreadyExists:
                raise GroupExists(f"a group named {group.name!r} already exists") from None

    def update_group(self, group: Group) -> None:
        batch = self._client.batch()
        batch.update(self._group_ref(group.name), _group_doc(group))  # update() requires the document to exist
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
            self._bump(tx, "config", f"keys:{name}")

        self._transact("group delete", remove)
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

    def _delete_refs(self, refs: list[Any]) -> None:
        for i in range(0, len(refs), BATCH_LIMIT):
            batch = self._client.batch()
            for ref in refs[i : i + BATCH_LIMIT]:
                batch.delete(ref)
            batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)

    # -- keys -----------------------------------------------------------------------------------------------
    def _usage_of(self, group: str) -> dict[str, dict[str, Any]]:
        """The group's per-key usage counters: one read of ``key_usage/{group}``."""
        with self._boundary("usage read"):
            snap = self._usage_ref(group).get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        return dict((snap.to_dict() or {}).get("k") or {}) if snap.exists else {}

    def list_keys(self, group: str) -> list[KeyRecord]:
        """One scan of the group's keys (N reads) plus its usage document (1 read), ordered like SQLite:
        created_at, then id.

        The documents carry the ciphertexts too; they are kept for ``SECRET_HANDOFF_SECONDS`` so that the
        ``get_secrets`` that follows (pool reload: list_keys, then vault.load) costs no second N reads.
        """
        with self._boundary("key list"):
            snaps = list(self._keys(group).stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
        usage = self._usage_of(group) if snaps else {}
        records = sorted((_record(group, s, usage.get(s.id)) for s in snaps), key=lambda r: (r.created_at, r.id))
        secrets_ = {s.id: bytes(s.get("secret")) for s in snaps if s.to_dict().get("secret") is not None}
        with self._handoff_lock:
            self._handoff[group] = (time.monotonic(), secrets_)
        return records

    def changed_keys(self, group: str, since: float) -> list[KeyRecord]:
        """Keys whose ``state_at`` (the commit time of their last state write) is at or after ``since``:
        one range query on the group's keys (1 read + 1 per match, single-field index) and, when something
        matched, the usage document (1 read)."""
        query = self._keys(group).where(filter=self._fs.FieldFilter("state_at", ">=", _ts(since)))
        with self._boundary("changed keys"):
            snaps = list(query.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
        usage = self._usage_of(group) if snaps else {}
        return sorted((_record(group, s, usage.get(s.id)) for s in snaps), key=lambda r: (r.created_at, r.id))

    def add_keys(self, group: str, records: list[KeyRecord], secrets: dict[str, bytes]) -> list[str]:
        """Create-if-absent, ``TX_CHUNK`` keys per transaction (which also reads the group document)."""
        unique: dict[str, KeyRecord] = {}
        for r in records:
            unique.setdefault(r.id, r)
        todo = list(unique.values())
        self._forget_handoff(group)
        if not todo:
            if self.get_group(group) is None:
                raise GroupNotFound(f"no group named {group!r}")
            return []
        added: list[str] = []
        for chunk in chunks(todo, TX_CHUNK):

            def create_missing(tx: Any, chunk: list[KeyRecord] = chunk) -> list[str]:
                refs = [self._group_ref(group)] + [self._keys(group).document(r.id) for r in chunk]
                snaps = {s.reference.path: s for s in tx.get_all(refs, timeout=RPC_TIMEOUT_SECONDS)}
                if not snaps[refs[0].path].exists:
                    raise GroupNotFound(f"no group named {group!r}")
                new: list[str] = []
                for ref, r in zip(refs[1:], chunk, strict=True):
                    if snaps[ref.path].exists:
                        continue
                    tx.create(ref, {**_key_doc(r, secrets.get(r.id)), "state_at": self._fs.SERVER_TIMESTAMP})
                    new.append(r.id)
                if new:
                    # a key id deleted earlier may still have counters (or a late flush wrote some): start at 0
                    self._clear_usage(tx, group, new)
                    self._bump(tx, f"keys:{group}")
                return new

            added += self._transact("key import", create_missing)
        return added

    def delete_keys(self, group: str, ids: list[str]) -> int:
        """Transactions read the documents first, so the count is exact (Firestore deletes never report it)."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        self._forget_handoff(group)
        deleted = 0
        for chunk in chunks(ids, TX_CHUNK):

            def remove(tx: Any, chunk: list[str] = chunk) -> int:
                refs = [self._keys(group).document(i) for i in chunk]
                present = [s.reference for s in tx.get_all(refs, timeout=RPC_TIMEOUT_SECONDS) if s.exists]
                for ref in present:
                    tx.delete(ref)
                if present:
                    self._clear_usage(tx, group, [r.id for r in present])
                    self._bump(tx, f"keys:{group}")
                return len(present)

            deleted += self._transact("key delete", remove)
        return deleted

    def _clear_usage(self, writer: Any, group: str, ids: list[str]) -> None:
        """Blind delete of the keys' entries in the usage map (1 write; nested dict keys are field-path segments,
        so ids need no quoting)."""
        writer.set(self._usage_ref(group), {"k": dict.fromkeys(ids, self._fs.DELETE_FIELD)}, merge=True)

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
            record = _record(group, snap, None)
            new = transition(record.state, verdict, model, now, policy)
            if new == record.state:
                return record
            tx.update(ref, {**_state_fields(new), "state_at": self._fs.SERVER_TIMESTAMP})
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
        ids = list(dict.fromkeys(ids))
        changed = 0
        for chunk in chunks(ids, TX_CHUNK):

            def restore(tx: Any, chunk: list[str] = chunk) -> int:
                refs = [self._keys(group).document(i) for i in chunk]
                count = 0
                for snap in tx.get_all(refs, timeout=RPC_TIMEOUT_SECONDS):
                    if not snap.exists:
                        continue
                    state = _record(group, snap, None).state
                    new = restored(state)
                    if new != state:
                        tx.update(snap.reference, {**_state_fields(new), "state_at": self._fs.SERVER_TIMESTAMP})
                        count += 1
                if count:
                    self._bump(tx, f"state:{group}")
                return count

            changed += self._transact("key restore", restore)
        return changed

    def record_usage(self, events: list[UsageEvent]) -> None:
        """One flush: per group 1 usage write (all its keys' counters as nested Increment/Maximum fields of
        ``key_usage/{group}``), 1 write per (group, hour) and per (group, minute) touched, and 1 per logged event;
        commits of at most 500 writes, no transaction, no read.

        Exactly once per batch: every commit also *creates* ``usage_batches/{hash of the events}-{n}``. A commit
        whose outcome was unknown (a timeout after the server applied it, or the SDK's own retry of it) is
        retried with the same events; its create then fails with ALREADY_EXISTS, which means "applied before",
        so Increment counters are never added twice. Any commit that may not have been applied raises
        StoreUnavailable and the caller retries the same batch; commits already applied are skipped.
        """
        if not events:
            return
        usage = rollup(events)
        inc = self._fs.Increment
        per_group: dict[str, dict[str, Any]] = {}
        for (g, kid), u in usage.keys.items():  # no empty key ids here ("" is no Firestore field)
            per_group.setdefault(g, {})[kid] = {
                "n": inc(int(u.requests)),
                "f": inc(int(u.failures)),
                "at": self._fs.Maximum(float(u.last_used_at)),
                "tok": inc(int(u.tokens)),
            }
        writes: list[tuple[Any, dict[str, Any]]] = [(self._usage_ref(g), {"k": c}) for g, c in per_group.items()]
        for (g, hour), stats in usage.hours.items():
            doc: dict[str, Any] = {"group": g, "hour": hour}
            doc.update({f: inc(int(v)) for f, v in zip(STAT_FIELDS, stats.values(), strict=True)})
            writes.append((self._client.collection("stats_hourly").document(f"{_id(g)}:{int(hour)}"), doc))
        for (g, minute), n in usage.minutes.items():
            doc = {"group": g, "minute": minute, "requests": inc(n), "expires_at": _ts(minute + MINUTE_STATS_TTL)}
            writes.append((self._client.collection("stats_minute").document(f"{_id(g)}:{int(minute)}"), doc))
        expiry = self._retention_days * DAY
        for e in usage.logged:
            log_id = e.id or secrets.token_hex(8)
            row = {**e.log_row(), "id": log_id, "request_body": e.request_body, "expires_at": _ts(e.at + expiry)}
            writes.append((self._logs().document(log_id), row))
        key = batch_key(events)
        markers = self._client.collection("usage_batches")
        for n, chunk in enumerate(chunks(writes, BATCH_LIMIT - 1)):
            batch = self._client.batch()
            batch.create(markers.document(f"{key}-{n}"), {"expires_at": _ts(time.time() + DAY)})
            for ref, fields in chunk:
                batch.set(ref, fields, merge=True)
            try:
                with self._boundary("usage write"):
                    batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            except StoreUnavailable as exc:
                if _already_applied(exc, self._api):
                    continue
                raise

    # -- request logs and statistics ------------------------------------------------------------------------
    def _logs(self) -> Any:
        return self._client.collection("request_logs")

    def _log_query(self, q: LogQuery) -> Any:
        """Equality filters + a range on ``at``: served by merging the (field, at DESC) indexes."""
        query = self._logs()
        ff = self._fs.FieldFilter
        for field, value in (
            ("group", q.group),
            ("key_id", q.key_id),
            ("model", q.model),
            ("status_code", q.status_code),
            ("success", q.success),
            ("stream", q.stream),
        ):
            if value is not None:
                query = query.where(filter=ff(field, "==", value))
        if q.since is not None:
            query = query.where(filter=ff("at", ">=", float(q.since)))
        if q.until is not None:
            query = query.where(filter=ff("at", "<", float(q.until)))
        return query

    def query_logs(self, query: LogQuery, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Newest first. Without ``text``: a count() aggregation (1 read per 1,000 matches) for the exact total and
        one page query (offset + limit reads: skipped rows are billed). With ``text`` (a substring of ``error``,
        which Firestore cannot search): the newest ``TEXT_SCAN_LIMIT`` rows matching the other filters are read
        and filtered here, so total and rows cover that window only."""
        base = self._log_query(query)
        ordered = base.order_by("at", direction=self._fs.Query.DESCENDING)
        with self._boundary("log query"):
            if query.text:
                needle = query.text.lower()
                snaps = (
                    ordered.select(list(_LOG_DOC_FIELDS))
                    .limit(TEXT_SCAN_LIMIT)
                    .stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)
                )
                hits = [s for s in snaps if needle in str(s.get("error") or "").lower()]
                return [_log(s) for s in hits[offset : offset + limit]], len(hits)
            total = int(base.count().get(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)[0][0].value)
            if limit <= 0 or offset >= total:
                return [], total
            page = ordered.select(list(_LOG_DOC_FIELDS)).offset(offset).limit(limit)
            rows = [_log(s) for s in page.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)]
        return rows, total

    def get_log(self, log_id: str) -> dict[str, Any] | None:
        with self._boundary("log read"):
            snap = self._logs().document(log_id).get(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
        if not snap.exists:
            return None
        return {**_log(snap), "request_body": snap.get("request_body")}

    def purge_logs(self, before: float) -> int:
        """Delete log rows (and minute buckets) older than ``before``, at most ``PURGE_LIMIT`` rows per call.

        The TTL policy on ``expires_at`` deletes rows without reads or writes billed here, but only within about
        a day after expiry and with the retention in force when the row was written; this catches the rest (rows
        past a shortened retention, or not yet collected), costing 1 read + 1 delete per row it finds.
        """
        ff = self._fs.FieldFilter
        deleted = 0
        with self._boundary("log purge"):
            while deleted < PURGE_LIMIT:
                query = self._logs().where(filter=ff("at", "<", float(before))).select([]).limit(BATCH_LIMIT)
                refs = [s.reference for s in query.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)]
                if not refs:
                    break
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

    def requests_since(self, since: float) -> int:
        """One query over ``stats_minute`` (1 read per (group, minute) bucket from ``since`` on)."""
        query = self._client.collection("stats_minute").where(filter=self._fs.FieldFilter("minute", ">=", since))
        with self._boundary("stats read"):
            return sum(
                int(s.get("requests") or 0)
                for s in query.select(["requests"]).stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS)
            )

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
        if not snap.exists:
            return None
        return _record(group, snap, self._usage_of(group).get(key_id))

    def _task_ref(self, task_id: str) -> Any:
        return self._client.collection("tasks").document(quote(task_id, safe=""))

    def put_task(self, task: dict[str, Any]) -> None:
        now = time.time()
        doc = {"data": json.dumps(task), "updated_at": now, "expires_at": _ts(now + TASK_TTL)}
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
        query = self._keys(group).select(["secret"])
        with self._boundary("secret read"):
            snaps = list(query.stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
        return {s.id: bytes(s.get("secret")) for s in snaps if s.to_dict().get("secret") is not None}

    # -- affinity -------------------------------------------------------------------------------------------
    def put_binding(self, binding: Binding) -> None:
        doc = {
            "kind": binding.kind,
            "name": binding.name,
            "group": binding.group,
            "key_id": binding.key_id,
            "target": binding.target,
            "expires_at": datetime.fromtimestamp(binding.expires_at, UTC),
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


# -- documents <-> models -----------------------------------------------------------------------------------
def _group_doc(group: Group) -> dict[str, Any]:
    data = group.to_dict()
    return {"name": group.name, "sort": group.sort, "data": data}


def _group(snap: Any) -> Group:
    data = dict(snap.get("data"))
    data["name"] = snap.id
    return Group.from_dict(data)


def _key_doc(record: KeyRecord, secret: bytes | None) -> dict[str, Any]:
    return {
        "id": record.id,
        "masked": record.masked,
        "created_at": record.created_at,
        "notes": record.notes,
        "secret": secret,
        **_state_fields(record.state),
    }


def _state_fields(state: KeyState) -> dict[str, Any]:
    return {
        "status": state.status,
        "cooldowns": [{"model": c.model, "until": c.until, "reason": c.reason} for c in state.cooldowns],
        "failure_count": state.failure_count,
        "last_error": state.last_error,
        # what restore_keys(None) looks for, kept beside the state so one equality query finds it
        "restorable": state.status == INVALID or bool(state.cooldowns),
    }


def _record(group: str, snap: Any, usage: dict[str, Any] | None) -> KeyRecord:
    """A key document plus its entry of the group's usage map (``n`` requests, ``f`` failures, ``at`` last use,
    ``tok`` tokens). Key documents written by older versions may carry their own counters; they are added."""
    d = snap.to_dict() or {}
    u = usage or {}
    status = d.get("status", ACTIVE)
    state = KeyState(
        status=status if status in (ACTIVE, INVALID) else ACTIVE,
        cooldowns=tuple(CoolDown(c["model"], float(c["until"]), c.get("reason", "")) for c in d.get("cooldowns") or ()),
        failure_count=int(d.get("failure_count", 0)),
        last_error=d.get("last_error", ""),
    )
    return KeyRecord(
        id=snap.id,
        group=group,
        masked=d.get("masked", ""),
        state=state,
        request_count=int(d.get("request_count", 0)) + int(u.get("n") or 0),
        failure_total=int(d.get("failure_total", 0)) + int(u.get("f") or 0),
        last_used_at=max(float(d.get("last_used_at", 0.0)), float(u.get("at") or 0.0)),
        created_at=float(d.get("created_at", 0.0)),
        notes=d.get("notes", ""),
        total_tokens=int(u.get("tok") or 0),
    )


def _log(snap: Any) -> dict[str, Any]:
    d = snap.to_dict() or {}
    out = {f: d.get(f) for f in LOG_FIELDS}
    out["id"] = snap.id
    return out


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _id(name: str) -> str:
    """A document id from a group name ([a-z0-9_-] today: unchanged) or anything else (percent-encoded)."""
    return quote(name, safe="")


def _bound_deadlines(client: Any, retry: Any, timeout: float) -> None:
    """Give every RPC of ``client`` a short default retry and timeout.

    Per-call arguments cover reads and batches, but a transaction's BeginTransaction, Commit and Rollback take
    only the SDK's defaults (retry for 60 s). The SDK offers no public knob for them, so the defaults of the
    wrapped GAPIC methods are replaced; if a future SDK moves these internals, this degrades to its defaults.
    """
    try:
        wrapped = client._firestore_api._transport._wrapped_methods
    except AttributeError:
        log.warning("Firestore SDK internals changed; transactions keep the SDK's 60 s retry budget")
        return
    for method in wrapped.values():
        if hasattr(method, "_retry") and hasattr(method, "_timeout"):
            method._retry = retry
            method._timeout = timeout


def _already_applied(exc: BaseException, api: Any) -> bool:
    """Did a usage commit fail only because its batch marker exists, i.e. an earlier attempt was applied?"""
    cause = exc.__cause__
    if isinstance(cause, api.RetryError):
        cause = cause.cause
    return isinstance(cause, api.Conflict)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]
