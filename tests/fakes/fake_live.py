"""Fake Gemini Live API upstream: a real WebSocket server on a real socket (plus the HTTP route that creates
ephemeral tokens), behaving like ``BidiGenerateContent`` as google-genai sees it.

- ``GET /ws/google.ai.generativelanguage.{v1|v1beta|v1alpha}.GenerativeService.BidiGenerateContent`` with the key in
  ``x-goog-api-key`` (or ``?key=``); ``...BidiGenerateContentConstrained`` with ``Authorization: Token
  auth_tokens/...`` (a token this fake issued, bound to the key that created it).
- The upgrade always succeeds (as Google's does); the key is judged when the ``setup`` message arrives, and a refusal
  is a close frame with Google's code and words: an unknown key -> 1007 "API key not valid. Please pass a valid API
  key."; a key in ``quota_keys`` -> 1011 with the quota sentence cut to 123 bytes; ``internal_keys`` -> 1011
  "Internal error occurred."; an unknown model (``models/unknown...``) -> 1008 naming it (the request's fault).
- Otherwise ``{"setupComplete": {}}``, then every ``clientContent`` turn is echoed (``"echo: <text>"``) with
  ``turnComplete`` and ``usageMetadata`` (prompt = words in, response = words out), and, when the setup asked
  for ``sessionResumption``, a ``sessionResumptionUpdate`` with a new handle bound to the key.
- Commands in a turn's text: ``close CODE REASON`` -> the fake closes with that code and reason (``{key}`` in the
  reason is replaced by the key used: a test that pool keys are scrubbed), cut to 123 bytes as Google cuts it; ``drop`` -> the TCP connection is cut
  without a close frame; ``flood N [SIZE]`` -> N messages (of about SIZE bytes) at once; ``hold`` -> the fake stops
  reading the client's messages until the test sets the session's ``release`` (a Google that does not keep up);
  ``usage N`` -> a ``usageMetadata`` claiming N tokens (an upstream reporting an absurd count).
- ``POST /v1alpha/auth_tokens?key=`` (or ``x-goog-api-key``) -> ``{"name": "auth_tokens/<random>", ...}``.
- Records: every session (``sessions``: the key or token used, headers, setup, the close code and reason the
  client, i.e. the proxy, sent, message counts).

Server messages are binary frames of JSON, as Google's are.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

from websockets.exceptions import ConnectionClosed
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.sync.connection import Connection

from tests.fakes.serving import Served

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PATH = re.compile(
    r"/ws/google\.ai\.generativelanguage\.(v1alpha|v1beta|v1)\.GenerativeService\.(BidiGenerateContent(?:Constrained)?)"
)
INVALID_KEY = "API key not valid. Please pass a valid API key."
QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
INTERNAL = "Internal error occurred."


def cut(text: str) -> str:
    return text.encode()[:123].decode("utf-8", "ignore")


@dataclass
class LiveRecord:
    """One session as the fake saw it."""

    key: str | None
    token: str | None
    headers: dict[str, str]
    path: str
    setup: dict | None = None
    received: int = 0  # client messages after the setup
    messages: list = field(default_factory=list)  # the client messages after the setup, parsed
    sent: int = 0
    close_code: int | None = None  # what the proxy's close frame said (None: no close frame received)
    close_reason: str = ""
    refused: int | None = None  # the code the fake refused the session with
    sending_since: float | None = None  # monotonic time the send in progress started (None: not sending)
    holding: threading.Event = field(default_factory=threading.Event)  # set while a ``hold`` stops the reading
    release: threading.Event = field(default_factory=threading.Event)  # set by a test: a ``hold`` ends
    done: threading.Event = field(default_factory=threading.Event)


class FakeLive(Served):
    def __init__(self, keys: list[str] | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.valid_keys: set[str] = set(keys or [])
        self.quota_keys: set[str] = set()
        self.internal_keys: set[str] = set()
        self.tokens: dict[str, str] = {}  # token name -> key that created it
        self.handles: dict[str, str] = {}  # resumption handle -> key
        self.sessions: list[LiveRecord] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeLive:
        srv = http.server.ThreadingHTTPServer((self.host, 0), _Handler)
        srv.daemon_threads = True
        srv.fake = self  # type: ignore[attr-defined]
        return self._serve(srv, "fake-live")

    def stop(self) -> None:
        self._close()

    def add_key(self, key: str) -> str:
        with self._lock:
            self.valid_keys.add(key)
        return key

    def sessions_with(self, key: str) -> list[LiveRecord]:
        with self._lock:
            return [s for s in self.sessions if s.key == key]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: http.server.ThreadingHTTPServer

    @property
    def fake(self) -> FakeLive:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass

    def _key(self) -> str | None:
        key = self.headers.get("x-goog-api-key")
        if key:
            return key
        return (parse_qs(urlparse(self.path).query).get("key") or [None])[0]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        key = self._key()
        if not urlparse(self.path).path.endswith("/auth_tokens") or key not in self.fake.valid_keys:
            body = json.dumps(
                {
                    "error": {
                        "code": 400,
                        "message": INVALID_KEY,
                        "status": "INVALID_ARGUMENT",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "reason": "API_KEY_INVALID",
                                "domain": "googleapis.com",
                            }
                        ],
                    }
                }
            )
            self._answer(400, body.encode())
            return
        token = f"auth_tokens/{secrets.token_hex(16)}"
        with self.fake._lock:
            self.fake.tokens[token] = key
        self._answer(200, json.dumps({"name": token, "uses": 1}).encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        match = _PATH.fullmatch(urlparse(self.path).path)
        if match is None or self.headers.get("Upgrade", "").lower() != "websocket":
            self._answer(404, b'{"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}}')
            return
        accept = base64.b64encode(
            hashlib.sha1((self.headers["Sec-WebSocket-Key"] + _GUID).encode(), usedforsecurity=False).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        constrained = match.group(2).endswith("Constrained")
        auth = self.headers.get("Authorization", "")
        token = auth[6:].strip() if constrained and auth.startswith("Token ") else None
        record = LiveRecord(self._key(), token, dict(self.headers.items()), match.group(0))
        with self.fake._lock:
            self.fake.sessions.append(record)
            self.fake._conns.add(self.connection)
        conn = Connection(
            self.connection, ServerProtocol(state=OPEN, max_size=2**24), ping_interval=None, close_timeout=2
        )
        try:
            _Session(self.fake, conn, record).run()
        finally:
            with self.fake._lock:
                self.fake._conns.discard(self.connection)
            record.done.set()


class _Session:
    def __init__(self, fake: FakeLive, conn: Connection, record: LiveRecord) -> None:
        self.fake, self.conn, self.record = fake, conn, record

    def _key(self) -> str | None:
        r = self.record
        if r.token is not None:
            with self.fake._lock:
                return self.fake.tokens.get(r.token)
        return r.key

    def run(self) -> None:
        try:
            setup = json.loads(self.conn.recv())["setup"]
            self.record.setup = setup
            key = self._key()
            if key is None or key not in self.fake.valid_keys:
                return self._refuse(1007, INVALID_KEY)
            if key in self.fake.quota_keys:
                return self._refuse(1011, cut(QUOTA))
            if key in self.fake.internal_keys:
                return self._refuse(1011, INTERNAL)
            if str(setup.get("model", "")).startswith("models/unknown"):
                return self._refuse(1008, cut(f"{setup['model']} is not found for API version v1beta"))
            self._send({"setupComplete": {}})
            resumable = "sessionResumption" in setup
            while True:
                message = json.loads(self.conn.recv())
                self.record.received += 1
                self.record.messages.append(message)
                text = " ".join(
                    p.get("text", "")
                    for turn in (message.get("clientContent") or message.get("client_content") or {}).get("turns") or []
                    for p in turn.get("parts") or []
                )
                if text.startswith("close "):
                    _, code, reason = ([*text.split(" ", 2), ""])[:3]
                    self.conn.close(int(code), cut(reason.replace("{key}", key)))  # 123 bytes, as Google cuts
                    return
                if text == "hold":
                    self.record.holding.set()
                    self.record.release.wait(120)
                    self.record.holding.clear()
                    continue
                if text == "drop":
                    self.conn.socket.shutdown(socket.SHUT_RDWR)
                    self.conn.socket.close()
                    return
                if text.startswith("flood "):  # flood N [SIZE]: N messages (of about SIZE bytes) at once
                    words_ = text.split()
                    count, pad = int(words_[1]), "x" * (int(words_[2]) if len(words_) > 2 else 0)
                    for i in range(count):
                        self._send({"serverContent": {"modelTurn": {"parts": [{"text": f"flood {i} {pad}"}]}}})
                    continue
                if text.startswith("usage "):
                    n = int(text.split()[1])
                    self._send(
                        {"usageMetadata": {"promptTokenCount": n, "responseTokenCount": n, "totalTokenCount": n}}
                    )
                    continue
                words = len(text.split())
                self._send(
                    {
                        "serverContent": {"modelTurn": {"parts": [{"text": f"echo: {text}"}]}, "turnComplete": True},
                        "usageMetadata": {
                            "promptTokenCount": words,
                            "responseTokenCount": words + 1,
                            "totalTokenCount": 2 * words + 1,
                        },
                    }
                )
                if resumable:
                    handle = f"handle-{secrets.token_hex(8)}"
                    with self.fake._lock:
                        self.fake.handles[handle] = key
                    self._send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                self.record.close_code, self.record.close_reason = exc.rcvd.code, exc.rcvd.reason
        except OSError:
            pass

    def _send(self, doc: dict) -> None:
        self.record.sending_since = time.monotonic()
        self.conn.send(json.dumps(doc).encode())
        self.record.sending_since = None
        self.record.sent += 1

    def _refuse(self, code: int, reason: str) -> None:
        self.record.refused = code
        self.conn.close(code, reason)


if __name__ == "__main__":  # python -m tests.fakes.fake_live KEY... : serve until killed (bench/live.py)
    import sys

    with FakeLive(sys.argv[1:]) as served:
        print(served.url, flush=True)
        threading.Event().wait()
