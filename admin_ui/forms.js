// Settings forms generated from the settings schema (GET /api/settings/schema), with client-side validation
// that mirrors the server's; the server's details.fields messages land in the same slots.
import { field, h } from "./dom.js";

export function labelOf(name) {
  const text = name.replace(/_/g, " ").replace(/\b(ttl|url|ip)\b/g, (w) => w.toUpperCase());
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A default as a person reads it: "none" for an empty text or list, on/off for a switch, lists joined. */
export function readableDefault(value) {
  if (value === null || value === undefined || value === "") return "none";
  if (Array.isArray(value)) return value.length ? value.join(", ") : "none";
  if (typeof value === "boolean") return value ? "on" : "off";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** The mark of a setting a group may override (on the system settings page). */
function overridableMark(spec) {
  return spec.group_overridable
    ? h("span", { class: "chip override", title: "A group can set its own value on its page" }, "group override")
    : null;
}

/**
 * Inputs for each schema entry. With inherit=true (group overrides) every input may be left empty, meaning
 * "use the system value", shown as the placeholder.
 * Returns {nodes, read()} where read() gives {values, errors}; values holds only what the user set or changed.
 */
export function settingsFields(schema, values, { inherit = false, inherited = {}, markOverridable = false } = {}) {
  const entries = schema.map((spec) => {
    const current = values[spec.name];
    let input;
    if (spec.type === "boolean") {
      input = inherit
        ? h(
            "select",
            { name: spec.name },
            h("option", { value: "" }, `Inherit (${inherited[spec.name] ? "on" : "off"})`),
            h("option", { value: "true", selected: current === true }, "On"),
            h("option", { value: "false", selected: current === false }, "Off"),
          )
        : h("input", { type: "checkbox", name: spec.name, checked: Boolean(current) });
    } else if (spec.type === "string_list") {
      input = h(
        "textarea",
        { name: spec.name, rows: 3, class: "mono", spellcheck: "false" },
        (current || []).join("\n"),
      );
    } else if (spec.type === "integer" || spec.type === "number") {
      input = h("input", {
        type: "number",
        name: spec.name,
        inputmode: spec.type === "integer" ? "numeric" : "decimal",
        step: spec.type === "integer" ? 1 : "any",
        min: spec.min ?? undefined,
        max: spec.max ?? undefined,
        value: current === undefined || current === null ? "" : String(current),
        placeholder: inherit ? String(inherited[spec.name] ?? spec.default) : undefined,
      });
    } else {
      input = h("input", {
        type: "text",
        name: spec.name,
        value: current ?? "",
        placeholder: inherit ? `Inherit (${readableDefault(inherited[spec.name])})` : undefined,
        // a secret (proxy_url) arrives masked (****); sending the masked text back keeps the stored secret
        class: spec.secret ? "mono" : undefined,
        autocomplete: spec.secret ? "off" : undefined,
        spellcheck: spec.secret ? "false" : undefined,
      });
    }
    const range = spec.min !== null && spec.min !== undefined ? ` Range ${spec.min}–${spec.max}.` : "";
    const secret = spec.secret ? " Credentials are shown as ****; leave them so to keep them." : "";
    const hint = `${spec.description}${range} Default: ${readableDefault(spec.default)}.${secret}`;
    const node =
      spec.type === "boolean" && !inherit
        ? h(
            "div",
            { class: "field check" },
            h("label", {}, input, " ", labelOf(spec.name)),
            h("p", { class: "hint" }, hint),
            h("p", { class: "field-error", dataset: { errorFor: spec.name } }),
          )
        : field(labelOf(spec.name), input, { hint, name: spec.name });
    // the mark goes at the start of the hint, outside the label (the label stays the setting's name)
    const mark = markOverridable ? overridableMark(spec) : null;
    if (mark) node.querySelector(".hint").prepend(mark, " ");
    node.dataset.setting = spec.name;
    return { spec, input, node };
  });

  function read() {
    const out = {};
    const errors = {};
    for (const { spec, input } of entries) {
      const name = spec.name;
      if (spec.type === "boolean") {
        if (inherit) {
          if (input.value) out[name] = input.value === "true";
        } else if (input.checked !== Boolean(values[name])) out[name] = input.checked;
        continue;
      }
      const text = input.value.trim();
      if (spec.type === "string_list") {
        const list = text
          .split(/\n/)
          .map((x) => x.trim())
          .filter(Boolean);
        if (JSON.stringify(list) !== JSON.stringify(values[name] || [])) out[name] = list;
        continue;
      }
      if (spec.type === "string") {
        // group overrides are sent whole: a kept override goes back as shown (a masked secret stays stored)
        if (inherit ? text !== "" : text !== (values[name] ?? "")) out[name] = text;
        continue;
      }
      if (text === "") {
        if (!inherit) errors[name] = "Enter a number.";
        continue;
      }
      const n = Number(text);
      if (!Number.isFinite(n)) errors[name] = "Enter a number.";
      else if (spec.type === "integer" && !Number.isInteger(n)) errors[name] = "Enter a whole number.";
      else if (spec.min !== null && spec.min !== undefined && n < spec.min)
        errors[name] = `Must be at least ${spec.min}.`;
      else if (spec.max !== null && spec.max !== undefined && n > spec.max)
        errors[name] = `Must be at most ${spec.max}.`;
      else if (inherit || n !== values[name]) out[name] = n;
    }
    return { values: out, errors };
  }

  return { nodes: entries.map((e) => e.node), read };
}

/** The schema, from /api/settings/schema or (older servers) from /api/settings. */
export async function loadSchema(api) {
  try {
    return (await api("GET", "/api/settings/schema")).schema;
  } catch (err) {
    if (!err.missingRoute) throw err;
    return (await api("GET", "/api/settings")).schema;
  }
}
