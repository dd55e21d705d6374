"""Hostile admin clients: every malformed request is a JSON 4xx from the errors tree and changes nothing stored."""

from __future__ import annotations

import csv
import io
import json
import logging
import time

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gptload import settings
from gptload.errors import ValidationFailed
from gptload.keypool.classify import Kind, Verdict
from gptload.keypool.state import Policy
from gptload.models import Group, UsageEvent
from gptload.web.responses import json_response
from tests.fakes.fake_gemini import make_key
from tests.unit.admin_client import AUTH, UNREACHABLE, AdminClient, error_of, strict_json

KEYS = [make_key(i) for i in range(3)]
ADMIN_BODY_LIMIT = 8 * 1024 * 1024  # documented in docs/api.md


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    client = AdminClient(tmp_path_factory.mktemp("hostile"))
    yield client
    client.close()


@pytest.fixture
def api(shared):
    """The module's client (building services per test is too slow for the unit budget), with a fresh group
    ``g1``: tests that need a store of their own use ``own_api``."""
    shared.services.store.put_settings({spec.name: spec.default for spec in settings.SCHEMA})
    for group in shared.services.store.list_groups():
        shared.services.admin.delete_group(group.name)
    make_group(shared)
    return shared


@pytest.fixture
def own_api(tmp_path):
    client = AdminClient(tmp_path)
    yield client
    client.close()


def make_group(api, name="g1", **extra):
    body = {"name": name, "upstreams": [{"url": UNREACHABLE, "weight": 1}], "proxy_keys": ["proxy-key-0001"], **extra}
    r = api.open("POST", "/api/groups", body=body)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()


def add_keys(api, name="g1", keys=KEYS):
    r = api.open("POST", f"/api/groups/{name}/keys", body={"keys": "\n".join(keys)})
    assert r.status_code == 200 and r.get_json()["added"] == len(keys)
    return [k["id"] for k in api.open("GET", f"/api/groups/{name}/keys").get_json()["keys"]]


def invalidate(api, name, ids):
    for key_id in ids:
        api.services.store.apply_verdict(name, key_id, Verdict(Kind.KEY_INVALID, "test"), "m", time.time(), Policy())


def statuses(api, name="g1"):
    return sorted(k["status"] for k in api.open("GET", f"/api/groups/{name}/keys").get_json()["keys"])


# -- 1. NaN / Infinity --------------------------------------------------------------------------------------------
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]
NON_FINITE_BODIES = [
    ("PUT", "/api/settings", '{"request_timeout_seconds": %s}'),
    ("PUT", "/api/settings", '{"max_retries": %s}'),
    ("POST", "/api/groups", '{"name": "g2", "settings": {"request_timeout_seconds": %s}}'),
    ("PUT", "/api/groups/g1", '{"settings": {"bare_429_cooldown_seconds": %s}}'),
    ("PUT", "/api/groups/g1", '{"sort": %s}'),
    ("PUT", "/api/groups/g1/keys/nope", '{"notes": "x", "extra": [%s]}'),
]


def test_non_finite_numbers_are_invalid_json_everywhere_and_change_nothing(api):
    before = api.snapshot()
    for method, path, template in NON_FINITE_BODIES:
        for constant in NON_FINITE:
            r = api.open(method, path, raw=(template % constant).encode())
            assert error_of(r) == (400, "INVALID_JSON"), (path, constant)
    assert api.snapshot() == before
    strict_json(api.open("GET", "/api/settings"))


def test_settings_validation_refuses_non_finite_and_huge_numbers():
    for name in ("max_retries", "request_timeout_seconds", "bare_429_cooldown_seconds"):
        for value in (float("nan"), float("inf"), float("-inf"), 10**400, -(10**400)):
            for for_group in (False, True):
                with pytest.raises(ValidationFailed) as info:
                    settings.validate({name: value}, for_group=for_group)
                assert name in info.value.details["fields"], (name, value)


def test_json_response_never_emits_invalid_json():
    with pytest.raises(ValueError):
        json_response({"x": float("nan")})


def test_resolve_falls_back_to_the_default_on_a_stored_bad_value(caplog):
    with caplog.at_level(logging.WARNING, logger="gptload.settings"):
        s = settings.Settings.resolve(
            {"request_timeout_seconds": float("nan"), "max_retries": float("inf"), "app_url": 5},
            {"connect_timeout_seconds": float("-inf"), "blacklist_threshold": "3"},
        )
    assert s == settings.Settings()
    logged = caplog.text
    for name in ("request_timeout_seconds", "max_retries", "app_url", "connect_timeout_seconds", "blacklist_threshold"):
        assert name in logged


def test_stored_non_finite_values_from_an_older_version_do_not_break_proxy_or_admin(own_api):
    api = own_api
    make_group(api)
    add_keys(api, keys=KEYS[:1])
    store = api.services.store
    store.put_settings({"request_timeout_seconds": float("nan"), "max_retries": float("inf")})
    group = store.get_group("g1")
    store.update_group(Group.from_dict({**group.to_dict(), "settings": {"connect_timeout_seconds": float("inf")}}))
    api.services.pool.reload()
    r = api.open(
        "POST", "/proxy/g1/v1beta/models/m:generateContent", body={}, headers={"x-goog-api-key": "proxy-key-0001"}
    )
    assert error_of(r) == (502, "UPSTREAM_UNREACHABLE")
    shown = strict_json(api.open("GET", "/api/settings"))["settings"]
    assert shown["request_timeout_seconds"] == 600.0 and shown["max_retries"] == 3
    r = api.open("GET", "/api/groups/g1")
    assert r.status_code == 200
    strict_json(r)


# -- 2. restore ---------------------------------------------------------------------------------------------------
RESTORE_REFUSED = [
    b"[]",
    b'"x"',
    b"1",
    b"null",
    b"true",
    b'{"idz": []}',
    b'{"ids": "x"}',
    b'{"ids": [1]}',
    b'{"ids": null}',
    b'{"keys": 5}',
    b'{"ids": [], "keys": ""}',
    b'{"ids": [], "all": true}',
]


def test_restore_refuses_anything_but_its_documented_shapes(api):
    invalidate(api, "g1", add_keys(api))
    before = api.snapshot()
    for raw in RESTORE_REFUSED:
        r = api.open("POST", "/api/groups/g1/keys/restore", raw=raw)
        assert error_of(r) == (400, "VALIDATION_FAILED"), raw
    assert api.snapshot() == before


def test_restore_documented_shapes(api):
    ids = add_keys(api)
    invalidate(api, "g1", ids)
    r = api.open("POST", "/api/groups/g1/keys/restore", body={"keys": KEYS[1]})
    assert r.get_json() == {"restored": 1}
    still_invalid = [k["id"] for k in api.open("GET", "/api/groups/g1/keys?status=invalid").get_json()["keys"]]
    r = api.open("POST", "/api/groups/g1/keys/restore", body={"ids": still_invalid[:1]})
    assert r.get_json() == {"restored": 1} and statuses(api) == ["active", "active", "invalid"]
    invalidate(api, "g1", ids)
    r = api.open("POST", "/api/groups/g1/keys/restore", body={})
    assert r.get_json() == {"restored": 3}
    invalidate(api, "g1", ids)
    r = api.open("POST", "/api/groups/g1/keys/restore")  # empty body: all invalid and cooling keys
    assert r.get_json() == {"restored": 3} and statuses(api) == ["active"] * 3


# -- 3. full-match validation -------------------------------------------------------------------------------------
def test_group_names_must_match_entirely(api):
    before = api.snapshot()
    for name in ("nl\n", "ok\n", "\nok", "a\r", "ok\x00"):
        r = api.open("POST", "/api/groups", body={"name": name})
        assert error_of(r) == (400, "VALIDATION_FAILED") and "name" in r.get_json()["error"]["details"]["fields"]
        r = api.open("POST", "/api/groups/g1/copy", body={"name": name})
        assert error_of(r) == (400, "VALIDATION_FAILED"), name
    assert api.snapshot() == before


# -- 4. integer ranges --------------------------------------------------------------------------------------------
def test_group_sort_is_bounded(api):
    before = api.snapshot()
    for sort in (10**30, -(10**30), 2**31, -(2**31) - 1, 2**63):
        r = api.open("POST", "/api/groups", body={"name": "g2", "sort": sort})
        assert error_of(r) == (400, "VALIDATION_FAILED"), sort
        assert error_of(api.open("PUT", "/api/groups/g1", body={"sort": sort})) == (400, "VALIDATION_FAILED"), sort
    assert api.snapshot() == before


def test_group_sort_extremes_are_accepted(api):
    assert make_group(api, "lo", sort=-(2**31))["sort"] == -(2**31)
    assert make_group(api, "hi", sort=2**31 - 1)["sort"] == 2**31 - 1
    assert [g["name"] for g in api.open("GET", "/api/groups").get_json()["groups"]] == ["lo", "g1", "hi"]
    assert make_group(api, "next")["sort"] == 2**31 - 1  # "last", within the range


OUT_OF_RANGE = [
    "/api/logs?status_code=99999999999999999999",
    "/api/logs?status_code=-1",
    "/api/logs?status_code=1000",
    "/api/logs?page=99999999999999999999",
    "/api/logs?page=0",
    "/api/logs?page=-3",
    "/api/logs?page_size=0",
    "/api/logs?page_size=501",
    "/api/logs?page_size=-1",
    "/api/logs?page_size=99999999999999999999",
    "/api/logs?since=nan",
    "/api/logs?until=inf",
    "/api/logs?since=1e400",
    "/api/logs?since=-1",
    "/api/logs?until=1e12",
    "/api/logs/export.csv?status_code=99999999999999999999",
    "/api/logs/export.csv?since=nan",
    "/api/groups/g1/keys?page=99999999999999999999",
    "/api/groups/g1/keys?page=1000001",
    "/api/groups/g1/keys?page_size=501",
    "/api/groups/g1/keys?page=" + "9" * 5000,
    "/api/stats/hourly?hours=0",
    "/api/stats/hourly?hours=721",
    "/api/stats/hourly?hours=-24",
    "/api/stats/hourly?hours=99999999999999999999",
]


def test_query_numbers_out_of_range_are_400(api):
    for query in OUT_OF_RANGE:
        assert error_of(api.open("GET", query)) == (400, "VALIDATION_FAILED"), query


def test_query_numbers_in_range_are_accepted(api):
    for query in [
        "/api/logs?status_code=0&page=1000000&page_size=500&since=0&until=99999999999",
        "/api/logs?status_code=999",
        "/api/groups/g1/keys?page=1000000&page_size=1",
        "/api/stats/hourly?hours=720",
        "/api/stats/hourly?hours=1",
    ]:
        assert api.open("GET", query).status_code == 200, query


# -- 5. nesting depth ---------------------------------------------------------------------------------------------
def nested(depth: int) -> bytes:
    return ('{"a":' * (depth - 1) + "[1]" + "}" * (depth - 1)).encode()


ADMIN_BODIES = [
    ("POST", "/api/groups"),
    ("PUT", "/api/groups/g1"),
    ("PUT", "/api/settings"),
    ("POST", "/api/groups/g1/keys"),
    ("POST", "/api/groups/g1/keys/restore"),
    ("POST", "/api/groups/g1/keys/validate"),
    ("PUT", "/api/groups-order"),
]


def test_deeply_nested_json_is_invalid_json(api):
    before = api.snapshot()
    for method, path in ADMIN_BODIES:
        for raw in (
            b"[" * 100_000,
            b"{" * 100_000,
            nested(65),
            b'{"a": "[[[[", "b": ' + b"[" * 100 + b"]" * 100 + b"}",
        ):
            assert error_of(api.open(method, path, raw=raw)) == (400, "INVALID_JSON"), (path, raw[:20])
        r = api.open(method, path, raw=b"[" * 64 + b"]" * 64)  # 64 levels are fine for the parser; not the shape
        assert error_of(r) == (400, "VALIDATION_FAILED"), path
        r = api.open(method, path, raw=b'["' + b"[" * 1000 + b'"]')  # brackets inside a string are text
        assert error_of(r) == (400, "VALIDATION_FAILED"), path
    assert api.snapshot() == before


def test_lone_surrogates_are_invalid_json(api):
    before = api.snapshot()
    r = api.open("PUT", "/api/groups/g1", raw=b'{"display_name": "x\\udc00y"}')
    assert error_of(r) == (400, "INVALID_JSON")
    r = api.open("PUT", "/api/groups/g1/keys/nope", raw=b'{"notes": "\\ud800"}')
    assert error_of(r) == (400, "INVALID_JSON")
    r = api.open("PUT", "/api/groups/g1", raw=b'{"display_name": "\xed\xa0\x80"}')  # one, encoded in UTF-8
    assert error_of(r) == (400, "INVALID_JSON")
    assert api.snapshot() == before
    r = api.open("PUT", "/api/groups/g1", raw=b'{"display_name": "\\ud83d\\ude00 \\\\ud800"}')  # a pair; a text
    assert r.status_code == 200 and r.get_json()["display_name"] == "\U0001f600 \\ud800"


# -- 6. NUL and other odd paths -----------------------------------------------------------------------------------
ODD_PATHS = [
    ("GET", "/%00"),
    ("GET", "/admin%00.js"),
    ("GET", "/app.js%00"),
    ("GET", "/pages/%00/x.js"),
    ("HEAD", "/%00"),
    ("GET", "/" + "a" * 300),
    ("GET", "/" + "a" * 300 + ".js"),
    ("GET", "/pages/" + "a" * 5000),
    ("GET", "/api/logs/%00"),
    ("GET", "/api/groups/%00"),
    ("GET", "/api/groups/%00/keys"),
    ("PUT", "/api/groups/g1/keys/%00"),
    ("GET", "/api/tasks/%00"),
    ("DELETE", "/api/groups/%00"),
    ("GET", "/proxy/%00/v1beta/models"),
]


def test_nul_and_overlong_paths_are_json_4xx(api):
    before = api.snapshot()
    for method, path in ODD_PATHS:
        r = api.open(method, path, raw=b'{"notes": "x"}' if method == "PUT" else None)
        if method == "HEAD":
            assert r.status_code == 404
        else:
            status, _ = error_of(r)
            assert 400 <= status < 500, (path, status)
    assert api.snapshot() == before


# -- 7. body size -------------------------------------------------------------------------------------------------
class CountingStream:
    """A request body of ``size`` bytes of JSON whitespace that records how much was read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.read_bytes
        n = left if n is None or n < 0 else min(n, left)
        self.read_bytes += n
        return b" " * n

    def readline(self, limit: int = -1) -> bytes:
        return self.read(limit)


def post_stream(api, path: str, stream, content_length: int | None):
    headers = {**AUTH, "Content-Type": "application/json"}
    environ = EnvironBuilder(path=path, method="PUT", headers=headers).get_environ()
    environ["wsgi.input"] = stream
    environ["wsgi.input_terminated"] = True  # as gunicorn says for a chunked body
    if content_length is None:
        environ.pop("CONTENT_LENGTH", None)
    else:
        environ["CONTENT_LENGTH"] = str(content_length)
    return api.router(Request(environ))


def test_oversize_chunked_body_is_413_after_reading_at_most_the_limit(api):
    stream = CountingStream(ADMIN_BODY_LIMIT + 5 * 1024 * 1024)
    before = api.snapshot()
    r = post_stream(api, "/api/settings", stream, None)
    assert error_of(r) == (413, "BODY_TOO_LARGE")
    assert stream.read_bytes <= ADMIN_BODY_LIMIT + 1
    assert api.snapshot() == before


def test_oversize_content_length_is_413_without_reading(api):
    stream = CountingStream(ADMIN_BODY_LIMIT + 1)
    r = post_stream(api, "/api/settings", stream, ADMIN_BODY_LIMIT + 1)
    assert error_of(r) == (413, "BODY_TOO_LARGE") and stream.read_bytes == 0


def test_a_body_of_exactly_the_limit_is_read(api):
    class Body(CountingStream):
        def read(self, n: int = -1) -> bytes:
            chunk = super().read(n)
            if self.read_bytes == self.size and chunk:
                return chunk[:-2] + b"{}"
            return chunk

    r = post_stream(api, "/api/settings", Body(ADMIN_BODY_LIMIT), None)
    assert r.status_code == 200, r.get_data(as_text=True)


# -- 8. found by the property tests (test_admin_properties.py) ------------------------------------------------------
def test_order_names_and_validation_ids_must_be_strings(api):
    before = api.snapshot()
    for names in ([None, None], [1, "g1"], [{}], [["g1"]]):
        assert error_of(api.open("PUT", "/api/groups-order", body={"names": names})) == (400, "VALIDATION_FAILED")
    for ids in ([[]], [{}], [1], [None]):
        r = api.open("POST", "/api/groups/g1/keys/validate", body={"scope": "selected", "ids": ids})
        assert error_of(r) == (400, "VALIDATION_FAILED"), ids
    assert api.snapshot() == before


# -- 9. CSV export ------------------------------------------------------------------------------------------------
def test_csv_export_neutralises_formula_cells(api):
    for n, evil in enumerate(["=1+1", "+1", "-1", "@SUM(A1)", "\t=1+1", "\r=1+1", "\tcmd", "safe"]):
        event = UsageEvent("g1", f"k{n}", time.time(), False, status_code=500, user_agent=evil, error=evil)
        api.services.usage.add(event)
        r = api.open("GET", f"/api/logs/export.csv?key_id=k{n}")
        (row,) = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
        expected = evil if evil == "safe" else "'" + evil
        assert row["user_agent"] == expected and row["error"] == expected, repr(evil)


def test_strict_json_helper_rejects_nan():
    class R:
        def get_data(self):
            return json.dumps({"x": float("nan")}).encode()

    with pytest.raises(AssertionError):
        strict_json(R())
