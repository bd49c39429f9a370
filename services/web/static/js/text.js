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

// A bracketed marker as the gateway's citation filter reads them: [1], [1, 2], [1-3],
// ［1］, 【1】, [passage 2] (services/generation's marker grammar, mirrored).
const MARKER = /[[［【]\^?\s*(?:passages?|sources?)?\s*([\d\s,;、，；\-–—]+)[\]］】]/gi;

/** The passage numbers a marker's body names, ranges expanded: "1-3, 5" → [1, 2, 3, 5]. */
export function markerNumbers(body) {
  const out = [];
  for (const part of body.split(/[,;、，；]/)) {
    const ends = (part.match(/\d+/g) || []).map(Number);
    if (!ends.length) continue;
    for (let n = Math.min(...ends); n <= Math.max(...ends); n += 1) out.push(n);
  }
  return out;
}

/**
 * The answer as DOM nodes: plain text, with each marker's numbers as links made by
 * `makeLink(n)`. Text is never parsed as HTML.
 */
export function answerNodes(answer, makeLink) {
  const out = [];
  let last = 0;
  for (const m of answer.matchAll(MARKER)) {
    const nums = markerNumbers(m[1]);
    if (!nums.length) continue;
    if (m.index > last) out.push(document.createTextNode(answer.slice(last, m.index)));
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
