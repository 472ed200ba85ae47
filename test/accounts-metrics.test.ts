// Per-organisation /metrics with two organisations: two real WebSocket gateways connected with their
// organisation's gateway key, nodes behind each, web clients of each. An organisation token's scrape holds only
// its organisation's series (nodes, gateways, messages in and out) and never one of B's numbers or ids; a
// system-wide token gets the broker's own series and every organisation's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, createKey, createOrg } from '../services/accounts/admin.ts';
import { type AccountsRig, startAccounts } from './helpers/accounts.ts';
import { waitFor } from './helpers/wait.ts';
import { TestPeer } from './helpers/ws-client.ts';
import { is, rawNode, startWsGateway } from './helpers/ws-gateway.ts';

const PW = 'a long enough password';
const B_UPDATES = 25;
let rig: AccountsRig;
let orgA: string;
let orgB: string;
const cleanups: Array<() => unknown> = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);

async function client(token: string): Promise<TestPeer> {
  const peer = await TestPeer.connect(`${rig.tb.ws}/ws`, token);
  cleanup(() => peer.close());
  await peer.register();
  return peer;
}

async function scrape(token: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`${rig.tb.http}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, text: await res.text() };
}

/** The value of one series line, e.g. value(text, 'mycelium_org_nodes', orgA, 'status="online"'). */
function value(text: string, name: string, org: string, more = ''): number | undefined {
  const labels = more === '' ? `org="${org}"` : `org="${org}",${more}`;
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

beforeAll(async () => {
  rig = await startAccounts();
  orgA = (await createOrg(rig.store, 'lab-a')).id;
  orgB = (await createOrg(rig.store, 'lab-b')).id;
  await addUser(rig.store, { name: 'va', password: PW, org: 'lab-a', role: 'viewer' });
  await addUser(rig.store, { name: 'vb', password: PW, org: 'lab-b', role: 'viewer' });
  const gwA = await startWsGateway(rig.tb, cleanup, {
    token: (await createKey(rig.store, { orgId: orgA, role: undefined, gateway: 'gw-a' })).text,
    gatewayId: 'gw-a',
  });
  const gwB = await startWsGateway(rig.tb, cleanup, {
    token: (await createKey(rig.store, { orgId: orgB, role: undefined, gateway: 'gw-b' })).text,
    gatewayId: 'gw-b',
  });
  const system = await client(await rig.tb.keys.token('admin', 'root'));
  await client(await rig.signIn('va', PW));
  await client(await rig.signIn('vb', PW));
  const nodeA = await rawNode(gwA, cleanup, await rig.tb.keys.token('node', 'node-a'));
  const nodeB1 = await rawNode(gwB, cleanup, await rig.tb.keys.token('node', 'node-b1'));
  const nodeB2 = await rawNode(gwB, cleanup, await rig.tb.keys.token('node', 'node-b2'));
  nodeA.send({ type: 'update', data: { led: '0' } });
  for (let i = 0; i < B_UPDATES; i++) (i % 2 === 0 ? nodeB1 : nodeB2).send({ type: 'update', data: { t: String(i) } });
  await system.next(is('update', 'node-a'), 'node-a online');
  const last = B_UPDATES - 1;
  await system.next(
    is('update', last % 2 === 0 ? 'node-b1' : 'node-b2', (f) => f.data === String(last)),
    "B's last",
  );
}, 60_000);

afterAll(async () => {
  for (const fn of cleanups.reverse()) await fn();
  await rig?.stop();
});

describe('per-organisation /metrics', { timeout: 60_000 }, () => {
  it("an organisation token gets its organisation's series only: none of B's ids, numbers, or the broker's own", async () => {
    const root = await rig.tb.keys.token('admin', 'root');
    // Wait until the system view has B's traffic in (B's clients got their frames too).
    const all = await waitFor(async () => {
      const s = (await scrape(root)).text;
      return (value(s, 'mycelium_org_messages_out_total', orgB) ?? 0) >= B_UPDATES ? s : undefined;
    }, "B's traffic in the system view");
    const a = await scrape(await rig.signIn('va', PW));
    expect(a.status).toBe(200);
    expect(a.text).not.toContain(orgB);
    expect(a.text).not.toContain('node-b');
    expect(a.text).not.toContain('gw-b');
    expect(a.text).not.toMatch(/^mycelium_messages_in_total/m); // the broker's series count every org together
    expect(a.text).not.toMatch(/^process_/m);
    // Every series line is A's.
    for (const line of a.text.split('\n').filter((l) => l !== '' && !l.startsWith('#'))) {
      expect(line).toContain(`org="${orgA}"`);
    }
    expect(value(a.text, 'mycelium_org_nodes', orgA, 'status="online"')).toBe(1);
    expect(value(a.text, 'mycelium_org_gateways', orgA)).toBe(1);
    // A's numbers are A's: between what the system view said of A just before and just after (A's nodes keep
    // sending, so the two scrapes need not agree), and far below B's.
    const after = (await scrape(root)).text;
    for (const family of ['mycelium_org_messages_in_total', 'mycelium_org_messages_out_total']) {
      const mine = value(a.text, family, orgA)!;
      expect(mine, family).toBeGreaterThan(0);
      expect(mine, family).toBeGreaterThanOrEqual(value(all, family, orgA)!);
      expect(mine, family).toBeLessThanOrEqual(value(after, family, orgA)!);
    }
    expect(value(a.text, 'mycelium_org_messages_in_total', orgA)!).toBeLessThan(
      value(all, 'mycelium_org_messages_in_total', orgB)!,
    );
  });

  it("B's token sees B's two nodes and its traffic; A's series are not in it", async () => {
    const b = await scrape(await rig.signIn('vb', PW));
    expect(b.status).toBe(200);
    expect(b.text).not.toContain(orgA);
    expect(value(b.text, 'mycelium_org_nodes', orgB, 'status="online"')).toBe(2);
    expect(value(b.text, 'mycelium_org_gateways', orgB)).toBe(1);
    expect(value(b.text, 'mycelium_org_messages_in_total', orgB)).toBeGreaterThanOrEqual(B_UPDATES);
    expect(value(b.text, 'mycelium_org_messages_out_total', orgB)).toBeGreaterThanOrEqual(B_UPDATES);
  });

  it("an organisation's API key gets the same view; a system token gets everything", async () => {
    const key = (await createKey(rig.store, { orgId: orgA, role: 'viewer' })).text;
    const byKey = await scrape(key);
    expect(byKey.status).toBe(200);
    expect(byKey.text).toContain(`org="${orgA}"`);
    expect(byKey.text).not.toContain(orgB);
    const all = await scrape(await rig.tb.keys.token('viewer', 'everyone'));
    expect(all.status).toBe(200);
    expect(all.text).toMatch(/^mycelium_messages_in_total/m);
    expect(all.text).toMatch(/\n# HELP mycelium_org_nodes /); // appended on a line of its own
    expect(all.text).toContain(`mycelium_org_nodes{org="${orgA}",status="online"} 1`);
    expect(all.text).toContain(`mycelium_org_nodes{org="${orgB}",status="online"} 2`);
    expect((await scrape('not a token')).status).toBe(401);
  });
});
