// Compare runs: their parameters side by side with the differences marked, their loss curves
// overlaid, and their last previews next to each other.
import { api } from "../api.js";
import { clear, debounce, h, raw, thumb } from "../dom.js";
import { t } from "../i18n.js";
import { COLORS, legend, lineChart, paintSwatches, smooth } from "../charts.js";

const show = (v) => (v === null || v === undefined ? "–" : Array.isArray(v) ? v.join(" ") : String(v));

export async function render(root, params) {
  const locations = params.getAll("run");
  const data = await api.get("/api/runs/compare", { location: locations });
  const onlyDiff = h("input", { type: "checkbox", id: "only-differences", checked: true });
  const log = h("input", { type: "checkbox", id: "compare-log", checked: true });
  const table = h("tbody", { id: "parameters" });
  const chart = h("div", { id: "compare-chart" });
  const drawTable = () =>
    clear(
      table,
      data.parameters
        .filter((p) => p.differs || !onlyDiff.checked)
        .map((p) => h("tr", { class: p.differs ? "differs" : "", dataset: { option: p.name } }, h("td", {}, raw(p.name, "code")), p.values.map((v) => h("td", {}, raw(show(v)))))),
    );
  const drawChart = () => {
    clear(
      chart,
      lineChart({
        series: data.losses.map((losses, i) => ({ data: smooth(losses.map(([s, l]) => [s, Number(l)])), kind: "smooth", color: COLORS[i % COLORS.length] })),
        points: data.validation.map((v, i) => ({ data: v.map(([s, l]) => [s, Number(l)]), color: COLORS[i % COLORS.length] })),
        log: log.checked,
        label: t("Smoothed loss of {n} runs", { n: data.runs.length }),
        width: chart.clientWidth,
        xTitle: t("step"),
        yTitle: t("loss"),
      }),
      legend(data.runs.map((r, i) => ({ label: r.name, color: COLORS[i % COLORS.length] }))),
    );
    paintSwatches(chart);
  };
  onlyDiff.addEventListener("change", drawTable);
  log.addEventListener("change", drawChart);
  root.append(
    h("h1", {}, t("Compare runs")),
    h(
      "div",
      { class: "card" },
      h("h2", {}, t("Parameters")),
      h("p", {}, t("{n} parameters differ:", { n: data.differences.length }), " ", raw(data.differences.join(", "), "span", { id: "differences" })),
      h("div", { class: "field check" }, onlyDiff, h("label", { for: "only-differences" }, t("Only the parameters that differ"))),
      h(
        "div",
        { class: "table-wrap" },
        h("table", { id: "compare-table" }, h("thead", {}, h("tr", {}, h("th", {}, t("Option")), data.runs.map((r) => h("th", {}, raw(r.name))))), table),
      ),
    ),
    h("div", { class: "card" }, h("h2", {}, t("Loss")), h("div", { class: "field check" }, log, h("label", { for: "compare-log" }, t("Log scale"))), chart),
    h(
      "div",
      { class: "card" },
      h("h2", {}, t("Last previews")),
      h(
        "div",
        { class: "compare-previews", id: "compare-previews" },
        data.runs.map((r, i) =>
          h(
            "div",
            {},
            h("h3", {}, raw(r.name)),
            data.previews[i].length
              ? data.previews[i].map((p) => h("figure", {}, h("img", { src: thumb(p.location, 256), alt: t("Last preview of {name}, prompt {n}", { name: r.name, n: p.prompt + 1 }), width: 96, height: 96 }), h("figcaption", {}, t("prompt {n}", { n: p.prompt + 1 }))))
              : h("p", { class: "muted" }, t("No previews.")),
          ),
        ),
      ),
    ),
  );
  const previews = root.querySelector("#compare-previews");
  previews.style.gridTemplateColumns = `repeat(${data.runs.length}, minmax(0, 1fr))`;
  drawTable();
  drawChart();
  const resized = debounce(drawChart, 200);
  window.addEventListener("resize", resized);
  return () => window.removeEventListener("resize", resized);
}
