import { expect } from 'chai';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import http, { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGatewayApp } from '../../gateway/app.ts';
import { silentLogger } from '../../http/log.ts';
import { generateSigningKey } from '../../identity/keys.ts';
import { listen, type Listening } from '../support/http.ts';

// The gateway's edge against issue 10's low findings: only an opaque correlation id goes on to
// services, logs and audit; and the static app answers an unknown, hidden or escaping path with
// one 404 (never a 500, never a difference that tells what exists) and a bad encoding with 400.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Raw {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A request with the path exactly as given: fetch() would normalise `..` and encodings first. */
function raw(base: string, path: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<Raw> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path, method: opts.method ?? 'GET', headers: opts.headers ?? {} }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Status, headers and body with the correlation id and date blanked: what may not differ. */
function comparable(r: Raw): string {
  const id = String(r.headers['x-correlation-id'] ?? '');
  const headers = Object.entries(r.headers).filter(([name]) => name !== 'date' && name !== 'x-correlation-id' && name !== 'etag'); // express's etag hashes the body, correlation id included
  return JSON.stringify({ status: r.status, headers, body: id ? r.body.replaceAll(id, '<correlation>') : r.body });
}

describe('gateway: existence oracles and opaque correlation ids at the edge', function () {
  let dir: string;
  let gateway: Listening;
  let service: Server;
  const seen: Array<string | undefined> = [];

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'ferry-web-'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>Ferry</title>');
    writeFileSync(join(dir, 'app.js'), 'console.log(1);');
    writeFileSync(join(dir, '.hidden'), 'secret');
    mkdirSync(join(dir, 'empty'));
    // A stand-in service that records the correlation id it was handed.
    service = createServer((req, res) => {
      seen.push(req.headers['x-correlation-id'] as string | undefined);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
    await new Promise<void>((r) => service.listen(0, '127.0.0.1', r));
    const serviceUrl = `http://127.0.0.1:${(service.address() as AddressInfo).port}`;
    gateway = await listen(
      createGatewayApp({
        logger: silentLogger(),
        signingKeys: [await generateSigningKey()],
        devIdp: null,
        v1Routes: [{ collection: 'patients', serviceUrl }],
        readiness: async () => undefined,
        webApp: { dir },
      }),
    );
  });
  after(async function () {
    await gateway?.close();
    service?.closeAllConnections();
    await new Promise<void>((r) => (service ? service.close(() => r()) : r()));
    rmSync(dir, { recursive: true, force: true });
  });

  describe('static files under /app/', function () {
    it('serves what exists', async function () {
      for (const path of ['/app/', '/app/index.html', '/app/app.js']) {
        const res = await raw(gateway.url, path);
        expect(res.status, path).to.equal(200);
      }
    });

    // Each answered exactly like an unknown file: a hidden file or a path out of the folder is not told apart.
    const notFound = [
      '/app/nosuch.js',
      '/app/nosuch/deeper.css',
      '/app/.hidden',
      '/app/.nosuch',
      '/app/../package.json',
      '/app/%2e%2e/%2e%2e/package.json',
      '/app/%2E%2E%2Fpackage.json',
      '/app/..%5c..%5cpackage.json',
      '/app//etc/passwd',
      '/app/index.html/',
      '/app/empty/',
      `/app/${'a'.repeat(300)}.js`,
      '/app/%C3%A9t%C3%A9.js',
    ];
    let unknown: Raw;
    before(async function () {
      unknown = await raw(gateway.url, '/app/nosuch.js');
    });
    for (const path of notFound) {
      it(`${path} → the same 404 as an unknown file`, async function () {
        const res = await raw(gateway.url, path);
        expect(res.status).to.equal(404);
        expect(JSON.parse(res.body)).to.include({ code: 'NOT_FOUND' });
        expect(comparable(res)).to.equal(comparable(unknown));
        expect(res.body).to.not.include('secret');
      });
    }

    for (const path of ['/app/%00', '/app/index.html%00.js', '/app/%E0%A4%A', '/app/%', '/app/%zz.js']) {
      it(`${path} → 400 MALFORMED_REQUEST`, async function () {
        const res = await raw(gateway.url, path);
        expect(res.status).to.equal(400);
        expect(JSON.parse(res.body)).to.include({ code: 'MALFORMED_REQUEST' });
      });
    }

    it('other methods are refused without a 500', async function () {
      for (const method of ['POST', 'PUT', 'DELETE']) {
        const res = await raw(gateway.url, '/app/nosuch.js', { method });
        expect(res.status, method).to.be.within(400, 499);
      }
    });
  });

  describe('X-Correlation-Id', function () {
    const send = async (inbound: string | undefined) => {
      seen.length = 0;
      const res = await raw(gateway.url, '/v1/patients/pat_x', { headers: inbound === undefined ? {} : { 'x-correlation-id': inbound } });
      return { answered: String(res.headers['x-correlation-id']), forwarded: seen[0] };
    };

    it('a UUID (any version, either case) goes on, in lower case', async function () {
      for (const id of ['0190a0b0-c0de-7000-8000-000000000123', '9b2f4c1e-3d5a-4b6c-8d7e-0f1a2b3c4d5e', '9B2F4C1E-3D5A-4B6C-8D7E-0F1A2B3C4D5E']) {
        expect(await send(id), id).to.deep.equal({ answered: id.toLowerCase(), forwarded: id.toLowerCase() });
      }
    });

    it('anything else is replaced by a fresh UUID, answered and forwarded alike', async function () {
      for (const id of [undefined, 'corr-123', 'Amina Okafor', 'a'.repeat(36), '{9b2f4c1e-3d5a-4b6c-8d7e-0f1a2b3c4d5e}', '9b2f4c1e3d5a4b6c8d7e0f1a2b3c4d5e', 'x'.repeat(128)]) {
        const r = await send(id);
        expect(r.answered, String(id)).to.match(UUID);
        expect(r.answered).to.not.equal(id);
        expect(r.forwarded).to.equal(r.answered);
      }
    });
  });
});
