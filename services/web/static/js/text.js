// Text helpers that must be exact: citation offsets and [n] markers.

/**
 * The UTF-16 index (a JavaScript string index) of code point `cp` in `text`.
 * ragmesh's offsets count code points (Python's str indices); JavaScript counts
 * UTF-16 code units, so every astral-plane character (emoji, CJK Extension B, ...)
 * before the offset moves it by one more unit.
 */
export function utf16Index(text, cp) {
  let i = 0;
  let n = 0;
  while (n < cp && i < text.length) {
    const c = text.charCodeAt(i);
    const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < text.length;
    i += pair ? 2 : 1;
    n += 1;
  }
  return i;
}

/** text[start:end] as Python slices it (code point offsets, end exclusive). */
export function sliceCodePoints(text, start, end) {
  const a = utf16Index(text, start);
  return text.slice(a, a + utf16Index(text.slice(a), end - start));
}

/** Code point length (Python's len). */
export function codePointLength(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

/**
 * The answer as DOM nodes: plain text, with each [n] (or [n, m]) marker a link
 * made by `makeLink(n)`. Text is never parsed as HTML.
 */
export function answerNodes(answer, makeLink) {
  const out = [];
  const re = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
  let last = 0;
  let m;
  while ((m = re.exec(answer)) !== null) {
    if (m.index > last) out.push(document.createTextNode(answer.slice(last, m.index)));
    const nums = m[1].split(",").map((s) => Number(s.trim()));
    nums.forEach((n, i) => {
      if (i > 0) out.push(document.createTextNode(" "));
      out.push(makeLink(n));
    });
    last = m.index + m[0].length;
  }
  if (last < answer.length) out.push(document.createTextNode(answer.slice(last)));
  return out;
}

/** JOB_STATE_SUCCEEDED → "succeeded". */
export function enumWord(value, prefix) {
  if (!value) return "";
  const s = value.startsWith(prefix) ? value.slice(prefix.length) : value;
  return s.toLowerCase().replace(/_/g, " ");
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function when(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleString();
}
