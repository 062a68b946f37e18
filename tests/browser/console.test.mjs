// Browser tests of the onewindow console, in headless Chromium through
// playwright-core. Started by tests/console.rs, which runs a gateway with
// port-0 listeners and passes what it set up in the environment:
//
//   CONSOLE_URL      http://127.0.0.1:PORT/console/
//   AUDITOR_TOKEN    roles [auditor]
//   ADMIN_TOKEN      department-admin of market-supervision (simulated)
//   HANG_TOKEN       department-admin of fire-rescue (a mock that never answers)
//   PORTAL_TOKEN     a data-plane client without console roles
//   EXPIRED_TOKEN    an auditor token that expired long ago
//   SUBJECT          a subject with hostile audit records
//   HOSTILE_SCRIPT, HOSTILE_IMG, HOSTILE_RTL   the hostile values recorded
//   SCREENSHOT_DIR   where to write screenshots (optional)
//   CHROMIUM         the browser binary (default /usr/bin/chromium)
//
// Every hostile input of issue 17 that a browser can show is one test here.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through tests/console.rs)`);
  return v;
};

const URL = env('CONSOLE_URL');
const SHOTS = process.env.SCREENSHOT_DIR;
const T = 15000;

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  if (SHOTS) mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
});

/**
 * A fresh page (own context: own sessionStorage) in `locale`, collecting
 * console errors, CSP violations and failed requests.
 */
async function open(locale = 'en-US') {
  const context = await browser.newContext({
    locale,
    viewport: { width: 1360, height: 900 },
    deviceScaleFactor: 1,
    acceptDownloads: true,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 4\d\d|status of 5\d\d/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  await page.goto(URL);
  return { context, page, problems };
}

async function signIn(page, token) {
  await page.getByTestId('token-input').fill(token);
  await page.getByTestId('sign-in').click();
}

const tid = (page, id) => page.getByTestId(id);

async function shot(page, name, fullPage = false) {
  if (!SHOTS) return;
  await page.evaluate(() => {
    const e = document.querySelector('[data-testid="adapter-editor"]');
    if (e) e.scrollTop = 0;
    window.scrollTo(0, 0);
  });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
}

test('the page is served with a strict CSP and no inline code', async () => {
  const { context, page, problems } = await open();
  const resp = await page.request.get(URL);
  const csp = resp.headers()['content-security-policy'];
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(resp.headers()['x-content-type-options'], 'nosniff');
  assert.equal(await page.locator('script:not([src])').count(), 0);
  assert.equal(await page.locator('[style]').count(), 0);
  await tid(page, 'token-input').waitFor();
  assert.deepEqual(problems, []);
  await context.close();
});

test('auditor searches, pages, sees the chart, verifies and exports', async () => {
  const { context, page, problems } = await open();
  await signIn(page, env('AUDITOR_TOKEN'));
  // Signed in: the token is in sessionStorage only.
  await tid(page, 'audit-search').waitFor();
  const stored = await page.evaluate(() => ({
    session: sessionStorage.getItem('onewindow.token'),
    local: Object.keys(localStorage).filter((k) => k !== 'onewindow.lang'),
    cookie: document.cookie,
    href: location.href,
  }));
  assert.equal(stored.session, env('AUDITOR_TOKEN'));
  assert.deepEqual(stored.local, []);
  assert.equal(stored.cookie, '');
  assert.ok(!stored.href.includes(env('AUDITOR_TOKEN').slice(0, 20)));
  // The first search runs on sign-in; the chart has bars.
  await tid(page, 'audit-row').first().waitFor();
  await page.locator('[data-testid="chart"] rect.bar').first().waitFor();
  assert.ok((await page.locator('[data-testid="top-clients"] li').count()) >= 1);
  // Search by the plain subject id: only its records.
  await tid(page, 'audit-filter-subject').fill(env('SUBJECT'));
  await tid(page, 'audit-search').click();
  await page.waitForFunction(() => document.querySelector('#audit-status').textContent.match(/\d/));
  const rows = await tid(page, 'audit-row').count();
  assert.ok(rows >= 3, `rows for the subject: ${rows}`);
  // Paging: one record per page, then the next page.
  await page.selectOption('#f-limit', '25');
  await tid(page, 'audit-filter-subject').fill('');
  await tid(page, 'audit-search').click();
  await page.waitForFunction(() => !document.querySelector('#page-next').disabled);
  const firstSeq = await tid(page, 'audit-row').first().getAttribute('data-seq');
  await tid(page, 'audit-next').click();
  await page.waitForFunction((s) => {
    const r = document.querySelector('[data-testid="audit-row"]');
    return r && r.dataset.seq !== s;
  }, firstSeq);
  // Verify: intact, with the numbers named.
  await tid(page, 'verify-button').click();
  await page.waitForFunction(() => /Intact|完整/.test(document.querySelector('[data-testid="verify-result"]').textContent));
  assert.match(await tid(page, 'verify-result').textContent(), /records/);
  // Export: a JSON Lines download of the whole result.
  const [download] = await Promise.all([page.waitForEvent('download'), tid(page, 'export').click()]);
  assert.match(download.suggestedFilename(), /\.jsonl$/);
  const path = await download.path();
  const lines = readFileSync(path, 'utf8').trim().split('\n');
  assert.ok(lines.length > 25, `exported ${lines.length} lines`);
  for (const l of lines) assert.ok(JSON.parse(l).seq >= 1);
  // The subject's history for the screenshot.
  await page.selectOption('#f-limit', '50');
  await tid(page, 'audit-filter-subject').fill(env('SUBJECT'));
  await tid(page, 'audit-search').click();
  await tid(page, 'audit-row').first().waitFor();
  await tid(page, 'verify-button').click();
  await page.waitForFunction(() => /Intact/.test(document.querySelector('[data-testid="verify-result"]').textContent));
  await shot(page, 'auditor-en');
  // Chinese: the toggle switches every label.
  await tid(page, 'lang-toggle').click();
  assert.equal(await tid(page, 'audit-search').textContent(), '查询');
  await tid(page, 'verify-button').click();
  await page.waitForFunction(() => /完整/.test(document.querySelector('[data-testid="verify-result"]').textContent));
  await shot(page, 'auditor-zh');
  // Sign out clears the token.
  await tid(page, 'sign-out').click();
  await tid(page, 'token-input').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('onewindow.token')), null);
  assert.deepEqual(problems, []);
  await context.close();
});

test('Chinese is the default for a Chinese browser', async () => {
  const { context, page } = await open('zh-CN');
  assert.equal(await tid(page, 'sign-in').textContent(), '登录');
  await context.close();
});

test('hostile: audit values with <script>, an onerror image and an RTL override render as text', async () => {
  const { context, page, problems } = await open();
  await page.addInitScript(() => {
    window.__xss = 0;
  });
  await page.reload();
  await signIn(page, env('AUDITOR_TOKEN'));
  // Everything on one page: a refused unknown client's record names no subject.
  await tid(page, 'audit-row').first().waitFor();
  await page.selectOption('#f-limit', '500');
  await tid(page, 'audit-search').click();
  const table = page.locator('table.records');
  const script = env('HOSTILE_SCRIPT');
  const img = env('HOSTILE_IMG');
  const rtl = env('HOSTILE_RTL');
  await page.waitForFunction((s) => document.querySelector('table.records').textContent.includes(s), script);
  const text = await table.textContent();
  assert.ok(text.includes(script), 'the <script> value is shown as text');
  assert.ok(text.includes(img), 'the onerror value is shown as text');
  // The override is shown as a marked code point, not obeyed.
  const marked = rtl.replace('\u202E', '⟨U+202E⟩');
  assert.ok(text.includes(marked), `the RTL override is shown as ${marked}`);
  assert.ok(!text.includes('\u202E'), 'no live RTL override in the table');
  assert.ok((await table.locator('.ctl').count()) >= 1);
  assert.equal(await table.locator('script, img, iframe, object').count(), 0);
  // The details of a row are text too.
  await tid(page, 'audit-row').first().click();
  assert.equal(await table.locator('img').count(), 0);
  assert.equal(await page.evaluate(() => window.__xss), 0, 'no injected code ran');
  // Exported lines carry the values unchanged.
  const [download] = await Promise.all([page.waitForEvent('download'), tid(page, 'export').click()]);
  const exported = readFileSync(await download.path(), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.ok(exported.some((r) => r.end_user === script && r.case_id === img));
  assert.ok(exported.some((r) => r.client === rtl));
  assert.deepEqual(problems, []);
  await context.close();
});

test('hostile: a portal token signs in and sees nothing; the API refuses it', async () => {
  const { context, page } = await open();
  await signIn(page, env('PORTAL_TOKEN'));
  await tid(page, 'denied').waitFor();
  assert.match(await tid(page, 'denied').textContent(), /none of the console roles/);
  for (const id of ['audit-search', 'adapter-editor', 'verify-button']) {
    assert.equal(await tid(page, id).isVisible(), false, `${id} hidden`);
  }
  // The page hides; the gateway refuses.
  const statuses = await page.evaluate(async (tok) => {
    const h = { Authorization: `Bearer ${tok}` };
    const out = [];
    for (const p of ['/admin/audit', '/admin/audit/stats', '/admin/audit/verify', '/admin/adapters/market-supervision']) {
      out.push((await fetch(p, { headers: h })).status);
    }
    const t = await fetch('/admin/adapters/market-supervision/try', {
      method: 'POST',
      headers: { ...h, 'Content-Type': 'application/json' },
      body: JSON.stringify({ dataset: 'business-licence', subject: '91120116MA07Q8XJ2K' }),
    });
    out.push(t.status);
    return out;
  }, env('PORTAL_TOKEN'));
  assert.deepEqual(statuses, [403, 403, 403, 403, 403]);
  await context.close();
});

test('hostile: an expired token mid-session asks to sign in again', async () => {
  const { context, page, problems } = await open();
  await signIn(page, env('AUDITOR_TOKEN'));
  await tid(page, 'audit-row').first().waitFor();
  // The token expires while the page is open.
  await page.evaluate((t) => sessionStorage.setItem('onewindow.token', t), env('EXPIRED_TOKEN'));
  await tid(page, 'audit-search').click();
  await tid(page, 'token-input').waitFor({ state: 'visible' });
  assert.match(await page.locator('#signin-notice').textContent(), /session has ended/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('onewindow.token')), null);
  assert.equal(await tid(page, 'audit-row').count(), 0, 'results are cleared');
  // Signing in again works.
  await signIn(page, env('AUDITOR_TOKEN'));
  await tid(page, 'audit-row').first().waitFor();
  assert.deepEqual(problems, []);
  await context.close();
});

async function openAdapter(locale, token = env('ADMIN_TOKEN')) {
  const o = await open(locale);
  await signIn(o.page, token);
  await o.page.waitForFunction(() => document.querySelector('[data-testid="adapter-editor"]').value.includes('department'));
  return o;
}

test('department admin edits, tries, sees validation and saves', async () => {
  const { context, page, problems } = await openAdapter('en-US');
  const editor = tid(page, 'adapter-editor');
  const original = await editor.inputValue();
  assert.match(original, /department = "market-supervision"/);
  // Try the saved adapter.
  await tid(page, 'adapter-try-dataset').fill('business-licence');
  await tid(page, 'adapter-try-subject').fill(env('SUBJECT'));
  await tid(page, 'adapter-try').click();
  await page.waitForFunction(() => /Mapped record/.test(document.querySelector('[data-testid="adapter-try-result"]').textContent));
  assert.match(await tid(page, 'adapter-try-result').textContent(), /"uscc": "91120116MA07Q8XJ2K"/);
  // Edit: rename a canonical field's source; the try shows the draft's mapping.
  await editor.fill(original.replace('name = "/qymc"', 'name = "/fddbr"'));
  await tid(page, 'adapter-try').click();
  await page.waitForFunction(() => /edited adapter/.test(document.querySelector('[data-testid="adapter-try-result"]').textContent));
  const tried = await tid(page, 'adapter-try-result').textContent();
  const legal = /"legal_representative": "([^"]+)"/.exec(tried)[1];
  assert.match(tried, new RegExp(`"name": "${legal}"`));
  await shot(page, 'adapter-en', true);
  // An invalid draft: the messages (file, field, fix) appear beside the editor.
  await editor.fill(original.replace('kind = "rest-json"', 'kind = "rest-jsn"'));
  await tid(page, 'adapter-save').click();
  await tid(page, 'adapter-error').first().waitFor();
  const msg = await tid(page, 'adapter-errors').textContent();
  assert.match(msg, /adapters\/market-supervision\.toml/);
  assert.match(msg, /kind/);
  assert.match(msg, /fix/);
  // Saving the original is accepted.
  await editor.fill(original);
  await tid(page, 'adapter-save').click();
  await page.waitForFunction(() => /Saved/.test(document.querySelector('[data-testid="adapter-status"]').textContent));
  // Cache invalidation.
  await tid(page, 'cache-dataset').fill('business-licence');
  await tid(page, 'cache-subject').fill(env('SUBJECT'));
  await tid(page, 'cache-invalidate').click();
  await page.waitForFunction(() => /Revoked/.test(document.querySelector('[data-testid="cache-result"]').textContent));
  assert.deepEqual(problems, []);
  await context.close();
});

test('department admin view in Chinese', async () => {
  const { context, page } = await openAdapter('zh-CN');
  assert.equal(await tid(page, 'adapter-try').textContent(), '试运行');
  await tid(page, 'adapter-try-dataset').fill('business-licence');
  await tid(page, 'adapter-try-subject').fill(env('SUBJECT'));
  await tid(page, 'adapter-try').click();
  await page.waitForFunction(() => /映射后的记录/.test(document.querySelector('[data-testid="adapter-try-result"]').textContent));
  await shot(page, 'adapter-zh', true);
  await context.close();
});

test('hostile: a 10 MB adapter paste is refused with 413 and the page stays usable', async () => {
  const { context, page, problems } = await openAdapter('en-US');
  const editor = tid(page, 'adapter-editor');
  const original = await editor.inputValue();
  // Paste 10 MB from the clipboard: refused at once, the editor unchanged.
  await editor.focus();
  const inserted = await page.evaluate(() => {
    const e = document.querySelector('[data-testid="adapter-editor"]');
    const data = new DataTransfer();
    data.setData('text/plain', `# ${'x'.repeat(10 * 1024 * 1024)}\n`);
    const ev = new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true });
    return e.dispatchEvent(ev);
  });
  assert.equal(inserted, false, 'the paste was cancelled');
  assert.match(await tid(page, 'adapter-status').textContent(), /^413 .*Not pasted.*10\.0 MiB/);
  assert.equal(await editor.inputValue(), original);
  // Text that got past the editor some other way: the gateway answers 413
  // to the save and to the try, and the page says so.
  await page.evaluate(() => {
    const e = document.querySelector('[data-testid="adapter-editor"]');
    e.value = `${'# padding\n'.repeat(30000)}${e.value}`;
  });
  await tid(page, 'adapter-save').click();
  await page.waitForFunction(() => /^413 .*too large/.test(document.querySelector('[data-testid="adapter-status"]').textContent));
  await tid(page, 'adapter-try-dataset').fill('business-licence');
  await tid(page, 'adapter-try-subject').fill(env('SUBJECT'));
  await tid(page, 'adapter-try').click();
  await page.waitForFunction(() => /^413 /.test(document.querySelector('[data-testid="adapter-try-result"]').textContent));
  // Still usable: put the file back and try it.
  await editor.fill(original);
  await tid(page, 'adapter-try').click();
  await page.waitForFunction(() => /Mapped record/.test(document.querySelector('[data-testid="adapter-try-result"]').textContent));
  assert.deepEqual(problems, []);
  await context.close();
});

test('hostile: try-it against a hanging department times out and says so', async () => {
  const { context, page, problems } = await openAdapter('en-US', env('HANG_TOKEN'));
  await tid(page, 'adapter-try-dataset').fill('fire-safety-inspection');
  await tid(page, 'adapter-try-subject').fill(env('SUBJECT'));
  await tid(page, 'adapter-try').click();
  await page.waitForFunction(() => /did not answer in time/.test(document.querySelector('[data-testid="adapter-try-result"]').textContent));
  assert.match(await tid(page, 'adapter-try-result').textContent(), /Nothing was changed/);
  // The page is still usable.
  await tid(page, 'adapter-try').click();
  await page.waitForFunction(() => /did not answer in time/.test(document.querySelector('[data-testid="adapter-try-result"]').textContent));
  assert.deepEqual(problems, []);
  await context.close();
});
