import type { NextFunction, Request, Response } from 'express';
import { bearerToken, type TokenVerifier } from '../../identity/tokens.ts';
import { FerryError, type ErrorCode } from '../../validators/codes.ts';
import type { AccessClaims } from '../../validators/identity.ts';

// Authentication at the edge (I/O: verify the token), authorisation as a pure decision over the
// caller and the tenant's licence (DESIGN §3). RBAC always applies to the end user: a delegated
// token names the device's user in `owner`/`roles` and the worker only in `act`.

export interface Caller {
  tenant: string;
  /** The acting user's opaque Ferry id. */
  owner: string;
  roles: readonly string[];
  /** Who made the call: the worker for delegated tokens, otherwise the user themself. */
  actor: string;
}

export function callerOf(claims: AccessClaims): Caller {
  return { tenant: claims.tid, owner: claims.owner, roles: claims.roles, actor: claims.act?.sub ?? claims.owner };
}

export type Action = 'read' | 'write';

const ALLOWED: Record<Action, readonly string[]> = {
  write: ['registrar'],
  read: ['registrar', 'viewer', 'admin'],
};

export type AccessDecision = { kind: 'allow' } | { kind: 'deny'; code: Extract<ErrorCode, 'FORBIDDEN' | 'MODULE_NOT_LICENSED'> };

/** Licensing is a property of the tenant, so it is checked before the user's roles. */
export function decideAccess(caller: Pick<Caller, 'roles'>, action: Action, licensed: boolean): AccessDecision {
  if (!licensed) return { kind: 'deny', code: 'MODULE_NOT_LICENSED' };
  if (!caller.roles.some((r) => ALLOWED[action].includes(r))) return { kind: 'deny', code: 'FORBIDDEN' };
  return { kind: 'allow' };
}

/** Every route needs a valid Bearer token; anything else is 401 before the request runs. */
export function authenticate(verify: TokenVerifier) {
  return function authenticateCaller(req: Request, res: Response, next: NextFunction): void {
    const token = bearerToken(req.get('authorization'));
    if (!token) {
      res.setHeader('WWW-Authenticate', 'Bearer');
      next(new FerryError('UNAUTHENTICATED'));
      return;
    }
    verify(token).then(
      (claims) => {
        res.locals.caller = callerOf(claims);
        next();
      },
      () => {
        res.setHeader('WWW-Authenticate', 'Bearer error="invalid_token"');
        next(new FerryError('UNAUTHENTICATED'));
      },
    );
  };
}

export function callerFrom(res: Response): Caller {
  const caller = res.locals.caller as Caller | undefined;
  // Routes are only mounted behind authenticate(); reaching here without a caller is a wiring bug.
  if (!caller) throw new FerryError('UNAUTHENTICATED');
  return caller;
}
