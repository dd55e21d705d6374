"""In-process reproductions of defects found by the h7 attack round (the e2e ones are in tests/e2e/test_attacks.py)."""

from __future__ import annotations

from gptload.proxy import rewrite
from gptload.proxy.request import IncomingRequest, RequestFacts


def test_model_of_survives_json_nested_past_the_recursion_limit():
    """The OpenAI layer's body is json.loads-ed to find the model; only ValueError/AttributeError are caught, so a
    client nesting 100,000 arrays makes RecursionError escape: 500 INTERNAL, nothing forwarded, nothing counted."""
    deep = b"[" * 100_000 + b"]" * 100_000
    assert rewrite.model_of("v1beta/openai/chat/completions", deep, "application/json") == ""
    req = IncomingRequest("POST", "v1beta/openai/chat/completions", "", [], deep, "http://x", "application/json")
    assert RequestFacts.of(req).model == ""
