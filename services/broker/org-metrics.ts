// [accounts] Per-organisation metrics: what GET /metrics answers a token with an `org` claim (only that org's
// series), and what it adds, for every org, to a system-wide scrape. The broker's own series count every
// organisation's traffic together, so they are never shown to an organisation.
//
// Nodes and gateways are counted when scraped, from the broker's state (no cost in between). Traffic is two plain
// numbers per organisation, bumped once per node event and once per fan-out to the org's clients (not per
// delivered frame): one Map lookup on the event path, none per client.
import type { NodeRecord } from '../protocol/messages.ts';
import { escapeLabelValue } from '../common/metrics.ts';
import type { OrgDirectory } from './scope.ts';

interface Traffic {
  /** Node events of the org's nodes applied here (every accepted gateway frame becomes one). */
  events: number;
  /** Frames written to the org's web clients. */
  out: number;
}

/** Traffic counts by organisation id. Bounded by the organisations whose gateways connected. */
export class OrgTraffic {
  private readonly byOrg = new Map<string, Traffic>();

  private of(org: string): Traffic {
    let t = this.byOrg.get(org);
    if (t === undefined) {
      t = { events: 0, out: 0 };
      this.byOrg.set(org, t);
    }
    return t;
  }

  /** One node event applied, of a node of `org` (undefined: a system-wide gateway's node; not counted). */
  event(org: string | undefined): void {
    if (org !== undefined) this.of(org).events++;
  }

  /** `n` frames written to the web clients of `org`. */
  delivered(org: string, n: number): void {
    if (n > 0) this.of(org).out += n;
  }

  get(org: string): Readonly<Traffic> {
    return this.byOrg.get(org) ?? { events: 0, out: 0 };
  }

  orgs(): IterableIterator<string> {
    return this.byOrg.keys();
  }
}

/** What the per-organisation view reads from the broker. */
export interface OrgMetricsSource {
  table: { all(): IterableIterator<NodeRecord> };
  /** Every gateway id this broker knows: connected here, and on peers. */
  gatewayIds(): Iterable<string>;
  orgs: OrgDirectory;
  traffic: OrgTraffic;
}

const FAMILIES = [
  ['mycelium_org_nodes', 'gauge', "the organisation's nodes this broker knows, by status"],
  ['mycelium_org_gateways', 'gauge', "the organisation's gateways, connected to this broker or a peer"],
  ['mycelium_org_messages_in_total', 'counter', "node events of the organisation's nodes applied on this broker"],
  ['mycelium_org_messages_out_total', 'counter', "frames sent to the organisation's web clients by this broker"],
] as const;

/**
 * The per-organisation series in Prometheus' text format: of `only` (an org token's scrape), or of every
 * organisation known (a system-wide scrape, appended to the broker's own series).
 */
export function renderOrgMetrics(source: OrgMetricsSource, only?: string): string {
  const nodes = new Map<string, { online: number; offline: number }>();
  const gateways = new Map<string, number>();
  const want = (org: string | undefined): org is string => org !== undefined && (only === undefined || org === only);
  for (const node of source.table.all()) {
    const org = source.orgs.nodeOrg(node.uid);
    if (!want(org)) continue;
    const n = nodes.get(org) ?? { online: 0, offline: 0 };
    if (node.status === 'offline') n.offline++;
    else n.online++;
    nodes.set(org, n);
  }
  for (const id of source.gatewayIds()) {
    const org = source.orgs.gatewayOrg(id);
    if (want(org)) gateways.set(org, (gateways.get(org) ?? 0) + 1);
  }
  const orgs = new Set<string>(
    only === undefined ? [...nodes.keys(), ...gateways.keys(), ...source.traffic.orgs()] : [only],
  );
  const lines: string[] = [];
  for (const [name, type, help] of FAMILIES) {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const org of [...orgs].sort()) {
      const o = `org="${escapeLabelValue(org)}"`;
      if (name === 'mycelium_org_nodes') {
        const n = nodes.get(org) ?? { online: 0, offline: 0 };
        lines.push(`${name}{${o},status="online"} ${n.online}`, `${name}{${o},status="offline"} ${n.offline}`);
      } else if (name === 'mycelium_org_gateways') lines.push(`${name}{${o}} ${gateways.get(org) ?? 0}`);
      else if (name === 'mycelium_org_messages_in_total') lines.push(`${name}{${o}} ${source.traffic.get(org).events}`);
      else lines.push(`${name}{${o}} ${source.traffic.get(org).out}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
