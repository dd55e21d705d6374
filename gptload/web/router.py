"""The dispatcher inside the one function: one route table (path, methods, who may call, handler) compiled into a
werkzeug ``Map`` (not a nested Flask app, which breaks streaming).

``Router(services)(request) -> Response``. Every ``GptloadError`` becomes JSON here and nowhere else (through
``web.responses``: Google's envelope on proxy routes, ours elsewhere).
"""

from __future__ import annotations

import functools
import json
import math
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WzMethodNotAllowed
from werkzeug.exceptions import NotFound as WzNotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from gptload import __version__
from gptload.app import Services
from gptload.errors import (
    BodyTooLarge,
    GptloadError,
    InvalidJson,
    MethodNotAllowed,
    RouteNotFound,
    Unauthorized,
    ValidationFailed,
)
from gptload.insights import parse_log_query
from gptload.integration import integration_info
from gptload.maintenance import run_maintenance
from gptload.proxy.rewrite import find_proxy_key
from gptload.web import forwarded
from gptload.web.auth import AdminAuth, SchedulerAuth
from gptload.web.live_view import is_upgrade, live
from gptload.web.metrics_view import MetricsAuth, metrics_response
from gptload.web.proxy_view import proxy
from gptload.web.responses import error_response, internal_error, json_response

UI_DIR = Path(__file__).resolve().parents[2] / "admin_ui"
ADMIN_BODY_LIMIT = 8 * 1024 * 1024
MAX_JSON_DEPTH = 64
PAGE_MAX = 1_000_000
_READ_CHUNK = 64 * 1024
# A JSON string (closed or not: an unclosed one runs to the end, so scanning stays linear) or a bracket.
_JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*+"?|[\[\]{}]', re.DOTALL)
_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# The console's API_BASE (admin_ui/config.js; rewritten by infra/ for a bucket-hosted copy) and a safe origin in it.
_API_BASE = re.compile(r"""^\s*export\s+const\s+API_BASE\s*=\s*["']([^"']*)["']""", re.MULTILINE)
_ORIGIN = re.compile(r"(https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?)(?:/[^\s;,'\"]*)?")
# Path segments of admin routes (group names, key, task and log ids): no control characters, bounded length.
_SEGMENT = re.compile(r"[^\x00-\x1f\x7f]{1,256}")

_KEY_ROUTES = "/api/groups/<name>/keys"

Handler = Callable[..., Any]
# Who may call a route: anyone; admin (AUTH_KEY); the maintenance scheduler (AUTH_KEY or its OIDC token); proxy
# (the proxy view authenticates proxy keys itself); metrics (METRICS_TOKEN or AUTH_KEY).
PUBLIC, ADMIN, SCHEDULER, PROXY = "public", "admin", "scheduler", "proxy"
METRICS = "metrics"


@dataclass(frozen=True)
class Route:
    path: str
    methods: tuple[str, ...]  # () = any method
    auth: str
    handler: Handler


@functools.lru_cache(maxsize=8)
def _url_map(rules: tuple[tuple[str, tuple[str, ...], bool], ...]) -> Map:
    """The werkzeug map of a route table's (path, methods, is the proxy route), endpoints = table indexes. Built and
    compiled once per process for a given table (it only depends on these), shared by every ``Router``: werkzeug
    maps are safe to bind from many threads."""
    url_map = Map(
        [Rule(path, endpoint=i, methods=list(methods) or None) for i, (path, methods, _) in enumerate(rules)],
        strict_slashes=False,
    )
    # The Live API's WebSocket handshake: werkzeug matches it only against rules marked websocket.
    proxy_route = next(i for i, (_, _, proxy) in enumerate(rules) if proxy)
    url_map.add(Rule("/proxy/<group>/<path:path>", endpoint=proxy_route, methods=["GET"], websocket=True))
    return url_map


class Router:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.auth = AdminAuth(services.config.auth_key)
        self.scheduler_auth = SchedulerAuth(services.config.oidc_audience, services.config.oidc_service_account)
        self.metrics_auth = MetricsAuth(self.auth, services.config.metrics_token)
        try:
            self.console_policy = console_policy((UI_DIR / "config.js").read_text())
        except OSError:
            self.console_policy = console_policy("")
        self.routes = self._route_table()
        self.map = _url_map(tuple((r.path, tuple(r.methods), r.auth == PROXY) for r in self.routes))

    def _route_table(self) -> list[Route]:
        """Every route in one place: path, methods, handler and who may call it. A handler returns a Response, or
        a JSON-able value (optionally with a status) for ``json_response``."""
        services, admin, insights = self.services, self.services.admin, self.services.insights
        return [
            Route("/health", ("GET", "HEAD"), PUBLIC, lambda r: self._health()),
            Route(
                "/proxy/<group>/<path:path>",
                (),
                PROXY,
                lambda r, group, path: live(services, r, group, path) if is_upgrade(r) else proxy(services, r, group),
            ),
            Route("/metrics", ("GET",), METRICS, lambda r: metrics_response(services)),
            Route("/api/groups", ("GET",), ADMIN, lambda r: {"groups": admin.list_groups()}),
            Route("/api/groups", ("POST",), ADMIN, lambda r: (admin.create_group(_json(r)), 201)),
            Route("/api/groups/<name>", ("GET",), ADMIN, lambda r, name: admin.get_group(name)),
            Route("/api/groups/<name>", ("PUT",), ADMIN, lambda r, name: admin.update_group(name, _json(r))),
            Route(
                "/api/groups/<name>",
                ("DELETE",),
                ADMIN,
                lambda r, name: admin.delete_group(name, force=_flag(r, "force")),
            ),
            Route("/api/groups/<name>/keys", ("POST",), ADMIN, lambda r, name: admin.add_keys(name, _json(r))),
            Route(
                "/api/groups/<name>/keys",
                ("GET",),
                ADMIN,
                lambda r, name: admin.list_keys(
                    name,
                    r.args.get("status") or None,
                    *_page_args(r),
                    q=r.args.get("q"),
                    sort=r.args.get("sort") or None,
                    order=r.args.get("order") or None,
                ),
            ),
            Route(
                "/api/groups/<name>/keys/search",
                ("POST",),
                ADMIN,
                lambda r, name: admin.search_keys(name, _json(r, default={})),
            ),
            Route(
                "/api/groups/<name>/keys/disable",
                ("POST",),
                ADMIN,
                lambda r, name: admin.disable_keys(name, _json(r), disable=True),
            ),
            Route(
                "/api/groups/<name>/keys/enable",
                ("POST",),
                ADMIN,
                lambda r, name: admin.disable_keys(name, _json(r), disable=False),
            ),
            Route(
                "/api/groups/<name>/keys/export",
                ("POST",),
                ADMIN,
                lambda r, name: _attachment(admin.export_selected(name, _json(r)), f"{name}-keys.txt", "text/plain"),
            ),
            Route("/api/groups/<name>/keys", ("DELETE",), ADMIN, lambda r, name: admin.delete_keys(name, _json(r))),
            Route(
                "/api/groups/<name>/keys/restore",
                ("POST",),
                ADMIN,
                lambda r, name: admin.restore_keys(name, _json(r, default={})),
            ),
            Route("/api/groups/<name>/copy", ("POST",), ADMIN, lambda r, name: (admin.copy_group(name, _json(r)), 201)),
            Route("/api/groups-order", ("PUT",), ADMIN, lambda r: admin.reorder(_json(r))),
            Route(
                "/api/groups/<name>/keys/export",
                ("GET",),
                ADMIN,
                lambda r, name: _attachment(
                    admin.export_keys(name, r.args.get("status", "all")), f"{name}-keys.txt", "text/plain"
                ),
            ),
            Route(
                "/api/groups/<name>/keys/validate",
                ("POST",),
                ADMIN,
                lambda r, name: ({"task": services.validator.start(name, _json(r, default={}))}, 202),
            ),
            Route("/api/groups/<name>/keys/clear-invalid", ("POST",), ADMIN, lambda r, name: admin.clear_invalid(name)),
            Route(
                "/api/groups/<name>/keys/<key_id>",
                ("PUT",),
                ADMIN,
                lambda r, name, key_id: admin.update_key(name, key_id, _json(r)),
            ),
            Route("/api/tasks/run", ("POST",), SCHEDULER, lambda r: run_maintenance(services)),
            Route(
                "/api/tasks/<task_id>", ("GET",), ADMIN, lambda r, task_id: {"task": services.validator.task(task_id)}
            ),
            Route(
                "/api/dashboard",
                ("GET",),
                ADMIN,
                lambda r: insights.dashboard(group=r.args.get("group") or None, hours=_int_arg(r, "hours", 24, 1, 720)),
            ),
            Route(
                "/api/stats/hourly",
                ("GET",),
                ADMIN,
                lambda r: insights.hourly(
                    r.args.get("group") or None,
                    _int_arg(r, "hours", 24, 1, 720),
                    access_key=r.args.get("access_key") or None,
                ),
            ),
            Route("/api/stats/groups", ("GET",), ADMIN, lambda r: insights.group_totals()),
            Route("/api/logs", ("GET",), ADMIN, lambda r: insights.logs(parse_log_query(r.args), *_page_args(r))),
            Route(
                "/api/logs/export.csv",
                ("GET",),
                ADMIN,
                lambda r: _attachment(insights.logs_csv(parse_log_query(r.args)), "request-logs.csv", "text/csv"),
            ),
            Route("/api/logs/<log_id>", ("GET",), ADMIN, lambda r, log_id: insights.log(log_id)),
            Route("/api/access-keys", ("GET",), ADMIN, lambda r: services.access_admin.list_keys()),
            Route("/api/access-keys", ("POST",), ADMIN, lambda r: (services.access_admin.create(_json(r)), 201)),
            Route("/api/access-keys/adopt", ("POST",), ADMIN, lambda r: services.access_admin.adopt(_json(r))),
            Route("/api/access-keys/<key_id>", ("GET",), ADMIN, lambda r, key_id: services.access_admin.get(key_id)),
            Route(
                "/api/access-keys/<key_id>",
                ("PUT",),
                ADMIN,
                lambda r, key_id: services.access_admin.update(key_id, _json(r)),
            ),
            Route(
                "/api/access-keys/<key_id>", ("DELETE",), ADMIN, lambda r, key_id: services.access_admin.delete(key_id)
            ),
            Route(
                "/api/access-keys/<key_id>/rotate",
                ("POST",),
                ADMIN,
                lambda r, key_id: services.access_admin.rotate(key_id),
            ),
            Route("/api/integration/info", ("GET",), PUBLIC, lambda r: self._integration_info(r)),
            Route("/api/settings/schema", ("GET",), ADMIN, lambda r: {"schema": admin.get_settings()["schema"]}),
            Route("/api/settings", ("GET",), ADMIN, lambda r: admin.get_settings()),
            Route("/api/settings", ("PUT",), ADMIN, lambda r: admin.put_settings(_json(r))),
            Route("/", ("GET", "HEAD"), PUBLIC, lambda r: self._ui("index.html")),
            Route("/<path:asset>", ("GET", "HEAD"), PUBLIC, lambda r, asset: self._ui(asset)),
        ]

    def __call__(self, request: Request) -> Response:
        try:
            if request.path.startswith("/api/") and request.method == "OPTIONS":
                return self._cors(request, Response(status=204))
            adapter = self.map.bind_to_environ(request.environ)
            try:
                index, args = adapter.match()
            except WzMethodNotAllowed:
                raise MethodNotAllowed(f"{request.method} is not allowed on {request.path}") from None
            except (WzNotFound, HTTPException):
                raise RouteNotFound(f"no route for {request.path}") from None
            route = self.routes[index]
            if route.auth == ADMIN:
                self.auth.check(request.headers.get("Authorization"))
                if not all(_SEGMENT.fullmatch(value) for value in args.values()):
                    raise RouteNotFound(f"no route for {request.path!r}")
                if route.path.startswith(_KEY_ROUTES):  # an aggregate has no keys: refuse every key operation
                    self.services.admin.require_standard(args["name"])
            elif route.auth == SCHEDULER:
                self._check_scheduler(request)
            elif route.auth == METRICS:
                self.metrics_auth.check(request.headers.get("Authorization"), request.args.get("token"))
            result = route.handler(request, **args)
            if not isinstance(result, Response):
                status = 200
                if isinstance(result, tuple):
                    result, status = result
                result = json_response(result, status)
            return self._cors(request, result)
        except GptloadError as err:
            response = error_response(err, google=request.path.startswith("/proxy/"))
            if request.path.startswith("/proxy/") and "/upload/" in request.path:
                # SDKs retry an upload chunk answer without this header for seconds; tell them it is over.
                response.headers["X-Goog-Upload-Status"] = "final"
            return self._cors(request, response)
        except Exception as exc:  # noqa: BLE001 - the last line of defence must catch everything
            return internal_error(exc, google=request.path.startswith("/proxy/"))

    def _health(self) -> Response:
        return json_response({"status": "ok", "store": self.services.store.kind, "version": __version__})

    def _integration_info(self, request: Request) -> dict[str, Any]:
        """Authenticated by a proxy key (not AUTH_KEY), given as the proxy routes take it."""
        presented = find_proxy_key(request.query_string.decode("latin-1"), request.headers.items()).value
        public = forwarded.public_base(request, self.services.config.trusted_proxy_hops)
        return integration_info(self.services.pool, presented, public, self.services.access)

    def _check_scheduler(self, request: Request) -> None:
        """The maintenance endpoint accepts AUTH_KEY, or a Google-signed OIDC token of the scheduler's account."""
        authorization = request.headers.get("Authorization")
        try:
            self.auth.check(authorization)
        except Unauthorized:
            self.scheduler_auth.check(authorization)

    def _cors(self, request: Request, response: Response) -> Response:
        origin = request.headers.get("Origin", "").rstrip("/")
        if origin and origin in self.services.config.allowed_origins and request.path.startswith("/api/"):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
            response.headers["Access-Control-Max-Age"] = "600"
        return response

    def _ui(self, asset: str) -> Response:
        if asset.startswith("api/") or asset.startswith("proxy/") or not _SEGMENT.fullmatch(asset):
            raise RouteNotFound(f"no route for /{asset!r}")
        try:
            path = (UI_DIR / asset).resolve()
            found = path.is_relative_to(UI_DIR) and path.is_file()
        except (OSError, ValueError):  # a name too long for the file system, or one it cannot represent
            found = False
        if not found:
            raise RouteNotFound(f"no route for /{asset!r}")
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".js":
            mime = "text/javascript"
        response = Response(path.read_bytes(), mimetype=mime)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = self.console_policy
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


def console_policy(config_js: str) -> str:
    """The console's Content-Security-Policy: its own files only (no inline script or style, which it has none
    of), no framing, no plugins, no <base>; API calls to this origin and to the origin config.js's API_BASE names."""
    connect = ["'self'"]
    match = _API_BASE.search(config_js)
    origin = _ORIGIN.fullmatch(match[1].strip()) if match else None
    if origin:
        connect.append(origin[1])
    return (
        "default-src 'self'; "
        f"connect-src {' '.join(connect)}; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )


def _attachment(text: str, filename: str, mimetype: str) -> Response:
    response = Response(text, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _json(request: Request, default: Any = None) -> Any:
    """The admin request's JSON body: at most ADMIN_BODY_LIMIT bytes, nested at most MAX_JSON_DEPTH levels, with
    finite numbers only (no NaN or Infinity, nor a literal that overflows to it) and no lone surrogates."""
    raw = _read_body(request)
    if not raw.strip():
        if default is not None:
            return default
        raise InvalidJson("request body must be JSON")
    try:
        text = raw.decode(json.detect_encoding(raw))
        if _too_deep(text):
            raise InvalidJson(f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        if _LONE_SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a surrogate that is not half of a pair
    except RecursionError:  # backstop: the depth scan above should have caught it
        raise InvalidJson(f"request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeError) as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None
    return value


def _read_body(request: Request) -> bytes:
    """Read at most ADMIN_BODY_LIMIT + 1 bytes, whether the body has a Content-Length or comes chunked."""
    if request.content_length is not None and request.content_length > ADMIN_BODY_LIMIT:
        raise BodyTooLarge(f"admin request bodies are limited to {ADMIN_BODY_LIMIT} bytes")
    stream = request.stream
    chunks: list[bytes] = []
    size = 0
    while size <= ADMIN_BODY_LIMIT:
        chunk = stream.read(min(_READ_CHUNK, ADMIN_BODY_LIMIT + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > ADMIN_BODY_LIMIT:
        raise BodyTooLarge(f"admin request bodies are limited to {ADMIN_BODY_LIMIT} bytes")
    return b"".join(chunks)


def _too_deep(text: str) -> bool:
    """Whether ``text`` opens more than MAX_JSON_DEPTH arrays/objects at once (brackets in strings do not count)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for match in _JSON_NESTING.finditer(text):
        first = match[0][0]
        if first in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif first in "]}":
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {literal[:20]} is out of range")
    return value


def _int_arg(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ValidationFailed(
            f"{name} must be an integer from {lo} to {hi}", details={"fields": {name: f"integer {lo}..{hi}"}}
        )
    return value


def _flag(request: Request, name: str) -> bool:
    """A true/false query argument (absent = false); anything else is refused."""
    raw = (request.args.get(name) or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ValidationFailed(f"{name} must be true or false", details={"fields": {name: "true or false"}})
    return raw in ("true", "1")


def _page_args(request: Request) -> tuple[int, int]:
    return _int_arg(request, "page", 1, 1, PAGE_MAX), _int_arg(request, "page_size", 50, 1, 500)
