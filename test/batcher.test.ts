import { describe, expect, test } from "bun:test";
import { createBatcher } from "../src/messages/batcher.ts";
import { keyedQueue } from "../src/lib/keyed-queue.ts";
import { until } from "./helpers/wait.ts";

// The pure parts of the write path, with no server and no database: group commit's scheduling
// (src/messages/batcher.ts; the real statement is tested in test/group-commit.test.ts) and the
// per-key queue moderation hands messages to the writer through (src/lib/keyed-queue.ts).

type Item = { key: number; n: number };

function harness({ maxRows = 4, windowMs = 5, maxInFlight = 2, runMs = 10 } = {}) {
  const batches: Item[][] = [];
  let running = 0;
  let mostAtOnce = 0;
  const keysRunning = new Set<number>();
  const overlaps: number[] = [];
  const batcher = createBatcher<Item>({
    keyOf: (item) => item.key,
    async run(batch) {
      batches.push(batch);
      mostAtOnce = Math.max(mostAtOnce, ++running);
      const keys = new Set(batch.map((i) => i.key));
      for (const key of keys) {
        if (keysRunning.has(key)) overlaps.push(key);
        keysRunning.add(key);
      }
      await Bun.sleep(runMs);
      for (const key of keys) keysRunning.delete(key);
      running--;
    },
    maxRows,
    windowMs,
    maxInFlight,
  });
  return { batcher, batches, overlaps, mostAtOnce: () => mostAtOnce, idle: () => running === 0 };
}

describe("group commit's batcher", () => {
  test("items added together form one batch once the window passes; a lone item waits at most the window", async () => {
    const { batcher, batches } = harness({ windowMs: 20, maxRows: 100 });
    const started = performance.now();
    for (let n = 0; n < 3; n++) batcher.add({ key: n, n });
    expect(batches).toEqual([]);
    await until(() => batches.length === 1, "one batch", 2_000, 2);
    expect(performance.now() - started).toBeGreaterThanOrEqual(15);
    expect(batches[0]!.map((i) => i.n)).toEqual([0, 1, 2]);
  });

  test("a full batch (maxRows) goes at once, without waiting for the window", async () => {
    const { batcher, batches } = harness({ windowMs: 10_000, maxRows: 3 });
    for (let n = 0; n < 3; n++) batcher.add({ key: n, n });
    expect(batches.map((b) => b.length)).toEqual([3]);
  });

  test("never two batches of one key at once, and a key's items run in the order they came", async () => {
    const { batcher, batches, overlaps, idle } = harness({ maxRows: 3, windowMs: 1, maxInFlight: 4 });
    for (let n = 0; n < 40; n++) batcher.add({ key: n % 3, n });
    await until(() => batches.flat().length === 40 && idle(), "all 40 items, batcher idle", 2_000, 2);
    expect(overlaps).toEqual([]);
    for (const key of [0, 1, 2]) {
      const order = batches.flat().filter((i) => i.key === key).map((i) => i.n);
      expect(order).toEqual([...order].sort((a, b) => a - b));
    }
  });

  test("at most maxInFlight batches run at once; items of free keys overtake a busy key's", async () => {
    const { batcher, batches, mostAtOnce, idle } = harness({ maxRows: 1, windowMs: 0, maxInFlight: 2, runMs: 20 });
    for (let n = 0; n < 6; n++) batcher.add({ key: n < 3 ? 7 : n, n });
    // 7's first item and item 3 (a free key) start; 7's others wait for 7 to be free.
    expect(batches.map((b) => b[0]!.n)).toEqual([0, 3]);
    await until(() => batches.length === 6 && idle(), "6 batches, batcher idle", 2_000, 2);
    expect(mostAtOnce()).toBe(2);
    expect(batches.flat().filter((i) => i.key === 7).map((i) => i.n)).toEqual([0, 1, 2]);
  });
});

describe("the per-key queue", () => {
  test("tasks of one key run one after another, in order, a failure not stopping the next; other keys run alongside", async () => {
    const inOrder = keyedQueue();
    const log: string[] = [];
    const task = (label: string, ms: number, fail = false) => async () => {
      log.push(`start ${label}`);
      await Bun.sleep(ms);
      log.push(`end ${label}`);
      if (fail) throw new Error(label);
      return label;
    };
    const results = await Promise.allSettled([inOrder(1, task("a", 15, true)), inOrder(1, task("b", 1)), inOrder(2, task("x", 5))]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "fulfilled", "fulfilled"]);
    expect(log.indexOf("start b")).toBeGreaterThan(log.indexOf("end a"));
    expect(log.indexOf("start x")).toBeLessThan(log.indexOf("end a"));
  });
});
