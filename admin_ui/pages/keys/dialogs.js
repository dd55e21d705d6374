// The dialogs of the keys page: import (text or a .txt file), export to a file, validate (then follow the task
// with a progress bar), notes of one key.
import { api, download } from "../../api.js";
import { clear, errorBox, field, h, missingNotice, openDialog, toast } from "../../dom.js";

export function importDialog(page) {
  const text = h("textarea", {
    name: "keys",
    rows: 8,
    class: "mono",
    spellcheck: "false",
    autocomplete: "off",
    placeholder: "AIza…\nAIza…",
  });
  const file = h("input", { type: "file", name: "file", accept: ".txt,text/plain" });
  const fileInfo = h("p", { class: "muted small", "aria-live": "polite" });
  const result = h("div", { role: "status" });
  const submit = h("button", { type: "submit", class: "btn primary" }, "Import");
  const chosen = { text: "" }; // the chosen file's content
  file.addEventListener("change", () => readKeyFile(file, chosen, fileInfo));
  const form = h(
    "form",
    { class: "form" },
    field("Keys", text, { hint: "Separated by new lines, spaces, commas or semicolons. Duplicates are skipped." }),
    field("…or a .txt file", file),
    fileInfo,
    result,
    h("div", { class: "dialog-actions" }, submit),
  );
  const dialog = openDialog("Import keys into " + page.name, form, { wide: true, onClose: page.load });
  text.focus();
  submitOnCtrlEnter(text, form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const all = [text.value, chosen.text].filter(Boolean).join("\n");
    clear(result);
    if (!all.trim())
      return result.append(h("div", { class: "alert error", role: "alert" }, "Paste keys or choose a file first."));
    submit.disabled = true;
    try {
      const r = await api("POST", page.path, { body: { keys: all } });
      text.value = "";
      file.value = "";
      chosen.text = "";
      fileInfo.textContent = "";
      result.append(importSummary(r));
      page.load();
    } catch (err) {
      result.append(errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  return dialog;
}

/** Read the file the input holds into chosen.text and say how many entries it has. */
async function readKeyFile(input, chosen, info) {
  const f = input.files[0];
  chosen.text = f ? await f.text() : "";
  info.textContent = f ? `${f.name}: ${chosen.text.split(/\s+/).filter(Boolean).length} entries read` : "";
}

function importSummary(r) {
  return h(
    "div",
    { class: "alert " + (r.rejected ? "warn" : "ok") },
    `Added ${r.added} · ${r.duplicate} duplicate · ${r.rejected} rejected`,
    r.rejected_samples?.length ? h("div", { class: "mono small" }, "Rejected: " + r.rejected_samples.join(", ")) : null,
  );
}

function submitOnCtrlEnter(textarea, form) {
  textarea.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
}

export function exportDialog(page) {
  const scope = h(
    "select",
    { name: "export_status" },
    [
      ["all", "All keys"],
      ["active", "Active keys"],
      ["invalid", "Invalid keys"],
    ].map(([v, t]) => h("option", { value: v }, t)),
  );
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
      await download(page.path + "/export", `${page.name}-keys-${scope.value}.txt`, { status: scope.value });
      dialog.close();
      toast("Export downloaded");
    } catch (err) {
      form.append(err.missingRoute ? missingNotice("Key export") : errorBox(err));
    } finally {
      go.disabled = false;
    }
  });
}

export function validateDialog(page) {
  const { selected } = page.state;
  const options = [
    ["all", "All keys"],
    ["invalid", "Invalid keys only"],
  ];
  if (selected.size) options.unshift(["selected", `The ${selected.size} selected keys`]);
  const scope = h(
    "select",
    { name: "scope" },
    options.map(([v, t]) => h("option", { value: v }, t)),
  );
  const form = h(
    "form",
    { class: "form" },
    h(
      "p",
      {},
      "Each key gets one minimal request to the group's test model. Valid keys become active, dead keys invalid.",
    ),
    field("Validate", scope),
    h("div", { class: "dialog-actions" }, h("button", { type: "submit", class: "btn primary" }, "Start")),
  );
  const dialog = openDialog("Validate keys", form);
  scope.focus();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    dialog.close();
    const body = { scope: scope.value };
    if (scope.value === "selected") body.ids = [...selected];
    try {
      const { task } = await api("POST", page.path + "/validate", { body });
      await followTask(page, task);
    } catch (err) {
      toast(
        err.missingRoute ? "Key validation is not available on this server yet (404 ROUTE_NOT_FOUND)." : err.message,
        "error",
      );
    }
  });
}

/** Show a validation task's progress in the page's progress box until it ends (or the page is left), then reload. */
async function followTask(page, task) {
  const { progress } = page.ui;
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
  while (task.status === "running" && page.life.alive) {
    await new Promise((r) => setTimeout(r, 400));
    ({ task } = await api("GET", "/api/tasks/" + encodeURIComponent(task.id)));
    show(task);
  }
  if (!page.life.alive) return;
  progress.firstChild.textContent = task.status === "done" ? "Validation finished" : "Validation failed";
  progress.className = "task " + (task.status === "done" ? "ok" : "error");
  if (task.message) progress.append(h("span", { class: "muted" }, task.message));
  page.load();
}

export function notesDialog(page, k) {
  const notes = h("textarea", { name: "notes", rows: 3, maxlength: 500 }, k.notes || "");
  const error = h("div", { class: "alert error", role: "alert", hidden: true });
  const form = h(
    "form",
    { class: "form" },
    field("Notes", notes, { hint: "Up to 500 characters. Ctrl+Enter saves." }),
    error,
    h("div", { class: "dialog-actions" }, h("button", { type: "submit", class: "btn primary" }, "Save")),
  );
  const dialog = openDialog("Notes for " + k.key, form);
  notes.focus();
  submitOnCtrlEnter(notes, form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("PUT", `${page.path}/${encodeURIComponent(k.id)}`, { body: { notes: notes.value } });
      dialog.close();
      toast("Notes saved");
      page.load();
    } catch (err) {
      error.textContent = err.missingRoute
        ? "Notes are not available on this server yet (404 ROUTE_NOT_FOUND)."
        : err.message;
      error.hidden = false;
    }
  });
}
