/**
 * `node dist/bench/storm/main.js [--datagrams N] [--seconds S] [--no-sanitize]`: a malformed-datagram
 * storm against the native datapath with the addon under AddressSanitizer (storm.ts). Prints the
 * figures as JSON and exits 1 on any defect. Defaults: 1,000,000 datagrams or 300 s, whichever is first.
 */
import { parseArgs } from 'node:util';
import { runStorm } from './storm.js';

const { values } = parseArgs({
  options: {
    datagrams: { type: 'string', default: '1000000' },
    seconds: { type: 'string', default: '300' },
    'no-sanitize': { type: 'boolean', default: false },
  },
});
const result = await runStorm({ datagrams: Number(values.datagrams), seconds: Number(values.seconds), sanitize: !values['no-sanitize'] });
const { defects, ...figures } = result;
console.log(JSON.stringify(figures, null, 2));
if (defects.length > 0) {
  for (const d of defects) console.error(`DEFECT: ${d}`);
  process.exit(1);
}
console.log(`clean: ${result.sent} datagrams in ${result.elapsedS.toFixed(1)} s, ${result.replies} replies, none longer than its request`);
