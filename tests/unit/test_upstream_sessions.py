"""``upstream.Sessions``: one pooled session per egress proxy, pruned when no group uses its proxy any more, without
cutting a call in flight; the app prunes after every reload of the pool's view (a group edited or deleted)."""

from __future__ import annotations

import http.server
import threading

import pytest

from gptload.proxy.upstream import Sessions, make_session, prepare
from tests.fakes.forward_proxy import ForwardProxy
from tests.unit.admin_client import AdminClient


class _SlowStream(http.server.BaseHTTPRequestHandler):
    """Sends a first chunk, then waits for the test's go-ahead before the rest."""

    go: threading.Event
    started: threading.Event

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "10")
        self.end_headers()
        self.wfile.write(b"first")
        self.wfile.flush()
        self.started.set()
        self.go.wait(10)
        self.wfile.write(b"-last")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def origin():
    handler = type("H", (_SlowStream,), {"go": threading.Event(), "started": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server, handler
    handler.go.set()
    server.shutdown()
    server.server_close()


def test_prune_forgets_unused_proxies_and_lets_a_call_in_flight_finish(origin):
    server, handler = origin
    sessions = Sessions(make_session(4), 4)
    with ForwardProxy() as proxy, ForwardProxy() as other:
        url, kept = f"http://127.0.0.1:{proxy.port}", f"http://127.0.0.1:{other.port}"
        session = sessions.for_proxy(url)
        assert sessions.for_proxy(url) is session and sessions.for_proxy(kept) is not session
        assert sessions.for_proxy("direct") is sessions.direct and sessions.for_proxy("") is sessions.direct
        target = f"http://127.0.0.1:{server.server_port}/stream"
        resp = session.send(prepare("GET", target, {}, b""), stream=True, timeout=10)
        assert handler.started.wait(10)
        assert resp.raw.read(5) == b"first"
        assert sessions.prune({kept, ""}) == 1
        assert sessions.proxies() == {kept}
        handler.go.set()
        assert resp.raw.read(5) == b"-last"  # the pruned session's call in flight was not cut
        resp.close()
        assert sessions.for_proxy(url) is not session  # a proxy used again gets a fresh session
        assert proxy.requests == [("GET", target)]
    sessions.close()


def test_the_app_prunes_a_deleted_or_edited_groups_proxy_session(tmp_path):
    admin = AdminClient(tmp_path)
    try:
        body = {"proxy_keys": ["proxy-key-0001"], "settings": {"proxy_url": "http://127.0.0.1:3128"}}
        assert admin.open("POST", "/api/groups", body={"name": "g1", **body}).status_code == 201
        assert admin.open("POST", "/api/groups", body={"name": "g2", **body}).status_code == 201
        sessions, pool = admin.services.sessions, admin.services.pool
        sessions.for_proxy(pool.view("g1").settings.proxy_url)
        assert sessions.proxies() == {"http://127.0.0.1:3128"}
        admin.open("PUT", "/api/groups/g1", body={"settings": {"proxy_url": "direct"}})
        assert sessions.proxies() == {"http://127.0.0.1:3128"}  # g2 still uses it
        assert admin.open("DELETE", "/api/groups/g2").status_code == 200
        assert sessions.proxies() == set()
    finally:
        admin.close()
