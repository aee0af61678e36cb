/**
 * Every help text of the command line in one place: the overview (`ntsd --help`, `ntsd help`) and one page
 * per command (`ntsd help COMMAND`, `ntsd COMMAND --help`), each option explained. The commands' own
 * parsers take their one-line synopsis from here, so a usage error and the help page never disagree.
 */

/** The commands `ntsd` knows, in the order the overview lists them. */
export const COMMANDS = ['run', 'validate', 'check', 'status', 'clients', 'keyset', 'help'] as const;
/** One of COMMANDS. */
export type CommandName = (typeof COMMANDS)[number];

interface CommandHelp {
  /** The usage line. */
  readonly synopsis: string;
  /** One line for the overview. */
  readonly summary: string;
  /** The rest of the page: what it does, then each option. */
  readonly body: string;
}

const PAGES: Readonly<Record<CommandName, CommandHelp>> = {
  run: {
    synopsis: 'usage: ntsd run [-c FILE]',
    summary: 'run the daemon in the foreground',
    body: `Runs NTS-KE and NTP in the foreground until SIGTERM or SIGINT; SIGHUP reloads certificates,
the log level, access lists and rate limits. Without -c it runs the embedded development
configuration: loopback addresses, unprivileged ports, development certificates made on first run
under certs/, and a key file under keyset/.

options:
  -c, --config FILE   configuration file (TOML); invalid settings exit 78 naming the key
  -h, --help          this page`,
  },
  validate: {
    synopsis: 'usage: ntsd validate -c FILE',
    summary: 'check a configuration file: exit 0 if valid, 78 if not',
    body: `Reads and validates a configuration file the way "run" does, without binding or loading keys.

options:
  -c, --config FILE   the configuration file to check (required)
  -h, --help          this page`,
  },
  check: {
    synopsis: 'usage: ntsd check HOST[:PORT] [--ca FILE] [--count N] [--servername NAME] [--timeout-ms MS] [--interval-ms MS] [--aead ID[,ID...]]',
    summary: 'probe any NTS server (ntsd, chrony, ...): NTS-KE, then N authenticated exchanges',
    body: `Acts as an NTS client: one NTS-KE over TLS 1.3, then N NTPv4 requests protected with the
negotiated AEAD, each verified. Prints what was negotiated and measured; exit 0 when all verified,
otherwise a code that says which step failed (TLS, KE, NTP).

arguments:
  HOST[:PORT]         the NTS-KE server (port 4460 when left out; IPv6 as [addr]:port)
options:
  --ca FILE           PEM file of CAs to trust instead of the system's (e.g. certs/unsafe-dev-ca.pem)
  --count N           authenticated NTP exchanges after the KE, 1..1000 (default 3)
  --servername NAME   name to verify in the certificate and send as SNI (default HOST)
  --timeout-ms MS     limit for the KE and for each NTP exchange (default 5000)
  --interval-ms MS    pause between NTP exchanges (default 1000)
  --aead ID[,ID...]   AEAD ids to offer, in order: 15, 16, 17 (AES-SIV-CMAC), 30 (AES-128-GCM-SIV)
  -h, --help          this page`,
  },
  status: {
    synopsis: 'usage: ntsd status [--metrics URL | -c FILE] [--interval S] [--timeout-ms MS] [--json]',
    summary: 'summary of a running ntsd from its metrics endpoint (a monitoring check)',
    body: `Scrapes a running ntsd's metrics twice, S seconds apart, and prints its health, rates, keys,
certificates and threads. Exit 0 healthy, 1 warning, 2 down: usable as a Nagios-style check.

options:
  --metrics URL       the metrics endpoint (default http://127.0.0.1:9975/metrics)
  -c, --config FILE   take the endpoint from this configuration's observability.metrics-listen
  --interval S        seconds between the two scrapes, 0..3600 (default 1; 0 = one scrape, no rates)
  --timeout-ms MS     limit for each scrape (default 3000)
  --json              print the report as JSON
  -h, --help          this page`,
  },
  clients: {
    synopsis: 'usage: ntsd clients [-c FILE | --metrics URL] [--sort requests|drops|ke|last] [--limit N] [--json]',
    summary: 'who is talking to a running ntsd: per-client requests, drops, NTS-KE sessions (like chronyc clients)',
    body: `Reads the client log of a running ntsd (GET /clients next to its metrics endpoint) and prints one
line per client, busiest first. A client is an IPv4 address or an IPv6 /64. The log holds
[observability] client-log-size clients (default 4096); when it is full the least recently seen
client is forgotten, so counts start when a client was (last) first seen. The daemon serves the
view only when metrics-listen is a loopback address: client addresses are personal data.

columns:
  NTP, NTS            plain NTP and NTS requests
  Drop                requests dropped without a reply (rate limit, access list, malformed, policy)
  NAK, KoD            NTS NAKs and Kiss-o'-Death replies sent
  Int                 mean interval between requests, averaged as chrony does ("-": one request)
  Last                time since the last NTP request
  KE, KEfail          NTS-KE connections, and those that got no cookies (Error record, TLS failure,
                      timeout, refused before TLS); --json splits them by class
  KInt, KLast         mean interval between NTS-KE connections, time since the last one
options:
  --metrics URL       the metrics endpoint (default http://127.0.0.1:9975/metrics); /clients is read
                      on the same host and port
  -c, --config FILE   take the endpoint from this configuration's observability.metrics-listen
  --sort KEY          requests (default), drops, ke (NTS-KE connections) or last (most recent first)
  --limit N           print at most N clients (default 50)
  --timeout-ms MS     limit for the request (default 3000)
  --json              print the view as JSON (every counter, intervals and ages in seconds)
  -h, --help          this page`,
  },
  keyset: {
    synopsis: 'usage: ntsd keyset inspect [-c FILE]',
    summary: 'key ids, ages and rotation schedule of the cookie master keys (never key bytes)',
    body: `Reads the key storage file (keyset mode "local" or "follow") or derives the keys (mode
"ratchet") and prints each key's id, role, creation time and age, the next rotation, and since when
issued cookies still open. Key bytes are never printed.

options:
  -c, --config FILE   configuration whose [keyset] to inspect (default: the embedded one)
  -h, --help          this page`,
  },
  help: {
    synopsis: 'usage: ntsd help [COMMAND]',
    summary: 'this overview, or the page of one command',
    body: `Prints the overview, or the page of COMMAND (the same as "ntsd COMMAND --help").`,
  },
};

/** The one-line usage of `command`. */
export function synopsis(command: CommandName): string {
  return PAGES[command].synopsis;
}

/** Whether `word` names a command. */
export function isCommand(word: string): word is CommandName {
  return (COMMANDS as readonly string[]).includes(word);
}

/** The help page of `command`. */
export function commandHelp(command: CommandName): string {
  const page = PAGES[command];
  return `${page.synopsis}\n\n${page.body}\n`;
}

/** The overview: every command with its summary, and the global options. */
export function overviewHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.length)) + 2;
  const lines = COMMANDS.map((c) => `  ${c.padEnd(width)}${PAGES[c].summary}`);
  return `usage: ntsd <command> [options]

commands:
${lines.join('\n')}

options:
  -h, --help          this overview; "ntsd COMMAND --help" or "ntsd help COMMAND" for one command
  -V, --version       version, Node.js, and the datapath and AEAD backends this machine would use
`;
}
