// `mycelium <command> [options]`
import { runCommand } from '../services/common/run.ts';
import { commands } from './commands.ts';

function usage(): string {
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(14)} ${c.summary}`);
  return `Usage: mycelium <command> [options]\n\nCommands:\n${rows.join('\n')}\n\nRun \`mycelium <command> --help\` for a command's options.\n`;
}

const [name, ...rest] = process.argv.slice(2);
if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
  process.stdout.write(usage());
} else if (!Object.hasOwn(commands, name)) {
  process.stderr.write(`mycelium: unknown command "${name}"\n\n${usage()}`);
  process.exit(2);
} else {
  const loaded = await commands[name].load();
  if ('spec' in loaded) await runCommand(loaded.spec, rest);
  else await loaded.main(rest);
}
