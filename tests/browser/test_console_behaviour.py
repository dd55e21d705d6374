"""Console behaviour beyond the journey: 375 px layout, keyboard use, escaping of data, server-side validation
messages, group overrides, and the notice shown when an older server lacks an endpoint."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import UI
from tests.e2e.conftest import AUTH_KEY

pytestmark = pytest.mark.browser

PHONE = {"width": 375, "height": 740}


def new_group(server, fake, n_keys: int = 2, **fields) -> str:
    name = f"b-{uuid.uuid4().hex[:8]}"
    r = server.api("POST", "/api/groups", json={"name": name, "upstreams": [{"url": fake.url, "weight": 1}], **fields})
    assert r.status_code == 201, r.text
    if n_keys:
        keys = "\n".join(fake.add_key() for _ in range(n_keys))
        assert server.api("POST", f"/api/groups/{name}/keys", json={"keys": keys}).json()["added"] == n_keys
    return name


def no_horizontal_overflow(ui: UI) -> None:
    width = ui.page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide at {PHONE['width']}px"


def test_phone_width_collapses_nav_and_scrolls_tables(make_ui, server, fake):
    name = new_group(server, fake, n_keys=3)
    ui = make_ui(server, PHONE)
    ui.login()
    page = ui.page
    nav_links = page.get_by_role("navigation", name="Main").get_by_role("link")
    menu = page.get_by_role("button", name="Menu")
    expect(menu).to_be_visible()
    expect(nav_links.first).to_be_hidden()
    no_horizontal_overflow(ui)
    ui.shot("mobile-dashboard", docs=False)
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    nav_links.filter(has_text="Groups").click()
    expect(nav_links.first).to_be_hidden()  # choosing a page closes the menu
    page.get_by_role("link", name=name).click()
    expect(page.get_by_test_id("endpoint")).to_be_visible()
    no_horizontal_overflow(ui)
    page.get_by_role("link", name="Keys", exact=True).click()
    expect(page.locator("tbody tr")).to_have_count(3)
    no_horizontal_overflow(ui)
    wrap = page.locator(".table-wrap")
    # the keys are cards under 600 px: nothing scrolls sideways, every row's actions are in view
    assert not wrap.evaluate("el => el.scrollWidth > el.clientWidth"), "the key cards should fit the screen"
    first = page.locator("tbody tr").first
    expect(first.locator("td.card-actions").get_by_role("button", name=re.compile("^Delete"))).to_be_in_viewport()
    expect(first.locator("td[data-label='Status']")).to_be_visible()
    ui.shot("mobile")
    page.goto(f"{server.url}/#/logs")
    expect(page.get_by_role("heading", name="Logs")).to_be_visible()
    no_horizontal_overflow(ui)
    page.goto(f"{server.url}/#/settings")
    expect(page.get_by_label("Max retries", exact=True)).to_be_visible()
    no_horizontal_overflow(ui)


def test_keyboard_only(ui, server, fake):
    name = new_group(server, fake, n_keys=1)
    page = ui.page
    ui.open()
    expect(page.get_by_label("Admin key (AUTH_KEY)", exact=True)).to_be_focused()
    page.keyboard.type(AUTH_KEY)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.reload()  # a fresh load: the first Tab reaches the skip link
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    expect(page).to_have_url(re.compile(r"#/dashboard$"))

    page.goto(f"{server.url}/#/groups")
    new = page.get_by_role("button", name="New group")
    new.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="New group")
    expect(dialog.get_by_label("Name", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    # A destructive confirmation starts on Cancel, and Escape keeps the key.
    page.goto(f"{server.url}/#/groups/{name}/keys")
    delete = page.get_by_role("button", name=re.compile("^Delete AIza"))
    delete.focus()
    page.keyboard.press("Enter")
    confirm = page.get_by_role("dialog", name=re.compile("^Delete key"))
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(confirm).to_have_count(0)
    expect(page.locator("tbody tr")).to_have_count(1)
    # Focus is visible (outline) on buttons reached by keyboard.
    delete.focus()
    assert delete.evaluate("el => getComputedStyle(el).outlineStyle") != "none"


def test_data_is_rendered_as_text(ui, server, fake):
    markup = '<img src=x onerror="window.__owned=1">'
    name = new_group(server, fake, n_keys=1, display_name=markup, description=markup)
    (key,) = server.api("GET", f"/api/groups/{name}/keys").json()["keys"]
    assert server.api("PUT", f"/api/groups/{name}/keys/{key['id']}", json={"notes": markup}).status_code == 200
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/groups")
    expect(page.get_by_text(markup).first).to_be_visible()
    page.goto(f"{server.url}/#/groups/{name}")
    expect(page.get_by_role("heading", name=markup)).to_be_visible()
    page.goto(f"{server.url}/#/groups/{name}/keys")
    expect(page.locator(".notes-cell")).to_contain_text(markup)
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("window.__owned") is None


def test_server_validation_messages_sit_next_to_fields(ui, server):
    ui.console.expect("400 (BAD REQUEST)")  # the refused PUT is logged by Chromium as a failed load
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/settings")
    keys = page.get_by_label("Proxy keys", exact=True)
    keys.fill("short")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("alert").filter(has_text="invalid settings")).to_be_visible()
    error = page.locator("[data-error-for='proxy_keys']")
    expect(error).to_have_text("must be a list of strings of 8 to 256 characters")
    expect(keys).to_have_attribute("aria-invalid", "true")
    assert server.api("GET", "/api/settings").json()["settings"]["proxy_keys"] == []


def test_group_overrides_from_the_schema(ui, server, fake):
    name = new_group(server, fake, n_keys=0)
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/groups/{name}")
    page.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name=f"Edit {name}")
    dialog.get_by_text("Setting overrides").click()
    # Only group-overridable settings are offered; empty means "system value".
    expect(dialog.get_by_label("Request log retention days", exact=True)).to_have_count(0)
    dialog.get_by_label("Max retries", exact=True).fill("1")
    dialog.get_by_label("Description", exact=True).fill("overrides test")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_have_count(0)
    expect(page.get_by_text("max_retries = 1")).to_be_visible()
    assert server.api("GET", f"/api/groups/{name}").json()["settings"] == {"max_retries": 1}


def test_missing_endpoints_show_a_notice(ui, server):
    """Against an older server without the statistics endpoints, the dashboard explains instead of breaking."""
    ui.console.expect("status of 404")
    missing = json.dumps({"error": {"code": "ROUTE_NOT_FOUND", "message": "no route"}})
    for path in ("/api/dashboard*", "/api/stats/hourly*", "/api/stats/groups"):
        ui.page.route(
            f"**{path}", lambda route: route.fulfill(status=404, body=missing, content_type="application/json")
        )
    ui.login()
    page = ui.page
    expect(page.get_by_text("Traffic statistics (/api/dashboard) is not available on this server yet")).to_be_visible()
    expect(page.get_by_text("Hourly statistics (/api/stats/hourly) is not available")).to_be_visible()
    expect(page.locator(".stat").filter(has_text="Active keys")).to_be_visible()
