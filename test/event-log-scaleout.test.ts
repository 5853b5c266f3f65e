import { describe, expect, setDefaultTimeout, test } from "bun:test";
import type { LiveMessage } from "../src/messages/messages.schemas.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { connectResuming, eventsOf, eventually, expectContiguous } from "./helpers/event-log.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { connectTo, productionEnv, registerAt, startServerProcess } from "./helpers/process.ts";
import { record, type Recorder } from "./helpers/recorder.ts";
import { hostAndPort, startTcpProxy, throughProxy } from "./helpers/tcp-proxy.ts";
import { sendWithAck, startTestServer, testJwtSecret, testRedisUrl, transports, uniqueName, type Json, type TestServer } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §11 across instances (§9: one database, one Redis): every client gets each channel's
// events in seq order with no gap, whichever instance committed them; a client resumes on another
// instance, and after the instance it was on is killed; a broadcast Redis never delivered is read
// back from the database.

const prefix = `test:${crypto.randomUUID().slice(0, 8)}:`;
const a = await startTestServer({ redisPrefix: prefix });
const b = await startTestServer({ redisPrefix: prefix, database: a.database });

type User = { token: string; user: { id: number; username: string } };

async function publicChannel(server: { url: string }, owner: User, members: User[]): Promise<number> {
  const api = apiFor(server);
  const channel = await expectStatus(await api("POST", "/api/channels", owner.token, { name: uniqueName("scale"), kind: "public" }), 201);
  for (const member of members) await expectStatus(await api("POST", `/api/channels/${channel.id}/join`, member.token), 200);
  return channel.id as number;
}

const send = async (server: { url: string }, user: User, channelId: number, content: string): Promise<LiveMessage> =>
  expectStatus(await apiFor(server)("POST", "/api/messages", user.token, { channelId, content }), 201);
const edit = async (server: { url: string }, user: User, id: number, content: string) =>
  expectStatus(await apiFor(server)("PATCH", `/api/messages/${id}`, user.token, { content }), 200);
const remove = async (server: { url: string }, user: User, id: number) => expectStatus(await apiFor(server)("DELETE", `/api/messages/${id}`, user.token), 204);
const headOf = async (server: { url: string }, user: User, channelId: number): Promise<number> =>
  ((await expectStatus(await apiFor(server)("GET", "/api/channels", user.token), 200)) as Json[]).find((c) => c.id === channelId)!.seq;

/** Sends (and edits every third) through each server in turn until stopped. */
function trafficThrough(servers: { url: string }[], user: User, channelId: number) {
  let running = true;
  const done = (async () => {
    for (let i = 0; running; i++) {
      const via = servers[i % servers.length]!;
      const m = await send(via, user, channelId, `traffic ${i}`).catch(() => undefined);
      if (m && i % 3 === 2) await edit(via, user, m.id, `traffic ${i}, edited`).catch(() => undefined);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
    },
  };
}

describe("across two instances", () => {
  test("10 senders on two instances: every receiver, on either instance and transport, sees seq +1 each time", async () => {
    const owner = await a.register();
    const senders = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? b : a).register()));
    const channelId = await publicChannel(a, owner, senders);
    const receivers: Recorder[] = [];
    for (const server of [a, b]) for (const transport of transports) receivers.push(record(await server.connect(owner.token, transport)));
    const sockets = await Promise.all(senders.map((s, i) => (i % 2 ? b : a).connect(s.token)));
    const acks = await Promise.all(sockets.flatMap((socket, i) => Array.from({ length: 20 }, (_, k) => sendWithAck(socket, { channelId, content: `s${i} #${k}` }))));
    expect(acks.every((ack) => ack.ok)).toBe(true);
    for (const receiver of receivers) {
      await eventually(() => eventsOf(receiver, channelId).length === 200, "200 events");
      expectContiguous(
        eventsOf(receiver, channelId).map((e) => e.seq),
        0,
        200,
      );
    }
    for (const socket of sockets) socket.disconnect();
  });

  for (const transport of transports) {
    test(`on ${transport}: away from A, back on B with since: the missed events, then live ones, traffic on both meanwhile`, async () => {
      const [alice, bob] = [await a.register(), await b.register()];
      const channelId = await publicChannel(a, alice, [bob]);
      const own = [await send(a, alice, channelId, "mine 1"), await send(b, alice, channelId, "mine 2")];
      const first = await connectResuming(a.url, alice.token, { [channelId]: 0 }, transport);
      await eventually(() => eventsOf(first.recorder, channelId).length === 2, "the first two");
      first.socket.disconnect();
      await send(b, bob, channelId, "while away, through B");
      await edit(a, alice, own[0]!.id, "mine 1, edited through A");
      await remove(b, alice, own[1]!.id);
      const traffic = trafficThrough([a, b], bob, channelId);
      await Bun.sleep(50);
      const back = await connectResuming(b.url, alice.token, { [channelId]: 2 }, transport);
      await Bun.sleep(200);
      await traffic.stop();
      const head = await headOf(a, alice, channelId);
      await eventually(() => eventsOf(back.recorder, channelId).at(-1)?.seq === head, `caught up to ${head}`);
      expectContiguous(
        eventsOf(back.recorder, channelId).map((e) => e.seq),
        2,
        head,
      );
      expect(eventsOf(back.recorder, channelId).slice(0, 3).map((e) => e.type)).toEqual(["message", "message:updated", "message:deleted"]);
      back.socket.disconnect();
    });
  }

  test("a broadcast Redis never delivered is read back from the database: B's clients still get every seq in order", async () => {
    const [alice, bob] = [await a.register(), await b.register()];
    const channelId = await publicChannel(a, alice, [bob]);
    const onB = record(await b.connect(bob.token));
    // A's next event goes nowhere but A's own sockets, as if its instance died between commit and publish.
    const io = a.app.io as unknown as { serverSideEmit: (...args: unknown[]) => unknown };
    const original = io.serverSideEmit;
    let dropped = 0;
    io.serverSideEmit = function (this: unknown, event: unknown, ...args: unknown[]) {
      if (event === "channel:event" && dropped === 0) return void dropped++;
      return original.call(this, event, ...args);
    };
    try {
      const lost = await send(a, alice, channelId, "its broadcast is lost");
      const next = await send(a, alice, channelId, "this one arrives");
      await eventually(() => eventsOf(onB, channelId).length === 2, "both on B");
      expect(dropped).toBe(1);
      expect(eventsOf(onB, channelId).map((e) => [e.seq, (e.data as LiveMessage).id])).toEqual([
        [lost.seq, lost.id],
        [next.seq, next.id],
      ]);
    } finally {
      io.serverSideEmit = original;
    }
  });
});

describe("after SIGKILL of the instance a client was on", () => {
  test("it resumes on the survivor with since: every event after its seq once, in order, including what the dead one committed", async () => {
    const env = productionEnv(a.database.url, { REDIS_URL: testRedisUrl, REDIS_KEY_PREFIX: prefix, JWT_SECRET: testJwtSecret });
    const doomed = await startServerProcess(env);
    const survivor: TestServer = b;
    const alice = await registerAt(doomed.url, uniqueName("alice"));
    const bob = await registerAt(doomed.url, uniqueName("bob"));
    const channelId = await publicChannel(doomed, alice, [bob]);
    const watching = await connectTo(doomed.url, alice.token, "websocket");
    const seen = record(watching);
    const sender = await connectTo(doomed.url, bob.token, "websocket");
    // Acked sends through the doomed instance, then SIGKILL mid-stream.
    const acked: LiveMessage[] = [];
    const sending = (async () => {
      for (let i = 0; i < 1_000; i++) {
        const ack = await sendWithAck(sender, { channelId, content: `before the kill ${i}` }, 2_000).catch(() => undefined);
        if (!ack?.ok) return;
        acked.push(ack.message);
      }
    })();
    await eventually(() => acked.length >= 20, "20 acked");
    doomed.proc.kill("SIGKILL");
    await sending;
    await doomed.proc.exited;
    const since = Math.max(0, ...eventsOf(seen, channelId).map((e) => e.seq));
    // More traffic on the survivor while the client comes back.
    const traffic = trafficThrough([survivor], bob, channelId);
    await Bun.sleep(50);
    const back = await connectResuming(survivor.url, alice.token, { [channelId]: since });
    await Bun.sleep(200);
    await traffic.stop();
    const head = await headOf(survivor, alice, channelId);
    await eventually(() => eventsOf(back.recorder, channelId).at(-1)?.seq === head, `caught up to ${head}`);
    const received = eventsOf(back.recorder, channelId);
    expectContiguous(
      received.map((e) => e.seq),
      since,
      head,
    );
    // Every message the dead instance acknowledged is in what the client has, once.
    const have = new Set([...eventsOf(seen, channelId), ...received].filter((e) => e.type === "message").map((e) => (e.data as LiveMessage).id));
    for (const message of acked) expect(have.has(message.id)).toBe(true);
    back.socket.disconnect();
    watching.disconnect();
    sender.disconnect();
  });
});

describe("a Redis outage", () => {
  test("events committed on A while Redis was away reach B's clients once it is back, in seq order, with what came after", async () => {
    const proxy = await startTcpProxy(hostAndPort(testRedisUrl, 6379));
    const viaProxy = throughProxy(testRedisUrl, proxy);
    const outagePrefix = `test:${crypto.randomUUID().slice(0, 8)}:`;
    const a2 = await startTestServer({ redisPrefix: outagePrefix, redisUrl: viaProxy });
    const b2 = await startTestServer({ redisPrefix: outagePrefix, redisUrl: viaProxy, database: a2.database });
    const [alice, bob] = [await a2.register(), await b2.register()];
    const channelId = await publicChannel(a2, alice, [bob]);
    const onB = record(await b2.connect(bob.token));
    const before = await send(a2, alice, channelId, "before the outage");
    await eventually(() => eventsOf(onB, channelId).length === 1, "the first event on B");
    proxy.cut();
    // Acked while Redis is away: A's own clients have them; B's cannot yet.
    const during = [await send(a2, alice, channelId, "during 1"), await send(a2, alice, channelId, "during 2")];
    await Bun.sleep(300);
    expect(eventsOf(onB, channelId).map((e) => e.seq)).toEqual([before.seq]);
    proxy.restore();
    await eventually(() => eventsOf(onB, channelId).length === 3, "the missed events on B after the outage", 15_000);
    const after = await send(a2, alice, channelId, "after the outage");
    await eventually(() => eventsOf(onB, channelId).length === 4, "the live one");
    expect(eventsOf(onB, channelId).map((e) => (e.data as LiveMessage).id)).toEqual([before.id, ...during.map((m) => m.id), after.id]);
    expectContiguous(
      eventsOf(onB, channelId).map((e) => e.seq),
      0,
      4,
    );
  });
});
