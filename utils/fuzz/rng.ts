// A small seeded generator (mulberry32) for the garbage run: the same seed replays the same inputs, so a
// crash found in CI or in a long run can be reproduced by setting FUZZ_SEED.

export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)];
  }

  bytes(length: number): Buffer {
    const b = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i++) b[i] = this.int(0, 255);
    return b;
  }

  /** Text of `length` characters drawn from the whole UTF-16 range, lone surrogates and controls included. */
  text(length: number): string {
    let s = '';
    for (let i = 0; i < length; i++) {
      s += String.fromCharCode(this.chance(0.7) ? this.int(0, 0x7f) : this.int(0, 0xffff));
    }
    return s;
  }

  /** Flips a few random bytes of a copy of `input`, sometimes truncating or extending it. */
  mutate(input: Buffer): Buffer {
    let out = Buffer.from(input);
    const flips = this.int(1, 4);
    for (let i = 0; i < flips && out.length > 0; i++) out[this.int(0, out.length - 1)] = this.int(0, 255);
    if (this.chance(0.2)) out = out.subarray(0, this.int(0, out.length));
    if (this.chance(0.1)) out = Buffer.concat([out, this.bytes(this.int(1, 64))]);
    return out;
  }
}
