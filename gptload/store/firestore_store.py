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
from gptload.models import ACTIVE, INVALID, CoolDown, Group, KeyRecord, KeyState, UsageEvent
from gptload.store.base import Binding

log = logging.getLogger(__name__)
T = TypeVar("T")

RPC_RETRY_SECONDS = 3.0  # total retry budget of one unary call (connection refused, UNAVAILABLE...)
RPC_TIMEOUT_SECONDS = 4.0  # one attempt of a unary call
SCAN_TIMEOUT_SECONDS = 30.0  # a whole streamed query (list_keys of a big group)
TX_DEADLINE_SECONDS = 30.0  # contention retries of one transaction (the store answers, but is busy)
TX_CHUNK = 100  # documents read and written by one multi-key transaction
BATCH_LIMIT = 500  # Firestore's maximum writes per batched write
SECRET_HANDOFF_SECONDS = 2.0  # see list_keys / get_secrets

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
]


class FirestoreStore:
    kind = "firestore"

    def __init__(
        self,
        project: str,
        database: str = "(default)",
        client: Any = None,
        *,
        version_shards: int = 4,
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
        self._shards = max(1, version_shards)
        self._salt: bytes | None = None
        self._handoff: dict[str, tuple[float, dict[str, bytes]]] = {}
        self._handoff_lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._key_locks_guard = threading.Lock()

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

    def _bump(self, writer: Any) -> None:
        """Change version(): a blind Increment on one random shard, inside the caller's batch or transaction."""
        shard = secrets.randbelow(self._shards)
        writer.set(self._meta(f"version-{shard}"), {"n": self._fs.Increment(1)}, merge=True)

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
    def version(self) -> str:
        """One batched get of the S version shards (S reads); missing shards count as 0."""
        refs = [self._meta(f"version-{i}") for i in range(self._shards)]
        with self._boundary("version read"):
            snaps = {s.id: s for s in self._client.get_all(refs, retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)}
        return ".".join(str((snaps[r.id].get("n") if snaps[r.id].exists else 0) or 0) for r in refs)

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
        return {name: json.loads(value) for name, value in (snap.to_dict() or {}).items()}

    def put_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        batch = self._client.batch()
        # set(merge=True) treats the dict keys as field names (never as dotted paths) and keeps other settings.
        batch.set(
            self._client.collection("settings").document("system"),
            {name: json.dumps(value) for name, value in values.items()},
            merge=True,
        )
        self._bump(batch)
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
        self._bump(batch)
        with self._boundary("group create"):
            try:
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            except self._api.AlreadyExists:
                raise GroupExists(f"a group named {group.name!r} already exists") from None

    def update_group(self, group: Group) -> None:
        batch = self._client.batch()
        batch.update(self._group_ref(group.name), _group_doc(group))  # update() requires the document to exist
        self._bump(batch)
        with self._boundary("group update"):
            try:
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
            except self._api.NotFound:
                raise GroupNotFound(f"no group named {group.name!r}") from None

    def delete_group(self, name: str) -> int:
        """Delete keys, then the group document (transaction + version bump), then sweep keys added meanwhile.

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
            self._bump(tx)

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
    def list_keys(self, group: str) -> list[KeyRecord]:
        """One scan of the group's keys (N reads), ordered like SQLite: created_at, then id.

        The documents carry the ciphertexts too; they are kept for ``SECRET_HANDOFF_SECONDS`` so that the
        ``get_secrets`` that follows (pool reload: list_keys, then vault.load) costs no second N reads.
        """
        with self._boundary("key list"):
            snaps = list(self._keys(group).stream(retry=self._retry, timeout=SCAN_TIMEOUT_SECONDS))
        records = sorted((_record(group, s) for s in snaps), key=lambda r: (r.created_at, r.id))
        secrets_ = {s.id: bytes(s.get("secret")) for s in snaps if s.to_dict().get("secret") is not None}
        with self._handoff_lock:
            self._handoff[group] = (time.monotonic(), secrets_)
        return records

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
        for chunk in _chunks(todo, TX_CHUNK):

            def create_missing(tx: Any, chunk: list[KeyRecord] = chunk) -> list[str]:
                refs = [self._group_ref(group)] + [self._keys(group).document(r.id) for r in chunk]
                snaps = {s.reference.path: s for s in tx.get_all(refs, timeout=RPC_TIMEOUT_SECONDS)}
                if not snaps[refs[0].path].exists:
                    raise GroupNotFound(f"no group named {group!r}")
                new: list[str] = []
                for ref, r in zip(refs[1:], chunk, strict=True):
                    if snaps[ref.path].exists:
                        continue
                    tx.create(ref, _key_doc(r, secrets.get(r.id)))
                    new.append(r.id)
                if new:
                    self._bump(tx)
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
        for chunk in _chunks(ids, TX_CHUNK):

            def remove(tx: Any, chunk: list[str] = chunk) -> int:
                refs = [self._keys(group).document(i) for i in chunk]
                present = [s.reference for s in tx.get_all(refs, timeout=RPC_TIMEOUT_SECONDS) if s.exists]
                for ref in present:
                    tx.delete(ref)
                if present:
                    self._bump(tx)
                return len(present)

            deleted += self._transact("key delete", remove)
        return deleted

    def apply_verdict(
        self, group: str, key_id: str, verdict: Verdict, model: str, now: float, policy: Policy
    ) -> KeyRecord | None:
        """One transaction on the key's own document: 1 read, and 1 write only when the state changes."""
        ref = self._keys(group).document(key_id)

        def apply(tx: Any) -> KeyRecord | None:
            snap = next(iter(tx.get(ref, timeout=RPC_TIMEOUT_SECONDS)))
            if not snap.exists:
                return None
            record = _record(group, snap)
            new = transition(record.state, verdict, model, now, policy)
            if new == record.state:
                return record
            tx.update(ref, _state_fields(new))
            if new.status != record.state.status or new.cooldowns != record.state.cooldowns:
                self._bump(tx)
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
        for chunk in _chunks(ids, TX_CHUNK):

            def restore(tx: Any, chunk: list[str] = chunk) -> int:
                refs = [self._keys(group).document(i) for i in chunk]
                count = 0
                for snap in tx.get_all(refs, timeout=RPC_TIMEOUT_SECONDS):
                    if not snap.exists:
                        continue
                    state = _record(group, snap).state
                    new = restored(state)
                    if new != state:
                        tx.update(snap.reference, _state_fields(new))
                        count += 1
                if count:
                    self._bump(tx)
                return count

            changed += self._transact("key restore", restore)
        return changed

    def record_usage(self, events: list[UsageEvent]) -> None:
        """Increment/Maximum transforms, one write per key, in batches of at most 500; no transaction.

        A batch is atomic, so a key deleted since the events were buffered fails its whole batch with NotFound;
        that batch is then replayed key by key, skipping the missing one (nothing was applied twice).
        If a later batch fails after earlier ones committed, the failure is logged and not raised: the caller
        re-buffers what raises, and re-buffering would count the committed batches twice.
        """
        if not events:
            return
        totals: dict[tuple[str, str], list[float]] = {}
        for e in events:
            t = totals.setdefault((e.group, e.key_id), [0, 0, 0.0])
            t[0] += 1
            t[1] += 0 if e.success else 1
            t[2] = max(t[2], e.at)
        writes = [
            (
                self._keys(g).document(k),
                {
                    "request_count": self._fs.Increment(int(c)),
                    "failure_total": self._fs.Increment(int(f)),
                    "last_used_at": self._fs.Maximum(float(at)),
                },
            )
            for (g, k), (c, f, at) in totals.items()
        ]
        for n, chunk in enumerate(_chunks(writes, BATCH_LIMIT)):
            try:
                self._commit_usage(chunk)
            except StoreUnavailable:
                if n == 0:
                    raise
                log.warning("usage counters: %d of %d keys not recorded", len(writes) - n * BATCH_LIMIT, len(writes))
                return

    def _commit_usage(self, writes: list[tuple[Any, dict[str, Any]]]) -> None:
        batch = self._client.batch()
        for ref, fields in writes:
            batch.update(ref, fields)
        with self._boundary("usage write"):
            try:
                batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
                return
            except self._api.NotFound:
                pass
            for ref, fields in writes:
                try:
                    ref.update(fields, retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)
                except self._api.NotFound:
                    continue

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
        "request_count": 0,
        "failure_total": 0,
        "last_used_at": 0.0,
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


def _record(group: str, snap: Any) -> KeyRecord:
    d = snap.to_dict() or {}
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
        request_count=int(d.get("request_count", 0)),
        failure_total=int(d.get("failure_total", 0)),
        last_used_at=float(d.get("last_used_at", 0.0)),
        created_at=float(d.get("created_at", 0.0)),
        notes=d.get("notes", ""),
    )


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


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
