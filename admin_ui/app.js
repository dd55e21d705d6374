// The entry point (index.html loads it; no module imports it): hash routing, login state, page lifecycle, the
// countdown timer. Each page module exports render(main, params, page).
import { auth, setUnauthorizedHandler } from "./api.js";
import { clear, h, toast } from "./dom.js";
import { leaveQuestion, navigate, setLeaveGuard, setRouter } from "./nav.js";
import { tickCountdowns } from "./widgets.js";

const ROUTES = [
  [/^\/login$/, "login", () => import("./pages/login.js")],
  [/^\/dashboard$/, "dashboard", () => import("./pages/dashboard.js")],
  [/^\/groups$/, "groups", () => import("./pages/groups.js")],
  [/^\/groups\/([^/]+)$/, "groups", () => import("./pages/group.js")],
  [/^\/groups\/([^/]+)\/keys$/, "groups", () => import("./pages/keys.js")],
  [/^\/access-keys$/, "access-keys", () => import("./pages/access.js")],
  [/^\/logs$/, "logs", () => import("./pages/logs.js")],
  [/^\/settings$/, "settings", () => import("./pages/settings.js")],
];

const main = document.getElementById("main");
let current = null; // {cleanups: [fn]} of the page on screen
let shownHash = null; // the hash of the page on screen, to go back to when leaving it is cancelled

/** What a page gets to tie timers and listeners to its lifetime. */
class PageLife {
  constructor() {
    this.cleanups = [];
    this.alive = true;
  }
  every(ms, fn) {
    const id = setInterval(fn, ms);
    this.cleanups.push(() => clearInterval(id));
  }
  onLeave(fn) {
    this.cleanups.push(fn);
  }
  end() {
    this.alive = false;
    for (const fn of this.cleanups) fn();
  }
}

/** A path segment decoded; a malformed escape typed into the address stays as typed instead of throwing. */
function decodeOnce(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** The route of the address: the path as it is (its segments are decoded once, by route()) and the query decoded
 * once by URLSearchParams, so filter text with "&", "+" or "%" comes back as typed. */
function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/dashboard";
  const at = raw.indexOf("?");
  const path = at < 0 ? raw : raw.slice(0, at);
  return { path: path || "/dashboard", query: new URLSearchParams(at < 0 ? "" : raw.slice(at + 1)) };
}

async function route() {
  const question = current ? leaveQuestion() : null;
  if (question && !window.confirm(question)) {
    // stay: put the address back without another hashchange
    if (shownHash !== null && location.hash !== shownHash) history.replaceState(null, "", shownHash || "#");
    return;
  }
  setLeaveGuard(null);
  shownHash = location.hash;
  const { path, query } = parseHash();
  const loggedIn = Boolean(auth.get());
  if (!loggedIn && path !== "/login") return navigate("/login");
  if (loggedIn && path === "/login") return navigate("/dashboard");
  document.getElementById("topbar").hidden = !loggedIn;
  closeNav();

  let found = null;
  for (const [pattern, nav, load] of ROUTES) {
    const m = pattern.exec(path);
    if (m) found = { nav, load, params: m.slice(1).map(decodeOnce) };
  }
  if (current) current.end();
  current = new PageLife();
  const life = current;
  clear(main);
  document.querySelectorAll("[data-nav]").forEach((a) => {
    if (found && a.dataset.nav === found.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (!found) {
    main.append(h("h1", {}, "Not found"), h("p", {}, "There is no page at ", h("code", {}, path), "."));
    return;
  }
  main.append(h("p", { class: "loading" }, "Loading…"));
  try {
    const module = await found.load();
    if (!life.alive) return;
    clear(main);
    await module.render(main, { params: found.params, query }, life);
  } catch (err) {
    if (!life.alive) return;
    clear(main);
    main.append(h("div", { class: "alert error", role: "alert" }, err.message || String(err)));
  }
}

function closeNav() {
  document.getElementById("nav").classList.remove("open");
  document.getElementById("nav-toggle").setAttribute("aria-expanded", "false");
}

// Escape closes the open phone menu (not a dialog's business: a modal dialog handles its own Escape) and gives the
// focus back to its button when it was inside the menu.
document.addEventListener("keydown", (e) => {
  const nav = document.getElementById("nav");
  if (e.key !== "Escape" || !nav.classList.contains("open") || document.querySelector("dialog[open]")) return;
  const inside = nav.contains(document.activeElement);
  closeNav();
  if (inside || document.activeElement === document.body) document.getElementById("nav-toggle").focus();
});

document.getElementById("nav-toggle").addEventListener("click", (e) => {
  const nav = document.getElementById("nav");
  const open = nav.classList.toggle("open");
  e.currentTarget.setAttribute("aria-expanded", String(open));
});

document.getElementById("logout").addEventListener("click", () => {
  const question = leaveQuestion(); // ask before the key is dropped: "stay" must leave the session intact
  if (question && !window.confirm(question)) return;
  setLeaveGuard(null);
  auth.clear();
  navigate("/login");
});

// Closing or reloading the tab with unsaved changes: the browser asks (its own wording).
window.addEventListener("beforeunload", (e) => {
  if (leaveQuestion()) e.preventDefault();
});

setUnauthorizedHandler(() => {
  if (!auth.get()) return;
  setLeaveGuard(null); // the session is gone: nothing could be saved anyway
  auth.clear();
  toast("The admin key was refused; log in again.", "error");
  navigate("/login");
});

setInterval(tickCountdowns, 1000);

// The skip link must not touch the hash (the router owns it): it moves focus to the content instead.
document.querySelector(".skip-link").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});

setRouter(route);
window.addEventListener("hashchange", route);
route();
