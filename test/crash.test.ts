import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { createTestDatabase } from "./helpers/db.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { connectTo, productionEnv, registerAt, startServerProcess } from "./helpers/process.ts";
import { sendWithAck, transports, uniqueName, type ChatClient } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Issue 7, item 2: the process is killed (SIGKILL: no shutdown, nothing flushed) while senders
// are busy. After a restart on the same database, every message acked ok is there exactly once
// with the id its ack gave, none that was refused is, and a message whose answer the crash cut
// off can be resent with its clientId and is then stored exactly once.

const database = await createTestDatabase();
const env = productionEnv(database.url);

type Outcome = { kind: "ok"; id: number } | { kind: "refused"; code: string } | { kind: "unanswered" };
interface Sent {
  socket: number;
  payload: { content: string; clientId: string; userId?: number };
  /** Whether the service must accept it. */
  valid: boolean;
  outcome?: Outcome;
}

/**
 * Every 5th payload is one the service must refuse (it never reaches the database), the rest
 * are valid; each has a content and a clientId of its own.
 */
function payloadFor(sender: number, i: number, otherUserId: number): Pick<Sent, "payload" | "valid"> {
  const tag = `crash s${sender} #${i} ${crypto.randomUUID()}`;
  const clientId = crypto.randomUUID();
  switch (i % 10) {
    case 4:
      return { payload: { content: `${tag} ${"x".repeat(4000)}`, clientId }, valid: false }; // over 4000 characters
    case 9:
      return { payload: { content: tag, clientId, userId: otherUserId }, valid: false }; // someone else's userId
    default:
      return { payload: { content: tag, clientId }, valid: true };
  }
}

/** How many rows hold each message's content (each content is unique). */
async function storedCounts(sent: Sent[]): Promise<number[]> {
  const contents = sent.map((s) => s.payload.content);
  const rows = await database.sql<{ content: string; n: number }[]>`
    SELECT content, count(*)::int AS n FROM messages WHERE content IN ${database.sql(contents)} GROUP BY content`;
  const counts = new Map(rows.map((r) => [r.content, r.n]));
  return contents.map((c) => counts.get(c) ?? 0);
}

describe("SIGKILL while senders are busy", () => {
  test("after a restart: acked ok → stored once with its id; refused → not stored; cut off → stored once after a resend with its clientId", async () => {
    const first = await startServerProcess(env);
    const users = await Promise.all([0, 1, 2].map((u) => registerAt(first.url, uniqueName(`crash${u}`))));
    // Six senders: each user on both transports.
    const sockets: ChatClient[] = await Promise.all(
      users.flatMap((user) => transports.map((transport) => connectTo(first.url, user.token, transport))),
    );
    const sent: Sent[] = [];
    let killed = false;

    // Closed loops: each sender sends its next message as soon as the previous one is answered.
    const senders = sockets.map(async (socket, s) => {
      const other = users[(Math.floor(s / 2) + 1) % users.length]!.user.id;
      for (let i = 0; !killed; i++) {
        const entry: Sent = { socket: s, ...payloadFor(s, i, other) };
        sent.push(entry);
        try {
          const ack = await sendWithAck(socket, entry.payload, 10_000);
          entry.outcome = ack.ok ? { kind: "ok", id: ack.message.id } : { kind: "refused", code: ack.error.code };
        } catch {
          entry.outcome = { kind: "unanswered" };
          return;
        }
      }
    });

    // Load for a while, then kill the process outright, mid-stream.
    await Bun.sleep(1_500);
    first.proc.kill("SIGKILL");
    await first.proc.exited;
    killed = true;
    await Promise.all(senders);
    for (const socket of sockets) socket.disconnect();

    const ok = sent.filter((s) => s.outcome?.kind === "ok");
    // Every answered payload got the answer its validity calls for.
    expect(sent.filter((s) => s.outcome && s.outcome.kind !== "unanswered" && (s.outcome.kind === "ok") !== s.valid)).toEqual([]);
    const refused = sent.filter((s) => s.outcome?.kind === "refused");
    const unanswered = sent.filter((s) => s.outcome?.kind === "unanswered");
    console.log(`SIGKILL under load: ${ok.length} acked ok, ${refused.length} refused, ${unanswered.length} cut off`);
    // The load was real, and the kill caught every sender mid-send.
    expect(ok.length).toBeGreaterThan(100);
    expect(refused.length).toBeGreaterThan(10);
    expect(unanswered).toHaveLength(sockets.length);
    expect(new Set(refused.map((s) => (s.outcome as { code: string }).code))).toEqual(new Set(["VALIDATION_FAILED", "FORBIDDEN"]));

    // A new process on the same database.
    const second = await startServerProcess(env);
    try {
      // Acked ok: there, exactly once, under the id the ack gave.
      expect(await storedCounts(ok)).toEqual(ok.map(() => 1));
      const ids = await database.sql<{ id: number; content: string }[]>`
        SELECT id, content FROM messages WHERE id IN ${database.sql(ok.map((s) => (s.outcome as { id: number }).id))}`;
      const contentOf = new Map(ids.map((r) => [r.id, r.content]));
      expect(ok.map((s) => contentOf.get((s.outcome as { id: number }).id))).toEqual(ok.map((s) => s.payload.content));
      // Refused: never stored.
      expect(await storedCounts(refused)).toEqual(refused.map(() => 0));

      // Cut off: stored or not, depending on where the crash caught it; resent with the same
      // clientId, as a client does after reconnecting, each valid one ends up stored exactly once
      // (and an invalid one is refused again, and stored never).
      const again = await Promise.all(users.flatMap((user) => transports.map((transport) => connectTo(second.url, user.token, transport))));
      const resent = await Promise.all(unanswered.map((s) => sendWithAck(again[s.socket]!, s.payload)));
      expect(resent.map((ack) => ack.ok)).toEqual(unanswered.map((s) => s.valid));
      expect(await storedCounts(unanswered)).toEqual(unanswered.map((s) => (s.valid ? 1 : 0)));
      // A resend of one acked before the crash returns the same message: no second row.
      const repeat = await sendWithAck(again[ok[0]!.socket]!, ok[0]!.payload);
      expect(repeat).toMatchObject({ ok: true, message: { id: (ok[0]!.outcome as { id: number }).id } });
      expect(await storedCounts(ok)).toEqual(ok.map(() => 1));
      for (const socket of again) socket.disconnect();
    } finally {
      expect((await second.stop("SIGTERM")).code).toBe(0);
    }
  });
});
