import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { decode, sign } from "hono/jwt";
import { io as ioClient } from "socket.io-client";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { asHistory, expectMessageShape, isMessage, record, type Recorded, type Recorder } from "./helpers/recorder.ts";
import { expectUntilMarker, markerContent } from "./helpers/markers.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { sendWithAck, startTestServer, testJwtSecret, transports, type ChatClient, type Registered, type Transport } from "./helpers/server.ts";
import { b64url, now } from "./helpers/tokens.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §3: the Socket.IO handshake, the `message` event, its ack, its broadcast, and
// what the server stores. Every socket test runs over both transports.

const t = await startTestServer();

type Ack = { ok: true; message: ChatMessage } | { ok: false; error: { code: string; message: string; details?: { path: string; message: string }[] } };

// ---------------------------------------------------------------------------------------
// Helpers

/** Sockets opened by one test, closed after it so no test leaks listeners into the next. */
const { connect } = socketTracker(t);

/** Emits `message` with any argument list plus an ack, and resolves with the ack's result. */
function emitWithAck(socket: ChatClient, ...args: unknown[]): Promise<Ack> {
  return (socket.timeout(5_000) as unknown as { emitWithAck(event: string, ...a: unknown[]): Promise<Ack> }).emitWithAck("message", ...args);
}

/** The marker technique (helpers/markers.ts), the marker sent (to general) by `sender`. */
const expectOnlyMarker = (sender: ChatClient, recorders: Recorder[], before?: Recorded[][]) =>
  expectUntilMarker(
    async () => {
      const ack = await sendWithAck(sender, { content: markerContent() });
      expect(ack.ok).toBe(true);
      return ack.message as ChatMessage;
    },
    recorders,
    before,
  );

async function countMessages(): Promise<number> {
  const [row] = await t.database.sql`SELECT count(*)::int AS n FROM messages`;
  return (row as { n: number }).n;
}

async function storedRow(id: number) {
  const rows = await t.database.sql`SELECT id, user_id, content, client_id, created_at FROM messages WHERE id = ${id}`;
  return rows[0] as { id: number; user_id: number; content: string; client_id: string | null; created_at: Date } | undefined;
}

/** The claims of a registered user's real token (real sid), with fresh times. */
function claimsOf(user: Registered, overrides: Record<string, unknown> = {}) {
  const { payload } = decode(user.token);
  return { ...(payload as Record<string, unknown>), iat: now(), exp: now() + 600, ...overrides };
}

/** Tries the handshake with exactly these `auth` options (undefined: none at all). */
function attemptHandshake(auth: Record<string, unknown> | undefined, transport: Transport) {
  const socket = ioClient(t.url, { transports: [transport], reconnection: false, forceNew: true, ...(auth === undefined ? {} : { auth }) });
  return new Promise<{ connected: true } | { connected: false; error: Error }>((resolve) => {
    socket.once("connect", () => {
      socket.disconnect();
      resolve({ connected: true });
    });
    socket.once("connect_error", (error) => {
      socket.disconnect();
      resolve({ connected: false, error });
    });
  });
}

// ---------------------------------------------------------------------------------------
// Handshake

const handshakeRefusals: Array<[name: string, auth: (user: Registered) => Promise<Record<string, unknown> | undefined>]> = [
  ["no auth at all", async () => undefined],
  ["auth without a token", async () => ({})],
  ["auth with the token under another key", async (u) => ({ jwt: u.token })],
  ["a token that is a number", async () => ({ token: 12345 })],
  ["a token that is an object", async (u) => ({ token: { token: u.token } })],
  ["a token that is an array", async (u) => ({ token: [u.token] })],
  ["a token that is null", async () => ({ token: null })],
  ["an empty token", async () => ({ token: "" })],
  ["a garbage token", async () => ({ token: "garbage" })],
  ["a token of three garbage segments", async () => ({ token: "a.b.c" })],
  ["a token with a Bearer prefix", async (u) => ({ token: `Bearer ${u.token}` })],
  ["a JWT signed with another secret", async (u) => ({ token: await sign(claimsOf(u), "another-secret-that-is-at-least-32-characters", "HS256") })],
  ["an expired JWT", async (u) => ({ token: await sign(claimsOf(u, { iat: now() - 3600, exp: now() - 60 }), testJwtSecret, "HS256") })],
  ["a JWT issued in the future", async (u) => ({ token: await sign(claimsOf(u, { iat: now() + 3600, exp: now() + 7200 }), testJwtSecret, "HS256") })],
  ['a JWT with alg "none" and no signature', async (u) => ({ token: `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claimsOf(u))}.` })],
  [
    'a JWT with alg "none" keeping a valid signature',
    async (u) => {
      const valid = await sign(claimsOf(u), testJwtSecret, "HS256");
      const [, payload, signature] = valid.split(".");
      return { token: `${b64url({ alg: "none", typ: "JWT" })}.${payload}.${signature}` };
    },
  ],
  [
    "a JWT whose payload was tampered with (role raised to admin, signature kept)",
    async (u) => {
      const [header, payload, signature] = u.token.split(".");
      const claims = JSON.parse(Buffer.from(payload ?? "", "base64url").toString());
      return { token: `${header}.${b64url({ ...claims, role: "admin" })}.${signature}` };
    },
  ],
  [
    "a JWT whose payload was tampered with (sub changed to another user, signature kept)",
    async (u) => {
      const [header, payload, signature] = u.token.split(".");
      const claims = JSON.parse(Buffer.from(payload ?? "", "base64url").toString());
      return { token: `${header}.${b64url({ ...claims, sub: String(u.user.id + 1) })}.${signature}` };
    },
  ],
  ["an HS512 JWT signed with the right secret", async (u) => ({ token: await sign(claimsOf(u), testJwtSecret, "HS512") })],
  ["an HS384 JWT signed with the right secret", async (u) => ({ token: await sign(claimsOf(u), testJwtSecret, "HS384") })],
  [
    "a correctly signed JWT without exp (would never expire)",
    async (u) => {
      const { exp: _exp, ...claims } = claimsOf(u);
      return { token: await sign(claims, testJwtSecret, "HS256") };
    },
  ],
  ["a correctly signed JWT with a non-numeric sub", async (u) => ({ token: await sign(claimsOf(u, { sub: "alice" }), testJwtSecret, "HS256") })],
  ["a correctly signed JWT with an unknown role", async (u) => ({ token: await sign(claimsOf(u, { role: "root" }), testJwtSecret, "HS256") })],
];

describe.each(transports)("handshake over %s", (transport) => {
  let user: Registered;
  beforeAll(async () => {
    user = await t.register();
  });

  test("positive control: a token built here the same way (HS256, right secret, full claims) connects and can send", async () => {
    const token = await sign(claimsOf(user), testJwtSecret, "HS256");
    const socket = await connect(token, transport);
    const ack = await sendWithAck(socket, { content: "control" });
    expect(ack).toEqual({ ok: true, message: expect.objectContaining({ userId: user.user.id, content: "control" }) });
  });

  test("the server keeps no copy of the bearer token once the socket is authenticated", async () => {
    const connected = new Promise<{ auth: Record<string, unknown>; userId: number }>((resolve) =>
      t.app.io.once("connection", (socket) => resolve({ auth: { ...socket.handshake.auth }, userId: socket.data.user.id })),
    );
    await connect(user.token, transport);
    const { auth, userId } = await connected;
    expect(userId).toBe(user.user.id);
    expect(auth).not.toHaveProperty("token");
    expect(JSON.stringify(auth)).not.toContain(user.token);
  });

  test.each(handshakeRefusals)("%s → connect_error \"Unauthorized\", no server-side connection", async (_name, makeAuth) => {
    const auth = await makeAuth(user);
    let serverConnections = 0;
    const onConnection = () => serverConnections++;
    t.app.io.on("connection", onConnection);
    try {
      const result = await attemptHandshake(auth, transport);
      expect(result.connected).toBe(false);
      if (!result.connected) expect(result.error.message).toBe("Unauthorized");
      expect(serverConnections).toBe(0);
    } finally {
      t.app.io.off("connection", onConnection);
    }
  });
});

// ---------------------------------------------------------------------------------------
// The message event

describe.each(transports)("message over %s", (transport) => {
  let alice: Registered;
  let bob: Registered;
  let carol: Registered;
  let sender: ChatClient;
  let observer: ChatClient;

  beforeAll(async () => {
    [alice, bob, carol] = await Promise.all([t.register(), t.register(), t.register()]);
  });

  // Fresh sockets per test (closed by afterEach): alice sends, bob watches.
  const setup = async () => {
    sender = await connect(alice.token, transport);
    observer = await connect(bob.token, transport);
  };

  describe("a valid message", () => {
    test("is committed before the broadcast and before the ack (checked over a separate connection)", async () => {
      await setup();
      const third = await connect(carol.token, transport);
      // Each receiver queries the database the moment the event arrives.
      const queryOnArrival = (socket: ChatClient) =>
        new Promise<{ message: ChatMessage; row: Awaited<ReturnType<typeof storedRow>> }>((resolve, reject) => {
          socket.once("message", (message) => void storedRow(message.id).then((row) => resolve({ message, row }), reject));
        });
      const atObserver = queryOnArrival(observer);
      const atThird = queryOnArrival(third);
      const atSender = queryOnArrival(sender);
      const atAck = new Promise<{ ack: Extract<Ack, { ok: true }>; row: Awaited<ReturnType<typeof storedRow>> }>((resolve, reject) => {
        sender.emit("message", { content: "committed first" }, (ack: unknown) => {
          const a = ack as Ack;
          if (!a.ok) return reject(new Error(JSON.stringify(a)));
          void storedRow(a.message.id).then((row) => resolve({ ack: a, row }), reject);
        });
      });

      const { ack, row: rowAtAck } = await atAck;
      expect(rowAtAck).toBeDefined();
      for (const arrival of [await atObserver, await atThird, await atSender]) {
        expect(arrival.message).toEqual(ack.message);
        expect(arrival.row).toEqual({
          id: ack.message.id,
          user_id: alice.user.id,
          content: "committed first",
          client_id: null,
          created_at: new Date(ack.message.timestamp),
        });
      }
    });

    test("reaches every connected client, the sender included, once, with exactly {id, channelId, userId, username, content, timestamp}; the ack is {ok:true, message} equal to it", async () => {
      await setup();
      const third = await connect(carol.token, transport);
      const recorders = [record(sender), record(observer), record(third)];
      const ack = await sendWithAck(sender, { content: "hello everyone" });
      expect(Object.keys(ack).sort()).toEqual(["message", "ok"]);
      expect(ack.ok).toBe(true);
      expectMessageShape(ack.message, alice.user, "hello everyone");
      for (const recorder of recorders) {
        const seen = await recorder.until(isMessage(ack.message.id));
        expect(seen).toEqual([["message", ack.message]]);
      }
      // And only once: the marker is the next thing each of them sees.
      const once: Recorded[] = [["message", ack.message]];
      await expectOnlyMarker(sender, recorders, [once, once, once]);
    });

    test("without an ack callback it is still stored and broadcast, and no message:error comes back", async () => {
      await setup();
      const recorders = [record(sender), record(observer)];
      const content = `no ack ${crypto.randomUUID()}`;
      sender.emit("message", { content });
      const seen = await recorders[1]!.until(([e]) => e === "message");
      expect(seen).toHaveLength(1);
      const message = seen[0]![1] as ChatMessage;
      expectMessageShape(message, alice.user, content);
      expect(await storedRow(message.id)).toMatchObject({ user_id: alice.user.id, content });
      expect(await recorders[0]!.until(isMessage(message.id))).toEqual([["message", message]]);
      const once: Recorded[] = [["message", message]];
      await expectOnlyMarker(sender, recorders, [once, once]);
    });

    test("content is trimmed before it is stored and sent; inner whitespace is kept", async () => {
      await setup();
      const ack = await sendWithAck(sender, { content: " \n\t  hello \n  world \t\r\n " });
      expect(ack.ok).toBe(true);
      expect(ack.message.content).toBe("hello \n  world");
      expect((await storedRow(ack.message.id))?.content).toBe("hello \n  world");
    });

    test("4000 code points are accepted: Cyrillic letters, emoji (8000 UTF-16 units), and 4000 letters padded with whitespace", async () => {
      await setup();
      const cyrillic = "ж".repeat(4000);
      const emoji = "😀".repeat(4000);
      for (const [sent, expected] of [
        [cyrillic, cyrillic],
        [emoji, emoji],
        [`   ${"a".repeat(4000)}   `, "a".repeat(4000)],
      ] as const) {
        const ack = await sendWithAck(sender, { content: sent });
        expect(ack.ok).toBe(true);
        expect(ack.message.content).toBe(expected);
        expect((await storedRow(ack.message.id))?.content).toBe(expected);
      }
      // A single character is the lower bound.
      expect((await sendWithAck(sender, { content: "x" })).ok).toBe(true);
    });

    test("4001 code points are refused, whatever the characters", async () => {
      await setup();
      for (const content of ["ж".repeat(4001), "😀".repeat(4001), "a".repeat(4001)]) {
        const before = await countMessages();
        const ack = await sendWithAck(sender, { content });
        expect(ack).toEqual({
          ok: false,
          error: { code: "VALIDATION_FAILED", message: expect.any(String), details: [{ path: "content", message: expect.any(String) }] },
        });
        expect(await countMessages()).toBe(before);
      }
    });
  });

  describe("userId", () => {
    test("absent: accepted, and the message is the token's user's", async () => {
      await setup();
      const ack = await sendWithAck(sender, { content: "no userId" });
      expect(ack.ok).toBe(true);
      expect(ack.message.userId).toBe(alice.user.id);
      expect(ack.message.username).toBe(alice.user.username);
      expect((await storedRow(ack.message.id))?.user_id).toBe(alice.user.id);
    });

    test("equal to the token's user: accepted", async () => {
      await setup();
      const ack = await sendWithAck(sender, { content: "my own userId", userId: alice.user.id });
      expect(ack.ok).toBe(true);
      expect(ack.message.userId).toBe(alice.user.id);
      expect((await storedRow(ack.message.id))?.user_id).toBe(alice.user.id);
    });

    test("another user's id: FORBIDDEN, nothing stored, nothing broadcast, and the clientId is not used up", async () => {
      await setup();
      const recorders = [record(sender), record(observer)];
      const clientId = crypto.randomUUID();
      const before = await countMessages();
      const ack = await sendWithAck(sender, { content: "impersonation", userId: bob.user.id, clientId });
      expect(ack).toEqual({ ok: false, error: { code: "FORBIDDEN", message: expect.any(String) } });
      expect(await countMessages()).toBe(before);
      const [{ n }] = (await t.database.sql`SELECT count(*)::int AS n FROM messages WHERE content = 'impersonation'`) as [{ n: number }];
      expect(n).toBe(0);
      await expectOnlyMarker(sender, recorders);
      // The same clientId sent properly afterwards creates a message of its own.
      const retry = await sendWithAck(sender, { content: "proper", clientId });
      expect(retry.ok).toBe(true);
      expect(retry.message).toMatchObject({ userId: alice.user.id, content: "proper" });
    });

    test("the stored user_id is always the token's user, whoever is named in the payload", async () => {
      await setup();
      const bobSocket = observer;
      const a = await sendWithAck(sender, { content: "from alice" });
      const b = await sendWithAck(bobSocket, { content: "from bob", userId: bob.user.id });
      const refused = await sendWithAck(bobSocket, { content: "bob as alice", userId: alice.user.id });
      expect(refused.ok).toBe(false);
      expect((await storedRow(a.message.id))?.user_id).toBe(alice.user.id);
      expect((await storedRow(b.message.id))?.user_id).toBe(bob.user.id);
      expect(b.message).toMatchObject({ userId: bob.user.id, username: bob.user.username });
    });
  });

  describe("clientId idempotency", () => {
    async function rowsWithClientId(userId: number, clientId: string) {
      return (await t.database.sql`SELECT id FROM messages WHERE user_id = ${userId} AND client_id = ${clientId} ORDER BY id`) as { id: number }[];
    }

    test("the same clientId sent twice: the same message both times, one row, one broadcast; the resend's content is ignored", async () => {
      await setup();
      const recorders = [record(sender), record(observer)];
      const clientId = crypto.randomUUID();
      const first = await sendWithAck(sender, { content: "first", clientId });
      const second = await sendWithAck(sender, { content: "second attempt", clientId });
      expect(first.ok).toBe(true);
      expect(Number.isInteger(first.message.seq) && first.message.seq > 0).toBe(true);
      // The resend gets the first message as history shows it: without its seq (api.md §11).
      expect(second).toEqual({ ok: true, message: asHistory(first.message) });
      expect(await rowsWithClientId(alice.user.id, clientId)).toEqual([{ id: first.message.id }]);
      expect((await storedRow(first.message.id))?.content).toBe("first");
      // One broadcast, then nothing but the marker.
      const once: Recorded[] = [["message", first.message]];
      await expectOnlyMarker(sender, recorders, [once, once]);
    });

    test("the same clientId sent 10 times concurrently (over two sockets of the same user): one message id in every ack, one row, one broadcast", async () => {
      await setup();
      const second = await connect(alice.token, transport);
      const recorders = [record(sender), record(observer), record(second)];
      const clientId = crypto.randomUUID();
      const acks = await Promise.all(
        Array.from({ length: 10 }, (_, i) => sendWithAck(i % 2 === 0 ? sender : second, { content: `concurrent ${i}`, clientId })),
      );
      for (const ack of acks) expect(ack.ok).toBe(true);
      const ids = new Set(acks.map((a) => a.message.id));
      expect(ids.size).toBe(1);
      // The one send that stored it gets it with its seq; the other nine, as history shows it (api.md §11).
      const creators = acks.filter((a) => "seq" in a.message);
      expect(creators).toHaveLength(1);
      const stored = creators[0].message;
      expect(Number.isInteger(stored.seq) && stored.seq > 0).toBe(true);
      for (const ack of acks) expect(ack.message).toEqual(ack === creators[0] ? stored : asHistory(stored));
      expect(await rowsWithClientId(alice.user.id, clientId)).toEqual([{ id: stored.id }]);
      const marker = await sendWithAck(sender, { content: "after the storm" });
      for (const r of recorders) {
        expect(await r.until(isMessage(marker.message.id))).toEqual([
          ["message", stored],
          ["message", marker.message],
        ]);
      }
    });

    test("the same clientId from two different users: two messages, one each", async () => {
      await setup();
      const clientId = crypto.randomUUID();
      const fromAlice = await sendWithAck(sender, { content: "alice's", clientId });
      const fromBob = await sendWithAck(observer, { content: "bob's", clientId });
      expect(fromAlice.ok && fromBob.ok).toBe(true);
      expect(fromBob.message.id).not.toBe(fromAlice.message.id);
      expect(fromAlice.message).toMatchObject({ userId: alice.user.id, content: "alice's" });
      expect(fromBob.message).toMatchObject({ userId: bob.user.id, content: "bob's" });
      expect(await rowsWithClientId(alice.user.id, clientId)).toEqual([{ id: fromAlice.message.id }]);
      expect(await rowsWithClientId(bob.user.id, clientId)).toEqual([{ id: fromBob.message.id }]);
    });

    test("a 64-character clientId is accepted and stored as sent", async () => {
      await setup();
      const clientId = `${crypto.randomUUID()}${crypto.randomUUID()}`.slice(0, 64);
      expect(clientId).toHaveLength(64);
      const ack = await sendWithAck(sender, { content: "long key", clientId });
      expect(ack.ok).toBe(true);
      expect((await storedRow(ack.message.id))?.client_id).toBe(clientId);
      expect((await sendWithAck(sender, { content: "long key again", clientId })).message).toEqual(asHistory(ack.message));
    });

    test("without a clientId, identical messages are two messages", async () => {
      await setup();
      const a = await sendWithAck(sender, { content: "same words" });
      const b = await sendWithAck(sender, { content: "same words" });
      expect(a.ok && b.ok).toBe(true);
      expect(b.message.id).not.toBe(a.message.id);
    });
  });

  describe("refused payloads", () => {
    // Each row: the arguments before the ack, the expected code, and the field `details` must name.
    const rows: Array<{ name: string; args: (ctx: { alice: Registered; bob: Registered }) => unknown[]; code: string; path?: string }> = [
      { name: "no payload at all", args: () => [], code: "VALIDATION_FAILED", path: "(root)" },
      { name: "null", args: () => [null], code: "VALIDATION_FAILED", path: "(root)" },
      { name: "a string", args: () => ["hello"], code: "VALIDATION_FAILED", path: "(root)" },
      { name: "a number", args: () => [42], code: "VALIDATION_FAILED", path: "(root)" },
      { name: "a boolean", args: () => [true], code: "VALIDATION_FAILED", path: "(root)" },
      { name: "an array", args: () => [[{ content: "hi" }]], code: "VALIDATION_FAILED", path: "(root)" },
      { name: "{}", args: () => [{}], code: "VALIDATION_FAILED", path: "content" },
      { name: "content missing", args: () => [{ clientId: crypto.randomUUID() }], code: "VALIDATION_FAILED", path: "content" },
      { name: 'content ""', args: () => [{ content: "" }], code: "VALIDATION_FAILED", path: "content" },
      { name: 'content "   "', args: () => [{ content: "   " }], code: "VALIDATION_FAILED", path: "content" },
      { name: "content of newlines and tabs only", args: () => [{ content: "\n\t \r\n" }], code: "VALIDATION_FAILED", path: "content" },
      { name: "content of 4001 characters", args: () => [{ content: "a".repeat(4001) }], code: "VALIDATION_FAILED", path: "content" },
      { name: "content a number", args: () => [{ content: 42 }], code: "VALIDATION_FAILED", path: "content" },
      { name: "content an object", args: () => [{ content: { text: "hi" } }], code: "VALIDATION_FAILED", path: "content" },
      { name: "content an array", args: () => [{ content: ["hi"] }], code: "VALIDATION_FAILED", path: "content" },
      { name: "content null", args: () => [{ content: null }], code: "VALIDATION_FAILED", path: "content" },
      // PostgreSQL cannot store these: they must be refused as input, not fail the insert as INTERNAL.
      { name: "content with a NUL character", args: () => [{ content: "a\u0000b" }], code: "VALIDATION_FAILED", path: "content" },
      { name: "content with an unpaired surrogate", args: () => [{ content: "a\ud800b" }], code: "VALIDATION_FAILED", path: "content" },
      { name: "userId a string (even the right id)", args: ({ alice }) => [{ content: "hi", userId: String(alice.user.id) }], code: "VALIDATION_FAILED", path: "userId" },
      { name: "userId 1.5", args: () => [{ content: "hi", userId: 1.5 }], code: "VALIDATION_FAILED", path: "userId" },
      { name: "userId null", args: () => [{ content: "hi", userId: null }], code: "VALIDATION_FAILED", path: "userId" },
      { name: 'clientId ""', args: () => [{ content: "hi", clientId: "" }], code: "VALIDATION_FAILED", path: "clientId" },
      { name: "clientId of 65 characters", args: () => [{ content: "hi", clientId: "k".repeat(65) }], code: "VALIDATION_FAILED", path: "clientId" },
      { name: "clientId a number", args: () => [{ content: "hi", clientId: 12345 }], code: "VALIDATION_FAILED", path: "clientId" },
      { name: "clientId with a NUL character", args: () => [{ content: "hi", clientId: "k\u0000" }], code: "VALIDATION_FAILED", path: "clientId" },
      { name: "another user's userId", args: ({ bob }) => [{ content: "hi", userId: bob.user.id }], code: "FORBIDDEN" },
    ];

    test.each(rows)("$name → ack error $code, nothing stored, nothing broadcast, connection still usable", async ({ args, code, path }) => {
      await setup();
      const recorders = [record(sender), record(observer)];
      const before = await countMessages();
      const ack = await emitWithAck(sender, ...args({ alice, bob }));
      expect(ack.ok).toBe(false);
      if (ack.ok) return;
      expect(Object.keys(ack).sort()).toEqual(["error", "ok"]);
      expect(ack.error.code).toBe(code);
      expect(typeof ack.error.message).toBe("string");
      expect(ack.error.message.length).toBeGreaterThan(0);
      if (path !== undefined) {
        expect(ack.error.details).toEqual(expect.arrayContaining([{ path, message: expect.any(String) }]));
      } else {
        expect(ack.error.details).toBeUndefined();
      }
      expect(await countMessages()).toBe(before);
      expect(sender.connected).toBe(true);
      const marker = await expectOnlyMarker(sender, recorders);
      expect(await countMessages()).toBe(before + 1);
      expect(sender.connected).toBe(true);
      expect(marker.userId).toBe(alice.user.id);
    });

    test("prototype keys are harmless: __proto__ and constructor.prototype in the payload neither pollute the server nor break the message", async () => {
      await setup();
      for (const raw of ['{"__proto__":{"polluted":1},"content":"proto x"}', '{"constructor":{"prototype":{"polluted":1}},"content":"proto y"}']) {
        const payload = JSON.parse(raw);
        const ack = await emitWithAck(sender, payload);
        expect(ack.ok).toBe(true);
        if (!ack.ok) return;
        expectMessageShape(ack.message, alice.user, payload.content);
        // The server runs in this process: a polluted prototype would show here.
        expect(({} as Record<string, unknown>).polluted).toBeUndefined();
        expect(Object.prototype).not.toHaveProperty("polluted");
      }
      const withProtoAsUserId = JSON.parse(`{"content":"proto z","__proto__":{"userId":${bob.user.id}}}`);
      const ack = await emitWithAck(sender, withProtoAsUserId);
      expect(ack.ok).toBe(true);
      if (ack.ok) expect(ack.message.userId).toBe(alice.user.id);
      expect(({} as Record<string, unknown>).userId).toBeUndefined();
    });

    test("extra arguments before the ack: the ack still comes, for a good and for a bad payload", async () => {
      await setup();
      const good = await emitWithAck(sender, { content: "with extras" }, "extra", 42, { more: true });
      expect(good.ok).toBe(true);
      if (good.ok) expectMessageShape(good.message, alice.user, "with extras");
      const bad = await emitWithAck(sender, { content: "" }, "extra", 42);
      expect(bad).toMatchObject({ ok: false, error: { code: "VALIDATION_FAILED" } });
      expect(sender.connected).toBe(true);
    });
  });

  describe("message:error without an ack", () => {
    const rows: Array<[name: string, payload: (ctx: { bob: Registered }) => unknown]> = [
      ["content empty", () => ({ content: "" })],
      ["null payload", () => null],
      ["clientId too long", () => ({ content: "hi", clientId: "k".repeat(65) })],
      ["another user's userId", ({ bob }) => ({ content: "hi", userId: bob.user.id })],
    ];

    test.each(rows)("%s: the sender alone gets message:error with the same error object the ack would carry", async (_name, makePayload) => {
      await setup();
      const payload = makePayload({ bob });
      const withAck = await emitWithAck(sender, payload);
      expect(withAck.ok).toBe(false);
      if (withAck.ok) return;

      const recorders = [record(sender), record(observer)];
      const before = await countMessages();
      sender.emit("message", payload);
      const seen = await recorders[0]!.until(([e]) => e === "message:error");
      expect(seen).toEqual([["message:error", withAck.error]]);
      expect(await countMessages()).toBe(before);
      // The sender: the error, then the marker. The observer: nothing (no error, no message) but the marker.
      await expectOnlyMarker(sender, recorders, [[["message:error", withAck.error]], []]);
    });
  });
});

describe("mixed transports", () => {
  test("clients on polling and on websocket all receive the same broadcast, whoever sends", async () => {
    const users = await Promise.all([t.register(), t.register(), t.register(), t.register()]);
    const plan: Transport[] = ["polling", "websocket", "polling", "websocket"];
    const sockets = await Promise.all(users.map((u, i) => connect(u.token, plan[i]!)));
    for (const from of [0, 1]) {
      const recorders = sockets.map(record);
      const ack = await sendWithAck(sockets[from]!, { content: `from ${plan[from]}` });
      expect(ack.ok).toBe(true);
      expectMessageShape(ack.message, users[from]!.user, `from ${plan[from]}`);
      for (const r of recorders) {
        expect(await r.until(isMessage(ack.message.id))).toEqual([["message", ack.message]]);
        r.stop();
      }
    }
  });
});

describe("the database backs the idempotency", () => {
  test("a duplicate (user_id, client_id) is refused by a unique constraint, while NULL client_ids may repeat", async () => {
    const user = await t.register();
    const clientId = crypto.randomUUID();
    await t.database.sql`INSERT INTO messages (user_id, content, client_id) VALUES (${user.user.id}, 'one', ${clientId})`;
    await expect(t.database.sql`INSERT INTO messages (user_id, content, client_id) VALUES (${user.user.id}, 'two', ${clientId})`.then(() => "inserted")).rejects.toThrow(
      /unique|duplicate/i,
    );
    await t.database.sql`INSERT INTO messages (user_id, content) VALUES (${user.user.id}, 'three')`;
    await t.database.sql`INSERT INTO messages (user_id, content) VALUES (${user.user.id}, 'four')`;
    const [{ n }] = (await t.database.sql`SELECT count(*)::int AS n FROM messages WHERE user_id = ${user.user.id}`) as [{ n: number }];
    expect(n).toBe(3);
  });
});
