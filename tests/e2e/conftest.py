"""End-to-end harness: the real server (``python main.py``: gunicorn gthread via functions-framework) in a
subprocess, a fake Gemini upstream on a real socket, and helpers to create groups through the admin API.

The server is shared by the tests of a session (each test makes its own group with its own keys); tests that
need their own process (restart, settings) start one with ``start_server``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.fakes.fake_gemini import FakeGemini

ROOT = Path(__file__).resolve().parents[2]
AUTH_KEY = "e2e-admin-key-0123456789"


def wait_for(condition, seconds: float = 30, what: str = "the condition", interval: float = 0.05):
    """Poll ``condition`` until it returns a truthy value (returned), failing after ``seconds``.

    Use it before reading request logs or statistics right after a proxied answer: a relayed answer's usage row is
    added when the relay ends, a moment *after* the client has read its last byte (known Content-Length), so a read
    issued at once may not include it yet."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    data_dir: Path
    log_path: Path
    env: dict = field(default_factory=dict)
    verify: str | bool = True  # the CA bundle that trusts the server (a TLS server's self-signed certificate)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    # -- admin API helpers ----------------------------------------------------------------------------------
    def api(self, method: str, path: str, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {AUTH_KEY}")
        kw.setdefault("verify", self.verify)
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)

    def make_group(self, upstream: str, keys: list[str], settings: dict | None = None, name: str | None = None):
        name = name or f"g-{uuid.uuid4().hex[:10]}"
        proxy_key = f"pk-{uuid.uuid4().hex}"
        r = self.api(
            "POST",
            "/api/groups",
            json={
                "name": name,
                "upstreams": [{"url": upstream, "weight": 1}],
                "proxy_keys": [proxy_key],
                "settings": settings or {},
            },
        )
        assert r.status_code == 201, r.text
        r = self.api("POST", f"/api/groups/{name}/keys", json={"keys": "\n".join(keys)})
        assert r.status_code == 200 and r.json()["added"] == len(keys), r.text
        return Group(self, name, proxy_key, keys)


@dataclass
class Group:
    server: Server
    name: str
    proxy_key: str
    keys: list[str]

    @property
    def base(self) -> str:
        return f"{self.server.url}/proxy/{self.name}"

    def key_rows(self) -> list[dict]:
        r = self.server.api("GET", f"/api/groups/{self.name}/keys?page_size=500")
        assert r.status_code == 200, r.text
        return r.json()["keys"]

    def row_of(self, secret: str) -> dict:
        masked = f"{secret[:4]}...{secret[-4:]}"
        (row,) = [r for r in self.key_rows() if r["key"] == masked]
        return row


def _listens_on(pid: int, port: int) -> bool | None:
    """Is process ``pid`` the one listening on 127.0.0.1:``port``? (None where /proc cannot tell.) A port from
    ``free_port`` is free when chosen, not when the server binds it: another process may take it in between, and a
    health check would then be answered by that process."""
    try:
        fds = {link.readlink().name for link in Path(f"/proc/{pid}/fd").iterdir()}
        rows = [r.split() for t in ("tcp", "tcp6") for r in Path(f"/proc/net/{t}").read_text().splitlines()[1:]]
    except OSError:
        return None
    listening = {f"socket:[{r[9]}]" for r in rows if r[1].endswith(f":{port:04X}") and r[3] == "0A"}  # any address
    return bool(listening & fds)


def start_server(tmp_path: Path, extra_env: dict | None = None, data_dir: Path | None = None) -> Server:
    """A real server (``python main.py``) on a free port, healthy; started again on another port if the one chosen
    was taken by another process before the server could bind it."""
    for _ in range(3):
        server = _start_server(tmp_path, extra_env, data_dir)
        if server is not None:
            return server
    raise RuntimeError("no free port could be bound in three tries")


def _start_server(tmp_path: Path, extra_env: dict | None, data_dir: Path | None) -> Server | None:
    port = free_port()
    data_dir = data_dir or tmp_path / f"data-{port}"
    log_path = tmp_path / f"server-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORE", "VAULT", "GOOGLE_CLOUD", "FIRESTORE"))}
    env.update(
        {
            "AUTH_KEY": AUTH_KEY,
            "PORT": str(port),
            "DATA_DIR": str(data_dir),
            "THREADS": "16",
            "MAINTENANCE_INTERVAL_SECONDS": "0",
            "STATE_REFRESH_SECONDS": "0.5",
            "LOG_LEVEL": "INFO",
        }
    )
    for name, value in (extra_env or {}).items():  # None removes a variable (the server's default applies)
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    tls = env.get("TLS_CERT_FILE")  # a TLS server: https, its certificate trusted by the helpers
    server = Server(f"{'https' if tls else 'http'}://127.0.0.1:{port}", proc, data_dir, log_path, env, tls or True)
    deadline = time.monotonic() + 60  # a deadline on a loaded machine (several servers may start at once)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if "Connection in use" in server.log():  # gunicorn could not bind the port: another process has it
                return None
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            healthy = requests.get(f"{server.url}/health", timeout=1, verify=server.verify).status_code == 200
        except requests.RequestException:
            healthy = False
        if healthy:
            if _listens_on(proc.pid, port) is False:  # another process answered on the port this one was given
                server.stop()
                return None
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")


@pytest.fixture(scope="session")
def fake_session():
    with FakeGemini(n_keys=0) as fake:
        yield fake


@pytest.fixture
def fake(fake_session):
    fake_session.reset()
    return fake_session


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("e2e"))
    yield srv
    srv.stop()


@pytest.fixture
def group(server, fake):
    """A fresh group of three real keys known to the fake upstream."""
    keys = [fake.add_key() for _ in range(3)]
    return server.make_group(fake.url, keys)
