// Gateway reports (issue 11, item 7): what a status report costs. Prints figures; asserts nothing.
//   npm run bench:gateway-reports [-- --reports 20000]
// 1. Building a status report on a gateway, and checking one on the broker (parseGatewayFrame), per report.
// 2. A broker (in-process bus, in this process) receiving a flood of status reports from one gateway over a
//    real WebSocket: reports per second it takes in, broker CPU per report, and how many `gateway` frames a
//    registered client gets (coalescing at --gateway-report-min-interval-ms, default 1 s).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { StatusReporter } from '../../gateways/common/status-report.ts';
import type { CoreStats } from '../../gateways/common/stats.ts';
import { Broker, type BrokerConfig } from '../../services/broker/broker.ts';
import { brokerOptions } from '../../services/broker/options.ts';
import { readPrivateKey, readPublicKey, writeKeyPair } from '../../services/common/keys.ts';
import { silentLogger } from '../../services/common/log.ts';
import { mintToken } from '../../services/common/tokens.ts';
import { parseGatewayFrame } from '../../services/protocol/frames.ts';

const { values } = parseArgs({ options: { reports: { type: 'string', default: '20000' } } });
const REPORTS = Number(values.reports);

function perCall(label: string, n: number, fn: () => unknown): void {
  for (let i = 0; i < 1000; i++) fn();
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  const ns = Number(process.hrtime.bigint() - t) / n;
  console.log(`${label}: ${ns < 1000 ? `${ns.toFixed(0)} ns` : `${(ns / 1000).toFixed(2)} µs`}`);
}

// 1. Build and check.
const stats: CoreStats = {
  protocol: 'CoAP',
  messagesIn: 123_456,
  messagesOut: 789,
  errors: Object.fromEntries(
    ['bad-utf8', 'malformed', 'too-large', 'MYC_ERR_DUPLICATE_UID', 'write-timeout'].map((k) => [k, 3]),
  ),
  nodes: { online: 1200, discovering: 3, unverified: 1 },
  brokerLinkConnected: true,
  brokerLinkReconnects: 0,
  brokerLinkRenewals: 0,
};
const reporter = new StatusReporter({
  stats: () => stats,
  inventory: { protocol: () => 'CoAP', version: '0.1.0', startedAt: Date.now(), actions: () => [], listen: () => [] },
  intervalMs: 10_000,
  send: () => true,
  log: silentLogger(),
});
const sample = JSON.stringify(reporter.status());
console.log(`a typical status report: ${Buffer.byteLength(sample)} bytes`);
perCall('gateway: build + serialize one status report', 100_000, () => JSON.stringify(reporter.status()));
perCall('broker: parse + check one status report (parseGatewayFrame)', 100_000, () => parseGatewayFrame(sample));

// 2. A flood through a real broker.
const dir = mkdtempSync(join(tmpdir(), 'myc-bench-reports-'));
const keyFile = join(dir, 'key.pem');
writeKeyPair(keyFile);
const privateKey = readPrivateKey(keyFile);
const defaults = Object.fromEntries(
  Object.entries(brokerOptions).map(([k, v]) => [k, (v as { default?: unknown }).default]),
);
const broker = new Broker(
  { ...(defaults as unknown as BrokerConfig), port: 0, host: '127.0.0.1' },
  { publicKey: readPublicKey(keyFile), log: silentLogger() },
);
await broker.start();
const url = `ws://127.0.0.1:${broker.port}`;
const client = new WebSocket(`${url}/ws`, {
  headers: {
    authorization: `Bearer ${await mintToken(privateKey, { role: 'viewer', sub: 'bench', ttlSeconds: 600 })}`,
  },
});
let clientFrames = 0;
client.on('message', (d) => {
  if (d.toString().startsWith('{"type":"gateway"')) clientFrames++;
});
await new Promise((r) => client.once('open', r));
client.send('{"type":"new","data":"client"}');
const gw = new WebSocket(`${url}/gw`, {
  headers: {
    authorization: `Bearer ${await mintToken(privateKey, { role: 'gateway', sub: 'flood', ttlSeconds: 600 })}`,
  },
});
await new Promise((r) => gw.once('open', r));
const framesIn = () => broker.counters.gatewayFramesIn.value;
const before = framesIn();
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
const base = JSON.parse(sample) as { at: number; messages: { in: number } };
for (let i = 0; i < REPORTS; i++) {
  base.at++;
  base.messages.in++;
  gw.send(JSON.stringify(base));
}
while (framesIn() - before < REPORTS) await new Promise((r) => setTimeout(r, 5));
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(cpu0);
console.log(
  `flood: ${REPORTS} status reports in ${seconds.toFixed(2)} s = ${Math.round(REPORTS / seconds)} reports/s; ` +
    `process CPU (gateway socket + broker) ${((cpu.user + cpu.system) / REPORTS).toFixed(1)} µs/report; ` +
    `client got ${clientFrames} gateway frames`,
);
gw.close();
client.close();
await broker.stop();
rmSync(dir, { recursive: true, force: true });
