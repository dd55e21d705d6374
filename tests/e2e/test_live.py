"""The Live API (WebSocket ``BidiGenerateContent``) through the key pool: the real google-genai SDK
(``client.aio.live.connect``) and a plain websockets client, against ``python main.py`` serving TLS (the SDK always
uses wss://) with a self-signed certificate the clients trust through SSL_CERT_FILE, and the fake Live upstream
(tests/fakes/fake_live.py) on a real socket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import requests
from google import genai
from google.genai import types
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import AUTH_KEY, ROOT, Server, free_port, start_server, wait_for
from tests.fakes.fake_gemini import make_key
from tests.fakes.fake_live import FakeLive
from tests.fakes.tls import self_signed

MODEL = "gemini-live-2.5-flash"
LIVE_PATH = "ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
_counter = iter(range(10_000, 20_000))


def new_key() -> str:
    return make_key(next(_counter))


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, tls):
    cert, key = tls
    srv = start_server(
        tmp_path_factory.mktemp("live"), {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), "THREADS": "256"}
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def fake_live():
    with FakeLive() as fake:
        yield fake


@pytest.fixture(autouse=True)
def trust(monkeypatch, tls):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))  # read by google-genai when a client is created


def make_group(server, fake: FakeLive, good: int = 1, bad: list[str] | None = None, settings: dict | None = None):
    keys = [fake.add_key(new_key()) for _ in range(good)]
    return server.make_group(fake.url, [*(bad or []), *keys], settings=settings), keys


def sdk_client(group, **http) -> genai.Client:
    return genai.Client(api_key=group.proxy_key, http_options=types.HttpOptions(base_url=group.base, **http))


async def one_turn(client: genai.Client, text: str = "hello live world", config: dict | None = None) -> list:
    """Connect, send one text turn, return the server messages up to turnComplete (and any resumption update)."""
    received = []
    config = {"response_modalities": ["TEXT"], **(config or {})}
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": text}]})
        async for message in session.receive():
            received.append(message)
            if message.server_content and message.server_content.turn_complete:
                break
        if "session_resumption" in config:
            async for message in session.receive():
                received.append(message)
                if message.session_resumption_update:
                    break
    return received


def run_async(coro):
    """``asyncio.run(coro)`` in a thread of its own: another test's fixture (Playwright's sync API) may keep an event
    loop running in this thread for the whole session."""
    result: dict = {}

    def target():
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name="live-test-client")
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the client's event loop did not finish within 120 s"
    if "error" in result:
        raise result["error"]
    return result["value"]


def raw_ws(server, group, tls, *, key: str | None = None, path: str = LIVE_PATH):
    """A plain websockets client through the proxy (to choose close codes, read close frames)."""
    ctx = ssl.create_default_context(cafile=str(tls[0]))
    url = server.url.replace("https://", "wss://") + f"/proxy/{group.name}/{path}"
    return connect(
        url,
        ssl=ctx,
        additional_headers={"x-goog-api-key": key or group.proxy_key},
        proxy=None,
        open_timeout=30,  # a deadline on a shared machine, not a measure
        close_timeout=5,
    )


def logs(server, group) -> list[dict]:
    r = server.api("GET", f"/api/logs?group={group.name}&page_size=100")
    assert r.status_code == 200, r.text
    return r.json()["logs"]


def session_rows(server, group, n: int = 1) -> list[dict]:
    return wait_for(
        lambda: (
            [row for row in logs(server, group) if row["final"] and row["method"] == "WS"][:n]
            if len([row for row in logs(server, group) if row["final"] and row["method"] == "WS"]) >= n
            else None
        ),
        what=f"{n} live session rows",
    )


def test_a_text_turn_round_trips_with_a_pool_key_and_is_logged(live_server, fake_live):
    group, keys = make_group(live_server, fake_live)
    received = run_async(one_turn(sdk_client(group)))
    assert received[0].text == "echo: hello live world"
    assert not any(keys[0] in m.model_dump_json() for m in received)  # no real key reaches the client
    assert received[-1].usage_metadata.total_token_count == 7
    (record,) = fake_live.sessions_with(keys[0])
    assert record.key == keys[0]  # the real key went upstream...
    assert group.proxy_key not in json.dumps(record.headers)  # ...and the proxy key did not
    assert record.setup["model"] == f"models/{MODEL}"
    (row,) = session_rows(live_server, group)
    assert row["model"] == MODEL and row["key"] == f"{keys[0][:4]}...{keys[0][-4:]}"
    assert row["status_code"] == 1000 and row["success"] is True
    assert (row["prompt_tokens"], row["candidates_tokens"], row["total_tokens"]) == (3, 4, 7)
    assert "2 client / 2 server messages; closed by client 1000" in row["error"]
    stats = live_server.api("GET", "/api/stats/groups").json()["groups"]
    (mine,) = [g for g in stats if g["name"] == group.name]
    assert mine["24h"]["requests"] == 1 and mine["24h"]["failures"] == 0  # the session is one request
    assert mine["24h"]["total_tokens"] == 7


def test_a_refused_first_key_is_retried_transparently_and_disabled(live_server, fake_live):
    bad = new_key()  # unknown to the fake: 1007 "API key not valid..."
    group, keys = make_group(live_server, fake_live, bad=[bad])
    client = sdk_client(group)
    for _ in range(2):  # the rotation starts somewhere: two sessions try both keys
        assert run_async(one_turn(client))[0].text == "echo: hello live world"
    refused = [s for s in fake_live.sessions if s.key == bad]
    assert refused and refused[0].refused == 1007
    row = wait_for(lambda: group.row_of(bad) if group.row_of(bad)["status"] == "invalid" else None, what="invalid")
    assert "API_KEY_INVALID" in json.dumps(row)
    assert group.row_of(keys[0])["status"] == "active"


def test_a_quota_refusal_cools_that_key_for_that_model_only(live_server, fake_live):
    group, keys = make_group(live_server, fake_live, good=2)
    quota = keys[0]
    fake_live.quota_keys.add(quota)
    client = sdk_client(group)
    for _ in range(2):
        assert run_async(one_turn(client))[0].text == "echo: hello live world"
    assert any(s.refused == 1011 for s in fake_live.sessions_with(quota))
    row = group.row_of(quota)
    assert row["status"] != "invalid"
    assert [c["model"] for c in row["cooldowns"]] == [MODEL]
    assert all(s.refused is None for s in fake_live.sessions_with(keys[1]))


def test_google_side_failures_are_retried_and_never_condemn_a_key(live_server, fake_live):
    group, keys = make_group(live_server, fake_live, good=2)
    fake_live.internal_keys.add(keys[0])
    client = sdk_client(group)
    for _ in range(2):
        assert run_async(one_turn(client))[0].text == "echo: hello live world"
    assert any(s.refused == 1011 for s in fake_live.sessions_with(keys[0]))
    row = group.row_of(keys[0])
    assert row["status"] == "active" and row["cooldowns"] == []


def test_the_session_s_own_error_is_passed_through_once(live_server, fake_live, tls):
    group, keys = make_group(live_server, fake_live, good=2)
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": "models/unknown-model"}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008 and "unknown-model is not found" in closed.value.rcvd.reason
    assert sum(len(fake_live.sessions_with(k)) for k in keys) == 1  # not retried on the other key
    assert all(group.row_of(k)["status"] == "active" for k in keys)


def test_a_client_close_reaches_google_with_its_code_and_reason(live_server, fake_live, tls):
    group, keys = make_group(live_server, fake_live)
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        assert json.loads(ws.recv(timeout=10)) == {"setupComplete": {}}
        metrics = live_server.api("GET", "/metrics").text
        assert "\ngptload_live_sessions_open 1" in metrics  # the one session of this server running now
        ws.close(4001, "client says bye")
    (record,) = fake_live.sessions_with(keys[0])
    assert record.done.wait(10)
    assert (record.close_code, record.close_reason) == (4001, "client says bye")
    (row,) = session_rows(live_server, group)
    assert row["status_code"] == 4001 and "closed by client 4001 client says bye" in row["error"]


def test_an_upstream_close_reaches_the_client_with_pool_keys_scrubbed(live_server, fake_live, tls):
    group, keys = make_group(live_server, fake_live)
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)
        ws.send(json.dumps({"clientContent": {"turns": [{"parts": [{"text": "close 1011 key {key} is out"}]}]}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    code, reason = closed.value.rcvd.code, closed.value.rcvd.reason
    assert code == 1011 and reason.startswith("key ") and reason.endswith(" is out")
    assert keys[0] not in reason
    (row,) = session_rows(live_server, group)
    assert row["status_code"] == 1011 and row["success"] is False and keys[0] not in row["error"]


def test_a_pool_key_cut_by_the_close_frame_limit_is_dropped_from_the_reason(live_server, fake_live, tls):
    """Google cuts a close reason at 123 bytes: a key it quotes near the end arrives cut, which no whole-key match
    finds; 38 of its 39 characters would leave one to guess."""
    group, keys = make_group(live_server, fake_live)
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)
        ws.send(json.dumps({"clientContent": {"turns": [{"parts": [{"text": "close 1011 " + "x" * 85 + " {key}"}]}]}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    code, reason = closed.value.rcvd.code, closed.value.rcvd.reason
    assert code == 1011 and reason.startswith("x" * 85)
    assert keys[0][:12] not in reason
    (row,) = session_rows(live_server, group)
    assert keys[0][:12] not in row["error"]


def test_a_lost_upstream_connection_closes_the_client_with_1014(live_server, fake_live, tls):
    group, _ = make_group(live_server, fake_live)
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)
        ws.send(json.dumps({"clientContent": {"turns": [{"parts": [{"text": "drop"}]}]}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1014


def test_a_bad_proxy_key_is_refused_before_the_upgrade(live_server, fake_live, tls):
    group, _ = make_group(live_server, fake_live)
    port = int(live_server.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(tls[0]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(
                (
                    f"GET /proxy/{group.name}/{LIVE_PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(b'k' * 16).decode()}\r\n"
                    "Sec-WebSocket-Version: 13\r\nx-goog-api-key: not-the-proxy-key\r\n\r\n"
                ).encode()
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += s.recv(4096)
    head = answer.split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 401") and "upgrade: websocket" not in head
    client = genai.Client(api_key="wrong-key-123", http_options=types.HttpOptions(base_url=group.base))
    with pytest.raises(Exception, match="401"):
        run_async(one_turn(client))
    assert not fake_live.sessions_with("wrong-key-123")


def test_an_http_1_0_handshake_is_refused_without_an_upgrade(live_server, fake_live, tls):
    """RFC 6455 4.1: the opening handshake is HTTP/1.1 or higher; an HTTP/1.0 one got "HTTP/1.0 101"."""
    group, keys = make_group(live_server, fake_live)
    port = int(live_server.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(tls[0]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(
                (
                    f"GET /proxy/{group.name}/{LIVE_PATH} HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(b'k' * 16).decode()}\r\n"
                    f"Sec-WebSocket-Version: 13\r\nx-goog-api-key: {group.proxy_key}\r\n\r\n"
                ).encode()
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += s.recv(4096)
    head = answer.split(b"\r\n\r\n")[0].decode().lower()
    assert " 400 " in head.split("\r\n")[0] and "upgrade: websocket" not in head
    assert not fake_live.sessions_with(keys[0])


def test_fifty_concurrent_sessions(live_server, fake_live):
    group, _keys = make_group(live_server, fake_live, good=5)
    client = sdk_client(group)

    async def many():
        return await asyncio.gather(*(one_turn(client, f"session {i}") for i in range(50)))

    results = run_async(many())
    assert sorted(r[0].text for r in results) == sorted(f"echo: session {i}" for i in range(50))
    assert len(session_rows(live_server, group, 50)) == 50


def test_a_resumption_handle_brings_the_session_back_to_its_key(live_server, fake_live):
    group, _keys = make_group(live_server, fake_live, good=3)
    client = sdk_client(group)
    first = run_async(one_turn(client, config={"session_resumption": {}}))
    handle = next(m.session_resumption_update.new_handle for m in first if m.session_resumption_update)
    key = fake_live.handles[handle]
    for _ in range(3):  # whatever the rotation's position, the handle goes out with its key
        run_async(one_turn(client, config={"session_resumption": {"handle": handle}}))
    resumed = [s for s in fake_live.sessions if (s.setup or {}).get("sessionResumption", {}).get("handle") == handle]
    assert len(resumed) == 3 and {s.key for s in resumed} == {key}


def test_an_ephemeral_token_created_through_the_pool_goes_out_with_its_key(live_server, fake_live):
    group, _keys = make_group(live_server, fake_live, good=2)
    creator = sdk_client(group, api_version="v1alpha")
    with pytest.warns(Warning):  # the SDK's "experimental" warning
        token = creator.auth_tokens.create(config={"uses": 1})
    assert token.name.startswith("auth_tokens/")
    key = fake_live.tokens[token.name]
    client = genai.Client(
        api_key=token.name, http_options=types.HttpOptions(base_url=group.base, api_version="v1alpha")
    )
    with pytest.warns(Warning):  # the SDK's "experimental" warning
        assert run_async(one_turn(client))[0].text == "echo: hello live world"
    (record,) = [s for s in fake_live.sessions if s.token == token.name]
    assert record.key is None and record.path.endswith("BidiGenerateContentConstrained")
    assert fake_live.tokens[record.token] == key
    (row,) = session_rows(live_server, group)
    assert row["key"] == f"{key[:4]}...{key[-4:]}"


def test_an_ephemeral_token_is_never_stored_in_clear(live_server, fake_live):
    """The token calls Google by itself (it is a credential, like a key): its binding to the key that created it
    is kept under a digest of it, never the token."""
    group, _keys = make_group(live_server, fake_live)
    creator = sdk_client(group, api_version="v1alpha")
    with warnings.catch_warnings():  # the SDK's "experimental" warning (once per process)
        warnings.simplefilter("ignore")
        token = creator.auth_tokens.create(config={"uses": 1})
    secret = token.name.removeprefix("auth_tokens/").encode()
    stored = b"".join(p.read_bytes() for p in live_server.data_dir.rglob("*") if p.is_file())
    assert secret not in stored
    client = genai.Client(
        api_key=token.name, http_options=types.HttpOptions(base_url=group.base, api_version="v1alpha")
    )
    with warnings.catch_warnings():  # still bound: the session goes out with the token, never a pool key
        warnings.simplefilter("ignore")
        assert run_async(one_turn(client))[0].text == "echo: hello live world"
    (record,) = [s for s in fake_live.sessions if s.token == token.name]
    assert record.key is None


def test_a_refused_ephemeral_token_never_condemns_the_key_that_created_it(live_server, fake_live, tls):
    """A Constrained session goes out with the client's token, not the key: Google's key sentence then speaks of the
    token (expired, used up, revoked), never of the pool key, which must stay active."""
    group, keys = make_group(live_server, fake_live)
    creator = sdk_client(group, api_version="v1alpha")
    with warnings.catch_warnings():  # the SDK's "experimental" warning (once per process)
        warnings.simplefilter("ignore")
        token = creator.auth_tokens.create(config={"uses": 1})
    with fake_live._lock:
        del fake_live.tokens[token.name]  # expired at Google: refused with 1007 "API key not valid..."
    path = LIVE_PATH.replace("v1beta", "v1alpha") + "Constrained"
    with raw_ws(live_server, group, tls, key=token.name, path=path) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1007  # Google's words reach the client: its token was refused
    assert group.row_of(keys[0])["status"] == "active"
    assert run_async(one_turn(sdk_client(group)))[0].text == "echo: hello live world"  # the key still serves


def test_a_message_over_the_limit_closes_with_1009(live_server, fake_live, tls):
    group, keys = make_group(live_server, fake_live, settings={"live_max_message_bytes": 4096})
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)
        ws.send("x" * 8192)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1009
    (record,) = fake_live.sessions_with(keys[0])
    assert record.done.wait(10) and record.close_code == 1009  # Google is told why
    (row,) = session_rows(live_server, group)
    assert row["status_code"] == 1009 and "closed by client 1009" in row["error"]


def test_a_session_past_its_total_limit_is_closed_with_1008_however_busy(live_server, fake_live, tls):
    group, _keys = make_group(live_server, fake_live, settings={"live_max_session_seconds": 2})
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)

        def turn_or_closed():
            try:
                ws.send(json.dumps({"clientContent": {"turns": [{"parts": [{"text": "busy"}]}]}}))
                ws.recv(timeout=30)  # a deadline on a shared machine: the echo comes, or the close frame does
                return None
            except ConnectionClosed as exc:
                return exc

        closed = wait_for(turn_or_closed, seconds=60, what="the session limit", interval=0.2)
    assert closed.rcvd.code == 1008 and "session limit of 2 s" in closed.rcvd.reason
    (row,) = session_rows(live_server, group)
    assert row["status_code"] == 1008 and row["success"] is True  # gptload's own limit, not a failure


def test_an_idle_session_is_closed_with_1008(live_server, fake_live, tls):
    group, keys = make_group(live_server, fake_live, settings={"live_idle_timeout_seconds": 1})
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008 and "idle" in closed.value.rcvd.reason
    (record,) = fake_live.sessions_with(keys[0])
    assert record.done.wait(10) and record.close_code == 1000
    (row,) = session_rows(live_server, group)  # gptload's own limit on a healthy session: no failure
    assert row["status_code"] == 1008 and row["success"] is True and "outcome idle_limit" in row["error"]


def test_live_sessions_cannot_take_every_server_thread(tmp_path, fake_live):
    """Each session holds one of the server's THREADS for its life: past LIVE_MAX_SESSIONS (default half of them) a
    handshake gets 503 without an upgrade, so that plain HTTP requests (and the console) are still served."""
    server = start_server(tmp_path, {"THREADS": "4"})  # plain HTTP: a websockets client may use ws://
    try:
        group, _ = make_group(server, fake_live)
        url = server.url.replace("http://", "ws://") + f"/proxy/{group.name}/{LIVE_PATH}"
        opened, refused = 0, None
        with contextlib.ExitStack() as sessions:
            for _ in range(4):
                try:
                    ws = sessions.enter_context(
                        connect(url, additional_headers={"x-goog-api-key": group.proxy_key}, proxy=None)
                    )
                except InvalidStatus as exc:
                    refused = exc.response
                    break
                opened += 1
                ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
                assert json.loads(ws.recv(timeout=10)) == {"setupComplete": {}}
            assert opened == 2 and refused is not None and refused.status_code == 503
            error = json.loads(refused.body)["error"]
            assert error["status"] == "UNAVAILABLE" and error["details"][0]["reason"] == "LIVE_SESSIONS_FULL"
            assert refused.headers.get("Retry-After")
            assert requests.get(f"{server.url}/health", timeout=10).status_code == 200  # a thread is left for HTTP
        # a session over: its place is free again
        wait_for(lambda: server.api("GET", "/metrics").text.count("\ngptload_live_sessions_open 0") == 1, what="0 open")
        with connect(url, additional_headers={"x-goog-api-key": group.proxy_key}, proxy=None) as ws:
            ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
            assert json.loads(ws.recv(timeout=10)) == {"setupComplete": {}}
    finally:
        server.stop()


def test_sigterm_ends_live_sessions_with_1001_and_records_them(tmp_path, fake_live):
    server = start_server(tmp_path)  # plain HTTP: a websockets client may use ws://
    try:
        group, keys = make_group(server, fake_live)
        url = server.url.replace("http://", "ws://") + f"/proxy/{group.name}/{LIVE_PATH}"
        with connect(url, additional_headers={"x-goog-api-key": group.proxy_key}, proxy=None) as ws:
            ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
            ws.recv(timeout=10)
            server.process.terminate()
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1001
        (record,) = fake_live.sessions_with(keys[0])
        assert record.done.wait(10) and record.close_code == 1000
        assert server.process.wait(20) == 0
    finally:
        server.stop()
    again = start_server(tmp_path, data_dir=server.data_dir)
    try:
        (row,) = session_rows(again, group)
        assert row["status_code"] == 1001 and "closed by gptload 1001" in row["error"]
    finally:
        again.stop()


def test_through_an_aggregate_a_member_s_key_serves_and_a_dead_member_fails_over(live_server, fake_live):
    dead = live_server.make_group(fake_live.url, [new_key()])  # its only key is unknown to Google: 1007
    good, keys = make_group(live_server, fake_live)
    name, proxy_key = f"agg-{good.name}", f"pk-agg-{good.name}"
    r = live_server.api(
        "POST",
        "/api/groups",
        json={
            "name": name,
            "group_type": "aggregate",
            "sub_groups": [{"name": dead.name, "weight": 1}, {"name": good.name, "weight": 1}],
            "proxy_keys": [proxy_key],
        },
    )
    assert r.status_code == 201, r.text
    client = genai.Client(api_key=proxy_key, http_options=types.HttpOptions(base_url=f"{live_server.url}/proxy/{name}"))
    for _ in range(2):  # the weighted choice starts somewhere: both members get a session
        assert run_async(one_turn(client))[0].text == "echo: hello live world"
    assert len(fake_live.sessions_with(keys[0])) == 2
    assert dead.row_of(dead.keys[0])["status"] == "invalid"
    rows = session_rows(live_server, good, 2)
    assert {row["aggregate"] for row in rows} == {name} and {row["group"] for row in rows} == {good.name}


def test_the_deployed_entry_point_serves_live_sessions_and_ends_them_at_sigterm(tmp_path, fake_live):
    """functions-framework's own server (what Cloud Run runs: `--target handler`), not python main.py's."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORE", "VAULT", "GOOGLE_CLOUD", "FIRESTORE"))}
    env.update({"AUTH_KEY": AUTH_KEY, "DATA_DIR": str(tmp_path / "data"), "MAINTENANCE_INTERVAL_SECONDS": "0"})
    log = (tmp_path / "ff.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "functions_framework",
            "--target",
            "handler",
            "--source",
            "main.py",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, tmp_path / "data", tmp_path / "ff.log", env)
    try:
        wait_for(lambda: _healthy(server), seconds=30, what="functions-framework to serve")
        group, keys = make_group(server, fake_live)
        url = server.url.replace("http://", "ws://") + f"/proxy/{group.name}/{LIVE_PATH}"
        with connect(url, additional_headers={"x-goog-api-key": group.proxy_key}, proxy=None) as ws:
            ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
            assert json.loads(ws.recv(timeout=10)) == {"setupComplete": {}}
            ws.send(json.dumps({"clientContent": {"turns": [{"parts": [{"text": "via ff"}]}]}}))
            assert json.loads(ws.recv(timeout=10))["serverContent"]["modelTurn"]["parts"][0]["text"] == "echo: via ff"
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1001, server.log()
        (record,) = fake_live.sessions_with(keys[0])
        assert record.done.wait(10) and record.close_code == 1000
        proc.wait(30)
    finally:
        server.stop()
        log.close()


def _healthy(server) -> bool:
    try:
        return requests.get(f"{server.url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _rss_mib(pid: int) -> float:
    """RSS of ``pid`` and its children (python main.py: gunicorn's arbiter and its worker)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
        status = Path(f"/proc/{p}/status").read_text()
        total += int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    return total / 1024


def test_a_client_that_does_not_read_holds_google_back_without_growing_memory(live_server, fake_live, tls):
    """Backpressure: 2,000 messages of 50 KB (100 MB) offered to a client that reads none of them stall Google's
    sender after the bounded queues and socket buffers fill; the proxy's memory does not take them in; then the
    client reads every one, in order."""
    group, keys = make_group(live_server, fake_live)
    count, size = 2000, 50_000
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)
        (record,) = fake_live.sessions_with(keys[0])
        before = _rss_mib(live_server.process.pid)
        ws.send(json.dumps({"clientContent": {"turns": [{"parts": [{"text": f"flood {count} {size}"}]}]}}))
        wait_for(
            lambda: record.sending_since is not None and time.monotonic() - record.sending_since > 1.0,
            seconds=30,
            what="the fake's send to block (backpressure)",
        )
        assert record.sent < count // 2  # held back: far from everything was taken in
        assert _rss_mib(live_server.process.pid) - before < 60  # MiB: the queues, not the 100 MB offered
        for i in range(count):
            text = json.loads(ws.recv(timeout=30))["serverContent"]["modelTurn"]["parts"][0]["text"]
            assert text.startswith(f"flood {i} ")
    assert record.sent == count + 1  # and setupComplete


def test_a_group_s_model_redirect_strict_mode_and_header_rules_apply_to_the_setup(live_server, fake_live, tls):
    group, keys = make_group(
        live_server,
        fake_live,
        settings=None,
    )
    r = live_server.api(
        "PUT",
        f"/api/groups/{group.name}",
        json={
            "model_redirect_rules": {"my-live": "gemini-live-2.5-flash"},
            "model_redirect_strict": True,
            "header_rules": [{"key": "X-Team", "value": "${GROUP_NAME}", "action": "set"}],
        },
    )
    assert r.status_code == 200, r.text
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": "models/my-live"}}))
        assert json.loads(ws.recv(timeout=10)) == {"setupComplete": {}}
    (record,) = fake_live.sessions_with(keys[0])
    assert record.setup["model"] == "models/gemini-live-2.5-flash" and record.headers["X-Team"] == group.name
    (row,) = session_rows(live_server, group)
    assert row["model"] == "gemini-live-2.5-flash" and row["requested_model"] == "my-live"
    with raw_ws(live_server, group, tls) as ws:  # strict: a model that is not a redirect source is refused
        ws.send(json.dumps({"setup": {"model": "models/other"}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008 and "MODEL_NOT_ALLOWED" in closed.value.rcvd.reason
    assert len(fake_live.sessions_with(keys[0])) == 1  # nothing went upstream


def test_an_access_key_opens_sessions_within_its_groups_models_and_limits(live_server, fake_live, tls):
    group, keys = make_group(live_server, fake_live)
    other, _ = make_group(live_server, fake_live)
    r = live_server.api(
        "POST",
        "/api/access-keys",
        json={"name": "live client", "groups": [group.name], "models": ["gemini-live*"], "rpm_limit": 2},
    )
    assert r.status_code == 201, r.text
    access, secret = r.json()["access_key"], r.json()["key"]
    client = genai.Client(api_key=secret, http_options=types.HttpOptions(base_url=group.base))
    assert run_async(one_turn(client))[0].text == "echo: hello live world"  # session 1 of 2 this minute
    (row,) = session_rows(live_server, group)
    assert row["access_key"] == access["id"]
    upstream = len(fake_live.sessions_with(keys[0]))

    def refused_setup(model: str) -> tuple[int, str]:
        with raw_ws(live_server, group, tls, key=secret) as ws:
            ws.send(json.dumps({"setup": {"model": f"models/{model}"}}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        return closed.value.rcvd.code, closed.value.rcvd.reason

    code, reason = refused_setup("gemini-2.5-pro")  # outside the key's models: refused, not counted
    assert code == 1008 and "ACCESS_DENIED" in reason
    assert run_async(one_turn(client))[0].text == "echo: hello live world"  # session 2 of 2
    code, reason = refused_setup(MODEL)  # over rpm_limit: "try again later"
    assert code == 1013 and "RATE_LIMITED" in reason
    assert len(fake_live.sessions_with(keys[0])) == upstream + 1  # neither refusal reached Google
    foreign = genai.Client(api_key=secret, http_options=types.HttpOptions(base_url=other.base))
    with pytest.raises(Exception, match="403"):  # a group the key may not use: refused before the upgrade
        run_async(one_turn(foreign))


def test_an_access_key_with_a_model_scope_or_limits_cannot_mint_an_ephemeral_token(live_server, fake_live, tls):
    """A token calls Google directly for any model, and a session with it skips the access key's checks: a key
    with a model scope or limits would bypass both. Refused as strict mode refuses it; an unrestricted key may."""
    group, keys = make_group(live_server, fake_live)
    r = live_server.api(
        "POST",
        "/api/access-keys",
        json={"name": "scoped", "groups": [group.name], "models": ["gemini-live*"], "rpm_limit": 100},
    )
    assert r.status_code == 201, r.text
    scoped = r.json()["key"]
    mint = f"{group.base}/v1alpha/auth_tokens"
    answer = requests.post(mint, headers={"x-goog-api-key": scoped}, json={"uses": 1}, timeout=30, verify=str(tls[0]))
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["details"][0]["reason"] == "ACCESS_DENIED"
    assert not any(fake_live.tokens.get(t) == keys[0] for t in fake_live.tokens)  # nothing minted at Google
    r = live_server.api("POST", "/api/access-keys", json={"name": "open", "groups": [group.name]})
    assert r.status_code == 201, r.text
    answer = requests.post(
        mint, headers={"x-goog-api-key": r.json()["key"]}, json={"uses": 1}, timeout=30, verify=str(tls[0])
    )
    assert answer.status_code == 200 and answer.json()["name"].startswith("auth_tokens/")


# -- hardening: setup deadline, bounded memory, recorded outcomes ----------------------------------------------------
def _live_metric(server, outcome: str) -> float:
    for line in server.api("GET", "/metrics").text.splitlines():
        if line.startswith(f'gptload_live_sessions_ended_total{{outcome="{outcome}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_sends_no_setup_is_closed_at_the_setup_deadline_without_using_a_key(live_server, fake_live, tls):
    """A client that upgrades and then says nothing would hold a server thread (one of LIVE_MAX_SESSIONS) until the
    idle limit: it is closed at ``live_setup_timeout_seconds`` instead, counted, and no key is used for it."""
    group, keys = make_group(live_server, fake_live, settings={"live_setup_timeout_seconds": 1})
    before = _live_metric(live_server, "setup_timeout")
    with raw_ws(live_server, group, tls) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=60)  # a deadline on a shared machine: the close comes after about 1 s
    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == "gptload: no setup message within 1 s"
    assert fake_live.sessions_with(keys[0]) == []  # Google never heard of it
    (row,) = session_rows(live_server, group)
    assert row["status_code"] == 1008 and row["success"] is False and not row["key"]
    assert "outcome setup_timeout" in row["error"]
    assert _live_metric(live_server, "setup_timeout") == before + 1


def test_the_setup_deadline_is_a_setting_with_a_default(live_server):
    schema = {s["name"]: s for s in live_server.api("GET", "/api/settings/schema").json()["schema"]}
    spec = schema["live_setup_timeout_seconds"]
    assert spec["default"] == 15 and spec["group_overridable"] is True
    r = live_server.api("PUT", "/api/settings", json={"live_setup_timeout_seconds": 0})
    assert r.status_code == 400  # out of range: refused, nothing changed


def test_a_message_over_the_default_limit_closes_with_1009_and_the_instance_stays_healthy(live_server, fake_live, tls):
    """The default ``live_max_message_bytes`` is 1 MiB (what google-genai itself accepts from Google): a bigger
    message closes its sender with 1009, and the instance keeps serving."""
    group, keys = make_group(live_server, fake_live)
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)
        ws.send(json.dumps({"realtimeInput": {"text": "x" * (1024 * 1024 + 1)}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1009
    (record,) = fake_live.sessions_with(keys[0])
    assert record.done.wait(10) and record.close_code == 1009 and record.received == 0  # never relayed
    assert live_server.api("GET", "/health").status_code == 200
    (row,) = session_rows(live_server, group)
    assert row["status_code"] == 1009 and row["success"] is False and "outcome client_error" in row["error"]
    assert run_async(one_turn(sdk_client(group)))[0].text == "echo: hello live world"


def test_a_flooding_client_is_held_back_by_a_google_that_does_not_read_without_growing_memory(
    live_server, fake_live, tls
):
    """80 messages of 900 KB (72 MB) from a client while Google reads none: the proxy's bounded queues fill, then TCP
    backpressure stops the client's sends; the proxy's memory does not take them in, it stays healthy, and once Google
    reads again every message arrives, in order."""
    group, keys = make_group(live_server, fake_live)
    count, size = 80, 900_000
    sent = [0]
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)
        (record,) = fake_live.sessions_with(keys[0])
        ws.send(json.dumps({"clientContent": {"turns": [{"parts": [{"text": "hold"}]}]}}))
        assert record.holding.wait(30)
        before = _rss_mib(live_server.process.pid)

        def flood() -> None:
            for i in range(count):
                ws.send(json.dumps({"realtimeInput": {"text": f"{i} " + "x" * size}}))
                sent[0] += 1

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        last = {"n": -1, "since": time.monotonic()}

        def stalled() -> bool:
            if sent[0] != last["n"]:
                last["n"], last["since"] = sent[0], time.monotonic()
            return time.monotonic() - last["since"] > 1.5

        wait_for(stalled, seconds=60, what="the client's sends to block (backpressure)", interval=0.1)
        assert sent[0] < count  # held back (the rest waits in socket buffers and the fake's own queue)
        assert _rss_mib(live_server.process.pid) - before < 40  # MiB: a few bounded messages, not the 72 MB offered
        assert live_server.api("GET", "/health").status_code == 200
        record.release.set()
        sender.join(60)
        assert not sender.is_alive() and sent[0] == count
        wait_for(lambda: record.received == count + 1, seconds=60, what="every message to reach Google")
    assert [int(m["realtimeInput"]["text"].split(" ", 1)[0]) for m in record.messages[1:]] == list(range(count))
    (row,) = session_rows(live_server, group)
    assert row["status_code"] == 1000 and row["success"] is True and "outcome client_closed" in row["error"]


def test_a_session_s_row_says_how_it_ended(live_server, fake_live, tls):
    """The recorded outcome follows what happened: Google's error close is a failure (gptload's idle limit, which is
    not, is checked in ``test_an_idle_session_is_closed_with_1008``)."""
    group, _keys = make_group(live_server, fake_live)
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)
        ws.send(
            json.dumps({"clientContent": {"turns": [{"parts": [{"text": "close 1011 Internal error occurred."}]}]}})
        )
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    (row,) = session_rows(live_server, group)
    assert row["status_code"] == 1011 and row["success"] is False and "outcome upstream_error" in row["error"]


def test_a_session_whose_upstream_reports_absurd_token_counts_keeps_its_usage_row(live_server, fake_live, tls):
    """A ``usageMetadata`` count past any model's answer (beyond the stores' 64-bit integers) is not believed, as
    for HTTP (``tokens.MAX_TOKENS``): the session's row is written with the believable counts, never rejected by the
    store and dropped with the session's request count."""
    group, _keys = make_group(live_server, fake_live)
    with raw_ws(live_server, group, tls) as ws:
        ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        ws.recv(timeout=10)
        ws.send(json.dumps({"clientContent": {"turns": [{"parts": [{"text": f"usage {10**20}"}]}]}}))
        ws.recv(timeout=10)
        ws.send(json.dumps({"clientContent": {"turns": [{"parts": [{"text": "two words"}]}]}}))
        ws.recv(timeout=10)
    (row,) = session_rows(live_server, group)
    assert (row["prompt_tokens"], row["candidates_tokens"], row["total_tokens"]) == (2, 3, 5)
    assert row["success"] is True and "outcome client_closed" in row["error"]


def test_a_session_limit_shorter_than_the_setup_deadline_still_ends_a_silent_client_as_a_setup_timeout(
    live_server, fake_live, tls
):
    """A client that never sends its setup is a failed ``setup_timeout`` whichever limit comes first: with
    ``live_max_session_seconds`` under ``live_setup_timeout_seconds`` it is closed at the session limit, not counted
    as a healthy session that reached it."""
    group, keys = make_group(
        live_server, fake_live, settings={"live_max_session_seconds": 1, "live_setup_timeout_seconds": 60}
    )
    before = _live_metric(live_server, "setup_timeout")
    with raw_ws(live_server, group, tls) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)  # a deadline on a shared machine: the close comes after about 1 s
    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == "gptload: no setup message within 1 s"
    assert fake_live.sessions_with(keys[0]) == []
    (row,) = session_rows(live_server, group)
    assert row["success"] is False and "outcome setup_timeout" in row["error"]
    assert _live_metric(live_server, "setup_timeout") == before + 1
