"""``GET /metrics``: this instance's figures in the Prometheus text format, for the operator's own monitoring.

Who may read it: ``Authorization: Bearer <METRICS_TOKEN>`` (a separate secret for a scraper, so that it never holds
the admin password) or ``Bearer <AUTH_KEY>``; both compared in constant time. ``?token=<METRICS_TOKEN>`` is accepted
too, for scrapers that cannot send a header (the Managed Service for Prometheus sidecar on Cloud Run sets only query
parameters; it scrapes inside the instance, so the URL never passes Google's front end or its request log). AUTH_KEY
is never accepted in a URL. The counters are ``gptload.metrics``;
the gauges are read here, at scrape time, from the services (no store call: the pool's cached view, the breakers,
the usage buffer).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from werkzeug.wrappers import Response

from gptload import __version__
from gptload.app import Services
from gptload.errors import Unauthorized
from gptload.metrics import CONTENT_TYPE, Family, Labels, gauge, process_families, render
from gptload.metrics_log import key_states
from gptload.web.auth import AdminAuth


class MetricsAuth:
    """``Bearer <METRICS_TOKEN>`` or ``Bearer <AUTH_KEY>``, each compared as a SHA-256 digest in constant time."""

    def __init__(self, admin: AdminAuth, metrics_token: str | None) -> None:
        self._admin = admin
        self._digest = hashlib.sha256(metrics_token.encode()).digest() if metrics_token else None

    def check(self, authorization: str | None, query_token: str | None = None) -> None:
        token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else ""
        if self._digest is not None:
            for presented in (token, query_token or ""):
                if hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), self._digest):
                    return
        try:
            self._admin.check(authorization)
        except Unauthorized:
            raise Unauthorized(
                "missing or wrong metrics token (send Authorization: Bearer <METRICS_TOKEN> or <AUTH_KEY>, "
                "or ?token=<METRICS_TOKEN>)"
            ) from None


def metrics_response(services: Services) -> Response:
    response = Response(render(families(services)), mimetype=None, content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


def families(services: Services) -> list[Family]:
    """Everything ``/metrics`` shows: the counters, then the gauges read now."""
    now = time.time()
    keys: list[tuple[Labels, float]] = [
        ((("group", group), ("state", state)), n)
        for group, counts in key_states(services, now).items()
        for state, n in counts.items()
    ]
    breakers = services.forwarder.breakers.open_circuits(time.monotonic())  # the forwarder's clock
    return [
        *services.metrics.families(),
        gauge("gptload_keys", "Keys by state per group (this instance's cached view)", keys),
        gauge(
            "gptload_breaker_open",
            "Circuits that are not closed, per group, upstream and model (state: open or half-open)",
            [
                (
                    (
                        ("group", str(c["group"])),
                        ("upstream", str(c["upstream"])),
                        ("model", str(c["model"])),
                        ("state", str(c["state"])),
                    ),
                    1,
                )
                for c in breakers
            ],
        ),
        gauge("gptload_breaker_open_circuits", "How many circuits are not closed", [((), len(breakers))]),
        gauge(
            "gptload_usage_buffer_events",
            "Usage events waiting to be written to the store",
            [((), len(services.usage))],
        ),
        gauge(
            "gptload_usage_dropped_total",
            "Usage events dropped because the buffer was full (the store was down)",
            [((), services.usage.dropped)],
            "counter",
        ),
        gauge(
            "gptload_usage_rejected_total",
            "Usage events the store rejected as invalid (never writable), isolated and dropped",
            [((), services.usage.rejected)],
            "counter",
        ),
        gauge("gptload_streams_open", "Answers being relayed now", [((), services.forwarder.open_streams())]),
        gauge("gptload_live_sessions_open", "Live API (WebSocket) sessions running now", [((), len(services.live))]),
        gauge(
            "gptload_live_sessions_ended_total",
            "Live API (WebSocket) sessions ended, by outcome (client_closed, upstream_error, setup_timeout...)",
            [((("outcome", o),), n) for o, n in sorted(services.live.outcomes().items())],
            "counter",
        ),
        gauge(
            "gptload_build_info",
            "Version of gptload and the store it uses",
            [((("version", __version__), ("store", services.store.kind)), 1)],
        ),
        *process_families(services.metrics.started_at),
    ]
