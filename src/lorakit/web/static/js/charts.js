// Line charts in SVG, drawn here (no chart library): losses with a smoothed line, validation
// points and epoch marks; learning rates; several runs overlaid. Log scale on request.
import { h, number } from "./dom.js";

export const COLORS = ["#2357d9", "#d9480f", "#2b8a3e", "#9c36b5", "#e67700", "#0c8599", "#c2255c", "#5c940d"];

/** TensorBoard's smoothing: an exponential moving average, debiased at the start. */
export function smooth(data, weight = 0.85) {
  let last = 0;
  return data.map(([x, y], i) => {
    last = last * weight + (1 - weight) * y;
    return [x, last / (1 - weight ** (i + 1))];
  });
}

function niceTicks(low, high, count = 5) {
  if (!(high > low)) return [low];
  const step0 = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= step0) || step0;
  const ticks = [];
  for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function logTicks(low, high) {
  const ticks = [];
  for (let p = Math.floor(Math.log10(low)); p <= Math.ceil(Math.log10(high)); p++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** p;
      if (v >= low * 0.999 && v <= high * 1.001) ticks.push(v);
    }
  }
  return ticks.length >= 2 ? ticks : [low, high];
}

/**
 * lineChart({series: [{data: [[x, y]...], kind: "raw"|"smooth", color, name}], points: [...same],
 * marks: [{x, label}], log: bool, label: "accessible name"}) -> <svg>
 */
export function lineChart({ series = [], points = [], marks = [], log = false, label = "", height = 240, xTitle = "", yTitle = "", width = 720 }) {
  width = Math.max(320, Math.round(width)); // the drawing's own size: text stays at its size
  const pad = { left: 58, right: 14, top: 12, bottom: 34 };
  const usable = (d) => d.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!log || y > 0));
  const all = [...series, ...points].flatMap((s) => usable(s.data));
  const svg = h("svg:svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": label,
    "data-points": series.length ? usable(series[0].data).length : 0,
  });
  svg.append(h("svg:title", {}, label));
  if (!all.length) return svg;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  if (y0 === y1) [y0, y1] = log ? [y0 / 2, y1 * 2] : [y0 - 1e-3 - Math.abs(y0) * 0.1, y1 + 1e-3 + Math.abs(y1) * 0.1];
  const fy = log ? Math.log10 : (v) => v;
  const [ly0, ly1] = [fy(y0), fy(y1)];
  const X = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const Y = (y) => height - pad.bottom - ((fy(y) - ly0) / (ly1 - ly0)) * (height - pad.top - pad.bottom);
  for (const v of log ? logTicks(y0, y1) : niceTicks(y0, y1)) {
    svg.append(h("svg:line", { x1: pad.left, x2: width - pad.right, y1: Y(v), y2: Y(v), class: "grid-line" }));
    svg.append(h("svg:text", { x: pad.left - 6, y: Y(v) + 4, "text-anchor": "end" }, number(v, 3)));
  }
  for (const v of niceTicks(x0, x1, 6)) {
    svg.append(h("svg:text", { x: X(v), y: height - pad.bottom + 16, "text-anchor": "middle" }, number(v, 4)));
  }
  for (const mark of marks) {
    if (mark.x < x0 || mark.x > x1) continue;
    svg.append(h("svg:line", { x1: X(mark.x), x2: X(mark.x), y1: pad.top, y2: height - pad.bottom, class: "epoch" }));
    svg.append(h("svg:text", { x: X(mark.x) - 3, y: pad.top + 10, "text-anchor": "end" }, mark.label)); // the mark ends the epoch
  }
  svg.append(h("svg:line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom, class: "axis" }));
  svg.append(h("svg:line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom, class: "axis" }));
  if (xTitle) svg.append(h("svg:text", { x: width - pad.right, y: height - 4, "text-anchor": "end" }, xTitle));
  if (yTitle) svg.append(h("svg:text", { x: 4, y: pad.top + 2, "dominant-baseline": "hanging" }, yTitle));
  series.forEach((s, i) => {
    const d = usable(s.data);
    if (!d.length) return;
    const path = d.map(([x, y], j) => `${j ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("");
    const line = h("svg:path", { d: path, class: s.kind || "smooth" });
    if (s.kind !== "raw") line.setAttribute("stroke", s.color || COLORS[i % COLORS.length]);
    svg.append(line);
  });
  for (const p of points) {
    for (const [x, y] of usable(p.data)) {
      const dot = h("svg:circle", { cx: X(x), cy: Y(y), r: 4, class: "validation" });
      if (p.color) dot.style.fill = p.color; // the stylesheet's colour is the default
      svg.append(dot);
    }
  }
  return svg;
}

/** A legend for the series of a chart. */
export function legend(items) {
  return h(
    "div",
    { class: "legend" },
    items.map((item) => h("span", {}, h("span", { class: "swatch", dataset: { color: item.color } }), item.label)),
  );
}

/** Colour swatches are set through the CSSOM (the page's policy allows no inline style text). */
export function paintSwatches(root) {
  for (const swatch of root.querySelectorAll(".swatch[data-color]")) swatch.style.background = swatch.dataset.color;
}
