// The keys table of the keys page: the rows of the current page (the server has searched, filtered and sorted
// them), select boxes, the empty states, the pager, the selection bar. Drawing only: page.load() fetches.
import { chip, clear, emptyState, fmtAgo, fmtCompact, fmtInt, fmtTime, h } from "../../dom.js";
import { tickCountdowns } from "../../widgets.js";
import { deleteKeys, restoreKeys, setKeyStatus } from "./actions.js";
import { importDialog, notesDialog } from "./dialogs.js";

export const PAGE_SIZE = 100;

const COLUMNS = [
  "Key",
  "Status",
  "Cooldown",
  "Requests",
  "Failures",
  "Tokens",
  "Last used",
  "Validated",
  "Last error",
  "Notes",
];
const NUMERIC = ["Requests", "Failures", "Tokens"];

/** Redraw the table, the pager and the selection bar from page.state. */
export function renderTable(page) {
  clear(page.ui.tableBox).append(tableOrEmptyState(page, page.state.rows));
  renderPager(page);
  updateSelection(page);
  tickCountdowns();
}

function tableOrEmptyState(page, rows) {
  const { state } = page;
  const search = state.search.trim();
  if (!state.total && !state.status && !search) {
    return emptyState(
      "No keys in this group yet",
      "Import Gemini API keys (AIza…) from text or a .txt file.",
      h("button", { type: "button", class: "btn primary", onclick: () => importDialog(page) }, "Import keys"),
    );
  }
  if (!rows.length) {
    const where = search ? " match the search" : "";
    return emptyState(
      "No keys match",
      state.status ? `No ${state.status} keys${where} in this group.` : `No key of this group${where || " matches"}.`,
    );
  }
  return h(
    "div",
    { class: "table-wrap card flush" },
    h(
      "table",
      // "cards": under 600 px each row is a card, every cell under its column's name (data-label; styles.css)
      { class: "keys-table cards" },
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
  const row = h(
    "tr",
    { dataset: { keyId: k.id, status: k.status } },
    h("td", { class: "check" }, selectBox(page, k)),
    h("th", { scope: "row", class: "mono card-title" }, k.key),
    h("td", {}, statusChip(k)),
    h("td", {}, cooldowns(k)),
    h("td", { class: "num" }, fmtInt(k.request_count)),
    h("td", { class: "num", title: `${k.failure_count} consecutive` }, fmtInt(k.failure_total)),
    h("td", { class: "num" }, fmtCompact(k.total_tokens ?? 0)),
    h("td", { class: "nowrap" }, fmtAgo(k.last_used_at)),
    h("td", { class: "validated" }, validation(k)),
    lastError(k),
    h("td", { class: "notes-cell" }, k.notes ? h("span", {}, k.notes) : null, notesButton(page, k)),
    h("td", { class: "actions card-actions" }, ...rowActions(page, k)),
  );
  // each cell's column name, shown beside it when the row is a card (the key heads it, the actions close it)
  const labels = ["", "", ...COLUMNS.slice(1), ""];
  [...row.children].forEach((cell, i) => {
    if (labels[i]) cell.dataset.label = labels[i];
  });
  return row;
}

/** A cooling key that can still serve other models reads "limited"; one that can serve nothing "cooling". */
function statusChip(k) {
  if (k.status !== "cooling") return chip(k.status);
  const whole = k.cooldowns.some((c) => c.all_models);
  const label = whole ? "cooling" : "limited";
  const el = h("span", { class: "chip " + label }, label);
  el.title = whole
    ? "Cooling for all models: this key serves nothing until its cooldown ends"
    : `Limited: cooling for ${k.cooldowns.map((c) => c.model).join(", ")} only; it still serves other models`;
  return el;
}

/** When the key was last validated, and "inconclusive" when that validation proved nothing. */
function validation(k) {
  if (!k.validated_at) return h("span", { class: "muted" }, "never");
  const when = h("span", { title: fmtTime(k.validated_at) }, fmtAgo(k.validated_at));
  if (k.validation !== "inconclusive") return when;
  const mark = h("span", { class: "chip inconclusive" }, "inconclusive");
  mark.title = "The last validation proved nothing (a timeout, a 5xx, a network error): the key's state was kept";
  return h("span", {}, mark, " ", when);
}

/** The last error on one line, the whole text and its time on hover or keyboard focus. */
function lastError(k) {
  if (!k.last_error) return h("td", { class: "error-cell" });
  const when = k.last_error_at ? fmtTime(k.last_error_at) : "";
  const tipId = "error-" + k.id;
  const text = h(
    "span",
    { class: "error-text", tabindex: "0", "aria-describedby": tipId, title: k.last_error + (when ? ` (${when})` : "") },
    k.last_error,
  );
  return h(
    "td",
    { class: "error-cell" },
    text,
    k.last_error_at ? h("span", { class: "error-when" }, fmtAgo(k.last_error_at)) : null,
    h("span", { class: "error-tip", role: "tooltip", id: tipId }, k.last_error, when ? h("br") : null, when),
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

/** One entry per cooldown: "model · 12 m 05 s" or "all models · 42 s" (widgets.js's tickCountdowns keeps it live),
 * and under a per-day quota "resets 00:00 Pacific". */
function cooldowns(k) {
  return k.cooldowns.length
    ? h(
        "div",
        { class: "cooldowns" },
        k.cooldowns.map((c) =>
          h(
            "div",
            { class: "cooldown-item" },
            h(
              "span",
              {
                class: "cooldown" + (c.all_models ? " all-models" : ""),
                title: c.reason || "",
                dataset: { until: c.until, label: c.all_models ? "all models" : c.model, format: "duration" },
              },
              c.all_models ? "all models" : c.model,
            ),
            c.daily ? h("span", { class: "cooldown-reset" }, "per-day quota · resets 00:00 Pacific") : null,
          ),
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

/** Restore (invalid or cooling keys), Disable / Enable, and Delete for one key. */
function rowActions(page, k) {
  const restore = h(
    "button",
    {
      type: "button",
      class: "btn small",
      "aria-label": `Restore ${k.key}`,
      hidden: k.status === "active" || k.status === "disabled",
    },
    "Restore",
  );
  restore.addEventListener("click", () => restoreKeys(page, [k.id]));
  const disabled = k.status === "disabled";
  const toggle = h(
    "button",
    { type: "button", class: "btn small", "aria-label": `${disabled ? "Enable" : "Disable"} ${k.key}` },
    disabled ? "Enable" : "Disable",
  );
  toggle.addEventListener("click", () => setKeyStatus(page, k, disabled ? "active" : "disabled"));
  const del = h(
    "button",
    { type: "button", class: "btn small danger ghost", "aria-label": `Delete ${k.key}` },
    "Delete",
  );
  del.addEventListener("click", () => deleteKeys(page, [k.id], k.key));
  return [restore, toggle, del];
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
      h("span", {}, `Page ${fmtInt(state.page)} of ${fmtInt(pages)}`),
      h(
        "button",
        { type: "button", class: "btn small", disabled: state.page >= pages, onclick: () => turnPage(page, 1) },
        "Next",
      ),
    );
  }
  const matching = state.search.trim() ? " matching" : "";
  ui.pager.append(
    h(
      "span",
      { class: "muted small", dataset: { total: state.total } },
      `${fmtInt(state.total)}${matching} ${state.status || ""} key${state.total === 1 ? "" : "s"}`.replace("  ", " "),
    ),
  );
}

function turnPage(page, by) {
  page.state.page += by;
  page.state.selected.clear();
  page.load();
}

/** The selection bar (shown when keys are selected), and "Restore all" with the count it would restore. */
function updateSelection({ state, ui }) {
  const n = state.selected.size;
  ui.bulk.bar.hidden = n === 0;
  ui.bulk.info.textContent = `${fmtInt(n)} selected`;
  const rows = state.rows.filter((k) => state.selected.has(k.id));
  ui.bulk.enable.disabled = !rows.some((k) => k.status === "disabled");
  ui.bulk.disable.disabled = !rows.some((k) => k.status !== "disabled");
  ui.bulk.restore.disabled = !rows.some((k) => k.status === "invalid" || k.status === "cooling");
  ui.selInfo.textContent = "";
  const c = state.counts;
  ui.restoreBtn.textContent = c ? `Restore all (${fmtInt((c.invalid || 0) + (c.cooling || 0))})` : "Restore all";
}
