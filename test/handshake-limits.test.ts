import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createTestDatabase } from "./helpers/db.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { expectError } from "./helpers/expect-error.ts";
import { mib, residentBytes, settledResidentBytes } from "./helpers/hostile.ts";
import { productionEnv, startServerProcess } from "./helpers/process.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §6 Hostile input (issue 15, finding 4). A polling POST is cut off at
// SOCKET_MAX_BUFFER_BYTES whatever its framing: the engine used to read a chunked one whole (four
// of 120 MiB took the service from 73 to 315 MiB).

// A process of its own for the body tests: its memory is the service's alone.
const database = await createTestDatabase();
const service = await startServerProcess(productionEnv(database.url));
afterAll(() => service.proc.kill("SIGKILL"));

describe("a polling POST is cut off at SOCKET_MAX_BUFFER_BYTES whatever its framing", () => {
  const base = `${service.url}/socket.io/?EIO=4&transport=polling`;
  const limit = 64 * 1024;

  async function openSession(): Promise<string> {
    const text = await (await fetch(base)).text();
    return (JSON.parse(text.slice(1)) as { sid: string }).sid;
  }

  /** `total` bytes of `x` in 1 MiB chunks (or fewer), sent without a Content-Length. */
  function chunked(total: number): ReadableStream<Uint8Array> {
    const chunk = new Uint8Array(Math.min(total, 2 ** 20)).fill(0x78);
    let sent = 0;
    return new ReadableStream({
      pull(controller) {
        if (sent >= total) return controller.close();
        const part = chunk.subarray(0, Math.min(chunk.length, total - sent));
        sent += part.length;
        controller.enqueue(part);
      },
    });
  }

  const post = (url: string, body: string | Blob | ReadableStream<Uint8Array>, headers: Record<string, string> = {}) =>
    fetch(url, { method: "POST", headers, body, duplex: "half" } as RequestInit);

  // Engine.IO pongs padded to size: a packet the engine takes from a session that has not connected yet.
  const pong = (padding: string) => `3${padding}`;
  const pongOf = (bytes: number) => pong("x".repeat(bytes - 1));

  // [label, body, status, session afterwards]: over the limit, the engine's own refusal (413, and
  // the session closed); up to it, the packet is taken.
  const cases: [label: string, body: () => string | Blob | ReadableStream<Uint8Array>, status: number, sessionAfter: "open" | "closed"][] = [
    ["chunked, 120 MiB", () => chunked(120 * 2 ** 20), 413, "closed"],
    ["chunked, one byte over the limit", () => chunked(limit + 1), 413, "closed"],
    // The engine compares UTF-16 code units with the limit; engine.io-client and the websocket count bytes.
    ["chunked, 90 KB of 3-byte characters (over the limit in bytes, under it in UTF-16 units)", () => new Blob([pong("€".repeat(30_000))]).stream(), 413, "closed"],
    ["Content-Length, one byte over the limit", () => pongOf(limit + 1), 413, "closed"],
    // Past Bun's maxRequestBodySize (1 MiB here): Bun's own bare 413 before the service sees it.
    ["Content-Length, 2 MiB", () => pongOf(2 * 2 ** 20), 413, "open"],
    ["chunked, exactly the limit", () => new Blob([pongOf(limit)]).stream(), 200, "open"],
    ["Content-Length, exactly the limit", () => pongOf(limit), 200, "open"],
  ];
  const rows = cases.map(([label, ...rest]) => [`${label} → ${rest[1]}, session ${rest[2]} afterwards`, ...rest] as const);

  test.each(rows)("%s", async (_label, body, status, sessionAfter) => {
    const sid = await openSession();
    const res = await post(`${base}&sid=${sid}`, body());
    await res.body?.cancel();
    expect(res.status).toBe(status);
    // A closed session is unknown to the engine from then on (code 1); an open one takes another packet.
    const next = await fetch(`${base}&sid=${sid}`, { method: "POST", body: pong("") });
    const answer = { status: next.status, text: await next.text() };
    if (sessionAfter === "closed") expect(answer).toEqual({ status: 400, text: JSON.stringify({ code: 1, message: "Session ID unknown" }) });
    else expect(answer).toEqual({ status: 200, text: "ok" });
  });

  test("four chunked 120 MiB POSTs, one after another, leave the service's memory flat", async () => {
    const before = await settledResidentBytes(service.proc.pid);
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, residentBytes(service.proc.pid))), 20);
    const statuses: number[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const res = await post(`${base}&sid=${await openSession()}`, chunked(120 * 2 ** 20));
        await res.body?.cancel();
        statuses.push(res.status);
      }
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, residentBytes(service.proc.pid));
    console.log(`4 chunked 120 MiB polling POSTs: ${statuses.join(", ")}; VmRSS ${mib(before)} MiB before, ${mib(peak)} MiB at the peak`);
    expect(statuses).toEqual([413, 413, 413, 413]);
    // Before the fix: some 240 MiB more at the peak. A loose bound, for the collector's own swings.
    expect(peak - before).toBeLessThan(48 * 2 ** 20);
  });

  test("a chunked REST body of 120 MiB: 413 PAYLOAD_TOO_LARGE, and memory flat too", async () => {
    const before = await settledResidentBytes(service.proc.pid);
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, residentBytes(service.proc.pid))), 20);
    try {
      for (let i = 0; i < 2; i++) {
        const res = await post(`${service.url}/api/auth/login`, chunked(120 * 2 ** 20), { "content-type": "application/json" });
        await expectError(res, 413, "PAYLOAD_TOO_LARGE");
      }
    } finally {
      clearInterval(sampler);
    }
    expect(Math.max(peak, residentBytes(service.proc.pid)) - before).toBeLessThan(48 * 2 ** 20);
  });
});
