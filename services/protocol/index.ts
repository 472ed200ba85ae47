export * from './errors.ts';
export * from './frames.ts';
export * from './messages.ts';
export type { Parsed } from './schema.ts';
