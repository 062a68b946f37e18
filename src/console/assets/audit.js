// The auditor's view: search with paging, the summary chart and top lists,
// chain verification and JSON Lines export. Every record value is placed with
// textContent.

import { call, ApiError } from './api.js';
import { byId, el, clear, show, visible } from './dom.js';
import { t } from './i18n.js';
import { drawChart, drawTop } from './chart.js';

const EXPORT_PAGE = 1000;
const EXPORT_MAX = 50000;

const state = {
  query: null, // filters of the current search
  cursors: [], // cursors of the pages seen (for "first page")
  next: null,
  records: [],
};

/** `2026-11-30T09:05:01.123456Z` as local `2026-11-30 17:05:01`. */
export function localTime(rfc3339) {
  const ms = Date.parse(rfc3339);
  if (Number.isNaN(ms)) return String(rfc3339 ?? '');
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

function describe(err) {
  if (err instanceof ApiError) {
    const p = err.problem || {};
    if (err.status === 403) return t('forbidden', { detail: p.detail || p.title || '' });
    return `${p.title || 'Error'} (${err.status || '—'}): ${p.detail || ''}`;
  }
  return String(err);
}

function filters() {
  const f = byId('audit-form');
  const v = (name) => f.elements[name].value.trim();
  const time = (name) => {
    const s = v(name);
    if (!s) return undefined;
    const ms = Date.parse(s); // datetime-local: local time
    return Number.isNaN(ms) ? s : new Date(ms).toISOString();
  };
  return {
    subject: v('subject'),
    case: v('case'),
    client: v('client'),
    dataset: v('dataset'),
    decision: v('decision'),
    since: time('since'),
    until: time('until'),
  };
}

function cell(text, cls) {
  return el('td', cls ? { class: cls } : {}, visible(text));
}

function detailRow(r) {
  const dl = el('dl', { class: 'detail' });
  for (const [k, v] of Object.entries(r)) {
    if (v === null || v === undefined) continue;
    dl.append(el('dt', {}, k), el('dd', { class: 'mono' }, visible(typeof v === 'object' ? JSON.stringify(v) : v)));
  }
  return el('tr', { class: 'detail-row' }, el('td', { colspan: 10 }, dl));
}

function row(r) {
  const decision = el('span', { class: `badge ${r.decision}` }, t(`d.${r.decision}`) || r.decision);
  const tr = el(
    'tr',
    { 'data-testid': 'audit-row', tabindex: 0, 'data-seq': r.seq },
    cell(r.seq, 'num'),
    el('td', { class: 'nowrap', title: r.time }, localTime(r.time)),
    el('td', {}, decision),
    cell(r.action, 'mono'),
    cell(r.client, 'wrap'),
    cell(r.end_user, 'wrap'),
    cell(r.case_id, 'wrap'),
    cell(r.dataset || r.scenario || r.department, 'wrap'),
    cell(r.status, 'num'),
    cell(r.reason, 'reason'),
  );
  const toggle = () => {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains('detail-row')) next.remove();
    else tr.after(detailRow(r));
  };
  tr.addEventListener('click', toggle);
  tr.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      toggle();
    }
  });
  return tr;
}

function render() {
  const body = clear(byId('audit-rows'));
  for (const r of state.records) body.append(row(r));
  const n = state.records.length;
  byId('audit-status').textContent = n === 0 ? t('audit.none') : t(state.next ? 'audit.count.more' : 'audit.count', { n });
  byId('page-next').disabled = !state.next;
  byId('page-first').disabled = state.cursors.length === 0;
}

async function loadPage(cursor) {
  const status = byId('audit-status');
  status.textContent = t('audit.loading');
  const limit = byId('f-limit').value;
  try {
    const r = await call('GET', '/admin/audit', { query: { ...state.query, limit, cursor } });
    state.records = r.body.records || [];
    state.next = r.body.next_cursor || null;
    render();
  } catch (e) {
    state.records = [];
    state.next = null;
    render();
    status.textContent = t('audit.failed', { detail: describe(e) });
  }
}

function bucketText(secs) {
  if (secs % 86400 === 0) return `${secs / 86400} d`;
  if (secs % 3600 === 0) return `${secs / 3600} h`;
  if (secs % 60 === 0) return `${secs / 60} min`;
  return `${secs} s`;
}

async function loadStats() {
  const note = byId('chart-note');
  try {
    const r = await call('GET', '/admin/audit/stats', { query: state.query });
    const s = r.body;
    drawChart(byId('chart'), s);
    drawTop(byId('top-clients'), s.top_clients);
    drawTop(byId('top-datasets'), s.top_datasets);
    note.textContent = s.total
      ? t('chart.note', { total: s.total, from: localTime(s.from), to: localTime(s.to), bucket: bucketText(s.bucket_secs) })
      : '';
  } catch (e) {
    drawChart(byId('chart'), { buckets: [] });
    drawTop(byId('top-clients'), []);
    drawTop(byId('top-datasets'), []);
    note.textContent = t('chart.failed', { detail: describe(e) });
  }
}

/** Runs the search in the form (first page) and refreshes the summary. */
export async function search() {
  state.query = filters();
  state.cursors = [];
  await Promise.all([loadPage(undefined), loadStats()]);
}

async function verify() {
  const out = byId('verify-result');
  show(out);
  out.className = 'verify running';
  out.textContent = t('verify.running');
  try {
    const r = await call('GET', '/admin/audit/verify');
    const v = r.body;
    out.className = 'verify ok';
    out.textContent = t('verify.ok', { records: v.records, files: v.files, checkpoints: v.checkpoints, last: v.last_seq ?? '—' });
  } catch (e) {
    if (e instanceof ApiError && e.status === 409 && e.problem && e.problem.intact === false) {
      const f = e.problem;
      out.className = 'verify broken';
      out.textContent = t('verify.broken', { kind: f.kind, file: f.file, line: f.line, seq: f.seq ?? '—', detail: f.detail || f.summary || '' });
    } else {
      out.className = 'verify broken';
      out.textContent = t('verify.failed', { detail: describe(e) });
    }
  }
}

async function exportLines() {
  const status = byId('audit-status');
  if (!state.query) {
    status.textContent = t('export.none');
    return;
  }
  const lines = [];
  let cursor;
  try {
    do {
      const r = await call('GET', '/admin/audit', { query: { ...state.query, limit: EXPORT_PAGE, cursor } });
      for (const rec of r.body.records || []) lines.push(JSON.stringify(rec));
      cursor = r.body.next_cursor || undefined;
    } while (cursor && lines.length < EXPORT_MAX);
  } catch (e) {
    status.textContent = t('audit.failed', { detail: describe(e) });
    return;
  }
  const blob = new Blob(lines.length ? [lines.join('\n') + '\n'] : [], { type: 'application/x-ndjson' });
  const url = URL.createObjectURL(blob);
  const a = el('a', { href: url, download: `onewindow-audit-${new Date().toISOString().replace(/[:.]/g, '-')}.jsonl` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  status.textContent = t('export.done', { n: lines.length });
}

/** Wires the view's controls (once). */
export function initAudit() {
  byId('audit-form').addEventListener('submit', (e) => {
    e.preventDefault();
    search();
  });
  byId('page-next').addEventListener('click', () => {
    if (!state.next) return;
    state.cursors.push(state.next);
    loadPage(state.next);
  });
  byId('page-first').addEventListener('click', () => {
    state.cursors = [];
    loadPage(undefined);
  });
  byId('verify').addEventListener('click', verify);
  byId('export').addEventListener('click', exportLines);
}

/** Forgets results (on sign-out). */
export function resetAudit() {
  state.query = null;
  state.cursors = [];
  state.next = null;
  state.records = [];
  clear(byId('audit-rows'));
  clear(byId('chart'));
  clear(byId('top-clients'));
  clear(byId('top-datasets'));
  byId('chart-note').textContent = '';
  byId('audit-status').textContent = '';
  show(byId('verify-result'), false);
  byId('audit-form').reset();
}

/** Re-renders language-dependent parts. */
export function relabelAudit() {
  if (state.query) {
    render();
    loadStats();
  }
}
