"""Reading from an upstream that may be hostile or broken: never followed redirects, capped reads, capped decoding,
real deadlines.

- ``UpstreamSession`` (``make_session``) sends a prepared request through the connection pool and returns the
  answer as it is: a 3xx is an answer, never followed (no redirect machinery, no cookie jar, no hooks). The time
  to the response headers is a wall-clock bound (a watchdog shuts the socket down), not a per-read timeout that a
  trickle of header bytes could stretch forever.
- ``Timeouts`` carries, besides requests' ``(connect, read)``, the whole-call deadline of non-streamed calls and the
  idle gap allowed between reads of streamed ones; the session stamps them on the response.
- ``body_chunks`` yields the raw (still encoded) body in pieces of at most 64 KiB within those limits; past the
  deadline the socket is shut down and ``UpstreamDeadline`` (a ``requests`` timeout) is raised.
- ``Inflater`` decodes gzip/deflate with ``zlib``'s ``max_length``: never more output than asked for, whatever
  the input inflates to. ``read_capped`` / ``decode_capped`` build on it.
- ``Primed`` pulls the first piece of a relay before the answer goes out, so that a failure before the first byte
  becomes an error answer (504 ``UPSTREAM_TIMEOUT``, 502 ``UPSTREAM_UNREACHABLE``) instead of a broken response.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import socket
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

from gptload.errors import GptloadError, UpstreamTimeout, UpstreamUnreachable

log = logging.getLogger(__name__)

ERROR_BODY_CAP = 1024 * 1024  # decoded bytes of an error body (or a validation answer) that are kept
READ_SIZE = 64 * 1024  # the largest piece read from the socket or produced by a decoder at once
_KILL_RETRY = 0.05  # the watchdog fired before the connection had a socket: look again this much later


class UpstreamDeadline(requests.exceptions.ReadTimeout):
    """The whole-call deadline (or the time allowed until the response headers) passed."""


# -- timeouts ---------------------------------------------------------------------------------------------------
class Timeouts(tuple[float, float]):
    """``(connect, first_byte)`` as requests expects them, plus ``total`` (the whole-call deadline in seconds, None
    for streams) and ``idle`` (the longest gap between body reads, streams only). ``first_byte`` counts from the
    start of the call, connecting and sending the request included."""

    total: float | None
    idle: float | None

    def __new__(
        cls, connect: float, first_byte: float, total: float | None = None, idle: float | None = None
    ) -> Timeouts:
        self = super().__new__(cls, (connect, first_byte))
        self.total, self.idle = total, idle
        return self


def call_timeouts(settings: Any, *, stream: bool) -> Timeouts:
    """A non-streamed call must be done (headers and the whole body relayed) within ``request_timeout_seconds``;
    a stream gets its headers within ``first_byte_timeout_seconds`` and then may be silent for at most
    ``stream_idle_timeout_seconds`` at a time."""
    connect, first_byte = settings.connect_timeout_seconds, settings.first_byte_timeout_seconds
    if stream:
        return Timeouts(connect, first_byte, idle=settings.stream_idle_timeout_seconds)
    total = settings.request_timeout_seconds
    return Timeouts(connect, min(first_byte, total), total=total)


@dataclass(frozen=True)
class _Limits:
    deadline: float | None = None  # time.monotonic() value
    idle: float | None = None


_NO_LIMITS = _Limits()


def limits_of(resp: requests.Response) -> _Limits:
    return getattr(resp, "_gptload_limits", _NO_LIMITS)


# -- the watchdog -----------------------------------------------------------------------------------------------
class _Ticket:
    __slots__ = ("active", "conn", "fired", "kill")

    def __init__(self, kill: Callable[[_Ticket], bool]) -> None:
        self.kill = kill  # returns False when there is nothing to shut down yet (try again shortly)
        self.active = True
        self.fired = False
        self.conn: Any = None


class _Watchdog:
    """One daemon thread that shuts down the sockets of calls whose deadline passed. Firing and disarming take the
    same lock, so once ``disarm`` returns the ticket's socket is never touched again."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Ticket]] = []
        self._seq = itertools.count()
        self._dead = 0
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, kill: Callable[[_Ticket], bool]) -> _Ticket:
        ticket = _Ticket(kill)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gptload-upstream-watchdog", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (deadline, next(self._seq), ticket))
            if self._heap[0][2] is ticket:
                self._cond.notify()
        return ticket

    def disarm(self, ticket: _Ticket) -> None:
        with self._cond:
            if ticket.active:
                ticket.active = False
                self._dead += 1
                if self._dead > 64 and self._dead * 2 > len(self._heap):  # drop disarmed entries, amortised
                    self._heap = [e for e in self._heap if e[2].active]
                    heapq.heapify(self._heap)
                    self._dead = 0

    def fire_all(self) -> int:
        """Shut down every armed call now (the server is stopping): calls waiting for headers end at once, so their
        attempts are recorded before the process exits. Returns how many were cut."""
        cut = 0
        with self._cond:
            for _, _, ticket in self._heap:
                if ticket.active and not ticket.fired:
                    ticket.fired = True
                    try:
                        cut += bool(ticket.kill(ticket))
                    except Exception:  # never let one odd socket stop the others
                        log.exception("could not cut an upstream call")
        return cut

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, ticket = self._heap[0]
                now = time.monotonic()
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
                if not ticket.active:
                    self._dead = max(0, self._dead - 1)
                    continue
                ticket.fired = True
                try:
                    done = ticket.kill(ticket)
                except Exception:  # never let one odd socket stop the watchdog
                    log.exception("upstream watchdog could not shut a connection down")
                    done = True
                if not done:
                    heapq.heappush(self._heap, (now + _KILL_RETRY, next(self._seq), ticket))


WATCHDOG = _Watchdog()


def shutdown_socket(sock: Any) -> None:
    """Wake up whoever is blocked reading ``sock`` (public: the forwarder cuts running streams at shutdown)."""
    _shutdown(sock)


def _shutdown(sock: Any) -> None:
    """Wake up whoever is blocked reading ``sock``. ``socket.socket.shutdown`` on purpose: SSLSocket's override
    drops its SSL object, which would race with the reading thread."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):
        pass


# -- the session ------------------------------------------------------------------------------------------------
_local = threading.local()


class _Attaching:
    """Connection pools that tell the calling thread's watchdog ticket which connection it is using."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        ticket = getattr(_local, "ticket", None)
        if ticket is not None:
            ticket.conn = conn
        return conn


class _HTTPPool(_Attaching, HTTPConnectionPool):
    pass


class _HTTPSPool(_Attaching, HTTPSConnectionPool):
    pass


class UpstreamAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Proxied calls use attaching pools too (HTTP(S) and SOCKS), so the header deadline can cut them."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _socks_pools() if proxy.lower().startswith("socks") else _PLAIN_POOLS
        return manager


_PLAIN_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


@functools.cache
def _socks_pools() -> dict[str, type]:
    """urllib3's SOCKS pools with the attaching mixin (imported on first use: PySocks is needed for socks5 only)."""
    from urllib3.contrib.socks import SOCKSHTTPConnectionPool, SOCKSHTTPSConnectionPool

    return {
        "http": type("_SocksHTTPPool", (_Attaching, SOCKSHTTPConnectionPool), {}),
        "https": type("_SocksHTTPSPool", (_Attaching, SOCKSHTTPSConnectionPool), {}),
    }


def _kill_attached(ticket: _Ticket) -> bool:
    sock = getattr(ticket.conn, "sock", None)
    if sock is None:
        return False  # still connecting (bounded by the connect timeout): look again shortly
    _shutdown(sock)
    return True


def _header_bound(timeout: Any) -> float | None:
    """Seconds from the start of a call to its response headers, wall clock. ``Timeouts``: the first-byte timeout
    (connecting and sending the request included; non-streamed calls: already within ``total``). A plain requests
    timeout: connect + read, the most a well-behaved server could take under requests' own rules."""
    if isinstance(timeout, Timeouts):
        return timeout[1] if timeout.total is None else min(timeout[1], timeout.total)
    if isinstance(timeout, tuple):
        connect, read = timeout
        return None if read is None else float((connect or 0) + read)
    return None if timeout is None else float(2 * timeout)


class UpstreamSession(requests.Session):
    """``send`` without requests' redirect, cookie and hook machinery: the answer is returned as the upstream gave
    it (3xx included), its headers had to arrive within ``_header_bound`` seconds of wall-clock time, and the
    whole-call deadline and idle gap are stamped on it for ``body_chunks``."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        timeout = kwargs.get("timeout")
        total = getattr(timeout, "total", None)
        idle = getattr(timeout, "idle", None)
        start = time.monotonic()
        bound = _header_bound(timeout)
        ticket = WATCHDOG.arm(start + bound, _kill_attached) if bound is not None else None
        _local.ticket = ticket
        try:
            resp = self.get_adapter(request.url or "").send(
                request,
                stream=True,
                timeout=timeout,
                verify=kwargs.get("verify", self.verify),
                cert=kwargs.get("cert", self.cert),
                proxies=kwargs.get("proxies") or self.proxies,  # only a group's proxy_url (upstream.Sessions)
            )
        except requests.RequestException as exc:
            if ticket is not None and ticket.fired:
                raise UpstreamDeadline(f"no response headers within {bound:g} s") from exc
            raise
        finally:
            _local.ticket = None
            if ticket is not None:
                WATCHDOG.disarm(ticket)
        if ticket is not None and ticket.fired:  # cut mid-headers: http.client may take the cut for their end
            resp.close()
            raise UpstreamDeadline(f"no response headers within {bound:g} s")
        resp._gptload_limits = _Limits(start + total if total is not None else None, idle)  # type: ignore[attr-defined]
        if not kwargs.get("stream", False):
            resp.content  # noqa: B018 - requests' own semantics for stream=False callers
        return resp


# -- reading ----------------------------------------------------------------------------------------------------
def body_chunks(resp: requests.Response, size: int = READ_SIZE) -> Generator[bytes, None, None]:
    """The raw (still encoded) body as it arrives, in pieces of at most ``size`` bytes, within the response's
    limits. Errors come out as ``requests`` exceptions; the deadline as ``UpstreamDeadline``. Close the generator
    (or exhaust it) to disarm the deadline."""
    limits = limits_of(resp)
    raw = resp.raw
    conn = getattr(raw, "connection", None)
    sock = getattr(conn, "sock", None)
    if limits.idle is not None and sock is not None:
        sock.settimeout(limits.idle)
    ticket = None
    if limits.deadline is not None and sock is not None:

        def kill(_: _Ticket) -> bool:
            if raw.connection is conn:  # still ours, not handed back to the pool
                _shutdown(sock)
            return True

        ticket = WATCHDOG.arm(limits.deadline, kill)
    try:
        while True:
            if limits.deadline is not None and time.monotonic() >= limits.deadline:
                raise UpstreamDeadline("the upstream call ran past its deadline")
            try:
                data = raw.read1(size, decode_content=False)
            except Exception as exc:
                fired = ticket is not None and ticket.fired
                new = _as_requests_error(exc, fired or _passed(limits.deadline))
                if new is exc:
                    raise
                raise new from exc
            if not data:
                return
            yield data
    finally:
        if ticket is not None:
            WATCHDOG.disarm(ticket)


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _as_requests_error(exc: Exception, deadline_passed: bool) -> Exception:
    if deadline_passed:
        return UpstreamDeadline("the upstream call ran past its deadline")
    if isinstance(exc, requests.RequestException):
        return exc
    if isinstance(exc, (Urllib3ReadTimeout, TimeoutError)):
        return requests.exceptions.ReadTimeout(str(exc))
    if isinstance(exc, ProtocolError):
        return requests.exceptions.ChunkedEncodingError(str(exc))
    if isinstance(exc, (Urllib3Error, OSError)):
        return requests.exceptions.ConnectionError(str(exc))
    return exc


class Inflater:
    """Incremental decoding of a Content-Encoding (identity, gzip, deflate) that never produces more than ``step``
    bytes at a time, however much the input inflates. ``supported`` is False for other encodings."""

    def __init__(self, content_encoding: str) -> None:
        encoding = content_encoding.strip().lower()
        self.supported = encoding in ("", "identity", "gzip", "x-gzip", "deflate")
        self.decodes = encoding in ("gzip", "x-gzip", "deflate")
        self._gzip = encoding in ("gzip", "x-gzip")
        self._deflate_unsure = encoding == "deflate"  # zlib-wrapped as the RFC says, or raw as some servers send
        self._z = self._new() if self.decodes else None
        self._done = False

    def _new(self) -> Any:
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)

    def pieces(self, data: bytes, step: int = READ_SIZE) -> Iterator[bytes]:
        """Decoded pieces of ``data`` (each at most ``step`` bytes), in order; pull only as many as you need."""
        if self._z is None:
            for i in range(0, len(data), step):
                yield data[i : i + step]
            return
        pending = data
        while not self._done:
            before = pending
            try:
                out = self._z.decompress(pending, step)
            except zlib.error as exc:
                if self._deflate_unsure:
                    self._deflate_unsure = False
                    self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise requests.exceptions.ContentDecodingError(f"cannot decode the upstream body: {exc}") from exc
            self._deflate_unsure = False
            pending = self._z.unconsumed_tail
            if out:
                yield out
            if self._z.eof:
                rest = self._z.unused_data
                if self._gzip and rest.lstrip(b"\0"):  # another gzip member follows
                    self._z, pending = self._new(), rest
                    continue
                self._done = True  # anything after the end of the stream is ignored
            elif (not pending and len(out) < step) or (not out and pending == before):
                return  # all input consumed and no output held back (or no progress): wait for more input


def read_capped(resp: requests.Response, cap: int = ERROR_BODY_CAP) -> bytes:
    """The decoded body, cut after ``cap`` bytes; the rest is never read (close the response afterwards, which
    closes its connection). A body in an encoding that cannot be decoded (``br``, a list of codings) comes back
    empty: it could not be read, so it cannot be scrubbed, so it is never passed on."""
    inflater = Inflater(resp.headers.get("content-encoding", ""))
    if not inflater.supported:
        resp.close()
        return b""
    out = bytearray()
    read = 0
    chunks = body_chunks(resp)
    try:
        for chunk in chunks:
            read += len(chunk)
            if not inflater.supported:
                out += chunk[: cap - len(out)]
            else:
                for piece in inflater.pieces(chunk, min(READ_SIZE, cap - len(out))):
                    out += piece[: cap - len(out)]
                    if len(out) >= cap:
                        break
            if len(out) >= cap or read >= 2 * cap + READ_SIZE:  # input that decodes to (almost) nothing
                break
    finally:
        chunks.close()
    return bytes(out)


def read_head(chunks: Iterator[bytes], cap: int) -> tuple[bytes, bool]:
    """Up to about ``cap`` raw bytes from ``chunks``; True when that was the whole body."""
    head = bytearray()
    for chunk in chunks:
        head += chunk
        if len(head) > cap:
            return bytes(head), False
    return bytes(head), True


def decode_capped(data: bytes, content_encoding: str, cap: int) -> bytes:
    """``data`` decoded when that takes at most ``cap`` bytes; b"" when it would take more or cannot be decoded."""
    inflater = Inflater(content_encoding)
    if not inflater.supported:
        return b""
    out = bytearray()
    try:
        for piece in inflater.pieces(data):
            out += piece
            if len(out) > cap:
                return b""
    except requests.exceptions.ContentDecodingError:
        return b""
    return bytes(out)


def as_gptload_error(exc: Exception) -> GptloadError:
    """What the client gets when the upstream failed after its headers but before a byte was relayed."""
    if isinstance(exc, requests.exceptions.Timeout):
        return UpstreamTimeout(f"the upstream answer did not arrive in time ({type(exc).__name__})")
    return UpstreamUnreachable(f"the upstream answer broke off before its first byte: {type(exc).__name__}")


class Primed:
    """An iterator whose first item is pulled at construction: a failure before the first byte is raised here, as
    a ``GptloadError`` the client gets as an error answer, instead of breaking a response whose status is out."""

    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self._first: bytes | None = None
        try:
            self._first = next(it)
        except StopIteration:
            pass
        except requests.RequestException as exc:
            raise as_gptload_error(exc) from exc

    def __iter__(self) -> Primed:
        return self

    def __next__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return next(self._it)

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()
