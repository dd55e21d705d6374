"""The keys API through the real server (``python main.py``) and real proxied traffic: a disabled key is never
used and only an admin brings it back (not restore-all, not maintenance, not validation); the key list is searched
on the server; a big import runs as a task on both stores."""

from __future__ import annotations

import os
import uuid

import pytest
import requests

from tests.conftest import require
from tests.e2e.conftest import start_server, wait_for
from tests.fakes.fake_gemini import errors, make_key

BODY = {"contents": [{"parts": [{"text": "hello"}]}]}


def generate(group, n: int) -> list[int]:
    url = f"{group.base}/v1beta/models/gemini-2.5-flash:generateContent"
    headers = {"x-goog-api-key": group.proxy_key}
    return [requests.post(url, json=BODY, headers=headers, timeout=30).status_code for _ in range(n)]


def test_a_disabled_key_stays_out_until_an_admin_enables_it(server, fake):
    keys = [fake.add_key() for _ in range(3)]
    group = server.make_group(fake.url, keys, settings={"key_validation_interval_minutes": 1})
    path = f"/api/groups/{group.name}/keys"
    (row,) = server.api("GET", path, params={"q": keys[0]}).json()["keys"]  # a full key: its row, one lookup
    r = server.api("PUT", f"{path}/{row['id']}", json={"status": "disabled"})
    assert r.status_code == 200 and r.json()["status"] == "disabled"
    assert generate(group, 12) == [200] * 12
    assert fake.requests_for(keys[0]) == []  # never handed out
    # an invalid key restored by "restore all" comes back; the disabled one does not
    fake.set_behavior(keys[1], errors.invalid_key())
    generate(group, 4)
    fake.set_behavior(keys[1], None)
    assert group.row_of(keys[1])["status"] == "invalid"
    assert server.api("POST", f"{path}/restore", json={}).json() == {"restored": 1}
    # nor maintenance, nor a validation of every key
    assert server.api("POST", "/api/tasks/run").status_code == 200
    task = server.api("POST", f"{path}/validate", json={"scope": "all"}).json()["task"]
    assert task["total"] == 2
    wait_for(
        lambda: server.api("GET", f"/api/tasks/{task['id']}").json()["task"]["status"] == "done", what="validation"
    )
    assert fake.requests_for(keys[0]) == []
    assert [r["status"] for r in server.api("GET", path, params={"status": "disabled"}).json()["keys"]] == ["disabled"]
    assert group.row_of(keys[1])["validation"] == "valid" and group.row_of(keys[0])["validation"] is None
    # an admin enables it: it serves again
    assert server.api("POST", f"{path}/enable", json={"ids": [row["id"]]}).json() == {"enabled": 1}
    wait_for(lambda: generate(group, 3) and fake.requests_for(keys[0]), what="the enabled key to serve")


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.firestore)])
def any_store_server(request, tmp_path):
    extra: dict[str, str] = {}
    if request.param == "firestore":
        host = os.environ.get("FIRESTORE_EMULATOR_HOST", "")
        require(bool(host), "FIRESTORE_EMULATOR_HOST is not set (.ci/firestore-emulator.sh start)")
        extra = {
            "STORE": "firestore",
            "VAULT": "store",
            "GOOGLE_CLOUD_PROJECT": f"keys-{uuid.uuid4().hex[:10]}",
            "FIRESTORE_EMULATOR_HOST": host,
            "ENCRYPTION_KEY": "e2e-keys-encryption-key-0123456789",
        }
    srv = start_server(tmp_path, extra_env=extra)
    yield srv
    srv.stop()


def test_a_big_import_runs_as_a_task_and_the_list_is_searched_on_the_server(any_store_server, fake):
    server = any_store_server
    group = server.make_group(fake.url, [fake.add_key()])
    path = f"/api/groups/{group.name}/keys"
    keys = [make_key(7_000_000 + i) for i in range(2500)]
    r = server.api("POST", path, json={"keys": "\n".join([*keys, keys[0], "AIzaNotAKey"])})
    assert r.status_code == 202, r.text
    task = r.json()["task"]
    assert (task["kind"], task["total"], task["rejected_lines"]) == (
        "import",
        2500,
        [{"line": 2502, "text": "AI*** (11 characters)"}],
    )

    def finished():
        t = server.api("GET", f"/api/tasks/{task['id']}").json()["task"]
        return t if t["status"] != "running" else None

    done = wait_for(finished, seconds=120, what="the import task", interval=0.2)
    assert (done["status"], done["done"], done["added"], done["duplicate"], done["rejected"]) == (
        "done",
        2500,
        2500,
        1,
        1,
    )
    page = server.api("GET", path, params={"page": 26, "page_size": 100}).json()
    assert page["total"] == 2501 and len(page["keys"]) == 1
    (found,) = server.api("GET", path, params={"q": keys[1234]}).json()["keys"]
    assert found["key"] == f"{keys[1234][:4]}...{keys[1234][-4:]}"
    newest = server.api("GET", path, params={"order": "desc", "page_size": 1}).json()["keys"]
    assert newest[0]["created_at"] >= found["created_at"]
    exported = server.api("GET", f"{path}/export").text.split()
    assert len(exported) == 2501 and set(keys) <= set(exported)
