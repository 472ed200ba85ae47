// What every entry point does once its component is built: start it, stop it in order on SIGINT/SIGTERM
// within a time limit, and turn configuration and start-up errors into one clear line and a non-zero exit.
import type { Bus, DurableStreams } from '../bus/bus.ts';
import { MyceliumError } from '../protocol/errors.ts';
import { type ConfigOf, type commonOptions, helpText, type OptionTable, resolveConfig } from './config.ts';
import { createLogger, type Logger } from './log.ts';

export interface Component {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export const SHUTDOWN_LIMIT_MS = 5000;

/**
 * What `mycelium up` hands the services it assembles in one process: the in-process bus they share (a service
 * given a bus neither starts nor stops it). Absent when a service runs as its own command.
 */
export interface SharedParts {
  bus?: Bus & DurableStreams;
}

export interface CommandSpec<T extends OptionTable> {
  name: string;
  summary: string;
  options: T;
  /** Builds the component (not yet started). */
  build(
    config: ConfigOf<T> & ConfigOf<typeof commonOptions>,
    log: Logger,
    shared?: SharedParts,
  ): Promise<Component> | Component;
}

/** Parses argv for `spec`, prints help or errors, runs the component until a signal. */
export async function runCommand<T extends OptionTable>(spec: CommandSpec<T>, argv: string[]): Promise<void> {
  let config: ConfigOf<T> & ConfigOf<typeof commonOptions>;
  try {
    config = resolveConfig(spec.options, argv);
  } catch (err) {
    fatal(`mycelium ${spec.name}: ${(err as Error).message}\nRun \`mycelium ${spec.name} --help\` for the options.`);
  }
  if (config.help) {
    process.stdout.write(helpText(spec.name, spec.summary, spec.options));
    return;
  }
  const log = createLogger({ level: config.logLevel, name: spec.name });
  let component: Component;
  try {
    component = await spec.build(config, log);
    await component.start();
  } catch (err) {
    fatal(`mycelium ${spec.name}: ${describeStartError(err)}`);
  }
  installShutdown(component, log);
}

export function installShutdown(component: Component, log: Logger): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const limit = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(1);
    }, SHUTDOWN_LIMIT_MS);
    limit.unref();
    component.stop().then(
      () => {
        log.flush?.();
        process.exit(0);
      },
      (err) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/** One line a user can act on, for the errors people actually hit when starting a service. */
export function describeStartError(err: unknown): string {
  const e = err as NodeJS.ErrnoException & { port?: number; address?: string };
  if (e?.code === 'EADDRINUSE')
    return `port ${e.port ?? '?'} is already in use (change it with the --port option of this command)`;
  if (e?.code === 'EACCES')
    return `no permission to listen on port ${e.port ?? '?'} (ports below 1024 need privileges; choose another with the --port option)`;
  if (err instanceof MyceliumError) return err.message;
  return e?.message ?? String(err);
}

export function fatal(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}
