// The page shell: header (pages, language), hash routes (#/datasets, #/train?..., ...), and the
// current page, which may return a function that stops its timers and streams on leaving.
import { clear, h, raw, select } from "./dom.js";
import { LANGUAGES, currentLanguage, initLanguage, setLanguage, t } from "./i18n.js";

const PAGES = {
  datasets: { title: () => t("Datasets"), load: () => import("./pages/datasets.js") },
  train: { title: () => t("Train"), load: () => import("./pages/train.js") },
  queue: { title: () => t("Queue"), load: () => import("./pages/queue.js") },
  runs: { title: () => t("Runs"), load: () => import("./pages/runs.js") },
  grid: { title: () => t("Grid"), load: () => import("./pages/grid.js") },
  tools: { title: () => t("Tools"), load: () => import("./pages/tools.js") },
  monitor: { title: () => t("Monitor"), load: () => import("./pages/monitor.js"), hidden: true, under: "queue" },
  compare: { title: () => t("Compare runs"), load: () => import("./pages/compare.js"), hidden: true, under: "runs" },
};
let leave = null;

function header() {
  const nav = h(
    "nav",
    { "aria-label": t("Pages") },
    Object.entries(PAGES)
      .filter(([, p]) => !p.hidden)
      .map(([name, p]) => h("a", { href: `#/${name}`, dataset: { page: name } }, p.title())),
  );
  const language = select(
    Object.entries(LANGUAGES).map(([v, label]) => [v, label]),
    currentLanguage(),
    { id: "language", translate: "no", onchange: (e) => setLanguage(e.target.value) },
  );
  clear(
    document.getElementById("top"),
    h("a", { class: "brand", href: "#/datasets" }, raw("lorakit")),
    nav,
    h("div", { class: "language" }, h("label", { for: "language" }, t("Language")), language),
  );
  document.getElementById("skip-link").textContent = t("Skip to the page");
}

function route() {
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const name = PAGES[path] ? path : "datasets";
  return { name, params: new URLSearchParams(search || "") };
}

async function show() {
  if (leave) leave();
  leave = null;
  const { name, params } = route();
  const page = PAGES[name];
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.dataset.page === name || link.dataset.page === page.under;
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${page.title()} · lorakit`;
  const root = document.getElementById("page");
  clear(root, h("p", { class: "muted" }, t("Loading…")));
  const module = await page.load();
  const container = h("div", { class: `page page-${name}` });
  clear(root, container);
  try {
    leave = (await module.render(container, params)) || null;
  } catch (error) {
    container.append(h("div", { class: "banner error", role: "alert" }, t("This page could not load: {why}", { why: error.message })));
  }
  document.body.dataset.page = name;
  document.body.dataset.ready = String(Date.now());
}

await initLanguage();
header();
window.addEventListener("hashchange", show);
show();
