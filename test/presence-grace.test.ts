import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { createTestDatabase } from "./helpers/db.ts";
import { connectTo, productionEnv, registerAt, startServerProcess } from "./helpers/process.ts";
import { recordWithPresence, type Recorded } from "./helpers/recorder.ts";
import { sendWithAck, startTestServer, uniqueName, type ChatClient } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §8 presence with PRESENCE_GRACE_MS (docs/api.md "Presence"): a user whose last socket
// closed is announced offline only once the grace has passed without them coming back; back
// within it, nobody hears of either; GET /api/presence lists them meanwhile. A graceful restart
// of a single instance keeps the grace: the next process takes the online users over.
// Absences are proven with a marker message in general sent after the act (one connection
// delivers in emission order), never with a sleep alone.

const graceMs = 1_500;
const presenceOf = (userId: number) => ([event, payload]: Recorded) => event === "presence" && (payload as { userId: number }).userId === userId;
const markerIn = (content: string) => ([event, payload]: Recorded) => event === "message" && (payload as { content: string }).content === content;

async function onlineIds(url: string, token: string): Promise<number[]> {
  const res = await fetch(`${url}/api/presence`, { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  return (await res.json()) as number[];
}

/** Everything `watcher` got up to a marker it sends itself now: what the acts before it caused. */
async function untilMarker(watcher: ChatClient, recorded: ReturnType<typeof recordWithPresence>): Promise<Recorded[]> {
  const content = `marker ${crypto.randomUUID()}`;
  expect((await sendWithAck(watcher, { content })).ok).toBe(true);
  return recorded.until(markerIn(content));
}

describe(`one instance, PRESENCE_GRACE_MS=${graceMs}`, async () => {
  const t = await startTestServer({ env: { PRESENCE_GRACE_MS: String(graceMs) } });

  /** A watcher recording presence, and a second user whose first socket it has seen come online (recording emptied after). */
  async function watched() {
    const [watcher, subject] = [await t.register(), await t.register()];
    const watching = await t.connect(watcher.token);
    const seen = recordWithPresence(watching);
    const socket = await t.connect(subject.token);
    await seen.until(presenceOf(subject.user.id));
    expect(seen.events.filter(presenceOf(subject.user.id))).toEqual([["presence", { userId: subject.user.id, status: "online" }]]);
    seen.events.length = 0;
    return { watcher, subject, watching, seen, socket };
  }

  test("back within the grace: neither offline nor online is announced, and the list keeps the user all along", async () => {
    const { watcher, subject: blinker, watching, seen, socket: first } = await watched();

    first.disconnect();
    // The server has seen the close (the user's count is 0) once a request after it is answered.
    await Bun.sleep(100);
    expect(await onlineIds(t.url, watcher.token)).toContain(blinker.user.id);
    const again = await t.connect(blinker.token);
    expect((await untilMarker(watching, seen)).filter(presenceOf(blinker.user.id))).toEqual([]);
    expect(await onlineIds(t.url, watcher.token)).toContain(blinker.user.id);

    // Past the grace, nothing either: the user is back.
    await Bun.sleep(graceMs + 200);
    expect((await untilMarker(watching, seen)).filter(presenceOf(blinker.user.id))).toEqual([]);
    again.disconnect();
    watching.disconnect();
  });

  test("gone for good: offline once the grace has passed, not before; then the list no longer has the user", async () => {
    const { watcher, subject: leaver, watching, seen, socket } = await watched();

    const closedAt = performance.now();
    socket.disconnect();
    await Bun.sleep(200);
    expect((await untilMarker(watching, seen)).filter(presenceOf(leaver.user.id))).toEqual([]);
    expect(await onlineIds(t.url, watcher.token)).toContain(leaver.user.id);

    const [offline] = (await seen.until(presenceOf(leaver.user.id), graceMs + 3_000)).filter(presenceOf(leaver.user.id));
    expect(offline).toEqual(["presence", { userId: leaver.user.id, status: "offline" }]);
    expect(performance.now() - closedAt).toBeGreaterThanOrEqual(graceMs - 50);
    expect(await onlineIds(t.url, watcher.token)).not.toContain(leaver.user.id);
    watching.disconnect();
  });
});

describe("a graceful restart of one instance keeps the grace (the next process takes the online users over)", () => {
  test("a user back within the grace is announced neither offline nor online; one who stays away goes offline after it", async () => {
    const database = await createTestDatabase();
    // Long enough to cover a slow restart on a busy machine (the grace runs from the stop).
    const env = productionEnv(database.url, { PRESENCE_GRACE_MS: "8000" });
    let server = await startServerProcess(env);
    const [watcher, returner, leaver] = [
      await registerAt(server.url, uniqueName("watcher")),
      await registerAt(server.url, uniqueName("returner")),
      await registerAt(server.url, uniqueName("leaver")),
    ];
    const sockets = await Promise.all([watcher, returner, leaver].map((u) => connectTo(server.url, u.token, "websocket")));
    await Bun.sleep(200);
    expect(await onlineIds(server.url, watcher.token)).toEqual(expect.arrayContaining([watcher.user.id, returner.user.id, leaver.user.id]));

    expect((await server.stop("SIGTERM")).code).toBe(0);
    for (const socket of sockets) socket.disconnect();
    // Same database, same port: what a deploy does.
    server = await startServerProcess({ ...env, PORT: new URL(server.url).port });
    try {
      const watching = await connectTo(server.url, watcher.token, "websocket");
      const seen = recordWithPresence(watching);
      // Handed over: listed online before they are back.
      expect(await onlineIds(server.url, watcher.token)).toEqual(expect.arrayContaining([returner.user.id, leaver.user.id]));

      const back = await connectTo(server.url, returner.token, "websocket");
      const quiet = await untilMarker(watching, seen);
      expect(quiet.filter(presenceOf(returner.user.id))).toEqual([]);
      expect(quiet.filter(presenceOf(leaver.user.id))).toEqual([]);

      const [gone] = (await seen.until(presenceOf(leaver.user.id), 15_000)).filter(presenceOf(leaver.user.id));
      expect(gone).toEqual(["presence", { userId: leaver.user.id, status: "offline" }]);
      const after = await untilMarker(watching, seen);
      expect(after.filter(presenceOf(returner.user.id))).toEqual([]);
      const online = await onlineIds(server.url, watcher.token);
      expect(online).toContain(returner.user.id);
      expect(online).not.toContain(leaver.user.id);
      // Taken over once: the table is empty again.
      expect(await database.sql`SELECT user_id FROM presence_handoffs`).toEqual([]);
      back.disconnect();
      watching.disconnect();
    } finally {
      await server.stop("SIGTERM");
    }
  });
});
