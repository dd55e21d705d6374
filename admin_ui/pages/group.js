// Group detail: endpoint URL, ready-to-paste SDK snippets, proxy keys (with a generator), edit, copy, delete.
import { api, proxyBase } from "../api.js";
import {
  clear,
  confirmDialog,
  copyText,
  errorBox,
  field,
  fmtTime,
  generateProxyKey,
  h,
  openDialog,
  showFieldErrors,
  toast,
} from "../dom.js";
import { loadSchema, settingsFields } from "../forms.js";
import { isAggregate, memberEditor, membersCard, usedByCard } from "../members.js";
import { navigate } from "../nav.js";
import { ruleFields, usesRules } from "../rules.js";
import { crumbs, groupTabs, unsavedChanges } from "../widgets.js";

function snippets(base, proxyKey, model) {
  return {
    "google-genai": `from google import genai
from google.genai import types

client = genai.Client(
    api_key="${proxyKey}",
    http_options=types.HttpOptions(base_url="${base}"),
)
print(client.models.generate_content(model="${model}", contents="Hello").text)`,
    "OpenAI SDK": `from openai import OpenAI

client = OpenAI(base_url="${base}/v1beta/openai/", api_key="${proxyKey}")
reply = client.chat.completions.create(
    model="${model}", messages=[{"role": "user", "content": "Hello"}]
)
print(reply.choices[0].message.content)`,
    curl: `curl "${base}/v1beta/models/${model}:generateContent" \\
  -H "x-goog-api-key: ${proxyKey}" \\
  -H "Content-Type: application/json" \\
  -d '{"contents": [{"parts": [{"text": "Hello"}]}]}'`,
  };
}

function snippetTabs(code) {
  const names = Object.keys(code);
  const tabs = h("div", { class: "seg", role: "tablist", "aria-label": "Client" });
  const panel = h("div", { class: "code-panel", role: "tabpanel" });
  const select = (i) => {
    tabs.querySelectorAll("button").forEach((b, j) => {
      b.setAttribute("aria-selected", String(i === j));
      b.tabIndex = i === j ? 0 : -1;
    });
    const copy = h("button", { type: "button", class: "btn small copy" }, "Copy");
    copy.addEventListener("click", () => copyText(code[names[i]], copy));
    clear(panel).append(copy, h("pre", {}, h("code", {}, code[names[i]])));
  };
  names.forEach((n, i) => {
    const b = h("button", { type: "button", role: "tab", onclick: () => select(i) }, n);
    b.addEventListener("keydown", (e) => {
      const d = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
      if (!d) return;
      const next = (i + d + names.length) % names.length;
      select(next);
      tabs.children[next].focus();
    });
    tabs.append(b);
  });
  select(0);
  return h("div", {}, tabs, panel);
}

/** A group's proxy_url as the rules card shows it: masked URL, "direct" (no proxy), or the system's. */
const egressText = (value) =>
  value === "direct"
    ? "direct (no proxy, whatever the system setting)"
    : value || h("span", { class: "muted" }, "system setting (empty: direct)");

const maskProxyKey = (k) => (k.length > 10 ? k.slice(0, 5) + "…" + k.slice(-4) : "••••");

export async function render(main, { params: [name] }) {
  let group;
  try {
    group = await api("GET", "/api/groups/" + encodeURIComponent(name));
  } catch (err) {
    main.append(h("h1", {}, name), errorBox(err), h("a", { href: "#/groups", class: "btn" }, "Back to groups"));
    return;
  }
  const base = `${proxyBase()}/proxy/${group.name}`;
  const c = group.key_counts;
  const aggregate = isAggregate(group);
  let allGroups = [];
  if (aggregate) {
    try {
      ({ groups: allGroups } = await api("GET", "/api/groups"));
    } catch (err) {
      toast(err.message, "error");
    }
  }
  const endpoint = h("code", { class: "endpoint", "data-testid": "endpoint" }, base);
  const copyEndpoint = h("button", { type: "button", class: "btn small" }, "Copy URL");
  copyEndpoint.addEventListener("click", () => copyText(base, copyEndpoint));

  // Proxy keys: shown masked; the generator makes one with crypto.getRandomValues and adds it on request.
  const keysList = h("ul", { class: "plain proxy-keys" });
  const renderProxyKeys = () => {
    clear(keysList);
    if (!group.proxy_keys.length)
      keysList.append(
        h("li", { class: "muted" }, "No proxy keys: only the global proxy keys (Settings) can use this group."),
      );
    group.proxy_keys.forEach((k) => {
      const copy = h("button", { type: "button", class: "btn small" }, "Copy");
      copy.addEventListener("click", () => copyText(k, copy));
      const remove = h(
        "button",
        { type: "button", class: "btn small danger ghost", "aria-label": "Remove proxy key " + maskProxyKey(k) },
        "Remove",
      );
      remove.addEventListener("click", async () => {
        if (
          !(await confirmDialog(
            "Remove proxy key?",
            `Clients using ${maskProxyKey(k)} will get 401 INVALID_PROXY_KEY.`,
            "Remove",
          ))
        )
          return;
        await saveProxyKeys(group.proxy_keys.filter((x) => x !== k));
      });
      keysList.append(h("li", {}, h("code", {}, maskProxyKey(k)), copy, remove));
    });
  };
  const generated = h("input", {
    class: "mono",
    readonly: true,
    "aria-label": "Generated proxy key",
    name: "generated_key",
    value: "",
  });
  const genButton = h("button", { type: "button", class: "btn" }, "Generate key");
  const addButton = h("button", { type: "button", class: "btn primary", disabled: true }, "Add to group");
  genButton.addEventListener("click", () => {
    generated.value = generateProxyKey();
    addButton.disabled = false;
    generated.select();
  });
  addButton.addEventListener("click", async () => {
    const key = generated.value;
    if (!key) return;
    if (await saveProxyKeys([...group.proxy_keys, key])) {
      addButton.disabled = true;
      copyText(key);
    }
  });
  async function saveProxyKeys(keys) {
    try {
      group = await api("PUT", "/api/groups/" + encodeURIComponent(group.name), { body: { proxy_keys: keys } });
      renderProxyKeys();
      renderSnippets();
      toast("Proxy keys saved");
      return true;
    } catch (err) {
      toast(err.message, "error");
      return false;
    }
  }

  const snippetBox = h("div", {});
  const renderSnippets = () =>
    clear(snippetBox).append(snippetTabs(snippets(base, group.proxy_keys[0] || "YOUR_PROXY_KEY", group.test_model)));

  const editButton = h(
    "button",
    {
      type: "button",
      class: "btn",
      onclick: () => editDialog(group, (g) => navigate("/groups/" + encodeURIComponent(g.name)), allGroups),
    },
    "Edit",
  );
  const copyButton = h("button", { type: "button", class: "btn", onclick: () => copyDialog(group) }, "Copy group");
  const deleteButton = h("button", { type: "button", class: "btn danger" }, "Delete group");
  deleteButton.addEventListener("click", async () => {
    const usedBy = group.used_by || [];
    const ok = await confirmDialog(
      `Delete group ${group.name}?`,
      aggregate
        ? "Its members and their keys stay; clients of this aggregate's endpoint get 401."
        : `Its ${c.total} keys and their stored secrets are deleted too. This cannot be undone.` +
            (usedBy.length ? ` It is also removed from the aggregate groups ${usedBy.join(", ")}.` : ""),
    );
    if (!ok) return;
    try {
      // the dialog named the aggregates that use it: removing it from them is what the operator confirmed
      const force = usedBy.length ? "?force=true" : "";
      const r = await api("DELETE", "/api/groups/" + encodeURIComponent(group.name) + force);
      toast(`Deleted ${r.deleted} and ${r.keys_deleted} keys`);
      navigate("/groups");
    } catch (err) {
      toast(err.message, "error");
    }
  });

  const overrides = Object.entries(group.settings || {});
  main.append(
    h(
      "div",
      { class: "page-head" },
      h("div", {}, crumbs(h("a", { href: "#/groups" }, "Groups")), h("h1", {}, group.display_name || group.name)),
      h("div", { class: "toolbar" }, editButton, copyButton, deleteButton),
    ),
    ...(aggregate ? [] : [groupTabs(group.name, "overview")]),
    h("p", { class: "muted", hidden: !group.description }, group.description),
    ...(aggregate ? [membersCard(group, allGroups)] : []),
    h(
      "section",
      { class: "stats", "aria-label": "Keys", hidden: aggregate },
      ["active", "cooling", "invalid", "total"].map((k) =>
        h(
          "a",
          {
            class:
              "stat link " +
              (k === "active" ? "good" : k === "invalid" && c[k] ? "bad" : k === "cooling" && c[k] ? "warn" : ""),
            href: `#/groups/${encodeURIComponent(group.name)}/keys` + (k === "total" ? "" : "?status=" + k),
          },
          h("p", { class: "stat-label" }, k === "total" ? "Keys" : k[0].toUpperCase() + k.slice(1)),
          h("p", { class: "stat-value" }, String(c[k])),
        ),
      ),
    ),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Endpoint"),
      h("div", { class: "copy-row" }, endpoint, copyEndpoint),
      h(
        "p",
        { class: "muted small" },
        "Point any Gemini client here with a proxy key; every path (v1, v1beta, upload, openai) passes through.",
      ),
    ),
    h("section", { class: "card" }, h("h2", {}, "Use it"), snippetBox),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Proxy keys"),
      keysList,
      h("div", { class: "copy-row" }, generated, genButton, addButton),
    ),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Configuration"),
      h(
        "dl",
        { class: "props" },
        h("dt", {}, aggregate ? "Type" : "Upstreams"),
        h(
          "dd",
          {},
          aggregate
            ? "Aggregate: its members' upstreams serve it"
            : group.upstreams.map((u) => h("div", { class: "mono small" }, `${u.url} (weight ${u.weight})`)),
        ),
        h("dt", {}, "Test model"),
        h("dd", {}, group.test_model),
        h("dt", {}, "Setting overrides"),
        h(
          "dd",
          {},
          overrides.length
            ? overrides.map(([k, v]) => h("div", { class: "mono small" }, `${k} = ${JSON.stringify(v)}`))
            : h("span", { class: "muted" }, "none (system settings apply)"),
        ),
        h("dt", {}, "Created"),
        h("dd", {}, fmtTime(group.created_at)),
      ),
    ),
    ...(aggregate ? [] : [rulesCard(group), usedByCard(group)]),
  );
  renderProxyKeys();
  renderSnippets();
}

/** The group's request rules, read-only (edited in the Edit dialog). */
function rulesCard(group) {
  const redirects = Object.entries(group.model_redirect_rules || {});
  const overrides = group.param_overrides || {};
  const headers = group.header_rules || [];
  const none = (text) => h("span", { class: "muted" }, text);
  return h(
    "section",
    { class: "card", "aria-label": "Routing rules", dataset: { testid: "rules-card" } },
    h("h2", {}, "Routing rules"),
    usesRules(group)
      ? null
      : h("p", { class: "muted small" }, "None: requests go upstream as clients send them. Add rules with Edit."),
    h(
      "dl",
      { class: "props" },
      h("dt", {}, "Model redirects"),
      h(
        "dd",
        { dataset: { testid: "redirects" } },
        redirects.length
          ? redirects.map(([from, to]) => h("div", { class: "mono small" }, `${from} → ${to}`))
          : none("none"),
        group.model_redirect_strict ? h("div", { class: "chip warn" }, "strict: other models refused") : null,
      ),
      h("dt", {}, "Parameter overrides"),
      h(
        "dd",
        {},
        Object.keys(overrides).length
          ? h("pre", { class: "mono small" }, JSON.stringify(overrides, null, 2))
          : none("none"),
      ),
      h("dt", {}, "Header rules"),
      h(
        "dd",
        { dataset: { testid: "header-rules" } },
        headers.length
          ? headers.map((r) =>
              h("div", { class: "mono small" }, r.action === "remove" ? `remove ${r.key}` : `${r.key}: ${r.value}`),
            )
          : none("none"),
      ),
      h("dt", {}, "Egress proxy"),
      h("dd", { class: "mono small" }, egressText(group.settings?.proxy_url)),
    ),
  );
}

async function editDialog(group, done, allGroups = []) {
  const aggregate = isAggregate(group);
  const members = aggregate ? memberEditor(allGroups, group.sub_groups, group.name) : null;
  const display = h("input", { name: "display_name", value: group.display_name });
  const description = h("textarea", { name: "description", rows: 2 }, group.description);
  const upstreams = h(
    "textarea",
    { name: "upstreams", rows: 3, class: "mono", spellcheck: "false" },
    group.upstreams.map((u) => `${u.url} ${u.weight}`).join("\n"),
  );
  const model = h("input", { name: "test_model", value: group.test_model });
  const error = h("div", { class: "alert error", role: "alert", hidden: true });
  let schema = [];
  let system = {};
  try {
    [schema, { settings: system }] = await Promise.all([loadSchema(api), api("GET", "/api/settings")]);
  } catch (err) {
    toast(err.message, "error");
  }
  const overrides = settingsFields(
    schema.filter((s) => s.group_overridable),
    group.settings || {},
    { inherit: true, inherited: system },
  );
  const rules = ruleFields(group);
  const submit = h("button", { type: "submit", class: "btn primary" }, "Save");
  const form = h(
    "form",
    { class: "form", novalidate: true },
    field("Display name", display),
    field("Description", description),
    aggregate
      ? field("Members", members.node, {
          hint: "Standard groups and their weights (0–1000, 0 = paused); traffic is shared in proportion.",
          name: "sub_groups",
        })
      : field("Upstreams", upstreams, { hint: "One per line: URL and optional weight (1–1000)." }),
    field("Test model", model),
    aggregate // an aggregate's members apply their own rules
      ? null
      : h(
          "details",
          { class: "rules-details", open: usesRules(group) },
          h("summary", {}, "Routing rules (redirects, overrides, headers)"),
          rules.node,
        ),
    h(
      "details",
      {},
      h("summary", {}, "Setting overrides (empty = system value)"),
      h("div", { class: "settings-grid" }, overrides.nodes),
    ),
    error,
    h("div", { class: "dialog-actions" }, submit),
  );
  const changes = unsavedChanges(form, "This group");
  const dialog = openDialog("Edit " + group.name, form, { wide: true, guard: changes.question });
  display.focus();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    const ups = upstreams.value
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean)
      .map((l) => {
        const [url, weight] = l.split(/\s+/);
        return { url, weight: weight ? Number(weight) : 1 };
      });
    const { values, errors } = overrides.read();
    const { values: ruleValues, errors: ruleErrors } = aggregate ? { values: {}, errors: {} } : rules.read();
    Object.assign(errors, ruleErrors);
    if (Object.keys(ruleErrors).length) rules.node.closest("details").open = true;
    if (!ups.length && !aggregate) errors.upstreams = "Give at least one upstream URL.";
    const picked = aggregate ? members.read() : { value: [], errors: {} };
    Object.assign(errors, picked.errors);
    if (Object.keys(errors).length) return showFieldErrors(form, errors);
    showFieldErrors(form, {});
    try {
      const g = await api("PUT", "/api/groups/" + encodeURIComponent(group.name), {
        body: {
          display_name: display.value,
          description: description.value,
          ...(aggregate ? { sub_groups: picked.value } : { upstreams: ups }),
          test_model: model.value,
          settings: values,
          ...ruleValues,
        },
      });
      dialog.close();
      toast("Group saved");
      done(g);
    } catch (err) {
      showFieldErrors(form, err.fields);
      error.textContent =
        err.message +
        (err.fields && Object.keys(err.fields).length
          ? ": " +
            Object.entries(err.fields)
              .map(([k, v]) => `${k} ${v}`)
              .join("; ")
          : "");
      error.hidden = false;
    }
  });
}

function copyDialog(group) {
  const name = h("input", { name: "name", required: true, value: group.name + "-copy" });
  const withKeys = h("input", { type: "checkbox", name: "with_keys", checked: true });
  const error = h("div", { class: "alert error", role: "alert", hidden: true });
  const form = h(
    "form",
    { class: "form", novalidate: true },
    field("New name", name),
    h("div", { class: "field check" }, h("label", {}, withKeys, " Copy the keys too")),
    h("p", { class: "muted small" }, "Proxy keys are not copied; generate new ones for the copy."),
    error,
    h("div", { class: "dialog-actions" }, h("button", { type: "submit", class: "btn primary" }, "Copy")),
  );
  const dialog = openDialog("Copy " + group.name, form);
  name.select();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const g = await api("POST", `/api/groups/${encodeURIComponent(group.name)}/copy`, {
        body: { name: name.value, with_keys: withKeys.checked },
      });
      dialog.close();
      toast(`Copied to ${g.name}`);
      navigate("/groups/" + encodeURIComponent(g.name));
    } catch (err) {
      showFieldErrors(form, err.fields);
      error.textContent = err.missingRoute
        ? "Copying groups is not available on this server yet (404 ROUTE_NOT_FOUND)."
        : err.message;
      error.hidden = false;
    }
  });
}
