// A tiny DOM builder: h("button", {class: "x", onclick: f}, "text"). Strings become
// text nodes, never HTML, so document text and answers cannot inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An error as a page element (role=alert so screen readers announce it). */
export function errorBox(err, extraClass) {
  const title = err.title || "Error";
  const detail = err.detail || String(err.message || err);
  return h(
    "div",
    { class: `error ${extraClass || ""}`, role: "alert", dataset: { status: err.status ?? "" , code: err.code || "" } },
    h("strong", {}, title),
    ": ",
    h("span", { class: "error-detail" }, detail),
  );
}

/** A modal asking to confirm a destructive action; resolves true or false. */
export function confirmDialog(question, action) {
  return new Promise((resolve) => {
    const yes = h("button", { type: "button", class: "danger", "data-confirm": "yes" }, action);
    const no = h("button", { type: "button", "data-confirm": "no" }, "Cancel");
    const dlg = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-q" },
      h("p", { id: "confirm-q" }, question),
      h("div", { class: "row" }, no, yes),
    );
    const finish = (ok) => {
      dlg.close();
      dlg.remove();
      resolve(ok);
    };
    yes.addEventListener("click", () => finish(true));
    no.addEventListener("click", () => finish(false));
    dlg.addEventListener("cancel", (e) => {
      e.preventDefault();
      finish(false);
    });
    document.body.append(dlg);
    dlg.showModal();
    no.focus(); // the safe choice has the focus
  });
}
