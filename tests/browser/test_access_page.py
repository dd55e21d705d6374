"""The console's Access keys page in Chromium: create with the one-time reveal and copy, the key working on the
proxy, its usage chart, edit, disable, rotate, delete with confirmation, server validation next to the field, the
legacy-key hint, and the access-key filter of the logs page."""

from __future__ import annotations

import re
import uuid

import pytest
import requests
from playwright.sync_api import expect

from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.browser

GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = {"contents": [{"parts": [{"text": "hi"}]}]}


def new_group(server, fake, **fields) -> str:
    name = f"a-{uuid.uuid4().hex[:8]}"
    r = server.api("POST", "/api/groups", json={"name": name, "upstreams": [{"url": fake.url, "weight": 1}], **fields})
    assert r.status_code == 201, r.text
    assert server.api("POST", f"/api/groups/{name}/keys", json={"keys": fake.add_key()}).json()["added"] == 1
    return name


def proxied(server, group: str, secret: str) -> int:
    return requests.post(
        f"{server.url}/proxy/{group}{GEN}", headers={"x-goog-api-key": secret}, json=BODY, timeout=30
    ).status_code


def open_page(ui):
    ui.login()
    ui.page.get_by_role("navigation", name="Main").get_by_role("link", name="Access keys").click()
    expect(ui.page.get_by_role("heading", name="Access keys", exact=True)).to_be_visible()


def test_access_key_lifecycle(ui, server, fake):
    group = new_group(server, fake)
    name = f"client {uuid.uuid4().hex[:6]}"
    page = ui.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_page(ui)
    page.get_by_role("button", name="New access key").click()
    dialog = page.get_by_role("dialog", name="New access key")
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label("Groups").fill(group)
    dialog.get_by_label("Requests per minute").fill("1")
    dialog.get_by_role("button", name="Create").click()
    reveal = page.get_by_role("dialog", name=f"Access key created: {name}")
    expect(reveal).to_contain_text("only time it is shown")
    secret = reveal.get_by_label("The new access key").input_value()
    assert secret.startswith("sk-") and len(secret) > 40
    reveal.get_by_role("button", name="Copy").click()
    expect(reveal.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    ui.shot("access-key-created", docs=False)
    reveal.get_by_role("button", name="Close").click()
    row = page.locator("tr", has_text=name)
    expect(row).to_contain_text(f"{secret[:4]}...{secret[-4:]}")
    assert secret not in page.content()  # shown once, never again

    assert proxied(server, group, secret) == 200
    assert proxied(server, group, secret) == 429
    row.get_by_role("button", name="Usage").click()
    usage = page.get_by_role("dialog", name=f"Usage of {name} (24 h)")
    expect(usage).to_contain_text("2 requests, 1 failed (1 refused")
    expect(usage.locator("svg.chart")).to_be_visible()
    usage.get_by_role("link", name="Its request logs").click()
    expect(page.get_by_label("Access key id")).to_have_value(re.compile(r"^ak_"))
    expect(page.locator("tbody tr")).to_have_count(2)
    page.go_back()

    row = page.locator("tr", has_text=name)
    row.get_by_role("button", name="Edit").click()
    edit = page.get_by_role("dialog", name=f"Edit {name}")
    ui.console.expect("400 (BAD REQUEST)")  # the deliberate refusal below
    edit.get_by_label("Requests per minute").fill("10000000000000")  # the browser accepts it; the server does not
    edit.get_by_role("button", name="Save").click()
    expect(edit.locator(".field-error").filter(has_text="whole number")).to_be_visible()  # the server's message
    edit.get_by_label("Requests per minute").fill("5")
    edit.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("Requests per minute: 5")
    ui.shot("access-keys")

    row.get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("disabled")
    assert proxied(server, group, secret) == 401
    row.get_by_role("button", name="Enable").click()
    expect(row.get_by_role("button", name="Disable")).to_be_visible()
    wait_for(lambda: proxied(server, group, secret) == 200, what="the enabled key to serve")

    row.get_by_role("button", name="Rotate").click()
    page.get_by_role("dialog", name=f"Rotate {name}?").get_by_role("button", name="Rotate").click()
    rotated = page.get_by_role("dialog", name=f"Access key rotated: {name}")
    new_secret = rotated.get_by_label("The new access key").input_value()
    assert new_secret != secret
    rotated.get_by_role("button", name="Close").click()
    assert proxied(server, group, secret) == 401
    assert proxied(server, group, new_secret) == 200

    row.get_by_role("button", name="Delete").click()
    confirm = page.get_by_role("dialog", name=f"Delete {name}?")
    confirm.get_by_role("button", name="Cancel").click()
    expect(row).to_be_visible()
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog", name=f"Delete {name}?").get_by_role("button", name="Delete").click()
    expect(page.locator("tr", has_text=name)).to_have_count(0)
    assert proxied(server, group, new_secret) == 401


def test_legacy_proxy_keys_hint_moves_them(ui, server, fake):
    legacy = f"legacy-{uuid.uuid4().hex}"
    group = new_group(server, fake, proxy_keys=[legacy])
    open_page(ui)
    page = ui.page
    hint = page.get_by_role("status").filter(has_text="Legacy proxy keys are still in use")
    item = hint.locator("li", has_text=f"Group {group}")
    item.get_by_role("button", name="Move to access keys").click()
    page.get_by_role("dialog", name="Move to access keys?").get_by_role("button", name="Move").click()
    expect(page.locator("tr", has_text=f"{group} legacy 1")).to_be_visible()
    expect(page.locator("li", has_text=f"Group {group}")).to_have_count(0)
    assert server.api("GET", f"/api/groups/{group}").json()["proxy_keys"] == []
    assert proxied(server, group, legacy) == 200  # the client did not have to change anything


def test_dashboard_lists_top_access_keys(ui, server, fake):
    group = new_group(server, fake)
    r = server.api("POST", "/api/access-keys", json={"name": f"top {uuid.uuid4().hex[:6]}"})
    key = r.json()
    for _ in range(3):
        assert proxied(server, group, key["key"]) == 200
    ui.login()
    card = ui.page.get_by_role("region", name="Top access keys")
    expect(card.get_by_role("link", name=key["access_key"]["name"]).first).to_be_visible()
