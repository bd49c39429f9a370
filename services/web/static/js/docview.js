// The document's normalised text with a cited range highlighted: what a citation's
// offsets point into (GET .../documents/{id}/text, paged by code point offsets).

import { getJson } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { utf16Index } from "./text.js";

const MAX_PAGES = 200; // a runaway guard; each page is up to the server's max_chars

async function wholeText(kb, documentId) {
  const base = `/api/v1/knowledge-bases/${encodeURIComponent(kb)}/documents/${encodeURIComponent(documentId)}/text`;
  let text = "";
  let offset = 0;
  for (let i = 0; i < MAX_PAGES; i += 1) {
    const page = await getJson(base, { offset });
    text += page.text;
    if (!page.next_offset) break;
    offset = page.next_offset;
  }
  return text;
}

const dialog = () => document.getElementById("docview");

/** Open the text of `citation`'s document with [start_offset, end_offset) marked. */
export async function openCitation(kb, citation, opener) {
  const dlg = dialog();
  const body = dlg.querySelector(".doc-body");
  const title = dlg.querySelector("#docview-title");
  const where = dlg.querySelector(".doc-where");
  title.textContent = citation.file_name || citation.document_id;
  where.textContent = [
    citation.number ? `[${citation.number}]` : "",
    (citation.heading_path || []).join(" › "),
    citation.location || `chars ${citation.start_offset}–${citation.end_offset}`,
  ]
    .filter(Boolean)
    .join(" · ");
  clear(body, h("p", { class: "muted" }, "Loading the document’s text…"));
  dlg.returnFocus = opener || null;
  if (!dlg.open) dlg.showModal();
  let text;
  try {
    text = await wholeText(kb, citation.document_id);
  } catch (err) {
    clear(body, errorBox(err));
    return;
  }
  // Offsets are code points; the string is indexed in UTF-16 units.
  const a = utf16Index(text, citation.start_offset);
  const b = utf16Index(text, citation.end_offset);
  const mark = h("mark", {
    id: "cited-range", tabindex: "-1",
    dataset: { document: citation.document_id, start: citation.start_offset, end: citation.end_offset },
  }, text.slice(a, b));
  clear(body, h("pre", { class: "doc-text" }, text.slice(0, a), mark, text.slice(b)));
  mark.scrollIntoView({ block: "center" });
  mark.focus({ preventScroll: true });
}

export function initDocview() {
  const dlg = dialog();
  dlg.querySelector(".close").addEventListener("click", () => dlg.close());
  dlg.addEventListener("close", () => {
    if (dlg.returnFocus) dlg.returnFocus.focus();
  });
}
