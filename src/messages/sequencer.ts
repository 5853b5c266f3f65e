/**
 * Delivers each channel's events to this instance's sockets in `seq` order, exactly once, whatever
 * order they arrive in (api.md §11). Events come from this instance's writer and, with Redis, from
 * the other instances; a channel's seqs are gap-free, so the next one to deliver is always known.
 * A later event waits for the earlier ones; if they have not arrived within `gapWaitMs` (their
 * instance died between commit and publish, Redis lost the broadcast), they are read back from the
 * database, where they are committed by then: the lock that numbered the later one was only given
 * after the earlier one's commit. Nothing is delivered out of order and nothing is skipped, except
 * events the log no longer keeps (then `onSkipped`: the clients' own resume reports it as resync).
 *
 * Where it starts: each channel's head as the database had it when this instance started (`loadHeads`,
 * before any event is delivered). Events up to it were committed before this instance served anyone.
 *
 * Pure: no socket.io, no database, so it is unit-tested on its own (test/sequencer.test.ts).
 */
export interface Sequenced {
  channelId: number;
  seq: number;
}

export interface SequencerOptions<E extends Sequenced> {
  /** Hands one event to the sockets; called in seq order per channel. Must not throw. */
  deliver(event: E): void;
  /** Committed events of a channel with `after < seq <= upTo`, oldest first. */
  readGap(channelId: number, after: number, upTo: number): Promise<E[]>;
  /** Each channel's newest seq at start (channels not listed: 0). Retried until it answers. */
  loadHeads(): Promise<Map<number, number>>;
  gapWaitMs: number;
  /** Events the database no longer had (pruned), skipped to keep the channel moving. */
  onSkipped?(channelId: number, from: number, to: number): void;
  /** A gap read failed (it is tried again). */
  onReadFailed?(channelId: number, error: unknown): void;
}

export interface Sequencer<E extends Sequenced> {
  /** An event committed here or elsewhere; duplicates and events already delivered are ignored. */
  offer(event: E): void;
  /** The newest seq of the channel delivered here: every one up to it, none after. */
  deliveredUpTo(channelId: number): number;
  /** Resolves once the channel's `seq` has been delivered here (or skipped). */
  delivered(channelId: number, seq: number): Promise<void>;
  /** Resolves once the heads are loaded (events offered before wait for it). */
  ready(): Promise<void>;
  /** Channels whose database head is past what was delivered here: read what is missing. */
  catchUp(heads: Map<number, number>): void;
  /** Channels with events waiting for an earlier one (for tests and metrics). */
  holding(): number;
  close(): void;
}

const MAX_RETRY_MS = 5_000;

export function createSequencer<E extends Sequenced>(options: SequencerOptions<E>): Sequencer<E> {
  const { deliver, readGap, gapWaitMs } = options;
  /** Per channel, the newest seq delivered here (absent: 0). */
  const upTo = new Map<number, number>();
  /** Per channel with a gap, the events waiting, by seq. */
  const held = new Map<number, Map<number, E>>();
  const timers = new Map<number, ReturnType<typeof setTimeout>>();
  /** Per channel, callers waiting for a seq to be delivered. */
  const waiters = new Map<number, { seq: number; resolve: () => void }[]>();
  let early: E[] | undefined = [];
  let closed = false;

  const loaded = (async () => {
    for (let wait = gapWaitMs; !closed; wait = Math.min(wait * 2, MAX_RETRY_MS)) {
      try {
        for (const [channelId, seq] of await options.loadHeads()) upTo.set(channelId, seq);
        break;
      } catch (error) {
        options.onReadFailed?.(0, error);
        await Bun.sleep(wait);
      }
    }
    const pending = early ?? [];
    early = undefined;
    for (const event of pending) offer(event);
  })();

  const current = (channelId: number) => upTo.get(channelId) ?? 0;

  function advance(channelId: number, seq: number): void {
    upTo.set(channelId, seq);
    const waiting = waiters.get(channelId);
    if (!waiting) return;
    const still = waiting.filter((w) => w.seq > seq);
    for (const w of waiting) if (w.seq <= seq) w.resolve();
    if (still.length > 0) waiters.set(channelId, still);
    else waiters.delete(channelId);
  }

  /** Delivers the channel's held events that are next in line; true when nothing is left waiting. */
  function drain(channelId: number): boolean {
    const waiting = held.get(channelId);
    if (!waiting) return true;
    for (let next = current(channelId) + 1; waiting.has(next); next++) {
      const event = waiting.get(next)!;
      waiting.delete(next);
      deliver(event);
      advance(channelId, next);
    }
    // Anything at or below what was delivered came twice: forgotten.
    for (const seq of waiting.keys()) if (seq <= current(channelId)) waiting.delete(seq);
    if (waiting.size > 0) return false;
    held.delete(channelId);
    clearTimeout(timers.get(channelId));
    timers.delete(channelId);
    return true;
  }

  function offer(event: E): void {
    if (closed) return;
    if (early) return void early.push(event);
    const { channelId, seq } = event;
    const last = current(channelId);
    if (seq <= last) return;
    if (seq === last + 1 && !held.has(channelId)) {
      deliver(event);
      advance(channelId, seq);
      return;
    }
    let waiting = held.get(channelId);
    if (!waiting) held.set(channelId, (waiting = new Map()));
    waiting.set(seq, event);
    if (!drain(channelId)) waitForGap(channelId, gapWaitMs);
  }

  function waitForGap(channelId: number, wait: number): void {
    if (timers.has(channelId) || closed) return;
    timers.set(
      channelId,
      setTimeout(() => {
        timers.delete(channelId);
        void fill(channelId, wait);
      }, wait),
    );
  }

  /** Reads the channel's missing events (up to the oldest held, or `upToHead`) and delivers them. */
  async function fill(channelId: number, wait: number, upToHead?: number): Promise<void> {
    const from = current(channelId);
    const oldestHeld = held.has(channelId) ? Math.min(...held.get(channelId)!.keys()) : undefined;
    const to = oldestHeld !== undefined ? oldestHeld - 1 : upToHead;
    if (to === undefined || to <= from) return void drain(channelId);
    let events: E[];
    try {
      events = await readGap(channelId, from, to);
    } catch (error) {
      options.onReadFailed?.(channelId, error);
      if (held.has(channelId)) waitForGap(channelId, Math.min(wait * 2, MAX_RETRY_MS));
      return;
    }
    if (closed) return;
    for (const event of events) {
      if (event.seq === current(channelId) + 1) {
        deliver(event);
        advance(channelId, event.seq);
      }
    }
    if (current(channelId) === from) {
      // The database has none of them (or not the first): pruned from the log. Skipped, so the channel moves on.
      const next = events.find((e) => e.seq > from)?.seq;
      const skipTo = next !== undefined && next <= to ? next - 1 : to;
      options.onSkipped?.(channelId, from + 1, skipTo);
      advance(channelId, skipTo);
      return void fill(channelId, wait, upToHead);
    }
    // Read in pages: more to come.
    if (current(channelId) < to) return void fill(channelId, wait, upToHead);
    if (!drain(channelId)) waitForGap(channelId, gapWaitMs);
    else if (upToHead !== undefined && current(channelId) < upToHead) void fill(channelId, wait, upToHead);
  }

  return {
    offer,
    deliveredUpTo: current,
    delivered(channelId, seq) {
      if (seq <= current(channelId) || closed) return Promise.resolve();
      return new Promise((resolve) => {
        const waiting = waiters.get(channelId);
        if (waiting) waiting.push({ seq, resolve });
        else waiters.set(channelId, [{ seq, resolve }]);
      });
    },
    ready: () => loaded,
    catchUp(heads) {
      if (early) return;
      for (const [channelId, head] of heads) if (head > current(channelId) && !held.has(channelId)) void fill(channelId, gapWaitMs, head);
    },
    holding: () => held.size,
    close() {
      closed = true;
      for (const timer of timers.values()) clearTimeout(timer);
      timers.clear();
      for (const waiting of waiters.values()) for (const w of waiting) w.resolve();
      waiters.clear();
    },
  };
}
