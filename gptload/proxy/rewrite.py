"""What goes upstream and what comes back: credential handling, header filtering, model and resource extraction.

Framework-free: works on plain strings, bytes and header lists so it can be unit tested without a server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

# RFC 9110 hop-by-hop headers plus the ones a proxy must recompute itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
CREDENTIAL_HEADERS = frozenset({"x-goog-api-key", "authorization", "x-api-key"})
# Headers Google checks against a key's application restrictions or billing: a client sending them could make a
# pool key answer API_KEY_*_BLOCKED (key evidence) for its own request. The proxy, not the client, uses the key.
KEY_RESTRICTION_HEADERS = frozenset(
    {"referer", "x-android-package", "x-android-cert", "x-ios-bundle-identifier", "x-goog-user-project"}
)
# Never forwarded upstream: credentials, cookies of the console's origin, this hop's forwarding metadata, and what
# would let a client's request speak for the key.
_DROP_UPSTREAM = (
    HOP_BY_HOP
    | CREDENTIAL_HEADERS
    | KEY_RESTRICTION_HEADERS
    | {
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "accept-encoding",
    }
)
_DROP_DOWNSTREAM = HOP_BY_HOP | {"set-cookie", "x-goog-upload-url"}

_MODEL_IN_PATH = re.compile(r"(?:^|/)(?:tunedModels|models)/([^/:?]+)")
_RESOURCE_IN_PATH = re.compile(r"(?:^|/)((?:files|cachedContents|batches|operations|fileSearchStores)/[A-Za-z0-9_.-]+)")
_FILE_URI = re.compile(rb'"file_?[uU]ri"\s*:\s*"[^"]*?/(files/[A-Za-z0-9_-]+)"')
_CACHED_CONTENT = re.compile(rb'"cached_?[cC]ontent"\s*:\s*"(cachedContents/[A-Za-z0-9_-]+)"')
_RESOURCE_NAME = re.compile(
    r"^(?:models/[^/]+/)?((?:files|cachedContents|batches|operations|fileSearchStores)/[A-Za-z0-9_.-]+)$"
    r"|^(auth_tokens/[A-Za-z0-9_.-]+)$"  # an ephemeral token (v1alpha): a Live session with it needs its key
)
MAX_SCAN_BYTES = 4 * 1024 * 1024
_SURROGATE = re.compile("[\ud800-\udfff]")  # left alone by json.loads when unpaired; no UTF-8 encoder takes one
# Encodings gptload can decode with a bound on the output (upstream_io.Inflater): the only ones it asks for.
_DECODABLE = frozenset({"gzip", "x-gzip", "deflate", "identity"})


@dataclass(frozen=True)
class ProxyKey:
    value: str | None
    source: str  # "query", "x-goog-api-key", "authorization", "x-api-key" or ""


def find_proxy_key(query_string: str, headers: Iterable[tuple[str, str]]) -> ProxyKey:
    """The proxy key in order of precedence: x-goog-api-key, Authorization Bearer, X-Api-Key, ?key=."""
    found: dict[str, str] = {}
    for name, value in headers:
        lname = name.lower()
        if lname == "x-goog-api-key":
            found.setdefault("x-goog-api-key", value.strip())
        elif lname == "authorization" and value[:7].lower() == "bearer ":
            found.setdefault("authorization", value[7:].strip())
        elif lname == "x-api-key":
            found.setdefault("x-api-key", value.strip())
    for source in ("x-goog-api-key", "authorization", "x-api-key"):
        if found.get(source):
            return ProxyKey(found[source], source)
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name == "key" and value:
            return ProxyKey(value, "query")
    return ProxyKey(None, "")


def strip_key_from_query(query_string: str) -> str:
    """Remove every ``key=`` parameter, keeping the rest byte for byte (``$alt=json;enum-encoding=int`` stays)."""
    if "key" not in query_string:
        return query_string
    kept = [part for part in query_string.split("&") if part and unquote(part.split("=", 1)[0]) != "key"]
    return "&".join(kept)


def upstream_headers(headers: Iterable[tuple[str, str]], secret: str, *, openai: bool) -> dict[str, str]:
    """Client headers minus hop-by-hop and credentials, plus the real key (repeated headers joined with ", ",
    as RFC 9110 allows). Accept-Encoding is pinned to the client's own (or identity) so that no encoding the
    client never asked for comes back, narrowed to the encodings gptload can decode within a bound (error bodies
    and token counts are read): gzip, deflate, identity."""
    out: dict[str, str] = {}
    accept_encoding = "identity"
    for name, value in headers:
        lname = name.lower()
        if lname == "accept-encoding":
            accept_encoding = value
        elif lname not in _DROP_UPSTREAM:
            out[name] = f"{out[name]}, {value}" if name in out else value
    out["Accept-Encoding"] = decodable_encodings(accept_encoding)
    if openai:
        out["Authorization"] = f"Bearer {secret}"
    else:
        out["x-goog-api-key"] = secret
    return out


def decodable_encodings(accept_encoding: str) -> str:
    """The client's Accept-Encoding without the codings gptload cannot decode boundedly (br, zstd, ``*``...)."""
    kept = [p.strip() for p in accept_encoding.split(",") if p.split(";", 1)[0].strip().lower() in _DECODABLE]
    return ", ".join(kept) or "identity"


def downstream_headers(headers: Iterable[tuple[str, str]], *, keep_length: bool) -> list[tuple[str, str]]:
    out = [(n, v) for n, v in headers if n.lower() not in _DROP_DOWNSTREAM]
    if keep_length:
        out += [(n, v) for n, v in headers if n.lower() == "content-length"]
    return out


def is_openai(path: str) -> bool:
    return "/openai/" in f"/{path}"


def model_of(path: str, body: bytes, content_type: str) -> str:
    """The model a request names: in the path (``models/gemini-2.5-flash:generateContent``) or, on the
    OpenAI-compatible layer, in the JSON body's ``model``. "" when none."""
    match = _MODEL_IN_PATH.search(path)
    if match:
        return unquote(match.group(1))
    if is_openai(path) and body and "json" in content_type and len(body) <= MAX_SCAN_BYTES:
        try:
            value = json.loads(body).get("model", "")
        except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, or nested past the limit
            return ""
        if isinstance(value, str):  # a lone surrogate ("\udc80" in JSON) is no UTF-8: it becomes U+FFFD
            return _SURROGATE.sub("\ufffd", value.removeprefix("models/"))
    return ""


def ambiguous_path(path: str) -> str:
    """Why gptload and an upstream could read ``path`` differently, "" when they cannot: a ``.`` or ``..`` segment
    (raw or percent-encoded: requests resolves the raw ones, an upstream may resolve the others), a backslash, or a
    percent-encoded slash or backslash (an upstream may decode it). ``models/alias/../gemini-2.5-pro`` would be
    checked (strict mode) and counted (cooldowns, statistics) as ``alias``. Google's API paths have none of these."""
    if "\\" in path:
        return "the path has a backslash; send the path it stands for"
    for segment in path.split("?", 1)[0].split("/"):
        if "%" in segment or segment in (".", ".."):
            plain = unquote(segment)
            if plain in (".", ".."):
                return f"the path has a dot segment ({segment!r}); send the path it stands for"
            if "/" in plain or "\\" in plain:
                return f"the path has an encoded slash or backslash ({segment[:80]!r}); send the path it stands for"
    return ""


def resources_named(path: str, body: bytes) -> list[str]:
    """Resource names (``files/abc``, ``cachedContents/x``...) a request refers to, path first."""
    names = [m.group(1) for m in _RESOURCE_IN_PATH.finditer(path)]
    if body and len(body) <= MAX_SCAN_BYTES and (b"ile" in body or b"ached" in body):
        names += [m.group(1).decode() for m in _FILE_URI.finditer(body)]
        names += [m.group(1).decode() for m in _CACHED_CONTENT.finditer(body)]
    return names


def resources_created(body: bytes) -> list[str]:
    """Resource names in a successful JSON answer: ``{"name": "cachedContents/x"}``, ``{"file": {"name": ...}}``,
    ``{"name": "models/veo/operations/y"}``, ``{"name": "batches/z"}``."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(doc, dict):
        return []
    found: list[str] = []
    for candidate in (doc, doc.get("file"), doc.get("metadata"), doc.get("response")):
        if isinstance(candidate, dict) and isinstance(candidate.get("name"), str):
            match = _RESOURCE_NAME.match(candidate["name"])
            if match:
                found.append(match.group(1) or match.group(2))
    return found


def upload_id_of(query_string: str) -> str | None:
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name == "upload_id" and value:
            return value
    return None


def proxied_upload_url(upstream_url: str, public_base: str, group: str, upstream_base: str = "") -> str:
    """Rewrite Google's ``X-Goog-Upload-URL`` to this proxy's own URL, without any ``key=``. The path is taken
    relative to ``upstream_base``'s path (an upstream ``https://gw/gemini`` hands out ``https://gw/gemini/upload/..``,
    which becomes ``/proxy/{group}/upload/...``)."""
    parts = urlsplit(upstream_url)
    query = strip_key_from_query(parts.query)
    path = parts.path
    prefix = urlsplit(upstream_base).path.rstrip("/")
    if prefix and path.startswith(prefix + "/"):
        path = path[len(prefix) :]
    return f"{public_base.rstrip('/')}/proxy/{group}{path}" + (f"?{query}" if query else "")


def upload_url_under(upload_url: str, upstream_base: str) -> str | None:
    """``upload_url`` with its dot segments resolved, when it stays on the upstream that answered: same scheme,
    host and port as ``upstream_base``, no user info, and a path under ``upstream_base``'s path. None otherwise
    (another host or port, a path escaping the prefix with ``..`` raw or percent-encoded, an encoded slash)."""
    try:
        url, base = urlsplit(upload_url.strip()), urlsplit(upstream_base)
        ports = (_port(url), _port(base))
    except ValueError:
        return None
    if url.scheme.lower() not in ("http", "https") or url.scheme.lower() != base.scheme.lower():
        return None
    if "@" in url.netloc or not url.hostname or url.hostname != base.hostname or ports[0] != ports[1]:
        return None
    path = _resolve_dots(url.path or "/")
    prefix = base.path.rstrip("/")
    if path is None or (prefix and not path.startswith(prefix + "/")):
        return None
    return urlunsplit((url.scheme, url.netloc, path, url.query, ""))


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url`` for log lines (no user info, path or query)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{_port(parts)}"
    except ValueError:
        return "an unparsable URL"


def _port(parts) -> int | None:  # type: ignore[no-untyped-def]
    return parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())


def _resolve_dots(path: str) -> str | None:
    """RFC 3986 dot-segment removal that also treats percent-encoded dots as dots; None when the path climbs
    above the root or a segment hides a slash or backslash (``%2F``, ``%5C``) an upstream might decode."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        plain = unquote(segment)
        if "/" in plain or "\\" in plain:
            return None
        if plain == ".":
            continue
        if plain == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(segment)
    return "/" + "/".join(out)


def strip_key_from_url(url: str) -> str:
    parts = urlsplit(url)
    query = strip_key_from_query(parts.query)
    return parts._replace(query=query).geturl()
