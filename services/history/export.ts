// `mycelium history export --node N --resource R --from … --to …`: one resource's raw points as CSV on stdout,
// read straight from the database in chunks (the service may be running: SQLite's WAL lets readers in).
import { existsSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { helpText, resolveConfig } from '../common/config.ts';
import { fatal, runCommand } from '../common/run.ts';
import { historyCommand } from './command.ts';
import { defaultDb, openStore } from './open-store.ts';
import { exportOptions } from './options.ts';
import { CSV_HEADER, checkRange, checkSeries, csvRow } from './protocol.ts';

const EXPORT_SUMMARY = "Write one resource's stored values as CSV (time,value) to stdout.";

/** `mycelium history [options]` runs the service; `mycelium history export [options]` exports. */
export async function historyMain(argv: string[]): Promise<void> {
  if (argv[0] !== 'export') return runCommand(historyCommand, argv);
  let config: ReturnType<typeof resolveConfig<typeof exportOptions>>;
  try {
    config = resolveConfig(exportOptions, argv.slice(1));
  } catch (err) {
    fatal(`mycelium history export: ${(err as Error).message}`);
  }
  if (config.help) {
    process.stdout.write(helpText('history export', EXPORT_SUMMARY, exportOptions));
    return;
  }
  try {
    await exportCsv(config, process.stdout);
  } catch (err) {
    fatal(`mycelium history export: ${(err as Error).message}`);
  }
}

export interface ExportRequest {
  db?: string;
  node?: string;
  resource?: string;
  from?: string;
  to?: string;
}

/** Writes the CSV to `out`, waiting whenever it is full: a million rows never sit in memory. */
export async function exportCsv(req: ExportRequest, out: Writable): Promise<number> {
  if (req.node === undefined || req.resource === undefined) throw new Error('--node and --resource are required');
  const badSeries = checkSeries(req.node, req.resource);
  if (badSeries !== undefined) throw new Error(badSeries);
  const range = checkRange({ from: req.from, to: req.to }, Date.now(), 1, 1);
  if (!range.ok) throw new Error(range.message);
  const db = req.db ?? defaultDb();
  if (db.startsWith('sqlite:') && !existsSync(db.slice('sqlite:'.length))) {
    throw new Error(`no history database at ${db.slice('sqlite:'.length)} (give --db)`);
  }
  const store = await openStore(db);
  await store.open();
  let rows = 0;
  let broken: Error | undefined;
  const onError = (err: Error) => {
    broken = err;
  };
  out.on('error', onError);
  try {
    if (!out.write(CSV_HEADER)) await drained(out);
    const { from, to } = range.value;
    for await (const p of store.stream({ uid: req.node, resource: req.resource, from, to })) {
      // A closed pipe (`| head`) ends the export quietly.
      if (broken !== undefined) break;
      rows++;
      if (!out.write(csvRow(p.at, p.value))) await drained(out);
    }
  } finally {
    out.off('error', onError);
    await store.close();
  }
  return rows;
}

function drained(out: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done);
      out.off('close', done);
      out.off('error', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
    out.on('error', done);
  });
}
