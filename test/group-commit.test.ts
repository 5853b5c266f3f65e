import { asHistory, collectMessages, settleMessages } from "./helpers/recorder.ts";
import { batchFigures, batchesSince, hold, until, waitingForLocks, type BatchFigures } from "./helpers/locks.ts";
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { MAX_BATCHES_IN_FLIGHT } from "../src/messages/message-writer.ts";
import type { ChatMessage, HistoryEntry } from "../src/messages/messages.schemas.ts";
import { expectError } from "./helpers/expect-error.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { sendWithAck, startTestServer, uniqueName, type ChatClient, type Registered } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { storedNewest } from "./helpers/history.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Group commit (src/messages/message-writer.ts): messages arriving together are stored by one
// multi-row INSERT in one transaction, acked and broadcast only after its COMMIT, in order; a
// row the database refuses fails alone; a database that goes away is 503 UNAVAILABLE. Across many
// channels at once: batches per channel in order, and a refused row in one channel costs another
// channel's rows nothing. Acks and broadcasts carry each event's `seq` (api.md §11), consecutive
// per channel in id order; history and stored rows have none (`asHistory`).

const t = await startTestServer();
const { sql } = t.database;
const api = apiFor(t);

/** Sockets opened by one test (websocket unless told), closed after it. */
const { connect } = socketTracker(t);

/** A channel made by `owner`, its only member (and anyone who joins it through the API later). */
async function createChannel(owner: Registered): Promise<number> {
  const channel = await expectStatus(await api("POST", "/api/channels", owner.token, { name: uniqueName("room"), kind: "public" }), 201);
  return channel.id as number;
}

/** The newest history page (the default 50), as the API answers it. */
async function newest(reader: Registered, channelId: number): Promise<HistoryEntry[]> {
  return (await expectStatus(await api("GET", `/api/channels/${channelId}/messages`, reader.token), 200)) as HistoryEntry[];
}

/** Each ack is `ok` with exactly the message its send asked for, as broadcast (its seq included). */
function expectAckedAsSent(acks: unknown[], sends: { author: { id: number; username: string }; payload: { channelId: number; content: string } }[]): void {
  for (const [i, ack] of acks.entries()) {
    const { author, payload } = sends[i]!;
    expect(ack).toEqual({
      ok: true,
      message: { id: expect.any(Number), channelId: payload.channelId, userId: author.id, username: author.username, content: payload.content, timestamp: expect.any(String), seq: expect.any(Number) },
    });
  }
}

/** What the database says the newest page is (test/helpers/history.ts). */
const stored = (channelId: number, limit = 50): Promise<HistoryEntry[]> => storedNewest(sql, channelId, limit);

async function storedWithContent(contents: string[]): Promise<{ id: number; content: string }[]> {
  const rows = await sql<{ id: number; content: string }[]>`SELECT id, content FROM messages ORDER BY id`;
  return rows.filter((r) => contents.includes(r.content)).map((r) => ({ id: r.id, content: r.content }));
}

const increasing = (ids: number[]) => ids.every((id, i) => i === 0 || id > ids[i - 1]!);
const byId = (a: { id: number }, b: { id: number }) => a.id - b.id;

/**
 * One channel's new messages, as acked: in id order, their seqs are consecutive (a positive
 * integer each), starting right after `after` when the test knows the channel's head before.
 */
function expectSeqsInIdOrder(messages: { id: number; seq?: number }[], after?: number): void {
  const seqs = [...messages].sort(byId).map((m) => m.seq!);
  expect(seqs.every((seq) => Number.isInteger(seq) && seq > 0)).toBe(true);
  const first = after === undefined ? seqs[0]! : after + 1;
  expect(seqs).toEqual(seqs.map((_, i) => first + i));
}

describe("group commit", () => {
  test("200 messages sent at once from 20 sockets: fewer transactions than messages, every ack a committed row, everyone gets everything once, in id order", async () => {
    const users = await Promise.all(Array.from({ length: 10 }, () => t.register()));
    const channel = await expectStatus(await api("POST", "/api/channels", users[0]!.token, { name: uniqueName("burst"), kind: "public" }), 201);
    for (const user of users.slice(1)) await expectStatus(await api("POST", `/api/channels/${channel.id}/join`, user.token), 200);
    const sockets = await Promise.all(users.flatMap((user) => [connect(user, "websocket"), connect(user, "polling")]));
    const received = sockets.map(collectMessages);
    const channelIds = [1, channel.id as number];
    const before = await batchFigures(t.url);

    // Ten per socket, alternating channels, all emitted in the same tick.
    const acksInArrivalOrder: ChatMessage[][] = sockets.map(() => []);
    const sends = sockets.flatMap((socket, s) =>
      Array.from({ length: 10 }, (_, i) => {
        const payload = { content: `burst s${s} #${i}`, channelId: channelIds[i % 2]! };
        const ack = sendWithAck(socket, payload, 20_000);
        void ack.then((a) => a.ok && acksInArrivalOrder[s]!.push(a.message));
        return { author: users[Math.floor(s / 2)]!.user, payload, ack };
      }),
    );
    const acks = await Promise.all(sends.map((s) => s.ack));

    expectAckedAsSent(acks, sends);
    // Per channel, one event each, in id order: general's after whatever it held, the new channel's from 1.
    expectSeqsInIdOrder(acks.map((a) => a.message).filter((m) => m.channelId === 1));
    expectSeqsInIdOrder(acks.map((a) => a.message).filter((m) => m.channelId === channel.id), 0);

    // Every ack is a committed row, exactly as acked; nothing else was stored.
    const rows = await sql<{ id: number; channel_id: number; user_id: number; username: string; content: string; created_at: Date; tx: string }[]>`
      SELECT m.id, m.channel_id, m.user_id, u.username, m.content, m.created_at, m.xmin::text AS tx
      FROM messages m JOIN users u ON u.id = m.user_id WHERE m.content LIKE 'burst %'`;
    const asAcked = (r: (typeof rows)[number]): ChatMessage => ({
      id: r.id,
      channelId: r.channel_id,
      userId: r.user_id,
      username: r.username,
      content: r.content,
      timestamp: r.created_at.toISOString(),
    });
    const byId = (a: ChatMessage, b: ChatMessage) => a.id - b.id;
    expect([...rows].map(asAcked).sort(byId)).toEqual(acks.map((a) => asHistory(a.message as ChatMessage)).sort(byId));

    // Fewer transactions than messages: rows written by one transaction share its xmin.
    const transactions = new Set(rows.map((r) => r.tx)).size;
    expect(transactions).toBeLessThan(acks.length / 4);
    // The writer's own count agrees with the database's.
    expect(await batchesSince(t.url, before)).toEqual({ committed: { batches: transactions, rows: 200 }, split: { batches: 0, rows: 0 }, failed: { batches: 0, rows: 0 } });
    console.info(`group commit: 200 messages from 20 sockets in ${transactions} transactions`);

    // Acks arrive, per socket and channel, in id order.
    for (const socketAcks of acksInArrivalOrder) {
      expect(socketAcks).toHaveLength(10);
      for (const channelId of channelIds) expect(increasing(socketAcks.filter((m) => m.channelId === channelId).map((m) => m.id))).toBe(true);
    }

    // Every socket receives every message once, each channel's in id order.
    await settleMessages(t, users[0]!, received);
    for (const list of received) {
      for (const channelId of channelIds) {
        const expected = acks
          .map((a) => a.message as ChatMessage)
          .filter((m) => m.channelId === channelId)
          .sort(byId);
        expect(list.filter((m) => m.channelId === channelId)).toEqual(expected);
      }
      expect(list).toHaveLength(200);
    }
  });

  test("one bad row does not fail its neighbours: in one batch, a known clientId answers with the original, a deleted author gets UNAUTHORIZED, a clientId twice is one message, the rest are stored", async () => {
    const [alice, bob, carol, dave, erin] = await Promise.all([1, 2, 3, 4, 5].map(() => t.register()));
    const [aliceSocket, bobSocket, carolSocket, daveSocket, erinSocket] = await Promise.all([alice, bob, carol, dave, erin].map((u) => connect(u!)));
    const seen = collectMessages(erinSocket!);
    const knownClientId = crypto.randomUUID();
    const original = await sendWithAck(aliceSocket!, { content: "the original", clientId: knownClientId });
    expect(original.ok).toBe(true);
    // Gone from the database; their socket and its session cache are still up.
    await sql`DELETE FROM users WHERE id = ${dave!.user.id}`;

    const twinId = crypto.randomUUID();
    const rows: [label: string, socket: ChatClient, payload: { content: string; clientId?: string }, expected: "stored" | "the original" | "UNAUTHORIZED" | "as row 3"][] = [
      ["a fresh message", bobSocket!, { content: "fresh 1" }, "stored"],
      ["a resend of a clientId already stored", aliceSocket!, { content: "the resend", clientId: knownClientId }, "the original"],
      ["a message from a user deleted just before", daveSocket!, { content: "from a deleted user" }, "UNAUTHORIZED"],
      ["a fresh message with a clientId", carolSocket!, { content: "fresh 2", clientId: twinId }, "stored"],
      ["the same clientId again, in the same batch", carolSocket!, { content: "fresh 2 resent", clientId: twinId }, "as row 3"],
      ["another fresh message", bobSocket!, { content: "fresh 3" }, "stored"],
    ];

    // A batch stuck on the table lock keeps the writer busy, so everything sent meanwhile forms the next batch.
    const lock = await hold(sql, "LOCK TABLE messages IN EXCLUSIVE MODE");
    let blocker: Promise<any>;
    let acks: Promise<any>[];
    let before: BatchFigures;
    try {
      blocker = sendWithAck(erinSocket!, { content: "blocker" }, 20_000);
      await until(async () => (await waitingForLocks(sql)).length > 0, "the first batch to wait for the lock");
      before = await batchFigures(t.url);
      acks = rows.map(([, socket, payload]) => sendWithAck(socket, payload, 20_000));
      await until(() => t.app.services.messages.pendingWrites() === 1 + rows.length, "every row to be waiting for the writer");
    } finally {
      await lock.release();
    }
    expect(await blocker).toMatchObject({ ok: true, message: { content: "blocker" } });
    const answers = await Promise.all(acks);

    const stored = await storedWithContent(rows.map(([, , payload]) => payload.content));
    for (const [i, [label, , payload, expected]] of rows.entries()) {
      const answer = answers[i];
      const got = { label, answer, stored: stored.filter((r) => r.content === payload.content) };
      if (expected === "stored") {
        expect(got).toEqual({ label, answer: { ok: true, message: expect.objectContaining({ content: payload.content }) }, stored: [{ id: answer.message.id, content: payload.content }] });
      } else if (expected === "the original") {
        // The first message as history shows it: not published again, so no event number.
        expect(got).toEqual({ label, answer: { ok: true, message: asHistory(original.message) }, stored: [] });
      } else if (expected === "UNAUTHORIZED") {
        expect(got).toEqual({ label, answer: { ok: false, error: { code: "UNAUTHORIZED", message: expect.any(String) } }, stored: [] });
      } else {
        expect(got).toEqual({ label, answer: { ok: true, message: asHistory(answers[3].message) }, stored: [] });
      }
    }

    // They were one batch: it failed as a whole and was retried row by row.
    expect(await batchesSince(t.url, before!)).toEqual({ committed: { batches: 1, rows: 1 }, split: { batches: 1, rows: rows.length }, failed: { batches: 0, rows: 0 } });

    // Broadcast: each stored message once, in id order; the original not again.
    await settleMessages(t, erin!, [seen]);
    const created = [original.message.id, (await blocker).message.id, ...stored.map((r) => r.id)].sort((a, b) => a - b);
    expect(seen.map((m) => m.id)).toEqual(created);
  });

  test("nothing is acked before its COMMIT returns: with the COMMIT held, no ack and no broadcast; once it completes, both, for rows that exist", async () => {
    const [author, watcher] = await Promise.all([t.register(), t.register()]);
    const [socket, watching] = await Promise.all([connect(author), connect(watcher)]);
    const seen = collectMessages(watching);
    // A deferred constraint trigger runs inside COMMIT, after the INSERT; this one waits for a lock the test holds.
    await sql.unsafe(`CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock_shared(31337, 1); RETURN NULL; END $$`);
    await sql.unsafe(`CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON messages DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit()`);
    try {
      const contents = ["held 1", "held 2", "held 3"];
      const answered: unknown[] = [];
      const commitGate = await hold(sql, "SELECT pg_advisory_xact_lock(31337, 1)");
      let acks: Promise<any>[];
      try {
        acks = contents.map((content) => sendWithAck(socket, { content }, 20_000).then((ack) => (answered.push(ack), ack)));
        // The batch's statement is its own transaction (it commits as it ends, the trigger waiting
        // inside); a batch in an explicit transaction would wait in its COMMIT.
        await until(async () => (await waitingForLocks(sql)).some((q) => q === "COMMIT" || q.includes("INSERT INTO messages")), "the batch to wait inside its COMMIT");
        // Time enough for an early ack or broadcast to arrive.
        await Bun.sleep(300);
        expect({ answered, broadcast: seen, visible: await storedWithContent(contents) }).toEqual({ answered: [], broadcast: [], visible: [] });
      } finally {
        await commitGate.release();
      }
      const answers = await Promise.all(acks);
      for (const [i, answer] of answers.entries()) expect(answer).toMatchObject({ ok: true, message: { content: contents[i] } });
      expect(await storedWithContent(contents)).toEqual(answers.map((a) => ({ id: a.message.id, content: a.message.content })));
      await settleMessages(t, author, [seen]);
      expect(seen).toEqual(answers.map((a) => a.message));
    } finally {
      await sql.unsafe("DROP TRIGGER hold_commit ON messages");
      await sql.unsafe("DROP FUNCTION hold_commit()");
    }
  });

  test("the database going away mid-batch: each message is refused with 503 UNAVAILABLE, not a 500, and not stored; the next message goes through", async () => {
    const author = await t.register();
    const socket = await connect(author);
    const before = await batchFigures(t.url);
    const lock = await hold(sql, "LOCK TABLE messages IN EXCLUSIVE MODE");
    let overSocket: Promise<any>;
    let overRest: Promise<Response>;
    try {
      overSocket = sendWithAck(socket, { content: "lost over the socket" }, 20_000);
      overRest = api("POST", "/api/messages", author.token, { content: "lost over REST" });
      let settled = false;
      void Promise.allSettled([overSocket, overRest]).then(() => (settled = true));
      // Every batch that reaches the lock loses its connection, as when the server goes away.
      while (!settled) {
        await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`;
        await Bun.sleep(10);
      }
    } finally {
      await lock.release();
    }
    expect(await overSocket).toEqual({ ok: false, error: { code: "UNAVAILABLE", message: expect.any(String) } });
    await expectError(await overRest, 503, "UNAVAILABLE");
    expect(await storedWithContent(["lost over the socket", "lost over REST"])).toEqual([]);
    const since = await batchesSince(t.url, before);
    expect({ committed: since.committed.batches, failedRows: since.failed.rows }).toEqual({ committed: 0, failedRows: 2 });

    // The broken connections were discarded, not handed out again.
    const next = await sendWithAck(socket, { content: "after the outage" });
    expect(next).toMatchObject({ ok: true, message: { content: "after the outage" } });
    expect(await storedWithContent(["after the outage"])).toEqual([{ id: next.message.id, content: "after the outage" }]);
  });
});

// ---------------------------------------------------------------------------------------
// Group commit across many channels

describe("group commit across many channels", () => {
  type StoredRow = { id: number; channel_id: number; user_id: number; username: string; content: string; created_at: Date; tx: string };

  async function storedLike(pattern: string): Promise<StoredRow[]> {
    return sql<StoredRow[]>`
      SELECT m.id, m.channel_id, m.user_id, u.username, m.content, m.created_at, m.xmin::text AS tx
        FROM messages m JOIN users u ON u.id = m.user_id WHERE m.content LIKE ${pattern} ORDER BY m.id`;
  }

  const asAcked = (r: StoredRow): ChatMessage => ({
    id: r.id,
    channelId: r.channel_id,
    userId: r.user_id,
    username: r.username,
    content: r.content,
    timestamp: new Date(r.created_at).toISOString(),
  });

  /** `n` users, each the only member of a channel of their own (and, like everyone, of general). */
  async function owners(n: number): Promise<{ user: Registered; channelId: number }[]> {
    const users = await Promise.all(Array.from({ length: n }, () => t.register()));
    return Promise.all(users.map(async (user) => ({ user, channelId: await createChannel(user) })));
  }

  test("10 users each in their own channel: 300 messages over the 10 channels at once; each ack is exactly one stored row; per channel, acks and broadcasts in id order; nobody gets another channel's messages", async () => {
    const tag = `gc ${crypto.randomUUID().slice(0, 8)}`;
    const parties = await owners(10);
    // Each user sends from two sockets (both transports); a watcher who joined every channel sees everything.
    const watcher = await t.register();
    for (const { channelId } of parties) await expectStatus(await api("POST", `/api/channels/${channelId}/join`, watcher.token), 200);
    const watching = await Promise.all([connect(watcher, "websocket"), connect(watcher, "polling")]);
    const senders = await Promise.all(parties.flatMap(({ user }) => [connect(user, "websocket"), connect(user, "polling")]));
    const received = [...senders, ...watching].map(collectMessages);
    const before = await batchFigures(t.url);

    // Interleaved: round k sends one message from each of the 20 sockets, 15 rounds, all emitted in one tick.
    const acksInArrival: ChatMessage[][] = senders.map(() => []);
    const sends = Array.from({ length: 15 }, (_, k) =>
      senders.map((socket, s) => {
        const party = parties[Math.floor(s / 2)]!;
        const payload = { content: `${tag} c${party.channelId} s${s} #${k}`, channelId: party.channelId };
        const ack = sendWithAck(socket, payload, 20_000).then((a) => {
          if (a.ok) acksInArrival[s]!.push(a.message);
          return a;
        });
        return { author: party.user.user, payload, ack };
      }),
    ).flat();
    const acks = await Promise.all(sends.map((s) => s.ack));

    expectAckedAsSent(acks, sends);
    const messages = acks.map((a) => a.message as ChatMessage).sort(byId);
    expect(new Set(messages.map((m) => m.id)).size).toBe(300);
    // Each new channel's 30 events are 1..30, in id order.
    for (const { channelId } of parties) expectSeqsInIdOrder(messages.filter((m) => m.channelId === channelId), 0);

    // Every ack is one committed row, exactly as acked, and nothing else was stored.
    const rows = await storedLike(`${tag} %`);
    expect(rows.map(asAcked)).toEqual(messages.map(asHistory));

    // Batched: fewer transactions than messages, as the writer counts them too; per channel, its
    // transactions follow one another (no channel's rows of two transactions interleave by id).
    const transactions = new Set(rows.map((r) => r.tx)).size;
    expect(transactions).toBeLessThan(300 / 4);
    expect(await batchesSince(t.url, before)).toEqual({ committed: { batches: transactions, rows: 300 }, split: { batches: 0, rows: 0 }, failed: { batches: 0, rows: 0 } });
    for (const { channelId } of parties) {
      const txs = rows.filter((r) => r.channel_id === channelId).map((r) => r.tx);
      const runs = txs.filter((tx, i) => i === 0 || tx !== txs[i - 1]);
      expect({ channelId, runs: runs.length }).toEqual({ channelId, runs: new Set(txs).size });
    }
    console.info(`group commit: 300 messages over 10 channels in ${transactions} transactions`);

    // Acks arrive, per socket (each sends to one channel), in id order, all 15.
    for (const [s, list] of acksInArrival.entries()) {
      expect(list).toHaveLength(15);
      expect({ s, increasing: increasing(list.map((m) => m.id)) }).toEqual({ s, increasing: true });
    }

    // Broadcasts: each sender's sockets get exactly their channel's 30, in id order; the watcher all 300, each channel's in id order.
    await settleMessages(t, parties[0]!.user, received);
    for (const [s] of senders.entries()) {
      const { channelId } = parties[Math.floor(s / 2)]!;
      expect({ s, got: received[s] }).toEqual({ s, got: messages.filter((m) => m.channelId === channelId) });
    }
    for (const list of received.slice(senders.length)) {
      expect(list).toHaveLength(300);
      for (const { channelId } of parties) expect(list.filter((m) => m.channelId === channelId)).toEqual(messages.filter((m) => m.channelId === channelId));
    }
  });

  // A row the database refuses, in channel X: by a trigger (INTERNAL), or because its author was
  // deleted just before (UNAUTHORIZED). The table lock holds batches until released, so what
  // forms a batch is decided, not timed:
  //   same batch: batches in other channels take all the writer's slots; everything sent
  //     meanwhile, X's rows and Y's, becomes the next batch, together;
  //   own batches: one blocked batch in X and one in Y; the rows sent meanwhile wait for their
  //     channel, and as each blocked batch ends its channel's rows start a batch of their own,
  //     while the other channel is still busy: X's and Y's rows are never in one batch.
  const failures: [poison: "refused by a trigger" | "from a deleted author", layout: "same batch" | "own batches"][] = [
    ["refused by a trigger", "same batch"],
    ["refused by a trigger", "own batches"],
    ["from a deleted author", "same batch"],
    ["from a deleted author", "own batches"],
  ];

  test.each(failures)("a row %s in channel X, %s as channel Y's rows: Y's are all stored, acked and broadcast in order; X's others too; only that row fails", async (poison, layout) => {
    const tag = `rf ${crypto.randomUUID().slice(0, 8)}`;
    const [x, y, ...others] = await owners(2 + MAX_BATCHES_IN_FLIGHT);
    const [xSocket, ySocket] = await Promise.all([connect(x!.user), connect(y!.user)]);
    const watcher = await t.register();
    for (const { channelId } of [x!, y!]) await expectStatus(await api("POST", `/api/channels/${channelId}/join`, watcher.token), 200);
    const seen = collectMessages(await connect(watcher, "polling"));

    // The poisoned row's socket and content.
    let poisonSocket = xSocket;
    let poisonContent = `${tag} x poison`;
    let expectedCode = "INTERNAL";
    if (poison === "refused by a trigger") {
      await sql.unsafe(`CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.content LIKE '% poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$`);
      await sql.unsafe(`CREATE TRIGGER refuse_poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_poison()`);
    } else {
      // A member of X whose account is deleted while their socket (and its cached session) is up.
      const doomed = await t.register();
      await expectStatus(await api("POST", `/api/channels/${x!.channelId}/join`, doomed.token), 200);
      poisonSocket = await connect(doomed);
      poisonContent = `${tag} x from the deleted`;
      await sql`DELETE FROM users WHERE id = ${doomed.user.id}`;
      expectedCode = "UNAUTHORIZED";
    }

    const xGood = [0, 1, 2, 3].map((i) => `${tag} x good ${i}`);
    const yGood = [0, 1, 2, 3, 4, 5].map((i) => `${tag} y good ${i}`);
    const send = (socket: ChatClient, channelId: number, content: string) => sendWithAck(socket, { content, channelId }, 20_000);
    const blockers: { socket: ChatClient; channelId: number }[] =
      layout === "same batch"
        ? await Promise.all(others.map(async (o) => ({ socket: await connect(o.user), channelId: o.channelId })))
        : [
            { socket: xSocket, channelId: x!.channelId },
            { socket: ySocket, channelId: y!.channelId },
          ];
    let blocked: Promise<any>[] = [];
    let xAcks: Promise<any>[] = [];
    let yAcks: Promise<any>[] = [];
    let poisonAck: Promise<any>;
    let before: BatchFigures;
    try {
      const lock = await hold(sql, "LOCK TABLE messages IN EXCLUSIVE MODE");
      try {
        before = await batchFigures(t.url);
        // One at a time, each a batch of its own stuck on the lock.
        for (const [i, { socket, channelId }] of blockers.entries()) {
          blocked.push(send(socket, channelId, `${tag} blocker ${i}`));
          await until(async () => (await waitingForLocks(sql)).length === i + 1, `blocker ${i} to wait for the lock`);
        }
        xAcks = xGood.slice(0, 2).map((content) => send(xSocket, x!.channelId, content));
        poisonAck = send(poisonSocket, x!.channelId, poisonContent);
        xAcks.push(...xGood.slice(2).map((content) => send(xSocket, x!.channelId, content)));
        yAcks = yGood.map((content) => send(ySocket, y!.channelId, content));
        await until(() => t.app.services.messages.pendingWrites() === blockers.length + xGood.length + 1 + yGood.length, "every row to wait for the writer");
      } finally {
        await lock.release();
      }
      const [xAnswers, yAnswers, poisonAnswer, blockerAnswers] = await Promise.all([Promise.all(xAcks), Promise.all(yAcks), poisonAck!, Promise.all(blocked)]);
      expect(poisonAnswer).toEqual({ ok: false, error: { code: expectedCode, message: expect.any(String) } });
      for (const [i, answer] of [...blockerAnswers, ...xAnswers, ...yAnswers].entries()) {
        expect({ i, answer }).toEqual({ i, answer: { ok: true, message: expect.any(Object) } });
      }

      // Stored: exactly the acked rows, nothing of the poisoned one; each channel's in the order sent.
      const xMessages = xAnswers.map((a) => a.message as ChatMessage);
      const yMessages = yAnswers.map((a) => a.message as ChatMessage);
      expect(xMessages.map((m) => m.content)).toEqual(xGood);
      expect(yMessages.map((m) => m.content)).toEqual(yGood);
      expect(increasing(xMessages.map((m) => m.id))).toBe(true);
      expect(increasing(yMessages.map((m) => m.id))).toBe(true);
      const rows = await storedLike(`${tag} %`);
      const acked = [...blockerAnswers, ...xAnswers, ...yAnswers].map((a) => a.message as ChatMessage).sort(byId);
      expect(rows.map(asAcked)).toEqual(acked.map(asHistory));
      // Each channel is new: its events are 1, 2, ... in id order; the refused row took no number.
      for (const { channelId } of [x!, y!]) expectSeqsInIdOrder(acked.filter((m) => m.channelId === channelId), 0);

      // How the writer handled it: only the batch holding the poisoned row went row by row.
      const since = await batchesSince(t.url, before!);
      const transactionsOf = (channelId: number, contents: string[]) => new Set(rows.filter((r) => r.channel_id === channelId && contents.includes(r.content)).map((r) => r.tx)).size;
      if (layout === "same batch") {
        expect(since).toEqual({ committed: { batches: MAX_BATCHES_IN_FLIGHT, rows: MAX_BATCHES_IN_FLIGHT }, split: { batches: 1, rows: xGood.length + 1 + yGood.length }, failed: { batches: 0, rows: 0 } });
        expect(transactionsOf(y!.channelId, yGood)).toBe(yGood.length);
      } else {
        expect(since).toEqual({ committed: { batches: 3, rows: 2 + yGood.length }, split: { batches: 1, rows: xGood.length + 1 }, failed: { batches: 0, rows: 0 } });
        // Y's rows were one transaction; X's good rows were retried one by one.
        expect(transactionsOf(y!.channelId, yGood)).toBe(1);
      }
      expect(transactionsOf(x!.channelId, xGood)).toBe(xGood.length);

      // Broadcast: each stored message once, each channel's in id order; the newest pages agree.
      await settleMessages(t, watcher, [seen]);
      for (const { channelId } of [x!, y!]) {
        const expected = acked.filter((m) => m.channelId === channelId);
        expect(seen.filter((m) => m.channelId === channelId)).toEqual(expected);
        expect(await newest(watcher, channelId)).toEqual([...expected].reverse().map(asHistory));
        expect(await newest(watcher, channelId)).toEqual(await stored(channelId));
      }
    } finally {
      if (poison === "refused by a trigger") {
        await sql.unsafe("DROP TRIGGER IF EXISTS refuse_poison ON messages");
        await sql.unsafe("DROP FUNCTION IF EXISTS refuse_poison()");
      }
    }
  });
});
