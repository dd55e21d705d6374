// Navigation for the pages. Importing it has no side effects: app.js (the entry point) owns the router and hands it
// over with setRouter, so a page can navigate without importing app.js.
let reroute = () => {};

/** app.js registers its router here once, at start. */
export function setRouter(route) {
  reroute = route;
}

/** Go to a route ("/groups/x"); going to the route already on screen renders it again. */
export function navigate(path) {
  if (location.hash === "#" + path) reroute();
  else location.hash = path;
}

let leaveGuard = null;

/** A page with a form registers fn() -> a question (unsaved changes) or null; app.js asks it before leaving the
 * page (in-app navigation: a confirm; closing or reloading the tab: the browser's own prompt). */
export function setLeaveGuard(fn) {
  leaveGuard = fn;
}

/** The question to ask before leaving the page on screen, or null when nothing would be lost. */
export function leaveQuestion() {
  return leaveGuard ? leaveGuard() : null;
}
