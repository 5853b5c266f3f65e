import { collectMessages, settleMessages } from "./helpers/recorder.ts";
import { batchFigures, batchesSince, hold, until, waitingForLocks, type BatchFigures } from "./helpers/locks.ts";
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { expectError } from "./helpers/expect-error.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { sendWithAck, startTestServer, uniqueName, type ChatClient, type Registered, type Transport } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Group commit (src/messages/message-writer.ts): messages arriving together are stored by one
// multi-row INSERT in one transaction, acked and broadcast only after its COMMIT, in order; a
// row the database refuses fails alone; a database that goes away is 503 UNAVAILABLE.

const t = await startTestServer();
const { sql } = t.database;
const api = apiFor(t);

const opened: ChatClient[] = [];
afterEach(() => {
  for (const socket of opened.splice(0)) socket.disconnect();
});

async function connect(user: Registered, transport: Transport = "websocket"): Promise<ChatClient> {
  const socket = await t.connect(user.token, transport);
  opened.push(socket);
  return socket;
}


async function storedWithContent(contents: string[]): Promise<{ id: number; content: string }[]> {
  const rows = await sql<{ id: number; content: string }[]>`SELECT id, content FROM messages ORDER BY id`;
  return rows.filter((r) => contents.includes(r.content)).map((r) => ({ id: r.id, content: r.content }));
}

const increasing = (ids: number[]) => ids.every((id, i) => i === 0 || id > ids[i - 1]!);

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

    for (const [i, ack] of acks.entries()) {
      const { author, payload } = sends[i]!;
      expect(ack).toEqual({
        ok: true,
        message: { id: expect.any(Number), channelId: payload.channelId, userId: author.id, username: author.username, content: payload.content, timestamp: expect.any(String) },
      });
    }

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
    expect([...rows].map(asAcked).sort(byId)).toEqual(acks.map((a) => a.message as ChatMessage).sort(byId));

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
        expect(got).toEqual({ label, answer: original, stored: [] });
      } else if (expected === "UNAUTHORIZED") {
        expect(got).toEqual({ label, answer: { ok: false, error: { code: "UNAUTHORIZED", message: expect.any(String) } }, stored: [] });
      } else {
        expect(got).toEqual({ label, answer: answers[3], stored: [] });
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
        // The batch's statement is its own transaction (it commits as it ends); with the publish gate it ends with COMMIT.
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
