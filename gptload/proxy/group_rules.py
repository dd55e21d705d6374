"""A group's request rules, pure (no I/O, no clock): model redirects (and strict mode), parameter overrides, header
rules, and the rewriting of model lists. Validation of the admin fields lives here too, next to what it protects.

The contract, for the forwarder and for an aggregate that calls it once per member group::

    rules = GroupRules.of(group)               # compiled once per group view (KeyPool._build_view)
    out = prepare(rules, Inbound(...), now)    # once per request, before the first attempt; raises ModelNotAllowed
    headers = out.apply_headers(upstream_headers(...))   # per attempt, after the key is set
    send(method, join_url(base, out.path, query), headers, out.body)   # every attempt replays out.body
    if out.answer_kind and status == 200: body = rewrite_answer(rules, out, body)   # model lists, model info

- ``Inbound``: what the serving group needs to know about the incoming request (method, path without a leading
  slash, query, body, Content-Type, client IP, the model it names as ``rewrite.model_of`` found it, OpenAI layer).
- ``Outbound``: what to send upstream: ``path`` (a native ``models/{from}`` segment redirected), ``body`` (the
  OpenAI-layer ``"model"``, ``batchEmbedContents``' ``requests[].model`` or a ``cachedContents`` creation's
  ``model`` redirected, ``param_overrides`` deep-merged; the very same bytes when nothing applies), the headers to
  set and remove, ``model`` (sent upstream: cooldowns, statistics, breaker and logs use it) and ``requested_model``
  (what the client named, for the log).
- Strict mode: a request naming a model that is not a redirect source raises ``ModelNotAllowed`` (404 in Google's
  envelope) before any upstream call. Requests naming no model (files, uploads, model lists) pass, and so do a
  long-running call's operations (``models/{target}/operations/{id}``: Google names them after the target).
  Minting an ephemeral token (``POST auth_tokens``, Live API) is refused: the token calls Google directly.
- ``param_overrides`` apply to the JSON object bodies of native generation calls (``:generateContent``,
  ``:streamGenerateContent``, where ``generationConfig``, ``safetySettings``, ``systemInstruction``, ``tools``... make
  sense; Google refuses unknown fields, so ``:countTokens``, embeddings, files and caches are left alone) and of
  every OpenAI-layer POST naming a model (``temperature``, ``max_tokens``, ``reasoning_effort``, ``extra_body``...).
  Objects merge deeply, other values replace, ``null`` deletes. A body that is not a JSON object passes unchanged.
- Header rules: ``set`` (value with ``${CLIENT_IP}``, ``${GROUP_NAME}``, ``${TIMESTAMP_MS}``, ``${TIMESTAMP_S}``,
  resolved once per request) or ``remove``, applied in order after the client's headers were filtered and the key
  was set. They can never name a credential, hop-by-hop or framing header (``FORBIDDEN_HEADERS``).

A group with none of these features has ``rules.active`` False: the forwarder skips this module entirely.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from gptload.errors import ModelNotAllowed
from gptload.models import Group
from gptload.proxy.rewrite import CREDENTIAL_HEADERS, HOP_BY_HOP

# Headers no rule may set or remove: the key's own (the proxy sets it), the framing the transport computes, and
# Accept-Encoding (gptload narrows it to encodings it can decode within a bound).
FORBIDDEN_HEADERS = CREDENTIAL_HEADERS | HOP_BY_HOP | {"accept-encoding"}
VARIABLES = ("${CLIENT_IP}", "${GROUP_NAME}", "${TIMESTAMP_MS}", "${TIMESTAMP_S}")
MAX_REDIRECTS = 500
MAX_HEADER_RULES = 50
MAX_OVERRIDES_BYTES = 64 * 1024
MAX_OVERRIDES_DEPTH = 16
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_VARIABLE = re.compile(r"\$\{[^}]*\}?")
_MODEL_SEGMENT = re.compile(r"(^|/)((?:tunedModels|models)/)([^/:?]+)")  # as rewrite.model_of reads a model
_NATIVE_LIST = re.compile(r"^v1[a-z0-9]*/models/?$")
_OPENAI_LIST = re.compile(r"^v1[a-z0-9]*/openai/models/?$")
_OVERRIDDEN_METHODS = (":generateContent", ":streamGenerateContent")
_CACHE_CREATE = re.compile(r"^v1[a-z0-9]*/cachedContents/?$")
# ``models/{m}/operations/{id}``: a long-running call's operation (Veo), named by Google after the model sent upstream
_OPERATION = re.compile(r"(?:^|/)(?:tunedModels|models)/[^/:?]+/operations/")
# minting an ephemeral token (Live API): the token calls Google directly, for any model, on the pool key
_AUTH_TOKENS = re.compile(r"^v1[a-z0-9]*/auth_?[tT]okens/?$")
_MODEL_INFO = re.compile(r"^v1[a-z0-9]*/(?:openai/)?models/[^/:?]+$")


def mints_token(method: str, path: str) -> bool:
    """Does this request mint an ephemeral token (``POST v1alpha/auth_tokens``)? The token then calls Google directly,
    for any model, on the pool key: strict mode and restricted access keys refuse it."""
    return method == "POST" and bool(_AUTH_TOKENS.match(path))


# Model lists and model info are small; a bigger answer is passed on unchanged.
ANSWER_CAP = 8 * 1024 * 1024


@dataclass(frozen=True)
class HeaderRule:
    key: str
    value: str
    action: str  # "set" or "remove"

    @property
    def lower(self) -> str:
        return self.key.lower()


@dataclass(frozen=True)
class GroupRules:
    """One group's rules, compiled. ``active`` is False when the group uses none of them."""

    group_name: str
    redirects: Mapping[str, str] = field(default_factory=dict)
    strict: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)
    header_rules: tuple[HeaderRule, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.redirects or self.strict or self.overrides or self.header_rules)

    @functools.cached_property
    def header_plan(self) -> tuple[tuple[tuple[str, str, bool], ...], tuple[str, ...]]:
        """The rules folded once, in order: the headers finally set (name, value template, has variables) and the
        lower-case names finally removed. Per request only the variables are filled in."""
        sets: list[tuple[str, str, bool]] = []
        removes: list[str] = []
        for rule in self.header_rules:
            sets = [s for s in sets if s[0].lower() != rule.lower]
            if rule.action == "remove":
                removes.append(rule.lower)
            else:
                sets.append((rule.key, rule.value, "${" in rule.value))
                removes = [r for r in removes if r != rule.lower]
        return tuple(sets), tuple(removes)

    @classmethod
    def of(cls, group: Group) -> GroupRules:
        return cls(
            group_name=group.name,
            redirects=dict(group.model_redirect_rules),
            strict=group.model_redirect_strict,
            overrides=copy.deepcopy(group.param_overrides),
            header_rules=tuple(
                HeaderRule(str(r.get("key", "")), str(r.get("value", "")), str(r.get("action", "set")))
                for r in group.header_rules
            ),
        )


@dataclass(frozen=True)
class Inbound:
    """The facts about an incoming request the rules need. ``model``: as ``rewrite.model_of`` found it."""

    method: str
    path: str
    query: str
    body: bytes
    content_type: str
    client_ip: str
    model: str
    openai: bool


@dataclass(frozen=True)
class Outbound:
    """What to send upstream (see the module's docstring). ``answer_kind``: "" or how a successful answer is to be
    rewritten by ``rewrite_answer`` ("native_list", "openai_list", "model_info")."""

    path: str
    body: bytes
    model: str
    requested_model: str
    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    answer_kind: str = ""
    first_page: bool = True

    def apply_headers(self, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` (built for one attempt) with the rules applied in order; a set replaces any header of the same
        name whatever its case. Returns ``headers`` itself when there is nothing to apply."""
        if not self.set_headers and not self.remove_headers:
            return headers
        out = dict(headers)
        for lower in self.remove_headers:
            for name in [n for n in out if n.lower() == lower]:
                del out[name]
        for name, value in self.set_headers:
            lower = name.lower()
            for existing in [n for n in out if n.lower() == lower]:
                del out[existing]
            out[name] = value
        return out


def prepare(rules: GroupRules, req: Inbound, now: float) -> Outbound:
    """What the serving group sends upstream for ``req`` (the entry point; see the module's docstring). ``now``:
    Unix time for the timestamp variables. Raises ModelNotAllowed in strict mode for a model that is not a source."""
    json_body = req.method == "POST" and req.body and ("json" in req.content_type.lower() or not req.content_type)
    requested = req.model
    # Bodies that name a model are read whatever their Content-Type or size (``model_of`` reads only JSON-typed
    # OpenAI-layer bodies up to a bound; the upstream may not care about either), and sent as read: a cache is made
    # for the model its creation names, an OpenAI-layer call and batchEmbedContents' requests name theirs.
    routed = bool((rules.redirects or rules.strict) and req.method == "POST" and req.body)
    cache_create = bool(routed and not requested and _CACHE_CREATE.match(req.path))
    # overrides too: padding an OpenAI-layer body past model_of's bound must not escape them
    openai_body = bool((routed or (rules.overrides and req.method == "POST" and req.body)) and req.openai)
    if (cache_create or openai_body) and not requested:
        requested = _body_model(req.body)
    model_body = cache_create or openai_body or (routed and ":batchEmbedContents" in req.path)
    target = rules.redirects.get(requested, "") if requested else ""
    # polling or cancelling an operation is no call to its model: its name is the target's, Google chose it
    if rules.strict and requested and not target and not _OPERATION.search(req.path):
        sources = ", ".join(sorted(rules.redirects)[:20]) or "none"
        raise ModelNotAllowed(
            f"model {requested!r} is not available in group {rules.group_name!r} (models offered: {sources})"
        )
    if rules.strict and req.method == "POST" and _AUTH_TOKENS.match(req.path):
        raise ModelNotAllowed(
            f"group {rules.group_name!r} offers only its models ({', '.join(sorted(rules.redirects)[:20])}): "
            "an ephemeral token would call Google directly, for any model"
        )
    path, body = req.path, req.body
    answer_kind, first_page = _answer_kind(rules, req, bool(target))
    if target:  # native calls and model info (``models/{from}`` in the path); OpenAI-layer bodies below
        path = _redirect_path(path, requested, target)
    overrides = rules.overrides if json_body and _overridable(req, requested) else None
    redirect_body = target and model_body
    if overrides or redirect_body:
        body = _rewrite_body(body, overrides, requested if redirect_body else "", target)
    set_headers, remove_headers = _header_actions(rules, req.client_ip, now)
    if answer_kind:  # the answer is parsed and rewritten: ask for it unencoded
        set_headers = (*set_headers, ("Accept-Encoding", "identity"))
    return Outbound(
        path=path,
        body=body,
        model=target or requested,
        requested_model=requested,
        set_headers=set_headers,
        remove_headers=remove_headers,
        answer_kind=answer_kind,
        first_page=first_page,
    )


# -- redirects ----------------------------------------------------------------------------------------------------
def _redirect_path(path: str, source: str, target: str) -> str:
    """``path`` with its first ``models/{source}`` (or ``tunedModels/{source}``) segment, percent-encoded or not,
    naming ``models/{target}``."""
    match = _MODEL_SEGMENT.search(path)
    if match is None or unquote(match.group(3)) != source:
        return path
    return f"{path[: match.start(2)]}models/{target}{path[match.end(3) :]}"


def _answer_kind(rules: GroupRules, req: Inbound, redirected: bool) -> tuple[str, bool]:
    if req.method != "GET" or not (rules.redirects or rules.strict):
        return "", True
    first_page = "pageToken=" not in req.query and "after=" not in req.query
    if _NATIVE_LIST.match(req.path):
        return "native_list", first_page
    if _OPENAI_LIST.match(req.path):
        return "openai_list", first_page
    if redirected and _MODEL_INFO.match(req.path):
        return "model_info", True
    return "", True


# -- parameter overrides ------------------------------------------------------------------------------------------
def _overridable(req: Inbound, model: str) -> bool:
    if req.openai:
        return bool(model)
    return any(m in req.path for m in _OVERRIDDEN_METHODS)


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: objects merge deeply, other values (arrays too) replace, ``None``
    deletes the field. Neither argument is changed."""
    out = dict(base)
    for name, value in overrides.items():
        if value is None:
            out.pop(name, None)
        elif isinstance(value, Mapping):
            current = out.get(name)
            out[name] = deep_merge(current if isinstance(current, Mapping) else {}, value)
        else:
            out[name] = copy.deepcopy(value) if isinstance(value, list) else value  # scalars are immutable
    return out


def _rewrite_body(body: bytes, overrides: Mapping[str, Any] | None, source: str, target: str) -> bytes:
    """The JSON object ``body`` with ``source`` redirected to ``target`` (OpenAI ``model``, native
    ``requests[].model``) and ``overrides`` merged; ``body`` itself when it is not a JSON object."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(doc, dict):
        return body
    if source:
        _redirect_body_model(doc, source, target)
    if overrides:
        doc = deep_merge(doc, overrides)
    return _dump(doc)


def _dump(doc: Any) -> bytes:
    """``doc`` as compact UTF-8 JSON. A lone surrogate (JSON may escape one: ``"\\ud800"``) has no UTF-8 form: such
    a document is written with ASCII escapes, which keep it exactly as it came."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(doc, separators=(",", ":")).encode()


def _body_model(body: bytes) -> str:
    """The model a JSON object body names in ``model`` (without ``models/``); "" when none."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    value = doc.get("model") if isinstance(doc, dict) else None
    return value.removeprefix("models/") if isinstance(value, str) else ""


def _redirect_body_model(doc: dict[str, Any], source: str, target: str) -> None:
    def swap(holder: dict[str, Any]) -> None:
        value = holder.get("model")
        if isinstance(value, str) and value.removeprefix("models/") == source:
            holder["model"] = f"models/{target}" if value.startswith("models/") else target

    swap(doc)
    requests = doc.get("requests")
    if isinstance(requests, list):
        for item in requests:
            if isinstance(item, dict):
                swap(item)


# -- header rules -------------------------------------------------------------------------------------------------
def probe_headers(rules: GroupRules | None, headers: dict[str, str], now: float) -> dict[str, str]:
    """``headers`` of a key-validation probe with the group's header rules applied (``${CLIENT_IP}`` is empty): a
    gateway that needs a rule's header to answer must get it from probes too."""
    if rules is None or not rules.header_rules:
        return headers
    sets, removes = _header_actions(rules, "", now)
    return Outbound("", b"", "", "", sets, removes).apply_headers(headers)


def _header_actions(
    rules: GroupRules, client_ip: str, now: float
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    if not rules.header_rules:
        return (), ()
    plan, removes = rules.header_plan
    sets = tuple(
        (
            name,
            value.replace("${CLIENT_IP}", client_ip)
            .replace("${GROUP_NAME}", rules.group_name)
            .replace("${TIMESTAMP_MS}", str(int(now * 1000)))
            .replace("${TIMESTAMP_S}", str(int(now)))
            if variables
            else value,
        )
        for name, value, variables in plan
    )
    return sets, removes


# -- answers ------------------------------------------------------------------------------------------------------
def rewrite_answer(rules: GroupRules, out: Outbound, body: bytes) -> bytes:
    """A successful answer of kind ``out.answer_kind`` rewritten: model lists get the redirect sources as entries
    (copied from their target's entry, with the alias as name; first page only), and only those in strict mode;
    a redirected model's info names the alias. ``body`` itself when it is not what was expected."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(doc, dict):
        return body
    if out.answer_kind == "model_info":
        name_field = "id" if "id" in doc and "name" not in doc else "name"
        value = doc.get(name_field)
        if not isinstance(value, str):
            return body
        doc[name_field] = f"models/{out.requested_model}" if value.startswith("models/") else out.requested_model
    else:
        openai = out.answer_kind == "openai_list"
        list_field, name_field = ("data", "id") if openai else ("models", "name")
        entries = doc.get(list_field)
        if not isinstance(entries, list):
            return body
        doc[list_field] = _merged_list(rules, entries, name_field, openai, out.first_page)
        if rules.strict:
            doc.pop("nextPageToken", None)
            if openai:
                doc["has_more"] = False
    return _dump(doc)


def _merged_list(rules: GroupRules, entries: list[Any], name_field: str, openai: bool, first_page: bool) -> list[Any]:
    def bare(entry: Any) -> str:
        name = entry.get(name_field) if isinstance(entry, dict) else None
        return name.removeprefix("models/") if isinstance(name, str) else ""

    if not first_page:
        return [] if rules.strict else entries
    by_name = {bare(e): e for e in entries if bare(e)}
    aliases: list[Any] = []
    for source, target in rules.redirects.items():
        found = by_name.get(target)
        if isinstance(found, dict):
            entry = dict(found)
            prefixed = str(found.get(name_field, "")).startswith("models/")
        else:
            entry = {"object": "model", "owned_by": "gptload"} if openai else {}
            prefixed = not openai
        entry[name_field] = f"models/{source}" if prefixed else source
        if not openai:
            entry["displayName"] = source
        aliases.append(entry)
    if rules.strict:
        return aliases
    return aliases + [e for e in entries if bare(e) not in rules.redirects]


# -- validation of the admin fields (ValueError with a message for the field) ----------------------------------
def check_redirects(raw: Any) -> dict[str, str]:
    """``{"from": "to", ...}``: model names (an optional ``models/`` prefix is dropped), at most MAX_REDIRECTS."""
    if not isinstance(raw, dict):
        raise ValueError('must be an object {"requested-model": "upstream-model"}')
    if len(raw) > MAX_REDIRECTS:
        raise ValueError(f"at most {MAX_REDIRECTS} rules")
    out: dict[str, str] = {}
    for source, target in raw.items():
        if not isinstance(target, str):
            raise ValueError(f"{str(source)[:80]!r}: the target must be a model name")
        clean_source, clean_target = source.strip().removeprefix("models/"), target.strip().removeprefix("models/")
        for name in (clean_source, clean_target):
            if not _MODEL_NAME.fullmatch(name):
                raise ValueError(f"{name[:80]!r} is not a model name (letters, digits, . _ @ + -)")
        if clean_source in out:
            raise ValueError(f"{clean_source!r} appears twice")
        out[clean_source] = clean_target
    return out


def check_strict(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ValueError("must be true or false")
    return raw


def check_overrides(raw: Any) -> dict[str, Any]:
    """A JSON object of at most MAX_OVERRIDES_BYTES, nested at most MAX_OVERRIDES_DEPTH levels, without ``model``
    (redirects say which model goes upstream) or ``stream`` (the client chooses the answer's shape)."""
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object")
    if "model" in raw:
        raise ValueError("cannot set 'model': use model_redirect_rules")
    if "stream" in raw:
        raise ValueError("cannot set 'stream': the client chooses whether its answer is streamed")
    if _depth(raw) > MAX_OVERRIDES_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_OVERRIDES_DEPTH} levels")
    if len(json.dumps(raw)) > MAX_OVERRIDES_BYTES:
        raise ValueError(f"is larger than {MAX_OVERRIDES_BYTES} bytes")
    return raw


def check_header_rules(raw: Any) -> list[dict[str, str]]:
    """``[{"key", "value", "action": "set" | "remove"}]``: at most MAX_HEADER_RULES; header names as RFC 9110
    tokens, never one of FORBIDDEN_HEADERS; values in Latin-1 without control characters, using only VARIABLES."""
    if not isinstance(raw, list):
        raise ValueError('must be a list of {"key", "value", "action": "set" | "remove"}')
    if len(raw) > MAX_HEADER_RULES:
        raise ValueError(f"at most {MAX_HEADER_RULES} rules")
    out: list[dict[str, str]] = []
    for number, rule in enumerate(raw, start=1):
        where = f"rule {number}"
        if not isinstance(rule, dict) or set(rule) - {"key", "value", "action"}:
            raise ValueError(f'{where}: must be {{"key", "value", "action"}}')
        key, value, action = rule.get("key"), rule.get("value", ""), rule.get("action", "set")
        if not isinstance(key, str) or not _HEADER_NAME.fullmatch(key.strip()):
            raise ValueError(f"{where}: key must be a header name")
        key = key.strip()
        if key.lower() in FORBIDDEN_HEADERS:
            raise ValueError(f"{where}: {key} is managed by gptload and cannot be set or removed")
        if action not in ("set", "remove"):
            raise ValueError(f"{where}: action must be 'set' or 'remove'")
        if not isinstance(value, str) or len(value) > 2048 or not all(_header_char(c) for c in value):
            raise ValueError(
                f"{where}: value must be text of at most 2048 characters, without control characters, "
                "in Latin-1 (HTTP headers carry nothing else)"
            )
        unknown = [v for v in _VARIABLE.findall(value) if v not in VARIABLES]
        if unknown:
            raise ValueError(f"{where}: unknown variable {unknown[0][:40]} (known: {', '.join(VARIABLES)})")
        out.append({"key": key, "value": value if action == "set" else "", "action": action})
    return out


def _header_char(c: str) -> bool:
    """May ``c`` appear in a header value? Visible ASCII, space, and Latin-1's printable upper half (obs-text): the
    transport encodes header values as Latin-1, so anything else would fail every request of the group."""
    return 0x20 <= ord(c) <= 0x7E or 0xA0 <= ord(c) <= 0xFF


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0
