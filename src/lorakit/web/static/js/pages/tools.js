// Tools: forms for merge (LoRAs into one, or into a checkpoint), resize, extract, convert and
// inspect. Each is queued as a job running the same command as the command line.
import { api } from "../api.js";
import { banner, clear, field, h, raw, select, uid } from "../dom.js";
import { queueAndFollow } from "../follow.js";
import { t } from "../i18n.js";

const PRECISIONS = [["", "–"], ["fp16", "fp16"], ["bf16", "bf16"], ["fp32", "fp32"]];
const loras = () => ({ name: "lora", type: "loras", label: t("LoRA files, one a line (FILE or FILE:WEIGHT)") });
const precision = () => ({ name: "precision", type: "select", label: t("Precision"), choices: PRECISIONS });
const out = (file, name = "out") => ({ name, type: "out", label: t("Write to"), value: `models/${file}.safetensors` });

function tools() {
  return [
    {
      id: "merge-loras",
      kind: "merge",
      title: t("Merge LoRAs into one LoRA"),
      fields: [
        loras(),
        out("merged"),
        { name: "new-rank", type: "int", label: t("New rank (empty: keep the ranks)") },
        { name: "concat", type: "flag", label: t("Stack the matrices (exact; the rank is the sum)") },
        precision(),
      ],
    },
    {
      id: "merge-checkpoint",
      kind: "merge",
      title: t("Merge LoRAs into a checkpoint"),
      fields: [
        { name: "model", type: "checkpoint", label: t("Checkpoint") },
        loras(),
        out("merged-checkpoint"),
        precision(),
      ],
    },
    {
      id: "resize",
      kind: "resize",
      title: t("Resize a LoRA (change its rank)"),
      fields: [
        { name: "lora", type: "lora", label: t("LoRA file"), positional: true },
        { name: "new-rank", type: "int", label: t("New rank"), value: "8" },
        { name: "dynamic", type: "select", label: t("Rank per module"), choices: [["", t("the same for all")], ["sv_ratio", "sv_ratio"], ["sv_fro", "sv_fro"], ["sv_cumulative", "sv_cumulative"]] },
        { name: "dynamic-param", type: "float", label: t("Rule value") },
        out("resized"),
      ],
    },
    {
      id: "extract",
      kind: "extract",
      title: t("Extract a LoRA from a fine-tuned checkpoint"),
      fields: [
        { name: "base", type: "checkpoint", label: t("Base checkpoint") },
        { name: "tuned", type: "checkpoint", label: t("Fine-tuned checkpoint") },
        { name: "dim", type: "int", label: t("Rank"), value: "16" },
        out("extracted"),
      ],
    },
    {
      id: "convert",
      kind: "convert",
      title: t("Convert a checkpoint"),
      fields: [
        { name: "input", type: "checkpoint", label: t("Checkpoint"), positional: true },
        { ...out("converted", "output"), positional: true },
        { name: "to", type: "select", label: t("Layout"), choices: [["", t("from the name")], ["single-file", t("one file (A1111, ComfyUI)")], ["diffusers", t("diffusers folder")]] },
        precision(),
      ],
    },
    {
      id: "inspect",
      kind: "inspect",
      title: t("Inspect a LoRA or a checkpoint"),
      fields: [{ name: "file", type: "any", label: t("File"), positional: true }],
    },
  ];
}

export async function render(root) {
  const models = await api.get("/api/models");
  const lists = {
    checkpoint: models.filter((m) => m.kind !== "lora"),
    lora: models.filter((m) => m.kind === "lora"),
    any: models,
  };
  const datalists = Object.entries(lists).map(([kind, items]) => h("datalist", { id: `models-${kind}` }, items.map((m) => h("option", { value: m.location }))));
  root.append(h("h1", {}, t("Tools")), ...datalists, h("div", { class: "options" }, tools().map((tool) => card(tool, lists))));
  const stops = [];
  root.addEventListener("job-started", (e) => stops.push(e.detail));
  return () => stops.forEach((stop) => stop());
}

function control(spec, lists) {
  const id = uid(spec.name);
  if (spec.type === "flag") return h("input", { type: "checkbox", id });
  if (spec.type === "select") return select(spec.choices, "", { id, translate: "no" });
  if (spec.type === "loras") return h("textarea", { id, rows: 3, spellcheck: "false" });
  const list = { checkpoint: "models-checkpoint", lora: "models-lora", any: "models-any", loras: null }[spec.type];
  return h("input", { type: "text", id, value: spec.value || "", list, autocomplete: "off", spellcheck: "false", inputmode: ["int", "float"].includes(spec.type) ? "decimal" : null });
}

function card(tool, lists) {
  const controls = new Map(tool.fields.map((f) => [f.name, control(f, lists)]));
  const status = h("div", { class: "tool-status", "aria-live": "polite" });
  const submit = async (e) => {
    e.preventDefault();
    const args = {};
    for (const spec of tool.fields) {
      const c = controls.get(spec.name);
      if (spec.type === "flag") args[spec.name] = c.checked || null;
      else if (spec.type === "loras") args[spec.name] = c.value.split("\n").map((l) => l.trim()).filter(Boolean);
      else if (spec.type === "int" || spec.type === "float") args[spec.name] = c.value.trim() ? Number(c.value) : null;
      else args[spec.name] = c.value.trim() || null;
    }
    try {
      const stop = await queueAndFollow({ kind: tool.kind, args }, status);
      e.target.dispatchEvent(new CustomEvent("job-started", { detail: stop, bubbles: true }));
    } catch (error) {
      clear(status, banner("error", error.message));
    }
  };
  return h(
    "form",
    { class: "card", id: `tool-${tool.id}`, onsubmit: submit },
    h("h2", {}, tool.title),
    tool.fields.map((spec) => {
      const c = controls.get(spec.name);
      if (spec.type === "flag") return h("div", { class: "field check" }, c, h("label", { for: c.id }, spec.label), raw(`--${spec.name}`, "code", { class: "hint" }));
      return field(spec.label, c, raw(spec.positional ? spec.name.toUpperCase() : `--${spec.name}`, "code"));
    }),
    h("button", { type: "submit", class: "primary" }, t("Add to queue")),
    status,
  );
}
