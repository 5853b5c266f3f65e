import { cloneDatabase, GENERAL_CHANNEL_ID, type BenchUser } from "./lib/database.ts";
import { cpuMeter, rssKiB } from "./lib/proc.ts";
import type { PlanStep } from "./load/resume.ts";
import { runGenerator, startTarget, type RunningTarget, type TargetName } from "./lib/targets.ts";
import { progress } from "./lib/generator.ts";
import type { Argon2Parameters } from "./load/password.ts";
import { argon2Parameters, bunDefaultArgon2 } from "../src/lib/password.ts";
import { loadConfig } from "../src/config.ts";

/** How hard each scenario pushes: the full run, or a few seconds of tiny load for `bun test`. */
export interface Sizes {
  ingestSenders: number;
  ingestMs: number;
  fanoutClients: number;
  fanoutSteps: number[];
  fanoutStepMs: number;
  readConcurrency: number;
  readMs: number;
  capacitySockets: number;
  searchMessages: number;
  searchers: number;
  searchAttackMs: number;
  searchSamples: number;
  resumeClients: number;
  /** Events committed while the resume storm's clients are away. */
  resumeEvents: number;
  resumeTimeoutMs: number;
  /** Hashes one at a time per argon2id parameter set, then hashes at PASSWORD_HASH_CONCURRENCY's default at once. */
  passwordSequential: number;
  passwordConcurrent: number;
}

export const fullSizes: Sizes = {
  ingestSenders: 256,
  ingestMs: 10_000,
  fanoutClients: 1_000,
  fanoutSteps: [25, 50, 100, 200, 400, 800, 1_600],
  fanoutStepMs: 5_000,
  readConcurrency: 32,
  readMs: 8_000,
  capacitySockets: 10_000,
  searchMessages: 1_000_000,
  searchers: 12,
  searchAttackMs: 10_000,
  searchSamples: 30,
  resumeClients: 10_000,
  resumeEvents: 100,
  resumeTimeoutMs: 60_000,
  passwordSequential: 20,
  passwordConcurrent: 40,
};

export const smokeSizes: Sizes = {
  ingestSenders: 4,
  ingestMs: 800,
  fanoutClients: 20,
  fanoutSteps: [10, 20],
  fanoutStepMs: 800,
  readConcurrency: 4,
  readMs: 500,
  capacitySockets: 40,
  searchMessages: 20_000,
  searchers: 4,
  searchAttackMs: 800,
  searchSamples: 3,
  resumeClients: 20,
  resumeEvents: 100,
  resumeTimeoutMs: 15_000,
  passwordSequential: 2,
  passwordConcurrent: 4,
};

/** Users the template needs for these sizes: every fan-out or resume receiver plus its sender, at least one per ingest sender, the searchers and their bystander. */
export const usersNeeded = (sizes: Sizes) => Math.max(sizes.fanoutClients + 1, sizes.resumeClients + 1, sizes.ingestSenders, sizes.searchers + 1, 10);

type Cpu = ReturnType<ReturnType<typeof cpuMeter>>;
export type Measured<T> = T & { cpu: Cpu };

/** Runs `body` against a fresh server on a fresh copy of the template; always stops and drops both. */
async function against<T>(name: TargetName, template: string, label: string, body: (target: RunningTarget, databaseUrl: string) => Promise<T>): Promise<T> {
  const database = await cloneDatabase(template, `${label}_${name}`);
  const target = await startTarget(name, database.url);
  try {
    return await body(target, database.url);
  } finally {
    await target.stop();
    await database.drop();
  }
}

async function measured<T>(target: RunningTarget, scenario: string, settings: object, onReady?: (ready: unknown) => Promise<string | void>): Promise<Measured<T>> {
  const meter = cpuMeter(target.pid);
  const { result, cpuMs } = await runGenerator<T>(scenario, settings, onReady);
  return { ...result, cpu: meter(cpuMs) };
}

export interface IngestResult {
  senders: number;
  acked: number;
  refused: number;
  messagesPerSecond: number;
  ackMs: { p50: number; p95: number; p99: number; max: number };
  missing: number;
  duplicated: number;
}

/** Closed loop for the maximum, then open loop at half of it for the latency target. */
export async function ingest(name: TargetName, template: string, users: BenchUser[], sizes: Sizes) {
  const senders = users.slice(0, sizes.ingestSenders);
  return against(name, template, "ingest", async (target, databaseUrl) => {
    const base = { url: target.url, databaseUrl, tokens: senders.map((u) => u.token), channelIds: senders.map((u) => u.ownChannelId), durationMs: sizes.ingestMs };
    const max = await measured<IngestResult>(target, "ingest", { ...base, pacedRate: 0, tag: "max" });
    progress(`${name} ingest: ${max.messagesPerSecond} msg/s, p99 ${max.ackMs.p99} ms`);
    const pacedRate = Math.max(1, Math.round(max.messagesPerSecond / 2));
    const paced = await measured<IngestResult>(target, "ingest", { ...base, pacedRate, tag: "paced" });
    progress(`${name} ingest at ${pacedRate}/s: p99 ${paced.ackMs.p99} ms`);
    return { max, paced: { ...paced, rate: pacedRate } };
  });
}

export interface FanoutStep {
  targetRate: number;
  sentPerSecond: number;
  acked: number;
  deliveries: number;
  deliveriesPerSecond: number;
  latencyMs: { p50: number; p95: number; p99: number; max: number };
  missed: number;
  duplicates: number;
}

export async function fanout(name: TargetName, template: string, users: BenchUser[], sizes: Sizes) {
  return against(name, template, "fanout", (target) =>
    measured<{ clients: number; steps: FanoutStep[] }>(target, "fanout", {
      url: target.url,
      receiverTokens: users.slice(0, sizes.fanoutClients).map((u) => u.token),
      senderToken: users[sizes.fanoutClients]!.token,
      channelId: GENERAL_CHANNEL_ID,
      steps: sizes.fanoutSteps,
      stepMs: sizes.fanoutStepMs,
      stopAboveP99Ms: 100,
    }),
  );
}

export interface ReadResult {
  concurrency: number;
  requests: number;
  errors: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p95: number; p99: number; max: number };
}

export const readPaths = { history: "/api/messages?limit=50", users: "/api/users" } as const;

/** Both read endpoints on one server, or the hello-world's "/". */
export async function read(name: TargetName, template: string, users: BenchUser[], sizes: Sizes) {
  const paths: Record<string, string> = name === "hello" ? { hello: "/" } : readPaths;
  return against(name, template, "read", async (target) => {
    const results: Record<string, Measured<ReadResult>> = {};
    for (const [label, path] of Object.entries(paths)) {
      results[label] = await measured<ReadResult>(target, "http", {
        url: target.url,
        path,
        token: users[0]!.token,
        concurrency: sizes.readConcurrency,
        durationMs: sizes.readMs,
        warmupMs: Math.min(1_000, sizes.readMs / 2),
      });
      progress(`${name} ${label}: ${results[label]!.requestsPerSecond} req/s, p99 ${results[label]!.latencyMs.p99} ms`);
    }
    return results;
  });
}

export interface CapacityResult {
  sockets: number;
  droppedWhileIdle: number;
  connectionsPerSecond: number;
  baselineRssKiB: number;
  loadedRssKiB: number;
  kibPerSocket: number;
}

/** Capacity's sockets are spread over this many users (about ten each), as before the storm needed 10,000 users. */
const capacityUsers = 1_000;

/**
 * Server memory with N idle sockets over memory before them, divided by N. The baseline is
 * taken after one socket has come and gone, so code paths loaded once are not charged to
 * the sockets; the loaded figure after the sockets have sat idle for a few seconds.
 */
export async function capacity(name: TargetName, template: string, users: BenchUser[], sizes: Sizes) {
  return against(name, template, "capacity", async (target) => {
    const tokens = users.slice(0, capacityUsers).map((u) => u.token);
    await runGenerator("capacity", { url: target.url, tokens, sockets: 1, concurrency: 1 }, async () => {});
    await Bun.sleep(1_000);
    const baselineRssKiB = rssKiB(target.pid);
    let loadedRssKiB = 0;
    const result = await measured<Omit<CapacityResult, "baselineRssKiB" | "loadedRssKiB" | "kibPerSocket">>(
      target,
      "capacity",
      { url: target.url, tokens, sockets: sizes.capacitySockets, concurrency: 200 },
      async () => {
        await Bun.sleep(sizes.capacitySockets >= 1_000 ? 5_000 : 500);
        loadedRssKiB = rssKiB(target.pid);
      },
    );
    const kibPerSocket = Math.round(((loadedRssKiB - baselineRssKiB) / result.sockets) * 10) / 10;
    progress(`${name} capacity: ${result.sockets} sockets at ${result.connectionsPerSecond}/s, ${kibPerSocket} KiB each`);
    return { ...result, baselineRssKiB, loadedRssKiB, kibPerSocket };
  });
}

type Latency = ReadResult["latencyMs"] & { count: number };

export interface SearchResult {
  /** Sequential searches: latency, answers by status ("200", "503 UNAVAILABLE", "timeout"…), the most hits one returned. */
  rare: { latencyMs: Latency; statuses: Record<string, number>; hits: number };
  common: { latencyMs: Latency; statuses: Record<string, number>; hits: number };
  attack: { searchers: number; latencyMs: Latency; statuses: Record<string, number> };
  bystander: Record<"baseline" | "duringAttack", { latencyMs: Latency; failed: number }>;
}

/**
 * Search over `sizes.searchMessages` messages (`searchTemplate`, seeded by bench/lib/search-data.ts):
 * a rare and a common word one search at a time, then `sizes.searchers` users searching the common
 * word back to back while another user sends a message every 100 ms over its socket.
 */
export async function search(name: TargetName, searchTemplate: string, users: BenchUser[], sizes: Sizes, words: { common: string; rare: string }) {
  return against(name, searchTemplate, "search", async (target) => {
    const result = await measured<SearchResult>(target, "search", {
      url: target.url,
      searcherTokens: users.slice(0, sizes.searchers).map((u) => u.token),
      bystanderToken: users[sizes.searchers]!.token,
      bystanderChannelId: users[sizes.searchers]!.ownChannelId,
      commonQuery: words.common,
      rareQuery: words.rare,
      sequentialSamples: sizes.searchSamples,
      sequentialBudgetMs: Math.max(2_000, sizes.searchAttackMs * 2),
      attackMs: sizes.searchAttackMs,
      baselineMs: Math.max(300, sizes.searchAttackMs / 3),
      sendEveryMs: 100,
      requestTimeoutMs: 15_000,
    });
    progress(`${name} search: common p50 ${result.common.latencyMs.p50} ms, bystander p99 ${result.bystander.duringAttack.latencyMs.p99} ms under ${sizes.searchers} searchers`);
    return result;
  });
}

export interface ResumeResult {
  /** "resume": `auth.since` and the server's replay (the service); "history": reconnect, then `GET /api/messages?after=` (no event log). */
  mode: "resume" | "history";
  clients: number;
  events: number;
  plan: { messages: number; edits: number; deletes: number };
  /** Committing the events one after another while the clients were away. */
  commitMs: number;
  /** The channel's head after the writes, and what it should be (resume mode only). */
  head?: number;
  expectedHead?: number;
  caughtUp: number;
  /** From the first reconnect to the last client having every missed event; null if some never did. */
  allCaughtUpMs: number | null;
  /** Each client's, from its first reconnect attempt. */
  perClientMs: Latency;
  /** Each client's handshake alone (from its first attempt to the server's "connected"), whatever came after. */
  connectMs: Latency;
  missed: number;
  duplicates: number;
  outOfOrder: number;
  wrongEvent: number;
  unexpected: number;
  resyncs: number;
  failedConnects: number;
  /** Why reconnects failed for good, and how often. */
  failures: Record<string, number>;
  /** Attempts that failed and were retried (socket.io-client's backoff), and why. */
  retried: number;
  retries: Record<string, number>;
  /** The message sent after everyone caught up: every client live in the room again, once. */
  liveAfter: { missed: number; duplicates: number };
  /** The server's resident memory before the storm and its highest sample during it. */
  rssKiB: { before: number; peak: number };
}

/**
 * The events committed while the clients are away: messages, and for a server with the event log
 * an edit in every ten and a deletion in every ten (of messages of the same batch), so the replay
 * carries all three kinds. A server without the log is caught up from history: messages only.
 */
export function resumePlan(events: number, withChanges: boolean): PlanStep[] {
  return Array.from({ length: events }, (_, i) => (withChanges && i % 10 === 4 ? "edit" : withChanges && i % 10 === 9 ? "delete" : "message"));
}

/**
 * Reconnect storm: the server restarts under its connected clients, events are committed on the
 * new process, they all come back at once. CPU and peak memory of the (new) server over the storm
 * alone (between the generator's "away" and "caught-up" READY lines).
 */
export async function resume(name: TargetName, template: string, users: BenchUser[], sizes: Sizes) {
  const mode = name === "service" ? "resume" : "history";
  return against(name, template, "resume", async (target) => {
    let meter: ReturnType<typeof cpuMeter> | undefined;
    let cpu: Cpu | undefined;
    let sampler: ReturnType<typeof setInterval> | undefined;
    const rss = { before: 0, peak: 0 };
    const { result } = await runGenerator<Omit<ResumeResult, "rssKiB">>(
      "resume",
      {
        url: target.url,
        mode,
        receiverTokens: users.slice(0, sizes.resumeClients).map((u) => u.token),
        senderToken: users[sizes.resumeClients]!.token,
        channelId: GENERAL_CHANNEL_ID,
        plan: resumePlan(sizes.resumeEvents, mode === "resume"),
        // socket.io-client's default jitter (reconnectionDelay 1 s, randomizationFactor 0.5) spreads a storm over 1 s.
        reconnectWindowMs: sizes.resumeClients >= 1_000 ? 1_000 : 100,
        timeoutMs: sizes.resumeTimeoutMs,
      },
      async (ready) => {
        const { phase, generatorCpuMs } = ready as { phase: "restart" | "away" | "caught-up"; generatorCpuMs?: number };
        if (phase === "restart") return void (await target.restart());
        if (phase === "away") {
          rss.before = rss.peak = rssKiB(target.pid);
          sampler = setInterval(() => (rss.peak = Math.max(rss.peak, rssKiB(target.pid))), 10);
          meter = cpuMeter(target.pid);
        } else {
          clearInterval(sampler);
          rss.peak = Math.max(rss.peak, rssKiB(target.pid));
          cpu = meter!(generatorCpuMs ?? 0);
        }
      },
    );
    progress(`${name} resume (${mode}): ${result.caughtUp} of ${result.clients} caught up in ${result.allCaughtUpMs ?? "–"} ms, missed ${result.missed}, duplicates ${result.duplicates}, out of order ${result.outOfOrder}`);
    return { ...result, rssKiB: rss, cpu: cpu! } as Measured<ResumeResult>;
  });
}

export interface PasswordSet extends Argon2Parameters {
  /** The hash's PHC prefix, parameters included. */
  hash: string;
  hashMs: Latency;
  cpuPerHashMs: number;
  verifyMs: Latency;
  concurrency: number;
  hashesPerSecond: number;
  addedRssKiB: number;
}

/** argon2id at the service's parameters (src/lib/password.ts) and at Bun's default, in one process, one after the other. */
export async function password(sizes: Sizes): Promise<{ sets: PasswordSet[]; cpuMs: number }> {
  const sets: Argon2Parameters[] = [
    { label: "service (OWASP: m=19 MiB, t=2, p=1)", memoryCost: argon2Parameters.memoryCost, timeCost: argon2Parameters.timeCost },
    { label: "Bun's default (m=64 MiB, t=2, p=1)", memoryCost: bunDefaultArgon2.memoryCost, timeCost: bunDefaultArgon2.timeCost },
  ];
  // PASSWORD_HASH_CONCURRENCY as the service runs it by default.
  const concurrency = loadConfig({ NODE_ENV: "development" }).PASSWORD_HASH_CONCURRENCY;
  const { result, cpuMs } = await runGenerator<{ sets: PasswordSet[] }>("password", { sets, sequential: sizes.passwordSequential, concurrency, concurrentHashes: sizes.passwordConcurrent });
  return { ...result, cpuMs: Math.round(cpuMs) };
}
