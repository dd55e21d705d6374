"""SIGTERM to ``python main.py`` while streamed answers run: no usage is lost (request-log rows and statistics in
the SQLite database of the data directory)."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import time

import requests

from tests.e2e.conftest import start_server

BODY = json.dumps({"contents": [{"parts": [{"text": "alpha beta gamma delta"}]}]}).encode()
STREAMS = 5


def _counts(server) -> tuple[int, int]:
    """(request-log rows, requests in the hourly statistics) in the server's database."""
    with sqlite3.connect(server.data_dir / "gptload.db", timeout=10) as db:
        rows = db.execute("SELECT COUNT(*) FROM request_logs").fetchone()[0]
        stats = db.execute("SELECT COALESCE(SUM(requests), 0) FROM stats_hourly").fetchone()[0]
    return rows, stats


def _errors(server) -> list[str]:
    with sqlite3.connect(server.data_dir / "gptload.db", timeout=10) as db:
        return [r[0] for r in db.execute("SELECT error FROM request_logs ORDER BY at")]


def _open_stream(group) -> socket.socket:
    """A streamed generation on a raw socket, returned once its first event has arrived."""
    host, port = group.server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"POST /proxy/{group.name}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse HTTP/1.1\r\n"
        f"Host: {host}\r\nx-goog-api-key: {group.proxy_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY
    )
    received = b""
    deadline = time.monotonic() + 10
    while b"data: " not in received:
        assert time.monotonic() < deadline, "the stream did not start"
        piece = sock.recv(65536)
        assert piece, received
        received += piece
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return sock


def _read_to_end(sock: socket.socket, deadline: float) -> None:
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return
        except TimeoutError:
            continue
        except OSError:
            return


def _wait_exit(server, seconds: float) -> float:
    started = time.monotonic()
    try:
        server.process.wait(seconds)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)
        raise AssertionError(f"the server was still running {seconds} s after SIGTERM:\n{server.log()}") from None
    return time.monotonic() - started


def _poll(condition, seconds: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def test_sigterm_writes_buffered_usage_at_once_and_each_stream_as_it_ends(tmp_path, fake):
    srv = start_server(tmp_path, {"USAGE_FLUSH_SECONDS": "3600", "GRACEFUL_TIMEOUT_SECONDS": "60"})
    streams: list[socket.socket] = []
    try:
        group = srv.make_group(fake.url, [fake.add_key()])
        for _ in range(3):  # finished before SIGTERM: buffered (the flush interval is an hour)
            r = requests.post(
                f"{group.base}/v1beta/models/gemini-2.5-flash:generateContent",
                headers={"x-goog-api-key": group.proxy_key},
                data=BODY,
                timeout=10,
            )
            assert r.status_code == 200
        fake.stream_chunks, fake.stream_interval = 40, 0.25  # 10 s streams
        streams = [_open_stream(group) for _ in range(STREAMS)]
        assert _counts(srv) == (0, 0)

        srv.process.send_signal(signal.SIGTERM)
        assert _poll(lambda: _counts(srv) == (3, 3) or srv.process.poll() is not None, 10)
        assert srv.process.poll() is None, "the buffered rows were only written at exit"
        assert _counts(srv) == (3, 3)

        streams.pop().close()  # one client goes away: its stream ends, and is written while the others run
        assert _poll(lambda: _counts(srv) == (4, 4) or srv.process.poll() is not None, 10)
        assert srv.process.poll() is None, "the ended stream was only written at exit"

        deadline = time.monotonic() + 30
        for sock in streams:
            _read_to_end(sock, deadline)
        _wait_exit(srv, 30)
        assert _counts(srv) == (3 + STREAMS, 3 + STREAMS)
        assert _errors(srv).count("") == 3 + STREAMS - 1  # the streams ran to their end
    finally:
        for sock in streams:
            sock.close()
        srv.stop()


def test_streams_still_running_at_the_graceful_timeout_are_cut_and_still_written(tmp_path, fake):
    graceful = 6  # cut 3 s after SIGTERM, last write at 4.5 s: streams chunking every 0.25 s have 1.5 s to end
    srv = start_server(tmp_path, {"USAGE_FLUSH_SECONDS": "3600", "GRACEFUL_TIMEOUT_SECONDS": str(graceful)})
    streams: list[socket.socket] = []
    try:
        group = srv.make_group(fake.url, [fake.add_key()])
        fake.stream_chunks, fake.stream_interval = 240, 0.25  # 60 s streams, far beyond the graceful timeout
        streams = [_open_stream(group) for _ in range(STREAMS)]

        srv.process.send_signal(signal.SIGTERM)
        took = _wait_exit(srv, graceful + 15)
        print(f"exited {took:.2f} s after SIGTERM with {STREAMS} streams running; rows {_counts(srv)}")
        assert _counts(srv) == (STREAMS, STREAMS)
        assert all(error for error in _errors(srv))  # each row says its stream was cut
        assert "killed" not in srv.log().lower() and "SIGKILL" not in srv.log()
    finally:
        for sock in streams:
            sock.close()
        srv.stop()


def test_streams_whose_upstream_is_silent_at_the_cut_are_ended_and_written(tmp_path, fake):
    """A relay blocked on an upstream that sends nothing is ended by the cut too (the forwarder shuts its upstream
    socket), so its row is written before the process exits instead of being lost at the kill."""
    graceful = 6
    srv = start_server(tmp_path, {"USAGE_FLUSH_SECONDS": "3600", "GRACEFUL_TIMEOUT_SECONDS": str(graceful)})
    streams: list[socket.socket] = []
    try:
        group = srv.make_group(fake.url, [fake.add_key()])
        fake.stream_chunks, fake.stream_interval = 3, 60.0  # one event, then a minute of silence
        streams = [_open_stream(group) for _ in range(STREAMS)]
        srv.process.send_signal(signal.SIGTERM)
        took = _wait_exit(srv, graceful + 15)
        print(f"exited {took:.2f} s after SIGTERM with {STREAMS} silent streams; rows {_counts(srv)}")
        assert took < graceful
        assert _counts(srv) == (STREAMS, STREAMS)
        assert all(error.startswith("cut:") for error in _errors(srv)), _errors(srv)
    finally:
        for sock in streams:
            sock.close()
        srv.stop()
