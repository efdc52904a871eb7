import type { CouchCredentials } from '../../couchdb/client.ts';

// Plain HTTP against the embedded server, as a replicating client or an intruder would send it.

export function basic(creds: CouchCredentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
}

export interface RawAnswer {
  status: number;
  headers: Headers;
  body: unknown;
}

export async function raw(
  base: string,
  method: string,
  path: string,
  opts: { auth?: CouchCredentials; body?: unknown; headers?: Record<string, string> } = {},
): Promise<RawAnswer> {
  const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
  if (opts.auth) headers.authorization = basic(opts.auth);
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON (Fauxton's HTML)
  }
  return { status: res.status, headers: res.headers, body };
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs = 20_000, stepMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
