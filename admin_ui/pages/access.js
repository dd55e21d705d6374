// Access keys: named client keys with group/model scopes, limits and usage. Create (the secret is shown once, with
// a copy button), edit limits, disable, rotate, delete with confirmation, a 24 h chart per key, and the hint to move
// legacy proxy keys to access keys.
import { api } from "../api.js";
import { requestsChart } from "../charts.js";
import {
  chip,
  clear,
  confirmDialog,
  copyText,
  emptyState,
  errorBox,
  field,
  fmtAgo,
  fmtCompact,
  fmtInt,
  fmtTime,
  h,
  missingNotice,
  openDialog,
  showFieldErrors,
  toast,
} from "../dom.js";

const LIMITS = [
  ["rpm_limit", "Requests per minute"],
  ["daily_request_limit", "Requests per day"],
  ["daily_token_limit", "Tokens per day"],
];

export async function render(main) {
  const create = h(
    "button",
    { type: "button", class: "btn primary", onclick: () => editDialog(null, load) },
    "New access key",
  );
  const hint = h("div", {});
  const list = h("section", { "aria-label": "Access keys" });
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Access keys"), h("div", { class: "toolbar" }, create)),
    h(
      "p",
      { class: "muted" },
      "Give each client its own key: it is shown once, stored only as a digest, and can be limited to groups and " +
        "models, capped per minute and per day, disabled, rotated or deleted without touching other clients.",
    ),
    hint,
    list,
  );

  async function load() {
    let data;
    try {
      data = await api("GET", "/api/access-keys");
    } catch (err) {
      clear(hint);
      return clear(list).append(err.missingRoute ? missingNotice("Access keys (/api/access-keys)") : errorBox(err));
    }
    drawHint(hint, data.legacy || [], load);
    clear(list);
    if (!data.access_keys.length) {
      return list.append(
        emptyState(
          "No access keys yet",
          "Clients present an access key exactly like a proxy key (x-goog-api-key, Bearer, X-Api-Key or ?key=).",
          h("button", { type: "button", class: "btn primary", onclick: () => editDialog(null, load) }, "Create one"),
        ),
      );
    }
    list.append(
      h(
        "div",
        { class: "table-wrap card flush" },
        h(
          "table",
          { class: "access-table" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Name", "Key", "Status", "Scope", "Limits", "Today", "7 days", "30 days", "Last used"].map((t) =>
                h("th", { scope: "col" }, t),
              ),
              h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
            ),
          ),
          h(
            "tbody",
            {},
            data.access_keys.map((k) => row(k, load)),
          ),
        ),
      ),
      h(
        "p",
        { class: "muted small" },
        `Days start at midnight ${data.limits_timezone || "UTC"} (the limits_timezone setting). Legacy proxy keys: `,
        usageText(data.anonymous?.today),
        " today.",
      ),
    );
  }
  await load();
}

function usageText(u) {
  if (!u) return "–";
  const parts = [`${fmtInt(u.requests)} req`];
  if (u.tokens) parts.push(`${fmtCompact(u.tokens)} tok`);
  if (u.refused) parts.push(`${fmtInt(u.refused)} refused`);
  return parts.join(" · ");
}

function row(k, reload) {
  const limits = LIMITS.filter(([f]) => k[f]).map(([f, label]) =>
    h("div", { class: "small" }, `${label}: ${fmtInt(k[f])}`),
  );
  const scope = [
    h("div", { class: "small" }, "Groups: ", k.groups.join(", ")),
    h("div", { class: "small" }, "Models: ", k.models.length ? k.models.join(", ") : "all"),
  ];
  const toggle = async () => {
    try {
      await api("PUT", "/api/access-keys/" + encodeURIComponent(k.id), { body: { enabled: !k.enabled } });
      toast(`${k.name} ${k.enabled ? "disabled" : "enabled"}`);
      await reload();
    } catch (err) {
      toast(err.message, "error");
    }
  };
  const rotate = async () => {
    const ok = await confirmDialog(
      `Rotate ${k.name}?`,
      "A new secret replaces the current one, which stops working at once (on every instance within a few " +
        "seconds). Limits and usage stay.",
      "Rotate",
    );
    if (!ok) return;
    try {
      const out = await api("POST", `/api/access-keys/${encodeURIComponent(k.id)}/rotate`);
      reveal(out.key, out.access_key, "rotated");
      await reload();
    } catch (err) {
      toast(err.message, "error");
    }
  };
  const remove = async () => {
    const ok = await confirmDialog(
      `Delete ${k.name}?`,
      "Clients using this key get 401 from now on. Its past usage stays in the logs and statistics.",
    );
    if (!ok) return;
    try {
      await api("DELETE", "/api/access-keys/" + encodeURIComponent(k.id));
      toast(`${k.name} deleted`);
      await reload();
    } catch (err) {
      toast(err.message, "error");
    }
  };
  return h(
    "tr",
    { dataset: { accessKey: k.id } },
    h("th", { scope: "row" }, k.name, k.notes ? h("div", { class: "muted small" }, k.notes) : null),
    h("td", {}, h("div", { class: "mono small" }, k.key), h("div", { class: "muted small mono" }, k.id)),
    h(
      "td",
      {},
      chip(k.status === "active" ? "active" : k.status === "expired" ? "cooling" : "invalid"),
      k.status === "active" ? null : h("div", { class: "small" }, k.status),
      k.expires_at ? h("div", { class: "muted small" }, "expires " + fmtTime(k.expires_at)) : null,
    ),
    h("td", {}, scope),
    h("td", {}, limits.length ? limits : h("span", { class: "muted small" }, "none")),
    h("td", { class: "small" }, usageText(k.usage.today)),
    h("td", { class: "small" }, usageText(k.usage["7d"])),
    h("td", { class: "small" }, usageText(k.usage["30d"])),
    h("td", { class: "small" }, fmtAgo(k.usage.last_used_at)),
    h(
      "td",
      { class: "actions" },
      h("button", { type: "button", class: "btn small", onclick: () => usageDialog(k) }, "Usage"),
      h("button", { type: "button", class: "btn small", onclick: () => editDialog(k, reload) }, "Edit"),
      h("button", { type: "button", class: "btn small", onclick: toggle }, k.enabled ? "Disable" : "Enable"),
      h("button", { type: "button", class: "btn small", onclick: rotate }, "Rotate"),
      h("button", { type: "button", class: "btn small danger", onclick: remove }, "Delete"),
    ),
  );
}

/** Where legacy proxy keys are still configured: offer moving them (same secrets, so clients keep working). */
function drawHint(box, legacy, reload) {
  clear(box);
  if (!legacy.length) return;
  const move = async (group) => {
    const where = group === null ? "the global proxy keys" : `the proxy keys of group ${group}`;
    const ok = await confirmDialog(
      "Move to access keys?",
      `Each of ${where} becomes an access key with the same secret (clients keep working, now named and ` +
        "limitable), and is removed from the legacy list.",
      "Move",
    );
    if (!ok) return;
    try {
      const out = await api("POST", "/api/access-keys/adopt", { body: { group } });
      toast(`${out.adopted.length} legacy proxy key(s) moved to access keys`);
      await reload();
    } catch (err) {
      toast(err.message, "error");
    }
  };
  box.append(
    h(
      "div",
      { class: "alert warn", role: "status" },
      h(
        "p",
        {},
        "Legacy proxy keys are still in use. They have no name, no limits and no usage of their own " +
          "(they show as “anonymous”). Move them to access keys:",
      ),
      h(
        "ul",
        {},
        legacy.map((l) =>
          h(
            "li",
            {},
            l.group === null ? "Global proxy keys" : `Group ${l.group}`,
            ` (${l.count}) `,
            h("button", { type: "button", class: "btn small", onclick: () => move(l.group) }, "Move to access keys"),
          ),
        ),
      ),
    ),
  );
}

/** The create (k null) and edit dialog. */
function editDialog(k, reload) {
  const input = (name, attrs = {}) => h("input", { name, ...attrs });
  const name = input("name", { value: k?.name || "", required: true, maxlength: 100 });
  const groups = input("groups", { value: (k?.groups || ["*"]).join(", "), placeholder: "* or group names" });
  const models = input("models", { value: (k?.models || []).join(", "), placeholder: "empty: all; gemini-2.5-*" });
  const limits = LIMITS.map(([f]) => input(f, { type: "number", min: 0, step: 1, value: String(k?.[f] ?? 0) }));
  const expires = input("expires_at", { type: "datetime-local", value: toLocalInput(k?.expires_at) });
  const notes = h("textarea", { name: "notes", rows: 2, maxlength: 500 }, k?.notes || "");
  const list = (text) =>
    text
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean);
  const form = h(
    "form",
    { class: "form" },
    field("Name", name),
    field("Groups", groups, { hint: "Comma-separated group names, or * for every group." }),
    field("Models", models, { hint: "Comma-separated model names or prefix* globs; empty allows every model." }),
    LIMITS.map(([, label], i) => field(label, limits[i], { hint: "0: no limit." })),
    field("Expires", expires, { hint: "Empty: never." }),
    field("Notes", notes),
  );
  const save = h("button", { type: "submit", class: "btn primary" }, k ? "Save" : "Create");
  form.append(h("div", { class: "dialog-actions" }, save));
  const dialog = openDialog(k ? `Edit ${k.name}` : "New access key", form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      name: name.value.trim(),
      groups: list(groups.value),
      models: list(models.value),
      expires_at: expires.value ? Math.floor(new Date(expires.value).getTime() / 1000) : null,
      notes: notes.value,
    };
    LIMITS.forEach(([f], i) => {
      body[f] = Number(limits[i].value || 0);
    });
    save.disabled = true;
    try {
      const out = k
        ? await api("PUT", "/api/access-keys/" + encodeURIComponent(k.id), { body })
        : await api("POST", "/api/access-keys", { body });
      dialog.close();
      if (out.key) reveal(out.key, out.access_key, "created");
      else toast(`${out.access_key.name} saved`);
      await reload();
    } catch (err) {
      const placed = showFieldErrors(form, err.fields);
      if (!placed.length) toast(err.message, "error");
    } finally {
      save.disabled = false;
    }
  });
  name.focus();
}

/** The one-time reveal of a new secret, with a copy button. */
function reveal(secret, key, what) {
  const value = h("input", { class: "mono", readonly: true, value: secret, "aria-label": "The new access key" });
  const copy = h(
    "button",
    { type: "button", class: "btn primary", onclick: (e) => copyText(secret, e.currentTarget) },
    "Copy",
  );
  openDialog(`Access key ${what}: ${key.name}`, [
    h(
      "p",
      { class: "alert warn" },
      "Copy it now: this is the only time it is shown. gptload keeps only a digest of it.",
    ),
    h("div", { class: "copy-row" }, value, copy),
    h(
      "p",
      { class: "muted small" },
      "Clients send it like a proxy key: x-goog-api-key, Authorization: Bearer, X-Api-Key or ?key=.",
    ),
  ]);
  value.select();
}

async function usageDialog(k) {
  const body = h("div", {}, h("p", { class: "loading" }, "Loading…"));
  const dialog = openDialog(`Usage of ${k.name} (24 h)`, body, { wide: true });
  try {
    const { series } = await api("GET", "/api/stats/hourly", { query: { access_key: k.id, hours: 24 } });
    const sum = (f) => series.reduce((a, p) => a + p[f], 0);
    clear(body).append(
      h(
        "p",
        {},
        `${fmtInt(sum("requests"))} requests, ${fmtInt(sum("failures"))} failed (${fmtInt(sum("refused"))} refused ` +
          `by its limits or scope), ${fmtInt(sum("total_tokens"))} tokens in the last 24 hours.`,
      ),
      requestsChart(series),
      h(
        "p",
        {},
        h(
          "a",
          { href: "#/logs?access_key=" + encodeURIComponent(k.id), onclick: () => dialog.close() },
          "Its request logs",
        ),
      ),
    );
  } catch (err) {
    clear(body).append(err.missingRoute ? missingNotice("Usage per access key") : errorBox(err));
  }
}

function toLocalInput(epoch) {
  if (!epoch) return "";
  const d = new Date(Number(epoch) * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
