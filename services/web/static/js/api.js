// Calls to this service's own HTTP API with the signed-in key. The key lives in
// sessionStorage only: it is gone when the tab closes and is never sent elsewhere.

const KEY = "ragmesh.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** An HTTP error in the service's shape: {"error": {"message", "code", "status"}}. */
export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status; // HTTP status (0: no answer at all)
    this.code = err.code || ""; // the reason, e.g. RATE_LIMITED
    this.grpcStatus = err.status || "";
    this.retryAfter = retryAfter; // seconds, or null
  }

  /** What kind of failure this is, in words a person acts on. */
  get title() {
    if (this.status === 0) return "The web service did not answer";
    if (this.status === 401) return "API key refused";
    if (this.status === 403) return "Not allowed";
    if (this.status === 404) return "Not found";
    if (this.status === 409) return "Conflict";
    if (this.status === 413) return "Too large";
    if (this.status === 429) return /^LLM_/.test(this.code) ? "Rate limited: the language model is busy" : "Rate limited";
    if (this.status === 503) {
      return /^LLM_/.test(this.code) ? "The language model is unavailable" : "Service unavailable";
    }
    if (this.status === 504) return /^LLM_/.test(this.code) ? "The language model timed out" : "Timed out";
    if (this.status >= 500) return "Server error";
    return "Request refused";
  }

  get detail() {
    const parts = [this.message];
    if (this.code) parts.push(`(${this.code})`);
    if (this.retryAfter != null) parts.push(`Try again in ${this.retryAfter} s.`);
    return parts.join(" ");
  }
}

async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  const ra = resp.headers.get("Retry-After");
  return new ApiError(resp.status, body, ra == null ? null : Number(ra));
}

function headers(extra) {
  return { Authorization: `Bearer ${apiKey()}`, ...(extra || {}) };
}

/** fetch() with the key; throws ApiError for a non-2xx answer or no answer. */
export async function call(method, path, { json, body, signal, query } = {}) {
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== "" && v != null) q.set(k, String(v));
    const s = q.toString();
    if (s) url += `?${s}`;
  }
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { error: { message: String(e.message || e) } }, null);
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

export async function getJson(path, query) {
  return (await call("GET", path, { query })).json();
}

export async function sendJson(method, path, json) {
  const resp = await call(method, path, { json });
  return resp.status === 204 ? null : resp.json();
}

/**
 * Server-sent events from a POST or GET, read with fetch() (EventSource cannot
 * send the Authorization header). Calls onEvent(name, data) for each event; data is
 * parsed JSON, or the raw text when it is not JSON ("[DONE]").
 */
export async function streamEvents(method, path, { json, signal, onEvent }) {
  const resp = await call(method, path, { json, signal });
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      dispatch(block, onEvent);
    }
  }
  if (buf.trim()) dispatch(buf, onEvent);
}

function dispatch(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a keep-alive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const raw = data.join("\n");
  let parsed = raw;
  try {
    parsed = JSON.parse(raw);
  } catch {
    parsed = raw;
  }
  onEvent(name, parsed);
}

/** Upload one file with XMLHttpRequest (fetch reports no upload progress). */
/**
 * A file's path inside the folder it was picked or dropped with (`docs/sub/a.md` →
 * `sub/a.md`), "" for a file picked on its own: the server derives the document id from
 * it as `ragmesh ingest` does, so equal names in two sub-folders stay two documents.
 */
export function pathInFolder(name) {
  const slash = name.indexOf("/");
  return slash < 0 ? "" : name.slice(slash + 1);
}

export function uploadFile(kb, file, name, onProgress) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.open("POST", `/api/v1/knowledge-bases/${encodeURIComponent(kb)}/documents`);
    xhr.setRequestHeader("Authorization", `Bearer ${apiKey()}`);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    };
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        const ra = xhr.getResponseHeader("Retry-After");
        reject(new ApiError(xhr.status, body, ra == null ? null : Number(ra)));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, { error: { message: "network error" } }, null));
    xhr.onabort = () => reject(new DOMException("upload cancelled", "AbortError"));
    const form = new FormData();
    form.append("file", file, name);
    form.append("file_name", name);
    const inFolder = pathInFolder(name);
    if (inFolder) form.append("path_in_folder", inFolder);
    xhr.send(form);
  });
  return { done, abort: () => xhr.abort() };
}
