"""``GET /proxy/{group}/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent[Constrained]``
with ``Upgrade: websocket``: the Live API through the key pool.

Before upgrading: the path must be a Live path (else 404), the handshake a valid WebSocket one (else 400), and the
client must present the group's proxy key (any way the HTTP routes accept it) or an ephemeral token created through
this group (``auth_tokens/...`` in ``Authorization: Token`` or as the key); otherwise 401 and no upgrade.

The upgrade itself is an ordinary WSGI answer, so the same code serves ``python main.py`` and the deployed
functions-framework server (both gunicorn): ``101 Switching Protocols`` with ``Sec-WebSocket-Accept`` (werkzeug
sends no body with a 1xx, gunicorn sends the headers with ``Connection: upgrade``), and the session runs when the
server closes the answer (``call_on_close``), on the connection's socket (``environ["gunicorn.socket"]``), in the
request's thread. The environ's ``gptload.upgraded`` tells gptload's worker to close that connection afterwards; the
session never closes the socket's descriptor itself (only shuts it down), so a server that does not know the flag
finds a finished connection, never a descriptor reused by something else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.sync.connection import Connection
from werkzeug.wrappers import Request, Response

from gptload.access.rules import ALL_GROUPS
from gptload.app import Services
from gptload.errors import AccessDenied, BadRequest, GptloadError, GroupNotFound, InvalidProxyKey, RouteNotFound
from gptload.models import ANONYMOUS
from gptload.pool import GroupView
from gptload.proxy import rewrite
from gptload.proxy.live import LIVE_PATH, QUEUE, TOKEN_PREFIX, WS_LOG, LiveRequest
from gptload.proxy.request import IncomingRequest
from gptload.proxy.trace import rejection_event
from gptload.server import UPGRADED
from gptload.store.base import RESOURCE
from gptload.web import forwarded

log = logging.getLogger(__name__)
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's fixed value for Sec-WebSocket-Accept
_BAD_KEY = "missing or unknown proxy key for this group"
_CLOSE_TIMEOUT = 5.0


def is_upgrade(request: Request) -> bool:
    """Does the request ask for a WebSocket (``Upgrade: websocket``)?"""
    return request.headers.get("Upgrade", "").strip().lower() == "websocket"


def live(services: Services, request: Request, group: str, path: str) -> Response:
    """Authenticate, answer 101 and run the session once the answer is out (see the module docstring)."""
    pool = services.pool
    raw_uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
    query = raw_uri.partition("?")[2] if raw_uri else request.query_string.decode("latin-1")
    headers = list(request.headers.items())
    presented = rewrite.find_proxy_key(query, headers).value
    token = _token(headers, presented)
    presented_digest = services.access.digest_of(presented)
    access = services.access.lookup(presented_digest)
    try:
        view = pool.view(group)
    except GroupNotFound:
        if access is not None and access.status(time.time()) == "active":
            if ALL_GROUPS not in access.groups:  # as on HTTP: a scoped key learns nothing about other groups
                raise AccessDenied(f"access key {access.name!r} may not use group {group!r}") from None
            raise
        if pool.authorize_global(presented):
            raise
        raise InvalidProxyKey(_BAD_KEY) from None
    pinned, pinned_group = "", ""
    if token:
        binding = services.affinity.lookup(RESOURCE, token)
        # through an aggregate, the binding names the member whose key created the token
        if binding is not None and pool.member_view(view, binding.group) is not None:
            pinned, pinned_group = binding.key_id, binding.group  # the unguessable token is the capability
    admit: Callable[[str], None] | None = None
    if access is not None and not pinned:
        # an access key: its status and groups before the upgrade (401/403 as HTTP answers), its model scope and
        # limits once the setup message names the model (a refusal closes the socket before any upstream call)
        try:
            services.access.check(access, view.name)
        except GptloadError as exc:
            incoming = replace(_incoming(request, path, services), access_key=access.id)
            services.usage.add(rejection_event(view, incoming, exc.status, f"{exc.code}: {exc.message}", refused=True))
            raise
        key = access

        def admit(model: str) -> None:
            services.access.admit(key, model)

    elif not pinned and not pool.authorize(view, presented, presented_digest=presented_digest):
        incoming = _incoming(request, path, services)
        services.usage.add(rejection_event(view, incoming, 401, "missing or unknown proxy key"))
        raise InvalidProxyKey(_BAD_KEY)
    if not LIVE_PATH.fullmatch(path):
        raise RouteNotFound(f"no WebSocket route for /{path}: the Live API's is ws/google.ai.generativelanguage...")
    accept = _accept(request)
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    if sock is None:
        raise BadRequest("this server cannot take over the connection for a WebSocket")
    live_request = LiveRequest(
        path=path,
        query=_without_key(query),
        headers=headers,
        source_ip=forwarded.client_ip(request, services.config.trusted_proxy_hops),
        user_agent=request.headers.get("User-Agent", ""),
        token=token if pinned else "",  # a token not bound here is not passed on: the session uses a pool key
        pinned=pinned,
        pinned_group=pinned_group,
        access_key=access.id if access is not None else ANONYMOUS,
        admit=admit,
    )
    request.environ[UPGRADED] = True
    response = Response(status=101)
    response.headers["Upgrade"] = "websocket"
    response.headers["Connection"] = "Upgrade"
    response.headers["Sec-WebSocket-Accept"] = accept
    del response.headers["Content-Type"]
    response.call_on_close(lambda: _run(services, view, live_request, sock))
    return response


def _run(services: Services, view: GroupView, live_request: LiveRequest, sock: Any) -> None:
    """The session, on the upgraded socket (the 101 is out). Never raises into the server."""
    try:
        protocol = ServerProtocol(state=OPEN, max_size=view.settings.live_max_message_bytes, logger=WS_LOG)
        borrowed: Any = _Borrowed(sock)
        client = Connection(borrowed, protocol, ping_interval=None, close_timeout=_CLOSE_TIMEOUT, max_queue=QUEUE)
    except Exception:
        log.exception("could not take over the connection of a Live session")
        return
    services.live.serve(view, live_request, client)


class _Borrowed:
    """The server's socket as the session sees it: closing it only shuts it down. The descriptor stays the
    server's, which closes it (gptload's worker at once, any other gunicorn when it finds the connection over)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _accept(request: Request) -> str:
    """Sec-WebSocket-Accept for a valid handshake (RFC 6455 4.2.1); 400 otherwise."""
    if request.method != "GET":
        raise BadRequest("a WebSocket handshake is a GET request")
    if "upgrade" not in request.headers.get("Connection", "").lower():
        raise BadRequest("a WebSocket handshake needs Connection: Upgrade")
    if request.headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise BadRequest("only WebSocket version 13 is supported")
    key = request.headers.get("Sec-WebSocket-Key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise BadRequest("Sec-WebSocket-Key must be 16 bytes in base64")
    digest = hashlib.sha1((key + _GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def _token(headers: list[tuple[str, str]], presented: str | None) -> str:
    """The client's ephemeral token: ``Authorization: Token auth_tokens/...`` or the token given as the key."""
    for name, value in headers:
        if name.lower() == "authorization" and value[:6].lower() == "token ":
            candidate = value[6:].strip()
            if candidate.startswith(TOKEN_PREFIX):
                return candidate
    if presented and presented.startswith(TOKEN_PREFIX):
        return presented
    return ""


def _without_key(query: str) -> str:
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in ("key", "access_token")]
    return urlencode(pairs)


def _incoming(request: Request, path: str, services: Services) -> IncomingRequest:
    return IncomingRequest(
        method="WS",
        path=path,
        query="",
        headers=[],
        body=b"",
        public_base="",
        source_ip=forwarded.client_ip(request, services.config.trusted_proxy_hops),
        user_agent=request.headers.get("User-Agent", ""),
    )
