import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { clientIp } from "../src/lib/client-ip.ts";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { expectError } from "./helpers/expect-error.ts";
import { expectRateLimited } from "./helpers/rate-limited.ts";
import { record, type Recorded } from "./helpers/recorder.ts";
import { expectUntilMarker, markerContent } from "./helpers/markers.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { nextEvent, sendWithAck, startTestServer, transports, uniqueName, type ChatClient, type Json, type TestServer } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §7 abuse limits: register/login per client IP (X-Forwarded-For only as far as
// TRUST_PROXY says), messages per user (burst and sustained) over both socket transports
// and REST alike; all answered with 429 RATE_LIMITED and a
// Retry-After. Windows are short (messages "5/2s"; register and login "3/8s", since three argon2id
// requests took over 2 s on a loaded machine and slipped into a second window), and each reset is waited for with the
// Retry-After the server gave (never more than the window), so the file stays quick.

const password = "correct horse battery";

// One server per configuration, each over its own database, started together.
/** The per-IP window: long enough that three register or login requests fit in it on a loaded machine. */
const ipWindow = 8;

const [ipServer, peerServer, userServer] = await Promise.all([
  // TRUST_PROXY=1 lets each test take its own address through X-Forwarded-For.
  startTestServer({ env: { RATE_LIMIT_AUTH_PER_IP: `3/${ipWindow}s`, TRUST_PROXY: "1" } }),
  startTestServer({ env: { RATE_LIMIT_AUTH_PER_IP: `3/${ipWindow}s`, TRUST_PROXY: "0" } }),
  // The per-user message limits (per-IP off).
  startTestServer({ env: { RATE_LIMIT_MESSAGES_BURST: "5/2s", RATE_LIMIT_MESSAGES_SUSTAINED: "8/6s" } }),
]);
const msgServer = userServer;
const json = { "content-type": "application/json" };

/** A fresh documentation address (RFC 5737) per call, so tests never share an IP budget. */
let ipCounter = 0;
const freshIp = () => {
  ipCounter += 1;
  return `198.51.${100 + Math.floor(ipCounter / 250)}.${(ipCounter % 250) + 1}`;
};

function post(server: TestServer, path: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(`${server.url}${path}`, { method: "POST", headers: { ...json, ...headers }, body: JSON.stringify(body) });
}

const xff = (value: string | undefined): Record<string, string> => (value === undefined ? {} : { "x-forwarded-for": value });

/** The socket ack/message:error form of the same refusal; returns retryAfter. */
function expectRateLimitedError(error: unknown, windowSeconds: number): number {
  expect(error).toEqual({ code: "RATE_LIMITED", message: expect.any(String), retryAfter: expect.any(Number) });
  const { retryAfter, message } = error as { retryAfter: number; message: string };
  expect(message.length).toBeGreaterThan(0);
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(windowSeconds);
  return retryAfter;
}

/** Waits out a Retry-After (bounded by the caller's window check), plus a little slack. */
const waitOut = (seconds: number) => Bun.sleep(seconds * 1000 + 150);

async function userCount(server: TestServer, username: string): Promise<number> {
  const [row] = await server.database.sql`SELECT count(*)::int AS n FROM users WHERE username = ${username}`;
  return (row as { n: number }).n;
}

async function sessionCount(server: TestServer, userId: number): Promise<number> {
  const [row] = await server.database.sql`SELECT count(*)::int AS n FROM sessions WHERE user_id = ${userId}`;
  return (row as { n: number }).n;
}

// ---------------------------------------------------------------------------------------------

describe("clientIp (unit)", () => {
  const rows: [label: string, forwardedFor: string | undefined, peer: string | undefined, hops: number, expected: string][] = [
    ["no trusted hops: the peer, header ignored", "203.0.113.9", "10.0.0.1", 0, "10.0.0.1"],
    ["no trusted hops, no header: the peer", undefined, "10.0.0.1", 0, "10.0.0.1"],
    ["one hop, 'a, b': the rightmost (added by our proxy)", "203.0.113.1, 203.0.113.2", "10.0.0.1", 1, "203.0.113.2"],
    ["two hops, 'a, b': the leftmost", "203.0.113.1, 203.0.113.2", "10.0.0.1", 2, "203.0.113.1"],
    ["two hops, 'x, a, b': the one before the last", "198.51.100.7, 203.0.113.1, 203.0.113.2", "10.0.0.1", 2, "203.0.113.1"],
    ["one hop, a single entry", "203.0.113.5", "10.0.0.1", 1, "203.0.113.5"],
    ["no spaces after commas", "203.0.113.1,203.0.113.2", "10.0.0.1", 1, "203.0.113.2"],
    ["more hops than entries: the first entry", "203.0.113.1, 203.0.113.2", "10.0.0.1", 5, "203.0.113.1"],
    ["IPv6 entry", "2001:db8::1", "10.0.0.1", 1, "2001:db8::1"],
    ["bracketed IPv6 entry", "[2001:db8::2]", "10.0.0.1", 1, "[2001:db8::2]"],
    ["trusted hops but no header: the peer", undefined, "10.0.0.1", 1, "10.0.0.1"],
    ["trusted hops, empty header: the peer", "", "10.0.0.1", 1, "10.0.0.1"],
    ["trusted hops, only commas and spaces: the peer", " , ,", "10.0.0.1", 1, "10.0.0.1"],
    ["junk '<script>': the peer", "<script>", "10.0.0.1", 1, "10.0.0.1"],
    ["junk 'unknown': the peer", "unknown", "10.0.0.1", 1, "10.0.0.1"],
    ["junk after a real entry: the peer", "203.0.113.1, <script>alert(1)</script>", "10.0.0.1", 1, "10.0.0.1"],
    ["a hostname: the peer", "proxy.example.com", "10.0.0.1", 1, "10.0.0.1"],
    ["too long (48 chars of address characters): the peer", "1:".repeat(24), "10.0.0.1", 1, "10.0.0.1"],
    ["too long (1000 digits): the peer", "1".repeat(1000), "10.0.0.1", 1, "10.0.0.1"],
    ["junk first entry reached by too many hops: the peer", "unknown, 203.0.113.2", "10.0.0.1", 5, "10.0.0.1"],
    ["missing peer, no hops: 'unknown'", "203.0.113.9", undefined, 0, "unknown"],
    ["missing peer, junk header: 'unknown'", "<script>", undefined, 1, "unknown"],
    ["missing peer, good header: the header", "203.0.113.9", undefined, 1, "203.0.113.9"],
  ];

  test.each(rows)("%s", (_label, forwardedFor, peer, hops, expected) => {
    expect(clientIp(forwardedFor, peer, hops)).toBe(expected);
  });
});

// ---------------------------------------------------------------------------------------------

describe("per-IP limit on register and login (RATE_LIMIT_AUTH_PER_IP=3/8s, TRUST_PROXY=1)", () => {
  /** Registers a user from a throwaway address, so no test's budget pays for the setup. */
  async function setupUser(server: TestServer) {
    const username = uniqueName("iplimit");
    const res = await post(server, "/api/auth/register", { username, password }, xff(freshIp()));
    if (res.status !== 201) throw new Error(`setup register: ${res.status} ${await res.text()}`);
    return (await res.json()) as { token: string; user: { id: number; username: string } };
  }

  type Attempt = { send(ip: string): Promise<Response>; ok: number; refusedLeftNoTrace(): Promise<void>; again(ip: string): Promise<Response> };

  const endpoints: [name: string, make: (server: TestServer) => Promise<Attempt>][] = [
    [
      "POST /api/auth/register",
      async (server) => {
        const refusedName = uniqueName("refused");
        let next = 0;
        return {
          ok: 201,
          // The first three register new accounts; the fourth tries `refusedName`.
          send: (ip) => post(server, "/api/auth/register", { username: ++next === 4 ? refusedName : uniqueName("ipreg"), password }, xff(ip)),
          async refusedLeftNoTrace() {
            expect(await userCount(server, refusedName)).toBe(0);
          },
          // After the reset the very name that was refused can be registered: nothing was reserved.
          again: (ip) => post(server, "/api/auth/register", { username: refusedName, password }, xff(ip)),
        };
      },
    ],
    [
      "POST /api/auth/login",
      async (server) => {
        const { user } = await setupUser(server);
        const login = (ip: string) => post(server, "/api/auth/login", { username: user.username, password }, xff(ip));
        let sessionsAfterThree = -1;
        let sent = 0;
        return {
          ok: 200,
          async send(ip) {
            if (++sent === 4) sessionsAfterThree = await sessionCount(server, user.id);
            return login(ip);
          },
          async refusedLeftNoTrace() {
            expect(sessionsAfterThree).toBe(4); // the registration's session and three logins
            expect(await sessionCount(server, user.id)).toBe(sessionsAfterThree);
          },
          again: login,
        };
      },
    ],
  ];

  // Concurrently: each from its own address, so one's budget is not the other's.
  test.concurrent.each(endpoints)("%s: 3 pass, the 4th is 429 with Retry-After and leaves no trace; other routes and addresses unaffected; reset after Retry-After", async (_name, make) => {
    const server = ipServer;
    const attempt = await make(server);
    const { token } = await setupUser(server);
    const ip = freshIp();

    for (let i = 0; i < 3; i++) expect((await attempt.send(ip)).status).toBe(attempt.ok);
    const retryAfter = await expectRateLimited(await attempt.send(ip), ipWindow);
    await attempt.refusedLeftNoTrace();

    // Still refused on a second try within the window.
    await expectRateLimited(await attempt.send(ip), ipWindow);

    // The same address is not limited anywhere else.
    for (let i = 0; i < 5; i++) {
      const health = await fetch(`${server.url}/healthz`, { headers: xff(ip) });
      expect(health.status).toBe(200);
      expect(health.headers.get("retry-after")).toBeNull();
      const users = await fetch(`${server.url}/api/users?limit=1`, { headers: { authorization: `Bearer ${token}`, ...xff(ip) } });
      expect(users.status).toBe(200);
      await users.body?.cancel();
    }
    // Another address is not limited by this one.
    expect((await attempt.send(freshIp())).status).toBe(attempt.ok);

    await waitOut(retryAfter);
    const after = await attempt.again(ip);
    expect(after.status).toBe(attempt.ok);
    expect(after.headers.get("retry-after")).toBeNull();
  });

  test("different X-Forwarded-For values are counted separately: 3 each", async () => {
    const server = ipServer;
    const [a, b] = [freshIp(), freshIp()];
    const wrong = (ip: string) => post(server, "/api/auth/login", { username: uniqueName("nobody"), password }, xff(ip));
    // Interleaved: six requests, three per address, all answered (401: no such user).
    for (let i = 0; i < 3; i++) {
      for (const ip of [a, b]) await expectError(await wrong(ip), 401, "INVALID_CREDENTIALS");
    }
    await expectRateLimited(await wrong(a), ipWindow);
    await expectRateLimited(await wrong(b), ipWindow);
  });

  test("the same client address shares one budget, whatever the client puts before it (only the last hop is trusted)", async () => {
    const server = ipServer;
    const client = freshIp();
    const wrong = (header: string) => post(server, "/api/auth/login", { username: uniqueName("nobody"), password }, xff(header));
    for (const header of [client, `1.1.1.1, ${client}`, `2.2.2.2, 3.3.3.3, ${client}`]) {
      await expectError(await wrong(header), 401, "INVALID_CREDENTIALS");
    }
    await expectRateLimited(await wrong(`4.4.4.4, ${client}`), ipWindow);
    await expectRateLimited(await wrong(client), ipWindow);
  });
});

describe("per-IP limit with TRUST_PROXY=0: X-Forwarded-For is ignored", () => {
  test("a new X-Forwarded-For on every request does not escape the limit of the TCP peer", async () => {
    const server = peerServer;
    const register = (ip: string | undefined) => post(server, "/api/auth/register", { username: uniqueName("peer"), password }, xff(ip));
    for (let i = 0; i < 3; i++) expect((await register(freshIp())).status).toBe(201);
    await expectRateLimited(await register(freshIp()), ipWindow);
    await expectRateLimited(await register(`${freshIp()}, ${freshIp()}`), ipWindow);
    await expectRateLimited(await register(undefined), ipWindow);
    await expectRateLimited(await post(server, "/api/auth/login", { username: uniqueName("peer"), password }, xff(freshIp())), ipWindow);
    // Not limited elsewhere.
    expect((await fetch(`${server.url}/healthz`, { headers: xff(freshIp()) })).status).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------

// Failed logins, per username and address: test/login-limits.test.ts.

// ---------------------------------------------------------------------------------------------

describe("messages per user (RATE_LIMIT_MESSAGES_BURST=5/2s, RATE_LIMIT_MESSAGES_SUSTAINED=8/6s)", () => {
  const { connect } = socketTracker(msgServer);

  async function storedContents(userId: number): Promise<string[]> {
    const rows = await msgServer.database.sql`SELECT content FROM messages WHERE user_id = ${userId} ORDER BY id`;
    return (rows as { content: string }[]).map((r) => r.content);
  }

  async function sendOk(socket: ChatClient, content: string): Promise<ChatMessage> {
    const ack = await sendWithAck(socket, { content });
    expect(ack).toMatchObject({ ok: true, message: { content } });
    return ack.message as ChatMessage;
  }

  test.each(transports)(
    "over %s: the 6th message in a burst is refused in the ack, not stored, not broadcast; without an ack message:error; the connection and other users carry on",
    async (transport) => {
      const server = msgServer;
      const [sender, observer, other] = [await server.register(), await server.register(), await server.register()];
      const senderSocket = await connect(sender.token, transport);
      const observerSocket = await connect(observer.token, "websocket");
      const otherSocket = await connect(other.token, transport === "websocket" ? "polling" : "websocket");
      const recorders = [record(senderSocket), record(observerSocket)];

      const accepted: ChatMessage[] = [];
      for (let i = 1; i <= 5; i++) accepted.push(await sendOk(senderSocket, `burst ${transport} ${i}`));

      const refused = await sendWithAck(senderSocket, { content: `refused ${transport} 6` });
      expect(Object.keys(refused).sort()).toEqual(["error", "ok"]);
      expect(refused.ok).toBe(false);
      expectRateLimitedError(refused.error, 2);

      // Without an ack: the sender alone gets message:error with the same kind of error.
      const errorEvent = nextEvent(senderSocket, "message:error");
      senderSocket.emit("message", { content: `refused ${transport} 7` });
      const noAckError = await errorEvent;
      expectRateLimitedError(noAckError, 2);

      // Still connected, and another user sends at once (their budget is their own): the marker,
      // before which each socket got everything the server emitted to it (the marker technique).
      expect(senderSocket.connected).toBe(true);
      const broadcasts: Recorded[] = accepted.map((m) => ["message", m]);
      const marker = await expectUntilMarker(() => sendOk(otherSocket, markerContent()), recorders, [[...broadcasts, ["message:error", noAckError]], broadcasts]);

      expect(await storedContents(sender.user.id)).toEqual(accepted.map((m) => m.content));
      expect(await storedContents(other.user.id)).toEqual([marker.content]);
    },
  );

  // Concurrently (no recorders here, so their broadcasts disturb nothing); sockets closed locally, not in afterEach.
  test.concurrent.each(transports)("over %s: after the burst window sending works again on the same connection, but the sustained limit still trips", async (transport) => {
    const server = msgServer;
    const sender = await server.register();
    const socket = await server.connect(sender.token, transport);
    try {
      await burstThenSustained(socket, sender.user.id);
    } finally {
      socket.disconnect();
    }
  });

  async function burstThenSustained(socket: ChatClient, userId: number) {

    for (let i = 1; i <= 5; i++) await sendOk(socket, `first ${i}`);
    const burstWait = expectRateLimitedError((await sendWithAck(socket, { content: "over the burst" })).error, 2);
    await waitOut(burstWait);

    // The burst budget is back: the next message goes through on the same connection.
    await sendOk(socket, "after the burst window");
    // Keep going until refused; the sustained window (8 per 6 s) has not ended, so it must trip.
    let sustained: { wait: number; acceptedAfterReset: number } | undefined;
    for (let i = 2; i <= 5 && sustained === undefined; i++) {
      const ack = await sendWithAck(socket, { content: `after reset ${i}` });
      if (!ack.ok) sustained = { wait: expectRateLimitedError(ack.error, 6), acceptedAfterReset: i - 1 };
    }
    expect(sustained).toBeDefined();
    // A burst refusal would say at most 2 s; this is the longer sustained window speaking.
    expect(sustained!.wait).toBeGreaterThan(2);
    // At most 8 in the sustained window (a refused attempt may or may not use up a point).
    expect(sustained!.acceptedAfterReset).toBeGreaterThanOrEqual(2);
    const stored = await storedContents(userId);
    expect(stored.length).toBe(5 + sustained!.acceptedAfterReset);
    expect(stored.length).toBeLessThanOrEqual(8);
    expect(stored).not.toContain("over the burst");
    expect(socket.connected).toBe(true);
  }

  test("REST POST /api/messages shares the same per-user budget: 429 with Retry-After, not stored", async () => {
    const server = msgServer;
    const [sender, other] = [await server.register(), await server.register()];
    const socket = await connect(sender.token, "websocket");
    const rest = (token: string, content: string) =>
      fetch(`${server.url}/api/messages`, { method: "POST", headers: { ...json, authorization: `Bearer ${token}` }, body: JSON.stringify({ content }) });

    for (let i = 1; i <= 3; i++) await sendOk(socket, `socket ${i}`);
    for (let i = 4; i <= 5; i++) {
      const res = await rest(sender.token, `rest ${i}`);
      expect(res.status).toBe(201);
      expect(res.headers.get("retry-after")).toBeNull();
      await res.body?.cancel();
    }
    await expectRateLimited(await rest(sender.token, "rest 6"), 2);
    expectRateLimitedError((await sendWithAck(socket, { content: "socket 7" })).error, 2);

    // Reading history is not a message; another user posts freely.
    const history = await fetch(`${server.url}/api/messages?limit=10`, { headers: { authorization: `Bearer ${sender.token}` } });
    expect(history.status).toBe(200);
    await history.body?.cancel();
    const otherRes = await rest(other.token, "someone else");
    expect(otherRes.status).toBe(201);
    await otherRes.body?.cancel();

    expect(await storedContents(sender.user.id)).toEqual(["socket 1", "socket 2", "socket 3", "rest 4", "rest 5"]);
  });

  test("edits spend the same budget (each is broadcast like a message): the 6th edit or message is 429 and changes nothing", async () => {
    const server = msgServer;
    const sender = await server.register();
    const socket = await connect(sender.token, "polling");
    const edit = (id: number, content: string) =>
      fetch(`${server.url}/api/messages/${id}`, { method: "PATCH", headers: { ...json, authorization: `Bearer ${sender.token}` }, body: JSON.stringify({ content }) });

    const first = await sendOk(socket, "version 1");
    for (let v = 2; v <= 5; v++) {
      const res = await edit(first.id, `version ${v}`);
      expect(res.status).toBe(200);
      await res.body?.cancel();
    }
    await expectRateLimited(await edit(first.id, "version 6"), 2);
    expectRateLimitedError((await sendWithAck(socket, { content: "one message too many" })).error, 2);
    expect(await storedContents(sender.user.id)).toEqual(["version 5"]);
  });
});
