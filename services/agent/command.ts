// `mycelium agent`: the entry point (flags, logger); the Agent component does the rest.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CommandSpec } from '../common/run.ts';
import { Agent } from './agent.ts';
import { agentOptions } from './options.ts';

/** The package's version (the agent reports it), found by walking up from this file. */
function packageVersion(): string {
  let dir = import.meta.dirname;
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version?: unknown };
      if (typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here: one level up
    }
    dir = join(dir, '..');
  }
  return '0.0.0';
}

export const agentCommand: CommandSpec<typeof agentOptions> = {
  name: 'agent',
  summary: 'Run the device agent: dials the WebSocket gateway and runs the commands its --commands file allows.',
  options: agentOptions,
  build: (config, log) => new Agent(config, { log, version: packageVersion() }),
};
