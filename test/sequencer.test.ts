import { describe, expect, test } from "bun:test";
import { createSequencer, type Sequenced } from "../src/messages/sequencer.ts";
import { until } from "./helpers/wait.ts";

// The per-channel reorder buffer (src/messages/sequencer.ts) on its own: no server, no database.
// `readGap` stands for the log: it answers from `committed`, as the database would.

type Event = Sequenced & { label: string };
const ev = (channelId: number, seq: number): Event => ({ channelId, seq, label: `${channelId}:${seq}` });

function harness({ heads = new Map<number, number>(), gapWaitMs = 20, committed = [] as Event[], failReads = 0 } = {}) {
  const delivered: string[] = [];
  const reads: [number, number, number][] = [];
  const skipped: [number, number, number][] = [];
  let failures = failReads;
  const sequencer = createSequencer<Event>({
    deliver: (event) => void delivered.push(event.label),
    async readGap(channelId, after, upTo) {
      reads.push([channelId, after, upTo]);
      if (failures-- > 0) throw new Error("database away");
      return committed.filter((e) => e.channelId === channelId && e.seq > after && e.seq <= upTo).sort((a, b) => a.seq - b.seq);
    },
    loadHeads: async () => heads,
    gapWaitMs,
    onSkipped: (channelId, from, to) => void skipped.push([channelId, from, to]),
  });
  return { sequencer, delivered, reads, skipped, committed };
}

describe("the sequencer delivers each channel's events in seq order, exactly once", () => {
  test("in order: delivered at once, nothing read back", async () => {
    const { sequencer, delivered, reads } = harness();
    await sequencer.ready();
    for (const seq of [1, 2, 3]) sequencer.offer(ev(7, seq));
    expect(delivered).toEqual(["7:1", "7:2", "7:3"]);
    expect(sequencer.deliveredUpTo(7)).toBe(3);
    expect(reads).toEqual([]);
  });

  test("a later event waits for the earlier one, then both go in order", async () => {
    const { sequencer, delivered, reads } = harness();
    await sequencer.ready();
    sequencer.offer(ev(1, 2));
    sequencer.offer(ev(1, 3));
    expect(delivered).toEqual([]);
    expect(sequencer.holding()).toBe(1);
    sequencer.offer(ev(1, 1));
    expect(delivered).toEqual(["1:1", "1:2", "1:3"]);
    expect(sequencer.holding()).toBe(0);
    await Bun.sleep(40);
    expect(reads).toEqual([]);
  });

  test("duplicates and events at or below what was delivered are dropped", async () => {
    const { sequencer, delivered } = harness();
    await sequencer.ready();
    sequencer.offer(ev(1, 1));
    sequencer.offer(ev(1, 1));
    sequencer.offer(ev(1, 3));
    sequencer.offer(ev(1, 3));
    sequencer.offer(ev(1, 2));
    sequencer.offer(ev(1, 2));
    expect(delivered).toEqual(["1:1", "1:2", "1:3"]);
  });

  test("channels are independent: a gap in one holds nothing of another", async () => {
    const { sequencer, delivered } = harness();
    await sequencer.ready();
    sequencer.offer(ev(1, 2));
    sequencer.offer(ev(2, 1));
    sequencer.offer(ev(2, 2));
    expect(delivered).toEqual(["2:1", "2:2"]);
    sequencer.close();
  });

  test("an earlier event that never arrives is read back from the log after gapWaitMs, then the held ones follow", async () => {
    const committed = [ev(1, 1), ev(1, 2), ev(1, 3), ev(1, 4)];
    const { sequencer, delivered, reads } = harness({ committed, gapWaitMs: 20 });
    await sequencer.ready();
    sequencer.offer(ev(1, 1));
    sequencer.offer(ev(1, 4));
    expect(delivered).toEqual(["1:1"]);
    await Bun.sleep(10);
    expect(reads).toEqual([]);
    await Bun.sleep(40);
    expect(reads).toEqual([[1, 1, 3]]);
    expect(delivered).toEqual(["1:1", "1:2", "1:3", "1:4"]);
    // The missing ones arriving late after all change nothing.
    sequencer.offer(ev(1, 2));
    sequencer.offer(ev(1, 3));
    expect(delivered).toHaveLength(4);
  });

  test("a failed read is tried again; nothing is delivered out of order meanwhile", async () => {
    const committed = [ev(1, 1), ev(1, 2)];
    const { sequencer, delivered, reads } = harness({ committed, gapWaitMs: 10, failReads: 2 });
    await sequencer.ready();
    sequencer.offer(ev(1, 2));
    await Bun.sleep(25);
    expect(delivered).toEqual([]);
    await until(() => delivered.length === 2, "2 delivered", 2_000);
    expect(delivered).toEqual(["1:1", "1:2"]);
    expect(reads.length).toBeGreaterThanOrEqual(3);
  });

  test("starts after each channel's head at start: older events are not delivered again", async () => {
    const { sequencer, delivered } = harness({ heads: new Map([[5, 10]]) });
    sequencer.offer(ev(5, 10));
    sequencer.offer(ev(5, 11));
    await sequencer.ready();
    expect(delivered).toEqual(["5:11"]);
    expect(sequencer.deliveredUpTo(5)).toBe(11);
    expect(sequencer.deliveredUpTo(6)).toBe(0);
  });

  test("delivered(channel, seq) resolves once that seq has gone to the sockets", async () => {
    const { sequencer } = harness();
    await sequencer.ready();
    let done = false;
    const waiting = sequencer.delivered(3, 2).then(() => (done = true));
    sequencer.offer(ev(3, 2));
    await Bun.sleep(1);
    expect(done).toBe(false);
    sequencer.offer(ev(3, 1));
    await waiting;
    expect(done).toBe(true);
    await sequencer.delivered(3, 1);
  });

  test("events the log no longer keeps are skipped (reported), and the channel moves on", async () => {
    const { sequencer, delivered, skipped } = harness({ committed: [], gapWaitMs: 10 });
    await sequencer.ready();
    sequencer.offer(ev(1, 5));
    await until(() => delivered.length === 1, "1 delivered", 2_000);
    expect(delivered).toEqual(["1:5"]);
    expect(skipped).toEqual([[1, 1, 4]]);
  });

  test("catchUp reads what a channel is missing up to the database's head", async () => {
    const committed = [ev(2, 1), ev(2, 2), ev(2, 3)];
    const { sequencer, delivered } = harness({ committed });
    await sequencer.ready();
    sequencer.offer(ev(2, 1));
    sequencer.catchUp(new Map([[2, 3]]));
    await until(() => delivered.length === 3, "3 delivered", 2_000);
    expect(delivered).toEqual(["2:1", "2:2", "2:3"]);
  });

  test("any arrival order of 200 events gives 1..200 once each (random permutations)", async () => {
    for (let round = 0; round < 20; round++) {
      const { sequencer, delivered } = harness();
      await sequencer.ready();
      const seqs = Array.from({ length: 200 }, (_, i) => i + 1);
      for (let i = seqs.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [seqs[i], seqs[j]] = [seqs[j]!, seqs[i]!];
      }
      // Some arrive twice.
      for (const seq of [...seqs, ...seqs.slice(0, 50)]) sequencer.offer(ev(1, seq));
      expect(delivered).toEqual(Array.from({ length: 200 }, (_, i) => `1:${i + 1}`));
      sequencer.close();
    }
  });
});
