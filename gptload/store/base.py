"""The Store port: everything gptload persists, as narrow as its callers need.

Contract shared by every adapter (checked by ``tests/contract``):

- Adapters raise only ``gptload.errors`` types; SDK exceptions are translated at the boundary
  (``raise StoreUnavailable(...) from exc``).
- ``markers()`` returns change counters that only grow, in the same write as the change they count:
  ``"config"`` (settings, any group created, updated or deleted), ``"keys:{group}"`` (the group's key set: keys
  added or deleted, the group deleted), ``"state:{group}"`` (a key's status or cooldowns changed: verdicts,
  restores), ``"access"`` (an access key created, updated, rotated or deleted). Usage counters, notes and logs
  change no marker. An instance compares markers to decide what to
  re-read: config -> settings and groups; keys -> that group's keys and secrets; state -> ``changed_keys``.
- ``changed_keys(group, since)`` returns at least every key whose status, cooldowns or failure count was written
  at or after ``since`` (the store's clock; callers subtract a margin for clock skew); returning more is allowed.
- ``record_usage`` applies a batch exactly once: recording the same events again (a retry after a failure whose
  outcome was unknown) adds nothing, recognised by ``batch_key(events)``. It raises StoreUnavailable when any
  part may not have been written; the caller then retries the same batch. It raises StoreRejected (a
  StoreUnavailable) only when the store answered that some events can never be written (an invalid value, a
  document or commit too large): ``exc.events`` are the events not written, every other event of the batch was
  applied exactly once; the caller may write those events again as new batches (``UsageBuffer`` halves them).
- ``query_keys`` filters and sorts exactly like ``store.keyquery.select`` (the reference implementation).
- ``set_disabled`` applies ``keypool.state.disabled``/``enabled`` per key and moves ``state:{group}``;
  ``record_validations`` writes validation marks only (no marker, no state change, deleted keys skipped).
- ``apply_verdict`` and ``restore_keys`` are read-modify-write on the key's own record, atomic per key, and apply
  ``keypool.state.transition`` (never their own rules).
- ``add_keys`` is idempotent per key id: a key already in the group is reported as a duplicate, never doubled.
- Real keys never reach the store in clear: ``put_secrets`` takes ciphertext from the store vault.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gptload.keypool.classify import Verdict
from gptload.keypool.state import Policy
from gptload.models import AccessKey, Group, KeyQuery, KeyRecord, LogQuery, UsageEvent

T = TypeVar("T")

RESOURCE = "resource"
UPLOAD = "upload"


@dataclass(frozen=True)
class Binding:
    """Resource affinity: ``name`` (``files/abc``, an upload id...) must be served by ``key_id`` of ``group``."""

    kind: str  # RESOURCE or UPLOAD
    name: str
    group: str
    key_id: str
    target: str  # the upstream URL the resource lives behind (uploads: the real upload URL)
    expires_at: float


def batch_key(events: list[UsageEvent]) -> str:
    """A stable name for a batch of usage events, the same for the same events in any order."""
    digest = hashlib.sha256()
    for e in sorted(events, key=lambda e: (e.id, e.at, e.key_id)):
        digest.update(repr((e.id, e.group, e.key_id, e.at, e.attempt)).encode())
    return digest.hexdigest()[:32]


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of ``items``, each of at most ``size`` (SQL parameter lists, batched writes)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Store(Protocol):
    kind: str

    def close(self) -> None: ...

    # -- meta -----------------------------------------------------------------------------------------------
    def markers(self) -> dict[str, int]:
        """Change counters (see the module docstring); absent counters are 0."""
        ...

    def salt(self) -> bytes:
        """The per-deployment fingerprint salt, created on first use and then never changed."""
        ...

    # -- settings -------------------------------------------------------------------------------------------
    def get_settings(self) -> dict[str, Any]: ...

    def put_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Merge validated ``values`` into the system settings; return all stored values."""
        ...

    # -- groups ---------------------------------------------------------------------------------------------
    def list_groups(self) -> list[Group]: ...

    def get_group(self, name: str) -> Group | None: ...

    def create_group(self, group: Group) -> None:
        """Raise GroupExists when the name is taken."""
        ...

    def update_group(self, group: Group) -> None:
        """Raise GroupNotFound when absent."""
        ...

    def delete_group(self, name: str) -> int:
        """Delete the group, its keys and their secrets; return the number of keys deleted."""
        ...

    # -- keys -----------------------------------------------------------------------------------------------
    def list_keys(self, group: str) -> list[KeyRecord]: ...

    def changed_keys(self, group: str, since: float) -> list[KeyRecord]:
        """Keys whose state was written at or after ``since`` (possibly more); see the module docstring."""
        ...

    def add_keys(self, group: str, records: list[KeyRecord], secrets: dict[str, bytes]) -> list[str]:
        """Insert keys not yet in the group (with their ciphertext, if any); return the ids actually added."""
        ...

    def delete_keys(self, group: str, ids: list[str]) -> int: ...

    def apply_verdict(
        self, group: str, key_id: str, verdict: Verdict, model: str, now: float, policy: Policy
    ) -> KeyRecord | None:
        """Atomically run ``transition`` on the stored state; return the new record (None if the key is gone)."""
        ...

    def restore_keys(self, group: str, ids: list[str] | None) -> int:
        """Reset keys (all invalid or cooling ones when ``ids`` is None) to active; return how many changed."""
        ...

    def query_keys(self, group: str, query: KeyQuery, offset: int, limit: int) -> tuple[list[KeyRecord], int]:
        """The page ``[offset, offset + limit)`` of the group's keys matching ``query``, in its order, and the
        number of matches (see ``gptload.store.keyquery``)."""
        ...

    def set_disabled(self, group: str, ids: list[str], disable: bool) -> int:
        """Disable (``disable``) or enable the keys, atomically per key; return how many changed."""
        ...

    def record_validations(self, group: str, outcomes: dict[str, str], at: float) -> None:
        """Store each key's validation outcome (``valid``, ``invalid``, ``inconclusive``) and ``at``."""
        ...

    def record_usage(self, events: list[UsageEvent]) -> None:
        """Add a batch of finished attempts to per-key counters (request_count, failure_total, last_used_at)."""
        ...

    # -- secrets (store vault) ------------------------------------------------------------------------------
    def get_secrets(self, group: str) -> dict[str, bytes]: ...

    # -- request logs and statistics (written by ``record_usage``) ------------------------------------------
    def query_logs(self, query: LogQuery, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Log rows matching ``query``, newest first (ties by id), and the total count of matches. Filters mean
        the same on every store: equality on group, key, status, success and stream; ``model`` a prefix of the
        row's model; ``since`` <= at < ``until``; ``text`` a substring of the error, ASCII letters case-folded.
        SQLite counts every match; Firestore's total is exact for the group-only list and for filters whose
        candidate pages number at most ``LOG_SCAN_PAGES`` (200), else rows and total cover the newest 200 pages
        (docs/firestore.md, "Request-log pages")."""
        ...

    def get_log(self, log_id: str) -> dict[str, Any] | None:
        """One log row with its ``request_body`` (None when not logged)."""
        ...

    def purge_logs(self, before: float) -> int:
        """Delete log rows older than ``before``; a store with TTL may do nothing and return 0."""
        ...

    def hourly_stats(self, group: str | None, since: float) -> list[dict[str, Any]]:
        """Hourly buckets ``{hour, requests, failures, prompt_tokens, candidates_tokens, total_tokens}`` from
        ``since`` on, summed over groups when ``group`` is None, oldest first; hours without traffic absent."""
        ...

    def group_totals(self, since: float) -> dict[str, dict[str, int]]:
        """Per-group sums of the hourly buckets from ``since`` on."""
        ...

    def requests_since(self, since: float, group: str | None = None) -> int:
        """Requests (final attempts) from ``since`` on, at minute granularity, of ``group`` or of all groups; for
        requests per minute."""
        ...

    # -- notes and tasks ------------------------------------------------------------------------------------
    def set_key_notes(self, group: str, key_id: str, notes: str) -> KeyRecord | None: ...

    def put_task(self, task: dict[str, Any]) -> None:
        """Create or replace a task document (JSON-able dict with an ``id``)."""
        ...

    def get_task(self, task_id: str) -> dict[str, Any] | None: ...

    # -- affinity -------------------------------------------------------------------------------------------
    def put_binding(self, binding: Binding) -> None: ...

    def get_binding(self, kind: str, name: str, now: float) -> Binding | None:
        """The live binding, or None when absent or expired."""
        ...

    # -- upkeep ---------------------------------------------------------------------------------------------
    def purge_expired(self, now: float) -> int:
        """Delete what has outlived its use at ``now``: bindings expired at or before ``now``, and names of usage
        batches recorded more than a day ago (``record_usage`` recognises a retried batch within a day); return
        the number of bindings deleted. Run by the maintenance task. A store whose TTL policies delete these
        documents may do nothing and return 0: no reader depends on it (``get_binding`` checks expiry itself)."""
        ...

    # -- access keys ----------------------------------------------------------------------------------------
    def list_access_keys(self) -> list[AccessKey]:
        """Every access key (digests included), ordered by creation time then id."""
        ...

    def get_access_key(self, key_id: str) -> AccessKey | None: ...

    def create_access_key(self, key: AccessKey) -> None:
        """Store a new access key and bump the ``access`` marker; Conflict when its id is taken."""
        ...

    def update_access_key(self, key: AccessKey) -> None:
        """Replace a stored access key (same id) and bump ``access``; NotFound when absent."""
        ...

    def delete_access_key(self, key_id: str) -> bool:
        """Delete an access key (its usage statistics stay) and bump ``access``; False when it was absent."""
        ...

    def access_usage(self, since: float, access_key: str | None = None) -> list[dict[str, Any]]:
        """Hourly buckets of access keys from ``since`` on (of one key when given), oldest first:
        ``{access_key, hour, requests, failures, refused, prompt_tokens, candidates_tokens, total_tokens,
        last_used_at}`` (written by ``record_usage`` from the final attempts; hours without traffic absent)."""
        ...

    def heartbeat(self, instance_id: str, now: float, live_after: float) -> int:
        """Publish that ``instance_id`` is alive at ``now``; return how many instances published at or after
        ``live_after`` (this one included, so at least 1). Used to size each instance's share of rate limits."""
        ...
