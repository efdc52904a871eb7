import type { KeyObject } from 'node:crypto';
import { Router, json } from 'express';
import { z } from 'zod';
import { createRemoteJWKSet, errors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { FerryError } from '../../validators/codes.ts';
import { parseWith } from '../../validators/issues.ts';
import { tenantIdSchema } from '../../validators/identity.ts';
import { bearerToken } from '../../identity/tokens.ts';
import { deriveOwner } from '../../identity/owner.ts';
import { asyncRoute, membershipsRoute, openSession, refreshRoute, revokeRoute, type SessionDeps } from './session-routes.ts';

// External OIDC mode (DESIGN §2, §3): a device presents its IdP's access or ID token once at
// `POST /auth/exchange` and gets a Ferry session for one tenant. The IdP's `sub` is only ever an
// input to the owner derivation: it is not stored, logged, or put in any Ferry token.

/** Asymmetric algorithms only: HS* (key confusion) and `none` never reach a key. */
export const EXTERNAL_ALGORITHMS = ['RS256', 'ES256', 'EdDSA', 'PS256'] as const;

export interface ExternalIdentity {
  issuer: string;
  sub: string;
}

export type ExternalTokenVerifier = (token: string) => Promise<ExternalIdentity>;

export interface ExternalVerifierOptions {
  /** The IdP's JWKS URL (`FERRY_AUTH_JWKS_URL`), or a key resolver in hand. */
  jwks: string | JWTVerifyGetKey;
  issuer: string;
  audience: string;
  clockToleranceSeconds?: number;
}

class JwksUnavailable extends Error {}

/** Verifies an external IdP token: signature against the JWKS, issuer, audience, expiry, sub. Every failure is the same 401. */
export function createExternalTokenVerifier(opts: ExternalVerifierOptions): ExternalTokenVerifier {
  const keys = typeof opts.jwks === 'string' ? createRemoteJWKSet(new URL(opts.jwks), { cooldownDuration: 5_000, cacheMaxAge: 600_000 }) : opts.jwks;
  // An unknown key is the caller's fault (401); an IdP whose JWKS cannot be fetched or read is not (503, retry).
  const getKey: JWTVerifyGetKey = async (header, token) => {
    try {
      return await keys(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
      throw new JwksUnavailable();
    }
  };
  return async function verifyExternalToken(token) {
    try {
      const { payload } = await jwtVerify(token, getKey, {
        issuer: opts.issuer,
        audience: opts.audience,
        algorithms: [...EXTERNAL_ALGORITHMS],
        clockTolerance: opts.clockToleranceSeconds ?? 5,
        requiredClaims: ['exp', 'sub'],
      });
      const sub = payload.sub;
      if (typeof sub !== 'string' || sub.length === 0 || sub.length > 255) throw new Error('sub');
      return { issuer: opts.issuer, sub };
    } catch (err) {
      if (err instanceof JwksUnavailable) throw new FerryError('UNAVAILABLE');
      throw new FerryError('UNAUTHENTICATED');
    }
  };
}

export interface ExternalIdpDeps extends SessionDeps {
  verify: ExternalTokenVerifier;
  /** The owner-derivation secret (identity/owner.ts). */
  ownerSecret: KeyObject;
}

const exchangeRequest = z.strictObject({ tenant: tenantIdSchema });

/** `POST /auth/exchange` (Bearer IdP token, `{"tenant"}`) and `POST /auth/refresh`. */
export function externalIdentityRoutes(deps: ExternalIdpDeps): Router {
  const router = Router();
  router.use(json({ limit: '4kb' }));

  router.post(
    '/exchange',
    asyncRoute(async (req, res) => {
      const token = bearerToken(req.get('authorization'));
      if (!token) throw new FerryError('UNAUTHENTICATED');
      const identity = await deps.verify(token);
      const parsed = parseWith(exchangeRequest, req.body);
      if (!parsed.ok) throw new FerryError('VALIDATION_FAILED', { errors: parsed.errors });
      const owner = deriveOwner(deps.ownerSecret, identity.issuer, identity.sub);
      const body = await openSession(deps, owner, parsed.value.tenant);
      res.setHeader('Cache-Control', 'no-store');
      res.json(body);
    }),
  );

  router.use(refreshRoute(deps));
  router.use(revokeRoute(deps));
  router.use(membershipsRoute(deps));
  return router;
}
