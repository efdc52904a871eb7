// Device sign-out on the server: `POST {gateway}/auth/revoke` in the manner of RFC 7009, with the
// refresh token when the app's token provider can hand it over (it names the session whatever its
// access token's age), else the access token. The gateway answers 200 whatever the token was, so
// the answer tells only whether the request got through.

import type { FetchLike, TokenProvider } from './auth-fetch.ts';

/** What to send: the refresh token first, the access token otherwise; null when there is none. Pure apart from the provider. */
export async function revocableToken(tokens: TokenProvider): Promise<{ token: string; hint: 'refresh_token' | 'access_token' } | null> {
  const refresh = tokens.revocationToken ? await tokens.revocationToken() : null;
  if (refresh) return { token: refresh, hint: 'refresh_token' };
  const access = await tokens.getToken().catch(() => null);
  return access ? { token: access, hint: 'access_token' } : null;
}

/** True when the gateway took the revocation (200); false when there was no token or it could not be reached. */
export async function revokeOnServer(fetch: FetchLike, gatewayUrl: string, tokens: TokenProvider): Promise<boolean> {
  const what = await revocableToken(tokens);
  if (!what) return false;
  try {
    const res = await fetch(`${gatewayUrl.replace(/\/+$/, '')}/auth/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: what.token, token_type_hint: what.hint }).toString(),
    });
    await res.body?.cancel().catch(() => undefined);
    return res.status === 200;
  } catch {
    return false;
  }
}
