"""Shared fixtures. Backends that need a local service (the Firestore emulator, Chromium) skip with a reason on a
developer machine without it and *fail* in CI (``CI=true``), so a missing service can never pass as green."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI, when a needed local component is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def sqlite_store(tmp_path):
    from gptload.store.sqlite_store import SqliteStore

    store = SqliteStore(str(tmp_path / "gptload.db"))
    yield store
    store.close()


def _firestore_store():
    host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    require(
        bool(host),
        "FIRESTORE_EMULATOR_HOST is not set (start: gcloud emulators firestore start "
        "--host-port=127.0.0.1:8085); .ci/run starts it",
    )
    from tests.firestore_support import fresh_firestore_store

    return fresh_firestore_store(host)


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.firestore)])
def store(request, tmp_path):
    """Every contract test runs once per backend."""
    if request.param == "sqlite":
        from gptload.store.sqlite_store import SqliteStore

        s = SqliteStore(str(tmp_path / "gptload.db"))
    else:
        s = _firestore_store()
    yield s
    s.close()
