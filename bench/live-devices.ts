import http from 'node:http';

// Light live devices for bench/live.bench.ts: each speaks the pull side of the real protocol to
// the real gateway, the way Ferry's device (PouchDB live pull, batch_size 500) does per batch:
//   GET  _changes?style=all_docs&since=S&limit=500&feed=longpoll&heartbeat=10000   (waits)
//   POST _bulk_get?revs=true&latest=true                                           (the docs)
//   PUT  _local/{id}                                                               (checkpoint)
// and again from `last_seq`. One keep-alive socket per device, bound to a source address of its
// own within 127.0.0.0/8 (a clinic behind one NAT shares an address), so the gateway's per-IP
// limit sees addresses as it would in the field, not one loopback address for everyone.

export interface DeviceSpec {
  owner: string;
  tenant: string;
  token: string;
  /** Source address, e.g. 127.0.3.7. */
  address: string;
}

export interface Seen {
  owner: string;
  id: string;
  doc: Record<string, unknown>;
  /** Wall clock (ms) when the doc was on the device (after its `_bulk_get`). */
  at: number;
}

export interface DeviceCounters {
  requests: number;
  /** 429s (per-IP, per-user rate or live-feed cap): the device waited `Retry-After`. */
  limited: number;
  errors: number;
  /** Longpolls that ended empty (timeout) and were asked again. */
  emptyPolls: number;
}

export interface Answer {
  status: number;
  text: string;
  headers: http.IncomingHttpHeaders;
}

export class Device {
  readonly spec: DeviceSpec;
  private readonly agent: http.Agent;
  private since = 0;
  private localRev: string | null = null;
  private running = false;
  private loopDone: Promise<void> = Promise.resolve();
  /** Resolves once the first longpoll's headers came back (the gateway holds it open). */
  readonly connected: Promise<void>;
  private markConnected!: () => void;

  constructor(
    spec: DeviceSpec,
    private readonly base: URL,
    private readonly onSeen: (s: Seen) => void,
    private readonly counters: DeviceCounters,
  ) {
    this.spec = spec;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: spec.address });
    this.connected = new Promise((r) => (this.markConnected = r));
  }

  private request(method: string, path: string, body?: unknown, onHeaders?: () => void): Promise<Answer> {
    this.counters.requests++;
    return send(this.agent, this.base, method, `/sync/${this.spec.tenant}/${path}`, this.spec.token, body, onHeaders);
  }

  start(): void {
    this.running = true;
    this.loopDone = this.loop();
  }

  private async backOff(a: Answer | null): Promise<void> {
    const after = a ? Number(a.headers['retry-after'] ?? 1) : 1;
    await new Promise((r) => setTimeout(r, Math.max(1, after) * 1000));
  }

  private async loop(): Promise<void> {
    while (this.running) {
      try {
        const poll = await this.request(
          'GET',
          `_changes?style=all_docs&since=${this.since}&limit=500&feed=longpoll&heartbeat=10000`,
          undefined,
          () => this.markConnected(),
        );
        if (!this.running) return;
        if (poll.status === 429) {
          this.counters.limited++;
          await this.backOff(poll);
          continue;
        }
        if (poll.status !== 200) throw new Error(`_changes ${poll.status}`);
        // Heartbeat newlines come before the JSON.
        const page = JSON.parse(poll.text.trim()) as { results: Array<{ id: string; changes: Array<{ rev: string }> }>; last_seq: number };
        if (page.results.length === 0) {
          this.counters.emptyPolls++;
          this.since = page.last_seq;
          continue;
        }
        const got = await this.request('POST', '_bulk_get?revs=true&latest=true', {
          docs: page.results.map((r) => ({ id: r.id, rev: r.changes[0]!.rev })),
        });
        if (got.status !== 200) throw new Error(`_bulk_get ${got.status}`);
        const at = Date.now();
        const body = JSON.parse(got.text) as { results: Array<{ id: string; docs: Array<{ ok?: Record<string, unknown> }> }> };
        for (const r of body.results) {
          const doc = r.docs.find((d) => d.ok)?.ok;
          if (doc) this.onSeen({ owner: this.spec.owner, id: r.id, doc, at });
        }
        this.since = page.last_seq;
        await this.checkpoint();
      } catch {
        if (!this.running) return;
        this.counters.errors++;
        await this.backOff(null);
      }
    }
  }

  private async checkpoint(): Promise<void> {
    const doc = { _id: '_local/live-bench', last_seq: this.since, ...(this.localRev ? { _rev: this.localRev } : {}) };
    const put = await this.request('PUT', '_local/live-bench', doc);
    if (put.status === 429) {
      this.counters.limited++;
      return;
    }
    if (put.status !== 201 && put.status !== 200) throw new Error(`_local ${put.status}`);
    this.localRev = (JSON.parse(put.text) as { rev: string }).rev;
  }

  /** Stops the loop and closes the socket (the gateway sees the client leave). */
  async stop(): Promise<void> {
    this.running = false;
    this.agent.destroy();
    await this.loopDone;
  }
}

/** A source address for device `i`, `perAddress` devices to each (127.1.x.y; all of 127/8 is loopback on Linux). */
export function addressOf(i: number, perAddress: number): string {
  const n = Math.floor(i / perAddress);
  return `127.1.${Math.floor(n / 250)}.${(n % 250) + 1}`;
}

/** One request with a Bearer token on `agent`; `onHeaders` fires when the answer's headers arrive. */
export function send(agent: http.Agent, base: URL, method: string, path: string, token: string, body?: unknown, onHeaders?: () => void): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        agent,
        host: base.hostname,
        port: base.port,
        method,
        path,
        headers: {
          authorization: `Bearer ${token}`,
          accept: 'application/json',
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        },
      },
      (res) => {
        onHeaders?.();
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, headers: res.headers }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}
