// Widgets shared by several pages. Importing it has no side effects (app.js runs the countdown timer).
import { copyText, fmtClock, h } from "./dom.js";

/** The Overview / Keys tabs of one group. */
export function groupTabs(name, active) {
  const base = "#/groups/" + encodeURIComponent(name);
  return h(
    "nav",
    { class: "tabs", "aria-label": "Group sections" },
    h("a", { href: base, "aria-current": active === "overview" ? "page" : undefined }, "Overview"),
    h("a", { href: base + "/keys", "aria-current": active === "keys" ? "page" : undefined }, "Keys"),
  );
}

/** Live cooldown countdowns: any element with data-until (epoch s) and data-label shows "label · m:ss", or, with
 * data-format="duration", "label · 9 h 59 m". app.js calls it every second; a page calls it right after drawing
 * new ones. */
export function tickCountdowns() {
  const now = Date.now() / 1000;
  document.querySelectorAll("[data-until]").forEach((el) => {
    const left = Number(el.dataset.until) - now;
    const remaining = el.dataset.format === "duration" ? fmtDuration(left) : fmtClock(left);
    el.textContent = el.dataset.label + " · " + (left > 0 ? remaining : "ready");
    el.classList.toggle("done", left <= 0);
  });
}

/** Seconds as a duration a person reads at a glance: "9 h 59 m", "12 m 05 s", "42 s", "3 d 4 h". */
export function fmtDuration(seconds) {
  const t = Math.max(0, Math.ceil(seconds));
  const d = Math.floor(t / 86400);
  const hh = Math.floor((t % 86400) / 3600);
  const mm = Math.floor((t % 3600) / 60);
  const ss = t % 60;
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} m`;
  if (mm) return `${mm} m ${String(ss).padStart(2, "0")} s`;
  return `${ss} s`;
}

/** Narrow screens (under 600 px): a table marked with asCards() shows each row as a card, every cell under its
 * column's name (styles.css, "cards"). It copies each header cell's text (or its data-label) to the cells of that
 * column as data-label; call it again after adding rows. Cells with class "card-title" head their card, cells with
 * class "card-actions" go to its foot; a header cell with class "visually-hidden" text gives no label. */
export function asCards(table) {
  table.classList.add("cards");
  const labels = [...table.querySelectorAll("thead tr:first-child > *")].map((th) =>
    th.dataset.label !== undefined ? th.dataset.label : th.textContent.trim(),
  );
  for (const row of table.querySelectorAll("tbody tr")) {
    let col = 0;
    for (const cell of row.children) {
      const label = labels[col] || "";
      if (label && !cell.dataset.label) cell.dataset.label = label;
      col += Number(cell.getAttribute("colspan")) || 1;
    }
  }
  return table;
}

/** A small "Copy" button that copies ``text`` (an id, a key's masked form) and says so. */
export function copyButton(text, label = "Copy") {
  return h(
    "button",
    {
      type: "button",
      class: "btn small ghost copy-btn",
      "aria-label": `${label}: ${text}`,
      title: `Copy ${text}`,
      onclick: (e) => copyText(text, e.currentTarget),
    },
    "Copy",
  );
}

/** Unsaved-changes tracking for a form: compares its named fields with a snapshot. question() gives the
 * "leave without saving?" text while they differ (for nav.setLeaveGuard or openDialog's guard); saved() takes a
 * new snapshot (after a save, or after the form was rebuilt). */
export function unsavedChanges(form, what) {
  const snap = () =>
    JSON.stringify(
      [...form.elements].filter((e) => e.name).map((e) => [e.name, e.type === "checkbox" ? e.checked : e.value]),
    );
  let clean = snap();
  return {
    dirty: () => snap() !== clean,
    saved: () => {
      clean = snap();
    },
    question: () => (snap() !== clean ? `${what} has unsaved changes. Leave without saving them?` : null),
  };
}

/** A breadcrumb: links separated by " / ", without a trailing separator (the page's h1 names the page itself). */
export function crumbs(...links) {
  const out = h("p", { class: "crumbs" });
  links.forEach((link, i) => {
    out.append(i ? " / " : "", link);
  });
  return out;
}
