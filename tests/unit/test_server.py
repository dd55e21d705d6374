"""The local server's pieces (gptload.server) without a server: read timeouts, body budget, JSON error answers.
The e2e counterpart (a real server under slow and oversized requests) is tests/e2e/test_hostile_clients.py."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from types import SimpleNamespace

import pytest
from gunicorn.http.errors import InvalidRequestLine, LimitRequestHeaders, LimitRequestLine

from gptload.config import Config
from gptload.errors import RequestTimeout
from gptload.server import GptloadWorker, _Input, _Reader, error_reply, gunicorn_options, stop_schedule


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _reader(sock, header=0.1, body=0.1) -> _Reader:
    reader = _Reader(header, body)
    reader.sock = sock
    return reader


def test_headers_that_never_come_time_out_with_a_408_and_the_connection_is_spent(pair):
    server, _client = pair
    reader = _reader(server)
    with pytest.raises(RequestTimeout, match=r"headers did not arrive within 0\.1 s") as err:
        reader.recv(100)
    assert (err.value.status, err.value.code) == (408, "REQUEST_TIMEOUT")
    assert reader.broken and reader.recv(100) == b""  # later reads end at once, without waiting again
    assert server.gettimeout() is None  # the socket is blocking again, as gunicorn expects


def test_the_header_timeout_is_a_total_deadline_not_a_per_read_one(pair):
    server, client = pair
    reader = _reader(server, header=30)
    client.sendall(b"GET / HTTP/1.1\r\n")
    assert reader.recv(100) == b"GET / HTTP/1.1\r\n"  # the deadline starts at the first read
    reader._deadline = time.monotonic() - 0.001  # the client kept trickling bytes, but the total time is up
    client.sendall(b"X")
    with pytest.raises(RequestTimeout):
        reader.recv(100)


def test_a_stalled_body_times_out_per_read(pair):
    server, client = pair
    reader = _reader(server, header=0.1, body=0.2)
    reader.expect_body()
    client.sendall(b"abc")
    assert reader.recv(100) == b"abc"
    with pytest.raises(RequestTimeout, match=r"body stalled: no data for 0\.2 s"):
        reader.recv(100)


def test_after_the_answer_only_gunicorns_own_drain_timeout_applies_and_stays_a_socket_timeout(pair):
    server, _client = pair
    reader = _reader(server)
    reader.finished()
    reader.settimeout(0.05)  # what gunicorn's finish_body does to bound its drain of an unread body
    assert reader.gettimeout() == 0.05
    with pytest.raises(TimeoutError) as err:
        reader.recv(100)
    assert not isinstance(err.value, RequestTimeout) and not reader.broken


def test_a_new_request_on_a_kept_alive_connection_gets_a_fresh_header_deadline(pair):
    server, client = pair
    reader = _reader(server, header=30)
    client.sendall(b"x")
    reader.recv(1)
    first = reader._deadline
    reader.expect_body()
    reader.finished()
    reader.expect_headers()
    assert reader._deadline is None
    client.sendall(b"y")
    reader.recv(1)
    assert reader._deadline >= first


def test_input_stops_at_the_budget_and_after_a_failure():
    reader = _Reader(1, 1)
    body = _Input(io.BytesIO(b"x" * 100), reader, budget=10)
    assert body.read() == b"x" * 10
    assert reader.broken  # the rest stays unread: the connection closes after the answer
    assert body.read() == b"" and body.readline() == b"" and list(body) == []

    reader = _Reader(1, 1)
    body = _Input(io.BytesIO(b"line one\nline two\n"), reader, budget=1000)
    assert body.readline() == b"line one\n"
    reader.broken = True  # a read timed out (RequestTimeout went to the application once)
    assert body.read() == b""


@pytest.mark.parametrize(
    "exc, status, code",
    [
        (RequestTimeout("the request headers did not arrive within 10 s"), 408, "REQUEST_TIMEOUT"),
        (LimitRequestLine(9000, 8190), 414, "URI_TOO_LONG"),
        (LimitRequestHeaders("limit request headers fields"), 431, "HEADERS_TOO_LARGE"),
        (InvalidRequestLine("GET /proxy/g/x?key=pk-secret-proxy-key"), 400, "BAD_REQUEST"),
        (ValueError("boom"), 500, "INTERNAL"),
    ],
)
def test_error_reply(exc, status, code):
    got_status, got_code, message = error_reply(exc)
    assert (got_status, got_code) == (status, code)
    assert "secret" not in message  # never echoes the request


def test_gunicorn_errors_are_written_as_json(pair):
    server, client = pair
    fake_worker = SimpleNamespace(log=logging.getLogger("test"))
    GptloadWorker.handle_error(fake_worker, None, server, ("127.0.0.1", 5), LimitRequestLine(9000, 8190))
    server.close()
    raw = b""
    while chunk := client.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 Request-URI Too Long\r\n") or head.startswith(b"HTTP/1.1 414 URI Too Long")
    assert b"Content-Type: application/json" in head and b"Connection: close" in head
    assert json.loads(body) == {  # no route is known yet: Google's envelope, as on proxy routes
        "error": {
            "code": 414,
            "message": "the request line is longer than 8190 bytes",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "URI_TOO_LONG", "domain": "gptload"}
            ],
        }
    }


def test_gunicorn_options_come_from_the_config():
    config = Config.from_env(
        {
            "AUTH_KEY": "admin-key-123",
            "PORT": "9000",
            "HOST": "0.0.0.0",
            "THREADS": "12",
            "REQUEST_HEADER_TIMEOUT_SECONDS": "3",
            "REQUEST_BODY_TIMEOUT_SECONDS": "4",
            "MAX_BODY_BYTES": "2048",
        }
    )
    options = gunicorn_options(config)
    assert options["bind"] == "0.0.0.0:9000" and options["threads"] == 12 and options["workers"] == 1
    assert (options["limit_request_line"], options["limit_request_fields"], options["limit_request_field_size"]) == (
        8190,
        100,
        8190,
    )
    worker = options["worker_class"]
    assert issubclass(worker, GptloadWorker)
    assert (worker.header_timeout, worker.body_timeout, worker.body_budget) == (3.0, 4.0, 2048 + 1024 * 1024)


@pytest.mark.parametrize("graceful, cut, last", [(30, 25.0, 28.0), (3, 1.5, 2.25), (1, 0.5, 0.75)])
def test_stop_schedule_cuts_then_writes_before_gunicorns_kill(graceful, cut, last):
    assert stop_schedule(graceful) == (cut, last)
    assert cut < last < graceful


def test_the_graceful_timeout_reaches_the_arbiter_and_the_worker():
    config = Config.from_env({"AUTH_KEY": "admin-key-123", "GRACEFUL_TIMEOUT_SECONDS": "12"})

    def on_stop() -> None:
        pass

    options = gunicorn_options(config, on_stop)
    assert options["graceful_timeout"] == 12  # the arbiter's, a whole number as gunicorn requires
    worker = options["worker_class"]
    assert worker.graceful_timeout == 12 and worker.on_stop is on_stop  # not bound to the worker
