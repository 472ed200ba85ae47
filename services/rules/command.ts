// `mycelium rules`: the rules service; `mycelium rules check DIR`: type-check and validate a folder.
import { randomUUID } from 'node:crypto';
import { homedir, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { createBus } from '../bus/index.ts';
import { helpText, resolveConfig } from '../common/config.ts';
import { type CommandSpec, fatal, runCommand } from '../common/run.ts';
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
