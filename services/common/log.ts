// pino loggers: readable on a TTY, JSON lines otherwise. Secrets are redacted wherever they appear.
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

const REDACT = [
  'token',
  '*.token',
  'password',
  '*.password',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'req.headers.authorization',
  'privateKey',
];

export interface LogOptions {
  level?: string;
  name?: string;
  /** Force pretty (true) or JSON (false) output; default: pretty on a TTY. */
  pretty?: boolean;
}

export function createLogger(options: LogOptions = {}): Logger {
  const pretty = options.pretty ?? Boolean(process.stdout.isTTY);
  return pino({
    name: options.name,
    level: options.level ?? 'info',
    redact: { paths: REDACT, censor: '[redacted]' },
    ...(pretty
      ? {
          transport: {
            target: 'pino-pretty',
            options: { colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' },
          },
        }
      : {}),
  });
}

/** A logger that drops everything (tests that do not look at logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
