"""Aggregate groups in the admin API (validation naming the field, key operations refused, deleting a member) and
``GET /api/integration/info``, through the router on a fresh SQLite store (tests/unit/admin_client.py)."""

from __future__ import annotations

import json

import pytest

from tests.fakes.fake_gemini import make_key
from tests.unit.admin_client import UNREACHABLE, AdminClient, error_of


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One service for the module (building one costs ~0.5 s); each test names its groups apart (``names``)."""
    client = AdminClient(tmp_path_factory.mktemp("aggregate-admin"))
    yield client
    client.close()


@pytest.fixture
def admin(shared):
    """The shared service, emptied after each test: no groups, no global proxy keys."""
    yield shared
    store = shared.services.store
    for group in store.list_groups():
        store.delete_group(group.name)
        shared.services.vault.drop_group(group.name)
    store.put_settings({"proxy_keys": []})
    shared.services.pool.reload(force=True)


def create(admin: AdminClient, name: str, **fields):
    return admin.open("POST", "/api/groups", body={"name": name, "proxy_keys": [f"pk-{name}-0123"], **fields})


def standard(admin: AdminClient, name: str) -> None:
    r = create(admin, name, upstreams=[{"url": UNREACHABLE, "weight": 1}])
    assert r.status_code == 201, r.get_data(as_text=True)


def fields_of(r) -> dict:
    assert r.status_code == 400, r.get_data(as_text=True)
    return json.loads(r.get_data())["error"]["details"]["fields"]


def test_an_aggregate_is_created_with_members_and_no_upstreams(admin):
    standard(admin, "a")
    standard(admin, "b")
    r = create(
        admin, "agg", group_type="aggregate", sub_groups=[{"name": "a", "weight": 3}, {"name": "b", "weight": 0}]
    )
    assert r.status_code == 201, r.get_data(as_text=True)
    body = r.get_json()
    assert body["group_type"] == "aggregate" and body["upstreams"] == []
    assert body["sub_groups"] == [{"name": "a", "weight": 3}, {"name": "b", "weight": 0}]
    assert admin.open("GET", "/api/groups/a").get_json()["used_by"] == ["agg"]
    listed = {g["name"]: g for g in admin.open("GET", "/api/groups").get_json()["groups"]}
    assert listed["b"]["used_by"] == ["agg"] and listed["agg"]["used_by"] == []
    assert listed["a"]["group_type"] == "standard" and listed["a"]["sub_groups"] == []
    # members can be changed later; the stored group keeps them
    r = admin.open("PUT", "/api/groups/agg", body={"sub_groups": [{"name": "b", "weight": 1000}]})
    assert r.status_code == 200 and r.get_json()["sub_groups"] == [{"name": "b", "weight": 1000}]
    assert admin.services.store.get_group("agg").sub_groups[0].weight == 1000
    assert admin.open("GET", "/api/groups/a").get_json()["used_by"] == []


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ([{"name": "agg", "weight": 1}], "itself"),
        ([{"name": "nope", "weight": 1}], "no group named 'nope'"),
        ([{"name": "a", "weight": 1}, {"name": "a", "weight": 2}], "listed twice"),
        ([{"name": "inner", "weight": 1}], "cannot contain aggregates"),
        ([], "at least one member"),
    ],
)
def test_bad_members_are_refused_naming_sub_groups(admin, members, needle):
    standard(admin, "a")
    assert create(admin, "inner", group_type="aggregate", sub_groups=[{"name": "a"}]).status_code == 201
    before = admin.snapshot()
    fields = fields_of(create(admin, "agg", group_type="aggregate", sub_groups=members))
    assert needle in fields["sub_groups"]
    assert admin.snapshot() == before  # nothing was written


@pytest.mark.parametrize(
    "members",
    [
        [{"name": "a", "weight": -1}],
        [{"name": "a", "weight": 1001}],
        [{"name": "a", "weight": 1.5}],
        [{"name": "a", "weight": True}],
        [{"name": "a", "weight": "2"}],
        [{"name": "A B"}],
        [{"name": "a", "extra": 1}],
        ["a"],
        {"a": 1},
    ],
)
def test_bad_weights_and_shapes_are_refused(admin, members):
    standard(admin, "a")
    assert "0..1000" in fields_of(create(admin, "agg", group_type="aggregate", sub_groups=members))["sub_groups"]


def test_type_and_field_rules(admin):
    standard(admin, "a")
    assert "standard or aggregate" in fields_of(create(admin, "x", group_type="other"))["group_type"]
    assert "only an aggregate" in fields_of(create(admin, "x", sub_groups=[{"name": "a"}]))["sub_groups"]
    fields = fields_of(
        create(admin, "x", group_type="aggregate", sub_groups=[{"name": "a"}], upstreams=[{"url": UNREACHABLE}])
    )
    assert "no upstreams" in fields["upstreams"]
    assert "at least one member" in fields_of(create(admin, "x", group_type="aggregate"))["sub_groups"]
    assert create(admin, "agg", group_type="aggregate", sub_groups=[{"name": "a"}]).status_code == 201
    assert (
        "cannot change"
        in fields_of(admin.open("PUT", "/api/groups/agg", body={"group_type": "standard"}))["group_type"]
    )
    assert (
        "cannot change" in fields_of(admin.open("PUT", "/api/groups/a", body={"group_type": "aggregate"}))["group_type"]
    )
    assert (
        "no upstreams"
        in fields_of(admin.open("PUT", "/api/groups/agg", body={"upstreams": [{"url": UNREACHABLE, "weight": 1}]}))[
            "upstreams"
        ]
    )
    assert (
        "itself"
        in fields_of(admin.open("PUT", "/api/groups/agg", body={"sub_groups": [{"name": "agg"}]}))["sub_groups"]
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_redirect_rules", {"alias": "gemini-2.5-flash"}),
        ("param_overrides", {"generationConfig": {"temperature": 0.1}}),
        ("header_rules", [{"key": "X-A", "value": "1", "action": "set"}]),
        ("settings", {"proxy_url": "http://127.0.0.1:3128"}),
    ],
)
def test_rules_belong_to_the_members_not_the_aggregate(admin, field, value):
    standard(admin, "a")
    fields = fields_of(create(admin, "agg", group_type="aggregate", sub_groups=[{"name": "a"}], **{field: value}))
    assert "member" in fields[field]
    assert create(admin, "agg", group_type="aggregate", sub_groups=[{"name": "a"}]).status_code == 201
    assert "member" in fields_of(admin.open("PUT", "/api/groups/agg", body={field: value}))[field]
    # the same on a member is fine
    assert admin.open("PUT", "/api/groups/a", body={field: value}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/groups/agg/keys", {"keys": make_key(1)}),
        ("GET", "/api/groups/agg/keys", None),
        ("DELETE", "/api/groups/agg/keys", {"ids": []}),
        ("POST", "/api/groups/agg/keys/restore", {}),
        ("GET", "/api/groups/agg/keys/export", None),
        ("POST", "/api/groups/agg/keys/validate", {}),
        ("POST", "/api/groups/agg/keys/clear-invalid", None),
        ("PUT", "/api/groups/agg/keys/abc", {"notes": "x"}),
    ],
)
def test_key_operations_on_an_aggregate_are_refused(admin, method, path, body):
    standard(admin, "a")
    assert create(admin, "agg", group_type="aggregate", sub_groups=[{"name": "a"}]).status_code == 201
    r = admin.open(method, path, body=body)
    assert error_of(r) == (400, "VALIDATION_FAILED"), r.get_data(as_text=True)
    assert "aggregate" in r.get_json()["error"]["message"] and "a" in r.get_json()["error"]["message"]
    assert admin.services.store.list_keys("agg") == []


def test_deleting_a_member_is_refused_naming_the_aggregates_unless_forced(admin):
    for name in ("a", "b"):
        standard(admin, name)
    for agg in ("agg1", "agg2"):
        r = create(admin, agg, group_type="aggregate", sub_groups=[{"name": "a"}, {"name": "b", "weight": 2}])
        assert r.status_code == 201
    r = admin.open("DELETE", "/api/groups/a")
    assert r.status_code == 409
    error = r.get_json()["error"]
    assert (
        "agg1" in error["message"]
        and "agg2" in error["message"]
        and error["details"]["aggregates"]
        == [
            "agg1",
            "agg2",
        ]
    )
    assert admin.services.store.get_group("a") is not None
    assert admin.open("DELETE", "/api/groups/a?force=maybe").status_code == 400
    r = admin.open("DELETE", "/api/groups/a?force=true")
    assert r.status_code == 200 and r.get_json()["removed_from_aggregates"] == ["agg1", "agg2"]
    assert admin.services.store.get_group("a") is None
    for agg in ("agg1", "agg2"):
        assert [m.name for m in admin.services.store.get_group(agg).sub_groups] == ["b"]
    # an aggregate itself is deleted like any group; its members stay
    assert admin.open("DELETE", "/api/groups/agg1").status_code == 200
    assert admin.services.store.get_group("b") is not None


def test_integration_info_lists_the_groups_a_proxy_key_opens(admin):
    for name in ("a", "b"):
        standard(admin, name)
    assert (
        create(admin, "agg", group_type="aggregate", sub_groups=[{"name": "a"}], display_name="All").status_code == 201
    )
    r = admin.client.get("/api/integration/info?key=pk-agg-0123", base_url="https://gw.example")
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["base_url"] == "https://gw.example"
    (entry,) = body["groups"]
    assert entry["name"] == "agg" and entry["display_name"] == "All" and entry["group_type"] == "aggregate"
    assert entry["channel_type"] == "gemini" and entry["path"] == "/proxy/agg"
    assert entry["endpoints"] == {
        "gemini": "https://gw.example/proxy/agg",
        "openai": "https://gw.example/proxy/agg/v1beta/openai/",
    }
    # the key may come as the proxy routes take it; a global proxy key opens every group
    r = admin.client.get("/api/integration/info", headers={"x-goog-api-key": "pk-b-0123"})
    assert [g["name"] for g in r.get_json()["groups"]] == ["b"]
    assert admin.open("PUT", "/api/settings", body={"proxy_keys": ["global-key-0123"]}).status_code == 200
    r = admin.client.get("/api/integration/info", headers={"Authorization": "Bearer global-key-0123"})
    assert [g["name"] for g in r.get_json()["groups"]] == ["a", "b", "agg"]


@pytest.mark.parametrize(
    "headers", [{}, {"x-goog-api-key": "wrong-key-0000"}, {"Authorization": "Bearer unit-admin-key-123"}]
)
def test_integration_info_needs_a_proxy_key(admin, headers):
    standard(admin, "a")
    r = admin.client.get("/api/integration/info", headers=headers)
    assert error_of(r) == (401, "INVALID_PROXY_KEY")
    assert "a" not in json.loads(r.get_data())["error"]["message"].split()
