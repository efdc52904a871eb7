// Sign in with the dev IdP, then the tenant picker from the user's memberships (GET
// /auth/memberships). The password is held in memory only between the two steps, to open the
// session in the tenant picked; it is dropped as soon as that is done.

import { useState } from 'preact/hooks';
import { getState, signedInAs, tokens, update } from '../app-state.ts';
import type { Membership } from '../auth.ts';
import { t, type MessageKey } from '../i18n.ts';
import { ScreenTitle } from '../ui.tsx';

interface PendingChoice {
  username: string;
  password: string;
  owner: string;
  tenant: string;
  memberships: Membership[];
}
let pending: PendingChoice | null = null;

const NOTICES: Record<'signedOut' | 'wiped' | 'locked', MessageKey> = { signedOut: 'device.signedOut', wiped: 'device.wiped', locked: 'unlock.locked' };

export function SignIn() {
  const last = getState().last;
  const notice = getState().notice;
  const [username, setUsername] = useState(last?.username ?? '');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<MessageKey | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const outcome = await tokens.signIn(username.trim(), password, last && last.username === username.trim() ? last.tenant : undefined);
    // The last tenant may be gone: sign in to the first membership instead, then pick.
    const retried = !outcome.ok && outcome.reason === 'not-member' ? await tokens.signIn(username.trim(), password) : outcome;
    if (!retried.ok) {
      setBusy(false);
      setError(retried.reason === 'wrong' ? 'signin.wrong' : retried.reason === 'not-member' ? 'signin.notMember' : retried.reason === 'unreachable' ? 'signin.offline' : 'signin.failed');
      return;
    }
    let memberships: Membership[];
    try {
      memberships = await tokens.memberships();
    } catch {
      memberships = [{ tenant: retried.tenant, roles: retried.roles, facilities: [] }];
    }
    setBusy(false);
    if (memberships.length > 1) {
      pending = { username: username.trim(), password, owner: retried.owner, tenant: retried.tenant, memberships };
      update({ phase: 'tenant' });
      return;
    }
    signedInAs({ owner: retried.owner, username: username.trim(), tenant: retried.tenant, memberships });
    update({ phase: 'unlock', notice: null });
  }

  return (
    <section class="card narrow">
      <ScreenTitle>{t('signin.title')}</ScreenTitle>
      {notice && notice !== 'locked' ? (
        <p class="notice" role="status">
          {t(NOTICES[notice])}
        </p>
      ) : null}
      <form id="signin" onSubmit={(e) => void submit(e)} noValidate>
        <div class="field">
          <label for="signin-user">{t('signin.user')}</label>
          <input id="signin-user" name="username" autocomplete="username" required value={username} onInput={(e) => setUsername(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="signin-password">{t('signin.password')}</label>
          <input id="signin-password" name="password" type="password" autocomplete="current-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        </div>
        <div role="alert" class="error-text" id="signin-error">
          {error ? t(error) : null}
        </div>
        <button type="submit" class="primary" disabled={busy}>
          {busy ? t('signin.busy') : t('signin.submit')}
        </button>
      </form>
      {last ? (
        <p class="aside">
          <button type="button" class="link-button" id="use-offline" onClick={() => update({ phase: 'unlock' })}>
            {t('signin.useOffline')}
          </button>
        </p>
      ) : null}
    </section>
  );
}

export function TenantPicker() {
  const choice = pending;
  const [tenant, setTenant] = useState(choice?.tenant ?? '');
  const [error, setError] = useState<MessageKey | null>(null);
  const [busy, setBusy] = useState(false);
  if (!choice) {
    update({ phase: 'signin' });
    return null;
  }

  async function submit(e: Event) {
    e.preventDefault();
    if (!choice) return;
    setBusy(true);
    if (tenant !== choice.tenant) {
      // The sign-in opened a session in another tenant: end it, open one in the tenant picked.
      await tokens.revokeCurrent();
      const outcome = await tokens.signIn(choice.username, choice.password, tenant);
      if (!outcome.ok) {
        setBusy(false);
        setError(outcome.reason === 'not-member' ? 'signin.notMember' : 'signin.failed');
        return;
      }
    }
    pending = null;
    signedInAs({ owner: choice.owner, username: choice.username, tenant, memberships: choice.memberships });
    update({ phase: 'unlock', notice: null });
  }

  return (
    <section class="card narrow">
      <ScreenTitle>{t('tenant.title')}</ScreenTitle>
      <form id="tenant-picker" onSubmit={(e) => void submit(e)}>
        <fieldset>
          <legend>{t('tenant.legend')}</legend>
          {choice.memberships.map((m) => (
            <div class="choice" key={m.tenant}>
              <input type="radio" id={`tenant-${m.tenant}`} name="tenant" value={m.tenant} checked={tenant === m.tenant} onChange={() => setTenant(m.tenant)} aria-describedby={`tenant-${m.tenant}-roles`} />
              <label for={`tenant-${m.tenant}`}>{m.tenant}</label>
              <span class="hint" id={`tenant-${m.tenant}-roles`}>
                {t('tenant.roles', { roles: m.roles.join(', ') })}
              </span>
            </div>
          ))}
        </fieldset>
        <div role="alert" class="error-text">
          {error ? t(error) : null}
        </div>
        <button type="submit" class="primary" disabled={busy || !tenant}>
          {t('tenant.continue')}
        </button>
      </form>
    </section>
  );
}
