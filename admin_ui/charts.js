// Small inline-SVG charts drawn by hand (no library): stacked hourly bars and token lines.
import { fmtCompact, fmtInt, s } from "./dom.js";

const W = 640;
const H = 220;
const PAD = { top: 12, right: 12, bottom: 28, left: 44 };

function niceMax(v) {
  if (v <= 0) return 4;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v) return m * exp;
  return 10 * exp;
}

function hourLabel(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function frame(series, max, label) {
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
  const step = (W - PAD.left - PAD.right) / Math.max(1, series.length);
  const every = Math.max(1, Math.ceil(series.length / 6));
  series.forEach((p, i) => {
    if (i % every === 0) {
      svg.append(
        s(
          "text",
          { x: PAD.left + step * (i + 0.5), y: H - 8, "text-anchor": "middle", class: "axis" },
          hourLabel(p.hour),
        ),
      );
    }
  });
  return { svg, innerH, step };
}

/** Stacked bars per hour: successful requests (blue) under failures (red). */
export function requestsChart(series) {
  const max = niceMax(Math.max(0, ...series.map((p) => p.requests)));
  const total = series.reduce((a, p) => a + p.requests, 0);
  const failed = series.reduce((a, p) => a + p.failures, 0);
  const { svg, innerH, step } = frame(series, max, `Requests per hour: ${total} requests, ${failed} failures`);
  const bw = Math.max(1, step * 0.7);
  series.forEach((p, i) => {
    const x = PAD.left + step * i + (step - bw) / 2;
    const okH = (innerH * Math.max(0, p.requests - p.failures)) / max;
    const failH = (innerH * p.failures) / max;
    const base = PAD.top + innerH;
    const g = s(
      "g",
      {},
      s("title", {}, `${hourLabel(p.hour)}: ${fmtInt(p.requests)} requests, ${fmtInt(p.failures)} failures`),
    );
    if (okH > 0) g.append(s("rect", { x, y: base - okH, width: bw, height: okH, class: "bar ok", rx: 2 }));
    if (failH > 0)
      g.append(s("rect", { x, y: base - okH - failH, width: bw, height: failH, class: "bar fail", rx: 2 }));
    g.append(s("rect", { x: PAD.left + step * i, y: PAD.top, width: step, height: innerH, fill: "transparent" }));
    svg.append(g);
  });
  return svg;
}

/** Lines of prompt, answer and total tokens per hour, the total shaded. */
export function tokensChart(series) {
  const max = niceMax(Math.max(0, ...series.map((p) => p.total_tokens)));
  const total = series.reduce((a, p) => a + p.total_tokens, 0);
  const { svg, innerH, step } = frame(series, max, `Tokens per hour: ${total} tokens in total`);
  const x = (i) => PAD.left + step * (i + 0.5);
  const y = (v) => PAD.top + innerH - (innerH * v) / max;
  const path = (key) => series.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
  if (series.length) {
    const area = `${path("total_tokens")} L${x(series.length - 1).toFixed(1)},${y(0)} L${x(0).toFixed(1)},${y(0)} Z`;
    svg.append(s("path", { d: area, class: "area" }));
    svg.append(s("path", { d: path("total_tokens"), class: "line total" }));
    svg.append(s("path", { d: path("prompt_tokens"), class: "line prompt" }));
    svg.append(s("path", { d: path("candidates_tokens"), class: "line answer" }));
    series.forEach((p, i) => {
      svg.append(
        s(
          "rect",
          { x: PAD.left + step * i, y: PAD.top, width: step, height: innerH, fill: "transparent" },
          s(
            "title",
            {},
            `${hourLabel(p.hour)}: ${fmtInt(p.total_tokens)} tokens (${fmtInt(p.prompt_tokens)} prompt, ${fmtInt(p.candidates_tokens)} answer)`,
          ),
        ),
      );
    });
  }
  return svg;
}
