import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createTestDatabase } from "./helpers/db.ts";
import { expectError } from "./helpers/expect-error.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { hold, until, waitingForLocks } from "./helpers/locks.ts";
import { timed } from "./helpers/wait.ts";
import { serverCancelGraceMs } from "../src/lib/db.ts";
import { connectTo, productionEnv, registerAt, startServerProcess } from "./helpers/process.ts";
import { sendWithAck, transports, uniqueName, type ChatClient } from "./helpers/server.ts";
import { hostAndPort, startTcpProxy, throughProxy } from "./helpers/tcp-proxy.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Issue 7, item 1: PostgreSQL stops answering while the service runs (the production entry point,
// as a child process, reaching the database through a TCP proxy the test controls). Two ways it
// goes: every connection reset and new ones refused (`cut`: a restart, a failover), and
// connections that stay open with nothing coming back (`stall`: a partition, the case where a
// service without deadlines hangs). Either way: sends are refused UNAVAILABLE within a bound and
// never acked ok, REST answers 503 in the error shape, /readyz is not ready, and once the database
// is back the same process serves again, with every message acked before the outage still there.

/** The deadline the service runs with: every database round trip, connecting included. */
const databaseTimeoutMs = 1_000;
/**
 * The longest an answer may take during an outage: a message may wait for the batch ahead of it
 * to time out, then for its own (the server's statement_timeout, and the client's grace for the
 * cancellation to arrive). Plus scheduling slack.
 */
const answerBoundMs = 2 * (databaseTimeoutMs + serverCancelGraceMs) + 1_500;

const database = await createTestDatabase();
const proxy = await startTcpProxy(hostAndPort(database.url, 5432));
const server = await startServerProcess(productionEnv(throughProxy(database.url, proxy), { DATABASE_TIMEOUT_MS: String(databaseTimeoutMs) }));
const alice = await registerAt(server.url, uniqueName("alice"));
const bearer = { authorization: `Bearer ${alice.token}` };
const sockets = await Promise.all(transports.map((transport) => connectTo(server.url, alice.token, transport)));
afterAll(async () => {
  for (const socket of sockets) socket.disconnect();
  await server.stop("SIGTERM");
});

/** How many times each content is stored (0 for none). */
async function storedCounts(contents: string[]): Promise<number[]> {
  const rows = await database.sql<{ content: string; n: number }[]>`
    SELECT content, count(*)::int AS n FROM messages WHERE content IN ${database.sql(contents)} GROUP BY content`;
  const counts = new Map(rows.map((r) => [r.content, r.n]));
  return contents.map((c) => counts.get(c) ?? 0);
}

/** Sends `n` messages on every socket at once (each with a clientId); the acks, in order. */
async function sendBurst(label: string, n: number) {
  const sent = sockets.flatMap((socket, s) =>
    Array.from({ length: n }, (_, i) => ({ socket, payload: { content: `${label} s${s} #${i} ${crypto.randomUUID()}`, clientId: crypto.randomUUID() } })),
  );
  const acks = await Promise.all(
    sent.map(({ socket, payload }) => timed(() => sendWithAck(socket, payload, answerBoundMs + 5_000))),
  );
  return sent.map(({ socket, payload }, i) => ({ socket, payload, ack: acks[i]!.value, ms: acks[i]!.ms }));
}

const get = (path: string) => fetch(`${server.url}${path}`, { headers: bearer });
const post = (path: string, body: unknown) =>
  fetch(`${server.url}${path}`, { method: "POST", headers: { ...bearer, "content-type": "application/json" }, body: JSON.stringify(body) });

/** The REST requests checked during an outage: reads, writes, auth, and readiness. */
const restDuringOutage: [string, () => Promise<Response>][] = [
  ["GET /api/messages/search", () => get("/api/messages/search?q=outage")],
  ["GET /api/users", () => get("/api/users?limit=7")],
  ["GET /api/channels", () => get("/api/channels")],
  ["POST /api/messages", () => post("/api/messages", { content: `rest during outage ${crypto.randomUUID()}` })],
  ["POST /api/auth/login", () => post("/api/auth/login", { username: alice.user.username, password: "correct horse battery" })],
  ["POST /api/auth/register", () => post("/api/auth/register", { username: uniqueName("bob"), password: "correct horse battery" })],
  ["GET /readyz", () => fetch(`${server.url}/readyz`)],
];

async function whileDown(failure: string, ingoing: () => void) {
  // Acked before the outage.
  const before = await sendBurst(`before ${failure}`, 10);
  expect(before.map((s) => s.ack.ok)).toEqual(before.map(() => true));
  // A reader whose session was just checked (sessions are re-read every 30 s) and who has read the
  // newest page of general once, so it is in memory.
  const reader = await registerAt(server.url, uniqueName("reader"));
  const readNewest = () => fetch(`${server.url}/api/messages?limit=50`, { headers: { authorization: `Bearer ${reader.token}` } });
  const newest = await (await readNewest()).json();
  // A user whose session this instance has not read yet.
  const newcomer = await registerAt(server.url, uniqueName("newcomer"));

  ingoing();

  // Sends: every one answered UNAVAILABLE within the bound, none ok, on both transports.
  const during = await sendBurst(`during ${failure}`, 5);
  for (const { ack, ms } of during) {
    expect({ ack, inBound: ms < answerBoundMs }).toEqual({ ack: { ok: false, error: { code: "UNAVAILABLE", message: expect.any(String) } }, inBound: true });
  }
  // The connections themselves stay up.
  expect(sockets.map((s) => s.connected)).toEqual(sockets.map(() => true));

  // REST: 503 UNAVAILABLE in the error shape, within the bound; liveness still answers.
  const answers = await Promise.all(restDuringOutage.map(([, request]) => timed(request)));
  const slowest = (times: number[]) => Math.max(...times).toFixed(0);
  console.info(
    `${failure} (DATABASE_TIMEOUT_MS=${databaseTimeoutMs}): ${during.length} sends refused UNAVAILABLE, slowest in ${slowest(during.map((d) => d.ms))} ms; ` +
      `REST 503, slowest in ${slowest(answers.map((a) => a.ms))} ms`,
  );
  for (const [i, { value: res, ms }] of answers.entries()) {
    expect({ request: restDuringOutage[i]![0], inBound: ms < answerBoundMs }).toEqual({ request: restDuringOutage[i]![0], inBound: true });
    await expectError(res, 503, "UNAVAILABLE");
  }
  expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  // What needs no database is still served: the newest history, kept in memory by this (single)
  // instance and current, since nothing can be committed meanwhile.
  const served = await timed(readNewest);
  expect({ status: served.value.status, body: await served.value.json(), inBound: served.ms < answerBoundMs }).toEqual({ status: 200, body: newest, inBound: true });

  // A new socket is told the service is unavailable, not that its token is bad (which would send
  // a client back to the login screen): whether or not its session was read before the outage.
  const refused = await Promise.all(
    [alice, newcomer].map((user) =>
      connectTo(server.url, user.token, "websocket").then(
        (socket: ChatClient) => (socket.disconnect(), "connected"),
        (error: Error) => error.message,
      ),
    ),
  );
  expect(refused).toEqual(["Unavailable", "Unavailable"]);
  return { before, during };
}

async function afterRecovery(failure: string, { before, during }: Awaited<ReturnType<typeof whileDown>>, restore: () => void) {
  restore();
  // The same process recovers by itself: ready again, sends acked, REST served.
  await until(async () => (await fetch(`${server.url}/readyz`)).status === 200, "ready again", 10_000);
  const after = await sendBurst(`after ${failure}`, 3);
  expect(after.map((s) => s.ack.ok)).toEqual(after.map(() => true));
  expect((await get("/api/messages")).status).toBe(200);

  // Every message acked before the outage is stored exactly once.
  expect(await storedCounts(before.map((s) => s.payload.content))).toEqual(before.map(() => 1));
  // A refused message may be resent with its clientId: stored once, however its first try ended.
  const resent = await Promise.all(during.map(({ socket, payload }) => sendWithAck(socket, payload)));
  expect(resent.map((ack) => ack.ok)).toEqual(during.map(() => true));
  expect(await storedCounts(during.map((s) => s.payload.content))).toEqual(during.map(() => 1));
}

describe("the database resets every connection and refuses new ones (cut)", () => {
  test("sends refused UNAVAILABLE promptly, REST 503, not ready; recovers by itself; nothing acked is lost", async () => {
    const outage = await whileDown("cut", () => proxy.cut());
    // Refused while the database could not be reached at all: none of them was stored.
    expect(await storedCounts(outage.during.map((s) => s.payload.content))).toEqual(outage.during.map(() => 0));
    await afterRecovery("cut", outage, () => proxy.restore());
  });
});

describe("the database stops answering on open connections (stall)", () => {
  test("sends refused UNAVAILABLE within the deadline, REST 503, not ready; recovers by itself; nothing acked is lost", async () => {
    const outage = await whileDown("stall", () => proxy.stall());
    await afterRecovery("stall", outage, () => proxy.restore());
  });

  test("it comes back but the connections open during the stall stay silent (half-open): those are dropped at their deadline and the service recovers", async () => {
    const outage = await whileDown("half-open stall", () => proxy.stall());
    await afterRecovery("half-open stall", outage, () => proxy.restore({ abandon: true }));
    // No connection the pool still hands out is one of the silent ones: a run of requests, each
    // served well within the deadline.
    for (let i = 0; i < 30; i++) {
      const { value: res, ms } = await timed(() => get(`/api/users?limit=${1 + (i % 5)}&after=${i + 1}`));
      expect({ status: res.status, quick: ms < databaseTimeoutMs / 2 }).toEqual({ status: 200, quick: true });
    }
    const sent = await sendBurst("after half-open", 10);
    expect(sent.map((s) => s.ack.ok)).toEqual(sent.map(() => true));
  });

  test("a commit whose answer is lost (it stalls right after the INSERT got through): refused UNAVAILABLE, never ok; the resend with its clientId finds it, stored once", async () => {
    // Writes held by a lock, so they are surely on their way when the database stops answering.
    const lock = await hold(database.sql, "LOCK TABLE messages IN EXCLUSIVE MODE");
    let burst: ReturnType<typeof sendBurst>;
    try {
      burst = sendBurst("answer lost", 10);
      await until(async () => (await waitingForLocks(database.sql)).length > 0, "a write waiting on the lock");
      proxy.stall();
    } finally {
      // The waiting INSERT now commits, but its answer is held until the service has given up.
      await lock.release();
    }
    await Bun.sleep(databaseTimeoutMs + serverCancelGraceMs + 500);
    proxy.restore();
    const sent = await burst;
    const answers = sent.map(({ ack }) => (ack.ok ? "ok" : ack.error.code));
    expect(answers.filter((a) => a !== "ok" && a !== "UNAVAILABLE")).toEqual([]);

    // ok means stored, once.
    const acked = sent.filter((s) => s.ack.ok);
    expect(await storedCounts(acked.map((s) => s.payload.content))).toEqual(acked.map(() => 1));
    // Refused, yet some of them committed: UNAVAILABLE says "not confirmed", which is why a client
    // resends with the clientId. Then each is stored exactly once.
    const refused = sent.filter((s) => !s.ack.ok);
    expect(refused.length).toBeGreaterThan(0);
    expect(await storedCounts(refused.map((s) => s.payload.content))).toContain(1);
    const resent = await Promise.all(refused.map(({ socket, payload }) => sendWithAck(socket, payload)));
    expect(resent.map((ack) => ack.ok)).toEqual(refused.map(() => true));
    expect(await storedCounts(sent.map((s) => s.payload.content))).toEqual(sent.map(() => 1));
  });
});

describe("the database answers, but too slowly (a lock held past the deadline)", () => {
  test("the send is refused UNAVAILABLE at the deadline, and the database cancels it: never stored later", async () => {
    const lock = await hold(database.sql, "LOCK TABLE messages IN EXCLUSIVE MODE");
    let refusal: Awaited<ReturnType<typeof timed>>;
    const content = `slow ${crypto.randomUUID()}`;
    try {
      refusal = await timed(() => sendWithAck(sockets[0]!, { content, clientId: crypto.randomUUID() }, answerBoundMs + 5_000));
      // The statement gave up in the server, not only in the client: nothing waits on the lock.
      expect(await waitingForLocks(database.sql)).toEqual([]);
    } finally {
      await lock.release();
    }
    expect(refusal.value).toEqual({ ok: false, error: { code: "UNAVAILABLE", message: expect.any(String) } });
    expect(refusal.ms).toBeGreaterThanOrEqual(databaseTimeoutMs - 50);
    expect(refusal.ms).toBeLessThan(databaseTimeoutMs + serverCancelGraceMs);
    // Once the lock is gone, the refused message does not appear behind its sender's back.
    await Bun.sleep(200);
    expect(await storedCounts([content])).toEqual([0]);
    expect((await sendWithAck(sockets[0]!, { content: `${content} again` })).ok).toBe(true);
  });
});

describe("through every outage above", () => {
  test("nothing failed as INTERNAL: the service logged no error, only warnings for the refusals", async () => {
    const errors = server.logs.filter((entry) => (entry.level as number) >= 50);
    expect(errors).toEqual([]);
    expect(server.logs.some((entry) => entry.level === 40 && entry.code === "UNAVAILABLE")).toBe(true);
  });
});
