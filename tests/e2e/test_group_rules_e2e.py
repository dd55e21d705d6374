"""A group's request rules end to end: the real server (``python main.py``), the real SDKs (google-genai, openai),
the fake Gemini on a real socket, and a real forwarding proxy (tests/fakes/forward_proxy.py) for ``proxy_url``."""

from __future__ import annotations

import http.client
import json
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.e2e.conftest import Group, wait_for
from tests.fakes.forward_proxy import ForwardProxy, Socks5Proxy

ALIAS = "team-fast"


def make_group(server, fake, n_keys: int = 2, **fields) -> Group:
    name = f"r-{uuid.uuid4().hex[:10]}"
    proxy_key = f"pk-{uuid.uuid4().hex}"
    r = server.api(
        "POST",
        "/api/groups",
        json={"name": name, "upstreams": [{"url": fake.url, "weight": 1}], "proxy_keys": [proxy_key], **fields},
    )
    assert r.status_code == 201, r.text
    keys = [fake.add_key() for _ in range(n_keys)]
    r = server.api("POST", f"/api/groups/{name}/keys", json={"keys": "\n".join(keys)})
    assert r.status_code == 200, r.text
    return Group(server, name, proxy_key, keys)


def client(group: Group) -> genai.Client:
    return genai.Client(api_key=group.proxy_key, http_options=types.HttpOptions(base_url=group.base))


def log_rows(server, group: Group, n: int) -> list[dict]:
    def rows():
        found = server.api("GET", f"/api/logs?group={group.name}").json()["logs"]
        return found if len(found) >= n else None

    return wait_for(rows, what=f"{n} log rows of {group.name}")


def test_an_alias_works_through_google_genai_and_is_listed(server, fake):
    group = make_group(server, fake, model_redirect_rules={ALIAS: "gemini-2.5-flash"})
    c = client(group)
    assert c.models.generate_content(model=ALIAS, contents="ping 7").text == "echo: ping 7"
    streamed = "".join(chunk.text for chunk in c.models.generate_content_stream(model=ALIAS, contents="one two"))
    assert streamed == "echo: one two"
    listed = {m.name: m for m in c.models.list()}
    assert f"models/{ALIAS}" in listed and "models/gemini-2.5-flash" in listed
    assert listed[f"models/{ALIAS}"].input_token_limit == listed["models/gemini-2.5-flash"].input_token_limit
    assert c.models.get(model=ALIAS).name == f"models/{ALIAS}"
    generation = [r for r in fake.requests if "Content" in r.path]
    assert {r.path.rsplit("/", 1)[-1] for r in generation} == {
        "gemini-2.5-flash:generateContent",
        "gemini-2.5-flash:streamGenerateContent",
    }
    rows = log_rows(server, group, 4)
    generated = [r for r in rows if "Content" in r["path"]]
    assert generated and all((r["model"], r["requested_model"]) == ("gemini-2.5-flash", ALIAS) for r in generated)


def test_an_alias_works_through_the_openai_sdk(server, fake):
    from openai import OpenAI

    group = make_group(server, fake, model_redirect_rules={"gpt-4o": "gemini-2.5-flash"})
    oa = OpenAI(base_url=f"{group.base}/v1beta/openai/", api_key=group.proxy_key, max_retries=0)
    done = oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi there"}])
    assert done.choices[0].message.content
    pieces = oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "a b"}], stream=True)
    assert "".join(p.choices[0].delta.content or "" for p in pieces if p.choices)
    assert all(r.json()["model"] == "gemini-2.5-flash" for r in fake.requests)
    ids = [m.id for m in oa.models.list()]
    assert any(i.removeprefix("models/") == "gpt-4o" for i in ids)


def test_strict_mode_refuses_an_unknown_model_without_an_upstream_call(server, fake):
    group = make_group(server, fake, model_redirect_rules={ALIAS: "gemini-2.5-flash"}, model_redirect_strict=True)
    c = client(group)
    with pytest.raises(genai_errors.ClientError) as caught:
        c.models.generate_content(model="gemini-2.5-pro", contents="no")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
    assert "MODEL_NOT_ALLOWED" in str(caught.value.details)
    assert fake.requests == []
    assert [m.name for m in c.models.list()] == [f"models/{ALIAS}"]
    assert c.models.generate_content(model=ALIAS, contents="yes").text == "echo: yes"


def test_the_upstream_receives_the_merged_body_and_the_rule_headers(server, fake):
    group = make_group(
        server,
        fake,
        param_overrides={"generationConfig": {"temperature": 0.2, "topP": None}, "labels": {"team": "a"}},
        header_rules=[
            {"key": "X-Caller", "value": "${CLIENT_IP}|${GROUP_NAME}", "action": "set"},
            {"key": "X-Sent-At", "value": "${TIMESTAMP_S}", "action": "set"},
            {"key": "X-Client-Junk", "action": "remove"},
        ],
    )
    c = genai.Client(
        api_key=group.proxy_key,
        http_options=types.HttpOptions(base_url=group.base, headers={"X-Client-Junk": "drop me"}),
    )
    c.models.generate_content(
        model="gemini-2.5-flash",
        contents="merge me",
        config=types.GenerateContentConfig(max_output_tokens=33, top_p=0.5, temperature=1.5),
    )
    (seen,) = fake.requests
    config = seen.json()["generationConfig"]
    assert config["maxOutputTokens"] == 33 and config["temperature"] == 0.2 and "topP" not in config
    assert seen.json()["labels"] == {"team": "a"}
    assert seen.headers["x-caller"] == f"127.0.0.1|{group.name}"
    assert seen.headers["x-sent-at"].isdigit() and "x-client-junk" not in seen.headers
    assert seen.key in group.keys


def test_proxy_url_sends_the_group_through_the_proxy_and_its_credentials_stay_secret(server, fake):
    with ForwardProxy(credentials=("px-user", "px-pass-7781")) as proxy:
        proxy_url = f"http://px-user:px-pass-7781@127.0.0.1:{proxy.port}"
        group = make_group(server, fake, settings={"proxy_url": proxy_url})
        direct = make_group(server, fake)
        c = client(group)
        assert c.models.generate_content(model="gemini-2.5-flash", contents="via proxy").text == "echo: via proxy"
        assert "".join(ch.text for ch in c.models.generate_content_stream(model="gemini-2.5-flash", contents="s t"))
        assert [m for m, _ in proxy.requests] == ["POST", "POST"]
        assert all(t.startswith(f"{fake.url}/") and "/models/gemini-2.5-flash:" in t for _, t in proxy.requests)
        assert proxy.refused == 0
        d = client(direct)  # keep a reference: a collected Client closes its HTTP client
        d.models.generate_content(model="gemini-2.5-flash", contents="direct")
        assert len(proxy.requests) == 2  # the other group goes direct
        shown = [
            server.api("GET", f"/api/groups/{group.name}").text,
            server.api("GET", "/api/groups").text,
            server.api("GET", f"/api/logs?group={group.name}").text,
        ]
        assert all("px-pass-7781" not in s and "px-user" not in s for s in shown)
        assert f"****@127.0.0.1:{proxy.port}" in shown[0]
        # saving what the console shows keeps the real credentials
        settings = server.api("GET", f"/api/groups/{group.name}").json()["settings"]
        assert server.api("PUT", f"/api/groups/{group.name}", json={"settings": settings}).status_code == 200
        c.models.generate_content(model="gemini-2.5-flash", contents="again")
        assert len(proxy.requests) == 3 and proxy.refused == 0
    assert "px-pass-7781" not in server.log()


def test_a_socks5_proxy_url_carries_the_group_too(server, fake):
    with Socks5Proxy(credentials=("sx-user", "sx-pass-4410")) as proxy:
        group = make_group(
            server, fake, settings={"proxy_url": f"socks5://sx-user:sx-pass-4410@127.0.0.1:{proxy.port}"}
        )
        c = client(group)
        assert c.models.generate_content(model="gemini-2.5-flash", contents="socks").text == "echo: socks"
        assert proxy.connects == [f"127.0.0.1:{fake.port}"] and proxy.refused == 0
        assert "sx-pass-4410" not in server.api("GET", f"/api/groups/{group.name}").text


def test_a_proxy_refusing_the_credentials_is_no_answer_from_google_and_blames_no_key(server, fake):
    with ForwardProxy(credentials=("px-user", "right-pass")) as proxy:
        group = make_group(
            server,
            fake,
            settings={"proxy_url": f"http://px-user:wrong-pass-0091@127.0.0.1:{proxy.port}", "max_retries": 1},
        )
        c = client(group)
        with pytest.raises(genai_errors.ServerError) as caught:
            c.models.generate_content(model="gemini-2.5-flash", contents="refused")
        assert caught.value.code == 502 and "UPSTREAM_UNREACHABLE" in str(caught.value.details)
        assert proxy.refused == 2 and proxy.requests == [] and fake.requests == []
        assert "wrong-pass-0091" not in str(caught.value.details) + str(caught.value.message)
        assert all(row["status"] == "active" and row["failure_count"] == 0 for row in group.key_rows())
    assert "wrong-pass-0091" not in server.log()


@pytest.mark.parametrize(
    "tail", [f"{ALIAS}/../gemini-2.5-pro:generateContent", f"{ALIAS}/%2E%2E/gemini-2.5-pro:generateContent"]
)
def test_strict_mode_cannot_be_walked_around_with_dot_segments(server, fake, tail):
    # a raw client (SDKs and requests resolve dot segments before sending): the path reaches gptload as written
    group = make_group(server, fake, model_redirect_rules={ALIAS: "gemini-2.5-flash"}, model_redirect_strict=True)
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/proxy/{group.name}/v1beta/models/{tail}",
            body=b'{"contents": [{"parts": [{"text": "x"}]}]}',
            headers={"x-goog-api-key": group.proxy_key, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["details"][0]["reason"] == "INVALID_PATH"
    assert fake.requests == []


@pytest.mark.parametrize("content_type", ["text/plain", None])
def test_strict_mode_reads_an_openai_body_sent_without_a_json_content_type(server, fake, content_type):
    group = make_group(server, fake, model_redirect_rules={ALIAS: "gemini-2.5-flash"}, model_redirect_strict=True)
    headers = {"Authorization": f"Bearer {group.proxy_key}"}
    if content_type:
        headers["Content-Type"] = content_type
    body = b'{"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}'
    r = requests.post(f"{group.base}/v1beta/openai/chat/completions", data=body, headers=headers, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["details"][0]["reason"] == "MODEL_NOT_ALLOWED"
    assert fake.requests == []


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
def test_an_unreachable_proxy_leaks_its_credentials_nowhere(server, fake, scheme):
    from tests.e2e.conftest import free_port

    port = free_port()  # nothing listens there: connection refused
    group = make_group(
        server, fake, settings={"proxy_url": f"{scheme}://ux-user:ux-pass-6620@127.0.0.1:{port}", "max_retries": 1}
    )
    r = requests.post(
        f"{group.base}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": group.proxy_key},
        json={"contents": [{"parts": [{"text": "unreachable"}]}]},
        timeout=30,
    )
    assert r.status_code == 502 and r.json()["error"]["status"] == "UNAVAILABLE", r.text
    rows = log_rows(server, group, 2)
    assert all(row["error"].startswith("network: ") for row in rows), rows
    texts = [
        r.text,
        json.dumps(rows),
        server.api("GET", f"/api/logs/export.csv?group={group.name}").text,
        server.api("GET", f"/api/groups/{group.name}").text,
    ]
    assert all("ux-pass-6620" not in t and "ux-user" not in t for t in texts)
    assert fake.requests == [] and all(row["status"] == "active" for row in group.key_rows())
    assert "ux-pass-6620" not in server.log()


def test_direct_on_a_group_bypasses_the_system_proxy(server, fake):
    with ForwardProxy() as proxy:
        assert server.api("PUT", "/api/settings", json={"proxy_url": f"http://127.0.0.1:{proxy.port}"}).ok
        try:
            inherits = make_group(server, fake)
            direct = make_group(server, fake, settings={"proxy_url": "direct"})
            assert server.api("GET", f"/api/groups/{direct.name}").json()["settings"]["proxy_url"] == "direct"
            d = client(direct)
            assert d.models.generate_content(model="gemini-2.5-flash", contents="no proxy").text == "echo: no proxy"
            assert proxy.requests == []
            i = client(inherits)
            assert i.models.generate_content(model="gemini-2.5-flash", contents="system").text == "echo: system"
            assert len(proxy.requests) == 1
        finally:  # the session's server is shared: leave the system settings as they were
            server.api("PUT", "/api/settings", json={"proxy_url": ""})
