"""Firestore emulator plumbing for the contract tests (the emulator itself: ``.ci/firestore-emulator.sh start``)."""

from __future__ import annotations

import os

import requests

from gptload.store.firestore_store import FirestoreStore

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
