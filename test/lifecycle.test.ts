import { describe, expect, setDefaultTimeout, test } from "bun:test";
import type { SQL } from "bun";
import { createTestDatabase } from "./helpers/db.ts";
import { connectTo, productionEnv, registerAt, runToExit, startServerProcess } from "./helpers/process.ts";
import { sendWithAck, transports, uniqueName, type ChatClient, type Transport } from "./helpers/server.ts";
import type { ChatMessage, LiveMessage } from "../src/messages/messages.schemas.ts";
import { asHistory } from "./helpers/recorder.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §6, through the real entry point (`bun src/index.ts`) as a child process in
// production mode: restart durability, graceful SIGTERM under load, SIGTERM with writes held
// in flight by a table lock (and past SHUTDOWN_TIMEOUT_MS), and refused configurations.

/** Per-test budget for tests that start processes (bun's default is 5 s). */
const processTimeout = 30_000;

const restartDb = await createTestDatabase();
const loadDb = await createTestDatabase();
const drainDb = await createTestDatabase();

/**
 * Holds an EXCLUSIVE lock on `messages` in its own transaction, so every INSERT blocks until
 * `release()`: writes can be caught in flight deterministically.
 */
async function lockMessages(sql: SQL) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => (locked = resolve));
  const done = sql.begin(async (tx) => {
    await tx`LOCK TABLE messages IN EXCLUSIVE MODE`;
    locked();
    await released;
  });
  await Promise.race([isLocked, done]);
  return { release, done };
}

/** Waits until `n` statements of this database are queued behind the lock on `messages`. */
async function blockedWrites(sql: SQL, n: number, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  for (;;) {
    const [row] = await sql<{ waiting: number }[]>`
      SELECT count(*)::int AS waiting FROM pg_locks
      WHERE NOT granted AND (relation = 'messages'::regclass OR locktype = 'advisory')
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
    const waiting = row?.waiting ?? 0;
    if (waiting >= n) return;
    if (performance.now() > deadline) throw new Error(`only ${waiting} of ${n} writes reached the database`);
    await Bun.sleep(10);
  }
}

/** GET /api/messages, paging back with `before` until the first message, returned oldest first. */
async function allMessages(url: string, token: string): Promise<ChatMessage[]> {
  const all: ChatMessage[] = [];
  for (let query = "limit=20"; ; ) {
    const res = await fetch(`${url}/api/messages?${query}`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const page = (await res.json()) as ChatMessage[];
    all.push(...page);
    if (page.length < 20) return all.reverse();
    query = `limit=20&before=${page.at(-1)!.id}`;
  }
}

describe("restart", () => {
  test("every acked message is served by a new process on the same database, exactly once", async () => {
    const env = productionEnv(restartDb.url);
    const first = await startServerProcess(env);
    const alice = await registerAt(first.url, uniqueName("alice"));
    const sockets = [await connectTo(first.url, alice.token, "polling"), await connectTo(first.url, alice.token, "websocket")];

    // 25 messages per transport, the two transports interleaved.
    const acked: LiveMessage[] = [];
    await Promise.all(
      sockets.map(async (socket, s) => {
        for (let i = 0; i < 25; i++) {
          const ack = await sendWithAck(socket, { content: `restart s${s} #${i} ${crypto.randomUUID()}` });
          expect(ack.ok).toBe(true);
          acked.push(ack.message);
        }
      }),
    );
    expect(acked).toHaveLength(50);
    // A fresh database: general's first 50 events, each numbered once (api.md §11).
    expect(acked.map((m) => m.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));

    const stopped = await first.stop("SIGTERM");
    expect(stopped.code).toBe(0);
    expect(first.logs.some((l) => l.msg === "stopped")).toBe(true);
    for (const socket of sockets) socket.disconnect();

    const second = await startServerProcess(env);
    try {
      const history = await allMessages(second.url, alice.token);
      // Same ids, same content, same author, same timestamps; each exactly once and nothing else
      // (as history shows them: without the acks' seq, api.md §11).
      expect(history).toEqual([...acked].sort((a, b) => a.id - b.id).map(asHistory));
      expect(new Set(history.map((m) => m.id)).size).toBe(50);

      // The newest-first default page agrees.
      const res = await fetch(`${second.url}/api/messages?limit=200`, { headers: { authorization: `Bearer ${alice.token}` } });
      expect(((await res.json()) as ChatMessage[]).map((m) => m.id)).toEqual(history.map((m) => m.id).reverse());
    } finally {
      expect((await second.stop("SIGTERM")).code).toBe(0);
    }
  }, processTimeout);
});

describe("graceful shutdown under load", () => {
  test("SIGTERM mid-stream: exit 0 promptly; acked → stored once, refused → not stored; connections refused after", async () => {
    const server = await startServerProcess(productionEnv(loadDb.url));
    const users = await Promise.all([1, 2, 3].map(() => registerAt(server.url, uniqueName("load"))));
    // Each user on both transports.
    const sockets: { socket: ChatClient; user: number; transport: Transport }[] = [];
    for (const [user, { token }] of users.entries()) {
      for (const transport of transports) sockets.push({ socket: await connectTo(server.url, token, transport), user, transport });
    }

    type Outcome = { user: number; transport: Transport; content: string; clientId: string; startedAt: number; settledAt: number } & (
      | { kind: "ok"; message: ChatMessage }
      | { kind: "error"; code: string }
      | { kind: "no-answer" }
    );
    const outcomes: Outcome[] = [];
    let okCount = 0;
    let enough: (() => void) | undefined;
    const enoughTraffic = new Promise<void>((resolve) => (enough = resolve));

    // Two lanes per socket, each sending back to back until refused or its socket is gone.
    const lanes = sockets.flatMap(({ socket, user, transport }, s) =>
      [0, 1].map(async (lane) => {
        for (let i = 0; socket.connected; i++) {
          const sent = { user, transport, content: `load s${s} l${lane} #${i} ${crypto.randomUUID()}`, clientId: crypto.randomUUID() };
          const startedAt = performance.now();
          try {
            const ack = await sendWithAck(socket, { content: sent.content, clientId: sent.clientId }, 5_000);
            const settledAt = performance.now();
            if (ack.ok) {
              outcomes.push({ ...sent, kind: "ok", message: ack.message, startedAt, settledAt });
              if (++okCount === 60) enough?.();
            } else {
              outcomes.push({ ...sent, kind: "error", code: ack.error.code, startedAt, settledAt });
              break; // Refused (the server is going away): a client backs off rather than hammering.
            }
          } catch {
            // Timed out, or the socket closed with the ack outstanding.
            outcomes.push({ ...sent, kind: "no-answer", startedAt, settledAt: performance.now() });
          }
        }
      }),
    );

    // SIGTERM once traffic is flowing (60 acks in), with every lane busy.
    await enoughTraffic;
    const signalAt = performance.now();
    const stopped = await server.stop("SIGTERM");
    await Promise.all(lanes);

    expect(stopped.code).toBe(0);
    expect(stopped.ms).toBeLessThan(10_000);
    expect(server.logs.some((l) => l.msg === "stopped")).toBe(true);

    // The signal really landed mid-stream: sends were outstanding when it arrived.
    const outstanding = outcomes.filter((o) => o.startedAt < signalAt && o.settledAt > signalAt);
    expect(outstanding.length).toBeGreaterThan(0);
    // (Writes in flight at the signal being finished and acked is pinned down deterministically
    // in "SIGTERM with message writes in flight" below; here it is only counted.)
    const ackedAfterSignal = outcomes.filter((o) => o.kind === "ok" && o.settledAt > signalAt);

    const storedRows = async () => Map.groupBy(await loadDb.sql<{ id: number; content: string }[]>`SELECT id, content FROM messages`, (r) => r.content);
    const rows = await storedRows();
    for (const outcome of outcomes) {
      const stored = rows.get(outcome.content) ?? [];
      if (outcome.kind === "ok") {
        // Acked → committed, exactly once, under the id the ack gave.
        expect(stored).toEqual([{ id: outcome.message.id, content: outcome.content }]);
      } else if (outcome.kind === "error") {
        // Refused → nothing stored; refusals during shutdown say UNAVAILABLE (retry later).
        expect({ code: outcome.code, stored }).toEqual({ code: "UNAVAILABLE", stored: [] });
      } else {
        // No answer → the client cannot know; at most one row (the clientId resend below settles it).
        expect(stored.length).toBeLessThanOrEqual(1);
        // The server keeps existing sessions (polling ones too) open until their acks are
        // delivered, so a write it finished was acknowledged: nothing is stored behind the sender's back.
        expect({ unanswered: outcome.content, stored }).toEqual({ unanswered: outcome.content, stored: [] });
      }
    }
    // Nothing was stored that no client sent.
    const sentContents = new Set(outcomes.map((o) => o.content));
    for (const content of rows.keys()) expect(sentContents.has(content)).toBe(true);

    // The process is gone: new connections are refused.
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
    for (const transport of transports) await expect(connectTo(server.url, users[0]!.token, transport)).rejects.toThrow();
    for (const { socket } of sockets) socket.disconnect();

    // Recovery, as a client would do it: resend everything not acked ok, with the same clientId,
    // to the next process. Each message then exists exactly once; one stored before keeps its id.
    const next = await startServerProcess(productionEnv(loadDb.url));
    try {
      const resendSockets = await Promise.all(users.map(({ token }) => connectTo(next.url, token, "websocket")));
      for (const outcome of outcomes.filter((o) => o.kind !== "ok")) {
        const ack = await sendWithAck(resendSockets[outcome.user]!, { content: outcome.content, clientId: outcome.clientId });
        expect(ack).toMatchObject({ ok: true, message: { content: outcome.content } });
        const before = rows.get(outcome.content);
        if (before) expect(ack.message.id).toBe(before[0]!.id);
      }
      for (const socket of resendSockets) socket.disconnect();
      const after = await storedRows();
      expect(after.size).toBe(outcomes.length);
      for (const outcome of outcomes) expect(after.get(outcome.content)).toHaveLength(1);
    } finally {
      expect((await next.stop("SIGTERM")).code).toBe(0);
    }

    const summary = (kind: Outcome["kind"]) =>
      transports.map((tr) => `${tr} ${outcomes.filter((o) => o.kind === kind && o.transport === tr).length}`).join(", ");
    const unansweredStored = transports
      .map((tr) => `${tr} ${outcomes.filter((o) => o.kind === "no-answer" && o.transport === tr && rows.has(o.content)).length}`)
      .join(", ");
    console.info(
      `shutdown under load: exit ${stopped.code} in ${stopped.ms.toFixed(0)} ms; ${outstanding.length} sends outstanding at SIGTERM, ` +
        `${ackedAfterSignal.length} acked ok after it; ` +
        `acked ok (${summary("ok")}); refused UNAVAILABLE (${summary("error")}); unanswered (${summary("no-answer")}), ` +
        `of which stored (${unansweredStored})`,
    );
  }, processTimeout);
});

describe("SIGTERM with message writes in flight", () => {
  test("waits for them and acks them, refuses new messages and connections meanwhile, then exits 0", async () => {
    const server = await startServerProcess(productionEnv(drainDb.url));
    const alice = await registerAt(server.url, uniqueName("drain"));
    const socket = await connectTo(server.url, alice.token, "websocket");
    const lock = await lockMessages(drainDb.sql);
    try {
      const pending = [0, 1, 2, 3, 4].map((i) => sendWithAck(socket, { content: `in flight ${i}` }, 20_000).catch((error: Error) => error));
      // While the lock is held no send can succeed; one that settles anyway has failed: show it.
      const settledEarly = Promise.race(pending).then((ack) => {
        throw new Error(`a send settled while the table was locked: ${JSON.stringify(ack)}`);
      });
      // Writes to one channel go one at a time: the first waits on the lock, the other four
      // are accepted and queued behind it in the server; all five are in flight.
      await Promise.race([blockedWrites(drainDb.sql, 1), settledEarly]);

      const exited = server.stop("SIGTERM");
      await server.waitForLog((l) => l.msg === "shutting down");
      // Draining: still alive; new requests and handshakes get 503 UNAVAILABLE, new messages are refused.
      const turnedAway = await fetch(`${server.url}/healthz`);
      expect(turnedAway.status).toBe(503);
      expect(turnedAway.headers.get("retry-after")).toBe("1");
      expect(turnedAway.headers.get("x-request-id")).toBeTruthy();
      expect(await turnedAway.json()).toEqual({ error: { code: "UNAVAILABLE", message: expect.any(String) } });
      await expect(connectTo(server.url, alice.token, "polling")).rejects.toThrow();
      const late = await sendWithAck(socket, { content: "too late" });
      expect(late).toEqual({ ok: false, error: { code: "UNAVAILABLE", message: expect.any(String) } });
      expect(server.proc.exitCode).toBeNull();

      lock.release();
      await lock.done;
      const acks = await Promise.all(pending);
      for (const [i, ack] of acks.entries()) expect(ack).toMatchObject({ ok: true, message: { content: `in flight ${i}` } });
      expect((await exited).code).toBe(0);

      const rows = await drainDb.sql<{ id: number; content: string }[]>`SELECT id, content FROM messages ORDER BY id`;
      expect([...rows]).toEqual(acks.map((a) => ({ id: a.message.id, content: a.message.content })).sort((a, b) => a.id - b.id));
    } finally {
      lock.release();
      socket.disconnect();
    }
  }, processTimeout);

  test("a write stuck past SHUTDOWN_TIMEOUT_MS does not keep the process alive", async () => {
    const server = await startServerProcess(productionEnv(drainDb.url, { SHUTDOWN_TIMEOUT_MS: "1000" }));
    const bob = await registerAt(server.url, uniqueName("stuck"));
    const socket = await connectTo(server.url, bob.token, "websocket");
    const lock = await lockMessages(drainDb.sql);
    try {
      const stuck = sendWithAck(socket, { content: "stuck" }, 20_000).catch((error: Error) => error);
      await blockedWrites(drainDb.sql, 1);
      const { code, ms } = await server.stop("SIGTERM");
      expect(code).toBe(0);
      // The 1 s deadline, plus closing up; far less than the lock (held until after the exit).
      expect(ms).toBeLessThan(5_000);
      expect(ms).toBeGreaterThanOrEqual(900);
      expect(await stuck).toBeInstanceOf(Error);
      expect(server.logs.some((l) => l.msg === "stopped")).toBe(true);
    } finally {
      lock.release();
      socket.disconnect();
    }
  }, processTimeout);
});

describe("a refused configuration exits non-zero, names the variable, and prints no stack trace", () => {
  // Nothing listens here. Were a config wrongly accepted, the process would serve anyway
  // (production does not connect at start-up), be killed after 15 s, and fail on `signal`.
  const unreachable = "postgresql://postgres@127.0.0.1:1/none";
  const cases: [string, Record<string, string | undefined>, string[]][] = [
    ["no JWT_SECRET", { JWT_SECRET: undefined }, ["JWT_SECRET"]],
    ["an empty JWT_SECRET", { JWT_SECRET: "" }, ["JWT_SECRET"]],
    ["a 10-character JWT_SECRET", { JWT_SECRET: "0123456789" }, ["JWT_SECRET", "32"]],
    ["PORT=abc", { PORT: "abc" }, ["PORT"]],
    ["DATABASE_URL=mysql://x", { DATABASE_URL: "mysql://x" }, ["DATABASE_URL"]],
    ["no DATABASE_URL", { DATABASE_URL: undefined }, ["DATABASE_URL"]],
    ["several problems at once", { PORT: "abc", JWT_SECRET: undefined, LOG_LEVEL: "loud" }, ["PORT", "JWT_SECRET", "LOG_LEVEL"]],
  ];
  test.each(cases)("%s", async (_, overrides, named) => {
    const result = await runToExit(productionEnv(unreachable, overrides), 15_000);
    expect(result.signal).toBeNull();
    expect(result.code).not.toBe(0);
    for (const word of named) expect(result.stderr).toContain(word);
    // One readable message: no stack frames, no source excerpts, no error class dump.
    expect(result.stderr).not.toMatch(/^\s+at /m);
    expect(result.stderr).not.toMatch(/\.ts:\d+|node_modules|ConfigError|^\s*\d+ \| /m);
    // It never served.
    expect(result.stdout).not.toContain('"url"');
  }, processTimeout);
});
