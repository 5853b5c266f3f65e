import { describe, expect, setDefaultTimeout, test } from "bun:test";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { record, recordWithPresence, isMessage } from "./helpers/recorder.ts";
import { connectTo, productionEnv, registerAt, startServerProcess } from "./helpers/process.ts";
import { createPresence } from "../src/presence/presence.service.ts";
import { createRedis, redisConnected } from "../src/lib/redis.ts";
import { sendWithAck, startTestServer, testRedisUrl, uniqueName, type Json } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { settle } from "./helpers/wait.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §9: two instances on two ports share the local Redis (under a prefix of this run's own)
// and one PostgreSQL database. Broadcasts, membership, presence, forced disconnects, cached
// access and rate limits must all behave as on one instance.

const prefix = `test:${crypto.randomUUID().slice(0, 8)}:`;
const a = await startTestServer({ redisPrefix: prefix, env: { RATE_LIMIT_MESSAGES_BURST: "4/5s" } });
const b = await startTestServer({ redisPrefix: prefix, database: a.database, env: { RATE_LIMIT_MESSAGES_BURST: "4/5s" } });

/** Sockets opened by one test, on the instance given (`connect(user, transport, server)`), closed after it. */
const { connect } = socketTracker();

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const json = { "content-type": "application/json" };

describe("broadcasts cross instances", () => {
  test("a message sent through A reaches clients of A and B exactly once, in id order; one through B likewise", async () => {
    const [alice, bob, carol] = [await a.register(uniqueName("alice")), await b.register(uniqueName("bob")), await a.register(uniqueName("carol"))];
    const sockets = [await connect(alice, "websocket", a), await connect(bob, "polling", b), await connect(carol, "websocket", b)];
    const recorders = sockets.map((s) => record(s));
    const sent: ChatMessage[] = [];
    for (let i = 0; i < 5; i++) {
      const via = i % 2 ? sockets[1]! : sockets[0]!;
      const ack = await sendWithAck(via, { content: `across ${i}` });
      expect(ack.ok).toBe(true);
      sent.push(ack.message as ChatMessage);
    }
    const marker = await sendWithAck(sockets[2]!, { content: "marker" });
    for (const r of recorders) {
      const seen = await r.until(isMessage((marker.message as ChatMessage).id));
      expect(seen).toEqual([...sent.map((m) => ["message", m] as [string, unknown]), ["message", marker.message]]);
    }
  });

  test("a join on A takes effect on the user's socket on B at once; a private channel's message never reaches B's non-members", async () => {
    const [owner, member, outsider] = [await a.register(), await b.register(), await a.register()];
    const created = await (await fetch(`${a.url}/api/channels`, { method: "POST", headers: { ...json, ...bearer(owner.token) }, body: JSON.stringify({ name: uniqueName("room"), kind: "private" }) })).json() as Json;
    const memberSocket = await connect(member, "websocket", b);
    const outsiderSocket = await connect(outsider, "websocket", b);
    const [memberRec, outsiderRec] = [record(memberSocket), record(outsiderSocket)];
    // Added through A; the member's socket lives on B.
    expect((await fetch(`${a.url}/api/channels/${created.id}/members`, { method: "POST", headers: { ...json, ...bearer(owner.token) }, body: JSON.stringify({ userId: member.user.id }) })).status).toBe(200);
    const ownerSocket = await connect(owner, "websocket", a);
    const secret = await sendWithAck(ownerSocket, { content: "for members", channelId: created.id });
    expect(secret.ok).toBe(true);
    // Told first (after its socket on B joined the room), then the message.
    expect(await memberRec.until(isMessage((secret.message as ChatMessage).id))).toEqual([
      ["channel:joined", { channelId: created.id }],
      ["message", secret.message],
    ]);
    const marker = await sendWithAck(ownerSocket, { content: "general marker" });
    expect(await outsiderRec.until(isMessage((marker.message as ChatMessage).id))).toEqual([["message", marker.message]]);
  });

  test("a join on A: channel:joined on the user's sockets on B (and A), already in the room; a leave on B: channel:left on both", async () => {
    const [owner, user] = [await a.register(), await b.register()];
    const post = (server: { url: string }, token: string, path: string, body?: unknown) =>
      fetch(`${server.url}${path}`, { method: "POST", headers: { ...json, ...bearer(token) }, body: body === undefined ? undefined : JSON.stringify(body) });
    const created = (await (await post(a, owner.token, "/api/channels", { name: uniqueName("open"), kind: "public" })).json()) as Json;
    const onB = await connect(user, "polling", b);
    const onA = await connect(user, "websocket", a);
    const ownerSocket = await connect(owner, "websocket", a);
    const [recB, recA] = [record(onB), record(onA)];
    // The owner speaks the moment B's socket is told: it must be in the room on B by then.
    const spoken = new Promise<ChatMessage>((resolve, reject) =>
      onB.once("channel:joined", () => void sendWithAck(ownerSocket, { content: "right after", channelId: created.id }).then((ack) => (ack.ok ? resolve(ack.message) : reject(new Error(JSON.stringify(ack)))), reject)),
    );
    expect((await post(a, user.token, `/api/channels/${created.id}/join`)).status).toBe(200);
    const message = await spoken;
    for (const rec of [recB, recA]) expect(await rec.until(isMessage(message.id))).toEqual([["channel:joined", { channelId: created.id }], ["message", message]]);
    expect((await post(b, user.token, `/api/channels/${created.id}/leave`)).status).toBe(204);
    for (const rec of [recB, recA]) await rec.until(([event]) => event === "channel:left");
    const after = await sendWithAck(ownerSocket, { content: "gone", channelId: created.id });
    const marker = await sendWithAck(ownerSocket, { content: "general marker" });
    for (const rec of [recB, recA]) {
      expect(await rec.until(isMessage((marker.message as ChatMessage).id))).toEqual([
        ["channel:joined", { channelId: created.id }],
        ["message", message],
        ["channel:left", { channelId: created.id }],
        ["message", marker.message],
      ]);
    }
    expect(after.ok).toBe(true);
  });
});

describe("order across instances", () => {
  test("10 senders on two instances, 300 messages: every receiver, on either instance, gets them in strictly increasing id order", async () => {
    // A pair without the message limit of `a` and `b`.
    const orderPrefix = `${prefix}order:`;
    const c = await startTestServer({ redisPrefix: orderPrefix, database: a.database });
    const d = await startTestServer({ redisPrefix: orderPrefix, database: a.database });
    const users = await Promise.all(Array.from({ length: 14 }, (_, i) => (i % 2 ? d : c).register()));
    const sockets = await Promise.all(users.map((u, i) => connect(u, i % 4 < 2 ? "websocket" : "polling", i % 2 ? d : c)));
    const receivers = sockets.slice(10);
    const got: number[][] = receivers.map(() => []);
    receivers.forEach((s, i) => s.on("message", (m: ChatMessage) => void got[i]!.push(m.id)));
    const acked = await Promise.all(
      sockets.slice(0, 10).map(async (s, k) => {
        const ids: number[] = [];
        for (let j = 0; j < 30; j++) {
          const ack = await sendWithAck(s, { content: `order ${k}-${j}` });
          if (ack.ok) ids.push((ack.message as ChatMessage).id);
        }
        return ids;
      }),
    );
    const expected = acked.flat().sort((x, y) => x - y);
    expect(expected).toHaveLength(300);
    const deadline = Date.now() + 5_000;
    while (got.some((g) => g.length < 300) && Date.now() < deadline) await Bun.sleep(20);
    // Before the publish gate, 1 or 2 of 300 arrived out of order on every receiver.
    for (const g of got) expect(g).toEqual(expected);
  });
});

describe("presence is global", () => {
  test("tabs on A and B count as one user: online once, offline once, listed by both instances", async () => {
    const [watcher, subject] = [await a.register(), await b.register()];
    const watcherSocket = await connect(watcher, "websocket", a);
    const rec = recordWithPresence(watcherSocket);
    const onA = await connect(subject, "websocket", a);
    const onB = await connect(subject, "polling", b);
    for (const server of [a, b]) {
      const ids = await settle(
        async () => (await (await fetch(`${server.url}/api/presence`, { headers: bearer(watcher.token) })).json()) as number[],
        (list) => list.includes(subject.user.id),
        3_000,
        20,
      );
      expect(ids).toContain(subject.user.id);
    }
    onA.disconnect();
    onB.disconnect();
    const seen = await rec.until(([event, p]) => event === "presence" && (p as { status: string; userId: number }).status === "offline" && (p as { userId: number }).userId === subject.user.id);
    const aboutSubject = seen.filter(([event, p]) => event === "presence" && (p as { userId: number }).userId === subject.user.id);
    expect(aboutSubject).toEqual([
      ["presence", { userId: subject.user.id, status: "online" }],
      ["presence", { userId: subject.user.id, status: "offline" }],
    ]);
    const after = (await (await fetch(`${b.url}/api/presence`, { headers: bearer(watcher.token) })).json()) as number[];
    expect(after).not.toContain(subject.user.id);
  });
});

describe("revocation reaches every instance", () => {
  test("a ban on A cuts the user's socket on B at once, and B refuses their token right away", async () => {
    const admin = await a.register();
    await a.database.sql`UPDATE users SET role = 'admin' WHERE id = ${admin.user.id}`;
    const adminToken = (await (await fetch(`${a.url}/api/auth/login`, { method: "POST", headers: json, body: JSON.stringify({ username: admin.user.username, password: "correct horse battery" }) })).json() as Json).token;
    const target = await b.register();
    const socket = await connect(target, "polling", b);
    // B has the target's session cached as alive.
    expect((await fetch(`${b.url}/api/users/me`, { headers: bearer(target.token) })).status).toBe(200);
    const cut = new Promise<string>((resolve) => socket.once("disconnect", (reason) => resolve(reason)));
    expect((await fetch(`${a.url}/api/users/${target.user.id}/ban`, { method: "POST", headers: { ...json, ...bearer(adminToken) }, body: "{}" })).status).toBe(200);
    expect(await cut).toBe("io server disconnect");
    const status = await settle(async () => (await fetch(`${b.url}/api/users/me`, { headers: bearer(target.token) })).status, (s) => s === 403, 1_000, 20);
    expect(status).toBe(403);
  });

  test("logout-all on B: A refuses the old token at once (its cache is dropped, not left to expire)", async () => {
    const user = await a.register();
    expect((await fetch(`${a.url}/api/users/me`, { headers: bearer(user.token) })).status).toBe(200);
    expect((await fetch(`${b.url}/api/auth/logout-all`, { method: "POST", headers: bearer(user.token) })).status).toBe(204);
    const status = await settle(async () => (await fetch(`${a.url}/api/users/me`, { headers: bearer(user.token) })).status, (s) => s === 401, 1_000, 20);
    expect(status).toBe(401);
  });
});

describe("rate limits are shared", () => {
  test("the message burst (4 per 5 s here) counts sends through both instances together", async () => {
    const user = await a.register();
    const [onA, onB] = [await connect(user, "websocket", a), await connect(user, "websocket", b)];
    const results: boolean[] = [];
    for (let i = 0; i < 6; i++) results.push((await sendWithAck(i % 2 ? onB : onA, { content: `budget ${i}` })).ok);
    expect(results).toEqual([true, true, true, true, false, false]);
  });
});

describe("readiness covers Redis", () => {
  test("/readyz reports Redis; an instance whose Redis is unreachable from the start serves, is ready but degraded, and logs it once", async () => {
    const res = await fetch(`${a.url}/readyz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok", checks: { database: "ok", redis: "ok" } });
    const server = await startServerProcess(productionEnv(a.database.url, { REDIS_URL: "redis://127.0.0.1:1", REDIS_KEY_PREFIX: prefix }));
    try {
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        const ready = await fetch(`${server.url}/readyz`);
        expect(performance.now() - started).toBeLessThan(2_500);
        expect(ready.status).toBe(200);
        expect(await ready.json()).toEqual({ status: "degraded", checks: { database: "ok", redis: "unavailable" } });
      }
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      // It serves its own clients: a message is stored and acked.
      const user = await registerAt(server.url, uniqueName("alone"));
      const socket = await connectTo(server.url, user.token, "websocket");
      try {
        expect((await sendWithAck(socket, { content: "no redis" })).ok).toBe(true);
      } finally {
        socket.disconnect();
      }
      // Reconnection attempts went on all along (several a second); the outage is logged once, and nothing went unhandled.
      expect(server.logs.filter((l) => l.msg === "redis unavailable")).toHaveLength(1);
      expect(server.logs.filter((l) => l.msg === "unhandled rejection")).toEqual([]);
      expect(server.proc.exitCode).toBeNull();
    } finally {
      await server.stop();
    }
  });
});

describe("presence survives a crashed instance", () => {
  test("an instance that dies without closing its sockets stops counting once its heartbeat lapses; one survivor announces its users offline", async () => {
    // A prefix of its own: the test servers above would be survivors too, and might sweep first.
    const redis = createRedis(testRedisUrl, `test:${crypto.randomUUID().slice(0, 8)}:`);
    await redisConnected(redis);
    const lapses: [number[], string][] = [];
    const crashed = createPresence(redis, { instanceTtlMs: 300 });
    // Two survivors: the sweep is claimed atomically, so only one of them announces.
    const alive = createPresence(redis, { instanceTtlMs: 300, onLapse: (ids, status) => lapses.push([ids, status]) });
    const other = createPresence(redis, { instanceTtlMs: 300, onLapse: (ids, status) => lapses.push([ids, status]) });
    try {
      const [userId, elsewhere] = [900_000 + Math.floor(Math.random() * 1000), 901_000 + Math.floor(Math.random() * 1000)];
      expect(await crashed.connected(userId)).toBe(true);
      expect(await crashed.connected(elsewhere)).toBe(true);
      // Another instance sees the user online, and a second tab there is not news.
      expect(await alive.online()).toContain(userId);
      expect(await alive.connected(userId)).toBe(false);
      expect(await alive.disconnected(userId)).toBe(false);
      // `elsewhere` keeps a tab on a live instance: never announced offline.
      expect(await other.connected(elsewhere)).toBe(false);
      // The first instance "crashes": no more heartbeats, its sockets never close.
      crashed.close();
      const since = performance.now();
      await settle(async () => !(await alive.online()).includes(userId), (gone) => gone, 2_000, 20);
      expect(performance.now() - since).toBeLessThan(1_000);
      await Bun.sleep(250);
      expect(lapses).toEqual([[[userId], "offline"]]);
      expect(await alive.online()).toContain(elsewhere);
      // The user comes back through the live instance: online again, as news.
      expect(await alive.connected(userId)).toBe(true);
      expect(await alive.disconnected(userId)).toBe(true);
      expect(await alive.online()).not.toContain(userId);
      expect(await other.disconnected(elsewhere)).toBe(true);
    } finally {
      for (const presence of [crashed, alive, other]) presence.close();
      redis.disconnect();
    }
  });
});
