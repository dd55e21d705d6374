"""Live API sessions through the key pool: a client's WebSocket (already upgraded, see ``web/live_view.py``) relayed
to Google's ``BidiGenerateContent`` with a pool key, message by message, both directions at once.

A session, in order (docs/api.md, "Live API"):

1. The client's first message must be ``{"setup": {"model": ...}}``, within ``live_setup_timeout_seconds`` (else
   closed with 1008, no key used). Its model picks the key, as ``models/...`` in a path does for HTTP.
2. Attempts, at most ``1 + max_retries``, each on a key this session has not tried (one only when the session is
   pinned: an ephemeral token or a resumption handle bound to its key): connect to the upstream (``ws://`` for an
   ``http://`` upstream, ``wss://`` for ``https://``) with the key in ``x-goog-api-key`` (or the client's ephemeral
   token in ``Authorization: Token``), replay the setup byte for byte, wait for Google's first message. A refusal
   before it (a close frame, an HTTP answer to the handshake, no answer) is classified with the HTTP policy
   (``keypool.live_close``, ``keypool.classify``): the key is disabled or cooled, Google-side failures feed the
   breaker of (group, upstream, model), and the next key is tried. Nothing reached the client yet.
3. Google's first message goes to the client; from then on the relay passes messages as they come, both ways, until
   either side closes; the close code and reason go to the other side (pool keys scrubbed out of reasons).
4. One usage row per session (final), after one row per refused attempt (as for HTTP): status = the close code
   that ended the session, success and outcome as ``keypool.live_close.session_outcome`` says (who closed, the code,
   gptload's cause), tokens = the sum of the ``usageMetadata`` Google sent, duration, message counts.

Bounds: a message is at most ``live_max_message_bytes`` either way (bigger: close 1009, by websockets); at most
``QUEUE`` frames wait in each connection's queue, then its reader stops reading its socket (TCP backpressure to the
sender, never an unbounded buffer). So a session holds at most about 5 messages per direction (the queue's 2 frames
and the one past the mark, the one being parsed, the one the pump is sending): ~10 x ``live_max_message_bytes`` in
all, 10 MiB at the default, whatever its peers do. The setup must come within ``live_setup_timeout_seconds``; a
session without a message either way for ``live_idle_timeout_seconds``, or older than ``live_max_session_seconds``,
is closed with 1008; ``shutdown()`` (SIGTERM) closes every session with 1001.
Threads: the server's request thread pumps client -> Google, one more thread Google -> client, and websockets' own
reader thread per connection (4 per session; no keepalive pings of our own: the SDK pings, the idle timeout catches
the dead).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.connection import Connection

from gptload.errors import CircuitOpen, GptloadError, ModelNotAllowed, NoKeysAvailable, UpstreamUnreachable
from gptload.keypool.breaker import Admission, Breakers
from gptload.keypool.classify import SUCCESS, Kind, Verdict, classify, network_error
from gptload.keypool.keytext import scrub, scrub_cut, scrub_secrets
from gptload.keypool.live_close import (
    ABNORMAL,
    BAD_GATEWAY,
    CLOSE_REASON_LIMIT,
    INTERNAL_ERROR,
    TRY_AGAIN_LATER,
    classify_close,
    cut_reason,
    session_outcome,
)
from gptload.pool import GroupView, KeyPool, LiveKey
from gptload.proxy import group_rules
from gptload.proxy.affinity import MAX_NAME, AffinityMap
from gptload.proxy.forwarder import Attempt
from gptload.proxy.group_rules import Inbound
from gptload.proxy.request import IncomingRequest, RequestFacts
from gptload.proxy.tokens import MAX_TOKENS, TokenCounts
from gptload.proxy.trace import Trace
from gptload.store.base import RESOURCE, Binding
from gptload.usage import UsageBuffer

log = logging.getLogger(__name__)

# The Live API's WebSocket paths (google-genai: live.py), relative to /proxy/{group}/.
LIVE_PATH = re.compile(
    r"ws/google\.ai\.generativelanguage\.(v1alpha|v1beta|v1)\.GenerativeService\."
    r"(BidiGenerateContent|BidiGenerateContentConstrained)"
)
POLICY_VIOLATION = 1008
GOING_AWAY = 1001
NORMAL = 1000
QUEUE = 2  # frames waiting per connection before its reader stops reading (backpressure; resumes when drained)
CLOSE_TIMEOUT = 5.0  # seconds a closing handshake may take before the socket is cut
RESUMPTION_TTL = 24 * 3600.0  # a resumption handle stays bound to its key this long (Google keeps them less)
RESUMPTION_PREFIX = "live-resumption/"
TOKEN_PREFIX = "auth_tokens/"  # noqa: S105 - a name prefix, not a secret
_UNSENDABLE = {1005: NORMAL, 1006: GOING_AWAY, 1015: GOING_AWAY}  # codes a peer may report but never send
_FORWARDED_HEADERS = ("user-agent", "x-goog-api-client")
# websockets logs every opened and closed connection at INFO: one line per session is the usage row's job.
WS_LOG = logging.getLogger("gptload.live.websockets")
WS_LOG.setLevel(logging.WARNING)


@dataclass(frozen=True)
class LiveRequest:
    """An upgraded Live connection's facts, framework-free. ``path``: ``ws/google.ai...`` (no leading slash);
    ``query``: the client's query without any key; ``token``: the client's ephemeral token (Constrained), bound to
    ``pinned`` (its key's id) of ``pinned_group`` when it was created through this proxy."""

    path: str
    query: str
    headers: list[tuple[str, str]]
    source_ip: str = ""
    user_agent: str = ""
    token: str = ""
    pinned: str = ""
    pinned_group: str = ""  # the group of ``pinned`` (an aggregate's member, or the group itself)
    access_key: str = "anonymous"  # the access key that opened the session (its id), as on HTTP requests
    # called with the setup message's model before any upstream call: an access key's model scope and limits
    # (raises a GptloadError: AccessDenied, RateLimited, QuotaExceeded); None for legacy proxy keys
    admit: Callable[[str], None] | None = None


@dataclass
class _Tally:
    """What a session did, for its usage row. Updated by both pumps; the ints are only ever incremented."""

    started: float = field(default_factory=time.monotonic)
    active: float = field(default_factory=time.monotonic)
    up: int = 0  # client -> Google messages
    down: int = 0  # Google -> client messages
    prompt: int = 0
    candidates: int = 0
    total: int = 0


class _Session:
    """One relayed session: both connections, who ended it and how."""

    def __init__(self, client: Connection, view: GroupView) -> None:
        self.client = client
        self.view = view
        self.serving = view  # the group whose key serves (an aggregate's member), once chosen
        self.upstream: ClientConnection | None = None
        self.tally = _Tally()
        self.lock = threading.Lock()
        self.closer = ""  # "client", "upstream" or "gptload"
        self.code = 0
        self.reason = ""
        self.cause = ""  # why gptload closed it (``session_outcome``'s causes)
        self.ending = False

    def touch(self) -> None:
        self.tally.active = time.monotonic()

    def settle(self, closer: str, code: int, reason: str, cause: str = "") -> bool:
        """Record who closed first (and, for gptload, why); False when the session was already settled."""
        with self.lock:
            if self.closer:
                return False
            self.closer, self.code, self.reason, self.cause = closer, code, reason, cause
            return True

    def end(self, code: int, reason: str, cause: str) -> None:
        """Close both sides from outside the pumps (limits, shutdown), without blocking the caller. A side that
        does not finish its closing handshake within CLOSE_TIMEOUT (a client that stopped reading) is cut."""
        if self.ending:
            return
        self.ending = True
        self.settle("gptload", code, reason, cause)

        def close() -> None:
            _close(self.client, code, reason)
            if self.upstream is not None:
                _close(self.upstream, NORMAL, "")

        closer = threading.Thread(target=close, name="gptload-live-close", daemon=True)
        closer.start()

        def cut() -> None:
            closer.join(CLOSE_TIMEOUT)
            for conn in (self.client, self.upstream):
                if conn is not None:
                    _cut(conn)

        threading.Thread(target=cut, name="gptload-live-cut", daemon=True).start()


class LiveSessions:
    """Every Live session of this instance: serves them (``serve``), enforces the idle and total limits (one reaper
    thread for all), and ends them when the server stops (``shutdown``)."""

    def __init__(
        self,
        pool: KeyPool,
        affinity: AffinityMap,
        usage: UsageBuffer,
        breakers: Breakers,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = 1_000_000,
    ) -> None:
        self._pool = pool
        self._affinity = affinity
        self._usage = usage
        self.breakers = breakers
        self._clock = clock
        self._sessions: set[_Session] = set()
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)  # notified when a session is over (its usage row added)
        self._reaper: threading.Thread | None = None
        self._stopping = False
        self._ids = 0
        self.max_sessions = max_sessions
        self._reserved = 0  # handshakes answered 101 whose session has not started yet (admit -> serve)
        self._outcomes: dict[str, int] = {}  # sessions ended, by outcome (``session_outcome``), since start

    def outcomes(self) -> dict[str, int]:
        """How many sessions ended with each outcome since this instance started (``/metrics``)."""
        with self._lock:
            return dict(self._outcomes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def admit(self) -> bool:
        """Reserve a place for a session about to be upgraded; False when ``max_sessions`` are running or admitted
        already (the handshake is then refused). Every True is followed by ``serve`` or ``release``."""
        with self._lock:
            if len(self._sessions) + self._reserved >= self.max_sessions:
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        """Give back an ``admit``'s place whose session will not run."""
        with self._lock:
            self._reserved = max(0, self._reserved - 1)

    def shutdown(self, wait: float = 0.0) -> int:
        """The server is stopping: close every session with 1001 now (each records its usage row as it ends), and
        refuse new ones; then wait up to ``wait`` seconds for them to be over. Returns how many were running."""
        self._stopping = True
        with self._lock:
            running = list(self._sessions)
        for session in running:
            session.end(GOING_AWAY, "gptload: the server is stopping; reconnect (resume with your handle)", "shutdown")
        deadline = time.monotonic() + wait
        with self._ended:
            while self._sessions and time.monotonic() < deadline:
                self._ended.wait(max(0.0, deadline - time.monotonic()))
        return len(running)

    # -- a session ------------------------------------------------------------------------------------------
    def serve(self, view: GroupView, request: LiveRequest, client: Connection) -> None:
        """Run one session on ``client`` (upgraded, open; admitted by ``admit``) to its end; never raises."""
        session = _Session(client, view)
        with self._lock:
            self._reserved = max(0, self._reserved - 1)
            self._sessions.add(session)
            self._ids += 1
            request_id = self._ids
            self._ensure_reaper()
        trace: Trace | None = None
        attempt: Attempt | None = None
        try:
            if self._stopping:
                session.settle("gptload", GOING_AWAY, "gptload: the server is stopping", "shutdown")
                _close(client, GOING_AWAY, session.reason)
                return
            setup = self._read_setup(session)
            if setup is None:
                return
            raw, model, handle = setup
            trace = _trace(view, request, model)
            if request.admit is not None and not self._admitted(session, request.admit, model):
                return
            attempt = self._connect(session, request, raw, model, handle, trace, request_id)
            if attempt is None:
                return
            self._relay(session, attempt, trace)
        except Exception:
            log.exception("live session in %s failed", view.name)
            session.settle("gptload", INTERNAL_ERROR, "gptload: internal error", "internal_error")
            _close(client, INTERNAL_ERROR, "gptload: internal error")
            if session.upstream is not None:
                _close(session.upstream, NORMAL, "")
        finally:
            self._record(session, request, trace, attempt)
            with self._ended:
                self._sessions.discard(session)
                self._ended.notify_all()

    @staticmethod
    def _admitted(session: _Session, admit: Callable[[str], None], model: str) -> bool:
        """The access key's checks for this session's model; a refusal closes the client (1008 for a model it may
        not use, 1013 "try again later" for a limit, the reason naming our error code) before any upstream call."""
        try:
            admit(model)
        except GptloadError as exc:
            code = 1013 if exc.status == 429 else POLICY_VIOLATION
            reason = f"gptload: {exc.code}: {exc.message}"[:120]
            session.settle("gptload", code, reason, "refused")
            _close(session.client, code, reason)
            return False
        return True

    def _read_setup(self, session: _Session) -> tuple[str | bytes, str, str] | None:
        """The client's setup message, its model and resumption handle; None when the session ended instead. The
        setup must arrive (whole) within ``live_setup_timeout_seconds`` of the upgrade (or the idle limit, if
        shorter, or the session limit): a client that upgrades and says nothing holds a server thread, not a key, and
        only that long (``_reap`` leaves a session alone until its setup has come)."""
        settings = session.view.settings
        limit = min(
            settings.live_setup_timeout_seconds,
            settings.live_idle_timeout_seconds,
            settings.live_max_session_seconds,
        )
        try:
            raw = session.client.recv(timeout=limit)
        except TimeoutError:
            reason = f"gptload: no setup message within {limit:g} s"
            session.settle("gptload", POLICY_VIOLATION, reason, "setup_timeout")
            _close(session.client, POLICY_VIOLATION, reason)
            return None
        except ConnectionClosed as exc:
            session.settle("client", *_received(exc))
            return None
        session.touch()
        session.tally.up += 1
        model, handle = setup_facts(raw)
        if model is None:
            reason = 'gptload: the first message must be {"setup": {"model": "models/..."}}'
            session.settle("gptload", 1007, reason, "bad_setup")
            _close(session.client, 1007, reason)
            return None
        return raw, model, handle

    def _connect(
        self,
        session: _Session,
        request: LiveRequest,
        raw: str | bytes,
        model: str,
        handle: str,
        trace: Trace,
        request_id: int,
    ) -> Attempt | None:
        """Try keys until Google's first message arrives (then relayed to the client): the attempt that serves the
        session, or None when the client was told why none could (the session is then over)."""
        view, settings = session.view, session.view.settings
        pinned = self._pinned(view, request, handle)
        attempts = 1 if pinned is not None else 1 + settings.max_retries
        tried: list[tuple[LiveKey, str, Verdict, tuple[int, str] | None]] = []
        refused: Admission | None = None
        try:
            for number in range(1, attempts + 1):
                if self._stopping:
                    break
                serving, key = pinned or self._next_key(view, model, {t[0].id for t in tried})
                if key is None:
                    break
                base, admission = self._upstream(serving, model)
                if base is None:
                    refused = admission
                    break
                session.serving = serving
                try:
                    sent_model, setup, headers = apply_rules(serving, request, model, raw)
                except ModelNotAllowed as exc:  # strict mode: the session's own fault, before any upstream call
                    reason = cut_reason(f"gptload {exc.code}: {exc.message}")
                    trace.rejected(404, exc.message, attempted=bool(tried))
                    session.settle("gptload", POLICY_VIOLATION, reason, "refused")
                    _close(session.client, POLICY_VIOLATION, reason)
                    return None
                facts = RequestFacts(
                    model=sent_model, openai=False, stream=True, counts_tokens=True, requested_model=model
                )
                group = serving if view.is_aggregate else None
                attempt = Attempt(key, base, number, time.monotonic(), group=group, facts=facts)
                circuit = (serving.name, base, sent_model)
                verdict, close, first = self._attempt(session, request, key, base, setup, headers)
                if request.token and verdict.kind is Kind.KEY_INVALID and close is not None:
                    # the session presented the client's ephemeral token, not the key: Google's key sentence speaks
                    # of the token (expired, used up, revoked), never of the key that created it
                    label = f"ws {close[0]} {close[1]}".strip()[:300]
                    verdict = Verdict(Kind.REQUEST_ERROR, reason=f"the client's ephemeral token was refused: {label}")
                if verdict is SUCCESS:
                    self.breakers.success(circuit)
                    self._pool.report(serving, key, SUCCESS, sent_model)
                    trace.answered = True
                    assert first is not None
                    session.tally.down += 1
                    self._inspect(session, attempt, first)
                    try:
                        session.client.send(first)
                    except ConnectionClosed as exc:
                        session.settle("client", *_received(exc))
                    return attempt
                if verdict.upstream_failure:
                    if not self._stopping:
                        self.breakers.failure(circuit, self._clock(), request_id, verdict.reason)
                else:
                    self.breakers.success(circuit)
                    self._pool.report(serving, key, verdict, sent_model)
                tried.append((key, base, verdict, close))
                trace.failed(attempt, close[0] if close else 0, verdict.reason)
                log.info("live attempt %d on key %s of %s: %s", number, key.id, view.name, verdict.reason[:120])
                if not verdict.retryable:
                    assert close is not None
                    self._refuse(session, *close)  # the session's own fault: Google's words, keys scrubbed
                    return None
        finally:
            trace.flush_failures(self._usage)
        self._no_session(session, trace, model, tried, refused)
        return None

    def _attempt(
        self,
        session: _Session,
        request: LiveRequest,
        key: LiveKey,
        base: str,
        raw: str | bytes,
        headers: Callable[[list[tuple[str, str]]], list[tuple[str, str]]],
    ) -> tuple[Verdict, tuple[int, str] | None, str | bytes | None]:
        """One try: (verdict, the close to pass on if the client is to be told, Google's first message)."""
        settings = session.serving.settings  # the serving group's timeouts and proxy_url
        secrets = session.serving.secrets
        try:
            upstream = connect(
                upstream_url(base, request.path, request.query),
                additional_headers=headers(upstream_headers(request, key.secret)),
                user_agent_header=None,
                open_timeout=settings.connect_timeout_seconds,
                ping_interval=None,
                close_timeout=CLOSE_TIMEOUT,
                max_size=settings.live_max_message_bytes,
                max_queue=QUEUE,
                proxy=settings.proxy_url or None,  # the group's egress proxy; never the environment's
                logger=WS_LOG,
            ).__enter__()  # the connection itself (websockets >= 17.1 wants a context manager; closed below)
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = scrub_secrets(bytes(exc.response.body or b"")[: 1024 * 1024], secrets)
            verdict = classify(status, body)
            message = _error_message(body) or f"HTTP {status}"
            code = POLICY_VIOLATION if 400 <= status < 500 else INTERNAL_ERROR
            return verdict, (code, _scrubbed(f"upstream refused the session: {status} {message}", secrets)), None
        except ImportError as exc:  # a socks5:// proxy_url needs python-socks for WebSockets
            reason = f"gptload: this group's proxy_url cannot carry the Live API ({exc.name or 'a module'} missing)"
            return Verdict(Kind.REQUEST_ERROR, reason=reason), (INTERNAL_ERROR, reason), None
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            return network_error(exc), None, None
        session.upstream = upstream
        try:
            upstream.send(raw)
            first = upstream.recv(timeout=settings.first_byte_timeout_seconds)
        except TimeoutError as exc:
            _close(upstream, NORMAL, "")
            session.upstream = None
            return network_error(exc), None, None
        except ConnectionClosed as exc:
            code, reason = _received(exc)
            reason = _scrubbed(reason, secrets)
            _cut(upstream)
            session.upstream = None
            verdict = classify_close(code, reason)
            return replace(verdict, reason=_scrubbed(verdict.reason, secrets)), (code, reason), None
        session.touch()
        return SUCCESS, None, first

    def _relay(self, session: _Session, attempt: Attempt, trace: Trace) -> None:
        """Both directions until either side closes: this thread pumps client -> Google, another Google -> client."""
        upstream = session.upstream
        assert upstream is not None
        if session.closer:  # the client went away while Google's first message was on its way
            _close(upstream, _sendable(session.code), session.reason)
            return
        down = threading.Thread(target=self._pump_down, args=(session, attempt), name="gptload-live-down", daemon=True)
        down.start()
        client = session.client
        while True:
            try:
                message = client.recv()
            except ConnectionClosed as exc:
                if session.settle("client", *_received(exc)):
                    _close(upstream, _sendable(session.code), session.reason)
                break
            except Exception:  # noqa: BLE001 - a socket cut by end(): settled there
                break
            session.touch()
            session.tally.up += 1
            try:
                upstream.send(message)
            except Exception:  # noqa: BLE001 - Google closed: the other pump settles it and tells the client
                break
        down.join(CLOSE_TIMEOUT * 2 + 1)
        if not session.closer:
            session.settle("client", ABNORMAL, "")

    def _pump_down(self, session: _Session, attempt: Attempt) -> None:
        upstream, client = session.upstream, session.client
        assert upstream is not None
        while True:
            try:
                message = upstream.recv()
            except ConnectionClosed as exc:
                code, reason = _received(exc)
                reason = _scrubbed(reason, session.serving.secrets)
                if session.settle("upstream", code, reason):
                    if code in (ABNORMAL, 1015):
                        code, reason = BAD_GATEWAY, "gptload: the upstream connection was lost"
                    _close(client, _sendable(code), reason)
                return
            except Exception:  # noqa: BLE001
                _cut(client)
                return
            session.touch()
            session.tally.down += 1
            self._inspect(session, attempt, message)
            try:
                client.send(message)
            except Exception:  # noqa: BLE001 - the client went away: the other pump settles it
                return

    def _inspect(self, session: _Session, attempt: Attempt, message: str | bytes) -> None:
        """Tokens from ``usageMetadata``; a new resumption handle is bound to this key."""
        data = message.encode() if isinstance(message, str) else message
        if b"usageMetadata" not in data and b"sessionResumptionUpdate" not in data:
            return
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(doc, dict):
            return
        usage = doc.get("usageMetadata")
        if isinstance(usage, dict):
            t = session.tally
            t.prompt += _count(usage.get("promptTokenCount"))
            t.candidates += _count(usage.get("responseTokenCount", usage.get("candidatesTokenCount")))
            t.total += _count(usage.get("totalTokenCount"))
        update = doc.get("sessionResumptionUpdate")
        if isinstance(update, dict) and update.get("resumable") is not False:
            handle = update.get("newHandle")
            if isinstance(handle, str) and handle and len(RESUMPTION_PREFIX) + len(handle) <= MAX_NAME:
                self._affinity.bind(
                    Binding(
                        RESOURCE,
                        RESUMPTION_PREFIX + handle,
                        session.serving.name,
                        attempt.key.id,
                        attempt.base,
                        time.time() + RESUMPTION_TTL,
                    )
                )

    # -- pieces ---------------------------------------------------------------------------------------------
    def _pinned(self, view: GroupView, request: LiveRequest, handle: str) -> tuple[GroupView, LiveKey | None] | None:
        """(group, key) a session must use: its ephemeral token's, else its resumption handle's (through an
        aggregate: the member that issued it); None: any key."""
        group, key_id = request.pinned_group, request.pinned
        if not key_id and handle:
            binding = self._affinity.lookup(RESOURCE, RESUMPTION_PREFIX + handle)
            if binding is not None:
                group, key_id = binding.group, binding.key_id
        if not key_id:
            return None
        owner = self._pool.member_view(view, group or view.name)
        if owner is None:
            return None
        return owner, self._pool.key_by_id(owner, key_id)

    def _next_key(self, view: GroupView, model: str, exclude: set[str]) -> tuple[GroupView, LiveKey | None]:
        """A standard group's next key; through an aggregate, the next key of the member chosen by weight among
        those with a key able to serve ``model`` that this session has not tried (each member's own keys)."""
        if view.members is None:
            return view, self._pool.acquire(view, model, exclude)
        members = {m.name: m for m in self._pool.members(view)}
        keys: dict[str, LiveKey] = {}

        def eligible(name: str) -> bool:
            member = members.get(name)
            key = self._pool.acquire(member, model, exclude) if member is not None else None
            if key is not None:
                keys[name] = key
            return key is not None

        chosen = view.members.pick(eligible)
        if chosen is None:
            return view, None
        return members[chosen], keys[chosen]

    def _upstream(self, view: GroupView, model: str) -> tuple[str | None, Admission]:
        """The balancer's upstream for the next attempt, skipping those whose breaker for ``model`` is open."""
        now = self._clock()
        first = view.balancer.next()
        refused: Admission | None = None
        for base in dict.fromkeys([first, *(u.url for u in view.group.upstreams)]):
            admission = self.breakers.admit((view.name, base, model), now)
            if admission.allowed:
                return base, admission
            if refused is None or admission.retry_after < refused.retry_after:
                refused = admission
        return None, refused or Admission(False)

    def _refuse(self, session: _Session, code: int, reason: str) -> None:
        session.settle("upstream", code, reason)
        _close(session.client, _sendable(code), reason)

    def _no_session(
        self,
        session: _Session,
        trace: Trace,
        model: str,
        tried: list[tuple[LiveKey, str, Verdict, tuple[int, str] | None]],
        refused: Admission | None,
    ) -> None:
        """No attempt got a session: tell the client why in the close frame (123 bytes), as HTTP's errors do."""
        view = session.view
        if self._stopping:
            code, reason = GOING_AWAY, "gptload: the server is stopping"
        elif tried and all(v.upstream_failure for _, _, v, c in tried) and any(c for *_, c in tried):
            code, reason = next(c for *_, c in reversed(tried) if c)  # Google's own failure says it best
        elif refused is not None:
            code = TRY_AGAIN_LATER
            reason = f"gptload {CircuitOpen.code}: {model} is failing upstream; retry in {refused.retry_after:.0f} s"
            trace.rejected(503, "breaker open", attempted=bool(tried))
        elif tried and all(v.network for _, _, v, _ in tried):
            code = BAD_GATEWAY
            reason = f"gptload {UpstreamUnreachable.code}: no upstream answer after {len(tried)} attempt(s)"
        else:
            wait = self._pool.retry_after(view, model)
            code = TRY_AGAIN_LATER
            reason = f"gptload {NoKeysAvailable.code}: no key of this group can serve {model} now" + (
                f"; retry in {wait:.0f} s" if wait else ""
            )
            trace.rejected(503, "no key available", attempted=bool(tried))
        trace.flush_failures(self._usage)
        session.settle("gptload", code, reason, "shutdown" if self._stopping else "refused")
        _close(session.client, _sendable(code), reason)

    def _record(self, session: _Session, request: LiveRequest, trace: Trace | None, attempt: Attempt | None) -> None:
        """The session's usage row (final): one per session that got an upstream session; a session refused before
        any attempt (no setup) gets a keyless row, as a refused HTTP request does."""
        t = session.tally
        outcome, success = session_outcome(session.closer, session.code, session.cause)
        with self._lock:
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1
        summary = (
            f"live session: {t.up} client / {t.down} server messages; closed by {session.closer or 'nobody'}"
            f" {session.code} {session.reason}".rstrip()
            + f"; outcome {outcome}"
        )
        if attempt is not None and trace is not None:
            tokens = TokenCounts(t.prompt, t.candidates, t.total or t.prompt + t.candidates)
            event = trace.succeeded(attempt, session.code, tokens, summary)
            self._usage.add(event if success else replace(event, success=False))
        elif trace is None:
            event = _trace(session.view, request, "").event(None, session.code, False, summary)
            self._usage.add(event)
        self._usage.maybe_flush()

    def _ensure_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="gptload-live-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        """Once a second: end sessions idle for longer than their idle limit, or older than their total limit (a
        session still waiting for its setup is ``_read_setup``'s: it ends as ``setup_timeout``, never as a limit)."""
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            with self._lock:
                running = list(self._sessions)
            for s in running:
                settings = s.view.settings
                if now - s.tally.active > settings.live_idle_timeout_seconds and s.tally.up:
                    s.end(POLICY_VIOLATION, f"gptload: idle for {settings.live_idle_timeout_seconds:g} s", "idle_limit")
                elif s.tally.up and now - s.tally.started > settings.live_max_session_seconds:
                    s.end(
                        POLICY_VIOLATION,
                        f"gptload: session limit of {settings.live_max_session_seconds:g} s",
                        "session_limit",
                    )


def setup_facts(raw: str | bytes) -> tuple[str | None, str]:
    """(model, resumption handle) of a client's setup message; model None when it is not one."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None, ""
    setup = doc.get("setup") if isinstance(doc, dict) else None
    if not isinstance(setup, dict) or not isinstance(setup.get("model"), str) or not setup["model"]:
        return None, ""
    resumption = setup.get("sessionResumption", setup.get("session_resumption"))
    handle = resumption.get("handle") if isinstance(resumption, dict) else None
    return setup["model"].removeprefix("models/"), handle if isinstance(handle, str) else ""


def apply_rules(
    serving: GroupView, request: LiveRequest, model: str, raw: str | bytes
) -> tuple[str, str | bytes, Callable[[list[tuple[str, str]]], list[tuple[str, str]]]]:
    """The serving group's rules (``proxy/group_rules.py``) applied to a session: (the model sent upstream, the
    setup to send, what the header rules do to the upstream headers). A redirected model is written into the setup
    (re-serialized, same frame type); otherwise the setup goes as the client sent it. Strict mode raises
    ModelNotAllowed. ``param_overrides`` apply to generation calls' bodies, not to a Live setup."""
    rules = serving.rules
    if rules is None:
        return model, raw, lambda headers: headers
    inbound = Inbound(
        method="GET",
        path=request.path,
        query="",
        body=b"",
        content_type="",
        client_ip=request.source_ip,
        model=model,
        openai=False,
    )
    out = group_rules.prepare(rules, inbound, time.time())
    setup = raw
    if out.model != model:
        doc = json.loads(raw)
        doc["setup"]["model"] = f"models/{out.model}"
        text = json.dumps(doc, separators=(",", ":"))
        setup = text if isinstance(raw, str) else text.encode()

    def headers(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return list(out.apply_headers(dict(pairs)).items())

    return out.model, setup, headers


def upstream_url(base: str, path: str, query: str) -> str:
    """ws:// for an http:// upstream, wss:// for https://, with the client's path and query (no key in it)."""
    scheme, _, rest = base.partition("://")
    ws = "wss" if scheme.lower() == "https" else "ws"
    url = f"{ws}://{rest.rstrip('/')}/{path}"
    return f"{url}?{query}" if query else url


def upstream_headers(request: LiveRequest, secret: str) -> list[tuple[str, str]]:
    """The real key (or the client's ephemeral token, which Google checks itself) and the client's identification
    headers; never the client's proxy key."""
    headers = [(n, v) for n, v in request.headers if n.lower() in _FORWARDED_HEADERS]
    if request.token:
        headers.append(("Authorization", f"Token {request.token}"))
    else:
        headers.append(("x-goog-api-key", secret))
    return headers


def _trace(view: GroupView, request: LiveRequest, model: str) -> Trace:
    incoming = IncomingRequest(
        method="WS",
        path=request.path,
        query="",
        headers=[],
        body=b"",
        public_base="",
        source_ip=request.source_ip,
        user_agent=request.user_agent,
        access_key=request.access_key,
    )
    return Trace(view, incoming, RequestFacts(model=model, openai=False, stream=True, counts_tokens=True))


def _received(exc: ConnectionClosed) -> tuple[int, str]:
    """The close code and reason the peer sent; the one websockets sent it when it failed the connection itself (a
    message over the size limit: 1009); 1006 and "" when the connection just dropped."""
    if exc.rcvd is not None:
        return int(exc.rcvd.code), exc.rcvd.reason
    if exc.sent is not None:
        return int(exc.sent.code), exc.sent.reason
    return ABNORMAL, ""


def _sendable(code: int) -> int:
    return _UNSENDABLE.get(code, code)


def _scrubbed(text: str, secrets: Iterable[str]) -> str:
    """``text`` (a close reason from Google, or ours quoting Google) with pool keys masked, cut to 123 bytes. A
    reason at the close frame's limit may have been cut by Google inside a key it quoted: no whole-key match finds
    that, so its trailing run of key characters is dropped too (``scrub_cut``)."""
    data = text.encode()
    scrubber = scrub_cut if len(data) >= CLOSE_REASON_LIMIT - 3 else scrub_secrets  # 3: a cut on a char boundary
    return cut_reason(scrub(scrubber(data, frozenset(secrets)).decode("utf-8", "replace")))


def _close(conn: Connection, code: int, reason: str) -> None:
    try:
        conn.close(code, cut_reason(reason))
    except Exception:  # noqa: BLE001 - closing a connection that is already gone
        _cut(conn)


def _cut(conn: Connection) -> None:
    try:
        conn.socket.shutdown(2)
    except OSError:
        pass
    with contextlib.suppress(Exception):
        conn.close_socket()


def _count(value: Any) -> int:
    """A ``usageMetadata`` count; one above ``MAX_TOKENS`` is not believed and counts 0, as for HTTP (a count past
    the stores' 64-bit integers would get the session's usage row rejected and dropped)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS else 0


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error", {})
        return str(error.get("message", ""))[:200] if isinstance(error, dict) else ""
    except (ValueError, AttributeError, RecursionError):
        return ""
