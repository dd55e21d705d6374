"""Firestore emulator plumbing for the contract tests (the emulator itself: ``.ci/firestore-emulator.sh start``)."""

from __future__ import annotations

import os

import requests

from gptload.store.firestore import FirestoreStore

# FIRESTORE_TEST_PROJECT lets two test runs share one emulator without wiping each other's data.
PROJECT = os.environ.get("FIRESTORE_TEST_PROJECT", "gptload-test")


def reset_emulator(host: str, project: str = PROJECT) -> None:
    """Delete every document of ``project``'s default database (an emulator-only endpoint)."""
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    response = requests.delete(url, timeout=10)
    response.raise_for_status()


def firestore_store(host: str, project: str = PROJECT) -> FirestoreStore:
    """A store with its own client on the emulator at ``host`` (the SDK reads the host from the environment)."""
    if os.environ.get("FIRESTORE_EMULATOR_HOST") != host:
        os.environ["FIRESTORE_EMULATOR_HOST"] = host
    return FirestoreStore(project=project)


def fresh_firestore_store(host: str) -> FirestoreStore:
    """An empty database and a store on it."""
    reset_emulator(host)
    return firestore_store(host)


# Firestore RPCs as the GAPIC client exposes them; each wrapped call is counted with what Firestore bills for it.
_RPCS = (
    "get_document",
    "batch_get_documents",
    "run_query",
    "run_aggregation_query",
    "commit",
    "begin_transaction",
    "rollback",
    "list_documents",
    "batch_write",
    "list_collection_ids",
    "partition_query",
)


class CallCounter:
    """Counts every RPC a FirestoreStore's client makes, and the billed document reads and writes.

    Reads: documents looked up (found or not) and returned by queries (a query that returns nothing bills 1 read), 1 per
    aggregation response. Writes: the writes of each commit (a set with Increment transforms is one write).
    Installed on the client's GAPIC object, so it sees everything the SDK sends (batches, transactions, queries).
    """

    def __init__(self, store: FirestoreStore) -> None:
        import threading

        self._lock = threading.Lock()
        self.calls: list[str] = []
        self.reads = 0
        self.writes = 0
        self.tx_writes = 0  # writes committed by transactions (key state), part of ``writes``
        api = store._client._firestore_api
        for name in _RPCS:
            original = getattr(api, name, None)
            if original is not None:
                setattr(api, name, self._wrap(name, original))

    def reset(self) -> None:
        with self._lock:
            self.calls, self.reads, self.writes, self.tx_writes = [], 0, 0, 0

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return len(self.calls), self.reads, self.writes

    def _add(self, reads: int = 0, writes: int = 0) -> None:
        with self._lock:
            self.reads += reads
            self.writes += writes

    def _wrap(self, name, original):
        def call(*args, **kwargs):
            with self._lock:
                self.calls.append(name)
            request = kwargs.get("request") if "request" in kwargs else (args[0] if args else None)
            if name == "commit":
                writes = getattr(request, "writes", None)
                if writes is None and isinstance(request, dict):
                    writes = request.get("writes")
                transaction = getattr(request, "transaction", None)
                if transaction is None and isinstance(request, dict):
                    transaction = request.get("transaction")
                self._add(writes=len(writes or ()))
                if transaction:
                    with self._lock:
                        self.tx_writes += len(writes or ())
            result = original(*args, **kwargs)
            if name in ("batch_get_documents", "run_query", "run_aggregation_query"):
                return self._counted(name, result)
            if name == "get_document":
                self._add(reads=1)
            return result

        return call

    def _counted(self, name, stream):
        found = 0
        try:
            for response in stream:
                # a lookup bills a read whether the document exists or not; a query, per document returned
                if name != "run_query" or "document" in response:
                    found += 1
                yield response
        finally:
            self._add(reads=found if name == "batch_get_documents" else max(found, 1))
