// Dashboard: key and traffic cards, hourly SVG charts, per-group totals. Refreshes itself every 5 s.
import { drawTopAccessKeys } from "../access_top.js";
import { api } from "../api.js";
import { requestsChart, tokensChart } from "../charts.js";
import { clear, emptyState, errorBox, fmtCompact, fmtInt, fmtPct, h, missingNotice } from "../dom.js";

function card(label, value, sub, kind = "") {
  return h(
    "div",
    { class: "stat " + kind },
    h("p", { class: "stat-label" }, label),
    h("p", { class: "stat-value" }, value),
    sub ? h("p", { class: "stat-sub" }, sub) : null,
  );
}

function trend(pct, { points = false, invert = false } = {}) {
  if (pct === null || pct === undefined) return "no data for the previous 24 h";
  const up = pct > 0;
  const text = (up ? "▲ " : pct < 0 ? "▼ " : "") + Math.abs(pct).toFixed(1) + (points ? " pts" : "%");
  const bad = invert ? up : !up && pct !== 0;
  return h("span", { class: bad ? "trend bad" : "trend good" }, text + " vs previous 24 h");
}

export async function render(main, _route, life) {
  const groupSelect = h(
    "select",
    { name: "group", "aria-label": "Group shown in the charts" },
    h("option", { value: "" }, "All groups"),
  );
  const hoursSelect = h(
    "select",
    { name: "hours", "aria-label": "Time range" },
    h("option", { value: "24" }, "Last 24 hours"),
    h("option", { value: "168" }, "Last 7 days"),
  );
  const refresh = h("button", { type: "button", class: "btn" }, "Refresh");
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
    cards,
    charts,
    groupsBox,
    accessBox,
  );

  async function loadCards() {
    try {
      const d = await api("GET", "/api/dashboard");
      drawTopAccessKeys(accessBox, d.top_access_keys);
      const last = d.last_24h;
      clear(cards).append(
        card(
          "Active keys",
          fmtInt(d.keys.active),
          `${fmtInt(d.keys.total)} keys in ${fmtInt(d.groups)} groups`,
          "good",
        ),
        card("Cooling keys", fmtInt(d.keys.cooling), "waiting for quota", d.keys.cooling ? "warn" : ""),
        card("Invalid keys", fmtInt(d.keys.invalid), "disabled", d.keys.invalid ? "bad" : ""),
        card("Requests (24 h)", fmtInt(last.requests), trend(d.trend?.requests)),
        card(
          "Error rate (24 h)",
          fmtPct(last.error_rate),
          trend(d.trend?.error_rate, { points: true, invert: true }),
          last.failures ? "warn" : "",
        ),
        card(
          "Tokens (24 h)",
          fmtCompact(last.total_tokens),
          `${fmtCompact(last.prompt_tokens)} prompt · ${fmtCompact(last.candidates_tokens)} answer`,
        ),
        card("Requests / min", fmtInt(d.rpm), "last minute"),
      );
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
      const { series } = await api("GET", "/api/stats/hourly", {
        query: { group: groupSelect.value, hours: hoursSelect.value },
      });
      const any = series.some((p) => p.requests > 0);
      clear(charts).append(
        h(
          "figure",
          { class: "card chart-card" },
          h(
            "figcaption",
            {},
            "Requests per hour ",
            h("span", { class: "legend ok" }, "succeeded"),
            h("span", { class: "legend fail" }, "failed"),
          ),
          requestsChart(series),
          any ? null : h("p", { class: "muted small" }, "No requests in this period yet."),
        ),
        h(
          "figure",
          { class: "card chart-card" },
          h(
            "figcaption",
            {},
            "Tokens per hour ",
            h("span", { class: "legend total" }, "total"),
            h("span", { class: "legend prompt" }, "prompt"),
            h("span", { class: "legend answer" }, "answer"),
          ),
          tokensChart(series),
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
          {},
          h("th", { scope: "row" }, h("a", { href: "#/groups/" + encodeURIComponent(g.name) }, g.name)),
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
      );
    } catch (err) {
      clear(groupsBox).append(
        head,
        err.missingRoute ? missingNotice("Per-group statistics (/api/stats/groups)") : errorBox(err),
      );
    }
  }

  let busy = false;
  async function load() {
    if (busy) return;
    busy = true;
    try {
      await Promise.all([loadCards(), loadCharts(), loadGroups()]);
      updated.textContent = "Updated " + new Date().toLocaleTimeString();
    } finally {
      busy = false;
    }
  }
  refresh.addEventListener("click", load);
  groupSelect.addEventListener("change", loadCharts);
  hoursSelect.addEventListener("change", loadCharts);
  life.every(5000, () => {
    if (!document.hidden) load();
  });
  await load();
}
