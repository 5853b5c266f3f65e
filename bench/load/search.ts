/**
 * Search under load, over a table seeded with many messages (bench/lib/search-data.ts):
 *
 * 1. bystander baseline: one user sends a message over its socket every `sendEveryMs`
 *    (open loop, latency from when each was due) while nothing else runs;
 * 2. a rare word, then a common word: sequential searches, one at a time, each by the next
 *    searcher (so no per-user limit is reached), latency and status of each;
 * 3. the attack: `searchers` users each searching the common word back to back for
 *    `attackMs`, while the bystander keeps sending; search latency and statuses, and the
 *    bystander's send latency during it, to compare with its baseline.
 *
 * Each search request is abandoned after `requestTimeoutMs` (counted as "timeout").
 */
import { Histogram } from "../lib/histogram.ts";
import { connectMany } from "../lib/sio-client.ts";
import { progress, readSettings, report } from "../lib/generator.ts";

interface Settings {
  url: string;
  searcherTokens: string[];
  bystanderToken: string;
  bystanderChannelId: number;
  commonQuery: string;
  rareQuery: string;
  sequentialSamples: number;
  /** Sequential samples of one query stop once this much time has gone by. */
  sequentialBudgetMs: number;
  attackMs: number;
  baselineMs: number;
  sendEveryMs: number;
  requestTimeoutMs: number;
}

export type Statuses = Record<string, number>;
type Summary = ReturnType<Histogram["summary"]>;

const settings = await readSettings<Settings>();
const [bystander] = await connectMany(settings.url, [settings.bystanderToken], 1);

async function searchOnce(token: string, q: string): Promise<{ ms: number; status: string; hits: number }> {
  const started = performance.now();
  try {
    const res = await fetch(`${settings.url}/api/messages/search?q=${encodeURIComponent(q)}`, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(settings.requestTimeoutMs),
    });
    const body = (await res.json()) as unknown;
    const status = res.status === 200 ? "200" : `${res.status} ${(body as { error?: { code?: string } }).error?.code ?? ""}`.trim();
    return { ms: performance.now() - started, status, hits: Array.isArray(body) ? body.length : 0 };
  } catch {
    return { ms: performance.now() - started, status: "timeout", hits: 0 };
  }
}

const count = (statuses: Statuses, status: string) => (statuses[status] = (statuses[status] ?? 0) + 1);

/** One search at a time, round-robin over the searchers. */
async function sequential(q: string): Promise<{ latencyMs: Summary; statuses: Statuses; hits: number }> {
  const latency = new Histogram();
  const statuses: Statuses = {};
  let hits = 0;
  const until = performance.now() + settings.sequentialBudgetMs;
  for (let i = 0; i < settings.sequentialSamples && (i === 0 || performance.now() < until); i++) {
    const result = await searchOnce(settings.searcherTokens[i % settings.searcherTokens.length]!, q);
    latency.record(result.ms);
    count(statuses, result.status);
    hits = Math.max(hits, result.hits);
  }
  return { latencyMs: latency.summary(), statuses, hits };
}

/** The bystander sends every `sendEveryMs` until `stop` resolves; latency from when each send was due. */
async function bystanderSends(stop: Promise<void>): Promise<{ latencyMs: Summary; failed: number }> {
  const latency = new Histogram();
  let failed = 0;
  let stopped = false;
  void stop.then(() => (stopped = true));
  const pending: Promise<void>[] = [];
  const started = performance.now();
  for (let i = 0; !stopped; i++) {
    const dueAt = started + i * settings.sendEveryMs;
    const wait = dueAt - performance.now();
    if (wait > 0) await Promise.race([Bun.sleep(wait), stop]);
    if (stopped) break;
    pending.push(
      bystander!.emitWithAck("message", { channelId: settings.bystanderChannelId, content: `bystander ${i}` }).then((ack) => {
        latency.record(performance.now() - dueAt);
        if (!(ack as { ok?: boolean }).ok) failed++;
      }),
    );
  }
  await Promise.all(pending);
  return { latencyMs: latency.summary(), failed };
}

const baseline = await bystanderSends(Bun.sleep(settings.baselineMs));
progress(`bystander baseline: p50 ${baseline.latencyMs.p50} ms, p99 ${baseline.latencyMs.p99} ms`);
const rare = await sequential(settings.rareQuery);
progress(`rare word: p50 ${rare.latencyMs.p50} ms, ${JSON.stringify(rare.statuses)}`);
const common = await sequential(settings.commonQuery);
progress(`common word: p50 ${common.latencyMs.p50} ms, ${JSON.stringify(common.statuses)}`);

const attackLatency = new Histogram();
const attackStatuses: Statuses = {};
const attackEnd = performance.now() + settings.attackMs;
const attack = Promise.all(
  settings.searcherTokens.map(async (token) => {
    while (performance.now() < attackEnd) {
      const result = await searchOnce(token, settings.commonQuery);
      attackLatency.record(result.ms);
      count(attackStatuses, result.status);
    }
  }),
).then(() => undefined);
const duringAttack = await bystanderSends(attack);
progress(`during ${settings.searcherTokens.length} parallel searchers: bystander p99 ${duringAttack.latencyMs.p99} ms, searches ${JSON.stringify(attackStatuses)}`);

report("RESULT", {
  rare,
  common,
  attack: { searchers: settings.searcherTokens.length, latencyMs: attackLatency.summary(), statuses: attackStatuses },
  bystander: { baseline, duringAttack },
});
bystander!.close();
process.exit(0);
