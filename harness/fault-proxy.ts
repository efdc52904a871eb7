import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { buffer } from 'node:stream/consumers';
import type { Random } from './random.ts';

// A fault-injecting HTTP proxy between simulated devices and the gateway. Each device talks
// through its own path prefix (`/d/{device}/…`), so faults and offline spells are per device.

export type FaultKind = 'none' | 'reset' | 'drop-response' | 'duplicate';

export interface FaultPlan {
  /** Extra latency added to each request, uniformly in [min, max] ms. */
  latencyMs: [number, number];
  /** Bytes per second for response bodies; 0 for no cap. */
  bandwidthBytesPerSec: number;
  /** Probability that the connection is reset before the request reaches the gateway. */
  reset: number;
  /** Probability that the gateway's answer is dropped after it committed the request. */
  dropResponse: number;
  /** Probability that the request is sent to the gateway twice. */
  duplicate: number;
}

export const CALM: FaultPlan = { latencyMs: [0, 0], bandwidthBytesPerSec: 0, reset: 0, dropResponse: 0, duplicate: 0 };

/** Which fault hits this request. Pure: the same random stream gives the same schedule. */
export function chooseFault(random: Random, plan: FaultPlan, isLongpoll: boolean): FaultKind {
  const r = random();
  // A dropped or duplicated longpoll proves nothing and only slows the run.
  if (isLongpoll) return r < plan.reset ? 'reset' : 'none';
  if (r < plan.reset) return 'reset';
  if (r < plan.reset + plan.dropResponse) return 'drop-response';
  if (r < plan.reset + plan.dropResponse + plan.duplicate) return 'duplicate';
  return 'none';
}

/** What a device request is for, by method and path (after the device prefix); for counting where the requests go. */
export type RequestKind = 'server-root' | 'db-info' | 'local-get' | 'local-put' | 'changes-longpoll' | 'changes' | 'revs-diff' | 'bulk-docs' | 'bulk-get' | 'doc-get' | 'auth' | 'other';
export const REQUEST_KINDS: readonly RequestKind[] = ['server-root', 'db-info', 'local-get', 'local-put', 'changes-longpoll', 'changes', 'revs-diff', 'bulk-docs', 'bulk-get', 'doc-get', 'auth', 'other'];

export function requestKind(method: string, pathAndQuery: string): RequestKind {
  const [path = '', query = ''] = pathAndQuery.split('?');
  if (path.startsWith('/auth/')) return 'auth';
  if (/^\/sync\/?$/.test(path)) return 'server-root';
  const rest = /^\/sync\/[^/]+(\/.*)?$/.exec(path)?.[1] ?? null;
  if (path.startsWith('/sync/') && (rest === null || rest === '/')) return 'db-info';
  if (rest === null) return 'other';
  if (rest.startsWith('/_local/')) return method === 'GET' ? 'local-get' : 'local-put';
  if (rest === '/_changes') return /feed=(longpoll|continuous)/.test(query) ? 'changes-longpoll' : 'changes';
  if (rest === '/_revs_diff') return 'revs-diff';
  if (rest === '/_bulk_docs') return 'bulk-docs';
  if (rest === '/_bulk_get') return 'bulk-get';
  // One doc (PouchDB's per-doc fallback when it believes `_bulk_get` is missing: `?open_revs=…`).
  if (method === 'GET' && /^\/[^_/][^/]*$/.test(rest)) return 'doc-get';
  return 'other';
}

export interface FaultEvent {
  device: string;
  kind: Exclude<FaultKind, 'none'> | 'offline-refused';
  method: string;
  path: string;
}

export interface FaultProxy {
  url: string;
  /** The base URL a device uses: every request it makes goes through its own fault stream. */
  deviceUrl(device: string): string;
  setOffline(device: string, offline: boolean): void;
  setPlan(plan: FaultPlan): void;
  counts(): Record<FaultEvent['kind'], number>;
  /** Requests seen, latency added in total, and responses sent through the bandwidth cap. */
  traffic(): { requests: number; delayedMs: number; throttled: number; byKind: Record<RequestKind, number> };
  close(): Promise<void>;
}

export interface FaultProxyOptions {
  /** The gateway, or several: requests go round robin, as behind a load balancer. */
  target: string | readonly string[];
  plan: FaultPlan;
  /** One random stream per device, e.g. `forkRandom(seed, device)`. */
  randomFor: (device: string) => Random;
  onFault?: (event: FaultEvent) => void;
}

class Throttle extends Transform {
  constructor(private readonly bytesPerSec: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const delay = Math.ceil((chunk.length / this.bytesPerSec) * 1000);
    setTimeout(() => done(null, chunk), delay);
  }
}

export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const targets = (typeof opts.target === 'string' ? [opts.target] : opts.target).map((t) => new URL(t));
  if (targets.length === 0) throw new Error('fault proxy: no target');
  let turn = 0;
  let plan = opts.plan;
  const offline = new Set<string>();
  const randoms = new Map<string, Random>();
  const sockets = new Set<Socket>();
  const counts: Record<FaultEvent['kind'], number> = { reset: 0, 'drop-response': 0, duplicate: 0, 'offline-refused': 0 };
  const traffic = { requests: 0, delayedMs: 0, throttled: 0 };
  const byKind = Object.fromEntries(REQUEST_KINDS.map((k) => [k, 0])) as Record<RequestKind, number>;
  const randomOf = (device: string) => {
    let r = randoms.get(device);
    if (!r) randoms.set(device, (r = opts.randomFor(device)));
    return r;
  };
  const record = (event: FaultEvent) => {
    counts[event.kind]++;
    opts.onFault?.(event);
  };

  const readBody = (req: IncomingMessage) =>
    new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks as Uint8Array[])));
      req.on('error', reject);
    });

  const upstreamOnce = (target: URL, req: IncomingMessage, path: string, body: Buffer) =>
    new Promise<IncomingMessage>((resolve, reject) => {
      const headers = { ...req.headers, host: target.host };
      delete headers['content-length'];
      const up = httpRequest(
        { hostname: target.hostname, port: target.port, method: req.method, path, headers: { ...headers, 'content-length': String(body.length) } },
        resolve,
      );
      up.on('error', reject);
      up.end(body);
    });
  // Round robin; a gateway that refuses the connection (killed, not yet back) is passed over for
  // the next, as a load balancer's passive health check does. Nothing was sent to it, so this
  // cannot duplicate a request.
  const upstream = async (req: IncomingMessage, path: string, body: Buffer): Promise<IncomingMessage> => {
    const first = turn++ % targets.length;
    for (let i = 0; ; i++) {
      try {
        return await upstreamOnce(targets[(first + i) % targets.length]!, req, path, body);
      } catch (err) {
        if ((err as { code?: string }).code !== 'ECONNREFUSED' || i + 1 >= targets.length) throw err;
      }
    }
  };

  const drain = (res: IncomingMessage) =>
    new Promise<void>((resolve) => {
      res.on('data', () => undefined);
      res.on('end', resolve);
      res.on('error', () => resolve());
      res.on('close', resolve);
    });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const m = /^\/d\/([A-Za-z0-9_-]{1,64})(\/.*)$/.exec(req.url ?? '');
    if (!m) {
      res.writeHead(404).end();
      return;
    }
    const device = m[1]!;
    const path = m[2]!;
    const event = { device, method: req.method ?? 'GET', path: path.split('?')[0]! };
    if (offline.has(device)) {
      record({ ...event, kind: 'offline-refused' });
      req.socket.destroy();
      return;
    }
    traffic.requests++;
    byKind[requestKind(event.method, path)]++;
    const random = randomOf(device);
    const fault = chooseFault(random, plan, /feed=(longpoll|continuous)/.test(path));
    const [min, max] = plan.latencyMs;
    const latency = min + Math.floor(random() * (max - min + 1));
    const body = await readBody(req);
    if (latency > 0) {
      traffic.delayedMs += latency;
      await new Promise((r) => setTimeout(r, latency));
    }
    if (fault === 'reset') {
      record({ ...event, kind: 'reset' });
      req.socket.destroy();
      return;
    }
    const first = await upstream(req, path, body);
    if (fault === 'drop-response') {
      // The gateway has done the work; the device never hears of it and must retry safely.
      await drain(first);
      record({ ...event, kind: 'drop-response' });
      req.socket.destroy();
      return;
    }
    if (fault === 'duplicate') {
      record({ ...event, kind: 'duplicate' });
      // Let the original finish first so the copy arrives as a true re-delivery, then answer the original.
      // If the gateway dies before the original answer is complete, buffer() rejects and
      // handle()'s catch answers 502 (nothing was sent yet); waiting on 'end' would wait forever.
      const answer = await buffer(first);
      const second = await upstream(req, path, body).catch(() => null);
      if (second) await drain(second);
      res.writeHead(first.statusCode ?? 502, first.headers);
      res.end(answer);
      return;
    }
    res.writeHead(first.statusCode ?? 502, first.headers);
    // pipeline, not pipe: pipe() never ends or destroys the device's response when the gateway's
    // answer fails mid-body (gateway kill -9 during a longpoll), which leaves the device waiting
    // forever on a half-sent 200 that a real network would have reset. pipeline() destroys every
    // stage on failure, either way round (a device that leaves also stops the upstream request).
    if (plan.bandwidthBytesPerSec > 0) {
      traffic.throttled++;
      await pipeline(first, new Throttle(plan.bandwidthBytesPerSec), res);
    } else await pipeline(first, res);
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    deviceUrl: (device) => `${url}/d/${device}`,
    setOffline(device, isOffline) {
      if (isOffline) offline.add(device);
      else offline.delete(device);
    },
    setPlan(next) {
      plan = next;
    },
    counts: () => ({ ...counts }),
    traffic: () => ({ ...traffic, byKind: { ...byKind } }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
