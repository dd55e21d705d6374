"""The console's forms for a group's request rules: the redirect key/value editor and strict mode, the overrides
JSON editor (checked as you type), the header rule list, the egress proxy URL (masked, kept when saved back), in the
create and edit dialogs, and the read-only rules card on the group page."""

from __future__ import annotations

import json
import sqlite3
import uuid

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.test_console_behaviour import new_group
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.browser

PROXY = "http://px-user:px-secret-5512@127.0.0.1:3128"


def stored_group(server, name: str) -> dict:
    """The group as stored (the admin API masks the proxy URL; the test needs to see the real one)."""
    with sqlite3.connect(server.data_dir / "gptload.db") as conn:
        (data,) = conn.execute("SELECT data FROM groups WHERE name = ?", (name,)).fetchone()
    return json.loads(data)


def open_edit(ui, server, name):
    page = ui.page
    page.goto(f"{server.url}/#/groups/{name}")
    page.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name=f"Edit {name}")
    return page, dialog


def test_edit_dialog_sets_redirects_overrides_and_header_rules(ui, server, fake):
    name = new_group(server, fake, n_keys=0)
    ui.login()
    page, dialog = open_edit(ui, server, name)
    dialog.get_by_text("Routing rules (redirects, overrides, headers)").click()
    dialog.get_by_role("button", name="Add redirect").click()
    dialog.get_by_label("Requested model").last.fill("gpt-4o")
    dialog.get_by_label("Model sent upstream").last.fill("models/gemini-2.5-pro")
    dialog.get_by_role("button", name="Add redirect").click()
    dialog.get_by_label("Requested model").last.fill("fast")
    dialog.get_by_label("Model sent upstream").last.fill("gemini-2.5-flash")
    dialog.get_by_label("Strict: only these models may be used", exact=False).check()
    overrides = dialog.locator("textarea[name='param_overrides']")
    overrides.fill('{"generationConfig": {"temperature": 0.2,}}')
    expect(dialog.locator("[data-error-for='param_overrides']")).to_contain_text("Not valid JSON")
    expect(overrides).to_have_attribute("aria-invalid", "true")
    overrides.fill('{"generationConfig": {"temperature": 0.2, "topK": null}}')
    expect(dialog.locator("[data-error-for='param_overrides']")).to_have_text("")
    dialog.get_by_role("button", name="Add header rule").click()
    dialog.get_by_label("Header name").last.fill("x-goog-api-key")
    dialog.get_by_label("Header value").last.fill("stolen")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator("[data-error-for='header_rules']")).to_contain_text("managed by gptload")
    dialog.get_by_label("Header name").last.fill("X-Team")
    dialog.get_by_label("Header value").last.fill("${GROUP_NAME}-${CLIENT_IP}")
    dialog.get_by_role("button", name="Add header rule").click()
    dialog.get_by_label("Action").last.select_option("remove")
    expect(dialog.get_by_label("Header value").last).to_be_disabled()
    dialog.get_by_label("Header name").last.fill("User-Agent")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_have_count(0)
    got = server.api("GET", f"/api/groups/{name}").json()
    assert got["model_redirect_rules"] == {"gpt-4o": "gemini-2.5-pro", "fast": "gemini-2.5-flash"}
    assert got["model_redirect_strict"] is True
    assert got["param_overrides"] == {"generationConfig": {"temperature": 0.2, "topK": None}}
    assert got["header_rules"] == [
        {"key": "X-Team", "value": "${GROUP_NAME}-${CLIENT_IP}", "action": "set"},
        {"key": "User-Agent", "value": "", "action": "remove"},
    ]
    card = page.get_by_test_id("rules-card")
    expect(card.get_by_test_id("redirects")).to_contain_text("gpt-4o → gemini-2.5-pro")
    expect(card).to_contain_text("strict: other models refused")
    expect(card.get_by_test_id("header-rules")).to_contain_text("remove User-Agent")
    # the dialog opens again with what was saved; removing a redirect row and saving removes it
    page, dialog = open_edit(ui, server, name)
    expect(dialog.get_by_label("Requested model")).to_have_count(2)
    dialog.get_by_role("button", name="Remove redirect").first.click()
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_have_count(0)
    assert server.api("GET", f"/api/groups/{name}").json()["model_redirect_rules"] == {"fast": "gemini-2.5-flash"}


def test_a_server_refusal_of_a_rule_sits_next_to_it(ui, server, fake):
    ui.console.expect("400 (BAD REQUEST)")
    name = new_group(server, fake, n_keys=0)
    ui.login()
    _page, dialog = open_edit(ui, server, name)
    dialog.get_by_text("Routing rules (redirects, overrides, headers)").click()
    deep = "{" + '"a": {' * 20 + "}" * 20 + "}"
    dialog.locator("textarea[name='param_overrides']").fill(deep)
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator("[data-error-for='param_overrides']")).to_contain_text("nested deeper than 16")
    assert server.api("GET", f"/api/groups/{name}").json()["param_overrides"] == {}


def test_proxy_url_is_masked_in_the_edit_form_and_kept_when_saved_back(ui, server, fake):
    name = new_group(server, fake, n_keys=0, settings={"proxy_url": PROXY})
    sealed = stored_group(server, name)["settings"]["proxy_url"]
    assert "px-secret-5512" not in sealed and sealed.endswith("@127.0.0.1:3128")  # stored sealed, never in clear
    ui.login()
    page, dialog = open_edit(ui, server, name)
    expect(page.get_by_test_id("rules-card")).to_contain_text("http://****@127.0.0.1:3128")
    dialog.get_by_text("Setting overrides").click()
    field = dialog.get_by_label("Proxy URL", exact=True)
    expect(field).to_have_value("http://****@127.0.0.1:3128")
    assert "px-secret-5512" not in page.content()
    dialog.get_by_label("Description", exact=True).fill("saved with the masked proxy URL")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_have_count(0)
    stored = stored_group(server, name)
    assert stored["description"] == "saved with the masked proxy URL"
    assert stored["settings"]["proxy_url"] == sealed  # kept as it was


def test_create_dialog_takes_rules_and_an_egress_proxy(ui, server, fake):
    name = f"c-{uuid.uuid4().hex[:8]}"
    ui.login()
    page = ui.page
    dialog = ui.new_group_dialog(name)
    dialog.get_by_text("Routing rules and egress proxy (optional)").click()
    dialog.get_by_role("button", name="Add redirect").click()
    dialog.get_by_label("Requested model").fill("team-model")
    dialog.get_by_label("Model sent upstream").fill("gemini-2.5-flash")
    dialog.get_by_label("Egress proxy URL").fill("not a url")
    dialog.get_by_role("button", name="Create group").click()
    expect(dialog.locator("[data-error-for='settings']")).to_contain_text("scheme://")
    dialog.get_by_label("Egress proxy URL").fill(PROXY)
    dialog.get_by_role("button", name="Create group").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    got = server.api("GET", f"/api/groups/{name}").json()
    assert got["model_redirect_rules"] == {"team-model": "gemini-2.5-flash"}
    assert got["settings"]["proxy_url"] == "http://****@127.0.0.1:3128"
    stored = stored_group(server, name)["settings"]["proxy_url"]
    assert stored.startswith("http://sealed.v1.") and "px-secret-5512" not in stored
    assert "px-secret-5512" not in page.content()


def test_the_log_shows_the_model_asked_for_next_to_the_one_sent(ui, server, fake):
    name = new_group(
        server, fake, n_keys=1, proxy_keys=["pk-logs-0001"], model_redirect_rules={"alias-x": "gemini-2.5-flash"}
    )
    r = requests.post(
        f"{server.url}/proxy/{name}/v1beta/models/alias-x:generateContent",
        headers={"x-goog-api-key": "pk-logs-0001"},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    wait_for(lambda: server.api("GET", f"/api/logs?group={name}").json()["logs"], what="the log row")
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/logs?group={name}")
    row = page.locator("tbody tr").first
    expect(row).to_contain_text("gemini-2.5-flash")
    expect(row).to_contain_text("asked: alias-x")
    row.get_by_role("button", name="Details").click()
    expect(page.get_by_role("dialog")).to_contain_text("Requested model (redirected)")


def test_settings_page_shows_the_proxy_url_masked_and_keeps_it_on_save(ui, server):
    assert server.api("PUT", "/api/settings", json={"proxy_url": PROXY}).status_code == 200
    with sqlite3.connect(server.data_dir / "gptload.db") as conn:
        (raw,) = conn.execute("SELECT value FROM settings WHERE name = 'proxy_url'").fetchone()
    before = json.loads(raw)
    assert "px-secret-5512" not in before  # sealed at rest
    try:
        ui.login()
        page = ui.page
        page.goto(f"{server.url}/#/settings")
        field = page.get_by_label("Proxy URL", exact=True)
        expect(field).to_have_value("http://****@127.0.0.1:3128")
        assert "px-secret-5512" not in page.content()
        page.get_by_label("Max retries", exact=True).fill("4")
        page.get_by_role("button", name="Save settings").click()
        expect(page.get_by_text("Settings saved: max_retries")).to_be_visible()
        with sqlite3.connect(server.data_dir / "gptload.db") as conn:
            stored = dict(conn.execute("SELECT name, value FROM settings").fetchall())
            assert json.loads(stored["proxy_url"]) == before and json.loads(stored["max_retries"]) == 4
    finally:  # the session's server is shared: leave the system settings as they were
        server.api("PUT", "/api/settings", json={"proxy_url": "", "max_retries": 3})


def test_a_group_can_say_direct_when_a_system_proxy_is_set(ui, server, fake):
    name = new_group(server, fake, n_keys=0)
    assert server.api("PUT", "/api/settings", json={"proxy_url": PROXY}).status_code == 200
    try:
        ui.login()
        page, dialog = open_edit(ui, server, name)
        dialog.get_by_text("Setting overrides").click()
        field = dialog.get_by_label("Proxy URL", exact=True)
        expect(dialog).to_contain_text("'direct': no proxy")
        field.fill("direct")
        dialog.get_by_role("button", name="Save").click()
        expect(dialog).to_have_count(0)
        assert server.api("GET", f"/api/groups/{name}").json()["settings"]["proxy_url"] == "direct"
        expect(page.get_by_test_id("rules-card")).to_contain_text("direct (no proxy")
    finally:  # the session's server is shared: leave the system settings as they were
        server.api("PUT", "/api/settings", json={"proxy_url": ""})


def test_create_dialog_takes_direct_as_its_hint_says(ui, server, fake):
    """The create dialog's hint offers 'direct' (no proxy): its own check must let it through, as the server does."""
    name = f"d-{uuid.uuid4().hex[:8]}"
    ui.login()
    page = ui.page
    dialog = ui.new_group_dialog(name)
    dialog.get_by_text("Routing rules and egress proxy (optional)").click()
    expect(dialog).to_contain_text("direct: no proxy")
    dialog.get_by_label("Egress proxy URL").fill("Direct")
    dialog.get_by_role("button", name="Create group").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    assert server.api("GET", f"/api/groups/{name}").json()["settings"]["proxy_url"] == "direct"
