import type { OptionTable } from '../common/config.ts';

export const accountsOptions = {
  db: {
    type: 'string',
    description:
      "the accounts database, the history service's: sqlite:<path> (default history.db beside the keys) or postgres://…",
  },
  keyFile: {
    type: 'string',
    description: 'Ed25519 private key that signs access tokens (default ~/.mycelium/key.pem)',
  },
  natsUrl: { type: 'string', description: 'NATS server URL(s), comma-separated' },
  accessTtl: { type: 'string', default: '15m', description: 'lifetime of an access token from sign-in or refresh' },
  refreshTtl: { type: 'string', default: '30d', description: 'lifetime of a refresh credential (the cookie)' },
  revocationPollMs: {
    type: 'number',
    default: 1000,
    min: 10,
    description: 'how often revoked keys and disabled users are read and broadcast (also those changed by the CLI)',
  },
  smtpUrl: {
    type: 'string',
    description:
      'mail invitations through this SMTP server: smtp://host:port or smtps://host:port (user:password@ in the URL); unset, invitations are logged for the operator',
  },
  dashboardUrl: {
    type: 'string',
    description:
      'the dashboard the invitation mail (or log line) links to: <url>/#invite=myi_… (unset: the text says how to accept over REST)',
  },
  smtpFrom: {
    type: 'string',
    default: 'mycelium@localhost',
    description: 'the From address of invitation mail (with --smtp-url)',
  },
} as const satisfies OptionTable;
