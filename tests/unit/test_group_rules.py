"""gptload.proxy.group_rules, pure: redirects (paths, bodies, strict mode), deep merge of overrides, header rules with
variables, model-list rewriting, and the admin checks."""

from __future__ import annotations

import json

import pytest

from gptload.errors import ModelNotAllowed
from gptload.models import Group, Upstream
from gptload.proxy import group_rules as gr
from gptload.proxy.rewrite import model_of, upstream_headers

NOW = 1_800_000_000.123


def rules(**kw) -> gr.GroupRules:
    group = Group(name=kw.pop("name", "grp"), upstreams=(Upstream("http://u"),), **kw)
    return gr.GroupRules.of(group)


def inbound(path, body=b"", method="POST", query="", content_type="application/json", ip="203.0.113.9"):
    return gr.Inbound(
        method, path, query, body, content_type, ip, model_of(path, body, content_type), "openai/" in path
    )


REDIRECTS = {"alias": "gemini-2.5-flash", "pro-alias": "gemini-2.5-pro"}


# -- redirects ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method_suffix",
    [":generateContent", ":streamGenerateContent", ":countTokens", ":embedContent", ":batchEmbedContents"],
)
def test_native_model_methods_are_redirected_in_the_path(method_suffix):
    out = gr.prepare(rules(model_redirect_rules=REDIRECTS), inbound(f"v1beta/models/alias{method_suffix}", b"{}"), NOW)
    assert out.path == f"v1beta/models/gemini-2.5-flash{method_suffix}"
    assert (out.model, out.requested_model) == ("gemini-2.5-flash", "alias")


def test_a_percent_encoded_source_is_redirected_and_other_models_are_left_alone():
    r = rules(model_redirect_rules={"my.model@1": "gemini-2.5-flash"})
    out = gr.prepare(r, inbound("v1beta/models/my.model%401:generateContent", b"{}"), NOW)
    assert out.path == "v1beta/models/gemini-2.5-flash:generateContent"
    body = b'{"contents":[]}'
    out = gr.prepare(r, inbound("v1beta/models/gemini-2.5-pro:generateContent", body), NOW)
    assert out.path == "v1beta/models/gemini-2.5-pro:generateContent" and out.body is body
    assert (out.model, out.requested_model) == ("gemini-2.5-pro", "gemini-2.5-pro")


def test_get_model_info_is_redirected_and_its_answer_names_the_alias():
    r = rules(model_redirect_rules=REDIRECTS)
    out = gr.prepare(r, inbound("v1beta/models/alias", method="GET"), NOW)
    assert out.path == "v1beta/models/gemini-2.5-flash" and out.answer_kind == "model_info"
    answer = json.dumps({"name": "models/gemini-2.5-flash", "inputTokenLimit": 5}).encode()
    assert json.loads(gr.rewrite_answer(r, out, answer)) == {"name": "models/alias", "inputTokenLimit": 5}


def test_the_openai_layer_body_model_is_redirected_keeping_its_form():
    r = rules(model_redirect_rules=REDIRECTS)
    for sent, expected in (("alias", "gemini-2.5-flash"), ("models/alias", "models/gemini-2.5-flash")):
        body = json.dumps({"model": sent, "messages": [{"role": "user", "content": "hi"}]}).encode()
        out = gr.prepare(r, inbound("v1beta/openai/chat/completions", body), NOW)
        doc = json.loads(out.body)
        assert doc["model"] == expected and doc["messages"] == [{"role": "user", "content": "hi"}]
        assert out.path == "v1beta/openai/chat/completions"
        assert (out.model, out.requested_model) == ("gemini-2.5-flash", "alias")


def test_batch_embed_requests_name_the_target_too():
    body = json.dumps(
        {"requests": [{"model": "models/alias", "content": {"parts": [{"text": "a"}]}}, {"model": "models/other"}]}
    ).encode()
    out = gr.prepare(
        rules(model_redirect_rules=REDIRECTS), inbound("v1beta/models/alias:batchEmbedContents", body), NOW
    )
    assert [r["model"] for r in json.loads(out.body)["requests"]] == ["models/gemini-2.5-flash", "models/other"]


def test_strict_mode_refuses_a_model_that_is_not_a_source_and_passes_requests_without_a_model():
    r = rules(model_redirect_rules=REDIRECTS, model_redirect_strict=True)
    with pytest.raises(ModelNotAllowed) as caught:
        gr.prepare(r, inbound("v1beta/models/gemini-2.5-flash:generateContent", b"{}"), NOW)
    assert caught.value.status == 404 and "alias, pro-alias" in caught.value.message
    with pytest.raises(ModelNotAllowed):
        gr.prepare(r, inbound("v1beta/openai/chat/completions", b'{"model": "gpt-4o"}'), NOW)
    with pytest.raises(ModelNotAllowed):
        gr.prepare(r, inbound("v1beta/models/gemini-2.5-flash", method="GET"), NOW)
    assert gr.prepare(r, inbound("v1beta/files", method="GET"), NOW).path == "v1beta/files"
    assert gr.prepare(r, inbound("v1beta/models/alias:generateContent", b"{}"), NOW).model == "gemini-2.5-flash"


def test_a_group_without_rules_is_inactive():
    assert not rules().active
    assert rules(model_redirect_strict=True).active
    assert rules(header_rules=({"key": "X-A", "value": "1", "action": "set"},)).active


# -- parameter overrides ----------------------------------------------------------------------------------------
def test_deep_merge_merges_objects_replaces_other_values_and_null_deletes():
    base = {"generationConfig": {"maxOutputTokens": 50, "temperature": 1.0, "topK": 3}, "tools": [1], "keep": 1}
    merged = gr.deep_merge(
        base, {"generationConfig": {"temperature": 0.2, "topK": None, "new": {"a": 1}}, "tools": [2, 3], "x": "y"}
    )
    assert merged == {
        "generationConfig": {"maxOutputTokens": 50, "temperature": 0.2, "new": {"a": 1}},
        "tools": [2, 3],
        "keep": 1,
        "x": "y",
    }
    assert base["generationConfig"] == {"maxOutputTokens": 50, "temperature": 1.0, "topK": 3}  # untouched
    # an object replaces a value that is not one; a null inside it means nothing there
    assert gr.deep_merge({"a": 5}, {"a": {"b": 1, "c": None}}) == {"a": {"b": 1}}


def test_overrides_reach_native_generation_bodies_only():
    r = rules(param_overrides={"generationConfig": {"temperature": 0.2}})
    body = json.dumps({"contents": [], "generationConfig": {"maxOutputTokens": 7}}).encode()
    for method in (":generateContent", ":streamGenerateContent"):
        out = gr.prepare(r, inbound(f"v1beta/models/m{method}", body), NOW)
        assert json.loads(out.body)["generationConfig"] == {"maxOutputTokens": 7, "temperature": 0.2}
    for path in ("v1beta/models/m:countTokens", "v1beta/models/m:embedContent", "v1beta/cachedContents"):
        assert gr.prepare(r, inbound(path, body), NOW).body is body


def test_overrides_reach_openai_layer_bodies_naming_a_model():
    r = rules(
        param_overrides={"temperature": 0.1, "extra_body": {"google": {"thinking_config": {"thinking_budget": 0}}}}
    )
    body = json.dumps({"model": "gemini-2.5-flash", "temperature": 1.5, "messages": []}).encode()
    doc = json.loads(gr.prepare(r, inbound("v1beta/openai/chat/completions", body), NOW).body)
    assert doc["temperature"] == 0.1 and doc["extra_body"]["google"]["thinking_config"] == {"thinking_budget": 0}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"not json", "application/json"), (b"[1, 2]", "application/json"), (b'{"a": 1}', "multipart/related"), (b"", "")],
)
def test_bodies_that_are_not_json_objects_pass_unchanged(body, content_type):
    r = rules(param_overrides={"generationConfig": {"temperature": 0.2}})
    out = gr.prepare(r, inbound("v1beta/models/m:generateContent", body, content_type=content_type), NOW)
    assert out.body is body


def test_an_untouched_body_is_the_same_object():
    body = b'{"contents": []}'
    out = gr.prepare(rules(model_redirect_rules=REDIRECTS), inbound("v1beta/models/alias:generateContent", body), NOW)
    assert out.body is body  # native redirect is a path change: no JSON parse


# -- header rules -------------------------------------------------------------------------------------------------
def test_header_rules_set_with_variables_and_remove_in_order():
    r = rules(
        name="team-a",
        header_rules=(
            {"key": "X-Caller", "value": "${CLIENT_IP}/${GROUP_NAME}", "action": "set"},
            {"key": "X-Stamp", "value": "${TIMESTAMP_MS}-${TIMESTAMP_S}", "action": "set"},
            {"key": "user-agent", "value": "", "action": "remove"},
            {"key": "X-Gone", "value": "x", "action": "set"},
            {"key": "x-gone", "value": "", "action": "remove"},
        ),
    )
    out = gr.prepare(r, inbound("v1beta/models/m:generateContent", b"{}", ip="198.51.100.7"), NOW)
    base = upstream_headers(
        [("User-Agent", "sdk/1"), ("X-Caller", "spoofed"), ("Content-Type", "application/json")],
        "AIzaSECRET",
        openai=False,
    )
    headers = out.apply_headers(base)
    assert headers["X-Caller"] == "198.51.100.7/team-a"
    assert headers["X-Stamp"] == "1800000000123-1800000000"
    assert "User-Agent" not in headers and not any(n.lower() == "x-gone" for n in headers)
    assert headers["x-goog-api-key"] == "AIzaSECRET" and headers["Content-Type"] == "application/json"
    assert sum(n.lower() == "x-caller" for n in headers) == 1


def test_no_rules_leave_the_header_dict_as_it_is():
    out = gr.prepare(rules(model_redirect_rules=REDIRECTS), inbound("v1beta/models/alias:generateContent", b"{}"), NOW)
    headers = {"a": "b"}
    assert out.apply_headers(headers) is headers


# -- model lists ------------------------------------------------------------------------------------------------
FLASH = {"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash", "supportedGenerationMethods": ["x"]}
NATIVE_LIST = {"models": [FLASH, {"name": "models/gemini-2.5-pro"}, {"name": "models/alias"}], "nextPageToken": "p2"}


def test_native_list_first_page_gets_aliases_copied_from_their_targets():
    r = rules(model_redirect_rules=REDIRECTS)
    out = gr.prepare(r, inbound("v1beta/models", method="GET", query="pageSize=50"), NOW)
    assert out.answer_kind == "native_list" and out.first_page
    assert ("Accept-Encoding", "identity") in out.set_headers
    doc = json.loads(gr.rewrite_answer(r, out, json.dumps(NATIVE_LIST).encode()))
    names = [m["name"] for m in doc["models"]]
    assert names == ["models/alias", "models/pro-alias", "models/gemini-2.5-flash", "models/gemini-2.5-pro"]
    assert doc["models"][0] == {**FLASH, "name": "models/alias", "displayName": "alias"}
    assert doc["nextPageToken"] == "p2"


def test_later_pages_are_unchanged_and_strict_mode_lists_only_the_sources():
    r = rules(model_redirect_rules=REDIRECTS)
    out = gr.prepare(r, inbound("v1beta/models", method="GET", query="pageToken=p2"), NOW)
    body = json.dumps(NATIVE_LIST).encode()
    assert not out.first_page and json.loads(gr.rewrite_answer(r, out, body)) == NATIVE_LIST
    strict = rules(model_redirect_rules=REDIRECTS, model_redirect_strict=True)
    out = gr.prepare(strict, inbound("v1/models", method="GET"), NOW)
    doc = json.loads(gr.rewrite_answer(strict, out, body))
    assert [m["name"] for m in doc["models"]] == ["models/alias", "models/pro-alias"] and "nextPageToken" not in doc
    out = gr.prepare(strict, inbound("v1beta/models", method="GET", query="pageToken=p2"), NOW)
    assert json.loads(gr.rewrite_answer(strict, out, body)) == {"models": []}


def test_openai_list_gets_aliases():
    r = rules(model_redirect_rules={"gpt-4o": "gemini-2.5-flash"})
    out = gr.prepare(r, inbound("v1beta/openai/models", method="GET"), NOW)
    assert out.answer_kind == "openai_list"
    listed = {"object": "list", "data": [{"id": "models/gemini-2.5-flash", "object": "model", "owned_by": "google"}]}
    doc = json.loads(gr.rewrite_answer(r, out, json.dumps(listed).encode()))
    assert doc["data"][0] == {"id": "models/gpt-4o", "object": "model", "owned_by": "google"}
    assert len(doc["data"]) == 2


def test_an_answer_that_is_not_the_expected_json_passes_unchanged():
    r = rules(model_redirect_rules=REDIRECTS)
    out = gr.prepare(r, inbound("v1beta/models", method="GET"), NOW)
    for body in (b"<html>", b"[]", b'{"unexpected": 1}'):
        assert gr.rewrite_answer(r, out, body) is body


# -- admin checks -------------------------------------------------------------------------------------------------
def test_checks_normalise_and_refuse():
    assert gr.check_redirects({"models/a": " models/b "}) == {"a": "b"}
    assert gr.check_header_rules([{"key": " X-A ", "action": "remove", "value": "ignored"}]) == [
        {"key": "X-A", "value": "", "action": "remove"}
    ]
    for bad in ("${API_KEY}", "${client_ip}", "${CLIENT_IP"):
        with pytest.raises(ValueError, match="unknown variable"):
            gr.check_header_rules([{"key": "X-A", "value": bad}])
    for name in ("X-Goog-Api-Key", "AUTHORIZATION", "x-api-key", "Host", "Content-Length", "Transfer-Encoding"):
        with pytest.raises(ValueError, match="managed by gptload"):
            gr.check_header_rules([{"key": name, "action": "remove"}])
    with pytest.raises(ValueError, match="deeper"):
        gr.check_overrides({"a": json.loads("[" * 20 + "]" * 20)})


def test_probe_headers_apply_the_header_rules_and_keep_the_key():
    r = rules(
        header_rules=(
            {"key": "X-Gateway", "value": "${GROUP_NAME}:${CLIENT_IP}", "action": "set"},
            {"key": "Accept", "value": "", "action": "remove"},
        )
    )
    base = {"x-goog-api-key": "AIzaK", "Accept": "*/*"}
    assert gr.probe_headers(r, base, NOW) == {"x-goog-api-key": "AIzaK", "X-Gateway": "grp:"}
    assert gr.probe_headers(None, base, NOW) is base


def test_a_cache_is_created_for_the_redirect_target_and_strict_mode_refuses_other_models():
    body = json.dumps({"model": "models/alias", "contents": [], "ttl": "300s"}).encode()
    out = gr.prepare(rules(model_redirect_rules=REDIRECTS), inbound("v1beta/cachedContents", body), NOW)
    assert json.loads(out.body)["model"] == "models/gemini-2.5-flash"
    assert (out.model, out.requested_model, out.path) == ("gemini-2.5-flash", "alias", "v1beta/cachedContents")
    strict = rules(model_redirect_rules=REDIRECTS, model_redirect_strict=True)
    with pytest.raises(ModelNotAllowed):
        gr.prepare(strict, inbound("v1beta/cachedContents", b'{"model": "models/gemini-2.5-pro"}'), NOW)
    listing = gr.prepare(strict, inbound("v1beta/cachedContents", method="GET"), NOW)
    assert listing.path == "v1beta/cachedContents" and listing.model == ""


def test_openai_model_info_is_redirected_and_names_the_alias():
    r = rules(model_redirect_rules={"gpt-4o": "gemini-2.5-flash"})
    out = gr.prepare(r, inbound("v1beta/openai/models/gpt-4o", method="GET"), NOW)
    assert out.path == "v1beta/openai/models/gemini-2.5-flash" and out.answer_kind == "model_info"
    answer = json.dumps({"id": "models/gemini-2.5-flash", "object": "model", "owned_by": "google"}).encode()
    assert json.loads(gr.rewrite_answer(r, out, answer))["id"] == "models/gpt-4o"
