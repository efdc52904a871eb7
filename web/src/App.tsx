// The app shell: skip link, header with the truthful state indicator, navigation and the routed
// screens. Until the store is unlocked only the sign-in, tenant and unlock screens exist.

import { LocationProvider, Router, Route, useLocation } from 'preact-iso';
import { tokens, useApp, update, type AppState } from './app-state.ts';
import { currentLocale, formatTime, LOCALES, setLocale, t } from './i18n.ts';
import { allConfirmed, reachOf, REACH_LABEL } from './sync-status.ts';
import { lastPulledAt, openProblems, pendingCount } from './records.ts';
import { SignIn, TenantPicker } from './screens/SignIn.tsx';
import { Unlock } from './screens/Unlock.tsx';
import { PatientList } from './screens/PatientList.tsx';
import { PatientRecord } from './screens/PatientRecord.tsx';
import { RegisterPatient, EditPatient } from './screens/PatientForm.tsx';
import { Problems, Reconcile } from './screens/Reconcile.tsx';
import { DeviceScreen } from './screens/Device.tsx';

import { BASE, ROUTES } from './paths.ts';

function LanguagePicker() {
  return (
    <label class="lang">
      <span class="visually-hidden">{t('app.language')}</span>
      <select
        value={currentLocale()}
        onChange={(e) => {
          setLocale((e.currentTarget as HTMLSelectElement).value === 'fr' ? 'fr' : 'en');
          update({});
        }}
      >
        {LOCALES.map((l) => (
          <option value={l} key={l} lang={l}>
            {l === 'en' ? 'English' : 'Français'}
          </option>
        ))}
      </select>
    </label>
  );
}

/** The later of two ISO times (either may be missing). */
function latest(a: string | null, b: string | null): string | null {
  if (!a) return b;
  if (!b) return a;
  return a > b ? a : b;
}

function LastSync({ at }: { at: string | null }) {
  return <span class="last-sync">{at ? t('status.lastSync', { time: formatTime(at) }) : t('status.neverSynced')}</span>;
}

function StatusIndicator({ app }: { app: AppState }) {
  const s = app.session;
  if (!s || s.closed || s.locked) return null;
  const reach = reachOf(app.sync, tokens.signedIn);
  const pending = pendingCount(s);
  const problems = openProblems(s).length;
  const done = allConfirmed(app.sync, pending, problems);
  return (
    <section class="status" aria-label={t('status.region')} data-reach={reach} data-confirmed={done ? 'yes' : 'no'} id="sync-status">
      {/* Announced only when reachability or "everything is confirmed" changes, not on every sync time. */}
      <p class="visually-hidden" aria-live="polite">
        {t(REACH_LABEL[reach])}
        {done ? `. ${t('status.allConfirmed')}` : ''}
      </p>
      <span class={`reach reach-${reach}`} id="reach" data-state={reach} aria-hidden="true">
        <span class="dot" aria-hidden="true" />
        {t(REACH_LABEL[reach])}
      </span>
      {done ? (
        <strong class="confirmed" id="all-confirmed">
          <span aria-hidden="true">✓ </span>
          {t('status.allConfirmed')}
        </strong>
      ) : (
        <span class="queue">
          {pending > 0 ? <span id="pending-count" data-count={pending}>{t('status.pending', { count: pending })}</span> : null}
          {problems > 0 ? (
            <a href={`${BASE}/problems`} class="problems-link" id="problems-count" data-count={problems}>
              {t('status.problems', { count: problems })}
            </a>
          ) : null}
        </span>
      )}
      <LastSync at={latest(app.lastSyncAt, lastPulledAt(s))} />
      {reach === 'retrying' || reach === 'offline' ? (
        <button type="button" class="link-button" onClick={() => s.sync.kick()}>
          {t('status.syncNow')}
        </button>
      ) : null}
    </section>
  );
}

function Nav({ app }: { app: AppState }) {
  const { path } = useLocation();
  const s = app.session;
  const problems = s && !s.locked && !s.closed ? openProblems(s).length : 0;
  const link = (href: string, label: string, id: string) => (
    <li>
      <a href={href} id={id} aria-current={path === href || (href !== `${BASE}/` && path.startsWith(href)) ? 'page' : undefined}>
        {label}
      </a>
    </li>
  );
  return (
    <nav aria-label={t('nav.main')}>
      <ul>
        {link(`${BASE}/`, t('nav.patients'), 'nav-patients')}
        {problems > 0 ? link(`${BASE}/problems`, t('nav.problems', { count: problems }), 'nav-problems') : null}
        {link(`${BASE}/device`, t('nav.device'), 'nav-device')}
      </ul>
    </nav>
  );
}

function Ready({ app }: { app: AppState }) {
  return (
    <LocationProvider scope={BASE}>
      <Nav app={app} />
      <main id="main" tabIndex={-1}>
        <Router>
          <Route path={`${BASE}${ROUTES.patients}`} component={PatientList} />
          <Route path={`${BASE}${ROUTES.register}`} component={RegisterPatient} />
          <Route path={`${BASE}${ROUTES.patient}`} component={PatientRecord} />
          <Route path={`${BASE}${ROUTES.editPatient}`} component={EditPatient} />
          <Route path={`${BASE}${ROUTES.problems}`} component={Problems} />
          <Route path={`${BASE}${ROUTES.problem}`} component={Reconcile} />
          <Route path={`${BASE}${ROUTES.device}`} component={DeviceScreen} />
          <Route default component={PatientList} />
        </Router>
      </main>
    </LocationProvider>
  );
}

export function App() {
  const app = useApp();
  const who = app.last && app.phase === 'ready' ? t('status.who', { user: app.last.username, tenant: app.last.tenant }) : null;
  return (
    <>
      <a class="skip" href="#main">
        {t('app.skip')}
      </a>
      <header class="top">
        <div class="brand">
          <span class="logo">{t('app.name')}</span>
          {who ? <span class="who" id="who">{who}</span> : null}
        </div>
        <LanguagePicker />
        <StatusIndicator app={app} />
      </header>
      {app.phase === 'ready' && app.session && !app.session.closed ? (
        <Ready app={app} />
      ) : (
        <main id="main" tabIndex={-1}>
          {app.phase === 'tenant' ? <TenantPicker /> : app.phase === 'unlock' ? <Unlock /> : <SignIn />}
        </main>
      )}
    </>
  );
}
