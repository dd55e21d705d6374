"""Admin authentication: ``Authorization: Bearer <AUTH_KEY>`` compared in constant time; and the scheduler's
Google-signed OIDC token for the maintenance endpoint."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from gptload.errors import Unauthorized


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

    def __init__(self, audience: str | None, service_account: str | None, verify: Callable[..., dict] | None = None):
        self._audience = audience
        self._account = service_account
        self._verify = verify

    def check(self, authorization: str | None) -> None:
        if not (self._audience and self._account):
            raise Unauthorized("missing or wrong admin key")
        token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else ""
        if not token:
            raise Unauthorized("missing bearer token")
        verify = self._verify or _google_verify
        try:
            claims = verify(token, self._audience)
        except ValueError:
            raise Unauthorized("invalid OIDC token") from None
        if claims.get("email") != self._account or not claims.get("email_verified", False):
            raise Unauthorized("OIDC token of an unexpected caller")


def _google_verify(token: str, audience: str) -> dict:
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    return id_token.verify_oauth2_token(token, Request(), audience=audience)
