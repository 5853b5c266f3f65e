/**
 * Latencies in 10 µs buckets up to 10 s: constant memory and cost per sample, however many
 * deliveries a run counts (a 1,000-client fan-out records millions). Percentiles are exact to
 * the bucket width; anything slower than a million buckets lands in the last one. Times that can
 * pass 10 s (a reconnect storm on a busy machine) take wider buckets: 1 ms ones reach 1,000 s.
 */
export class Histogram {
  private readonly counts = new Uint32Array(1_000_000);
  constructor(private readonly bucketMs = 0.01) {}
  count = 0;
  max = 0;

  record(ms: number): void {
    const bucket = Math.min(this.counts.length - 1, Math.max(0, Math.floor(ms / this.bucketMs)));
    this.counts[bucket]!++;
    this.count++;
    if (ms > this.max) this.max = ms;
  }

  percentile(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return (i + 1) * this.bucketMs;
    }
    return this.max;
  }

  summary(): { count: number; p50: number; p95: number; p99: number; max: number } {
    const round = (ms: number) => Math.round(ms * 100) / 100;
    return { count: this.count, p50: round(this.percentile(50)), p95: round(this.percentile(95)), p99: round(this.percentile(99)), max: round(this.max) };
  }
}
