// A live pull waits on a longpoll `_changes` that the gateway keeps alive with heartbeat newlines
// (`heartbeat=H`, STACK-NOTES trap 18). PouchDB 9 computes a request timeout for it but never
// applies it, so an answer that goes silent without closing (a half-open connection, a proxy that
// keeps the device's side open after its upstream died) holds the pull forever while push keeps
// working. This fails such an answer once nothing, not even a heartbeat, came for `factor × H`.

import type { FetchLike } from './auth-fetch.ts';

/** The heartbeat a live `_changes` request asks for, in ms; null for any other request. */
export function heartbeatOf(url: string): number | null {
  const u = new URL(url, 'http://device.invalid');
  if (!u.pathname.endsWith('/_changes')) return null;
  const feed = u.searchParams.get('feed');
  if (feed !== 'longpoll' && feed !== 'continuous') return null;
  const beat = Number(u.searchParams.get('heartbeat'));
  return Number.isSafeInteger(beat) && beat > 0 ? beat : null;
}

export class HeartbeatMissed extends Error {
  constructor() {
    super('no heartbeat from the gateway; the connection is presumed dead');
    this.name = 'HeartbeatMissed';
  }
}

export function withHeartbeatWatch(fetch: FetchLike, factor = 2): FetchLike {
  return async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const beat = heartbeatOf(url);
    const res = await fetch(input, init);
    if (beat === null || !res.body) return res;
    const limit = beat * factor;
    const reader = res.body.getReader();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        clearTimeout(timer);
        const missed = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new HeartbeatMissed()), limit)));
        try {
          const { done, value } = await Promise.race([reader.read(), missed]);
          clearTimeout(timer);
          if (done) controller.close();
          else controller.enqueue(value);
        } catch (err) {
          clearTimeout(timer);
          void reader.cancel(err).catch(() => undefined);
          controller.error(err);
        }
      },
      cancel(reason) {
        clearTimeout(timer);
        return reader.cancel(reason);
      },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}
