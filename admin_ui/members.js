// Aggregate groups in the console: the member table with weights (create and edit forms), the members card of an
// aggregate's page, and the "used by aggregates" card of a standard group's page.
import { clear, h } from "./dom.js";

export const WEIGHT_MAX = 1000;

export const isAggregate = (group) => group.group_type === "aggregate";

/**
 * An editable member table: one row per member (a standard group and its weight 0..1000, 0 = paused), rows added
 * and removed in place. ``groups``: every group (from GET /api/groups); ``self``: the aggregate's own name (left out).
 * Returns {node, read()} where read() gives {value: [{name, weight}], errors: {sub_groups?}}.
 */
export function memberEditor(groups, members = [], self = "") {
  const choices = groups.filter((g) => !isAggregate(g) && g.name !== self).map((g) => g.name);
  const body = h("tbody", {});
  const empty = h("p", { class: "muted small", hidden: true }, "No members yet: add at least one standard group.");
  const rows = [];

  function addRow(member = { name: choices[0] || "", weight: 1 }) {
    const select = h(
      "select",
      { name: "member_name", "aria-label": "Member group" },
      choices.map((n) => h("option", { value: n, selected: n === member.name }, n)),
      // a stored member that no longer exists stays visible (and is refused on save, naming it)
      member.name && !choices.includes(member.name)
        ? h("option", { value: member.name, selected: true }, `${member.name} (missing)`)
        : null,
    );
    const weight = h("input", {
      type: "number",
      name: "member_weight",
      "aria-label": "Weight",
      inputmode: "numeric",
      min: 0,
      max: WEIGHT_MAX,
      step: 1,
      value: String(member.weight ?? 1),
    });
    const share = h("td", { class: "num muted small", dataset: { share: "" } });
    const remove = h("button", { type: "button", class: "btn small danger ghost", "aria-label": "Remove member" }, "×");
    const row = h("tr", {}, h("td", {}, select), h("td", {}, weight), share, h("td", {}, remove));
    const entry = { row, select, weight, share };
    remove.addEventListener("click", () => {
      rows.splice(rows.indexOf(entry), 1);
      row.remove();
      refresh();
    });
    weight.addEventListener("input", refresh);
    rows.push(entry);
    body.append(row);
    refresh();
  }

  function refresh() {
    const weights = rows.map((r) => Number(r.weight.value));
    const total = weights.reduce((a, w) => a + (Number.isInteger(w) && w > 0 ? w : 0), 0);
    rows.forEach((r, i) => {
      const w = weights[i];
      r.share.textContent = w === 0 ? "paused" : total && Number.isInteger(w) && w > 0 ? pct(w / total) : "";
    });
    empty.hidden = rows.length > 0;
  }

  const add = h("button", { type: "button", class: "btn small", disabled: !choices.length }, "Add member");
  add.addEventListener("click", () => {
    const used = new Set(rows.map((r) => r.select.value));
    addRow({ name: choices.find((n) => !used.has(n)) || choices[0], weight: 1 });
    rows[rows.length - 1].select.focus();
  });
  for (const m of members) addRow(m);
  refresh();

  const node = h(
    "div",
    { class: "member-editor", "data-testid": "member-editor" },
    h(
      "table",
      { class: "members-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Member group"),
          h("th", { scope: "col" }, "Weight"),
          h("th", { scope: "col", class: "num" }, "Share"),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Remove")),
        ),
      ),
      body,
    ),
    empty,
    choices.length ? null : h("p", { class: "muted small" }, "Create a standard group with keys first."),
    add,
  );

  function read() {
    const value = rows.map((r) => ({ name: r.select.value, weight: Number(r.weight.value) }));
    const errors = {};
    const names = value.map((m) => m.name);
    if (!value.length) errors.sub_groups = "Add at least one member.";
    else if (value.some((m) => !Number.isInteger(m.weight) || m.weight < 0 || m.weight > WEIGHT_MAX))
      errors.sub_groups = `Weights are whole numbers from 0 to ${WEIGHT_MAX} (0 pauses a member).`;
    else if (new Set(names).size !== names.length) errors.sub_groups = "Each group may be a member once.";
    return { value, errors };
  }

  return { node, read };
}

const pct = (x) => `${Math.round(x * 1000) / 10} %`;

/** The members of an aggregate, with their weights, share of traffic and key counts. */
export function membersCard(group, groups) {
  const byName = new Map(groups.map((g) => [g.name, g]));
  const total = group.sub_groups.reduce((a, m) => a + m.weight, 0);
  const rows = group.sub_groups.map((m) => {
    const member = byName.get(m.name);
    const counts = member?.key_counts;
    return h(
      "tr",
      { dataset: { member: m.name } },
      h("th", { scope: "row" }, member ? h("a", { href: "#/groups/" + encodeURIComponent(m.name) }, m.name) : m.name),
      h("td", { class: "num" }, String(m.weight)),
      h("td", { class: "num" }, m.weight === 0 ? h("span", { class: "chip" }, "paused") : pct(m.weight / total)),
      h(
        "td",
        {},
        counts
          ? h(
              "div",
              { class: "chips" },
              ["active", "cooling", "invalid"].map((st) =>
                counts[st] ? h("span", { class: "chip " + st }, `${counts[st]} ${st}`) : null,
              ),
              counts.total ? null : h("span", { class: "muted" }, "no keys"),
            )
          : h("span", { class: "chip invalid" }, "missing"),
      ),
    );
  });
  return h(
    "section",
    { class: "card", "aria-label": "Members", "data-testid": "members" },
    h("h2", {}, "Members"),
    h(
      "p",
      { class: "muted small" },
      "An aggregate has no keys of its own. Each request goes to a member by weight (among the members with a key " +
        "able to serve its model); when that member runs out of keys or its upstream fails, the next member takes " +
        "over within the same retry budget. Each member applies its own upstreams and rules.",
    ),
    group.sub_groups.length
      ? h(
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
                h("th", { scope: "col", class: "num" }, "Weight"),
                h("th", { scope: "col", class: "num" }, "Share"),
                h("th", { scope: "col" }, "Keys"),
              ),
            ),
            h("tbody", {}, rows),
          ),
        )
      : h("p", { class: "muted" }, "No members: requests get 503 NO_KEYS_AVAILABLE. Edit the group to add some."),
  );
}

/** Which aggregates use a standard group (its ``used_by``). */
export function usedByCard(group) {
  const list = h("ul", { class: "plain" });
  clear(list).append(
    ...(group.used_by || []).map((name) => h("li", {}, h("a", { href: "#/groups/" + encodeURIComponent(name) }, name))),
  );
  return h(
    "section",
    { class: "card", "aria-label": "Used by aggregates", "data-testid": "used-by" },
    h("h2", {}, "Used by aggregates"),
    group.used_by?.length ? list : h("p", { class: "muted small" }, "No aggregate group has this group as a member."),
  );
}
