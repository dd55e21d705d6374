// Request logs: filters (kept in the URL; a collapsible panel), a paged table (cards on narrow screens) whose
// attempts of one request are grouped, a detail drawer listing the request's attempts, CSV export.
import { api, download } from "../api.js";
import { emptyState, errorBox, field, fmtInt, fmtTime, h, missingNotice, openDialog, toast } from "../dom.js";
import { navigate } from "../nav.js";
import { asCards, copyButton } from "../widgets.js";

const PAGE_SIZE = 50;
const FILTERS = ["group", "model", "status_code", "success", "stream", "q", "since", "until", "key_id", "access_key"];

function toLocalInput(epoch) {
  if (!epoch) return "";
  const d = new Date(Number(epoch) * 1000);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

export async function render(main, { query }) {
  const current = Object.fromEntries(FILTERS.map((f) => [f, query.get(f) || ""]));
  const page = Math.max(1, Number(query.get("page")) || 1);

  const group = h("select", { name: "group" }, h("option", { value: "" }, "All groups"));
  const modelsSeen = h("datalist", { id: "log-models" });
  const model = h("input", {
    name: "model",
    value: current.model,
    placeholder: "gemini-2.5",
    list: "log-models",
    autocomplete: "off",
  });
  const status = h("input", {
    name: "status_code",
    type: "number",
    min: 100,
    max: 599,
    value: current.status_code,
    placeholder: "429",
  });
  const success = h(
    "select",
    { name: "success" },
    [
      ["", "Any"],
      ["true", "Succeeded"],
      ["false", "Failed"],
    ].map(([v, t]) => h("option", { value: v, selected: v === current.success }, t)),
  );
  const stream = h(
    "select",
    { name: "stream" },
    [
      ["", "Any"],
      ["true", "Streamed"],
      ["false", "Not streamed"],
    ].map(([v, t]) => h("option", { value: v, selected: v === current.stream }, t)),
  );
  const q = h("input", { name: "q", type: "search", value: current.q, placeholder: "error text" });
  const accessKey = h("input", { name: "access_key", value: current.access_key, placeholder: "ak_… or anonymous" });
  const since = h("input", { name: "since", type: "datetime-local", value: toLocalInput(current.since) });
  const until = h("input", { name: "until", type: "datetime-local", value: toLocalInput(current.until) });
  const form = h(
    "form",
    { class: "filter-form", "aria-label": "Log filters" },
    field("Group", group),
    field("Model", model, { hint: "Matches the start of the name" }),
    modelsSeen,
    field("Status code", status),
    field("Result", success),
    field("Stream", stream),
    field("Error contains", q),
    field("Access key id", accessKey),
    field("Since", since),
    field("Until", until),
    h(
      "div",
      { class: "filter-actions" },
      h("button", { type: "submit", class: "btn primary" }, "Apply"),
      h("button", { type: "button", class: "btn ghost", onclick: () => navigate("/logs") }, "Reset"),
    ),
  );
  const exportBtn = h("button", { type: "button", class: "btn" }, "Export CSV");
  const refresh = h(
    "button",
    { type: "button", class: "btn", onclick: () => navigate(location.hash.slice(1)) },
    "Refresh",
  );
  const tableBox = h("div", {});
  const pager = h("div", { class: "pager" });
  const active = FILTERS.filter((f) => current[f]).length;
  // The filter panel: open on wide screens, folded under 600 px (it would push the rows off the first screen)
  const panel = h(
    "details",
    { class: "card filter-panel", open: !window.matchMedia("(max-width: 600px)").matches },
    h("summary", {}, "Filters", active ? h("span", { class: "chip" }, `${active} active`) : null),
    form,
  );
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Logs"), h("div", { class: "toolbar" }, refresh, exportBtn)),
    panel,
    tableBox,
    pager,
  );

  const filters = () => {
    const toEpoch = (v) => (v ? String(Math.floor(new Date(v).getTime() / 1000)) : "");
    return {
      group: group.value,
      model: model.value.trim(),
      status_code: status.value,
      success: success.value,
      stream: stream.value,
      q: q.value.trim(),
      since: toEpoch(since.value),
      until: toEpoch(until.value),
      key_id: current.key_id,
      access_key: accessKey.value.trim(),
    };
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const params = new URLSearchParams(Object.entries(filters()).filter(([, v]) => v));
    navigate("/logs" + (params.toString() ? "?" + params : ""));
  });
  exportBtn.addEventListener("click", async () => {
    try {
      await download("/api/logs/export.csv", "gptload-logs.csv", filters());
      toast("CSV downloaded");
    } catch (err) {
      toast(err.missingRoute ? "CSV export is not available on this server yet." : err.message, "error");
    }
  });

  api("GET", "/api/groups")
    .then(({ groups }) => {
      for (const g of groups) group.append(h("option", { value: g.name, selected: g.name === current.group }, g.name));
    })
    .catch(() => {});

  let data;
  try {
    data = await api("GET", "/api/logs", { query: { ...current, page, page_size: PAGE_SIZE } });
  } catch (err) {
    tableBox.append(err.missingRoute ? missingNotice("Request logs (/api/logs)") : errorBox(err));
    return;
  }
  if (!data.logs.length) {
    const filtered = FILTERS.some((f) => current[f]);
    tableBox.append(
      emptyState(
        filtered ? "No log entries match these filters" : "No requests logged yet",
        filtered
          ? "Widen the filters or reset them."
          : "Send a request through a group's endpoint and it shows up here.",
      ),
    );
    return;
  }
  const seen = new Set(data.logs.map((l) => l.model).filter(Boolean));
  for (const m of [...seen].sort()) modelsSeen.append(h("option", { value: m }));
  // attempts of one request on this page: the request's rows share a colour band and a request id
  const perRequest = new Map();
  for (const l of data.logs) perRequest.set(l.request_id, (perRequest.get(l.request_id) || 0) + 1);
  let band = 0;
  let lastRequest = null;
  const rows = data.logs.map((l) => {
    if (l.request_id !== lastRequest) band = 1 - band;
    lastRequest = l.request_id;
    const open = h(
      "button",
      { type: "button", class: "btn small ghost", "aria-label": `Details of request ${l.id}` },
      "Details",
    );
    open.addEventListener("click", () => drawer(l));
    const grouped = (perRequest.get(l.request_id) || 0) > 1;
    return h(
      "tr",
      {
        class: [l.success ? "" : "failed", grouped ? "grouped band-" + band : "", l.final ? "" : "retried"].join(" "),
        dataset: { logId: l.id, requestId: l.request_id || "" },
      },
      h("td", { class: "time-cell card-title" }, fmtTime(l.at)),
      h(
        "td",
        {
          class: "clip-cell group-cell",
          title: l.aggregate && l.aggregate !== l.group ? `${l.group} via ${l.aggregate}` : l.group,
        },
        h("span", { class: "clamp" }, l.group),
        l.aggregate && l.aggregate !== l.group ? h("div", { class: "muted small" }, "via " + l.aggregate) : null,
      ),
      h("td", { class: "mono nowrap" }, keyLink(l)),
      h(
        "td",
        { class: "clip-cell", title: l.model || undefined },
        h("span", { class: "clamp" }, l.model || "–"),
        l.requested_model && l.requested_model !== l.model
          ? h("div", { class: "muted small" }, "asked: " + l.requested_model)
          : null,
      ),
      h("td", { class: "mono path-cell", title: `${l.method || ""} ${l.path || ""}`.trim() }, l.path || "–"),
      h("td", {}, l.stream ? "yes" : "no"),
      h("td", {}, h("span", { class: "chip " + (l.success ? "active" : "invalid") }, String(l.status_code || "error"))),
      h("td", { class: "num" }, fmtInt(l.duration_ms) + " ms"),
      h("td", { class: "num" }, fmtInt(l.total_tokens)),
      h("td", { class: "nowrap" }, attemptCell(l)),
      h("td", { class: "error-cell", title: l.error || undefined }, l.error || ""),
      h("td", { class: "card-actions" }, open),
    );
  });
  tableBox.append(
    h(
      "div",
      { class: "table-wrap card flush" },
      asCards(
        h(
          "table",
          { class: "logs-table" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              [
                "Time",
                "Group",
                "Key",
                "Model",
                "Path",
                "Stream",
                "Status",
                "Duration",
                "Tokens",
                "Attempt",
                "Error",
              ].map((t) => h("th", { scope: "col", class: ["Duration", "Tokens"].includes(t) ? "num" : "" }, t)),
              h("th", { scope: "col", dataset: { label: "" } }, h("span", { class: "visually-hidden" }, "Details")),
            ),
          ),
          h("tbody", {}, rows),
        ),
      ),
    ),
  );
  const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
  const go = (p) => {
    const params = new URLSearchParams(Object.entries(current).filter(([, v]) => v));
    params.set("page", String(p));
    navigate("/logs?" + params);
  };
  if (pages > 1) {
    pager.append(
      h("button", { type: "button", class: "btn small", disabled: page <= 1, onclick: () => go(page - 1) }, "Previous"),
      h("span", {}, `Page ${page} of ${pages}`),
      h("button", { type: "button", class: "btn small", disabled: page >= pages, onclick: () => go(page + 1) }, "Next"),
    );
  }
  pager.append(h("span", { class: "muted small" }, `${fmtInt(data.total)} entries`));
}

/** The key of a row: its masked form, linking to the group's keys page searched for it. */
function keyLink(l) {
  if (!l.key) return "–";
  const href = `#/groups/${encodeURIComponent(l.group)}/keys?q=${encodeURIComponent(l.key)}`;
  return h("a", { href, title: `Key ${l.key_id} of ${l.group}` }, l.key);
}

/** "2 of request ab12…" with a copy button; a final row with earlier attempts says how many and opens them. */
function attemptCell(l) {
  const parts = [h("span", {}, l.attempt ? `#${l.attempt}` : "refused")];
  if (!l.final) parts.push(h("span", { class: "muted small" }, " retried"));
  if (l.final && l.attempt > 1) {
    parts.push(
      " ",
      h(
        "button",
        {
          type: "button",
          class: "btn small ghost",
          dataset: { earlier: String(l.attempt - 1) },
          onclick: () => drawer(l),
        },
        `${l.attempt - 1} earlier`,
      ),
    );
  }
  return h("span", { class: "attempt" }, parts);
}

function dd(value, copy) {
  const text = value === null || value === undefined || value === "" ? "–" : String(value);
  return h(
    "dd",
    { class: typeof value === "string" && value.length > 40 ? "mono small" : "" },
    text,
    copy && value ? [" ", copyButton(String(value), copy)] : null,
  );
}

async function drawer(row) {
  const props = h("dl", { class: "props" });
  const body = h("div", {});
  const add = (k, v, copy) => props.append(h("dt", {}, k), dd(v, copy));
  const dialog = openDialog(`Request ${row.request_id || row.id}`, h("div", {}, props, body), { drawer: true });
  let log = row;
  let attempts = [];
  try {
    ({ log, attempts = [] } = await api("GET", "/api/logs/" + encodeURIComponent(row.id)));
  } catch (err) {
    body.append(err.missingRoute ? missingNotice("Log details") : errorBox(err));
  }
  add("Time", fmtTime(log.at));
  add("Request id", log.request_id, "Copy request id");
  add("Log id", log.id, "Copy log id");
  add("Group", log.group);
  if (log.aggregate) add("Through aggregate", log.aggregate);
  props.append(h("dt", {}, "Key"), h("dd", {}, keyLink(log)));
  add("Key id", log.key_id, "Copy key id");
  add("Access key", log.access_key, "Copy access key id");
  add("Model", log.model);
  if (log.requested_model && log.requested_model !== log.model)
    add("Requested model (redirected)", log.requested_model);
  add("Request", `${log.method} ${log.path}`);
  add("Status", log.status_code);
  add("Result", log.success ? "succeeded" : "failed");
  add("Stream", log.stream ? "yes" : "no");
  add("Duration", `${log.duration_ms} ms`);
  add("Attempt", `${log.attempt}${log.final ? " (final)" : " (retried on another key)"}`);
  add("Upstream", log.upstream);
  add(
    "Tokens",
    `${fmtInt(log.prompt_tokens)} prompt · ${fmtInt(log.candidates_tokens)} answer · ${fmtInt(log.total_tokens)} total`,
  );
  add("Client", log.source_ip);
  add("User agent", log.user_agent);
  add("Error", log.error);
  if (attempts.length > 1) {
    const list = h("ol", { class: "attempts", "aria-label": "Attempts of this request" });
    for (const a of attempts) {
      const here = a.id === log.id;
      list.append(
        h(
          "li",
          { class: here ? "current" : "", dataset: { attemptId: a.id } },
          here
            ? h("strong", {}, `#${a.attempt} (this row)`)
            : h(
                "button",
                {
                  type: "button",
                  class: "btn small ghost",
                  onclick: () => {
                    dialog.close();
                    drawer(a);
                  },
                },
                `#${a.attempt}`,
              ),
          " ",
          h("span", { class: "chip " + (a.success ? "active" : "invalid") }, String(a.status_code || "error")),
          " ",
          h("span", { class: "mono small" }, a.key || "no key"),
          " ",
          h("span", { class: "muted small" }, a.error || (a.success ? "served" : "")),
        ),
      );
    }
    body.append(h("h3", {}, `Attempts of this request (${attempts.length})`), list);
  }
  body.append(
    h("h3", {}, "Request body"),
    log.request_body
      ? h("pre", { class: "code" }, log.request_body)
      : h("p", { class: "muted small" }, "Not kept (enable request body logging in Settings)."),
  );
}
