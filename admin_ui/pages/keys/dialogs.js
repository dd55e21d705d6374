// The dialogs of the keys page: import (text or a .txt file; a big import runs as a task with a progress bar),
// export to a file, validate (then follow the task with a progress bar), notes of one key. The export and validate
// dialogs name how many keys each choice covers: they are the confirmation of an action on all keys.
import { api, download } from "../../api.js";
import { clear, errorBox, field, fmtInt, h, missingNotice, openDialog, toast } from "../../dom.js";

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
      if (r.task) {
        const bar = h("progress", { max: Math.max(1, r.task.total), value: 0, "aria-label": "Import progress" });
        const line = h("span", { class: "small" });
        const box = h("div", { class: "task", role: "status" }, h("strong", {}, "Importing"), bar, line);
        result.append(box);
        let task = r.task;
        const show = (t) => {
          bar.value = t.done;
          line.textContent = `${fmtInt(t.done)} of ${fmtInt(t.total)} keys · ${fmtInt(t.added)} added`;
        };
        show(task);
        while (task.status === "running" && dialog.open) {
          await new Promise((resolve) => setTimeout(resolve, 400));
          ({ task } = await api("GET", "/api/tasks/" + encodeURIComponent(task.id)));
          show(task);
        }
        box.firstChild.textContent = task.status === "done" ? "Import finished" : "Import failed";
        box.className = "task " + (task.status === "done" ? "ok" : "error");
        if (task.message) box.append(h("span", { class: "muted" }, task.message));
        if (task.status === "done") result.append(importSummary(task));
      } else {
        result.append(importSummary(r));
      }
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

/** The counts of an import, and each rejected line by number with a masked form of what it held. */
function importSummary(r) {
  const lines = r.rejected_lines || [];
  return h(
    "div",
    { class: "alert " + (r.rejected ? "warn" : "ok"), dataset: { result: "import" } },
    `Added ${fmtInt(r.added)} · ${fmtInt(r.duplicate)} duplicate · ${fmtInt(r.rejected)} rejected`,
    lines.length
      ? h(
          "ul",
          { class: "import-rejects mono small", "aria-label": "Rejected lines" },
          lines.map((l) => h("li", {}, `line ${l.line}: ${l.text}`)),
          r.rejected > lines.length
            ? h("li", { class: "muted" }, `… and ${fmtInt(r.rejected - lines.length)} more`)
            : null,
        )
      : null,
  );
}

function submitOnCtrlEnter(textarea, form) {
  textarea.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
}

const counted = (label, n) => (n === undefined ? label : `${label} (${fmtInt(n)})`);

export function exportDialog(page) {
  const c = page.state.counts || {};
  const scope = h(
    "select",
    { name: "export_status" },
    [
      ["all", counted("All keys", c.total)],
      ["active", counted("Active keys", c.active)],
      ["cooling", counted("Cooling keys", c.cooling)],
      ["invalid", counted("Invalid keys", c.invalid)],
      ["disabled", counted("Disabled keys", c.disabled)],
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
  const c = page.state.counts || {};
  const probed = c.total === undefined ? undefined : c.total - (c.disabled || 0);
  const options = [
    ["all", counted("All keys", probed) + (c.disabled ? ", disabled keys skipped" : "")],
    ["invalid", counted("Invalid keys only", c.invalid)],
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
      "Each key gets one minimal request to the group's test model. Valid keys become active, dead keys invalid; " +
        "a probe that proves nothing (a timeout, a 5xx) marks the key inconclusive and changes nothing.",
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
export async function followTask(page, task) {
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
