"""The console against hostile or unusual content: very long unbroken values (a 100-character group name, a
200-character display name, a 2,000-character description, a 300-character model name sent by a client) stay inside
the page at 1440 and 390 px, so the columns and actions beside them stay on screen; filter text with ``&``, ``+``
and ``%`` survives the trip through the address."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from playwright.sync_api import expect

from tests.e2e.conftest import wait_for
from tests.fakes.fake_gemini import errors

pytestmark = pytest.mark.browser

WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
LONG_MODEL = "gemini-2.5-pro-" + "z" * 285


def long_group(server, fake) -> tuple[str, str, list[str]]:
    """A group whose name, display name and description are as long as allowed, without a space to wrap at."""
    name = ("h-" + uuid.uuid4().hex * 4)[:100]
    proxy_key = f"pk-{uuid.uuid4().hex}"
    r = server.api(
        "POST",
        "/api/groups",
        json={
            "name": name,
            "display_name": "D" * 200,
            "description": "x" * 2000,
            "upstreams": [{"url": fake.url, "weight": 1}],
            "proxy_keys": [proxy_key],
        },
    )
    assert r.status_code == 201, r.text
    keys = [fake.add_key(), fake.add_key()]
    assert server.api("POST", f"/api/groups/{name}/keys", json={"keys": "\n".join(keys)}).json()["added"] == 2
    return name, proxy_key, keys


def page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1440", "390"])
def test_long_unbroken_values_stay_inside_the_page(make_ui, server, fake, viewport):
    name, proxy_key, keys = long_group(server, fake)
    url = f"{server.url}/proxy/{name}/v1beta/models/{LONG_MODEL}:generateContent"
    body = {"contents": [{"parts": [{"text": "Hi"}]}]}
    # One request whose first attempt gets a per-minute 429 and whose retry gets the 404 naming the long model:
    # the request's drawer then lists both attempts. Whichever key is tried first, the scripted 429 is used up.
    fake.script(keys[0], [errors.quota_per_minute(LONG_MODEL, retry_delay="900s")])
    for _ in range(2):
        assert requests.post(url, json=body, headers={"x-goog-api-key": proxy_key}, timeout=30).status_code == 404
        if not fake.pending_script(keys[0]):
            break
    retried = wait_for(
        lambda: [r for r in server.api("GET", f"/api/logs?group={name}").json()["logs"] if r["attempt"] == 2],
        what="the retried request's final row",
    )
    ui = make_ui(server, viewport)
    ui.login()
    page = ui.page
    for route, ready in (
        ("groups", page.get_by_role("link", name=name)),
        (f"groups/{name}", page.get_by_role("heading", name="D" * 200)),
        (f"logs?group={name}", page.locator("tbody tr")),
        ("dashboard", page.get_by_role("heading", name="Dashboard")),
    ):
        page.goto(f"{server.url}/#/{route}")
        expect(ready.first).to_be_visible()
        page.wait_for_load_state("networkidle")
        assert page_width(page) <= viewport["width"], f"#/{route} is {page_width(page)}px wide"
    if viewport is WIDE:  # a long group name in the dashboard's group selector does not stretch the toolbar
        page.goto(f"{server.url}/#/dashboard?group={name}")
        select = page.get_by_role("combobox", name="Group shown")
        expect(select).to_have_value(name)
        assert select.bounding_box()["width"] <= 320, select.bounding_box()
    page.goto(f"{server.url}/#/groups")
    keys_button = page.locator("tr", has=page.get_by_role("link", name=name)).get_by_role("link", name="Keys")
    expect(keys_button).to_be_visible()
    box = keys_button.bounding_box()  # other tests' groups may push the row below the fold: check sideways only
    assert box["x"] + box["width"] <= viewport["width"], box
    page.goto(f"{server.url}/#/logs?group={name}")
    row = page.locator(f"tbody tr[data-log-id='{retried[0]['id']}']")
    details = row.get_by_role("button", name=re.compile("^Details"))
    expect(details).to_be_visible()
    details.click()  # the drawer: the long model and its error wrap inside it
    drawer = page.locator("dialog[open]")
    expect(drawer.get_by_role("list", name="Attempts of this request")).to_be_visible()
    body = drawer.locator(".dialog-body")
    assert body.evaluate("el => el.scrollWidth <= el.clientWidth"), body.evaluate(
        "el => [el.scrollWidth, el.clientWidth]"
    )
    page.keyboard.press("Escape")
    expect(drawer).to_have_count(0)
    for cell in ("td.group-cell", "td.clip-cell:not(.group-cell)"):  # group and model are shown, at any width
        shown = row.locator(cell).locator(".clamp").evaluate("el => el.getBoundingClientRect().width")
        assert shown > 40, (cell, shown)
    if viewport is WIDE:  # the table itself does not scroll sideways, the model is cut with its full name on hover
        wrap = page.locator(".table-wrap")
        assert wrap.evaluate("el => el.scrollWidth <= el.clientWidth"), str(
            wrap.evaluate(
                "el => [el.scrollWidth, el.clientWidth, [...document.querySelectorAll('thead th')].map((e) => e.textContent + e.offsetWidth)]"
            )
        )
        expect(details).to_be_in_viewport()
        # the full name (as logged: usage rows keep a model name's first 200 characters) on hover
        expect(row.get_by_title(LONG_MODEL[:200], exact=True)).to_have_count(1)


def test_log_filters_keep_ampersands_plus_signs_and_percent_signs(ui, server, fake):
    """What an operator types in a filter comes back unchanged from the address (one decoding, not two), and the
    server is asked for exactly that text; a malformed address does not break the page."""
    ui.login()
    page = ui.page
    typed = "quota & limit+1 100%41"
    page.goto(f"{server.url}/#/logs")
    page.get_by_label("Error contains").fill(typed)
    with page.expect_request(lambda r: "/api/logs?" in r.url and "q=" in r.url) as sent:
        page.get_by_role("button", name="Apply").click()
    assert parse_qs(urlsplit(sent.value.url).query)["q"] == [typed]
    expect(page.get_by_label("Error contains")).to_have_value(typed)
    page.goto(f"{server.url}/#/logs?q=%E0%A4%A")  # a truncated escape typed into the address bar
    expect(page.get_by_role("heading", name="Logs")).to_be_visible()


COPY_SPY = """
Object.defineProperty(navigator, "clipboard", {value: {writeText: () => Promise.reject(new Error("insecure"))}});
document.addEventListener("copy", () => {
  const el = document.activeElement;
  window.__copied = el && "value" in el ? el.value.slice(el.selectionStart, el.selectionEnd) : String(getSelection());
});
"""


def test_copy_works_inside_a_dialog_without_the_clipboard_api(ui, server):
    """On plain HTTP away from localhost (no Clipboard API) the copy button of the new-group dialog still copies the
    proxy key: the fallback's text area must sit inside the modal dialog, since everything outside it is inert."""
    ui.page.add_init_script(COPY_SPY)
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/groups")
    page.get_by_role("button", name="New group").click()
    key = page.get_by_label("Proxy key", exact=True).input_value()
    assert key
    page.get_by_role("button", name="Copy the proxy key").click()
    wait_for(lambda: page.evaluate("window.__copied") is not None, what="a copy event")
    assert page.evaluate("window.__copied") == key


def test_escape_closes_the_phone_menu_and_focus_returns_to_its_button(make_ui, server):
    ui = make_ui(server, PHONE)
    ui.login()
    page = ui.page
    toggle = page.get_by_role("button", name="Menu")
    toggle.focus()
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Dashboard")).to_be_focused()
    page.keyboard.press("Escape")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(page.get_by_role("link", name="Logs")).to_be_hidden()
    expect(toggle).to_be_focused()
