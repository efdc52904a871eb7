// A signal that aborts when `parent` does or after `ms`, whichever comes first.
//
// Not `AbortSignal.any([parent, AbortSignal.timeout(ms)])`: on Node 20 that composite holds its
// sources weakly, and a timeout signal nobody listens to is held by nothing else, so after a GC it
// never fires (seen: a longpoll asked for `timeout=3000` was still open 12 s later once the gateway
// had collected garbage). Here the timer holds the controller, so the deadline always comes.
// (The same composite handed to `fetch` does fire: undici keeps it alive while the request runs.)

export interface Deadline {
  signal: AbortSignal;
  /** Stops the timer and the parent listener; call once the work is over. */
  clear(): void;
}

export function deadlineSignal(parent: AbortSignal | undefined, ms: number): Deadline {
  const controller = new AbortController();
  const onParent = () => controller.abort(parent?.reason);
  const timer = setTimeout(() => controller.abort(new DOMException('The operation timed out.', 'TimeoutError')), ms);
  if (parent?.aborted) onParent();
  else parent?.addEventListener('abort', onParent, { once: true });
  return {
    signal: controller.signal,
    clear() {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onParent);
    },
  };
}

/**
 * The reason every `closeSignal` aborts with: one shared error, named as an abort is, so answering a
 * request does not build a DOMException and its stack trace (that was ~1.5% of the gateway's CPU in
 * the harness: every answered request aborts its signal when the response closes).
 */
const RESPONSE_CLOSED: Error = Object.freeze(Object.assign(new Error('The response has closed.'), { name: 'AbortError' }));

/** A signal for the work that answers `res`: it aborts once the response closes, answered or cut off. */
export function closeSignal(res: { once(event: 'close', listener: () => void): unknown }): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => controller.abort(RESPONSE_CLOSED));
  return controller.signal;
}
