// Following a queued job that is not a training (tools, auto-tag, caption): its state in a status
// line with a link to the queue, and its last output lines once it has ended.
import { api } from "./api.js";
import { banner, clear, h, raw, toast } from "./dom.js";
import { t } from "./i18n.js";
import { stateBadge } from "./words.js";

/** Poll job `id` into `status`; `onEnd(job)` once when it has ended. Returns a stop function. */
export function followJob(id, status, onEnd) {
  let ended = false;
  let busy = false;
  const poll = async () => {
    if (ended || busy) return;
    busy = true;
    try {
      const job = await api.get(`/api/jobs/${id}`);
      const done = !["queued", "running"].includes(job.state);
      const lines = done ? (await api.get(`/api/jobs/${id}/log`, { lines: 200 })).lines : [];
      clear(
        status,
        h("p", {}, t("Job {id}:", { id }), " ", stateBadge(job.state), " ", h("a", { href: "#/queue" }, t("see the queue"))),
        job.state === "failed" && job.error ? banner("error", raw(job.error)) : null,
        done && lines.length ? h("pre", { class: "log", tabindex: "0", "aria-label": t("Output of job {id}", { id }), translate: "no" }, lines.join("\n")) : null,
      );
      if (done && !ended) {
        ended = true;
        clearInterval(timer);
        if (onEnd) await onEnd(job);
      }
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(poll, 1500);
  poll();
  return () => {
    ended = true;
    clearInterval(timer);
  };
}

/** Queue a job and follow it; the toast says its number. */
export async function queueAndFollow(body, status, onEnd) {
  const job = await api.post("/api/jobs", body);
  toast(t("Queued as job {id}.", { id: job.id }));
  return followJob(job.id, status, onEnd);
}
