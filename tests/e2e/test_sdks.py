"""The real client SDKs, pointed at the real server, against a fake Gemini on a real socket."""

from __future__ import annotations

import io
import threading
from urllib.parse import unquote

import pytest
import requests
from google import genai
from google.genai import types

from tests.fakes.fake_gemini import errors


def client(group, api_version: str | None = None) -> genai.Client:
    opts = (
        types.HttpOptions(base_url=group.base, api_version=api_version)
        if api_version
        else types.HttpOptions(base_url=group.base)
    )
    return genai.Client(api_key=group.proxy_key, http_options=opts)


@pytest.mark.parametrize("api_version", [None, "v1beta"])
def test_genai_generate_goes_out_with_a_real_key_and_the_body_unchanged(group, fake, api_version):
    c = client(group, api_version)  # keep a reference: a collected Client closes its HTTP client
    reply = c.models.generate_content(model="gemini-2.5-flash", contents="ping 42")
    assert reply.text == "echo: ping 42"
    assert reply.usage_metadata.total_token_count > 0
    (seen,) = fake.requests
    assert seen.path == f"/{api_version or 'v1'}/models/gemini-2.5-flash:generateContent"
    assert seen.key in group.keys and seen.key_source == "header"
    assert seen.json()["contents"][0]["parts"][0]["text"] == "ping 42"
    sent = " ".join(f"{k}: {v}" for k, v in seen.headers.items())
    assert group.proxy_key not in sent and group.proxy_key not in seen.raw_path


def test_genai_stream_chunks_are_relayed_as_they_come(group, fake):
    """Chunk i leaves the fake only after the client has received chunk i-1: a proxy that buffered the answer (or
    any part of it) would never deliver chunk i-1 first, and the gate would give up. No time is measured."""
    fake.stream_chunks = 4
    received = [threading.Event() for _ in range(4)]
    held_back: list[int] = []

    def gate(i: int) -> None:
        if not received[i - 1].wait(30):
            held_back.append(i)

    fake.stream_gate = gate
    texts = []
    c = client(group)
    for chunk in c.models.generate_content_stream(model="gemini-2.5-flash", contents="one two three four"):
        received[len(texts)].set()
        texts.append(chunk.text)
    assert "".join(texts) == "echo: one two three four"
    assert held_back == [], f"chunks sent before the client had the previous one: {held_back}"
    assert len(fake.requests[-1].chunk_times) == 4


def test_genai_count_tokens_embed_and_list_models(group, fake):
    c = client(group, "v1beta")
    assert c.models.count_tokens(model="gemini-2.5-flash", contents="a b c").total_tokens > 0
    emb = c.models.embed_content(model="gemini-embedding-001", contents=["x", "y"])
    assert len(emb.embeddings) == 2 and emb.embeddings[0].values
    names = [m.name for m in c.models.list()]
    assert "models/gemini-2.5-flash" in names
    assert {r.key for r in fake.requests} <= set(group.keys)


def test_genai_file_upload_then_use_goes_to_the_key_that_owns_it(group, fake):
    c = client(group, "v1beta")
    uploaded = c.files.upload(file=io.BytesIO(b"hello file" * 100), config={"mime_type": "text/plain"})
    assert uploaded.name.startswith("files/")
    owner = fake.file_owner(uploaded.name)
    assert owner in group.keys
    start = fake.requests_for(path_contains="/upload/")[0]
    assert start.key == owner
    for _ in range(4):  # rotation would spread these over three keys; affinity pins them to the owner
        reply = c.models.generate_content(
            model="gemini-2.5-flash",
            contents=[types.Part.from_uri(file_uri=uploaded.uri, mime_type="text/plain"), "summarise"],
        )
        assert reply.text
        assert c.files.get(name=uploaded.name).name == uploaded.name
    used = [r.effective_key or r.key for r in fake.requests if ":generateContent" in r.path or "/files/" in r.path]
    assert set(used) == {owner}


def test_openai_sdk_chat_and_stream(group, fake):
    from openai import OpenAI

    oa = OpenAI(base_url=f"{group.base}/v1beta/openai/", api_key=group.proxy_key, max_retries=0)
    done = oa.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content
    pieces = [
        c.choices[0].delta.content or ""
        for c in oa.chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "hello world"}], stream=True
        )
        if c.choices
    ]
    assert "".join(pieces)
    for r in fake.requests:
        assert r.key_source == "bearer" and r.key in group.keys
        assert r.headers.get("authorization") == f"Bearer {r.key}"


def test_legacy_google_generativeai_rest(group, fake):
    import google.generativeai as legacy

    legacy.configure(api_key=group.proxy_key, transport="rest", client_options={"api_endpoint": group.base})
    model = legacy.GenerativeModel("gemini-2.5-flash")
    assert model.generate_content("legacy hello").text == "echo: legacy hello"
    streamed = "".join(c.text for c in model.generate_content("legacy stream here", stream=True))
    assert streamed == "echo: legacy stream here"
    assert model.count_tokens("a b c").total_tokens > 0
    gen = [r for r in fake.requests if ":generateContent" in r.path or ":streamGenerateContent" in r.path]
    # the SDK's percent-encoded "$alt=json;enum-encoding=int" passes through as sent
    assert gen and all("$alt=json;enum-encoding=int" in unquote(r.raw_path) for r in gen)
    assert all(r.key in group.keys for r in fake.requests)


@pytest.mark.parametrize(
    "how",
    ["none", "wrong-query", "wrong-header", "wrong-bearer", "wrong-x-api-key", "other-group-key"],
)
def test_bad_proxy_keys_never_reach_upstream(server, fake, group, how):
    other = server.make_group(fake.url, [fake.add_key()])
    url = f"{group.base}/v1beta/models/gemini-2.5-flash:generateContent"
    headers, params = {}, {}
    if how == "wrong-query":
        params["key"] = "pk-wrong-wrong-wrong"
    elif how == "wrong-header":
        headers["x-goog-api-key"] = "pk-wrong-wrong-wrong"
    elif how == "wrong-bearer":
        headers["Authorization"] = "Bearer pk-wrong-wrong-wrong"
    elif how == "wrong-x-api-key":
        headers["X-Api-Key"] = "pk-wrong-wrong-wrong"
    elif how == "other-group-key":
        headers["x-goog-api-key"] = other.proxy_key
    r = requests.post(url, params=params, headers=headers, json={"contents": [{"parts": [{"text": "x"}]}]}, timeout=10)
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["status"] == "UNAUTHENTICATED" and error["details"][0]["reason"] == "INVALID_PROXY_KEY"
    assert fake.requests == []


@pytest.mark.parametrize("where", ["query", "x-goog-api-key", "bearer", "x-api-key"])
def test_every_proxy_key_location_is_accepted_and_stripped(group, fake, where):
    url = f"{group.base}/v1beta/models/gemini-2.5-flash:generateContent"
    headers, params = {}, {}
    if where == "query":
        params["key"] = group.proxy_key
    elif where == "x-goog-api-key":
        headers["x-goog-api-key"] = group.proxy_key
    elif where == "bearer":
        headers["Authorization"] = f"Bearer {group.proxy_key}"
    else:
        headers["X-Api-Key"] = group.proxy_key
    r = requests.post(url, params=params, headers=headers, json={"contents": [{"parts": [{"text": "x"}]}]}, timeout=10)
    assert r.status_code == 200, r.text
    (seen,) = fake.requests
    assert "key=" not in seen.raw_path
    assert seen.headers.get("x-goog-api-key") in group.keys
    assert "authorization" not in seen.headers and "x-api-key" not in seen.headers


def test_genai_sdk_surfaces_upstream_request_errors_unchanged(group, fake):
    for key in group.keys:
        fake.script(key, [errors.not_found_model("gemini-9")])
    c = client(group, "v1beta")
    with pytest.raises(genai.errors.ClientError) as info:
        c.models.generate_content(model="gemini-9", contents="x")
    assert info.value.code == 404
    assert "gemini-9" in info.value.message
    assert len(fake.requests) == 1


def test_sdks_raise_their_typed_errors_for_gptloads_own_answers(server, fake):
    """gptload's errors on proxy routes use Google's envelope: google-genai raises ServerError/ClientError with the
    code and status, openai raises its status errors, and the real keys are in none of them."""
    import openai

    keys = [fake.add_key() for _ in range(2)]
    group = server.make_group(fake.url, keys)
    for k in keys:
        fake.set_behavior(k, errors.invalid_key())
    c = client(group, "v1beta")
    with pytest.raises(genai.errors.ServerError) as info:
        c.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert info.value.code == 503 and info.value.status == "UNAVAILABLE"
    assert "2 keys tried" in info.value.message and not any(k in info.value.message for k in keys)
    bad = genai.Client(api_key="wrong-proxy-key", http_options=types.HttpOptions(base_url=group.base))
    with pytest.raises(genai.errors.ClientError) as info:
        bad.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert info.value.code == 401 and info.value.status == "UNAUTHENTICATED"
    oa = openai.OpenAI(base_url=f"{group.base}/v1beta/openai/", api_key=group.proxy_key, max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        oa.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503 and not any(k in str(caught.value) for k in keys)
