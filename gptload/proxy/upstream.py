"""The upstream side's plumbing: one pooled session per process, and requests prepared without requests' session
machinery (no per-request merging of settings or environment lookups). Reads, caps and deadlines are in
``upstream_io``."""

from __future__ import annotations

import functools
import http.cookiejar
import threading

import requests
from requests.structures import CaseInsensitiveDict

from gptload import proxyurl
from gptload.proxy import upstream_io


def make_session(pool_size: int) -> requests.Session:
    """One session per process; the connection pool sized to the server's threads (requests' default is 10).

    The session is only a connection pool: requests go out through ``Session.send`` with a request prepared by
    ``prepare`` (no per-request merging of session settings or environment lookups), and its cookie jar accepts
    nothing, so that a cookie set by the upstream for one client is never replayed for another. Its ``send``
    (``upstream_io.UpstreamSession``) never follows a redirect: a 3xx is the answer, passed on as it came.
    """
    session = upstream_io.UpstreamSession()
    session.trust_env = False  # no per-request proxy/netrc lookups; the upstream URL is explicit
    session.headers.clear()  # forward the client's headers, not requests' defaults
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = upstream_io.UpstreamAdapter(pool_connections=8, pool_maxsize=max(10, pool_size), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Sessions:
    """The direct session and one session per distinct egress proxy (a group's ``proxy_url``), created on first use:
    connections to a proxy are pooled like direct ones. ``prune`` closes the sessions of proxies no group uses any
    more (called after each reload of the pool's view). Proxies come only from ``proxy_url``, never from the
    environment (``trust_env`` stays off)."""

    def __init__(self, direct: requests.Session, pool_size: int = 16) -> None:
        self.direct = direct
        self._pool_size = pool_size
        self._proxied: dict[str, requests.Session] = {}
        self._lock = threading.Lock()

    def for_proxy(self, proxy_url: str) -> requests.Session:
        """The session for ``proxy_url`` ("" or "direct" = direct)."""
        if proxyurl.is_direct(proxy_url):
            return self.direct
        session = self._proxied.get(proxy_url)
        if session is None:
            with self._lock:
                session = self._proxied.get(proxy_url)
                if session is None:
                    session = make_session(self._pool_size)
                    session.proxies = {"http": proxy_url, "https": proxy_url}
                    self._proxied[proxy_url] = session
        return session

    def proxies(self) -> set[str]:
        """The proxy URLs that have a session now."""
        with self._lock:
            return set(self._proxied)

    def prune(self, in_use: set[str]) -> int:
        """Close and forget the sessions of proxies not in ``in_use``; returns how many.

        A call in flight on a pruned session is not cut: closing a session empties its connection pools, and a
        connection that is still being read is closed when its answer has been read (urllib3 discards a connection
        given back to a closed pool). A caller that took the session just before may still send on it: requests
        then opens a fresh pool for that call, and the session is garbage once nobody holds it."""
        with self._lock:
            gone = [url for url in self._proxied if url not in in_use]
            sessions = [self._proxied.pop(url) for url in gone]
        for session in sessions:
            session.close()
        return len(sessions)

    def close(self) -> None:
        with self._lock:
            sessions, self._proxied = list(self._proxied.values()), {}
        for session in sessions:
            session.close()
        self.direct.close()


def prepare(method: str, url: str, headers: dict[str, str], body: bytes) -> requests.PreparedRequest:
    """A request ready for ``Session.send``, prepared without requests' session-merging machinery."""
    prepared = requests.PreparedRequest()
    prepared.method = method
    prepared.url = prepared_url(url)
    prepared.headers = CaseInsensitiveDict(headers)
    prepared.body = body or None
    if body or method in ("POST", "PUT", "PATCH"):
        prepared.headers["Content-Length"] = str(len(body))
    prepared.hooks = {"response": []}
    prepared._cookies = None
    return prepared


@functools.lru_cache(maxsize=4096)
def prepared_url(url: str) -> str:
    """requests' URL normalisation (IDNA, percent-encoding checks) is costly; proxied URLs repeat a lot."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return str(prepared.url)


def join_url(base: str, path: str, query: str) -> str:
    url = f"{base.rstrip('/')}/{path.lstrip('/')}"
    return f"{url}?{query}" if query else url
