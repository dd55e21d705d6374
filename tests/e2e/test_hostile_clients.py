"""Hostile clients against the real local server (``python main.py``): slow and oversized requests must not stall
it, and what gunicorn answers for them is JSON.

Every loop here is bounded in count and time, and every socket goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from tests.e2e.conftest import start_server

SLOW_CLIENTS = 64
TIMEOUT = 2  # REQUEST_HEADER_TIMEOUT_SECONDS / REQUEST_BODY_TIMEOUT_SECONDS in these tests
BODY = json.dumps({"contents": [{"parts": [{"text": "hello"}]}]}).encode()


def _addr(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _health_seconds(server) -> float:
    """Seconds one fresh-connection GET /health took (failing the test if it did not answer 200)."""
    started = time.monotonic()
    try:
        r = requests.get(f"{server.url}/health", timeout=(1, 1))
    except requests.RequestException as exc:
        raise AssertionError(f"/health did not answer within 1 s: {exc!r}") from None
    assert r.status_code == 200, r.text
    return time.monotonic() - started


def _read_until_closed(sock: socket.socket, deadline: float, limit: int = 1 << 20) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection; (data, closed before the deadline)."""
    data = b""
    while len(data) < limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, False
        sock.settimeout(remaining)
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            return data, False
        except OSError:  # reset: closed too
            return data, True
        if not piece:
            return data, True
        data += piece
    return data, False


def _json_error(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), raw[:500]
    return status, json.loads(body)


def _reason(body: dict) -> str:
    """The error's code: a string in gptload's envelope, ErrorInfo's reason in Google's (used on proxy routes)."""
    error = body["error"]
    if isinstance(error.get("code"), str):
        return error["code"]
    return next(d["reason"] for d in error.get("details", []) if "reason" in d)


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory):
    """The server with its default thread count and short read timeouts (the defaults are 10 s and 30 s)."""
    srv = start_server(
        tmp_path_factory.mktemp("hostile"),
        {"THREADS": None, "REQUEST_HEADER_TIMEOUT_SECONDS": str(TIMEOUT), "REQUEST_BODY_TIMEOUT_SECONDS": str(TIMEOUT)},
    )
    yield srv
    srv.stop()


def test_64_slow_clients_do_not_stall_health(quick_server, fake):
    """Half requests (headers never finished, bodies shorter than Content-Length) are cut after the read timeouts,
    and /health answers within 1 s all along, with the server's default thread count."""
    srv = quick_server
    slow: list[tuple[str, socket.socket]] = []
    try:
        group = srv.make_group(fake.url, [fake.add_key()])
        host, port = _addr(srv)
        opened = time.monotonic()
        for i in range(SLOW_CLIENTS):
            sock = socket.create_connection((host, port), timeout=5)
            if i % 2:
                kind = "body"
                sock.sendall(
                    f"POST /proxy/{group.name}/v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\n"
                    f"Host: {host}\r\nx-goog-api-key: {group.proxy_key}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(BODY) + 100}\r\n\r\n".encode()
                    + BODY
                )
            else:
                kind = "headers"
                sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
            slow.append((kind, sock))

        worst = 0.0
        polls = 0
        watch_until = opened + TIMEOUT + 3  # past the timeouts, while the slow sockets are being cut
        while time.monotonic() < watch_until and polls < 500:
            worst = max(worst, _health_seconds(srv))
            polls += 1
            time.sleep(0.02)
        assert polls >= 10
        print(f"slowest /health with {SLOW_CLIENTS} slow clients: {worst * 1000:.0f} ms over {polls} polls")

        cut_by = opened + TIMEOUT + 10
        answers: dict[str, list[int]] = {"headers": [], "body": []}
        for kind, sock in slow:
            raw, closed = _read_until_closed(sock, cut_by)
            assert closed, f"a slow {kind} client was still connected {TIMEOUT + 10} s after it started"
            if raw:
                status, body = _json_error(raw)
                assert _reason(body) == "REQUEST_TIMEOUT", body
                answers[kind].append(status)
        # every slow client got its 408 (an empty answer would mean the server hung up without one)
        assert answers == {"headers": [408] * (SLOW_CLIENTS // 2), "body": [408] * (SLOW_CLIENTS // 2)}
        assert _health_seconds(srv) < 1
    finally:
        for _, sock in slow:
            sock.close()


@pytest.mark.parametrize("proxy_key_ok", [True, False], ids=["read-by-the-proxy", "left-unread-after-a-401"])
def test_a_stalled_chunked_body_gets_a_json_408(quick_server, fake, proxy_key_ok):
    """Whether the proxy reads the body or answers 401 first (functions-framework then reads the rest itself), a
    body that stops arriving ends in a JSON 408, not a hang nor Flask's HTML 500 page."""
    group = quick_server.make_group(fake.url, [fake.add_key()])
    key = group.proxy_key if proxy_key_ok else "pk-wrong"
    raw = _raw_exchange(
        quick_server,
        f"POST /proxy/{group.name}/v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\nHost: x\r\n"
        f'x-goog-api-key: {key}\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{{"contents"'.encode(),
    )
    status, body = _json_error(raw)
    assert status == 408 and _reason(body) == "REQUEST_TIMEOUT", body
    assert fake.requests == []  # nothing half-read went upstream


def test_64_mib_request_line_is_rejected_at_once_and_the_server_stays_responsive(server):
    host, port = _addr(server)
    total = 64 * 1024 * 1024
    sent = [0]
    with socket.create_connection((host, port), timeout=5) as sock:

        def send() -> None:
            piece = b"a" * (1 << 20)
            try:
                sock.sendall(b"GET /")
                while sent[0] < total:
                    sock.sendall(piece)
                    sent[0] += len(piece)
            except OSError:
                pass  # the server answered and closed: expected

        sender = threading.Thread(target=send, daemon=True)
        started = time.monotonic()
        sender.start()
        raw, closed = _read_until_closed(sock, started + 15)
        print(
            f"64 MiB request line: answered and closed after {time.monotonic() - started:.2f} s, {sent[0]} bytes sent"
        )
        try:
            sock.shutdown(socket.SHUT_RDWR)  # stops the sender
        except OSError:
            pass  # reset already: the server closed with our unread bytes in its buffer, and the sender has stopped
        sender.join(5)
    assert closed, "the server neither answered nor closed within 15 s"
    assert sent[0] < total, "the server read the whole 64 MiB request line"
    status, body = _json_error(raw)
    assert status == 414 and _reason(body) == "URI_TOO_LONG", body
    assert _health_seconds(server) < 1


def _raw_exchange(server, request: bytes) -> bytes:
    with socket.create_connection(_addr(server), timeout=5) as sock:
        sock.sendall(request)
        raw, closed = _read_until_closed(sock, time.monotonic() + 10)
    assert closed and raw, "no answer"
    return raw


def test_too_many_headers_get_a_json_431(server):
    headers = "".join(f"X-H{i}: v\r\n" for i in range(200))
    status, body = _json_error(_raw_exchange(server, f"GET /health HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()))
    assert status == 431 and _reason(body) == "HEADERS_TOO_LARGE", body


def test_an_oversized_header_gets_a_json_431(server):
    big = "v" * 20000
    status, body = _json_error(
        _raw_exchange(server, f"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode())
    )
    assert status == 431 and _reason(body) == "HEADERS_TOO_LARGE", body


def test_a_malformed_request_line_gets_a_json_400(server):
    status, body = _json_error(_raw_exchange(server, b"NOT A REQUEST\r\n\r\n"))
    assert status == 400 and _reason(body) == "BAD_REQUEST", body
