"""A proxy_url's credentials at rest, on both backends: the raw stored rows (SQLite file, Firestore documents as the
emulator's REST API returns them) never hold the password, for the system setting, a group and its copy; the pool
still sends through the real URL, and a masked save keeps it."""

from __future__ import annotations

import json
import os
import sqlite3

import requests
from werkzeug.test import Client
from werkzeug.wrappers import Request

from gptload.app import build_services
from gptload.config import Config
from gptload.web.router import Router

AUTH = {"Authorization": "Bearer contract-admin-key-1"}
PROXY = "http://px-user:px-pass-at-rest-5521@127.0.0.1:3128"
GROUP_PROXY = "socks5h://gx-user:gx-pass-at-rest-7730@127.0.0.1:1080"


def _raw(store) -> str:
    """Everything the backend holds, as text."""
    if type(store).__name__ == "SqliteStore":
        with sqlite3.connect(store.path) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return json.dumps([list(row) for t in tables for row in db.execute(f"SELECT * FROM {t}")], default=repr)
    from tests.firestore_support import PROJECT

    host = os.environ["FIRESTORE_EMULATOR_HOST"]
    base = f"http://{host}/v1/projects/{PROJECT}/databases/(default)/documents"
    texts = [requests.get(f"{base}/{path}", timeout=10).text for path in ("settings/system", "groups/g1", "groups/g2")]
    assert all('"fields"' in t for t in texts), texts
    return "\n".join(texts)


def test_proxy_url_credentials_are_never_stored_in_clear(store, tmp_path):
    config = Config.from_env(
        {"AUTH_KEY": "contract-admin-key-1", "DATA_DIR": str(tmp_path), "ENCRYPTION_KEY": "k" * 32}
    )
    services = build_services(config, store=store)
    router = Router(services)
    client = Client(lambda environ, start: router(Request(environ))(environ, start))

    def call(method, path, body=None):
        r = client.open(path, method=method, json=body, headers=AUTH)
        assert r.status_code < 300, r.get_data(as_text=True)
        return r.get_json()

    try:
        call("PUT", "/api/settings", {"proxy_url": PROXY})
        call(
            "POST",
            "/api/groups",
            {"name": "g1", "proxy_keys": ["proxy-key-0001"], "settings": {"proxy_url": GROUP_PROXY}},
        )
        shown = call("GET", "/api/groups/g1")["settings"]
        assert shown["proxy_url"] == "socks5h://****@127.0.0.1:1080"
        call("PUT", "/api/groups/g1", {"settings": shown})  # the console's masked save
        call("POST", "/api/groups/g1/copy", {"name": "g2"})
        raw = _raw(store)
        for secret in ("px-pass-at-rest-5521", "gx-pass-at-rest-7730", "px-user", "gx-user"):
            assert secret not in raw
        assert "@127.0.0.1:1080" in raw and "@127.0.0.1:3128" in raw  # sealed user info, readable host
        services.pool.reload(force=True)
        assert services.pool.view("g1").settings.proxy_url == GROUP_PROXY
        assert services.pool.view("g2").settings.proxy_url == GROUP_PROXY
        assert services.pool.settings.proxy_url == PROXY
    finally:
        services.shutdown()
