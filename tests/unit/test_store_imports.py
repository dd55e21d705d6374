"""The Firestore SDK is imported only when STORE=firestore builds a store (cold starts matter on serverless)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sqlite_store_and_the_firestore_package_do_not_import_the_firestore_sdk(tmp_path):
    script = f"""
import sys
import gptload.store.firestore, gptload.store.firestore.schema
from gptload.config import Config
from gptload.store import open_store
store = open_store(Config.from_env({{"AUTH_KEY": "admin-key-123", "DATA_DIR": {str(tmp_path)!r}}}))
assert store.kind == "sqlite"
store.close()
loaded = sorted(m for m in sys.modules if m.startswith(("google.cloud.firestore", "google.api_core")))
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
