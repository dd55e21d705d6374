"""Token usage from answers as they stream past: a tap that keeps only the tail of the decoded stream.

Gemini reports ``usageMetadata`` (``promptTokenCount``, ``candidatesTokenCount``, ``totalTokenCount``) in plain
answers and in streamed chunks (the last chunk carries the totals); the OpenAI-compatible layer reports ``usage``
(``prompt_tokens``, ``completion_tokens``, ``total_tokens``). The tap never holds more than ``window`` bytes and
decompresses gzip itself because the relay passes encoded bytes through untouched.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

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


class TokenTap:
    def __init__(self, content_encoding: str = "", window: int = 16384) -> None:
        self._window = window
        self._tail = b""
        encoding = content_encoding.lower().strip()
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
        self._usable = encoding in ("", "identity", "gzip")

    def feed(self, chunk: bytes) -> None:
        if not self._usable:
            return
        if self._inflate is not None:
            try:
                chunk = self._inflate.decompress(chunk)
            except zlib.error:
                self._usable = False
                return
        self._tail = (self._tail + chunk)[-self._window :]

    def counts(self) -> TokenCounts:
        if not self._usable or not self._tail:
            return TokenCounts()
        for patterns in (_GEMINI, _OPENAI):
            found = {name: _last(p, self._tail) for name, p in patterns.items()}
            if any(found.values()):
                total = found["total"] or found["prompt"] + found["candidates"]
                return TokenCounts(found["prompt"], found["candidates"], total)
        return TokenCounts()


def _last(pattern: re.Pattern[bytes], data: bytes) -> int:
    value = 0
    for match in pattern.finditer(data):
        value = int(match.group(1))
    return value
