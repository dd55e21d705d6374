"""Hostile clients against the real server (gunicorn via functions-framework): odd paths, chunked over-size
bodies, non-finite numbers, deep nesting. Every answer is gptload's JSON error, never a 500; the console carries
its security headers. (The full matrix runs in process in tests/unit/test_hostile_admin.py.)"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from tests.e2e.conftest import AUTH_KEY

AUTH = {"Authorization": f"Bearer {AUTH_KEY}"}
LIMIT = 8 * 1024 * 1024


def error_of(r: requests.Response) -> tuple[int, str]:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return r.status_code, body["error"]["code"]


@pytest.mark.parametrize(
    "path", ["/%00", "/admin%00.js", "/app.js%00", "/" + "a" * 300, "/api/logs/%00"], ids=lambda p: p[:16]
)
def test_nul_and_overlong_paths_are_json_404(server, path):
    r = requests.get(server.url + path, headers=AUTH, timeout=10)
    assert error_of(r) == (404, "ROUTE_NOT_FOUND"), path


def test_chunked_admin_body_over_the_limit_is_413(server):
    """A chunked body has no Content-Length: the server reads at most the limit + 1 byte, then answers 413."""
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    chunk = b" " * 65536
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            b"PUT /api/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {AUTH_KEY}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        try:
            while sent <= LIMIT + 4 * len(chunk):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may answer and close before the client has sent everything
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + 20:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b'"code":"BODY_TOO_LARGE"' in body
    assert requests.get(f"{server.url}/api/settings", headers=AUTH, timeout=10).status_code == 200


def test_content_length_over_the_limit_is_413(server):
    r = requests.put(f"{server.url}/api/settings", headers=AUTH, data=b" " * (LIMIT + 1), timeout=30)
    assert error_of(r) == (413, "BODY_TOO_LARGE")


@pytest.mark.parametrize(
    "raw",
    [b'{"max_retries": NaN}', b'{"request_timeout_seconds": Infinity}', b"[" * 100_000],
    ids=["nan", "inf", "deep"],
)
def test_non_finite_and_deep_json_are_invalid_json(server, raw):
    r = requests.put(f"{server.url}/api/settings", headers=AUTH, data=raw, timeout=10)
    assert error_of(r) == (400, "INVALID_JSON")
    r = requests.get(f"{server.url}/api/settings", headers=AUTH, timeout=10)

    def refuse(name):
        raise AssertionError(f"{name} in /api/settings")

    json.loads(r.content, parse_constant=refuse)


def test_console_security_headers(server):
    r = requests.get(f"{server.url}/", timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    policy = r.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "object-src 'none'"):
        assert directive in policy
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "no-referrer"
