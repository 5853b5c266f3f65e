import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { baselineRef } from "../bench/lib/baseline.ts";
import type { Results } from "../bench/lib/report.ts";
import { projectRoot } from "./helpers/process.ts";
import { templateEnvVar } from "./helpers/env.ts";

// Benchmarks are not tests, but their smoke mode is: `bun run bench --smoke` runs every
// scenario against the service and the reference with a tiny load, so the benchmark
// cannot rot. The figures mean nothing here; that nothing was lost, doubled or refused does.
// With --baseline too (the service at the merge-base with main, checked out and built in a
// second or two), when the checkout has that history: a copy without .git or without main skips it.
setDefaultTimeout(240_000);

const baseline = await baselineRef(projectRoot).then(
  (ref) => ref,
  () => undefined,
);

const out = path.join(tmpdir(), `chat-bench-smoke-${process.pid}`);
afterAll(() => rm(out, { recursive: true, force: true }));

const run = Bun.spawn([process.execPath, "bench/run.ts", "--smoke", ...(baseline ? ["--baseline"] : []), `--out=${out}/RESULTS.md`, `--json=${out}/results.json`], {
  cwd: projectRoot,
  // The migrated template of this test run, so the benchmark need not migrate its own.
  env: { ...process.env, BENCH_TEMPLATE_SOURCE: process.env[templateEnvVar] },
  stdout: "pipe",
  stderr: "pipe",
});
const [exitCode, stderr] = await Promise.all([run.exited, new Response(run.stderr).text()]);
const results = exitCode === 0 ? ((await Bun.file(`${out}/results.json`).json()) as Results) : undefined;
const servers = ["service", "reference"] as const;
/** Where the baseline runs too (ingest, fan-out, resume). */
const withBaseline = baseline ? (["service", "baseline", "reference"] as const) : servers;

test("bun run bench --smoke runs every scenario and writes the results", async () => {
  if (exitCode !== 0) console.error(stderr);
  expect(exitCode).toBe(0);
  const markdown = await Bun.file(`${out}/RESULTS.md`).text();
  for (const heading of ["## Targets", "## 1. Ingest", "## 2. Fan-out", "## 3. Read path", "## 4. Capacity", "## 5. Search", "## 6. Reconnect storm after a restart", "## 7. Password hashing"]) expect(markdown).toContain(heading);
  if (baseline) expect(markdown).toContain("| Before and after |");
  expect(results!.machine.Bun).toBe(Bun.version);
});

test.skipIf(!baseline)("the baseline is the service at the merge-base with main (or BENCH_BASELINE_REF)", () => {
  expect(results!.baseline!.sha).toBe(baseline!.sha);
  expect(results!.baseline!.subject.length).toBeGreaterThan(0);
});

test.each(withBaseline)("ingest on the %s: every acked message stored exactly once, none refused", (server) => {
  for (const phase of ["max", "paced"] as const) {
    const run = results!.ingest![server]![phase];
    expect(run.acked).toBeGreaterThan(0);
    expect({ refused: run.refused, missing: run.missing, duplicated: run.duplicated }).toEqual({ refused: 0, missing: 0, duplicated: 0 });
    expect(run.ackMs.p99).toBeGreaterThan(0);
  }
});

test.each(withBaseline)("fan-out on the %s: every client got every acked message once", (server) => {
  const run = results!.fanout![server]!;
  expect(run.steps.length).toBeGreaterThan(0);
  for (const step of run.steps) {
    expect(step.acked).toBeGreaterThan(0);
    expect({ missed: step.missed, duplicates: step.duplicates, deliveries: step.deliveries }).toEqual({ missed: 0, duplicates: 0, deliveries: step.acked * run.clients });
  }
});

test("read path: both endpoints on both servers and the hello-world answered 200 every time", () => {
  const runs = [...Object.values(results!.read!.service), ...Object.values(results!.read!.reference), results!.read!.hello.hello!];
  expect(runs).toHaveLength(5);
  for (const run of runs) {
    expect(run.requests).toBeGreaterThan(0);
    expect(run.errors).toBe(0);
  }
});

test.each([...servers, "bare"] as const)("capacity on the %s: every socket connected and stayed, memory was read", (server) => {
  const run = results!.capacity![server]!;
  expect(run.sockets).toBe(40);
  expect(run.droppedWhileIdle).toBe(0);
  expect(run.loadedRssKiB).toBeGreaterThan(run.baselineRssKiB * 0.5);
});

test.each(servers)("search on the %s: both words found one at a time, every search of the attack answered, every bystander send acked", (server) => {
  const run = results!.search![server];
  expect(results!.search!.messages).toBe(20_000);
  for (const phase of [run.rare, run.common]) {
    expect(Object.keys(phase.statuses)).toEqual(["200"]);
    expect(phase.hits).toBeGreaterThan(0);
  }
  // The service answers 200, or 503 if a search missed its deadline on a busy machine; never a 500 or no answer.
  const allowed = server === "service" ? ["200", "503 UNAVAILABLE"] : ["200", "500 INTERNAL"];
  expect(Object.keys(run.attack.statuses).filter((status) => !allowed.includes(status))).toEqual([]);
  expect(run.attack.statuses["200"] ?? 0).toBeGreaterThan(0);
  for (const phase of [run.bystander.baseline, run.bystander.duringAttack]) {
    expect(phase.latencyMs.count).toBeGreaterThan(0);
    expect(phase.failed).toBe(0);
  }
});

test.each(withBaseline)("resume storm on the %s: every client caught up with every missed event once, in order, then live", (server) => {
  const run = results!.resume![server]!;
  expect(run.mode).toBe(server === "service" ? "resume" : "history");
  expect(run.clients).toBe(20);
  expect(run.events).toBe(100);
  // The service's replay carries edits and deletions too; history shows messages only.
  if (server === "service") {
    expect(run.plan.edits).toBeGreaterThan(0);
    expect(run.plan.deletes).toBeGreaterThan(0);
    expect(run.head).toBe(run.expectedHead!);
  } else expect(run.plan).toEqual({ messages: 100, edits: 0, deletes: 0 });
  const { missed, duplicates, outOfOrder, wrongEvent, unexpected, resyncs, failedConnects } = run;
  expect({ missed, duplicates, outOfOrder, wrongEvent, unexpected, resyncs, failedConnects }).toEqual({ missed: 0, duplicates: 0, outOfOrder: 0, wrongEvent: 0, unexpected: 0, resyncs: 0, failedConnects: 0 });
  expect(run.caughtUp).toBe(run.clients);
  expect(run.allCaughtUpMs).toBeGreaterThan(0);
  expect(run.liveAfter).toEqual({ missed: 0, duplicates: 0 });
  expect(run.rssKiB.peak).toBeGreaterThanOrEqual(run.rssKiB.before);
  expect(run.rssKiB.before).toBeGreaterThan(0);
});

test("password hashing: the service's argon2id parameters and Bun's default both measured, the service's hash made with its own", () => {
  const [ours, bun] = results!.password!.sets;
  expect(ours!.hash).toBe("$argon2id$v=19$m=19456,t=2,p=1");
  expect(bun!.hash).toBe("$argon2id$v=19$m=65536,t=2,p=1");
  for (const set of [ours!, bun!]) {
    expect(set.hashMs.count).toBeGreaterThan(0);
    expect(set.hashesPerSecond).toBeGreaterThan(0);
  }
});
