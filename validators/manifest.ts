import type { z } from 'zod';
import { patientCreateSchema, patientUpdateSchema } from './patient.ts';
import type { MutationDoc } from './mutation.ts';

// Module manifests (FR-OFF-005): every workflow a module offers, whether it can be captured
// offline, and its phase. Offline-capable workflows name the mutation op that carries them and
// how the worker turns that mutation into the owning service's HTTP call.

export type Capability = 'offline-capable' | 'online-only';
export type Phase = 'none' | 'server-idempotency-only' | 'client-queue-planned' | 'implemented';

export interface ServiceRequest {
  method: 'POST' | 'PUT';
  /** Path below the service's base URL, already encoded. */
  path: string;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

export interface OpDefinition {
  op: string;
  module: string;
  /** The prefix of the entity ids this op touches (`pat` → `pat_…`). */
  entityPrefix: string;
  kind: 'create' | 'update';
  schema: z.ZodType<Record<string, unknown>>;
  toRequest(m: Pick<MutationDoc, 'entity' | 'payload' | 'baseVersion'>): ServiceRequest;
}

export interface Workflow {
  id: string;
  title: string;
  capability: Capability;
  phase: Phase;
  /** Set for offline-capable workflows. */
  op?: string;
  route: string;
}

export interface ModuleManifest {
  module: string;
  title: string;
  workflows: Workflow[];
  ops: OpDefinition[];
}

export const registrationManifest: ModuleManifest = {
  module: 'registration',
  title: 'Patient registration',
  workflows: [
    { id: 'register-patient', title: 'Register a patient', capability: 'offline-capable', phase: 'implemented', op: 'patient.create', route: 'POST /v1/patients' },
    { id: 'update-demographics', title: 'Update a patient\'s demographics', capability: 'offline-capable', phase: 'implemented', op: 'patient.update', route: 'PUT /v1/patients/{id}' },
    { id: 'read-patient', title: 'Read a patient record', capability: 'online-only', phase: 'implemented', route: 'GET /v1/patients/{id}' },
    { id: 'search-patients', title: 'Search patients by name or identifier', capability: 'online-only', phase: 'implemented', route: 'GET /v1/patients?name=… or ?identifier=…' },
    { id: 'merge-duplicates', title: 'Merge duplicate patients', capability: 'online-only', phase: 'none', route: '(not yet offered)' },
  ],
  ops: [
    {
      op: 'patient.create',
      module: 'registration',
      entityPrefix: 'pat',
      kind: 'create',
      schema: patientCreateSchema,
      toRequest: (m) => ({ method: 'POST', path: '/v1/patients', headers: {}, body: { ...m.payload, id: m.entity } }),
    },
    {
      op: 'patient.update',
      module: 'registration',
      entityPrefix: 'pat',
      kind: 'update',
      schema: patientUpdateSchema,
      toRequest: (m) => ({
        method: 'PUT',
        path: `/v1/patients/${encodeURIComponent(m.entity)}`,
        headers: m.baseVersion === null ? ({} as Record<string, string>) : { 'if-match': `"${m.baseVersion}"` },
        body: { ...m.payload, ...(m.baseVersion === null ? {} : { baseVersion: m.baseVersion }) },
      }),
    },
  ],
};

export const MANIFESTS: readonly ModuleManifest[] = [registrationManifest];

export function findOp(op: string): OpDefinition | undefined {
  for (const manifest of MANIFESTS) {
    const found = manifest.ops.find((o) => o.op === op);
    if (found) return found;
  }
  return undefined;
}

/** The FR-OFF-005 table, as Markdown, for docs/MODULES.md. */
export function manifestTable(manifests: readonly ModuleManifest[] = MANIFESTS): string {
  const rows = manifests.flatMap((m) =>
    m.workflows.map((w) => `| ${m.module} | ${w.title} | ${w.capability} | ${w.phase} | ${w.op ?? '—'} | \`${w.route}\` |`),
  );
  return ['| module | workflow | capability | phase | op | route |', '|---|---|---|---|---|---|', ...rows].join('\n');
}
