// Keys of one group: masked keys, status chips, live per-model cooldown countdowns, filters, import, export,
// validation with progress, restore, notes, delete. Real keys never reach the page (export goes to a Blob file).
// This module builds the page, loads the keys and wires the controls; keys/table.js draws the table,
// keys/dialogs.js holds the dialogs and keys/actions.js the restore and delete calls.
import { api } from "../api.js";
import { clear, errorBox, h } from "../dom.js";
import { crumbs, groupTabs } from "../widgets.js";
import { clearInvalid, deleteKeys, restoreKeys } from "./keys/actions.js";
import { exportDialog, importDialog, validateDialog } from "./keys/dialogs.js";
import { PAGE_SIZE, renderTable } from "./keys/table.js";

export async function render(main, { params: [name], query }, life) {
  const page = createPage(name, query.get("status") || "", life);
  main.append(...layout(page));
  keepFresh(page);
  wireControls(page);
  await page.load();
}

/** What the parts of the page share: the group, its keys API path, the page's lifetime, the filter and selection
 * state, the controls, and load() (fetch the current page of keys, then redraw the table). */
function createPage(name, status, life) {
  const page = {
    name,
    path: `/api/groups/${encodeURIComponent(name)}/keys`,
    life,
    state: { status, search: "", page: 1, selected: new Set(), rows: [], total: 0, nextExpiry: Infinity },
    ui: controls(status),
  };
  page.load = () => load(page);
  return page;
}

function controls(status) {
  return {
    statusSelect: h(
      "select",
      { name: "status", "aria-label": "Status filter" },
      [
        ["", "All statuses"],
        ["active", "Active"],
        ["cooling", "Cooling"],
        ["invalid", "Invalid"],
      ].map(([v, t]) => h("option", { value: v, selected: v === status }, t)),
    ),
    search: h("input", {
      type: "search",
      name: "search",
      placeholder: "Filter by key, note or error",
      "aria-label": "Filter keys on this page",
    }),
    refresh: h("button", { type: "button", class: "btn" }, "Refresh"),
    importBtn: h("button", { type: "button", class: "btn primary" }, "Import keys"),
    exportBtn: h("button", { type: "button", class: "btn" }, "Export"),
    validateBtn: h("button", { type: "button", class: "btn" }, "Validate"),
    restoreBtn: h("button", { type: "button", class: "btn" }, "Restore"),
    deleteBtn: h("button", { type: "button", class: "btn danger", disabled: true }, "Delete selected"),
    clearInvalidBtn: h("button", { type: "button", class: "btn ghost danger" }, "Clear invalid"),
    selInfo: h("span", { class: "muted small", "aria-live": "polite" }),
    progress: h("div", { class: "task", hidden: true, role: "status" }),
    tableBox: h("div", {}),
    pager: h("div", { class: "pager" }),
  };
}

function layout({ name, ui }) {
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
      ui.refresh,
      ui.selInfo,
      h("span", { class: "spacer" }),
      ui.deleteBtn,
      ui.clearInvalidBtn,
    ),
    ui.progress,
    ui.tableBox,
    ui.pager,
  ];
}

async function load(page) {
  const { state } = page;
  try {
    const r = await api("GET", page.path, { query: { status: state.status, page: state.page, page_size: PAGE_SIZE } });
    state.rows = r.keys;
    state.total = r.total;
    state.nextExpiry = Math.min(Infinity, ...r.keys.flatMap((k) => k.cooldowns.map((c) => c.until)));
    const ids = new Set(r.keys.map((k) => k.id));
    for (const id of state.selected) if (!ids.has(id)) state.selected.delete(id);
    renderTable(page);
  } catch (err) {
    clear(page.ui.tableBox).append(errorBox(err));
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

function wireControls(page) {
  const { name, state, ui } = page;
  ui.statusSelect.addEventListener("change", () => {
    state.status = ui.statusSelect.value;
    state.page = 1;
    history.replaceState(
      null,
      "",
      `#/groups/${encodeURIComponent(name)}/keys${state.status ? "?status=" + state.status : ""}`,
    );
    page.load();
  });
  ui.search.addEventListener("input", () => {
    state.search = ui.search.value;
    renderTable(page);
  });
  ui.refresh.addEventListener("click", page.load);
  ui.importBtn.addEventListener("click", () => importDialog(page));
  ui.exportBtn.addEventListener("click", () => exportDialog(page));
  ui.validateBtn.addEventListener("click", () => validateDialog(page));
  ui.restoreBtn.addEventListener("click", () => restoreKeys(page, state.selected.size ? [...state.selected] : null));
  ui.deleteBtn.addEventListener("click", () => deleteKeys(page, [...state.selected]));
  ui.clearInvalidBtn.addEventListener("click", () => clearInvalid(page));
}
