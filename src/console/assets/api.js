// Talking to the admin plane. The token lives in sessionStorage only (never
// a cookie, the URL or a log line) and is sent as `Authorization: Bearer`.
// The decoded claims are for display; the gateway checks every call.

const TOKEN_KEY = 'onewindow.token';

/** The signed-in token, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keeps `t` for this tab. */
export function setToken(t) {
  sessionStorage.setItem(TOKEN_KEY, t);
}

/** Forgets the token. */
export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The JWT payload for display (not verified here), or null when unreadable. */
export function claims(t) {
  const parts = (t || '').split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const pad = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(pad), (c) => c.charCodeAt(0));
    const c = JSON.parse(new TextDecoder().decode(bytes));
    return c && typeof c === 'object' ? c : null;
  } catch {
    return null;
  }
}

/** A failed call: HTTP status and the problem document's title and detail. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

let onUnauthorised = () => {};

/** Registers what to do when the gateway answers 401 (token expired or revoked). */
export function whenUnauthorised(f) {
  onUnauthorised = f;
}

/**
 * Calls the admin plane. Resolves with `{status, body, type}` on 2xx (body
 * parsed when JSON); rejects with ApiError otherwise. A 401 also triggers the
 * sign-in prompt.
 */
export async function call(method, path, { body, type, query } = {}) {
  const headers = { Accept: 'application/json, application/problem+json, application/toml' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = type || 'application/json';
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== '') q.set(k, v);
    }
    const s = q.toString();
    if (s) url += `?${s}`;
  }
  let resp;
  try {
    resp = await fetch(url, {
      method,
      headers,
      body,
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'no-referrer',
    });
  } catch (e) {
    throw new ApiError(0, { title: 'Network error', detail: String(e.message || e) });
  }
  const ctype = resp.headers.get('content-type') || '';
  const text = await resp.text();
  let parsed = text;
  if (ctype.includes('json')) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  if (resp.ok) return { status: resp.status, body: parsed, type: ctype };
  const problem =
    parsed && typeof parsed === 'object'
      ? parsed
      : { title: resp.statusText || `HTTP ${resp.status}`, detail: typeof parsed === 'string' ? parsed.slice(0, 300) : '' };
  const err = new ApiError(resp.status, problem);
  if (resp.status === 401) onUnauthorised(err);
  throw err;
}
