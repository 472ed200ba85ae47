// The bus a service gets: in-process unless a NATS URL is configured.
import type { Bus, DurableStreams } from './bus.ts';
import { MemoryBus } from './memory-bus.ts';
import { NatsBus } from './nats-bus.ts';

export {
  type BatchHandler,
  type Bus,
  BusError,
  type ConsumeOptions,
  type Delivery,
  type DurableStreams,
  type StreamConsumer,
  type BusHandler,
  type BusMsg,
  type BusSubscription,
  isValidSubject,
  type SubscribeOptions,
  subjectMatches,
} from './bus.ts';
export {
  type KvBucket,
  type KvBucketOptions,
  KvConflictError,
  type KvEntry,
  KvUnavailableError,
  kvKey,
  MemoryKv,
} from './kv.ts';
export { MemoryBus } from './memory-bus.ts';
export { NatsBus, type NatsBusOptions } from './nats-bus.ts';
export { PREFIX, subjects, token } from './subjects.ts';

export interface CreateBusOptions {
  /** One URL or a comma-separated list; empty or absent selects the in-process bus. */
  natsUrl?: string;
  /** NATS connection name. */
  name?: string;
  /** Sees exceptions thrown by handlers, with the subject; delivery to others goes on. */
  onError?: (err: unknown, subject: string) => void;
}

/** Builds the bus without connecting; call `start()` on the result. */
export function createBus(options: CreateBusOptions = {}): Bus & DurableStreams {
  const servers = (options.natsUrl ?? '')
    .split(',')
    .map((url) => url.trim())
    .filter((url) => url.length > 0);
  if (servers.length === 0) return new MemoryBus(options.onError);
  return new NatsBus({ servers, name: options.name, onError: options.onError });
}
