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


# -- hostile input (h-attack10) -----------------------------------------------------------------------------------
def test_a_body_with_a_lone_surrogate_escape_is_merged_without_crashing():
    # JSON allows "\ud800"; re-encoding it as UTF-8 cannot: the escape must survive as an escape
    r = rules(param_overrides={"generationConfig": {"temperature": 0.2}})
    body = b'{"contents":[{"parts":[{"text":"a\\ud800b\\u00e9"}]}]}'
    out = gr.prepare(r, inbound("v1beta/models/x:generateContent", body), NOW)
    doc = json.loads(out.body.decode("utf-8"))
    assert doc["contents"][0]["parts"][0]["text"] == "a\ud800b\u00e9"
    assert doc["generationConfig"] == {"temperature": 0.2}


def test_an_answer_with_a_lone_surrogate_escape_is_rewritten_without_crashing():
    r = rules(model_redirect_rules=REDIRECTS)
    out = gr.prepare(r, inbound("v1beta/models", method="GET"), NOW)
    listed = b'{"models":[{"name":"models/gemini-2.5-flash","description":"\\udfff"}]}'
    doc = json.loads(gr.rewrite_answer(r, out, listed).decode("utf-8"))
    assert [m["name"] for m in doc["models"]] == ["models/alias", "models/pro-alias", "models/gemini-2.5-flash"]


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/x-www-form-urlencoded"])
def test_strict_mode_reads_the_openai_body_model_whatever_the_content_type(content_type):
    # model_of reads the body only under a JSON Content-Type; the upstream may not care: strict mode must
    r = rules(model_redirect_rules=REDIRECTS, model_redirect_strict=True)
    with pytest.raises(ModelNotAllowed):
        gr.prepare(
            r, inbound("v1beta/openai/chat/completions", b'{"model": "gemini-2.5-pro"}', content_type=content_type), NOW
        )
    # duplicate keys: the body goes upstream as it was checked (one "model", the target)
    twice = b'{"model": "gemini-2.5-pro", "model": "alias", "messages": []}'
    out = gr.prepare(r, inbound("v1beta/openai/chat/completions", twice, content_type=content_type), NOW)
    assert out.body.count(b'"model"') == 1 and json.loads(out.body)["model"] == "gemini-2.5-flash"
    assert (out.model, out.requested_model) == ("gemini-2.5-flash", "alias")


def test_strict_mode_reads_the_model_of_an_openai_body_too_big_to_scan():
    r = rules(model_redirect_rules=REDIRECTS, model_redirect_strict=True)
    big = json.dumps({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x" * (5 << 20)}]})
    with pytest.raises(ModelNotAllowed):
        gr.prepare(r, inbound("v1beta/openai/chat/completions", big.encode()), NOW)


def test_header_values_the_transport_cannot_encode_are_refused():
    for value in ("\u20ac", "caf\u00e9\u2028", "\x85"):  # not latin-1, a C1 control
        with pytest.raises(ValueError, match="rule 1"):
            gr.check_header_rules([{"key": "X-A", "value": value}])
    assert (
        gr.check_header_rules([{"key": "X-A", "value": "caf\u00e9 ${GROUP_NAME}"}])[0]["value"]
        == "caf\u00e9 ${GROUP_NAME}"
    )


def test_strict_mode_lets_an_operation_of_a_redirected_call_be_polled():
    # Veo: POST models/{alias}:predictLongRunning goes up for the target; Google names the operation after the target
    r = rules(model_redirect_rules={"video": "veo-3.0-generate-001"}, model_redirect_strict=True)
    start = gr.prepare(r, inbound("v1beta/models/video:predictLongRunning", b"{}"), NOW)
    assert start.path == "v1beta/models/veo-3.0-generate-001:predictLongRunning"
    poll = gr.prepare(r, inbound("v1beta/models/veo-3.0-generate-001/operations/op1", method="GET"), NOW)
    assert poll.path == "v1beta/models/veo-3.0-generate-001/operations/op1" and poll.answer_kind == ""
    with pytest.raises(ModelNotAllowed):  # a call to the target itself is still refused
        gr.prepare(r, inbound("v1beta/models/veo-3.0-generate-001:predictLongRunning", b"{}"), NOW)


def test_an_operation_polled_under_the_alias_is_not_rewritten_as_model_info():
    r = rules(model_redirect_rules={"video": "veo-3.0-generate-001"})
    out = gr.prepare(r, inbound("v1beta/models/video/operations/op1", method="GET"), NOW)
    assert out.path == "v1beta/models/veo-3.0-generate-001/operations/op1" and out.answer_kind == ""


def test_an_alias_named_under_tuned_models_is_sent_as_its_target():
    # model_of reads tunedModels/{m} as model m: the upstream must get the target, not a tuned model named like alias
    r = rules(model_redirect_rules=REDIRECTS, model_redirect_strict=True)
    out = gr.prepare(r, inbound("v1beta/tunedModels/alias:generateContent", b"{}"), NOW)
    assert out.path == "v1beta/models/gemini-2.5-flash:generateContent" and out.model == "gemini-2.5-flash"
    with pytest.raises(ModelNotAllowed):
        gr.prepare(r, inbound("v1beta/tunedModels/my-tuned-1:generateContent", b"{}"), NOW)


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_a_cache_creation_body_is_read_whatever_its_content_type(content_type):
    # a cache is billed by the hour: strict mode must not let one be made for another model
    r = rules(model_redirect_rules=REDIRECTS, model_redirect_strict=True)
    body = b'{"model": "models/gemini-2.5-pro", "contents": []}'
    with pytest.raises(ModelNotAllowed):
        gr.prepare(r, inbound("v1beta/cachedContents", body, content_type=content_type), NOW)
    out = gr.prepare(r, inbound("v1beta/cachedContents", b'{"model": "models/alias"}', content_type=content_type), NOW)
    assert json.loads(out.body)["model"] == "models/gemini-2.5-flash"
    embed = b'{"requests": [{"model": "models/alias", "content": {}}]}'
    out = gr.prepare(r, inbound("v1beta/models/alias:batchEmbedContents", embed, content_type=content_type), NOW)
    assert json.loads(out.body)["requests"][0]["model"] == "models/gemini-2.5-flash"


@pytest.mark.parametrize("path", ["v1alpha/auth_tokens", "v1alpha/authTokens", "v1beta/auth_tokens/"])
def test_strict_mode_refuses_to_mint_ephemeral_tokens(path):
    # an ephemeral token lets the client call Google's Live API directly, for any model, on a pool key
    r = rules(model_redirect_rules=REDIRECTS, model_redirect_strict=True)
    body = b'{"uses": 1, "liveConnectConstraints": {"model": "gemini-live-2.5-flash-preview"}}'
    with pytest.raises(ModelNotAllowed) as caught:
        gr.prepare(r, inbound(path, body), NOW)
    assert "ephemeral" in caught.value.message
    assert gr.prepare(rules(model_redirect_rules=REDIRECTS), inbound(path, body), NOW).path == path


def test_overrides_reach_an_openai_body_too_big_to_scan():
    # padding a body past model_of's scan bound must not escape the group's overrides (a max_tokens cap, say)
    r = rules(param_overrides={"max_tokens": 64})
    big = json.dumps({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x" * (5 << 20)}]})
    out = gr.prepare(r, inbound("v1beta/openai/chat/completions", big.encode()), NOW)
    assert json.loads(out.body)["max_tokens"] == 64 and out.model == "gemini-2.5-pro"
