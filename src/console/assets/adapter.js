// The department administrator's view: the adapter file in an editor with
// the gateway's validation messages beside it, "try it" on one subject
// before saving, save, and cache revocation. The gateway checks the role on
// every call; this page only decides what to show.

import { call, ApiError } from './api.js';
import { byId, el, clear, show } from './dom.js';
import { t } from './i18n.js';

/** Largest adapter the gateway accepts (its MAX_ADAPTER_BYTES, 256 KiB), for messages. */
export const MAX_ADAPTER_BYTES = 256 * 1024;

const state = { department: null, edited: false };

function kib(n) {
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`;
}

function describe(err) {
  if (err instanceof ApiError) {
    const p = err.problem || {};
    if (err.status === 403) return t('forbidden', { detail: p.detail || '' });
    return `${p.title || 'Error'} (${err.status || '—'}): ${p.detail || ''}`;
  }
  return String(err);
}

/**
 * Splits a refused adapter's detail into its problems. Each line reads
 * `FILE: field `FIELD`: PROBLEM; fix: FIX` (the gateway's config errors).
 */
export function parseProblems(detail) {
  const out = [];
  const text = String(detail || '').replace(/^invalid adapter: /, '');
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const m = /^(.*?): field `(.*?)`: (.*?)(?:; fix: (.*))?$/.exec(line);
    if (m) out.push({ file: m[1], field: m[2], problem: m[3], fix: m[4] || '' });
    else out.push({ file: '', field: '', problem: line, fix: '' });
  }
  return out;
}

function setStatus(text, cls = 'muted') {
  const s = byId('adapter-status');
  s.className = cls;
  s.textContent = text;
}

function showProblems(problems) {
  const list = clear(byId('adapter-errors'));
  for (const p of problems) {
    const li = el('li', { 'data-testid': 'adapter-error' });
    if (p.file || p.field) {
      li.append(
        el('div', { class: 'where' }, el('span', { class: 'label' }, t('err.file')), el('code', {}, p.file), ' ', el('span', { class: 'label' }, t('err.field')), el('code', {}, p.field)),
      );
    }
    li.append(el('div', { class: 'problem' }, p.problem));
    if (p.fix) li.append(el('div', { class: 'fix' }, el('span', { class: 'label' }, t('err.fix')), p.fix));
    list.append(li);
  }
}

/** Names of `[datasets.NAME]` tables in the editor, for the dataset pickers. */
function datasetsInEditor() {
  const names = new Set();
  for (const m of byId('adapter-editor').value.slice(0, MAX_ADAPTER_BYTES).matchAll(/^\s*\[datasets\.([A-Za-z0-9_-]+)\]/gm)) {
    names.add(m[1]);
  }
  return [...names];
}

function fillDatasets(extra = []) {
  const list = clear(byId('dataset-list'));
  for (const n of new Set([...datasetsInEditor(), ...extra])) list.append(el('option', { value: n }));
}

async function load() {
  const dept = state.department;
  byId('adapter-dept').textContent = dept || '';
  showProblems([]);
  if (!dept) {
    setStatus(t('adapter.nodept'), 'warn');
    return;
  }
  setStatus(t('adapter.loading'));
  try {
    const r = await call('GET', `/admin/adapters/${encodeURIComponent(dept)}`);
    byId('adapter-editor').value = typeof r.body === 'string' ? r.body : JSON.stringify(r.body, null, 2);
    state.edited = false;
    setStatus(t('adapter.loaded'));
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      byId('adapter-editor').value = '';
      setStatus(t('adapter.missing'), 'warn');
    } else {
      setStatus(t('adapter.failed', { detail: describe(e) }), 'bad');
    }
  }
  fillDatasets();
  const ds = byId('try-dataset');
  if (!ds.value) ds.value = datasetsInEditor()[0] || '';
}

async function save() {
  const text = byId('adapter-editor').value;
  const size = new Blob([text]).size;
  showProblems([]);
  setStatus(t('adapter.saving'));
  try {
    const r = await call('PUT', `/admin/adapters/${encodeURIComponent(state.department)}`, { body: text, type: 'application/toml' });
    const b = r.body || {};
    state.edited = false;
    setStatus(t('adapter.saved', { kind: b.kind || '', datasets: (b.datasets || []).join(', ') }), 'good');
    fillDatasets(b.datasets || []);
  } catch (e) {
    if (e instanceof ApiError && e.status === 422) {
      setStatus(t('adapter.invalid'), 'bad');
      showProblems(parseProblems(e.problem.detail));
    } else if (e instanceof ApiError && e.status === 413) {
      setStatus(`413 · ${t('adapter.toolarge', { size: kib(size), limit: kib(MAX_ADAPTER_BYTES) })}`, 'bad');
    } else {
      setStatus(t('adapter.failed', { detail: describe(e) }), 'bad');
    }
  }
}

function tryResult(cls, ...children) {
  const out = byId('try-result');
  out.className = `result ${cls}`;
  clear(out).append(...children);
  show(out);
}

async function tryIt() {
  const dataset = byId('try-dataset').value.trim();
  const subject = byId('try-subject').value.trim();
  if (!dataset || !subject) {
    tryResult('bad', el('p', {}, t('try.need')));
    return;
  }
  const body = { dataset, subject };
  const text = byId('adapter-editor').value;
  if (!byId('try-saved').checked) body.adapter = text;
  tryResult('running', el('p', {}, t('try.running')));
  showProblems([]);
  try {
    const r = await call('POST', `/admin/adapters/${encodeURIComponent(state.department)}/try`, { body: JSON.stringify(body) });
    const b = r.body;
    tryResult(
      'good',
      el('p', {}, t('try.ok', { adapter: t(b.adapter === 'current' ? 'try.current' : 'try.draft'), status: b.upstream_status ?? '—', ms: b.elapsed_ms ?? '—' })),
      el('pre', { class: 'record' }, JSON.stringify(b.record, null, 2)),
    );
  } catch (e) {
    if (!(e instanceof ApiError)) {
      tryResult('bad', el('p', {}, String(e)));
      return;
    }
    const p = e.problem || {};
    let headline;
    if (e.status === 413) {
      headline = `413 · ${t('adapter.toolarge', { size: kib(new Blob([text]).size), limit: kib(MAX_ADAPTER_BYTES) })}`;
    } else if (e.status === 504) {
      headline = t('try.timeout', { detail: p.detail || '' });
    } else if (e.status === 403) {
      headline = t('forbidden', { detail: p.detail || '' });
    } else {
      headline = t('try.failed', { title: p.title || 'Error', status: e.status, detail: p.detail || '' });
    }
    const parts = [el('p', { class: 'headline' }, headline)];
    if (p.cause) parts.push(el('p', { class: 'cause' }, t('try.cause', { cause: p.cause })));
    tryResult('bad', ...parts);
    if (e.status === 422) {
      setStatus(t('adapter.invalid'), 'bad');
      showProblems(parseProblems(p.detail));
    }
  }
}

async function invalidate() {
  const dataset = byId('cache-dataset').value.trim();
  const subject = byId('cache-subject').value.trim();
  const out = byId('cache-result');
  const body = { dataset };
  if (subject) body.subject = subject;
  try {
    await call('POST', '/admin/cache/invalidate', { body: JSON.stringify(body) });
    out.className = 'good';
    out.textContent = t('cache.done', { dataset, subject: subject ? ` / ${subject}` : '' });
  } catch (e) {
    out.className = 'bad';
    out.textContent = t('cache.failed', { detail: describe(e) });
  }
}

/** Wires the view's controls (once). */
export function initAdapter() {
  byId('adapter-reload').addEventListener('click', load);
  byId('adapter-save').addEventListener('click', save);
  byId('try-form').addEventListener('submit', (e) => {
    e.preventDefault();
    tryIt();
  });
  byId('cache-form').addEventListener('submit', (e) => {
    e.preventDefault();
    invalidate();
  });
  const editor = byId('adapter-editor');
  editor.addEventListener('change', () => fillDatasets());
  editor.addEventListener('input', () => {
    if (!state.edited) setStatus(t('adapter.edited'));
    state.edited = true;
  });
  // A paste (or drop) that would take the file past what the gateway accepts
  // is refused here, at once: a browser laying out megabytes in a text area
  // stops responding for many seconds, and the gateway would refuse it (413).
  const refuseOversize = (e, data) => {
    const incoming = data ? data.getData('text/plain') : '';
    const selected = editor.selectionEnd - editor.selectionStart;
    const size = new Blob([incoming]).size + new Blob([editor.value]).size - selected;
    if (size <= MAX_ADAPTER_BYTES) return;
    e.preventDefault();
    setStatus(`413 · ${t('adapter.pastetoolarge', { size: kib(size), limit: kib(MAX_ADAPTER_BYTES) })}`, 'bad');
  };
  editor.addEventListener('paste', (e) => refuseOversize(e, e.clipboardData));
  editor.addEventListener('drop', (e) => refuseOversize(e, e.dataTransfer));
  byId('adapter-pick').addEventListener('change', (e) => {
    state.department = e.target.value;
    load();
  });
}

/**
 * Shows the adapter of `department`; `choices` (platform-admin) lists every
 * department for the picker.
 */
export async function openAdapter(department, choices = []) {
  const pick = byId('adapter-pick');
  clear(pick);
  for (const d of choices) pick.append(el('option', { value: d }, d));
  show(pick, choices.length > 1);
  show(byId('adapter-pick-label'), choices.length > 1);
  state.department = department || choices[0] || null;
  if (state.department) pick.value = state.department;
  await load();
}

/** Forgets everything shown (on sign-out). */
export function resetAdapter() {
  state.department = null;
  byId('adapter-editor').value = '';
  showProblems([]);
  setStatus('');
  show(byId('try-result'), false);
  byId('try-form').reset();
  byId('cache-form').reset();
  byId('cache-result').textContent = '';
}
