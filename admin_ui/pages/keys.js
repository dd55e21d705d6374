// Keys of one group: masked keys, status chips, live per-model cooldowns, search / status filter / sort done by the
// server over the whole group, import (with progress for big imports), export, validation with progress, restore,
// disable / enable, notes, delete; bulk actions on the selection. Real keys never reach the page (export goes to a
// Blob file; a key pasted into the search box is sent to the server, which looks it up by its fingerprint).
// This module builds the page, loads the keys and wires the controls; keys/table.js draws the table,
// keys/dialogs.js holds the dialogs and keys/actions.js the restore, disable, delete and export calls.
import { api } from "../api.js";
import { clear, errorBox, h } from "../dom.js";
import { crumbs, groupTabs } from "../widgets.js";
import {
  clearInvalid,
  deleteKeys,
  exportSelected,
  restoreKeys,
  setDisabled,
  validateSelected,
} from "./keys/actions.js";
import { exportDialog, importDialog, validateDialog } from "./keys/dialogs.js";
import { PAGE_SIZE, renderTable } from "./keys/table.js";

const SORTS = [
  ["created:asc", "Oldest first"],
  ["created:desc", "Newest first"],
  ["requests:desc", "Most requests"],
  ["failures:desc", "Most failures"],
  ["last_used:desc", "Recently used"],
  ["last_used:asc", "Least recently used"],
  ["status:asc", "Status (active first)"],
  ["status:desc", "Status (disabled first)"],
];

export async function render(main, { params: [name], query }, life) {
  const page = createPage(name, query, life);
  main.append(...layout(page));
  keepFresh(page);
  wireControls(page);
  await page.load();
}

/** What the parts of the page share: the group, its keys API path, the page's lifetime, the filter and selection
 * state, the group's key counts (for confirmations), the controls, and load() (fetch the current page of keys and
 * the counts, then redraw the table). */
function createPage(name, query, life) {
  const status = query.get("status") || "";
  const search = query.get("q") || "";
  const sort = SORTS.some(([v]) => v === query.get("sort")) ? query.get("sort") : "created:asc";
  const page = {
    name,
    path: `/api/groups/${encodeURIComponent(name)}/keys`,
    life,
    state: {
      status,
      search,
      sort,
      page: 1,
      selected: new Set(),
      rows: [],
      total: 0,
      counts: null,
      nextExpiry: Infinity,
    },
    ui: controls(status, search, sort),
    loads: 0,
  };
  page.load = () => load(page);
  return page;
}

function controls(status, search, sort) {
  const button = (text, cls = "btn") => h("button", { type: "button", class: cls }, text);
  return {
    statusSelect: h(
      "select",
      { name: "status", "aria-label": "Status filter" },
      [
        ["", "All statuses"],
        ["active", "Active"],
        ["cooling", "Cooling"],
        ["invalid", "Invalid"],
        ["disabled", "Disabled"],
      ].map(([v, t]) => h("option", { value: v, selected: v === status }, t)),
    ),
    search: h("input", {
      type: "search",
      name: "search",
      class: "keys-search",
      value: search,
      placeholder: "Search all keys: a full key, its last characters, a note or an error",
      "aria-label": "Search all keys of the group",
      autocomplete: "off",
      spellcheck: "false",
    }),
    sortSelect: h(
      "select",
      { name: "sort", "aria-label": "Sort keys" },
      SORTS.map(([v, t]) => h("option", { value: v, selected: v === sort }, t)),
    ),
    refresh: button("Refresh"),
    importBtn: button("Import keys", "btn primary"),
    exportBtn: button("Export"),
    validateBtn: button("Validate"),
    restoreBtn: button("Restore all"),
    clearInvalidBtn: button("Clear invalid", "btn ghost danger"),
    bulk: {
      bar: h("div", { class: "bulk-bar", role: "toolbar", "aria-label": "Actions on the selected keys", hidden: true }),
      info: h("strong", { "aria-live": "polite" }),
      validate: button("Validate"),
      restore: button("Restore"),
      disable: button("Disable"),
      enable: button("Enable"),
      export: button("Export"),
      delete: button("Delete", "btn danger"),
      clear: button("Clear selection", "btn ghost"),
    },
    selInfo: h("span", { class: "muted small", "aria-live": "polite" }),
    progress: h("div", { class: "task", hidden: true, role: "status" }),
    tableBox: h("div", {}),
    pager: h("div", { class: "pager" }),
  };
}

function layout({ name, ui }) {
  const b = ui.bulk;
  b.bar.append(b.info, b.validate, b.restore, b.disable, b.enable, b.export, b.delete, b.clear);
  return [
    h(
      "div",
      { class: "page-head" },
      h(
        "div",
        {},
        crumbs(h("a", { href: "#/groups" }, "Groups"), h("a", { href: "#/groups/" + encodeURIComponent(name) }, name)),
        h("h1", {}, "Keys"),
      ),
      h("div", { class: "toolbar" }, ui.importBtn, ui.exportBtn, ui.validateBtn, ui.restoreBtn),
    ),
    groupTabs(name, "keys"),
    h(
      "div",
      { class: "filters" },
      ui.statusSelect,
      ui.search,
      ui.sortSelect,
      ui.refresh,
      ui.selInfo,
      h("span", { class: "spacer" }),
      ui.clearInvalidBtn,
    ),
    b.bar,
    ui.progress,
    ui.tableBox,
    ui.pager,
  ];
}

async function load(page) {
  const { state } = page;
  const ticket = ++page.loads; // a slower, older answer must not overwrite a newer one
  const [field, order] = state.sort.split(":");
  try {
    const [r, group] = await Promise.all([
      // POST, not GET: a full key pasted into the search box must not end up in a URL (access logs)
      api("POST", page.path + "/search", {
        body: {
          status: state.status,
          q: state.search.trim(),
          sort: field,
          order,
          page: state.page,
          page_size: PAGE_SIZE,
        },
      }),
      api("GET", `/api/groups/${encodeURIComponent(page.name)}`),
    ]);
    if (ticket !== page.loads) return;
    state.rows = r.keys;
    state.total = r.total;
    state.counts = group.key_counts;
    state.nextExpiry = Math.min(Infinity, ...r.keys.flatMap((k) => k.cooldowns.map((c) => c.until)));
    const ids = new Set(r.keys.map((k) => k.id));
    for (const id of state.selected) if (!ids.has(id)) state.selected.delete(id);
    renderTable(page);
  } catch (err) {
    if (ticket === page.loads) clear(page.ui.tableBox).append(errorBox(err));
  }
}

/** Refresh on a timer unless the user is working inside the table, and right after a cooldown runs out. */
function keepFresh(page) {
  const { state, ui, life } = page;
  life.every(1000, () => {
    if (Date.now() / 1000 >= state.nextExpiry) {
      state.nextExpiry = Infinity;
      page.load();
    }
  });
  life.every(5000, () => {
    if (!document.hidden && !ui.tableBox.contains(document.activeElement) && !document.querySelector("dialog[open]"))
      page.load();
  });
}

/** Keep the filter in the address (status, q unless it is a full key, sort), so a reload or a shared link shows it. */
function remember({ name, state }) {
  const params = new URLSearchParams();
  if (state.status) params.set("status", state.status);
  const q = state.search.trim();
  if (q && !/^AIza[0-9A-Za-z_-]{35}$/.test(q)) params.set("q", q); // a real key never goes into the address
  if (state.sort !== "created:asc") params.set("sort", state.sort);
  const qs = params.toString();
  history.replaceState(null, "", `#/groups/${encodeURIComponent(name)}/keys${qs ? "?" + qs : ""}`);
}

function wireControls(page) {
  const { state, ui } = page;
  const reload = () => {
    state.page = 1;
    state.selected.clear();
    remember(page);
    page.load();
  };
  ui.statusSelect.addEventListener("change", () => {
    state.status = ui.statusSelect.value;
    reload();
  });
  ui.sortSelect.addEventListener("change", () => {
    state.sort = ui.sortSelect.value;
    reload();
  });
  let timer = null;
  ui.search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.search = ui.search.value;
      reload();
    }, 250);
  });
  ui.refresh.addEventListener("click", page.load);
  ui.importBtn.addEventListener("click", () => importDialog(page));
  ui.exportBtn.addEventListener("click", () => exportDialog(page));
  ui.validateBtn.addEventListener("click", () => validateDialog(page));
  ui.restoreBtn.addEventListener("click", () => restoreKeys(page, null));
  ui.clearInvalidBtn.addEventListener("click", () => clearInvalid(page));
  const b = ui.bulk;
  const selected = () => [...state.selected];
  b.validate.addEventListener("click", () => validateSelected(page, selected()));
  b.restore.addEventListener("click", () => restoreKeys(page, selected()));
  b.disable.addEventListener("click", () => setDisabled(page, selected(), true));
  b.enable.addEventListener("click", () => setDisabled(page, selected(), false));
  b.export.addEventListener("click", () => exportSelected(page, selected()));
  b.delete.addEventListener("click", () => deleteKeys(page, selected()));
  b.clear.addEventListener("click", () => {
    state.selected.clear();
    renderTable(page);
  });
}
