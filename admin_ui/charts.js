// Small inline-SVG charts drawn by hand (no library): stacked bars per hour or per day. Bars (never lines) so
// that a sparse series (one busy hour in a quiet week) shows as what it is, not as a wide triangle.
import { fmtCompact, fmtInt, s } from "./dom.js";

const W = 640;
const H = 220;
const PAD = { top: 12, right: 12, bottom: 28, left: 44 };
const HOUR = 3600;

function niceMax(v) {
  if (v <= 0) return 4;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v) return m * exp;
  return 10 * exp;
}

const dateFmt = (epoch) => new Date(epoch * 1000).toLocaleDateString([], { month: "short", day: "numeric" });
const timeFmt = (epoch) => new Date(epoch * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
const isMidnight = (epoch) => new Date(epoch * 1000).getHours() === 0;

/** Sum an hourly series into local calendar days (for the 30-day range). Each bucket: {at, span, ...sums}. */
export function buckets(series, perDay) {
  if (!perDay) return series.map((p) => ({ ...p, at: p.hour, span: HOUR }));
  const out = [];
  for (const p of series) {
    const d = new Date(p.hour * 1000);
    const day = new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime() / 1000;
    let last = out[out.length - 1];
    if (!last || last.at !== day) {
      last = { at: day, span: 86400 };
      out.push(last);
    }
    for (const [k, v] of Object.entries(p)) if (k !== "hour" && typeof v === "number") last[k] = (last[k] || 0) + v;
  }
  return out;
}

/** The text under bucket i, or null: dates when the chart spans days, times of day (and the date at midnight)
 * within one day. */
function axisLabel(list, i) {
  const b = list[i];
  if (b.span >= 86400) {
    const every = Math.max(1, Math.ceil(list.length / 8));
    return i % every === 0 ? dateFmt(b.at) : null;
  }
  if (list.length > 48) {
    // several days by the hour: one label per day, at midnight (or the first bucket when no midnight is near)
    return isMidnight(b.at) && i > 2 ? dateFmt(b.at) : null;
  }
  const every = Math.max(1, Math.ceil(list.length / 6));
  if (i % every !== 0) return null;
  return isMidnight(b.at) || i === 0 ? `${dateFmt(b.at)} ${timeFmt(b.at)}` : timeFmt(b.at);
}

/** The tooltip heading of a bucket: its date and hour, or its date. */
export function bucketTitle(b) {
  return b.span >= 86400 ? dateFmt(b.at) : `${dateFmt(b.at)} ${timeFmt(b.at)}`;
}

function frame(list, max, label) {
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "none",
  });
  const innerH = H - PAD.top - PAD.bottom;
  for (let i = 0; i <= 4; i++) {
    const y = PAD.top + innerH - (innerH * i) / 4;
    svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
    svg.append(
      s("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, fmtCompact((max * i) / 4)),
    );
  }
  const step = (W - PAD.left - PAD.right) / Math.max(1, list.length);
  list.forEach((_b, i) => {
    const text = axisLabel(list, i);
    if (text) {
      svg.append(
        s(
          "text",
          { x: PAD.left + step * (i + 0.5), y: H - 8, "text-anchor": "middle", class: "axis", "data-axis": "x" },
          text,
        ),
      );
    }
  });
  return { svg, innerH, step };
}

/** Stacked bars: layers [{key, cls}] from the bottom up; a bucket's title from title(b). */
function stackedBars(list, layers, label, title) {
  const totals = list.map((b) => layers.reduce((a, l) => a + Math.max(0, b[l.key] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const { svg, innerH, step } = frame(list, max, label);
  const bw = Math.max(1.5, step * 0.7);
  list.forEach((b, i) => {
    const x = PAD.left + step * i + (step - bw) / 2;
    let top = PAD.top + innerH;
    const g = s("g", { class: "bucket" }, s("title", {}, title(b)));
    for (const layer of layers) {
      const v = Math.max(0, b[layer.key] || 0);
      if (v <= 0) continue;
      const height = Math.max(1.5, (innerH * v) / max); // a tiny value stays visible
      top -= height;
      g.append(s("rect", { x, y: top, width: bw, height, class: "bar " + layer.cls, rx: 1.5 }));
    }
    g.append(s("rect", { x: PAD.left + step * i, y: PAD.top, width: step, height: innerH, fill: "transparent" }));
    svg.append(g);
  });
  return svg;
}

/** Requests per bucket: succeeded (blue) under failed (red); the tooltip adds retries and refusals. */
export function requestsChart(list, unit = "hour") {
  const total = list.reduce((a, b) => a + b.requests, 0);
  const failed = list.reduce((a, b) => a + b.failures, 0);
  const rows = list.map((b) => ({ ...b, ok: Math.max(0, b.requests - b.failures) }));
  return stackedBars(
    rows,
    [
      { key: "ok", cls: "ok" },
      { key: "failures", cls: "fail" },
    ],
    `Requests per ${unit}: ${total} requests, ${failed} failures`,
    (b) =>
      `${bucketTitle(b)}: ${fmtInt(b.requests)} requests, ${fmtInt(b.failures)} failed` +
      `, ${fmtInt(b.retries || 0)} retries, ${fmtInt(b.refused || 0)} refused before Google`,
  );
}

/** Tokens per bucket: prompt, answer and the rest of the total (thinking, tools) stacked. */
export function tokensChart(list, unit = "hour") {
  const total = list.reduce((a, b) => a + b.total_tokens, 0);
  const rows = list.map((b) => ({
    ...b,
    other: Math.max(0, b.total_tokens - b.prompt_tokens - b.candidates_tokens),
  }));
  return stackedBars(
    rows,
    [
      { key: "prompt_tokens", cls: "prompt" },
      { key: "candidates_tokens", cls: "answer" },
      { key: "other", cls: "other" },
    ],
    `Tokens per ${unit}: ${total} tokens in total`,
    (b) =>
      `${bucketTitle(b)}: ${fmtInt(b.total_tokens)} tokens (${fmtInt(b.prompt_tokens)} prompt, ` +
      `${fmtInt(b.candidates_tokens)} answer, ${fmtInt(b.other)} other)`,
  );
}
