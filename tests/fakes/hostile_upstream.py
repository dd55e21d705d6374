"""A hostile (or just broken) HTTP upstream on a real loopback socket, scripted per test.

Where ``fake_gemini`` imitates Google faithfully, this one misbehaves on purpose, to show what gptload does with
an upstream that redirects, sends decompression bombs or endless bodies, trickles, resets, or hands out an upload
URL pointing somewhere else. Every answer is an *act*; a test routes requests to acts by path::

    with HostileUpstream() as up:                      # 127.0.0.1:<ephemeral port>, threaded
        up.on(":generateContent", GzipBomb(inflated=1 << 30))
        up.on("cachedContents", Huge(300 << 20, chunked=True))
        up.on("upload/", UploadStart("http://127.0.0.1:1/upload/v1beta/files?upload_id=x"))
        up.default = Respond(200, b"{}")
        ... drive the proxy at up.url ...
        up.requests                                    # what arrived, in order (Seen records)

Bounded: handler threads are daemons with socket timeouts, generated bodies are produced in 64 KiB pieces (never
held whole), every wait is on ``stopping`` so ``stop()`` ends trickles at once, and ``stop()`` shuts down every
open connection. No pytest import: usable from plain scripts too.
"""

from __future__ import annotations

import functools
import http.server
import json
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.serving import Served

__all__ = [
    "Echo",
    "GzipBomb",
    "HostileUpstream",
    "Huge",
    "Redirect",
    "Reset",
    "Respond",
    "Seen",
    "Trickle",
    "UploadStart",
    "gzip_bomb",
]

_PIECE = 64 * 1024


@functools.lru_cache(maxsize=4)
def gzip_bomb(inflated: int) -> bytes:
    """One gzip member of ``inflated`` zero bytes (1 GiB -> about 1 MiB), built once per size and process."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(min(inflated, 1 << 20))
    out, left = [], inflated
    while left > 0:
        out.append(comp.compress(block[: min(left, len(block))]))
        left -= len(block)
    out.append(comp.flush())
    return b"".join(out)


def peak_bytes(fn):
    """(result, peak Python allocation in bytes) of ``fn()``: how much a decoder held at once for a bomb."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    target: str  # path and query exactly as sent
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None  # when the answer was done (sent, aborted or the peer went away)
    peer_gone: bool = False  # writing the answer failed: the client closed the connection

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


class Act:
    """How to answer one request. ``run`` writes the whole answer on the handler's connection."""

    def run(self, h: _Handler, seen: Seen) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def _head(h: _Handler, status: int, headers: list[tuple[str, str]]) -> None:
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase if status in _KNOWN else 'Status'}"]
    lines += [f"{n}: {v}" for n, v in headers]
    h.connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


_KNOWN = {s.value for s in http.HTTPStatus}


@dataclass
class Respond(Act):
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    def run(self, h: _Handler, seen: Seen) -> None:
        _head(h, self.status, [*self.headers.items(), ("Content-Length", str(len(self.body)))])
        h.connection.sendall(self.body)


@dataclass
class Redirect(Act):
    """A 3xx with a Location (a client that follows it would send the request, key included, there)."""

    location: str
    status: int = 302
    body: bytes = b'{"moved": true}'

    def run(self, h: _Handler, seen: Seen) -> None:
        _head(
            h,
            self.status,
            [
                ("Location", self.location),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(self.body))),
            ],
        )
        h.connection.sendall(self.body)


@dataclass
class GzipBomb(Act):
    """``Content-Encoding: gzip`` whose few compressed bytes inflate to ``inflated`` bytes (1 GiB by default)."""

    status: int = 200
    inflated: int = 1 << 30
    content_type: str = "application/json"

    def run(self, h: _Handler, seen: Seen) -> None:
        data = gzip_bomb(self.inflated)
        _head(
            h,
            self.status,
            [("Content-Type", self.content_type), ("Content-Encoding", "gzip"), ("Content-Length", str(len(data)))],
        )
        view = memoryview(data)
        for i in range(0, len(data), _PIECE):
            h.connection.sendall(view[i : i + _PIECE])


@dataclass
class Huge(Act):
    """A body of ``size`` bytes produced on the fly (a JSON-looking prefix, then filler), never held in memory.
    ``chunked``: Transfer-Encoding chunked without Content-Length (a proxy cannot tell the size in advance)."""

    size: int
    status: int = 200
    chunked: bool = False
    content_type: str = "application/json"

    def run(self, h: _Handler, seen: Seen) -> None:
        headers = [("Content-Type", self.content_type)]
        headers.append(("Transfer-Encoding", "chunked") if self.chunked else ("Content-Length", str(self.size)))
        _head(h, self.status, headers)
        piece = (b'{"filler": "' + b"x" * _PIECE)[:_PIECE]
        filler = b"x" * _PIECE
        sent = 0
        while sent < self.size and not h.server.stopping.is_set():
            data = (piece if sent == 0 else filler)[: self.size - sent]
            h.connection.sendall(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
            sent += len(data)
        if self.chunked:
            h.connection.sendall(b"0\r\n\r\n")


@dataclass
class Trickle(Act):
    """Answers one byte every ``interval`` seconds: the headers too when ``headers_too``, else headers at once
    and then the body byte by byte (``chunked``: each byte as its own chunk), after ``body_delay`` seconds."""

    body: bytes = b'{"candidates": []}' + b" " * 100
    status: int = 200
    interval: float = 1.0
    headers_too: bool = False
    chunked: bool = False
    content_type: str = "application/json"
    body_delay: float = 0.0

    def run(self, h: _Handler, seen: Seen) -> None:
        framing = ("Transfer-Encoding", "chunked") if self.chunked else ("Content-Length", str(len(self.body)))
        head = (
            f"HTTP/1.1 {self.status} Slow\r\nContent-Type: {self.content_type}\r\n{framing[0]}: {framing[1]}\r\n\r\n"
        ).encode()
        if self.headers_too:
            self._drip(h, head)
        else:
            h.connection.sendall(head)
        if self.body_delay and h.server.stopping.wait(self.body_delay):
            raise BrokenPipeError("upstream stopping")
        if self.chunked:
            self._drip(h, self.body, lambda b: b"1\r\n" + b + b"\r\n")
            h.connection.sendall(b"0\r\n\r\n")
        else:
            self._drip(h, self.body)

    def _drip(self, h: _Handler, data: bytes, frame: Any = None) -> None:
        for i in range(len(data)):
            one = data[i : i + 1]
            h.connection.sendall(frame(one) if frame else one)
            if h.server.stopping.wait(self.interval):
                raise BrokenPipeError("upstream stopping")


@dataclass
class Reset(Act):
    """Declares ``declared`` bytes, sends ``send`` of them, then resets the connection (TCP RST)."""

    declared: int = 100_000
    send: int = 1000
    status: int = 200
    content_type: str = "application/json"

    def run(self, h: _Handler, seen: Seen) -> None:
        _head(h, self.status, [("Content-Type", self.content_type), ("Content-Length", str(self.declared))])
        if self.send:
            h.connection.sendall(b"{" + b" " * (self.send - 1))
        h.abort()


@dataclass
class UploadStart(Act):
    """The answer to a resumable upload start, with an ``X-Goog-Upload-URL`` of the test's choosing."""

    upload_url: str

    def run(self, h: _Handler, seen: Seen) -> None:
        _head(
            h,
            200,
            [
                ("X-Goog-Upload-Status", "active"),
                ("X-Goog-Upload-URL", self.upload_url),
                ("X-Goog-Upload-Chunk-Granularity", "8388608"),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", "0"),
            ],
        )


@dataclass
class Echo(Act):
    """An error whose JSON body echoes the request: method, target, headers (the key too) and body."""

    status: int = 400

    def run(self, h: _Handler, seen: Seen) -> None:
        doc = {
            "error": {
                "code": self.status,
                "status": "INVALID_ARGUMENT",
                "message": f"echo {seen.method} {seen.target}",
                "request": {
                    "headers": seen.headers,
                    "body": seen.body.decode("utf-8", "replace"),
                },
            }
        }
        body = json.dumps(doc).encode()
        _head(h, self.status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        h.connection.sendall(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    upstream: HostileUpstream
    stopping: threading.Event


class HostileUpstream(Served):
    """See the module docstring. ``routes`` are tried in order; the first whose text is in the request's target
    answers (``times``: how many requests it answers before it is skipped); otherwise ``default``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.default: Act = Respond()
        self.routes: list[list[Any]] = []  # [contains, act, times left or None]
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> HostileUpstream:
        srv = _Server((self.host, 0), _Handler)
        srv.upstream, srv.stopping = self, threading.Event()
        return self._serve(srv, "hostile-upstream")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stopping.set()  # acts that trickle or wait end at once
        self._close()

    # -- scripting and inspection --------------------------------------------------------------------------
    def on(self, contains: str, act: Act, times: int | None = None) -> HostileUpstream:
        with self._lock:
            self.routes.append([contains, act, times])
        return self

    def _act_for(self, target: str) -> Act:
        with self._lock:
            for route in self.routes:
                contains, act, times = route
                if contains in target and (times is None or times > 0):
                    if times is not None:
                        route[2] = times - 1
                    return act
        return self.default

    def wait_until_ended(self, n: int = 1, timeout: float = 10.0) -> list[Seen]:
        """The first ``n`` requests once their answers are over (sent, aborted, or the peer went away)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                seen = list(self.requests)
            if len(seen) >= n and all(s.ended_at is not None for s in seen[:n]):
                return seen[:n]
            time.sleep(0.01)
        raise TimeoutError(f"{len(self.requests)} request(s) seen, wanted {n} ended")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 30  # an idle or stuck peer cannot hold a thread for longer
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.upstream._lock:
            self.server.upstream._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            with self.server.upstream._lock:
                self.server.upstream._conns.discard(self.connection)

    def abort(self) -> None:
        """Reset the connection: SO_LINGER 0 then close sends a TCP RST."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            for _ in range(100_000):
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    for _ in range(100):
                        if self.rfile.readline(65537) in (b"\r\n", b"\n", b""):
                            break
                    break
                out += self.rfile.read(size)
                self.rfile.readline(3)
            return bytes(out)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self) -> None:
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self._read_body())
        up = self.server.upstream
        with up._lock:
            up.requests.append(seen)
        try:
            up._act_for(self.path).run(self, seen)
        except OSError:  # BrokenPipe, ConnectionReset, the socket closed by abort()
            seen.peer_gone = True
            self.close_connection = True
        finally:
            seen.ended_at = time.monotonic()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle
