import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

// The README promises a Node.js version; every installed package must accept the one running the
// tests, or `npm ci` warns and the package may fail at run time (issue 10: `@nats-io/nuid` 3
// wanted Node ≥ 22 while the README said 20+; it is pinned to 2.0.3 through `overrides`).

type Version = [number, number, number];

function parse(v: string): Version | null {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(v.trim());
  return m ? [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)] : null;
}

function compare(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** Whether `version` meets an `engines.node` range of the forms packages use: `>=`, `^`, `||`. Null: a form it does not read. */
export function admits(range: string, version: Version): boolean | null {
  const alternatives = range.split('||').map((a) => a.trim());
  let readable = true;
  for (const alt of alternatives) {
    const ge = /^>=\s*(\S+)$/.exec(alt);
    const caret = /^\^\s*(\S+)$/.exec(alt);
    const bound = parse((ge ?? caret)?.[1] ?? '');
    if (!bound) {
      readable = false;
      continue;
    }
    if (ge && compare(version, bound) >= 0) return true;
    if (caret && version[0] === bound[0] && compare(version, bound) >= 0) return true;
  }
  return readable ? false : null;
}

/** Every package under `dir/node_modules`, nested copies included (npm nests a version it cannot hoist). */
function installedPackages(dir: string, out: Array<{ name: string; node: string }> = []): Array<{ name: string; node: string }> {
  const modules = join(dir, 'node_modules');
  let entries: string[];
  try {
    entries = readdirSync(modules);
  } catch {
    return out;
  }
  for (const entry of entries) {
    const names = entry.startsWith('@') ? readdirSync(join(modules, entry)).map((n) => `${entry}/${n}`) : [entry];
    for (const name of names) {
      const at = join(modules, name);
      try {
        const pkg = JSON.parse(readFileSync(join(at, 'package.json'), 'utf8')) as { engines?: { node?: unknown } };
        if (typeof pkg.engines?.node === 'string') out.push({ name: relative(process.cwd(), at), node: pkg.engines.node });
      } catch {
        continue; // not a package folder (.bin, .package-lock.json)
      }
      installedPackages(at, out);
    }
  }
  return out;
}

describe('install: the Node.js version', function () {
  it('reads the engines ranges packages use', function () {
    expect(admits('>=18.0.0', [20, 20, 2])).to.equal(true);
    expect(admits('>= 22', [20, 20, 2])).to.equal(false);
    expect(admits('^20.19.0 || ^22.13.0 || >=24', [20, 20, 2])).to.equal(true);
    expect(admits('^20.19.0 || ^22.13.0 || >=24', [20, 18, 0])).to.equal(false);
    expect(admits('^20.19.0 || ^22.13.0 || >=24', [21, 0, 0])).to.equal(false);
    expect(admits('14 - 22', [20, 0, 0])).to.equal(null);
  });

  it('every installed package accepts the Node.js that runs Ferry', function () {
    const running = parse(process.version)!;
    const refused = installedPackages(process.cwd()).filter((p) => admits(p.node, running) === false);
    expect(refused.map((p) => `${p.name} wants node ${p.node}`)).to.deep.equal([]);
  });
});
