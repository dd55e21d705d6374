"""What comes in and what goes out of the forwarder, framework-free: ``IncomingRequest``, the facts about it that
every layer needs (computed once: ``RequestFacts``), and ``ProxyResponse``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from gptload.proxy import rewrite

_OPENAI_STREAM = re.compile(rb'"stream"\s*:\s*true')
_GENERATION = (":generateContent", ":streamGenerateContent")


@dataclass(frozen=True)
class IncomingRequest:
    """A proxied request, framework-free. ``path`` is the upstream path without a leading slash."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    public_base: str
    content_type: str = ""
    source_ip: str = ""
    user_agent: str = ""
    access_key: str = "anonymous"  # the id of the access key that authenticated it (ANONYMOUS: a legacy key)


@dataclass(frozen=True)
class RequestFacts:
    """What the forwarder, the trace and the relay need to know about a request, computed once.

    ``model``: the model it names ("" if none); ``openai``: it is on the OpenAI-compatible layer; ``stream``: the
    answer is a stream (``:streamGenerateContent``, ``alt=sse``, or ``"stream": true`` on the OpenAI layer);
    ``counts_tokens``: the answer carries token usage worth reading. After a group's rules applied
    (``group_rules.prepare``), ``model`` is the model sent upstream and ``requested_model`` the one the client named."""

    model: str
    openai: bool
    stream: bool
    counts_tokens: bool
    requested_model: str = ""  # the model the client named, when a group's redirect sends ``model`` instead

    @classmethod
    def of(cls, req: IncomingRequest) -> RequestFacts:
        openai = rewrite.is_openai(req.path)
        stream = (
            ":streamGenerateContent" in req.path
            or "alt=sse" in req.query
            or (openai and _OPENAI_STREAM.search(req.body[: rewrite.MAX_SCAN_BYTES]) is not None)
        )
        counts_tokens = any(s in req.path for s in _GENERATION) or (openai and "completions" in req.path)
        model = rewrite.model_of(req.path, req.body, req.content_type)
        return cls(model=model, openai=openai, stream=stream, counts_tokens=counts_tokens)


@dataclass
class ProxyResponse:
    status: int
    headers: list[tuple[str, str]]
    body: Iterator[bytes] | bytes = b""
    streamed: bool = False
    attempts: int = 1
    key_id: str = ""
