// The tag editor: tag frequencies, a filter (pictures with all / any of some tags, without
// others), a selection, and edits of the selection's captions through the API, which uses the
// library of `lorakit tags` and backs every changed file up. Undo puts a backup back; redo sends
// the same edit again. Pictures are drawn in pages as one scrolls, so thousands stay smooth.
import { api } from "../api.js";
import { baseName, clear, field, h, raw, thumb, toast, uid } from "../dom.js";
import { t } from "../i18n.js";

const PAGE = 120;
const BACKUP = "/.lorakit-backup/";

export class TagEditor {
  constructor(location, listing, extension) {
    this.location = location;
    this.listing = listing;
    this.extension = extension || undefined; // the caption files shown (default: the server's choice)
    this.include = new Set();
    this.exclude = new Set();
    this.mode = "all";
    this.selected = new Set();
    this.undo = [];
    this.redo = [];
    this.limit = PAGE;
    this.search = "";
  }

  mount(root) {
    this.tagBox = h("div", { class: "card tag-table", id: "tag-table" });
    this.actions = h("div", { class: "card actions", id: "tag-actions" });
    this.grid = h("div", { class: "pictures", id: "pictures" });
    this.sentinel = h("div", { class: "sentinel", "aria-hidden": "true" });
    clear(root, h("div", { class: "columns" }, this.tagBox, h("div", {}, this.actions, this.grid, this.sentinel)));
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && this.limit < this.shown().length) {
        this.limit += PAGE;
        this.drawPictures(true);
      }
    });
    this.observer.observe(this.sentinel);
    this.draw();
  }

  // -- what is shown
  counts() {
    const counts = new Map();
    for (const image of this.listing.images) for (const tag of new Set(image.tags)) counts.set(tag, (counts.get(tag) || 0) + 1);
    return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  }

  shown() {
    const include = [...this.include];
    return this.listing.images.filter((image) => {
      const tags = new Set(image.tags);
      if (include.length && !(this.mode === "all" ? include.every((x) => tags.has(x)) : include.some((x) => tags.has(x)))) return false;
      return ![...this.exclude].some((x) => tags.has(x));
    });
  }

  draw() {
    this.drawTags();
    this.drawActions();
    this.limit = PAGE;
    this.drawPictures(false);
  }

  drawTags() {
    const search = h("input", { type: "search", id: "tag-search", value: this.search, autocomplete: "off" });
    search.addEventListener("input", () => {
      this.search = search.value.trim().toLowerCase();
      this.drawTagRows(body);
    });
    const mode = h(
      "select",
      { id: "filter-mode", onchange: (e) => ((this.mode = e.target.value), this.afterFilter()) },
      h("option", { value: "all", selected: this.mode === "all" }, t("with all of the chosen tags (and)")),
      h("option", { value: "any", selected: this.mode === "any" }, t("with any of the chosen tags (or)")),
    );
    const body = h("tbody");
    clear(
      this.tagBox,
      h("h2", {}, t("Tags")),
      field(t("Find a tag"), search),
      field(t("Show pictures"), mode, t("“With” keeps pictures that have the tag, “without” (not) hides them.")),
      h("button", { class: "small", id: "filter-clear", onclick: () => (this.include.clear(), this.exclude.clear(), this.afterFilter()) }, t("Clear the filter")),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, t("Tag")), h("th", { class: "count" }, t("Pictures")), h("th", {}, t("Filter")))), body),
    );
    this.drawTagRows(body);
  }

  drawTagRows(body) {
    const rows = this.counts().filter(([tag]) => !this.search || tag.toLowerCase().includes(this.search));
    clear(
      body,
      rows.map(([tag, n], i) =>
        h(
          "tr",
          { class: this.include.has(tag) ? "include" : this.exclude.has(tag) ? "exclude" : "", dataset: { tag } },
          h("td", {}, raw(tag, "span", { id: `tag-${i}` })),
          h("td", { class: "count" }, String(n)),
          h(
            "td",
            { class: "filter-buttons" },
            // the buttons are named "with TAG" / "without TAG" from their word and the tag's cell
            h("button", { class: "small with", id: `with-${i}`, "aria-labelledby": `with-${i} tag-${i}`, "aria-pressed": String(this.include.has(tag)), onclick: () => this.toggle(this.include, this.exclude, tag) }, t("with")),
            h("button", { class: "small without", id: `without-${i}`, "aria-labelledby": `without-${i} tag-${i}`, "aria-pressed": String(this.exclude.has(tag)), onclick: () => this.toggle(this.exclude, this.include, tag) }, t("without")),
          ),
        ),
      ),
    );
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 3, class: "muted" }, t("No tags."))));
  }

  toggle(set, other, tag) {
    other.delete(tag);
    if (set.has(tag)) set.delete(tag);
    else set.add(tag);
    this.afterFilter();
  }

  afterFilter() {
    this.drawTags();
    this.limit = PAGE;
    this.drawPictures(false);
    this.drawActions();
  }

  // -- the selection and the edits
  drawActions() {
    const shown = this.shown();
    const tags = h("input", { type: "text", id: "edit-tags", autocomplete: "off" });
    const old = h("input", { type: "text", id: "replace-old", autocomplete: "off" });
    const replacement = h("input", { type: "text", id: "replace-new", autocomplete: "off" });
    const none = this.selected.size === 0;
    const list = () => tags.value.split(",").map((x) => x.trim()).filter(Boolean);
    const last = this.undo[this.undo.length - 1];
    const next = this.redo[this.redo.length - 1];
    clear(
      this.actions,
      h("p", { id: "selection-count" }, t("{shown} of {total} pictures shown, {selected} selected", { shown: shown.length, total: this.listing.images.length, selected: this.selected.size })),
      h(
        "div",
        { class: "buttons" },
        h("button", { id: "select-shown", onclick: () => (shown.forEach((i) => this.selected.add(i.location)), this.refreshSelection()) }, t("Select the shown pictures")),
        h("button", { id: "select-none", onclick: () => (this.selected.clear(), this.refreshSelection()) }, t("Select none")),
        h("button", { id: "undo", disabled: !last, onclick: () => this.undoLast() }, last ? t("Undo: {what}", { what: last.label }) : t("Undo")),
        h("button", { id: "redo", disabled: !next, onclick: () => this.redoLast() }, next ? t("Redo: {what}", { what: next.label }) : t("Redo")),
      ),
      h(
        "div",
        { class: "row" },
        field(t("Tags (separate with commas)"), tags),
        h(
          "div",
          { class: "buttons" },
          h("button", { id: "add-front", disabled: none, onclick: () => this.edit({ action: "add", tags: list() }, t("put “{tags}” first", { tags: list().join(", ") })) }, t("Put first (trigger word)")),
          h("button", { id: "add-end", disabled: none, onclick: () => this.edit({ action: "add", tags: list(), at_end: true }, t("add “{tags}”", { tags: list().join(", ") })) }, t("Add at the end")),
          h("button", { id: "remove-tags", class: "danger", disabled: none, onclick: () => this.edit({ action: "remove", tags: list() }, t("remove “{tags}”", { tags: list().join(", ") })) }, t("Remove")),
        ),
      ),
      h(
        "div",
        { class: "row" },
        field(t("Replace the tag"), old),
        field(t("with"), replacement),
        h("button", { id: "replace", disabled: none, onclick: () => this.edit({ action: "replace", old: old.value.trim(), new: replacement.value.trim() }, t("replace “{old}”", { old: old.value.trim() })) }, t("Replace")),
      ),
      none ? h("p", { class: "hint" }, t("Select pictures first: the edits change the selected pictures' captions (a backup is kept).")) : null,
    );
  }

  refreshSelection() {
    for (const card of this.grid.querySelectorAll(".picture")) {
      const on = this.selected.has(card.dataset.location);
      card.classList.toggle("selected", on);
      card.querySelector("input[type=checkbox]").checked = on;
    }
    this.drawActions();
  }

  async edit(change, label) {
    if ((change.action !== "replace" && !change.tags.length) || (change.action === "replace" && !change.old)) {
      toast(t("Write the tags first."), "error");
      return;
    }
    const body = { location: this.location, files: [...this.selected], caption_extension: this.listing.caption_extension, ...change };
    await this.send({ method: "post", url: "/api/dataset/tags", body }, label);
  }

  /** Send an edit, remember how to undo it (its backup) and how to do it again. */
  async send(request, label, fromRedo = false) {
    try {
      const answer = await api[request.method](request.url, request.body);
      const changed = answer.changed ? answer.changed.length : 1;
      if (answer.backup) {
        const [folder, name] = answer.backup.split(BACKUP);
        this.undo.push({ label, request, restore: { location: folder, backup: name } });
        if (!fromRedo) this.redo = [];
      }
      toast(answer.changed ? t("{n} captions changed.", { n: changed }) : t("Caption saved."));
      await this.reload();
    } catch (error) {
      toast(error.message, "error");
    }
  }

  async undoLast() {
    const step = this.undo.pop();
    try {
      await api.post("/api/dataset/tags/restore", step.restore);
      this.redo.push(step);
      toast(t("Undone: {what}", { what: step.label }));
    } catch (error) {
      this.undo.push(step);
      toast(error.message, "error");
    }
    await this.reload();
  }

  async redoLast() {
    const step = this.redo.pop();
    await this.send(step.request, step.label, true);
  }

  /** Read the captions again; `extension` (after an auto-tag or caption job) is kept from then on. */
  async reload(extension) {
    if (extension) this.extension = extension;
    this.listing = await api.get("/api/dataset", { location: this.location, caption_extension: this.extension });
    const known = new Set(this.listing.images.map((i) => i.location));
    for (const location of [...this.selected]) if (!known.has(location)) this.selected.delete(location);
    this.drawTags();
    this.drawActions();
    this.drawPictures(false, true);
  }

  // -- the pictures
  drawPictures(more, keepLimit = false) {
    const shown = this.shown();
    const start = more ? this.grid.childElementCount : 0;
    if (!more && !keepLimit) this.limit = PAGE;
    if (!more) this.grid.replaceChildren();
    for (const image of shown.slice(start, this.limit)) this.grid.append(this.card(image));
    if (!shown.length) this.grid.append(h("p", { class: "muted" }, t("No picture matches the filter.")));
  }

  card(image) {
    const name = baseName(image.location);
    const box = h("input", { type: "checkbox", id: uid("pick"), checked: this.selected.has(image.location) });
    const card = h("article", { class: `picture${this.selected.has(image.location) ? " selected" : ""}`, dataset: { location: image.location } });
    box.addEventListener("change", () => {
      if (box.checked) this.selected.add(image.location);
      else this.selected.delete(image.location);
      card.classList.toggle("selected", box.checked);
      this.drawActions();
    });
    const caption = h("p", { class: "caption" }, image.caption === null ? h("em", { class: "muted" }, t("no caption")) : raw(image.caption.trim()));
    const editButton = h("button", { class: "small edit-caption", "aria-label": t("Edit the caption of {name}", { name }), onclick: () => this.editCaption(card, image, caption, editButton) }, t("Edit"));
    card.append(
      h("div", { class: "frame" }, h("img", { src: thumb(image.location), loading: "lazy", alt: t("Picture {name}", { name }), width: 150, height: 150 })),
      h("div", { class: "select-line" }, box, h("label", { for: box.id }, t("Select"))),
      raw(image.subset && image.subset !== "." ? `${image.subset}/${name}` : name, "p", { class: "name" }),
      caption,
      editButton,
    );
    return card;
  }

  editCaption(card, image, caption, editButton) {
    const name = baseName(image.location);
    const text = h("textarea", { id: uid("caption"), rows: 3, translate: "no" }, image.caption ? image.caption.trim() : "");
    const form = h(
      "form",
      {
        class: "caption-form",
        onsubmit: async (e) => {
          e.preventDefault();
          const body = { location: image.location, text: text.value, caption_extension: this.listing.caption_extension };
          await this.send({ method: "put", url: "/api/dataset/caption", body }, t("edit the caption of {name}", { name }));
        },
      },
      field(t("Caption of {name}", { name }), text),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary small" }, t("Save")), h("button", { type: "button", class: "small", onclick: () => form.replaceWith(caption, editButton) }, t("Cancel"))),
    );
    caption.remove();
    editButton.replaceWith(form);
    text.focus();
  }
}
