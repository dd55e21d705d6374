"""What the real server does when its upstream is hostile or broken: redirects, decompression bombs, endless
bodies, trickles, resets, foreign upload URLs. The upstream is ``tests.fakes.hostile_upstream`` on a real socket."""

from __future__ import annotations

import secrets

import pytest
import requests

from tests.fakes.fake_gemini import make_key
from tests.fakes.hostile_upstream import HostileUpstream, Redirect

BODY = {"contents": [{"parts": [{"text": "hello"}]}]}
MiB = 1 << 20
MARGIN = 1.5  # seconds a request may take past its timeout (server and client scheduling on a shared machine)


@pytest.fixture
def hostile():
    with HostileUpstream() as up:
        yield up


@pytest.fixture
def elsewhere():
    """A second host: nothing may ever reach it."""
    with HostileUpstream() as up:
        yield up


def one_key_group(server, upstream: str, **settings):
    return server.make_group(upstream, [make_key(secrets.randbelow(10**9))], settings={"max_retries": 0, **settings})


def post(group, path: str, **kw) -> requests.Response:
    kw.setdefault("json", BODY)
    kw.setdefault("timeout", 30)
    headers = {"x-goog-api-key": group.proxy_key, **kw.pop("headers", {})}
    return requests.post(f"{group.base}/{path}", headers=headers, **kw)


# -- 1. redirects ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "status"), [("GET", 302), ("GET", 301), ("POST", 307), ("POST", 308)])
def test_a_redirect_is_passed_through_and_never_followed(server, hostile, elsewhere, method, status):
    location = f"{elsewhere.url}/v1beta/models?from=redirect"
    hostile.on("v1beta/models", Redirect(location, status=status, body=b'{"moved": "there"}'))
    group = one_key_group(server, hostile.url)
    r = requests.request(
        method,
        f"{group.base}/v1beta/models",
        headers={"x-goog-api-key": group.proxy_key},
        json=BODY if method == "POST" else None,
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == status, r.text
    assert r.headers["Location"] == location
    assert r.content == b'{"moved": "there"}'
    assert len(hostile.requests) == 1
    assert elsewhere.requests == []
