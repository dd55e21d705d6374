// The keys table of the keys page: the rows of the current page that match the search box, select boxes, the
// empty states, the pager and the selection summary. Drawing only: page.load() fetches.
import { chip, clear, emptyState, fmtAgo, fmtCompact, fmtInt, h } from "../../dom.js";
import { tickCountdowns } from "../../widgets.js";
import { deleteKeys, restoreKeys } from "./actions.js";
import { importDialog, notesDialog } from "./dialogs.js";

export const PAGE_SIZE = 100;

const COLUMNS = ["Key", "Status", "Cooldown", "Requests", "Failures", "Tokens", "Last used", "Last error", "Notes"];
const NUMERIC = ["Requests", "Failures", "Tokens"];

/** Redraw the table, the pager and the selection summary from page.state. */
export function renderTable(page) {
  const rows = matchingRows(page.state);
  clear(page.ui.tableBox).append(tableOrEmptyState(page, rows));
  renderPager(page);
  updateSelection(page);
  tickCountdowns();
}

/** The loaded rows whose key, notes or last error contain the search text. */
function matchingRows({ rows, search }) {
  const needle = search.toLowerCase();
  return rows.filter(
    (k) => !needle || [k.key, k.notes, k.last_error].some((v) => (v || "").toLowerCase().includes(needle)),
  );
}

function tableOrEmptyState(page, rows) {
  const { state } = page;
  if (!state.total && !state.status) {
    return emptyState(
      "No keys in this group yet",
      "Import Gemini API keys (AIza…) from text or a .txt file.",
      h("button", { type: "button", class: "btn primary", onclick: () => importDialog(page) }, "Import keys"),
    );
  }
  if (!rows.length) {
    return emptyState(
      "No keys match",
      state.status
        ? `No ${state.status} keys${state.search ? " match the filter" : ""}.`
        : "No key matches the filter.",
    );
  }
  return h(
    "div",
    { class: "table-wrap card flush" },
    h(
      "table",
      { class: "keys-table" },
      h("thead", {}, headerRow(page, rows)),
      h(
        "tbody",
        {},
        rows.map((k) => keyRow(page, k)),
      ),
    ),
  );
}

function headerRow(page, rows) {
  return h(
    "tr",
    {},
    h("th", { class: "check" }, selectAllBox(page, rows)),
    ...COLUMNS.map((t) => h("th", { scope: "col", class: NUMERIC.includes(t) ? "num" : "" }, t)),
    h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
  );
}

/** Selects or unselects every row on screen. */
function selectAllBox(page, rows) {
  const { selected } = page.state;
  const all = h("input", {
    type: "checkbox",
    "aria-label": "Select all keys on this page",
    checked: rows.every((k) => selected.has(k.id)),
  });
  all.addEventListener("change", () => {
    for (const k of rows) {
      if (all.checked) selected.add(k.id);
      else selected.delete(k.id);
    }
    renderTable(page);
  });
  return all;
}

function keyRow(page, k) {
  return h(
    "tr",
    { dataset: { keyId: k.id, status: k.status } },
    h("td", { class: "check" }, selectBox(page, k)),
    h("th", { scope: "row", class: "mono" }, k.key),
    h("td", {}, chip(k.status)),
    h("td", {}, cooldowns(k)),
    h("td", { class: "num" }, fmtInt(k.request_count)),
    h("td", { class: "num", title: `${k.failure_count} consecutive` }, fmtInt(k.failure_total)),
    h("td", { class: "num" }, fmtCompact(k.total_tokens ?? 0)),
    h("td", { class: "nowrap" }, fmtAgo(k.last_used_at)),
    h("td", { class: "error-cell" }, k.last_error || ""),
    h("td", { class: "notes-cell" }, k.notes ? h("span", {}, k.notes) : null, notesButton(page, k)),
    h("td", { class: "actions" }, ...rowActions(page, k)),
  );
}

function selectBox(page, k) {
  const { selected } = page.state;
  const box = h("input", { type: "checkbox", "aria-label": "Select " + k.key, checked: selected.has(k.id) });
  box.addEventListener("change", () => {
    if (box.checked) selected.add(k.id);
    else selected.delete(k.id);
    updateSelection(page);
  });
  return box;
}

/** One chip per cooling model; widgets.js's tickCountdowns turns data-until into a live "model · m:ss". */
function cooldowns(k) {
  return k.cooldowns.length
    ? h(
        "div",
        { class: "cooldowns" },
        k.cooldowns.map((c) =>
          h("span", { class: "cooldown", title: c.reason || "", dataset: { until: c.until, label: c.model } }, c.model),
        ),
      )
    : h("span", { class: "muted" }, "–");
}

function notesButton(page, k) {
  const button = h(
    "button",
    { type: "button", class: "btn small ghost", "aria-label": `Edit notes of ${k.key}` },
    k.notes ? "Edit" : "Add note",
  );
  button.addEventListener("click", () => notesDialog(page, k));
  return button;
}

/** Restore (hidden on active keys) and Delete for one key. */
function rowActions(page, k) {
  const restore = h(
    "button",
    { type: "button", class: "btn small", "aria-label": `Restore ${k.key}`, hidden: k.status === "active" },
    "Restore",
  );
  restore.addEventListener("click", () => restoreKeys(page, [k.id]));
  const del = h(
    "button",
    { type: "button", class: "btn small danger ghost", "aria-label": `Delete ${k.key}` },
    "Delete",
  );
  del.addEventListener("click", () => deleteKeys(page, [k.id], k.key));
  return [restore, del];
}

/** Previous / Next when there is more than one page, and the key count of the current filter. */
function renderPager(page) {
  const { state, ui } = page;
  const pages = Math.max(1, Math.ceil(state.total / PAGE_SIZE));
  clear(ui.pager);
  if (pages > 1) {
    ui.pager.append(
      h(
        "button",
        { type: "button", class: "btn small", disabled: state.page <= 1, onclick: () => turnPage(page, -1) },
        "Previous",
      ),
      h("span", {}, `Page ${state.page} of ${pages}`),
      h(
        "button",
        { type: "button", class: "btn small", disabled: state.page >= pages, onclick: () => turnPage(page, 1) },
        "Next",
      ),
    );
  }
  ui.pager.append(
    h(
      "span",
      { class: "muted small" },
      `${fmtInt(state.total)} ${state.status || ""} key${state.total === 1 ? "" : "s"}`.replace("  ", " "),
    ),
  );
}

function turnPage(page, by) {
  page.state.page += by;
  page.load();
}

/** The toolbar's view of the selection: Delete selected, Restore N selected / Restore all, "N selected". */
function updateSelection({ state, ui }) {
  const n = state.selected.size;
  ui.deleteBtn.disabled = n === 0;
  ui.restoreBtn.textContent = n ? `Restore ${n} selected` : "Restore all";
  ui.selInfo.textContent = n ? `${n} selected` : "";
}
