// One serialiser for the whole library: calls run one after another, in call order, and a failed
// call does not stop the ones behind it. The session keeps two of them: one for store writes (so
// `seq` and `after` never race) and one for lock/unlock/close/wipe (so no second handle opens
// while one is closing).

export type Serial = <T>(fn: () => Promise<T>) => Promise<T>;

export function serialQueue(): Serial {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn);
    tail = run.catch(() => undefined);
    return run;
  };
}
