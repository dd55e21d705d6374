"""Per-request bookkeeping that turns attempts into usage events (request-log rows and statistics)."""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from gptload.keypool.keytext import scrub
from gptload.models import KeyState, UsageEvent, attempt_log_id
from gptload.pool import GroupView, LiveKey
from gptload.proxy.request import IncomingRequest, RequestFacts
from gptload.proxy.tokens import NO_TOKENS, TokenCounts
from gptload.usage import UsageBuffer

if TYPE_CHECKING:
    from gptload.proxy.forwarder import Attempt

_BODY_LOG_LIMIT = 64 * 1024
# Client-chosen strings in usage events are cut here (the OpenAI layer takes the model from the body, up to 4 MiB):
# they become log rows, Firestore page tags and statistics, and a Firestore document cannot pass 1 MiB.
_MODEL_LOG_LIMIT = 200  # as long as a model name may be in a group's rules (group_rules._MODEL_NAME)
_PATH_LOG_LIMIT = 2000
NO_KEY = LiveKey(id="", group="", secret="", state=KeyState(), masked="")


class EventIds:
    """Unique ids for usage events: a random prefix per process (drawn again after a fork) and a counter. One
    ``secrets.token_hex`` per request was a system call on the hot path (~20 us); ids need to be unique, not secret:
    request logs are read through the authenticated admin API only."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> str:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._prefix, self._counter = secrets.token_hex(5), itertools.count()
                    self._pid = os.getpid()
        return f"{self._prefix}{next(self._counter):06x}"


EVENT_IDS = EventIds()


class Trace:
    """Per-request bookkeeping that turns attempts into usage events (request-log rows and statistics)."""

    def __init__(self, view: GroupView, req: IncomingRequest, facts: RequestFacts) -> None:
        self.view = view
        self.req = req
        self.facts = facts
        self.failures: list[UsageEvent] = []
        self.answered = False  # a successful attempt is being relayed
        self.request_id = EVENT_IDS.next()  # shared by the log rows of every attempt (models.attempt_log_id)

    def event(
        self,
        attempt: Attempt | None,
        status: int,
        success: bool,
        error: str,
        tokens: TokenCounts = NO_TOKENS,
        final: bool = True,
    ) -> UsageEvent:
        """One usage event; ``attempt`` None for a request refused before any upstream call."""
        s = self.view.settings
        body = None
        if s.enable_request_body_logging and self.req.body:
            body = scrub(self.req.body[:_BODY_LOG_LIMIT].decode("utf-8", "replace"))
        key = attempt.key if attempt is not None else NO_KEY
        # through an aggregate: ``group`` is the member whose key served (the aggregate itself when none was tried)
        group = attempt.group if attempt is not None and attempt.group is not None else self.view
        facts = attempt.facts if attempt is not None and attempt.facts is not None else self.facts
        return UsageEvent(
            group=group.name,
            key_id=key.id,
            at=time.time(),
            success=success,
            status_code=status,
            model=facts.model[:_MODEL_LOG_LIMIT],
            requested_model=facts.requested_model[:_MODEL_LOG_LIMIT],
            method=self.req.method,
            path=("/" + self.req.path.split("?", 1)[0])[:_PATH_LOG_LIMIT],
            stream=self.facts.stream,
            duration_ms=int((time.monotonic() - attempt.started) * 1000) if attempt is not None else 0,
            attempt=attempt.number if attempt is not None else 0,
            final=final,
            key_masked=key.masked,
            source_ip=self.req.source_ip,
            user_agent=self.req.user_agent[:300],
            error=scrub(error)[:1000],
            upstream=attempt.base if attempt is not None else "",
            prompt_tokens=tokens.prompt,
            candidates_tokens=tokens.candidates,
            total_tokens=tokens.total,
            request_body=body,
            logged=not (success and s.log_failures_only),
            id=attempt_log_id(self.request_id, attempt.number if attempt is not None else 0),
            aggregate=self.view.name if self.view.is_aggregate else "",
            access_key=self.req.access_key,
        )

    def failed(self, attempt: Attempt, status: int, reason: str) -> None:
        self.failures.append(self.event(attempt, status, False, reason, final=False))

    def succeeded(self, attempt: Attempt, status: int, tokens: TokenCounts = NO_TOKENS, error: str = "") -> UsageEvent:
        return self.event(attempt, status, True, error, tokens)

    def rejected(self, status: int, error: str, *, attempted: bool) -> None:
        """A request that never got an answer from Google (no key, breaker open): one final row with no key, so it
        is counted in the statistics and the log. Not needed when attempts were made (their rows count)."""
        if not attempted:
            self.failures.append(self.event(None, status, False, error, final=True))

    def flush_failures(self, usage: UsageBuffer) -> None:
        """Push failed attempts; the last one is final unless a success followed it."""
        if self.failures and not self.answered:
            self.failures[-1] = replace(self.failures[-1], final=True)
        for event in self.failures:
            usage.add(event)
        self.failures = []


def rejection_event(
    view: GroupView, req: IncomingRequest, status: int, error: str, *, refused: bool = False
) -> UsageEvent:
    """The usage row of a request refused before any upstream call (bad proxy key, body too large, an access key's
    scope or limits: ``refused``): counted in the group's statistics and logged with its source, never with the
    presented key."""
    event = Trace(view, req, RequestFacts.of(replace(req, body=b""))).event(None, status, False, error)
    return replace(event, refused=True) if refused else event
