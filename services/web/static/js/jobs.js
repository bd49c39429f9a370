// Jobs: every ingestion job of the tenant, filtered by state, refreshed every few
// seconds while the tab is visible; failed jobs show their reason, with retry/cancel.

import { getJson, sendJson } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { enumWord, when } from "./text.js";

const REFRESH_MS = 3000;
const STATES = ["", "queued", "running", "succeeded", "failed", "cancelled"];

export function renderJobs(main, app) {
  const stateSel = h("select", { id: "jobs-state" }, STATES.map((s) => h("option", { value: s }, s || "all")));
  const kbIn = h("input", { id: "jobs-kb", placeholder: "all", autocomplete: "off" });
  const auto = h("input", { id: "jobs-auto", type: "checkbox", checked: true });
  const stamp = h("span", { class: "muted small", id: "jobs-stamp" });
  const box = h("div", { id: "jobs-table" });
  let timer = null;

  async function load() {
    try {
      const page = await getJson("/api/v1/jobs", { state: stateSel.value, knowledge_base_id: kbIn.value.trim(), page_size: 100, newest_first: true });
      clear(box, table(page.ingestion_jobs || page.jobs || []));
      stamp.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      clear(box, errorBox(err));
    }
  }

  function table(jobs) {
    if (!jobs.length) return h("p", { class: "muted" }, "No jobs.");
    return h("table", { class: "jobs", "aria-label": "Ingestion jobs" },
      h("thead", {}, h("tr", {}, ["Document", "Knowledge base", "State", "Progress", "Updated"].map((c) => h("th", { scope: "col" }, c)),
        h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
      h("tbody", {}, jobs.map((j) => {
        const state = enumWord(j.state, "JOB_STATE_");
        const progress = j.state === "JOB_STATE_RUNNING"
          ? `${enumWord(j.stage, "JOB_STAGE_")} ${j.chunks_total ? `${j.chunks_done}/${j.chunks_total}` : ""}`
          : j.chunks_total ? `${j.chunks_total} chunks` : "";
        const actions = [];
        if (j.state === "JOB_STATE_QUEUED" || j.state === "JOB_STATE_RUNNING") {
          actions.push(h("button", { type: "button", class: "small", "aria-label": `Cancel job of ${j.file_name}`, onclick: () => act(j, "cancel") }, "Cancel"));
        }
        if (j.state === "JOB_STATE_FAILED" || j.state === "JOB_STATE_CANCELLED") {
          actions.push(h("button", { type: "button", class: "small", "aria-label": `Retry job of ${j.file_name}`, onclick: () => act(j, "retry") }, "Retry"));
        }
        return h("tr", { dataset: { job: j.job_id, state } },
          h("td", { "data-label": "Document" }, j.file_name || j.document_id),
          h("td", { "data-label": "Knowledge base" }, j.knowledge_base_id),
          h("td", { "data-label": "State" }, h("span", { class: `state ${state}` }, state),
            j.error && j.error.reason ? h("div", { class: "reason small" }, `${j.error.reason}: ${j.error.message}`) : null),
          h("td", { "data-label": "Progress" }, progress),
          h("td", { "data-label": "Updated" }, when(j.update_time)),
          h("td", {}, actions));
      })));
  }

  async function act(job, verb) {
    try {
      await sendJson("POST", `/api/v1/jobs/${encodeURIComponent(job.job_id)}/${verb}`);
    } catch (err) {
      box.prepend(errorBox(err));
      return;
    }
    load();
  }

  function schedule() {
    clearInterval(timer);
    if (auto.checked) {
      timer = setInterval(() => {
        if (!document.hidden) load();
      }, REFRESH_MS);
    }
  }
  stateSel.addEventListener("change", load);
  kbIn.addEventListener("change", load);
  auto.addEventListener("change", schedule);
  app.onLeave(() => clearInterval(timer));

  clear(main, h("h1", {}, "Jobs"),
    h("div", { class: "toolbar" },
      h("label", { for: "jobs-state" }, "State"), stateSel,
      h("label", { for: "jobs-kb" }, "Knowledge base"), kbIn,
      h("label", { class: "check" }, auto, " refresh every 3 s"), stamp),
    box);
  load();
  schedule();
}
