import { describe, expect, setDefaultTimeout, test } from "bun:test";
import type { ChannelEvent, LiveMessage } from "../src/messages/messages.schemas.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { connectResuming, eventsOf, eventually, expectContiguous } from "./helpers/event-log.ts";
import { expectError } from "./helpers/expect-error.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { record } from "./helpers/recorder.ts";
import { sendWithAck, startTestServer, transports, uniqueName, type Json, type Registered, type TestServer } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §11 on one instance: every change to a channel's timeline gets the channel's next seq;
// GET /api/channels gives the head, GET /api/channels/:id/events replays the log, and a socket that
// names `auth.since` gets exactly the events it missed, then live ones, with no gap and no duplicate.
// (Two instances and a crash: test/event-log-scaleout.test.ts. The reorder buffer alone: test/sequencer.test.ts.)

const t = await startTestServer();
const api = apiFor(t);

async function channelFor(owner: Registered, members: Registered[], kind: "public" | "private" = "public"): Promise<number> {
  const channel = await expectStatus(await api("POST", "/api/channels", owner.token, { name: uniqueName("log"), kind }), 201);
  for (const member of members) {
    if (kind === "private") await expectStatus(await api("POST", `/api/channels/${channel.id}/members`, owner.token, { userId: member.user.id }), 200);
    else await expectStatus(await api("POST", `/api/channels/${channel.id}/join`, member.token), 200);
  }
  return channel.id as number;
}

const headOf = async (server: TestServer, user: Registered, channelId: number): Promise<number> => {
  const list = (await expectStatus(await apiFor(server)("GET", "/api/channels", user.token), 200)) as Json[];
  return list.find((c) => c.id === channelId)!.seq;
};

const eventsAfter = async (server: TestServer, user: Registered, channelId: number, after: number, limit = 1000): Promise<{ events: ChannelEvent[]; head: number; limited: boolean }> =>
  expectStatus(await apiFor(server)("GET", `/api/channels/${channelId}/events?after=${after}&limit=${limit}`, user.token), 200);

const send = async (user: Registered, channelId: number, content: string): Promise<LiveMessage> =>
  expectStatus(await api("POST", "/api/messages", user.token, { channelId, content }), 201);
const edit = async (user: Registered, id: number, content: string) => expectStatus(await api("PATCH", `/api/messages/${id}`, user.token, { content }), 200);
const remove = async (user: Registered, id: number) => expectStatus(await api("DELETE", `/api/messages/${id}`, user.token), 204);

describe("1. every change gets the channel's next seq", () => {
  test("send, edit and delete each take one number; the broadcast carries it; GET /api/channels gives the head", async () => {
    const [alice, bob] = [await t.register(), await t.register()];
    const channelId = await channelFor(alice, [bob]);
    expect(await headOf(t, alice, channelId)).toBe(0);
    const watcher = record(await t.connect(bob.token));
    const m1 = await send(alice, channelId, "one");
    expect(m1.seq).toBe(1);
    await edit(alice, m1.id, "one, edited");
    // The same text again changes nothing and takes no number.
    await edit(alice, m1.id, "one, edited");
    const m2 = await send(bob, channelId, "two");
    await remove(bob, m2.id);
    // Deleting it again is a no-op: no event.
    await remove(bob, m2.id);
    const m3 = await send(alice, channelId, "three");
    expect(m3.seq).toBe(5);
    await watcher.until(([event, p]) => event === "message" && (p as LiveMessage).id === m3.id);
    const live = eventsOf(watcher, channelId);
    expect(live.map((e) => [e.seq, e.type])).toEqual([
      [1, "message"],
      [2, "message:updated"],
      [3, "message"],
      [4, "message:deleted"],
      [5, "message"],
    ]);
    expect(live[1]!.data).toEqual({ id: m1.id, channelId, content: "one, edited", editedAt: expect.any(String), seq: 2 });
    expect(live[3]!.data).toEqual({ id: m2.id, channelId, seq: 4 });
    expect(await headOf(t, alice, channelId)).toBe(5);
    // History entries keep their shape: no seq.
    const history = (await expectStatus(await api("GET", `/api/channels/${channelId}/messages`, alice.token), 200)) as Json[];
    for (const entry of history) expect(entry.seq).toBeUndefined();
  });

  test("10 senders at once in one channel: every watcher sees seq 1, 2, 3... once each, on both transports", async () => {
    const owner = await t.register();
    const senders = await Promise.all(Array.from({ length: 10 }, () => t.register()));
    const channelId = await channelFor(owner, senders);
    const watchers = await Promise.all(transports.map(async (transport) => record(await t.connect(owner.token, transport))));
    const sockets = await Promise.all(senders.map((s) => t.connect(s.token)));
    const acks = await Promise.all(sockets.flatMap((socket, i) => Array.from({ length: 10 }, (_, k) => sendWithAck(socket, { channelId, content: `s${i} #${k}` }))));
    expect(acks.every((a) => a.ok)).toBe(true);
    // Edits and deletes in the same stream.
    const mine = acks.filter((a) => a.message.userId === senders[0]!.user.id).map((a) => a.message as LiveMessage);
    await Promise.all([edit(senders[0]!, mine[0]!.id, "edited"), remove(senders[0]!, mine[1]!.id)]);
    for (const watcher of watchers) {
      await eventually(() => eventsOf(watcher, channelId).length === 102, "102 events");
      expectContiguous(
        eventsOf(watcher, channelId).map((e) => e.seq),
        0,
        102,
      );
    }
    // The acks' seqs are those of the broadcasts.
    expect(new Set(acks.map((a) => a.message.seq)).size).toBe(100);
  });
});

describe("2. GET /api/channels/:id/events", () => {
  test("oldest first, the payloads of the socket events; a message changed later shows how it is now", async () => {
    const [alice, bob] = [await t.register(), await t.register()];
    const channelId = await channelFor(alice, [bob]);
    const watcher = record(await t.connect(bob.token));
    const kept = await send(alice, channelId, "kept as sent");
    const edited = await send(alice, channelId, "before the edit");
    await edit(alice, edited.id, "after the edit");
    const erased = await send(bob, channelId, "soon gone");
    await remove(bob, erased.id);
    await watcher.until(([event, p]) => event === "message:deleted" && (p as Json).id === erased.id);
    const live = eventsOf(watcher, channelId);
    const page = await eventsAfter(t, alice, channelId, 0);
    expect(page.head).toBe(5);
    expect(page.limited).toBe(false);
    expect(page.events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    // Unchanged since: exactly what was broadcast. The edit and the deletion events: exactly too.
    expect(page.events[0]).toEqual(live[0]!);
    expect(page.events[2]).toEqual(live[2]!);
    expect(page.events[4]).toEqual(live[4]!);
    // Edited since: the created event shows the newest text. Deleted since: no text at all.
    expect(page.events[1]).toEqual({ seq: 2, type: "message", data: { ...(live[1]!.data as LiveMessage), content: "after the edit", editedAt: expect.any(String) } });
    expect(page.events[3]).toEqual({ seq: 4, type: "message", data: { ...(live[3]!.data as LiveMessage), content: "" } });
    expect(kept.seq).toBe(1);
  });

  test("after and limit page through the log; after = head gives nothing; general is open to everyone", async () => {
    const alice = await t.register();
    const channelId = await channelFor(alice, []);
    for (let i = 0; i < 7; i++) await send(alice, channelId, `page ${i}`);
    const first = await eventsAfter(t, alice, channelId, 0, 3);
    expect(first.events.map((e) => e.seq)).toEqual([1, 2, 3]);
    const next = await eventsAfter(t, alice, channelId, 3, 3);
    expect(next.events.map((e) => e.seq)).toEqual([4, 5, 6]);
    expect(await eventsAfter(t, alice, channelId, 7)).toEqual({ events: [], head: 7, limited: false });
    // Defaults: after=0, limit=200.
    const all = await expectStatus(await api("GET", `/api/channels/${channelId}/events`, alice.token), 200);
    expect(all.events).toHaveLength(7);
    const general = await expectStatus(await api("GET", `/api/channels/1/events?after=0&limit=1`, alice.token), 200);
    expect(general.limited).toBe(false);
  });

  test("members only: a public channel not joined is FORBIDDEN, a private one NOT_FOUND like one that does not exist", async () => {
    const [alice, eve] = [await t.register(), await t.register()];
    const open = await channelFor(alice, []);
    const closed = await channelFor(alice, [], "private");
    await send(alice, closed, "secret");
    await expectError(await api("GET", `/api/channels/${open}/events`, eve.token), 403, "FORBIDDEN");
    await expectError(await api("GET", `/api/channels/${closed}/events`, eve.token), 404, "NOT_FOUND");
    await expectError(await api("GET", `/api/channels/2147483000/events`, eve.token), 404, "NOT_FOUND");
    await expectError(await api("GET", `/api/channels/${open}/events`, undefined), 401, "UNAUTHORIZED");
  });

  const badQueries: [string, string][] = [
    ["?after=-1", "after"],
    ["?after=abc", "after"],
    ["?after=1.5", "after"],
    ["?after=", "after"],
    ["?after=01", "after"],
    ["?after=1e3", "after"],
    ["?after=99999999999", "after"],
    ["?limit=0", "limit"],
    ["?limit=1001", "limit"],
    ["?limit=abc", "limit"],
    ["?limit=-5", "limit"],
    ["?limit=", "limit"],
  ];
  test.each(badQueries)("%s → 400 VALIDATION_FAILED naming %s", async (query, field) => {
    const alice = await t.register();
    await expectError(await api("GET", `/api/channels/1/events${query}`, alice.token), 400, "VALIDATION_FAILED", field);
  });

  test("a bad channel id in the path → 400 VALIDATION_FAILED", async () => {
    const alice = await t.register();
    for (const id of ["0", "abc", "-1", "1.5", "99999999999"]) await expectError(await api("GET", `/api/channels/${id}/events`, alice.token), 400, "VALIDATION_FAILED");
  });
});

describe("3. resume with auth.since", () => {
  for (const transport of transports) {
    test(`on ${transport}: exactly the missed sends, edits and deletes in seq order, then live ones, with traffic during the reconnect`, async () => {
      const [alice, bob] = [await t.register(), await t.register()];
      const channelId = await channelFor(alice, [bob]);
      const own = [await send(alice, channelId, "mine 1"), await send(alice, channelId, "mine 2"), await send(alice, channelId, "mine 3")];
      const away = await connectResuming(t.url, alice.token, { [channelId]: 0 }, transport);
      await eventually(() => eventsOf(away.recorder, channelId).length === 3, "the first three replayed");
      const since = Math.max(...eventsOf(away.recorder, channelId).map((e) => e.seq));
      away.socket.disconnect();

      // While it is away: others send, edit and delete; its own older messages are edited and deleted from another tab.
      const bobs = [await send(bob, channelId, "while away 1"), await send(bob, channelId, "while away 2")];
      await edit(bob, bobs[0]!.id, "while away 1, edited");
      await edit(alice, own[0]!.id, "mine 1, edited elsewhere");
      await remove(alice, own[1]!.id);
      await remove(bob, bobs[1]!.id);

      // Traffic running while it reconnects.
      let running = true;
      const traffic = (async () => {
        for (let i = 0; running; i++) {
          const m = await send(bob, channelId, `during ${i}`);
          if (i % 3 === 1) await edit(bob, m.id, `during ${i}, edited`);
        }
      })();
      await Bun.sleep(30);
      const back = await connectResuming(t.url, alice.token, { [channelId]: since }, transport);
      await Bun.sleep(150);
      running = false;
      await traffic;
      const head = await headOf(t, alice, channelId);
      await eventually(() => eventsOf(back.recorder, channelId).at(-1)?.seq === head, "caught up to the head");
      const received = eventsOf(back.recorder, channelId);
      expectContiguous(
        received.map((e) => e.seq),
        since,
        head,
      );
      // The same events, type by type and message by message, as the log has them.
      const logged = (await eventsAfter(t, alice, channelId, since)).events;
      expect(received.map((e) => [e.seq, e.type, (e.data as { id: number }).id])).toEqual(logged.map((e) => [e.seq, e.type, (e.data as { id: number }).id]));
      expect(received.slice(0, 6).map((e) => e.type)).toEqual(["message", "message", "message:updated", "message:updated", "message:deleted", "message:deleted"]);
      // Its own old messages: the edit and the deletion reached it.
      expect(received.find((e) => e.type === "message:updated" && (e.data as Json).id === own[0]!.id)).toBeDefined();
      expect(received.find((e) => e.type === "message:deleted" && (e.data as Json).id === own[1]!.id)).toBeDefined();
      // Live ones follow: one more after everything.
      const last = await send(bob, channelId, "after the resume");
      await eventually(() => eventsOf(back.recorder, channelId).at(-1)?.seq === last.seq, "the live one");
      expect(eventsOf(back.recorder, channelId).filter((e) => e.seq === last.seq)).toHaveLength(1);
      back.socket.disconnect();
    });
  }

  test("several channels at once; channels without since are joined at once; since = head replays nothing", async () => {
    const [alice, bob] = [await t.register(), await t.register()];
    const [c1, c2, c3] = [await channelFor(alice, [bob]), await channelFor(alice, [bob]), await channelFor(alice, [bob])];
    await send(bob, c1, "c1 a");
    await send(bob, c2, "c2 a");
    await send(bob, c2, "c2 b");
    await send(bob, c3, "c3 a");
    const { socket, recorder } = await connectResuming(t.url, alice.token, { [c1]: 0, [c2]: 1, [c3]: 1 });
    await eventually(() => eventsOf(recorder, c1).length === 1 && eventsOf(recorder, c2).length === 1, "the replays");
    expect(eventsOf(recorder, c2)[0]!.seq).toBe(2);
    const live = await send(bob, c3, "c3 live");
    await eventually(() => eventsOf(recorder, c3).length === 1, "c3's live event");
    expect(eventsOf(recorder, c3)[0]!.seq).toBe(live.seq);
    // General was not named: joined at once, live only.
    const general = await send(bob, 1, "general live");
    await eventually(() => eventsOf(recorder, 1).some((e) => e.seq === general.seq), "general's live event");
    expect(recorder.events.filter(([event]) => event === "resync")).toEqual([]);
    socket.disconnect();
  });

  test("channels the user cannot read are ignored and reveal nothing; the others still replay", async () => {
    const [alice, eve] = [await t.register(), await t.register()];
    const secret = await channelFor(alice, [], "private");
    const open = await channelFor(alice, []);
    await send(alice, secret, "secret");
    await send(alice, open, "public, not joined by eve");
    const mine = await channelFor(eve, []);
    await send(eve, mine, "eve's own");
    const { socket, recorder } = await connectResuming(t.url, eve.token, { [secret]: 0, [open]: 0, 2147483000: 0, [mine]: 0 });
    await eventually(() => eventsOf(recorder, mine).length === 1, "eve's own channel replayed");
    await Bun.sleep(200);
    // Nothing about the others: no event, no resync (general's own traffic aside).
    expect(recorder.events.filter(([, p]) => (p as Json)?.channelId !== 1).map(([event, p]) => [event, (p as Json).channelId])).toEqual([["message", mine]]);
    expect(eventsOf(recorder, secret)).toEqual([]);
    expect(eventsOf(recorder, open)).toEqual([]);
    socket.disconnect();
  });

  test("a since past the head gets resync { channelId, head }; live events after head follow", async () => {
    const alice = await t.register();
    const channelId = await channelFor(alice, []);
    await send(alice, channelId, "one");
    const { socket, recorder } = await connectResuming(t.url, alice.token, { [channelId]: 50 });
    await recorder.until(([event]) => event === "resync");
    expect(recorder.events.find(([event]) => event === "resync")![1]).toEqual({ channelId, head: 1 });
    const next = await send(alice, channelId, "two");
    await eventually(() => eventsOf(recorder, channelId).length === 1, "the live event");
    expect(eventsOf(recorder, channelId)[0]!.seq).toBe(next.seq);
    socket.disconnect();
  });

  const badSince: [string, unknown][] = [
    ["null", null],
    ["a number", 5],
    ["a string", "1:5"],
    ["an array", [[1, 5]]],
    ["true", true],
    ["a negative seq", { 1: -1 }],
    ["a fractional seq", { 1: 1.5 }],
    ["a seq as a string", { 1: "5" }],
    ["a huge seq", { 1: 2 ** 31 }],
    ["a seq of null", { 1: null }],
    ["a channel id 0", { 0: 1 }],
    ["a channel id that is not a number", { general: 1 }],
    ["a channel id past int4", { 99999999999: 1 }],
    ["a negative channel id", { "-1": 1 }],
    ["a nested object", { 1: { seq: 1 } }],
    ["1,001 channels", Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [String(i + 1), 0]))],
  ];
  test.each(badSince)("since %s → connect_error naming auth.since (VALIDATION_FAILED), not Unauthorized", async (_, since) => {
    const alice = await t.register();
    const error = (await connectResuming(t.url, alice.token, since).then(
      () => undefined,
      (e: unknown) => e,
    )) as (Error & { data?: Json }) | undefined;
    expect(error).toBeDefined();
    expect(error!.message).toStartWith("Invalid auth.since");
    expect(error!.message).not.toBe("Unauthorized");
    expect(error!.data?.error?.code).toBe("VALIDATION_FAILED");
    expect(error!.data?.error?.details?.[0]?.path).toStartWith("since");
  });

  test("without since nothing changes: rooms joined at once, no replay", async () => {
    const alice = await t.register();
    const channelId = await channelFor(alice, []);
    await send(alice, channelId, "before connecting");
    const { socket, recorder } = await connectResuming(t.url, alice.token, undefined);
    const live = await send(alice, channelId, "live");
    await eventually(() => eventsOf(recorder, channelId).length === 1, "the live event");
    expect(eventsOf(recorder, channelId)[0]!.seq).toBe(live.seq);
    socket.disconnect();
  });
});

describe("4. past what the log keeps", async () => {
  // Events kept ~2 s (pruned every 500 ms). Another server, keeping events as by default, replays at
  // most 5 events per channel (a short retention there could prune what its test replays).
  const short = await startTestServer({ env: { EVENT_LOG_RETENTION_HOURS: String(2 / 3600) } });
  const shortApi = apiFor(short);
  const capped = await startTestServer({ env: { RESUME_MAX_EVENTS: "5" } });

  test("events pruned: GET events says limited (events empty, the head), and since gets resync", async () => {
    const alice = await short.register();
    const channel = await expectStatus(await shortApi("POST", "/api/channels", alice.token, { name: uniqueName("pruned"), kind: "public" }), 201);
    for (let i = 0; i < 3; i++) await expectStatus(await shortApi("POST", "/api/messages", alice.token, { channelId: channel.id, content: `old ${i}` }), 201);
    // Pruned by age, oldest first: once the last of the three is gone, after=2 is limited too.
    await eventually(async () => (await eventsAfter(short, alice, channel.id, 2)).limited, "the old events pruned", 15_000);
    expect(await eventsAfter(short, alice, channel.id, 0)).toEqual({ events: [], head: 3, limited: true });
    expect(await eventsAfter(short, alice, channel.id, 3)).toEqual({ events: [], head: 3, limited: false });
    // A new event after the pruning: from the head on, the log is whole again.
    const fresh = await expectStatus(await shortApi("POST", "/api/messages", alice.token, { channelId: channel.id, content: "new" }), 201);
    expect((await eventsAfter(short, alice, channel.id, 3)).events.map((e) => e.seq)).toEqual([fresh.seq]);
    const { socket, recorder } = await connectResuming(short.url, alice.token, { [channel.id]: 1 });
    await recorder.until(([event]) => event === "resync");
    expect(recorder.events.find(([event]) => event === "resync")![1]).toEqual({ channelId: channel.id, head: 4 });
    expect(eventsOf(recorder, channel.id)).toEqual([]);
    socket.disconnect();
  });

  test("more than RESUME_MAX_EVENTS behind: resync instead of a long replay; within it: the replay", async () => {
    const cappedApi = apiFor(capped);
    const alice = await capped.register();
    const channel = await expectStatus(await cappedApi("POST", "/api/channels", alice.token, { name: uniqueName("behind"), kind: "public" }), 201);
    for (let i = 0; i < 8; i++) await expectStatus(await cappedApi("POST", "/api/messages", alice.token, { channelId: channel.id, content: `m ${i}` }), 201);
    const far = await connectResuming(capped.url, alice.token, { [channel.id]: 2 });
    await far.recorder.until(([event]) => event === "resync");
    expect(far.recorder.events.find(([event]) => event === "resync")![1]).toEqual({ channelId: channel.id, head: 8 });
    far.socket.disconnect();
    const near = await connectResuming(capped.url, alice.token, { [channel.id]: 4 });
    await eventually(() => eventsOf(near.recorder, channel.id).length === 4, "4 replayed");
    expectContiguous(
      eventsOf(near.recorder, channel.id).map((e) => e.seq),
      4,
      8,
    );
    near.socket.disconnect();
  });
});
