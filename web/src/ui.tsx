// Small shared pieces: a screen heading that takes the focus when a screen opens (so a screen
// reader announces where the user is), a field wrapper that ties its error to its input, and
// how a patient's values read.

import type { ComponentChildren } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
import { formatDate, t } from './i18n.ts';
import type { Patient } from '../../validators/patient.ts';

export function ScreenTitle({ children }: { children: ComponentChildren }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => ref.current?.focus(), []);
  return (
    <h1 ref={ref} tabIndex={-1} class="screen-title">
      {children}
    </h1>
  );
}

/** A name, isolated and with its own direction, so a right-to-left name reads right. */
export function Name({ p }: { p: Pick<Patient, 'givenName' | 'familyName'> }) {
  return (
    <bdi dir="auto">
      {p.givenName} {p.familyName}
    </bdi>
  );
}

export function sexLabel(sex: string): string {
  return sex === 'female' || sex === 'male' || sex === 'other' || sex === 'unknown' ? t(`sex.${sex}`) : sex;
}

export function identifiersText(ids: Patient['identifiers']): string {
  return (ids ?? []).map((i) => `${i.system === 'national-id' ? t('field.nationalId').replace(/\s*\(.*\)$/, '') : i.system}: ${i.value}`).join(', ');
}

/** One field value as text, for the record and the merge view. */
export function valueText(field: string, v: unknown): string {
  if (v === undefined || v === null || v === '' || (Array.isArray(v) && v.length === 0)) return t('merge.empty');
  if (field === 'sex') return sexLabel(String(v));
  if (field === 'birthDate') return formatDate(String(v));
  if (field === 'identifiers') return identifiersText(v as Patient['identifiers']);
  if (field === 'address' && typeof v === 'object') return Object.values(v as Record<string, string>).join(', ');
  return String(v);
}

/** The demographics as a description list. */
export function Demographics({ p }: { p: Patient }) {
  const rows: Array<[string, string, boolean]> = [
    [t('field.givenName'), p.givenName, true],
    [t('field.familyName'), p.familyName, true],
    [t('field.birthDate'), formatDate(p.birthDate), false],
    [t('field.sex'), sexLabel(p.sex), false],
    [t('field.identifiers'), identifiersText(p.identifiers) || t('merge.empty'), true],
    [t('field.phone').replace(/\s*\(.*\)$/, ''), p.phone ?? t('merge.empty'), false],
    [t('field.facility'), p.facility, false],
  ];
  return (
    <dl class="facts">
      {rows.map(([label, value, auto]) => (
        <div class="fact" key={label}>
          <dt>{label}</dt>
          <dd dir={auto ? 'auto' : undefined}>{value}</dd>
        </div>
      ))}
    </dl>
  );
}
