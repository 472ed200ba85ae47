// `mycelium accounts`: the accounts service (docs/accounts.md). Opens the accounts database, holds the signing key.
import { createBus } from '../bus/index.ts';
import { defaultKeyFile, readPrivateKey } from '../common/keys.ts';
import type { CommandSpec } from '../common/run.ts';
import { parseDuration } from '../common/tokens.ts';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { defaultAccountsDb, openAccountsStore } from './open-store.ts';
import { type Mailer, smtpMailer, smtpTarget } from './mailer.ts';
import { accountsOptions } from './options.ts';
import { AccountsService } from './service.ts';

function seconds(flag: string, text: string): number {
  const value = parseDuration(text);
  if (value === undefined || value <= 0) {
    throw new MyceliumError(
      ErrorCode.Config,
      `--${flag} must be a duration like 15m or 30d, got ${JSON.stringify(text)}`,
    );
  }
  return value;
}

export const accountsCommand: CommandSpec<typeof accountsOptions> = {
  name: 'accounts',
  summary:
    'Run the accounts service: sign-in, refresh, API keys and PIN provisioning for the broker, on the history database.',
  options: accountsOptions,
  async build(config, log, shared) {
    // Checked first: a bad flag is refused before the database or the key is touched.
    let mailer: Mailer | undefined;
    if (config.smtpUrl !== undefined) {
      const target = smtpTarget(config.smtpUrl);
      if (target === undefined) {
        throw new MyceliumError(ErrorCode.Config, '--smtp-url must be smtp://host:port or smtps://host:port');
      }
      mailer = smtpMailer({ url: config.smtpUrl, from: config.smtpFrom });
      log.info({ smtp: target }, 'invitations are mailed');
    }
    // [invites-ui] The invitation link's base: an http(s) URL, or the link would not open the dashboard.
    if (config.dashboardUrl !== undefined && !/^https?:\/\/[^/]/.test(config.dashboardUrl)) {
      throw new MyceliumError(ErrorCode.Config, '--dashboard-url must be http://host:port or https://…');
    }
    if (config.dashboardUrl !== undefined)
      log.info({ dashboardUrl: config.dashboardUrl }, 'invitations link to the dashboard');
    const accessTtlSeconds = seconds('access-ttl', config.accessTtl);
    const refreshTtlSeconds = seconds('refresh-ttl', config.refreshTtl);
    const keyFile = config.keyFile ?? defaultKeyFile();
    const privateKey = readPrivateKey(keyFile);
    const store = await openAccountsStore(config.db ?? defaultAccountsDb(keyFile), (err) =>
      log.warn({ err }, 'accounts database connection dropped'),
    );
    const ownBus = shared?.bus === undefined;
    const bus = shared?.bus ?? createBus({ natsUrl: config.natsUrl, name: 'mycelium-accounts' });
    const service = new AccountsService(
      {
        accessTtlSeconds,
        refreshTtlSeconds,
        revocationPollMs: config.revocationPollMs,
        ...(config.dashboardUrl !== undefined ? { dashboardUrl: config.dashboardUrl } : {}),
      },
      { bus, store, privateKey, log, ...(mailer !== undefined ? { mailer } : {}) },
    );
    return {
      async start() {
        if (ownBus) await bus.start();
        await service.start();
      },
      async stop() {
        await service.stop();
        if (ownBus) await bus.stop();
      },
    };
  },
};
