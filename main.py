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


def _accept_websockets() -> None:
    """werkzeug routes a WebSocket handshake only to rules marked ``websocket`` and answers 400 otherwise, before
    any view runs; functions-framework's catch-all rule is not one. While functions-framework loads this module
    (inside its app's context, deployed or under ``python main.py``), add one for the Live API's paths."""
    import flask

    if flask.has_app_context():
        from werkzeug.routing import Rule

        flask.current_app.url_map.add(Rule("/proxy/<path:path>", endpoint="run", websocket=True, methods=["GET"]))


_accept_websockets()


def _stop_live_sessions_on_sigterm() -> None:
    """Under functions-framework's own gunicorn (the deployed service), nothing of ours runs at SIGTERM, and Cloud Run
    kills the instance 10 s later: Live sessions would be cut without a close frame and their usage rows lost.
    functions-framework imports this module before gunicorn starts its worker: wrap the worker's SIGTERM handler
    (``handle_exit`` of gunicorn's sync and gthread workers) so that it first closes every Live session with 1001
    and writes usage at once (in a thread: this is a signal handler), then does what it did. Under ``python
    main.py`` gptload's worker does the same through ``on_stop``; both are idempotent."""
    import flask

    if not flask.has_app_context():
        return  # not loaded by functions-framework
    from gunicorn.workers.base import Worker
    from gunicorn.workers.gthread import ThreadWorker

    def stop_live_sessions() -> None:
        router = _router
        if router is not None:

            def stop() -> None:
                router.services.live.shutdown(wait=5.0)
                router.services.usage.drain()

            threading.Thread(target=stop, name="gptload-live-stop", daemon=True).start()

    for cls in (Worker, ThreadWorker):  # sync (THREADS=1) and gthread
        original = cls.__dict__["handle_exit"]
        if getattr(original, "gptload_live", False):
            continue

        def handle_exit(self, sig, frame, original=original):
            stop_live_sessions()
            original(self, sig, frame)

        handle_exit.gptload_live = True
        cls.handle_exit = handle_exit


_stop_live_sessions_on_sigterm()


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
            "gptload listening on %s://%s:%d (store=%s, vault=%s)",
            "https" if config.tls_cert_file else "http",
            config.host,
            config.port,
            config.store,
            config.vault,
        )
        log.info("console: %s (log in with AUTH_KEY)", console_url(config.host, config.port))

    def write_usage() -> None:  # stopping: write buffered usage now, then every event as soon as it is added
        router = module._router
        if router is not None:
            router.services.live.shutdown()  # Live sessions end at once (close 1001), each records its usage row
            router.services.usage.drain()

    def cut_streams() -> None:  # the graceful period is nearly over: end relays, even of silent upstreams
        router = module._router
        if router is not None:
            router.services.forwarder.abort_streams()

    serve(app, config, post_worker_init=warm, on_stop=write_usage, on_cut=cut_streams)


if __name__ == "__main__":
    _serve()
