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
- every pool key is scrubbed out of error answers before they go anywhere;
- through an aggregate group (``_Route``), each attempt is one member's: chosen by weight among the members with a
  key for the model, kept while it has untried keys and an admitting breaker, then the next, all within the
  aggregate's one budget; the member's rules, session, upstreams, breakers and key states serve it, and its
  ``NoKeysAvailable`` says what happened in each member.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator
from dataclasses import dataclass, replace

import requests

from gptload.errors import CircuitOpen, InvalidPath, ModelNotAllowed, NoKeysAvailable, UpstreamUnreachable
from gptload.keypool.breaker import Admission, Breakers
from gptload.keypool.classify import SUCCESS, Kind, Verdict, classify, network_error
from gptload.keypool.keytext import scrub, scrub_cut, scrub_secrets
from gptload.metrics import Metrics
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
_MODEL_LIST = re.compile(r"v1[a-z0-9]*/(?:openai/)?models/?")
# Upstream failures that count toward the breaker: the upstream's own state (overloaded, bad gateway) and network
# errors (status 0). A 500 is often caused by the request itself, and a 504 by a deadline the client chose
# (X-Server-Timeout): a client could open the breaker for everyone with them, so they never count.
_BREAKER_STATUS = frozenset({0, 502, 503})


@dataclass(frozen=True)
class Attempt:
    """One try of a request: the key, the upstream it went to, its number (1-based) and when it started; the group
    whose key it is (an aggregate's member; None: the request's own group) and the model it sent upstream."""

    key: LiveKey
    base: str
    number: int
    started: float
    group: GroupView | None = None
    facts: RequestFacts | None = None  # as the serving group sends the request (its model, the requested one)

    @property
    def model(self) -> str | None:
        return self.facts.model if self.facts is not None else None


@dataclass(frozen=True)
class Serving:
    """A group that serves attempts of a request (the request's own group, or one member of an aggregate): the
    request as that group sends it upstream (its rules applied), its facts, header rules and egress session."""

    view: GroupView
    req: IncomingRequest
    facts: RequestFacts
    outbound: group_rules.Outbound | None
    session: requests.Session


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
        metrics: Metrics | None = None,
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
        self.metrics = metrics  # time to the upstream's response headers, per group (gptload.metrics)

    def open_streams(self) -> int:
        """How many answers are being relayed now (for /metrics)."""
        return len(self._streams)

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
        """Serve ``req`` for ``view``: a standard group's keys, or an aggregate's members (each with its own keys,
        upstreams, breakers and rules), within one budget of ``1 + max_retries`` attempts (the entry group's)."""
        settings = view.settings
        facts = RequestFacts.of(req)
        trace = Trace(view, req, facts)
        ambiguous = rewrite.ambiguous_path(req.path) if upload is None else ""
        if ambiguous:  # the model read here must be the one the upstream is asked for
            self._usage.add(trace.event(None, 400, False, ambiguous))
            raise InvalidPath(ambiguous)
        pinned = self._pinned_key(view, req, facts, upload)
        attempts = 1 if pinned is not None else 1 + settings.max_retries
        timeout = upstream_io.call_timeouts(settings, stream=facts.stream)
        request_id = next(self._request_ids)
        outcomes: list[_Outcome] = []
        refused: Admission | None = None
        route = _Route(self, view, req, facts)
        try:
            for number in range(1, attempts + 1):
                if self._stopping and outcomes:
                    break  # the server is stopping: no new calls
                if pinned is not None:
                    serving, key, target = pinned
                    base, admission = self._upstream(serving.view, serving.facts.model, target)
                    if base is None:
                        refused = admission
                        break
                else:
                    picked = route.next({o.key.id for o in outcomes})
                    if picked is None:
                        refused = route.refused
                        break
                    serving, key, base = picked
                group, sreq, sfacts = serving.view, serving.req, serving.facts
                attempt = Attempt(key, base, number, time.monotonic(), group, sfacts)
                circuit = (group.name, base, sfacts.model)
                url = (
                    upload.target
                    if upload is not None
                    else join_url(base, sreq.path, rewrite.strip_key_from_query(sreq.query))
                )
                headers = rewrite.upstream_headers(sreq.headers, key.secret, openai=sfacts.openai)
                if serving.outbound is not None:
                    headers = serving.outbound.apply_headers(headers)
                try:
                    resp = serving.session.send(
                        prepare(sreq.method, url, headers, sreq.body),
                        stream=True,
                        timeout=timeout,
                        allow_redirects=False,
                    )
                except requests.RequestException as exc:
                    verdict = network_error(exc)
                    if not self._stopping:  # a call cut because the server stops says nothing about the upstream
                        self.breakers.failure(circuit, self._clock(), request_id, verdict.reason)
                    outcomes.append(_Outcome(key, base, verdict, serving=serving))
                    trace.failed(attempt, 0, verdict.reason)
                    log.info("attempt %d on key %s of %s: %s", number, key.id, group.name, type(exc).__name__)
                    route.upstream_failed(serving)
                    continue
                if resp.status_code == 407 and group.settings.proxy_url:  # the egress proxy refused us, not Google
                    resp.close()
                    verdict = Verdict(Kind.TRANSIENT, reason="network: egress proxy answered 407", network=True)
                    self.breakers.failure(circuit, self._clock(), request_id, verdict.reason)
                    outcomes.append(_Outcome(key, base, verdict, serving=serving))
                    trace.failed(attempt, 0, verdict.reason)
                    log.warning("the egress proxy of group %s refused its credentials (407)", group.name)
                    route.upstream_failed(serving)
                    continue
                if self.metrics is not None:
                    self.metrics.upstream_answered(group.name, time.monotonic() - attempt.started)
                if resp.status_code < 200:  # an interim 1xx taken for the answer: no usable answer from here
                    resp.close()
                    verdict = Verdict(Kind.TRANSIENT, reason=f"network: interim {resp.status_code}", network=True)
                    outcomes.append(_Outcome(key, base, verdict, serving=serving))
                    trace.failed(attempt, 0, verdict.reason)
                    route.upstream_failed(serving)
                    continue
                if resp.status_code >= 400:
                    answer, verdict = self._error_answer(resp, group.secrets)
                    if answer is not None:
                        answer.attempts, answer.key_id = number, key.id
                    if verdict.upstream_failure:
                        if (resp.status_code if answer is not None else 0) in _BREAKER_STATUS:
                            self.breakers.failure(circuit, self._clock(), request_id, verdict.reason)
                    else:
                        self.breakers.success(circuit)
                        self._pool.report(group, key, verdict, sfacts.model)
                    outcomes.append(_Outcome(key, base, verdict, answer, serving))
                    trace.failed(attempt, resp.status_code, verdict.reason)
                    if verdict.upstream_failure:
                        route.upstream_failed(serving)
                    if verdict.retryable:
                        log.info(
                            "attempt %d on key %s of %s: %s, retrying", number, key.id, group.name, verdict.kind.value
                        )
                        continue
                    assert answer is not None  # only an unreadable answer has none, and that is retryable
                    return answer  # the request's own fault: Google's answer, unchanged but for scrubbed keys
                self.breakers.success(circuit)
                self._pool.report(group, key, SUCCESS, sfacts.model)
                for o in outcomes:  # these keys failed with a 500 where this one served the same request: count them
                    if o.answer is not None and o.answer.status == 500 and o.base == base and o.group is group:
                        self._pool.report(group, o.key, replace(o.verdict, isolated=True), sfacts.model)
                trace.answered = True
                return self._success(group, sreq, resp, attempt, trace, serving.outbound)
        finally:
            trace.flush_failures(self._usage)
        return self._no_answer(view, trace, outcomes, refused, route)

    def serving(
        self, view: GroupView, req: IncomingRequest, facts: RequestFacts, *, log_refusal: bool = True
    ) -> Serving:
        """The request as group ``view`` sends it upstream: its own rules applied (redirects, overrides, header
        rules: once per request, every attempt replays them) and its egress session; ``facts`` are the client's.
        Raises ``ModelNotAllowed`` when the group's strict mode refuses the model (logged if ``log_refusal``)."""
        outbound = None
        if view.rules is not None:
            req, facts, outbound = self._apply_rules(view, view.rules, req, facts, log_refusal=log_refusal)
        proxy_url = view.settings.proxy_url
        session = self._sessions.for_proxy(proxy_url) if proxy_url else self._sessions.direct
        return Serving(view, req, facts, outbound, session)

    def _apply_rules(
        self,
        view: GroupView,
        rules: group_rules.GroupRules,
        req: IncomingRequest,
        facts: RequestFacts,
        *,
        log_refusal: bool = True,
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
            if log_refusal:
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
        self,
        view: GroupView,
        trace: Trace,
        outcomes: list[_Outcome],
        refused: Admission | None,
        route: _Route,
    ) -> ProxyResponse:
        """No attempt succeeded and none was the request's own fault. Google's own 5xx is passed on (with
        ``Retry-After`` when the breaker opened); errors that belong to pool keys never are: the client gets
        503 NO_KEYS_AVAILABLE saying what happened to each key, by masked form only (per member for an
        aggregate)."""
        now = self._clock()
        model = trace.facts.model
        if view.is_aggregate:
            summary = _members_summary(outcomes, route, self._pool)
        else:
            summary = _summary(outcomes, view, model, self._pool)
        upstream_answers = [o for o in outcomes if o.answer is not None and o.verdict.upstream_failure]
        if upstream_answers and all(o.verdict.upstream_failure for o in outcomes):
            # Google itself is failing for this request on every key tried: its own answer says it best.
            last = upstream_answers[-1]
            answer = last.answer
            assert answer is not None
            state, wait, _ = self.breakers.state(last.circuit(view, model), now)
            if state != "closed":
                answer.headers.append(("Retry-After", str(max(1, math.ceil(wait)))))
            return answer
        what = f"aggregate group {view.name!r}" if view.is_aggregate else f"group {view.name!r}"
        if refused is not None:
            trace.rejected(503, "breaker open", attempted=bool(outcomes))
            trace.flush_failures(self._usage)
            raise CircuitOpen(
                f"{model or 'this request'} is failing upstream for {what}; "
                f"gptload holds requests for {refused.retry_after:.1f} s before it tries again"
                + (f" ({summary})" if summary else ""),
                details={"retry_after": round(refused.retry_after, 1)},
            )
        if outcomes and all(o.verdict.network for o in outcomes):
            waits = [self.breakers.state(o.circuit(view, model), now)[1] for o in outcomes]
            wait = max(waits) if waits else 0.0
            raise UpstreamUnreachable(
                f"no upstream answer after {len(outcomes)} attempt(s): {summary}",
                details={"retry_after": round(wait, 1)} if wait > 0 else None,
            )
        if view.is_aggregate:
            waits_ = [self._pool.retry_after(s.view, s.facts.model) for s in route.members()]
            known = [w for w in waits_ if w is not None]
            retry_after = min(known) if known else None
            who = f"no member of {what} has a key that can serve"
        else:
            retry_after = self._pool.retry_after(view, model)
            who = f"no key of {what} can serve"
        trace.rejected(503, "no key available", attempted=bool(outcomes))
        trace.flush_failures(self._usage)
        raise NoKeysAvailable(
            f"{who} {model or 'this request'} now: {summary}"
            + (f"; the first comes back in {retry_after:.0f} s" if retry_after is not None else ""),
            details={"retry_after": round(retry_after, 1)} if retry_after is not None else None,
        )

    # -- pieces ---------------------------------------------------------------------------------------------
    def _pinned_key(
        self, view: GroupView, req: IncomingRequest, facts: RequestFacts, upload: Binding | None
    ) -> tuple[Serving, LiveKey, str | None] | None:
        """The group, key and upstream (None: any) a request naming a resource must use: the ones that created it.
        Through an aggregate, the member that created it (``binding.group``) serves, with its own rules."""
        if upload is not None:
            owner = self._pool.member_view(view, upload.group)
            key = self._pool.key_by_id(owner, upload.key_id) if owner is not None else None
            return (self.serving(owner, req, facts), key, None) if owner is not None and key is not None else None
        for name in rewrite.resources_named(req.path, req.body):
            binding = self._affinity.lookup(RESOURCE, name)
            owner = self._pool.member_view(view, binding.group) if binding is not None else None
            if binding is not None and owner is not None:
                key = self._pool.key_by_id(owner, binding.key_id)
                if key is not None:
                    upstreams = {u.url for u in owner.group.upstreams}
                    target = binding.target if binding.target in upstreams else None
                    return self.serving(owner, req, facts), key, target
        return None

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
            # the client goes on through the group it called (an aggregate: the binding names the member)
            public = trace.view.settings.app_url or req.public_base
            proxied = rewrite.proxied_upload_url(safe_upload_url, public, trace.view.name, base)
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
            model = trace.facts.model if attempt.model is None else attempt.model
            self.breakers.failure((view.name, attempt.base, model), self._clock(), id(trace), error)
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
    serving: Serving | None = None  # the group whose key it was, as it sent the request

    @property
    def group(self) -> GroupView | None:
        return self.serving.view if self.serving is not None else None

    def circuit(self, view: GroupView, model: str) -> tuple[str, str, str]:
        """The breaker this attempt counted toward (``view``/``model``: the request's, if no serving group)."""
        if self.serving is None:
            return (view.name, self.base, model)
        return (self.serving.view.name, self.base, self.serving.facts.model)


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


def _members_summary(outcomes: list[_Outcome], route: _Route, pool: KeyPool) -> str:
    """An aggregate's summary: what happened in each member, in the aggregate's order ("member a: 2 keys tried:
    ...; member b: 3 keys: 3 cooling"); paused members are left out."""
    parts = []
    for serving in route.members():
        mine = [o for o in outcomes if o.group is serving.view]
        parts.append(f"member {serving.view.name}: {_summary(mine, serving.view, serving.facts.model, pool)}")
    return " | ".join(parts) if parts else "the aggregate has no active members"


class _Route:
    """Where the next attempt of one request goes: for a standard group its next key; for an aggregate, the
    member chosen by weight among those with a key able to serve the model (as that member sends it) and not yet
    tried by this request, kept while it has such keys and an upstream whose breaker lets it through, then the
    next member by weight. After an upstream failure (5xx, network) the next attempt prefers another member.
    ``refused``: the breaker refusal with the shortest wait, if one stopped the request."""

    def __init__(self, forwarder: Forwarder, view: GroupView, req: IncomingRequest, facts: RequestFacts) -> None:
        self._fw = forwarder
        self._view = view
        self._req = req
        self._facts = facts
        self._serving: dict[str, Serving] = {}
        self._refusals: dict[str, ModelNotAllowed] = {}  # members whose strict mode refuses the model
        self._current: Serving | None = None
        self._done: set[str] = set()  # members out of keys or held back by their breakers, for this request
        self._failed: set[str] = set()  # members whose upstream failed this request: others first
        self.refused: Admission | None = None

    def upstream_failed(self, serving: Serving) -> None:
        """The member's upstream failed (5xx, network): the next attempt goes to another member by weight if one
        can serve (that member's other keys would most likely meet the same failure), else back to this one."""
        if self._view.is_aggregate:
            self._failed.add(serving.view.name)
            self._current = None

    def members(self) -> list[Serving]:
        """Every active member of the aggregate as it serves this request (none for a standard group), except those
        whose strict mode refuses the model."""
        members = (self._member(v) for v in self._fw._pool.members(self._view))
        return [m for m in members if m is not None]

    def _for(self, group: GroupView) -> Serving:
        serving = self._serving.get(group.name)
        if serving is None:
            serving = self._serving[group.name] = self._fw.serving(group, self._req, self._facts)
        return serving

    def _member(self, member: GroupView) -> Serving | None:
        """A member as it serves this request; None if its strict mode refuses the model (the others may not)."""
        if member.name in self._refusals:
            return None
        serving = self._serving.get(member.name)
        if serving is None:
            try:
                serving = self._fw.serving(member, self._req, self._facts, log_refusal=False)
            except ModelNotAllowed as exc:
                self._refusals[member.name] = exc
                return None
            self._serving[member.name] = serving
        return serving

    def _refuse_model(self, active: Collection[str]) -> None:
        """Every active member's strict mode refuses the model: the aggregate refuses it (404, logged once)."""
        if active and all(name in self._refusals for name in active):
            exc = self._refusals[next(iter(active))]
            refusal = ModelNotAllowed(
                f"no member of aggregate group {self._view.name!r} serves model {self._facts.model!r}: "
                + "; ".join(f"{name}: {self._refusals[name].message}" for name in active)
            )
            self._fw._usage.add(Trace(self._view, self._req, self._facts).event(None, 404, False, refusal.message))
            raise refusal from exc

    def next(self, tried: set[str]) -> tuple[Serving, LiveKey, str] | None:
        pool = self._fw._pool
        if not self._view.is_aggregate:
            serving = self._current or self._for(self._view)
            self._current = serving
            key = pool.acquire(self._view, serving.facts.model, tried)
            if key is None:
                return None
            base, admission = self._fw._upstream(self._view, serving.facts.model, None)
            if base is None:
                self.refused = admission
                return None
            return serving, key, base
        members = {v.name: v for v in pool.members(self._view)}
        while True:
            if self._current is None:
                assert self._view.members is not None

                def eligible(name: str) -> bool:
                    member = members.get(name)
                    if member is None or name in self._done:
                        return False
                    serving = self._member(member)
                    return serving is not None and pool.can_serve(member, serving.facts.model, tried)

                # decided before the pick, outside its lock: a member's rules may parse the body
                order = self._view.members.names
                able = [n for n in order if eligible(n)]
                preferred = [n for n in able if n not in self._failed] or able
                if _lists_models(self._req):  # the same list every time: the first member that can serve
                    name = preferred[0] if preferred else None
                else:
                    name = self._view.members.pick(preferred.__contains__)
                if name is None:
                    self._refuse_model(members)
                    return None
                self._current = self._member(members[name])
                assert self._current is not None  # eligible
            serving = self._current
            key = pool.acquire(serving.view, serving.facts.model, tried)
            if key is None:  # this member has run out of keys for the model: the next one by weight
                self._done.add(serving.view.name)
                self._current = None
                continue
            base, admission = self._fw._upstream(serving.view, serving.facts.model, None)
            if base is None:  # every upstream of this member holds the model back: the next member
                if self.refused is None or admission.retry_after < self.refused.retry_after:
                    self.refused = admission
                self._done.add(serving.view.name)
                self._current = None
                continue
            return serving, key, base


def _lists_models(req: IncomingRequest) -> bool:
    """Is this a model list (``GET v1beta/models``, ``v1/models``, ``v1beta/openai/models``)?"""
    return req.method == "GET" and _MODEL_LIST.fullmatch(req.path) is not None
