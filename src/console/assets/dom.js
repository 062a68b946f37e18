// Small DOM helpers. Data from the server is only ever placed with
// textContent or as attribute values set through the DOM API, never parsed as
// HTML: a record holding `<script>` shows the characters `<script>`.

/** `document.getElementById`, failing loudly on a missing element. */
export function byId(id) {
  const e = document.getElementById(id);
  if (!e) throw new Error(`missing element #${id}`);
  return e;
}

/**
 * Creates an element. `attrs` values go through setAttribute (class via
 * `class`); children are nodes or strings (strings become text nodes).
 */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

/** An SVG element (attributes as for `el`). */
export function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

/** Removes every child of `e`. */
export function clear(e) {
  e.replaceChildren();
  return e;
}

/** Shows or hides `e`. */
export function show(e, on = true) {
  e.hidden = !on;
}

// Characters that change how text around them is shown (bidi overrides,
// isolates and marks, line separators) or are invisible controls. An auditor
// must see that they are there, not their effect.
const HIDDEN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]/g;

/**
 * `s` as text, with each hidden or direction-changing character shown as a
 * marked `U+XXXX` token instead of taking effect (`"evil\u202Etxt"` reads
 * `evil⟨U+202E⟩txt`, not a reversed name). Returns a fragment of text nodes
 * and `<span class="ctl">` elements.
 */
export function visible(s) {
  const text = s === undefined || s === null ? '' : String(s);
  const frag = document.createDocumentFragment();
  let at = 0;
  for (const m of text.matchAll(HIDDEN)) {
    if (m.index > at) frag.append(document.createTextNode(text.slice(at, m.index)));
    const code = m[0].codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
    const mark = document.createElement('span');
    mark.className = 'ctl';
    mark.title = `U+${code}`;
    mark.textContent = `⟨U+${code}⟩`;
    frag.append(mark);
    at = m.index + m[0].length;
  }
  if (at < text.length) frag.append(document.createTextNode(text.slice(at)));
  return frag;
}
