// The progress display: one line that updates in place on a TTY, plain periodic lines otherwise.

export interface ProgressSnapshot {
  phase: string;
  elapsedMs: number;
  captured: number;
  planned: number;
  terminal: number;
  committed: number;
  conflict: number;
  rejected: number;
  faults: { reset: number; dropResponse: number; duplicate: number; offlineRefused: number };
  kills: number;
  offlineDevices: number;
}

export function renderProgress(s: ProgressSnapshot): string {
  return (
    `[${(s.elapsedMs / 1000).toFixed(0).padStart(4)}s] ${s.phase.padEnd(8)} ` +
    `captured ${s.captured}/${s.planned}  terminal ${s.terminal} (✓${s.committed} ⚠${s.conflict} ✗${s.rejected})  ` +
    `offline ${s.offlineDevices}  faults r${s.faults.reset} d${s.faults.dropResponse} x${s.faults.duplicate} o${s.faults.offlineRefused}  kills ${s.kills}`
  );
}

export interface ProgressDisplay {
  update(s: ProgressSnapshot): void;
  /** Prints a message on its own line without disturbing the progress line. */
  note(line: string): void;
  done(): void;
}

export function createProgress(mode: 'auto' | 'lines' | 'none', out: NodeJS.WriteStream = process.stderr, everyMs = 5_000): ProgressDisplay {
  if (mode === 'none') return { update: () => undefined, note: () => undefined, done: () => undefined };
  const tty = mode === 'auto' && out.isTTY === true;
  let last = 0;
  let shown = false;
  let latest: ProgressSnapshot | null = null;
  let lastLine = '';
  return {
    update(s) {
      latest = s;
      if (tty) {
        out.write(`\r${renderProgress(s).slice(0, (out.columns ?? 160) - 1)}\x1b[K`);
        shown = true;
      } else if (s.elapsedMs - last >= everyMs || last === 0) {
        last = Math.max(1, s.elapsedMs);
        lastLine = renderProgress(s);
        out.write(`${lastLine}\n`);
      }
    },
    note(line) {
      if (tty && shown) out.write('\r\x1b[K');
      out.write(`${line}\n`);
      if (tty && latest) out.write(renderProgress(latest).slice(0, (out.columns ?? 160) - 1));
    },
    done() {
      if (tty && shown) out.write('\n');
      else if (!tty && latest && renderProgress(latest) !== lastLine) out.write(`${renderProgress(latest)}\n`);
    },
  };
}
