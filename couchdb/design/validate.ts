import { TENANT_ID } from '../../validators/identity.ts';

// The inbox's `validate_doc_update` (DESIGN §4, §5 "CouchDB identities"). CouchDB runs it in its
// own JavaScript engine, so it is kept as ES5 source text: no arrow functions, no let/const, no
// template literals. The tenant is baked in per inbox. Messages are fixed and never echo values.
//
// Rules, in order:
// - `m:{owner}:{uuid}`: role ferry-gateway (or server `_admin`); never deleted; no attachments;
//   immutable once written (an identical re-write is a no-op, any difference is refused);
//   `type: 'mutation'`, `v: 1`, `tenant` = this inbox's tenant, `owner` = the id's owner, and the
//   envelope fields present with the right JSON types. Formats inside (op, entity, payload) are the
//   worker's job, so that a bad mutation comes back to its user as a `rejected` status doc.
// - `s:{owner}:{uuid}`: role ferry-worker (or `_admin`); `type: 'status'`, `v: 1`, tenant, owner,
//   `mutation` = the id's uuid, `state` one of the five, integer `fence` never lower than the
//   stored one (a worker whose lease lapsed cannot overwrite its successor), a terminal state never
//   downgraded. Deletion (conflict resolution) needs a `fence` too.
// - `feed:head`: role ferry-worker (or `_admin`); `type: 'feed-head'`, integer `counter` and
//   `fence`, neither ever decreasing; never deleted.
// - Anything else is refused. (Design docs and `_local` docs never reach a VDU; design docs are
//   admin-only at the server.)

export const GATEWAY_ROLE = 'ferry-gateway';
export const WORKER_ROLE = 'ferry-worker';

/** The fixed `forbidden` messages, so callers and tests can match on them. */
export const VDU_MESSAGES = {
  unknownId: 'Only m:, s: and feed:head documents may be written to an inbox.',
  mutationRole: 'Only the gateway may write mutation documents.',
  statusRole: 'Only the worker may write status documents.',
  feedRole: 'Only the worker may write the feed head.',
  mutationDeleted: 'Mutation documents cannot be deleted.',
  mutationImmutable: 'Mutation documents are immutable.',
  mutationShape: 'Invalid mutation document.',
  statusShape: 'Invalid status document.',
  feedShape: 'Invalid feed head document.',
  feedDeleted: 'The feed head cannot be deleted.',
  attachments: 'Attachments are not allowed.',
  tenant: 'Document tenant does not match this inbox.',
  owner: 'Document owner does not match its id.',
  mutationRef: 'Status mutation does not match its id.',
  staleFence: 'Stale fencing token.',
  downgrade: 'A terminal status cannot be downgraded.',
  counterDecrease: 'The feed counter cannot decrease.',
} as const;

const SOURCE = `function (newDoc, oldDoc, userCtx, secObj) {
  var TENANT = __TENANT__;
  var MSG = __MESSAGES__;
  var STATES = ['committed', 'rejected', 'conflict', 'waiting', 'retrying'];
  var TERMINAL = ['committed', 'rejected', 'conflict'];
  var roles = (userCtx && userCtx.roles) || [];

  function contains(list, value) {
    for (var i = 0; i < list.length; i++) {
      if (list[i] === value) return true;
    }
    return false;
  }
  function deny(message) {
    throw ({ forbidden: message });
  }
  function isInt(v) {
    return typeof v === 'number' && isFinite(v) && Math.floor(v) === v && v >= 0;
  }
  function isText(v) {
    return typeof v === 'string' && v.length > 0;
  }
  function isObject(v) {
    return typeof v === 'object' && v !== null && !Array.isArray(v);
  }
  function textOrNull(v) {
    return v === null || isText(v);
  }
  function optional(v, check) {
    return v === undefined || check(v);
  }
  function hasOwn(o, k) {
    return Object.prototype.hasOwnProperty.call(o, k);
  }
  function keysOf(o, skipMeta) {
    var keys = [];
    for (var k in o) {
      if (hasOwn(o, k) && !(skipMeta && k.charAt(0) === '_')) keys.push(k);
    }
    return keys;
  }
  function same(a, b, top) {
    if (a === b) return true;
    if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
    if (Array.isArray(a) !== Array.isArray(b)) return false;
    var ka = keysOf(a, top);
    var kb = keysOf(b, top);
    if (ka.length !== kb.length) return false;
    for (var i = 0; i < ka.length; i++) {
      if (!hasOwn(b, ka[i]) || !same(a[ka[i]], b[ka[i]], false)) return false;
    }
    return true;
  }
  function live(doc) {
    return doc && !doc._deleted ? doc : null;
  }
  function allowed(role) {
    return contains(roles, role) || contains(roles, '_admin');
  }

  var id = newDoc._id;
  var old = live(oldDoc);

  if (id === 'feed:head') {
    if (!allowed(__WORKER__)) deny(MSG.feedRole);
    if (newDoc._deleted) deny(MSG.feedDeleted);
    if (newDoc._attachments) deny(MSG.attachments);
    if (newDoc.type !== 'feed-head' || !isInt(newDoc.counter) || !isInt(newDoc.fence)) deny(MSG.feedShape);
    if (old && isInt(old.fence) && newDoc.fence < old.fence) deny(MSG.staleFence);
    if (old && isInt(old.counter) && newDoc.counter < old.counter) deny(MSG.counterDecrease);
    return;
  }

  var parts = /^([ms]):([A-Za-z0-9_-]{1,64}):([0-9a-f-]{36})$/.exec(typeof id === 'string' ? id : '');
  if (!parts) deny(MSG.unknownId);
  var kind = parts[1];
  var owner = parts[2];
  var uuid = parts[3];

  if (kind === 'm') {
    if (!allowed(__GATEWAY__)) deny(MSG.mutationRole);
    if (newDoc._deleted) deny(MSG.mutationDeleted);
    if (newDoc._attachments) deny(MSG.attachments);
    if (old) {
      if (!same(newDoc, old, true)) deny(MSG.mutationImmutable);
      return;
    }
    if (newDoc.type !== 'mutation' || newDoc.v !== 1) deny(MSG.mutationShape);
    if (newDoc.tenant !== TENANT) deny(MSG.tenant);
    if (newDoc.owner !== owner) deny(MSG.owner);
    if (!isText(newDoc.device) || !isInt(newDoc.seq) || !isText(newDoc.op) || !isText(newDoc.entity) ||
        !textOrNull(newDoc.after) || !textOrNull(newDoc.resolves) ||
        !(newDoc.baseVersion === null || isInt(newDoc.baseVersion)) ||
        !isObject(newDoc.payload) || !isText(newDoc.createdAt)) {
      deny(MSG.mutationShape);
    }
    return;
  }

  if (!allowed(__WORKER__)) deny(MSG.statusRole);
  if (newDoc._attachments) deny(MSG.attachments);
  if (newDoc._deleted) {
    if (!isInt(newDoc.fence)) deny(MSG.statusShape);
    if (oldDoc && isInt(oldDoc.fence) && newDoc.fence < oldDoc.fence) deny(MSG.staleFence);
    return;
  }
  if (newDoc.type !== 'status' || newDoc.v !== 1 || !contains(STATES, newDoc.state) || !isInt(newDoc.fence)) deny(MSG.statusShape);
  if (newDoc.tenant !== TENANT) deny(MSG.tenant);
  if (newDoc.owner !== owner) deny(MSG.owner);
  if (newDoc.mutation !== uuid) deny(MSG.mutationRef);
  if (!optional(newDoc.code, textOrNull) || !optional(newDoc.errors, Array.isArray) ||
      !optional(newDoc.candidates, Array.isArray) || !optional(newDoc.attempts, isInt) ||
      !optional(newDoc.counter, isInt) || !optional(newDoc.updatedAt, isText) || !optional(newDoc.response, isObject)) {
    deny(MSG.statusShape);
  }
  if (old) {
    if (isInt(old.fence) && newDoc.fence < old.fence) deny(MSG.staleFence);
    if (contains(TERMINAL, old.state) && !contains(TERMINAL, newDoc.state)) deny(MSG.downgrade);
  }
}`;

/** The VDU source for one tenant's inbox. */
export function validateDocUpdateSource(tenant: string): string {
  if (!TENANT_ID.test(tenant)) throw new Error('invalid tenant id');
  return SOURCE.replace('__TENANT__', JSON.stringify(tenant))
    .replace('__MESSAGES__', JSON.stringify(VDU_MESSAGES))
    .replaceAll('__GATEWAY__', JSON.stringify(GATEWAY_ROLE))
    .replaceAll('__WORKER__', JSON.stringify(WORKER_ROLE));
}
