// [console] `mycelium exec NODE -- COMMAND [PARAM=VALUE…]` and `mycelium exec --nodes a,b,c -- COMMAND …`
// (issue 12): runs a command through the broker's REST API (POST /api/v1/nodes/:uid/exec, NDJSON) and prints
// stdout and stderr as they arrive; exits with the remote exit code. With --nodes (or --filter-prefix), one block
// per node through POST /api/v1/exec. `--shell` sends the words after `--` as one shell line (admin).
import { userInfo } from 'node:os';
import type { OptionTable } from '../services/common/config.ts';
import { helpText, resolveConfig } from '../services/common/config.ts';
import { defaultKeyFile, readPrivateKey } from '../services/common/keys.ts';
import { fatal } from '../services/common/run.ts';
import { mintToken } from '../services/common/tokens.ts';

export const execOptions = {
  brokerUrl: { type: 'string', default: 'http://localhost:8000', description: 'the broker (http:// or ws://)' },
  token: { type: 'string', description: 'a token (role operator or admin); default: minted from --key-file' },
  keyFile: {
    type: 'string',
    description: 'private key to mint a short-lived token with (default ~/.mycelium/key.pem)',
  },
  role: { type: 'string', default: 'operator', description: 'role of a minted token: operator or admin', env: false },
  sub: { type: 'string', description: 'subject of a minted token (default cli-<user>)', env: false },
  nodes: { type: 'list', description: 'run on these nodes (comma-separated), one block each', env: false },
  filterPrefix: { type: 'string', description: 'run on every online agent whose uid starts with this', env: false },
  shell: {
    type: 'boolean',
    default: false,
    description: 'send the words after -- as one shell line (admin)',
    env: false,
  },
  mode: { type: 'string', default: 'output', description: 'output, ok-ng or no-return', env: false },
  timeoutMs: { type: 'number', min: 1, description: 'the command timeout (the agent caps it)', env: false },
} as const satisfies OptionTable;

const SUMMARY =
  'Run a command on a device agent: mycelium exec NODE -- COMMAND [PARAM=VALUE…], or --nodes a,b -- COMMAND.';

/** Splits `[options] NODE -- COMMAND args…` into the option words, the positional words and the command words. */
export function splitArgv(argv: string[]): { options: string[]; positionals: string[]; command: string[] } {
  const dash = argv.indexOf('--');
  const head = dash < 0 ? argv : argv.slice(0, dash);
  const command = dash < 0 ? [] : argv.slice(dash + 1);
  const booleans = new Set(['--shell', '--help', '--debug']);
  const options: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < head.length; i++) {
    const a = head[i];
    if (!a.startsWith('--')) positionals.push(a);
    else if (a.includes('=') || booleans.has(a)) options.push(a);
    else options.push(a, ...(i + 1 < head.length ? [head[++i]] : []));
  }
  return { options, positionals, command };
}

interface Frame {
  type: string;
  uid?: string;
  stream?: string;
  data?: string;
  status?: string;
  code?: number | null;
  signal?: string | null;
  reason?: string;
  truncated?: boolean;
}

export async function execMain(argv: string[]): Promise<void> {
  const { options, positionals, command } = splitArgv(argv);
  let config: ReturnType<typeof resolveConfig<typeof execOptions>>;
  try {
    config = resolveConfig(execOptions, options);
  } catch (err) {
    fatal(`mycelium exec: ${(err as Error).message}`);
  }
  if (config.help) {
    process.stdout.write(helpText('exec', SUMMARY, execOptions));
    return;
  }
  const nodes = config.nodes ?? [];
  const many = nodes.length > 0 || config.filterPrefix !== undefined;
  if (command.length === 0) fatal('mycelium exec: give the command after --');
  if (!many && positionals.length !== 1) fatal('mycelium exec: give one NODE (or --nodes a,b,c)');
  const body: Record<string, unknown> = { mode: config.mode };
  if (config.timeoutMs !== undefined) body.timeoutMs = config.timeoutMs;
  if (config.shell) body.shell = command.join(' ');
  else {
    body.command = command[0];
    const params: Record<string, string> = {};
    for (const word of command.slice(1)) {
      const eq = word.indexOf('=');
      if (eq <= 0) fatal(`mycelium exec: parameters are NAME=VALUE, not ${JSON.stringify(word)}`);
      params[word.slice(0, eq)] = word.slice(eq + 1);
    }
    if (Object.keys(params).length > 0) body.params = params;
  }
  const token =
    config.token ??
    (await mintToken(readPrivateKey(config.keyFile ?? defaultKeyFile()), {
      role: config.role === 'admin' ? 'admin' : 'operator',
      sub: config.sub ?? `cli-${userInfo().username}`,
      ttlSeconds: 300,
    }));
  const base = config.brokerUrl.replace(/^ws(s?):/, 'http$1:').replace(/\/+$/, '');
  let url: string;
  if (many) {
    url = `${base}/api/v1/exec`;
    if (nodes.length > 0) body.nodes = nodes;
    else body.filter = { uidPrefix: config.filterPrefix };
  } else url = `${base}/api/v1/nodes/${encodeURIComponent(positionals[0])}/exec`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (err) {
    fatal(`mycelium exec: cannot reach ${base}: ${(err as Error).message}`);
  }
  if (res.status !== 200 || res.body === null) {
    const text = await res.text();
    let message = text;
    try {
      const json = JSON.parse(text) as { error?: string; message?: string };
      message = `${json.error}: ${json.message}`;
    } catch {
      // not JSON: print as is
    }
    fatal(`mycelium exec: ${res.status} ${message}`);
  }
  const code = many ? await printBlocks(res.body) : await printStream(res.body);
  process.exitCode = code;
}

/** Lines of an NDJSON body as they arrive. */
async function* frames(body: ReadableStream<Uint8Array>): AsyncGenerator<Frame> {
  const decoder = new TextDecoder();
  let buffered = '';
  const reader = body.getReader();
  for (;;) {
    const { done, value: chunk } = await reader.read();
    if (done) break;
    buffered += decoder.decode(chunk, { stream: true });
    let nl = buffered.indexOf('\n');
    while (nl >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line !== '') yield JSON.parse(line) as Frame;
      nl = buffered.indexOf('\n');
    }
  }
}

/** The exit code of a remote result: the command's own, else 124 timeout, 125 cancelled, 126 refused, 1 otherwise. */
export function exitCodeOf(f: Frame): number {
  if (typeof f.code === 'number') return f.code;
  if (f.status === 'ok') return 0;
  if (f.status === 'timeout') return 124;
  if (f.status === 'cancelled') return 125;
  if (f.status === 'refused') return 126;
  return 1;
}

function describeExit(f: Frame): string {
  const why = f.reason === undefined ? '' : `: ${f.reason}`;
  return `${f.status}${f.code === null || f.code === undefined ? '' : ` (exit ${f.code})`}${f.signal ? ` ${f.signal}` : ''}${f.truncated ? ', output truncated' : ''}${why}`;
}

async function printStream(body: ReadableStream<Uint8Array>): Promise<number> {
  for await (const f of frames(body)) {
    if (f.type === 'exec-output') (f.stream === 'stderr' ? process.stderr : process.stdout).write(f.data ?? '');
    else if (f.type === 'exec-exit') {
      if (f.status !== 'ok' && f.status !== 'ng') process.stderr.write(`mycelium exec: ${describeExit(f)}\n`);
      else if (f.truncated) process.stderr.write('mycelium exec: output truncated by the agent\n');
      return exitCodeOf(f);
    }
  }
  process.stderr.write('mycelium exec: the stream ended without an exit\n');
  return 1;
}

/** One block per node, printed when the node's exit arrives (output of many nodes never interleaves). */
async function printBlocks(body: ReadableStream<Uint8Array>): Promise<number> {
  const out = new Map<string, string>();
  let worst = 0;
  for await (const f of frames(body)) {
    const uid = f.uid ?? '?';
    if (f.type === 'exec-output') out.set(uid, (out.get(uid) ?? '') + (f.data ?? ''));
    else if (f.type === 'exec-exit') {
      const text = out.get(uid) ?? '';
      out.delete(uid);
      process.stdout.write(`== ${uid}: ${describeExit(f)}\n${text}${text === '' || text.endsWith('\n') ? '' : '\n'}`);
      worst = Math.max(worst, exitCodeOf(f) === 0 ? 0 : 1);
    }
  }
  return worst;
}
