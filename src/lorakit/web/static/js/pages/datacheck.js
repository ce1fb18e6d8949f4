// The dataset check report (`lorakit dataset check`) with each problem beside its picture, and
// the bucket preview: which bucket each picture lands in and how much of it is cut away.
import { api } from "../api.js";
import { banner, baseName, clear, field, h, message, raw, thumb, uid } from "../dom.js";
import { t } from "../i18n.js";

const PICTURE = /\.(png|jpe?g|webp|bmp|avif)$/i;

/** The training size both reports use; one set of fields per panel, sharing their values. */
export function sizeSettings() {
  const values = { resolution: "512", enable_bucket: true, bucket_reso_steps: "64", min_bucket_reso: "256", max_bucket_reso: "1024" };
  return {
    values: () => ({ ...values }),
    element(prefix) {
      const text = (key, label, hint) => {
        const input = h("input", { type: "text", id: `${prefix}-${key}`, value: values[key], inputmode: "numeric" });
        input.addEventListener("input", () => {
          values[key] = input.value.trim();
          for (const other of document.querySelectorAll(`input[id$="-${key}"]`)) if (other !== input) other.value = input.value;
        });
        return field(label, input, hint);
      };
      const bucket = h("input", { type: "checkbox", id: `${prefix}-enable_bucket`, checked: values.enable_bucket });
      bucket.addEventListener("change", () => {
        values.enable_bucket = bucket.checked;
        for (const other of document.querySelectorAll('input[id$="-enable_bucket"]')) other.checked = bucket.checked;
      });
      return h(
        "div",
        { class: "row" },
        text("resolution", t("Training resolution"), t("The resolution you will train at: 512 for SD1.5, 1024 for SDXL.")),
        h("div", { class: "field check" }, bucket, h("label", { for: bucket.id }, t("Aspect-ratio buckets"))),
        text("bucket_reso_steps", t("Bucket step (pixels)")),
        text("min_bucket_reso", t("Smallest bucket side")),
        text("max_bucket_reso", t("Largest bucket side")),
      );
    },
  };
}

function pictureOf(location, listing) {
  if (!location) return null;
  if (PICTURE.test(location)) return location;
  const stem = location.replace(/\.[^./]+$/, "");
  const found = listing.images.find((i) => i.location.replace(/\.[^./]+$/, "") === stem);
  return found ? found.location : null;
}

const LEVELS = { error: () => t("error"), warning: () => t("warning"), note: () => t("note") };

export async function renderCheck(out, train, listing, size) {
  clear(out, h("p", { class: "muted" }, t("Checking every picture…")));
  let report;
  try {
    report = await api.get("/api/dataset/check", {
      location: train,
      reg_location: listing.reg,
      caption_extension: listing.caption_extension,
      resolution: size.resolution,
      enable_bucket: size.enable_bucket,
      bucket_reso_steps: size.bucket_reso_steps,
      min_bucket_reso: size.min_bucket_reso,
      max_bucket_reso: size.max_bucket_reso,
    });
  } catch (error) {
    clear(out, banner("error", error.message));
    return;
  }
  const errors = report.problems.filter((p) => p.level === "error").length;
  const warnings = report.problems.filter((p) => p.level === "warning").length;
  clear(
    out,
    report.ready
      ? banner(warnings ? "warning" : "ok", warnings ? t("Ready to train; read the warnings first ({n}).", { n: warnings }) : t("Ready to train."))
      : banner("error", t("{n} errors must be fixed before training.", { n: errors })),
    h("div", { class: "card", id: "check-summary" }, h("h3", {}, t("What training will see")), summary(report)),
    h(
      "div",
      { class: "card", id: "check-problems" },
      h("h3", {}, t("Problems and notes ({n})", { n: report.problems.length })),
      report.problems.length ? report.problems.map((p) => problemRow(p, listing)) : h("p", { class: "muted" }, t("No problems.")),
    ),
  );
}

function summary(report) {
  if (!report.datasets.length) return h("p", { class: "muted" }, t("Nothing could be read; see the problems."));
  return report.datasets.map((d) =>
    h(
      "div",
      {},
      h("p", {}, t("Resolution {w}×{h}, batch size {batch}, {steps} steps per epoch.", { w: d.resolution[0], h: d.resolution[1], batch: d.batch_size, steps: d.steps_per_epoch })),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, h("th", {}, t("Folder")), h("th", {}, t("Pictures")), h("th", {}, t("Repeats")), h("th", {}, t("Per epoch")), h("th", {}, t("Most used tags")))),
          h(
            "tbody",
            {},
            d.subsets.map((s) =>
              h(
                "tr",
                {},
                h("td", {}, raw(s.name), s.is_reg ? [" ", h("span", { class: "badge" }, t("regularization"))] : null),
                h("td", {}, String(s.images)),
                h("td", {}, String(s.num_repeats)),
                h("td", {}, String(s.samples)),
                h("td", {}, raw(Object.entries(s.top_tags).slice(0, 6).map(([tag, n]) => `${tag} ${n}`).join(", "))),
              ),
            ),
          ),
        ),
      ),
      h("p", {}, t("Buckets:"), " ", raw(Object.entries(d.buckets).map(([b, n]) => `${b}: ${n}`).join(", "))),
    ),
  );
}

function problemRow(problem, listing) {
  const picture = pictureOf(problem.location, listing);
  return h(
    "div",
    { class: `problem ${problem.level}` },
    picture ? h("img", { src: thumb(picture, 96), alt: t("Picture {name}", { name: baseName(picture) }), width: 64, height: 64, loading: "lazy" }) : null,
    h(
      "div",
      {},
      h("span", { class: `badge ${problem.level}` }, (LEVELS[problem.level] || LEVELS.note)()),
      " ",
      problem.location ? raw(problem.location, "code") : null,
      h("div", {}, message(problem.message)),
    ),
  );
}

export async function renderBuckets(out, train, listing, size) {
  clear(out, h("p", { class: "muted" }, t("Reading the picture sizes…")));
  let preview;
  try {
    preview = await api.get("/api/dataset/buckets", { location: train, reg_location: listing.reg, caption_extension: listing.caption_extension, ...size });
  } catch (error) {
    clear(out, banner("error", error.message));
    return;
  }
  clear(
    out,
    preview.errors.map((e) => banner("error", message(e))),
    h("div", { class: "card" }, h("h3", {}, t("Pictures per bucket")), h("p", {}, raw(Object.entries(preview.buckets).map(([b, n]) => `${b}: ${n}`).join(", ") || "–"))),
    h(
      "div",
      { class: "card table-wrap" },
      h(
        "table",
        { id: "bucket-table" },
        h("thead", {}, h("tr", {}, h("th", {}, t("Picture")), h("th", {}, t("Size")), h("th", {}, t("Bucket")), h("th", {}, t("Cut away")))),
        h("tbody", {}, preview.pictures.map(bucketRow)),
      ),
    ),
  );
}

function bucketRow(p) {
  // the picture scaled into a 120 px box, with the kept part (the bucket) outlined
  const scale = 120 / Math.max(p.resized[0], p.resized[1]);
  const image = h("div", { class: "image" }, h("img", { src: thumb(p.location, 256), alt: t("Picture {name}", { name: baseName(p.location) }), loading: "lazy" }));
  image.style.width = `${p.resized[0] * scale}px`;
  image.style.height = `${p.resized[1] * scale}px`;
  const kept = h("div", { class: "kept", "aria-hidden": "true" });
  kept.style.left = `${(p.crop[0] / p.resized[0]) * 100}%`;
  kept.style.top = `${(p.crop[1] / p.resized[1]) * 100}%`;
  kept.style.width = `${(p.bucket[0] / p.resized[0]) * 100}%`;
  kept.style.height = `${(p.bucket[1] / p.resized[1]) * 100}%`;
  image.append(kept);
  const id = uid("bucket");
  return h(
    "tr",
    { dataset: { location: p.location } },
    h("td", { id }, h("div", { class: "bucket-frame" }, image), raw(baseName(p.location), "span", { class: "name" })),
    h("td", {}, raw(`${p.size[0]}×${p.size[1]}`)),
    h("td", {}, raw(`${p.bucket[0]}×${p.bucket[1]}`)),
    h("td", { class: p.cut > 0.4 ? "badge warning" : "" }, `${Math.round(p.cut * 100)}%`),
  );
}
