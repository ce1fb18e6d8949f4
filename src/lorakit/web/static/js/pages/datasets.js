// Datasets: pick or create one (upload pictures, or open an allowed folder), then its pictures
// and tags (the tag editor), the dataset check and the bucket preview.
import { api } from "../api.js";
import { clear, field, h, raw, toast } from "../dom.js";
import { t } from "../i18n.js";
import { describeTools } from "./autotag.js";
import { renderBuckets, renderCheck, sizeSettings } from "./datacheck.js";
import { TagEditor } from "./tageditor.js";

export async function render(root, params) {
  const [datasets, roots] = await Promise.all([api.get("/api/datasets"), api.get("/api/roots")]);
  const view = h("section", { id: "dataset-view", "aria-live": "polite" });
  root.append(h("h1", {}, t("Datasets")), h("div", { class: "two" }, pickCard(datasets, roots), createCard()), view);
  const wanted = params.get("open") || (datasets[0] && datasets[0].location);
  const stops = [];
  if (wanted) await openDataset(view, wanted, params.get("ext"), stops);
  else clear(view, h("div", { class: "card" }, h("p", {}, t("No dataset yet: create one on the left by uploading pictures."))));
  return () => stops.forEach((stop) => stop());

  function pickCard(list, allowed) {
    const input = h("input", { type: "text", id: "open-location", placeholder: t("datasets/name or @folder/name") });
    const others = allowed.filter((r) => r.prefix).map((r) => r.prefix);
    return h(
      "div",
      { class: "card" },
      h("h2", {}, t("Pick a dataset")),
      list.length
        ? h(
            "div",
            { class: "dataset-list" },
            list.map((d) =>
              h(
                "button",
                { class: "dataset", dataset: { location: d.location }, onclick: () => go(d.location) },
                raw(d.name),
                " ",
                h("span", { class: "badge" }, t("{n} pictures", { n: d.images })),
              ),
            ),
          )
        : h("p", { class: "muted" }, t("The workspace has no datasets yet.")),
      h(
        "form",
        { class: "row", onsubmit: (e) => (e.preventDefault(), input.value.trim() && go(input.value.trim())) },
        field(t("Or open a folder"), input, others.length ? t("Allowed folders: {list}", { list: others.join(", ") }) : t("Folders outside the workspace must be allowed in settings.toml.")),
        h("button", { type: "submit" }, t("Open")),
      ),
    );
  }

  function createCard() {
    const name = h("input", { type: "text", id: "new-name", required: true, autocomplete: "off" });
    const tokens = h("input", { type: "text", id: "new-class", required: true, autocomplete: "off" });
    const repeats = h("input", { type: "number", id: "new-repeats", min: 1, value: "10" });
    const files = h("input", { type: "file", id: "new-files", multiple: true, accept: "image/*,.txt,.caption" });
    const submit = async (e) => {
      e.preventDefault();
      try {
        const made = await api.post("/api/datasets", { name: name.value, repeats: Number(repeats.value), class_tokens: tokens.value });
        if (files.files.length) await upload(made.upload_to, files.files);
        toast(t("Dataset {name} created.", { name: name.value }));
        go(made.location);
      } catch (error) {
        toast(error.message, "error");
      }
    };
    return h(
      "form",
      { class: "card", onsubmit: submit, id: "create-dataset" },
      h("h2", {}, t("New dataset")),
      field(t("Name"), name),
      field(t("Trigger word or class"), tokens, t("The folder is named REPEATS_THIS, as sd-scripts expects; pictures without a caption are trained with this text.")),
      field(t("Repeats per epoch"), repeats),
      field(t("Pictures and captions"), files, t("Pictures, and .txt captions with the same names.")),
      h("button", { type: "submit", class: "primary" }, t("Create and upload")),
    );
  }
}

export async function upload(location, fileList) {
  const form = new FormData();
  form.append("location", location);
  for (const file of fileList) form.append("files", file);
  return api.post("/api/dataset/upload", form);
}

function go(where) {
  const target = `#/datasets?open=${encodeURIComponent(where)}`;
  if (window.location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else window.location.hash = target;
}

async function openDataset(view, location, extension, stops) {
  let listing;
  try {
    listing = await api.get("/api/dataset", { location, caption_extension: extension });
  } catch (error) {
    clear(view, h("div", { class: "banner error", role: "alert" }, error.message));
    return;
  }
  for (const b of document.querySelectorAll("button.dataset")) b.setAttribute("aria-pressed", String(b.dataset.location === location));
  const editor = new TagEditor(location, listing, extension);
  const summary = h("p", { class: "muted", id: "dataset-summary" });
  const describeSummary = () =>
    clear(summary, t("{n} pictures; captions: {ext}", { n: editor.listing.images.length, ext: editor.listing.caption_extension || t("none yet") }));
  describeSummary();
  // auto-tag / caption jobs: when one is done, its files are read again (with its extension)
  const describe = await describeTools(location, listing, async (job, ext) => {
    if (job.state !== "done") return;
    await editor.reload(ext);
    describeSummary();
    history.replaceState(null, "", `#/datasets?open=${encodeURIComponent(location)}&ext=${encodeURIComponent(ext)}`);
    toast(t("Job {id} is done: the captions and tags are shown again.", { id: job.id }));
  });
  stops.push(describe.stop);
  const settings = sizeSettings();
  const panels = {
    pictures: h("div", { id: "panel-pictures", role: "tabpanel" }),
    check: h("div", { id: "panel-check", role: "tabpanel", hidden: true }),
    buckets: h("div", { id: "panel-buckets", role: "tabpanel", hidden: true }),
  };
  const labels = { pictures: t("Pictures and tags"), check: t("Check report"), buckets: t("Buckets") };
  const tabs = h(
    "div",
    { class: "tabs", role: "tablist" },
    Object.keys(panels).map((key) =>
      h("button", { role: "tab", id: `tab-${key}`, "aria-controls": `panel-${key}`, "aria-selected": String(key === "pictures"), onclick: () => showTab(key) }, labels[key]),
    ),
  );
  const train = listing.train || location;
  const subsetFolders = [...new Set(listing.images.map((i) => i.location.split("/").slice(0, -1).join("/")))];
  const more = h("input", { type: "file", id: "more-files", multiple: true, accept: "image/*,.txt,.caption" });
  const target = h(
    "select",
    { id: "more-target" },
    (subsetFolders.length ? subsetFolders : [location]).map((f) => h("option", { value: f, translate: "no" }, f)),
  );
  clear(
    view,
    h(
      "div",
      { class: "card" },
      h("h2", {}, t("Dataset"), " ", raw(location, "code")),
      summary,
      h(
        "div",
        { class: "buttons" },
        h("a", { class: "button primary", href: `#/train?dataset=${encodeURIComponent(location)}` }, t("Train on this dataset")),
        describe.buttons,
      ),
      describe.parts,
      h(
        "details",
        {},
        h("summary", {}, t("Add pictures")),
        h(
          "form",
          {
            class: "row",
            onsubmit: async (e) => {
              e.preventDefault();
              try {
                await upload(target.value, more.files);
                toast(t("{n} files uploaded.", { n: more.files.length }));
                go(location);
              } catch (error) {
                toast(error.message, "error");
              }
            },
          },
          field(t("Files"), more),
          field(t("Into the folder"), target),
          h("button", { type: "submit" }, t("Upload")),
        ),
      ),
    ),
    tabs,
    panels.pictures,
    panels.check,
    panels.buckets,
  );
  editor.mount(panels.pictures);
  const checkButton = h("button", { class: "primary", id: "run-check", onclick: () => renderCheck(checkOut, train, listing, settings.values()) }, t("Check the dataset"));
  const checkOut = h("div", { id: "check-report" });
  panels.check.append(h("div", { class: "card" }, settings.element("check"), checkButton), checkOut);
  const bucketOut = h("div", { id: "bucket-preview" });
  panels.buckets.append(
    h("div", { class: "card" }, settings.element("buckets"), h("button", { class: "primary", id: "run-buckets", onclick: () => renderBuckets(bucketOut, train, listing, settings.values()) }, t("Show the buckets"))),
    bucketOut,
  );

  function showTab(key) {
    for (const [name, panel] of Object.entries(panels)) {
      panel.hidden = name !== key;
      document.getElementById(`tab-${name}`).setAttribute("aria-selected", String(name === key));
    }
    if (key === "check" && !checkOut.childElementCount) checkButton.click();
    if (key === "buckets" && !bucketOut.childElementCount) document.getElementById("run-buckets").click();
  }
}
