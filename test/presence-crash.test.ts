import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createTestDatabase } from "./helpers/db.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { until } from "./helpers/locks.ts";
import { productionEnv, registerAt, startServerProcess, type ServerProcess } from "./helpers/process.ts";
import { recordWithPresence, type Recorder } from "./helpers/recorder.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { testRedisUrl, uniqueName } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Issue 16 item 5 (api.md §9): an instance killed outright (SIGKILL: no socket closes, nothing
// flushed) cannot announce its users offline. A surviving instance notices its heartbeat lapsed
// and announces, exactly once across the survivors, each of its users who has no socket left on
// a live instance; a user with one elsewhere is not announced. Real child processes sharing the
// local Redis (under a prefix of this run's own) and one database.

/** Short, so the test waits seconds rather than the 30 s default. */
const ttlMs = 3_000;
/** api.md §9: offline within 4/3 of the TTL after the crash; the rest is process scheduling on a busy machine. */
const lapseBoundMs = (ttlMs * 4) / 3 + 1_500;

const database = await createTestDatabase();
const env = productionEnv(database.url, {
  REDIS_URL: testRedisUrl,
  REDIS_KEY_PREFIX: `test:${crypto.randomUUID().slice(0, 8)}:`,
  PRESENCE_INSTANCE_TTL_MS: String(ttlMs),
});

/** Sockets opened by one test, on the instance given (`connect(token, transport, server)`), closed after it. */
const { connect } = socketTracker();
const servers: ServerProcess[] = [];
// After the tracker's hook (hooks run in the order registered): the test's sockets closed first.
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => (s.proc.exitCode === null && s.proc.signalCode === null ? s.stop("SIGKILL") : undefined)));
});

async function startInstances(n: number): Promise<ServerProcess[]> {
  const started = await Promise.all(Array.from({ length: n }, () => startServerProcess(env)));
  servers.push(...started);
  return started;
}

const presenceOf = async (server: ServerProcess, token: string) =>
  (await (await fetch(`${server.url}/api/presence`, { headers: { authorization: `Bearer ${token}` } })).json()) as number[];

/** The `presence` events a recorder saw about one user, as statuses in order. */
const statusesOf = (rec: Recorder, userId: number) =>
  rec.events.filter(([event, p]) => event === "presence" && (p as { userId: number }).userId === userId).map(([, p]) => (p as { status: string }).status);

describe("an instance killed with its sockets open", () => {
  test("U only on A, V on A and B: SIGKILL A → B's watcher gets offline for U once within the bound, nothing for V; GET /api/presence agrees", async () => {
    const [a, b] = await startInstances(2);
    const [u, v, watcher] = await Promise.all(["u", "v", "watch"].map((name) => registerAt(a!.url, uniqueName(name))));
    const rec = recordWithPresence(await connect(watcher!.token, "websocket", b!));
    await connect(u!.token, "websocket", a!);
    await connect(v!.token, "polling", a!);
    await connect(v!.token, "websocket", b!);
    // Both came online (announced by A); from here on, only what the crash causes is recorded.
    await until(() => statusesOf(rec, u!.user.id).length + statusesOf(rec, v!.user.id).length === 2, "U and V online");
    expect(await presenceOf(b!, watcher!.token)).toEqual(expect.arrayContaining([u!.user.id, v!.user.id]));
    rec.events.length = 0;

    const killed = performance.now();
    a!.proc.kill("SIGKILL");
    await a!.proc.exited;
    await rec.until(([event, p]) => event === "presence" && (p as { userId: number }).userId === u!.user.id, lapseBoundMs);
    const afterMs = performance.now() - killed;
    console.log(`offline for U announced ${Math.round(afterMs)} ms after SIGKILL (TTL ${ttlMs} ms)`);
    // Within the bound, and not before the lapse (A's last beat renewed its liveness for 2/3 of the TTL at least).
    expect(afterMs).toBeLessThan(lapseBoundMs);
    expect(afterMs).toBeGreaterThan((ttlMs * 2) / 3 - 200);

    // The list agrees at once; another heartbeat later, still one offline for U and none for V.
    const listed = await presenceOf(b!, watcher!.token);
    expect(listed).not.toContain(u!.user.id);
    expect(listed).toContain(v!.user.id);
    await Bun.sleep(ttlMs / 3 + 500);
    expect(statusesOf(rec, u!.user.id)).toEqual(["offline"]);
    expect(statusesOf(rec, v!.user.id)).toEqual([]);
  });

  test("three instances, A killed: each watcher on the two survivors gets U's offline exactly once", async () => {
    const [a, b, c] = await startInstances(3);
    const [u, w1, w2] = await Promise.all(["u", "w1", "w2"].map((name) => registerAt(a!.url, uniqueName(name))));
    const recB = recordWithPresence(await connect(w1!.token, "websocket", b!));
    const recC = recordWithPresence(await connect(w2!.token, "polling", c!));
    await connect(u!.token, "websocket", a!);
    await connect(u!.token, "polling", a!);
    const isU = ([event, p]: [string, unknown]) => event === "presence" && (p as { userId: number }).userId === u!.user.id;
    // U's online reached both watchers (announced once, by A).
    await Promise.all([recB.until(isU), recC.until(isU)]);
    recB.events.length = 0;
    recC.events.length = 0;

    a!.proc.kill("SIGKILL");
    await a!.proc.exited;
    await Promise.all([recB.until(isU, lapseBoundMs), recC.until(isU, lapseBoundMs)]);
    // Both survivors' heartbeats have run since (each sweeps every third of the TTL): still once.
    await Bun.sleep(ttlMs / 3 + 500);
    expect(statusesOf(recB, u!.user.id)).toEqual(["offline"]);
    expect(statusesOf(recC, u!.user.id)).toEqual(["offline"]);
    for (const server of [b!, c!]) expect(await presenceOf(server, w1!.token)).not.toContain(u!.user.id);
  });
});

describe("an instance taken for dead that was only stalled", () => {
  test("A stopped (SIGSTOP) past its TTL: U announced offline; A resumed: U announced online again and listed", async () => {
    const [a, b] = await startInstances(2);
    const [u, watcher] = await Promise.all(["u", "watch"].map((name) => registerAt(a!.url, uniqueName(name))));
    const rec = recordWithPresence(await connect(watcher!.token, "websocket", b!));
    await connect(u!.token, "websocket", a!);
    const isU = ([event, p]: [string, unknown]) => event === "presence" && (p as { userId: number }).userId === u!.user.id;
    await rec.until(isU);
    rec.events.length = 0;

    // Shorter than the clients' ping timeout (20 s): U's socket to A stays open throughout.
    a!.proc.kill("SIGSTOP");
    try {
      await rec.until(isU, lapseBoundMs);
      expect(await presenceOf(b!, watcher!.token)).not.toContain(u!.user.id);
    } finally {
      a!.proc.kill("SIGCONT");
    }
    // A's first heartbeat after resuming finds its liveness gone and writes its counts back.
    await until(() => statusesOf(rec, u!.user.id).length === 2, "U announced online again", ttlMs);
    expect(statusesOf(rec, u!.user.id)).toEqual(["offline", "online"]);
    expect(await presenceOf(b!, watcher!.token)).toContain(u!.user.id);
    await Bun.sleep(ttlMs / 3 + 500);
    expect(statusesOf(rec, u!.user.id)).toEqual(["offline", "online"]);
  });
});
