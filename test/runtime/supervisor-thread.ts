/**
 * A worker-thread entry for test/runtime/supervisor.test.ts: answers "ready" with its index (or "failed"
 * when workerData says so), echoes pings, exits on request, and answers "stop" with "stopped".
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';

interface Init {
  readonly index: number;
  readonly fail?: boolean;
  readonly exitAfterReady?: boolean;
}

if (!isMainThread && parentPort !== null) {
  const port = parentPort;
  const init = workerData as Init;
  if (init.fail === true) {
    port.postMessage({ kind: 'failed', message: `thread ${init.index} cannot bind` });
  } else {
    port.on('message', (m: { kind: string }) => {
      if (m.kind === 'ping') port.postMessage({ kind: 'pong', index: init.index });
      if (m.kind === 'exit') process.exit(3);
      if (m.kind === 'stop') {
        port.postMessage({ kind: 'stopped' });
        port.close();
      }
    });
    port.postMessage({ kind: 'ready', index: init.index });
    if (init.exitAfterReady === true) setTimeout(() => process.exit(4), 5);
  }
}
