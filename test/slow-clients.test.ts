import { afterAll, afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { createTestDatabase } from "./helpers/db.ts";
import { scrapeMetrics, TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { productionEnv, registerAt, startServerProcess, type ServerProcess } from "./helpers/process.ts";
import { connectRawPolling, connectRawWebsocket, type RawWebsocket } from "./helpers/raw-socketio.ts";
import { httpIdleTimeoutSeconds } from "../src/server.ts";
import { uniqueName } from "./helpers/server.ts";
import { socketTracker } from "./helpers/sockets.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Slow and dead clients (issue 7, item 5; made deterministic in issue 14). A client that stops
// reading must not make the server hold more than SOCKET_MAX_BUFFERED_BYTES for it: past that it
// is disconnected, through the normal path (presence offline, the socket gauge down), logged and
// counted. A client that stops answering pings (a half-open connection, a client that stopped
// polling) is dropped after SOCKET_PING_INTERVAL_MS + SOCKET_PING_TIMEOUT_MS.
//
// What is asserted is the server's own accounting (the drop warning's `bufferedBytes`, the
// `socketio_buffered_bytes_max` gauge sampled through the flood), which does not depend on
// timing; the process's RSS is only printed (the heap's growth under a flood moves with GC
// timing, by tens of MiB on a loaded machine). On websocket the kernel's socket buffers fill
// before the server holds a byte (slow-clients.ts): their size is read from the sysctls, printed,
// and sets how long a flood must run. Each test starts its own server, so none depends on what
// another left behind.
//
// The servers run as child processes (the entry point, production config); the stalled clients
// are written by hand over node:net and fetch (helpers/raw-socketio.ts), since socket.io-client
// always reads and always answers pings.

const database = await createTestDatabase();
const capBytes = 64 * 1024;
const pingIntervalMs = 300;
const pingTimeoutMs = 300;
/** Fast heartbeats; the buffer cap at its default (1 MiB). */
const heartbeat = await startServerProcess(
  productionEnv(database.url, { SOCKET_PING_INTERVAL_MS: String(pingIntervalMs), SOCKET_PING_TIMEOUT_MS: String(pingTimeoutMs) }),
);
afterAll(async () => {
  await heartbeat.stop();
});

/** Sockets opened by one test, closed after it (before its servers stop: hooks run in the order registered). */
const { connect } = socketTracker();
const started: ServerProcess[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((server) => server.stop()));
});

/** A server of this test's own with SOCKET_MAX_BUFFERED_BYTES small; pings at their defaults (25 s + 20 s), so only the cap can act. */
async function cappedServer(): Promise<ServerProcess> {
  const server = await startServerProcess(productionEnv(database.url, { SOCKET_MAX_BUFFERED_BYTES: String(capBytes) }));
  started.push(server);
  return server;
}

/** Linux's TCP buffer sysctls (min, default, max bytes). */
function tcpBuffers(name: "tcp_wmem" | "tcp_rmem"): [number, number, number] {
  return readFileSync(`/proc/sys/net/ipv4/${name}`, "utf8").trim().split(/\s+/).map(Number) as [number, number, number];
}

type Presence = { userId: number; status: "online" | "offline"; at: number };

/** A live socket.io-client that records the messages and presence events it receives. */
async function watcher(server: ServerProcess) {
  const { token, user } = await registerAt(server.url, uniqueName("watcher"));
  const socket = await connect(token, "websocket", server);
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
  const find = (userId: number, status: Presence["status"]) => presence.find((p) => p.userId === userId && p.status === status);
  return {
    socket,
    user,
    messages,
    presence,
    waitFor,
    /** Whether the watcher has seen this presence event yet. */
    saw: (userId: number, status: Presence["status"]) => find(userId, status) !== undefined,
    /** Resolves with the time (performance.now()) the watcher got this presence event. */
    async presenceOf(userId: number, status: Presence["status"], ms = 10_000): Promise<number> {
      await waitFor(`presence ${status} of user ${userId}`, () => find(userId, status) !== undefined, ms);
      return find(userId, status)!.at;
    },
  };
}

/** Resident memory of a process, in KiB (from /proc). */
function rssKiB(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!match) throw new Error("no VmRSS");
  return Number(match[1]);
}

/** The value of one series of the server's /metrics. */
async function metric(server: ServerProcess, series: string): Promise<number | undefined> {
  const text = await scrapeMetrics(server.url);
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/**
 * Reads, every 100 ms until stopped (a scrape costs the server tens of ms), the most the server holds for one client by its own
 * accounting (socketio_buffered_bytes_max) and the process's RSS; returns the peaks.
 */
type Peaks = { heldKiB: number; rssKiB: number };
function sampleServer(server: ServerProcess): () => Promise<Peaks> {
  const peaks = { heldKiB: 0, rssKiB: rssKiB(server.proc.pid) };
  let sampling = true;
  const done = (async () => {
    while (sampling) {
      const held = (await metric(server, "socketio_buffered_bytes_max")) ?? Number.NaN;
      peaks.heldKiB = Math.max(peaks.heldKiB, held / 1024);
      peaks.rssKiB = Math.max(peaks.rssKiB, rssKiB(server.proc.pid));
      await Bun.sleep(100);
    }
  })();
  return async () => {
    sampling = false;
    await done;
    return peaks;
  };
}

/**
 * Posts messages of `size` characters over REST, `concurrency` at a time, until `until()` has
 * held and `after` more were sent (or `max` in all); resolves with their contents, in order sent.
 */
async function flood(
  server: ServerProcess,
  token: string,
  { tag, size, concurrency, until, after, max }: { tag: string; size: number; concurrency: number; until: () => boolean; after: number; max: number },
): Promise<string[]> {
  const contents: string[] = [];
  let stopAt = max;
  const worker = async () => {
    while (contents.length < stopAt) {
      const content = `${tag} ${contents.length} `.padEnd(size, "x");
      contents.push(content);
      const res = await fetch(`${server.url}/api/messages`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ content }),
      });
      if (res.status !== 201) throw new Error(`POST /api/messages: ${res.status} ${await res.text()}`);
      if (stopAt === max && until()) stopAt = Math.min(max, contents.length + after);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return contents;
}

/** The `message` events a raw client received, decoded from its Socket.IO packets. */
function messagesIn(client: RawWebsocket): ChatMessage[] {
  return client.packets
    .filter((p) => p.startsWith('42["message",'))
    .map((p) => (JSON.parse(p.slice(2)) as [string, ChatMessage])[1]);
}

const dropWarning = "slow client disconnected: it stopped reading";

/**
 * Each of `userIds`, and nobody else, was logged as dropped for not reading, with what the server
 * held for it when it was (bytes, `above` < held <= `atMost`); and the counter for `transport`
 * went up by as many.
 */
async function expectDroppedForNotReading(
  server: ServerProcess,
  transport: "websocket" | "polling",
  userIds: number[],
  { above, atMost }: { above: number; atMost: number },
) {
  const warnings = () => server.logs.filter((e) => e.level === 40 && e.msg === dropWarning);
  const deadline = Date.now() + 5_000;
  while (warnings().length < userIds.length && Date.now() < deadline) await Bun.sleep(10);
  const logged = warnings();
  expect(logged.map((e) => e.userId).sort()).toEqual([...userIds].sort());
  for (const { msg, ...fields } of logged) {
    expect(fields).toMatchObject({ transport, limitBytes: capBytes });
    expect(fields.bufferedBytes).toBeGreaterThan(above);
    expect(fields.bufferedBytes).toBeLessThanOrEqual(atMost);
  }
  expect(await metric(server, `socketio_slow_clients_dropped_total{transport="${transport}"}`)).toBe(userIds.length);
  const other = transport === "websocket" ? "polling" : "websocket";
  expect(await metric(server, `socketio_slow_clients_dropped_total{transport="${other}"}`)).toBe(0);
}

describe("a client that stops reading", () => {
  test("on websocket: the server holds at most SOCKET_MAX_BUFFERED_BYTES for it once the kernel's buffers are full, then drops it; the others get every message in order", async () => {
    const capped = await cappedServer();
    const watch = await watcher(capped);
    const sender = await registerAt(capped.url, uniqueName("sender"));

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

    // Before the server holds anything, the kernel takes up to tcp_wmem's maximum on the server's
    // side and the client's receive buffer (it does not grow while the client reads nothing).
    const kernelBytes = tcpBuffers("tcp_wmem")[2] + tcpBuffers("tcp_rmem")[1];
    const size = 4000;
    const sample = sampleServer(capped);
    const before = rssKiB(capped.proc.pid);
    const floodStarted = performance.now();
    const allDropped = () => stalled.every(({ user }) => watch.saw(user.id, "offline"));
    let contents: string[];
    let peaks: Peaks;
    try {
      // Until every stalled client is dropped, and 200 more after: the others keep receiving.
      contents = await flood(capped, sender.token, { tag: "flood", size, concurrency: 16, until: allDropped, after: 200, max: Math.ceil((2 * (kernelBytes + capBytes)) / size) + 500 });
      await watch.waitFor("every message at the watcher", () => watch.messages.length >= contents.length);
    } finally {
      peaks = await sample();
    }
    const dropped = await Promise.all(stalled.map(({ user }) => watch.presenceOf(user.id, "offline", 5_000).then((at) => at - floodStarted)));
    console.log(
      `websocket: ${contents.length} messages of ${size} characters in ${(performance.now() - floodStarted).toFixed(0)} ms; ${stalledCount} stalled clients dropped ` +
        `${[...new Set(dropped.map((ms) => `${ms.toFixed(0)} ms`))].join(", ")} into the flood (kernel buffers up to ${(kernelBytes / 2 ** 20).toFixed(1)} MiB each first); ` +
        `most held for one client ${peaks.heldKiB.toFixed(1)} KiB (cap ${capBytes / 1024} KiB); server RSS ${(before / 1024).toFixed(1)} MiB before, peak ${(peaks.rssKiB / 1024).toFixed(1)} MiB`,
    );

    // The healthy client got every message, once, in id order.
    expect(watch.messages.map((m) => m.content).sort()).toEqual([...contents].sort());
    const ids = watch.messages.map((m) => m.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));

    // Dropped through the normal path: presence (above) and the socket gauge, down to the watcher.
    expect(await metric(capped, "socketio_connected_sockets")).toBe(1);

    // Once it reads again, each stalled client gets what the kernel held, then the end of the connection.
    let longestFrame = 0;
    for (const { client } of stalled) {
      client.tcp.resume();
      await Promise.race([client.closed, Bun.sleep(5_000).then(() => Promise.reject(new Error("the stalled client's connection is still open")))]);
      // What it did receive is a prefix of what the others got: nothing skipped before the cut.
      const got = messagesIn(client).map((m) => m.id);
      expect(got.length).toBeGreaterThan(0);
      expect(got.length).toBeLessThan(contents.length);
      expect(got).toEqual(ids.slice(0, got.length));
      // A websocket frame: the packet and a header of at most 10 bytes.
      longestFrame = Math.max(longestFrame, ...client.packets.map((p) => Buffer.byteLength(p) + 10));
    }
    // Logged and counted, each with the last amount the server saw Bun hold for it: never past the
    // cap by more than one frame (Bun queues a message while it holds at most the cap, and drops
    // the first one after that), but not necessarily the amount at the drop, which Bun does not
    // report (in one CI run 58,599 bytes were last seen against a 65,536-byte cap). By Bun's own
    // figure, sampled through the flood, it never held more than that bound for any client.
    const bound = { above: 0, atMost: capBytes + longestFrame };
    await expectDroppedForNotReading(capped, "websocket", stalled.map(({ user }) => user.id), bound);
    expect(peaks.heldKiB * 1024).toBeLessThanOrEqual(bound.atMost);
  });

  test("on polling: a client that stops polling is disconnected once SOCKET_MAX_BUFFERED_BYTES wait for it, long before the ping timeout", async () => {
    const capped = await cappedServer();
    const watch = await watcher(capped);
    const sender = await registerAt(capped.url, uniqueName("sender"));
    // A healthy polling client, which must get everything the stalled one misses.
    const reader = await registerAt(capped.url, uniqueName("reader"));
    const healthy = await connect(reader.token, "polling", capped);
    const received: ChatMessage[] = [];
    healthy.on("message", (m) => received.push(m));

    const stalledUser = await registerAt(capped.url, uniqueName("stalled"));
    // After connecting, it never polls again: everything for it waits in the server.
    const stalled = await connectRawPolling(capped.url, stalledUser.token);
    await watch.presenceOf(stalledUser.user.id, "online");

    // Small messages, two at a time: a polling client gets nothing between a response and its
    // next GET, so the healthy one must never have the cap's worth (here ~60 messages) arrive
    // between two of its polls, even on a loaded machine.
    const size = 1000;
    const sample = sampleServer(capped);
    const floodStarted = performance.now();
    let contents: string[];
    let peaks: Peaks;
    try {
      contents = await flood(capped, sender.token, { tag: "polling flood", size, concurrency: 2, until: () => watch.saw(stalledUser.user.id, "offline"), after: 50, max: 2000 });
      await watch.waitFor("every message at the polling client", () => received.length >= contents.length);
    } finally {
      peaks = await sample();
    }
    const dropped = (await watch.presenceOf(stalledUser.user.id, "offline", 5_000)) - floodStarted;
    console.log(
      `polling: ${contents.length} messages of ${size} characters; the client that stopped polling dropped ${dropped.toFixed(0)} ms into the flood; ` +
        `most held for one client ${peaks.heldKiB.toFixed(1)} KiB (cap ${capBytes / 1024} KiB); server RSS peak ${(peaks.rssKiB / 1024).toFixed(1)} MiB`,
    );
    // Dropped by the cap, the moment its queue passed it: the ping timeout (25 s + 20 s here) is far off.
    expect(contents.length).toBeLessThan(2000);
    expect(peaks.heldKiB).toBeLessThanOrEqual(capBytes / 1024);

    expect(received.map((m) => m.content).sort()).toEqual([...contents].sort());
    const ids = received.map((m) => m.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));

    expect(await metric(capped, "socketio_connected_sockets")).toBe(2);
    // A queued packet: the message event and Engine.IO's type and separator.
    const packetBytes = Buffer.byteLength(`42${JSON.stringify(["message", received.at(-1)])}`) + 2;
    // Held at most the cap: the packet that would have taken it past was the end of it.
    await expectDroppedForNotReading(capped, "polling", [stalledUser.user.id], { above: capBytes - packetBytes, atMost: capBytes });
    // When it polls again, its session is gone: it has to reconnect (and catch up from history).
    expect((await stalled.poll()).status).toBe(400);
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
