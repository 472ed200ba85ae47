// `mycelium history`: the history service, and `mycelium history export` (CSV of one resource to stdout).
import { createBus } from '../bus/index.ts';
import { HttpEndpoint } from '../common/http-endpoint.ts';
import { defaultKeyFile } from '../common/keys.ts';
import type { CommandSpec } from '../common/run.ts';
import { checkMetricsToken, startTokenChecks, type TokenChecks } from '../common/token-checks.ts';
import { parseDuration } from '../common/tokens.ts';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { defaultDb, openStore } from './open-store.ts';
import { historyOptions } from './options.ts';
import { HistoryService } from './service.ts';

function durationMs(flag: string, text: string): number {
  const seconds = parseDuration(text);
  if (seconds === undefined || seconds <= 0) {
    throw new MyceliumError(
      ErrorCode.Config,
      `--${flag} must be a duration like 90m, 12h or 30d, got ${JSON.stringify(text)}`,
    );
  }
  return seconds * 1000;
}

export const historyCommand: CommandSpec<typeof historyOptions> = {
  name: 'history',
  summary:
    'Run the history service: stores node values, presence and writes from the bus; the broker answers ' +
    'history queries through it. `mycelium history export --help` for CSV export.',
  options: historyOptions,
  async build(config, log, shared) {
    const retentionMs = durationMs('retention', config.retention);
    const streamMaxAgeMs = durationMs('stream-max-age', config.streamMaxAge);
    const store = await openStore(config.db ?? defaultDb());
    const ownBus = shared?.bus === undefined;
    const bus = shared?.bus ?? createBus({ natsUrl: config.natsUrl, name: 'mycelium-history' });
    const service = new HistoryService(
      {
        retentionMs,
        streamMaxAgeMs,
        durable: config.durable,
        batch: config.batch,
        maxPending: config.maxPending,
        ackWaitMs: config.ackWaitMs,
        retryMs: config.retryMs,
        pruneIntervalMs: config.pruneIntervalMs,
        pruneBudget: config.pruneBudget,
      },
      { bus, store, log },
    );
    let checks: TokenChecks | undefined;
    const http = new HttpEndpoint(
      {
        port: config.httpPort,
        host: config.httpHost,
        timeoutMs: config.httpTimeoutMs,
        publicMetrics: config.publicMetrics,
      },
      {
        metrics: () => service.metrics.scrape(),
        health: () => service.health(),
        authorize: (token) => checkMetricsToken(checks, token),
        onRefused: (reason) => log.warn({ reason }, 'history /metrics request refused'),
        log,
      },
    );
    return {
      /** The /metrics and /healthz port once started (undefined with --http-port -1). */
      get httpPort() {
        return http.port;
      },
      async start() {
        if (config.httpPort >= 0 && !config.publicMetrics) {
          // Without a readable key /metrics refuses every token, and the service still runs.
          checks = await startTokenChecks(config, { keyFile: config.keyFile ?? defaultKeyFile() }, log, true);
        }
        if (ownBus) await bus.start();
        await service.start();
        await http.start();
        if (http.port !== undefined)
          log.info({ port: http.port, host: config.httpHost }, 'history /metrics and /healthz listening');
      },
      async stop() {
        await http.stop();
        await service.stop();
        if (ownBus) await bus.stop();
        checks?.stop();
      },
    };
  },
};
