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
