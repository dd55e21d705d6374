// Groups list: key counts per group, create, reorder.
import { api } from "../api.js";
import {
  clear,
  copyText,
  emptyState,
  errorBox,
  field,
  generateProxyKey,
  h,
  missingNotice,
  openDialog,
  showFieldErrors,
  toast,
} from "../dom.js";
import { isAggregate, memberEditor } from "../members.js";
import { navigate } from "../nav.js";
import { ruleFields } from "../rules.js";
import { asCards, unsavedChanges } from "../widgets.js";

export const DEFAULT_UPSTREAM = "https://generativelanguage.googleapis.com";

export async function render(main) {
  const create = h("button", { type: "button", class: "btn primary", onclick: () => createDialog() }, "New group");
  const list = h("section", { "aria-label": "Groups" });
  main.append(h("div", { class: "page-head" }, h("h1", {}, "Groups"), h("div", { class: "toolbar" }, create)), list);

  async function load() {
    let groups;
    try {
      ({ groups } = await api("GET", "/api/groups"));
    } catch (err) {
      return clear(list).append(errorBox(err));
    }
    clear(list);
    if (!groups.length) {
      return list.append(
        emptyState(
          "No groups yet",
          "A group is a pool of Gemini keys behind one endpoint, with its own proxy keys.",
          h(
            "button",
            { type: "button", class: "btn primary", onclick: () => createDialog() },
            "Create your first group",
          ),
        ),
      );
    }
    const move = async (index, delta) => {
      const names = groups.map((g) => g.name);
      const [name] = names.splice(index, 1);
      names.splice(index + delta, 0, name);
      try {
        await api("PUT", "/api/groups-order", { body: { names } });
        await load();
        // Keep keyboard focus on the moved group (on the other arrow once it reached an end).
        const same = list.querySelector(`[data-move="${CSS.escape(name + ":" + delta)}"]`);
        (same && !same.disabled
          ? same
          : list.querySelector(`[data-move="${CSS.escape(name + ":" + -delta)}"]`)
        )?.focus();
      } catch (err) {
        if (err.missingRoute) list.prepend(missingNotice("Reordering groups (/api/groups-order)"));
        else toast(err.message, "error");
      }
    };
    const rows = groups.map((g, i) =>
      h(
        "tr",
        {},
        h(
          "th",
          { scope: "row", class: "card-title name-cell" },
          h("a", { href: "#/groups/" + encodeURIComponent(g.name) }, g.name),
          g.display_name ? h("div", { class: "muted small" }, g.display_name) : null,
        ),
        h("td", { class: "num" }, isAggregate(g) ? "–" : String(g.key_counts.total)),
        isAggregate(g)
          ? h(
              "td",
              {},
              h("span", { class: "chip" }, "aggregate"),
              " ",
              h("span", { class: "muted small" }, `${g.sub_groups.length} members`),
            )
          : h(
              "td",
              {},
              h(
                "div",
                { class: "chips" },
                ["active", "cooling", "invalid"].map((st) =>
                  g.key_counts[st] ? h("span", { class: "chip " + st }, `${g.key_counts[st]} ${st}`) : null,
                ),
                g.key_counts.total ? null : h("span", { class: "muted" }, "no keys"),
              ),
            ),
        h(
          "td",
          {},
          isAggregate(g)
            ? g.sub_groups.map((m) => h("div", { class: "small" }, `${m.name} (weight ${m.weight})`))
            : g.upstreams.map((u) => h("div", { class: "mono small" }, u.url)),
        ),
        h(
          "td",
          { class: "actions card-actions" },
          isAggregate(g)
            ? null
            : h("a", { class: "btn small", href: `#/groups/${encodeURIComponent(g.name)}/keys` }, "Keys"),
          h(
            "button",
            {
              type: "button",
              class: "btn small ghost",
              "aria-label": `Move ${g.name} up`,
              disabled: i === 0,
              dataset: { move: `${g.name}:-1` },
              onclick: () => move(i, -1),
            },
            "↑",
          ),
          h(
            "button",
            {
              type: "button",
              class: "btn small ghost",
              "aria-label": `Move ${g.name} down`,
              disabled: i === groups.length - 1,
              dataset: { move: `${g.name}:1` },
              onclick: () => move(i, 1),
            },
            "↓",
          ),
        ),
      ),
    );
    list.append(
      h(
        "div",
        { class: "table-wrap card flush" },
        asCards(
          h(
            "table",
            { class: "groups-table" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                h("th", { scope: "col" }, "Group"),
                h("th", { scope: "col", class: "num" }, "Keys"),
                h("th", { scope: "col" }, "Status"),
                h("th", { scope: "col" }, "Upstream"),
                h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
              ),
            ),
            h("tbody", {}, rows),
          ),
        ),
      ),
    );
  }
  await load();
}

/** The "New group" dialog; on success opens the new group's page. */
export function createDialog() {
  const kind = h(
    "select",
    { name: "group_type" },
    h("option", { value: "standard" }, "Standard: a pool of keys"),
    h("option", { value: "aggregate" }, "Aggregate: shares traffic between groups by weight"),
  );
  const membersSlot = h("div", { hidden: true });
  let members = null;
  const name = h("input", {
    name: "name",
    required: true,
    pattern: "[a-z0-9_-]{1,100}",
    autocomplete: "off",
    placeholder: "main",
  });
  const display = h("input", { name: "display_name", autocomplete: "off", placeholder: "Main pool" });
  const upstream = h("input", { name: "upstreams", type: "url", required: true, value: DEFAULT_UPSTREAM });
  const proxyKey = h("input", {
    name: "proxy_keys",
    class: "mono",
    value: generateProxyKey(),
    minlength: 8,
    maxlength: 256,
    autocomplete: "off",
  });
  const model = h("input", { name: "test_model", value: "gemini-2.5-flash", autocomplete: "off" });
  const rules = ruleFields();
  const proxyUrl = h("input", {
    name: "proxy_url",
    class: "mono",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "empty: the system setting; direct: no proxy",
  });
  const error = h("div", { class: "alert error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "btn primary" }, "Create group");
  const form = h(
    "form",
    { class: "form", novalidate: true },
    field("Name", name, { hint: "Lower-case letters, digits, - and _. Used in the URL: /proxy/<name>." }),
    field("Display name", display),
    field("Type", kind),
    membersSlot,
    field("Upstream URL", upstream),
    h(
      "div",
      { class: "field-row" },
      field("Proxy key", proxyKey, { hint: "Your clients use this instead of a real key." }),
      h("button", { type: "button", class: "btn", onclick: () => (proxyKey.value = generateProxyKey()) }, "Generate"),
      h(
        "button",
        {
          type: "button",
          class: "btn",
          "aria-label": "Copy the proxy key",
          onclick: (e) => copyText(proxyKey.value, e.currentTarget),
        },
        "Copy",
      ),
    ),
    field("Test model", model, { hint: "Model used when validating keys." }),
    h(
      "details",
      { class: "rules-details" },
      h("summary", {}, "Routing rules and egress proxy (optional)"),
      rules.node,
      field("Egress proxy URL", proxyUrl, {
        hint:
          "http://user:pass@host:port or socks5://…; upstream traffic of this group goes through it. " +
          "Empty: the system setting's proxy; direct: no proxy, even when the system setting names one.",
        name: "settings",
      }),
    ),
    error,
    h("div", { class: "dialog-actions" }, submit),
  );
  const changes = unsavedChanges(form, "The new group");
  const dialog = openDialog("New group", form, { guard: changes.question });
  name.focus();
  const upstreamField = upstream.closest(".field");
  const modelField = model.closest(".field");
  kind.addEventListener("change", async () => {
    const aggregate = kind.value === "aggregate";
    upstreamField.hidden = aggregate;
    modelField.hidden = aggregate;
    rules.node.closest("details").hidden = aggregate; // an aggregate's members apply their own rules
    membersSlot.hidden = !aggregate;
    if (aggregate && !members) {
      let groups = [];
      try {
        ({ groups } = await api("GET", "/api/groups"));
      } catch (err) {
        toast(err.message, "error");
      }
      const first = groups.find((g) => !isAggregate(g));
      members = memberEditor(groups, first ? [{ name: first.name, weight: 1 }] : []);
      membersSlot.append(
        field("Members", members.node, {
          hint: "Standard groups and their weights (0–1000, 0 = paused); traffic is shared in proportion.",
          name: "sub_groups",
        }),
      );
    }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    const local = {};
    if (!/^[a-z0-9_-]{1,100}$/.test(name.value)) local.name = "Use 1–100 of a-z, 0-9, - and _.";
    const aggregate = kind.value === "aggregate";
    if (!aggregate && !/^https?:\/\/[^/]+/.test(upstream.value.trim())) local.upstreams = "Enter an http(s) URL.";
    const picked = aggregate && members ? members.read() : { value: [], errors: {} };
    Object.assign(local, picked.errors);
    const pk = proxyKey.value.trim();
    if (pk && (pk.length < 8 || pk.length > 256)) local.proxy_keys = "8 to 256 characters.";
    const { values: ruleValues, errors: ruleErrors } = aggregate ? { values: {}, errors: {} } : rules.read();
    Object.assign(local, ruleErrors);
    const egress = aggregate ? "" : proxyUrl.value.trim();
    // "direct" (no proxy) as the hint says; schemes in any case, as the server takes them (proxyurl.check)
    if (egress && !/^direct$|^(https?|socks5h?):\/\/\S+:\d+\/?$/i.test(egress))
      local.settings = "Enter scheme://[user:pass@]host:port (http, https, socks5, socks5h).";
    if (Object.keys(ruleErrors).length || local.settings) rules.node.closest("details").open = true;
    if (Object.keys(local).length) return showFieldErrors(form, local);
    showFieldErrors(form, {});
    submit.disabled = true;
    try {
      const group = await api("POST", "/api/groups", {
        body: {
          name: name.value,
          display_name: display.value.trim(),
          ...(aggregate
            ? { group_type: "aggregate", sub_groups: picked.value }
            : { upstreams: [{ url: upstream.value.trim(), weight: 1 }] }),
          proxy_keys: pk ? [pk] : [],
          test_model: model.value.trim() || "gemini-2.5-flash",
          ...ruleValues,
          ...(egress ? { settings: { proxy_url: egress } } : {}),
        },
      });
      dialog.close();
      toast(`Group ${group.name} created`);
      navigate("/groups/" + encodeURIComponent(group.name));
    } catch (err) {
      const placed = showFieldErrors(form, err.fields);
      if (!placed.length || err.code !== "VALIDATION_FAILED") {
        error.textContent = err.message;
        error.hidden = false;
      }
    } finally {
      submit.disabled = false;
    }
  });
}
