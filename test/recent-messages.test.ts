import { hold, lockLater, until, waitingForLocks } from "./helpers/locks.ts";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { SQL } from "bun";
import { poolOf } from "../src/lib/db.ts";
import type { ChatMessage, HistoryEntry } from "../src/messages/messages.schemas.ts";
import { adminDatabaseUrl, TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { storedNewest } from "./helpers/history.ts";
import { expectError } from "./helpers/expect-error.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { asHistory, record } from "./helpers/recorder.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { sendWithAck, startTestServer, uniqueName, type Registered, type TestServer, type Transport } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// The newest history page of each channel, kept in memory (src/messages/recent-messages.ts), against
// the real server and database; one instance only (with Redis, history is read from the database:
// src/app.ts).

// Sections: 1. the newest page is exact (sends, edits, deletes, limits, sizes, members only);
// 2. it is served from memory (transactions counted in pg_stat_database); 3. reads racing writes
// never lose a message; 4. with Redis there is no cache.

// The history cache is only kept by the events this instance delivers (its own writes, and an
// event missing from them read back from the log), so messages written here with SQL (no event)
// go only into channels nobody has read yet (their newest page is not in memory): the first read
// loads it from the database. Every other change goes through the API, but for one logged edit
// written with SQL (section 1, the first read racing a publication).

// Acks and broadcasts carry the event's `seq`, history entries do not (api.md §11): an ack is
// compared with a page as history shows it (`asHistory`).

const GENERAL = 1;
const t = await startTestServer();
const sql = t.database.sql;
const api = apiFor(t);

// A second instance on its own database, used only for counting the database transactions
// reads start (nothing else touches that database while it is measured).
const q = await startTestServer();

// Two instances sharing Redis and one database (api.md §9): no history cache there.
const redisPrefix = `test:${crypto.randomUUID().slice(0, 8)}:`;
const ra = await startTestServer({ redisPrefix });
const rb = await startTestServer({ redisPrefix, database: ra.database });

/** Sockets opened by one test (on `t` unless another server is given), closed after it. */
const { connect } = socketTracker(t);

// ---------------------------------------------------------------------------------------
// Helpers

/** A channel made by `owner` (its only member) that `members` then join (public) through the API. */
async function createChannel(owner: Registered, members: Registered[] = [], kind: "public" | "private" = "public", server: TestServer = t): Promise<number> {
  const call = apiFor(server);
  const channel = await expectStatus(await call("POST", "/api/channels", owner.token, { name: uniqueName("room"), kind }), 201);
  for (const member of members) await expectStatus(await call("POST", `/api/channels/${channel.id}/join`, member.token), 200);
  return channel.id as number;
}

/** How a history page is asked for: general also answers at GET /api/messages. */
type Route = "GET /api/messages" | "GET /api/channels/:id/messages";

function historyPath(channelId: number, query: string, route: Route = "GET /api/channels/:id/messages"): string {
  if (route === "GET /api/messages") {
    if (channelId !== GENERAL) throw new Error("GET /api/messages is general's history");
    return `/api/messages${query}`;
  }
  return `/api/channels/${channelId}/messages${query}`;
}

/** The newest page (no cursor), as the API answers it; `limit` undefined is the default (50). */
async function newest(reader: Registered, channelId: number, limit?: number, route?: Route, server: TestServer = t): Promise<HistoryEntry[]> {
  const query = limit === undefined ? "" : `?limit=${limit}`;
  return (await expectStatus(await apiFor(server)("GET", historyPath(channelId, query, route), reader.token), 200)) as HistoryEntry[];
}

/** What the database says the newest page is (test/helpers/history.ts), from this file's database by default. */
const stored = (channelId: number, limit = 50, db: SQL = sql): Promise<HistoryEntry[]> => storedNewest(db, channelId, limit);

/** Writes `n` messages by `author` with SQL, oldest first; only into a channel nobody has read yet. */
async function seed(channelId: number, author: Registered, n: number): Promise<void> {
  if (n === 0) return;
  const tag = `seeded ${crypto.randomUUID().slice(0, 8)}`;
  await sql`
    INSERT INTO messages (channel_id, user_id, content)
    SELECT ${channelId}::int, ${author.user.id}::int, ${tag} || ' #' || g FROM generate_series(1, ${n}::int) AS g ORDER BY g`;
}

/** The limits every page check reads: the bounds, the default (undefined) and the default's value. */
const LIMITS = [undefined, 1, 50, 200] as const;

/** Reads every limit and checks each page against the database; the reads also fill the cache. */
async function expectPagesAsStored(reader: Registered, channelId: number, route?: Route): Promise<void> {
  for (const limit of LIMITS) {
    const page = await newest(reader, channelId, limit, route);
    expect({ limit, page }).toEqual({ limit, page: await stored(channelId, limit ?? 50) });
  }
}

type Sender = (author: Registered, channelId: number, content: string) => Promise<ChatMessage>;

const viaSocket =
  (transport: Transport): Sender =>
  async (author, channelId, content) => {
    const socket = await connect(author, transport);
    const ack = await sendWithAck(socket, { content, channelId });
    expect(ack).toMatchObject({ ok: true, message: { channelId, content } });
    return ack.message as ChatMessage;
  };

const viaRest: Sender = async (author, channelId, content) =>
  (await expectStatus(await api("POST", "/api/messages", author.token, { content, channelId }), 201)) as ChatMessage;

const byId = (a: { id: number }, b: { id: number }) => a.id - b.id;

// ---------------------------------------------------------------------------------------
// 1. The newest page is exact

describe("1. the newest history page is exact", () => {
  let alice: Registered;
  let bob: Registered;
  let room: number;

  beforeAll(async () => {
    [alice, bob] = await Promise.all([t.register(), t.register()]);
    room = await createChannel(alice, [bob]);
  });

  test("a new channel with no messages is [] at every limit, as the database says; its first message is there at once", async () => {
    const channelId = await createChannel(alice, [bob]);
    for (const limit of LIMITS) {
      expect(await newest(bob, channelId, limit)).toEqual([]);
      expect(await stored(channelId, limit ?? 50)).toEqual([]);
    }
    const first = await viaSocket("websocket")(alice, channelId, "first words");
    for (const limit of LIMITS) expect({ limit, page: await newest(bob, channelId, limit) }).toEqual({ limit, page: [asHistory(first)] });
  });

  const senders: [label: string, send: Sender][] = [
    ["a socket over websocket", viaSocket("websocket")],
    ["a socket over polling", viaSocket("polling")],
    ["REST POST /api/messages", viaRest],
  ];
  const targets: [label: string, channel: () => number, route: Route][] = [
    ["general, read with GET /api/messages", () => GENERAL, "GET /api/messages"],
    ["general, read with GET /api/channels/1/messages", () => GENERAL, "GET /api/channels/:id/messages"],
    ["a public channel", () => room, "GET /api/channels/:id/messages"],
  ];
  const sendRows = senders.flatMap(([how, send]) => targets.map(([where, channel, route]) => [how, where, send, channel, route] as const));

  test.each(sendRows)("acked through %s into %s: the next read at every limit starts with it and equals the database", async (_how, _where, send, channel, route) => {
    const channelId = channel();
    // Every limit read once first, so each is answered from memory afterwards.
    await expectPagesAsStored(bob, channelId, route);
    const message = await send(alice, channelId, `sent ${crypto.randomUUID()}`);
    for (const limit of LIMITS) {
      const page = await newest(bob, channelId, limit, route);
      expect({ limit, first: page[0] }).toEqual({ limit, first: asHistory(message) });
      expect({ limit, page }).toEqual({ limit, page: await stored(channelId, limit ?? 50) });
    }
  });

  // Channels with more messages than one page: `shallow` holds 180 (all in memory once read),
  // `deep` 260 (only the newest 200, the cache's depth, are kept). Positions count from the newest.
  describe("edits and deletes show at once, wherever the message is", () => {
    const channels: Record<"shallow" | "deep", number> = { shallow: 0, deep: 0 };

    beforeAll(async () => {
      channels.shallow = await createChannel(alice, [bob]);
      channels.deep = await createChannel(alice, [bob]);
      await seed(channels.shallow, alice, 180);
      await seed(channels.deep, alice, 260);
      // Now into memory (the first reads load them), checked against the database.
      await expectPagesAsStored(bob, channels.shallow);
      await expectPagesAsStored(bob, channels.deep);
    });

    // Edits first: a deleted message cannot be edited. Neither shifts positions.
    const changes: [change: "edit" | "delete", channel: "shallow" | "deep", position: number][] = [
      ["edit", "shallow", 0],
      ["edit", "shallow", 1],
      ["edit", "shallow", 49],
      ["edit", "shallow", 50],
      ["edit", "shallow", 179],
      ["edit", "deep", 0],
      ["edit", "deep", 199],
      ["edit", "deep", 200],
      ["edit", "deep", 259],
      ["delete", "shallow", 0],
      ["delete", "shallow", 1],
      ["delete", "shallow", 49],
      ["delete", "shallow", 50],
      ["delete", "shallow", 179],
      ["delete", "deep", 0],
      ["delete", "deep", 199],
      ["delete", "deep", 200],
      ["delete", "deep", 259],
    ];

    test.each(changes)("%s in the %s channel at position %i: every limit's next read shows it and equals the database", async (change, which, position) => {
      const channelId = channels[which];
      const target = (await stored(channelId, 300))[position]!;
      expect(target).toBeDefined();
      // Fresh pages in memory at every limit before the change.
      await expectPagesAsStored(bob, channelId);
      let expected: HistoryEntry;
      if (change === "edit") {
        const content = `edited ${crypto.randomUUID()}`;
        const edited = await expectStatus(await api("PATCH", `/api/messages/${target.id}`, alice.token, { content }), 200);
        expect(edited).toEqual({ ...target, content, editedAt: expect.any(String) });
        expected = edited;
      } else {
        await expectStatus(await api("DELETE", `/api/messages/${target.id}`, alice.token), 204);
        expected = { id: target.id, deleted: true };
      }
      for (const limit of LIMITS) {
        const page = await newest(bob, channelId, limit);
        expect({ limit, page }).toEqual({ limit, page: await stored(channelId, limit ?? 50) });
        if (position < (limit ?? 50)) expect({ limit, entry: page[position] }).toEqual({ limit, entry: expected });
        else expect(page.some((e) => e.id === target.id)).toBe(false);
      }
    });

    test("new messages push the oldest out of the 200 kept: the deep channel's pages equal the database after each of 5 sends", async () => {
      for (let i = 0; i < 5; i++) {
        const message = await viaRest(alice, channels.deep, `pushing ${i}`);
        for (const limit of LIMITS) {
          const page = await newest(bob, channels.deep, limit);
          expect(page[0]).toEqual(asHistory(message));
          expect({ i, limit, page }).toEqual({ i, limit, page: await stored(channels.deep, limit ?? 50) });
        }
      }
    });
  });

  // Channels holding n messages when first read, then one more: the boundaries of "the whole
  // channel is in memory" (fewer than 200) and of each limit.
  const sizes = [0, 1, 3, 49, 50, 51, 199, 200, 201, 250];

  test.each(sizes)("a channel of %i messages: each limit gives min(n, limit) entries equal to the database; one more message, likewise", async (n) => {
    const channelId = await createChannel(alice, [bob]);
    await seed(channelId, alice, n);
    for (const limit of LIMITS) {
      const page = await newest(bob, channelId, limit);
      expect({ limit, length: page.length }).toEqual({ limit, length: Math.min(n, limit ?? 50) });
      expect({ limit, page }).toEqual({ limit, page: await stored(channelId, limit ?? 50) });
    }
    const message = await viaSocket("websocket")(alice, channelId, "one more");
    for (const limit of LIMITS) {
      const page = await newest(bob, channelId, limit);
      expect(page[0]).toEqual(asHistory(message));
      expect({ limit, length: page.length }).toEqual({ limit, length: Math.min(n + 1, limit ?? 50) });
      expect({ limit, page }).toEqual({ limit, page: await stored(channelId, limit ?? 50) });
    }
  });

  // A page in memory is still only for members.
  const outsiders: [label: string, status: number, code: string, kind: "private" | "public"][] = [
    ["a private channel the reader is not in", 404, "NOT_FOUND", "private"],
    ["a public channel the reader has not joined", 403, "FORBIDDEN", "public"],
  ];

  test.each(outsiders)("%s: the members' page is in memory, the outsider still gets %i %s", async (_label, status, code, kind) => {
    const channel = () => createChannel(alice, [], kind);
    const channelId = await channel();
    const message = await viaRest(alice, channelId, "members only");
    expect(await newest(alice, channelId)).toEqual([asHistory(message)]);
    const outsider = await t.register();
    for (const limit of LIMITS) {
      const res = await api("GET", historyPath(channelId, limit === undefined ? "" : `?limit=${limit}`), outsider.token);
      const text = await res.clone().text();
      expect(text).not.toContain("members only");
      await expectError(res, status, code);
    }
  });

  // A message can be committed here before it is published here: the fan-out hands a channel's
  // events over in seq order only (src/messages/sequencer.ts), so a committed message waits while
  // an earlier event of its channel has not arrived yet (two commits answer on two connections, in
  // either order; one that never arrives is read back from the log after EVENT_GAP_WAIT_MS). A
  // first read of the channel (nothing in memory) in that window loads the message from the
  // database, and its publication must then not put it in front a second time.
  // Deterministic, with locks: the earlier event is an edit written with SQL as the server writes
  // one (under the channel's lock, its head and log row in the same transaction) before anyone read
  // the channel, whose publication never comes, so the sequencer holds the message and reads the
  // edit back from channel_events; that read waits for a lock on channel_events, queued behind the
  // message's commit (a deferred trigger holds it inside COMMIT), until the first read is answered.
  test("a first read racing a committed but not yet published message does not list it twice", async () => {
    const channelId = await createChannel(alice, [bob]);
    const socket = await connect(alice);
    const events = record(socket);
    const earlier = await sendWithAck(socket, { content: "to be edited", channelId });
    expect(earlier).toMatchObject({ ok: true, message: { seq: 1 } });
    expect(t.app.fanout.sequencer.deliveredUpTo(channelId)).toBe(1);
    // The edit, committed (seq 2) but never published here.
    await sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${channelId}::int)`;
      await tx`UPDATE messages SET content = 'edited', edited_at = now() WHERE id = ${earlier.message.id}`;
      const [head] = await tx<{ seq: number }[]>`UPDATE channels SET seq = seq + 1 WHERE id = ${channelId} RETURNING seq`;
      expect(head!.seq).toBe(2);
      await tx`INSERT INTO channel_events (channel_id, seq, type, message_id) VALUES (${channelId}, 2, 1, ${earlier.message.id})`;
    });
    const content = `committed, not yet published ${crypto.randomUUID().slice(0, 8)}`;
    await sql.unsafe(`CREATE FUNCTION hold_commit_first_read() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock_shared(31339, 1); RETURN NULL; END $$`);
    await sql.unsafe(`CREATE CONSTRAINT TRIGGER hold_commit_first_read AFTER INSERT ON messages DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW WHEN (NEW.content = '${content}') EXECUTE FUNCTION hold_commit_first_read()`);
    const commitGate = await hold(sql, "SELECT pg_advisory_xact_lock(31339, 1)");
    // Queued behind the held insert's lock on channel_events (it wrote its log row), so taken once it commits.
    let eventsLock: ReturnType<typeof lockLater> | undefined;
    try {
      const sent = sendWithAck(socket, { content, channelId }, 20_000);
      await until(async () => (await waitingForLocks(sql)).some((q) => q.includes("INSERT INTO messages")), "the message to wait inside its COMMIT");
      eventsLock = lockLater(sql, "LOCK TABLE channel_events IN ACCESS EXCLUSIVE MODE");
      await until(async () => (await waitingForLocks(sql)).some((q) => q.startsWith("LOCK TABLE channel_events")), "the channel_events lock to queue");
      await commitGate.release();
      await eventsLock.taken;
      expect(await sql`SELECT 1 FROM messages WHERE content = ${content}`).toHaveLength(1);
      // The message (seq 3) waits for seq 2, which the sequencer is reading back (held by the lock).
      await until(async () => (await waitingForLocks(sql)).some((q) => q.trimStart().startsWith("SELECT") && q.includes("FROM channel_events")), "the missing edit to be read back");
      expect({ delivered: t.app.fanout.sequencer.deliveredUpTo(channelId), holding: t.app.fanout.sequencer.holding() }).toEqual({ delivered: 1, holding: 1 });
      // The channel's first read: its page is loaded from the database now, the message in it.
      const first = await newest(bob, channelId, 200);
      expect(first.map((e) => (e as ChatMessage).content)).toEqual([content, "edited"]);
      // Still not published: no ack, no broadcast.
      expect(t.app.fanout.sequencer.deliveredUpTo(channelId)).toBe(1);
      expect(events.events.map(([event]) => event)).toEqual(["message"]);
      await eventsLock.release();
      const ack = await sent;
      expect(ack).toMatchObject({ ok: true, message: { content, channelId, seq: 3 } });
      // Published in seq order: the edit read back, then the message.
      expect(events.events.map(([event, payload]) => [event, (payload as { seq: number }).seq])).toEqual([
        ["message", 1],
        ["message:updated", 2],
        ["message", 3],
      ]);
      const page = await newest(bob, channelId, 200);
      expect(page.map((e) => e.id)).toEqual([ack.message.id, earlier.message.id]);
      expect(page[0]).toEqual(asHistory(ack.message as ChatMessage));
      expect(page).toEqual(await stored(channelId, 200));
    } finally {
      await commitGate.release();
      await eventsLock?.release();
      events.stop();
      await sql.unsafe("DROP TRIGGER IF EXISTS hold_commit_first_read ON messages");
      await sql.unsafe("DROP FUNCTION IF EXISTS hold_commit_first_read()");
    }
  });
});

// ---------------------------------------------------------------------------------------
// 2. Served from memory: no database transaction

describe("2. the newest page of general is served from memory", () => {
  // On `q`'s database nothing runs but `q`'s pool. Its backends' statistics reach
  // pg_stat_database only when flushed (at most once a second, and an idle backend's pending
  // counts up to 10 s later), but always when the backend exits, before it is gone: so each
  // window starts and ends by terminating them and waiting for their exit (the pool opens new
  // ones when needed). The counters are read from a connection to another database, whose own
  // transactions are not counted here. The pool's checkouts are counted too, in process, exactly.
  const monitor = new SQL({ url: adminDatabaseUrl, max: 1 });
  afterAll(() => monitor.close());
  const pool = poolOf(q.database.db);
  let checkouts = 0;
  pool.on("acquire", () => checkouts++);
  let reader: Registered;

  async function flushStatistics(): Promise<void> {
    const rows = await monitor<{ done: boolean }[]>`
      SELECT pg_terminate_backend(pid, 5000) AS done FROM pg_stat_activity WHERE datname = ${q.database.name}`;
    expect(rows.every((r) => r.done)).toBe(true);
  }

  async function committed(): Promise<number> {
    await monitor`SELECT pg_stat_clear_snapshot()`;
    const [row] = await monitor<{ n: string }[]>`SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = ${q.database.name}`;
    return Number(row!.n);
  }

  /** Transactions committed in `q`'s database, and pool checkouts, while `reads` ran. */
  async function measure(reads: () => Promise<void>): Promise<{ transactions: number; checkouts: number }> {
    await flushStatistics();
    const [before, checkoutsBefore] = [await committed(), checkouts];
    await reads();
    const used = checkouts - checkoutsBefore;
    await flushStatistics();
    return { transactions: (await committed()) - before, checkouts: used };
  }

  async function read50(path: string, expected: string): Promise<void> {
    for (let i = 0; i < 50; i++) {
      const res = await apiFor(q)("GET", path, reader.token);
      expect({ i, status: res.status, text: await res.text() }).toEqual({ i, status: 200, text: expected });
    }
  }

  beforeAll(async () => {
    reader = await q.register();
    for (let i = 0; i < 60; i++) await expectStatus(await apiFor(q)("POST", "/api/messages", reader.token, { content: `quiet ${i}` }), 201);
  });

  const paths = ["/api/messages", "/api/messages?limit=1", "/api/messages?limit=50", "/api/messages?limit=200", "/api/channels/1/messages?limit=50"];

  test.each(paths)("GET %s: after one read, 50 more start no transaction and check out no connection; the same 50 with before= do", async (path) => {
    // The first read loads the page (and the token's session state, kept 30 s) into memory.
    const res = await apiFor(q)("GET", path, reader.token);
    expect(res.status).toBe(200);
    const text = await res.text();
    const limit = Number(new URL(path, q.url).searchParams.get("limit") ?? 50);
    expect(JSON.parse(text)).toEqual(await stored(GENERAL, limit, q.database.sql));

    // Anything else visiting the database (an autovacuum worker, say) would count too, and once
    // in a while does: up to three windows, one of which must count exactly zero transactions
    // (a page read from the database costs at least one each time), and none a pool checkout.
    const windows: { transactions: number; checkouts: number }[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      const window = await measure(() => read50(path, text));
      windows.push(window);
      if (window.transactions === 0) break;
    }
    expect({ checkouts: windows.map((w) => w.checkouts), transactions: windows.map((w) => w.transactions) }).toEqual({
      checkouts: windows.map(() => 0),
      transactions: expect.arrayContaining([0]),
    });

    // Control: the same page through a cursor (every id is below 2^31-1) is read from the
    // database each time, and the measurement sees it.
    const sep = path.includes("?") ? "&" : "?";
    const control = await measure(() => read50(`${path}${sep}before=2147483647`, text));
    expect(control.checkouts).toBeGreaterThanOrEqual(50);
    expect(control.transactions).toBeGreaterThanOrEqual(50);
    console.info(`${path}: cached reads ${JSON.stringify(windows)}, with before= ${JSON.stringify(control)}`);
  });
});

// ---------------------------------------------------------------------------------------
// 3. Reads racing writes

describe("3. reads racing writes never lose a message", () => {
  let users: Registered[];

  beforeAll(async () => {
    users = await Promise.all(Array.from({ length: 10 }, () => t.register()));
  });

  const variants: [label: string, channelCount: number, warm: boolean][] = [
    ["one channel, its page already in memory", 1, true],
    ["one channel, nothing in memory when the sends start", 1, false],
    ["two channels at once, their pages already in memory", 2, true],
    ["two channels at once, nothing in memory when the sends start", 2, false],
  ];

  test.each(variants)(
    "%s: 20 sockets send 200 messages while pages are read over and over; every page is the newest of what was committed, holding every message acked before it was asked for, and the final page equals the database",
    async (_label, channelCount, warm) => {
      const channelIds: number[] = [];
      for (let c = 0; c < channelCount; c++) channelIds.push(await createChannel(users[0]!, users.slice(1)));
      const sockets = await Promise.all(users.flatMap((user) => [connect(user, "websocket"), connect(user, "polling")]));
      if (warm) for (const channelId of channelIds) expect(await newest(users[0]!, channelId, 200)).toEqual([]);

      // Per channel, the largest id acked so far.
      const acked = new Map(channelIds.map((id) => [id, 0]));
      type Read = { channelId: number; limit: number; ackedBefore: number; page: HistoryEntry[] };
      const reads: Read[] = [];
      let sending = true;
      // Four readers per channel, reading back to back from before the first send to after the last ack.
      const readers = channelIds.flatMap((channelId, c) =>
        [1, 50, 200, 200].map(async (limit, r) => {
          const reader = users[(c * 4 + r) % users.length]!;
          while (sending) {
            const ackedBefore = acked.get(channelId)!;
            reads.push({ channelId, limit, ackedBefore, page: await newest(reader, channelId, limit) });
          }
        }),
      );

      // Ten waves, 10 ms apart: in each, every socket sends one message (to the channels in turn).
      const sends: Promise<ChatMessage>[] = [];
      for (let i = 0; i < 10; i++) {
        for (const [s, socket] of sockets.entries()) {
          const channelId = channelIds[(s + i) % channelCount]!;
          sends.push(
            sendWithAck(socket, { content: `race s${s} #${i}`, channelId }, 20_000).then((ack) => {
              expect(ack).toMatchObject({ ok: true, message: { channelId } });
              acked.set(channelId, Math.max(acked.get(channelId)!, ack.message.id));
              return ack.message as ChatMessage;
            }),
          );
        }
        await Bun.sleep(10);
      }
      let messages: ChatMessage[];
      try {
        messages = await Promise.all(sends);
      } finally {
        sending = false;
        await Promise.all(readers);
      }

      for (const channelId of channelIds) {
        const final = await newest(users[1]!, channelId, 200);
        const inChannel = messages.filter((m) => m.channelId === channelId).sort(byId).reverse().map(asHistory);
        expect(final).toEqual(inChannel);
        expect(final).toEqual(await stored(channelId, 200));
        expect(final).toHaveLength(200 / channelCount);

        // Every page read meanwhile: the newest `limit` of a prefix of the channel's committed
        // messages (ids are committed in order per channel), so no gap, no duplicate, nothing
        // stale, and nothing acked before the read was missing.
        for (const { limit, ackedBefore, page } of reads.filter((r) => r.channelId === channelId)) {
          const newestId = page[0]?.id ?? 0;
          expect({ limit, ackedBefore, newestId: Math.max(newestId, ackedBefore) }).toEqual({ limit, ackedBefore, newestId });
          expect({ limit, page }).toEqual({ limit, page: final.filter((e) => e.id <= newestId).slice(0, limit) });
        }
      }
      // Pages read while the channel had some of its messages but not all: the race happened.
      const lastIds = new Map(channelIds.map((id) => [id, Math.max(...messages.filter((m) => m.channelId === id).map((m) => m.id))]));
      const during = reads.filter((r) => r.page.length > 0 && r.page[0]!.id < lastIds.get(r.channelId)!).length;
      console.info(`reads racing writes (${channelCount} channel(s), ${warm ? "warm" : "cold"}): ${reads.length} pages read, ${during} of them mid-burst`);
      expect(during).toBeGreaterThan(0);
    },
  );
});

describe("3. a first read overlapping a publication is answered but not kept", () => {
  // Deterministic, with locks: the first read of a channel loads its page from the database
  // (messages, then their authors from users). It reads the messages before a new message
  // commits, and waits for users (locked) until that message is committed, published and acked.
  // Kept, that page would miss the message for good; it must answer that read only.
  test("the read after the ack has the message, and equals the database", async () => {
    const [author, reader] = await Promise.all([t.register(), t.register()]);
    const channelId = await createChannel(author, [reader]);
    await seed(channelId, author, 1);
    const socket = await connect(author);
    // The reader's session is in memory, so the read below asks the database for the page alone.
    await expectStatus(await api("GET", "/api/users/me", reader.token), 200);
    const content = `held in its commit ${crypto.randomUUID().slice(0, 8)}`;
    // A deferred constraint trigger runs inside COMMIT: this one waits for an advisory lock the test holds.
    await sql.unsafe(`CREATE FUNCTION hold_commit_caches() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock_shared(31338, 1); RETURN NULL; END $$`);
    await sql.unsafe(`CREATE CONSTRAINT TRIGGER hold_commit_caches AFTER INSERT ON messages DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW WHEN (NEW.content = '${content}') EXECUTE FUNCTION hold_commit_caches()`);
    const commitGate = await hold(sql, "SELECT pg_advisory_xact_lock(31338, 1)");
    // Queued behind the held insert's key-share lock on its author's row, so taken once it commits.
    let usersLock: ReturnType<typeof lockLater> | undefined;
    try {
      const sent = sendWithAck(socket, { content, channelId }, 20_000);
      await until(async () => (await waitingForLocks(sql)).some((q) => q.includes("INSERT INTO messages")), "the message to wait inside its COMMIT");
      usersLock = lockLater(sql, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
      await until(async () => (await waitingForLocks(sql)).some((q) => q.startsWith("LOCK TABLE users")), "the users lock to queue");
      const firstRead = newest(reader, channelId, 200);
      await until(async () => (await waitingForLocks(sql)).some((q) => q.startsWith("SELECT") && q.includes('"users"')), "the first read to wait for users");
      // The message commits, is published and acked while the first read still waits.
      await commitGate.release();
      const ack = await sent;
      expect(ack).toMatchObject({ ok: true, message: { content, channelId } });
      await usersLock.taken;
      await usersLock.release();
      const first = await firstRead;
      // That read began before the commit: it is answered without the message.
      expect(first).toHaveLength(1);
      expect(first[0]!.id).toBeLessThan(ack.message.id);
      const next = await newest(reader, channelId, 200);
      expect(next[0]).toEqual(asHistory(ack.message as ChatMessage));
      expect(next).toEqual(await stored(channelId, 200));
    } finally {
      await commitGate.release();
      await usersLock?.release();
      await sql.unsafe("DROP TRIGGER IF EXISTS hold_commit_caches ON messages");
      await sql.unsafe("DROP FUNCTION IF EXISTS hold_commit_caches()");
    }
  });
});

// ---------------------------------------------------------------------------------------
// 4. With Redis: no cache

describe("4. with Redis, another instance's writes show at once in this one's newest page", () => {
  let alice: Registered;
  let bob: Registered;
  let room: number;

  beforeAll(async () => {
    alice = await ra.register();
    bob = await rb.register();
    room = await createChannel(alice, [bob], "public", ra);
  });

  /** Changes the channel through `server`; returns the entry as history must now show it (a send's ack without its seq). */
  type Op = (author: Registered, channelId: number, server: TestServer) => Promise<HistoryEntry>;
  const sendBySocket: Op = async (author, channelId, server) => {
    const ack = await sendWithAck(await connect(author, "websocket", server), { content: `over ${crypto.randomUUID()}`, channelId });
    expect(ack.ok).toBe(true);
    return asHistory(ack.message as ChatMessage);
  };
  const sendByRest: Op = async (author, channelId, server) =>
    asHistory((await expectStatus(await apiFor(server)("POST", "/api/messages", author.token, { content: `over ${crypto.randomUUID()}`, channelId }), 201)) as ChatMessage);
  const editNewest: Op = async (author, channelId, server) => {
    const mine = await sendByRest(author, channelId, server);
    return expectStatus(await apiFor(server)("PATCH", `/api/messages/${mine.id}`, author.token, { content: `edited ${crypto.randomUUID()}` }), 200);
  };
  const deleteNewest: Op = async (author, channelId, server) => {
    const mine = await sendByRest(author, channelId, server);
    await expectStatus(await apiFor(server)("DELETE", `/api/messages/${mine.id}`, author.token), 204);
    return { id: mine.id, deleted: true };
  };

  const ops: [label: string, op: Op][] = [
    ["a socket message", sendBySocket],
    ["a REST message", sendByRest],
    ["an edit", editNewest],
    ["a delete", deleteNewest],
  ];
  const rows = ops.flatMap(([label, op]) =>
    (["A", "B"] as const).flatMap((via) =>
      (["general", "a public channel"] as const).map((where) => [label, via, via === "A" ? "B" : "A", where, op] as const),
    ),
  );

  test.each(rows)("%s through %s shows in %s's newest page (%s) at once, at every limit", async (_label, via, other, where, op) => {
    const [writer, reader] = via === "A" ? [alice, bob] : [bob, alice];
    const [writeServer, readServer] = via === "A" ? [ra, rb] : [rb, ra];
    const channelId = where === "general" ? GENERAL : room;
    const route: Route = where === "general" ? "GET /api/messages" : "GET /api/channels/:id/messages";
    // The other instance has read the page before (if it kept one, it would be stale now).
    for (const limit of LIMITS) await newest(reader, channelId, limit, route, readServer);
    const entry = await op(writer, channelId, writeServer);
    for (const limit of LIMITS) {
      const page = await newest(reader, channelId, limit, route, readServer);
      expect({ other, limit, first: page[0] }).toEqual({ other, limit, first: entry });
      expect({ other, limit, page }).toEqual({ other, limit, page: await stored(channelId, limit ?? 50, ra.database.sql) });
    }
  });
});

