// Entry point: sign-in, role-based views, language and sign-out.
//
// Sign-in is a pasted bearer token (a site's OIDC login can replace the
// form later: it only has to end in setToken()). The token's claims decide
// which views are shown; the gateway decides what each call may do.

import { call, claims, clearToken, setToken, token, whenUnauthorised, ApiError } from './api.js';
import { byId, show, visible } from './dom.js';
import { apply, t, toggle } from './i18n.js';
import { initAudit, resetAudit, relabelAudit, search, localTime } from './audit.js';
import { initAdapter, openAdapter, resetAdapter } from './adapter.js';

const VIEWS = ['signin', 'denied', 'audit', 'adapter'];
let entering = false;
let session = null; // {claims, views: [...], departments: [...]}

function view(name) {
  for (const v of VIEWS) show(byId(`view-${v}`), v === name);
  for (const b of document.querySelectorAll('.tab')) b.classList.toggle('active', b.dataset.view === name);
}

function notice(text) {
  const n = byId('signin-notice');
  n.textContent = text || '';
  show(n, Boolean(text));
}

function roles(c) {
  return Array.isArray(c?.roles) ? c.roles.filter((r) => typeof r === 'string') : [];
}

function renderWho() {
  const who = byId('who');
  if (!session) {
    show(who, false);
    return;
  }
  const c = session.claims;
  const r = roles(c);
  const dept = typeof c.department === 'string' ? ` (${c.department})` : '';
  who.replaceChildren(visible(t('who.roles', { sub: String(c.sub ?? '?'), roles: (r.join(', ') || '—') + dept })));
  who.title = typeof c.exp === 'number' ? t('who.expires', { time: localTime(new Date(c.exp * 1000).toISOString()) }) : '';
  show(who);
}

function signedOutUi(message) {
  session = null;
  resetAudit();
  resetAdapter();
  show(byId('tabs'), false);
  show(byId('sign-out'), false);
  renderWho();
  byId('token').value = '';
  notice(message);
  view('signin');
  byId('token').focus();
}

/** Checks the stored token with the gateway and opens the views it allows. */
async function enter() {
  const tok = token();
  const c = claims(tok);
  if (!c) {
    clearToken();
    signedOutUi(t('signin.malformed'));
    return;
  }
  entering = true;
  let departments = [];
  try {
    // Any console role may read the department list; a token without one is
    // refused here by the gateway, not by this page.
    const r = await call('GET', '/admin/departments');
    departments = Object.keys(r.body || {});
  } catch (e) {
    entering = false;
    if (e instanceof ApiError && e.status === 401) {
      clearToken();
      signedOutUi(t('signin.invalid', { detail: e.problem.detail || '' }));
      return;
    }
    session = { claims: c, views: [] };
    renderWho();
    show(byId('sign-out'));
    show(byId('tabs'), false);
    if (e instanceof ApiError && e.status === 403) {
      byId('denied-text').replaceChildren(visible(t('denied.text', { sub: String(c.sub ?? '?'), detail: e.problem.detail || '' })));
    } else {
      byId('denied-text').textContent = t('signin.unreachable') + ' ' + (e.message || '');
    }
    view('denied');
    return;
  }
  entering = false;
  const r = roles(c);
  const views = [];
  if (r.includes('auditor')) views.push('audit');
  if (r.includes('department-admin') || r.includes('platform-admin')) views.push('adapter');
  session = { claims: c, views, departments };
  renderWho();
  show(byId('sign-out'));
  show(byId('tabs'), views.length > 1);
  show(byId('tab-audit'), views.includes('audit'));
  show(byId('tab-adapter'), views.includes('adapter'));
  notice('');
  if (views.length === 0) {
    byId('denied-text').replaceChildren(visible(t('denied.text', { sub: String(c.sub ?? '?'), detail: '' })));
    view('denied');
    return;
  }
  if (views.includes('adapter')) {
    const own = typeof c.department === 'string' ? c.department : null;
    const choices = r.includes('platform-admin') ? departments : [];
    await openAdapter(own || choices[0], choices);
  }
  view(views[0]);
  if (views[0] === 'audit') search();
}

function signIn(e) {
  e.preventDefault();
  let tok = byId('token').value.trim();
  if (/^bearer\s+/i.test(tok)) tok = tok.replace(/^bearer\s+/i, '');
  if (!tok) {
    notice(t('signin.empty'));
    return;
  }
  if (!claims(tok)) {
    notice(t('signin.malformed'));
    return;
  }
  setToken(tok);
  byId('token').value = '';
  enter();
}

function init() {
  apply();
  byId('lang').textContent = t('lang.other');
  byId('lang').addEventListener('click', () => {
    toggle();
    byId('lang').textContent = t('lang.other');
    renderWho();
    relabelAudit();
  });
  byId('signin-form').addEventListener('submit', signIn);
  byId('sign-out').addEventListener('click', () => {
    clearToken();
    signedOutUi(t('signin.signedout'));
  });
  for (const b of document.querySelectorAll('.tab')) {
    b.addEventListener('click', () => view(b.dataset.view));
  }
  whenUnauthorised(() => {
    if (entering) return;
    // Expired or revoked mid-session: forget the token, ask for a new one.
    clearToken();
    signedOutUi(t('signin.expired'));
  });
  initAudit();
  initAdapter();
  if (token()) enter();
  else view('signin');
}

init();
