"""The HTTP server of ``python main.py``: gunicorn's gthread worker, through gunicorn's public application API,
serving functions-framework's app (the same WSGI app Cloud Run serves), hardened against hostile clients.

Cloud Run does not run this module: there functions-framework starts its own gunicorn behind Google's front end,
which buffers requests and enforces Cloud Run's limits (see the README).

What it adds to a plain gthread server:

- Read timeouts. gthread reads a request in a pool thread, and blocks: a client that sends half its headers, or a
  body shorter than its Content-Length, holds that thread for as long as it keeps the connection open. Here the
  request line and headers must arrive within ``header_timeout`` of their first byte (a total: trickling a byte
  at a time does not help), and each read of the body must get data within ``body_timeout``; otherwise the client
  gets a 408 and the connection is closed.
- Limits on the request line and headers (functions-framework turns gunicorn's request-line limit off: a 64 MiB
  request line kept a worker busy for minutes).
- JSON errors: what gunicorn answers by itself (400, 408, 414, 431...) has the body
  ``{"error": {"code", "message"}}`` of every other gptload error.
- Closing a connection after an error happens in the pool thread, not on gunicorn's main loop (whose graceful
  close lingers up to 2 s per connection, with nothing else served meanwhile).
- A graceful stop that loses no usage (SIGTERM, see ``stop_schedule``): ``on_stop`` runs at once (the usage
  buffer writes what it holds, then every event as it comes), requests still running near the graceful timeout
  are cut so that their usage is recorded, and the worker writes a last time and exits before gunicorn's arbiter
  would kill it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http import errors as http_errors
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import ThreadWorker

from gptload.config import Config
from gptload.errors import RequestTimeout
from gptload.web.responses import google_error_body

log = logging.getLogger("gptload.server")

LIMIT_REQUEST_LINE = 8190  # bytes: method, target and version (gunicorn's default, and nginx's large buffer)
LIMIT_REQUEST_FIELDS = 100  # header fields per request
LIMIT_REQUEST_FIELD_SIZE = 8190  # bytes per header field
CLOSE_LINGER_SECONDS = 1.0  # how long a pool thread drains a connection it closes after an error
_MAX_DRAIN = 64 * 1024

_HEADERS, _BODY, _AFTER = "headers", "body", "after"
# Set in the WSGI environ by a handler that took the connection over after a 101 answer (gptload.web.live_view):
# the worker closes that connection afterwards instead of reading another request from it.
UPGRADED = "gptload.upgraded"


class _Reader:
    """What gunicorn's request parser reads a connection through: the socket, with the read timeouts.

    Phases: ``headers`` (a total deadline from the first read), ``body`` (each read must get data within the body
    timeout) and ``after`` (the response is out; only gunicorn's own timeout applies, to its drain of an unread
    body). Gunicorn bounds that drain with ``settimeout`` on the object it reads from: kept here as a cap.
    """

    def __init__(self, header_timeout: float, body_timeout: float) -> None:
        self.sock: socket.socket | None = None
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        self._phase = _HEADERS
        self._deadline: float | None = None
        self._cap: float | None = None
        self.broken = False  # a read timed out (or the body went over budget): the connection must not be reused

    def expect_headers(self) -> None:
        self._phase, self._deadline = _HEADERS, None

    def expect_body(self) -> None:
        self._phase = _BODY

    def finished(self) -> None:
        self._phase = _AFTER

    def settimeout(self, value: float | None) -> None:
        self._cap = value

    def gettimeout(self) -> float | None:
        return self._cap

    def recv(self, size: int) -> bytes:
        assert self.sock is not None
        if self.broken:
            return b""
        own: float | None = None
        if self._phase == _HEADERS:
            if self._deadline is None:
                self._deadline = time.monotonic() + self._header_timeout
            own = self._deadline - time.monotonic()
            if own <= 0:
                raise self._timeout()
        elif self._phase == _BODY:
            own = self._body_timeout
        timeout = own if self._cap is None else self._cap if own is None else min(own, self._cap)
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(size)
        except TimeoutError:
            if own is not None and (self._cap is None or own <= self._cap):
                raise self._timeout() from None
            raise
        finally:
            self.sock.settimeout(None)  # blocking again, as gunicorn expects it everywhere else

    def _timeout(self) -> RequestTimeout:
        self.broken = True
        if self._phase == _HEADERS:
            return RequestTimeout(f"the request headers did not arrive within {self._header_timeout:g} s")
        return RequestTimeout(f"the request body stalled: no data for {self._body_timeout:g} s")


class _Input:
    """``wsgi.input``: gunicorn's request body until a read timed out or ``budget`` bytes were read, then
    end-of-body. Code that reads the body after the answer is decided (functions-framework reads whatever a
    non-streamed answer left unread) then neither waits for a stalled client again, nor fails again (a Flask
    error page would replace our JSON answer), nor buffers an unbounded body in memory."""

    def __init__(self, body: Any, reader: _Reader, budget: int) -> None:
        self._body = body
        self._reader = reader
        self._left = budget

    def _allowed(self, size: int | None) -> int:
        if self._reader.broken or self._left <= 0:
            return 0
        return self._left if size is None or size < 0 else min(size, self._left)

    def _count(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left <= 0:
            self._reader.broken = True  # the rest of the body stays unread: close the connection after the answer
        return data

    def read(self, size: int | None = None) -> bytes:
        size = self._allowed(size)
        return self._count(self._body.read(size)) if size else b""

    def readline(self, size: int | None = None) -> bytes:
        size = self._allowed(size)
        return self._count(self._body.readline(size)) if size else b""

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


# What gunicorn raises for a request it cannot read -> (status, code, message). The messages never echo the
# request (it may carry a proxy key in its query).
_PARSE_ERRORS: list[tuple[str, int, str, str]] = [
    ("LimitRequestLine", 414, "URI_TOO_LONG", f"the request line is longer than {LIMIT_REQUEST_LINE} bytes"),
    (
        "LimitRequestHeaders",
        431,
        "HEADERS_TOO_LARGE",
        f"more than {LIMIT_REQUEST_FIELDS} header fields, or one longer than {LIMIT_REQUEST_FIELD_SIZE} bytes",
    ),
    ("UnsupportedTransferCoding", 501, "NOT_IMPLEMENTED", "unsupported Transfer-Encoding"),
    ("ExpectationFailed", 417, "EXPECTATION_FAILED", "unsupported Expect header"),
    ("ForbiddenProxyRequest", 403, "FORBIDDEN", "request forbidden"),
    ("ConfigurationProblem", 500, "INTERNAL", "server configuration problem; see the server log"),
    ("InvalidRequestLine", 400, "BAD_REQUEST", "invalid request line"),
    ("InvalidRequestMethod", 400, "BAD_REQUEST", "invalid request method"),
    ("InvalidHTTPVersion", 400, "BAD_REQUEST", "invalid HTTP version"),
]


def error_reply(exc: BaseException) -> tuple[int, str, str]:
    """(status, code, message) of the JSON answer to a request gunicorn failed to read or serve."""
    if isinstance(exc, RequestTimeout):
        return exc.status, exc.code, exc.message
    for name, status, code, message in _PARSE_ERRORS:
        cls = getattr(http_errors, name, None)  # gunicorn versions differ in which of these exist
        if cls is not None and isinstance(exc, cls):
            return status, code, message
    if isinstance(exc, http_errors.ParseException):
        return 400, "BAD_REQUEST", f"malformed request ({type(exc).__name__})"
    return 500, "INTERNAL", "internal error; see the server log"


def stop_schedule(graceful: float) -> tuple[float, float]:
    """(cut, last) in seconds after SIGTERM, for gunicorn's ``graceful_timeout`` (when its arbiter kills workers).

    Until ``cut`` (5 s before the kill, at most half of it), running requests may end on their own. Then the
    connections of those still running are cut: a streamed answer notices at its next chunk, and records its
    usage (error "client closed the connection"). At ``last`` (2 s before the kill, at most a quarter of it) the
    worker stops waiting, writes usage a last time and exits. A stream whose upstream sends nothing between
    ``cut`` and the kill is the one thing still lost: only the forwarder could end it earlier.
    """
    return graceful - min(5.0, graceful / 2), graceful - min(2.0, graceful / 4)


class GptloadWorker(ThreadWorker):
    """gthread with read timeouts, JSON errors, closing in the pool thread and a graceful stop that loses no usage.
    ``serve`` subclasses it with the configured values."""

    header_timeout = 10.0
    body_timeout = 30.0
    body_budget = 64 * 1024 * 1024 + 1024 * 1024  # bytes of one request body read at most (MAX_BODY_BYTES + slack)
    graceful_timeout = 30  # the arbiter's: it kills the worker this long after its SIGTERM
    on_stop: Callable[[], None] | None = None  # the process is stopping: write usage now, then as it comes
    on_cut: Callable[[], None] | None = None  # the graceful period is nearly over: end what still runs
    _current = threading.local()  # the _Reader of the request a pool thread is serving

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._requests: set[Any] = set()  # connections a pool thread is serving (reading, answering, streaming)
        self._requests_lock = threading.Lock()
        self._stopping = False
        self._quitting = False

    def init_process(self) -> None:
        # This process's copy of the configuration (we are past the fork): stop waiting for running requests
        # before the arbiter's kill, to write usage a last time and exit on our own. Set as is: gunicorn's
        # validator takes whole seconds only, its loop any number.
        self.cfg.settings["graceful_timeout"].value = stop_schedule(self.graceful_timeout)[1]
        super().init_process()

    def run(self) -> None:
        queue = getattr(self, "method_queue", None)
        if queue is not None:
            # gthread closes this pipe when its loop ends, but pool threads still serving a cut request write to
            # it when they finish; its descriptor number, freed, could meanwhile be reused by a file we open (the
            # SQLite database). It stays open until the process exits instead.
            queue.close = lambda: None
        try:
            super().run()
        finally:
            self._notify_stop()  # the last write of usage
            with self._requests_lock:
                running = len(self._requests)
            if running:
                log.warning("exiting with %d requests still running (usage written if they end first)", running)

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: gthread stops accepting and waits for running requests; see ``stop_schedule``."""
        if not self._stopping:
            self._stopping = True
            threading.Thread(target=self._stop, name="gptload-stop", daemon=True).start()
        super().handle_exit(sig, frame)

    def handle_quit(self, sig: int, frame: Any) -> None:
        """SIGINT / SIGQUIT (Ctrl-C): a quick stop, but what is buffered is still written (bounded: this is a
        signal handler, and the thread it interrupted may hold the buffer's lock)."""
        if not self._quitting:
            self._quitting = True
            writer = threading.Thread(target=self._notify_stop, name="gptload-stop", daemon=True)
            writer.start()
            writer.join(5)
        super().handle_quit(sig, frame)

    def _stop(self) -> None:
        started = time.monotonic()
        self._notify_stop()
        cut_at = started + stop_schedule(self.graceful_timeout)[0]
        threading.Event().wait(max(0.0, cut_at - time.monotonic()))
        with self._requests_lock:  # a connection in the set has not been handed back to gunicorn's loop yet
            running = list(self._requests)
            for conn in running:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if running:
            log.warning("stopping: cut %d requests still running %.1f s after SIGTERM", len(running), cut_at - started)
        if self.on_cut is not None:
            try:
                self.on_cut()  # end relays whose upstream is silent too: each records its usage as it ends
            except Exception:
                log.exception("cutting running streams failed")

    def _notify_stop(self) -> None:
        if self.on_stop is None:
            return
        try:
            self.on_stop()
        except Exception:
            log.exception("writing usage while stopping failed")

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: Callable[..., Any] = getattr(self, "wsgi")  # noqa: B009 - set by gunicorn's untyped base class

        def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            self._current.environ = environ  # handle_request looks for UPGRADED in it afterwards
            reader = getattr(self._current, "reader", None)
            if reader is not None:
                environ["wsgi.input"] = _Input(environ["wsgi.input"], reader, self.body_budget)
            return app(environ, start_response)

        self.wsgi = guarded

    def handle(self, conn: Any) -> Any:
        reader = getattr(conn, "gptload_reader", None)
        if reader is None:
            reader = conn.gptload_reader = self._guard(conn)
        reader.expect_headers()
        with self._requests_lock:
            self._requests.add(conn)
        try:
            keep = super().handle(conn)
            if keep is False:
                _linger_and_shut(conn.sock)
            return keep
        finally:
            with self._requests_lock:
                self._requests.discard(conn)

    def _guard(self, conn: Any) -> _Reader:
        """Make the parser that ``conn.init()`` creates (in the pool thread, on the first request) read through
        a ``_Reader``. HTTP/2 connections (off by default) keep their own reader."""
        reader = _Reader(self.header_timeout, self.body_timeout)
        init = conn.init

        def init_and_guard() -> None:
            init()
            unreader = getattr(conn.parser, "unreader", None)
            if isinstance(unreader, SocketUnreader) and not isinstance(unreader.sock, _Reader):
                reader.sock, unreader.sock = unreader.sock, reader

        conn.init = init_and_guard
        return reader

    def handle_request(self, req: Any, conn: Any) -> Any:
        reader: _Reader = conn.gptload_reader
        reader.expect_body()
        self._current.reader = reader
        self._current.environ = None
        try:
            keep = super().handle_request(req, conn)
        finally:
            reader.finished()
            self._current.reader = None
        environ = self._current.environ
        self._current.environ = None
        if environ is not None and environ.get(UPGRADED):
            return False  # the connection was taken over (a WebSocket session, now over): never reuse it
        return keep and not reader.broken

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        status, code, message = error_reply(exc)
        ip = addr[0] if isinstance(addr, tuple) and addr else ""
        if status >= 500:
            self.log.exception("Error handling request from ip=%s", ip)
        else:
            self.log.warning("Invalid request from ip=%s: %s %s", ip, status, code)
        # Before any route is known: Google's envelope (numeric code, status, the code as ErrorInfo reason), so that
        # SDKs, which send nearly all traffic, raise their typed errors; docs/api.md says so.
        body = json.dumps(google_error_body(status, message, code), separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        try:
            util.write_nonblock(client, head + body)  # small: fits the socket buffer, never waits for the client
        except Exception:  # noqa: BLE001 - the client may be gone; nothing else to do
            self.log.debug("Failed to send error message.")


def _linger_and_shut(sock: socket.socket) -> None:
    """Close a connection the way gunicorn would (FIN, then drain what the client still sends so that the kernel
    does not reset the connection before the client read our answer), but here in the pool thread and briefly.
    The read side is shut afterwards, so gunicorn's own graceful close on its main loop returns at once."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return  # closed already, or reset by the client
    deadline = time.monotonic() + CLOSE_LINGER_SECONDS
    drained = 0
    try:
        while drained < _MAX_DRAIN:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            data = sock.recv(4096)
            if not data:
                break
            drained += len(data)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RD)
        sock.setblocking(True)
    except OSError:
        pass


class _Application(BaseApplication):
    def __init__(self, app: Callable[..., Any], options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self) -> Callable[..., Any]:
        return self._app


def gunicorn_options(
    config: Config, on_stop: Callable[[], None] | None = None, on_cut: Callable[[], None] | None = None
) -> dict[str, Any]:
    worker = type(
        "GptloadWorker",
        (GptloadWorker,),
        {
            "header_timeout": config.request_header_timeout_seconds,
            "body_timeout": config.request_body_timeout_seconds,
            "body_budget": config.max_body_bytes + 1024 * 1024,
            "graceful_timeout": config.graceful_timeout_seconds,
            "on_stop": None if on_stop is None else staticmethod(on_stop),
            "on_cut": None if on_cut is None else staticmethod(on_cut),
        },
    )
    tls = {}
    if config.tls_cert_file and config.tls_key_file:  # HTTPS and wss:// (the Live API's SDK always uses wss)
        tls = {"certfile": config.tls_cert_file, "keyfile": config.tls_key_file}
    return {
        **tls,
        "bind": f"{config.host}:{config.port}",
        "workers": 1,  # one process: services (pool, usage buffer, embedded maintenance) are per process
        "worker_class": worker,
        "threads": config.threads,
        "worker_connections": max(1000, 2 * config.threads),
        "timeout": 0,  # as functions-framework: no heartbeat kill (gthread's main loop never runs requests)
        "graceful_timeout": config.graceful_timeout_seconds,
        "forwarded_allow_ips": "",  # X-Forwarded-* are believed per TRUSTED_PROXY_HOPS only, not by gunicorn
        "limit_request_line": LIMIT_REQUEST_LINE,
        "limit_request_fields": LIMIT_REQUEST_FIELDS,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "loglevel": "warning",
    }


def answer_late_timeouts_in_json(app: Any) -> None:
    """functions-framework reads the body a non-streamed answer left unread (a Flask ``after_request``), for
    example after a 401: a stalled client makes *that* read time out, and Flask would replace our answer with its
    HTML 500 page. Answer the timeout itself, in JSON, and leave every other server error to the handler
    functions-framework registered."""
    from werkzeug.exceptions import InternalServerError

    from gptload.web.responses import error_response

    previous = app.error_handler_spec.get(None, {}).get(500, {}).get(InternalServerError)

    def server_error(exc: InternalServerError) -> Any:
        original = getattr(exc, "original_exception", None)
        if isinstance(original, RequestTimeout):
            return error_response(original)
        return previous(exc) if previous is not None else exc

    app.register_error_handler(500, server_error)


def serve(
    app: Any,
    config: Config,
    *,
    post_worker_init: Callable[[Any], None],
    on_stop: Callable[[], None] | None = None,
    on_cut: Callable[[], None] | None = None,
) -> None:
    """Serve functions-framework's Flask ``app`` on ``config.host:config.port`` until stopped.

    ``post_worker_init(worker)`` runs in the worker process after the fork (build services there, not before);
    ``on_stop()`` when the worker starts stopping and once more right before it exits (write usage); ``on_cut()``
    when the graceful period is nearly over and running requests are cut (end the relays)."""
    answer_late_timeouts_in_json(app)
    _Application(app, {**gunicorn_options(config, on_stop, on_cut), "post_worker_init": post_worker_init}).run()
