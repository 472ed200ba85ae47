// `mycelium node <protocol> [options]`: test nodes that behave like pyaiot's, one module per protocol.
import type { OptionTable } from '../../services/common/config.ts';
import { type CommandSpec, runCommand } from '../../services/common/run.ts';

const nodes: Record<string, () => Promise<CommandSpec<OptionTable>>> = {
  ws: async () => (await import('./ws-node.ts')).wsNodeCommand as unknown as CommandSpec<OptionTable>,
  coap: async () => (await import('./coap-node.ts')).coapNodeCommand as unknown as CommandSpec<OptionTable>,
  mqtt: async () => (await import('./mqtt-node.ts')).mqttNodeCommand as unknown as CommandSpec<OptionTable>,
};

export async function nodeMain(argv: string[]): Promise<void> {
  const [kind, ...rest] = argv;
  if (kind === undefined || !Object.hasOwn(nodes, kind)) {
    process.stderr.write(
      `Usage: mycelium node <${Object.keys(nodes).join('|')}> [options]\nRun \`mycelium node ws --help\` for the options.\n`,
    );
    process.exit(kind === undefined || kind === '--help' ? 0 : 2);
  }
  await runCommand(await nodes[kind](), rest);
}
