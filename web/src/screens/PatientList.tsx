// Find a patient: the list of patients on this device and a search over names, identifiers and
// birth dates, offline. The search text stays in this component (never in the URL: it is PHI).

import { useState } from 'preact/hooks';
import { useApp } from '../app-state.ts';
import { canRegister, membershipOf } from '../auth.ts';
import { formatDate, t } from '../i18n.ts';
import { listPatients, searchPatients } from '../records.ts';
import { Name, ScreenTitle } from '../ui.tsx';
import { BASE } from '../paths.ts';

const PAGE = 50;

export function PatientList() {
  const app = useApp();
  const [text, setText] = useState('');
  const [limit, setLimit] = useState(PAGE);
  const s = app.session;
  if (!s || s.locked || s.closed) return null;
  const searching = text.trim().length > 0;
  const hits = searching ? searchPatients(s, text, { limit: limit + 1 }) : listPatients(s, { limit: limit + 1 });
  const shown = hits.slice(0, limit);
  const writer = canRegister(membershipOf(app.last));
  return (
    <section class="card">
      <div class="title-row">
        <ScreenTitle>{t('list.title')}</ScreenTitle>
        {writer ? (
          <a class="button primary" href={`${BASE}/register`} id="register-link">
            {t('list.register')}
          </a>
        ) : null}
      </div>
      <form role="search" onSubmit={(e) => e.preventDefault()}>
        <div class="field">
          <label for="search">{t('list.search')}</label>
          <input id="search" type="search" autocomplete="off" value={text} onInput={(e) => setText(e.currentTarget.value)} aria-describedby="search-help" />
          <p class="hint" id="search-help">
            {t('list.searchHelp')}
          </p>
        </div>
      </form>
      <p role="status" class="count" id="result-count">
        {shown.length === 0 ? (searching ? t('list.none') : t('list.empty')) : t('list.count', { count: shown.length })}
      </p>
      <ul class="patients" id="patients">
        {shown.map((h) => (
          <li key={h.id} data-entity={h.id}>
            <a href={`${BASE}/patients/${h.id}`} class="patient-link">
              <span class="patient-name">
                <Name p={h.patient} />
              </span>
              <span class="patient-meta">
                {t('list.born', { date: formatDate(h.patient.birthDate) })}
                {h.patient.identifiers?.length ? <span dir="auto"> · {h.patient.identifiers.map((i) => i.value).join(', ')}</span> : null}
              </span>
              {h.pending || h.version === null ? <span class="badge badge-pending">{h.pending ? t('state.queued') : t('list.notSent')}</span> : null}
            </a>
          </li>
        ))}
      </ul>
      {hits.length > limit ? (
        <button type="button" onClick={() => setLimit(limit + PAGE)}>
          {t('list.more')}
        </button>
      ) : null}
    </section>
  );
}
