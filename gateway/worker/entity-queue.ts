// Runs work in sequence within a key (an entity) and in parallel across keys, with a bound on
// how many run at once. A failing task never blocks the tasks queued behind it.

export interface EntityQueue {
  run<T>(key: string, task: () => Promise<T>): Promise<T>;
  /** Tasks queued or running. */
  readonly size: number;
  /** Resolves once at most `n` tasks are queued or running. */
  below(n: number): Promise<void>;
  idle(): Promise<void>;
}

export function createEntityQueue(concurrency: number): EntityQueue {
  const tails = new Map<string, Promise<unknown>>();
  let size = 0;
  let running = 0;
  const slots: Array<() => void> = [];
  let watchers: Array<{ n: number; resolve: () => void }> = [];

  const notify = () => {
    watchers = watchers.filter((w) => {
      if (size > w.n) return true;
      w.resolve();
      return false;
    });
  };
  const acquire = (): Promise<void> => {
    if (running < concurrency) {
      running++;
      return Promise.resolve();
    }
    return new Promise((r) => slots.push(r));
  };
  const release = () => {
    const next = slots.shift();
    if (next) next();
    else running--;
  };

  return {
    run<T>(key: string, task: () => Promise<T>): Promise<T> {
      size++;
      const prev = tails.get(key) ?? Promise.resolve();
      const result = prev.then(async () => {
        await acquire();
        try {
          return await task();
        } finally {
          release();
        }
      });
      const tail = result.then(
        () => undefined,
        () => undefined,
      );
      tails.set(key, tail);
      void tail.then(() => {
        size--;
        if (tails.get(key) === tail) tails.delete(key);
        notify();
      });
      return result;
    },
    get size() {
      return size;
    },
    below(n) {
      if (size <= n) return Promise.resolve();
      return new Promise((resolve) => watchers.push({ n, resolve }));
    },
    idle() {
      return this.below(0);
    },
  };
}
