// Organisation scoping (docs/accounts.md, "Scoping"): every gateway belongs to the organisation of the token or
// API key it connected with, every node to its gateway's organisation, and a client sees and writes only its
// organisation's nodes and gateways. A client without an `org` claim (tokens from `mycelium token`, a system
// admin's sign-in) is system-wide and sees everything, so `--accounts off` behaves as before. What is not known
// to belong to the client's organisation is hidden (a gateway of a peer broker whose claim this broker has not
// heard yet): scoping fails closed.
//
// One rule, used by every path: canSee(claims, org). Paths call it with the org of what they are about to show,
// taken from the broker's OrgDirectory; the live fan-out groups clients by org instead (broker.ts), so a delivered
// message costs no check at all.

/** The part of a token's claims scoping reads. */
export interface Scoped {
  org?: string;
}

/** True when a client with these claims may see (and, with a writing role, act on) something of `org`. */
export function canSee(claims: Scoped, org: string | undefined): boolean {
  return claims.org === undefined || claims.org === org;
}

/** Which organisation owns a node or a gateway; undefined: none (system-wide) or not known here. */
export interface OrgDirectory {
  nodeOrg(uid: string): string | undefined;
  gatewayOrg(gatewayId: string): string | undefined;
}

/** The REST side of scoping, for the authenticated routes of http-api.ts. */
export interface ScopedRequest {
  claims?: Scoped;
  params: unknown;
  routeOptions: { url?: string };
}

/**
 * What a request may not see: a `:uid` of another org's node (node pages, writes, removal, history) or an `:id`
 * under /gateways of another org's gateway. Answered 404, as for something that does not exist, so ids of other
 * organisations are not confirmed.
 */
export function hiddenParam(
  req: ScopedRequest,
  orgs: OrgDirectory,
): { code: 'uid' | 'gateway'; id: string } | undefined {
  const claims = req.claims;
  if (claims === undefined || claims.org === undefined) return undefined;
  const params = (req.params ?? {}) as Record<string, unknown>;
  if (typeof params.uid === 'string' && !canSee(claims, orgs.nodeOrg(params.uid))) {
    return { code: 'uid', id: params.uid };
  }
  if (
    typeof params.id === 'string' &&
    req.routeOptions.url?.startsWith('/api/v1/gateways/') &&
    !canSee(claims, orgs.gatewayOrg(params.id))
  ) {
    return { code: 'gateway', id: params.id };
  }
  return undefined;
}

/** The REST lists, cut to what the caller's org may see (GET /nodes, GET /gateways). */
export function scopeList(req: ScopedRequest, orgs: OrgDirectory, payload: unknown): unknown {
  const claims = req.claims;
  if (claims === undefined || claims.org === undefined || !Array.isArray(payload)) return payload;
  if (req.routeOptions.url === '/api/v1/nodes') {
    return payload.filter((n: { uid?: string }) => canSee(claims, orgs.nodeOrg(String(n.uid))));
  }
  if (req.routeOptions.url === '/api/v1/gateways') {
    return payload.filter((g: { id?: string }) => canSee(claims, orgs.gatewayOrg(String(g.id))));
  }
  return payload;
}
