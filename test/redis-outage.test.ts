import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { createLogger } from "../src/lib/logger.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { until } from "./helpers/locks.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { timed } from "./helpers/wait.ts";
import { isMessage, record } from "./helpers/recorder.ts";
import { sendWithAck, startTestServer, testRedisUrl, uniqueName, type ChatClient, type Json, type TestServer } from "./helpers/server.ts";
import { hostAndPort, startTcpProxy, throughProxy } from "./helpers/tcp-proxy.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Issue 7, item 6: Redis goes away under two instances that share it (api.md §9), through a TCP
// proxy the test controls: every connection reset and new ones refused (`cut`: a restart), or
// connections left open with nothing coming back (`stall`: a partition, where a client without
// deadlines hangs). Meanwhile each instance serves its own clients promptly (sends, broadcasts
// among them, typing, connecting, REST, rate limits), reports itself ready but degraded, and logs
// the outage once; once Redis is back, broadcasts cross instances again, readiness is ok, presence
// is global again, and a logout made meanwhile reaches the other instance.

/** The longest a send, a request or a connection may take during the outage (Redis commands time out after 1 s). */
const promptMs = 3_000;
/** /readyz answers within its 2 s deadline. */
const readyBoundMs = 2_500;
/** From restore() to cross-instance delivery and readiness again (reconnection attempts are at most 1 s apart). */
const recoveryMs = 5_000;

const proxy = await startTcpProxy(hostAndPort(testRedisUrl, 6379));
const redisUrl = throughProxy(testRedisUrl, proxy);
const prefix = `test:${crypto.randomUUID().slice(0, 8)}:`;
const env = { RATE_LIMIT_MESSAGES_BURST: "5/10s", RATE_LIMIT_TYPING: "1/2s" };

type LogLine = Record<string, unknown> & { level: number; msg: string };
/** A logger writing JSON lines to an array, as the service writes them to stdout. */
function capturedLogger() {
  const lines: LogLine[] = [];
  return { lines, logger: createLogger("info", { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) }) };
}
const logsA = capturedLogger();
const logsB = capturedLogger();
const a = await startTestServer({ redisPrefix: prefix, redisUrl, env, logger: logsA.logger });
const b = await startTestServer({ redisPrefix: prefix, redisUrl, env, database: a.database, logger: logsB.logger });

// After each test: Redis back first, then the test's sockets closed (afterEach hooks run in the order registered).
afterEach(() => {
  proxy.restore();
});
/** Sockets opened by one test, on the server given (`connect(user, transport, server)`), closed after it. */
const { connect } = socketTracker();

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

async function readiness(server: TestServer): Promise<{ status: number; body: Json; ms: number }> {
  const { value: res, ms } = await timed(() => fetch(`${server.url}/readyz`));
  return { status: res.status, body: await res.json(), ms };
}

/** Sends through `socket`, expecting an ok ack within the bound; the stored message. */
async function sendPromptly(socket: ChatClient, content: string): Promise<ChatMessage> {
  const { value: ack, ms } = await timed(() => sendWithAck(socket, { content }));
  expect(ack.ok).toBe(true);
  expect(ms).toBeLessThan(promptMs);
  return ack.message as ChatMessage;
}

/** Until both instances reach Redis (a test starts that way even if the previous one failed mid-outage). */
async function redisBackEverywhere() {
  for (const server of [a, b]) await until(async () => (await readiness(server)).body.status === "ok", "ready again", recoveryMs);
}

/** Log lines with this message since line `from`. */
const logged = (logs: { lines: LogLine[] }, msg: string, from: number) => logs.lines.slice(from).filter((l) => l.msg === msg);

/**
 * Two users on each instance, connected (and a message across, both ways) while Redis is up;
 * then `fail()`, with everything below asserted during the outage; then restore() and recovery.
 */
async function survivesOutage(fail: () => void) {
  await redisBackEverywhere();
  const [alice, carol, bob, dave] = [await a.register(uniqueName("alice")), await a.register(uniqueName("carol")), await b.register(uniqueName("bob")), await b.register(uniqueName("dave"))];
  const onA = [await connect(alice, "websocket", a), await connect(carol, "polling", a)] as const;
  const onB = [await connect(bob, "websocket", b), await connect(dave, "polling", b)] as const;
  const [carolSees, bobSees, daveSees] = [record(onA[1]), record(onB[0]), record(onB[1])];
  // Up: A's message reaches B and B's reaches A (B's stream reader has an offset to resume from).
  const before = await sendPromptly(onA[0], "before the outage");
  await bobSees.until(isMessage(before.id));
  const back = await sendPromptly(onB[1], "before the outage, from B");
  await carolSees.until(isMessage(back.id));
  const [fromA, fromB] = [logsA.lines.length, logsB.lines.length];

  fail();

  // Each instance serves its own clients: ok acks within the bound, and the instance's other clients get the message.
  const duringA = await sendPromptly(onA[0], "during the outage, on A");
  expect(await carolSees.until(isMessage(duringA.id))).toContainEqual(["message", duringA]);
  const duringB = await sendPromptly(onB[1], "during the outage, on B");
  expect(await bobSees.until(isMessage(duringB.id))).toContainEqual(["message", duringB]);
  // Typing (throttled through the rate limiter) is relayed on the instance.
  const typed = await timed(() => onA[0].timeout(promptMs).emitWithAck("typing", { channelId: 1 }));
  expect(typed.value).toEqual({ ok: true });
  await carolSees.until(([event, payload]) => event === "typing" && (payload as Json).userId === alice.user.id);
  // REST: a send and a read.
  const posted = await timed(() => fetch(`${b.url}/api/messages`, { method: "POST", headers: { "content-type": "application/json", ...bearer(dave.token) }, body: JSON.stringify({ content: "during the outage, over REST" }) }));
  expect(posted.value.status).toBe(201);
  expect(posted.ms).toBeLessThan(promptMs);
  await daveSees.until(isMessage(((await posted.value.json()) as ChatMessage).id));
  // A new channel: its creator joins it (the membership change, announced to the other instances, is lost; not here).
  const created = await timed(() => fetch(`${a.url}/api/channels`, { method: "POST", headers: { "content-type": "application/json", ...bearer(alice.token) }, body: JSON.stringify({ name: uniqueName("outage"), kind: "public" }) }));
  expect(created.value.status).toBe(201);
  expect(created.ms).toBeLessThan(promptMs);
  const history = await timed(() => fetch(`${a.url}/api/messages?limit=5`, { headers: bearer(alice.token) }));
  expect(history.value.status).toBe(200);
  expect(((await history.value.json()) as ChatMessage[]).map((m) => m.id)).toContain(duringA.id);
  expect(history.ms).toBeLessThan(promptMs);
  // A new connection (presence is counted on connecting), and presence as this instance sees it: its own users.
  const erin = await a.register(uniqueName("erin"));
  const connected = await timed(() => connect(erin, "websocket", a));
  expect(connected.ms).toBeLessThan(promptMs);
  const presence = await timed(async () => (await (await fetch(`${a.url}/api/presence`, { headers: bearer(alice.token) })).json()) as number[]);
  expect(presence.ms).toBeLessThan(promptMs);
  expect(presence.value).toEqual(expect.arrayContaining([alice.user.id, carol.user.id, erin.user.id]));
  // Ready, but degraded, on both instances, within the readiness deadline.
  for (const server of [a, b]) {
    const ready = await readiness(server);
    expect(ready.ms).toBeLessThan(readyBoundMs);
    expect([ready.status, ready.body]).toEqual([200, { status: "degraded", checks: { database: "ok", redis: "unavailable" } }]);
  }
  // Logged once per instance, with the error, however many commands failed and reconnections were tried.
  const instances = [[logsA, fromA], [logsB, fromB]] as const;
  for (const [logs, from] of instances) await until(() => logged(logs, "redis unavailable", from).length > 0, "the outage logged", promptMs);
  await Bun.sleep(1_500);
  for (const [logs, from] of instances) {
    const lines = logged(logs, "redis unavailable", from);
    expect(lines).toHaveLength(1);
    expect(lines[0]!.level).toBe(40);
    expect(typeof (lines[0]!.err as Json)?.message).toBe("string");
  }

  proxy.restore();

  // Ready again, logged once, and messages cross instances again, both ways.
  const restored = performance.now();
  await redisBackEverywhere();
  for (const server of [a, b]) expect(await readiness(server)).toMatchObject({ status: 200, body: { status: "ok", checks: { database: "ok", redis: "ok" } } });
  for (const [logs, from] of instances) {
    expect(logged(logs, "redis available again", from)).toEqual([expect.objectContaining({ level: 30 })]);
  }
  const afterA = await sendPromptly(onA[0], "after the outage, on A");
  expect(await bobSees.until(isMessage(afterA.id), recoveryMs)).toContainEqual(["message", afterA]);
  const afterB = await sendPromptly(onB[1], "after the outage, on B");
  expect(await carolSees.until(isMessage(afterB.id), recoveryMs)).toContainEqual(["message", afterB]);
  expect(performance.now() - restored).toBeLessThan(2 * recoveryMs);
  // Presence is global again: A's users, counted while Redis was away, are listed by B.
  await until(
    async () => {
      const ids = (await (await fetch(`${b.url}/api/presence`, { headers: bearer(bob.token) })).json()) as number[];
      return [alice, carol, erin, bob, dave].every((u) => ids.includes(u.user.id));
    },
    "presence merged again",
    recoveryMs,
  );
  // Past the command timeout after the restore: the connection made then is still up (no second outage from a
  // timer of the old one), and nothing else was worth a warning: no failure per command, no unhandled rejection,
  // no publish-order stall.
  await Bun.sleep(restored + 1_500 - performance.now());
  for (const [logs, from] of instances) {
    expect(logged(logs, "redis unavailable", from)).toHaveLength(1);
    expect(logged(logs, "redis available again", from)).toHaveLength(1);
    expect(logs.lines.slice(from).filter((l) => l.level >= 40 && l.msg !== "redis unavailable")).toEqual([]);
  }
}

describe("a Redis outage under two instances", () => {
  test("cut (connections reset, new ones refused): each instance serves its own clients, degraded; cross-instance delivery resumes after", async () => {
    await survivesOutage(() => proxy.cut());
  });

  test("stall (connections open, nothing answers): the same, within the same bounds", async () => {
    await survivesOutage(() => proxy.stall());
  });

  test("a logout during the outage reaches the other instance once Redis is back: its socket there is cut, its token refused", async () => {
    await redisBackEverywhere();
    const mallory = await a.register(uniqueName("mallory"));
    const socket = await connect(mallory, "websocket", b);
    // B has her session cached as alive.
    expect((await fetch(`${b.url}/api/users/me`, { headers: bearer(mallory.token) })).status).toBe(200);
    const cut = new Promise<string>((resolve) => socket.once("disconnect", (reason) => resolve(reason)));
    proxy.cut();
    const logout = await timed(() => fetch(`${a.url}/api/auth/logout-all`, { method: "POST", headers: bearer(mallory.token) }));
    expect(logout.value.status).toBe(204);
    expect(logout.ms).toBeLessThan(promptMs);
    // A refuses her token at once; B cannot know until Redis is back.
    expect((await fetch(`${a.url}/api/users/me`, { headers: bearer(mallory.token) })).status).toBe(401);
    proxy.restore();
    const reason = await Promise.race([cut, Bun.sleep(recoveryMs).then(() => "still connected")]);
    expect(reason).toBe("io server disconnect");
    await until(async () => (await fetch(`${b.url}/api/users/me`, { headers: bearer(mallory.token) })).status === 401, "B refuses the token", recoveryMs);
  });

  test("rate limits still apply while Redis is away (in memory per instance): the burst of 5 per 10 s", async () => {
    const user = await a.register();
    const socket = await connect(user, "websocket", a);
    proxy.cut();
    const results: unknown[] = [];
    for (let i = 0; i < 6; i++) {
      const { value: ack, ms } = await timed(() => sendWithAck(socket, { content: `limited ${i}` }));
      expect(ms).toBeLessThan(promptMs);
      results.push(ack.ok ? true : ack.error.code);
    }
    expect(results).toEqual([true, true, true, true, true, "RATE_LIMITED"]);
  });
});
