"""The retry loop: pick a key and an upstream, send, classify, retry on another key, relay the answer as it arrives.

Rules (docs/architecture.md, "Error policy"):
- at most ``1 + max_retries`` attempts, each on a key this request has not tried, body replayed byte for byte;
- an answer is retried only when ``classify`` says so, and never once bytes reached the client;
- requests naming a resource (file, cache, batch, operation, upload session) go to the key that created it, once;
- an upstream failure (5xx, timeout, connect error) counts toward the breaker of (group, upstream, model), never
  against the key, unless another key then serves the same request (an *isolated* failure);
- the request's own errors (400, 404, ...) are passed through at once; Google's 5xx is passed through when every
  attempt failed upstream (``Retry-After`` added when the breaker opened); errors that belong to pool keys never
  reach the client as such: ``NoKeysAvailable`` says what happened to each key; ``UpstreamUnreachable`` when no
  attempt got an answer; ``CircuitOpen`` when the breaker holds requests back;
- every pool key is scrubbed out of error answers before they go anywhere.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator
from dataclasses import dataclass, replace

import requests

from gptload.errors import CircuitOpen, ModelNotAllowed, NoKeysAvailable, UpstreamUnreachable
from gptload.keypool.breaker import Admission, Breakers
from gptload.keypool.classify import SUCCESS, Kind, Verdict, classify, network_error
from gptload.keypool.keytext import scrub, scrub_cut, scrub_secrets
from gptload.models import ANY_MODEL
from gptload.pool import GroupView, KeyPool, LiveKey
from gptload.proxy import group_rules, rewrite, upstream_io
from gptload.proxy.affinity import AffinityMap
from gptload.proxy.request import IncomingRequest, ProxyResponse, RequestFacts
from gptload.proxy.tokens import NO_TOKENS, TokenTap
from gptload.proxy.trace import Trace
from gptload.proxy.upstream import Sessions, join_url, prepare
from gptload.store.base import RESOURCE, UPLOAD, Binding
from gptload.usage import UsageBuffer

log = logging.getLogger(__name__)
_MAX_CAPTURE = 2 * 1024 * 1024
_NO_CAPTURE = (":generateContent", ":streamGenerateContent", ":countTokens", ":embedContent", ":batchEmbedContents")
_UPLOAD_TTL = 7 * 24 * 3600.0
# Upstream failures that count toward the breaker: the upstream's own state (overloaded, bad gateway) and network
# errors (status 0). A 500 is often caused by the request itself, and a 504 by a deadline the client chose
# (X-Server-Timeout): a client could open the breaker for everyone with them, so they never count.
_BREAKER_STATUS = frozenset({0, 502, 503})


@dataclass(frozen=True)
class Attempt:
    """One try of a request: the key, the upstream it went to, its number (1-based) and when it started."""

    key: LiveKey
    base: str
    number: int
    started: float


class Forwarder:
    def __init__(
        self,
        pool: KeyPool,
        affinity: AffinityMap,
        usage: UsageBuffer,
        session: requests.Session,
        breakers: Breakers | None = None,
        clock: Callable[[], float] = time.monotonic,
        sessions: Sessions | None = None,
    ) -> None:
        self._pool = pool
        self._affinity = affinity
        self._usage = usage
        self._session = session
        self._sessions = sessions or Sessions(session)  # a group's proxy_url picks its session
        self.breakers = breakers or Breakers()
        self._clock = clock
        self._request_ids = itertools.count(1)
        self._streams: set[requests.Response] = set()  # upstream answers being relayed now
        self._streams_lock = threading.Lock()
        self._stopping = False

    def abort_streams(self) -> int:
        """The server is stopping and will not wait any longer: end every relay now, even one whose upstream is
        silent, and every call still waiting for its headers, so that each records its usage row (as cut) before the
        process exits. Returns how many."""
        self._stopping = True
        with self._streams_lock:
            running = list(self._streams)
        for resp in running:
            upstream_io.shutdown_socket(getattr(getattr(resp.raw, "connection", None), "sock", None))
        # calls still waiting for their headers end too: their attempts are recorded as failures
        return len(running) + upstream_io.WATCHDOG.fire_all()

    def forward(self, view: GroupView, req: IncomingRequest, upload: Binding | None = None) -> ProxyResponse:
        settings = view.settings
        facts = RequestFacts.of(req)
        outbound = None
        if view.rules is not None:  # redirects, overrides, header rules: applied once, every attempt replays them
            req, facts, outbound = self._apply_rules(view, view.rules, req, facts)
        session = self._sessions.for_proxy(settings.proxy_url) if settings.proxy_url else self._sessions.direct
        trace = Trace(view, req, facts)
        pinned, target = self._pinned_key(view, req, upload)
        attempts = 1 if pinned is not None else 1 + settings.max_retries
        timeout = upstream_io.call_timeouts(settings, stream=facts.stream)
        request_id = next(self._request_ids)
        outcomes: list[_Outcome] = []
        refused: Admission | None = None
        try:
            for number in range(1, attempts + 1):
                if self._stopping and outcomes:
                    break  # the server is stopping: no new calls
                key = pinned or self._pool.acquire(view, facts.model, {o.key.id for o in outcomes})
                if key is None:
                    break
                base, admission = self._upstream(view, facts.model, target)
                if base is None:
                    refused = admission
                    break
                attempt = Attempt(key, base, number, time.monotonic())
                circuit = (view.name, base, facts.model)
                url = (
                    upload.target
                    if upload is not None
                    else join_url(base, req.path, rewrite.strip_key_from_query(req.query))
                )
                headers = rewrite.upstream_headers(req.headers, key.secret, openai=facts.openai)
                if outbound is not None:
                    headers = outbound.apply_headers(headers)
                try:
                    resp = session.send(
                        prepare(req.method, url, headers, req.body),
                        stream=True,
                        timeout=timeout,
                        allow_redirects=False,
                    )
                except requests.RequestException as exc:
                    verdict = network_error(exc)
                    if not self._stopping:  # a call cut because the server stops says nothing about the upstream
                        self.breakers.failure(circuit, self._clock(), request_id, verdict.reason)
                    outcomes.append(_Outcome(key, base, verdict))
                    trace.failed(attempt, 0, verdict.reason)
                    log.info("attempt %d on key %s of %s: %s", number, key.id, view.name, type(exc).__name__)
                    continue
                if resp.status_code == 407 and settings.proxy_url:  # the egress proxy refused us, not Google
                    resp.close()
                    verdict = Verdict(Kind.TRANSIENT, reason="network: egress proxy answered 407", network=True)
                    self.breakers.failure(circuit, self._clock(), request_id, verdict.reason)
                    outcomes.append(_Outcome(key, base, verdict))
                    trace.failed(attempt, 0, verdict.reason)
                    log.warning("the egress proxy of group %s refused its credentials (407)", view.name)
                    continue
                if resp.status_code < 200:  # an interim 1xx taken for the answer: no usable answer from here
                    resp.close()
                    verdict = Verdict(Kind.TRANSIENT, reason=f"network: interim {resp.status_code}", network=True)
                    outcomes.append(_Outcome(key, base, verdict))
                    trace.failed(attempt, 0, verdict.reason)
                    continue
                if resp.status_code >= 400:
                    answer, verdict = self._error_answer(resp, view.secrets)
                    if answer is not None:
                        answer.attempts, answer.key_id = number, key.id
                    if verdict.upstream_failure:
                        if (resp.status_code if answer is not None else 0) in _BREAKER_STATUS:
                            self.breakers.failure(circuit, self._clock(), request_id, verdict.reason)
                    else:
                        self.breakers.success(circuit)
                        self._pool.report(view, key, verdict, facts.model)
                    outcomes.append(_Outcome(key, base, verdict, answer))
                    trace.failed(attempt, resp.status_code, verdict.reason)
                    if verdict.retryable:
                        log.info(
                            "attempt %d on key %s of %s: %s, retrying", number, key.id, view.name, verdict.kind.value
                        )
                        continue
                    assert answer is not None  # only an unreadable answer has none, and that is retryable
                    return answer  # the request's own fault: Google's answer, unchanged but for scrubbed keys
                self.breakers.success(circuit)
                self._pool.report(view, key, SUCCESS, facts.model)
                for o in outcomes:  # these keys failed with a 500 where this one served the same request: count them
                    if o.answer is not None and o.answer.status == 500 and o.base == base:
                        self._pool.report(view, o.key, replace(o.verdict, isolated=True), facts.model)
                trace.answered = True
                return self._success(view, req, resp, attempt, trace, outbound)
        finally:
            trace.flush_failures(self._usage)
        return self._no_answer(view, trace, outcomes, refused)

    def _apply_rules(
        self, view: GroupView, rules: group_rules.GroupRules, req: IncomingRequest, facts: RequestFacts
    ) -> tuple[IncomingRequest, RequestFacts, group_rules.Outbound]:
        """The serving group's rules applied (``group_rules.prepare``): the request as it goes upstream, its facts
        naming the model sent upstream (cooldowns, statistics, breaker, logs) and the one requested. A model refused
        by strict mode is logged and answered 404 without any upstream call."""
        inbound = group_rules.Inbound(
            req.method, req.path, req.query, req.body, req.content_type, req.source_ip, facts.model, facts.openai
        )
        try:
            out = group_rules.prepare(rules, inbound, time.time())
        except ModelNotAllowed as exc:
            self._usage.add(Trace(view, req, facts).event(None, 404, False, exc.message))
            raise
        if out.path is not req.path or out.body is not req.body:
            req = replace(req, path=out.path, body=out.body)
        return req, replace(facts, model=out.model, requested_model=out.requested_model), out

    def _upstream(self, view: GroupView, model: str, target: str | None) -> tuple[str | None, Admission]:
        """The upstream for the next attempt: ``target`` when the request is pinned, else the balancer's next one
        whose breaker for ``model`` lets it through (an open upstream is skipped while another can serve)."""
        now = self._clock()
        if target:
            candidates = [target]
        else:  # the balancer's pick first (one draw per attempt keeps the weights), then the others as fallbacks
            first = view.balancer.next()
            candidates = [first, *(u.url for u in view.group.upstreams if u.url != first)]
        refused: Admission | None = None
        for base in dict.fromkeys(candidates):
            admission = self.breakers.admit((view.name, base, model), now)
            if admission.allowed:
                return base, admission
            if refused is None or admission.retry_after < refused.retry_after:
                refused = admission
        return None, refused or Admission(False)

    def _no_answer(
        self, view: GroupView, trace: Trace, outcomes: list[_Outcome], refused: Admission | None
    ) -> ProxyResponse:
        """No attempt succeeded and none was the request's own fault. Google's own 5xx is passed on (with
        ``Retry-After`` when the breaker opened); errors that belong to pool keys never are: the client gets
        503 NO_KEYS_AVAILABLE saying what happened to each key, by masked form only."""
        now = self._clock()
        summary = _summary(outcomes, view, trace.facts.model, self._pool)
        upstream_answers = [o for o in outcomes if o.answer is not None and o.verdict.upstream_failure]
        if upstream_answers and all(o.verdict.upstream_failure for o in outcomes):
            # Google itself is failing for this request on every key tried: its own answer says it best.
            last = upstream_answers[-1]
            answer = last.answer
            assert answer is not None
            state, wait, _ = self.breakers.state((view.name, last.base, trace.facts.model), now)
            if state != "closed":
                answer.headers.append(("Retry-After", str(max(1, math.ceil(wait)))))
            return answer
        if refused is not None:
            trace.rejected(503, "breaker open", attempted=bool(outcomes))
            trace.flush_failures(self._usage)
            raise CircuitOpen(
                f"{trace.facts.model or 'this request'} is failing upstream for group {view.name!r}; "
                f"gptload holds requests for {refused.retry_after:.1f} s before it tries again"
                + (f" ({summary})" if summary else ""),
                details={"retry_after": round(refused.retry_after, 1)},
            )
        if outcomes and all(o.verdict.network for o in outcomes):
            waits = [self.breakers.state((view.name, o.base, trace.facts.model), now)[1] for o in outcomes]
            wait = max(waits) if waits else 0.0
            raise UpstreamUnreachable(
                f"no upstream answer after {len(outcomes)} attempt(s): {summary}",
                details={"retry_after": round(wait, 1)} if wait > 0 else None,
            )
        retry_after = self._pool.retry_after(view, trace.facts.model)
        trace.rejected(503, "no key available", attempted=bool(outcomes))
        trace.flush_failures(self._usage)
        raise NoKeysAvailable(
            f"no key of group {view.name!r} can serve {trace.facts.model or 'this request'} now: {summary}"
            + (f"; the first comes back in {retry_after:.0f} s" if retry_after is not None else ""),
            details={"retry_after": round(retry_after, 1)} if retry_after is not None else None,
        )

    # -- pieces ---------------------------------------------------------------------------------------------
    def _pinned_key(
        self, view: GroupView, req: IncomingRequest, upload: Binding | None
    ) -> tuple[LiveKey | None, str | None]:
        if upload is not None:
            return self._pool.key_by_id(view, upload.key_id), None
        for name in rewrite.resources_named(req.path, req.body):
            binding = self._affinity.lookup(RESOURCE, name)
            if binding is not None and binding.group == view.name:
                key = self._pool.key_by_id(view, binding.key_id)
                if key is not None:
                    upstreams = {u.url for u in view.group.upstreams}
                    return key, binding.target if binding.target in upstreams else None
        return None, None

    @staticmethod
    def _error_answer(resp: requests.Response, secrets: Collection[str]) -> tuple[ProxyResponse | None, Verdict]:
        """Read an error answer and classify it. Every pool key is scrubbed out of its body and headers (Google
        echoes the key in some messages, e.g. a suspended consumer's) before it reaches a client, a log or a key's
        ``last_error``. An answer whose body broke off or timed out is no answer: (None, a network verdict)."""
        try:
            body = upstream_io.read_capped(resp)  # decoded, at most 1 MiB: the rest is dropped with the connection
        except requests.RequestException as exc:
            resp.close()
            return None, network_error(exc)
        resp.close()
        cut = len(body) >= upstream_io.ERROR_BODY_CAP
        body = scrub_cut(body, secrets) if cut else scrub_secrets(body, secrets)
        headers = [
            (n, scrub_secrets(v.encode("latin-1", "replace"), secrets).decode("latin-1"))
            for n, v in rewrite.downstream_headers(resp.raw.headers.items(), keep_length=False)
            if n.lower() != "content-encoding"
        ]
        verdict = classify(resp.status_code, body)
        # the reason is decoded from the body's JSON: scrub it again (it goes to last_error, logs, the dashboard)
        reason = scrub_secrets(verdict.reason.encode(), secrets).decode("utf-8", "replace")
        return ProxyResponse(resp.status_code, headers, body), replace(verdict, reason=reason)

    def _success(
        self,
        view: GroupView,
        req: IncomingRequest,
        resp: requests.Response,
        attempt: Attempt,
        trace: Trace,
        outbound: group_rules.Outbound | None = None,
    ) -> ProxyResponse:
        key, base = attempt.key, attempt.base
        raw_headers = list(resp.raw.headers.items())
        upload_url = resp.headers.get("x-goog-upload-url")
        headers = rewrite.downstream_headers(raw_headers, keep_length=True)
        # Chunk requests go out later with this key to the URL bound here: only one on the upstream that answered
        # (same scheme, host and port, under its path) is bound and handed out, as this proxy's own URL.
        safe_upload_url = rewrite.upload_url_under(upload_url, base) if upload_url else None
        if upload_url and safe_upload_url is None:
            log.warning(
                "dropped an upload URL from the upstream of %s: it points outside that upstream (%s)",
                view.name,
                rewrite.origin_of(upload_url),
            )
        if safe_upload_url:
            upload_id = rewrite.upload_id_of(safe_upload_url.partition("?")[2])
            if upload_id:
                self._affinity.bind(
                    Binding(
                        UPLOAD,
                        upload_id,
                        view.name,
                        key.id,
                        rewrite.strip_key_from_url(safe_upload_url),
                        time.time() + _UPLOAD_TTL,
                    )
                )
            public = view.settings.app_url or req.public_base
            proxied = rewrite.proxied_upload_url(safe_upload_url, public, view.name, base)
            headers.append(("X-Goog-Upload-URL", proxied))
        if outbound is not None and outbound.answer_kind and resp.status_code == 200 and view.rules is not None:
            return self._rewritten(view.rules, outbound, view, resp, attempt, trace, headers)
        if self._captures(req, trace.facts, resp):
            # Buffered (still encoded, passed on as it came) up to the cap; a bigger answer cannot be a resource
            # this key created: it is relayed, the bytes already read first, and binds nothing.
            chunks = upstream_io.body_chunks(resp)
            try:
                body, complete = upstream_io.read_head(chunks, _MAX_CAPTURE)
            except requests.RequestException as exc:
                chunks.close()
                resp.close()
                error = f"upstream body failed: {type(exc).__name__}"
                self._usage.add(trace.succeeded(attempt, resp.status_code, error=error))
                raise upstream_io.as_gptload_error(exc) from exc
            if not complete:
                relay = self._relay(resp, view, attempt, trace, None, head=body, chunks=chunks)
                return ProxyResponse(
                    resp.status_code, headers, relay, streamed=True, attempts=attempt.number, key_id=key.id
                )
            chunks.close()
            resp.close()
            ttl = view.settings.affinity_ttl_hours * 3600
            encoding = resp.headers.get("content-encoding", "")
            for name in rewrite.resources_created(upstream_io.decode_capped(body, encoding, _MAX_CAPTURE)):
                self._affinity.bind(Binding(RESOURCE, name, view.name, key.id, base, time.time() + ttl))
            self._usage.add(trace.succeeded(attempt, resp.status_code))
            return ProxyResponse(resp.status_code, headers, body, attempts=attempt.number, key_id=key.id)
        tap = TokenTap(resp.headers.get("content-encoding", "")) if trace.facts.counts_tokens else None
        return ProxyResponse(
            resp.status_code,
            headers,
            # the first piece is read now: a failure before any byte becomes an error answer (504/502)
            upstream_io.Primed(self._relay(resp, view, attempt, trace, tap)),
            streamed=True,
            attempts=attempt.number,
            key_id=key.id,
        )

    def _rewritten(
        self,
        rules: group_rules.GroupRules,
        outbound: group_rules.Outbound,
        view: GroupView,
        resp: requests.Response,
        attempt: Attempt,
        trace: Trace,
        headers: list[tuple[str, str]],
    ) -> ProxyResponse:
        """A model list or a redirected model's info: buffered (up to ``group_rules.ANSWER_CAP``, decoded) and
        rewritten by ``group_rules.rewrite_answer``. A bigger answer is relayed unchanged."""
        chunks = upstream_io.body_chunks(resp)
        try:
            body, complete = upstream_io.read_head(chunks, group_rules.ANSWER_CAP)
        except requests.RequestException as exc:
            chunks.close()
            resp.close()
            self._usage.add(
                trace.succeeded(attempt, resp.status_code, error=f"upstream body failed: {type(exc).__name__}")
            )
            raise upstream_io.as_gptload_error(exc) from exc
        if not complete:
            relay = self._relay(resp, view, attempt, trace, None, head=body, chunks=chunks)
            return ProxyResponse(
                resp.status_code, headers, relay, streamed=True, attempts=attempt.number, key_id=attempt.key.id
            )
        chunks.close()
        resp.close()
        encoding = resp.headers.get("content-encoding", "").strip().lower()
        plain = (
            body if encoding in ("", "identity") else upstream_io.decode_capped(body, encoding, group_rules.ANSWER_CAP)
        )
        rewritten = group_rules.rewrite_answer(rules, outbound, plain) if plain else plain
        if plain and rewritten is not plain:
            body = rewritten
            headers = [(n, v) for n, v in headers if n.lower() not in ("content-length", "content-encoding")]
            headers.append(("Content-Length", str(len(body))))
        self._usage.add(trace.succeeded(attempt, resp.status_code))
        return ProxyResponse(resp.status_code, headers, body, attempts=attempt.number, key_id=attempt.key.id)

    @staticmethod
    def _captures(req: IncomingRequest, facts: RequestFacts, resp: requests.Response) -> bool:
        """Buffer a success only when it may name a resource created by this key (small JSON, not generation)."""
        if req.method != "POST" or any(s in req.path for s in _NO_CAPTURE) or facts.openai:
            return False
        if not 200 <= resp.status_code < 300:
            return False
        if "json" not in resp.headers.get("content-type", ""):
            return False
        length = resp.headers.get("content-length")
        return length is None or (length.isdigit() and int(length) <= _MAX_CAPTURE)

    def _relay(
        self,
        resp: requests.Response,
        view: GroupView,
        attempt: Attempt,
        trace: Trace,
        tap: TokenTap | None,
        head: bytes = b"",
        chunks: Generator[bytes, None, None] | None = None,
    ) -> Iterator[bytes]:
        """Yield upstream bytes as they arrive, still encoded (gzip passes through). Closing this generator (the
        client went away) closes the upstream response, with no penalty to the key. An upstream failure
        mid-stream is re-raised so the server aborts the connection: the client must see a broken stream, not a
        clean but truncated one; it counts for the breaker, never against the key. ``head``: bytes already read from
        ``chunks`` (the rest of the body), relayed first. Reads are bounded and timed by ``upstream_io``."""
        error = ""
        broken = False
        with self._streams_lock:
            self._streams.add(resp)
        try:
            source = chunks if chunks is not None else upstream_io.body_chunks(resp)
            with contextlib.closing(source):
                for chunk in itertools.chain((head,), source):
                    if chunk:
                        if tap is not None:
                            tap.feed(chunk)
                        yield chunk
        except GeneratorExit:
            error = "client closed the connection"
            raise
        except Exception as exc:
            broken = True
            if self._stopping:
                error = "cut: the server stopped before the stream ended"
                raise
            error = f"upstream stream broke: {type(exc).__name__}"
            log.warning("upstream stream of key %s in %s broke: %s", attempt.key.id, view.name, type(exc).__name__)
            self.breakers.failure((view.name, attempt.base, trace.facts.model), self._clock(), id(trace), error)
            raise
        finally:
            with self._streams_lock:
                self._streams.discard(resp)
            resp.close()
            tokens = tap.counts() if tap is not None else NO_TOKENS
            event = trace.succeeded(attempt, resp.status_code, tokens, error)
            self._usage.add(replace(event, success=False) if broken else event)
            # The request's tail for streamed answers: werkzeug hands a direct-passthrough iterable to the server
            # as is, so response.call_on_close never runs for them.
            self._usage.maybe_flush()


@dataclass
class _Outcome:
    """One failed attempt: the key, the upstream it went to, what the answer meant, and the answer if any."""

    key: LiveKey
    base: str
    verdict: Verdict
    answer: ProxyResponse | None = None


def _summary(outcomes: list[_Outcome], view: GroupView, model: str, pool: KeyPool) -> str:
    """What happened to each key this request tried, by masked form, then what the rest of the group looks like:
    "2 keys tried: AIza...x7Qc invalid (400 API_KEY_INVALID), AIza...9fZa cooling for gemini-2.5-pro until
    08:00:00 UTC (429 ...); other keys: 1 invalid, 2 cooling"."""
    now = time.time()
    parts = []
    for o in outcomes:
        v = o.verdict
        if v.kind is Kind.KEY_INVALID:
            what = f"invalid ({v.reason})"
        elif v.kind in (Kind.QUOTA_DAY, Kind.QUOTA_MINUTE, Kind.QUOTA_BARE):
            until = [c.until for c in o.key.state.live_cooldowns(now) if c.model in (model, ANY_MODEL)]
            when = time.strftime(" until %Y-%m-%d %H:%M:%S UTC", time.gmtime(max(until))) if until else ""
            what = f"cooling for {model or 'all models'}{when} ({v.reason})"
        elif v.network:
            what = f"no answer ({v.reason.removeprefix('network: ')})"
        else:
            what = f"failed ({v.reason[:120]})"
        parts.append(f"{o.key.masked} {what}")
    text = f"{len(outcomes)} key{'s' if len(outcomes) != 1 else ''} tried: " + ", ".join(parts) if parts else ""
    census = pool.census(view, model, {o.key.id for o in outcomes})
    rest = [f"{n} {what}" for what, n in census.items() if n]
    scope = "other keys" if parts else f"{len(view.keys)} key{'s' if len(view.keys) != 1 else ''}"
    tail = f"{scope}: " + ", ".join(rest) if rest else ("no other keys" if parts else "the group has no keys")
    return scrub("; ".join(p for p in (text, tail) if p))
