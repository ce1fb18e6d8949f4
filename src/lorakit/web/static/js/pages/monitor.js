// Monitor: one training, live from its event stream (or a finished run's events): loss (raw and
// smoothed, log scale, validation points, epochs marked), learning rate, speed and ETA, the
// previews by epoch x prompt as they are written, the log tail, warnings and the collapse advice
// in banners, and stop / sample now / save now.
import { api } from "../api.js";
import { banner, clear, debounce, duration, h, message, number, raw, thumb, toast } from "../dom.js";
import { t } from "../i18n.js";
import { COLORS, legend, lineChart, paintSwatches, smooth } from "../charts.js";
import { stateBadge } from "../words.js";

const KINDS = ["plan", "step", "epoch", "validation", "sample", "saved", "warning", "collapse", "end"];

export async function render(root, params) {
  const jobId = params.get("job");
  let job = jobId ? await api.get(`/api/jobs/${jobId}`) : null;
  const runLocation = job ? job.output_dir : params.get("run");
  const data = { losses: new Map(), lrs: new Map(), validation: new Map(), epochs: [], warnings: [], collapse: null, plan: null, end: null, last: null };
  const view = {
    state: h("span", { id: "job-state" }),
    stats: h("div", { class: "stats", id: "stats" }),
    progress: h("progress", { id: "progress", max: 1, value: 0, "aria-label": t("Progress") }),
    banners: h("div", { id: "banners" }),
    loss: h("div", { id: "loss-chart" }),
    lr: h("div", { id: "lr-chart" }),
    previews: h("div", { id: "previews" }),
    log: h("pre", { class: "log", id: "log-tail", tabindex: "0", "aria-label": t("The last lines of the log") }),
  };
  const logScale = h("input", { type: "checkbox", id: "loss-log", checked: true, onchange: () => draw() });
  const control = (action) => async () => {
    try {
      if (action === "stop") await api.post(`/api/jobs/${jobId}/stop`);
      else await api.post(`/api/jobs/${jobId}/control`, { action });
      toast(action === "stop" ? t("Stopping: the training saves its state first.") : action === "sample" ? t("Previews asked for: they come after the current step.") : t("Saving asked for: it comes after the current step."));
    } catch (error) {
      toast(error.message, "error");
    }
    refreshJob();
  };
  const buttons = {
    stop: h("button", { class: "danger", id: "stop", onclick: control("stop") }, t("Stop")),
    sample: h("button", { id: "sample-now", onclick: control("sample") }, t("Sample now")),
    save: h("button", { id: "save-now", onclick: control("save") }, t("Save now")),
  };
  root.append(
    h("h1", {}, t("Monitor"), " ", raw(job ? job.name : runLocation || "")),
    h(
      "div",
      { class: "card" },
      h("div", { class: "buttons" }, view.state, job ? Object.values(buttons) : null, runLocation ? h("a", { class: "button", href: `#/grid?run=${encodeURIComponent(runLocation)}` }, t("Epoch × weight grid")) : null),
      view.stats,
      view.progress,
    ),
    view.banners,
    h("div", { class: "card" }, h("h2", {}, t("Loss")), h("div", { class: "field check" }, logScale, h("label", { for: "loss-log" }, t("Log scale"))), view.loss),
    h("div", { class: "card" }, h("h2", {}, t("Learning rate")), view.lr),
    h("div", { class: "card" }, h("h2", {}, t("Previews")), view.previews),
    job ? h("div", { class: "card" }, h("h2", {}, t("Log")), view.log) : null,
  );

  // -- events in, drawing out (at most a few times a second)
  let pending = null;
  const later = () => (pending = pending || setTimeout(() => ((pending = null), draw()), 250));
  const take = (event) => {
    switch (event.kind) {
      case "plan":
        data.plan = event;
        break;
      case "step":
        data.losses.set(event.step, Number(event.loss));
        (event.lr || []).forEach((lr, i) => data.lrs.set(`${i}:${event.step}`, [i, event.step, Number(lr)]));
        data.last = event;
        break;
      case "validation":
        data.validation.set(event.step, Number(event.loss));
        break;
      case "epoch":
        data.epochs = data.epochs.filter((e) => e.epoch !== event.epoch).concat([event]);
        break;
      case "sample":
        loadPreviews();
        break;
      case "warning":
        if (!data.warnings.includes(event.message)) data.warnings.push(event.message);
        break;
      case "collapse":
        data.collapse = event;
        break;
      case "end":
        data.end = event;
        loadPreviews();
        refreshJob();
        break;
      default:
    }
    later();
  };

  function draw() {
    const steps = [...data.losses.entries()].sort((a, b) => a[0] - b[0]);
    const total = (data.last && data.last.total_steps) || (data.plan && data.plan.total_steps) || 0;
    const done = steps.length ? steps[steps.length - 1][0] : 0;
    view.progress.max = total || 1;
    view.progress.value = done;
    const stat = (label, value, id) => h("div", { class: "stat", id }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
    const smoothed = smooth(steps);
    clear(
      view.stats,
      stat(t("Step"), `${done} / ${total || "?"}`, "stat-step"),
      stat(t("Epoch"), data.last ? `${data.last.epoch} / ${(data.plan && data.plan.epochs) || "?"}` : "–", "stat-epoch"),
      stat(t("Loss (smoothed)"), smoothed.length ? number(smoothed[smoothed.length - 1][1]) : "–", "stat-loss"),
      stat(t("Speed"), data.last && data.last.speed ? t("{n} steps/s", { n: number(data.last.speed, 3) }) : "–", "stat-speed"),
      stat(t("Time left"), data.end ? "–" : data.last ? duration(data.last.eta) : "–", "stat-eta"),
    );
    clear(
      view.banners,
      data.collapse ? banner("error", h("strong", {}, t("The training collapsed.")), " ", message(data.collapse.message), data.collapse.last_good_file ? h("div", {}, t("Last good file:"), " ", raw(data.collapse.last_good_file, "code")) : null) : null,
      data.warnings.map((w) => banner("warning", message(w))),
      data.end ? endBanner(data.end, runLocation) : null,
    );
    const marks = data.epochs.map((e) => ({ x: e.step, label: t("epoch {n}", { n: e.epoch }) }));
    const validation = [...data.validation.entries()].sort((a, b) => a[0] - b[0]);
    clear(
      view.loss,
      lineChart({
        series: [{ data: steps, kind: "raw" }, { data: smoothed, kind: "smooth", color: COLORS[0] }],
        points: [{ data: validation }],
        marks,
        log: logScale.checked,
        label: t("Loss by step: {n} steps", { n: steps.length }),
        width: view.loss.clientWidth,
        height: 300,
        xTitle: t("step"),
        yTitle: t("loss"),
      }),
      legend([
        { label: t("loss per step"), color: "#9db5f0" },
        { label: t("smoothed"), color: COLORS[0] },
        { label: t("validation loss"), color: "#d9480f" },
      ]),
    );
    const groups = [...new Set([...data.lrs.values()].map(([i]) => i))];
    clear(
      view.lr,
      lineChart({
        series: groups.map((g) => ({ data: [...data.lrs.values()].filter(([i]) => i === g).map(([, s, v]) => [s, v]).sort((a, b) => a[0] - b[0]), kind: "smooth", color: COLORS[g % COLORS.length] })),
        marks,
        label: t("Learning rate by step"),
        width: view.lr.clientWidth,
        height: 160,
        xTitle: t("step"),
      }),
      groups.length > 1 ? legend(groups.map((g) => ({ label: t("parameter group {n}", { n: g + 1 }), color: COLORS[g % COLORS.length] }))) : null,
    );
    paintSwatches(root);
  }

  async function loadPreviews() {
    if (!runLocation) return;
    try {
      const run = await api.get("/api/run", { location: runLocation });
      drawPreviews(view.previews, run.previews);
    } catch {
      /* the run folder is not written yet */
    }
  }

  async function refreshJob() {
    if (!jobId) return;
    try {
      job = await api.get(`/api/jobs/${jobId}`);
      const lines = await api.get(`/api/jobs/${jobId}/log`, { lines: 60 });
      const atEnd = view.log.scrollTop + view.log.clientHeight >= view.log.scrollHeight - 4;
      view.log.textContent = lines.lines.join("\n");
      if (atEnd) view.log.scrollTop = view.log.scrollHeight; // follow the tail unless scrolled up
    } catch {
      return;
    }
    clear(view.state, stateBadge(job.state));
    for (const b of Object.values(buttons)) b.disabled = job.state !== "running";
    if (job.state === "queued") buttons.stop.disabled = false;
  }

  // -- the sources: a job's live stream, or a run's recorded events
  let stream = null;
  let timer = null;
  if (jobId) {
    await refreshJob();
    stream = new EventSource(`/api/jobs/${jobId}/events`);
    for (const kind of KINDS) stream.addEventListener(kind, (e) => take(JSON.parse(e.data)));
    stream.onerror = () => {
      if (job && !["queued", "running"].includes(job.state)) stream.close();
    };
    timer = setInterval(refreshJob, 2000);
  } else if (runLocation) {
    for (const event of await api.get("/api/run/events", { location: runLocation })) take(event);
  }
  await loadPreviews();
  draw();
  const resized = debounce(draw, 200);
  window.addEventListener("resize", resized);
  return () => {
    window.removeEventListener("resize", resized);
    if (stream) stream.close();
    clearInterval(timer);
    clearTimeout(pending);
  };
}

function endBanner(end, runLocation) {
  const words = {
    finished: () => t("The training finished."),
    stopped: () => t("The training was stopped; it can be resumed from the queue."),
    interrupted: () => t("The training was interrupted; it can be resumed from the queue."),
    collapsed: () => t("The training stopped because it collapsed."),
    failed: () => t("The training failed."),
  };
  const kind = end.status === "finished" ? "ok" : end.status === "stopped" ? "info" : "error";
  return banner(
    kind,
    (words[end.status] || (() => end.status))(),
    end.error ? h("div", {}, message(end.error)) : null,
    end.status === "finished" && runLocation ? h("div", { class: "buttons" }, h("a", { href: "#/runs" }, t("See it in Runs")), h("a", { href: `#/grid?run=${encodeURIComponent(runLocation)}` }, t("Pick the best epoch in the grid"))) : null,
  );
}

/** Previews as a table: one row per moment (before training, after epoch N, at step N), one
 * column per prompt. */
export function drawPreviews(box, previews) {
  const labels = [...new Set(previews.map((p) => p.label))];
  const prompts = [...new Set(previews.map((p) => p.prompt))].sort((a, b) => a - b);
  if (!labels.length) return clear(box, h("p", { class: "muted" }, t("No previews yet. They appear here as the training writes them.")));
  const name = (label) => (label === "e000000" ? t("before training") : label.startsWith("e") ? t("epoch {n}", { n: Number(label.slice(1)) }) : t("step {n}", { n: Number(label) }));
  clear(
    box,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "previews-table" },
        h("thead", {}, h("tr", {}, h("th", {}, t("When")), prompts.map((p) => h("th", {}, t("prompt {n}", { n: p + 1 }))))),
        h(
          "tbody",
          {},
          labels.map((label) =>
            h(
              "tr",
              { dataset: { label } },
              h("th", {}, name(label)),
              prompts.map((p) => {
                const found = previews.find((x) => x.label === label && x.prompt === p);
                return h("td", {}, found ? h("img", { class: "preview", src: thumb(found.location, 256), alt: t("Preview of prompt {n}, {when}", { n: p + 1, when: name(label) }), width: 96, height: 96 }) : "–");
              }),
            ),
          ),
        ),
      ),
    ),
  );
}
