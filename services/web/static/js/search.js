// Search: one query against a knowledge base (mode, filters, top k), the hits with
// document, offsets, heading path and score; a hit opens in its document.

import { sendJson } from "./api.js";
import { openCitation } from "./docview.js";
import { clear, errorBox, h } from "./dom.js";

const OPS = ["eq", "ne", "in", "lt", "le", "gt", "ge"];

export function renderSearch(main, app) {
  const kbSel = app.kbSelect("search-kb");
  const query = h("input", { id: "search-query", type: "search", required: true, autocomplete: "off" });
  const mode = h("select", { id: "search-mode" },
    h("option", { value: "hybrid" }, "hybrid"), h("option", { value: "dense" }, "dense"), h("option", { value: "sparse" }, "sparse"));
  const topK = h("input", { id: "search-topk", type: "number", min: "1", max: "100", value: "10", inputmode: "numeric" });
  const filters = h("div", { class: "filters", role: "group", "aria-label": "Filters" });
  let nFilters = 0;
  const addFilter = () => {
    nFilters += 1;
    const i = nFilters;
    const row = h("div", { class: "filter row" },
      h("label", { for: `f-field-${i}`, class: "sr-only" }, "Field"),
      h("input", { id: `f-field-${i}`, class: "f-field", placeholder: "field, e.g. document_id or metadata.lang" }),
      h("label", { for: `f-op-${i}`, class: "sr-only" }, "Operator"),
      h("select", { id: `f-op-${i}`, class: "f-op" }, OPS.map((o) => h("option", { value: o }, o))),
      h("label", { for: `f-value-${i}`, class: "sr-only" }, "Value"),
      h("input", { id: `f-value-${i}`, class: "f-value", placeholder: "value (a, b for in)" }),
      h("button", { type: "button", class: "small", "aria-label": "Remove this filter", onclick: () => row.remove() }, "×"));
    filters.append(row);
  };
  const results = h("div", { id: "search-results", "aria-live": "polite" });
  const form = h("form", { class: "card search-form", "aria-label": "Search" },
    h("div", { class: "fields" },
      h("label", { for: "search-kb" }, "Knowledge base"), kbSel,
      h("label", { for: "search-query" }, "Query"), query,
      h("label", { for: "search-mode" }, "Mode"), mode,
      h("label", { for: "search-topk" }, "Top k"), topK),
    filters,
    h("div", { class: "row" },
      h("button", { type: "button", onclick: addFilter }, "Add a filter"),
      h("button", { type: "submit", id: "search-go" }, "Search")));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const kb = kbSel.value;
    const conds = [...filters.querySelectorAll(".filter")]
      .map((row) => {
        const field = row.querySelector(".f-field").value.trim();
        const op = row.querySelector(".f-op").value;
        const raw = row.querySelector(".f-value").value.trim();
        const value = op === "in" ? raw.split(",").map((s) => s.trim()).filter(Boolean).map(typed) : typed(raw);
        return { field, op, value };
      })
      .filter((f) => f.field);
    clear(results, h("p", { class: "muted" }, "Searching…"));
    try {
      const resp = await sendJson("POST", `/api/v1/knowledge-bases/${encodeURIComponent(kb)}/search`, {
        query: query.value, mode: mode.value, top_k: Number(topK.value) || 0, filters: conds,
      });
      showHits(results, kb, resp.hits);
    } catch (err) {
      clear(results, errorBox(err));
    }
  });
  clear(main, h("h1", {}, "Search"), form, results);
}

/** "3" → 3, "true" → true, else the string (filters compare typed values). */
function typed(s) {
  if (s === "true" || s === "false") return s === "true";
  if (s !== "" && !Number.isNaN(Number(s))) return Number(s);
  return s;
}

function showHits(box, kb, hits) {
  if (!hits.length) {
    clear(box, h("p", { class: "muted" }, "No passages match."));
    return;
  }
  clear(box, h("ol", { class: "hits", "aria-label": `${hits.length} results` }, hits.map((hit) => {
    const open = h("button", { type: "button", class: "small link", "aria-label": `Open ${hit.file_name} at ${hit.location}` }, "Open in document");
    open.addEventListener("click", () => openCitation(kb, hit, open));
    return h("li", { class: "hit" },
      h("div", { class: "source-head" },
        h("span", { class: "file" }, hit.file_name || hit.document_id),
        h("span", { class: "offsets" }, hit.location || `chars ${hit.start_offset}–${hit.end_offset}`),
        h("span", { class: "score" }, `score ${Number(hit.score).toFixed(3)}`), open),
      (hit.heading_path || []).length ? h("div", { class: "muted small" }, hit.heading_path.join(" › ")) : null,
      h("blockquote", {}, hit.text));
  })));
}
