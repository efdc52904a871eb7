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
