"""Entry point.

- Cloud Run functions / Cloud Run: functions-framework serves ``handler(request)`` (``--target handler``).
- Laptop: ``python main.py`` serves the same handler, through functions-framework's app, with gunicorn gthread
  (``gptload.server``: read timeouts, request limits, JSON errors), on the embedded SQLite store, on ``PORT``
  (default 8080).

Services are built once per process, on first use (or right after the worker starts, locally), never at import.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading

from gptload.config import Config
from gptload.errors import ConfigError

_router = None
_lock = threading.Lock()
log = logging.getLogger("gptload")


def _get_router():
    global _router
    if _router is None:
        with _lock:
            if _router is None:
                from gptload.app import build_services
                from gptload.maintenance import start_embedded_timer
                from gptload.metrics_log import start_metrics_log
                from gptload.web.router import Router

                services = build_services(Config.from_env())
                atexit.register(services.shutdown)
                start_embedded_timer(services)
                start_metrics_log(services)
                _router = Router(services)
    return _router


def handler(request):
    """The HTTP function: every path of the service goes through here."""
    return _get_router()(request)


def console_url(host: str, port: int) -> str:
    """The address to open the console at: a wildcard listen address is reached through the loopback one."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, host)  # noqa: S104 (a mapping, no bind)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"  # an IPv6 address in a URL
    return f"http://{shown}:{port}/"


def _serve() -> None:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"gptload: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from functions_framework import create_app

    from gptload.server import serve

    app = create_app("handler", __file__)
    module = sys.modules["main"]

    def warm(worker) -> None:  # build services in the worker process, not before the fork
        module._get_router()
        log.info(
            "gptload listening on http://%s:%d (store=%s, vault=%s)",
            config.host,
            config.port,
            config.store,
            config.vault,
        )
        log.info("console: %s (log in with AUTH_KEY)", console_url(config.host, config.port))

    def write_usage() -> None:  # stopping: write buffered usage now, then every event as soon as it is added
        router = module._router
        if router is not None:
            router.services.usage.drain()

    def cut_streams() -> None:  # the graceful period is nearly over: end relays, even of silent upstreams
        router = module._router
        if router is not None:
            router.services.forwarder.abort_streams()

    serve(app, config, post_worker_init=warm, on_stop=write_usage, on_cut=cut_streams)


if __name__ == "__main__":
    _serve()
