// Imported first by every rule's worker bundle (loader.ts), before the rule file's own top-level code runs:
// ending the process or signalling it from a rule would take every other rule with it. In a worker thread
// process.exit ends only the thread, but a rule must not end its own worker either: that looks like a crash.
const forbidden = (what: string) => () => {
  throw new Error(`${what} is not available to rules`);
};
process.exit = forbidden('process.exit') as typeof process.exit;
process.abort = forbidden('process.abort') as typeof process.abort;
process.kill = forbidden('process.kill') as typeof process.kill;
