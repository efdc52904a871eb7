import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';

// CPU starvation (`--starve S`): four busy child processes per core for S seconds, so the
// gateway, the worker, the service and the devices all run on a loaded machine. Plain busy loops
// in their own processes, ended by a deadline of their own, so a harness that dies cannot leave
// them spinning.

export interface Starvation {
  /** Resolves once every hog has exited. */
  readonly done: Promise<void>;
  stop(): void;
}

const HOG = 'const end = Date.now() + Number(process.argv[1]); let x = 0; while (Date.now() < end) { for (let i = 0; i < 1e6; i++) x ^= i; }';

export function starveCpu(forMs: number, hogs: number = 4 * availableParallelism()): Starvation {
  const children: ChildProcess[] = [];
  for (let i = 0; i < hogs; i++) children.push(spawn(process.execPath, ['-e', HOG, String(forMs)], { stdio: 'ignore' }));
  const done = Promise.all(children.map((c) => new Promise<void>((resolve) => (c.exitCode !== null ? resolve() : c.once('exit', () => resolve()))))).then(() => undefined);
  return {
    done,
    stop() {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    },
  };
}
