// The clinician app (web/) in Debian Chromium through playwright-core against the whole stack:
// each flow of issue 12's "done means", with screenshots at 360 and 1280 px (test/browser/artifacts/)
// and axe-core on every screen. Synthetic patients only.

import { expect } from 'chai';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { readConfig } from '../../scripts/config.ts';
import { startStack, type Stack } from '../../scripts/stack.ts';
import { launchChromium } from '../support/browser.ts';
import { requireNats, tempDir, TEST_NATS_URL, type TempDir } from '../support/services.ts';
import { checkScreen, dumpIndexedDb, fillPatientForm, go, signInOnScreen, signInThroughApp, unlockThroughApp } from './app-helpers.ts';

const WORKER_TUNING = { retry: { baseMs: 50, maxMs: 400, jitter: 0.5 }, tickMs: 50, pollTimeoutMs: 2_000 };

/** The stack on a fixed data dir and port, so it can be killed and started again mid-test. */
class RestartableStack {
  private stack: Stack | null = null;
  url = '';
  private port = '0';
  constructor(readonly dir: TempDir) {}
  async start(): Promise<void> {
    const config = readConfig({ FERRY_DATA_DIR: this.dir.path, FERRY_PORT: this.port, FERRY_HOST: '127.0.0.1', FERRY_REGISTRATION_PORT: '0', NATS_URL: TEST_NATS_URL });
    this.stack = await startStack(config, { workerTuning: WORKER_TUNING });
    this.url = this.stack.url!;
    this.port = new URL(this.url).port;
  }
  async kill(): Promise<void> {
    await this.stack?.close();
    this.stack = null;
  }
  async stop(): Promise<void> {
    await this.kill();
    this.dir.remove();
  }
  async token(username: string, tenant: string): Promise<string> {
    const res = await fetch(`${this.url}/auth/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: 'ferry-dev', tenant }) });
    if (res.status !== 200) throw new Error(`login failed: ${res.status}`);
    return ((await res.json()) as { access_token: string }).access_token;
  }
  /** ben (another registrar of north-hc-1) writes straight to the API, as another device would. */
  async api(method: 'POST' | 'PUT', path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
    const token = await this.token('ben', 'north');
    const res = await fetch(`${this.url}/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': crypto.randomUUID() }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }
}

describe('the clinician app in Debian Chromium', function () {
  this.timeout(240_000);
  let stack: RestartableStack;
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  const problems: string[] = [];

  before(async function () {
    this.timeout(180_000);
    browser = await launchChromium(this);
    await requireNats(this);
    stack = new RestartableStack(tempDir('ferry-app-'));
    await stack.start();
  });
  after(async function () {
    this.timeout(60_000);
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await stack?.stop();
  });
  afterEach(function () {
    // Script errors and CSP refusals fail the flow that caused them.
    const seen = problems.splice(0);
    expect(seen, 'page errors or CSP violations').to.deep.equal([]);
  });

  async function newPage(opts: { clock?: boolean } = {}): Promise<{ page: Page; context: BrowserContext }> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    contexts.push(context);
    if (opts.clock) await context.clock.install();
    const page = await context.newPage();
    page.on('pageerror', (err) => problems.push(`${err.name}: ${err.message}`));
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
    });
    return { page, context };
  }

  let ada: { page: Page; context: BrowserContext };
  const A = { givenName: 'Quorvenda', familyName: 'Zyxtestova', birthDate: '1983-07-29', sex: 'female', phone: '+254 700 111222' };
  let entityA = '';

  it('signs in, sets a passphrase with its confirmation, and unlocks', async function () {
    ada = await newPage();
    const { page } = ada;
    await page.goto(`${stack.url}/`);
    expect(new URL(page.url()).pathname).to.equal('/app/');
    await page.fill('#signin-user', 'ada');
    await page.fill('#signin-password', 'wrong password');
    await page.click('#signin button[type=submit]');
    await page.waitForSelector('#signin-error:has-text("wrong")');
    await checkScreen(page, '01-signin-error');
    await page.fill('#signin-password', 'ferry-dev');
    await page.click('#signin button[type=submit]');
    // First use: the passphrase is typed twice; a mismatch is caught on its field.
    await page.waitForSelector('#unlock[data-first-use=yes]');
    await page.fill('#unlock-passphrase', 'a long device passphrase');
    await page.fill('#unlock-confirm', 'a long device passphrasf');
    await page.click('#unlock button[type=submit]');
    await page.waitForSelector('#unlock-confirm[aria-invalid=true]');
    expect(await page.evaluate(() => document.activeElement?.id)).to.equal('unlock-confirm');
    await checkScreen(page, '02-first-use-mismatch');
    await unlockThroughApp(page);
    await page.waitForSelector('#result-count');
    expect(await page.textContent('#result-count')).to.include('No patients');
    await page.waitForSelector('#all-confirmed', { timeout: 30_000 });
    await checkScreen(page, '03-patients-empty');
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 20_000 });
  });

  it('registers a patient with errors on their fields in plain language, then confirmed by the server', async function () {
    const { page } = ada;
    await page.click('#register-link');
    await page.waitForSelector('#patient-form');
    // Sex has no default.
    expect(await page.locator('input[name=sex]:checked').count()).to.equal(0);
    await page.click('#patient-form button[type=submit]');
    await page.waitForSelector('#f-givenName[aria-invalid=true]');
    expect(await page.evaluate(() => document.activeElement?.id)).to.equal('f-givenName');
    expect(await page.getAttribute('#f-givenName', 'aria-describedby')).to.include('givenName-error');
    expect(await page.textContent('#givenName-error')).to.equal('Enter the given name.');
    expect(await page.textContent('#sex-error')).to.equal('Choose the sex.');
    expect(await page.textContent('#form-summary')).to.match(/Check \d field/);
    await fillPatientForm(page, { ...A, birthDate: '1849-12-31' });
    await page.click('#patient-form button[type=submit]');
    await page.waitForSelector('#birthDate-error');
    expect(await page.textContent('#birthDate-error')).to.equal('Birth dates before 1850 are not accepted.');
    expect(await page.evaluate(() => document.activeElement?.id)).to.equal('f-birthDate');
    await checkScreen(page, '04-register-errors');
    await fillPatientForm(page, { birthDate: A.birthDate });
    await page.click('#patient-form button[type=submit]');
    await page.waitForSelector('#record');
    entityA = (await page.getAttribute('#record', 'data-entity'))!;
    await page.waitForSelector('#record-sync[data-state=committed]', { timeout: 30_000 });
    expect(await page.textContent('#record-version')).to.equal('1');
    await checkScreen(page, '05-record-confirmed');
  });

  it('finds a patient offline, edits offline, reloads offline, then online the edit is confirmed', async function () {
    const { page, context } = ada;
    await context.setOffline(true);
    await page.waitForSelector('#reach[data-state=offline]', { timeout: 30_000 });
    await page.click('#nav-patients');
    await page.fill('#search', 'zyxt');
    await page.waitForSelector(`#patients li[data-entity="${entityA}"]`);
    await page.fill('#search', '1983-07-29');
    await page.waitForSelector(`#patients li[data-entity="${entityA}"]`);
    await page.fill('#search', 'nobody-like-this');
    await page.waitForSelector('#result-count:has-text("No patient matches")');
    await page.fill('#search', 'quorv');
    await checkScreen(page, '06-search-offline');
    await page.click(`#patients li[data-entity="${entityA}"] a`);
    await page.click('#edit-link');
    await page.waitForSelector('#patient-form');
    expect(await page.inputValue('#f-givenName')).to.equal(A.givenName);
    await page.fill('#f-phone', '+254 700 333444');
    await page.click('#patient-form button[type=submit]');
    await page.waitForSelector('#record-sync[data-state=queued]');
    expect(await page.textContent('#record-sync')).to.include('Saved on this device');
    await checkScreen(page, '07-edit-saved-offline');
    await page.reload();
    await unlockThroughApp(page);
    // The reload keeps the route: the same record opens again.
    await page.waitForSelector(`#record[data-entity="${entityA}"] #record-sync[data-state=queued]`);
    expect(await page.textContent('#record')).to.include('+254 700 333444');
    // Encrypted at rest: raw IndexedDB holds none of the demographics in clear; nor do the URL,
    // Web Storage or the Cache Storage (which holds only the app shell).
    const raw = await dumpIndexedDb(page, [A.givenName, A.familyName, '+254 700 333444']);
    expect(raw.records).to.be.greaterThan(0);
    expect(raw.hits, 'PHI in clear in IndexedDB').to.deep.equal([]);
    const elsewhere = await page.evaluate(async () => {
      const cached: string[] = [];
      for (const name of await caches.keys()) for (const req of await (await caches.open(name)).keys()) cached.push(new URL(req.url).pathname);
      return { text: JSON.stringify({ url: location.href, local: { ...localStorage }, session: { ...sessionStorage } }), cached };
    });
    for (const needle of [A.givenName, A.familyName, A.birthDate]) expect(elsewhere.text).to.not.include(needle);
    expect(elsewhere.cached.every((p) => p.startsWith('/app/')), JSON.stringify(elsewhere.cached)).to.equal(true);
    await context.setOffline(false);
    await page.waitForSelector('#record-sync[data-state=committed]', { timeout: 60_000 });
    expect(await page.textContent('#record-version')).to.equal('2');
    await page.waitForSelector('#all-confirmed', { timeout: 30_000 });
  });

  it('registers offline, then online the registration is confirmed', async function () {
    const { page, context } = ada;
    await context.setOffline(true);
    await page.waitForSelector('#reach[data-state=offline]', { timeout: 30_000 });
    await page.click('#nav-patients');
    await page.click('#register-link');
    await fillPatientForm(page, { givenName: 'Ilvarro', familyName: 'Pemberquist', birthDate: '2001-11-05', sex: 'male' });
    await page.click('#patient-form button[type=submit]');
    await page.waitForSelector('#record-sync[data-state=queued]');
    await page.waitForSelector('#pending-count[data-count="1"]');
    await checkScreen(page, '08-register-offline');
    await context.setOffline(false);
    await page.waitForSelector('#record-sync[data-state=committed]', { timeout: 60_000 });
    await page.waitForSelector('#all-confirmed', { timeout: 30_000 });
  });

  it('merges a version conflict field by field: one-sided fields merge themselves, the clinician chooses where both changed', async function () {
    const { page, context } = ada;
    // ada is offline and knows version 2; meanwhile ben changes the family name and the phone (v3).
    await context.setOffline(true);
    await page.waitForSelector('#reach[data-state=offline]', { timeout: 30_000 });
    const ben = await stack.api('PUT', `/patients/${entityA}`, { ...A, familyName: 'Zyxtestova-Ben', phone: '+254 700 555666', facility: 'north-hc-1', baseVersion: 2 });
    expect(ben.status, JSON.stringify(ben.body)).to.equal(200);
    // ada changes the given name and the phone, from version 2.
    await page.click('#nav-patients');
    await page.click(`#patients li[data-entity="${entityA}"] a`);
    await page.click('#edit-link');
    await fillPatientForm(page, { givenName: 'Quorvendalia', phone: '+254 700 777888' });
    await page.click('#patient-form button[type=submit]');
    await page.waitForSelector('#record-sync[data-state=queued]');
    await context.setOffline(false);
    await page.waitForSelector('#record-problem', { timeout: 60_000 });
    await page.click('#record-problem a');
    await page.waitForSelector('#merge');
    expect(await page.getAttribute('[data-field=givenName]', 'data-outcome')).to.equal('mine');
    expect(await page.getAttribute('[data-field=familyName]', 'data-outcome')).to.equal('server');
    expect(await page.getAttribute('[data-field=phone]', 'data-outcome')).to.equal('choose');
    expect(await page.isDisabled('#merge-save')).to.equal(true);
    await checkScreen(page, '09-merge');
    await page.check('#choose-phone-mine');
    await page.click('#merge-save');
    await page.waitForSelector('#record-sync[data-state=committed]', { timeout: 60_000 });
    const text = await page.textContent('#record');
    expect(text).to.include('Quorvendalia').and.include('Zyxtestova-Ben').and.include('+254 700 777888');
    expect(await page.textContent('#record-version')).to.equal('4');
    await page.waitForSelector('#all-confirmed', { timeout: 30_000 });
  });

  it('resolves a duplicate both ways: "same patient" opens it, "create anyway" needs a reason of at least 3 characters', async function () {
    const { page } = ada;
    const D = { givenName: 'Dupliqua', familyName: 'Testerova', birthDate: '1991-02-03', sex: 'female', facility: 'north-hc-1' };
    const existing = await stack.api('POST', '/patients', D);
    expect(existing.status).to.equal(201);
    const existingId = String(existing.body.id);
    const registerDuplicate = async () => {
      await page.click('#nav-patients');
      await page.click('#register-link');
      await fillPatientForm(page, D);
      await page.click('#patient-form button[type=submit]');
      await page.waitForSelector('#record-problem', { timeout: 60_000 });
      await page.click('#record-problem a');
      await page.waitForSelector('#duplicate');
    };
    // One way: it is the same patient; my registration is dropped and the existing one opens.
    await registerDuplicate();
    // The candidate is in ada's facility, so the replica names it beside her registration.
    await page.waitForSelector(`[data-candidate="${existingId}"]:has-text("Testerova")`, { timeout: 30_000 });
    await checkScreen(page, '10-duplicate');
    await page.click('.same-patient');
    await page.waitForFunction((id) => location.pathname.endsWith(id), existingId);
    await page.waitForSelector(`#record[data-entity="${existingId}"]:has-text("Dupliqua")`);
    // The other: a different person; a 1-character reason is refused on its field with the rule.
    await registerDuplicate();
    expect(await page.textContent('#dup-reason-rule')).to.include('at least 3 characters');
    await page.fill('#dup-reason', 'x');
    await page.click('#create-anyway-submit');
    await page.waitForSelector('#dup-reason[aria-invalid=true]');
    expect(await page.textContent('#dup-reason-error')).to.include('at least 3 characters');
    await page.fill('#dup-reason', 'Different person: checked the national ID card');
    await page.click('#create-anyway-submit');
    await page.waitForSelector('#record-sync[data-state=committed]', { timeout: 60_000 });
    await page.waitForSelector('#all-confirmed', { timeout: 30_000 });
  });

  it('acts on an IDENTIFIER_CONFLICT rejection: corrected and sent again, it is confirmed', async function () {
    const { page } = ada;
    const holder = await stack.api('POST', '/patients', { givenName: 'Idholda', familyName: 'Nummerova', birthDate: '1975-05-05', sex: 'female', facility: 'north-hc-1', identifiers: [{ system: 'national-id', value: 'NID-42-4242' }] });
    expect(holder.status).to.equal(201);
    await page.click('#nav-patients');
    await page.click('#register-link');
    await fillPatientForm(page, { givenName: 'Otheria', familyName: 'Personova', birthDate: '1988-08-08', sex: 'female', nationalId: 'NID-42-4242' });
    await page.click('#patient-form button[type=submit]');
    // The shared identifier makes it a likely duplicate; create anyway; the identifier is still taken.
    await page.waitForSelector('#record-problem', { timeout: 60_000 });
    await page.click('#record-problem a');
    await page.waitForSelector('#duplicate');
    await page.fill('#dup-reason', 'Not the same person: different name and birth date');
    await page.click('#create-anyway-submit');
    await page.waitForSelector('#record-problem', { timeout: 60_000 });
    await page.click('#record-problem a');
    await page.waitForSelector('#rejection[data-code=IDENTIFIER_CONFLICT]');
    expect(await page.textContent('#rejection')).to.include('already used by another patient').and.include('correct it and send it again, or discard it');
    await checkScreen(page, '11-rejection');
    await page.click('#resubmit');
    await page.waitForSelector('#patient-form');
    await page.fill('#f-nationalId', 'NID-42-9999');
    await page.click('#patient-form button[type=submit]');
    await page.waitForSelector('#record-sync[data-state=committed]', { timeout: 60_000 });
    await page.waitForSelector('#all-confirmed', { timeout: 30_000 });
  });

  it('keeps every typed field when the server is killed and restarted mid-capture', async function () {
    const { page } = ada;
    await page.click('#nav-patients');
    await page.click('#register-link');
    await fillPatientForm(page, { givenName: 'Restarta', familyName: 'Killgrove' });
    await stack.kill();
    await page.waitForSelector('#reach:not([data-state=online])', { timeout: 60_000 });
    await fillPatientForm(page, { birthDate: '1966-06-16', sex: 'other', phone: '+254 700 999000' });
    await checkScreen(page, '12-server-down-mid-capture');
    await stack.start();
    await page.waitForSelector('#reach[data-state=online]', { timeout: 90_000 });
    expect(await page.inputValue('#f-givenName')).to.equal('Restarta');
    expect(await page.inputValue('#f-familyName')).to.equal('Killgrove');
    expect(await page.inputValue('#f-birthDate')).to.equal('1966-06-16');
    expect(await page.isChecked('#sex-other')).to.equal(true);
    expect(await page.inputValue('#f-phone')).to.equal('+254 700 999000');
    await page.click('#patient-form button[type=submit]');
    await page.waitForSelector('#record-sync[data-state=committed]', { timeout: 60_000 });
  });

  it('names the unsynced count before a wipe, keeps the data on "keep", and signs out revoking the session', async function () {
    const { page, context } = ada;
    await context.setOffline(true);
    await page.waitForSelector('#reach[data-state=offline]', { timeout: 30_000 });
    await page.click('#nav-patients');
    await page.click('#register-link');
    await fillPatientForm(page, { givenName: 'Waitina', familyName: 'Unsentova', birthDate: '1999-09-09', sex: 'female' });
    await page.click('#patient-form button[type=submit]');
    await page.waitForSelector('#record-sync[data-state=queued]');
    await page.click('#nav-device');
    await page.click('#wipe');
    await page.waitForSelector('#wipe-confirm');
    expect(await page.textContent('#wipe-question')).to.include('1 change(s) have not reached the server');
    await checkScreen(page, '13-device-wipe-confirm');
    await page.click('#wipe-no');
    await page.waitForSelector('#wipe-confirm', { state: 'detached' });
    await page.click('#signout');
    await page.waitForSelector('#signout-anyway');
    expect(await page.textContent('.confirm')).to.include('1 change(s)');
    await page.click('.confirm button:not(#signout-anyway)');
    await context.setOffline(false);
    await page.waitForSelector('#all-confirmed', { timeout: 60_000 });
    const refreshToken = await page.evaluate(() => sessionStorage.getItem('ferry.refresh'));
    expect(refreshToken).to.be.a('string');
    await page.click('#signout');
    await page.waitForSelector('#signin');
    expect(await page.evaluate(() => sessionStorage.getItem('ferry.refresh'))).to.equal(null);
    const refresh = await fetch(`${stack.url}/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: refreshToken }) });
    expect(refresh.status).to.equal(401);
    // Back in, the store is there (unlock, not first use); then wipe with nothing unsynced.
    await signInOnScreen(page, 'ada');
    await page.click('#nav-device');
    await page.click('#wipe');
    expect(await page.textContent('#wipe-question')).to.include('All changes have reached the server');
    await page.click('#wipe-yes');
    await page.waitForSelector('#signin');
    // The wiped store is gone: the next sign-in is a first use again.
    await page.fill('#signin-user', 'ada');
    await page.fill('#signin-password', 'ferry-dev');
    await page.click('#signin button[type=submit]');
    await page.waitForSelector('#unlock[data-first-use=yes]');
  });

  it('locks itself after the idle time', async function () {
    const { page } = await newPage({ clock: true });
    await signInThroughApp(page, stack.url, 'ben');
    await page.clock.fastForward('16:00');
    await page.waitForSelector('#locked-notice', { timeout: 30_000 });
    expect(await page.locator('#patients').count()).to.equal(0);
    await checkScreen(page, '14-idle-locked');
    await unlockThroughApp(page);
    // The passphrase change: the new one typed twice; afterwards only the new one unlocks.
    await page.click('#nav-device');
    await page.fill('#pass-old', 'a long device passphrase');
    await page.fill('#pass-new', 'another long passphrase');
    await page.fill('#pass-confirm', 'another long passphrasf');
    await page.click('#passphrase-change button[type=submit]');
    await page.waitForSelector('#pass-confirm[aria-invalid=true]');
    await page.fill('#pass-confirm', 'another long passphrase');
    await page.click('#passphrase-change button[type=submit]');
    await page.waitForSelector('#pass-message:has-text("was changed")');
    await page.click('#lock');
    await page.fill('#unlock-passphrase', 'a long device passphrase');
    await page.click('#unlock button[type=submit]');
    await page.waitForSelector('#unlock-passphrase[aria-invalid=true]');
    await page.fill('#unlock-passphrase', 'another long passphrase');
    await page.click('#unlock button[type=submit]');
    await page.waitForSelector('#nav-patients');
  });

  it("switches tenant through the picker of the user's memberships", async function () {
    const { page } = await newPage();
    await signInThroughApp(page, stack.url, 'cy', { tenant: 'south', screens: '15-tenant' });
    expect(await page.textContent('#who')).to.include('south');
    await page.click('#nav-device');
    await checkScreen(page, '16-device');
    await page.click('#switch-tenant');
    await signInOnScreen(page, 'cy', { tenant: 'east' });
    expect(await page.textContent('#who')).to.include('east');
  });

  it('gives a viewer a read-only app: no registration', async function () {
    const { page } = await newPage();
    await signInThroughApp(page, stack.url, 'dee');
    expect(await page.locator('#register-link').count()).to.equal(0);
    // dee reads north-hc-1's patients from the replica, and has no edit button on them.
    await page.waitForSelector('#patients li', { timeout: 60_000 });
    await checkScreen(page, '17-viewer-list');
    await page.click('#patients li a');
    await page.waitForSelector('#record');
    expect(await page.locator('#edit-link').count()).to.equal(0);
    await go(page, '/app/register');
    await page.waitForSelector('#viewer-notice');
    expect(await page.locator('#patient-form').count()).to.equal(0);
    await checkScreen(page, '18-viewer-register');
  });

  it("lists only the signed-in user's memberships at GET /auth/memberships", async function () {
    expect((await fetch(`${stack.url}/auth/memberships`)).status).to.equal(401);
    const res = await fetch(`${stack.url}/auth/memberships`, { headers: { authorization: `Bearer ${await stack.token('cy', 'north')}` } });
    expect(res.status).to.equal(200);
    const body = (await res.json()) as { memberships: Array<{ tenant: string; roles: string[]; facilities: string[] }> };
    expect(body.memberships.map((m) => m.tenant)).to.deep.equal(['east', 'north', 'south']);
    expect(body.memberships.find((m) => m.tenant === 'south')).to.deep.equal({ tenant: 'south', roles: ['registrar'], facilities: ['south-hc-1'] });
  });

  it('speaks French when chosen, every screen still clean for axe-core', async function () {
    const { page } = await newPage();
    await page.goto(`${stack.url}/app/`);
    await page.selectOption('.lang select', 'fr');
    await page.waitForSelector('html[lang=fr]');
    expect(await page.textContent('#signin button[type=submit]')).to.equal('Se connecter');
    await signInOnScreen(page, 'ben');
    expect(await page.textContent('#register-link')).to.equal('Enregistrer un patient');
    await page.click('#register-link');
    await page.click('#patient-form button[type=submit]');
    await page.waitForSelector('#givenName-error');
    expect(await page.textContent('#givenName-error')).to.equal('Saisissez le prénom.');
    await checkScreen(page, '19-fr-register-errors');
  });
});
