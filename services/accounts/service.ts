// The accounts service: the only part that opens the accounts database and holds the signing key for people's
// tokens. It answers the bus requests of protocol.ts (login, refresh, logout, API key verification, key
// management, PIN provisioning) and broadcasts revoked keys and disabled users, re-read from the database every
// --revocation-poll-ms so changes made by `mycelium key revoke` / `user disable` reach every verifier too.
import { randomBytes, randomUUID } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { Bus, BusMsg, BusSubscription } from '../bus/bus.ts';
import { KeyedRateLimiter, type RateOptions } from '../common/limits.ts';
import type { Logger } from '../common/log.ts';
import { mintToken } from '../common/tokens.ts';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { parseJson } from '../protocol/schema.ts';
import {
  addUser,
  checkName,
  checkRole,
  createKey,
  createOrg,
  disableUser,
  publicKeyView,
  setPassword,
} from './admin.ts';
import {
  ACCOUNTS_QUEUE,
  accountsSubjects,
  type Caller,
  encode,
  type Failure,
  keyJti,
  type LoginRequest,
  type RevokedList,
  type SessionReply,
  userJti,
  type VerifiedKey,
} from './protocol.ts';
import type { Org, OrgRole, User } from './records.ts';
import { issueSecret, newPin, passwordProblem, secretId, secretMatches, sha256Hex, verifyPassword } from './secrets.ts';
import { invitationLink, type Mailer } from './mailer.ts';
import type { AccountsStore } from './store.ts';

export const ACCOUNTS_DEFAULTS = {
  accessTtlSeconds: 900,
  refreshTtlSeconds: 30 * 86_400,
  pinTtlMs: 10 * 60_000,
  revocationPollMs: 1_000,
  /** Per user name: 5 tries, then one every 12 s (an online guesser gets 300 an hour). */
  loginPerAccount: { perSecond: 1 / 12, burst: 5 } as RateOptions,
  /** Per address: a classroom behind one NAT may sign in at once, a guesser may not spray names. */
  loginPerAddress: { perSecond: 1, burst: 20 } as RateOptions,
  pinCreatePerAddress: { perSecond: 1 / 30, burst: 5 } as RateOptions,
  pinPollPerAddress: { perSecond: 2, burst: 20 } as RateOptions,
  /** Claims per user: a 6-digit PIN is guessed in ~500,000 tries; this makes that years. */
  pinClaimPerUser: { perSecond: 1 / 6, burst: 10 } as RateOptions,
  invitationTtlMs: 7 * 86_400_000,
  /** Invitation acceptances per address: each costs an argon2 hash. */
  invitationAcceptPerAddress: { perSecond: 1 / 10, burst: 5 } as RateOptions,
  /** Last-used time is written at most this often per key (a busy script would otherwise write per request). */
  touchEveryMs: 60_000,
} as const;

type LimitName =
  | 'loginPerAccount'
  | 'loginPerAddress'
  | 'pinCreatePerAddress'
  | 'pinPollPerAddress'
  | 'pinClaimPerUser'
  | 'invitationAcceptPerAddress';

export interface AccountsServiceOptions {
  accessTtlSeconds?: number;
  refreshTtlSeconds?: number;
  pinTtlMs?: number;
  revocationPollMs?: number;
  limits?: Partial<Record<LimitName, RateOptions>>;
  /** --dashboard-url: the mail (or the log line) carries `<url>/#invite=<invitation>` to accept it there. */
  dashboardUrl?: string;
}

export interface AccountsServiceDeps {
  bus: Bus;
  store: AccountsStore;
  privateKey: KeyObject;
  log: Logger;
  /** --smtp-url: invitations are mailed, never logged nor answered. Absent: logged for the operator. */
  mailer?: Mailer;
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const refuse = (status: number, code: string, message: string) => new Refusal(status, code, message);
const BAD_LOGIN = () => refuse(401, ErrorCode.Unauthorized, 'wrong user name or password');

function text(value: unknown, field: string, max = 1024): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max) {
    throw refuse(400, ErrorCode.BadShape, `${field} must be a string of 1-${max} characters`);
  }
  return value;
}

function callerOf(value: unknown): Caller {
  const c = value as Partial<Caller> | null;
  if (c === null || typeof c !== 'object' || typeof c.sub !== 'string' || typeof c.role !== 'string') {
    throw refuse(400, ErrorCode.BadShape, 'request without a caller');
  }
  return {
    sub: c.sub,
    role: c.role,
    ...(typeof c.org === 'string' ? { org: c.org } : {}),
    ...(typeof c.jti === 'string' ? { jti: c.jti } : {}),
  };
}

export class AccountsService {
  private readonly subs: BusSubscription[] = [];
  private readonly limits: Record<LimitName, KeyedRateLimiter>;
  /** Key text of claimed PINs until their device polls (memory only: never written to the database). */
  private readonly pendingKeys = new Map<string, { text: string; expiresAt: number }>();
  private readonly touched = new Map<string, number>();
  private revokedJson = '';
  private pollTimer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private readonly o: Required<Omit<AccountsServiceOptions, 'limits' | 'dashboardUrl'>>;
  private readonly dashboardUrl: string | undefined;

  constructor(
    options: AccountsServiceOptions,
    private readonly deps: AccountsServiceDeps,
  ) {
    this.o = {
      accessTtlSeconds: options.accessTtlSeconds ?? ACCOUNTS_DEFAULTS.accessTtlSeconds,
      refreshTtlSeconds: options.refreshTtlSeconds ?? ACCOUNTS_DEFAULTS.refreshTtlSeconds,
      pinTtlMs: options.pinTtlMs ?? ACCOUNTS_DEFAULTS.pinTtlMs,
      revocationPollMs: options.revocationPollMs ?? ACCOUNTS_DEFAULTS.revocationPollMs,
    };
    this.dashboardUrl = options.dashboardUrl;
    const l = options.limits ?? {};
    this.limits = {
      loginPerAccount: new KeyedRateLimiter(l.loginPerAccount ?? ACCOUNTS_DEFAULTS.loginPerAccount),
      loginPerAddress: new KeyedRateLimiter(l.loginPerAddress ?? ACCOUNTS_DEFAULTS.loginPerAddress),
      pinCreatePerAddress: new KeyedRateLimiter(l.pinCreatePerAddress ?? ACCOUNTS_DEFAULTS.pinCreatePerAddress),
      pinPollPerAddress: new KeyedRateLimiter(l.pinPollPerAddress ?? ACCOUNTS_DEFAULTS.pinPollPerAddress),
      pinClaimPerUser: new KeyedRateLimiter(l.pinClaimPerUser ?? ACCOUNTS_DEFAULTS.pinClaimPerUser),
      invitationAcceptPerAddress: new KeyedRateLimiter(
        l.invitationAcceptPerAddress ?? ACCOUNTS_DEFAULTS.invitationAcceptPerAddress,
      ),
    };
  }

  async start(): Promise<void> {
    await this.deps.store.open();
    const { bus } = this.deps;
    const handle = (subject: string, fn: (req: Record<string, unknown>) => Promise<object>) =>
      this.subs.push(bus.subscribe(subject, (msg) => this.answer(msg, fn), { queue: ACCOUNTS_QUEUE }));
    handle(accountsSubjects.login, (r) => this.login(r as unknown as LoginRequest));
    handle(accountsSubjects.refresh, (r) => this.refresh(r));
    handle(accountsSubjects.logout, (r) => this.logout(r));
    handle(accountsSubjects.verifyKey, (r) => this.verifyKey(r));
    handle(accountsSubjects.keysCreate, (r) => this.keysCreate(r));
    handle(accountsSubjects.keysList, (r) => this.keysList(r));
    handle(accountsSubjects.keysRevoke, (r) => this.keysRevoke(r));
    handle(accountsSubjects.pinsCreate, (r) => this.pinsCreate(r));
    handle(accountsSubjects.pinsPoll, (r) => this.pinsPoll(r));
    handle(accountsSubjects.pinsClaim, (r) => this.pinsClaim(r));
    handle(accountsSubjects.revokedGet, async () => this.revokedList());
    handle(accountsSubjects.invitationsCreate, (r) => this.invitationsCreate(r));
    handle(accountsSubjects.orgsList, (r) => this.orgsList(r));
    handle(accountsSubjects.orgsCreate, (r) => this.orgsCreate(r));
    handle(accountsSubjects.usersList, (r) => this.usersList(r));
    handle(accountsSubjects.usersDisable, (r) => this.usersDisable(r));
    handle(accountsSubjects.usersCreate, (r) => this.usersCreate(r));
    handle(accountsSubjects.usersRole, (r) => this.usersRole(r));
    handle(accountsSubjects.usersPassword, (r) => this.usersPassword(r));
    handle(accountsSubjects.invitationsAccept, (r) => this.invitationsAccept(r));
    await this.pollRevocations();
    this.pollTimer = setInterval(() => {
      this.polling ??= this.pollRevocations().finally(() => {
        this.polling = undefined;
      });
    }, this.o.revocationPollMs);
    this.pollTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.pollTimer !== undefined) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    for (const s of this.subs.splice(0)) s.unsubscribe();
    await this.polling;
    this.deps.mailer?.close();
    await this.deps.store.close();
  }

  /** Runs one handler; every refusal is a Failure reply with a status, never an exception on the bus. */
  private answer(msg: BusMsg, fn: (req: Record<string, unknown>) => Promise<object>): void {
    const reply = msg.reply;
    if (reply === undefined) return;
    const parsed = parseJson(Buffer.from(msg.data).toString());
    const run = async (): Promise<object> => {
      if (!parsed.ok || parsed.value === null || typeof parsed.value !== 'object' || Array.isArray(parsed.value)) {
        throw refuse(400, ErrorCode.BadShape, 'the request must be a JSON object');
      }
      return { ok: true, ...(await fn(parsed.value as Record<string, unknown>)) };
    };
    run().then(
      (value) => this.deps.bus.publish(reply, encode(value)),
      (err: unknown) => {
        let failure: Failure;
        if (err instanceof Refusal) failure = { ok: false, status: err.status, error: err.code, message: err.message };
        else if (err instanceof MyceliumError)
          failure = { ok: false, status: 400, error: err.code, message: err.message };
        else {
          this.deps.log.error({ err, subject: msg.subject }, 'accounts request failed');
          failure = { ok: false, status: 503, error: ErrorCode.Unavailable, message: 'the accounts store failed' };
        }
        this.deps.bus.publish(reply, encode(failure));
      },
    );
  }

  // Sessions

  private async login(req: LoginRequest): Promise<SessionReply> {
    const username = text(req.username, 'username', 100);
    const password = text(req.password, 'password');
    const address = typeof req.address === 'string' ? req.address : 'unknown';
    if (!this.limits.loginPerAddress.take(address) || !this.limits.loginPerAccount.take(username)) {
      this.deps.log.warn({ username, address }, 'login refused: rate limit');
      throw refuse(429, ErrorCode.RateLimited, 'too many sign-in attempts; wait and try again');
    }
    const user = await this.deps.store.userByName(username);
    const ok = await verifyPassword(user?.passwordHash, password);
    if (!ok || user === undefined || user.disabled) {
      this.deps.log.warn({ username, address, disabled: user?.disabled === true }, 'login failed');
      throw BAD_LOGIN();
    }
    const org = await this.actingOrg(user, typeof req.org === 'string' ? req.org : undefined);
    this.deps.log.info({ username, address, org: org?.org.name }, 'signed in');
    return this.openSession(user, org?.org.id, org?.role);
  }

  /** The organisation a user acts in: the one asked for (must be theirs) or their first; none for a system admin. */
  private async actingOrg(user: User, orgName?: string): Promise<{ org: Org; role: OrgRole } | undefined> {
    const memberships = await this.deps.store.memberships(user.id);
    if (orgName !== undefined) {
      const m = memberships.find((x) => x.orgName === orgName);
      if (m !== undefined) return { org: { id: m.orgId, name: m.orgName, createdAt: 0 }, role: m.role };
      if (!user.systemAdmin) throw refuse(403, ErrorCode.Forbidden, `not a member of ${orgName}`);
      const org = await this.deps.store.orgByName(orgName);
      if (org === undefined) throw refuse(404, ErrorCode.UnknownNode, `no organisation ${orgName}`);
      return { org, role: 'admin' };
    }
    if (user.systemAdmin) return undefined;
    const m = memberships[0];
    if (m === undefined) throw refuse(403, ErrorCode.Forbidden, 'this user belongs to no organisation');
    return { org: { id: m.orgId, name: m.orgName, createdAt: 0 }, role: m.role };
  }

  private async openSession(user: User, orgId: string | undefined, role: OrgRole | undefined): Promise<SessionReply> {
    const now = Date.now();
    const secret = issueSecret('myr');
    await this.deps.store.createRefresh({
      id: secret.id,
      hash: secret.hash,
      userId: user.id,
      orgId: orgId ?? null,
      createdAt: now,
      expiresAt: now + this.o.refreshTtlSeconds * 1000,
    });
    return {
      accessToken: await this.accessToken(user, orgId, role),
      expiresIn: this.o.accessTtlSeconds,
      refresh: secret.text,
      refreshMaxAgeSeconds: this.o.refreshTtlSeconds,
    };
  }

  private accessToken(user: User, orgId: string | undefined, role: OrgRole | undefined): Promise<string> {
    return mintToken(this.deps.privateKey, {
      sub: user.name,
      // A system admin without an organisation is the system-wide admin `mycelium token --role admin` makes.
      role: role ?? 'admin',
      ttlSeconds: this.o.accessTtlSeconds,
      ...(orgId !== undefined ? { org: orgId } : {}),
      jti: userJti(user.id, randomUUID()),
    });
  }

  /** A refresh credential, checked: its row, its hash (constant time), not revoked, not expired. */
  private async refreshRow(value: unknown) {
    const credential = typeof value === 'string' ? value : '';
    const id = secretId(credential, 'myr');
    const row = id === undefined ? undefined : await this.deps.store.refresh(id);
    if (row === undefined || !secretMatches(credential, row.hash) || row.revoked || row.expiresAt <= Date.now()) {
      return undefined;
    }
    return row;
  }

  /** Rotates the credential: the old one is spent, so a stolen copy used later finds it revoked. */
  private async refresh(req: Record<string, unknown>): Promise<SessionReply> {
    const row = await this.refreshRow(req.refresh);
    if (row === undefined) throw refuse(401, ErrorCode.Unauthorized, 'sign in again');
    const user = await this.deps.store.userById(row.userId);
    if (user === undefined || user.disabled) throw refuse(401, ErrorCode.Unauthorized, 'sign in again');
    if (!(await this.deps.store.revokeRefresh(row.id))) throw refuse(401, ErrorCode.Unauthorized, 'sign in again');
    let role: OrgRole | undefined;
    if (row.orgId !== null) {
      role = (await this.deps.store.memberships(user.id)).find((m) => m.orgId === row.orgId)?.role;
      if (role === undefined && user.systemAdmin) role = 'admin';
      if (role === undefined) throw refuse(401, ErrorCode.Unauthorized, 'no longer a member; sign in again');
    } else if (!user.systemAdmin) {
      throw refuse(401, ErrorCode.Unauthorized, 'sign in again');
    }
    return this.openSession(user, row.orgId ?? undefined, role);
  }

  private async logout(req: Record<string, unknown>): Promise<object> {
    const row = await this.refreshRow(req.refresh);
    if (row !== undefined) await this.deps.store.revokeRefresh(row.id);
    return {};
  }

  // API keys

  private async verifyKey(req: Record<string, unknown>): Promise<{ key: VerifiedKey }> {
    const keyText = typeof req.key === 'string' ? req.key : '';
    const id = secretId(keyText, 'myk');
    const row = id === undefined ? undefined : await this.deps.store.apiKey(id);
    const now = Date.now();
    if (row === undefined || !secretMatches(keyText, row.hash)) throw refuse(401, 'bad-signature', 'unknown key');
    if (row.revoked) throw refuse(401, 'revoked', 'key revoked');
    if (row.expiresAt !== null && row.expiresAt <= now) throw refuse(401, 'expired', 'key expired');
    if (now - (this.touched.get(row.id) ?? 0) > ACCOUNTS_DEFAULTS.touchEveryMs) {
      this.touched.set(row.id, now);
      await this.deps.store.touchApiKey(row.id, now);
    }
    const key: VerifiedKey = {
      sub: row.nodeUid ?? `key-${row.id}`,
      role: row.role,
      org: row.orgId,
      jti: keyJti(row.id),
    };
    if (row.expiresAt !== null) key.exp = Math.floor(row.expiresAt / 1000);
    if (row.nodeUid !== null) key.node = row.nodeUid;
    return { key };
  }

  /** The organisation an admin request acts on: the caller's own, or (system-wide admin) the one named. */
  private async adminOrg(caller: Caller, orgName: unknown): Promise<Org> {
    if (caller.role !== 'admin') throw refuse(403, ErrorCode.Forbidden, 'only an organisation admin manages keys');
    if (caller.org !== undefined) {
      const org = await this.deps.store.orgById(caller.org);
      if (org === undefined) throw refuse(403, ErrorCode.Forbidden, 'your organisation is gone');
      if (orgName !== undefined && orgName !== org.name)
        throw refuse(403, ErrorCode.Forbidden, 'not your organisation');
      return org;
    }
    const org = typeof orgName === 'string' ? await this.deps.store.orgByName(orgName) : undefined;
    if (org === undefined) throw refuse(400, ErrorCode.BadShape, 'name the organisation (org)');
    return org;
  }

  private async keysCreate(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    const org = await this.adminOrg(caller, req.org);
    const { key, text: keyText } = await createKey(this.deps.store, {
      orgId: org.id,
      role: typeof req.role === 'string' ? req.role : undefined,
      ...(typeof req.node === 'string' ? { node: req.node } : {}),
      ...(typeof req.gateway === 'string' ? { gateway: req.gateway } : {}),
      ...(typeof req.ttlSeconds === 'number' ? { ttlSeconds: req.ttlSeconds } : {}),
      ...(typeof req.label === 'string' ? { label: req.label } : {}),
      createdBy: caller.sub,
    });
    this.deps.log.info({ keyId: key.id, org: org.name, role: key.role, by: caller.sub }, 'API key created');
    return { key: { ...publicKeyView(key), org: org.name }, text: keyText };
  }

  private async keysList(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    const org = caller.org === undefined && req.org === undefined ? undefined : await this.adminOrg(caller, req.org);
    if (org === undefined && caller.role !== 'admin') throw refuse(403, ErrorCode.Forbidden, 'admins only');
    const keys = await this.deps.store.listApiKeys(org?.id);
    return { keys: keys.map(publicKeyView) };
  }

  private async keysRevoke(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    const id = typeof req.id === 'string' && /^[0-9a-f]{16}$/.test(req.id) ? req.id : undefined;
    const key = id === undefined ? undefined : await this.deps.store.apiKey(id);
    // Someone else's key is "not found", not "forbidden": ids of other organisations are not confirmed.
    if (key === undefined || (caller.org !== undefined && key.orgId !== caller.org) || caller.role !== 'admin') {
      throw refuse(404, ErrorCode.UnknownNode, 'no such key');
    }
    await this.deps.store.revokeApiKey(key.id);
    this.deps.log.info({ keyId: key.id, by: caller.sub }, 'API key revoked');
    await this.pollRevocations();
    return { id: key.id, revoked: true };
  }

  // PINs (rhizo-server's provisioning flow)

  private async pinsCreate(req: Record<string, unknown>): Promise<object> {
    const address = typeof req.address === 'string' ? req.address : 'unknown';
    if (!this.limits.pinCreatePerAddress.take(address)) {
      throw refuse(429, ErrorCode.RateLimited, 'too many PINs from this address; wait and try again');
    }
    const now = Date.now();
    await this.deps.store.prunePins(now);
    const secret = randomBytes(24).toString('base64url');
    for (let attempt = 0; attempt < 8; attempt++) {
      const pin = newPin();
      if (await this.deps.store.createPin(pin, now, now + this.o.pinTtlMs, sha256Hex(secret))) {
        this.deps.log.info({ pin, address }, 'provisioning PIN issued');
        return { pin, secret, expiresIn: Math.round(this.o.pinTtlMs / 1000) };
      }
    }
    throw refuse(503, ErrorCode.Unavailable, 'no free PIN; try again');
  }

  private async pinsPoll(req: Record<string, unknown>): Promise<object> {
    const address = typeof req.address === 'string' ? req.address : 'unknown';
    if (!this.limits.pinPollPerAddress.take(address)) throw refuse(429, ErrorCode.RateLimited, 'poll more slowly');
    const pinText = typeof req.pin === 'string' ? req.pin : '';
    const pin = /^\d{6}$/.test(pinText) ? await this.deps.store.pin(pinText) : undefined;
    const now = Date.now();
    // A wrong secret looks like an unknown PIN: the answer confirms nothing to a guesser.
    if (pin === undefined || pin.expiresAt <= now || !secretMatches(String(req.secret ?? ''), pin.pollHash)) {
      throw refuse(404, ErrorCode.UnknownNode, 'no such PIN (expired?)');
    }
    if (pin.keyId === null) return { status: 'pending' };
    const held = this.pendingKeys.get(pin.pin);
    if (held === undefined || !(await this.deps.store.deliverPin(pin.pin, now))) {
      throw refuse(
        410,
        ErrorCode.NodeRemoved,
        'this PIN was delivered already (or the service restarted): ask for a new one',
      );
    }
    this.pendingKeys.delete(pin.pin);
    this.deps.log.info({ pin: pin.pin, node: pin.nodeUid, keyId: pin.keyId }, 'provisioning PIN delivered its key');
    return { status: 'claimed', key: held.text, node: pin.nodeUid };
  }

  private async pinsClaim(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    if (caller.role !== 'operator' && caller.role !== 'admin') {
      throw refuse(403, ErrorCode.Forbidden, 'an operator or admin claims devices');
    }
    if (!this.limits.pinClaimPerUser.take(caller.sub)) throw refuse(429, ErrorCode.RateLimited, 'too many claims');
    let orgId = caller.org;
    if (orgId === undefined) {
      const org = typeof req.org === 'string' ? await this.deps.store.orgByName(req.org) : undefined;
      if (org === undefined) throw refuse(400, ErrorCode.BadShape, 'name the organisation (org)');
      orgId = org.id;
    }
    const pinText = typeof req.pin === 'string' ? req.pin : '';
    const now = Date.now();
    const pin = /^\d{6}$/.test(pinText) ? await this.deps.store.pin(pinText) : undefined;
    if (pin === undefined || pin.expiresAt <= now || pin.keyId !== null) {
      throw refuse(404, ErrorCode.UnknownNode, 'no such PIN (expired, or claimed already)');
    }
    const node = typeof req.node === 'string' ? req.node : undefined;
    if (node === undefined) throw refuse(400, ErrorCode.BadShape, 'name the node (node)');
    const { key, text: keyText } = await createKey(this.deps.store, {
      orgId,
      role: 'node',
      node,
      label: `PIN ${pin.pin}`,
      createdBy: caller.sub,
    });
    if (!(await this.deps.store.claimPin(pin.pin, { orgId, nodeUid: node, keyId: key.id }, now))) {
      await this.deps.store.revokeApiKey(key.id);
      throw refuse(409, ErrorCode.AlreadyRegistered, 'someone claimed this PIN first');
    }
    this.pendingKeys.set(pin.pin, { text: keyText, expiresAt: pin.expiresAt });
    for (const [p, held] of this.pendingKeys) if (held.expiresAt <= now) this.pendingKeys.delete(p);
    this.deps.log.info({ pin: pin.pin, node, keyId: key.id, by: caller.sub }, 'provisioning PIN claimed');
    return { pin: pin.pin, node, keyId: key.id };
  }

  // Organisations and users (a system admin: every one; an organisation admin: their own)

  private isSystemAdmin(caller: Caller): boolean {
    return caller.role === 'admin' && caller.org === undefined;
  }

  private async orgsList(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    const orgs = await this.deps.store.listOrgs();
    const visible = caller.org === undefined ? orgs : orgs.filter((o) => o.id === caller.org);
    return { orgs: visible.map((o) => ({ id: o.id, name: o.name, createdAt: o.createdAt })) };
  }

  private async orgsCreate(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    if (!this.isSystemAdmin(caller))
      throw refuse(403, ErrorCode.Forbidden, 'only a system admin creates organisations');
    const org = await createOrg(this.deps.store, typeof req.name === 'string' ? req.name : undefined);
    this.deps.log.info({ org: org.name, by: caller.sub }, 'organisation created');
    return { id: org.id, name: org.name, createdAt: org.createdAt };
  }

  private async usersList(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    if (caller.role !== 'admin') throw refuse(403, ErrorCode.Forbidden, 'admins only');
    const users = [];
    for (const user of await this.deps.store.listUsers()) {
      const memberships = await this.deps.store.memberships(user.id);
      const mine = caller.org === undefined ? memberships : memberships.filter((m) => m.orgId === caller.org);
      if (caller.org !== undefined && mine.length === 0) continue;
      users.push({
        name: user.name,
        systemAdmin: user.systemAdmin,
        disabled: user.disabled,
        orgs: mine.map((m) => ({ org: m.orgName, role: m.role })),
      });
    }
    return { users };
  }

  /** Disables (or enables) a user: a system admin anyone, an organisation admin the members of their own. */
  private async usersDisable(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    const user = typeof req.name === 'string' ? await this.deps.store.userByName(req.name) : undefined;
    const member =
      user !== undefined &&
      caller.org !== undefined &&
      !user.systemAdmin &&
      (await this.deps.store.memberships(user.id)).some((m) => m.orgId === caller.org);
    if (user === undefined || caller.role !== 'admin' || !(this.isSystemAdmin(caller) || member)) {
      throw refuse(404, ErrorCode.UnknownNode, 'no such user');
    }
    const disabled = req.disabled !== false;
    await disableUser(this.deps.store, user.name, disabled);
    this.deps.log.info({ username: user.name, disabled, by: caller.sub }, disabled ? 'user disabled' : 'user enabled');
    await this.pollRevocations();
    return { name: user.name, disabled };
  }

  /**
   * Creates a user. An organisation admin: a member of their own organisation, with a role in it (never a system
   * admin: that is escalation). A system admin: a member of the named `org`, and/or a system admin (`admin`).
   */
  private async usersCreate(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    if (caller.role !== 'admin') throw refuse(403, ErrorCode.Forbidden, 'only an admin creates users');
    const systemAdmin = req.admin === true;
    const role = req.role === undefined ? undefined : checkRole(typeof req.role === 'string' ? req.role : '');
    let org: Org | undefined;
    if (caller.org !== undefined) {
      if (systemAdmin) throw refuse(403, ErrorCode.Forbidden, 'an organisation admin cannot make a system admin');
      org = await this.adminOrg(caller, req.org);
    } else if (req.org !== undefined) {
      org = await this.deps.store.orgByName(text(req.org, 'org', 100));
      if (org === undefined) throw refuse(404, ErrorCode.UnknownNode, `no organisation ${JSON.stringify(req.org)}`);
    } else if (!systemAdmin) {
      throw refuse(400, ErrorCode.BadShape, 'name the organisation (org), or make a system admin (admin: true)');
    }
    const name = checkName('user', typeof req.username === 'string' ? req.username : undefined);
    if (await this.deps.store.userByName(name))
      throw refuse(409, ErrorCode.AlreadyRegistered, 'that user name is taken');
    let user: User;
    try {
      user = await addUser(this.deps.store, {
        name,
        password: typeof req.password === 'string' ? req.password : '',
        ...(org !== undefined ? { org: org.name, role: role ?? 'viewer' } : {}),
        systemAdmin,
      });
    } catch (err) {
      // Two creations of one name at once: the database's unique name decides, the loser hears 409.
      if ((err as Error).name === 'ConflictError')
        throw refuse(409, ErrorCode.AlreadyRegistered, 'that user name is taken');
      throw err;
    }
    const orgs = org === undefined ? [] : [{ org: org.name, role: role ?? 'viewer' }];
    this.deps.log.info({ username: user.name, org: org?.name, role, systemAdmin, by: caller.sub }, 'user created');
    return { name: user.name, systemAdmin, disabled: false, orgs };
  }

  /**
   * Sets a user's role in an organisation: an organisation admin for the members of their own (not a system admin),
   * a system admin for anyone in the named `org` (which makes them a member), or in their only organisation.
   * The new role is in the user's tokens from their next refresh (at most --access-ttl later).
   */
  private async usersRole(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    const role = checkRole(typeof req.role === 'string' ? req.role : '');
    const user = typeof req.name === 'string' ? await this.deps.store.userByName(req.name) : undefined;
    if (caller.role !== 'admin' || user === undefined) throw refuse(404, ErrorCode.UnknownNode, 'no such user');
    const memberships = await this.deps.store.memberships(user.id);
    let org: { id: string; name: string } | undefined;
    if (caller.org !== undefined) {
      // Another organisation's user, or a system admin, is "no such user": names elsewhere are not confirmed.
      const own = await this.adminOrg(caller, req.org);
      const m = memberships.find((x) => x.orgId === own.id);
      if (m === undefined || user.systemAdmin) throw refuse(404, ErrorCode.UnknownNode, 'no such user');
      org = own;
    } else if (req.org !== undefined) {
      org = await this.deps.store.orgByName(text(req.org, 'org', 100));
      if (org === undefined) throw refuse(404, ErrorCode.UnknownNode, `no organisation ${JSON.stringify(req.org)}`);
    } else if (memberships.length === 1) {
      org = { id: memberships[0].orgId, name: memberships[0].orgName };
    } else {
      throw refuse(400, ErrorCode.BadShape, 'name the organisation (org): the user has none or several');
    }
    await this.deps.store.setMembership(user.id, org.id, role);
    this.deps.log.info({ username: user.name, org: org.name, role, by: caller.sub }, 'user role set');
    return { name: user.name, org: org.name, role };
  }

  /**
   * Changes a password: the user themself, proving the old one (rate-limited like sign-in: each try is an argon2
   * verification), or a system admin. Either way every refresh session of the user ends (admin.ts setPassword).
   */
  private async usersPassword(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    const name = typeof req.name === 'string' ? req.name : '';
    const password = typeof req.password === 'string' ? req.password : '';
    if (this.isSystemAdmin(caller)) {
      // A system-wide admin token (a system admin's sign-in, or `mycelium token --role admin`).
      if ((await this.deps.store.userByName(name)) === undefined)
        throw refuse(404, ErrorCode.UnknownNode, 'no such user');
    } else {
      // Anyone else but the user is refused alike, whether the name exists or not: nothing is confirmed.
      const user = await this.deps.store.userByName(name);
      const self =
        user !== undefined && caller.sub === user.name && caller.jti?.startsWith(`user.${user.id}.`) === true;
      if (!self) {
        throw refuse(403, ErrorCode.Forbidden, 'only the user themself (with the old password) or a system admin');
      }
      if (!this.limits.loginPerAccount.take(user.name)) {
        throw refuse(429, ErrorCode.RateLimited, 'too many attempts; wait and try again');
      }
      if (!(await verifyPassword(user.passwordHash, typeof req.oldPassword === 'string' ? req.oldPassword : ''))) {
        this.deps.log.warn({ username: user.name }, 'password change refused: wrong old password');
        throw refuse(403, ErrorCode.Forbidden, 'the old password is wrong');
      }
    }
    const problem = passwordProblem(password);
    if (problem !== undefined) throw refuse(400, ErrorCode.BadShape, problem);
    const user = await setPassword(this.deps.store, name, password);
    this.deps.log.info({ username: user.name, by: caller.sub }, 'password changed; refresh sessions ended');
    return { name: user.name, passwordChanged: true };
  }

  // Invitations

  /**
   * An organisation admin invites by email address. With --smtp-url the invitation goes by mail only: the admin
   * hears `sent: true`, the log never holds it; a mail the SMTP server did not take deletes the invitation (so
   * none is left usable and unsent) and the admin gets 502 to try again. Without SMTP it is logged for the
   * operator to pass on, and returned to the admin: the one log line that holds a secret, on purpose.
   */
  private async invitationsCreate(req: Record<string, unknown>): Promise<object> {
    const caller = callerOf(req.caller);
    const org = await this.adminOrg(caller, req.org);
    const email = text(req.email, 'email', 254);
    if (!/^[^\s@]+@[^\s@]+$/.test(email)) throw refuse(400, ErrorCode.BadShape, 'email must be an address');
    const role = typeof req.role === 'string' ? req.role : 'viewer';
    if (role !== 'viewer' && role !== 'operator' && role !== 'admin') {
      throw refuse(400, ErrorCode.BadShape, 'role must be viewer, operator or admin');
    }
    const now = Date.now();
    const secret = issueSecret('myi');
    const inv = await this.deps.store.createInvitation({
      id: secret.id,
      hash: secret.hash,
      orgId: org.id,
      email,
      role,
      createdAt: now,
      expiresAt: now + ACCOUNTS_DEFAULTS.invitationTtlMs,
    });
    const made = { id: inv.id, email, role, org: org.name, expiresAt: inv.expiresAt };
    const { dashboardUrl } = this;
    const link = dashboardUrl === undefined ? undefined : invitationLink(dashboardUrl, secret.text);
    const { mailer } = this.deps;
    if (mailer !== undefined) {
      try {
        await mailer.sendInvitation({
          to: email,
          org: org.name,
          role,
          invitation: secret.text,
          expiresAt: inv.expiresAt,
          ...(link !== undefined ? { link } : {}),
        });
      } catch (err) {
        await this.deps.store.deleteInvitation(inv.id);
        // The error's text (the SMTP server's answer), not the error object: nothing of the mail is logged.
        this.deps.log.warn(
          { email, org: org.name, by: caller.sub, reason: (err as Error).message },
          'invitation mail not sent: the invitation was deleted',
        );
        throw refuse(502, ErrorCode.Unavailable, 'the invitation mail could not be sent; no invitation was made');
      }
      this.deps.log.info({ email, org: org.name, role, by: caller.sub, invitationId: inv.id }, 'invitation mailed');
      return { ...made, sent: true };
    }
    this.deps.log.info(
      { email, org: org.name, role, by: caller.sub, ...(link !== undefined ? { link } : { invitation: secret.text }) },
      link !== undefined
        ? 'invitation made (no SMTP configured): pass the link to the person; they accept it in the dashboard'
        : 'invitation made (no SMTP configured): pass the invitation to the person; they accept it with POST /api/v1/invitations/accept',
    );
    return { ...made, sent: false, invitation: secret.text };
  }

  private async invitationsAccept(req: Record<string, unknown>): Promise<object> {
    const address = typeof req.address === 'string' ? req.address : 'unknown';
    if (!this.limits.invitationAcceptPerAddress.take(address)) {
      throw refuse(429, ErrorCode.RateLimited, 'too many attempts; wait and try again');
    }
    const invitationText = typeof req.invitation === 'string' ? req.invitation : '';
    const id = secretId(invitationText, 'myi');
    const inv = id === undefined ? undefined : await this.deps.store.invitation(id);
    const now = Date.now();
    if (
      inv === undefined ||
      !secretMatches(invitationText, inv.hash) ||
      inv.acceptedAt !== null ||
      inv.expiresAt <= now
    ) {
      throw refuse(404, ErrorCode.UnknownNode, 'no such invitation (used or expired?)');
    }
    const org = await this.deps.store.orgById(inv.orgId);
    if (org === undefined) throw refuse(404, ErrorCode.UnknownNode, 'the organisation is gone');
    // Name and password are checked before the invitation is spent: a typo must not cost the invitation.
    const username = checkName('user', typeof req.username === 'string' ? req.username : undefined);
    const problem = passwordProblem(typeof req.password === 'string' ? req.password : '');
    if (problem !== undefined) throw refuse(400, ErrorCode.BadShape, problem);
    if (await this.deps.store.userByName(username)) {
      throw refuse(409, ErrorCode.AlreadyRegistered, 'that user name is taken');
    }
    if (!(await this.deps.store.acceptInvitation(inv.id, now))) {
      throw refuse(404, ErrorCode.UnknownNode, 'no such invitation (used or expired?)');
    }
    const user = await addUser(this.deps.store, {
      name: typeof req.username === 'string' ? req.username : undefined,
      password: typeof req.password === 'string' ? req.password : '',
      org: org.name,
      role: inv.role,
    });
    this.deps.log.info({ username: user.name, org: org.name, role: inv.role }, 'invitation accepted');
    return { username: user.name, org: org.name, role: inv.role };
  }

  // Revocations

  private async revokedList(): Promise<RevokedList> {
    return {
      keys: await this.deps.store.revokedKeyIds(Date.now()),
      users: await this.deps.store.disabledUserIds(),
    };
  }

  /** Publishes the list when it changed since the last look (a revocation made anywhere, even offline). */
  private async pollRevocations(): Promise<void> {
    try {
      const list = await this.revokedList();
      const json = JSON.stringify(list);
      if (json === this.revokedJson) return;
      this.revokedJson = json;
      this.deps.bus.publish(accountsSubjects.revoked, encode(list));
    } catch (err) {
      this.deps.log.warn({ err }, 'revocation list not read; retrying');
    }
  }
}
