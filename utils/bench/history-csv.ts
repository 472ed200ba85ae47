// A raw CSV export of --rows rows through the broker's REST API and the history service (one process, in-process
// bus, SQLite), read as a stream: rows/s and the process's peak RSS above its level before the export, to show the
// export does not hold the rows in memory.
// Usage: node --import tsx utils/bench/history-csv.ts [--rows 1000000]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Broker } from '../../services/broker/broker.ts';
import { createBus } from '../../services/bus/index.ts';
import { readPrivateKey, readPublicKey, writeKeyPair } from '../../services/common/keys.ts';
import { silentLogger } from '../../services/common/log.ts';
import { mintToken } from '../../services/common/tokens.ts';
import { HistoryService } from '../../services/history/service.ts';
import { SqliteHistoryStore } from '../../services/history/store-sqlite.ts';
import type { ValueRow } from '../../services/history/store.ts';

const { values: args } = parseArgs({ options: { rows: { type: 'string', default: '1000000' } } });
const rows = Number(args.rows);
const dir = mkdtempSync(join(tmpdir(), 'myc-bench-csv-'));
const keyFile = join(dir, 'key.pem');
writeKeyPair(keyFile);
const path = join(dir, 'history.db');

const seed = new SqliteHistoryStore({ path });
await seed.open();
const t0 = Date.now() - rows;
for (let i = 0; i < rows; i += 5_000) {
  const batch: ValueRow[] = [];
  for (let j = i; j < Math.min(rows, i + 5_000); j++) {
    batch.push({ at: t0 + j, uid: 'n1', resource: 'temperature', value: 20 + (j % 100) / 10, key: `SEED:${j}` });
  }
  await seed.insert(batch, []);
}
await seed.close();

const bus = createBus();
await bus.start();
const broker = new Broker(
  {
    port: 0,
    host: '127.0.0.1',
    allowAnonymousViewers: false,
    publicMetrics: false,
    maxFrameBytes: 65536,
    pingIntervalMs: 15000,
    gatewayGraceMs: 10000,
    writeTimeoutMs: 10000,
    clientBufferBytes: 1048576,
    stateSyncMs: 0,
    peerHeartbeatMs: 2000,
    maxNodes: 100000,
    maxResourcesPerNode: 256,
    offlineRetentionMs: 86_400_000,
    offlineSweepMs: 60_000,
    sessionSweepMs: 1000,
    handshakeTimeoutMs: 10_000,
    maxConnectionsPerAddress: 20_000,
    clientFramesPerSecond: 100,
    clientFrameBurst: 200,
  },
  { publicKey: readPublicKey(keyFile), log: silentLogger(), bus },
);
await broker.start();
const history = new HistoryService(
  {
    retentionMs: 3650 * 86_400_000,
    durable: 'history',
    batch: 500,
    maxPending: 20_000,
    ackWaitMs: 30_000,
    retryMs: 1_000,
    streamMaxAgeMs: 86_400_000,
    pruneIntervalMs: 3_600_000,
    pruneBudget: 5_000,
  },
  { bus, store: new SqliteHistoryStore({ path }), log: silentLogger() },
);
await history.start();
const token = await mintToken(readPrivateKey(keyFile), { role: 'viewer', sub: 'bench', ttlSeconds: 3600 });

global.gc?.();
const baseline = process.memoryUsage().rss;
let peak = baseline;
const sampler = setInterval(() => {
  peak = Math.max(peak, process.memoryUsage().rss);
}, 50);
const start = process.hrtime.bigint();
const res = await fetch(
  `http://127.0.0.1:${broker.port}/api/v1/nodes/n1/resources/temperature/history?from=${t0}&to=${t0 + rows}&format=csv`,
  { headers: { authorization: `Bearer ${token}` } },
);
let bytes = 0;
let lines = 0;
for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
  bytes += chunk.length;
  for (const b of chunk) if (b === 10) lines++;
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
clearInterval(sampler);
console.log(`# CSV export of ${rows} rows through the broker (status ${res.status})`);
console.log(`rows received:   ${lines - 1} (${(bytes / 1048576).toFixed(1)} MiB) in ${seconds.toFixed(1)} s`);
console.log(`rate:            ${Math.round((lines - 1) / seconds)} rows/s`);
console.log(`RSS before:      ${(baseline / 1048576).toFixed(0)} MiB`);
console.log(
  `RSS peak above:  ${((peak - baseline) / 1048576).toFixed(0)} MiB (CSV body ${(bytes / 1048576).toFixed(0)} MiB)`,
);
await history.stop();
await broker.stop();
await bus.stop();
rmSync(dir, { recursive: true, force: true });
