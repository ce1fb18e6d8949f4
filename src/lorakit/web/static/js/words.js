// Words for the states of jobs and runs, shared by the queue, monitor, runs and tools pages.
import { h } from "./dom.js";
import { t } from "./i18n.js";

const WORDS = {
  queued: () => t("waiting"),
  running: () => t("running"),
  done: () => t("done"),
  failed: () => t("failed"),
  stopped: () => t("stopped"),
  interrupted: () => t("interrupted"),
  finished: () => t("finished"),
  collapsed: () => t("collapsed"),
};

export const stateWord = (state) => (WORDS[state] ? WORDS[state]() : state || "");

export const stateBadge = (state) => h("span", { class: `badge state-${state}`, dataset: { state } }, stateWord(state));
