// System settings: a form generated from the schema; client checks mirror the server's, whose messages
// (details.fields) appear next to the same fields.
import { api } from "../api.js";
import { clear, errorBox, h, showFieldErrors, toast } from "../dom.js";
import { loadSchema, settingsFields } from "../forms.js";
import { setLeaveGuard } from "../nav.js";
import { unsavedChanges } from "../widgets.js";

const SECTIONS = [
  [
    "Retries and failures",
    ["max_retries", "blacklist_threshold", "bare_429_cooldown_seconds", "default_quota_cooldown_seconds"],
  ],
  [
    "Timeouts",
    ["request_timeout_seconds", "connect_timeout_seconds", "first_byte_timeout_seconds", "stream_idle_timeout_seconds"],
  ],
  [
    "Key validation",
    ["key_validation_interval_minutes", "key_validation_concurrency", "key_validation_timeout_seconds"],
  ],
  ["Request logs", ["request_log_retention_days", "enable_request_body_logging", "log_failures_only"]],
];

export async function render(main, _route, life) {
  let schema;
  let values;
  try {
    [schema, { settings: values }] = await Promise.all([loadSchema(api), api("GET", "/api/settings")]);
  } catch (err) {
    main.append(h("h1", {}, "Settings"), errorBox(err));
    return;
  }
  const status = h("div", { role: "status", "aria-live": "polite" });
  const save = h("button", { type: "submit", class: "btn primary" }, "Save settings");
  const form = h("form", { class: "settings-form", novalidate: true });
  let fields;
  const build = () => {
    fields = settingsFields(schema, values, { markOverridable: true });
    const byName = Object.fromEntries(schema.map((s, i) => [s.name, fields.nodes[i]]));
    const used = new Set();
    clear(form);
    for (const [title, names] of SECTIONS) {
      const present = names.filter((n) => byName[n]);
      for (const n of present) used.add(n);
      const nodes = present.map((n) => byName[n]);
      if (nodes.length)
        form.append(
          h("fieldset", { class: "card" }, h("legend", {}, title), h("div", { class: "settings-grid" }, nodes)),
        );
    }
    const rest = schema.filter((s) => !used.has(s.name)).map((s) => byName[s.name]);
    if (rest.length)
      form.append(
        h("fieldset", { class: "card" }, h("legend", {}, "Proxy"), h("div", { class: "settings-grid" }, rest)),
      );
    form.append(h("div", { class: "form-foot" }, status, save));
  };
  build();
  const changes = unsavedChanges(form, "The settings page");
  setLeaveGuard(changes.question);
  life.onLeave(() => setLeaveGuard(null));
  main.append(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Settings"),
      h(
        "p",
        { class: "muted" },
        "System-wide values. Settings marked ",
        h("span", { class: "chip override" }, "group override"),
        " can also be set per group (a group's page, Edit); the others apply to every group.",
      ),
    ),
    form,
  );

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(status);
    const { values: changed, errors } = fields.read();
    showFieldErrors(form, errors);
    if (Object.keys(errors).length) {
      status.append(
        h(
          "div",
          { class: "alert error", role: "alert" },
          `Fix ${Object.keys(errors).length === 1 ? "the field" : "the fields"} marked below.`,
        ),
      );
      form.querySelector("[aria-invalid]")?.focus();
      return;
    }
    if (!Object.keys(changed).length) {
      status.append(h("span", { class: "muted" }, "Nothing changed."));
      return;
    }
    save.disabled = true;
    try {
      const r = await api("PUT", "/api/settings", { body: changed });
      values = r.settings;
      build();
      changes.saved();
      status.append(h("div", { class: "alert ok" }, "Settings saved: " + Object.keys(changed).join(", ")));
      toast("Settings saved");
    } catch (err) {
      showFieldErrors(form, err.fields);
      status.append(errorBox(err));
    } finally {
      save.disabled = false;
    }
  });
}
