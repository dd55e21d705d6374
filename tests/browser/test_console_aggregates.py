"""Aggregate groups in the console: creating one with the type selector and the member table, its page (members,
no keys section), editing weights, a server refusal shown next to the members, and a standard group's page showing
the aggregates that use it (and a delete that removes it from them after saying so)."""

from __future__ import annotations

import re
import uuid

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.test_console_behaviour import new_group

pytestmark = pytest.mark.browser


def test_create_an_aggregate_with_weighted_members_and_see_its_page(ui, server, fake):
    a = new_group(server, fake, n_keys=2)
    b = new_group(server, fake, n_keys=1)
    name = f"agg-{uuid.uuid4().hex[:8]}"
    ui.login()
    page = ui.page
    dialog = ui.new_group_dialog(name)
    dialog.get_by_label("Type", exact=True).select_option("aggregate")
    expect(dialog.get_by_label("Upstream URL", exact=True)).to_be_hidden()
    expect(dialog.locator("details.rules-details")).to_be_hidden()  # members apply their own rules
    editor = dialog.get_by_test_id("member-editor")
    expect(editor.get_by_label("Member group")).to_have_count(1)
    editor.get_by_label("Member group").first.select_option(a)
    editor.get_by_label("Weight").first.fill("3")
    editor.get_by_role("button", name="Add member").click()
    editor.get_by_label("Member group").nth(1).select_option(b)
    expect(editor.locator("[data-share]").first).to_have_text("75 %")
    expect(editor.locator("[data-share]").nth(1)).to_have_text("25 %")
    # client-side check before the server sees it: a weight out of range is named next to the members
    editor.get_by_label("Weight").nth(1).fill("1001")
    dialog.get_by_role("button", name="Create group").click()
    expect(dialog.locator('[data-error-for="sub_groups"]')).to_contain_text("0 to 1000")
    editor.get_by_label("Weight").nth(1).fill("1")
    dialog.get_by_role("button", name="Create group").click()
    expect(dialog).to_have_count(0)
    expect(page).to_have_url(re.compile(f"#/groups/{name}$"))
    stored = server.api("GET", f"/api/groups/{name}").json()
    assert stored["group_type"] == "aggregate" and stored["upstreams"] == []
    assert stored["sub_groups"] == [{"name": a, "weight": 3}, {"name": b, "weight": 1}]

    # its page: the members with weights and shares, no keys section and no Keys tab
    members = page.get_by_test_id("members")
    expect(members.locator(f'tr[data-member="{a}"]')).to_contain_text("75 %")
    expect(members.locator(f'tr[data-member="{b}"]')).to_contain_text("1 active")
    expect(page.get_by_role("region", name="Keys")).to_have_count(0)
    expect(page.get_by_role("navigation", name="Group sections")).to_have_count(0)
    expect(page.get_by_test_id("rules-card")).to_have_count(0)
    expect(page.get_by_test_id("endpoint")).to_have_text(re.compile(f"/proxy/{name}$"))
    assert "null" not in page.locator("main").inner_text()
    ui.shot("group-aggregate", docs=False)

    # edit: pause a member; the page shows it
    page.get_by_role("button", name="Edit").click()
    edit = page.get_by_role("dialog", name=f"Edit {name}")
    edit.get_by_test_id("member-editor").get_by_label("Weight").nth(1).fill("0")
    expect(edit.get_by_test_id("member-editor").locator("[data-share]").nth(1)).to_have_text("paused")
    edit.get_by_role("button", name="Save").click()
    expect(edit).to_have_count(0)
    expect(page.get_by_test_id("members").locator(f'tr[data-member="{b}"]')).to_contain_text("paused")
    assert server.api("GET", f"/api/groups/{name}").json()["sub_groups"][1] == {"name": b, "weight": 0}

    # the groups list says what it is
    page.goto(f"{server.url}/#/groups")
    row = page.locator("tr").filter(has=page.get_by_role("link", name=name, exact=True))
    expect(row).to_contain_text("aggregate")
    expect(row).to_contain_text(f"{a} (weight 3)")


def test_a_server_refusal_of_members_is_shown_next_to_them(ui, server, fake):
    a = new_group(server, fake, n_keys=0)
    ui.login()
    dialog = ui.new_group_dialog(f"agg-{uuid.uuid4().hex[:8]}")
    dialog.get_by_label("Type", exact=True).select_option("aggregate")
    editor = dialog.get_by_test_id("member-editor")
    editor.get_by_label("Member group").first.select_option(a)
    server.api("DELETE", f"/api/groups/{a}")  # gone meanwhile (another operator): the server names it
    ui.console.expect("status of 400")
    dialog.get_by_role("button", name="Create group").click()
    expect(dialog.locator('[data-error-for="sub_groups"]')).to_contain_text(f"no group named '{a}'")
    expect(dialog).to_be_visible()


def test_a_standard_groups_page_shows_the_aggregates_that_use_it(ui, server, fake):
    a = new_group(server, fake, n_keys=1)
    agg = f"agg-{uuid.uuid4().hex[:8]}"
    r = server.api("POST", "/api/groups", json={"name": agg, "group_type": "aggregate", "sub_groups": [{"name": a}]})
    assert r.status_code == 201, r.text
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/groups/{a}")
    used = page.get_by_test_id("used-by")
    expect(used.get_by_role("link", name=agg)).to_be_visible()
    assert "null" not in page.locator("main").inner_text()
    expect(page.get_by_role("navigation", name="Group sections")).to_be_visible()  # a standard group has keys
    # deleting it says that it leaves the aggregate, and does so
    page.get_by_role("button", name="Delete group").click()
    confirm = page.get_by_role("dialog", name=f"Delete group {a}?")
    expect(confirm).to_contain_text(f"removed from the aggregate groups {agg}")
    confirm.get_by_role("button", name=re.compile("^Delete")).click()
    expect(page).to_have_url(re.compile("#/groups$"))
    assert server.api("GET", f"/api/groups/{agg}").json()["sub_groups"] == []
    # an unused group says so
    b = new_group(server, fake, n_keys=0)
    page.goto(f"{server.url}/#/groups/{b}")
    expect(page.get_by_test_id("used-by")).to_contain_text("No aggregate group")


def test_logs_show_the_aggregate_a_request_came_through(ui, server, fake):
    a = new_group(server, fake, n_keys=1)
    agg = f"agg-{uuid.uuid4().hex[:8]}"
    r = server.api(
        "POST",
        "/api/groups",
        json={"name": agg, "group_type": "aggregate", "sub_groups": [{"name": a}], "proxy_keys": ["pk-logs-0123456"]},
    )
    assert r.status_code == 201, r.text
    reply = requests.post(
        f"{server.url}/proxy/{agg}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": "pk-logs-0123456"},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/logs?group={a}")
    row = page.locator("tbody tr").first
    expect(row).to_contain_text(f"via {agg}")
    row.get_by_role("button", name=re.compile("^Details")).click()
    drawer = page.get_by_role("dialog")
    expect(drawer).to_contain_text("Through aggregate")
    expect(drawer).to_contain_text(agg)
