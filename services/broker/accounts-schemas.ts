// OpenAPI and validation schemas of the accounts routes (accounts-api.ts), in the style of rest-schemas.ts.
import { Type } from '@sinclair/typebox';
import type { FastifySchema } from 'fastify';
import { Identifier } from '../protocol/messages.ts';
import { AUTH_ERRORS, errors } from './rest-schemas.ts';

const NO_SECURITY: Array<Record<string, string[]>> = [];
const NO_SERVICE = 'no accounts service answers (mycelium accounts, or mycelium up without --accounts off)';

const Session = Type.Object(
  {
    accessToken: Type.String({ description: 'a JWT for Authorization: Bearer, valid expiresIn seconds' }),
    expiresIn: Type.Integer({ minimum: 1 }),
  },
  { title: 'Session' },
);

const KeyView = Type.Object(
  {
    id: Type.String(),
    orgId: Type.String(),
    role: Type.String(),
    nodeUid: Type.Union([Type.String(), Type.Null()]),
    label: Type.String(),
    createdAt: Type.Number(),
    expiresAt: Type.Union([Type.Number(), Type.Null()]),
    lastUsedAt: Type.Union([Type.Number(), Type.Null()]),
    revoked: Type.Boolean(),
    createdBy: Type.Union([Type.String(), Type.Null()]),
  },
  { title: 'ApiKey' },
);

const PinParams = Type.Object({ pin: Type.String({ pattern: '^[0-9]{6}$', description: 'the 6-digit PIN' }) });
const KeyParams = Type.Object({ id: Type.String({ pattern: '^[0-9a-f]{16}$' }) });
const Name = Type.String({ minLength: 1, maxLength: 100 });
const Password = Type.String({ minLength: 1, maxLength: 1024 });
const RoleText = Type.String({ maxLength: 20, description: 'viewer, operator or admin' });
const UserView = Type.Object(
  {
    name: Type.String(),
    systemAdmin: Type.Boolean(),
    disabled: Type.Boolean(),
    orgs: Type.Array(Type.Object({ org: Type.String(), role: Type.String() })),
  },
  { title: 'User' },
);

export const accountsSchemas = {
  login: {
    summary: 'Sign in: an access token, and the refresh credential as an httpOnly cookie',
    description:
      'Rate-limited per user name and per address (429). The cookie `myc_refresh` is httpOnly, SameSite=Strict, limited to /api/v1/, Secure over https.',
    tags: ['accounts'],
    security: NO_SECURITY,
    body: Type.Object({
      username: Name,
      password: Type.String({ minLength: 1, maxLength: 1024 }),
      org: Type.Optional(Name),
    }),
    response: {
      200: { ...Session, description: 'signed in' },
      ...errors({ 400: 'a bad body', 401: 'wrong user name or password', 429: 'too many attempts', 503: NO_SERVICE }),
    },
  },
  refresh: {
    summary: 'A new access token from the refresh cookie (which is replaced)',
    description: 'Needs the header `X-Mycelium-Refresh: 1`: a cross-site form cannot set it (CSRF).',
    tags: ['accounts'],
    security: NO_SECURITY,
    response: {
      200: { ...Session, description: 'renewed' },
      ...errors({
        401: 'no valid refresh cookie: sign in again',
        403: 'the custom header is missing',
        503: NO_SERVICE,
      }),
    },
  },
  logout: {
    summary: 'Sign out: the refresh credential is revoked and the cookie cleared',
    tags: ['accounts'],
    security: NO_SECURITY,
    response: {
      200: Type.Object({ signedOut: Type.Literal(true) }),
      ...errors({ 403: 'the custom header is missing' }),
    },
  },
  listKeys: {
    summary: "The organisation's API keys (admin); a system admin sees every key",
    tags: ['accounts'],
    response: {
      200: Type.Object({ keys: Type.Array(KeyView) }),
      ...errors({ ...AUTH_ERRORS, 403: 'not an admin', 503: NO_SERVICE }),
    },
  },
  createKey: {
    summary: 'Create an API key (admin): the key text is in this answer only',
    tags: ['accounts'],
    body: Type.Object({
      role: Type.Optional(Type.String({ description: 'viewer, operator or admin' })),
      node: Type.Optional(Identifier),
      gateway: Type.Optional(Identifier),
      ttlSeconds: Type.Optional(Type.Integer({ minimum: 1 })),
      label: Type.Optional(Type.String({ maxLength: 100 })),
      org: Type.Optional(Name),
    }),
    response: {
      201: Type.Object({ key: KeyView, text: Type.String({ description: 'myk_…: shown once' }) }),
      ...errors({ ...AUTH_ERRORS, 400: 'a bad role, node, ttl or label', 403: 'not an admin', 503: NO_SERVICE }),
    },
  },
  revokeKey: {
    summary: 'Revoke an API key (admin): refused everywhere within seconds, open sessions closed with 4401',
    tags: ['accounts'],
    params: KeyParams,
    response: {
      200: Type.Object({ id: Type.String(), revoked: Type.Literal(true) }),
      ...errors({ ...AUTH_ERRORS, 404: 'no such key in your organisation', 503: NO_SERVICE }),
    },
  },
  createPin: {
    summary: 'A device asks for a provisioning PIN (anonymous, rate-limited per address)',
    description: 'Answers the PIN to show, and a secret the device keeps for its polls. The PIN expires in 10 minutes.',
    tags: ['provisioning'],
    security: NO_SECURITY,
    response: {
      201: Type.Object({ pin: Type.String(), secret: Type.String(), expiresIn: Type.Integer() }),
      ...errors({ 429: 'too many PINs from this address', 503: NO_SERVICE }),
    },
  },
  pollPin: {
    summary: "The device's poll: pending until a user claims the PIN, then its key, exactly once",
    description: 'Needs the header `X-Pin-Secret` with the secret from POST /pins.',
    tags: ['provisioning'],
    security: NO_SECURITY,
    params: PinParams,
    response: {
      200: Type.Object({
        status: Type.Union([Type.Literal('pending'), Type.Literal('claimed')]),
        key: Type.Optional(Type.String()),
        node: Type.Optional(Type.String()),
      }),
      ...errors({ 404: 'no such PIN, expired, or a wrong secret', 410: 'delivered already', 429: 'poll more slowly' }),
    },
  },
  claimPin: {
    summary: 'Claim a PIN for your organisation, naming the node (operator, admin)',
    tags: ['provisioning'],
    params: PinParams,
    body: Type.Object({ node: Identifier, org: Type.Optional(Name) }),
    response: {
      200: Type.Object({ pin: Type.String(), node: Type.String(), keyId: Type.String() }),
      ...errors({ ...AUTH_ERRORS, 403: 'a viewer', 404: 'no such PIN', 409: 'claimed first by someone else' }),
    },
  },
  invite: {
    summary: 'Invite someone to your organisation by email address (admin)',
    description:
      'With --smtp-url the invitation is mailed and the answer says `sent: true` (502 when the SMTP server refused it; no invitation is left). Without SMTP the answer holds the invitation text (`myi_…`), shown once, and it is logged for the operator.',
    tags: ['accounts'],
    body: Type.Object({
      email: Type.String({ minLength: 3, maxLength: 254 }),
      role: Type.Optional(Type.String({ description: 'viewer (default), operator or admin' })),
      org: Type.Optional(Name),
    }),
    response: {
      201: Type.Object({
        id: Type.String(),
        email: Type.String(),
        role: Type.String(),
        org: Type.String(),
        expiresAt: Type.Number(),
        sent: Type.Boolean({ description: 'true: mailed (SMTP), and the invitation is in the mail only' }),
        invitation: Type.Optional(Type.String({ description: 'myi_…: only when no SMTP is configured' })),
      }),
      ...errors({
        ...AUTH_ERRORS,
        400: 'a bad address or role',
        403: 'not an admin',
        502: 'the SMTP server did not take the mail',
        503: NO_SERVICE,
      }),
    },
  },
  acceptInvitation: {
    summary: 'Accept an invitation: creates the user, member of the organisation with the invited role',
    tags: ['accounts'],
    security: NO_SECURITY,
    body: Type.Object({
      invitation: Type.String({ minLength: 1, maxLength: 200 }),
      username: Name,
      password: Type.String({ minLength: 1, maxLength: 1024 }),
    }),
    response: {
      201: Type.Object({ username: Type.String(), org: Type.String(), role: Type.String() }),
      ...errors({
        400: 'a bad name or a short password',
        404: 'no such invitation, used or expired',
        409: 'the user name is taken',
        429: 'too many attempts',
        503: NO_SERVICE,
      }),
    },
  },
  listOrgs: {
    summary: 'Organisations: every one for a system admin, your own otherwise',
    tags: ['accounts'],
    response: {
      200: Type.Object({
        orgs: Type.Array(Type.Object({ id: Type.String(), name: Type.String(), createdAt: Type.Number() })),
      }),
      ...errors({ ...AUTH_ERRORS, 503: NO_SERVICE }),
    },
  },
  createOrg: {
    summary: 'Create an organisation (system admin)',
    tags: ['accounts'],
    body: Type.Object({ name: Name }),
    response: {
      201: Type.Object({ id: Type.String(), name: Type.String(), createdAt: Type.Number() }),
      ...errors({ ...AUTH_ERRORS, 400: 'a bad or taken name', 403: 'not a system admin', 503: NO_SERVICE }),
    },
  },
  listUsers: {
    summary: "Users: your organisation's members (admin), every user for a system admin",
    tags: ['accounts'],
    response: {
      200: Type.Object({
        users: Type.Array(UserView),
      }),
      ...errors({ ...AUTH_ERRORS, 403: 'not an admin', 503: NO_SERVICE }),
    },
  },
  disableUser: {
    summary: 'Disable or enable a user: their sessions close (4401) within seconds (admin of their organisation)',
    tags: ['accounts'],
    params: Type.Object({ name: Name }),
    body: Type.Object({ disabled: Type.Boolean() }),
    response: {
      200: Type.Object({ name: Type.String(), disabled: Type.Boolean() }),
      ...errors({ ...AUTH_ERRORS, 404: 'no such user in your organisation', 503: NO_SERVICE }),
    },
  },
  createUser: {
    summary: 'Create a user (admin): a member of your organisation; a system admin names `org` and/or `admin`',
    description:
      'An organisation admin may give any role of their organisation, never system admin (`admin: true` is 403). The password is 8-1024 characters.',
    tags: ['accounts'],
    body: Type.Object({
      username: Name,
      password: Password,
      role: Type.Optional(RoleText),
      org: Type.Optional(Name),
      admin: Type.Optional(Type.Boolean({ description: 'a system admin (system admins only)' })),
    }),
    response: {
      201: UserView,
      ...errors({
        ...AUTH_ERRORS,
        400: 'a bad name, role or password, or no org',
        403: 'not an admin, another organisation, or admin: true from an organisation admin',
        404: 'no such organisation',
        409: 'the user name is taken',
        503: NO_SERVICE,
      }),
    },
  },
  setUserRole: {
    summary: "Set a user's role in an organisation (admin of that organisation)",
    description:
      'An organisation admin changes the members of their own; a system admin names `org` (or the user has one). Tokens carry the new role from their next refresh.',
    tags: ['accounts'],
    params: Type.Object({ name: Name }),
    body: Type.Object({ role: RoleText, org: Type.Optional(Name) }),
    response: {
      200: Type.Object({ name: Type.String(), org: Type.String(), role: Type.String() }),
      ...errors({ ...AUTH_ERRORS, 400: 'a bad role', 404: 'no such user in your organisation', 503: NO_SERVICE }),
    },
  },
  setUserPassword: {
    summary: "Change a user's password (the user with the old one, or a system admin); their refresh sessions end",
    tags: ['accounts'],
    params: Type.Object({ name: Name }),
    body: Type.Object({ password: Password, oldPassword: Type.Optional(Password) }),
    response: {
      200: Type.Object({ name: Type.String(), passwordChanged: Type.Literal(true) }),
      ...errors({
        ...AUTH_ERRORS,
        400: 'a password too short or too long',
        403: 'not the user, or a wrong old password',
        404: 'no such user (system admin)',
        429: 'too many attempts',
        503: NO_SERVICE,
      }),
    },
  },
} satisfies Record<string, FastifySchema>;
