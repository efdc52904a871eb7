// Register and edit, checked by registration's zod schemas before anything is queued. Each
// error sits on its field (aria-invalid, aria-describedby), a summary is announced, and the
// focus moves to the first field to fix. The values live in this component's state, so status
// and sync events (which only re-render) never reset what is typed. No clinical field has a default.

import { useRoute, useLocation } from 'preact-iso';
import { useRef, useState } from 'preact/hooks';
import { useApp } from '../app-state.ts';
import { canRegister, membershipOf } from '../auth.ts';
import { t, type MessageKey } from '../i18n.ts';
import { BASE } from '../paths.ts';
import { checkForm, emptyForm, errorsFromPaths, formFromPatient, FORM_FIELDS, type FormErrors, type FormField, type FormValues } from '../patient-form.ts';
import { patientDetail } from '../records.ts';
import { ScreenTitle } from '../ui.tsx';
import { SEX_CODES, type Patient } from '../../../validators/patient.ts';

const LABELS: Record<FormField, MessageKey> = {
  givenName: 'field.givenName',
  familyName: 'field.familyName',
  birthDate: 'field.birthDate',
  sex: 'field.sex',
  phone: 'field.phone',
  nationalId: 'field.nationalId',
  facility: 'field.facility',
};

export interface PatientFormProps {
  kind: 'create' | 'update';
  initial: FormValues;
  base: Patient | null;
  facilities: string[];
  /** Writes the checked payload; answers the entity written or field paths the library refused. */
  save(payload: Record<string, unknown>): Promise<{ ok: true; entity: string } | { ok: false; paths: string[] }>;
  title: MessageKey;
  submitLabel: MessageKey;
  cancelHref: string;
  /** Where to go once saved. */
  onSaved(entity: string): void;
}

export function PatientForm(props: PatientFormProps) {
  const [values, setValues] = useState<FormValues>(props.initial);
  const [errors, setErrors] = useState<FormErrors>({});
  const [summary, setSummary] = useState('');
  const [busy, setBusy] = useState(false);
  const formRef = useRef<HTMLFormElement>(null);
  const set = (f: FormField, v: string) => setValues((old) => ({ ...old, [f]: v }));

  function show(errs: FormErrors) {
    const order = FORM_FIELDS.filter((f) => errs[f]);
    setErrors(errs);
    setSummary(t('form.errors', { count: order.length, fields: order.map((f) => t(LABELS[f]).replace(/\s*\(.*\)$/, '')).join(', ') }));
    const first = order[0];
    if (first) formRef.current?.querySelector<HTMLElement>(first === 'sex' ? 'input[name=sex]' : `[name=${first}]`)?.focus();
  }

  async function submit(e: Event) {
    e.preventDefault();
    const checked = checkForm(values, props.base, props.kind);
    if (!checked.ok) return show(checked.errors);
    setBusy(true);
    const result = await props.save(checked.payload);
    setBusy(false);
    if (!result.ok) return show(errorsFromPaths(result.paths, values));
    setErrors({});
    setSummary(t('form.saved'));
    props.onSaved(result.entity);
  }

  const describe = (f: FormField, hint?: string) => {
    const ids = [hint, errors[f] ? `${f}-error` : undefined].filter(Boolean).join(' ');
    return { 'aria-invalid': errors[f] ? (true as const) : undefined, 'aria-describedby': ids || undefined };
  };
  const errorOf = (f: FormField) =>
    errors[f] ? (
      <p class="error-text" id={`${f}-error`}>
        {t(errors[f])}
      </p>
    ) : null;
  const text = (f: FormField, attrs: Record<string, string> = {}) => (
    <div class={`field${errors[f] ? ' invalid' : ''}`}>
      <label for={`f-${f}`}>{t(LABELS[f])}</label>
      <input id={`f-${f}`} name={f} value={values[f]} onInput={(e) => set(f, e.currentTarget.value)} {...attrs} {...describe(f)} />
      {errorOf(f)}
    </div>
  );
  const facilities = values.facility && !props.facilities.includes(values.facility) ? [...props.facilities, values.facility] : props.facilities;

  return (
    <section class="card">
      <ScreenTitle>{t(props.title)}</ScreenTitle>
      <p class="hint">{t('form.required')}</p>
      <form id="patient-form" ref={formRef} onSubmit={(e) => void submit(e)} noValidate autocomplete="off">
        <div class="form-grid">
          {text('givenName', { dir: 'auto', autocomplete: 'off' })}
          {text('familyName', { dir: 'auto', autocomplete: 'off' })}
          {text('birthDate', { type: 'date' })}
          <fieldset class={`field${errors.sex ? ' invalid' : ''}`} id="f-sex" aria-describedby={errors.sex ? 'sex-error' : undefined}>
            <legend>{t('field.sex')}</legend>
            <div class="choices">
              {SEX_CODES.map((code) => (
                <div class="choice" key={code}>
                  <input type="radio" id={`sex-${code}`} name="sex" value={code} checked={values.sex === code} onChange={() => set('sex', code)} {...describe('sex')} />
                  <label for={`sex-${code}`}>{t(`sex.${code}`)}</label>
                </div>
              ))}
            </div>
            {errorOf('sex')}
          </fieldset>
          {text('phone', { type: 'tel', inputmode: 'tel' })}
          {text('nationalId', { dir: 'auto' })}
          {facilities.length > 0 ? (
            <div class={`field${errors.facility ? ' invalid' : ''}`}>
              <label for="f-facility">{t('field.facility')}</label>
              <select id="f-facility" name="facility" value={values.facility} onChange={(e) => set('facility', e.currentTarget.value)} {...describe('facility')}>
                <option value="">{t('field.choose')}</option>
                {facilities.map((f) => (
                  <option value={f} key={f}>
                    {f}
                  </option>
                ))}
              </select>
              {errorOf('facility')}
            </div>
          ) : (
            text('facility')
          )}
        </div>
        <div class="form-summary" role="alert" aria-live="assertive" id="form-summary">
          {summary}
        </div>
        <div class="actions">
          <button type="submit" class="primary" disabled={busy}>
            {t(props.submitLabel)}
          </button>
          <a class="button" href={props.cancelHref}>
            {t('form.cancel')}
          </a>
        </div>
      </form>
    </section>
  );
}

function ViewerNotice() {
  return (
    <section class="card">
      <ScreenTitle>{t('form.registerTitle')}</ScreenTitle>
      <p class="callout" id="viewer-notice">
        {t('form.viewer')}
      </p>
      <a href={`${BASE}/`}>{t('record.back')}</a>
    </section>
  );
}

export function RegisterPatient() {
  const app = useApp();
  const { route } = useLocation();
  const membership = membershipOf(app.last);
  const s = app.session;
  // The first facility is not a clinical default: it is where the user serves, when only one.
  const [initial] = useState(() => emptyForm(membership?.facilities.length === 1 ? membership.facilities[0]! : ''));
  if (!s || s.locked || s.closed) return null;
  if (!canRegister(membership)) return <ViewerNotice />;
  return (
    <PatientForm
      kind="create"
      initial={initial}
      base={null}
      facilities={membership?.facilities ?? []}
      title="form.registerTitle"
      submitLabel="form.register"
      cancelHref={`${BASE}/`}
      save={async (payload) => {
        const r = await s.mutate('patient.create', payload);
        return r.ok ? { ok: true, entity: r.entity } : { ok: false, paths: r.errors.map((e) => e.path) };
      }}
      onSaved={(entity) => route(`${BASE}/patients/${entity}`)}
    />
  );
}

export function EditPatient() {
  const app = useApp();
  const { params } = useRoute();
  const { route } = useLocation();
  const s = app.session;
  const id = params.id ?? '';
  const membership = membershipOf(app.last);
  // Read once: the form edits what was on screen when it opened, whatever arrives meanwhile.
  const [opened] = useState(() => (s && !s.locked && !s.closed ? patientDetail(s, id) : null));
  if (!s || s.locked || s.closed || !opened) return null;
  if (!canRegister(membership)) return <ViewerNotice />;
  if (!opened.patient) return <p>{t('record.notFound')}</p>;
  return (
    <PatientForm
      kind="update"
      initial={formFromPatient(opened.patient)}
      base={opened.patient}
      facilities={membership?.facilities ?? []}
      title="form.editTitle"
      submitLabel="form.save"
      cancelHref={`${BASE}/patients/${id}`}
      save={async (payload) => {
        const r = await s.mutate('patient.update', payload, { entity: id });
        return r.ok ? { ok: true, entity: r.entity } : { ok: false, paths: r.errors.map((e) => e.path) };
      }}
      onSaved={() => route(`${BASE}/patients/${id}`)}
    />
  );
}
