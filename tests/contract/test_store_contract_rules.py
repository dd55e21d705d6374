"""The store contract for a group's request rules (model redirects, strict mode, parameter overrides, header rules,
a proxy_url override) and the request log's ``requested_model``. Same tests on SQLite and on the Firestore
emulator."""

from __future__ import annotations

from gptload.models import Group, LogQuery, UsageEvent
from tests.contract.test_store_contract import NOW, group, records

# Shapes Firestore refuses in a map (an array inside an array, an empty or "__x__" name) must survive too.
OVERRIDES = {
    "generationConfig": {"temperature": 0.2, "stopSequences": ["a", "b"], "thinkingConfig": {"thinkingBudget": 0}},
    "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
    "odd": {"": 1, "__x__": [[1, 2], [3]], "gone": None},
    "big": 12345678901234567890,
}
RULES = dict(
    model_redirect_rules={"gpt-4o": "gemini-2.5-pro", "fast.v1": "gemini-2.5-flash"},
    model_redirect_strict=True,
    param_overrides=OVERRIDES,
    header_rules=(
        {"key": "X-Client", "value": "${CLIENT_IP}@${GROUP_NAME}", "action": "set"},
        {"key": "User-Agent", "value": "", "action": "remove"},
    ),
    settings={"proxy_url": "http://user:secret@127.0.0.1:3128"},
)


def test_group_rules_round_trip(store):
    store.create_group(group("r", **RULES))
    got = store.get_group("r")
    assert got.model_redirect_rules == RULES["model_redirect_rules"]
    assert got.model_redirect_strict is True
    assert got.param_overrides == OVERRIDES
    assert got.header_rules == RULES["header_rules"]
    assert got.settings == {"proxy_url": "http://user:secret@127.0.0.1:3128"}
    assert next(g for g in store.list_groups() if g.name == "r") == got


def test_group_rules_update_and_clear(store):
    store.create_group(group("r", **RULES))
    cleared = Group.from_dict(
        {
            **store.get_group("r").to_dict(),
            "model_redirect_rules": {},
            "model_redirect_strict": False,
            "param_overrides": {},
            "header_rules": [],
        }
    )
    store.update_group(cleared)
    got = store.get_group("r")
    assert got.model_redirect_rules == {} and got.model_redirect_strict is False
    assert got.param_overrides == {} and got.header_rules == ()


def test_a_group_stored_without_rules_reads_with_empty_rules(store):
    store.create_group(group("plain"))
    got = store.get_group("plain")
    assert (got.model_redirect_rules, got.model_redirect_strict, got.param_overrides, got.header_rules) == (
        {},
        False,
        {},
        (),
    )


def test_log_rows_carry_the_requested_model(store):
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 1), {})
    store.record_usage(
        [
            UsageEvent("g1", "k0000", NOW + 1, True, 200, model="gemini-2.5-pro", requested_model="gpt-4o", id="a1"),
            UsageEvent("g1", "k0000", NOW + 2, True, 200, model="gemini-2.5-flash", id="a2"),
        ]
    )
    rows, total = store.query_logs(LogQuery(group="g1"), 0, 10)
    by_id = {r["id"]: r for r in rows}
    assert total == 2
    assert (by_id["a1"]["model"], by_id["a1"]["requested_model"]) == ("gemini-2.5-pro", "gpt-4o")
    assert (by_id["a2"]["model"], by_id["a2"]["requested_model"]) == ("gemini-2.5-flash", "gemini-2.5-flash")
    assert store.get_log("a1")["requested_model"] == "gpt-4o"
    # the model filter is on the model sent upstream (statistics and cooldowns use it too)
    rows, total = store.query_logs(LogQuery(group="g1", model="gemini-2.5-pro"), 0, 10)
    assert [r["id"] for r in rows] == ["a1"]
