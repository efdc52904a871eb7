// What needs the clinician: every conflict and rejection, each with its way out.
// - VERSION_CONFLICT: the three-way merge, field by field (web/src/merge.ts); the merge resolves it.
// - DUPLICATE_DETECTED: the candidates beside my registration; "same patient" or "create anyway" with a reason.
// - Other rejections (IDENTIFIER_CONFLICT, VALIDATION_FAILED, …): correct and send again, or discard.

import { useRoute, useLocation } from 'preact-iso';
import { useState } from 'preact/hooks';
import type { MutationInfo, Session } from '../../../client/browser.ts';
import { useApp } from '../app-state.ts';
import { canRegister, membershipOf } from '../auth.ts';
import { formatDate, formatTime, t, type MessageKey } from '../i18n.ts';
import { codeKey, opKey, problemCode } from '../labels.ts';
import { threeWay, mergedPayload, unresolvedFields, type Choices, type FieldMerge, type MergeField } from '../merge.ts';
import { BASE } from '../paths.ts';
import { formFromPatient } from '../patient-form.ts';
import { baseRecord, candidatePatient, openProblems, toPatient } from '../records.ts';
import { Name, ScreenTitle, identifiersText, valueText } from '../ui.tsx';
import { PatientForm } from './PatientForm.tsx';
import { findOp } from '../../../validators/manifest.ts';
import type { Patient } from '../../../validators/patient.ts';

export const REASON_MIN = 3;

export function Problems() {
  const app = useApp();
  const s = app.session;
  if (!s || s.locked || s.closed) return null;
  const problems = openProblems(s);
  return (
    <section class="card">
      <ScreenTitle>{t('problems.title')}</ScreenTitle>
      {problems.length === 0 ? (
        <p id="no-problems">{t('problems.none')}</p>
      ) : (
        <ul class="patients" id="problems">
          {problems.map((m) => {
            const p = toPatient(m.payload);
            return (
              <li key={m.mid} data-mid={m.mid}>
                <a href={`${BASE}/problems/${m.mid}`} class="patient-link">
                  <span class="patient-name">{p ? <Name p={p} /> : t(opKey(m.op))}</span>
                  <span class="patient-meta">
                    {t(opKey(m.op))} · {formatTime(m.createdAt)}
                  </span>
                  <span class="badge badge-problem">{t(codeKey(problemCode(m)))}</span>
                </a>
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}

export function Reconcile() {
  const app = useApp();
  const { params } = useRoute();
  const s = app.session;
  if (!s || s.locked || s.closed) return null;
  const m = s.mutation(params.mid ?? '');
  const writer = canRegister(membershipOf(app.last));
  if (!m || m.resolvedBy !== null || (m.state.kind !== 'conflict' && m.state.kind !== 'rejected')) {
    return (
      <section class="card">
        <ScreenTitle>{t('problems.title')}</ScreenTitle>
        <p id="no-problems">{t('problems.none')}</p>
        <a href={m ? `${BASE}/patients/${m.entity}` : `${BASE}/`}>{t('record.back')}</a>
      </section>
    );
  }
  const code = problemCode(m);
  if (m.state.kind === 'conflict' && code === 'VERSION_CONFLICT' && writer) return <MergeView s={s} m={m} />;
  if (m.state.kind === 'conflict' && code === 'DUPLICATE_DETECTED' && writer) return <DuplicateView s={s} m={m} />;
  return <RejectView s={s} m={m} writer={writer} />;
}

function useDone() {
  const { route } = useLocation();
  const [error, setError] = useState<MessageKey | null>(null);
  return {
    error,
    setError,
    finish: (entity: string) => route(`${BASE}/patients/${entity}`),
  };
}

const FIELD_LABELS: Record<MergeField, MessageKey> = {
  givenName: 'field.givenName',
  familyName: 'field.familyName',
  birthDate: 'field.birthDate',
  sex: 'field.sex',
  phone: 'field.phone',
  identifiers: 'field.identifiers',
  facility: 'field.facility',
  address: 'field.address',
};
const AUTO: Record<'same' | 'mine' | 'server', MessageKey> = { same: 'merge.auto.same', mine: 'merge.auto.mine', server: 'merge.auto.server' };

function label(f: MergeField): string {
  return t(FIELD_LABELS[f]).replace(/\s*\(.*\)$/, '');
}

function MergeView({ s, m }: { s: Session; m: MutationInfo }) {
  const done = useDone();
  const [choices, setChoices] = useState<Choices>({});
  const server = toPatient(m.state.kind === 'conflict' ? (m.state.current as Record<string, unknown> | null) : null);
  const mine = toPatient(m.payload);
  const base = baseRecord(s, m.entity, m.baseVersion);
  if (!server || !mine) return <RejectView s={s} m={m} writer />;
  const fields = threeWay(base, mine, server);
  const changed = fields.filter((f) => f.outcome !== 'same');
  const unchanged = fields.filter((f) => f.outcome === 'same' && f.mine !== undefined);
  const remaining = unresolvedFields(fields, choices);
  const auto = (dir: 'auto' | undefined, v: unknown, f: MergeField) => <span dir={dir}>{valueText(f, v)}</span>;

  async function save() {
    const payload = mergedPayload(fields, choices);
    if (!payload) return;
    const r = await s.resolve(m.mid, { kind: 'merge', payload });
    if (!r.ok) return done.setError('code.other');
    done.finish(m.entity);
  }

  return (
    <section class="card" id="merge" data-mid={m.mid}>
      <ScreenTitle>{t('merge.title')}</ScreenTitle>
      <p class="help">{t('merge.help')}</p>
      <ol class="merge-fields">
        {changed.map((f: FieldMerge) => {
          const dir = f.field === 'givenName' || f.field === 'familyName' || f.field === 'identifiers' ? 'auto' : undefined;
          return (
            <li key={f.field} class={`merge-field merge-${f.outcome}`} data-field={f.field} data-outcome={f.outcome}>
              <h2 class="merge-name">{label(f.field)}</h2>
              <dl class="merge-sides">
                <div>
                  <dt>{t('merge.base')}</dt>
                  <dd>{base ? auto(dir, f.base, f.field) : '—'}</dd>
                </div>
                <div>
                  <dt>{t('merge.mine')}</dt>
                  <dd>{auto(dir, f.mine, f.field)}</dd>
                </div>
                <div>
                  <dt>{t('merge.server')}</dt>
                  <dd>{auto(dir, f.server, f.field)}</dd>
                </div>
              </dl>
              {f.outcome === 'choose' ? (
                <fieldset class="merge-choice">
                  <legend>{t('merge.choose', { field: label(f.field) })}</legend>
                  {(['mine', 'server'] as const).map((side) => (
                    <div class="choice" key={side}>
                      <input type="radio" id={`choose-${f.field}-${side}`} name={`choose-${f.field}`} value={side} checked={choices[f.field] === side} onChange={() => setChoices((c) => ({ ...c, [f.field]: side }))} />
                      <label for={`choose-${f.field}-${side}`}>
                        {side === 'mine' ? t('merge.keepMine') : t('merge.keepServer')}: {valueText(f.field, side === 'mine' ? f.mine : f.server)}
                      </label>
                    </div>
                  ))}
                </fieldset>
              ) : (
                <p class="merge-auto">{t(AUTO[f.outcome])}</p>
              )}
            </li>
          );
        })}
      </ol>
      {unchanged.length > 0 ? (
        <p class="merge-unchanged" id="merge-unchanged">
          {t('merge.unchanged', { fields: unchanged.map((f) => label(f.field)).join(', ') })}
        </p>
      ) : null}
      <p role="status" id="merge-remaining">
        {remaining.length > 0 ? t('merge.remaining', { count: remaining.length }) : ''}
      </p>
      <div role="alert" class="error-text">
        {done.error ? t(done.error) : null}
      </div>
      <div class="actions">
        <button type="button" class="primary" id="merge-save" disabled={remaining.length > 0} onClick={() => void save()}>
          {t('merge.save')}
        </button>
        <DiscardButton s={s} m={m} onDone={() => done.finish(m.entity)} />
      </div>
    </section>
  );
}

function PatientColumn({ title, p, id }: { title: string; p: Patient | null; id: string }) {
  return (
    <div class="compare-col" data-candidate={id}>
      <h2>{title}</h2>
      {p ? (
        <dl class="facts">
          <div class="fact">
            <dt>{t('field.name')}</dt>
            <dd>
              <Name p={p} />
            </dd>
          </div>
          <div class="fact">
            <dt>{t('field.birthDate')}</dt>
            <dd>{formatDate(p.birthDate)}</dd>
          </div>
          <div class="fact">
            <dt>{t('field.sex')}</dt>
            <dd>{valueText('sex', p.sex)}</dd>
          </div>
          <div class="fact">
            <dt>{t('field.identifiers')}</dt>
            <dd dir="auto">{identifiersText(p.identifiers) || t('merge.empty')}</dd>
          </div>
        </dl>
      ) : (
        <p>{t('dup.unknownCandidate')}</p>
      )}
    </div>
  );
}

function DuplicateView({ s, m }: { s: Session; m: MutationInfo }) {
  const done = useDone();
  const { route } = useLocation();
  const [reason, setReason] = useState('');
  const [reasonError, setReasonError] = useState(false);
  const candidates = m.state.kind === 'conflict' ? m.state.candidates : [];
  const mine = toPatient(m.payload);

  async function sameAs(candidate: string) {
    const r = await s.resolve(m.mid, { kind: 'discard' });
    if (!r.ok) return done.setError('code.other');
    route(`${BASE}/patients/${candidate}`);
  }
  async function createAnyway(e: Event) {
    e.preventDefault();
    if (reason.trim().length < REASON_MIN) {
      setReasonError(true);
      document.getElementById('dup-reason')?.focus();
      return;
    }
    const r = await s.resolve(m.mid, { kind: 'create-anyway', reason: reason.trim() });
    if (!r.ok) return done.setError('code.other');
    done.finish(m.entity);
  }

  return (
    <section class="card" id="duplicate" data-mid={m.mid}>
      <ScreenTitle>{t('dup.title')}</ScreenTitle>
      <p class="help">{t('dup.help')}</p>
      <div class="compare">
        <PatientColumn title={t('dup.mine')} p={mine} id="mine" />
        {candidates.map((c) => (
          <div key={c} class="compare-candidate">
            <PatientColumn title={t('dup.candidate')} p={candidatePatient(s, c)} id={c} />
            <button type="button" class="primary same-patient" onClick={() => void sameAs(c)}>
              {candidatePatient(s, c) ? t('dup.same') : t('dup.sameDiscard')}
            </button>
          </div>
        ))}
      </div>
      <form id="create-anyway" onSubmit={(e) => void createAnyway(e)} noValidate>
        <div class={`field${reasonError ? ' invalid' : ''}`}>
          <label for="dup-reason">{t('dup.reason')}</label>
          <p class="hint" id="dup-reason-rule">
            {t('dup.reasonRule')}
          </p>
          <textarea id="dup-reason" name="reason" rows={2} value={reason} onInput={(e) => setReason(e.currentTarget.value)} aria-invalid={reasonError ? true : undefined} aria-describedby={reasonError ? 'dup-reason-rule dup-reason-error' : 'dup-reason-rule'} />
          <p class="error-text" id="dup-reason-error" aria-live="assertive">
            {reasonError ? t('dup.reasonShort') : ''}
          </p>
        </div>
        <div role="alert" class="error-text">
          {done.error ? t(done.error) : null}
        </div>
        <button type="submit" id="create-anyway-submit">
          {t('dup.anyway')}
        </button>
      </form>
    </section>
  );
}

function DiscardButton({ s, m, onDone }: { s: Session; m: MutationInfo; onDone: () => void }) {
  const [asking, setAsking] = useState(false);
  if (!asking)
    return (
      <button type="button" class="danger-quiet" id="discard" onClick={() => setAsking(true)}>
        {t('reject.discard')}
      </button>
    );
  return (
    <div class="confirm" role="group" aria-labelledby="discard-question">
      <p id="discard-question">{t('reject.discardConfirm')}</p>
      <button
        type="button"
        class="danger"
        id="discard-yes"
        onClick={() =>
          void s.resolve(m.mid, { kind: 'discard' }).then((r) => {
            if (r.ok) onDone();
          })
        }
      >
        {t('reject.discard')}
      </button>
      <button type="button" onClick={() => setAsking(false)}>
        {t('form.cancel')}
      </button>
    </div>
  );
}

function RejectView({ s, m, writer }: { s: Session; m: MutationInfo; writer: boolean }) {
  const done = useDone();
  const [editing, setEditing] = useState(false);
  const mine = toPatient(m.payload);
  const kind = findOp(m.op)?.kind === 'create' ? 'create' : 'update';
  const membership = membershipOf(useApp().last);
  if (editing && mine) {
    // Correct and send again: a new mutation on the same entity that `resolves` the refused one.
    const confirmNotDuplicate = (m.payload as { confirmNotDuplicate?: unknown }).confirmNotDuplicate;
    return (
      <PatientForm
        kind={kind}
        initial={formFromPatient(mine)}
        base={mine}
        facilities={membership?.facilities ?? []}
        title="form.resubmitTitle"
        submitLabel="form.save"
        cancelHref={`${BASE}/problems/${m.mid}`}
        save={async (payload) => {
          const body = kind === 'create' && confirmNotDuplicate ? { ...payload, confirmNotDuplicate } : payload;
          const r = await s.mutate(m.op, body, { entity: m.entity, resolves: m.mid, ...(kind === 'update' && m.baseVersion !== null ? { baseVersion: m.baseVersion } : {}) });
          return r.ok ? { ok: true, entity: r.entity } : { ok: false, paths: r.errors.map((e) => e.path) };
        }}
        onSaved={() => done.finish(m.entity)}
      />
    );
  }
  return (
    <section class="card" id="rejection" data-mid={m.mid} data-code={problemCode(m) ?? ''}>
      <ScreenTitle>{t('reject.title')}</ScreenTitle>
      <p class="callout callout-problem">{t(codeKey(problemCode(m)))}</p>
      {mine ? (
        <p>
          <Name p={mine} /> · {formatDate(mine.birthDate)}
        </p>
      ) : null}
      <p>{t('reject.next')}</p>
      <div class="actions">
        {writer && mine ? (
          <button type="button" class="primary" id="resubmit" onClick={() => setEditing(true)}>
            {t('reject.edit')}
          </button>
        ) : null}
        <DiscardButton s={s} m={m} onDone={() => done.finish(m.entity)} />
      </div>
    </section>
  );
}
