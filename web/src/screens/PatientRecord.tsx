// One patient: demographics, version, where its latest change stands (saved on this device /
// sent / confirmed by the server, with times) and this device's changes to it.

import { useRoute } from 'preact-iso';
import type { MutationInfo } from '../../../client/browser.ts';
import { useApp } from '../app-state.ts';
import { canRegister, membershipOf } from '../auth.ts';
import { formatTime, t } from '../i18n.ts';
import { codeKey, committedAt, opKey, problemCode, stateKey } from '../labels.ts';
import { BASE } from '../paths.ts';
import { patientDetail } from '../records.ts';
import { Demographics, Name, ScreenTitle } from '../ui.tsx';

function timeOf(m: MutationInfo): string {
  return formatTime(committedAt(m) ?? m.createdAt);
}

export function PatientRecord() {
  const app = useApp();
  const { params } = useRoute();
  const s = app.session;
  const id = params.id ?? '';
  if (!s || s.locked || s.closed) return null;
  const d = patientDetail(s, id);
  if (!d.patient) {
    return (
      <section class="card">
        <ScreenTitle>{t('record.title')}</ScreenTitle>
        <p>{t('record.notFound')}</p>
        <a href={`${BASE}/`}>{t('record.back')}</a>
      </section>
    );
  }
  const latest = d.history.at(-1);
  const writer = canRegister(membershipOf(app.last));
  const problem = d.problems[0];
  // A pending registration can be edited too (the update chains after it); one the server never
  // took and nothing is pending for (discarded) cannot.
  const editable = writer && !problem && (d.version !== null || d.pending.length > 0);
  return (
    <section class="card" id="record" data-entity={id}>
      <a href={`${BASE}/`} class="back">
        {t('record.back')}
      </a>
      <ScreenTitle>
        <Name p={d.patient} />
      </ScreenTitle>
      {problem ? (
        <div class="callout callout-problem" id="record-problem">
          <p>{t(codeKey(problemCode(problem)))}</p>
          <a class="button primary" href={`${BASE}/problems/${problem.mid}`}>
            {t('record.resolve')}
          </a>
        </div>
      ) : null}
      <h2>{t('record.demographics')}</h2>
      <Demographics p={d.patient} />
      <dl class="facts">
        <div class="fact">
          <dt>{t('record.version')}</dt>
          <dd id="record-version">{d.version ?? t('record.noVersion')}</dd>
        </div>
        <div class="fact">
          <dt>{t('record.sync')}</dt>
          <dd id="record-sync" data-state={latest?.state.kind ?? 'none'}>
            {latest ? t('state.at', { state: t(stateKey(latest)), time: timeOf(latest) }) : d.confirmedAt ? t('state.at', { state: t('state.committed'), time: formatTime(d.confirmedAt) }) : '—'}
          </dd>
        </div>
      </dl>
      {editable ? (
        <a class="button" href={`${BASE}/patients/${id}/edit`} id="edit-link">
          {t('record.edit')}
        </a>
      ) : null}
      <h2>{t('record.history')}</h2>
      {d.history.length === 0 ? (
        <p>{t('record.noHistory')}</p>
      ) : (
        <ol class="history" id="history">
          {d.history
            .slice()
            .reverse()
            .map((m) => (
              <li key={m.mid} data-mid={m.mid} data-state={m.state.kind}>
                <span class="history-op">{t(opKey(m.op))}</span>
                <span class={`state state-${m.state.kind}`}>{t(stateKey(m))}</span>
                <span class="history-time">
                  {t('state.queued')}: {formatTime(m.createdAt)}
                  {committedAt(m) ? ` · ${t('state.committed')}: ${formatTime(committedAt(m))}` : ''}
                </span>
              </li>
            ))}
        </ol>
      )}
    </section>
  );
}
