// Dashboard: key and traffic cards, SVG charts, per-group totals. The group and range selectors drive the whole
// page (cards, charts, warnings) and stay in the URL; it refreshes itself every 5 s.
import { drawTopAccessKeys } from "../access_top.js";
import { api } from "../api.js";
import { buckets, requestsChart, tokensChart } from "../charts.js";
import { clear, emptyState, errorBox, fmtCompact, fmtInt, fmtPct, h, missingNotice } from "../dom.js";
import { asCards } from "../widgets.js";

const RANGES = [
  ["24", "Last 24 hours", "24 h"],
  ["168", "Last 7 days", "7 d"],
  ["720", "Last 30 days", "30 d"],
];

function card(label, value, sub, kind = "", testid = "") {
  return h(
    "div",
    { class: "stat " + kind, dataset: testid ? { stat: testid } : undefined },
    h("p", { class: "stat-label" }, label),
    h("p", { class: "stat-value" }, value),
    sub ? h("p", { class: "stat-sub" }, sub) : null,
  );
}

function trend(pct, span, { points = false, invert = false } = {}) {
  if (pct === null || pct === undefined) return `no data for the previous ${span}`;
  const up = pct > 0;
  const text = (up ? "▲ " : pct < 0 ? "▼ " : "") + Math.abs(pct).toFixed(1) + (points ? " pts" : "%");
  const bad = invert ? up : !up && pct !== 0;
  return h("span", { class: bad ? "trend bad" : "trend good" }, `${text} vs previous ${span}`);
}

export async function render(main, { query }, life) {
  const chosenHours = RANGES.some(([v]) => v === query.get("hours")) ? query.get("hours") : "24";
  const groupSelect = h(
    "select",
    { name: "group", "aria-label": "Group shown" },
    h("option", { value: "" }, "All groups"),
  );
  if (query.get("group"))
    groupSelect.append(h("option", { value: query.get("group"), selected: true }, query.get("group")));
  const hoursSelect = h(
    "select",
    { name: "hours", "aria-label": "Time range" },
    RANGES.map(([v, t]) => h("option", { value: v, selected: v === chosenHours }, t)),
  );
  const refresh = h("button", { type: "button", class: "btn" }, "Refresh");
  const warnings = h("div", { class: "warnings" });
  const cards = h("section", { class: "stats", "aria-label": "Summary" });
  const charts = h("section", { class: "charts" });
  const groupsBox = h("section", { class: "card" });
  const accessBox = h("section", { class: "card", "aria-label": "Top access keys" });
  const updated = h("span", { class: "muted small", "aria-live": "off" });
  main.append(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Dashboard"),
      h("div", { class: "toolbar" }, updated, groupSelect, hoursSelect, refresh),
    ),
    warnings,
    cards,
    charts,
    groupsBox,
    accessBox,
  );

  const span = () => RANGES.find(([v]) => v === hoursSelect.value)[2];
  const scope = () => ({ group: groupSelect.value, hours: hoursSelect.value });

  async function loadCards() {
    try {
      const d = await api("GET", "/api/dashboard", { query: scope() });
      drawTopAccessKeys(accessBox, d.top_access_keys);
      const r = d.range?.current || d.last_24h;
      const t = d.range?.trend || d.trend;
      const k = d.keys;
      const where = d.group ? `in group ${d.group}` : `in ${fmtInt(d.groups)} group${d.groups === 1 ? "" : "s"}`;
      clear(warnings);
      for (const name of d.unservable_groups || []) {
        warnings.append(
          h(
            "div",
            { class: "alert error", role: "alert", dataset: { unservable: name } },
            "Group ",
            h("a", { href: `#/groups/${encodeURIComponent(name)}/keys` }, name),
            " has no key that can serve a request now: it has no keys, or every key is invalid, disabled or cooling for all models.",
          ),
        );
      }
      const shown = [
        card("Active keys", fmtInt(k.active), `${fmtInt(k.total)} keys ${where}`, "good", "active"),
        card(
          "Cooling (all models)",
          fmtInt(k.cooling_all ?? k.cooling),
          "cannot serve any model until a cooldown ends",
          k.cooling_all ? "warn" : "",
          "cooling-all",
        ),
        card(
          "Limited (some models)",
          fmtInt(k.limited ?? 0),
          "cooling for some models, serving the others",
          k.limited ? "warn" : "",
          "limited",
        ),
        card("Invalid keys", fmtInt(k.invalid), "disabled by Google's answer", k.invalid ? "bad" : "", "invalid"),
        "disabled" in k ? card("Disabled keys", fmtInt(k.disabled), "set aside by an admin", "", "disabled") : null,
        card(`Requests (${span()})`, fmtInt(r.requests), trend(t.requests, span()), "", "requests"),
        card(
          `Error rate (${span()})`,
          fmtPct(r.error_rate),
          trend(t.error_rate, span(), { points: true, invert: true }),
          r.failures ? "warn" : "",
          "error-rate",
        ),
        card(
          `Retries (${span()})`,
          fmtInt(r.retries ?? 0),
          `${fmtInt(r.failed_attempts ?? 0)} failed upstream attempts`,
          r.retries ? "warn" : "",
          "retries",
        ),
        card(
          `Refused (${span()})`,
          fmtInt(r.refused ?? 0),
          "answered before reaching Google: bad proxy key, no key, breaker open",
          r.refused ? "warn" : "",
          "refused",
        ),
        card(
          `Tokens (${span()})`,
          fmtCompact(r.total_tokens),
          `${fmtCompact(r.prompt_tokens)} prompt · ${fmtCompact(r.candidates_tokens)} answer`,
          "",
          "tokens",
        ),
        card("Requests / min", fmtInt(d.rpm), "last minute", "", "rpm"),
      ];
      // a server that lets an admin disable keys counts them apart; the card is left out otherwise
      clear(cards).append(...shown.filter(Boolean));
    } catch (err) {
      if (!err.missingRoute) return clear(cards).append(errorBox(err));
      // Older backend: derive the key cards from the group list.
      const { groups } = await api("GET", "/api/groups");
      const sum = (k) => groups.reduce((a, g) => a + (g.key_counts[k] || 0), 0);
      clear(cards).append(
        missingNotice("Traffic statistics (/api/dashboard)"),
        card("Active keys", fmtInt(sum("active")), `${fmtInt(sum("total"))} keys in ${groups.length} groups`, "good"),
        card("Cooling keys", fmtInt(sum("cooling")), "waiting for quota"),
        card("Invalid keys", fmtInt(sum("invalid")), "disabled"),
      );
    }
  }

  async function loadCharts() {
    try {
      const { series } = await api("GET", "/api/stats/hourly", { query: scope() });
      const perDay = Number(hoursSelect.value) > 168;
      const unit = perDay ? "day" : "hour";
      const list = buckets(series, perDay);
      const any = series.some((p) => p.requests > 0);
      clear(charts).append(
        h(
          "figure",
          { class: "card chart-card", dataset: { chart: "requests" } },
          h(
            "figcaption",
            {},
            `Requests per ${unit} `,
            h("span", { class: "legend ok" }, "succeeded"),
            h("span", { class: "legend fail" }, "failed"),
          ),
          requestsChart(list, unit),
          any ? null : h("p", { class: "muted small" }, "No requests in this period yet."),
        ),
        h(
          "figure",
          { class: "card chart-card", dataset: { chart: "tokens" } },
          h(
            "figcaption",
            {},
            `Tokens per ${unit} `,
            h("span", { class: "legend prompt" }, "prompt"),
            h("span", { class: "legend answer" }, "answer"),
            h("span", { class: "legend other" }, "other (thinking, tools)"),
          ),
          tokensChart(list, unit),
        ),
      );
    } catch (err) {
      clear(charts).append(err.missingRoute ? missingNotice("Hourly statistics (/api/stats/hourly)") : errorBox(err));
    }
  }

  async function loadGroups() {
    const head = h("h2", {}, "Groups");
    try {
      const { groups } = await api("GET", "/api/stats/groups");
      if (!groups.length) {
        return clear(groupsBox).append(
          head,
          emptyState(
            "No groups yet",
            "Create a group and add keys to start proxying.",
            h("a", { class: "btn primary", href: "#/groups" }, "Go to groups"),
          ),
        );
      }
      for (const g of groups) {
        if (![...groupSelect.options].some((o) => o.value === g.name))
          groupSelect.append(h("option", { value: g.name }, g.name));
      }
      const row = (g) =>
        h(
          "tr",
          { class: g.name === groupSelect.value ? "selected" : "" },
          h(
            "th",
            { scope: "row", class: "card-title name-cell" },
            h("a", { href: "#/groups/" + encodeURIComponent(g.name) }, g.name),
          ),
          ...["24h", "7d", "30d"].flatMap((p) => [
            h("td", { class: "num" }, fmtInt(g[p].requests)),
            h("td", { class: "num" }, fmtInt(g[p].failures)),
          ]),
          h("td", { class: "num" }, fmtCompact(g["24h"].total_tokens)),
        );
      clear(groupsBox).append(
        head,
        h(
          "div",
          { class: "table-wrap" },
          asCards(
            h(
              "table",
              {},
              h(
                "thead",
                {},
                h(
                  "tr",
                  {},
                  h("th", { scope: "col" }, "Group"),
                  ...["24 h", "7 d", "30 d"].flatMap((p) => [
                    h("th", { scope: "col", class: "num" }, `Requests ${p}`),
                    h("th", { scope: "col", class: "num" }, `Failures ${p}`),
                  ]),
                  h("th", { scope: "col", class: "num" }, "Tokens 24 h"),
                ),
              ),
              h("tbody", {}, groups.map(row)),
            ),
          ),
        ),
      );
    } catch (err) {
      clear(groupsBox).append(
        head,
        err.missingRoute ? missingNotice("Per-group statistics (/api/stats/groups)") : errorBox(err),
      );
    }
  }

  let busy = false;
  let again = false; // the scope changed while a load ran: load once more when it ends
  async function load() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      await Promise.all([loadCards(), loadCharts(), loadGroups()]);
      updated.textContent = "Updated " + new Date().toLocaleTimeString();
    } finally {
      busy = false;
    }
    if (again && life.alive) {
      again = false;
      await load();
    }
  }
  function rescope() {
    lastLoad = Date.now();
    // keep the choice in the URL (a reload or a shared link shows the same view) without re-rendering the page
    const params = new URLSearchParams(Object.entries(scope()).filter(([k, v]) => v && !(k === "hours" && v === "24")));
    history.replaceState(null, "", "#/dashboard" + (params.toString() ? "?" + params : ""));
    load();
  }
  refresh.addEventListener("click", load);
  groupSelect.addEventListener("change", rescope);
  hoursSelect.addEventListener("change", rescope);
  // Refresh every 5 s over 24 h; the longer ranges change slowly and read many more hourly buckets (on Firestore,
  // one read each), so they refresh every 60 s.
  let lastLoad = Date.now();
  life.every(5000, () => {
    const every = hoursSelect.value === "24" ? 5000 : 60000;
    if (document.hidden || Date.now() - lastLoad < every - 500) return;
    lastLoad = Date.now();
    load();
  });
  await load();
}
