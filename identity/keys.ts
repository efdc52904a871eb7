import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';

export const SIGNING_ALG = 'EdDSA';

export interface SigningKey {
  kid: string;
  alg: typeof SIGNING_ALG;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

/**
 * The platform's token-signing key: generated at random on first start and kept under the data
 * directory (DESIGN §2), readable by the owner only.
 */
export async function loadOrCreateSigningKey(dataDir: string): Promise<SigningKey> {
  const dir = join(dataDir, 'keys');
  const file = join(dir, 'signing-key.json');
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const { privateKey } = await generateKeyPair(SIGNING_ALG, { crv: 'Ed25519', extractable: true });
    const jwk = await exportJWK(privateKey);
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(jwk), { mode: 0o600 });
    try {
      // A hard link fails if the name exists: of processes starting at once (the gateway, the
      // worker, a service) exactly one key lands, and every one of them reads that one.
      linkSync(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      rmSync(tmp, { force: true });
    }
  }
  return signingKeyFromJwk(JSON.parse(readFileSync(file, 'utf8')) as JWK);
}

export async function signingKeyFromJwk(privateJwk: JWK): Promise<SigningKey> {
  const { d: _d, ...publicPart } = privateJwk;
  const kid = await calculateJwkThumbprint(publicPart);
  const privateKey = (await importJWK({ ...privateJwk, alg: SIGNING_ALG }, SIGNING_ALG)) as CryptoKey;
  return { kid, alg: SIGNING_ALG, privateKey, publicJwk: { ...publicPart, kid, alg: SIGNING_ALG, use: 'sig' } };
}

/** An ephemeral key, for tests and throwaway runs. */
export async function generateSigningKey(): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair(SIGNING_ALG, { crv: 'Ed25519', extractable: true });
  return signingKeyFromJwk(await exportJWK(privateKey));
}

export function jwksOf(keys: readonly SigningKey[]): { keys: JWK[] } {
  return { keys: keys.map((k) => k.publicJwk) };
}
