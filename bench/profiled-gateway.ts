import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';

// scripts/gateway.ts under V8's CPU profiler, for `BENCH_LIVE_CPU_PROF=dir npm run bench -- live`
// (Node 20 refuses --cpu-prof in NODE_OPTIONS). SIGUSR2 writes the profile so far to
// BENCH_PROFILE_FILE; the gateway itself runs unchanged.

const file = process.env.BENCH_PROFILE_FILE;
if (!file) throw new Error('set BENCH_PROFILE_FILE');
const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 1000 });
await session.post('Profiler.start');
process.on('SIGUSR2', () => {
  void session.post('Profiler.stop').then(({ profile }) => writeFileSync(file, JSON.stringify(profile)));
});
await import('../scripts/gateway.ts');
