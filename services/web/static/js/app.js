// The page: sign in, then a view per hash route (#/kbs, #/kb/<id>, #/ask,
// #/search, #/jobs). Plain ES modules, no build step, nothing from other origins.

import { ApiError, apiKey, setApiKey } from "./api.js";
import { renderAsk } from "./ask.js";
import { initDocview } from "./docview.js";
import { clear, errorBox, h } from "./dom.js";
import { allKnowledgeBases, renderKnowledgeBase, renderKnowledgeBases } from "./kbs.js";
import { renderJobs } from "./jobs.js";
import { renderSearch } from "./search.js";

const KB_KEY = "ragmesh.kb";
const main = document.getElementById("main");
const nav = document.getElementById("nav");

const app = {
  knowledgeBases: [],
  leaving: [],
  get kb() {
    return sessionStorage.getItem(KB_KEY) || "";
  },
  setKb(kb) {
    if (kb) sessionStorage.setItem(KB_KEY, kb);
    else sessionStorage.removeItem(KB_KEY);
  },
  onLeave(fn) {
    this.leaving.push(fn);
  },
  /** A <select> of the knowledge bases, on the current one; filled when known. */
  kbSelect(id) {
    const sel = h("select", { id, required: true });
    const fill = (kbs) => {
      clear(sel, kbs.map((k) => h("option", { value: k.knowledge_base_id }, k.knowledge_base_id)));
      if (!kbs.length) sel.append(h("option", { value: "" }, "no knowledge bases"));
      if (this.kb && kbs.some((k) => k.knowledge_base_id === this.kb)) sel.value = this.kb;
      else if (kbs.length) this.setKb(sel.value);
    };
    fill(this.knowledgeBases);
    allKnowledgeBases().then((kbs) => {
      this.knowledgeBases = kbs;
      fill(kbs);
    }, () => {});
    sel.addEventListener("change", () => this.setKb(sel.value));
    return sel;
  },
};

function signIn(message) {
  nav.hidden = true;
  const key = h("input", { id: "api-key", type: "password", required: true, autocomplete: "off", spellcheck: "false" });
  const msg = h("div", { id: "signin-msg" }, message ? errorBox(message) : null);
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-h" },
    h("h1", { id: "signin-h" }, "Sign in"),
    h("label", { for: "api-key" }, "API key"), key,
    h("p", { class: "muted small" }, "Kept in this tab only (session storage); closing the tab forgets it."),
    h("button", { type: "submit", id: "signin-go" }, "Sign in"), msg);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    setApiKey(key.value.trim());
    try {
      app.knowledgeBases = await allKnowledgeBases(); // the key is checked by using it
    } catch (err) {
      setApiKey("");
      clear(msg, errorBox(err));
      key.select();
      return;
    }
    if (!location.hash || location.hash === "#/signin") location.hash = "#/kbs"; // hashchange routes
    else route();
  });
  clear(main, form);
  key.focus();
}

function signOut() {
  setApiKey("");
  app.setKb("");
  location.hash = "#/signin";
}

const VIEWS = [
  [/^#\/kbs$/, (m) => renderKnowledgeBases(m, app)],
  [/^#\/kb\/(.+)$/, (m, id) => renderKnowledgeBase(m, app, decodeURIComponent(id))],
  [/^#\/ask$/, (m) => renderAsk(m, app)],
  [/^#\/search$/, (m) => renderSearch(m, app)],
  [/^#\/jobs$/, (m) => renderJobs(m, app)],
];

function route() {
  app.leaving.splice(0).forEach((fn) => fn());
  if (!apiKey()) {
    signIn();
    return;
  }
  nav.hidden = false;
  const hash = location.hash || "#/kbs";
  for (const [re, view] of VIEWS) {
    const m = re.exec(hash);
    if (m) {
      for (const a of nav.querySelectorAll("a")) {
        const here = hash.startsWith(a.getAttribute("href")) || (a.getAttribute("href") === "#/kbs" && hash.startsWith("#/kb/"));
        if (here) a.setAttribute("aria-current", "page");
        else a.removeAttribute("aria-current");
      }
      view(main, m[1]);
      main.focus({ preventScroll: true });
      return;
    }
  }
  location.hash = "#/kbs";
}

// A key that stops working (revoked, or the gateway restarted with new keys) sends
// the person back to sign in with the reason.
window.addEventListener("unhandledrejection", (e) => {
  if (e.reason instanceof ApiError && e.reason.status === 401) signIn(e.reason);
});
document.getElementById("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
initDocview();
route();
