import { createHmac, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// The `owner` of an externally authenticated user (DESIGN §3): an opaque, PII-free id derived
// from (issuer, sub) with a keyed hash, so the raw `sub` never becomes a Ferry id, and the same
// `sub` under another issuer is another owner.

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
/** 32 base32 characters = 160 bits of the HMAC. */
export const OWNER_LENGTH = 32;
const SECRET_BYTES = 32;

/** RFC 4648 base32, lower case, without padding. */
export function base32(bytes: ArrayLike<number>): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(buffer << (5 - bits)) & 31];
  return out;
}

/** `base32(HMAC-SHA256(secret, issuer + '\n' + sub))`, first 32 characters. Pure. */
export function deriveOwner(secret: KeyObject, issuer: string, sub: string): string {
  if ((secret.symmetricKeySize ?? 0) < 16) throw new Error('owner secret too short');
  if (!issuer || !sub) throw new Error('issuer and sub are required');
  const mac = createHmac('sha256', secret).update(`${issuer}\n${sub}`, 'utf8').digest();
  return base32(mac).slice(0, OWNER_LENGTH);
}

/**
 * The owner-derivation secret: 32 random bytes generated on first start and kept under
 * `FERRY_DATA_DIR/keys/owner-secret` (0600), like the signing key. Losing it changes every
 * external user's owner, so it is created once and never overwritten (link fails if it exists).
 */
export function loadOrCreateOwnerSecret(dataDir: string): KeyObject {
  const dir = join(dataDir, 'keys');
  const file = join(dir, 'owner-secret');
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, randomBytes(SECRET_BYTES).toString('base64url'), { mode: 0o600 });
    try {
      linkSync(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      unlinkSync(tmp);
    }
  }
  return ownerSecretOf(readFileSync(file, 'utf8').trim());
}

/** The secret from its stored form (base64url of 32 bytes). */
export function ownerSecretOf(encoded: string): KeyObject {
  const secret = createSecretKey(encoded, 'base64url');
  if (secret.symmetricKeySize !== SECRET_BYTES) throw new Error('not a valid owner secret');
  return secret;
}
