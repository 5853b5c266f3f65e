import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { sendWithAck } from "./helpers/server.ts";
import { connectTo, registerAt, startServerProcess } from "./helpers/process.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// `bun run dev` with no DATABASE_URL: the entry point starts an embedded PostgreSQL
// (PGlite) under DATA_DIR, applies the migrations, and serves a working chat; the data
// and the development JWT secret survive a restart.

const dataDir = await mkdtemp(path.join(tmpdir(), "chat-embedded-"));
afterAll(() => rm(dataDir, { recursive: true, force: true }));

const devEnv = {
  PATH: process.env.PATH ?? "",
  NODE_ENV: "development",
  DATA_DIR: dataDir,
  PORT: "0",
  HOST: "127.0.0.1",
  LOG_LEVEL: "info",
};

test("with no DATABASE_URL, development runs on an embedded PostgreSQL that persists across restarts", async () => {
  const first = await startServerProcess(devEnv, 90_000);
  expect(first.logs.some((l) => typeof l.msg === "string" && l.msg.includes("embedded PostgreSQL"))).toBe(true);
  expect(first.logs.some((l) => Array.isArray(l.migrations) && l.migrations.length > 0)).toBe(true);

  const alice = await registerAt(first.url, "Алиса_dev");
  const socket = await connectTo(first.url, alice.token, "websocket");
  const broadcast = new Promise((resolve) => socket.once("message", resolve));
  const ack = await sendWithAck(socket, { content: "stored in PGlite" });
  expect(ack.ok).toBe(true);
  expect(await broadcast).toEqual(ack.message);
  socket.disconnect();
  expect((await first.stop("SIGTERM")).code).toBe(0);

  const second = await startServerProcess(devEnv, 90_000);
  try {
    // Nothing pending on the second start, so Prisma's CLI is not run again.
    expect(second.logs.some((l) => Array.isArray(l.migrations))).toBe(false);
    // The token from before the restart still verifies: the dev secret was kept in DATA_DIR.
    const me = await fetch(`${second.url}/api/users/me`, { headers: { authorization: `Bearer ${alice.token}` } });
    expect(me.status).toBe(200);
    const history = await fetch(`${second.url}/api/messages`, { headers: { authorization: `Bearer ${alice.token}` } });
    const messages = (await history.json()) as { id: number; content: string }[];
    expect(messages.map((m) => [m.id, m.content])).toEqual([[ack.message.id, "stored in PGlite"]]);
    // Search too: the stored document vector and the search's own transaction settings work on PGlite.
    const search = await fetch(`${second.url}/api/messages/search?q=pglit`, { headers: { authorization: `Bearer ${alice.token}` } });
    expect(((await search.json()) as { message: { id: number } }[]).map((h) => h.message.id)).toEqual([ack.message.id]);
  } finally {
    expect((await second.stop("SIGTERM")).code).toBe(0);
  }
}, 180_000);
