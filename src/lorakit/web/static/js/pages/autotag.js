// Auto-tag and caption, from the Datasets page: a small form each (the common options of
// `lorakit tag` / `lorakit caption`, with their defaults), queued as a job that runs the command;
// the job is followed below the buttons and the dataset's captions and tag table are read again
// when it is done.
import { api } from "../api.js";
import { banner, clear, field, h, raw, select, uid } from "../dom.js";
import { queueAndFollow, followJob } from "../follow.js";
import { t } from "../i18n.js";

const DEVICES = [["auto", "auto"], ["cpu", "cpu"], ["cuda", "cuda"]];
const DEFAULT_EXTENSION = { tag: ".txt", caption: ".caption" };

const defaultModel = (kind, models) => (models.find((m) => m.kind === kind && m.default) || {}).name || "";

function modelHint(kind, models) {
  const fallback = defaultModel(kind, models);
  const text =
    kind === "tagger"
      ? t("A name from the list (downloaded the first time it is used), a folder inside the workspace with model.onnx and selected_tags.csv, or a Hugging Face repo id. Empty:")
      : t("A name from the list (downloaded the first time it is used), a folder inside the workspace with a downloaded model, or a Hugging Face repo id. Empty:");
  return [text, " ", raw(fallback, "code")];
}

/** The fields both forms have: the model, the file extension, subfolders, and the "more" ones. */
function common(kind, listing, models) {
  const modelKind = kind === "tag" ? "tagger" : "captioner";
  const inSubfolders = listing.images.some((i) => i.subset && i.subset !== ".");
  const ext = listing.caption_extension;
  return {
    model: { name: "model", type: "model", list: `${modelKind}-models`, placeholder: defaultModel(modelKind, models), label: kind === "tag" ? t("Tagger") : t("Captioning model"), hint: modelHint(modelKind, models) },
    extension: {
      name: "caption_extension",
      type: "text",
      value: DEFAULT_EXTENSION[kind],
      label: t("File extension"),
      hint: ext ? t("The dataset's captions are {ext} files; the same extension replaces them (a backup is kept).", { ext }) : t("The dataset has no captions yet."),
    },
    recursive: {
      name: "recursive",
      type: "flag",
      value: inSubfolders,
      label: t("Include the subfolders"),
      hint: t("Needed when the pictures are in folders like 10_name; ticked when this dataset's are."),
    },
    more: [
      { name: "batch_size", type: "number", value: "1", min: 1, step: 1, label: t("Pictures at once"), hint: t("More is faster on a GPU and needs more memory.") },
      { name: "model_dir", type: "text", label: t("Folder of models downloaded by hand"), hint: t("One folder per repository, named owner_name (as sd-scripts keeps them). Empty: ~/.cache/lorakit/models.") },
      { name: "device", type: "select", choices: DEVICES, value: "auto", label: t("Run on"), hint: t("auto: the GPU when there is one.") },
    ],
  };
}

function tagForm(listing, models) {
  const c = common("tag", listing, models);
  const intro = t("A WD14 tagger writes a file of tags beside each picture. It runs as a job in the queue, as this command:");
  return {
    kind: "tag",
    title: t("Auto-tag the pictures"),
    intro: [intro, " ", raw("lorakit tag", "code")],
    fields: [
      c.model,
      { name: "thresh", type: "number", value: "0.35", min: 0, max: 1, step: 0.01, label: t("Threshold"), hint: t("How sure the tagger must be to write a tag, from 0 to 1. Lower: more tags, more mistakes. Default 0.35.") },
      { name: "character_threshold", type: "number", min: 0, step: 0.01, label: t("Threshold for character names"), hint: t("Empty: the threshold above. Above 1: no character names.") },
      { name: "always_first_tags", type: "text", label: t("Trigger word"), hint: [t("Put first in every file; several: separate them with commas. For example:"), " ", raw("sks", "code")] },
      { name: "undesired_tags", type: "text", label: t("Tags never written"), hint: [t("Separated by commas, for example:"), " ", raw("watermark, signature", "code")] },
      { name: "remove_underscore", type: "flag", label: t("Spaces instead of underscores"), hint: [t("For example"), " ", raw("long_hair → long hair", "code")] },
      { name: "append_tags", type: "select", choices: [["", t("Replace them (a backup is kept)")], ["yes", t("Keep them and add the new tags after them")]], label: t("Tags already in the files") },
      c.extension,
      c.recursive,
    ],
    more: c.more,
  };
}

function captionForm(listing, models) {
  const c = common("caption", listing, models);
  const intro = t("A captioning model (BLIP, Florence-2 or GIT) writes a sentence about each picture. It runs as a job in the queue, as this command:");
  return {
    kind: "caption",
    title: t("Caption the pictures"),
    fields: [
      c.model,
      { name: "prefix", type: "text", label: t("Text before each caption"), hint: [t("For example the trigger word:"), " ", raw("sks", "code")] },
      { name: "suffix", type: "text", label: t("Text after each caption") },
      c.extension,
      c.recursive,
      { name: "search", type: "select", choices: [["", t("the model's default")], ["sample", t("sampling: more varied captions")], ["beam_search", t("beam search: the likeliest caption, the same each time")]], label: t("How words are chosen"), hint: t("BLIP samples by default, Florence-2 and GIT use beam search.") },
      { name: "num_beams", type: "number", min: 1, step: 1, label: t("Beams"), hint: t("For beam search. Empty: the model's default.") },
      { name: "top_p", type: "number", value: "0.9", min: 0, max: 1, step: 0.05, label: t("Share of likely words kept"), hint: t("For sampling, from 0 to 1. Default 0.9.") },
    ],
    more: [
      { name: "max_length", type: "number", min: 1, step: 1, label: t("Longest caption (tokens)"), hint: t("Empty: the model's default.") },
      { name: "task", type: "select", choices: [["", "<CAPTION>"], ["<DETAILED_CAPTION>", "<DETAILED_CAPTION>"], ["<MORE_DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"]], label: t("Florence-2 task"), hint: t("Longer and longer captions.") },
      ...c.more,
    ],
    intro: [intro, " ", raw("lorakit caption", "code")],
  };
}

function control(spec) {
  const id = uid(spec.name);
  const name = spec.name;
  if (spec.type === "flag") return h("input", { type: "checkbox", id, name, checked: spec.value });
  if (spec.type === "select") return select(spec.choices, spec.value || "", { id, name, translate: spec.name === "append_tags" || spec.name === "search" ? null : "no" });
  const number = spec.type === "number";
  return h("input", { type: number ? "number" : "text", id, name, value: spec.value || "", min: spec.min, max: spec.max, step: spec.step, list: spec.list, placeholder: spec.placeholder, translate: spec.placeholder ? "no" : null, autocomplete: "off", spellcheck: "false" });
}

function fieldOf(spec, c) {
  const option = raw(`--${spec.name === "search" ? "beam_search / --sample" : spec.name}`, "code");
  const hint = spec.hint ? [spec.hint, " · ", option] : option;
  if (spec.type !== "flag") return field(spec.label, c, hint);
  c.setAttribute("aria-describedby", `${c.id}-hint`);
  return h("div", { class: "field check" }, c, h("label", { for: c.id }, spec.label), h("p", { class: "hint", id: `${c.id}-hint` }, hint));
}

function values(form, controls) {
  const args = { folder: form.location };
  for (const spec of [...form.fields, ...form.more]) {
    const c = controls.get(spec.name);
    const text = c.value.trim();
    if (spec.type === "flag") args[spec.name] = c.checked || null;
    else if (spec.name === "append_tags") args.append_tags = text ? true : null;
    else if (spec.name === "search") {
      if (text) args[text] = true;
    } else if (spec.type === "number") args[spec.name] = text ? Number(text) : null;
    else args[spec.name] = text || null;
  }
  return args;
}

/** The form in its dialog; each job it queues gets a line of `status`. */
function dialog(form, status, onDone, stops) {
  const controls = new Map([...form.fields, ...form.more].map((spec) => [spec.name, control(spec)]));
  const problem = h("div", { "aria-live": "polite" });
  const box = h("dialog", { id: `${form.kind}-dialog`, "aria-labelledby": `${form.kind}-title` });
  const submit = async (e) => {
    e.preventDefault();
    const args = values(form, controls);
    const extension = normalised(args.caption_extension || DEFAULT_EXTENSION[form.kind]);
    const line = h("div", { class: "job-line" });
    try {
      stops.push(await queueAndFollow({ kind: form.kind, args }, line, (job) => onDone(job, extension)));
      status.prepend(line);
      clear(problem);
      box.close();
    } catch (error) {
      clear(problem, banner("error", error.message));
    }
  };
  box.append(
    h(
      "form",
      { id: `${form.kind}-form`, onsubmit: submit },
      h("h2", { id: `${form.kind}-title` }, form.title),
      h("p", { class: "hint" }, form.intro),
      h("p", {}, t("Folder:"), " ", raw(form.location, "code")),
      form.fields.map((spec) => fieldOf(spec, controls.get(spec.name))),
      h("details", {}, h("summary", {}, t("More options")), form.more.map((spec) => fieldOf(spec, controls.get(spec.name)))),
      problem,
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", id: `${form.kind}-submit` }, t("Add to queue")), h("button", { type: "button", onclick: () => box.close() }, t("Cancel"))),
    ),
  );
  return box;
}

const normalised = (ext) => (ext.startsWith(".") ? ext : `.${ext}`);

/** The jobs of a tag or caption command line: the extension it writes. */
function extensionOf(job) {
  const given = job.command.find((a) => a.startsWith("--caption_extension="));
  return given ? given.split("=", 2)[1] : DEFAULT_EXTENSION[job.kind];
}

/** "Auto-tag" and "Caption" buttons, their dialogs and the status of their jobs. `onDone(job,
 * extension)` runs when a job has ended. Returns the elements and a stop function. */
export async function describeTools(location, listing, onDone) {
  const models = await api.get("/api/dataset/models");
  const status = h("div", { id: "describe-status", "aria-live": "polite" });
  const stops = [];
  const forms = [tagForm(listing, models), captionForm(listing, models)].map((f) => ({ ...f, location }));
  const dialogs = forms.map((f) => dialog(f, status, onDone, stops));
  const lists = ["tagger", "captioner"].map((kind) =>
    h("datalist", { id: `${kind}-models` }, models.filter((m) => m.kind === kind).map((m) => h("option", { value: m.name, label: `${m.size}, ${m.licence}` }))),
  );
  const buttons = [
    h("button", { id: "auto-tag", type: "button", onclick: () => dialogs[0].showModal() }, t("Auto-tag")),
    h("button", { id: "caption-pictures", type: "button", onclick: () => dialogs[1].showModal() }, t("Caption")),
  ];
  // a job queued before (this page was left and opened again) is followed too
  const running = await api.get("/api/jobs", { state: ["queued", "running"] });
  for (const job of running.filter((j) => ["tag", "caption"].includes(j.kind) && j.output_dir === location)) {
    const line = h("div", { class: "job-line" });
    status.append(line);
    stops.push(followJob(job.id, line, (ended) => onDone(ended, extensionOf(ended))));
  }
  return { buttons, parts: [status, ...dialogs, ...lists], stop: () => stops.forEach((stop) => stop()) };
}
