"""Admin authentication: ``Authorization: Bearer <AUTH_KEY>``, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

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
