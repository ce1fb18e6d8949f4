// Queue: every job (running, then waiting in order, then ended), with reorder, cancel or stop,
// resume of an interrupted run, and the monitor of a training. Refreshed every two seconds.
import { api } from "../api.js";
import { clear, h, raw, toast, when } from "../dom.js";
import { t } from "../i18n.js";
import { stateBadge } from "../words.js";

export async function render(root) {
  const table = h("tbody", { id: "jobs" });
  root.append(
    h("h1", {}, t("Queue")),
    h(
      "div",
      { class: "card table-wrap" },
      h("table", {}, h("thead", {}, h("tr", {}, [t("Job"), t("Kind"), t("State"), t("Queued at"), t("Actions")].map((x) => h("th", {}, x)))), table),
    ),
  );
  let busy = false;
  const refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      draw(table, await api.get("/api/jobs"), refresh);
    } finally {
      busy = false;
    }
  };
  await refresh();
  const timer = setInterval(refresh, 2000);
  return () => clearInterval(timer);
}

function draw(table, jobs, refresh) {
  const waiting = jobs.filter((j) => j.state === "queued").map((j) => j.id);
  const act = (fn) => async () => {
    try {
      await fn();
    } catch (error) {
      toast(error.message, "error");
    }
    refresh();
  };
  const move = (id, by) =>
    act(() => {
      const order = [...waiting];
      const i = order.indexOf(id);
      order.splice(i, 1);
      order.splice(Math.max(0, i + by), 0, id);
      return api.put("/api/queue", { order });
    });
  clear(
    table,
    jobs.map((job) => {
      const name = job.kind === "train" ? h("a", { href: `#/monitor?job=${job.id}` }, raw(job.name)) : raw(job.name);
      const buttons = [];
      if (job.state === "queued") {
        const i = waiting.indexOf(job.id);
        buttons.push(
          h("button", { class: "small", disabled: i === 0, "aria-label": t("Move job {id} up", { id: job.id }), onclick: move(job.id, -1) }, t("Up")),
          h("button", { class: "small", disabled: i === waiting.length - 1, "aria-label": t("Move job {id} down", { id: job.id }), onclick: move(job.id, 1) }, t("Down")),
          h("button", { class: "small danger", onclick: act(() => api.post(`/api/jobs/${job.id}/stop`)) }, t("Cancel")),
        );
      }
      if (job.state === "running") buttons.push(h("button", { class: "small danger", onclick: act(() => api.post(`/api/jobs/${job.id}/stop`)) }, t("Stop")));
      if (["interrupted", "stopped", "failed"].includes(job.state)) {
        buttons.push(h("button", { class: "small", onclick: act(() => api.post(`/api/jobs/${job.id}/resume`)) }, job.kind === "train" ? t("Resume") : t("Run again")));
      }
      if (!["queued", "running"].includes(job.state)) buttons.push(h("button", { class: "small", onclick: act(() => api.del(`/api/jobs/${job.id}`)) }, t("Remove from the list")));
      return h(
        "tr",
        { dataset: { job: job.id } },
        h("td", {}, `#${job.id} `, name, job.error ? h("div", { class: "hint" }, raw(job.error)) : null),
        h("td", {}, raw(job.kind)),
        h("td", {}, stateBadge(job.state)),
        h("td", {}, when(job.created_at)),
        h("td", { class: "buttons" }, buttons),
      );
    }),
  );
  if (!jobs.length) table.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, t("No jobs yet. Queue a training on the Train page."))));
}
