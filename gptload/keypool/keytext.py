"""Parsing, masking and scrubbing of Gemini API keys. Pure functions.

A Gemini API key is ``AIza`` followed by 35 characters of ``[0-9A-Za-z_-]`` (39 in all).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

KEY_PATTERN = re.compile(r"^AIza[0-9A-Za-z_-]{35}$")
_KEY_ANYWHERE = re.compile(r"AIza[0-9A-Za-z_-]{35}")
_SEPARATORS = re.compile(r"[\s,;]+")


@dataclass(frozen=True)
class ParsedKeys:
    valid: tuple[str, ...]  # distinct, in input order
    duplicates_in_text: int
    rejected: tuple[str, ...]  # already masked: safe to show


def parse_keys(text: str) -> ParsedKeys:
    """Split ``text`` on newlines, spaces, commas and semicolons; keep well-formed keys once each."""
    seen: set[str] = set()
    valid: list[str] = []
    rejected: list[str] = []
    dupes = 0
    for token in _SEPARATORS.split(text or ""):
        if not token:
            continue
        if not KEY_PATTERN.match(token):
            rejected.append(mask(token))
        elif token in seen:
            dupes += 1
        else:
            seen.add(token)
            valid.append(token)
    return ParsedKeys(tuple(valid), dupes, tuple(rejected))


def mask(secret: str) -> str:
    """``AIzaSyA...x7Qc``-style mask: enough to recognise a key, never enough to use it."""
    if len(secret) <= 12:
        return "*" * min(len(secret), 8)
    return f"{secret[:4]}...{secret[-4:]}"


def scrub(text: str) -> str:
    """Replace anything shaped like a Gemini key in ``text`` by its mask (Google echoes keys in some messages)."""
    return _KEY_ANYWHERE.sub(lambda m: mask(m.group(0)), text)


_KEY_ANYWHERE_BYTES = re.compile(rb"AIza[0-9A-Za-z_-]{35}")
_TOKEN_BYTES = re.compile(rb"[0-9A-Za-z_-]{16,}")


def scrub_secrets(data: bytes, secrets: Collection[str]) -> bytes:
    """Mask every key in ``data``: each of ``secrets`` by exact value (a set lookup per token, so the cost does not
    grow with the number of keys), and anything shaped like a Gemini key. For bodies and headers that come from
    upstream before they reach a client, a log row or ``last_error`` (Google echoes keys in some messages)."""
    if secrets:
        data = _TOKEN_BYTES.sub(
            lambda m: mask(m.group(0).decode()).encode() if m.group(0).decode() in secrets else m.group(0), data
        )
    return _KEY_ANYWHERE_BYTES.sub(lambda m: mask(m.group(0).decode()).encode(), data)
