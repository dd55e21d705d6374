// Keys of one group: masked keys, status chips, live per-model cooldown countdowns, filters, import, export,
// validation with progress, restore, notes, delete. Real keys never reach the page (export goes to a Blob file).
import { api, download } from "../api.js";
import { chip, clear, confirmDialog, emptyState, errorBox, field, fmtAgo, fmtCompact, fmtInt, h, missingNotice, openDialog, toast } from "../dom.js";
import { groupTabs, tickCountdowns } from "../widgets.js";

const PAGE_SIZE = 100;

export async function render(main, { params: [name], query }, life) {
  const path = `/api/groups/${encodeURIComponent(name)}/keys`;
  const state = { status: query.get("status") || "", search: "", page: 1, selected: new Set(), rows: [], total: 0, nextExpiry: Infinity };

  const statusSelect = h(
    "select",
    { name: "status", "aria-label": "Status filter" },
    [["", "All statuses"], ["active", "Active"], ["cooling", "Cooling"], ["invalid", "Invalid"]].map(([v, t]) => h("option", { value: v, selected: v === state.status }, t)),
  );
  const search = h("input", { type: "search", name: "search", placeholder: "Filter by key, note or error", "aria-label": "Filter keys on this page" });
  const refresh = h("button", { type: "button", class: "btn" }, "Refresh");
  const importBtn = h("button", { type: "button", class: "btn primary" }, "Import keys");
  const exportBtn = h("button", { type: "button", class: "btn" }, "Export");
  const validateBtn = h("button", { type: "button", class: "btn" }, "Validate");
  const restoreBtn = h("button", { type: "button", class: "btn" }, "Restore");
  const deleteBtn = h("button", { type: "button", class: "btn danger", disabled: true }, "Delete selected");
  const clearInvalidBtn = h("button", { type: "button", class: "btn ghost danger" }, "Clear invalid");
  const selInfo = h("span", { class: "muted small", "aria-live": "polite" });
  const progress = h("div", { class: "task", hidden: true, role: "status" });
  const tableBox = h("div", {});
  const pager = h("div", { class: "pager" });

  main.append(
    h("div", { class: "page-head" }, h("div", {}, h("p", { class: "crumbs" }, h("a", { href: "#/groups" }, "Groups"), " / ", h("a", { href: "#/groups/" + encodeURIComponent(name) }, name), " /"), h("h1", {}, "Keys")), h("div", { class: "toolbar" }, importBtn, exportBtn, validateBtn, restoreBtn)),
    groupTabs(name, "keys"),
    h("div", { class: "filters" }, statusSelect, search, refresh, selInfo, h("span", { class: "spacer" }), deleteBtn, clearInvalidBtn),
    progress,
    tableBox,
    pager,
  );

  function updateSelection() {
    deleteBtn.disabled = state.selected.size === 0;
    restoreBtn.textContent = state.selected.size ? `Restore ${state.selected.size} selected` : "Restore all";
    selInfo.textContent = state.selected.size ? `${state.selected.size} selected` : "";
  }

  function row(k) {
    const box = h("input", { type: "checkbox", "aria-label": "Select " + k.key, checked: state.selected.has(k.id) });
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(k.id);
      else state.selected.delete(k.id);
      updateSelection();
    });
    const cooldowns = k.cooldowns.length
      ? h("div", { class: "cooldowns" }, k.cooldowns.map((c) => h("span", { class: "cooldown", title: c.reason || "", dataset: { until: c.until, label: c.model } }, c.model)))
      : h("span", { class: "muted" }, "–");
    const notesBtn = h("button", { type: "button", class: "btn small ghost", "aria-label": `Edit notes of ${k.key}` }, k.notes ? "Edit" : "Add note");
    notesBtn.addEventListener("click", () => notesDialog(k));
    const restore = h("button", { type: "button", class: "btn small", "aria-label": `Restore ${k.key}`, hidden: k.status === "active" }, "Restore");
    restore.addEventListener("click", () => doRestore([k.id]));
    const del = h("button", { type: "button", class: "btn small danger ghost", "aria-label": `Delete ${k.key}` }, "Delete");
    del.addEventListener("click", () => doDelete([k.id], k.key));
    return h(
      "tr",
      { dataset: { keyId: k.id, status: k.status } },
      h("td", { class: "check" }, box),
      h("th", { scope: "row", class: "mono" }, k.key),
      h("td", {}, chip(k.status)),
      h("td", {}, cooldowns),
      h("td", { class: "num" }, fmtInt(k.request_count)),
      h("td", { class: "num", title: `${k.failure_count} consecutive` }, fmtInt(k.failure_total)),
      h("td", { class: "num" }, fmtCompact(k.total_tokens ?? 0)),
      h("td", { class: "nowrap" }, fmtAgo(k.last_used_at)),
      h("td", { class: "error-cell" }, k.last_error || ""),
      h("td", { class: "notes-cell" }, k.notes ? h("span", {}, k.notes) : null, notesBtn),
      h("td", { class: "actions" }, restore, del),
    );
  }

  function renderTable() {
    const needle = state.search.toLowerCase();
    const rows = state.rows.filter((k) => !needle || [k.key, k.notes, k.last_error].some((v) => (v || "").toLowerCase().includes(needle)));
    clear(tableBox);
    if (!state.total && !state.status) {
      tableBox.append(emptyState("No keys in this group yet", "Import Gemini API keys (AIza…) from text or a .txt file.", h("button", { type: "button", class: "btn primary", onclick: importDialog }, "Import keys")));
    } else if (!rows.length) {
      tableBox.append(emptyState("No keys match", state.status ? `No ${state.status} keys${needle ? " match the filter" : ""}.` : "No key matches the filter."));
    } else {
      const all = h("input", { type: "checkbox", "aria-label": "Select all keys on this page", checked: rows.every((k) => state.selected.has(k.id)) });
      all.addEventListener("change", () => {
        rows.forEach((k) => (all.checked ? state.selected.add(k.id) : state.selected.delete(k.id)));
        renderTable();
      });
      tableBox.append(
        h(
          "div",
          { class: "table-wrap card flush" },
          h(
            "table",
            { class: "keys-table" },
            h("thead", {}, h("tr", {}, h("th", { class: "check" }, all), ...["Key", "Status", "Cooldown", "Requests", "Failures", "Tokens", "Last used", "Last error", "Notes"].map((t) => h("th", { scope: "col", class: ["Requests", "Failures", "Tokens"].includes(t) ? "num" : "" }, t)), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
            h("tbody", {}, rows.map(row)),
          ),
        ),
      );
    }
    const pages = Math.max(1, Math.ceil(state.total / PAGE_SIZE));
    clear(pager);
    if (pages > 1) {
      pager.append(
        h("button", { type: "button", class: "btn small", disabled: state.page <= 1, onclick: () => ((state.page -= 1), load()) }, "Previous"),
        h("span", {}, `Page ${state.page} of ${pages}`),
        h("button", { type: "button", class: "btn small", disabled: state.page >= pages, onclick: () => ((state.page += 1), load()) }, "Next"),
      );
    }
    pager.append(h("span", { class: "muted small" }, `${fmtInt(state.total)} ${state.status || ""} key${state.total === 1 ? "" : "s"}`.replace("  ", " ")));
    updateSelection();
    tickCountdowns();
  }

  async function load() {
    try {
      const r = await api("GET", path, { query: { status: state.status, page: state.page, page_size: PAGE_SIZE } });
      state.rows = r.keys;
      state.total = r.total;
      state.nextExpiry = Math.min(Infinity, ...r.keys.flatMap((k) => k.cooldowns.map((c) => c.until)));
      const ids = new Set(r.keys.map((k) => k.id));
      state.selected.forEach((id) => ids.has(id) || state.selected.delete(id));
      renderTable();
    } catch (err) {
      clear(tableBox).append(errorBox(err));
    }
  }

  // Refresh on a timer unless the user is working inside the table, and right after a cooldown runs out.
  life.every(1000, () => {
    if (Date.now() / 1000 >= state.nextExpiry) {
      state.nextExpiry = Infinity;
      load();
    }
  });
  life.every(5000, () => {
    if (!document.hidden && !tableBox.contains(document.activeElement) && !document.querySelector("dialog[open]")) load();
  });

  statusSelect.addEventListener("change", () => {
    state.status = statusSelect.value;
    state.page = 1;
    history.replaceState(null, "", `#/groups/${encodeURIComponent(name)}/keys${state.status ? "?status=" + state.status : ""}`);
    load();
  });
  search.addEventListener("input", () => {
    state.search = search.value;
    renderTable();
  });
  refresh.addEventListener("click", load);
  importBtn.addEventListener("click", importDialog);
  exportBtn.addEventListener("click", exportDialog);
  validateBtn.addEventListener("click", validateDialog);
  restoreBtn.addEventListener("click", () => doRestore(state.selected.size ? [...state.selected] : null));
  deleteBtn.addEventListener("click", () => doDelete([...state.selected]));
  clearInvalidBtn.addEventListener("click", async () => {
    if (!(await confirmDialog("Delete all invalid keys?", "Every key marked invalid in this group is deleted with its stored secret."))) return;
    try {
      const r = await api("POST", path + "/clear-invalid", { body: {} });
      toast(`Deleted ${r.deleted} invalid key${r.deleted === 1 ? "" : "s"}`);
      load();
    } catch (err) {
      toast(err.missingRoute ? "Clearing invalid keys is not available on this server yet." : err.message, "error");
    }
  });

  async function doRestore(ids) {
    try {
      const r = await api("POST", path + "/restore", { body: ids ? { ids } : {} });
      toast(`Restored ${r.restored} key${r.restored === 1 ? "" : "s"}`);
      state.selected.clear();
      load();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  async function doDelete(ids, label) {
    if (!ids.length) return;
    const what = label ? `key ${label}` : `${ids.length} selected key${ids.length === 1 ? "" : "s"}`;
    if (!(await confirmDialog(`Delete ${what}?`, "Deleted keys and their stored secrets are gone for good; import them again to bring them back."))) return;
    try {
      const r = await api("DELETE", path, { body: { ids } });
      toast(`Deleted ${r.deleted} key${r.deleted === 1 ? "" : "s"}`);
      ids.forEach((id) => state.selected.delete(id));
      load();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  function importDialog() {
    const text = h("textarea", { name: "keys", rows: 8, class: "mono", spellcheck: "false", autocomplete: "off", placeholder: "AIza…\nAIza…" });
    const file = h("input", { type: "file", name: "file", accept: ".txt,text/plain" });
    const fileInfo = h("p", { class: "muted small", "aria-live": "polite" });
    const result = h("div", { role: "status" });
    const submit = h("button", { type: "submit", class: "btn primary" }, "Import");
    let fileText = "";
    file.addEventListener("change", async () => {
      const f = file.files[0];
      fileText = f ? await f.text() : "";
      fileInfo.textContent = f ? `${f.name}: ${fileText.split(/\s+/).filter(Boolean).length} entries read` : "";
    });
    const form = h(
      "form",
      { class: "form" },
      field("Keys", text, { hint: "Separated by new lines, spaces, commas or semicolons. Duplicates are skipped." }),
      field("…or a .txt file", file),
      fileInfo,
      result,
      h("div", { class: "dialog-actions" }, submit),
    );
    const dialog = openDialog("Import keys into " + name, form, { wide: true, onClose: load });
    text.focus();
    text.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const all = [text.value, fileText].filter(Boolean).join("\n");
      clear(result);
      if (!all.trim()) return result.append(h("div", { class: "alert error", role: "alert" }, "Paste keys or choose a file first."));
      submit.disabled = true;
      try {
        const r = await api("POST", path, { body: { keys: all } });
        text.value = "";
        file.value = "";
        fileText = "";
        fileInfo.textContent = "";
        result.append(
          h(
            "div",
            { class: "alert " + (r.rejected ? "warn" : "ok") },
            `Added ${r.added} · ${r.duplicate} duplicate · ${r.rejected} rejected`,
            r.rejected_samples && r.rejected_samples.length ? h("div", { class: "mono small" }, "Rejected: " + r.rejected_samples.join(", ")) : null,
          ),
        );
        load();
      } catch (err) {
        result.append(errorBox(err));
      } finally {
        submit.disabled = false;
      }
    });
    return dialog;
  }

  function exportDialog() {
    const scope = h("select", { name: "export_status" }, [["all", "All keys"], ["active", "Active keys"], ["invalid", "Invalid keys"]].map(([v, t]) => h("option", { value: v }, t)));
    const go = h("button", { type: "submit", class: "btn primary" }, "Download .txt");
    const form = h(
      "form",
      { class: "form" },
      h("p", {}, "The file holds the real keys, one per line. It is downloaded straight to disk and never shown here."),
      field("Which keys", scope),
      h("div", { class: "dialog-actions" }, go),
    );
    const dialog = openDialog("Export keys", form);
    scope.focus();
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      go.disabled = true;
      try {
        await download(path + "/export", `${name}-keys-${scope.value}.txt`, { status: scope.value });
        dialog.close();
        toast("Export downloaded");
      } catch (err) {
        form.append(err.missingRoute ? missingNotice("Key export") : errorBox(err));
      } finally {
        go.disabled = false;
      }
    });
  }

  function validateDialog() {
    const options = [["all", "All keys"], ["invalid", "Invalid keys only"]];
    if (state.selected.size) options.unshift(["selected", `The ${state.selected.size} selected keys`]);
    const scope = h("select", { name: "scope" }, options.map(([v, t]) => h("option", { value: v }, t)));
    const form = h(
      "form",
      { class: "form" },
      h("p", {}, "Each key gets one minimal request to the group's test model. Valid keys become active, dead keys invalid."),
      field("Validate", scope),
      h("div", { class: "dialog-actions" }, h("button", { type: "submit", class: "btn primary" }, "Start")),
    );
    const dialog = openDialog("Validate keys", form);
    scope.focus();
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      dialog.close();
      const body = { scope: scope.value };
      if (scope.value === "selected") body.ids = [...state.selected];
      try {
        const { task } = await api("POST", path + "/validate", { body });
        await followTask(task);
      } catch (err) {
        toast(err.missingRoute ? "Key validation is not available on this server yet (404 ROUTE_NOT_FOUND)." : err.message, "error");
      }
    });
  }

  async function followTask(task) {
    const bar = h("progress", { max: Math.max(1, task.total), value: task.done });
    const text = h("span", {});
    clear(progress).append(h("strong", {}, "Validating"), bar, text);
    progress.hidden = false;
    progress.className = "task";
    const show = (t) => {
      bar.max = Math.max(1, t.total);
      bar.value = t.done;
      text.textContent = `${t.done}/${t.total} · ${t.valid} valid · ${t.invalid} invalid · ${t.inconclusive} inconclusive`;
    };
    show(task);
    while (task.status === "running" && life.alive) {
      await new Promise((r) => setTimeout(r, 400));
      ({ task } = await api("GET", "/api/tasks/" + encodeURIComponent(task.id)));
      show(task);
    }
    if (!life.alive) return;
    progress.firstChild.textContent = task.status === "done" ? "Validation finished" : "Validation failed";
    progress.className = "task " + (task.status === "done" ? "ok" : "error");
    if (task.message) progress.append(h("span", { class: "muted" }, task.message));
    load();
  }

  function notesDialog(k) {
    const notes = h("textarea", { name: "notes", rows: 3, maxlength: 500 }, k.notes || "");
    const error = h("div", { class: "alert error", role: "alert", hidden: true });
    const form = h("form", { class: "form" }, field("Notes", notes, { hint: "Up to 500 characters. Ctrl+Enter saves." }), error, h("div", { class: "dialog-actions" }, h("button", { type: "submit", class: "btn primary" }, "Save")));
    const dialog = openDialog("Notes for " + k.key, form);
    notes.focus();
    notes.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("PUT", `${path}/${encodeURIComponent(k.id)}`, { body: { notes: notes.value } });
        dialog.close();
        toast("Notes saved");
        load();
      } catch (err) {
        error.textContent = err.missingRoute ? "Notes are not available on this server yet (404 ROUTE_NOT_FOUND)." : err.message;
        error.hidden = false;
      }
    });
  }

  await load();
}
