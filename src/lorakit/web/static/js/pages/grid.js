// Grid: a finished run's epoch x weight grid (rendered by a queued `grid --run` job), every cell
// enlarged with its parameters on a click, each epoch's validation loss beside its row (the
// lowest marked), and "keep this epoch": its LoRA file copied to a name of your choice.
import { api } from "../api.js";
import { banner, clear, field, h, number, raw, select, thumb, toast } from "../dom.js";
import { t } from "../i18n.js";
import { stateBadge } from "../words.js";

export async function render(root, params) {
  const runs = (await api.get("/api/runs")).filter((r) => r.epochs > 0);
  const location = params.get("run") || (runs[0] && runs[0].location);
  root.append(h("h1", {}, t("Epoch × weight grid")));
  if (!location) {
    root.append(h("div", { class: "card" }, h("p", {}, t("No finished run yet. Train one first; each saved epoch becomes a row here."))));
    return null;
  }
  const runSelect = select(
    runs.map((r) => [r.location, r.name]),
    location,
    { id: "grid-run", translate: "no", onchange: (e) => (window.location.hash = `#/grid?run=${encodeURIComponent(e.target.value)}`) },
  );
  const weights = h("input", { type: "text", id: "grid-weights", value: "0.4, 0.6, 0.8, 1.0" });
  const status = h("div", { id: "grid-status", "aria-live": "polite" });
  const out = h("div", { id: "grid-view" });
  const dialog = h("dialog", { id: "cell-dialog", "aria-labelledby": "cell-title" });
  const keepDialog = h("dialog", { id: "keep-dialog", "aria-labelledby": "keep-title" });
  let timer = null;
  const renderGrid = async () => {
    try {
      const values = weights.value.split(",").map((v) => v.trim()).filter(Boolean).join(",");
      const job = await api.post("/api/jobs", { kind: "grid", args: { run: location, x: `weight=${values}` } });
      toast(t("Grid queued as job {id}.", { id: job.id }));
      watch(job.id);
    } catch (error) {
      toast(error.message, "error");
    }
  };
  const watch = (id) => {
    clearInterval(timer);
    const poll = async () => {
      const job = await api.get(`/api/jobs/${id}`);
      clear(status, t("Grid job {id}:", { id }), " ", stateBadge(job.state), job.state === "failed" ? banner("error", raw(job.error || (job.log_tail || []).slice(-3).join(" "))) : null);
      if (!["queued", "running"].includes(job.state)) {
        clearInterval(timer);
        await load();
      }
    };
    timer = setInterval(poll, 1500);
    poll();
  };
  root.append(
    h(
      "div",
      { class: "card" },
      h("div", { class: "row" }, field(t("Run"), runSelect), field(t("LoRA weights (columns)"), weights, t("Comma-separated strengths; every saved epoch is a row.")), h("button", { class: "primary", id: "render-grid", onclick: renderGrid }, t("Render the grid"))),
      status,
    ),
    out,
    dialog,
    keepDialog,
  );

  async function load() {
    let data;
    try {
      data = await api.get("/api/run/grid", { location });
    } catch (error) {
      clear(out, banner("error", error.message));
      return;
    }
    const grid = data.grids[data.grids.length - 1];
    const kept = data.kept.map((k) => h("li", {}, t("Epoch {n} kept as", { n: k.epoch }), " ", raw(k.copy, "code")));
    if (!grid) {
      clear(out, h("div", { class: "card" }, h("p", {}, t("This run has no grid yet: render it above (the model draws every epoch at every weight).")), rowsTable(data)));
      return;
    }
    const xs = (grid.axes.x && grid.axes.x.labels) || [""];
    const ys = (grid.axes.y && grid.axes.y.labels) || [""];
    const cellAt = (i, j) => grid.cells.find((c) => c.x === i && c.y === j && (c.z || 0) === 0);
    const rows = ys.map((axisLabel, j) => {
      const info = data.rows[j] || {};
      const label = info.epoch !== undefined && info.epoch !== null ? t("epoch {n}", { n: info.epoch }) : axisLabel;
      return h(
        "tr",
        { class: info.lowest ? "lowest" : "", dataset: { epoch: info.epoch } },
        h(
          "th",
          { class: "epoch-head", scope: "row" },
          h(
            "div",
            { class: "row-head" },
            h("strong", {}, label),
            h("span", {}, t("validation loss"), " ", info.validation_loss !== null && info.validation_loss !== undefined ? raw(number(info.validation_loss, 5)) : "–"),
            info.lowest ? h("span", { class: "badge", id: "lowest-mark" }, t("lowest")) : null,
            info.file ? h("button", { class: "small keep", dataset: { epoch: info.epoch }, onclick: () => keep(data, info) }, t("Keep this epoch")) : null,
          ),
        ),
        xs.map((weight, i) => {
          const cell = cellAt(i, j);
          if (!cell) return h("td", {}, "–");
          const alt = t("{epoch}, weight {weight}", { epoch: label, weight });
          return h("td", {}, h("button", { class: "cell", "aria-label": t("Enlarge: {what}", { what: alt }), onclick: () => enlarge(cell, alt) }, h("img", { src: thumb(cell.location, 256), alt, width: 96, height: 96 })));
        }),
      );
    });
    clear(
      out,
      h(
        "div",
        { class: "card table-wrap" },
        h("table", { class: "grid-table", id: "grid-table" }, h("thead", {}, h("tr", {}, h("th", {}, t("Epoch")), xs.map((x) => h("th", {}, t("weight {w}", { w: x }))))), h("tbody", {}, rows)),
        kept.length ? h("div", {}, h("h3", {}, t("Kept")), h("ul", { id: "kept" }, kept)) : null,
      ),
    );
  }

  function enlarge(cell, alt) {
    clear(
      dialog,
      h("h2", { id: "cell-title" }, alt),
      h("img", { src: `/api/files/${cell.location.split("/").map(encodeURIComponent).join("/")}`, alt }),
      h("h3", {}, t("Parameters")),
      h("pre", { id: "cell-parameters", translate: "no" }, cell.parameters || ""),
      h("button", { class: "primary", id: "close-cell", onclick: () => dialog.close() }, t("Close")),
    );
    dialog.showModal();
  }

  function keep(data, info) {
    const target = h("input", { type: "text", id: "keep-target", value: `models/${data.name || "lora"}-e${info.epoch}.safetensors` });
    clear(
      keepDialog,
      h(
        "form",
        {
          method: "dialog",
          onsubmit: async (e) => {
            e.preventDefault();
            try {
              const copy = await api.post("/api/run/keep", { location, epoch: info.epoch, target: target.value.trim() });
              toast(t("Epoch {n} kept as {location}.", { n: info.epoch, location: copy.location }));
              keepDialog.close();
              load();
            } catch (error) {
              toast(error.message, "error");
            }
          },
        },
        h("h2", { id: "keep-title" }, t("Keep epoch {n}", { n: info.epoch })),
        h("p", {}, t("Copies this epoch's LoRA file to the name you choose and notes it in the run's run.json.")),
        field(t("Copy to"), target),
        h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", id: "keep-confirm" }, t("Keep")), h("button", { type: "button", onclick: () => keepDialog.close() }, t("Cancel"))),
      ),
    );
    keepDialog.showModal();
    target.focus();
  }

  function rowsTable(data) {
    return h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", {}, t("Epoch")), h("th", {}, t("validation loss")))),
      h("tbody", {}, data.rows.map((r) => h("tr", { class: r.lowest ? "lowest" : "" }, h("td", {}, String(r.epoch)), h("td", {}, number(r.validation_loss, 5), r.lowest ? [" ", h("span", { class: "badge" }, t("lowest"))] : null)))),
    );
  }

  await load();
  return () => clearInterval(timer);
}
