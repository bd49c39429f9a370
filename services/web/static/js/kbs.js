// Knowledge bases: the list (documents, chunks, language), create, delete; one
// knowledge base's page with the upload area and its documents table.

import { getJson, sendJson } from "./api.js";
import { clear, confirmDialog, errorBox, h } from "./dom.js";
import { bytes, enumWord, when } from "./text.js";
import { uploadArea } from "./upload.js";

const kbPath = (kb) => `/api/v1/knowledge-bases/${encodeURIComponent(kb)}`;

/** Every knowledge base of the key (following pages). */
export async function allKnowledgeBases() {
  const out = [];
  let token = "";
  do {
    const page = await getJson("/api/v1/knowledge-bases", { page_token: token });
    out.push(...page.knowledge_bases);
    token = page.next_page_token;
  } while (token);
  return out;
}

export function renderKnowledgeBases(main, app) {
  const listBox = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  const nameIn = h("input", {
    id: "kb-name",
    name: "kb-name",
    required: true,
    pattern: "[a-z0-9][a-z0-9_\\-]{0,62}",
    autocomplete: "off",
    "aria-describedby": "kb-name-help",
  });
  const langIn = h(
    "select",
    { id: "kb-language", name: "kb-language" },
    h("option", { value: "english" }, "English"),
    h("option", { value: "chinese" }, "Chinese"),
  );
  const descIn = h("input", { id: "kb-description", name: "kb-description", autocomplete: "off" });
  const formMsg = h("div", { class: "form-msg" });
  const form = h(
    "form",
    { class: "card create-kb", "aria-labelledby": "create-kb-h" },
    h("h2", { id: "create-kb-h" }, "New knowledge base"),
    h("div", { class: "fields" },
      h("label", { for: "kb-name" }, "Name"), nameIn,
      h("small", { id: "kb-name-help", class: "muted" }, "lower case letters, digits, - and _"),
      h("label", { for: "kb-language" }, "Language"), langIn,
      h("label", { for: "kb-description" }, "Description"), descIn),
    h("button", { type: "submit", id: "kb-create" }, "Create"),
    formMsg,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(formMsg);
    try {
      const kb = await sendJson("POST", "/api/v1/knowledge-bases", {
        knowledge_base_id: nameIn.value.trim(),
        language: langIn.value,
        description: descIn.value,
      });
      app.setKb(kb.knowledge_base_id);
      location.hash = `#/kb/${encodeURIComponent(kb.knowledge_base_id)}`;
    } catch (err) {
      clear(formMsg, errorBox(err));
    }
  });

  async function load() {
    try {
      const kbs = await allKnowledgeBases();
      app.knowledgeBases = kbs;
      if (!kbs.length) {
        clear(listBox, h("p", { class: "muted" }, "No knowledge bases yet: create one."));
        return;
      }
      clear(listBox, h("table", { class: "kbs", "aria-label": "Knowledge bases" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Documents"),
          h("th", { scope: "col" }, "Chunks"), h("th", { scope: "col" }, "Language"),
          h("th", { scope: "col" }, "Created"), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
        h("tbody", {}, kbs.map((kb) => h("tr", { dataset: { kb: kb.knowledge_base_id } },
          h("td", { "data-label": "Name" }, h("a", { href: `#/kb/${encodeURIComponent(kb.knowledge_base_id)}` }, kb.knowledge_base_id),
            kb.description ? h("div", { class: "muted small" }, kb.description) : null),
          h("td", { "data-label": "Documents" }, kb.document_count),
          h("td", { "data-label": "Chunks" }, kb.chunk_count),
          h("td", { "data-label": "Language" }, enumWord(kb.language, "TEXT_LANGUAGE_") || "—"),
          h("td", { "data-label": "Created" }, when(kb.create_time)),
          h("td", {}, h("button", {
            type: "button", class: "danger small", "aria-label": `Delete knowledge base ${kb.knowledge_base_id}`,
            onclick: () => remove(kb.knowledge_base_id),
          }, "Delete")))))));
    } catch (err) {
      clear(listBox, errorBox(err));
    }
  }

  async function remove(id) {
    const ok = await confirmDialog(
      `Delete the knowledge base “${id}” with all its documents? This cannot be undone.`,
      "Delete",
    );
    if (!ok) return;
    try {
      await sendJson("DELETE", kbPath(id));
      if (app.kb === id) app.setKb("");
    } catch (err) {
      listBox.prepend(errorBox(err));
      return;
    }
    load();
  }

  clear(main, h("h1", {}, "Knowledge bases"), listBox, form);
  load();
}

export function renderKnowledgeBase(main, app, kb) {
  app.setKb(kb);
  const info = h("p", { class: "muted" });
  const docsBox = h("div", { "aria-live": "polite" });

  async function loadInfo() {
    try {
      const k = await getJson(kbPath(kb));
      clear(info, `${k.document_count} documents · ${k.chunk_count} chunks · `,
        enumWord(k.language, "TEXT_LANGUAGE_") || "language not set", ` · ${k.embedding_model}`);
    } catch (err) {
      clear(info, errorBox(err));
    }
  }

  async function loadDocs() {
    try {
      const docs = [];
      let token = "";
      do {
        const page = await getJson(`${kbPath(kb)}/documents`, { page_token: token });
        docs.push(...page.documents);
        token = page.next_page_token;
      } while (token);
      if (!docs.length) {
        clear(docsBox, h("p", { class: "muted" }, "No documents yet."));
        return;
      }
      clear(docsBox, h("table", { class: "docs", "aria-label": `Documents of ${kb}` },
        h("thead", {}, h("tr", {},
          ["Document", "State", "Chunks", "Size", "Updated"].map((c) => h("th", { scope: "col" }, c)),
          h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
        h("tbody", {}, docs.map((d) => h("tr", { dataset: { document: d.document_id } },
          h("td", { "data-label": "Document" }, d.file_name || d.document_id,
            d.file_name !== d.document_id ? h("div", { class: "muted small" }, d.document_id) : null),
          h("td", { "data-label": "State" }, h("span", { class: `state ${enumWord(d.state, "DOCUMENT_STATE_")}` }, enumWord(d.state, "DOCUMENT_STATE_"))),
          h("td", { "data-label": "Chunks" }, d.chunk_count),
          h("td", { "data-label": "Size" }, bytes(d.size_bytes)),
          h("td", { "data-label": "Updated" }, when(d.update_time)),
          h("td", {}, h("button", {
            type: "button", class: "danger small", "aria-label": `Delete document ${d.file_name || d.document_id}`,
            onclick: () => removeDoc(d),
          }, "Delete")))))));
    } catch (err) {
      clear(docsBox, errorBox(err));
    }
  }

  async function removeDoc(d) {
    const ok = await confirmDialog(`Delete “${d.file_name || d.document_id}” from ${kb}?`, "Delete");
    if (!ok) return;
    try {
      await sendJson("DELETE", `${kbPath(kb)}/documents/${encodeURIComponent(d.document_id)}`);
    } catch (err) {
      docsBox.prepend(errorBox(err));
      return;
    }
    refresh();
  }

  function refresh() {
    loadInfo();
    loadDocs();
  }

  clear(main,
    h("p", {}, h("a", { href: "#/kbs" }, "← Knowledge bases")),
    h("h1", {}, kb), info,
    uploadArea(kb, refresh),
    h("h2", {}, "Documents"), docsBox);
  refresh();
}
