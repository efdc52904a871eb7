import { validateDocUpdateSource } from './validate.ts';
import { BY_ENTITY_MAP, FEED_MAP, PENDING_MAP } from './views.ts';

export { GATEWAY_ROLE, WORKER_ROLE, VDU_MESSAGES, validateDocUpdateSource } from './validate.ts';

export const DESIGN_DOC_ID = '_design/ferry';
/** Design doc name, for `CouchDb.view('ferry', …)`. */
export const DESIGN_NAME = 'ferry';

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
      feed: { map: FEED_MAP },
      pending: { map: PENDING_MAP, reduce: '_sum' },
      by_entity: { map: BY_ENTITY_MAP },
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
