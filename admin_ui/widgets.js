// Widgets shared by several pages. Importing it has no side effects (app.js runs the countdown timer).
import { fmtClock, h } from "./dom.js";

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
