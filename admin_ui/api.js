// The admin API client: one fetch wrapper, the AUTH_KEY in sessionStorage, errors as ApiError.
import { API_BASE } from "./config.js";

const STORAGE_KEY = "gptload.auth";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
  /** True when the server has no such endpoint (an older backend): pages show a notice instead of data. */
  get missingRoute() {
    return this.status === 404 && this.code === "ROUTE_NOT_FOUND";
  }
  get fields() {
    return this.details?.fields || {};
  }
}

export const auth = {
  get: () => sessionStorage.getItem(STORAGE_KEY),
  set: (key) => sessionStorage.setItem(STORAGE_KEY, key),
  clear: () => sessionStorage.removeItem(STORAGE_KEY),
};

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** The public base of the proxy: the API's origin (a bucket-hosted console talks to the function's URL). */
export function proxyBase() {
  return (API_BASE || window.location.origin).replace(/\/+$/, "");
}

async function raw(method, path, { body, key, query } = {}) {
  const headers = { Authorization: "Bearer " + (key ?? auth.get() ?? "") };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let url = API_BASE + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
    }
    const qs = params.toString();
    if (qs) url += (url.includes("?") ? "&" : "?") + qs;
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, "NETWORK", "Cannot reach the server (" + err.message + ").");
  }
  if (!response.ok) {
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      /* not JSON: keep the status line */
    }
    const e = payload?.error;
    const error = new ApiError(
      response.status,
      e?.code || "HTTP_" + response.status,
      e?.message || response.status + " " + response.statusText,
      e?.details,
    );
    if (response.status === 401 && key === undefined) onUnauthorized(error);
    throw error;
  }
  return response;
}

export async function api(method, path, options = {}) {
  const response = await raw(method, path, options);
  if (response.status === 204) return null;
  return response.json();
}

/** Fetch an attachment (key export, CSV) with the Authorization header and hand it to the browser as a file.
 * The content only ever lives in a Blob; it is never put into the page. */
export async function download(path, fallbackName, query) {
  return saveAttachment(await raw("GET", path, { query }), fallbackName);
}

/** Like download(), for an attachment asked for with a JSON body (POST), e.g. the export of selected keys. */
export async function downloadPost(path, fallbackName, body) {
  return saveAttachment(await raw("POST", path, { body }), fallbackName);
}

/** Hand an attachment answer to the browser as a file named by its Content-Disposition; its size in bytes. */
async function saveAttachment(response, fallbackName) {
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/i.exec(disposition);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = match ? match[1] : fallbackName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
  return blob.size;
}
