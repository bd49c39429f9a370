// Ask: a chat view over POST /v1/chat/completions (streamed). Each answer shows
// its [n] markers as links to the cited passage inside its document, and a sources
// panel with every passage the model was given, cited or not, with its score.
//
// Multi-turn: the page keeps the conversation (the questions and the answers it
// received) and sends it with each new question as the earlier chat messages; the
// gateway searches a standalone query written from it, shown under the answer
// when it differs from the question. "New conversation" (or another knowledge
// base) starts afresh. Only the newest MAX_TURNS turns are sent.

import { streamEvents } from "./api.js";
import { openCitation } from "./docview.js";
import { clear, errorBox, h } from "./dom.js";
import { answerNodes } from "./text.js";
import { apiLike } from "./upload.js";

const MAX_TURNS = 20; // within the gateway's default RAGMESH_GATEWAY_MAX_HISTORY_TURNS

export function renderAsk(main, app) {
  const conversation = []; // {role, content}, oldest first: what the next question is sent with
  const kbSel = app.kbSelect("ask-kb");
  const modeSel = h("select", { id: "ask-mode" },
    h("option", { value: "" }, "default"), h("option", { value: "hybrid" }, "hybrid"),
    h("option", { value: "dense" }, "dense"), h("option", { value: "sparse" }, "sparse"));
  const topK = h("input", { id: "ask-topk", type: "number", min: "0", max: "50", value: "0", inputmode: "numeric" });
  const maxTokens = h("input", { id: "ask-max-tokens", type: "number", min: "1", max: "4096", placeholder: "default", inputmode: "numeric" });
  const temp = h("input", { id: "ask-temperature", type: "number", min: "0", max: "2", step: "0.1", placeholder: "default", inputmode: "decimal" });
  const log = h("ol", { class: "chat", id: "chat-log", role: "log", "aria-label": "Questions and answers", "aria-live": "polite" });
  const q = h("textarea", { id: "ask-question", rows: "2", required: true, placeholder: "Ask the knowledge base…", "aria-describedby": "ask-hint" });
  const send = h("button", { type: "submit", id: "ask-send" }, "Ask");
  const turns = h("span", { id: "ask-turns", class: "muted small", role: "status" });
  const showTurns = () => {
    const n = conversation.length / 2;
    turns.textContent = n ? `Conversation: ${n} earlier question${n === 1 ? "" : "s"} sent with the next` : "New conversation";
  };
  const fresh = h("button", { type: "button", id: "ask-new", "aria-describedby": "ask-turns" }, "New conversation");
  const restart = () => {
    conversation.length = 0;
    log.replaceChildren();
    showTurns();
    q.focus();
  };
  fresh.addEventListener("click", restart);
  kbSel.addEventListener("change", restart); // a conversation belongs to one knowledge base
  const form = h("form", { class: "ask-form", "aria-label": "Ask a question" },
    h("label", { for: "ask-question", class: "sr-only" }, "Question"), q, send);
  q.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const question = q.value.trim();
    if (!question || !kbSel.value || send.disabled) return; // one answer at a time: the next needs its turn
    q.value = "";
    const temperature = temp.value === "" ? null : Number(temp.value);
    const opts = { mode: modeSel.value, topK: Number(topK.value) || 0, temperature, maxTokens: Number(maxTokens.value) || 0 };
    const history = conversation.slice(-MAX_TURNS);
    ask(app, log, kbSel.value, question, history, opts, send).then((answer) => {
      if (answer) {
        conversation.push({ role: "user", content: question }, { role: "assistant", content: answer });
        showTurns();
      }
    });
  });

  clear(main,
    h("h1", {}, "Ask"),
    h("div", { class: "toolbar" },
      h("label", { for: "ask-kb" }, "Knowledge base"), kbSel,
      h("label", { for: "ask-mode" }, "Mode"), modeSel,
      h("label", { for: "ask-topk" }, "Passages (0: default)"), topK,
      h("label", { for: "ask-temperature" }, "Temperature"), temp,
      h("label", { for: "ask-max-tokens" }, "Max tokens"), maxTokens),
    h("div", { class: "toolbar" }, fresh, turns),
    h("p", { id: "ask-hint", class: "muted small" },
      "Follow-up questions are answered in the conversation's context (\"How tall is it?\"). Enter sends, Shift+Enter adds a line."),
    log, form);
  showTurns();
  q.focus();
}

/** Streams one answer into the log; resolves to its text (null when it failed). */
async function ask(app, log, kb, question, history, opts, sendBtn) {
  const answer = h("div", { class: "answer", "aria-busy": "true" });
  const status = h("div", { class: "status muted small" }, "Retrieving passages…");
  const sourcesList = h("ol", { class: "sources" });
  const sources = h("details", { class: "sources-panel", open: true },
    h("summary", {}, "Sources"), sourcesList);
  const turn = h("li", { class: "turn" },
    h("div", { class: "question" }, h("span", { class: "sr-only" }, "Question: "), question),
    h("article", { class: "reply", "aria-label": "Answer" }, answer, status, sources));
  log.append(turn);
  turn.scrollIntoView({ block: "end" });
  sendBtn.disabled = true;

  let text = "";
  let given = []; // the passages the model was given, numbered from 1
  let cited = new Map(); // number → citation (from the final event)
  let ok = false;

  const byNumber = (n) => cited.get(n) || given.find((s) => s.number === n);
  const link = (n) => {
    const c = byNumber(n);
    const a = h("a", {
      href: "#", class: "cite", dataset: { n },
      "aria-label": c ? `Citation ${n}: ${c.file_name}, ${c.location}` : `Citation ${n}`,
    }, `[${n}]`);
    a.addEventListener("click", (e) => {
      e.preventDefault();
      const cit = byNumber(n);
      if (cit) openCitation(kb, cit, a);
    });
    return a;
  };
  const paint = () => clear(answer, answerNodes(text, link));
  const paintSources = () => clear(sourcesList, given.map((s) => {
    const isCited = cited.has(s.number);
    const open = h("button", { type: "button", class: "small link", "aria-label": `Open source ${s.number} in its document` }, "Open");
    open.addEventListener("click", () => openCitation(kb, cited.get(s.number) || s, open));
    return h("li", { class: isCited ? "source cited" : "source", dataset: { n: s.number } },
      h("div", { class: "source-head" },
        h("span", { class: "num" }, `[${s.number}]`),
        h("span", { class: "file" }, s.file_name || s.document_id),
        h("span", { class: `badge ${isCited ? "cited" : ""}` }, isCited ? "cited" : "not cited"),
        h("span", { class: "score", title: "retrieval score" }, `score ${Number(s.score).toFixed(3)}`), open),
      h("div", { class: "muted small" }, [(s.heading_path || []).join(" › "), s.location].filter(Boolean).join(" · ")),
      h("blockquote", {}, s.text));
  }));

  try {
    const body = {
      model: kb,
      messages: [...history, { role: "user", content: question }],
      stream: true,
      ragmesh: { top_k: opts.topK, ...(opts.mode ? { mode: opts.mode } : {}) },
    };
    if (opts.temperature != null) body.temperature = opts.temperature;
    if (opts.maxTokens) body.max_tokens = opts.maxTokens;
    await streamEvents("POST", "/v1/chat/completions", {
      json: body,
      onEvent: (_name, chunk) => {
        if (chunk === "[DONE]") return;
        if (chunk.error) throw Object.assign(new Error("stream"), { shown: apiLike(chunk) });
        const ext = chunk.ragmesh;
        if (ext && ext.sources) {
          given = ext.sources;
          status.textContent = `Writing the answer from ${given.length} passages…`;
          paintSources();
        }
        const choice = (chunk.choices || [])[0];
        if (choice && choice.delta && choice.delta.content) {
          text += choice.delta.content;
          paint();
        }
        if (choice && choice.finish_reason) finish(choice.finish_reason, ext || {});
      },
    });
  } catch (err) {
    turn.classList.add("failed");
    status.replaceWith(errorBox(err.shown || err));
  } finally {
    answer.setAttribute("aria-busy", "false");
    sendBtn.disabled = false;
  }
  return ok && text.trim() ? text : null;

  function finish(reason, ext) {
    if (ext.answer) text = ext.answer; // rewritten after streaming: the final text wins
    cited = new Map((ext.citations || []).map((c) => [c.number, c]));
    paint();
    paintSources();
    ok = true;
    const query = ext.search_query || "";
    if (query && query !== question) {
      const how = ext.search_query_source === "SEARCH_QUERY_SOURCE_FALLBACK" ? "the conversation's last questions" : "rewritten from the conversation";
      sources.before(h("div", { class: "searched muted small", dataset: { source: ext.search_query_source || "" } },
        `Searched (${how}): `, h("q", {}, query)));
    }
    const t = ext.timings_ms || {};
    if (ext.abstained) {
      turn.classList.add("abstained");
      status.replaceWith(h("div", { class: "abstention", role: "status" },
        h("strong", {}, "No answer"), ": the knowledge base does not say (the model abstained)."));
      if (!text.trim()) answer.textContent = "—";
      return;
    }
    const parts = [`${cited.size} of ${given.length} passages cited`];
    if (reason === "length") parts.push("cut at the token limit");
    if (ext.grounded === false) parts.push("not grounded in the passages");
    if (t.total) parts.push(`${(t.total / 1000).toFixed(1)} s`);
    status.textContent = parts.join(" · ");
  }
}
