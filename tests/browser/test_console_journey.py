"""The console's main journey on a fresh server: log in, create a group, import keys, proxy real requests, watch
the dashboard and key table change (with a live cooldown countdown), validate, export, filter logs, change a
setting, log out. It also takes the README's screenshots, one per page, with real data."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import UI
from tests.e2e.conftest import start_server
from tests.fakes.fake_gemini import errors

pytestmark = pytest.mark.browser

MODEL = "gemini-2.5-flash"


@pytest.fixture
def fresh_server(tmp_path):
    srv = start_server(tmp_path)
    yield srv
    srv.stop()


def proxied(base: str, proxy_key: str, n: int, model: str = MODEL) -> list[int]:
    url = f"{base}/v1beta/models/{model}:generateContent"
    body = {"contents": [{"parts": [{"text": "Hello"}]}]}
    return [
        requests.post(url, json=body, headers={"x-goog-api-key": proxy_key}, timeout=30).status_code for _ in range(n)
    ]


def nav(page, name: str):
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name)


def row_of(ui: UI, secret: str):
    return ui.page.locator("tbody tr").filter(
        has=ui.page.get_by_role("rowheader", name=f"{secret[:4]}...{secret[-4:]}")
    )


def test_console_journey(make_ui, fresh_server, fake, tmp_path):
    server = fresh_server
    ui = make_ui(server)
    page = ui.page

    # -- login: a wrong key is refused with a message; the right one opens the dashboard ----------------------
    ui.open()
    expect(page.get_by_role("heading", name="gptload")).to_be_visible()
    ui.shot("login")
    ui.console.expect("401 (UNAUTHORIZED)")  # Chromium logs the refused check as a failed resource load
    page.get_by_label("Admin key (AUTH_KEY)", exact=True).fill("not-the-key")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That admin key is not valid.")
    ui.login()
    requests_card = page.locator(".stat").filter(has_text="Requests (24 h)")
    expect(requests_card.locator(".stat-value")).to_have_text("0")
    expect(page.get_by_text("No groups yet")).to_be_visible()

    # -- create a group from the empty state ---------------------------------------------------------------
    nav(page, "Groups").click()
    page.get_by_role("button", name="Create your first group").click()
    dialog = page.get_by_role("dialog", name="New group")
    dialog.get_by_label("Name", exact=True).fill("Bad Name")
    dialog.get_by_role("button", name="Create group").click()
    expect(dialog.get_by_text(re.compile(r"^Use 1.100 of a-z"))).to_be_visible()
    dialog.get_by_label("Name", exact=True).fill("main")
    dialog.get_by_label("Display name", exact=True).fill("Main pool")
    dialog.get_by_label("Upstream URL", exact=True).fill(fake.url)
    proxy_key = dialog.get_by_label("Proxy key", exact=True).input_value()
    assert re.fullmatch(r"sk-[A-Za-z0-9]{40}", proxy_key)
    dialog.get_by_label("Upstream URL", exact=True).press("Enter")  # forms submit with Enter
    expect(page.get_by_role("heading", name="Main pool")).to_be_visible()
    expect(page.get_by_test_id("endpoint")).to_have_text(f"{server.url}/proxy/main")
    code = page.locator(".code-panel pre")
    expect(code).to_contain_text(f'api_key="{proxy_key}"')
    page.get_by_role("tab", name="OpenAI SDK").click()
    expect(code).to_contain_text(f'OpenAI(base_url="{server.url}/proxy/main/v1beta/openai/"')
    page.get_by_role("tab", name="curl").click()
    expect(code).to_contain_text(f"x-goog-api-key: {proxy_key}")

    # proxy-key generator: crypto.getRandomValues, added to the group on request
    page.get_by_role("button", name="Generate key").click()
    generated = page.get_by_label("Generated proxy key", exact=True).input_value()
    assert re.fullmatch(r"sk-[A-Za-z0-9]{40}", generated) and generated != proxy_key
    page.get_by_role("button", name="Add to group").click()
    expect(page.locator(".proxy-keys li")).to_have_count(2)
    assert server.api("GET", "/api/groups/main").json()["proxy_keys"] == [proxy_key, generated]

    # -- import keys from the textarea and a .txt file -----------------------------------------------------
    keys = [fake.add_key() for _ in range(4)]
    page.get_by_role("link", name="Keys", exact=True).click()
    expect(page.get_by_text("No keys in this group yet")).to_be_visible()
    page.get_by_role("button", name="Import keys").first.click()
    dialog = page.get_by_role("dialog", name="Import keys into main")
    dialog.get_by_label("Keys", exact=True).fill(f"{keys[0]}\n{keys[1]}, {keys[2]}; AIzaTooShort")
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"{keys[3]}\n{keys[0]}\n")
    dialog.get_by_label("…or a .txt file", exact=True).set_input_files(str(key_file))
    expect(dialog.get_by_text("keys.txt: 2 entries read")).to_be_visible()
    dialog.get_by_role("button", name="Import").click()
    expect(dialog.get_by_text("Added 4 · 1 duplicate · 1 rejected")).to_be_visible()
    page.keyboard.press("Escape")  # dialogs close with Escape
    expect(dialog).to_have_count(0)
    expect(page.locator("tbody tr")).to_have_count(4)
    expect(page.locator("tbody .chip.active")).to_have_count(4)

    # -- proxied requests: one key dies, one hits a per-minute quota; the table shows it ---------------------
    fake.set_behavior(keys[1], errors.invalid_key())
    fake.script(keys[2], [errors.quota_per_minute(MODEL, retry_delay="45s")])
    assert proxied(f"{server.url}/proxy/main", proxy_key, 8) == [200] * 8
    assert proxied(f"{server.url}/proxy/main", proxy_key, 1, model="gemini-9") == [404]  # the request's fault
    page.get_by_role("button", name="Refresh").click()
    expect(row_of(ui, keys[1]).locator(".chip")).to_have_text("invalid")
    expect(row_of(ui, keys[1])).to_contain_text("API_KEY_INVALID")
    expect(row_of(ui, keys[2]).locator(".chip")).to_have_text("limited")  # cooling for one model: serves others
    countdown = row_of(ui, keys[2]).locator(".cooldown")
    expect(countdown).to_have_text(re.compile(rf"^{MODEL} · 4\d s$"))
    first = countdown.text_content()
    expect(countdown).not_to_have_text(first)  # it counts down client-side, second by second
    assert page.locator(".chip.active").count() == 2
    ui.shot("keys")

    # filters: by status and by text (both on the server, over the whole group)
    page.get_by_label("Status filter", exact=True).select_option("invalid")
    expect(page.locator("tbody tr")).to_have_count(1)
    page.get_by_label("Status filter", exact=True).select_option("")
    page.get_by_label("Search all keys of the group", exact=True).fill("quota")
    expect(page.get_by_text("No keys match")).to_be_visible()
    page.get_by_label("Search all keys of the group", exact=True).fill("PerMinute")
    expect(page.locator("tbody tr")).to_have_count(1)
    page.get_by_label("Search all keys of the group", exact=True).fill("")
    expect(page.locator("tbody tr")).to_have_count(4)

    # notes (text stays text: markup in a note is not interpreted)
    row_of(ui, keys[0]).get_by_role("button", name=re.compile("^Edit notes")).click()
    page.get_by_label("Notes", exact=True).fill("<b>team A</b> key")
    page.get_by_label("Notes", exact=True).press("Control+Enter")
    expect(row_of(ui, keys[0]).locator(".notes-cell")).to_contain_text("<b>team A</b> key")

    # export goes to a file download, never onto the page
    page.get_by_role("button", name="Export").click()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download .txt").click()
    exported = download_info.value.path().read_text().split()
    assert sorted(exported) == sorted(keys)
    content = page.content()
    assert not any(k in content for k in keys), "a real key reached the page"

    # validate with progress: the dead key came back to life upstream
    fake.set_behavior(keys[1], None)
    page.get_by_role("button", name="Validate").click()
    page.get_by_label("Validate", exact=True).select_option("invalid")
    page.get_by_role("button", name="Start").click()
    expect(page.locator(".task")).to_contain_text("Validation finished")
    expect(page.locator(".task")).to_contain_text("1/1 · 1 valid · 0 invalid")
    expect(row_of(ui, keys[1]).locator(".chip")).to_have_text("active")

    # delete one key (with confirmation), then restore the cooling one
    row_of(ui, keys[3]).get_by_role("button", name=re.compile("^Delete")).click()
    confirm = page.get_by_role("dialog", name=re.compile("^Delete key"))
    confirm.get_by_role("button", name="Delete").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    page.get_by_role("button", name=re.compile("^Restore all")).click()
    confirm = page.get_by_role("dialog", name="Restore all 1 key?")  # an action on all keys names the count
    confirm.get_by_role("button", name="Restore 1").click()
    expect(page.locator("tbody .chip.active")).to_have_count(3)
    expect(page.locator(".cooldown")).to_have_count(0)

    # -- a copy, a second group, reordering ------------------------------------------------------------------
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("button", name="Copy group").click()
    page.get_by_label("New name", exact=True).fill("backup")
    page.get_by_label("New name", exact=True).press("Enter")
    expect(page.get_by_role("heading", name="Main pool")).to_be_visible()
    expect(page.get_by_test_id("endpoint")).to_have_text(f"{server.url}/proxy/backup")
    expect(page.locator(".proxy-keys")).to_contain_text("No proxy keys")
    nav(page, "Groups").click()
    names = page.locator("tbody th a")
    expect(names).to_have_count(2)
    first, second = names.all_text_contents()
    page.get_by_role("button", name=f"Move {first} down").click()
    expect(names).to_have_text([second, first])
    assert [g["name"] for g in server.api("GET", "/api/groups").json()["groups"]] == [second, first]
    expect(page.get_by_role("button", name=f"Move {first} up")).to_be_focused()
    page.keyboard.press("Enter")
    expect(names).to_have_text([first, second])
    ui.shot("groups")
    page.get_by_role("link", name="main", exact=True).click()
    page.get_by_role("tab", name="google-genai").focus()
    ui.shot("group")

    # -- the dashboard reflects the traffic ------------------------------------------------------------------
    nav(page, "Dashboard").click()
    dash = server.api("GET", "/api/dashboard").json()
    assert dash["last_24h"]["requests"] == 9 and dash["last_24h"]["failures"] == 1, dash
    expect(requests_card.locator(".stat-value")).to_have_text(f"{dash['last_24h']['requests']:,}")
    expect(page.locator(".stat").filter(has_text="Error rate").locator(".stat-value")).to_have_text(
        f"{dash['last_24h']['error_rate']:.1f}%"
    )
    expect(page.locator(".stat").filter(has_text="Active keys").locator(".stat-value")).to_have_text("6")
    expect(page.locator("svg.chart rect.bar.ok")).not_to_have_count(0)
    expect(page.locator("svg.chart rect.bar.fail")).not_to_have_count(0)
    expect(page.locator("svg.chart rect.bar.prompt")).not_to_have_count(0)  # tokens: bars, like requests
    expect(page.get_by_role("row", name=re.compile(r"^main"))).to_be_visible()
    ui.shot("dashboard")

    # -- logs: filter to the failures, open one in the drawer --------------------------------------------------
    nav(page, "Logs").click()
    expect(page.locator("tbody tr")).not_to_have_count(0)
    page.get_by_label("Result", exact=True).select_option("false")
    page.get_by_label("Group", exact=True).select_option("main")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"#/logs\?group=main&success=false"))
    failed = server.api("GET", "/api/logs?group=main&success=false").json()
    assert failed["total"] >= 2
    expect(page.locator("tbody tr")).to_have_count(failed["total"])
    expect(page.locator("tbody tr.failed")).to_have_count(failed["total"])
    ui.shot("logs")
    invalid_row = page.locator("tbody tr").filter(has_text="API_KEY_INVALID").first
    invalid_row.get_by_role("button", name=re.compile("^Details")).click()
    drawer = page.get_by_role("dialog")
    expect(drawer).to_contain_text("retried on another key")
    expect(drawer).to_contain_text(f"POST /v1beta/models/{MODEL}:generateContent")
    expect(drawer).to_contain_text("Not kept")
    ui.shot("log-detail", docs=False)  # the README shows log-attempts.png (test_console_daily)
    page.keyboard.press("Escape")
    expect(drawer).to_have_count(0)
    page.get_by_label("Error contains", exact=True).fill("no such error text")
    page.get_by_label("Error contains", exact=True).press("Enter")
    expect(page.get_by_text("No log entries match these filters")).to_be_visible()

    # -- settings: a client-side check, then a saved change ---------------------------------------------------
    nav(page, "Settings").click()
    retries = page.get_by_label("Max retries", exact=True)
    expect(retries).to_have_value("3")
    retries.fill("99")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Must be at most 20.")).to_be_visible()
    expect(retries).to_have_attribute("aria-invalid", "true")
    retries.fill("5")
    page.get_by_label("Log failures only", exact=True).check()
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Settings saved: max_retries, log_failures_only")).to_be_visible()
    saved = server.api("GET", "/api/settings").json()["settings"]
    assert saved["max_retries"] == 5 and saved["log_failures_only"] is True
    page.reload()
    expect(page.get_by_label("Max retries", exact=True)).to_have_value("5")
    ui.shot("settings")

    # -- log out: the key leaves sessionStorage ---------------------------------------------------------------
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Admin key (AUTH_KEY)", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.goto(f"{server.url}/#/settings")
    expect(page.get_by_label("Admin key (AUTH_KEY)", exact=True)).to_be_visible()
