// This device: lock, idle lock time, passphrase change, tenant switch, sign out, and — apart,
// in a danger zone — wipe behind a confirmation that names the unsynced count.

import { useState } from 'preact/hooks';
import { IDLE_CHOICES, idleMinutes, leaveTenant, setIdleMinutes, signedOut, useApp } from '../app-state.ts';
import { t, type MessageKey } from '../i18n.ts';
import { ScreenTitle } from '../ui.tsx';
import { MIN_PASSPHRASE } from './Unlock.tsx';
import type { Session } from '../../../client/browser.ts';

function PassphraseChange({ s }: { s: Session }) {
  const [oldP, setOld] = useState('');
  const [newP, setNew] = useState('');
  const [confirm, setConfirm] = useState('');
  const [message, setMessage] = useState<{ key: MessageKey; ok: boolean; field?: string } | null>(null);
  async function submit(e: Event) {
    e.preventDefault();
    if (newP.length < MIN_PASSPHRASE) return setMessage({ key: 'unlock.tooShort', ok: false, field: 'pass-new' });
    if (newP !== confirm) return setMessage({ key: 'unlock.mismatch', ok: false, field: 'pass-confirm' });
    try {
      await s.changePassphrase(oldP, newP);
      setOld('');
      setNew('');
      setConfirm('');
      setMessage({ key: 'device.passDone', ok: true });
    } catch {
      setMessage({ key: 'unlock.wrong', ok: false, field: 'pass-old' });
    }
  }
  const input = (id: string, labelKey: MessageKey, value: string, set: (v: string) => void, autocomplete: string) => (
    <div class="field">
      <label for={id}>{t(labelKey)}</label>
      <input id={id} type="password" autocomplete={autocomplete} value={value} onInput={(e) => set(e.currentTarget.value)} aria-invalid={message?.field === id ? true : undefined} aria-describedby={message?.field === id ? 'pass-message' : 'pass-rule'} />
    </div>
  );
  return (
    <section class="card" aria-labelledby="pass-title">
      <h2 id="pass-title">{t('device.passTitle')}</h2>
      <form id="passphrase-change" onSubmit={(e) => void submit(e)} noValidate>
        {input('pass-old', 'device.passOld', oldP, setOld, 'current-password')}
        {input('pass-new', 'device.passNew', newP, setNew, 'new-password')}
        {input('pass-confirm', 'device.passConfirm', confirm, setConfirm, 'new-password')}
        <p class="hint" id="pass-rule">
          {t('unlock.rule')}
        </p>
        <p id="pass-message" role="status" class={message?.ok ? 'ok-text' : 'error-text'}>
          {message ? t(message.key) : ''}
        </p>
        <button type="submit">{t('device.passSave')}</button>
      </form>
    </section>
  );
}

export function DeviceScreen() {
  const app = useApp();
  const s = app.session;
  const [unsynced, setUnsynced] = useState<number | null>(null);
  const [wipeCount, setWipeCount] = useState<number | null>(null);
  if (!s || s.locked || s.closed) return null;
  const others = (app.last?.memberships ?? []).filter((m) => m.tenant !== app.last?.tenant);

  async function signOut(confirm: boolean) {
    if (!s) return;
    const r = await s.signOut({ confirm });
    if (!r.ok) return setUnsynced(r.unsynced);
    signedOut('signedOut');
  }
  async function askWipe() {
    if (!s) return;
    setWipeCount(await s.unsynced());
  }
  async function wipe() {
    if (!s) return;
    const r = await s.signOut({ wipe: true, confirm: true });
    if (r.ok) signedOut('wiped');
  }

  return (
    <>
      <section class="card">
        <ScreenTitle>{t('device.title')}</ScreenTitle>
        <div class="actions">
          <button type="button" id="lock" onClick={() => void s.lock()}>
            {t('device.lock')}
          </button>
        </div>
        <div class="field inline">
          <label for="idle-minutes">{t('device.idle')}</label>
          <select id="idle-minutes" value={String(idleMinutes())} onChange={(e) => setIdleMinutes(Number(e.currentTarget.value))}>
            {IDLE_CHOICES.map((m) => (
              <option value={String(m)} key={m}>
                {m}
              </option>
            ))}
          </select>
        </div>
      </section>
      <PassphraseChange s={s} />
      {others.length > 0 ? (
        <section class="card" aria-labelledby="switch-title">
          <h2 id="switch-title">{t('tenant.switch')}</h2>
          <p class="help">{t('tenant.switchHelp')}</p>
          <button type="button" id="switch-tenant" onClick={() => void leaveTenant()}>
            {t('tenant.switch')}
          </button>
        </section>
      ) : null}
      <section class="card" aria-labelledby="signout-title">
        <h2 id="signout-title">{t('device.signOutTitle')}</h2>
        <p class="help">{t('device.signOutHelp')}</p>
        {unsynced !== null ? (
          <div class="confirm" role="alert">
            <p>{t('device.signOutUnsynced', { count: unsynced })}</p>
            <button type="button" id="signout-anyway" onClick={() => void signOut(true)}>
              {t('device.signOutAnyway')}
            </button>
            <button type="button" onClick={() => setUnsynced(null)}>
              {t('form.cancel')}
            </button>
          </div>
        ) : (
          <button type="button" id="signout" onClick={() => void signOut(false)}>
            {t('device.signOut')}
          </button>
        )}
      </section>
      <section class="card danger-zone" aria-labelledby="danger-title">
        <h2 id="danger-title">{t('device.danger')}</h2>
        <p class="help">{t('device.wipeHelp')}</p>
        {wipeCount === null ? (
          <button type="button" class="danger-quiet" id="wipe" onClick={() => void askWipe()}>
            {t('device.wipe')}
          </button>
        ) : (
          <div class="confirm" role="alertdialog" aria-labelledby="wipe-question" id="wipe-confirm">
            <p id="wipe-question">{wipeCount > 0 ? t('device.wipeConfirm', { count: wipeCount }) : t('device.wipeConfirmNone')}</p>
            <button type="button" class="danger" id="wipe-yes" onClick={() => void wipe()}>
              {wipeCount > 0 ? t('device.wipeYes', { count: wipeCount }) : t('device.wipeYesNone')}
            </button>
            <button type="button" id="wipe-no" onClick={() => setWipeCount(null)}>
              {t('device.keep')}
            </button>
          </div>
        )}
      </section>
    </>
  );
}
