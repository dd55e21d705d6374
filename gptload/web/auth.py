"""Admin authentication: ``Authorization: Bearer <AUTH_KEY>`` compared in constant time; and the scheduler's
Google-signed OIDC token for the maintenance endpoint."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from gptload.errors import AuthUnavailable, Unauthorized

log = logging.getLogger(__name__)
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"  # what google-auth's verify_oauth2_token fetches
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.IGNORECASE)


class AdminAuth:
    def __init__(self, auth_key: str) -> None:
        # Compare digests so that neither content nor length of AUTH_KEY leaks through timing.
        self._digest = hashlib.sha256(auth_key.encode()).digest()

    def check(self, authorization: str | None) -> None:
        token = ""
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        if not hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._digest):
            raise Unauthorized("missing or wrong admin key (send Authorization: Bearer <AUTH_KEY>)")


class SchedulerAuth:
    """Google-signed OIDC ID tokens (Cloud Scheduler): signature, expiry, audience and the caller's e-mail are
    checked with google-auth. Disabled (always refuses) unless both OIDC_AUDIENCE and OIDC_SERVICE_ACCOUNT are set."""

    def __init__(
        self,
        audience: str | None,
        service_account: str | None,
        verify: Callable[..., dict[str, Any]] | None = None,
        *,
        certs: GoogleCerts | None = None,
    ):
        self._audience = audience
        self._account = service_account
        self._verify = verify
        self._certs = certs or GoogleCerts()

    def check(self, authorization: str | None) -> None:
        if not (self._audience and self._account):
            raise Unauthorized("missing or wrong admin key")
        token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else ""
        if not token:
            raise Unauthorized("missing bearer token")
        try:
            if self._verify is not None:
                claims = self._verify(token, self._audience)
            else:
                claims = _google_verify(token, self._audience, self._certs)
        except ValueError:
            raise Unauthorized("invalid OIDC token") from None
        if claims.get("email") != self._account or not claims.get("email_verified", False):
            raise Unauthorized("OIDC token of an unexpected caller")


def _google_verify(token: str, audience: str, certs: GoogleCerts) -> dict[str, Any]:
    """Signature (with ``certs``), expiry, audience and issuer, by google-auth; ValueError when any is wrong."""
    from google.auth.exceptions import GoogleAuthError
    from google.oauth2 import id_token

    try:
        claims: dict[str, Any] = id_token.verify_oauth2_token(token, certs, audience=audience)
        return claims
    except GoogleAuthError as exc:  # a wrong issuer is a GoogleAuthError, not a ValueError
        raise ValueError(str(exc)) from None


class GoogleCerts:
    """A google-auth transport ``Request`` for Google's OIDC certificates that keeps them for their
    ``Cache-Control: max-age`` (at most a day) instead of fetching them on every maintenance call.

    When a refresh fails, certificates that expired less than MAX_STALE_SECONDS ago still serve (with a warning);
    with none at all, AuthUnavailable (503). ``request`` (the HTTP callable) and ``clock`` are injectable for tests.
    """

    MAX_STALE_SECONDS = 24 * 3600.0
    MAX_AGE_SECONDS = 24 * 3600.0
    TIMEOUT_SECONDS = 10.0

    def __init__(self, request: Callable[..., Any] | None = None, clock: Callable[[], float] = time.monotonic):
        self._request = request
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, SimpleNamespace]] = {}  # url -> (fresh until, response)

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        with self._lock:  # one fetch at a time; the others then find it cached
            now = self._clock()
            cached = self._cache.get(url)
            if cached and now < cached[0]:
                return cached[1]
            try:
                response = self._http()(url, method=method, headers=headers, timeout=self.TIMEOUT_SECONDS)
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
                json.loads(response.data)  # never cache a body google-auth could not read
            except Exception as exc:  # any failure to fetch means the same: no fresh certificates
                if cached and now < cached[0] + self.MAX_STALE_SECONDS:
                    log.warning("cannot refresh Google's OIDC certificates (%s); using the cached ones", exc)
                    return cached[1]
                log.warning("cannot fetch Google's OIDC certificates: %s", exc)
                raise AuthUnavailable(
                    "cannot verify the OIDC token now: Google's certificates are unavailable"
                ) from exc
            kept = SimpleNamespace(status=200, headers=dict(response.headers), data=response.data)
            self._cache[url] = (now + _max_age(kept.headers, self.MAX_AGE_SECONDS), kept)
            return kept

    def _http(self) -> Callable[..., Any]:
        if self._request is None:
            from google.auth.transport.requests import Request

            self._request = Request()
        return self._request


def _max_age(headers: Any, limit: float) -> float:
    """Seconds ``Cache-Control: max-age`` allows (0 without one, or with no-cache/no-store), at most ``limit``."""
    control = next((str(v) for k, v in dict(headers).items() if k.lower() == "cache-control"), "")
    match = _MAX_AGE.search(control)
    if not match or "no-cache" in control.lower() or "no-store" in control.lower():
        return 0.0
    return min(float(match[1]), limit)
