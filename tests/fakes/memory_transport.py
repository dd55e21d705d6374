"""An in-memory upstream for the forwarder, in the spirit of httpx's ``MockTransport``: a requests adapter that answers
from a function, mounted on the real ``requests.Session`` the forwarder uses. No sockets, so unit tests of the retry
loop, the relay and the error policy are fast and exact.

    transport = MemoryTransport(lambda req: Answer(200, {"candidates": []}))
    session = make_session(8); session.mount("http://up", transport)
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.response import HTTPResponse


@dataclass
class Answer:
    """What the upstream sends: a status, a body (dict/list -> JSON, bytes as is, or an iterable of chunks for a
    stream), headers, or ``raise_`` to fail the call itself (a connect error, a timeout)."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    raise_: BaseException | None = None


@dataclass
class Seen:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str | None:
        return self.headers.get("x-goog-api-key")


class _Chunks(io.RawIOBase):
    """A readable stream over chunks; an exception among them is raised when reached (a mid-stream failure)."""

    def __init__(self, chunks: Iterable[bytes | BaseException]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            if isinstance(nxt, BaseException):
                raise nxt
            self._pending = nxt
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class MemoryTransport(BaseAdapter):
    def __init__(self, handler: Callable[[Seen], Answer]) -> None:
        super().__init__()
        self.handler = handler
        self.seen: list[Seen] = []

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        body = request.body or b""
        seen = Seen(request.method, request.url, {k.lower(): v for k, v in request.headers.items()}, bytes(body))
        self.seen.append(seen)
        answer = self.handler(seen)
        if answer.raise_ is not None:
            raise answer.raise_
        headers = {"Content-Type": "application/json", **answer.headers}
        if isinstance(answer.body, (dict, list)):
            data: Any = io.BytesIO(json.dumps(answer.body).encode())
        elif isinstance(answer.body, (bytes, bytearray)):
            data = io.BytesIO(bytes(answer.body))
        else:
            data = io.BufferedReader(_Chunks(answer.body))
        raw = HTTPResponse(
            body=data, headers=headers, status=answer.status, preload_content=False, decode_content=False
        )
        response = requests.Response()
        response.status_code = answer.status
        response.headers = CaseInsensitiveDict(raw.headers)
        response.raw = raw
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass
