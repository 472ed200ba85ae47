// `mycelium rules`: the rules service; `mycelium rules check DIR`: type-check and validate a folder.
import { randomUUID } from 'node:crypto';
import { homedir, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { createBus } from '../bus/index.ts';
import { helpText, resolveConfig } from '../common/config.ts';
import { type HealthReport, HttpEndpoint } from '../common/http-endpoint.ts';
import { defaultKeyFile } from '../common/keys.ts';
import { type CommandSpec, fatal, runCommand } from '../common/run.ts';
import { checkMetricsToken, startTokenChecks, type TokenChecks } from '../common/token-checks.ts';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { checkOptions, rulesOptions } from './options.ts';
import { RulesService } from './service.ts';

export const rulesCommand: CommandSpec<typeof rulesOptions> = {
  name: 'rules',
  summary:
    'Run the rules service: rule files in --dir react to node events, write to nodes, run console commands and ' +
    'emit derived values. `mycelium rules check DIR` type-checks a folder.',
  options: rulesOptions,
  build(config, log, shared) {
    if (config.execRole !== 'operator' && config.execRole !== 'admin') {
      throw new MyceliumError(ErrorCode.Config, `--exec-role must be operator or admin, got ${config.execRole}`);
    }
    if (config.timeLimitMs > config.maxTimeLimitMs) {
      throw new MyceliumError(ErrorCode.Config, '--time-limit-ms may not exceed --max-time-limit-ms');
    }
    const id = config.workerId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 4)}`;
    const ownBus = shared?.bus === undefined;
    const bus = shared?.bus ?? createBus({ natsUrl: config.natsUrl, name: 'mycelium-rules' });
    const service = new RulesService(
      {
        dir: resolve(config.dir),
        stateDir: config.stateDir ?? join(homedir(), '.mycelium', 'rules-state'),
        id,
        gatewayId: config.gatewayId,
        limits: {
          timeLimitMs: config.timeLimitMs,
          maxTimeLimitMs: config.maxTimeLimitMs,
          memoryMb: config.memoryMb,
          maxWaitMs: config.maxWaitMs,
          loadTimeoutMs: config.loadTimeoutMs,
          concurrency: config.concurrency,
          maxQueued: config.maxQueued,
          threads: config.threads,
        },
        maxFailures: config.maxFailures,
        httpAllow: config.httpAllow,
        httpTimeoutMs: config.httpTimeoutMs,
        writeTimeoutMs: config.writeTimeoutMs,
        historyTimeoutMs: config.historyTimeoutMs,
        execAs: { sub: `rules-${id}`, role: config.execRole },
        stateSyncMs: config.stateSyncMs,
        heartbeatMs: config.heartbeatMs,
        reloadDebounceMs: config.reloadDebounceMs,
        maxVirtualNodes: config.maxVirtualNodes,
        recentRuns: config.recentRuns,
      },
      { bus, log },
    );
    // GET /metrics (the per-rule runs, errors and duration histograms of stats.ts) and GET /healthz, as the
    // history service serves them (services/history/command.ts).
    let running = false;
    let checks: TokenChecks | undefined;
    const health = (): HealthReport & { bus: string; rules: Record<string, number> } => {
      const rules: Record<string, number> = { running: 0, disabled: 0, failed: 0, loading: 0 };
      for (const r of service.records()) rules[r.status] = (rules[r.status] ?? 0) + 1;
      const down = running ? [] : ['service not running'];
      return { status: down.length === 0 ? 'ok' : 'down', down, bus: bus.kind, rules };
    };
    const http = new HttpEndpoint(
      {
        port: config.httpPort,
        host: config.httpHost,
        timeoutMs: config.metricsTimeoutMs,
        publicMetrics: config.publicMetrics,
      },
      {
        metrics: () => service.metrics.scrape(),
        health,
        authorize: (token) => checkMetricsToken(checks, token),
        onRefused: (reason) => log.warn({ reason }, 'rules /metrics request refused'),
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
        running = true;
        await http.start();
        if (http.port !== undefined)
          log.info({ port: http.port, host: config.httpHost }, 'rules /metrics and /healthz listening');
      },
      async stop() {
        running = false;
        await http.stop();
        await service.stop();
        if (ownBus) await bus.stop();
        checks?.stop();
      },
    };
  },
};

const CHECK_SUMMARY = 'Type-check and validate every rule file of a folder (exit 1 if one fails).';

export async function rulesMain(argv: string[]): Promise<void> {
  if (argv[0] !== 'check') return runCommand(rulesCommand, argv);
  const rest = argv.slice(1);
  const positional = rest[0] !== undefined && !rest[0].startsWith('-') ? rest.shift() : undefined;
  let config: ReturnType<typeof resolveConfig<typeof checkOptions>>;
  try {
    config = resolveConfig(checkOptions, rest);
  } catch (err) {
    fatal(`mycelium rules check: ${(err as Error).message}`);
  }
  if (config.help) {
    process.stdout.write(helpText('rules check DIR', CHECK_SUMMARY, checkOptions));
    return;
  }
  const dir = positional ?? config.dir ?? 'rules';
  const { checkRules } = await import('./check.ts');
  const report = await checkRules(resolve(dir));
  for (const line of report.lines) process.stdout.write(`${line}\n`);
  if (!report.ok) process.exit(1);
}
