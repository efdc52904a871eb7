import { randomUUID } from 'node:crypto';
import { SignJWT, createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey, type JWK } from 'jose';
import { FerryError } from '../validators/codes.ts';
import { accessClaimsSchema, type AccessClaims } from '../validators/identity.ts';
import { SIGNING_ALG, type SigningKey } from './keys.ts';

export const PLATFORM_AUDIENCE = 'ferry';
export const WORKER_ACTOR = 'ferry-worker';

export interface TokenIssuerOptions {
  key: SigningKey;
  issuer: string;
  audience?: string;
  /** Access-token lifetime; 5 minutes in dev (DESIGN §3). */
  accessTtlSeconds?: number;
  /** Delegated (worker → service) token lifetime. */
  delegatedTtlSeconds?: number;
  now?: () => number;
}

export interface AccessGrant {
  sub: string;
  tid: string;
  owner: string;
  roles: readonly string[];
  sid: string;
}

export interface TokenIssuer {
  readonly issuer: string;
  readonly audience: string;
  readonly accessTtlSeconds: number;
  mintAccess(grant: AccessGrant): Promise<string>;
  /** A short-lived token for the worker to call a service on behalf of the device's user. */
  mintDelegated(grant: Omit<AccessGrant, 'sid'>): Promise<string>;
}

export function createTokenIssuer(opts: TokenIssuerOptions): TokenIssuer {
  const audience = opts.audience ?? PLATFORM_AUDIENCE;
  const accessTtl = opts.accessTtlSeconds ?? 300;
  const delegatedTtl = opts.delegatedTtlSeconds ?? 120;
  const now = opts.now ?? (() => Date.now());
  const sign = (claims: Record<string, unknown>, sub: string, ttl: number) => {
    const iat = Math.floor(now() / 1000);
    return new SignJWT(claims)
      .setProtectedHeader({ alg: SIGNING_ALG, kid: opts.key.kid, typ: 'JWT' })
      .setIssuer(opts.issuer)
      .setAudience(audience)
      .setSubject(sub)
      .setIssuedAt(iat)
      .setExpirationTime(iat + ttl)
      .setJti(randomUUID())
      .sign(opts.key.privateKey);
  };
  return {
    issuer: opts.issuer,
    audience,
    accessTtlSeconds: accessTtl,
    mintAccess: (g) => sign({ tid: g.tid, owner: g.owner, roles: [...g.roles], sid: g.sid }, g.sub, accessTtl),
    mintDelegated: (g) =>
      sign({ tid: g.tid, owner: g.owner, roles: [...g.roles], sid: `delegated:${randomUUID()}`, act: { sub: WORKER_ACTOR } }, g.sub, delegatedTtl),
  };
}

export type TokenVerifier = (token: string) => Promise<AccessClaims>;

export interface TokenVerifierOptions {
  /** The platform's JWKS URL (services), or its keys in hand (the gateway itself, tests). */
  jwks: string | { keys: JWK[] } | JWTVerifyGetKey;
  issuer: string;
  audience?: string;
  clockToleranceSeconds?: number;
  /**
   * Delegated tokens (with `act`) are for services only: the worker calls them on a user's behalf.
   * The gateway refuses them, so a service that sees one cannot replay it at the public edge.
   */
  delegated?: 'accept' | 'refuse';
}

/**
 * Verifies a Ferry access or delegated token. Only EdDSA is accepted, so `alg: none` and
 * HS/RS confusion fail before any key is consulted. Every failure is the same 401.
 */
export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  const getKey: JWTVerifyGetKey =
    typeof opts.jwks === 'string'
      ? createRemoteJWKSet(new URL(opts.jwks), { cooldownDuration: 5_000, cacheMaxAge: 600_000 })
      : typeof opts.jwks === 'function'
        ? opts.jwks
        : createLocalJWKSet(opts.jwks);
  return async function verifyAccessToken(token: string): Promise<AccessClaims> {
    try {
      const { payload } = await jwtVerify(token, getKey, {
        issuer: opts.issuer,
        audience: opts.audience ?? PLATFORM_AUDIENCE,
        algorithms: [SIGNING_ALG],
        clockTolerance: opts.clockToleranceSeconds ?? 5,
        requiredClaims: ['exp', 'sub'],
      });
      const parsed = accessClaimsSchema.safeParse(payload);
      if (!parsed.success) throw new Error('claims');
      if (parsed.data.act && opts.delegated === 'refuse') throw new Error('delegated');
      return parsed.data;
    } catch {
      throw new FerryError('UNAUTHENTICATED');
    }
  };
}

export interface CachingVerifierOptions {
  /** Most tokens remembered; the oldest is forgotten first. */
  maxEntries?: number;
  now?: () => number;
}

/**
 * Remembers what `verify` said about a token, keyed by the exact token string, until the token's
 * `exp`: a batch of one user's items (or a burst of their requests) verifies once, not per item.
 * Past `exp` the token goes back to `verify`, which refuses it exactly as it would uncached.
 * Failures are not remembered. Concurrent first uses share one verification.
 */
export function cachingVerifier(verify: TokenVerifier, opts: CachingVerifierOptions = {}): TokenVerifier {
  const maxEntries = opts.maxEntries ?? 10_000;
  const now = opts.now ?? (() => Date.now());
  const cache = new Map<string, { claims: Promise<AccessClaims>; expMs: number }>();
  return async function verifyCached(token: string): Promise<AccessClaims> {
    const hit = cache.get(token);
    if (hit && now() < hit.expMs) return hit.claims;
    if (hit) cache.delete(token);
    const claims = verify(token);
    // Until it settles nothing is known about exp; an in-flight entry serves concurrent callers.
    const entry = { claims, expMs: Number.POSITIVE_INFINITY };
    cache.set(token, entry);
    if (cache.size > maxEntries) cache.delete(cache.keys().next().value!);
    try {
      const verified = await claims;
      entry.expMs = verified.exp * 1000;
      return verified;
    } catch (err) {
      if (cache.get(token) === entry) cache.delete(token);
      throw err;
    }
  };
}

/** The token of an `Authorization: Bearer …` header, or null. */
export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+([A-Za-z0-9._~+/=-]+)$/i.exec(header.trim());
  return m ? m[1]! : null;
}
