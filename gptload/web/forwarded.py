"""Who the client is, and under which URL it reached us, behind ``TRUSTED_PROXY_HOPS`` trusted proxies.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only as far as trusted proxies wrote them: with N hops
(Cloud Run: 1, Google's front end, which appends the address it saw to ``X-Forwarded-For`` and sets
``X-Forwarded-Proto``), the client is the N-th address from the right of ``X-Forwarded-For`` (everything to its
left was written by the client itself) and the scheme the N-th value from the right of ``X-Forwarded-Proto``. With
0 hops (the default of ``python main.py``) neither is read. ``X-Forwarded-Host`` is never believed: Google's front
end passes a client's through untouched. Set the ``app_url`` setting when clients reach gptload under another name.

Whatever the headers say, the public base is ``http`` or ``https`` and a syntactically valid ``host[:port]``,
else the request's own; it ends up in the upload URLs handed back to clients.
"""

from __future__ import annotations

import ipaddress
import re

from werkzeug.wrappers import Request

SCHEMES = ("http", "https")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_PORT = re.compile(r"[0-9]{1,5}")


def client_ip(request: Request, hops: int) -> str:
    """The client's address: the ``hops``-th from the right of X-Forwarded-For, else the peer's."""
    if hops > 0:
        hop = _from_right(request, "X-Forwarded-For", hops)
        if hop is not None and _is_ip(hop):
            return hop
    return request.remote_addr or ""


def public_base(request: Request, hops: int) -> str:
    """``scheme://host[:port]`` under which the client reached gptload (for the upload URLs given back to it)."""
    scheme = request.scheme if request.scheme in SCHEMES else "http"
    if hops > 0:
        proto = (_from_right(request, "X-Forwarded-Proto", hops) or "").lower()
        if proto in SCHEMES:
            scheme = proto
    host = request.host
    if not valid_host(host):
        host = _server_address(request, scheme)
    return f"{scheme}://{host}"


def valid_host(value: str) -> bool:
    """A DNS name or IPv4 address, or a bracketed IPv6 address, with an optional port."""
    if len(value) > 260:
        return False
    if value.startswith("["):
        address, bracket, rest = value[1:].partition("]")
        if not bracket:
            return False
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return False
    else:
        name, colon, port = value.partition(":")
        if not _HOSTNAME.fullmatch(name):
            return False
        rest = colon + port
    if not rest:
        return True
    port = rest[1:]
    return rest[0] == ":" and bool(_PORT.fullmatch(port)) and int(port) <= 65535


def _from_right(request: Request, header: str, n: int) -> str | None:
    values = [v.strip() for line in request.headers.getlist(header) for v in line.split(",")]
    values = [v for v in values if v]
    return values[-n] if len(values) >= n else None


def _is_ip(value: str) -> bool:
    """An IPv4 or IPv6 address without a scope id (``ipaddress`` takes any text after ``%`` as one: a client's text
    would reach the log and ``${CLIENT_IP}`` header rules)."""
    if "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _server_address(request: Request, scheme: str) -> str:
    """The address this server listens on, as the WSGI server reports it (never from a header)."""
    name = str(request.environ.get("SERVER_NAME") or "localhost")
    port = str(request.environ.get("SERVER_PORT") or "")
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    default = {"http": "80", "https": "443"}[scheme]
    host = name if port in ("", default) else f"{name}:{port}"
    return host if valid_host(host) else "localhost"
