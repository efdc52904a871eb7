// Reads what the checks need from the services' database, JetStream, the inboxes and the logs.
// I/O only; the decisions are in invariants.ts.

import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { connectNats } from '../nats/connection.ts';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { v7 as uuidv7 } from 'uuid';
import type { CouchServer } from '../couchdb/client.ts';
import type { Database } from '../sql/database.ts';
import type { InboxDoc, LogText, ServerEffect, ServerPatient, StreamEvent } from './invariants.ts';

const STREAM = 'REGISTRATION';

export async function serverFacts(db: Database, tenants: string[]): Promise<{ patients: ServerPatient[]; audit: ServerEffect[]; outbox: ServerEffect[] }> {
  const p = await db.query<{ id: string; tenant: string; version: number }>('SELECT id, tenant, version FROM patients WHERE tenant = ANY($1)', [tenants]);
  const a = await db.query<{ patient_id: string; version: number }>('SELECT patient_id, version FROM audit_log WHERE tenant = ANY($1) AND patient_id IS NOT NULL', [tenants]);
  const o = await db.query<{ patient_id: string; version: string }>(
    "SELECT payload->>'patientId' AS patient_id, payload->>'version' AS version FROM outbox WHERE payload->>'tenant' = ANY($1)",
    [tenants],
  );
  return {
    patients: p.rows.map((r) => ({ id: r.id, tenant: r.tenant, version: Number(r.version) })),
    audit: a.rows.map((r) => ({ patientId: r.patient_id, version: Number(r.version) })),
    outbox: o.rows.map((r) => ({ patientId: r.patient_id, version: Number(r.version) })),
  };
}

/** Events not yet relayed to JetStream. */
export async function unpublished(db: Database): Promise<number> {
  const { rows } = await db.query<{ n: string }>('SELECT count(*) AS n FROM outbox WHERE published_at IS NULL');
  return Number(rows[0]?.n ?? 0);
}

/** The stream's last sequence now (0 when it does not exist yet): the run reads only what follows. */
export async function streamLastSeq(natsUrl: string): Promise<number> {
  const nc = await connectNats(natsUrl, {}, { timeout: 5_000 });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info(STREAM)).state.last_seq;
  } catch {
    return 0;
  } finally {
    await nc.close();
  }
}

interface EventPayload {
  patientId?: unknown;
  version?: unknown;
  tenant?: unknown;
}

/**
 * The run's events: read by sequence after `afterSeq` and kept when their tenant is one of the
 * run's. The stream is shared with other runs and tests, so totals mean nothing; only the run's
 * patient ids and versions are counted.
 */
export async function streamEvents(natsUrl: string, afterSeq: number, tenants: readonly string[]): Promise<StreamEvent[]> {
  const nc = await connectNats(natsUrl, {}, { timeout: 5_000 });
  try {
    const jsm = await jetstreamManager(nc);
    const last = (await jsm.streams.info(STREAM)).state.last_seq;
    const out: StreamEvent[] = [];
    const wanted = new Set(tenants);
    for (let seq = afterSeq + 1; seq <= last; seq++) {
      const m = await jsm.streams.getMessage(STREAM, { seq }).catch(() => null);
      if (!m) continue;
      let e: EventPayload;
      try {
        e = m.json<EventPayload>();
      } catch {
        continue;
      }
      if (typeof e.tenant !== 'string' || !wanted.has(e.tenant)) continue;
      out.push({ seq, subject: m.subject, patientId: String(e.patientId), version: Number(e.version), tenant: e.tenant });
    }
    return out;
  } finally {
    await nc.close();
  }
}

/**
 * `--inject duplicate-event`: publishes a second `REGISTRATION.patient.created` for a committed
 * patient under a new message id, as a relay that lost its dedupe would. Proves the check fires.
 */
export async function publishDuplicateCreated(natsUrl: string, event: { tenant: string; patientId: string; actingUser: string }): Promise<void> {
  const nc = await connectNats(natsUrl, {}, { timeout: 5_000 });
  try {
    const eventId = uuidv7();
    const payload = { v: 1, eventId, type: 'patient.created', tenant: event.tenant, patientId: event.patientId, version: 1, actingUser: event.actingUser, actor: 'harness-inject', correlationId: null, occurredAt: new Date().toISOString() };
    await jetstream(nc).publish(`${STREAM}.patient.created`, JSON.stringify(payload), { msgID: eventId });
  } finally {
    await nc.close();
  }
}

/** Every `m:`/`s:` doc of the given inboxes, read as the CouchDB admin. */
export async function inboxDocs(admin: CouchServer, tenants: readonly string[]): Promise<InboxDoc[]> {
  const out: InboxDoc[] = [];
  for (const tenant of tenants) {
    const res = await admin.db(`inbox_${tenant}`).request('GET', '/_all_docs', undefined, { include_docs: 'true' });
    if (!res.ok) throw new Error(`inbox_${tenant}: _all_docs answered ${res.status}`);
    const body = (await res.json()) as { rows: Array<{ id: string; doc?: { tenant?: unknown; state?: unknown; updatedAt?: unknown } }> };
    for (const r of body.rows) {
      if (r.id.startsWith('_design/')) continue;
      const d = r.doc;
      const terminal = d?.state === 'committed' || d?.state === 'rejected' || d?.state === 'conflict';
      const settledAt = r.id.startsWith('s:') && terminal && typeof d?.updatedAt === 'string' ? Date.parse(d.updatedAt) : null;
      out.push({ inbox: tenant, id: r.id, tenant: typeof d?.tenant === 'string' ? d.tenant : null, settledAt });
    }
  }
  return out;
}

/** Every log the run produced: the children's stdout/stderr, the harness's own log, the embedded CouchDB's log. */
export function readLogs(logDir: string, extra: readonly string[]): LogText[] {
  const files = readdirSync(logDir).map((f) => join(logDir, f));
  return [...files, ...extra.filter((f) => existsSync(f))].map((file) => ({ name: file.slice(file.lastIndexOf('/') + 1), text: readFileSync(file, 'utf8') }));
}
