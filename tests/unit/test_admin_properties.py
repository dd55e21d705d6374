"""Property tests of the admin API with arbitrary input: whatever JSON value (or bytes) a client sends to a write
endpoint, the answer is never a 5xx, an error is gptload's JSON envelope, and a refused request changes nothing.

Deterministic (``derandomize``, no example database) and small, to stay inside the unit suite's time budget.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptload import settings as settings_schema
from tests.fakes.fake_gemini import make_key
from tests.unit.admin_client import UNREACHABLE, AdminClient, error_of, strict_json

PROPERTY = settings(max_examples=30, deadline=None, derandomize=True, database=None)
PROXY_KEY = "proxy-key-0002"
KEY = make_key(7)

# Values that broke the admin API once: non-finite and huge numbers, a lone surrogate, a name with a newline.
hostile = st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**30, -(2**63), "\ud800", "nl\n", "", {}, []])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["all", "selected", "http://x", KEY, PROXY_KEY])
    | hostile
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


def plausible(spec: settings_schema.Spec) -> st.SearchStrategy:
    """Values a setting accepts (mostly)."""
    if spec.type is int:
        return st.integers(int(spec.min), int(spec.max))
    if spec.type is float:
        return st.floats(spec.min, spec.max)
    if spec.type is bool:
        return st.booleans()
    if spec.type is list:
        return st.lists(st.text(min_size=8, max_size=10), max_size=2)
    return st.text(max_size=10)


def objects(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """JSON objects of the endpoint's own fields: with plausible values only, or with arbitrary ones and others."""
    plausible_objects = st.fixed_dictionaries({}, optional=fields)
    noisy = st.tuples(
        st.fixed_dictionaries({}, optional={name: hostile | values | json_values for name, values in fields.items()}),
        st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    ).map(lambda pair: {**pair[1], **pair[0]})
    return plausible_objects | noisy


def bodies(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Raw request bodies: an object of the endpoint's fields, any JSON value, or any bytes at all."""
    return st.one_of(
        objects(fields).map(lambda v: json.dumps(v).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.sampled_from([b"[" * 100_000, b'{"a":' * 100 + b"1" + b"}" * 100, b"\xed\xa0\x80"]),
    )


names = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True) | st.text(max_size=12)
group_settings = {s.name: plausible(s) for s in settings_schema.SCHEMA if s.group_overridable}
group_fields = {
    "display_name": st.text(max_size=20),
    "description": st.text(max_size=20),
    "upstreams": st.just([{"url": UNREACHABLE, "weight": 1}]),
    "proxy_keys": st.lists(st.text(min_size=8, max_size=12), max_size=2),
    "test_model": st.text(max_size=12),
    "settings": st.fixed_dictionaries({}, optional=group_settings),
    "sort": st.integers(-(2**40), 2**40),
}
setting_values = {s.name: plausible(s) for s in settings_schema.SCHEMA}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """Two groups on an unreachable upstream: ``p1`` (which the update property rewrites) and ``p2`` with one key,
    whose proxied requests must keep working whatever settings were accepted."""
    client = AdminClient(tmp_path_factory.mktemp("properties"))
    for name in ("p1", "p2"):
        r = client.open("POST", "/api/groups", body={"name": name, "upstreams": [{"url": UNREACHABLE}]})
        assert r.status_code == 201
    r = client.open("PUT", "/api/groups/p2", body={"proxy_keys": [PROXY_KEY]})
    assert r.status_code == 200
    assert client.open("POST", "/api/groups/p2/keys", body={"keys": KEY}).get_json()["added"] == 1
    client.key_id = client.open("GET", "/api/groups/p2/keys").get_json()["keys"][0]["id"]
    yield client
    client.close()


def check(api, method: str, path: str, raw: bytes) -> object:
    """Send ``raw``; assert the answer's properties; return the accepted body (or None)."""
    before = api.snapshot()
    r = api.open(method, path, raw=raw)
    assert r.status_code < 500, (r.status_code, r.get_data(as_text=True), raw[:200])
    if r.status_code >= 400:
        error_of(r)
        assert api.snapshot() == before, raw[:200]
        return None
    body = strict_json(r)
    strict_json(api.open("GET", "/api/settings"))
    proxied = api.open(
        "POST", "/proxy/p2/v1beta/models/m:generateContent", body={}, headers={"x-goog-api-key": PROXY_KEY}
    )
    # the proxy still works: no key, an unreachable upstream, or the breaker that unreachable upstream opened
    assert error_of(proxied) in (
        (502, "UPSTREAM_UNREACHABLE"),
        (503, "NO_KEYS_AVAILABLE"),
        (503, "UPSTREAM_UNAVAILABLE"),
    ), raw[:200]
    return body


@PROPERTY
@given(raw=bodies({"name": names, **group_fields}))
def test_create_group(api, raw):
    created = check(api, "POST", "/api/groups", raw)
    if created:
        api.services.admin.delete_group(created["name"])  # keep the store small and the group set {p1, p2}


@PROPERTY
@given(raw=bodies(group_fields))
def test_update_group(api, raw):
    check(api, "PUT", "/api/groups/p1", raw)


@PROPERTY
@given(raw=bodies(setting_values))
def test_put_settings(api, raw):
    check(api, "PUT", "/api/settings", raw)


@PROPERTY
@given(raw=bodies({"ids": st.lists(st.text(max_size=8)), "keys": st.just(KEY)}) | st.just(b""))
def test_restore_keys(api, raw):
    check(api, "POST", "/api/groups/p2/keys/restore", raw)


@PROPERTY
@given(raw=bodies({"keys": st.sampled_from([KEY, make_key(8), f"{make_key(9)}\nnot-a-key"]) | st.text()}))
def test_add_keys(api, raw):
    check(api, "POST", "/api/groups/p1/keys", raw)


@PROPERTY
@given(raw=bodies({"scope": st.sampled_from(["all", "invalid", "selected"]), "ids": st.lists(json_values, min_size=1)}))
def test_validate_keys(api, raw):
    check(api, "POST", "/api/groups/p2/keys/validate", raw)


@PROPERTY
@given(raw=bodies({"notes": st.text(max_size=20)}), key_id=st.none() | st.text(max_size=8))
def test_key_notes(api, raw, key_id):
    check(api, "PUT", f"/api/groups/p2/keys/{quote(key_id or api.key_id, safe='')}", raw)


@PROPERTY
@given(raw=bodies({"names": st.permutations(["p1", "p2"]) | st.lists(scalars, max_size=3)}))
def test_groups_order(api, raw):
    check(api, "PUT", "/api/groups-order", raw)
