// DOM helpers. Text always goes in through text nodes (never innerHTML), so data cannot become markup.

/** h("button", {class: "btn", onclick: fn}, "Save") -> element. Children: strings, nodes, arrays, null. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null && v !== false) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value" || k === "checked" || k === "selected") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// -- feedback -----------------------------------------------------------------------------------------------
export function toast(message, kind = "ok") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: "toast " + kind }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

export function errorBox(err) {
  const text = err?.message ? err.message : String(err);
  return h("div", { class: "alert error", role: "alert" }, text);
}

/** The notice a page shows when the backend does not have one of its endpoints yet. */
export function missingNotice(what) {
  return h(
    "div",
    { class: "alert warn", role: "status" },
    `${what} is not available on this server yet (the endpoint answered 404 ROUTE_NOT_FOUND). Update gptload to use it.`,
  );
}

export function emptyState(title, text, ...actions) {
  return h("div", { class: "empty" }, h("p", { class: "empty-title" }, title), text ? h("p", {}, text) : null, actions);
}

/** Put server field errors (details.fields) next to the inputs named like them; returns the names it placed. */
export function showFieldErrors(form, fields) {
  const placed = [];
  for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  for (const [name, message] of Object.entries(fields || {})) {
    const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
    const slot = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    if (slot) {
      slot.textContent = message;
      placed.push(name);
    }
    if (input) input.setAttribute("aria-invalid", "true");
  }
  return placed;
}

export function field(label, input, { hint, name } = {}) {
  const id = input.id || "f-" + (name || input.name) + "-" + Math.random().toString(36).slice(2, 7);
  input.id = id;
  const errorId = id + "-err";
  input.setAttribute("aria-describedby", errorId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    hint ? h("p", { class: "hint" }, hint) : null,
    h("p", { class: "field-error", id: errorId, dataset: { errorFor: name || input.name } }),
  );
}

// -- dialogs (native <dialog>: modal, focus-trapped, closes with Escape) ------------------------------------
/** A modal dialog. ``guard``: fn() -> a question or null, asked before Escape, ✕ or a click outside close it
 * (unsaved changes); code that closes it after a save calls dialog.close() directly. */
export function openDialog(title, body, { actions = [], wide = false, drawer = false, onClose, guard } = {}) {
  const tryClose = () => {
    const question = guard ? guard() : null;
    if (!question || window.confirm(question)) dialog.close();
  };
  const dialog = h(
    "dialog",
    { class: "dialog" + (wide ? " wide" : "") + (drawer ? " drawer" : ""), "aria-label": title },
    h(
      "div",
      { class: "dialog-head" },
      h("h2", {}, title),
      h("button", { type: "button", class: "btn ghost icon", "aria-label": "Close", onclick: tryClose }, "✕"),
    ),
    h("div", { class: "dialog-body" }, body),
    actions.length ? h("div", { class: "dialog-actions" }, actions) : null,
  );
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (onClose) onClose();
  });
  dialog.addEventListener("click", (e) => {
    if (e.target === dialog) tryClose(); // a click on the backdrop
  });
  dialog.addEventListener("cancel", (e) => {
    e.preventDefault(); // Escape: ask first when something would be lost
    tryClose();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** Ask before something destructive; resolves true on confirm. */
export function confirmDialog(title, text, confirmLabel = "Delete") {
  return new Promise((resolve) => {
    let answer = false;
    const yes = h(
      "button",
      {
        type: "button",
        class: "btn danger",
        onclick: () => {
          answer = true;
          dialog.close();
        },
      },
      confirmLabel,
    );
    const no = h("button", { type: "button", class: "btn", onclick: () => dialog.close() }, "Cancel");
    const dialog = openDialog(title, h("p", {}, text), { actions: [no, yes], onClose: () => resolve(answer) });
    no.focus();
  });
}

export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API needs a secure context; fall back to a hidden textarea. It goes inside the open modal dialog
    // (everything outside one is inert and cannot be selected), and focus goes back to the button afterwards.
    const host = button?.closest("dialog") || document.querySelector("dialog[open]") || document.body;
    const area = h("textarea", { class: "visually-hidden", readonly: true }, text);
    host.append(area);
    area.focus();
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    button?.focus();
    if (!copied) {
      toast("Copying is not allowed here: select the text and copy it by hand.", "error");
      return;
    }
  }
  if (button) {
    const before = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = before), 1500);
  }
  toast("Copied to the clipboard");
}

// -- formatting -----------------------------------------------------------------------------------------------
const numberFormat = new Intl.NumberFormat("en-US");
export const fmtInt = (n) => (n === null || n === undefined ? "–" : numberFormat.format(n));
export function fmtCompact(n) {
  if (n === null || n === undefined) return "–";
  return new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 }).format(n);
}
export function fmtTime(epoch) {
  if (!epoch) return "never";
  return new Date(epoch * 1000).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}
export function fmtAgo(epoch) {
  if (!epoch) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - epoch));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}
/** Seconds as m:ss (or h:mm:ss). */
export function fmtClock(seconds) {
  const t = Math.max(0, Math.ceil(seconds));
  const hh = Math.floor(t / 3600);
  const mm = Math.floor((t % 3600) / 60);
  const ss = String(t % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}
/** A percentage the API already gives in percent (0..100). */
export const fmtPct = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(1) + "%");

export function chip(status) {
  return h("span", { class: "chip " + status }, status);
}

/** A random proxy key from crypto.getRandomValues: "sk-" + 40 base62 characters (~238 bits). */
export function generateProxyKey() {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const out = [];
  const bytes = new Uint8Array(64);
  while (out.length < 40) {
    crypto.getRandomValues(bytes);
    for (const b of bytes) if (b < 248 && out.length < 40) out.push(alphabet[b % 62]); // 248 = 4*62: no bias
  }
  return "sk-" + out.join("");
}
