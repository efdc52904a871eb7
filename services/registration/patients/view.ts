import type { Patient, PatientRecord } from '../../../validators/patient.ts';
import type { PatientView } from './commands.ts';
import { identifierKey, nameKey, type ExistingPatient } from './matching.ts';

// The database as a batch's items see it, one after another: what the set-based reads returned
// (loaded once, before any item is decided) overlaid with the effects of the items decided so
// far. So the second of two likely-duplicate creates in one batch is DUPLICATE_DETECTED, and an
// update after a create in the same batch finds the new patient, exactly as sequential calls.

/** Everything the batch's reads returned, for its tenant. */
export interface LoadedPatients {
  /** Which of the ids creates asked for the tenant has already. */
  takenIds: Iterable<string>;
  /** The tenant's patients that updates name, as GET shows them (locked FOR UPDATE). */
  records: Iterable<PatientRecord>;
  /** The tenant's patients matching any create's name key + birth date + sex. */
  nameMatches: readonly ExistingPatient[];
  /** Holders of every identifier any item carries: (system, value key) → patient id. */
  identifiers: readonly { system: string; valueKey: string; patientId: string }[];
}

const pairOf = (system: string, valueKey: string) => `${system}|${valueKey}`;
const duplicateKey = (name: string, p: { birthDate: string; sex: string }) => `${name}|${p.birthDate}|${p.sex}`;

export class BatchPatientView implements PatientView {
  private readonly taken: Set<string>;
  private readonly records: Map<string, PatientRecord>;
  private readonly nameMatches: readonly ExistingPatient[];
  /** Null: the identifier was held by a patient an earlier item updated away from it. */
  private readonly holders: Map<string, string | null>;
  /** Patients an earlier item created or updated (their loaded name row is out of date), with their key now. */
  private readonly touched = new Map<string, string>();
  private readonly touchedByKey = new Map<string, Set<string>>();

  constructor(loaded: LoadedPatients) {
    this.taken = new Set(loaded.takenIds);
    this.records = new Map([...loaded.records].map((r) => [r.id, r]));
    this.nameMatches = loaded.nameMatches;
    this.holders = new Map(loaded.identifiers.map((i) => [pairOf(i.system, i.valueKey), i.patientId]));
  }

  idTaken(id: string): boolean {
    return this.taken.has(id);
  }

  current(id: string): PatientRecord | null {
    return this.records.get(id) ?? null;
  }

  possibleDuplicates(p: Patient): ExistingPatient[] {
    const key = nameKey(p.givenName, p.familyName);
    const byName: ExistingPatient[] = this.nameMatches.filter((r) => !this.touched.has(r.id) && r.nameKey === key && r.birthDate === p.birthDate && r.sex === p.sex);
    for (const id of this.touchedByKey.get(duplicateKey(key, p)) ?? []) byName.push({ id, nameKey: key, birthDate: p.birthDate, sex: p.sex, identifiers: [] });
    const byIdentifier: ExistingPatient[] = [];
    for (const i of p.identifiers ?? []) {
      const valueKey = identifierKey(i.value);
      const holder = this.holders.get(pairOf(i.system, valueKey));
      if (holder) byIdentifier.push({ id: holder, nameKey: null, birthDate: null, sex: null, identifiers: [{ system: i.system, valueKey }] });
    }
    return [...byName, ...byIdentifier];
  }

  identifierHolders(identifiers: Patient['identifiers'], exceptId: string | null): string[] {
    const ids = new Set<string>();
    for (const i of identifiers ?? []) {
      const holder = this.holders.get(pairOf(i.system, identifierKey(i.value)));
      if (holder && holder !== exceptId) ids.add(holder);
    }
    return [...ids].sort();
  }

  /** The effect of a committed create or update on what later items see. */
  apply(record: PatientRecord, kind: 'created' | 'updated'): void {
    this.taken.add(record.id);
    this.records.set(record.id, record);
    const was = this.touched.get(record.id);
    if (was !== undefined) this.touchedByKey.get(was)?.delete(record.id);
    const now = duplicateKey(nameKey(record.givenName, record.familyName), record);
    this.touched.set(record.id, now);
    let ids = this.touchedByKey.get(now);
    if (!ids) this.touchedByKey.set(now, (ids = new Set()));
    ids.add(record.id);
    if (kind === 'updated') {
      for (const [pair, holder] of this.holders) if (holder === record.id) this.holders.set(pair, null);
    }
    for (const i of record.identifiers ?? []) this.holders.set(pairOf(i.system, identifierKey(i.value)), record.id);
  }
}
