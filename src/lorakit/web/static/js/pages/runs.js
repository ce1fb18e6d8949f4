// Runs: every training run of the workspace (from its run.json) with its key parameters, time,
// losses, notes and stars (kept in the workspace); choose two or more to compare them.
import { api } from "../api.js";
import { clear, duration, h, number, raw, toast, uid, when } from "../dom.js";
import { t } from "../i18n.js";
import { stateWord } from "../words.js";

const SHOWN = ["network_dim", "network_alpha", "learning_rate", "unet_lr", "optimizer_type", "max_train_epochs", "train_batch_size", "resolution"];

export async function render(root) {
  const runs = await api.get("/api/runs");
  const chosen = new Set();
  const compare = h("button", { class: "primary", id: "compare", disabled: true, onclick: () => (location.hash = `#/compare?${[...chosen].map((r) => `run=${encodeURIComponent(r)}`).join("&")}`) }, t("Compare the chosen runs"));
  const update = () => {
    compare.disabled = chosen.size < 2;
    compare.textContent = chosen.size >= 2 ? t("Compare the {n} chosen runs", { n: chosen.size }) : t("Compare the chosen runs");
  };
  const body = h("tbody", { id: "runs" });
  root.append(
    h("h1", {}, t("Runs")),
    h("div", { class: "card" }, h("div", { class: "buttons" }, compare, h("span", { class: "hint" }, t("Choose two or more runs to see their parameters and losses side by side.")))),
    h(
      "div",
      { class: "card table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, [t("Compare"), t("Run"), t("Date"), t("Base model"), t("Dataset"), t("Key parameters"), t("Steps"), t("Time"), t("Final loss"), t("Best validation loss"), t("Stars"), t("Notes")].map((x) => h("th", {}, x)))),
        body,
      ),
    ),
  );
  if (!runs.length) body.append(h("tr", {}, h("td", { colspan: 12, class: "muted" }, t("No runs yet: trainings appear here once they start."))));
  for (const run of runs.sort((a, b) => String(b.started_at).localeCompare(String(a.started_at)))) body.append(row(run, chosen, update));
}

function row(run, chosen, update) {
  const pick = h("input", { type: "checkbox", id: uid("run"), "aria-label": t("Compare {name}", { name: run.name }) });
  pick.addEventListener("change", () => {
    if (pick.checked) chosen.add(run.location);
    else chosen.delete(run.location);
    update();
  });
  const notes = h("textarea", { rows: 2, id: uid("notes"), translate: "no", "aria-label": t("Notes on {name}", { name: run.name }) }, run.notes || "");
  notes.addEventListener("change", async () => {
    try {
      await api.put("/api/run/notes", { location: run.location, notes: notes.value });
      toast(t("Notes saved."));
    } catch (error) {
      toast(error.message, "error");
    }
  });
  const params = Object.entries(run.parameters || {}).filter(([k, v]) => v !== null && SHOWN.includes(k));
  return h(
    "tr",
    { dataset: { run: run.location } },
    h("td", {}, pick),
    h(
      "td",
      {},
      h("a", { href: `#/monitor?run=${encodeURIComponent(run.location)}` }, raw(run.name, "strong")),
      h("div", { class: "hint" }, stateWord(run.status)),
      h("div", {}, h("a", { href: `#/grid?run=${encodeURIComponent(run.location)}`, class: "small" }, t("Grid"))),
    ),
    h("td", { class: "nowrap" }, when(run.started_at)),
    h("td", {}, raw(run.base_model_name || "–")),
    h("td", {}, raw(run.dataset || "–")),
    h("td", { class: "params" }, params.map(([k, v]) => h("div", {}, raw(`${k} = ${v}`, "code")))),
    h("td", {}, `${run.steps ?? "–"}${run.total_steps ? ` / ${run.total_steps}` : ""}`),
    h("td", {}, duration(run.seconds)),
    h("td", {}, number(run.final_loss)),
    h("td", {}, number(run.best_validation_loss), run.best_epoch ? h("div", { class: "hint" }, t("epoch {n}", { n: run.best_epoch.epoch })) : null),
    h("td", {}, stars(run)),
    h("td", {}, notes),
  );
}

function stars(run) {
  const box = h("div", { class: "stars", role: "group", "aria-label": t("Stars of {name}", { name: run.name }) });
  const draw = (value) =>
    clear(
      box,
      [1, 2, 3, 4, 5].map((n) =>
        h(
          "button",
          {
            class: "star",
            "aria-pressed": String(n <= value),
            "aria-label": t("{n} stars", { n }),
            onclick: async () => {
              const next = n === value ? 0 : n;
              try {
                await api.put("/api/run/notes", { location: run.location, stars: next });
                run.stars = next;
                draw(next);
              } catch (error) {
                toast(error.message, "error");
              }
            },
          },
          "★",
        ),
      ),
    );
  draw(run.stars || 0);
  return box;
}
