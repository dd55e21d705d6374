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

/** Live cooldown countdowns: any element with data-until (epoch s) and data-label shows "label · m:ss".
 * app.js calls it every second; a page calls it right after drawing new ones. */
export function tickCountdowns() {
  const now = Date.now() / 1000;
  document.querySelectorAll("[data-until]").forEach((el) => {
    const left = Number(el.dataset.until) - now;
    el.textContent = el.dataset.label + " · " + (left > 0 ? fmtClock(left) : "ready");
    el.classList.toggle("done", left <= 0);
  });
}
