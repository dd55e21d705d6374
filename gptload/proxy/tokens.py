"""Token usage from answers as they stream past: a tap that keeps only the tail of the decoded stream.

Gemini reports ``usageMetadata`` (``promptTokenCount``, ``candidatesTokenCount``, ``totalTokenCount``) in plain
answers and in streamed chunks (the last chunk carries the totals); the OpenAI-compatible layer reports ``usage``
(``prompt_tokens``, ``completion_tokens``, ``total_tokens``). The tap never holds more than ``window`` bytes and
decompresses gzip/deflate itself because the relay passes encoded bytes through untouched: in pieces of at most
64 KiB (``zlib`` ``max_length``), and at most ``max_decoded`` bytes in all, after which it gives up (no counts)
rather than spend CPU on what can only be a decompression bomb or an answer no model produces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import requests

from gptload.proxy.upstream_io import Inflater

_GEMINI = {
    "prompt": re.compile(rb'"promptTokenCount"\s*:\s*(\d+)'),
    "candidates": re.compile(rb'"candidatesTokenCount"\s*:\s*(\d+)'),
    "total": re.compile(rb'"totalTokenCount"\s*:\s*(\d+)'),
}
_OPENAI = {
    "prompt": re.compile(rb'"prompt_tokens"\s*:\s*(\d+)'),
    "candidates": re.compile(rb'"completion_tokens"\s*:\s*(\d+)'),
    "total": re.compile(rb'"total_tokens"\s*:\s*(\d+)'),
}


@dataclass(frozen=True)
class TokenCounts:
    prompt: int = 0
    candidates: int = 0
    total: int = 0


NO_TOKENS = TokenCounts()


MAX_DECODED = 64 * 1024 * 1024


class TokenTap:
    def __init__(self, content_encoding: str = "", window: int = 16384, max_decoded: int = MAX_DECODED) -> None:
        self._window = window
        self._tail = b""
        self._inflater = Inflater(content_encoding)
        self._usable = self._inflater.supported
        self._left = max_decoded

    def feed(self, chunk: bytes) -> None:
        if not self._usable:
            return
        if not self._inflater.decodes:
            self._tail = (self._tail + chunk)[-self._window :]
            return
        try:
            for piece in self._inflater.pieces(chunk):
                self._left -= len(piece)
                if self._left < 0:
                    self._usable, self._tail = False, b""
                    return
                self._tail = (self._tail + piece)[-self._window :]
        except requests.exceptions.ContentDecodingError:
            self._usable, self._tail = False, b""

    def counts(self) -> TokenCounts:
        if not self._usable or not self._tail:
            return TokenCounts()
        for patterns in (_GEMINI, _OPENAI):
            found = {name: _last(p, self._tail) for name, p in patterns.items()}
            if any(found.values()):
                total = found["total"] or found["prompt"] + found["candidates"]
                return TokenCounts(found["prompt"], found["candidates"], total)
        return TokenCounts()


# A count is the upstream's text: one above this (no model answers a billion tokens) is not believed and counts 0,
# so that sums stay far inside the stores' 64-bit integers and int() never meets thousands of digits.
MAX_TOKENS = 10**9


def _last(pattern: re.Pattern[bytes], data: bytes) -> int:
    value = 0
    for match in pattern.finditer(data):
        digits = match.group(1)
        value = int(digits) if len(digits) <= 10 and int(digits) <= MAX_TOKENS else 0
    return value
