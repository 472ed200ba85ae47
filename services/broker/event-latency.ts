// Message latency through the broker: from a gateway frame's arrival to its event's bytes handed to every client
// socket, on the broker that received the frame. On the in-process bus the event comes back synchronously, so the
// broker times it directly; on NATS it comes back later, after the round trip through the server, and this
// remembers when each of this broker's own events arrived, in publish order (NATS keeps a publisher's order).
import type { Histogram } from '../common/metrics.ts';

/** Own events remembered at most: beyond, the oldest are forgotten (and not timed) rather than kept without bound. */
const MAX_IN_FLIGHT = 10_000;

export class EventLatency {
  private payloads: Uint8Array[] = [];
  private arrivals: number[] = [];
  private head = 0;

  constructor(private readonly seconds: Histogram) {}

  /** The event was handed to every client socket; `receivedAt` is its frame's arrival (performance.now()). */
  delivered(receivedAt: number): void {
    this.seconds.observe((performance.now() - receivedAt) / 1000);
  }

  /**
   * An own event left for the bus (NATS). Every own event is remembered, timed or not (`receivedAt` undefined
   * for events no frame caused, such as a grace period's `out`), so their order matches what comes back.
   */
  published(payload: Uint8Array, receivedAt: number | undefined): void {
    if (this.payloads.length - this.head >= MAX_IN_FLIGHT) this.head++;
    this.payloads.push(payload);
    this.arrivals.push(receivedAt ?? Number.NaN);
  }

  /**
   * An own event came back off the bus: when its frame arrived, or undefined when it was not timed or is
   * forgotten. Events the bus lost are skipped by comparing bytes.
   */
  returned(data: Uint8Array): number | undefined {
    while (this.head < this.payloads.length) {
      const i = this.head++;
      if (Buffer.compare(this.payloads[i], data) === 0) {
        const at = this.arrivals[i];
        this.compact();
        return Number.isNaN(at) ? undefined : at;
      }
    }
    this.compact();
    return undefined;
  }

  /** Drops the consumed front now and then, so the arrays do not grow with every event ever sent. */
  private compact(): void {
    if (this.head === this.payloads.length) {
      this.payloads = [];
      this.arrivals = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.payloads.length) {
      this.payloads = this.payloads.slice(this.head);
      this.arrivals = this.arrivals.slice(this.head);
      this.head = 0;
    }
  }
}
