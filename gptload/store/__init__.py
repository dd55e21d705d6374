"""State stores behind one port (``base.Store``). Adapters import their SDKs lazily, on selection."""

from __future__ import annotations

import os

from gptload.config import Config
from gptload.store.base import RESOURCE, UPLOAD, Binding, Store

__all__ = ["RESOURCE", "UPLOAD", "Binding", "Store", "open_store"]


def open_store(config: Config) -> Store:
    """Build the configured store adapter. Only the chosen backend's SDK gets imported."""
    if config.store == "firestore":
        from gptload.store.firestore import FirestoreStore

        return FirestoreStore(project=config.google_cloud_project or "", database=config.firestore_database)
    from gptload.store.sqlite_store import SqliteStore

    return SqliteStore(os.path.join(config.data_dir, "gptload.db"))
