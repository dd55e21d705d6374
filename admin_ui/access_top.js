// The dashboard's "Top access keys (24 h)" card: by requests and by tokens, from /api/dashboard's top_access_keys.
import { clear, fmtCompact, fmtInt, h } from "./dom.js";

function table(caption, rows, value) {
  return h(
    "table",
    { class: "top-access" },
    h("caption", {}, caption),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Access key"),
        h("th", { scope: "col", class: "num" }, "Requests"),
        h("th", { scope: "col", class: "num" }, "Refused"),
        h("th", { scope: "col", class: "num" }, "Tokens"),
      ),
    ),
    h(
      "tbody",
      {},
      rows
        .filter(value)
        .map((r) =>
          h(
            "tr",
            {},
            h(
              "th",
              { scope: "row" },
              h(
                "a",
                { href: "#/logs?access_key=" + encodeURIComponent(r.id) },
                r.id === "anonymous" ? "legacy keys" : r.name,
              ),
            ),
            h("td", { class: "num" }, fmtInt(r.requests)),
            h("td", { class: "num" }, fmtInt(r.refused)),
            h("td", { class: "num" }, fmtCompact(r.total_tokens)),
          ),
        ),
    ),
  );
}

/** Draw the card into ``box`` (emptied); nothing when the server sends no top_access_keys (an older backend). */
export function drawTopAccessKeys(box, top) {
  clear(box);
  box.hidden = !top;
  if (!top) return;
  box.append(
    h("h2", {}, "Top access keys (24 h)"),
    top.by_requests.length
      ? h(
          "div",
          { class: "table-wrap top-access-grid" },
          table("By requests", top.by_requests, (r) => r.requests > 0),
          table("By tokens", top.by_tokens, (r) => r.total_tokens > 0),
        )
      : h("p", { class: "muted" }, "No traffic in the last 24 hours."),
  );
}
