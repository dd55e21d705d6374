from __future__ import annotations

from gptload.proxy import rewrite


def test_proxy_key_sources_in_precedence_order():
    assert rewrite.find_proxy_key("key=q", [("x-goog-api-key", "h")]).value == "h"
    assert rewrite.find_proxy_key("key=q", [("Authorization", "Bearer b")]) == rewrite.ProxyKey("b", "authorization")
    assert rewrite.find_proxy_key("key=q", [("X-Api-Key", "x")]).value == "x"
    assert rewrite.find_proxy_key("alt=sse&key=q", []) == rewrite.ProxyKey("q", "query")
    assert rewrite.find_proxy_key("", [("Authorization", "Basic zzz")]).value is None


def test_strip_key_keeps_the_rest_verbatim():
    assert (
        rewrite.strip_key_from_query("%24alt=json%3Benum-encoding%3Dint&key=abc") == "%24alt=json%3Benum-encoding%3Dint"
    )
    assert rewrite.strip_key_from_query("key=a&alt=sse&key=b&monkey=1") == "alt=sse&monkey=1"
    assert rewrite.strip_key_from_query("alt=sse") == "alt=sse"


def test_upstream_headers_drop_credentials_and_hop_by_hop():
    out = rewrite.upstream_headers(
        [
            ("Host", "proxy"),
            ("Connection", "keep-alive"),
            ("x-goog-api-key", "pk"),
            ("Authorization", "Bearer pk"),
            ("X-Api-Key", "pk"),
            ("Cookie", "c"),
            ("Content-Type", "application/json"),
            ("X-Goog-Upload-Command", "start"),
            ("Content-Length", "10"),
            ("Accept-Encoding", "gzip"),
        ],
        "AIzaREAL",
        openai=False,
    )
    assert out == {
        "Content-Type": "application/json",
        "X-Goog-Upload-Command": "start",
        "Accept-Encoding": "gzip",
        "x-goog-api-key": "AIzaREAL",
    }
    oa = rewrite.upstream_headers([("Authorization", "Bearer pk")], "AIzaREAL", openai=True)
    assert oa == {"Accept-Encoding": "identity", "Authorization": "Bearer AIzaREAL"}


def test_model_extraction():
    assert rewrite.model_of("v1beta/models/gemini-2.5-flash:generateContent", b"", "") == "gemini-2.5-flash"
    assert rewrite.model_of("v1/tunedModels/my-tune:generateContent", b"", "") == "my-tune"
    assert (
        rewrite.model_of("v1beta/openai/chat/completions", b'{"model": "models/gemini-2.5-pro"}', "application/json")
        == "gemini-2.5-pro"
    )
    assert rewrite.model_of("v1beta/files", b"", "") == ""


def test_resources_named_and_created():
    body = b'{"contents":[{"parts":[{"fileData":{"fileUri":"https://x/v1beta/files/abc-123"}}]}],"cachedContent":"cachedContents/c1"}'
    assert rewrite.resources_named("v1beta/models/m:generateContent", body) == ["files/abc-123", "cachedContents/c1"]
    assert rewrite.resources_named("v1beta/files/xyz", b"") == ["files/xyz"]
    assert rewrite.resources_named("v1beta/models/veo/operations/op1", b"") == ["operations/op1"]
    assert rewrite.resources_named("v1beta/models/m:generateContent", b'{"text": "see files/abc"}') == []
    assert rewrite.resources_created(b'{"file": {"name": "files/f1"}}') == ["files/f1"]
    assert rewrite.resources_created(b'{"name": "models/veo-2/operations/o9"}') == ["operations/o9"]
    assert rewrite.resources_created(b'{"name": "batches/b1"}') == ["batches/b1"]
    assert rewrite.resources_created(b"[1]") == [] and rewrite.resources_created(b"x") == []


def test_upload_url_is_rewritten_to_the_proxy_without_a_key():
    url = "https://generativelanguage.googleapis.com/upload/v1beta/files?key=AIzaREAL&upload_id=U1&upload_protocol=resumable"
    out = rewrite.proxied_upload_url(url, "https://proxy.example/", "g1")
    assert out == "https://proxy.example/proxy/g1/upload/v1beta/files?upload_id=U1&upload_protocol=resumable"
    assert rewrite.upload_id_of("upload_id=U1&upload_protocol=resumable") == "U1"
    assert "AIzaREAL" not in rewrite.strip_key_from_url(url)


def test_request_facts_are_computed_once_from_the_request():
    from gptload.proxy.request import IncomingRequest, RequestFacts

    def facts(path, query="", body=b"", content_type="application/json"):
        return RequestFacts.of(IncomingRequest("POST", path, query, [], body, "http://x", content_type))

    def stream(path, query="", body=b""):
        return facts(path, query, body).stream

    f = facts("v1beta/openai/chat/completions", body=b'{"model": "models/gemini-2.5-pro", "stream": true}')
    assert f == RequestFacts(model="gemini-2.5-pro", openai=True, stream=True, counts_tokens=True)
    f = facts("v1beta/models/gemini-2.5-flash:countTokens")
    assert f == RequestFacts(model="gemini-2.5-flash", openai=False, stream=False, counts_tokens=False)

    assert stream("v1beta/models/m:streamGenerateContent")
    assert stream("v1beta/models/m:generateContent", "alt=sse")
    assert stream("v1beta/openai/chat/completions", body=b'{"model": "m", "stream" : true}')
    assert not stream("v1beta/openai/chat/completions", body=b'{"model": "m", "stream": false}')
    assert not stream("v1beta/models/m:generateContent", body=b'{"text": "\\"stream\\": true"}')


GOOGLE = "https://generativelanguage.googleapis.com"


def test_upload_url_on_the_upstream_that_answered_is_kept_with_dot_segments_resolved():
    url = f"{GOOGLE}/upload/v1beta/files?upload_id=U1&upload_protocol=resumable"
    assert rewrite.upload_url_under(url, GOOGLE) == url
    assert rewrite.upload_url_under(url, GOOGLE + "/") == url
    assert rewrite.upload_url_under(url.replace("https://generativelanguage", "HTTPS://GenerativeLanguage"), GOOGLE)
    assert (
        rewrite.upload_url_under(f"{GOOGLE}:443/upload/x?upload_id=U", GOOGLE) == f"{GOOGLE}:443/upload/x?upload_id=U"
    )
    assert (
        rewrite.upload_url_under("http://h/p/a/./../upload?upload_id=U", "http://h/p")
        == "http://h/p/upload?upload_id=U"
    )
    assert rewrite.upload_url_under("http://h:8080/p/upload#frag", "http://h:8080/p") == "http://h:8080/p/upload"


def test_upload_url_elsewhere_is_refused():
    refused = [
        ("https://evil.example/upload/v1beta/files?upload_id=U", GOOGLE),  # another host
        (f"{GOOGLE}:8443/upload/v1beta/files?upload_id=U", GOOGLE),  # another port
        ("http://generativelanguage.googleapis.com/upload?upload_id=U", GOOGLE),  # another scheme
        (f"https://user:pw@{GOOGLE[8:]}/upload?upload_id=U", GOOGLE),  # user info
        ("ftp://h/upload", "ftp://h"),
        ("http://h/other/upload?upload_id=U", "http://h/prefix"),  # outside the upstream's path
        ("http://h/prefixed/upload?upload_id=U", "http://h/prefix"),  # a longer name is not under it
        ("http://h/prefix/../other/upload?upload_id=U", "http://h/prefix"),  # escapes with ..
        ("http://h/prefix/%2e%2E/other/upload?upload_id=U", "http://h/prefix"),  # percent-encoded ..
        ("http://h/prefix/.%2e/other/upload?upload_id=U", "http://h/prefix"),
        ("http://h/prefix/..%2Fother/upload?upload_id=U", "http://h/prefix"),  # an encoded slash
        ("http://h/prefix/..%5Cother/upload?upload_id=U", "http://h/prefix"),  # an encoded backslash
        ("http://h/../../etc/passwd", "http://h"),  # above the root
        ("http://h:99999/upload", "http://h"),  # not a port
        ("/upload/v1beta/files?upload_id=U", GOOGLE),  # relative
        ("", GOOGLE),
    ]
    for url, base in refused:
        assert rewrite.upload_url_under(url, base) is None, url
    assert rewrite.origin_of("https://user:pw@evil.example/x?key=AIzaREAL") == "https://evil.example:443"


def test_upload_url_of_a_path_prefixed_upstream_is_proxied_relative_to_the_prefix():
    out = rewrite.proxied_upload_url(
        "https://gw/gemini/upload/v1beta/files?upload_id=U", "http://p", "g", "https://gw/gemini"
    )
    assert out == "http://p/proxy/g/upload/v1beta/files?upload_id=U"


def test_accept_encoding_upstream_is_narrowed_to_what_can_be_decoded_boundedly():
    assert rewrite.decodable_encodings("gzip, deflate, br, zstd") == "gzip, deflate"
    assert rewrite.decodable_encodings("br;q=1.0, gzip;q=0.5, *;q=0.1") == "gzip;q=0.5"
    assert rewrite.decodable_encodings("br") == "identity"
    headers = rewrite.upstream_headers([("Accept-Encoding", "zstd, gzip")], "AIzaREAL", openai=False)
    assert headers["Accept-Encoding"] == "gzip"
