import { expect } from 'chai';
import { quickstart } from '../../client/examples/quickstart.ts';

describe('client/README example (client/examples/quickstart.ts)', () => {
  it('runs offline end to end', async () => {
    const lines: string[] = [];
    await quickstart({ log: (l) => lines.push(l) });
    expect(lines).to.deep.equal([
      'status patient.create seq=1 → queued',
      'status patient.update seq=2 → queued',
      'update chained after the create on base version 1',
      'refused: VALIDATION_FAILED birthDate must not be in the future',
      'drafts: 1',
      'entity: phone=+2348000000000 pending=2 confirmed=not yet',
      'close refused: 2 unsynced mutation(s)',
      'wiped',
    ]);
  });
});
