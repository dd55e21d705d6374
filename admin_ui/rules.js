// A group's request rules in the create/edit forms: model redirects (key/value rows + strict mode), parameter
// overrides (a JSON editor checked as you type), header rules (a rule list). Client checks mirror the server's
// (gptload/proxy/group_rules.py); the server's details.fields messages land in the same slots.
import { h } from "./dom.js";

// Headers gptload manages itself: no rule may set or remove them.
const FORBIDDEN = new Set([
  "x-goog-api-key",
  "authorization",
  "x-api-key",
  "host",
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
  "accept-encoding",
]);
const variable = (name) => "$" + "{" + name + "}"; // written so: these are rule text, not JS templates
export const VARIABLES = ["CLIENT_IP", "GROUP_NAME", "TIMESTAMP_MS", "TIMESTAMP_S"].map(variable);
const MODEL = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$/;
const HEADER = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/;

function errorSlot(name) {
  return h("p", { class: "field-error", dataset: { errorFor: name } });
}

function removeButton(label, onclick) {
  return h("button", { type: "button", class: "btn small ghost danger", "aria-label": label, onclick }, "Remove");
}

/** Key/value rows for model_redirect_rules plus the strict checkbox. */
function redirectEditor(rules, strict) {
  const rows = h("div", { class: "rule-rows", dataset: { testid: "redirect-rows" } });
  const add = (from = "", to = "") => {
    const source = h("input", {
      class: "mono",
      value: from,
      placeholder: "requested model (alias)",
      "aria-label": "Requested model",
      autocomplete: "off",
      spellcheck: "false",
      dataset: { role: "redirect-from" },
    });
    const target = h("input", {
      class: "mono",
      value: to,
      placeholder: "model sent upstream",
      "aria-label": "Model sent upstream",
      autocomplete: "off",
      spellcheck: "false",
      dataset: { role: "redirect-to" },
    });
    const row = h("div", { class: "rule-row" }, source, h("span", { "aria-hidden": "true" }, "→"), target);
    row.append(removeButton("Remove redirect", () => row.remove()));
    rows.append(row);
    return source;
  };
  for (const [from, to] of Object.entries(rules || {})) add(from, to);
  const strictBox = h("input", { type: "checkbox", name: "model_redirect_strict", checked: Boolean(strict) });
  const node = h(
    "fieldset",
    { class: "rules-block" },
    h("legend", {}, "Model redirects"),
    h(
      "p",
      { class: "hint" },
      "Clients ask for the model on the left; the upstream gets the one on the right. Model lists show the aliases.",
    ),
    rows,
    h(
      "button",
      { type: "button", class: "btn small", "data-action": "add-redirect", onclick: () => add().focus() },
      "Add redirect",
    ),
    h("input", { type: "hidden", name: "model_redirect_rules" }),
    errorSlot("model_redirect_rules"),
    h(
      "div",
      { class: "field check" },
      h("label", {}, strictBox, " Strict: only these models may be used (others get 404, never forwarded)"),
      errorSlot("model_redirect_strict"),
    ),
  );

  function read(errors) {
    const out = {};
    for (const row of rows.querySelectorAll(".rule-row")) {
      const from = row
        .querySelector("[data-role=redirect-from]")
        .value.trim()
        .replace(/^models\//, "");
      const to = row
        .querySelector("[data-role=redirect-to]")
        .value.trim()
        .replace(/^models\//, "");
      if (!from && !to) continue;
      if (!MODEL.test(from) || !MODEL.test(to)) {
        errors.model_redirect_rules = `"${from || to}": model names are letters, digits and . _ @ + -`;
      } else if (from in out) {
        errors.model_redirect_rules = `"${from}" appears twice`;
      } else out[from] = to;
    }
    if (strictBox.checked && !Object.keys(out).length)
      errors.model_redirect_strict = "Strict mode with no redirects would refuse every model.";
    return { model_redirect_rules: out, model_redirect_strict: strictBox.checked };
  }
  return { node, read };
}

/** The param_overrides JSON editor: validated on every keystroke. */
function overridesEditor(value) {
  const text = Object.keys(value || {}).length ? JSON.stringify(value, null, 2) : "";
  const area = h(
    "textarea",
    {
      name: "param_overrides",
      rows: 5,
      class: "mono",
      spellcheck: "false",
      placeholder: '{"generationConfig": {"temperature": 0.2}}',
    },
    text,
  );
  const slot = errorSlot("param_overrides");
  const check = () => {
    const raw = area.value.trim();
    if (!raw) return { value: {}, error: "" };
    let parsed;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      return { error: "Not valid JSON: " + err.message };
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))
      return { error: "Must be a JSON object { ... }." };
    if ("model" in parsed) return { error: "Cannot set model: use model redirects." };
    if ("stream" in parsed) return { error: "Cannot set stream: the client chooses it." };
    return { value: parsed, error: "" };
  };
  area.addEventListener("input", () => {
    const { error } = check();
    slot.textContent = error;
    if (error) area.setAttribute("aria-invalid", "true");
    else area.removeAttribute("aria-invalid");
  });
  const node = h(
    "fieldset",
    { class: "rules-block" },
    h("legend", {}, "Parameter overrides"),
    h(
      "p",
      { class: "hint" },
      "A JSON object merged into generation requests (native :generateContent and streaming, and OpenAI-layer " +
        "bodies): objects merge deeply, other values replace, null removes a field.",
    ),
    area,
    slot,
  );
  function read(errors) {
    const { value, error } = check();
    if (error) errors.param_overrides = error;
    return { param_overrides: value || {} };
  }
  return { node, read };
}

/** The header_rules list: action, header name, value (with variables). */
function headerEditor(rules) {
  const rows = h("div", { class: "rule-rows", dataset: { testid: "header-rows" } });
  const add = (rule = { key: "", value: "", action: "set" }) => {
    const action = h(
      "select",
      { "aria-label": "Action", dataset: { role: "header-action" } },
      h("option", { value: "set", selected: rule.action !== "remove" }, "Set"),
      h("option", { value: "remove", selected: rule.action === "remove" }, "Remove"),
    );
    const key = h("input", {
      class: "mono",
      value: rule.key,
      placeholder: "X-Header-Name",
      "aria-label": "Header name",
      autocomplete: "off",
      spellcheck: "false",
      dataset: { role: "header-key" },
    });
    const value = h("input", {
      class: "mono",
      value: rule.value || "",
      placeholder: "value, e.g. " + variable("GROUP_NAME"),
      "aria-label": "Header value",
      autocomplete: "off",
      spellcheck: "false",
      dataset: { role: "header-value" },
    });
    const sync = () => (value.disabled = action.value === "remove");
    action.addEventListener("change", sync);
    sync();
    const row = h("div", { class: "rule-row" }, action, key, value);
    row.append(removeButton("Remove header rule", () => row.remove()));
    rows.append(row);
    return key;
  };
  for (const rule of rules || []) add(rule);
  const node = h(
    "fieldset",
    { class: "rules-block" },
    h("legend", {}, "Header rules"),
    h(
      "p",
      { class: "hint" },
      `Set or remove headers on upstream requests, in order. Variables: ${VARIABLES.join(", ")}. ` +
        "Credential and framing headers cannot be changed.",
    ),
    rows,
    h(
      "button",
      { type: "button", class: "btn small", "data-action": "add-header", onclick: () => add().focus() },
      "Add header rule",
    ),
    h("input", { type: "hidden", name: "header_rules" }),
    errorSlot("header_rules"),
  );
  function read(errors) {
    const out = [];
    rows.querySelectorAll(".rule-row").forEach((row, i) => {
      const action = row.querySelector("[data-role=header-action]").value;
      const key = row.querySelector("[data-role=header-key]").value.trim();
      const value = action === "set" ? row.querySelector("[data-role=header-value]").value : "";
      if (!key && !value) return;
      const where = `Rule ${i + 1}`;
      if (!HEADER.test(key)) errors.header_rules = `${where}: enter a header name.`;
      else if (FORBIDDEN.has(key.toLowerCase()))
        errors.header_rules = `${where}: ${key} is managed by gptload and cannot be set or removed.`;
      else {
        const unknown = (value.match(/\$\{[^}]*\}?/g) || []).find((v) => !VARIABLES.includes(v));
        if (unknown) errors.header_rules = `${where}: unknown variable ${unknown}.`;
        // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
        else if (/[\x00-\x1f\x7f]/.test(value)) errors.header_rules = `${where}: no control characters.`;
      }
      out.push({ key, value, action });
    });
    return { header_rules: out };
  }
  return { node, read };
}

/**
 * The rules section of a group form. Returns {node, read()}; read() gives {values, errors} with every rule field
 * (model_redirect_rules, model_redirect_strict, param_overrides, header_rules).
 */
export function ruleFields(group = {}) {
  const parts = [
    redirectEditor(group.model_redirect_rules, group.model_redirect_strict),
    overridesEditor(group.param_overrides),
    headerEditor(group.header_rules),
  ];
  const node = h(
    "div",
    { class: "rules" },
    parts.map((p) => p.node),
  );
  function read() {
    const errors = {};
    const values = Object.assign({}, ...parts.map((p) => p.read(errors)));
    return { values, errors };
  }
  return { node, read };
}

/** Whether a group uses any rule (to open the section on the group page). */
export function usesRules(group) {
  return Boolean(
    Object.keys(group.model_redirect_rules || {}).length ||
      group.model_redirect_strict ||
      Object.keys(group.param_overrides || {}).length ||
      (group.header_rules || []).length,
  );
}
