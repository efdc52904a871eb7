import { validateDocUpdateSource } from './validate.ts';
import { BY_ENTITY_MAP } from './views.ts';

export { GATEWAY_ROLE, WORKER_ROLE, VDU_MESSAGES, validateDocUpdateSource } from './validate.ts';

export const DESIGN_DOC_ID = '_design/ferry';
/** Design doc name, for `CouchDb.view('ferry', …)`. */
export const DESIGN_NAME = 'ferry';
// The pull feed and the pending quota are indexed in the platform database, not by views
// (docs/SYNC.md): a view maps every inbox doc, and PouchDB pays a `vm` context per doc mapped.
/** An entity's mutation chain, for operators; nothing on the hot path queries it (so it is never built). */
export const BY_ENTITY_VIEW = 'by_entity';
/** The worker's high-water mark of counters written; readers never pass it. */
export const FEED_HEAD_ID = 'feed:head';

export interface FerryDesignDoc {
  _id: typeof DESIGN_DOC_ID;
  _rev?: string;
  language: 'javascript';
  /** Which tenant this inbox belongs to (the VDU has it baked in too). */
  ferry: { tenant: string };
  validate_doc_update: string;
  views: Record<string, { map: string; reduce?: string }>;
}

/** The `_design/ferry` doc of `inbox_{tenant}`. */
export function ferryDesignDoc(tenant: string): FerryDesignDoc {
  return {
    _id: DESIGN_DOC_ID,
    language: 'javascript',
    ferry: { tenant },
    validate_doc_update: validateDocUpdateSource(tenant),
    views: {
      [BY_ENTITY_VIEW]: { map: BY_ENTITY_MAP },
    },
  };
}

/** True when `existing` already has exactly the content of `wanted` (revision and meta ignored). */
export function sameDesign(existing: Record<string, unknown>, wanted: FerryDesignDoc): boolean {
  const strip = (d: Record<string, unknown>) => JSON.stringify(canonical(Object.fromEntries(Object.entries(d).filter(([k]) => !k.startsWith('_')))));
  return strip(existing) === strip(wanted as unknown as Record<string, unknown>);
}

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}
