"""The keys page for daily use at many keys, at 1440x900 and 390x844: search, filter and sort over the whole group
(on the server), manual disable and enable, bulk actions on a selection, confirmations that give the count,
validation marks, the last-error cell, cooldowns as durations, rejected import lines, and a big import as a task."""

from __future__ import annotations

import re
import uuid

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import UI
from tests.fakes.fake_gemini import errors, make_key

pytestmark = pytest.mark.browser

MODEL = "gemini-2.5-flash"
PROXY_KEY = "browser-keys-proxy-key"
VIEWPORTS = [
    pytest.param({"width": 1440, "height": 900}, id="desktop"),
    pytest.param({"width": 390, "height": 844}, id="phone"),
]


def new_group(server, fake, n_keys: int, **fields) -> tuple[str, list[str]]:
    name = f"k-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "upstreams": [{"url": fake.url, "weight": 1}], "proxy_keys": [PROXY_KEY], **fields}
    r = server.api("POST", "/api/groups", json=body)
    assert r.status_code == 201, r.text
    keys: list[str] = []
    while len(keys) < n_keys:  # add_key draws at random: keep the group's keys distinct
        key = fake.add_key()
        if key not in keys:
            keys.append(key)
    if keys:
        assert server.api("POST", f"/api/groups/{name}/keys", json={"keys": "\n".join(keys)}).json()["added"] == n_keys
    return name, keys


def masked(secret: str) -> str:
    return f"{secret[:4]}...{secret[-4:]}"


def row_of(ui: UI, secret: str):
    return ui.page.locator("tbody tr").filter(has=ui.page.get_by_role("rowheader", name=masked(secret)))


def key_id(server, name: str, secret: str) -> str:
    (row,) = server.api("GET", f"/api/groups/{name}/keys", params={"q": secret}).json()["keys"]
    return row["id"]


def generate(server, name: str, n: int = 1, model: str = MODEL) -> list[int]:
    url = f"{server.url}/proxy/{name}/v1beta/models/{model}:generateContent"
    body = {"contents": [{"parts": [{"text": "Hello"}]}]}
    headers = {"x-goog-api-key": PROXY_KEY}
    return [requests.post(url, json=body, headers=headers, timeout=30).status_code for _ in range(n)]


def open_keys(make_ui, server, viewport, name: str, query: str = "") -> UI:
    ui = make_ui(server, viewport)
    ui.login()
    ui.page.goto(f"{server.url}/#/groups/{name}/keys{query}")
    expect(ui.page.get_by_role("heading", name="Keys")).to_be_visible()
    return ui


def phone_fits(ui: UI, viewport: dict) -> None:
    """At 390 px nothing but the table itself may scroll sideways."""
    width = ui.page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], f"the page is {width}px wide at {viewport['width']}px"


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_search_filter_and_sort_cover_the_whole_group(make_ui, server, fake, viewport):
    name, keys = new_group(server, fake, 120)
    target = keys[113]  # on page 2 of the default order (100 a page)
    note_id = key_id(server, name, keys[117])
    assert server.api("PUT", f"/api/groups/{name}/keys/{note_id}", json={"notes": "Billing account Z"}).ok
    assert generate(server, name, 6) == [200] * 6
    ui = open_keys(make_ui, server, viewport, name)
    page = ui.page
    expect(page.locator("tbody tr")).to_have_count(100)
    expect(page.locator(".pager")).to_contain_text("Page 1 of 2")
    expect(page.locator(".pager")).to_contain_text("120 keys")
    search = page.get_by_label("Search all keys of the group", exact=True)
    # a full pasted key finds its row on page 2, and never goes into the address
    search.fill(target)
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(row_of(ui, target)).to_be_visible()
    assert target not in page.url
    # part of the masked tail, a note (any case)
    search.fill(target[-4:].swapcase())
    expect(row_of(ui, target)).to_be_visible()
    search.fill("billing ACCOUNT z")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(row_of(ui, keys[117])).to_be_visible()
    assert "q=billing" in page.url  # a text search is kept in the address
    search.fill("no such thing")
    expect(page.get_by_text("No keys match")).to_be_visible()
    search.fill("")
    expect(page.locator("tbody tr")).to_have_count(100)
    # sorted by requests on the server: the busiest keys come first, whatever page they were on
    page.get_by_label("Sort keys", exact=True).select_option("requests:desc")
    expect(page.locator("tbody tr").first.locator("td.num").first).not_to_have_text("0")
    counts = [int(c.replace(",", "")) for c in page.locator("tbody tr td.num:nth-child(5)").all_text_contents()]
    assert counts == sorted(counts, reverse=True) and sum(counts) == 6
    if viewport["width"] < 600:
        phone_fits(ui, viewport)
    ui.shot(f"keys-search-{'phone' if viewport['width'] < 600 else 'desktop'}", docs=False)


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_disable_enable_and_bulk_actions_on_a_selection(make_ui, server, fake, viewport):
    name, keys = new_group(server, fake, 5)
    fake.set_behavior(keys[4], errors.invalid_key())
    generate(server, name, 6)
    ui = open_keys(make_ui, server, viewport, name)
    page = ui.page
    expect(row_of(ui, keys[4]).locator(".chip")).to_have_text("invalid")
    # one key: Disable in its row
    row_of(ui, keys[0]).get_by_role("button", name=f"Disable {masked(keys[0])}").click()
    expect(row_of(ui, keys[0]).locator(".chip")).to_have_text("disabled")
    # a selection: the bar says how many, and acts on them only
    for k in keys[1:3]:
        row_of(ui, k).get_by_role("checkbox").check()
    bar = page.get_by_role("toolbar", name="Actions on the selected keys")
    expect(bar).to_contain_text("2 selected")
    bar.get_by_role("button", name="Disable").click()
    expect(page.locator("tbody .chip.disabled")).to_have_count(3)
    expect(bar).to_be_hidden()
    page.get_by_label("Status filter", exact=True).select_option("disabled")
    expect(page.locator("tbody tr")).to_have_count(3)
    page.get_by_label("Status filter", exact=True).select_option("")
    # restore all asks first, with the count; disabled keys stay disabled
    page.get_by_role("button", name="Restore all (1)").click()
    confirm = page.get_by_role("dialog", name="Restore all 1 key?")
    expect(confirm).to_contain_text("Disabled keys stay disabled")
    confirm.get_by_role("button", name="Restore 1").click()
    expect(row_of(ui, keys[4]).locator(".chip")).to_have_text("active")
    expect(page.locator("tbody .chip.disabled")).to_have_count(3)
    # nothing hands a disabled key out: every request goes to the two others
    fake.set_behavior(keys[4], None)
    before = {k: fake_count(fake, k) for k in keys}
    assert generate(server, name, 6) == [200] * 6
    assert all(fake_count(fake, k) == before[k] for k in keys[:3])
    # enable the selection back
    for k in keys[0:2]:
        row_of(ui, k).get_by_role("checkbox").check()
    bar.get_by_role("button", name="Enable").click()
    expect(page.locator("tbody .chip.disabled")).to_have_count(1)
    # export and validate a selection
    for k in keys[3:5]:
        row_of(ui, k).get_by_role("checkbox").check()
    with page.expect_download() as download:
        bar.get_by_role("button", name="Export").click()
    assert sorted(download.value.path().read_text().split()) == sorted(keys[3:5])
    assert not any(k in page.content() for k in keys), "a real key reached the page"
    bar.get_by_role("button", name="Validate").click()
    expect(page.locator(".task")).to_contain_text("Validation finished")
    expect(page.locator(".task")).to_contain_text("2/2 · 2 valid")
    # delete a selection, with a confirmation naming the count
    for k in keys[3:5]:
        row_of(ui, k).get_by_role("checkbox").check()
    bar.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog", name="Delete 2 selected keys?").get_by_role("button", name="Delete").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    if viewport["width"] < 600:
        phone_fits(ui, viewport)
    ui.shot(f"keys-bulk-{'phone' if viewport['width'] < 600 else 'desktop'}", docs=False)


def fake_count(fake, key: str) -> int:
    return len(fake.requests_for(key))


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_validation_marks_last_errors_and_cooldowns_read_plainly(make_ui, server, fake, viewport):
    name, keys = new_group(server, fake, 3, settings={"bare_429_cooldown_seconds": 3600})
    fake.set_behavior(keys[0], errors.invalid_key())
    fake.set_behavior(keys[2], errors.overloaded())  # validation of this key proves nothing
    # a 429 on a request that names no model cools the whole key
    solo, (lone,) = new_group(server, fake, 1, settings={"bare_429_cooldown_seconds": 3600})
    fake.script(lone, [errors.bare_429()])
    requests.get(f"{server.url}/proxy/{solo}/v1beta/models", headers={"x-goog-api-key": PROXY_KEY}, timeout=30)

    ui = open_keys(make_ui, server, viewport, name)
    page = ui.page
    page.get_by_role("button", name="Validate", exact=True).first.click()
    page.get_by_role("button", name="Start").click()
    expect(page.locator(".task")).to_contain_text("Validation finished")
    expect(page.locator(".task")).to_contain_text("1 inconclusive")
    # validation marks: when, and "inconclusive" where it proved nothing
    expect(row_of(ui, keys[2]).locator(".chip.inconclusive")).to_have_text("inconclusive")
    expect(row_of(ui, keys[2]).locator(".validated")).to_contain_text("s ago")
    expect(row_of(ui, keys[0]).locator(".chip.inconclusive")).to_have_count(0)
    # then traffic: keys[1] runs out of its per-day quota for one model
    fake.set_behavior(keys[2], None)
    fake.script(keys[1], [errors.quota_per_day(MODEL)], path_contains=":generate")
    assert generate(server, name, 3) == [200] * 3
    page.get_by_role("button", name="Refresh").click()
    # the last error: one line, the whole text and its time on keyboard focus
    (row,) = server.api("GET", f"/api/groups/{name}/keys", params={"q": keys[1]}).json()["keys"]
    full = row["last_error"]
    assert "PerDay" in full and len(full) > 40, full
    cell = row_of(ui, keys[1]).locator(".error-cell")
    text = cell.locator(".error-text")
    expect(text).to_have_text(full)
    assert text.evaluate("el => el.scrollWidth > el.clientWidth"), "a long error is cut, not wrapped"
    assert cell.evaluate("el => el.getBoundingClientRect().height") < 70, "the row stays one or two lines tall"
    tip = cell.get_by_role("tooltip")
    expect(tip).to_be_hidden()
    text.focus()
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(full)
    expect(tip).to_contain_text(re.compile(r"\d{1,2}:\d{2}:\d{2}"))  # the time of the error
    expect(row_of(ui, keys[0]).locator(".error-text")).to_have_text("400 API_KEY_INVALID")
    # a per-day quota: a duration and when it resets; the key is limited (other models still served)
    cooldown = row_of(ui, keys[1]).locator(".cooldown")
    expect(cooldown).to_have_text(re.compile(rf"^{MODEL} · (\d+ h \d+ m|\d+ m \d\d s)$"))
    expect(row_of(ui, keys[1]).locator(".cooldown-reset")).to_have_text("per-day quota · resets 00:00 Pacific")
    expect(row_of(ui, keys[1]).locator(".chip").first).to_have_text("limited")
    ui.shot(f"keys-errors-{'phone' if viewport['width'] < 600 else 'desktop'}", docs=False)
    # a key that can serve nothing: "all models", "cooling"
    page.goto(f"{server.url}/#/groups/{solo}/keys")
    expect(row_of(ui, lone).locator(".cooldown")).to_have_text(re.compile(r"^all models · (59|60) m \d\d s$"))
    expect(row_of(ui, lone).locator(".chip").first).to_have_text("cooling")


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_import_shows_rejected_lines_and_runs_a_big_import_as_a_task(make_ui, server, fake, viewport, tmp_path):
    name, _ = new_group(server, fake, 0)
    ui = open_keys(make_ui, server, viewport, name)
    page = ui.page
    page.get_by_role("button", name="Import keys").first.click()
    dialog = page.get_by_role("dialog", name=f"Import keys into {name}")
    good = fake.add_key()
    dialog.get_by_label("Keys", exact=True).fill(f"{good}\nnot-a-key\n\n{good[:-1]}")
    dialog.get_by_role("button", name="Import").click()
    expect(dialog.get_by_text("Added 1 · 0 duplicate · 2 rejected")).to_be_visible()
    rejects = dialog.get_by_role("list", name="Rejected lines")
    expect(rejects.get_by_role("listitem")).to_have_text(
        ["line 2: no*** (9 characters)", f"line 4: {good[:4]}...{good[-5:-1]} (38 characters)"]
    )
    # more than 1,000 keys: a task with a progress bar, then the same summary
    many = tmp_path / "many-keys.txt"  # distinct keys (no traffic: the fake needs not know them)
    many.write_text("\n".join(make_key(5_000_000 + i) for i in range(1500)))
    dialog.get_by_label("…or a .txt file", exact=True).set_input_files(str(many))
    expect(dialog.get_by_text("many-keys.txt: 1500 entries read")).to_be_visible()
    dialog.get_by_role("button", name="Import").click()
    status = dialog.locator(".task")
    expect(status).to_contain_text("Import finished", timeout=60_000)
    expect(status).to_contain_text("1,500 of 1,500 keys · 1,500 added")
    expect(dialog.get_by_text("Added 1,500 · 0 duplicate · 0 rejected")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator(".pager")).to_contain_text("1,501 keys")
    if viewport["width"] < 600:
        phone_fits(ui, viewport)
