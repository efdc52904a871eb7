import { readFileSync } from 'node:fs';

// CPU time of another process, from /proc (Linux): the benches set it per mutation beside the
// rates, since it is steadier than a rate on a shared machine.

/** The fields of /proc/{pid}/stat after the parenthesised command name (which may hold spaces): state is [0]. */
export function procStatFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** User + system CPU seconds `pid` has used so far; null where it cannot be read. */
export function cpuSecondsOf(pid: number | undefined): number | null {
  const fields = pid === undefined ? null : procStatFields(pid);
  // utime and stime are stat fields 14 and 15, in clock ticks (100 per second on Linux).
  return fields ? (Number(fields[11]) + Number(fields[12])) / 100 : null;
}

/** Resident set size of `pid` in bytes (VmRSS of /proc/{pid}/status); null where it cannot be read. */
export function rssBytesOf(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}
