// A rules service on a test bus, with a temporary rules folder and state folder (removed by `cleanup`).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bus } from '../../services/bus/bus.ts';
import { silentLogger } from '../../services/common/log.ts';
import type { ExecClient } from '../../services/rules/exec-binding.ts';
import { RulesService, type RulesServiceOptions } from '../../services/rules/service.ts';

export type Cleanup = (fn: () => unknown) => void;

export function tempDir(cleanup: Cleanup, prefix = 'rules-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function rulesOptions(
  dir: string,
  stateDir: string,
  overrides: Partial<RulesServiceOptions> = {},
): RulesServiceOptions {
  return {
    dir,
    stateDir,
    id: 'rules-test',
    gatewayId: 'rules',
    limits: {
      timeLimitMs: 100,
      maxTimeLimitMs: 5000,
      memoryMb: 64,
      maxWaitMs: 10_000,
      loadTimeoutMs: 10_000,
      concurrency: 16,
      maxQueued: 10_000,
    },
    maxFailures: 3,
    httpAllow: [],
    httpTimeoutMs: 5000,
    writeTimeoutMs: 3000,
    historyTimeoutMs: 5000,
    execAs: { sub: 'rules-test', role: 'operator' },
    stateSyncMs: 100,
    heartbeatMs: 200,
    reloadDebounceMs: 50,
    maxVirtualNodes: 100,
    recentRuns: 20,
    ...overrides,
  };
}

export async function startRules(
  bus: Bus,
  cleanup: Cleanup,
  dir: string,
  overrides: Partial<RulesServiceOptions> = {},
  exec?: ExecClient,
): Promise<RulesService> {
  const stateDir = overrides.stateDir ?? tempDir(cleanup, 'rules-state-');
  const service = new RulesService(rulesOptions(dir, stateDir, overrides), {
    bus,
    log: silentLogger(),
    ...(exec === undefined ? {} : { exec }),
  });
  cleanup(() => service.stop());
  await service.start();
  return service;
}
