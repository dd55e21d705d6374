"""Reading from an upstream that may be hostile or broken.

- ``UpstreamSession`` (``make_session``) sends a prepared request through the connection pool and returns the
  answer as it is: a 3xx is an answer, never followed (no redirect machinery, no cookie jar, no hooks).
"""

from __future__ import annotations

from typing import Any

import requests


class UpstreamSession(requests.Session):
    """``send`` without requests' redirect, cookie and hook machinery: the answer is returned as the upstream gave
    it, 3xx included."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        resp = self.get_adapter(request.url or "").send(
            request,
            stream=True,
            timeout=kwargs.get("timeout"),
            verify=kwargs.get("verify", self.verify),
            cert=kwargs.get("cert", self.cert),
            proxies=kwargs.get("proxies") or {},
        )
        if not kwargs.get("stream", False):
            resp.content  # noqa: B018 - requests' own semantics for stream=False callers
        return resp
