"""X-Forwarded-* trust (gptload.web.forwarded) on werkzeug requests; the e2e side is tests/e2e/test_forwarded.py."""

from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gptload.web.forwarded import client_ip, public_base, valid_host


def req(headers: dict | list | None = None, host: str = "gptload.example:8080", remote: str = "10.0.0.7") -> Request:
    env = EnvironBuilder(path="/proxy/g/x", headers=headers or {}).get_environ()
    env.update({"REMOTE_ADDR": remote, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080"})
    if host is None:
        env.pop("HTTP_HOST", None)
    else:
        env["HTTP_HOST"] = host
    return Request(env)


@pytest.mark.parametrize(
    "hops, xff, expected",
    [
        (0, "6.6.6.6", "10.0.0.7"),  # not configured: never believed
        (1, "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # the front end appended what it saw
        (1, "203.0.113.9", "203.0.113.9"),
        (2, "6.6.6.6, 198.51.100.1, 203.0.113.9", "198.51.100.1"),
        (2, "203.0.113.9", "10.0.0.7"),  # fewer entries than trusted hops: the peer
        (1, "", "10.0.0.7"),
        (1, "6.6.6.6, not-an-ip", "10.0.0.7"),
        (1, "2001:db8::1", "2001:db8::1"),
        # an IPv6 scope id is free text to ipaddress: it would reach ${CLIENT_IP} header rules and the log
        (1, "fe80::1%\x01evil; x=1", "10.0.0.7"),
        (1, "fe80::1%eth0", "10.0.0.7"),
    ],
)
def test_client_ip(hops, xff, expected):
    headers = {"X-Forwarded-For": xff} if xff else {}
    assert client_ip(req(headers), hops) == expected


def test_client_ip_reads_repeated_header_lines_in_order():
    headers = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.9")]
    assert client_ip(req(headers), 1) == "203.0.113.9"


@pytest.mark.parametrize(
    "hops, headers, expected",
    [
        (0, {}, "http://gptload.example:8080"),
        (0, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}, "http://gptload.example:8080"),
        (1, {"X-Forwarded-Proto": "https"}, "https://gptload.example:8080"),
        (1, {"X-Forwarded-Proto": "javascript, https"}, "https://gptload.example:8080"),
        (1, {"X-Forwarded-Proto": "https, javascript"}, "http://gptload.example:8080"),
        (1, {"X-Forwarded-Proto": "HTTPS"}, "https://gptload.example:8080"),
        (1, {"X-Forwarded-Host": "evil.example"}, "http://gptload.example:8080"),  # never believed
    ],
)
def test_public_base(hops, headers, expected):
    assert public_base(req(headers), hops) == expected


@pytest.mark.parametrize("host", ["evil.example/phish?x=", "a b", "javascript:alert(1)", "x:99999", "[nope]:1", ""])
def test_an_invalid_host_falls_back_to_the_servers_own_address(host):
    assert public_base(req({}, host=host), 0) == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    "value, ok",
    [
        ("gptload.example", True),
        ("gptload.example:443", True),
        ("localhost:8080", True),
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("[2001:db8::1]", True),
        ("my_service:80", True),  # compose/k8s service names
        ("a" * 64 + ".example", False),
        ("-bad.example", False),
        ("evil.example@other", False),
        ("host:", False),
        ("host:8080:1", False),
        ("[::1", False),
        ("::1", False),
    ],
)
def test_valid_host(value, ok):
    assert valid_host(value) is ok
