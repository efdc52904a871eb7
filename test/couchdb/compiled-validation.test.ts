import { expect } from 'chai';
import { compiledOnce, isReusable } from '../../couchdb/embedded/compiled-validation.ts';
import { startEmbeddedCouch, type EmbeddedCouch } from '../../couchdb/embedded/supervisor.ts';
import { freePort, tempDir, type TempDir } from '../support/services.ts';
import { raw } from './http.ts';

// The embedded server compiles each validate_doc_update source once
// (couchdb/embedded/compiled-validation.ts). What a validation function sees must stay what it
// saw when compiled per doc: the design doc of the moment as `this`, a new source from the next
// write, and `require` against its own design doc.

describe('couchdb/embedded: validation functions compiled once', () => {
  describe('which compilations are reused', () => {
    const cases: Array<[string, Record<string, unknown> | undefined, unknown, boolean]> = [
      ['a plain source', {}, 'function (d) {}', true],
      ['no extra variables given', undefined, 'function (d) {}', true],
      ['a source using require', {}, "function (d) { var lib = require('lib/x'); }", false],
      ['extra variables', { emit: () => undefined }, 'function (d) {}', false],
      ['not a string', {}, 42, false],
    ];
    for (const [name, extra, program, reused] of cases) {
      it(`${name}: ${reused ? 'reused' : 'compiled each time'}`, () => {
        expect(isReusable(extra, program)).to.equal(reused);
      });
    }

    it('compiles a source once, and again for another source; failures are not kept', () => {
      let compilations = 0;
      const evaluate = compiledOnce((_ctx, _extra, program) => {
        compilations++;
        if (program === 'bad') throw new Error('compilation_error');
        return () => program;
      }, 2);
      const a = evaluate({}, {}, 'a');
      expect(evaluate({}, {}, 'a')).to.equal(a);
      evaluate({}, {}, 'b');
      expect(compilations).to.equal(2);
      expect(() => evaluate({}, {}, 'bad')).to.throw('compilation_error');
      expect(() => evaluate({}, {}, 'bad')).to.throw('compilation_error');
      expect(compilations).to.equal(4);
      evaluate({}, {}, 'c');
      evaluate({}, {}, 'a');
      expect(compilations).to.equal(6);
    });
  });

  describe('on a running server', function () {
    this.timeout(60_000);
    let dir: TempDir;
    let couch: EmbeddedCouch;
    const db = '/vdu_once';
    const admin = () => ({ auth: couch.admin });
    let n = 0;
    const write = async (doc: Record<string, unknown>) => {
      const res = await raw(couch.url, 'POST', `${db}/_bulk_docs`, { ...admin(), body: { docs: [{ _id: `d${++n}`, ...doc }] } });
      const [row] = res.body as Array<{ ok?: boolean; error?: string }>;
      return row?.ok ? 'accepted' : row?.error;
    };
    const putDesign = async (id: string, body: Record<string, unknown>) => {
      const current = (await raw(couch.url, 'GET', `${db}/${id}`, admin())).body as { _rev?: string };
      const res = await raw(couch.url, 'PUT', `${db}/${id}`, { ...admin(), body: { ...body, ...(current._rev ? { _rev: current._rev } : {}) } });
      expect(res.status).to.equal(201);
    };
    // Refuses a doc whose size is over the design doc's own `limits.max`: the source reads `this`.
    const BY_THIS = 'function (newDoc) { if (newDoc.size > this.limits.max) { throw({ forbidden: "too big" }); } }';

    before(async () => {
      dir = tempDir('ferry-vdu-once-');
      couch = await startEmbeddedCouch({ dataDir: dir.path, port: await freePort() });
      expect((await raw(couch.url, 'PUT', db, admin())).status).to.equal(201);
    });
    after(async () => {
      await couch?.stop();
      dir?.remove();
    });

    it('runs a kept compilation with the design doc of the moment as this', async () => {
      await putDesign('_design/limits', { limits: { max: 10 }, validate_doc_update: BY_THIS });
      expect(await write({ size: 5 })).to.equal('accepted');
      expect(await write({ size: 50 })).to.equal('forbidden');
      // Same source, other field: the new limit bites from the next write.
      await putDesign('_design/limits', { limits: { max: 100 }, validate_doc_update: BY_THIS });
      expect(await write({ size: 50 })).to.equal('accepted');
      expect(await write({ size: 500 })).to.equal('forbidden');
    });

    it('a validation function cannot change the design doc the next one sees', async () => {
      const source = 'function (newDoc) { if (this.limits.max !== 100) { throw({ forbidden: "changed" }); } try { this.limits.max = 1; } catch (e) {} }';
      await putDesign('_design/limits', { limits: { max: 100 }, validate_doc_update: source });
      expect(await write({ size: 1 })).to.equal('accepted');
      expect(await write({ size: 2 })).to.equal('accepted');
    });

    it('compiles a changed source from the next write', async () => {
      await putDesign('_design/limits', { limits: { max: 100 }, validate_doc_update: 'function (newDoc) { if (newDoc.size < 0) { throw({ forbidden: "negative" }); } }' });
      expect(await write({ size: 500 })).to.equal('accepted');
      expect(await write({ size: -1 })).to.equal('forbidden');
    });

    it('resolves require against the design doc each time', async () => {
      const source = 'function (newDoc) { var rule = require("lib/rule"); if (!rule.ok(newDoc)) { throw({ forbidden: "rule" }); } }';
      await putDesign('_design/limits', { lib: { rule: 'exports.ok = function (d) { return d.size !== 7; };' }, validate_doc_update: source });
      expect(await write({ size: 7 })).to.equal('forbidden');
      await putDesign('_design/limits', { lib: { rule: 'exports.ok = function (d) { return d.size !== 8; };' }, validate_doc_update: source });
      expect(await write({ size: 7 })).to.equal('accepted');
      expect(await write({ size: 8 })).to.equal('forbidden');
    });
  });
});
