/** runtime/node-version.ts: Node 20 is past end of life; 22 and 24 are not. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nodeEndOfLife } from '../../src/runtime/node-version.js';

test('Node 20 is past its end of life (2026-04-30) and the advice names Node 24', () => {
  assert.deepEqual(nodeEndOfLife('20.20.2'), { major: 20, endOfLife: '2026-04-30', moveTo: 'Node.js 24 LTS' });
  assert.deepEqual(nodeEndOfLife('v20.19.0')?.major, 20);
});

test('Node 22 and 24 still get security fixes', () => {
  assert.equal(nodeEndOfLife('22.12.0'), undefined);
  assert.equal(nodeEndOfLife('24.11.1'), undefined);
});
