"""``ANY /proxy/{group}/{path}``: authenticate the proxy key, read the body once, forward, stream back."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import quote

from werkzeug.datastructures import Headers
from werkzeug.wrappers import Request, Response

from gptload.access.rules import ALL_GROUPS
from gptload.app import Services
from gptload.errors import (
    AccessDenied,
    BodyTooLarge,
    GptloadError,
    GroupNotFound,
    IncompleteBody,
    InvalidProxyKey,
)
from gptload.models import ANONYMOUS
from gptload.pool import GroupView
from gptload.proxy import rewrite
from gptload.proxy.request import IncomingRequest, ProxyResponse
from gptload.proxy.trace import rejection_event
from gptload.store.base import UPLOAD
from gptload.web import forwarded

_PROXY_PREFIX = "/proxy/"
_BAD_KEY = "missing or unknown proxy key for this group"


def proxy(services: Services, request: Request, group: str) -> Response:
    pool = services.pool
    path, query = _raw_target(request, group)
    headers = list(request.headers.items())
    presented = rewrite.find_proxy_key(query, headers).value
    presented_digest = services.access.digest_of(presented)
    access = services.access.lookup(presented_digest)
    try:
        view = pool.view(group)
    except GroupNotFound:
        if access is not None and access.status(time.time()) == "active":
            # A key scoped to some groups learns nothing about others: an unknown group is refused like a group it
            # may not use. A key for every group (like a global proxy key) is told the group does not exist.
            if ALL_GROUPS not in access.groups:
                raise AccessDenied(f"access key {access.name!r} may not use group {group!r}") from None
            raise
        if pool.authorize_global(presented):
            raise
        # Without a valid proxy key, an unknown group answers exactly like a known one: names can't be enumerated.
        raise InvalidProxyKey(_BAD_KEY) from None
    upload = None
    if path.startswith("upload/"):
        upload_id = rewrite.upload_id_of(query)
        if upload_id:
            binding = services.affinity.lookup(UPLOAD, upload_id)
            # through an aggregate, the binding names the member that started the upload
            if binding is not None and pool.member_view(view, binding.group) is not None:
                upload = binding  # the unguessable upload_id is the capability, as it is at Google
    incoming = IncomingRequest(
        method=request.method,
        path=path,
        query=query,
        headers=headers,
        body=b"",
        public_base=_public_base(request, services.config.trusted_proxy_hops),
        content_type=request.headers.get("Content-Type", ""),
        source_ip=forwarded.client_ip(request, services.config.trusted_proxy_hops),
        user_agent=request.headers.get("User-Agent", ""),
        access_key=access.id if access is not None else ANONYMOUS,
    )
    if access is not None:
        if upload is None:
            _guard(services, view, incoming, lambda: services.access.check(access, view.name))
    elif upload is None and not pool.authorize(view, presented, presented_digest=presented_digest):
        services.usage.add(rejection_event(view, incoming, 401, "missing or unknown proxy key"))
        raise InvalidProxyKey(_BAD_KEY)
    try:
        body = _read_body(request, services.config.max_body_bytes)
    except BodyTooLarge as exc:
        services.usage.add(rejection_event(view, incoming, 413, exc.message))
        raise
    if access is not None and upload is None:
        model = rewrite.model_of(path, body, incoming.content_type) if access.models else ""
        _guard(services, view, incoming, lambda: services.access.admit(access, model))
    answer = services.forwarder.forward(view, replace(incoming, body=body), upload)
    response = _to_response(answer)
    if not answer.streamed:  # streamed answers flush from the relay's end (see Forwarder._relay)
        response.call_on_close(services.usage.maybe_flush)
    return response


def _guard(services: Services, view: GroupView, incoming: IncomingRequest, check: Callable[[], None]) -> None:
    """Run an access-key check; a refusal (401, 403, 429) is recorded as a refused usage row of that access key
    and raised: nothing is forwarded, no pool key is charged."""
    try:
        check()
    except GptloadError as exc:
        services.usage.add(rejection_event(view, incoming, exc.status, f"{exc.code}: {exc.message}", refused=True))
        raise


def _raw_target(request: Request, group: str) -> tuple[str, str]:
    """Upstream path and query exactly as the client encoded them (gunicorn's RAW_URI), minus /proxy/{group}/."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        raw_path, _, query = raw.partition("?")
    else:
        raw_path, query = quote(request.path, safe="/:@!$&'()*+,;=-._~"), request.query_string.decode("latin-1")
    prefix = f"{_PROXY_PREFIX}{group}/"
    path = raw_path[len(prefix) :] if raw_path.startswith(prefix) else raw_path.split("/", 3)[-1]
    return path, query


def _read_body(request: Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"request body of {length} bytes is over the limit of {limit}")
    data = request.stream.read(limit + 1) if length is None else request.get_data(cache=False)
    if len(data) > limit:
        raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
    if length is not None and len(data) != length:  # the client went away mid-body: never forward a part of it
        raise IncompleteBody(f"request body ended after {len(data)} of {length} bytes")
    return data


def _public_base(request: Request, trusted_proxy_hops: int) -> str:
    """http(s)://host[:port] the client used; X-Forwarded-* believed only from trusted hops (web/forwarded.py)."""
    return forwarded.public_base(request, trusted_proxy_hops)


def _to_response(answer: ProxyResponse) -> Response:
    headers = Headers(answer.headers)
    if not answer.streamed and "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    return Response(answer.body, status=answer.status, headers=headers, direct_passthrough=answer.streamed)
