// Upload: drop files and folders (or pick them); each file gets a row with a
// progress bar that follows its ingestion job over server-sent events (stage,
// chunks done/total), then its final state or failure reason, with retry/cancel.

import { sendJson, streamEvents, uploadFile } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { enumWord } from "./text.js";

const DONE = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"]);

/** Files under a dropped directory entry, with their path inside the drop. */
async function entryFiles(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    out.push({ file, name: prefix + file.name });
    return;
  }
  const reader = entry.createReader();
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
    if (!batch.length) break; // readEntries answers in batches until an empty one
    for (const child of batch) await entryFiles(child, `${prefix}${entry.name}/`, out);
  }
}

async function droppedFiles(dt) {
  const entries = [...dt.items].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (entries.some(Boolean)) {
    const out = [];
    for (const e of entries) if (e) await entryFiles(e, "", out);
    return out;
  }
  return [...dt.files].map((file) => ({ file, name: file.name }));
}

export function uploadArea(kb, onChange) {
  const list = h("ul", { class: "uploads", "aria-label": "Uploads", "aria-live": "polite" });
  const filesIn = h("input", { type: "file", multiple: true, id: "upload-files", class: "sr-only", tabindex: "-1" });
  const dirIn = h("input", { type: "file", multiple: true, webkitdirectory: true, id: "upload-folder", class: "sr-only", tabindex: "-1" });
  const zone = h(
    "div",
    { class: "dropzone", id: "dropzone", role: "group", "aria-label": "Upload documents" },
    h("p", {}, "Drop files or folders here, or"),
    h("div", { class: "row" },
      h("button", { type: "button", id: "pick-files", onclick: () => filesIn.click() }, "Choose files"),
      h("button", { type: "button", id: "pick-folder", onclick: () => dirIn.click() }, "Choose a folder")),
    filesIn, dirIn,
  );
  const start = (items) => items.forEach((it) => list.prepend(uploadRow(kb, it.file, it.name, onChange)));
  filesIn.addEventListener("change", () => {
    start([...filesIn.files].map((file) => ({ file, name: file.name })));
    filesIn.value = "";
  });
  dirIn.addEventListener("change", () => {
    start([...dirIn.files].map((file) => ({ file, name: file.webkitRelativePath || file.name })));
    dirIn.value = "";
  });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    start(await droppedFiles(e.dataTransfer));
  });
  return h("section", { class: "card", "aria-labelledby": "upload-h" }, h("h2", { id: "upload-h" }, "Upload"), zone, list);
}

function uploadRow(kb, file, name, onChange) {
  const bar = h("progress", { max: "1", value: "0", "aria-label": `Progress of ${name}` });
  const status = h("span", { class: "status" }, "uploading");
  const reason = h("div", { class: "reason" });
  const cancelBtn = h("button", { type: "button", class: "small", "aria-label": `Cancel ${name}` }, "Cancel");
  const retryBtn = h("button", { type: "button", class: "small", hidden: true, "aria-label": `Retry ${name}` }, "Retry");
  const row = h("li", { class: "upload", dataset: { file: name, state: "uploading" } },
    h("div", { class: "upload-head" }, h("span", { class: "name" }, name), status, cancelBtn, retryBtn),
    bar, reason);
  let job = null;
  let xhr = null;
  let watch = null;

  const show = (state, text) => {
    row.dataset.state = state;
    status.textContent = text;
  };

  function onJob(j) {
    job = j;
    row.dataset.job = j.job_id;
    const state = enumWord(j.state, "JOB_STATE_");
    const stage = enumWord(j.stage, "JOB_STAGE_");
    let text = state;
    if (j.state === "JOB_STATE_RUNNING") {
      text = stage || "running";
      if (j.chunks_total) text += ` · ${j.chunks_done}/${j.chunks_total} chunks`;
      bar.value = j.chunks_total ? j.chunks_done / j.chunks_total : 0;
      if (!j.chunks_total) bar.removeAttribute("value"); // indeterminate until chunks are known
    } else if (j.state === "JOB_STATE_SUCCEEDED") {
      bar.value = 1;
      text = `succeeded · ${j.chunks_total} chunk${j.chunks_total === 1 ? "" : "s"}${j.deduplicated ? " (already indexed)" : ""}`;
    } else if (j.state === "JOB_STATE_QUEUED") {
      bar.removeAttribute("value");
    } else {
      bar.value = 0;
    }
    show(state, text);
    if (j.state === "JOB_STATE_FAILED" && j.error) {
      clear(reason, errorBox({ title: "Failed", detail: `${j.error.message} (${j.error.reason})`, status: "", code: j.error.reason }));
    } else {
      clear(reason);
    }
    const done = DONE.has(j.state);
    cancelBtn.hidden = done;
    retryBtn.hidden = !(j.state === "JOB_STATE_FAILED" || j.state === "JOB_STATE_CANCELLED");
    if (done) onChange();
  }

  async function follow() {
    watch = new AbortController();
    try {
      await streamEvents("GET", `/api/v1/jobs/${encodeURIComponent(job.job_id)}/events`, {
        signal: watch.signal,
        onEvent: (name, data) => {
          if (name === "job") onJob(data);
          else if (name === "error") clear(reason, errorBox(apiLike(data)));
        },
      });
    } catch (err) {
      if (err.name !== "AbortError") clear(reason, errorBox(err));
    }
  }

  async function upload() {
    show("uploading", "uploading");
    bar.value = 0;
    clear(reason);
    retryBtn.hidden = true;
    cancelBtn.hidden = false;
    xhr = uploadFile(kb, file, name, (loaded, total) => {
      bar.value = loaded / total;
      status.textContent = `uploading ${Math.round((100 * loaded) / total)}%`;
    });
    try {
      const resp = await xhr.done;
      onJob(resp.job || resp);
    } catch (err) {
      show(err.name === "AbortError" ? "cancelled" : "failed", err.name === "AbortError" ? "cancelled" : "upload refused");
      if (err.name !== "AbortError") clear(reason, errorBox(err));
      cancelBtn.hidden = true;
      retryBtn.hidden = false;
      job = null;
      return;
    } finally {
      xhr = null;
    }
    if (!DONE.has(job.state)) await follow();
  }

  cancelBtn.addEventListener("click", async () => {
    if (xhr) {
      xhr.abort();
      return;
    }
    if (!job) return;
    try {
      onJob(await sendJson("POST", `/api/v1/jobs/${encodeURIComponent(job.job_id)}/cancel`));
    } catch (err) {
      clear(reason, errorBox(err));
    }
  });
  retryBtn.addEventListener("click", async () => {
    if (watch) watch.abort();
    if (!job) {
      upload(); // the upload itself failed: send the file again
      return;
    }
    try {
      onJob(await sendJson("POST", `/api/v1/jobs/${encodeURIComponent(job.job_id)}/retry`));
      follow();
    } catch (err) {
      clear(reason, errorBox(err));
    }
  });
  upload();
  return row;
}

/** An error event's body ({"error": {...}}) shaped like ApiError for errorBox. */
const TITLES = {
  RESOURCE_EXHAUSTED: "Rate limited",
  UNAVAILABLE: "Service unavailable",
  DEADLINE_EXCEEDED: "Timed out",
  UNAUTHENTICATED: "API key refused",
  PERMISSION_DENIED: "Not allowed",
  NOT_FOUND: "Not found",
};

export function apiLike(body) {
  const e = (body && body.error) || {};
  let title = TITLES[e.status] || "Error";
  if (/^LLM_/.test(e.code || "")) {
    if (e.status === "DEADLINE_EXCEEDED") title = "The language model timed out";
    else if (e.status === "UNAVAILABLE") title = "The language model is unavailable";
    else if (e.status === "RESOURCE_EXHAUSTED") title = "Rate limited: the language model is busy";
  }
  return { title, detail: `${e.message || "failed"}${e.code ? ` (${e.code})` : ""}`, status: "", code: e.code || "" };
}
