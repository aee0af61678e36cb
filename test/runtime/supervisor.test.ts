/** runtime/supervisor.ts with real worker threads: start, start failure, replacement with back-off, stop. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ThreadSupervisor, restartDelayMs, type LifecycleMessage, type ThreadExit } from '../../src/runtime/supervisor.js';

const ENTRY = new URL('./supervisor-thread.js', import.meta.url);

interface Msg {
  readonly kind: string;
  readonly index?: number;
  readonly message?: string;
}

function classify(m: unknown): LifecycleMessage<number> {
  const msg = m as Msg;
  if (msg.kind === 'ready') return { kind: 'ready', value: msg.index ?? -1 };
  if (msg.kind === 'failed') return { kind: 'failed', error: new Error(msg.message) };
  if (msg.kind === 'stopped') return { kind: 'stopped' };
  return undefined;
}

function waitFor(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (check()) resolve();
      else if (Date.now() > deadline) reject(new Error('timed out'));
      else setTimeout(tick, 10);
    };
    tick();
  });
}

test('restart delays: none after a mature death, doubling from 100 ms for young ones, capped at 5 s', () => {
  assert.deepEqual([0, 1, 2, 3, 8, 20].map(restartDelayMs), [0, 100, 200, 400, 5000, 5000]);
});

test('threads start with their own workerData, take messages, and a crash is replaced and counted', async () => {
  const pongs: number[] = [];
  const exits: ThreadExit[] = [];
  const replaced: number[] = [];
  const sup = new ThreadSupervisor<number>({
    name: 'test',
    entry: ENTRY,
    workerData: (index) => ({ index }),
    classify,
    onMessage: (index, m) => {
      if ((m as Msg).kind === 'pong') pongs.push(index);
    },
    onExit: (e) => exits.push(e),
    onReplaced: (index) => replaced.push(index),
    stopMessage: { kind: 'stop' },
  });
  try {
    assert.deepEqual(await Promise.all([sup.start(0), sup.start(1)]), [0, 1]);
    sup.supervise();
    assert.equal(sup.alive, 2);
    sup.broadcast({ kind: 'ping' });
    await waitFor(() => pongs.length === 2);
    assert.deepEqual(pongs.sort(), [0, 1]);
    assert.ok(sup.post(1, { kind: 'exit' }));
    await waitFor(() => replaced.length === 1);
    assert.equal(exits.length, 1);
    assert.equal(exits[0]?.index, 1);
    assert.equal(exits[0]?.exitCode, 3);
    assert.equal(exits[0]?.restartInMs, 100, 'it died young (within a second of starting): back-off');
    assert.equal(sup.restarts, 1);
    assert.equal(sup.alive, 2);
  } finally {
    await sup.stop();
  }
  assert.equal(sup.alive, 0);
});

test('a thread that reports a start failure rejects start() and is ended; nothing is replaced before supervise()', async () => {
  const exits: ThreadExit[] = [];
  const sup = new ThreadSupervisor<number>({
    name: 'test',
    entry: ENTRY,
    workerData: (index) => ({ index, fail: true }),
    classify,
    onMessage: () => undefined,
    onExit: (e) => exits.push(e),
    stopMessage: { kind: 'stop' },
  });
  await assert.rejects(sup.start(0), /thread 0 cannot bind/);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(exits.length, 0);
  assert.equal(sup.restarts, 0);
  await sup.stop();
});

test('a crash loop backs off: each young death doubles the wait', async () => {
  const exits: ThreadExit[] = [];
  const sup = new ThreadSupervisor<number>({
    name: 'test',
    entry: ENTRY,
    workerData: (index) => ({ index, exitAfterReady: true }),
    classify,
    onMessage: () => undefined,
    onExit: (e) => exits.push(e),
    stopMessage: { kind: 'stop' },
  });
  await sup.start(0);
  sup.supervise();
  await waitFor(() => exits.length >= 3);
  await sup.stop();
  assert.deepEqual(exits.slice(0, 3).map((e) => e.restartInMs), [100, 200, 400]);
  const count = exits.length;
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(exits.length, count, 'no replacement after stop()');
});
