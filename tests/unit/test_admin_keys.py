"""The keys API at a glance, in process: server-side search, filter and sort; manual disable (single and bulk) that
only an admin undoes; export of a selection; validation marks; imports of more than 1,000 keys as a task."""

from __future__ import annotations

import time

import pytest

from gptload.admin import IMPORT_TASK_THRESHOLD
from gptload.cipher import fingerprint
from gptload.keypool.classify import Kind, Verdict
from tests.fakes.fake_gemini import make_key
from tests.unit.admin_client import UNREACHABLE, AdminClient, error_of

KEYS = [make_key(i) for i in range(6)]


@pytest.fixture
def api(tmp_path):
    client = AdminClient(tmp_path)
    assert (
        client.open("POST", "/api/groups", body={"name": "g1", "upstreams": [{"url": UNREACHABLE}]}).status_code == 201
    )
    assert client.open("POST", "/api/groups/g1/keys", body={"keys": "\n".join(KEYS)}).get_json()["added"] == 6
    yield client
    client.close()


def key_id(api, key: str) -> str:
    return fingerprint(api.services.store.salt(), key)


def listing(api, **query) -> dict:
    r = api.open("GET", "/api/groups/g1/keys", query_string=query)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert not any(k in r.get_data(as_text=True) for k in KEYS)  # never a real key, not even the one searched for
    return r.get_json()


def ids(body: dict) -> list[str]:
    return [k["id"] for k in body["keys"]]


def test_a_full_pasted_key_finds_its_row_on_any_page(api):
    body = listing(api, q=f"  {KEYS[5]} ", page_size=2)
    assert ids(body) == [key_id(api, KEYS[5])] and body["total"] == 1
    assert listing(api, q=KEYS[5][:-1] + ("A" if KEYS[5][-1] != "A" else "B"))["total"] == 0  # exact, not similar
    tail = KEYS[3][-4:]
    assert key_id(api, KEYS[3]) in ids(listing(api, q=tail.lower()))  # the masked tail, any case


def test_the_search_can_go_in_a_body_so_that_a_key_never_sits_in_a_url(api):
    r = api.open("POST", "/api/groups/g1/keys/search", body={"q": KEYS[2], "page_size": 5})
    assert r.status_code == 200 and ids(r.get_json()) == [key_id(api, KEYS[2])]
    assert KEYS[2] not in r.get_data(as_text=True)
    both = api.open("POST", "/api/groups/g1/keys/search", body={"sort": "status", "order": "desc"}).get_json()
    assert both == listing(api, sort="status", order="desc")
    for bad in ({"page": "2"}, {"page_size": True}, {"colour": 1}, {"page_size": 501}, {"sort": "x"}):
        r = api.open("POST", "/api/groups/g1/keys/search", body=bad)
        assert error_of(r) == (400, "VALIDATION_FAILED"), bad
    assert error_of(api.open("POST", "/api/groups/g1/keys/search", body=[1])) == (400, "VALIDATION_FAILED")


def test_sort_order_status_and_bad_parameters(api):
    store = api.services.store
    busy = key_id(api, KEYS[4])
    from gptload.models import UsageEvent

    store.record_usage(
        [UsageEvent(group="g1", key_id=busy, at=time.time(), success=True, id=f"u{i}") for i in range(3)]
    )
    body = listing(api, sort="requests", order="desc", page_size=1)
    assert ids(body) == [busy] and body["keys"][0]["request_count"] == 3 and body["total"] == 6
    assert (body["sort"], body["order"]) == ("requests", "desc")
    assert ids(listing(api, sort="requests", order="asc"))[-1] == busy
    for query, field in (
        ({"sort": "secret"}, "sort"),
        ({"order": "sideways"}, "order"),
        ({"status": "weird"}, "status"),
        ({"q": "x" * 201}, "q"),
    ):
        r = api.open("GET", "/api/groups/g1/keys", query_string=query)
        assert error_of(r) == (400, "VALIDATION_FAILED") and field in r.get_json()["error"]["details"]["fields"]


def test_disable_one_key_then_enable_it(api):
    kid = key_id(api, KEYS[0])
    r = api.open("PUT", f"/api/groups/g1/keys/{kid}", body={"status": "disabled"})
    assert r.status_code == 200 and r.get_json()["status"] == "disabled" and r.get_json()["id"] == kid
    view = api.services.pool.view("g1")
    assert all(k.id != kid for k in (api.services.pool.acquire(view, "m", set()) for _ in range(20)))
    assert ids(listing(api, status="disabled")) == [kid]
    assert api.open("GET", "/api/groups/g1").get_json()["key_counts"]["disabled"] == 1
    # not restore-all, not restore of this key, not a successful validation path, not maintenance
    assert api.open("POST", "/api/groups/g1/keys/restore", body={}).get_json() == {"restored": 0}
    assert api.open("POST", "/api/groups/g1/keys/restore", body={"ids": [kid]}).get_json() == {"restored": 0}
    api.services.store.restore_keys("g1", [kid])  # what a successful validation does
    assert listing(api, status="disabled")["total"] == 1
    r = api.open("PUT", f"/api/groups/g1/keys/{kid}", body={"status": "active"})
    assert r.get_json()["status"] == "active" and listing(api, status="disabled")["total"] == 0
    for bad in ({"status": "invalid"}, {"status": None}, {"colour": "red"}, {}):
        assert error_of(api.open("PUT", f"/api/groups/g1/keys/{kid}", body=bad)) == (400, "VALIDATION_FAILED")
    assert error_of(api.open("PUT", "/api/groups/g1/keys/nope", body={"status": "disabled"})) == (404, "NOT_FOUND")


def test_bulk_disable_and_enable_with_ids_or_keys(api):
    some = [key_id(api, k) for k in KEYS[:3]]
    assert api.open("POST", "/api/groups/g1/keys/disable", body={"ids": some}).get_json() == {"disabled": 3}
    assert api.open("POST", "/api/groups/g1/keys/disable", body={"keys": KEYS[0]}).get_json() == {"disabled": 0}
    assert sorted(ids(listing(api, status="disabled"))) == sorted(some)
    store = api.services.store
    store.apply_verdict("g1", some[0], Verdict(Kind.KEY_INVALID, "400 API_KEY_INVALID"), "m", time.time(), _policy(api))
    assert api.open("POST", "/api/groups/g1/keys/enable", body={"ids": some[:2]}).get_json() == {"enabled": 2}
    assert ids(listing(api, status="disabled")) == [some[2]]
    assert error_of(api.open("POST", "/api/groups/g1/keys/enable", body={"ids": "x"})) == (400, "VALIDATION_FAILED")


def _policy(api):
    return api.services.pool.view("g1").policy


def test_export_of_the_selection_only(api):
    r = api.open("POST", "/api/groups/g1/keys/export", body={"ids": [key_id(api, KEYS[1]), key_id(api, KEYS[2])]})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert sorted(r.get_data(as_text=True).split()) == sorted(KEYS[1:3])
    disabled = key_id(api, KEYS[5])
    api.open("POST", "/api/groups/g1/keys/disable", body={"ids": [disabled]})
    r = api.open("GET", "/api/groups/g1/keys/export", query_string={"status": "disabled"})
    assert r.get_data(as_text=True).split() == [KEYS[5]]


def test_validation_marks_inconclusive_keys_and_skips_disabled_ones(api):
    disabled = key_id(api, KEYS[0])
    api.open("PUT", f"/api/groups/g1/keys/{disabled}", body={"status": "disabled"})
    before = time.time()
    r = api.open("POST", "/api/groups/g1/keys/validate", body={"scope": "all"})
    assert r.status_code == 202 and r.get_json()["task"]["total"] == 5  # the disabled key is not probed
    api.join_tasks()
    rows = {k["id"]: k for k in listing(api)["keys"]}
    assert rows[disabled]["validation"] is None and rows[disabled]["status"] == "disabled"
    others = [k for i, k in rows.items() if i != disabled]
    assert {k["validation"] for k in others} == {"inconclusive"}  # the upstream refuses connections
    assert all(k["validated_at"] >= before and k["status"] == "active" for k in others)


def test_an_import_of_more_than_the_threshold_runs_as_a_task(api):
    n = IMPORT_TASK_THRESHOLD + 5
    text = "\n".join([*(make_key(1000 + i) for i in range(n)), KEYS[0], "bad-line"])
    r = api.open("POST", "/api/groups/g1/keys", body={"keys": text})
    assert r.status_code == 202
    task = r.get_json()["task"]
    assert task["kind"] == "import" and task["total"] == n + 1 and task["status"] == "running"
    assert r.get_json()["task"]["rejected_lines"] == [{"line": n + 2, "text": "ba*** (8 characters)"}]
    api.join_tasks()
    done = api.open("GET", f"/api/tasks/{task['id']}").get_json()["task"]
    assert done["status"] == "done" and done["done"] == n + 1
    assert (done["added"], done["duplicate"], done["rejected"]) == (n, 1, 1)
    assert listing(api)["total"] == n + 6
    assert len(api.services.pool.view("g1").keys) == n + 6  # the pool has them too
