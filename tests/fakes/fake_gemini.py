"""A faithful fake of the Google Gemini API (generativelanguage.googleapis.com) on a real loopback socket.

It speaks plain HTTP/1.1 (keep-alive, chunked streaming) on 127.0.0.1 and mimics what the real service does
for the calls gptload proxies: models, generateContent, streamGenerateContent (SSE and JSON-array forms),
countTokens, embedContent, batchEmbedContents, resumable file upload and files CRUD (with per-project
ownership), and the OpenAI-compatible layer under /v1beta/openai/. Errors use Google's real bodies
(see tests/fakes/gemini_errors.json); ``errors.*`` builds them for scripting.

Intended pytest fixture (to be put in tests/conftest.py by whoever owns it)::

    import pytest
    from tests.fakes.fake_gemini import FakeGemini

    @pytest.fixture
    def fake_gemini():
        with FakeGemini() as fake:        # starts on 127.0.0.1:<random port>
            yield fake                    # fake.url == "http://127.0.0.1:PORT"

    # a session-wide server is also fine; call fake.reset() between tests:
    @pytest.fixture(scope="session")
    def fake_gemini_session():
        with FakeGemini() as fake:
            yield fake

    @pytest.fixture
    def fake_gemini_clean(fake_gemini_session):
        fake_gemini_session.reset()
        return fake_gemini_session

Typical use in a test::

    k1, k2 = fake.keys[:2]                      # 5 valid AIza... keys by default (fake.valid_keys is a set)
    fake.script(k1, [errors.quota_per_minute("gemini-2.5-flash"), Reply(200, {...})])
    fake.set_behavior(k2, errors.suspended())   # k2 is suspended for good (set_behavior(k2, None) clears)
    fake.stream_chunks, fake.stream_interval = 5, 0.05
    ... drive the proxy ...
    [r.key for r in fake.requests]              # which real keys reached "Google", in order
    fake.requests[-1].headers["x-goog-api-key"] # headers are case-insensitive
    fake.requests[-1].chunk_times               # monotonic send time of each streamed chunk

No pytest import here: everything is usable from plain scripts too.
"""

from __future__ import annotations

import base64
import copy
import gzip as _gzip
import hashlib
import http.server
import json
import re
import secrets
import socket
import string
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from tests.fakes.serving import Served

__all__ = ["MODELS", "FakeGemini", "RecordedRequest", "Reply", "errors", "make_key"]

SERVICE = "generativelanguage.googleapis.com"
API_VERSIONS = ("v1beta", "v1", "v1alpha")


def make_key(i: int) -> str:
    """A deterministic, well-formed Gemini API key: 'AIza' + 35 chars of [0-9A-Za-z_-]."""
    alphabet = string.ascii_letters + string.digits + "_-"
    h = hashlib.sha256(f"fake-gemini-key-{i}".encode()).digest() * 2
    return "AIza" + "".join(alphabet[b % len(alphabet)] for b in h[:35])


# ----------------------------------------------------------------------------------------------------------
# Replies and error bodies
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """A scripted answer.

    status/body/headers: what to send (body: dict/list -> pretty JSON like Google, str/bytes -> raw).
    delay: seconds to wait before answering (the request is recorded first).
    normal=True: do the normal behaviour (optionally after ``delay``) instead of sending ``body``.
    reset_after_chunks=N: normal behaviour, but for a streamed answer the connection is aborted after N chunks
        have been sent (N=0: right after the response headers); how: FakeGemini.abort_mode ("close" | "rst").
    drop=True: close the connection without any response at all.
    """

    status: int = 200
    body: Any = None
    headers: dict | None = None
    delay: float = 0.0
    normal: bool = False
    reset_after_chunks: int | None = None
    drop: bool = False

    @classmethod
    def ok(cls, delay: float = 0.0) -> Reply:
        """Normal behaviour (useful to put a delay into a script, or as a script placeholder)."""
        return cls(normal=True, delay=delay)

    @classmethod
    def stream_reset(cls, after_chunks: int) -> Reply:
        return cls(normal=True, reset_after_chunks=after_chunks)

    @classmethod
    def hang_up(cls, delay: float = 0.0) -> Reply:
        return cls(drop=True, delay=delay)


def _err(code: int, status: str, message: str, details: list | None = None) -> dict:
    e: dict = {"code": code, "message": message, "status": status}
    if details is not None:
        e["details"] = details
    return {"error": e}


def _error_info(reason: str, **metadata: str) -> dict:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": SERVICE, **metadata},
    }


def _quota(model: str, quota_id: str, value: str, retry_delay: str | None) -> Reply:
    details: list = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": f"{SERVICE}/generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": value,
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]
    if retry_delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    return Reply(
        429,
        _err(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            details,
        ),
    )


class errors:
    """Builders of Google's real error replies (bodies as in tests/fakes/gemini_errors.json)."""

    @staticmethod
    def invalid_key() -> Reply:
        msg = "API key not valid. Please pass a valid API key."
        return Reply(
            400,
            _err(
                400,
                "INVALID_ARGUMENT",
                msg,
                [
                    _error_info("API_KEY_INVALID"),
                    {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": msg},
                ],
            ),
        )

    @staticmethod
    def key_not_found() -> Reply:
        return Reply(
            400,
            _err(
                400,
                "INVALID_ARGUMENT",
                "API Key not found. Please pass a valid API key.",
                [_error_info("API_KEY_INVALID")],
            ),
        )

    @staticmethod
    def suspended(project_number: str = "123456789") -> Reply:
        return Reply(
            403,
            _err(
                403,
                "PERMISSION_DENIED",
                "Permission denied: Consumer 'api_key:AIza...' has been suspended.",
                [_error_info("CONSUMER_SUSPENDED", consumer=f"projects/{project_number}")],
            ),
        )

    @staticmethod
    def service_disabled(project_number: str = "123456789") -> Reply:
        return Reply(
            403,
            _err(
                403,
                "PERMISSION_DENIED",
                f"Generative Language API has not been used in project {project_number} before or it is disabled.",
                [_error_info("SERVICE_DISABLED", consumer=f"projects/{project_number}")],
            ),
        )

    @staticmethod
    def quota_per_minute(model: str = "gemini-2.5-flash", retry_delay: str | None = "26s") -> Reply:
        return _quota(model, "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10", retry_delay)

    @staticmethod
    def quota_input_tokens_per_minute(model: str = "gemini-2.5-pro", retry_delay: str | None = "41s") -> Reply:
        return _quota(model, "GenerateContentInputTokensPerModelPerMinute-FreeTier", "250000", retry_delay)

    @staticmethod
    def quota_per_day(model: str = "gemini-2.5-flash", retry_delay: str | None = "13s") -> Reply:
        return _quota(model, "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "250", retry_delay)

    @staticmethod
    def bare_429() -> Reply:
        return Reply(429, _err(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."))

    @staticmethod
    def overloaded() -> Reply:
        return Reply(503, _err(503, "UNAVAILABLE", "The model is overloaded. Please try again later."))

    @staticmethod
    def internal() -> Reply:
        return Reply(
            500,
            _err(
                500,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting",
            ),
        )

    @staticmethod
    def deadline() -> Reply:
        return Reply(504, _err(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."))

    @staticmethod
    def bad_request(
        message: str = 'Invalid JSON payload received. Unknown name "content": Cannot find field.',
    ) -> Reply:
        return Reply(400, _err(400, "INVALID_ARGUMENT", message))

    @staticmethod
    def not_found_model(model: str = "gemini-9", version: str = "v1beta", method: str = "generateContent") -> Reply:
        return Reply(
            404,
            _err(
                404,
                "NOT_FOUND",
                f"models/{model} is not found for API version {version}, or is not supported for {method}.",
            ),
        )

    @staticmethod
    def region() -> Reply:
        return Reply(400, _err(400, "FAILED_PRECONDITION", "User location is not supported for the API use."))

    @staticmethod
    def other_project_file(file_id: str = "abc123") -> Reply:
        file_id = file_id.split("/")[-1]
        return Reply(
            403,
            _err(
                403,
                "PERMISSION_DENIED",
                f"You do not have permission to access the File {file_id} or it may not exist.",
            ),
        )

    @staticmethod
    def missing_key() -> Reply:
        return Reply(
            403,
            _err(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity)."
                " Please use API Key or other form of API consumer identity to call this API.",
            ),
        )

    @staticmethod
    def method_not_found() -> Reply:
        return Reply(404, _err(404, "NOT_FOUND", "Method not found."))


# ----------------------------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------------------------


class CIDict(dict):
    """Case-insensitive header mapping (keys stored lower-case; original pairs kept in .items_raw)."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()):
        super().__init__()
        self.items_raw: list[tuple[str, str]] = []
        for k, v in pairs:
            self.items_raw.append((k, v))
            lk = k.lower()
            super().__setitem__(lk, v if lk not in self else f"{dict.__getitem__(self, lk)}, {v}")

    def __getitem__(self, k: str) -> str:
        return super().__getitem__(k.lower())

    def __contains__(self, k: object) -> bool:
        return isinstance(k, str) and super().__contains__(k.lower())

    def get(self, k: str, default: Any = None) -> Any:
        return super().get(k.lower(), default)

    def get_all(self, k: str) -> list[str]:
        return [v for kk, v in self.items_raw if kk.lower() == k.lower()]


@dataclass
class RecordedRequest:
    method: str
    raw_path: str  # path + query exactly as received
    path: str  # path only
    query: dict  # name -> [values]
    query_list: list  # [(name, value)] in order
    headers: CIDict
    body: bytes
    key: str | None  # API key presented (None for key-less upload chunk requests)
    key_source: str | None  # "header" | "query" | "bearer" | None
    received_at: float  # time.monotonic()
    received_wall: float  # time.time()
    client_address: tuple = ()
    effective_key: str | None = None  # for upload chunks: the key that started the session
    status: int | None = None  # status the fake answered with (None if dropped)
    chunk_times: list = field(default_factory=list)  # time.monotonic() just before each chunk is written
    chunks: list = field(default_factory=list)  # bytes of each streamed chunk (payload, pre-gzip)
    completed_at: float | None = None
    scripted: bool = False

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def model(self) -> str | None:
        m = re.search(r"/models/([^/:]+)", self.path)
        if m:
            return m.group(1)
        if "/openai/" in self.path and self.body:
            try:
                return str(self.json().get("model", "")).removeprefix("models/") or None
            except Exception:
                return None
        return None

    @property
    def api_version(self) -> str | None:
        m = re.match(r"^/(?:upload/)?(v1beta|v1alpha|v1)(/|$)", self.path)
        return m.group(1) if m else None


# ----------------------------------------------------------------------------------------------------------
# Catalogue
# ----------------------------------------------------------------------------------------------------------

_GEN_METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]


def _model(
    name: str,
    display: str,
    inp: int,
    out: int,
    methods: list,
    thinking: bool = False,
    temperature: float | None = 1.0,
    top_k: int | None = 64,
    version: str = "001",
) -> dict:
    m = {
        "name": f"models/{name}",
        "version": version,
        "displayName": display,
        "description": f"{display} (fake)",
        "inputTokenLimit": inp,
        "outputTokenLimit": out,
        "supportedGenerationMethods": methods,
    }
    if temperature is not None:
        m.update({"temperature": temperature, "topP": 0.95, "maxTemperature": 2})
        if top_k is not None:
            m["topK"] = top_k
    if thinking:
        m["thinking"] = True
    return m


MODELS: list[dict] = [
    _model("gemini-2.5-flash", "Gemini 2.5 Flash", 1048576, 65536, _GEN_METHODS, thinking=True),
    _model("gemini-2.5-pro", "Gemini 2.5 Pro", 1048576, 65536, _GEN_METHODS, thinking=True),
    _model("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", 1048576, 65536, _GEN_METHODS, thinking=True),
    _model("gemini-2.0-flash", "Gemini 2.0 Flash", 1048576, 8192, _GEN_METHODS, top_k=40),
    _model("gemini-2.0-flash-lite", "Gemini 2.0 Flash-Lite", 1048576, 8192, _GEN_METHODS, top_k=40),
    _model("gemini-1.5-flash", "Gemini 1.5 Flash", 1000000, 8192, _GEN_METHODS, top_k=40),
    _model("gemini-1.5-pro", "Gemini 1.5 Pro", 2000000, 8192, _GEN_METHODS, top_k=40),
    _model("text-embedding-004", "Text Embedding 004", 2048, 1, ["embedContent"], temperature=None, version="004"),
    _model(
        "gemini-embedding-001",
        "Gemini Embedding 001",
        2048,
        1,
        ["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"],
        temperature=None,
    ),
    _model("embedding-001", "Embedding 001", 2048, 1, ["embedContent"], temperature=None),
]

_EMBED_DIMS = {"text-embedding-004": 768, "embedding-001": 768, "gemini-embedding-001": 3072}

_GENERATE_FIELDS = {
    "contents",
    "tools",
    "toolConfig",
    "safetySettings",
    "systemInstruction",
    "generationConfig",
    "cachedContent",
    "model",
    "labels",
    "tool_config",
    "safety_settings",
    "system_instruction",
    "generation_config",
    "cached_content",
}

# enum values used when the client asks for `$alt=json;enum-encoding=int` (legacy SDK)
_ENUM_INT = {
    "finishReason": {"STOP": 1, "MAX_TOKENS": 2, "SAFETY": 3},
    "modality": {"TEXT": 1, "IMAGE": 2, "VIDEO": 3, "AUDIO": 4, "DOCUMENT": 5},
    "state": {"PROCESSING": 1, "ACTIVE": 2, "FAILED": 10},
    "source": {"UPLOADED": 1, "GENERATED": 2},
}


def _ints_for_enums(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in _ENUM_INT and isinstance(v, str) and v in _ENUM_INT[k]:
                out[k] = _ENUM_INT[k][v]
            else:
                out[k] = _ints_for_enums(v)
        return out
    if isinstance(obj, list):
        return [_ints_for_enums(x) for x in obj]
    return obj


def _count_tokens_text(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _random_id(n: int = 12) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _get(d: dict, camel: str) -> Any:
    """Proto-JSON accepts lowerCamel and snake_case field names."""
    if camel in d:
        return d[camel]
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
    return d.get(snake)


def _texts_of_contents(contents: Any) -> list[str]:
    texts: list[str] = []
    if isinstance(contents, dict):
        contents = [contents]
    for c in contents or []:
        if not isinstance(c, dict):
            continue
        for p in c.get("parts") or []:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                texts.append(p["text"])
    return texts


def _first_user_text(contents: Any) -> str:
    if isinstance(contents, dict):
        contents = [contents]
    for c in contents or []:
        if isinstance(c, dict) and c.get("role", "user") == "user":
            t = _texts_of_contents([c])
            if t:
                return t[0]
    t = _texts_of_contents(contents)
    return t[0] if t else ""


def _file_refs(obj: Any) -> list[str]:
    """file ids referenced by fileData.fileUri / file_data.file_uri anywhere in a request body."""
    found: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            fd = _get(o, "fileData")
            if isinstance(fd, dict):
                uri = _get(fd, "fileUri") or ""
                m = re.search(r"files/([a-z0-9-]+)", str(uri))
                if m:
                    found.append(m.group(1))
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(obj)
    return found


def _split_text(text: str, n: int) -> list[str]:
    if n <= 1:
        return [text]
    if len(text) < n:
        text = text + " " + "." * (n - len(text))
    size, extra = divmod(len(text), n)
    out, pos = [], 0
    for i in range(n):
        ln = size + (1 if i < extra else 0)
        out.append(text[pos : pos + ln])
        pos += ln
    return out


def _embedding(text: str, dims: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    vals = []
    i = 0
    while len(vals) < dims:
        block = hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
        vals.extend(round((b - 127.5) / 1275.0, 6) for b in block)
        i += 1
    return vals[:dims]


# ----------------------------------------------------------------------------------------------------------
# Server
# ----------------------------------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeGemini


class _Dropped(Exception):
    pass


class FakeGemini(Served):
    """Fake Gemini upstream. See module docstring."""

    def __init__(
        self, valid_keys: Iterable[str] | None = None, n_keys: int = 5, host: str = "127.0.0.1", port: int = 0
    ):
        self.keys: list[str] = list(valid_keys) if valid_keys is not None else [make_key(i) for i in range(n_keys)]
        self.valid_keys: set[str] = set(self.keys)
        self.host, self._port = host, port
        self.models: list[dict] = copy.deepcopy(MODELS)
        # streaming knobs
        self.stream_chunks: int = 3
        self.stream_interval: float = 0.0  # seconds between chunks
        self.stream_first_delay: float = 0.0  # seconds before the first chunk
        # called with i before chunk i (i >= 1) is written: a test can hold chunk i back until its client has
        # received chunk i-1, which proves chunks are relayed as they come without measuring time
        self.stream_gate: Callable[[int], None] | None = None
        self.reset_mid_stream_after: int | None = None  # abort the connection after N chunks (all streams)
        # how a connection is aborted (Reply.drop, reset_after_chunks, reset_mid_stream_after):
        #   "close": FIN without the final 0-chunk (client reliably reads what was sent, then sees a truncated body)
        #   "rst":   TCP RST (SO_LINGER 0) - like a real reset, but the client may lose bytes it had not read yet
        self.abort_mode: str = "close"
        self.usage_in_every_chunk: bool = True  # Google puts promptTokenCount/totalTokenCount in every chunk
        # other knobs
        self.gzip: bool = False  # gzip responses when the client sends Accept-Encoding: gzip
        self.openai_error_style: str = "list"  # "list": [{"error": {...}}] (what Google returns); "object"
        self.public_url: str | None = None  # base for X-Goog-Upload-URL and file uris (default self.url)
        self.file_state: str = "ACTIVE"  # state of freshly uploaded files
        self.response_delay: float = 0.0  # delay before every normal non-stream answer

        self._lock = threading.RLock()
        self.requests: list[RecordedRequest] = []
        self._scripts: list[tuple[str, str | None, list[Reply]]] = []  # (key or "*", path filter, replies)
        self._behaviors: dict[str, Reply | Callable[[RecordedRequest], Reply | None]] = {}
        self._projects: dict[str, str] = {}
        self.files: dict[str, dict] = {}  # id -> {"meta": {...}, "project": p, "key": k, "data": bytes}
        self.uploads: dict[str, dict] = {}  # upload_id -> session
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set = set()

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> FakeGemini:
        if self._server is not None:
            return self
        srv = _Server((self.host, self._port), _Handler)
        srv.fake = self
        return self._serve(srv, "fake-gemini")

    def stop(self) -> None:
        self._close()

    @property
    def base(self) -> str:
        return (self.public_url or self.url).rstrip("/")

    # -- configuration -------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget requests, scripts, behaviours, files and uploads; restore default knobs and keys."""
        with self._lock:
            self.requests.clear()
            self._scripts.clear()
            self._behaviors.clear()
            self._projects.clear()
            self.files.clear()
            self.uploads.clear()
            self.valid_keys = set(self.keys)
            self.models = copy.deepcopy(MODELS)
        self.stream_chunks, self.stream_interval, self.stream_first_delay = 3, 0.0, 0.0
        self.stream_gate = None
        self.reset_mid_stream_after = None
        self.abort_mode = "close"
        self.usage_in_every_chunk = True
        self.gzip = False
        self.openai_error_style = "list"
        self.public_url = None
        self.file_state = "ACTIVE"
        self.response_delay = 0.0

    def add_key(self, key: str | None = None) -> str:
        key = key or make_key(1000 + len(self.keys) + secrets.randbelow(10**6))
        with self._lock:
            if key not in self.keys:
                self.keys.append(key)
            self.valid_keys.add(key)
        return key

    def script(self, key: str, replies: Iterable[Reply], path_contains: str | None = None) -> None:
        """Queue replies for requests made with ``key`` ("*" = any key), consumed in order; afterwards the
        normal behaviour resumes. ``path_contains`` restricts which requests consume them (e.g. ":generate")."""
        with self._lock:
            self._scripts.append((key, path_contains, list(replies)))

    def pending_script(self, key: str) -> int:
        with self._lock:
            return sum(len(r) for k, _, r in self._scripts if k == key)

    def set_behavior(self, key: str, behavior: Reply | Callable[[RecordedRequest], Reply | None] | None) -> None:
        """Permanent behaviour of a key: a Reply (always), a callable(request) -> Reply|None (None = normal),
        or None to clear. Scripts of the key take precedence while they last."""
        with self._lock:
            if behavior is None:
                self._behaviors.pop(key, None)
            else:
                self._behaviors[key] = behavior

    def set_project(self, key: str, project: str) -> None:
        with self._lock:
            self._projects[key] = project

    def project_of(self, key: str | None) -> str | None:
        if key is None:
            return None
        with self._lock:
            return self._projects.get(key, f"project-of-{key}")

    # -- inspection ----------------------------------------------------------------------------------------
    def requests_for(self, key: str | None = None, path_contains: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            rs = list(self.requests)
        return [
            r
            for r in rs
            if (key is None or (r.effective_key or r.key) == key) and (path_contains is None or path_contains in r.path)
        ]

    def keys_used(self, path_contains: str | None = None) -> list[str | None]:
        return [r.effective_key or r.key for r in self.requests_for(path_contains=path_contains)]

    @property
    def last_request(self) -> RecordedRequest | None:
        with self._lock:
            return self.requests[-1] if self.requests else None

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.005)
        raise TimeoutError(f"fake got {len(self.requests)} requests, expected {n}")

    def file_owner(self, file_id: str) -> str | None:
        with self._lock:
            f = self.files.get(file_id.split("/")[-1])
            return f["key"] if f else None

    # -- internals -----------------------------------------------------------------------------------------
    def _take_scripted(self, req: RecordedRequest) -> Reply | None:
        with self._lock:
            for who in (req.key, "*"):
                for k, filt, replies in self._scripts:
                    if k == who and replies and (filt is None or filt in req.path):
                        return replies.pop(0)
            beh = self._behaviors.get(req.key) if req.key else None
        if beh is None:
            return None
        if isinstance(beh, Reply):
            return beh
        return beh(req)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and the client's delayed
    # ACK add ~40 ms to every answer, which would slow the suite and blur timing assertions.
    disable_nagle_algorithm = True
    server: _Server
    timeout = 60  # idle keep-alive connections are closed after this

    def log_message(self, format: str, *args: Any) -> None:  # silence
        pass

    def version_string(self) -> str:
        return "scaffolding on HTTPServer2"

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.fake._lock:
                self.fake._conns.discard(self.connection)

    @property
    def fake(self) -> FakeGemini:
        return self.server.fake

    # every method goes through one dispatcher
    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    # -- request parsing -----------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out += self.rfile.read(size)
                self.rfile.readline()
            return bytes(out)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        qlist = parse_qsl(parts.query, keep_blank_values=True)
        headers = CIDict(self.headers.items())
        key, source = None, None
        is_openai = "/openai/" in parts.path + "/"
        if is_openai:
            auth = headers.get("authorization") or ""
            if auth[:7].lower() == "bearer ":
                key, source = auth[7:].strip(), "bearer"
        if key is None and headers.get("x-goog-api-key"):
            key, source = headers["x-goog-api-key"].strip(), "header"
        if key is None:
            qkey = [v for k, v in qlist if k == "key"]
            if qkey:
                key, source = qkey[0], "query"
        req = RecordedRequest(
            method=self.command,
            raw_path=self.path,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            query_list=qlist,
            headers=headers,
            body=body,
            key=key,
            key_source=source,
            received_at=time.monotonic(),
            received_wall=time.time(),
            client_address=self.client_address,
        )
        with self.fake._lock:
            self.fake.requests.append(req)
        self.req = req
        self.is_openai = is_openai
        self.enum_int = any("enum-encoding=int" in v for k, v in qlist if k in ("$alt", "alt"))
        self.gz = self.fake.gzip and "gzip" in (headers.get("accept-encoding") or "")
        if (headers.get("connection") or "").lower() == "close":
            self.close_connection = True
        try:
            self._dispatch(req)
        except _Dropped:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            req.completed_at = time.monotonic()

    # -- response writing ----------------------------------------------------------------------------------
    def _google_headers(self) -> None:
        self.send_header("Vary", "Origin")
        self.send_header("Vary", "X-Origin")
        self.send_header("Vary", "Referer")
        self.send_header("X-XSS-Protection", "0")
        self.send_header("X-Frame-Options", "SAMEORIGIN")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Server-Timing", "gfet4t7; dur=12")

    def _send(
        self, status: int, body: Any = None, headers: dict | None = None, content_type: str | None = None
    ) -> None:
        if body is None:
            raw = b""
        elif isinstance(body, (bytes, bytearray)):
            raw = bytes(body)
        elif isinstance(body, str):
            raw = body.encode()
        else:
            if self.enum_int:
                body = _ints_for_enums(body)
            raw = json.dumps(body, indent=2, ensure_ascii=False).encode() + b"\n"
            content_type = content_type or "application/json; charset=UTF-8"
        self.req.status = status
        self.send_response(status)
        hdrs = dict(headers or {})
        if content_type and not any(k.lower() == "content-type" for k in hdrs):
            self.send_header("Content-Type", content_type)
        self._google_headers()
        for k, v in hdrs.items():
            self.send_header(k, v)
        if self.gz and raw:
            raw = _gzip.compress(raw)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(raw)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and raw:
            self.wfile.write(raw)
        self.wfile.flush()

    def _send_reply(self, reply: Reply) -> None:
        body = reply.body
        if self.is_openai and isinstance(body, dict) and "error" in body and self.fake.openai_error_style == "list":
            body = [body]
        self._send(reply.status, body, reply.headers)

    def _error(self, reply: Reply) -> None:
        self._send_reply(reply)

    def _rst(self) -> None:
        """Abort the connection mid-response (see FakeGemini.abort_mode)."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            if self.fake.abort_mode == "rst":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_WR)
            self.connection.close()
        except OSError:
            pass
        self.req.status = self.req.status or 0
        raise _Dropped()

    def _stream(
        self, pieces: list[bytes], content_type: str, reset_after: int | None, first_delay: float, interval: float
    ) -> None:
        self.req.status = 200
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Disposition", "attachment")
        self._google_headers()
        self.send_header("Transfer-Encoding", "chunked")
        comp = None
        if self.gz:
            self.send_header("Content-Encoding", "gzip")
            comp = zlib.compressobj(6, zlib.DEFLATED, 31)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        if reset_after == 0:
            self._rst()
        for i, piece in enumerate(pieces):
            wait = first_delay if i == 0 else interval
            if wait > 0:
                time.sleep(wait)
            gate = self.fake.stream_gate
            if gate is not None and i > 0:
                gate(i)
            data = comp.compress(piece) + comp.flush(zlib.Z_SYNC_FLUSH) if comp else piece
            # recorded just before the write, so a client's receive time is always >= this
            self.req.chunk_times.append(time.monotonic())
            self.req.chunks.append(piece)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            if reset_after is not None and i + 1 >= reset_after:
                self._rst()
        if comp:
            tail = comp.flush()
            if tail:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(tail), tail))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- routing -------------------------------------------------------------------------------------------
    def _dispatch(self, req: RecordedRequest) -> None:
        fake = self.fake
        path = req.path
        m_up = re.match(r"^/upload/(v1beta|v1alpha|v1)/files$", path)
        upload_chunk = bool(m_up and "upload_id" in req.query)
        is_api = bool(re.match(r"^/(upload/)?(v1beta|v1alpha|v1)(/|$)", path))
        if not is_api:
            self._send(404, _HTML_404, content_type="text/html; charset=UTF-8")
            return
        if upload_chunk:
            self._upload_chunk(req)
            return
        if req.key is None or req.key == "":
            self._error(errors.missing_key())
            return
        reply = fake._take_scripted(req)
        reset_after = fake.reset_mid_stream_after
        if reply is not None:
            req.scripted = True
            if reply.delay:
                time.sleep(reply.delay)
            if reply.drop:
                self._rst()
            if not reply.normal:
                self._send_reply(reply)
                return
            if reply.reset_after_chunks is not None:
                reset_after = reply.reset_after_chunks
        if req.key not in fake.valid_keys:
            self._error(errors.invalid_key())
            return
        self.reset_after = reset_after
        if self.is_openai:
            self._openai(req)
            return
        if m_up:
            if req.method != "POST":
                self._error(errors.method_not_found())
                return
            self._upload_start(req, m_up.group(1))
            return
        m = re.match(r"^/(v1beta|v1alpha|v1)/(.*)$", path)
        assert m
        version, rest = m.group(1), m.group(2)
        if not self.is_stream_path(rest) and fake.response_delay:
            time.sleep(fake.response_delay)
        if rest == "models" and req.method == "GET":
            self._list_models(req)
            return
        mm = re.match(r"^(?:models|tunedModels)/([^/:]+)(?::([A-Za-z]+))?$", rest)
        if mm:
            model, action = mm.group(1), mm.group(2)
            self._model_call(req, version, model, action)
            return
        if rest == "files" and req.method == "GET":
            self._list_files(req)
            return
        mf = re.match(r"^files/([^/:]+)(?::download)?$", rest)
        if mf and req.method in ("GET", "DELETE"):
            self._file_get_delete(req, mf.group(1))
            return
        self._error(errors.method_not_found())

    @staticmethod
    def is_stream_path(rest: str) -> bool:
        return rest.endswith(":streamGenerateContent")

    def _json_body(self, req: RecordedRequest) -> dict | None:
        try:
            obj = json.loads(req.body or b"{}")
        except ValueError as e:
            self._error(errors.bad_request(f"Invalid JSON payload received. {e}"))
            return None
        if not isinstance(obj, dict):
            self._error(
                errors.bad_request('Invalid JSON payload received. Unknown name "": Root element must be a message.')
            )
            return None
        return obj

    def _find_model(self, name: str) -> dict | None:
        for m in self.fake.models:
            if m["name"] == f"models/{name}":
                return m
        return None

    # -- models --------------------------------------------------------------------------------------------
    def _list_models(self, req: RecordedRequest) -> None:
        size = int((req.query.get("pageSize") or req.query.get("page_size") or ["50"])[0] or 50)
        start = int((req.query.get("pageToken") or req.query.get("page_token") or ["0"])[0] or 0)
        models = self.fake.models[start : start + size]
        out: dict = {"models": models}
        if start + size < len(self.fake.models):
            out["nextPageToken"] = str(start + size)
        self._send(200, out)

    def _model_call(self, req: RecordedRequest, version: str, model: str, action: str | None) -> None:
        info = self._find_model(model)
        if action is None:
            if req.method != "GET":
                self._error(errors.method_not_found())
            elif info is None:
                self._error(errors.not_found_model(model, version, "get"))
            else:
                self._send(200, info)
            return
        if req.method != "POST":
            self._error(errors.method_not_found())
            return
        handlers = {
            "generateContent": self._generate,
            "streamGenerateContent": self._generate,
            "countTokens": self._count_tokens,
            "embedContent": self._embed,
            "batchEmbedContents": self._batch_embed,
        }
        h = handlers.get(action)
        if h is None:
            self._error(errors.method_not_found())
            return
        if (
            info is None
            or action not in info["supportedGenerationMethods"] + ["streamGenerateContent"]
            or (action == "streamGenerateContent" and "generateContent" not in info["supportedGenerationMethods"])
        ):
            if not (
                action == "batchEmbedContents"
                and info is not None
                and "embedContent" in info["supportedGenerationMethods"]
            ):
                self._error(errors.not_found_model(model, version, action))
                return
        body = self._json_body(req)
        if body is None:
            return
        h(req, version, model, body, action)

    def _check_files(self, req: RecordedRequest, body: dict) -> bool:
        fake = self.fake
        project = fake.project_of(req.key)
        for fid in _file_refs(body):
            with fake._lock:
                f = fake.files.get(fid)
            if f is None or f["project"] != project:
                self._error(errors.other_project_file(fid))
                return False
        return True

    def _prompt_tokens(self, body: dict) -> int:
        contents = _get(body, "contents") or []
        n = sum(_count_tokens_text(t) for t in _texts_of_contents(contents))
        si = _get(body, "systemInstruction")
        if si:
            n += sum(_count_tokens_text(t) for t in _texts_of_contents(si))
        for fid in _file_refs(contents):
            f = self.fake.files.get(fid)
            if f:
                n += max(1, len(f["data"]) // 4)
        return max(n, 1)

    def _generate(self, req: RecordedRequest, version: str, model: str, body: dict, action: str) -> None:
        unknown = [k for k in body if k not in _GENERATE_FIELDS]
        if unknown:
            self._error(
                errors.bad_request(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
            )
            return
        contents = _get(body, "contents")
        if not contents:
            self._error(errors.bad_request("* GenerateContentRequest.contents: contents is not specified\n"))
            return
        if not self._check_files(req, body):
            return
        prompt = self._prompt_tokens(body)
        text = "echo: " + _first_user_text(contents)
        response_id = _random_id(22)
        if action == "generateContent":
            out_tokens = _count_tokens_text(text)
            self._send(
                200,
                {
                    "candidates": [
                        {
                            "content": {"parts": [{"text": text}], "role": "model"},
                            "finishReason": "STOP",
                            "index": 0,
                        }
                    ],
                    "usageMetadata": {
                        "promptTokenCount": prompt,
                        "candidatesTokenCount": out_tokens,
                        "totalTokenCount": prompt + out_tokens,
                        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
                    },
                    "modelVersion": model,
                    "responseId": response_id,
                },
            )
            return
        fake = self.fake
        n = max(1, int(fake.stream_chunks))
        texts = _split_text(text, n)
        objs = []
        for i, t in enumerate(texts):
            last = i == n - 1
            cand: dict = {"content": {"parts": [{"text": t}], "role": "model"}}
            if last:
                cand["finishReason"] = "STOP"
            cand["index"] = 0
            o: dict = {"candidates": [cand]}
            if last:
                out_tokens = _count_tokens_text("".join(texts))
                o["usageMetadata"] = {
                    "promptTokenCount": prompt,
                    "candidatesTokenCount": out_tokens,
                    "totalTokenCount": prompt + out_tokens,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
                }
            elif fake.usage_in_every_chunk:
                o["usageMetadata"] = {
                    "promptTokenCount": prompt,
                    "totalTokenCount": prompt,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
                }
            o["modelVersion"] = model
            o["responseId"] = response_id
            if self.enum_int:
                o = _ints_for_enums(o)
            objs.append(o)
        sse = any(k in ("alt", "$alt") and v.split(";")[0] == "sse" for k, v in req.query_list)
        if sse:
            pieces = [
                b"data: " + json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode() + b"\r\n\r\n"
                for o in objs
            ]
            ctype = "text/event-stream"
        else:
            pieces = []
            for i, o in enumerate(objs):
                js = json.dumps(o, indent=2, ensure_ascii=False).encode()
                piece = (b"[" if i == 0 else b",\r\n") + js
                if i == len(objs) - 1:
                    piece += b"\n]"
                pieces.append(piece)
            ctype = "application/json; charset=UTF-8"
        self._stream(pieces, ctype, self.reset_after, fake.stream_first_delay, fake.stream_interval)

    def _count_tokens(self, req: RecordedRequest, version: str, model: str, body: dict, action: str) -> None:
        gcr = _get(body, "generateContentRequest")
        src = gcr if isinstance(gcr, dict) else body
        if not _get(src, "contents") and not _get(body, "contents"):
            self._error(errors.bad_request("* CountTokensRequest.contents: contents is not specified\n"))
            return
        if not self._check_files(req, body):
            return
        n = self._prompt_tokens(src)
        self._send(200, {"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]})

    def _embed_values(self, model: str, content: Any, body: dict) -> list[float]:
        dims = _get(body, "outputDimensionality") or _EMBED_DIMS.get(model, 768)
        text = "\n".join(_texts_of_contents(content))
        return _embedding(text, int(dims))

    def _embed(self, req: RecordedRequest, version: str, model: str, body: dict, action: str) -> None:
        content = _get(body, "content")
        if not content:
            self._error(errors.bad_request("* EmbedContentRequest.content: content is not specified\n"))
            return
        self._send(200, {"embedding": {"values": self._embed_values(model, content, body)}})

    def _batch_embed(self, req: RecordedRequest, version: str, model: str, body: dict, action: str) -> None:
        reqs = _get(body, "requests")
        if not reqs:
            self._error(errors.bad_request("* BatchEmbedContentsRequest.requests: requests is not specified\n"))
            return
        out = []
        for i, r in enumerate(reqs):
            rm = str(r.get("model", "")).removeprefix("models/")
            if rm != model:
                self._error(
                    errors.bad_request(
                        f"* BatchEmbedContentsRequest.requests[{i}].model: model must match models/{model}\n"
                    )
                )
                return
            out.append({"values": self._embed_values(model, _get(r, "content"), r)})
        self._send(200, {"embeddings": out})

    # -- files ---------------------------------------------------------------------------------------------
    def _upload_start(self, req: RecordedRequest, version: str) -> None:
        h = req.headers
        if (h.get("x-goog-upload-protocol") or "").lower() != "resumable" or (
            h.get("x-goog-upload-command") or ""
        ).lower() != "start":
            # Google also supports multipart/media uploads; the fake only does resumable ones.
            self._error(errors.bad_request("Upload protocol not supported by the fake (use resumable)."))
            return
        try:
            meta = json.loads(req.body or b"{}") or {}
        except ValueError:
            self._error(errors.bad_request("Invalid JSON payload received."))
            return
        f = meta.get("file") or {}
        upload_id = "ABgVH" + secrets.token_urlsafe(60)
        size = h.get("x-goog-upload-header-content-length")
        session = {
            "key": req.key,
            "project": self.fake.project_of(req.key),
            "version": version,
            "size": int(size) if size and size.isdigit() else None,
            "mime": h.get("x-goog-upload-header-content-type") or _get(f, "mimeType") or "application/octet-stream",
            "display_name": _get(f, "displayName"),
            "name": f.get("name"),
            "data": bytearray(),
            "done": False,
        }
        with self.fake._lock:
            self.fake.uploads[upload_id] = session
        url = f"{self.fake.base}/upload/{version}/files?upload_id={upload_id}&upload_protocol=resumable"
        if req.key_source == "query":
            url += f"&key={req.key}"
        self._send(
            200,
            None,
            {
                "X-Goog-Upload-Status": "active",
                "X-Goog-Upload-URL": url,
                "X-Goog-Upload-Control-URL": url,
                "X-Goog-Upload-Chunk-Granularity": "8388608",
                "X-GUploader-UploadID": upload_id,
            },
            content_type="text/plain; charset=utf-8",
        )

    def _upload_chunk(self, req: RecordedRequest) -> None:
        fake = self.fake
        upload_id = req.query["upload_id"][0]
        with fake._lock:
            s = fake.uploads.get(upload_id)
        if s is None:
            self._send(404, "Not Found", {"X-Goog-Upload-Status": "final"}, content_type="text/plain; charset=utf-8")
            return
        req.effective_key = s["key"]
        if req.method != "POST" and req.method != "PUT":
            self._error(errors.method_not_found())
            return
        cmds = [c.strip().lower() for c in (req.headers.get("x-goog-upload-command") or "").split(",") if c.strip()]
        if s["done"]:
            self._send(400, None, {"X-Goog-Upload-Status": "final"})
            return
        if "query" in cmds:
            self._send(
                200, None, {"X-Goog-Upload-Status": "active", "X-Goog-Upload-Size-Received": str(len(s["data"]))}
            )
            return
        if "upload" in cmds:
            off = req.headers.get("x-goog-upload-offset")
            if off is not None and int(off) != len(s["data"]):
                self._send(
                    400,
                    _err(400, "INVALID_ARGUMENT", f"Invalid X-Goog-Upload-Offset {off}, expected {len(s['data'])}."),
                    {"X-Goog-Upload-Status": "active", "X-Goog-Upload-Size-Received": str(len(s["data"]))},
                )
                return
            s["data"] += req.body
        if "finalize" not in cmds:
            self._send(
                200, None, {"X-Goog-Upload-Status": "active", "X-Goog-Upload-Size-Received": str(len(s["data"]))}
            )
            return
        s["done"] = True
        data = bytes(s["data"])
        fid = (s["name"] or "").removeprefix("files/") or _random_id(12)
        now = time.time()
        meta = {"name": f"files/{fid}"}
        if s["display_name"]:
            meta["displayName"] = s["display_name"]
        meta.update(
            {
                "mimeType": s["mime"],
                "sizeBytes": str(len(data)),
                "createTime": _rfc3339(now),
                "updateTime": _rfc3339(now),
                "expirationTime": _rfc3339(now + 48 * 3600),
                "sha256Hash": base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode(),
                "uri": f"{fake.base}/v1beta/files/{fid}",
                "state": fake.file_state,
                "source": "UPLOADED",
            }
        )
        with fake._lock:
            fake.files[fid] = {"meta": meta, "project": s["project"], "key": s["key"], "data": data}
        self._send(200, {"file": meta}, {"X-Goog-Upload-Status": "final"})

    def _list_files(self, req: RecordedRequest) -> None:
        fake = self.fake
        project = fake.project_of(req.key)
        with fake._lock:
            mine = [f["meta"] for f in fake.files.values() if f["project"] == project]
        size = int((req.query.get("pageSize") or ["10"])[0] or 10)
        start = int((req.query.get("pageToken") or ["0"])[0] or 0)
        out: dict = {}
        if mine[start : start + size]:
            out["files"] = mine[start : start + size]
        if start + size < len(mine):
            out["nextPageToken"] = str(start + size)
        self._send(200, out)

    def _file_get_delete(self, req: RecordedRequest, fid: str) -> None:
        fake = self.fake
        with fake._lock:
            f = fake.files.get(fid)
        if f is None or f["project"] != fake.project_of(req.key):
            self._error(errors.other_project_file(fid))
            return
        if req.method == "DELETE":
            with fake._lock:
                fake.files.pop(fid, None)
            self._send(200, {})
        else:
            self._send(200, f["meta"])

    # -- OpenAI compatible layer ---------------------------------------------------------------------------
    def _openai(self, req: RecordedRequest) -> None:
        fake = self.fake
        m = re.match(r"^/(v1beta|v1alpha|v1)/openai/(.*?)/?$", req.path)
        rest = m.group(2) if m else ""
        if rest == "models" and req.method == "GET":
            self._send(
                200,
                {
                    "object": "list",
                    "data": [{"id": mm["name"], "object": "model", "owned_by": "google"} for mm in fake.models],
                },
            )
            return
        if rest.startswith("models/") and req.method == "GET":
            info = self._find_model(rest[len("models/") :].removeprefix("models/"))
            if info is None:
                self._send_reply(errors.not_found_model(rest.split("/")[-1], m.group(1) if m else "v1beta", "get"))
            else:
                self._send(200, {"id": info["name"], "object": "model", "owned_by": "google"})
            return
        if req.method != "POST" or rest not in ("chat/completions", "embeddings"):
            self._send_reply(errors.method_not_found())
            return
        body = self._json_body(req)
        if body is None:
            return
        model = str(body.get("model") or "").removeprefix("models/")
        info = self._find_model(model)
        if info is None:
            self._send_reply(errors.not_found_model(model or "None", "v1main", "generateContent"))
            return
        if rest == "embeddings":
            inp = body.get("input")
            inputs = inp if isinstance(inp, list) else [inp]
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": _embedding(str(t), int(body.get("dimensions") or _EMBED_DIMS.get(model, 768))),
                }
                for i, t in enumerate(inputs)
            ]
            toks = sum(_count_tokens_text(str(t)) for t in inputs)
            self._send(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": model,
                    "usage": {"prompt_tokens": toks, "total_tokens": toks},
                },
            )
            return
        msgs = body.get("messages") or []
        if not msgs:
            self._send_reply(errors.bad_request("messages must not be empty"))
            return
        first_user = ""
        prompt = 0
        for msg in msgs:
            c = msg.get("content")
            texts = [c] if isinstance(c, str) else [p.get("text", "") for p in (c or []) if isinstance(p, dict)]
            prompt += sum(_count_tokens_text(t) for t in texts)
            if msg.get("role") == "user" and not first_user and texts:
                first_user = texts[0]
        prompt = max(prompt, 1)
        text = "echo: " + first_user
        created = int(time.time())
        cid = _random_id(22)
        if not body.get("stream"):
            if fake.response_delay:
                time.sleep(fake.response_delay)
            out_tokens = _count_tokens_text(text)
            self._send(
                200,
                {
                    "choices": [
                        {"finish_reason": "stop", "index": 0, "message": {"content": text, "role": "assistant"}}
                    ],
                    "created": created,
                    "id": cid,
                    "model": model,
                    "object": "chat.completion",
                    "usage": {
                        "completion_tokens": out_tokens,
                        "prompt_tokens": prompt,
                        "total_tokens": prompt + out_tokens,
                    },
                },
            )
            return
        n = max(1, int(fake.stream_chunks))
        texts = _split_text(text, n)
        pieces = []
        for i, t in enumerate(texts):
            last = i == n - 1
            ch: dict = {"delta": {"content": t, "role": "assistant"}, "index": 0}
            if last:
                ch["finish_reason"] = "stop"
            o: dict = {
                "choices": [ch],
                "created": created,
                "id": cid,
                "model": model,
                "object": "chat.completion.chunk",
            }
            if last:
                out_tokens = _count_tokens_text("".join(texts))
                o["usage"] = {
                    "completion_tokens": out_tokens,
                    "prompt_tokens": prompt,
                    "total_tokens": prompt + out_tokens,
                }
            piece = b"data: " + json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
            if last:
                piece += b"data: [DONE]\n\n"
            pieces.append(piece)
        self._stream(pieces, "text/event-stream", self.reset_after, fake.stream_first_delay, fake.stream_interval)


_HTML_404 = (
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
    "  <title>Error 404 (Not Found)!!1</title>\n"
    "  <p><b>404.</b> <ins>That\u2019s an error.</ins>\n"
    "  <p>The requested URL was not found on this server.  <ins>That\u2019s all we know.</ins>\n"
)
