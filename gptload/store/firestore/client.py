"""Firestore client plumbing: the SDK client with gptload's deadlines, error boundary and transaction retries.

Deadlines: the SDK's defaults retry for 60-300 s, which would hang a proxied request when Firestore is
unreachable. Every RPC of this client gets a short retry budget and timeout, so such a call fails with
``StoreUnavailable`` within a few seconds; list scans get a longer timeout because they legitimately stream.

The SDK (google-cloud-firestore) is imported when a connection is created, never at module import: only
``STORE=firestore`` pays for it (cold starts matter on serverless).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from gptload.errors import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

RPC_RETRY_SECONDS = 3.0  # total retry budget of one unary call (connection refused, UNAVAILABLE...)
RPC_TIMEOUT_SECONDS = 4.0  # one attempt of a unary call
SCAN_TIMEOUT_SECONDS = 30.0  # a whole streamed query (list_keys of a big group)
TX_DEADLINE_SECONDS = 30.0  # contention retries of one transaction (the store answers, but is busy)
BATCH_LIMIT = 500  # Firestore's maximum writes per batched write


class FirestoreConnection:
    """The SDK objects every Firestore call needs (``_client``, ``_fs`` the SDK module, ``_api`` its exceptions,
    ``_retry``) and the helpers around them; ``FirestoreStore`` builds on it."""

    def __init__(self, project: str, database: str = "(default)", client: Any = None) -> None:
        # Imported here: only this backend pays for the SDK import (cold starts matter on serverless).
        with _no_distribution_scan():
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

    def _delete_refs(self, refs: list[Any]) -> None:
        for i in range(0, len(refs), BATCH_LIMIT):
            batch = self._client.batch()
            for ref in refs[i : i + BATCH_LIMIT]:
                batch.delete(ref)
            batch.commit(retry=self._retry, timeout=RPC_TIMEOUT_SECONDS)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception as exc:  # noqa: BLE001 - closing must not fail the caller
            log.debug("closing the Firestore client: %s", type(exc).__name__)


@contextmanager
def _no_distribution_scan() -> Iterator[None]:
    """Import the SDK without ``importlib.metadata.packages_distributions()``.

    On a Python version near its end of life, ``google.api_core`` warns at import and, to name the package in
    that warning, scans the metadata of every installed distribution: ~0.3 s of a cold start on this project's
    bench machine (Python 3.11), for a warning's wording. During the import the scan answers "unknown" (the
    warning then names the module instead); on supported versions (the deployed python312) nothing is scanned
    anyway. Runs once per process, before any other thread uses importlib.metadata.
    """
    import importlib.metadata as metadata

    original = metadata.packages_distributions
    metadata.packages_distributions = dict  # an empty mapping: "unknown"
    try:
        yield
    finally:
        metadata.packages_distributions = original


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


def already_applied(exc: BaseException, api: Any) -> bool:
    """Did a usage commit fail only because its batch marker exists, i.e. an earlier attempt was applied?"""
    cause = exc.__cause__
    if isinstance(cause, api.RetryError):
        cause = cause.cause
    return isinstance(cause, api.AlreadyExists)  # not Conflict: ABORTED (contention, not applied) is one too


def invalid_request(exc: BaseException, api: Any) -> bool:
    """Did Firestore refuse a write as invalid in itself (INVALID_ARGUMENT: a document over 1 MiB, a request over
    the size limit, a value it cannot hold), so that sending it again can never succeed? Only that status counts:
    UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED, permission and auth errors are outages or
    configuration (the emulator answers an oversized request with RESOURCE_EXHAUSTED: the adapter measures its
    commits so as never to send one)."""
    cause = exc.__cause__
    if isinstance(cause, api.RetryError):
        cause = cause.cause
    return isinstance(cause, api.InvalidArgument)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]
