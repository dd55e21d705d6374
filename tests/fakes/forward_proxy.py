"""A small forwarding HTTP proxy on a real socket, for tests of a group's ``proxy_url``.

- Plain HTTP: the client sends ``METHOD http://host:port/path HTTP/1.1``; the proxy opens a connection to that
  origin, relays the request (minus ``Proxy-*`` headers) and relays the answer back byte for byte (chunked or not)
  until the origin closes or the declared length ends. One request per client connection (``Connection: close``).
- ``CONNECT host:port``: answers 200 and tunnels bytes both ways (for https:// upstreams).
- With ``credentials=("user", "pass")`` every request must carry ``Proxy-Authorization: Basic ...`` for them, or
  it is answered 407 and counted in ``refused``.

``requests`` records ``(method, target)`` of each request it forwarded; ``authorizations`` the Proxy-Authorization
values it saw.
"""

from __future__ import annotations

import base64
import select
import socket
import socketserver
import threading
from typing import Any

from tests.fakes.serving import Served


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: ForwardProxy


class ForwardProxy(Served):
    def __init__(self, credentials: tuple[str, str] | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.credentials = credentials
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> ForwardProxy:
        srv = _Server((self.host, 0), _Handler)
        srv.proxy = self
        return self._serve(srv, "forward-proxy")

    def stop(self) -> None:
        self._close()

    def authorized(self, header: str) -> bool:
        if self.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return header == expected


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        proxy = self.server.proxy
        with proxy._lock:
            proxy._conns.add(self.connection)
        try:
            self._one()
        except OSError:
            pass
        finally:
            with proxy._lock:
                proxy._conns.discard(self.connection)

    def _one(self) -> None:
        proxy = self.server.proxy
        request_line = self.rfile.readline(65537).decode("latin-1").rstrip("\r\n")
        if not request_line:
            return
        method, target, _version = request_line.split(" ", 2)
        headers: list[tuple[str, str]] = []
        while True:
            line = self.rfile.readline(65537).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        auth = next((v for n, v in headers if n.lower() == "proxy-authorization"), "")
        with proxy._lock:
            proxy.authorizations.append(auth)
        if not proxy.authorized(auth):
            with proxy._lock:
                proxy.refused += 1
            self.wfile.write(
                b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="t"\r\n'
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        with proxy._lock:
            proxy.requests.append((method, target))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host, int(port)), timeout=30)
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            self._tunnel(upstream)
            return
        self._forward(method, target, headers)

    def _forward(self, method: str, target: str, headers: list[tuple[str, str]]) -> None:
        rest = target.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        length = int(next((v for n, v in headers if n.lower() == "content-length"), "0") or 0)
        body = self.rfile.read(length) if length else b""
        kept = [(n, v) for n, v in headers if not n.lower().startswith("proxy-") and n.lower() != "connection"]
        head = (
            f"{method} /{path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in kept) + "Connection: close\r\n\r\n"
        )
        upstream = socket.create_connection((host, int(port or 80)), timeout=30)
        with upstream:
            upstream.sendall(head.encode("latin-1") + body)
            while True:  # the origin closes after its answer (Connection: close): relay until then
                data = upstream.recv(65536)
                if not data:
                    break
                self.wfile.write(data)
                self.wfile.flush()

    def _tunnel(self, upstream: socket.socket) -> None:
        client = self.connection
        with upstream:
            sockets = [client, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    return
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    (upstream if s is client else client).sendall(data)


class Socks5Proxy(Served):
    """A SOCKS5 proxy (RFC 1928, CONNECT only) on a real socket, with username/password auth (RFC 1929) when
    ``credentials`` are given. ``connects`` records each ``host:port`` it connected to; ``refused`` counts failed
    logins."""

    def __init__(self, credentials: tuple[str, str] | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.credentials = credentials
        self.connects: list[str] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> Socks5Proxy:
        srv = _Server((self.host, 0), _SocksHandler)
        srv.proxy = self  # type: ignore[assignment]
        return self._serve(srv, "socks5-proxy")

    def stop(self) -> None:
        self._close()


class _SocksHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        proxy: Socks5Proxy = self.server.proxy  # type: ignore[attr-defined]
        with proxy._lock:
            proxy._conns.add(self.connection)
        try:
            self._one(proxy)
        except (OSError, ValueError):
            pass
        finally:
            with proxy._lock:
                proxy._conns.discard(self.connection)

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise ValueError("short read")
        return data

    def _one(self, proxy: Socks5Proxy) -> None:
        version, n_methods = self._read(2)
        methods = self._read(n_methods)
        wanted = 0x02 if proxy.credentials else 0x00
        if version != 5 or wanted not in methods:
            self.wfile.write(b"\x05\xff")
            return
        self.wfile.write(bytes([5, wanted]))
        if proxy.credentials:
            _v, ulen = self._read(2)
            user = self._read(ulen).decode()
            (plen,) = self._read(1)
            password = self._read(plen).decode()
            if (user, password) != proxy.credentials:
                with proxy._lock:
                    proxy.refused += 1
                self.wfile.write(b"\x01\x01")
                return
            self.wfile.write(b"\x01\x00")
        _v, command, _rsv, kind = self._read(4)
        if kind == 1:
            host = socket.inet_ntoa(self._read(4))
        elif kind == 3:
            (length,) = self._read(1)
            host = self._read(length).decode()
        else:
            raise ValueError("address type not supported")
        port = int.from_bytes(self._read(2), "big")
        if command != 1:
            self.wfile.write(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        upstream = socket.create_connection((host, port), timeout=30)
        with proxy._lock:
            proxy.connects.append(f"{host}:{port}")
        self.wfile.write(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
        self.wfile.flush()
        _Handler._tunnel(self, upstream)  # type: ignore[arg-type]
