// First use: choose a passphrase and type it twice (one typo must not lock the user out of their
// own data). Later: unlock with it. The passphrase never leaves the device.

import { useEffect, useState } from 'preact/hooks';
import { isClientError } from '../../../client/browser.ts';
import { getState, openStore, storeExists, tokens, update } from '../app-state.ts';
import { t, type MessageKey } from '../i18n.ts';
import { ScreenTitle } from '../ui.tsx';

export const MIN_PASSPHRASE = 8;

export function Unlock() {
  const { last, notice } = getState();
  const [exists, setExists] = useState<boolean | null>(null);
  const [passphrase, setPassphrase] = useState('');
  const [confirm, setConfirm] = useState('');
  const [error, setError] = useState<{ key: MessageKey; field: 'passphrase' | 'confirm' } | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (!last) return;
    void storeExists(last.tenant, last.owner).then(setExists, () => setExists(true));
  }, [last?.tenant, last?.owner]);

  if (!last) {
    update({ phase: 'signin' });
    return null;
  }
  if (exists === null) return <p>{t('app.loading')}</p>;
  const firstUse = !exists;

  async function submit(e: Event) {
    e.preventDefault();
    if (firstUse && passphrase.length < MIN_PASSPHRASE) return fail({ key: 'unlock.tooShort', field: 'passphrase' });
    if (firstUse && passphrase !== confirm) return fail({ key: 'unlock.mismatch', field: 'confirm' });
    setBusy(true);
    setError(null);
    try {
      await openStore(passphrase);
    } catch (err) {
      setBusy(false);
      fail({ key: isClientError(err, 'WRONG_PASSPHRASE') ? 'unlock.wrong' : 'unlock.failed', field: 'passphrase' });
    }
  }
  function fail(e: { key: MessageKey; field: 'passphrase' | 'confirm' }) {
    setError(e);
    document.getElementById(e.field === 'passphrase' ? 'unlock-passphrase' : 'unlock-confirm')?.focus();
  }

  const invalid = (f: 'passphrase' | 'confirm') => (error?.field === f ? { 'aria-invalid': true as const, 'aria-describedby': `unlock-${f}-error unlock-rule` } : { 'aria-describedby': 'unlock-rule' });
  return (
    <section class="card narrow">
      <ScreenTitle>{firstUse ? t('unlock.titleNew') : t('unlock.titleExisting')}</ScreenTitle>
      {notice === 'locked' ? (
        <p class="notice" role="status" id="locked-notice">
          {t('unlock.locked')}
        </p>
      ) : null}
      <p class="help">{t('unlock.help')}</p>
      <form id="unlock" data-first-use={firstUse ? 'yes' : 'no'} onSubmit={(e) => void submit(e)} noValidate>
        <div class="field">
          <label for="unlock-passphrase">{t('unlock.passphrase')}</label>
          <input id="unlock-passphrase" name="passphrase" type="password" autocomplete={firstUse ? 'new-password' : 'current-password'} value={passphrase} onInput={(e) => setPassphrase(e.currentTarget.value)} {...invalid('passphrase')} />
          {error?.field === 'passphrase' ? (
            <p class="error-text" id="unlock-passphrase-error">
              {t(error.key)}
            </p>
          ) : null}
        </div>
        {firstUse ? (
          <div class="field">
            <label for="unlock-confirm">{t('unlock.confirm')}</label>
            <input id="unlock-confirm" name="confirm" type="password" autocomplete="new-password" value={confirm} onInput={(e) => setConfirm(e.currentTarget.value)} {...invalid('confirm')} />
            {error?.field === 'confirm' ? (
              <p class="error-text" id="unlock-confirm-error">
                {t(error.key)}
              </p>
            ) : null}
          </div>
        ) : null}
        <p class="hint" id="unlock-rule">
          {t('unlock.rule')}
        </p>
        <div class="visually-hidden" aria-live="assertive">
          {error ? t(error.key) : ''}
        </div>
        <button type="submit" class="primary" disabled={busy}>
          {busy ? t('unlock.busy') : firstUse ? t('unlock.create') : t('unlock.submit')}
        </button>
      </form>
      {!tokens.signedIn ? (
        <p class="aside">
          {t('unlock.signedOut')}{' '}
          <button type="button" class="link-button" onClick={() => update({ phase: 'signin' })}>
            {t('unlock.signIn')}
          </button>
        </p>
      ) : null}
    </section>
  );
}
