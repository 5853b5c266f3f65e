import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { createTestDatabase } from "./helpers/db.ts";
import { productionEnv, registerAt, startServerProcess } from "./helpers/process.ts";
import { expectRetryable, metricValue } from "./helpers/rate-limited.ts";
import { uniqueName } from "./helpers/server.ts";
import { scrapeMetrics, TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §7 "Password hashing": every argon2id hash and verification takes 19 MiB while it runs,
// so at most PASSWORD_HASH_CONCURRENCY run at once per instance, at most PASSWORD_HASH_QUEUE wait
// for a turn, and the rest are answered 503 UNAVAILABLE with Retry-After at once. A storm of
// logins against a real server process: its peak RSS (the kernel's high-water mark, reset just
// before the storm) and its own count of hashes in flight.

const concurrency = 1;
const queue = 10;
const storm = 100;
const MiB = 1024 * 1024;
const password = "correct horse battery";

/** The kernel's figures for `pid`: current and peak resident set (bytes). */
async function memory(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kib("VmRSS"), peak: kib("VmHWM") };
}

describe(`a storm of ${storm} concurrent logins (PASSWORD_HASH_CONCURRENCY=${concurrency}, PASSWORD_HASH_QUEUE=${queue})`, () => {
  test("every answer is 200, 401 or 503 with Retry-After; hashes in flight never exceed the bound; RSS grows by at most the bound's 19 MiB per hash", async () => {
    const database = await createTestDatabase();
    const server = await startServerProcess(
      productionEnv(database.url, { PASSWORD_HASH_CONCURRENCY: String(concurrency), PASSWORD_HASH_QUEUE: String(queue) }),
    );
    try {
      const pid = server.proc.pid;
      const user = await registerAt(server.url, uniqueName("stormy"), password);
      // Warm: one login of each kind, so the storm measures hashing, not first-use allocations.
      const login = (username: string, pass: string) =>
        fetch(`${server.url}/api/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password: pass }) });
      for (const [name, pass] of [[user.user.username, password], [user.user.username, "wrong password!"], [uniqueName("ghost"), password]] as const) {
        await (await login(name, pass)).body?.cancel();
      }
      Bun.gc(true);
      // "5" resets the process's peak RSS (VmHWM) to its current RSS (proc(5), clear_refs).
      await writeFile(`/proc/${pid}/clear_refs`, "5");
      const baseline = await memory(pid);

      // A third each: the right password, a wrong one, a username that does not exist.
      const started = performance.now();
      const answers = await Promise.all(
        Array.from({ length: storm }, async (_, i) => {
          const res = await login(i % 3 === 2 ? uniqueName("ghost") : user.user.username, i % 3 === 0 ? password : "wrong password!");
          const ms = performance.now() - started;
          if (res.status === 503) await expectRetryable(res, 503, "UNAVAILABLE", 5);
          else await res.body?.cancel();
          return { status: res.status, ms };
        }),
      );
      const after = await memory(pid);
      const metrics = await scrapeMetrics(server.url);

      const byStatus: Record<number, number> = {};
      for (const { status } of answers) byStatus[status] = (byStatus[status] ?? 0) + 1;
      const slowest = (status: number) => Math.round(Math.max(0, ...answers.filter((a) => a.status === status).map((a) => a.ms)));
      const figures = {
        statuses: byStatus,
        slowestMs: { 200: slowest(200), 401: slowest(401), 503: slowest(503) },
        baselineRssMiB: Math.round(baseline.rss / MiB),
        peakRssMiB: Math.round(after.peak / MiB),
        growthMiB: Math.round((after.peak - baseline.rss) / MiB),
        hashesInFlightMax: metricValue(metrics, "chat_password_hashes_in_flight_max"),
        refused: metricValue(metrics, "chat_password_hashes_refused_total"),
      };
      console.log(`login storm: ${JSON.stringify(figures)}`);

      expect(Object.keys(byStatus).every((s) => ["200", "401", "503"].includes(s))).toBe(true);
      // One in flight, `queue` waiting: at least that many are checked; the rest could not all wait.
      expect((byStatus[200] ?? 0) + (byStatus[401] ?? 0)).toBeGreaterThanOrEqual(concurrency + queue);
      expect(byStatus[503] ?? 0).toBeGreaterThan(0);
      expect(figures.refused).toBe(byStatus[503]);
      expect(figures.hashesInFlightMax).toBe(concurrency);
      expect(metricValue(metrics, "chat_password_hashes_in_flight")).toBe(0);
      expect(metricValue(metrics, "chat_password_hashes_queued")).toBe(0);
      // argon2id takes 19 MiB per hash (lib/password.ts); the rest of a request is small change beside it.
      expect(after.peak - baseline.rss).toBeLessThan(concurrency * 19 * MiB + 48 * MiB);
      // The server is still fine: a login after the storm goes through.
      expect((await login(user.user.username, password)).status).toBe(200);
    } finally {
      await server.stop();
    }
  });
});
