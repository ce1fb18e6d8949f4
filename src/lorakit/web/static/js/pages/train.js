// Train: the form made from the option table (its names, defaults and help; the common options
// first, the rest under "advanced"), presets, the live step arithmetic per dataset folder with
// the warnings of `lorakit train`'s plan, TOML import and export, and "add to queue".
import { api } from "../api.js";
import { banner, baseName, clear, debounce, field, h, message, raw, select, toast, uid } from "../dom.js";
import { currentLanguage, optionHelp, t } from "../i18n.js";
import { toToml } from "../toml.js";

export const SECTION_NAMES = {
  model: () => t("Model"),
  dataset: () => t("Dataset"),
  method: () => t("Method: what to train"),
  network: () => t("Network"),
  optimizer: () => t("Optimizer"),
  training: () => t("Training"),
  sampling: () => t("Previews"),
  saving: () => t("Saving"),
  logging: () => t("Logging"),
};

export async function render(root, params) {
  const [table, presets, datasets, models, roots] = await Promise.all([
    api.get("/api/options"),
    api.get("/api/presets"),
    api.get("/api/datasets"),
    api.get("/api/models"),
    api.get("/api/roots"),
  ]);
  const form = new TrainForm(table, roots);
  const plan = new PlanPanel(form);
  form.onchange = () => plan.schedule();
  root.append(
    h("h1", {}, t("Train")),
    h(
      "div",
      { class: "train-layout" },
      h("div", {}, presetCard(presets, form), sourceCard(datasets, models, form), form.element()),
      h("div", { class: "plan" }, actionsCard(form), plan.element),
    ),
  );
  const wanted = params.get("dataset");
  const chosen = datasets.find((d) => d.location === wanted) || (wanted ? null : datasets[0]);
  if (chosen) form.useDataset(chosen);
  const checkpoint = models.find((m) => m.kind !== "lora" && m.kind !== "unreadable");
  if (checkpoint && !form.get("pretrained_model_name_or_path")) form.set("pretrained_model_name_or_path", checkpoint.location);
  document.getElementById("model-pick").value = form.get("pretrained_model_name_or_path");
  plan.schedule(0);
  return () => plan.stop();
}

/** The form's state lives in its controls; this reads and writes them by option name. */
class TrainForm {
  constructor(table, roots) {
    this.table = table;
    this.options = new Map(table.options.map((o) => [o.name, o]));
    this.roots = Object.fromEntries(roots.filter((r) => r.prefix).map((r) => [r.prefix, r.path]));
    this.controls = new Map();
    this.repeats = new Map(); // subset folder -> repeats typed in the plan panel
    this.imported = null; // [[datasets]] tables read from an imported TOML
    this.prompts = h("textarea", { id: "preview-prompts", rows: 3, placeholder: t("one prompt a line, e.g. ohwx, smiling --d 1 --s 20") });
    this.prompts.addEventListener("input", () => this.changed());
    this.onchange = () => {};
  }

  element() {
    const sections = this.table.sections.map((section) => {
      const all = this.table.options.filter((o) => o.section === section);
      const common = all.filter((o) => o.common).sort((a, b) => a.rank - b.rank);
      const rest = all.filter((o) => !o.common);
      const extra = section === "sampling" ? [field(t("Preview prompts (saved as a prompt file when the training is queued)"), this.prompts)] : [];
      return h(
        "fieldset",
        { id: `section-${section}` },
        h("legend", {}, SECTION_NAMES[section] ? SECTION_NAMES[section]() : raw(section)),
        common.length || extra.length ? h("div", { class: "options" }, common.map((o) => this.field(o)), extra) : null,
        rest.length
          ? h("details", { class: "advanced" }, h("summary", {}, t("Advanced: {n} more options", { n: rest.length })), h("div", { class: "options" }, rest.map((o) => this.field(o))))
          : null,
      );
    });
    return h("form", { id: "train-form", onsubmit: (e) => e.preventDefault() }, sections);
  }

  field(option) {
    const id = `opt-${option.name}`;
    let control;
    let datalist = null;
    if (option.kind === "bool") {
      control = h("input", { type: "checkbox", id, checked: option.default === true });
    } else if (option.choices) {
      const choices = option.default === null ? [["", t("(not set)")], ...option.choices.map((c) => [c, c])] : option.choices.map((c) => [c, c]);
      control = select(choices, option.default ?? "", { id, translate: "no" });
    } else {
      control = h("input", { type: "text", id, value: shown(option.default), autocomplete: "off", spellcheck: "false" });
      if (option.suggestions) {
        datalist = h("datalist", { id: `${id}-list` }, option.suggestions.map((s) => h("option", { value: s })));
        control.setAttribute("list", datalist.id);
      }
    }
    control.dataset.option = option.name;
    control.addEventListener(option.kind === "bool" || option.choices ? "change" : "input", () => this.changed(option.name));
    this.controls.set(option.name, control);
    const help = h("p", { class: "hint", id: `${id}-hint` }, optionHelp(option), " ", h("span", { class: "default" }, t("Default:"), " ", shown(option.default) ? raw(shown(option.default)) : t("(not set)")));
    control.setAttribute("aria-describedby", help.id);
    const label = h("label", { for: id }, raw(option.name, "span", { class: "option-name" }));
    const parts = option.kind === "bool" ? [control, label, help] : [label, control, datalist, help];
    return h("div", { class: `field${option.kind === "bool" ? " check" : ""}`, dataset: { option: option.name } }, parts);
  }

  changed(name) {
    if (name === "train_data_dir" || name === "reg_data_dir") this.repeats.clear();
    this.onchange(name);
  }

  get(name) {
    const control = this.controls.get(name);
    return control.type === "checkbox" ? control.checked : control.value.trim();
  }

  set(name, value) {
    const control = this.controls.get(name);
    if (!control) return;
    if (control.type === "checkbox") control.checked = Boolean(value);
    else {
      const text = shown(value);
      if (control.tagName === "SELECT" && ![...control.options].some((o) => o.value === text)) control.append(h("option", { value: text }, text));
      control.value = text;
    }
    control.removeAttribute("aria-invalid");
  }

  reset() {
    for (const option of this.table.options) this.set(option.name, option.default);
    this.repeats.clear();
    this.imported = null;
  }

  useDataset(d) {
    const picker = document.getElementById("dataset-pick");
    if (picker) picker.value = d.location;
    this.set("train_data_dir", this.path(d.train || d.location));
    this.set("reg_data_dir", d.reg ? this.path(d.reg) : "");
    this.repeats.clear();
    this.imported = null;
    this.changed();
  }

  /** A location as a config path: @NAME/x becomes the allowed folder's absolute path. */
  path(location) {
    const [head, ...rest] = location.split("/");
    return head.startsWith("@") && this.roots[head] ? [this.roots[head], ...rest].join("/") : location;
  }

  /** {name: value} of the options that differ from their defaults, and the fields that do not parse. */
  values() {
    const out = {};
    const bad = [];
    for (const option of this.table.options) {
      const control = this.controls.get(option.name);
      let value;
      try {
        value = parse(option, this.get(option.name));
        control.removeAttribute("aria-invalid");
      } catch (error) {
        control.setAttribute("aria-invalid", "true");
        bad.push(option.name);
        continue;
      }
      if (value !== null && JSON.stringify(value) !== JSON.stringify(option.default)) out[option.name] = value;
    }
    return { values: out, bad };
  }

  /** The dataset tables the config needs: imported ones, or the folders with changed repeats. */
  datasets(values, subsets) {
    if (this.imported) {
      const copy = JSON.parse(JSON.stringify(this.imported));
      for (const d of copy.datasets || []) for (const s of d.subsets || []) if (this.repeats.has(s.image_dir)) s.num_repeats = this.repeats.get(s.image_dir);
      return copy;
    }
    if (!this.repeats.size || !subsets.length) return null;
    delete values.train_data_dir;
    delete values.reg_data_dir;
    return {
      datasets: [
        {
          subsets: subsets.map((s) => {
            const table = { image_dir: this.path(s.location), num_repeats: this.repeats.get(s.location) ?? s.num_repeats };
            if (s.class_tokens) table.class_tokens = s.class_tokens;
            if (s.is_reg) table.is_reg = true;
            return table;
          }),
        },
      ],
    };
  }

  toml(subsets = [], extra = {}) {
    const { values, bad } = this.values();
    Object.assign(values, extra);
    const datasets = this.datasets(values, subsets);
    const sections = this.table.sections.map((section) => [
      section,
      this.table.options.filter((o) => o.section === section && o.name in values).map((o) => [o.name, values[o.name]]),
    ]);
    return { text: toToml(sections, datasets, t("Made with the lorakit training form.")), values, bad };
  }
}

const shown = (value) => (value === null || value === undefined ? "" : Array.isArray(value) ? value.join(value.every((v) => typeof v === "number") ? ", " : " ") : String(value));

function parse(option, text) {
  if (option.kind === "bool") return Boolean(text);
  if (text === "") return option.kind === "list" ? [] : null;
  const num = (s) => {
    const n = Number(s);
    if (s.trim() === "" || !Number.isFinite(n)) throw new Error("not a number");
    return n;
  };
  switch (option.kind) {
    case "int":
      if (!/^-?\d+$/.test(text)) throw new Error("not a whole number");
      return Number(text);
    case "float":
      return num(text);
    case "number": {
      const n = num(text);
      if (n >= 1 && !Number.isInteger(n)) throw new Error("a whole number, or a fraction below 1");
      return n;
    }
    case "floats": {
      const parts = text.split(",").filter((s) => s.trim());
      return parts.length > 1 ? parts.map(num) : num(parts[0]);
    }
    case "list":
      return text.split(/\s+/).filter(Boolean);
    default:
      return text;
  }
}

// -- the cards around the form

function presetCard(presets, form) {
  const pick = (key, labels) => [...new Set(presets.map((p) => p[key]))].map((v) => [v, labels(v)]);
  const lang = currentLanguage() === "zh-CN" ? "zh" : "en";
  const labelOf = (key) => (v) => {
    const p = presets.find((x) => x[key] === v);
    return p.label[lang].split(" · ")[{ kind: 0, base: 1, memory: 2 }[key]];
  };
  const kind = select(pick("kind", labelOf("kind")), "character", { id: "preset-kind" });
  const base = select(pick("base", labelOf("base")), "sd15", { id: "preset-base" });
  const memory = select(pick("memory", labelOf("memory")), 12, { id: "preset-memory" });
  const explained = h("ul", { class: "preset-values", id: "preset-values" });
  const current = () => presets.find((p) => p.kind === kind.value && p.base === base.value && String(p.memory) === memory.value);
  const describe = () =>
    clear(
      explained,
      Object.entries(current().values).map(([name, v]) => h("li", {}, raw(`${name} = ${shown(v.value)}`, "code"), " — ", v[lang])),
    );
  for (const s of [kind, base, memory]) s.addEventListener("change", describe);
  describe();
  const apply = () => {
    for (const [name, v] of Object.entries(current().values)) form.set(name, v.value);
    form.changed();
    toast(t("Preset {name} filled in.", { name: current().label[lang] }));
  };
  return h(
    "div",
    { class: "card", id: "presets" },
    h("h2", {}, t("Presets")),
    h("div", { class: "row" }, field(t("Kind of LoRA"), kind), field(t("Base model"), base), field(t("Graphics card memory"), memory), h("button", { type: "button", id: "apply-preset", class: "primary", onclick: apply }, t("Fill in the preset"))),
    h("details", { open: true }, h("summary", {}, t("What this preset sets, and why")), explained),
  );
}

function sourceCard(datasets, models, form) {
  const datasetSelect = select(
    [["", t("(choose)")], ...datasets.map((d) => [d.location, d.name])],
    "",
    { id: "dataset-pick", translate: "no", onchange: (e) => e.target.value && form.useDataset(datasets.find((d) => d.location === e.target.value)) },
  );
  const modelSelect = select(
    [["", t("(choose)")], ...models.filter((m) => m.kind !== "lora").map((m) => [m.location, m.location])],
    "",
    { id: "model-pick", translate: "no", onchange: (e) => e.target.value && (form.set("pretrained_model_name_or_path", e.target.value), form.changed()) },
  );
  return h(
    "div",
    { class: "card" },
    h("h2", {}, t("Pictures and base model")),
    h("div", { class: "row" }, field(t("Dataset of the workspace"), datasetSelect, t("Sets train_data_dir (and reg_data_dir).")), field(t("Base model of the workspace"), modelSelect)),
  );
}

function actionsCard(form) {
  const file = h("input", { type: "file", id: "import-file", accept: ".toml,text/plain" });
  const importToml = async () => {
    if (!file.files.length) return toast(t("Choose a TOML file first."), "error");
    try {
      const text = await file.files[0].text();
      const read = await api.post("/api/config/import", { config: text });
      form.reset();
      for (const [name, value] of Object.entries(read.values)) form.set(name, value);
      form.imported = read.datasets && read.datasets.datasets ? read.datasets : null;
      form.changed();
      const ignored = Object.keys(read.ignored);
      toast(ignored.length ? t("Imported; lorakit ignores: {names}", { names: ignored.join(", ") }) : t("Imported."));
    } catch (error) {
      toast(error.message, "error");
    }
  };
  const download = () => {
    const blob = new Blob([form.lastToml || form.toml().text], { type: "text/plain" });
    const link = h("a", { href: URL.createObjectURL(blob), download: `${form.get("output_name") || "lora"}.toml` });
    document.body.append(link);
    link.click();
    link.remove();
  };
  const save = async () => {
    try {
      const text = await form.finalToml();
      const saved = await api.put("/api/config", { location: `configs/${form.get("output_name") || "lora"}.toml`, text });
      toast(t("Saved as {location}.", { location: saved.location }));
    } catch (error) {
      toast(error.message, "error");
    }
  };
  const queue = async () => {
    try {
      const text = await form.finalToml();
      const job = await api.post("/api/jobs", { kind: "train", config: text });
      toast(t("Training queued as job {id}.", { id: job.id }));
      location.hash = `#/monitor?job=${job.id}`;
    } catch (error) {
      toast(error.message, "error");
    }
  };
  return h(
    "div",
    { class: "card", id: "train-actions" },
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "button", class: "primary", id: "queue-training", onclick: queue }, t("Add to queue")),
      h("button", { type: "button", id: "export-toml", onclick: download }, t("Download as TOML")),
      h("button", { type: "button", id: "save-config", onclick: save }, t("Save in configs/")),
    ),
    h("div", { class: "row" }, field(t("Import a TOML (lorakit, sd-scripts or lora-scripts)"), file), h("button", { type: "button", id: "import-toml", onclick: importToml }, t("Import"))),
  );
}

/** Problems with the same message once, with how many pictures have it (the first 6 kinds). */
function grouped(problems) {
  const seen = new Map();
  for (const p of problems) {
    const entry = seen.get(p.message) || { ...p, count: 0 };
    entry.count += 1;
    seen.set(p.message, entry);
  }
  const kinds = [...seen.values()].sort((a, b) => (a.level === "error" ? 0 : 1) - (b.level === "error" ? 0 : 1));
  return [
    kinds.slice(0, 6).map((p) => banner(p.level === "error" ? "error" : "warning", message(p.message), p.count > 1 ? h("span", { class: "badge" }, t("× {n} files", { n: p.count })) : null)),
    kinds.length > 6 ? h("p", { class: "hint" }, t("…and {n} more kinds of problems: the dataset check lists them all.", { n: kinds.length - 6 })) : null,
  ];
}

// -- the plan: steps per folder, the total and the warnings, as the user types

class PlanPanel {
  constructor(form) {
    this.form = form;
    this.subsets = [];
    this.last = null;
    this.sequence = 0;
    this.rowsKey = null; // which folders the rows were made for: kept while one types in them
    this.rows = new Map();
    this.messages = h("div", { id: "plan-messages" });
    this.subsetBox = h("div", { id: "plan-subsets" });
    this.total = h("p", { class: "total", id: "plan-total" });
    this.exact = h("p", { class: "muted", id: "plan-exact" });
    this.notes = h("div", { id: "plan-notes" });
    this.element = h(
      "aside",
      { class: "card", id: "plan", "aria-live": "polite" },
      h("h2", {}, t("Steps and warnings")),
      h("div", { id: "plan-body" }, this.messages, this.subsetBox, this.total, this.exact, this.notes),
    );
    this.request = debounce(() => this.fetch(), 350);
    form.finalToml = () => this.finalToml();
  }

  stop() {
    this.sequence = -1;
  }

  schedule(delay) {
    this.drawFormula();
    if (delay === 0) this.fetch();
    else this.request();
  }

  async fetch() {
    const mine = ++this.sequence;
    const { text, bad } = this.form.toml(this.subsets);
    this.form.lastToml = text;
    try {
      const plan = await api.post("/api/config/plan", { config: text });
      if (mine !== this.sequence) return;
      this.last = plan;
      this.subsets = plan.datasets.flatMap((d) => d.subsets);
      this.draw(bad, null);
    } catch (error) {
      if (mine === this.sequence) this.draw(bad, error.message);
    }
  }

  epochs() {
    const typed = Number(this.form.get("max_train_epochs"));
    return Number.isInteger(typed) && typed > 0 ? typed : this.last ? this.last.epochs : 1;
  }

  batch() {
    const batch = Number(this.form.get("train_batch_size")) || 1;
    return batch * (Number(this.form.get("gradient_accumulation_steps")) || 1);
  }

  draw(bad, error) {
    const plan = this.last;
    clear(
      this.messages,
      error ? banner("error", message(error)) : null,
      bad.length ? banner("error", t("These fields do not read as their kind of value:"), " ", raw(bad.join(", "))) : null,
    );
    clear(
      this.notes,
      plan && plan.warnings.length ? h("div", { id: "plan-warnings" }, h("h3", {}, t("Warnings")), plan.warnings.map((w) => banner("warning", message(w)))) : null,
      plan && plan.problems.length ? h("div", { id: "plan-problems" }, h("h3", {}, t("To do before training")), grouped(plan.problems)) : null,
      plan && Object.keys(plan.ignored).length ? h("p", { class: "hint" }, t("lorakit ignores:"), " ", raw(Object.keys(plan.ignored).join(", "))) : null,
    );
    this.drawFormula();
  }

  /** One row per dataset folder, made once per set of folders (so typing in a repeats field is
   * never interrupted), with its numbers brought up to date on every change. */
  rowFor(s) {
    const input = h("input", { type: "number", min: 1, class: "repeats", id: uid("repeats"), "aria-label": t("Repeats of {folder}", { folder: s.location ? baseName(s.location) : s.name }) });
    input.addEventListener("input", () => {
      const n = Number(input.value);
      if (Number.isInteger(n) && n >= 1) {
        this.form.repeats.set(s.location, n);
        this.schedule();
      }
    });
    const parts = { input, images: h("span"), epochs: h("span"), batch: h("span"), steps: h("span") };
    parts.element = h(
      "div",
      { class: "subset-row", dataset: { location: s.location || "" } },
      h("div", {}, raw(s.location ? baseName(s.location) : s.name, "strong"), s.is_reg ? [" ", h("span", { class: "badge" }, t("regularization"))] : null),
      h("div", { class: "formula" }, parts.images, " × ", input, " ", t("repeats"), " × ", parts.epochs, " / ", parts.batch, " = ", parts.steps),
    );
    return parts;
  }

  drawFormula() {
    const key = this.subsets.map((s) => s.location || s.name).join("|");
    if (key !== this.rowsKey) {
      this.rowsKey = key;
      this.rows = new Map(this.subsets.map((s) => [s.location || s.name, this.rowFor(s)]));
      clear(this.subsetBox, [...this.rows.values()].map((r) => r.element));
      if (!this.subsets.length) this.subsetBox.append(h("p", { class: "muted" }, t("Choose a dataset to see the steps.")));
    }
    const epochs = this.epochs();
    const batch = this.batch();
    const fixed = Boolean(this.form.get("dataset_config")); // a dataset TOML sets its own repeats
    let samples = 0;
    for (const s of this.subsets) {
      const row = this.rows.get(s.location || s.name);
      const repeats = this.form.repeats.get(s.location) ?? s.num_repeats;
      samples += s.images * repeats;
      if (document.activeElement !== row.input) row.input.value = String(repeats);
      row.input.disabled = fixed;
      row.images.textContent = t("{images} pictures", { images: s.images });
      row.epochs.textContent = t("{n} epochs", { n: epochs });
      row.batch.textContent = t("batch {n}", { n: batch });
      row.steps.textContent = String(Math.ceil((s.images * repeats * epochs) / batch));
    }
    const estimate = Math.ceil((samples * epochs) / batch);
    const exact = this.last && this.last.formula_steps === estimate ? this.last.total_steps : null;
    this.total.dataset.steps = String(exact ?? estimate);
    this.total.textContent = t("Total: {n} steps", { n: exact ?? estimate });
    this.exact.textContent = this.last ? t("{per} steps per epoch × {epochs} epochs (buckets round up per bucket).", { per: this.last.steps_per_epoch, epochs: this.last.epochs }) : "";
  }

  async finalToml() {
    const prompts = this.form.prompts.value.trim();
    const extra = {};
    if (prompts) {
      const saved = await api.put("/api/prompts", { location: `configs/${this.form.get("output_name") || "lora"}-prompts.txt`, text: prompts });
      this.form.set("sample_prompts", saved.location);
      extra.sample_prompts = saved.location;
    }
    const { text, bad } = this.form.toml(this.subsets, extra);
    if (bad.length) throw new Error(t("Fix the marked fields first: {names}", { names: bad.join(", ") }));
    return text;
  }
}
