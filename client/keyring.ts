// Key management (DESIGN §7): a random data key encrypts the store; it is wrapped (AES-256-GCM) by
// a key derived from the user's passphrase or PIN (PBKDF2-SHA-256). Only the wrapped key, the salt
// and the parameters are stored. A passphrase change re-wraps the same data key, so the data stays
// as it is. WebCrypto only (`globalThis.crypto`), so this runs unchanged in browsers and Node 20.

export const KEYRING_ID = '_local/ferry-keyring';
/** OWASP 2023 guidance for PBKDF2-HMAC-SHA-256. Tests pass a lower count. */
export const DEFAULT_KDF_ITERATIONS = 600_000;

export interface KeyringFields {
  v: 1;
  kdf: { name: 'PBKDF2'; hash: 'SHA-256'; iterations: number; salt: string };
  wrap: { name: 'AES-GCM'; iv: string };
  /** The data key, encrypted and authenticated with the passphrase key. Base64. */
  wrappedKey: string;
}

export type Unwrapped = { ok: true; dataKey: string } | { ok: false; reason: 'wrong-passphrase' | 'corrupt' };

function subtle(): SubtleCrypto {
  const c = globalThis.crypto;
  if (!c?.subtle) throw new Error('WebCrypto (globalThis.crypto.subtle) is required');
  return c.subtle;
}

export function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(new ArrayBuffer(n));
  globalThis.crypto.getRandomValues(out);
  return out;
}

export function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const s = atob(text);
  const out = new Uint8Array(new ArrayBuffer(s.length));
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

const utf8 = (s: string): Uint8Array<ArrayBuffer> => {
  const encoded = new TextEncoder().encode(s);
  const out = new Uint8Array(new ArrayBuffer(encoded.length));
  out.set(encoded);
  return out;
};

async function passphraseKey(passphrase: string, salt: Uint8Array<ArrayBuffer>, iterations: number): Promise<CryptoKey> {
  const material = await subtle().importKey('raw', utf8(passphrase), 'PBKDF2', false, ['deriveKey']);
  return subtle().deriveKey(
    { name: 'PBKDF2', hash: 'SHA-256', salt, iterations },
    material,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  );
}

/** A fresh 256-bit data key, as the text crypto-pouch takes for its password. */
export function generateDataKey(): string {
  return toBase64(randomBytes(32));
}

/**
 * Wraps `dataKey` under `passphrase`. `context` is bound in as AES-GCM additional data (the local
 * database name), so a keyring copied into another store does not unwrap there.
 */
export async function wrapDataKey(dataKey: string, passphrase: string, context: string, iterations = DEFAULT_KDF_ITERATIONS): Promise<KeyringFields> {
  if (!passphrase) throw new Error('passphrase must not be empty');
  if (!Number.isInteger(iterations) || iterations < 1) throw new Error('iterations must be a positive integer');
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const kek = await passphraseKey(passphrase, salt, iterations);
  const sealed = await subtle().encrypt({ name: 'AES-GCM', iv, additionalData: utf8(context) }, kek, fromBase64(dataKey));
  return {
    v: 1,
    kdf: { name: 'PBKDF2', hash: 'SHA-256', iterations, salt: toBase64(salt) },
    wrap: { name: 'AES-GCM', iv: toBase64(iv) },
    wrappedKey: toBase64(new Uint8Array(sealed)),
  };
}

export async function unwrapDataKey(fields: KeyringFields, passphrase: string, context: string): Promise<Unwrapped> {
  if (fields.v !== 1 || fields.kdf?.name !== 'PBKDF2' || fields.wrap?.name !== 'AES-GCM') return { ok: false, reason: 'corrupt' };
  let salt: Uint8Array<ArrayBuffer>, iv: Uint8Array<ArrayBuffer>, wrapped: Uint8Array<ArrayBuffer>;
  try {
    salt = fromBase64(fields.kdf.salt);
    iv = fromBase64(fields.wrap.iv);
    wrapped = fromBase64(fields.wrappedKey);
  } catch {
    return { ok: false, reason: 'corrupt' };
  }
  const kek = await passphraseKey(passphrase, salt, fields.kdf.iterations);
  try {
    const raw = await subtle().decrypt({ name: 'AES-GCM', iv, additionalData: utf8(context) }, kek, wrapped);
    return { ok: true, dataKey: toBase64(new Uint8Array(raw)) };
  } catch {
    // AES-GCM authentication failed: the passphrase (or the context) is wrong.
    return { ok: false, reason: 'wrong-passphrase' };
  }
}

/** SHA-256 hex of a string, used to name local databases without PHI or user names. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await subtle().digest('SHA-256', utf8(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
