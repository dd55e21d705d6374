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
    rejected_lines: tuple[tuple[int, str], ...] = ()  # (line number from 1, ``describe_rejected`` of the token)


def parse_keys(text: str) -> ParsedKeys:
    """Split ``text`` on newlines, spaces, commas and semicolons; keep well-formed keys once each. Rejected tokens
    are reported masked, with the line they were on."""
    seen: set[str] = set()
    valid: list[str] = []
    rejected: list[str] = []
    lines: list[tuple[int, str]] = []
    dupes = 0
    for number, line in enumerate((text or "").splitlines(), start=1):
        for token in _SEPARATORS.split(line):
            if not token:
                continue
            if not KEY_PATTERN.match(token):
                rejected.append(mask(token))
                lines.append((number, describe_rejected(token)))
            elif token in seen:
                dupes += 1
            else:
                seen.add(token)
                valid.append(token)
    return ParsedKeys(tuple(valid), dupes, tuple(rejected), tuple(lines))


def describe_rejected(token: str) -> str:
    """A rejected import token, shown enough to find it but never enough to use it: the mask of a long token, the
    first two characters of a short one, and the length (``AIza...x7Qc (38 characters)``, ``he*** (5 characters)``)."""
    if len(token) > 12:
        shown = mask(token)
    elif len(token) > 4:
        shown = token[:2] + "*" * 3
    else:
        shown = "*" * len(token)
    return f"{shown} ({len(token)} character{'' if len(token) == 1 else 's'})"


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
_ESCAPES = re.compile(rb"\\u[0-9a-fA-F]{4}|%[0-9a-fA-F]{2}")
_TRAILING_TOKEN = re.compile(rb"[0-9A-Za-z_-]{8,}$")


def scrub_secrets(data: bytes, secrets: Collection[str]) -> bytes:
    """Mask every key in ``data``: each of ``secrets`` by exact value (a set lookup per token, so the cost does not
    grow with the number of keys), and anything shaped like a Gemini key. For bodies and headers that come from
    upstream before they reach a client, a log row or ``last_error`` (Google echoes keys in some messages).

    A key written with JSON ``\\u`` escapes or percent-encoding would be read by a client's parser: when decoding
    them reveals a key (looking through up to ``_MAX_DECODES`` layers), the decoded text, scrubbed, is returned
    instead: fidelity matters less than the key."""
    data = scrub_secrets_plain(data, secrets)
    probe = data
    for _ in range(_MAX_DECODES):  # look through up to this many layers of escaping
        if not _ESCAPES.search(probe):
            break
        probe = _unescaped(probe)
        scrubbed = scrub_secrets_plain(probe, secrets)
        if scrubbed != probe:
            data = probe = scrubbed
    return data


_MAX_DECODES = 4


def scrub_cut(data: bytes, secrets: Collection[str]) -> bytes:
    """``scrub_secrets`` for a body cut at a size cap: a key straddling the cut is not whole any more, so a trailing
    run of key characters is dropped too."""
    return _TRAILING_TOKEN.sub(b"", scrub_secrets(data, secrets))


def _unescaped(data: bytes) -> bytes:
    from urllib.parse import unquote_to_bytes

    text = re.sub(rb"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)).encode("utf-8", "replace"), data)
    return unquote_to_bytes(text)


def scrub_secrets_plain(data: bytes, secrets: Collection[str]) -> bytes:
    """``scrub_secrets`` without looking into escapes (one level)."""
    if secrets:
        data = _TOKEN_BYTES.sub(
            lambda m: mask(m.group(0).decode()).encode() if m.group(0).decode() in secrets else m.group(0), data
        )
    return _KEY_ANYWHERE_BYTES.sub(lambda m: mask(m.group(0).decode()).encode(), data)
