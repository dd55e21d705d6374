"""Drives tests/fakes/fake_gemini.py directly (no proxy) with the real SDKs, to prove the fake is faithful
enough for the end-to-end tests. Facts found here are written down in tests/fakes/SDK_NOTES.md."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import socket
import threading
import time
import warnings
from pathlib import Path

import pytest
import requests

from tests.fakes.fake_gemini import FakeGemini, Reply, errors, make_key

warnings.filterwarnings("ignore", category=FutureWarning)

import openai  # noqa: E402
from google import genai  # noqa: E402
from google.genai import errors as genai_errors  # noqa: E402
from google.genai import types  # noqa: E402
from openai import OpenAI  # noqa: E402

MODEL = "gemini-2.5-flash"


@pytest.fixture(scope="module")
def server():
    with FakeGemini() as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    return server


_clients: dict = {}  # kept alive: google-genai closes its HTTP client when the Client is garbage-collected


def gclient(fake, key=None, **http):
    ck = (fake.url, key or fake.keys[0], tuple(sorted(http.items())))
    if ck not in _clients:
        _clients[ck] = genai.Client(api_key=ck[1], http_options=types.HttpOptions(base_url=fake.url, **http))
    return _clients[ck]


def oclient(fake, key=None):
    return OpenAI(base_url=fake.url + "/v1beta/openai/", api_key=key or fake.keys[0], max_retries=0)


def legacy(fake, key=None):
    import google.generativeai as lg

    lg.configure(api_key=key or fake.keys[0], transport="rest", client_options={"api_endpoint": fake.url})
    return lg


def read_raw(port, request: bytes, timeout=5.0):
    """Send raw bytes, return (head, list of HTTP chunk payloads) of a chunked response."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request)
    f = s.makefile("rb")
    head = b""
    while True:
        line = f.readline()
        head += line
        if line in (b"\r\n", b""):
            break
    chunks = []
    while True:
        size = int(f.readline().strip(), 16)
        if size == 0:
            f.readline()
            break
        chunks.append(f.read(size))
        f.readline()
    s.close()
    return head.decode(), chunks


# --------------------------------------------------------------------------------------------- google-genai


def test_make_key_format():
    k = make_key(3)
    assert k.startswith("AIza") and len(k) == 39 and k == make_key(3) != make_key(4)


def test_genai_generate_default_v1_header_key(fake):
    r = gclient(fake).models.generate_content(model=MODEL, contents="hello there")
    assert r.text == "echo: hello there"
    u = r.usage_metadata
    assert u.prompt_token_count >= 1 and u.candidates_token_count >= 1
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    (req,) = fake.requests
    assert req.method == "POST" and req.path == f"/v1/models/{MODEL}:generateContent"
    assert req.api_version == "v1" and req.model == MODEL
    assert req.key == fake.keys[0] and req.key_source == "header"
    assert req.headers["X-GOOG-API-KEY"] == fake.keys[0]  # case-insensitive
    assert "key" not in req.query
    assert req.json() == {"contents": [{"parts": [{"text": "hello there"}], "role": "user"}]}
    # the fake stamps completed_at after the last byte went out, so the client can get there first: wait for it
    deadline = time.monotonic() + 5
    while req.completed_at is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert req.status == 200 and req.received_at <= req.completed_at


def test_genai_v1beta(fake):
    r = gclient(fake, api_version="v1beta").models.generate_content(model=MODEL, contents="hi")
    assert r.text == "echo: hi"
    assert fake.requests[0].path == f"/v1beta/models/{MODEL}:generateContent"


def test_genai_stream_chunks_arrive_spaced(fake):
    fake.stream_chunks = 4
    c = gclient(fake)
    list(c.models.generate_content_stream(model=MODEL, contents="warm up"))  # one-time SDK set-up cost
    fake.reset()
    fake.stream_chunks, fake.stream_interval = 4, 0.08
    recv, texts = [], []
    for ch in c.models.generate_content_stream(model=MODEL, contents="stream me please"):
        recv.append(time.monotonic())
        texts.append(ch.text)
    assert "".join(texts) == "echo: stream me please"
    (req,) = fake.requests
    assert req.raw_path.endswith(":streamGenerateContent?alt=sse")
    sent = req.chunk_times
    assert len(sent) == len(recv) == 4
    for i in range(4):
        assert recv[i] >= sent[i]
        if i + 1 < 4:
            # chunk i was in the client's hands before chunk i+1 was even sent: nothing buffers
            assert recv[i] < sent[i + 1]
            assert sent[i + 1] - sent[i] >= 0.07
    last = req.chunks[-1]
    assert last.startswith(b"data: ") and last.endswith(b"\r\n\r\n")
    obj = json.loads(last[6:])
    assert obj["candidates"][0]["finishReason"] == "STOP"
    assert {"promptTokenCount", "candidatesTokenCount", "totalTokenCount"} <= set(obj["usageMetadata"])


def test_genai_count_tokens_embed_list(fake):
    c = gclient(fake)
    assert c.models.count_tokens(model=MODEL, contents="hello world").total_tokens == 3
    e = c.models.embed_content(model="gemini-embedding-001", contents=["a", "b"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0].values) == 3072
    e1 = c.models.embed_content(
        model="text-embedding-004", contents="a", config=types.EmbedContentConfig(output_dimensionality=8)
    )
    assert len(e1.embeddings[0].values) == 8
    assert e.embeddings[0].values[:8] == e1.embeddings[0].values  # deterministic: derived from the text only
    models = list(c.models.list())
    names = [m.name for m in models]
    assert {
        "models/gemini-2.5-flash",
        "models/gemini-2.5-pro",
        "models/text-embedding-004",
        "models/gemini-embedding-001",
    } <= set(names)
    flash = c.models.get(model=MODEL)
    assert flash.input_token_limit == 1048576 and "generateContent" in flash.supported_actions
    paths = [r.path for r in fake.requests]
    assert paths[:3] == [
        f"/v1/models/{MODEL}:countTokens",
        "/v1/models/gemini-embedding-001:batchEmbedContents",
        "/v1/models/text-embedding-004:batchEmbedContents",
    ]
    assert "/v1/models" in paths and f"/v1/models/{MODEL}" in paths


def test_genai_files_upload_then_generate_and_affinity(fake):
    k1, k2 = fake.keys[:2]
    c1 = gclient(fake, k1)
    f = c1.files.upload(
        file=io.BytesIO(b"hello file"), config=types.UploadFileConfig(mime_type="text/plain", display_name="greeting")
    )
    assert f.name.startswith("files/") and f.state == types.FileState.ACTIVE and f.size_bytes == 10
    assert f.uri == f"{fake.url}/v1beta/files/{f.name[6:]}" and f.display_name == "greeting"
    start, chunk = fake.requests
    assert start.path == "/upload/v1/files" and start.key == k1
    assert start.headers["X-Goog-Upload-Command"] == "start"
    assert start.headers["X-Goog-Upload-Header-Content-Length"] == "10"
    assert chunk.key is None and chunk.effective_key == k1 and "upload_id" in chunk.query
    assert chunk.headers["X-Goog-Upload-Command"] == "upload, finalize" and chunk.body == b"hello file"
    assert fake.file_owner(f.name) == k1

    r = c1.models.generate_content(model=MODEL, contents=[f, "describe it"])
    assert r.text == "echo: describe it"
    assert c1.files.get(name=f.name).name == f.name
    assert [x.name for x in c1.files.list()] == [f.name]

    c2 = gclient(fake, k2)
    for call in (
        lambda: c2.files.get(name=f.name),
        lambda: c2.models.generate_content(model=MODEL, contents=[f, "x"]),
        lambda: c2.files.delete(name=f.name),
    ):
        with pytest.raises(genai_errors.ClientError) as ei:
            call()
        assert ei.value.code == 403 and ei.value.status == "PERMISSION_DENIED"
        assert f"You do not have permission to access the File {f.name[6:]}" in ei.value.message
    assert list(c2.files.list()) == []

    fake.set_project(k2, fake.project_of(k1))  # same project -> the file is visible
    assert c2.files.get(name=f.name).name == f.name
    c1.files.delete(name=f.name)
    with pytest.raises(genai_errors.ClientError):
        c1.files.get(name=f.name)


def test_genai_follows_upload_url_verbatim(fake):
    """google-genai 3.6.1 sends the chunks to X-Goog-Upload-URL exactly as given: it does not substitute the
    base_url host (the fake hands out a URL naming it as "localhost" while base_url says 127.0.0.1)."""
    fake.public_url = f"http://localhost:{fake.port}"
    f = gclient(fake).files.upload(file=io.BytesIO(b"x"), config={"mime_type": "text/plain"})
    start, chunk = fake.requests
    assert start.headers["Host"] == f"127.0.0.1:{fake.port}"
    assert chunk.headers["Host"] == f"localhost:{fake.port}" and chunk.path == "/upload/v1/files"
    assert f.uri == f"http://localhost:{fake.port}/v1beta/files/{f.name[6:]}"


def test_resumable_upload_curl_style_multi_chunk(fake):
    k = fake.keys[2]
    r = requests.post(
        f"{fake.url}/upload/v1beta/files?key={k}",
        headers={
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": "6",
            "X-Goog-Upload-Header-Content-Type": "text/plain",
        },
        json={"file": {"display_name": "six"}},
    )
    assert r.status_code == 200 and r.headers["X-Goog-Upload-Status"] == "active"
    url = r.headers["X-Goog-Upload-URL"]
    assert url.startswith(f"{fake.url}/upload/v1beta/files?upload_id=") and "upload_protocol=resumable" in url
    assert url.endswith(f"&key={k}")  # key echoed because the start used ?key=
    r1 = requests.post(url, headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"}, data=b"abc")
    assert r1.status_code == 200 and r1.headers["X-Goog-Upload-Status"] == "active"
    bad = requests.post(url, headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "1"}, data=b"x")
    assert bad.status_code == 400
    r2 = requests.post(
        url, headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "3"}, data=b"def"
    )
    assert r2.status_code == 200 and r2.headers["X-Goog-Upload-Status"] == "final"
    meta = r2.json()["file"]
    assert meta["sizeBytes"] == "6" and meta["displayName"] == "six" and meta["mimeType"] == "text/plain"
    assert fake.files[meta["name"][6:]]["data"] == b"abcdef" and fake.file_owner(meta["name"]) == k
    # header-authenticated start: no key in the upload URL
    r = requests.post(
        f"{fake.url}/upload/v1beta/files",
        headers={"x-goog-api-key": k, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"},
        json={},
    )
    assert "key=" not in r.headers["X-Goog-Upload-URL"]


# ------------------------------------------------------------------------------------------ errors & scripting


def test_scripted_errors_surface_as_genai_exceptions(fake):
    k = fake.keys[0]
    c = gclient(fake, k)
    fake.script(k, [errors.quota_per_minute(MODEL, retry_delay="26s"), errors.overloaded()])
    with pytest.raises(genai_errors.ClientError) as ei:
        c.models.generate_content(model=MODEL, contents="x")
    assert ei.value.code == 429 and ei.value.status == "RESOURCE_EXHAUSTED"
    details = ei.value.details["error"]["details"]
    assert details[0]["violations"][0]["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert details[-1] == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}
    with pytest.raises(genai_errors.ServerError) as ei:
        c.models.generate_content(model=MODEL, contents="x")
    assert ei.value.code == 503
    assert c.models.generate_content(model=MODEL, contents="x").text == "echo: x"  # script exhausted
    assert len(fake.requests) == 3 and [r.scripted for r in fake.requests] == [True, True, False]


def test_error_bodies_match_reference():
    ref = json.loads((Path(__file__).with_name("gemini_errors.json")).read_text())["cases"]
    by_name = {c["name"]: c for c in ref}
    pairs = {
        "invalid key": errors.invalid_key(),
        "key not found variant": errors.key_not_found(),
        "suspended": errors.suspended(),
        "api disabled on the key's project": errors.service_disabled(),
        "per-minute quota": errors.quota_per_minute("gemini-2.5-flash", "26s"),
        "per-minute input tokens quota": errors.quota_input_tokens_per_minute("gemini-2.5-pro", "41s"),
        "bare 429": errors.bare_429(),
        "overloaded": errors.overloaded(),
        "internal": errors.internal(),
        "deadline": errors.deadline(),
        "bad request body": errors.bad_request(),
        "unknown model": errors.not_found_model("gemini-9"),
        "region not supported": errors.region(),
        "another project's file": errors.other_project_file("abc123"),
    }
    for name, reply in pairs.items():
        case = by_name[name]
        assert reply.status == case["http_status"], name
        got, want = reply.body["error"], case["body"]["error"]
        assert (got["code"], got["status"], got["message"]) == (want["code"], want["status"], want["message"]), name
        if "details" in want:
            want_types = [d["@type"] for d in want["details"]]
            assert [d["@type"] for d in got["details"]][:1] == want_types[:1], name
            for d in want["details"]:
                if "reason" in d:
                    assert got["details"][0]["reason"] == d["reason"]
    day = errors.quota_per_day("gemini-2.5-flash")
    assert (
        day.body["error"]["details"][0]["violations"][0]["quotaId"]
        == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    )
    assert errors.quota_per_minute(retry_delay=None).body["error"]["details"][-1]["@type"].endswith("Help")


def test_auth_errors(fake):
    r = requests.post(
        f"{fake.url}/v1beta/models/{MODEL}:generateContent?key=AIzaNOTKNOWN",
        json={"contents": [{"parts": [{"text": "x"}]}]},
    )
    assert r.status_code == 400
    assert r.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert fake.requests[-1].key == "AIzaNOTKNOWN" and fake.requests[-1].key_source == "query"
    r = requests.post(f"{fake.url}/v1beta/models/{MODEL}:generateContent", json={"contents": []})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
    assert r.json()["error"]["message"].startswith("Method doesn't allow unregistered callers")
    with pytest.raises(genai_errors.ClientError) as ei:
        gclient(fake, "AIzaWRONG").models.generate_content(model=MODEL, contents="x")
    assert ei.value.code == 400 and ei.value.status == "INVALID_ARGUMENT"
    # Bearer is only honoured under /openai/
    r = requests.get(f"{fake.url}/v1beta/models", headers={"Authorization": f"Bearer {fake.keys[0]}"})
    assert r.status_code == 403


def test_set_behavior_and_filters(fake):
    k1, k2, k3 = fake.keys[:3]
    fake.set_behavior(k1, errors.suspended())
    fake.set_behavior(k2, lambda req: errors.overloaded() if ":generateContent" in req.path else None)
    for _ in range(2):
        with pytest.raises(genai_errors.ClientError) as ei:
            gclient(fake, k1).models.generate_content(model=MODEL, contents="x")
        assert ei.value.code == 403 and ei.value.details["error"]["details"][0]["reason"] == "CONSUMER_SUSPENDED"
    with pytest.raises(genai_errors.ServerError):
        gclient(fake, k2).models.generate_content(model=MODEL, contents="x")
    assert gclient(fake, k2).models.count_tokens(model=MODEL, contents="x").total_tokens == 1
    fake.set_behavior(k1, None)
    assert gclient(fake, k1).models.generate_content(model=MODEL, contents="ok").text == "echo: ok"
    # path filter and wildcard scripts
    fake.script(k3, [errors.bare_429()], path_contains=":generateContent")
    assert gclient(fake, k3).models.count_tokens(model=MODEL, contents="x").total_tokens == 1
    assert fake.pending_script(k3) == 1
    with pytest.raises(genai_errors.ClientError):
        gclient(fake, k3).models.generate_content(model=MODEL, contents="x")
    fake.script("*", [errors.region()])
    with pytest.raises(genai_errors.ClientError) as ei:
        gclient(fake, k2).models.list()
    assert ei.value.status == "FAILED_PRECONDITION"
    assert fake.keys_used(":generateContent") == [k1, k1, k2, k1, k3]


def test_unknown_path_model_and_bad_body(fake):
    r = requests.get(f"{fake.url}/nothing/here")
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/html")
    r = requests.get(f"{fake.url}/v1beta/bogus", headers={"x-goog-api-key": fake.keys[0]})
    assert r.status_code == 404 and r.json()["error"]["message"] == "Method not found."
    with pytest.raises(genai_errors.ClientError) as ei:
        gclient(fake, api_version="v1beta").models.generate_content(model="gemini-9", contents="x")
    assert ei.value.code == 404
    assert (
        ei.value.message == "models/gemini-9 is not found for API version v1beta, or is not supported for "
        "generateContent."
    )
    r = requests.post(
        f"{fake.url}/v1beta/models/{MODEL}:generateContent",
        headers={"x-goog-api-key": fake.keys[0]},
        json={"content": [{"parts": [{"text": "x"}]}]},
    )
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "message": 'Invalid JSON payload received. Unknown name "content": Cannot find field.',
        }
    }


def test_reply_delay_drop_and_reset_mid_stream(fake):
    k = fake.keys[0]
    fake.script(k, [Reply.ok(delay=0.1)])
    t = time.monotonic()
    gclient(fake, k).models.generate_content(model=MODEL, contents="x")
    assert time.monotonic() - t >= 0.1

    fake.script(k, [Reply.hang_up()])
    with pytest.raises(requests.ConnectionError):
        requests.post(
            f"{fake.url}/v1beta/models/{MODEL}:generateContent",
            headers={"x-goog-api-key": k},
            json={"contents": [{"parts": [{"text": "x"}]}]},
        )

    fake.stream_chunks = 5
    fake.script(k, [Reply.stream_reset(after_chunks=2)])
    got = []
    with pytest.raises(Exception):
        for ch in gclient(fake, k).models.generate_content_stream(model=MODEL, contents="a longer text here"):
            got.append(ch.text)
    assert len(got) == 2 and len(fake.requests[-1].chunk_times) == 2

    fake.reset_mid_stream_after = 1
    with pytest.raises(Exception):
        list(gclient(fake, k).models.generate_content_stream(model=MODEL, contents="abc"))
    fake.reset_mid_stream_after = None
    assert len(list(gclient(fake, k).models.generate_content_stream(model=MODEL, contents="abc"))) == 5

    fake.abort_mode = "rst"  # a real TCP RST: the client may lose already-sent bytes, so only the error is sure
    fake.script(k, [Reply.stream_reset(after_chunks=1)])
    with pytest.raises(Exception):
        list(gclient(fake, k).models.generate_content_stream(model=MODEL, contents="abc"))


# -------------------------------------------------------------------------------------------- wire formats


def test_json_array_stream_wire_format_one_http_chunk_each(fake):
    fake.stream_chunks = 3
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "array please"}]}]}).encode()
    req = (
        f"POST /v1beta/models/{MODEL}:streamGenerateContent HTTP/1.1\r\nHost: x\r\n"
        f"x-goog-api-key: {fake.keys[0]}\r\nContent-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    head, chunks = read_raw(fake.port, req)
    assert "Transfer-Encoding: chunked" in head and "application/json" in head
    assert len(chunks) == 3
    assert chunks[0].startswith(b"[{") and chunks[1].startswith(b",\r\n{") and chunks[2].endswith(b"\n]")
    arr = json.loads(b"".join(chunks))
    assert "".join(o["candidates"][0]["content"]["parts"][0]["text"] for o in arr) == "echo: array please"
    assert arr[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "candidatesTokenCount" in arr[-1]["usageMetadata"]
    assert "candidatesTokenCount" not in arr[0]["usageMetadata"]  # earlier chunks: prompt counts only

    req_sse = req.replace(b":streamGenerateContent", b":streamGenerateContent?alt=sse")
    head, chunks = read_raw(fake.port, req_sse)
    assert "Content-Type: text/event-stream" in head and len(chunks) == 3
    assert all(c.startswith(b"data: {") and c.endswith(b"}\r\n\r\n") for c in chunks)


def test_keep_alive_and_concurrency():
    """Counts every request the server saw, so it has a fake of its own: on the module's shared one, a request an
    earlier test left in flight (a retry, a late connection) could land here after the reset."""
    with FakeGemini() as fake:
        _keep_alive_and_concurrency(fake)


def _keep_alive_and_concurrency(fake):
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/v1beta/models", headers={"x-goog-api-key": fake.keys[0]})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["models"]
    conn.close()
    addresses = [(r.client_address, r.path) for r in fake.requests]
    assert len({a for a, _ in addresses}) == 1, addresses  # one TCP connection, three requests

    fake.reset()
    errs = []

    def worker(i):
        try:
            r = requests.post(
                f"{fake.url}/v1beta/models/{MODEL}:generateContent",
                headers={"x-goog-api-key": fake.keys[i % 5]},
                json={"contents": [{"parts": [{"text": f"n{i}"}]}]},
                timeout=30,
            )
            assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == f"echo: n{i}"
        except Exception as e:  # pragma: no cover
            errs.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errs, errs
    assert len(fake.requests) == 20, [(r.client_address, r.path) for r in fake.requests]


def test_gzip_option(fake):
    fake.gzip = True
    r = requests.get(f"{fake.url}/v1beta/models", headers={"x-goog-api-key": fake.keys[0]})
    assert r.headers["Content-Encoding"] == "gzip" and r.json()["models"]
    raw = requests.get(f"{fake.url}/v1beta/models", headers={"x-goog-api-key": fake.keys[0]}, stream=True).raw
    assert json.loads(gzip.decompress(raw.read(decode_content=False)))["models"]
    fake.stream_chunks = 3
    texts = [c.text for c in gclient(fake).models.generate_content_stream(model=MODEL, contents="zipped")]
    assert "".join(texts) == "echo: zipped"
    fake.gzip = False
    r = requests.get(f"{fake.url}/v1beta/models", headers={"x-goog-api-key": fake.keys[0]})
    assert "Content-Encoding" not in r.headers


# ------------------------------------------------------------------------------------------------- openai


def test_openai_chat_nonstream_stream_models(fake):
    oc = oclient(fake)
    r = oc.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi oai"}])
    assert r.choices[0].message.content == "echo: hi oai" and r.usage.total_tokens > 0
    req = fake.requests[-1]
    assert req.path == "/v1beta/openai/chat/completions" and req.key_source == "bearer"
    assert req.headers["authorization"] == f"Bearer {fake.keys[0]}" and req.model == MODEL

    fake.stream_chunks = 3
    list(oc.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "warm"}], stream=True))
    fake.stream_interval = 0.08  # (the first stream pays the SDK's one-time set-up cost)
    recv, parts, usage = [], [], None
    for ch in oc.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream oai"}], stream=True
    ):
        recv.append(time.monotonic())
        if ch.choices:
            parts.append(ch.choices[0].delta.content)
        usage = ch.usage or usage
    assert "".join(parts) == "echo: stream oai" and usage.total_tokens > 0
    sent = fake.requests[-1].chunk_times
    assert len(sent) == 3 and recv[0] < sent[1]
    assert fake.requests[-1].chunks[-1].endswith(b"data: [DONE]\n\n")

    ids = [m.id for m in oc.models.list()]
    assert "models/gemini-2.5-flash" in ids


def test_openai_errors_list_wrapped(fake):
    k = fake.keys[0]
    fake.script(k, [errors.quota_per_minute(MODEL)])
    with pytest.raises(openai.RateLimitError) as ei:
        oclient(fake, k).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert isinstance(ei.value.body, list) and ei.value.body[0]["error"]["status"] == "RESOURCE_EXHAUSTED"
    with pytest.raises(openai.BadRequestError) as ei:
        oclient(fake, "AIzaWRONG").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert ei.value.body[0]["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    fake.openai_error_style = "object"
    fake.script(k, [errors.overloaded()])
    with pytest.raises(openai.InternalServerError) as ei:
        oclient(fake, k).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert ei.value.body["code"] == 503  # openai SDK unwraps body["error"] for dict bodies


def test_openai_sdk_retries_429_by_default(fake):
    k = fake.keys[0]
    fake.script(k, [errors.bare_429()])
    oc = OpenAI(base_url=fake.url + "/v1beta/openai/", api_key=k)  # default max_retries=2
    oc.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1"]


# ------------------------------------------------------------------------------------------ legacy SDK


def test_legacy_generate_stream_count(fake):
    lg = legacy(fake)
    m = lg.GenerativeModel(MODEL)
    r = m.generate_content("hello legacy")
    assert r.text == "echo: hello legacy" and r.usage_metadata.total_token_count > 0
    req = fake.requests[-1]
    assert req.path == f"/v1beta/models/{MODEL}:generateContent" and req.key_source == "header"
    assert req.query == {"$alt": ["json;enum-encoding=int"]} and "%24alt=json%3Benum-encoding%3Dint" in req.raw_path
    fake.stream_chunks, fake.stream_interval = 4, 0.05
    texts = [c.text for c in m.generate_content("legacy stream", stream=True)]
    assert "".join(texts) == "echo: legacy stream" and len(texts) == 4
    req = fake.requests[-1]
    assert req.path.endswith(":streamGenerateContent") and "alt" not in req.query
    last = json.loads(req.chunks[-1][3:-2])
    assert last["candidates"][0]["finishReason"] == 1  # enum-encoding=int honoured
    assert m.count_tokens("hello world").total_tokens == 3
    assert fake.requests[-1].json()["generateContentRequest"]["model"] == f"models/{MODEL}"
    assert "models/gemini-2.5-pro" in [x.name for x in lg.list_models()]
    assert fake.requests[-1].query["pageSize"] == ["50"]


def test_legacy_scripted_429(fake):
    from google.api_core import exceptions as gexc

    k = fake.keys[1]
    fake.script(k, [errors.quota_per_day(MODEL)])
    with pytest.raises(gexc.TooManyRequests):
        legacy(fake, k).GenerativeModel(MODEL).generate_content("x")
