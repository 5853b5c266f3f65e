import { afterAll, afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { createTestDatabase } from "./helpers/db.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { connectTo, productionEnv, registerAt, startServerProcess, type ServerProcess } from "./helpers/process.ts";
import { connectRawPolling, connectRawWebsocket, type RawWebsocket } from "./helpers/raw-socketio.ts";
import { httpIdleTimeoutSeconds } from "../src/server.ts";
import { uniqueName, type ChatClient } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Slow and dead clients (issue 7, item 5). A client that stops reading must not make the server
// hold more than SOCKET_MAX_BUFFERED_BYTES for it: past that it is disconnected, through the
// normal path (presence offline, the socket gauge down), logged and counted. A client that
// stops answering pings (a half-open connection, a client that stopped polling) is dropped
// after SOCKET_PING_INTERVAL_MS + SOCKET_PING_TIMEOUT_MS.
//
// The servers run as child processes (the entry point, production config) so their memory can
// be read from /proc; the stalled clients are written by hand over node:net and fetch
// (helpers/raw-socketio.ts), since socket.io-client always reads and always answers pings.

const database = await createTestDatabase();
const capBytes = 64 * 1024;
/** SOCKET_MAX_BUFFERED_BYTES small; pings at their defaults (25 s + 20 s), so only the cap can act. */
const capped = await startServerProcess(productionEnv(database.url, { SOCKET_MAX_BUFFERED_BYTES: String(capBytes) }));
/** How much a flood may grow the capped server's resident memory. */
const maxGrowthKiB = 40 * 1024;
const pingIntervalMs = 300;
const pingTimeoutMs = 300;
/** Fast heartbeats; the buffer cap at its default (1 MiB). */
const heartbeat = await startServerProcess(
  productionEnv(database.url, { SOCKET_PING_INTERVAL_MS: String(pingIntervalMs), SOCKET_PING_TIMEOUT_MS: String(pingTimeoutMs) }),
);
afterAll(async () => {
  await Promise.all([capped.stop(), heartbeat.stop()]);
});

/** The clients the tests below saw dropped for not reading. */
const droppedSlow: { userId: number; transport: "websocket" | "polling" }[] = [];

const opened: ChatClient[] = [];
afterEach(() => {
  for (const socket of opened.splice(0)) socket.disconnect();
});

type Presence = { userId: number; status: "online" | "offline"; at: number };

/** A live socket.io-client that records the messages and presence events it receives. */
async function watcher(server: ServerProcess) {
  const { token, user } = await registerAt(server.url, uniqueName("watcher"));
  const socket = await connectTo(server.url, token, "websocket");
  opened.push(socket);
  const messages: ChatMessage[] = [];
  const presence: Presence[] = [];
  socket.on("message", (m) => messages.push(m));
  socket.on("presence", (p) => presence.push({ ...p, at: performance.now() }));
  const waitFor = async (what: string, done: () => boolean, ms = 10_000) => {
    const deadline = Date.now() + ms;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
      await Bun.sleep(5);
    }
  };
  return {
    socket,
    user,
    messages,
    presence,
    waitFor,
    /** Resolves with the time (performance.now()) the watcher got this presence event. */
    async presenceOf(userId: number, status: Presence["status"], ms = 10_000): Promise<number> {
      const find = () => presence.find((p) => p.userId === userId && p.status === status);
      await waitFor(`presence ${status} of user ${userId}`, () => find() !== undefined, ms);
      return find()!.at;
    },
  };
}

/** Resident memory of a process, in KiB (from /proc). */
function rssKiB(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!match) throw new Error("no VmRSS");
  return Number(match[1]);
}

/** Samples a process's RSS every 10 ms until stopped; returns the peak. */
function sampleRss(pid: number) {
  let peak = rssKiB(pid);
  const timer = setInterval(() => {
    peak = Math.max(peak, rssKiB(pid));
  }, 10);
  return () => {
    clearInterval(timer);
    return Math.max(peak, rssKiB(pid));
  };
}

/** Posts `count` messages over REST, `concurrency` at a time; resolves with their contents. */
async function flood(server: ServerProcess, token: string, count: number, tag: string, concurrency = 16): Promise<string[]> {
  const contents = Array.from({ length: count }, (_, i) => `${tag} ${i} `.padEnd(4000, "x"));
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const content = contents[next++]!;
      const res = await fetch(`${server.url}/api/messages`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ content }),
      });
      if (res.status !== 201) throw new Error(`POST /api/messages: ${res.status} ${await res.text()}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return contents;
}

/** The value of one series of the server's /metrics. */
async function metric(server: ServerProcess, series: string): Promise<number | undefined> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** The warning the server logged when it dropped `userId`'s slow client (pino level 40). */
async function warningAbout(server: ServerProcess, userId: number): Promise<Record<string, unknown>> {
  const find = () => server.logs.find((e) => e.level === 40 && e.userId === userId);
  const deadline = Date.now() + 5_000;
  while (!find()) {
    if (Date.now() > deadline) throw new Error(`no warning about user ${userId}; warnings: ${JSON.stringify(server.logs.filter((e) => Number(e.level) >= 40))}`);
    await Bun.sleep(10);
  }
  return find()!;
}

/** The `message` events a raw client received, decoded from its Socket.IO packets. */
function messagesIn(client: RawWebsocket): ChatMessage[] {
  return client.packets
    .filter((p) => p.startsWith('42["message",'))
    .map((p) => (JSON.parse(p.slice(2)) as [string, ChatMessage])[1]);
}

describe("a client that stops reading", () => {
  test("on websocket: disconnected once SOCKET_MAX_BUFFERED_BYTES wait for it, while the others get every message in order", async () => {
    const watch = await watcher(capped);
    const sender = await registerAt(capped.url, uniqueName("sender"));
    // Warm-up: the server's heap grows to its working size on a first flood; measure after it.
    const warmUp = await flood(capped, sender.token, 500, "warm-up");
    await watch.waitFor("the warm-up at the watcher", () => watch.messages.length >= warmUp.length);
    watch.messages.length = 0;

    // Each stalled client's kernel buffers take a few MiB first; past them, without the cap, Bun
    // would hold up to 16 MiB (its default backpressureLimit) for each.
    const stalledCount = 8;
    const stalled = await Promise.all(
      Array.from({ length: stalledCount }, async () => {
        const { token, user } = await registerAt(capped.url, uniqueName("stalled"));
        const client = await connectRawWebsocket(capped.url, token);
        await watch.presenceOf(user.id, "online");
        // From here on the client reads nothing: what the server sends piles up in the kernel, then in Bun.
        client.tcp.pause();
        return { user, client };
      }),
    );
    expect(await metric(capped, "socketio_connected_sockets")).toBe(1 + stalledCount);

    const pid = capped.proc.pid;
    const before = rssKiB(pid);
    const peak = sampleRss(pid);
    const count = 4000;
    const started = performance.now();
    let contents: string[];
    let peakKiB: number;
    try {
      contents = await flood(capped, sender.token, count, "flood");
      await watch.waitFor("every message at the watcher", () => watch.messages.length >= count);
    } finally {
      peakKiB = peak();
    }
    console.log(
      `websocket: ${count} messages of 4000 characters (${((count * 4000) / 2 ** 20).toFixed(1)} MiB to each client) in ${(performance.now() - started).toFixed(0)} ms; ` +
        `server RSS ${(before / 1024).toFixed(1)} MiB before, peak ${(peakKiB / 1024).toFixed(1)} MiB (+${((peakKiB - before) / 1024).toFixed(1)} MiB) with ${stalledCount} stalled clients`,
    );
    const dropped = await Promise.all(stalled.map(({ user }) => watch.presenceOf(user.id, "offline", 5_000).then((at) => at - started)));
    console.log(`websocket: stalled clients dropped ${dropped.map((ms) => `${ms.toFixed(0)} ms`).join(", ")} into the flood`);
    // What the server held for them stayed small: 8 × 64 KiB, against ~90 MiB without the cap.
    // (RSS is coarse: the heap's own growth and reuse move it by several MiB either way.)
    expect(peakKiB - before).toBeLessThan(maxGrowthKiB);

    // The healthy client got every message, once, in id order.
    expect(watch.messages.map((m) => m.content).sort()).toEqual([...contents].sort());
    const ids = watch.messages.map((m) => m.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));

    // Dropped through the normal path: presence (above) and the socket gauge, down to the watcher.
    expect(await metric(capped, "socketio_connected_sockets")).toBe(1);
    for (const { user } of stalled) droppedSlow.push({ userId: user.id, transport: "websocket" });

    // Once it reads again, each stalled client gets what the kernel held, then the end of the connection.
    for (const { client } of stalled) {
      client.tcp.resume();
      await Promise.race([client.closed, Bun.sleep(5_000).then(() => Promise.reject(new Error("the stalled client's connection is still open")))]);
      // What it did receive is a prefix of what the others got: nothing skipped before the cut.
      const got = messagesIn(client).map((m) => m.id);
      expect(got.length).toBeGreaterThan(0);
      expect(got.length).toBeLessThan(count);
      expect(got).toEqual(ids.slice(0, got.length));
    }
  });

  test("on polling: a client that stops polling is disconnected once SOCKET_MAX_BUFFERED_BYTES wait for it, long before the ping timeout", async () => {
    const watch = await watcher(capped);
    const sender = await registerAt(capped.url, uniqueName("sender"));
    // A healthy polling client, which must get everything the stalled one misses.
    const reader = await registerAt(capped.url, uniqueName("reader"));
    const healthy = await connectTo(capped.url, reader.token, "polling");
    opened.push(healthy);
    const received: ChatMessage[] = [];
    healthy.on("message", (m) => received.push(m));

    const stalledUser = await registerAt(capped.url, uniqueName("stalled"));
    // After connecting, it never polls again: everything for it waits in the server.
    const stalled = await connectRawPolling(capped.url, stalledUser.token);
    await watch.presenceOf(stalledUser.user.id, "online");

    const pid = capped.proc.pid;
    const before = rssKiB(pid);
    const peak = sampleRss(pid);
    const count = 300;
    const started = performance.now();
    let contents: string[];
    let peakKiB: number;
    try {
      // Two at a time: a polling client gets nothing between a response and its next GET, so a
      // burst over the cap would drop even a healthy one (there is no kernel buffer to absorb it).
      contents = await flood(capped, sender.token, count, "polling flood", 2);
      await watch.waitFor("every message at the polling client", () => received.length >= count);
    } finally {
      peakKiB = peak();
    }
    const dropped = (await watch.presenceOf(stalledUser.user.id, "offline", 5_000)) - started;
    console.log(
      `polling: ${count} messages of 4000 characters in ${(performance.now() - started).toFixed(0)} ms; the client that stopped polling dropped ${dropped.toFixed(0)} ms into the flood; ` +
        `server RSS ${(before / 1024).toFixed(1)} MiB before, peak ${(peakKiB / 1024).toFixed(1)} MiB (+${((peakKiB - before) / 1024).toFixed(1)} MiB)`,
    );
    // Dropped by the cap: the ping timeout (25 s + 20 s here) is far off.
    expect(dropped).toBeLessThan(10_000);
    expect(peakKiB - before).toBeLessThan(maxGrowthKiB);

    expect(received.map((m) => m.content).sort()).toEqual([...contents].sort());
    const ids = received.map((m) => m.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));

    expect(await metric(capped, "socketio_connected_sockets")).toBe(2);
    droppedSlow.push({ userId: stalledUser.user.id, transport: "polling" });
    // When it polls again, its session is gone: it has to reconnect (and catch up from history).
    expect((await stalled.poll()).status).toBe(400);
  });

  test("each client dropped for not reading is logged as a warning naming its user, and counted by transport", async () => {
    expect(droppedSlow.length).toBeGreaterThan(0);
    for (const { userId, transport } of droppedSlow) {
      const { msg, ...fields } = await warningAbout(capped, userId);
      expect(msg).toBe("slow client disconnected: it stopped reading");
      expect(fields).toMatchObject({ userId, transport, limitBytes: capBytes });
    }
    for (const transport of ["websocket", "polling"] as const) {
      const count = droppedSlow.filter((d) => d.transport === transport).length;
      expect(await metric(capped, `socketio_slow_clients_dropped_total{transport="${transport}"}`)).toBe(count);
    }
    // Nobody else was: none of the healthy clients of the tests above.
    expect(capped.logs.filter((e) => e.level === 40 && e.msg === "slow client disconnected: it stopped reading").length).toBe(droppedSlow.length);
  });
});

describe("a client that stops answering pings", () => {
  const beat = pingIntervalMs + pingTimeoutMs;

  test("on websocket: a half-open client is dropped after pingInterval + pingTimeout, a live one stays", async () => {
    const watch = await watcher(heartbeat);
    const dead = await registerAt(heartbeat.url, uniqueName("dead"));
    const live = await registerAt(heartbeat.url, uniqueName("live"));
    // Both complete the handshake and keep their TCP connection open and read; only the live one answers pings.
    const openedAt = performance.now();
    const [deadClient, liveClient] = await Promise.all([
      connectRawWebsocket(heartbeat.url, dead.token),
      connectRawWebsocket(heartbeat.url, live.token, { answerPings: true }),
    ]);
    const connectedAt = performance.now();

    const droppedAt = await watch.presenceOf(dead.user.id, "offline", beat + 5_000);
    console.log(
      `heartbeat: the client that never answered a ping was dropped ${(droppedAt - connectedAt).toFixed(0)} ms after connecting ` +
        `(pingInterval ${pingIntervalMs} ms + pingTimeout ${pingTimeoutMs} ms)`,
    );
    // The first ping goes out pingInterval after the handshake; pingTimeout later the client is gone.
    expect(droppedAt - openedAt).toBeGreaterThan(beat - 50);
    expect(droppedAt - connectedAt).toBeLessThan(beat + 1_000);
    // The server ends the connection too, not only the session.
    await Promise.race([deadClient.closed, Bun.sleep(5_000).then(() => Promise.reject(new Error("the dead client's connection is still open")))]);

    // Over the same span again, and more, the live client stays: it keeps being pinged and answering.
    const pingsBefore = liveClient.packets.filter((p) => p === "2").length;
    await Bun.sleep(2 * beat);
    expect(liveClient.isClosed).toBe(false);
    expect(liveClient.packets.filter((p) => p === "2").length).toBeGreaterThanOrEqual(pingsBefore + 2);
    expect(watch.presence.some((p) => p.userId === live.user.id && p.status === "offline")).toBe(false);
    const online = (await (await fetch(`${heartbeat.url}/api/presence`, { headers: { authorization: `Bearer ${live.token}` } })).json()) as number[];
    expect(online).toContain(live.user.id);
    expect(online).not.toContain(dead.user.id);
    liveClient.tcp.destroy();
  });

  test("on polling: a client that stops polling is dropped after pingInterval + pingTimeout", async () => {
    const watch = await watcher(heartbeat);
    const gone = await registerAt(heartbeat.url, uniqueName("gone"));
    const openedAt = performance.now();
    const client = await connectRawPolling(heartbeat.url, gone.token);
    const connectedAt = performance.now();
    // Its ping waits, unread, in the server until pingTimeout runs out.
    const droppedAt = await watch.presenceOf(gone.user.id, "offline", beat + 5_000);
    console.log(`heartbeat: the client that stopped polling was dropped ${(droppedAt - connectedAt).toFixed(0)} ms after connecting`);
    expect(droppedAt - openedAt).toBeGreaterThan(beat - 50);
    expect(droppedAt - connectedAt).toBeLessThan(beat + 1_000);
    expect((await client.poll()).status).toBe(400);
  });

  test("Bun's idleTimeout outlives pingInterval + pingTimeout, so a long poll is never cut while it waits", () => {
    const idle = (interval: number, timeout: number) => httpIdleTimeoutSeconds({ SOCKET_PING_INTERVAL_MS: interval, SOCKET_PING_TIMEOUT_MS: timeout });
    expect(idle(25_000, 20_000)).toBe(60);
    expect(idle(pingIntervalMs, pingTimeoutMs)).toBeGreaterThan((pingIntervalMs + pingTimeoutMs) / 1000);
    for (const [interval, timeout] of [[100, 100], [30_000, 5_000], [60_000, 60_000], [200_000, 39_000]] as const) {
      expect(idle(interval, timeout) * 1000).toBeGreaterThan(interval + timeout);
    }
    // Bun's ceiling (it refuses more).
    expect(idle(300_000, 300_000)).toBe(255);
  });
});
