import { expect } from 'chai';
import { revokeOnServer, revocableToken } from '../../client/sign-out.ts';
import type { FetchLike, TokenProvider } from '../../client/auth-fetch.ts';

// The device half of sign-out: what `session.signOut()` sends to `POST /auth/revoke`, and what it
// reports when the gateway cannot be reached. The server half is in test/gateway/revocation.test.ts.

describe('client sign-out: POST /auth/revoke', function () {
  const seen: Array<{ url: string; init: RequestInit | undefined }> = [];
  const answering =
    (status: number): FetchLike =>
    async (input, init) => {
      seen.push({ url: String(input), init });
      return new Response(null, { status });
    };
  const provider = (over: Partial<TokenProvider> = {}): TokenProvider => ({ getToken: async () => 'access.jwt.token', refresh: async () => 'x', ...over });
  beforeEach(() => (seen.length = 0));

  it('sends the refresh token, form-encoded with its hint, and no Authorization header', async function () {
    expect(await revokeOnServer(answering(200), 'https://gw.example/', provider({ revocationToken: () => 'refresh-abc' }))).to.equal(true);
    expect(seen).to.have.length(1);
    expect(seen[0]!.url).to.equal('https://gw.example/auth/revoke');
    expect(seen[0]!.init?.method).to.equal('POST');
    expect(seen[0]!.init?.headers).to.deep.equal({ 'content-type': 'application/x-www-form-urlencoded' });
    expect(String(seen[0]!.init?.body)).to.equal('token=refresh-abc&token_type_hint=refresh_token');
  });

  it('falls back to the access token when the provider has no refresh token', async function () {
    expect(await revocableToken(provider())).to.deep.equal({ token: 'access.jwt.token', hint: 'access_token' });
    expect(await revocableToken(provider({ revocationToken: async () => null }))).to.deep.equal({ token: 'access.jwt.token', hint: 'access_token' });
    expect(await revocableToken(provider({ getToken: () => Promise.reject(new Error('none')) }))).to.equal(null);
    expect(await revokeOnServer(answering(200), 'https://gw.example', provider({ getToken: () => Promise.reject(new Error('none')) }))).to.equal(false);
    expect(seen).to.have.length(0);
  });

  it('reports false when the gateway cannot be reached or does not answer 200', async function () {
    const offline: FetchLike = async () => {
      throw new TypeError('fetch failed');
    };
    expect(await revokeOnServer(offline, 'https://gw.example', provider())).to.equal(false);
    expect(await revokeOnServer(answering(503), 'https://gw.example', provider())).to.equal(false);
  });
});
