"""The console for daily use (issue 15): the dashboard driven by its group and range selectors, logs whose attempts
are grouped and linked, CSV export, unsaved-changes warnings, readable defaults and override marks, the new-group
copy button, breadcrumbs, and tables as cards with a folded filter panel at 390 px. Desktop is 1440x900."""

from __future__ import annotations

import csv
import io
import re
import time
import uuid

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import UI
from tests.e2e.conftest import wait_for
from tests.fakes.fake_gemini import errors

pytestmark = pytest.mark.browser

WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
MODEL = "gemini-2.5-flash"
BODY = {"contents": [{"parts": [{"text": "Hello"}]}]}


def new_group(server, fake, n_keys: int) -> tuple[str, str, list[str]]:
    """A group on the fake with ``n_keys`` keys; returns (name, proxy key, keys)."""
    name = f"d-{uuid.uuid4().hex[:8]}"
    proxy_key = f"pk-{uuid.uuid4().hex}"
    r = server.api(
        "POST",
        "/api/groups",
        json={"name": name, "upstreams": [{"url": fake.url, "weight": 1}], "proxy_keys": [proxy_key]},
    )
    assert r.status_code == 201, r.text
    keys = [fake.add_key() for _ in range(n_keys)]
    if keys:
        assert server.api("POST", f"/api/groups/{name}/keys", json={"keys": "\n".join(keys)}).json()["added"] == n_keys
    return name, proxy_key, keys


def call(server, name: str, proxy_key: str, model: str = MODEL, stream: bool = False) -> int:
    verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
    url = f"{server.url}/proxy/{name}/v1beta/models/{model}:{verb}"
    return requests.post(url, json=BODY, headers={"x-goog-api-key": proxy_key}, timeout=30).status_code


def retried_request(server, fake, name: str, proxy_key: str, keys: list[str]) -> None:
    """One request whose two attempts both get a per-minute 429: attempt 1 retried, attempt 2 final."""
    for key in keys:
        fake.script(key, [errors.quota_per_minute(MODEL, retry_delay="900s")])
    assert call(server, name, proxy_key) == 503


def stat(page, name: str):
    return page.locator(f"[data-stat='{name}'] .stat-value")


def wait_in_page(page, condition, what: str, seconds: float = 30) -> None:
    """Poll ``condition`` with Playwright's own waits: the sync API runs event handlers (a ``dialog``) only while it
    is called, so ``wait_for``'s ``time.sleep`` would keep the handler, and the condition, from ever running."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        page.wait_for_timeout(50)


def no_horizontal_overflow(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide at {PHONE['width']}px"


# -- dashboard ----------------------------------------------------------------------------------------------------
def test_dashboard_group_and_range_drive_cards_charts_and_warnings(make_ui, server, fake):
    busy, busy_key, busy_keys = new_group(server, fake, 2)
    dead, dead_key, dead_keys = new_group(server, fake, 1)
    assert call(server, busy, busy_key, stream=True) == 200
    retried_request(server, fake, busy, busy_key, busy_keys)  # 2 attempts, both keys now limited for MODEL
    assert requests.post(  # a bad proxy key: refused before reaching Google
        f"{server.url}/proxy/{busy}/v1beta/models/{MODEL}:generateContent",
        json=BODY,
        headers={"x-goog-api-key": "wrong-proxy-key"},
        timeout=30,
    ).status_code in (401, 403)
    fake.set_behavior(dead_keys[0], errors.invalid_key())
    assert call(server, dead, dead_key) == 503  # its only key is disabled: the group cannot serve

    def scoped(hours: int = 24) -> dict:
        return server.api("GET", f"/api/dashboard?group={busy}&hours={hours}").json()

    wait_for(lambda: scoped()["range"]["current"]["requests"] == 3, what="the busy group's three requests")
    d = scoped()["range"]["current"]
    assert (d["requests"], d["retries"], d["failed_attempts"], d["refused"]) == (3, 1, 2, 1)

    ui = make_ui(server, WIDE)
    ui.login()
    page = ui.page
    # a group without a key that can serve is named in a warning, whatever the selection
    expect(page.locator(f"[data-unservable='{dead}']")).to_contain_text("has no key that can serve")
    everything = server.api("GET", "/api/dashboard").json()
    expect(stat(page, "requests")).to_have_text(f"{everything['last_24h']['requests']:,}")

    page.get_by_label("Group shown").select_option(busy)
    expect(page).to_have_url(re.compile(rf"#/dashboard\?group={busy}$"))
    # the cards follow the group: its requests, retries, refusals, keys; cooling for one model is "limited"
    expect(stat(page, "requests")).to_have_text("3")
    expect(stat(page, "retries")).to_have_text("1")
    expect(page.locator("[data-stat='retries'] .stat-sub")).to_have_text("2 failed upstream attempts")
    expect(stat(page, "refused")).to_have_text("1")
    expect(stat(page, "active")).to_have_text("0")  # both keys cool for MODEL: active, limited, cooling are apart
    expect(page.locator("[data-stat='active'] .stat-sub")).to_have_text(f"2 keys in group {busy}")
    expect(stat(page, "limited")).to_have_text("2")
    expect(stat(page, "cooling-all")).to_have_text("0")
    # every child of the cards row is a card (no stray text such as "null" from an absent optional card)
    assert page.locator(".stats").evaluate("el => [...el.childNodes].every((n) => n.nodeType === 1)")
    assert "null" not in page.locator(".stats").inner_text()
    expect(stat(page, "error-rate")).to_have_text("66.7%")  # the retried request and the refused one failed
    expect(page.locator("tr.selected")).to_contain_text(busy)
    # 24 hours: one hour of traffic is one bar (succeeded below failed), not a wide triangle
    requests_chart = page.locator("[data-chart='requests'] svg")
    expect(requests_chart.locator("g.bucket")).to_have_count(24)
    expect(requests_chart.locator("rect.bar.ok")).to_have_count(1)
    expect(requests_chart.locator("rect.bar.fail")).to_have_count(1)
    expect(page.locator("[data-chart='tokens'] svg rect.bar")).not_to_have_count(0)
    expect(page.locator("[data-chart='tokens'] svg path")).to_have_count(0)
    ui.shot("dashboard-group", docs=False)

    # 7 days: hourly bars labelled with dates
    page.get_by_label("Time range").select_option("168")
    expect(page.locator("[data-stat='requests'] .stat-label")).to_have_text("Requests (7 d)")
    expect(requests_chart.locator("g.bucket")).to_have_count(168)
    labels = requests_chart.locator("text[data-axis='x']")
    expect(labels.first).to_have_text(re.compile(r"^[A-Z][a-z]{2} \d{1,2}$"))
    assert all(re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}", t) for t in labels.all_text_contents())
    assert 6 <= labels.count() <= 7
    # 30 days: per-day bars, dates on the axis, the range in the URL
    page.get_by_label("Time range").select_option("720")
    expect(page).to_have_url(re.compile(rf"#/dashboard\?group={busy}&hours=720$"))
    expect(page.locator("[data-chart='requests'] figcaption")).to_contain_text("Requests per day")
    expect(page.locator("[data-stat='requests'] .stat-label")).to_have_text("Requests (30 d)")
    buckets = requests_chart.locator("g.bucket").count()
    assert 30 <= buckets <= 31  # 720 hours touch 30 or 31 local calendar days
    expect(requests_chart.locator("text[data-axis='x']").first).to_have_text(re.compile(r"^[A-Z][a-z]{2} \d{1,2}$"))
    expect(stat(page, "requests")).to_have_text("3")
    # a reload keeps the selection
    page.reload()
    expect(page.get_by_label("Group shown")).to_have_value(busy)
    expect(page.get_by_label("Time range")).to_have_value("720")


# -- logs -----------------------------------------------------------------------------------------------------------
def test_logs_group_attempts_link_keys_copy_ids_and_export_csv(make_ui, server, fake, tmp_path):
    name, proxy_key, keys = new_group(server, fake, 2)
    assert call(server, name, proxy_key, model="gemini-2.5-pro", stream=True) == 200
    retried_request(server, fake, name, proxy_key, keys)
    wait_for(lambda: server.api("GET", f"/api/logs?group={name}").json()["total"] == 3, what="three log rows")
    rows = server.api("GET", f"/api/logs?group={name}").json()["logs"]
    final, first = rows[0], rows[1]
    assert final["request_id"] == first["request_id"] and final["attempt"] == 2

    ui = make_ui(server, WIDE)
    ui.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/logs?group={name}")
    table_rows = page.locator("tbody tr")
    expect(table_rows).to_have_count(3)
    headers = page.locator("thead th").all_text_contents()
    assert {"Path", "Stream", "Model", "Key", "Attempt"} <= set(headers), headers
    streamed = page.locator(f"tr[data-log-id='{rows[2]['id']}']")
    expect(streamed.locator("td[data-label='Stream']")).to_have_text("yes")
    expect(streamed.locator("td[data-label='Path']")).to_have_text(
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent"
    )
    # the two attempts of one request are grouped: same request id, the earlier one marked retried
    grouped = page.locator(f"tr[data-request-id='{final['request_id']}']")
    expect(grouped).to_have_count(2)
    expect(grouped.nth(1)).to_have_class(re.compile(r"\bretried\b"))
    expect(grouped.nth(0)).to_have_class(re.compile(r"\bgrouped\b"))
    # a row links to its key on the keys page
    key_link = grouped.nth(0).locator("td[data-label='Key'] a")
    expect(key_link).to_have_text(final["key"])
    href = key_link.get_attribute("href")
    assert href.startswith(f"#/groups/{name}/keys?q=") and final["key"] in requests.utils.unquote(href)
    ui.shot("logs-attempts", docs=False)

    # the final attempt links to the earlier one: the drawer lists both and opens the other
    grouped.nth(0).get_by_role("button", name="1 earlier").click()
    drawer = page.get_by_role("dialog")
    expect(drawer.get_by_role("heading", name="Attempts of this request (2)")).to_be_visible()
    expect(drawer.locator("ol.attempts li")).to_have_count(2)
    drawer.get_by_role("button", name=f"Copy request id: {final['request_id']}").click()
    expect(page.get_by_text("Copied to the clipboard").first).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == final["request_id"]
    drawer.get_by_role("button", name=f"Copy key id: {final['key_id']}").click()
    assert page.evaluate("navigator.clipboard.readText()") == final["key_id"]
    ui.shot("log-attempts")
    drawer.locator(f"li[data-attempt-id='{first['id']}']").get_by_role("button", name="#1").click()
    other = page.get_by_role("dialog")
    expect(other).to_contain_text("retried on another key")
    expect(other.locator("li.current")).to_contain_text("#1 (this row)")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)

    # the model filter matches a prefix and offers the models seen
    options = page.locator("datalist#log-models option")
    assert sorted(options.evaluate_all("els => els.map((e) => e.value)")) == ["gemini-2.5-flash", "gemini-2.5-pro"]
    page.get_by_label("Model", exact=True).fill("gemini-2.5-p")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"model=gemini-2\.5-p(&|$)"))
    expect(table_rows).to_have_count(1)
    expect(page.locator("summary")).to_contain_text("2 active")

    # CSV: ISO 8601 times with the epoch beside them, true/false
    page.get_by_label("Model", exact=True).fill("")
    page.get_by_role("button", name="Apply").click()
    expect(table_rows).to_have_count(3)
    with page.expect_download() as info:
        page.get_by_role("button", name="Export CSV").click()
    path = tmp_path / "logs.csv"
    info.value.save_as(path)
    table = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["id"] for r in table] == [r["id"] for r in rows]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["at"]) for r in table)
    assert abs(float(table[0]["at_epoch"]) - final["at"]) < 0.001
    assert [r["success"] for r in table] == ["false", "false", "true"]
    assert [r["stream"] for r in table] == ["false", "false", "true"]
    assert table[0]["request_id"] == table[1]["request_id"] == final["request_id"]


# -- settings and forms ---------------------------------------------------------------------------------------------
def test_settings_warn_on_unsaved_changes_show_defaults_and_override_marks(make_ui, server):
    ui = make_ui(server, WIDE)
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/settings")
    retries = page.get_by_label("Max retries", exact=True)
    expect(retries).to_be_visible()
    # defaults read as words, never as JSON
    hints = page.locator(".settings-form .hint").all_text_contents()
    assert not any('Default: "".' in t or "Default: []." in t for t in hints), hints
    proxy_keys = page.locator("[data-setting='proxy_keys'] .hint")
    expect(proxy_keys).to_contain_text("Default: none.")
    expect(page.locator("[data-setting='log_failures_only'] .hint")).to_contain_text("Default: off.")
    # the settings a group can override are marked; the others are not
    schema = {s["name"]: s for s in server.api("GET", "/api/settings/schema").json()["schema"]}
    for name, spec in schema.items():
        mark = page.locator(f"[data-setting='{name}'] .chip.override")
        expect(mark).to_have_count(1 if spec["group_overridable"] else 0)
    assert any(not s["group_overridable"] for s in schema.values())
    expect(page.locator("[data-setting='max_retries'] .chip.override")).to_have_text("group override")
    ui.shot("settings-defaults", docs=False)

    # closing or reloading the tab: the browser is asked to prompt only while something is unsaved
    unload = "() => { const e = new Event('beforeunload', {cancelable: true}); dispatchEvent(e); return e.defaultPrevented; }"
    assert page.evaluate(unload) is False
    # an unsaved change: leaving asks; "stay" keeps the page and the typed value, "leave" goes
    retries.fill("7")
    assert page.evaluate(unload) is True
    asked: list[str] = []

    def answer(accept: bool):
        def handle(dialog):
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        return handle

    page.once("dialog", answer(False))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Groups").click()
    wait_in_page(page, lambda: asked, what="the leave question")
    assert "unsaved changes" in asked[0]
    expect(page).to_have_url(re.compile(r"#/settings$"))
    expect(retries).to_have_value("7")
    page.once("dialog", answer(True))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Groups").click()
    expect(page.get_by_role("heading", name="Groups")).to_be_visible()
    assert len(asked) == 2
    assert page.evaluate(unload) is False  # the settings page is gone, and its question with it
    assert server.api("GET", "/api/settings").json()["settings"]["max_retries"] != 7
    # logging out with an unsaved change asks first; "stay" keeps the session
    page.goto(f"{server.url}/#/settings")
    retries.fill("8")
    page.once("dialog", answer(False))
    page.get_by_role("button", name="Log out").click()
    wait_in_page(page, lambda: len(asked) == 3, what="the logout question")
    expect(retries).to_have_value("8")
    assert page.evaluate("sessionStorage.length") == 1
    page.once("dialog", answer(True))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    assert len(asked) == 4
    # nothing changed: no question
    page.goto(f"{server.url}/#/settings")
    expect(retries).to_be_visible()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Logs").click()
    expect(page.get_by_role("heading", name="Logs")).to_be_visible()
    assert len(asked) == 4


def test_new_group_copy_button_edit_guard_and_breadcrumbs(make_ui, server, fake):
    name, _, _ = new_group(server, fake, 1)
    ui = make_ui(server, WIDE)
    ui.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/groups")
    page.get_by_role("button", name="New group").click()
    dialog = page.get_by_role("dialog", name="New group")
    generated = dialog.get_by_label("Proxy key", exact=True).input_value()
    assert generated.startswith("sk-") and len(generated) == 43
    dialog.get_by_role("button", name="Copy the proxy key").click()
    assert page.evaluate("navigator.clipboard.readText()") == generated
    # typed into the dialog: Escape asks before throwing it away
    dialog.get_by_label("Name", exact=True).fill("half-typed")
    page.once("dialog", lambda d: d.dismiss())
    page.keyboard.press("Escape")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Name", exact=True)).to_have_value("half-typed")
    page.once("dialog", lambda d: d.accept())
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)

    # breadcrumbs end with the parent page, never with a stray "/"
    page.goto(f"{server.url}/#/groups/{name}")
    crumbs = page.locator(".crumbs")
    expect(crumbs).to_have_text("Groups")
    page.get_by_role("button", name="Edit").click()
    edit = page.get_by_role("dialog", name=f"Edit {name}")
    edit.get_by_label("Description", exact=True).fill("not saved")
    page.once("dialog", lambda d: d.dismiss())
    edit.get_by_role("button", name="Close").click()
    expect(edit).to_be_visible()
    page.once("dialog", lambda d: d.accept())
    page.keyboard.press("Escape")
    expect(edit).to_have_count(0)
    assert server.api("GET", f"/api/groups/{name}").json()["description"] == ""
    page.goto(f"{server.url}/#/groups/{name}/keys")
    expect(crumbs).to_have_text(f"Groups / {name}")
    assert not crumbs.text_content().rstrip().endswith("/")


# -- 390 px ---------------------------------------------------------------------------------------------------------
def test_phone_logs_are_cards_and_the_filter_panel_folds(make_ui, server, fake):
    name, proxy_key, keys = new_group(server, fake, 2)
    retried_request(server, fake, name, proxy_key, keys)
    wait_for(lambda: server.api("GET", f"/api/logs?group={name}").json()["total"] == 2, what="two log rows")
    ui: UI = make_ui(server, PHONE)
    ui.login()
    page = ui.page
    page.goto(f"{server.url}/#/logs?group={name}")
    panel = page.locator("details.filter-panel")
    expect(panel).to_be_visible()
    assert panel.evaluate("el => el.open") is False  # folded: the rows come first
    expect(page.get_by_label("Model", exact=True)).to_be_hidden()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    assert page.locator("table.logs-table thead").evaluate("el => el.getBoundingClientRect().height") <= 1
    # each row is a card: cells stacked under their column's name, the actions on screen
    first = rows.first
    assert first.evaluate("el => getComputedStyle(el).display") == "block"
    assert first.locator("td[data-label='Status']").evaluate("el => getComputedStyle(el, '::before').content") == (
        '"Status"'
    )
    details = first.get_by_role("button", name=re.compile("^Details"))
    expect(details).to_be_in_viewport()
    box = details.bounding_box()
    assert box["x"] + box["width"] <= PHONE["width"]
    no_horizontal_overflow(page)
    ui.shot("mobile-logs")
    # the panel opens on demand and filters as on a desktop
    panel.locator("summary").click()
    expect(page.get_by_label("Model", exact=True)).to_be_visible()
    page.get_by_label("Result", exact=True).select_option("false")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(2)
    no_horizontal_overflow(page)
    # the dashboard's per-group table is cards too
    page.goto(f"{server.url}/#/dashboard?group={name}")
    group_row = page.locator("tbody tr").filter(has_text=name)
    expect(group_row).to_be_visible()
    assert group_row.evaluate("el => getComputedStyle(el).display") == "block"
    no_horizontal_overflow(page)
    ui.shot("mobile-dashboard-cards", docs=False)
    # and the groups list: each group a card with its actions on screen
    page.goto(f"{server.url}/#/groups")
    card = page.locator("tbody tr").filter(has=page.get_by_role("link", name=name, exact=True))
    expect(card).to_be_visible()
    assert card.evaluate("el => getComputedStyle(el).display") == "block"
    keys_button = card.get_by_role("link", name="Keys", exact=True)
    keys_button.scroll_into_view_if_needed()  # the shared server has many groups: this one may be further down
    expect(keys_button).to_be_in_viewport()
    box = keys_button.bounding_box()
    assert box["x"] + box["width"] <= PHONE["width"]
    no_horizontal_overflow(page)


def test_wide_logs_stay_a_table(make_ui, server, fake):
    name, proxy_key, _ = new_group(server, fake, 1)
    assert call(server, name, proxy_key) == 200
    wait_for(lambda: server.api("GET", f"/api/logs?group={name}").json()["total"] == 1, what="one log row")
    ui = make_ui(server, WIDE)
    ui.login()
    ui.page.goto(f"{server.url}/#/logs?group={name}")
    row = ui.page.locator("tbody tr")
    expect(row).to_have_count(1)
    assert row.evaluate("el => getComputedStyle(el).display") == "table-row"
    assert ui.page.locator("details.filter-panel").evaluate("el => el.open") is True
    expect(ui.page.locator("thead")).to_be_visible()


@pytest.mark.parametrize("width", [1280, 1440])
def test_the_logs_table_fits_a_desktop_width(make_ui, server, fake, width):
    """Every column, the Details button included, is on screen without scrolling the table sideways."""
    name, proxy_key, keys = new_group(server, fake, 2)
    retried_request(server, fake, name, proxy_key, keys)
    wait_for(lambda: server.api("GET", f"/api/logs?group={name}").json()["total"] == 2, what="two log rows")
    ui = make_ui(server, {"width": width, "height": 900})
    ui.login()
    ui.page.goto(f"{server.url}/#/logs?group={name}")
    expect(ui.page.locator("tbody tr")).to_have_count(2)
    wrap = ui.page.locator(".table-wrap")
    widths = ui.page.locator("thead th").evaluate_all("els => els.map((e) => [e.textContent, e.offsetWidth])")
    assert wrap.evaluate("el => el.scrollWidth <= el.clientWidth"), (
        wrap.evaluate("el => [el.scrollWidth, el.clientWidth]"),
        widths,
    )
    expect(ui.page.locator("tbody tr").first.get_by_role("button", name=re.compile("^Details"))).to_be_in_viewport()
