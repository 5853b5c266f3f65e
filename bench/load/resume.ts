/**
 * Reconnect storm: C receivers in one channel, all connected; one marker message tells each the
 * newest seq (or message id) it has. Then the server restarts (SIGTERM, started again), which cuts
 * them all; a sender commits the events of `plan` one after another on the new process while they
 * are away (messages, and edits and deletions over REST), and all of them reconnect at once. Timed from the first reconnect until every receiver has every
 * missed event, each exactly once and in order; each receiver's own catch-up time too.
 *
 * Two ways to catch up, one per kind of server:
 * - "resume" (the service, docs/api.md §11): the handshake's `auth.since` names the last seq; the
 *   server replays the missed events over the socket, then live ones follow;
 * - "history" (the reference and the baseline, which have no event log): reconnect, then one
 *   `GET /api/messages?after=<last id>` per receiver, as their clients do; messages only (an edit
 *   or deletion of an older message is invisible to that read, which is what the log is for).
 *
 * After everyone has caught up, one more message checks that each receiver is live again (in the
 * room, exactly once). Two READY lines bracket the storm, so bench/run.ts measures the server's
 * CPU and memory over the storm alone: "away" (events committed, receivers gone) and "caught-up";
 * one before them, "restart", asks bench/scenarios.ts to restart the server.
 */
import { Histogram } from "../lib/histogram.ts";
import { connectMany, SioClient } from "../lib/sio-client.ts";
import { progress, readSettings, report } from "../lib/generator.ts";

export type PlanStep = "message" | "edit" | "delete";

interface Settings {
  url: string;
  mode: "resume" | "history";
  receiverTokens: string[];
  senderToken: string;
  channelId: number;
  /** Committed while the receivers are away, in this order. */
  plan: PlanStep[];
  /**
   * Each receiver's first reconnect is at a random moment within this window from the storm's
   * start, as socket.io-client's jittered reconnection delay spreads them (0.5–1.5 s after the
   * cut by default: a window of 1 s); a failed attempt is retried with its backoff (1 s, doubling
   * up to 5 s, each ±50%), as long as the timeout allows.
   */
  reconnectWindowMs: number;
  timeoutMs: number;
}

const settings = await readSettings<Settings>();
const { url, mode, channelId, plan } = settings;
if (mode === "history" && plan.some((step) => step !== "message")) throw new Error("history catch-up sees messages only");
if (mode === "history" && plan.length > 200) throw new Error("history catch-up reads one page of at most 200");
const stdin = console[Symbol.asyncIterator]();
const n = settings.receiverTokens.length;
const json = (frame: string) => JSON.parse(frame.slice(2)) as [string, Record<string, unknown>];
// Only these frames are parsed: a storm brings each client a presence event per user coming back
// (the service and the baseline announce every user online to everyone), about a million frames in all.
const isMessage = (frame: string) => frame.startsWith('42["message');
const isLogged = (frame: string) => isMessage(frame) || frame.startsWith('42["resync"');
const waitFor = async (done: () => boolean, ms: number) => {
  const until = performance.now() + ms;
  while (!done() && performance.now() < until) await Bun.sleep(5);
  return done();
};

// 1. Everyone connected; the marker gives each receiver the newest seq (resume) or id (history) it has.
let receivers = await connectMany(url, settings.receiverTokens, 100);
const sender = await SioClient.connect(url, settings.senderToken);
const last = new Array<number>(n).fill(-1);
let marked = 0;
const markText = `rs:mark:${process.pid}`;
receivers.forEach((client, r) => {
  client.onEvent = (frame) => {
    if (!isMessage(frame)) return;
    const [event, data] = json(frame);
    if (event !== "message" || data.content !== markText || last[r]! >= 0) return;
    last[r] = Number(mode === "resume" ? data.seq : data.id);
    marked++;
  };
});
const markAck = (await sender.emitWithAck("message", { channelId, content: markText })) as { ok: boolean };
if (!markAck.ok || !(await waitFor(() => marked === n, 10_000))) throw new Error(`marker: ${marked} of ${n} receivers got it`);
progress(`resume: ${n} receivers connected, at ${mode === "resume" ? "seq" : "id"} ${last[0]}`);

// 2. Away: the server restarted under them (SIGTERM, as a deploy does, then the same server on the
// same port and database: bench/scenarios.ts), every receiver cut; then the plan committed one event
// at a time on the new process, before any receiver comes back.
let cut = 0;
for (const client of [...receivers, sender]) {
  client.onEvent = () => {};
  client.onClose = () => void cut++;
}
report("READY", { phase: "restart" });
await stdin.next();
if (!(await waitFor(() => cut === n + 1, 10_000))) throw new Error(`restart: ${cut} of ${n + 1} clients saw their socket close`);
progress(`resume: server restarted, all ${n} receivers cut`);
const newSender = await SioClient.connect(url, settings.senderToken);
const rest = (method: string, path: string, body?: unknown) =>
  fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${settings.senderToken}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
const eventName = { message: "message", edit: "message:updated", delete: "message:deleted" } as const;
const loggedEvents = new Set<string>(Object.values(eventName));
const expectedEvents: string[] = plan.map((step) => eventName[step]);
const expectedIds: number[] = [];
const live: number[] = [];
const commitStarted = performance.now();
for (const [i, step] of plan.entries()) {
  if (step === "message") {
    const ack = (await newSender.emitWithAck("message", { channelId, content: `rs:${i}` })) as { ok: boolean; message?: { id: number } };
    if (!ack.ok) throw new Error(`send ${i} refused: ${JSON.stringify(ack)}`);
    expectedIds.push(ack.message!.id);
    live.push(ack.message!.id);
  } else {
    // An edit changes the newest message of the batch; a deletion erases the oldest one still there.
    const id = step === "edit" ? live.at(-1) : live.shift();
    if (id === undefined) throw new Error(`plan step ${i}: ${step} with no message to ${step}`);
    const res = step === "edit" ? await rest("PATCH", `/api/messages/${id}`, { content: `rs:${i}:edited` }) : await rest("DELETE", `/api/messages/${id}`);
    if (!res.ok) throw new Error(`${step} of ${id}: ${res.status} ${await res.text()}`);
  }
}
const commitMs = Math.round(performance.now() - commitStarted);
// The service's head must have moved by exactly the plan (one event per step, none lost, none extra).
let head: number | undefined;
if (mode === "resume") {
  const body = (await (await rest("GET", "/api/channels")).json()) as { id: number; seq: number }[] | { channels: { id: number; seq: number }[] };
  head = (Array.isArray(body) ? body : body.channels).find((c) => c.id === channelId)?.seq;
}
progress(`resume: ${plan.length} events committed in ${commitMs} ms while away`);
report("READY", { phase: "away", events: plan.length, commitMs });
await stdin.next();

// 3. The storm: every receiver back at once, each counting what it gets.
const caughtUpAt = new Float64Array(n);
/** Per receiver, the missed events it has got (each counted once). */
const distinctOf = new Int32Array(n);
const perClient = new Histogram(1);
/** Each client's handshake alone: from its reconnect to the server's "connected". */
const connectTime = new Histogram(1);
const counts = { missed: 0, duplicates: 0, outOfOrder: 0, wrongEvent: 0, unexpected: 0, resyncs: 0, failedConnects: 0, retried: 0 };
/** Why reconnects failed for good ("refused: …", "connect timed out"…), and how often. */
const failures: Record<string, number> = {};
/** Why attempts failed that a retry then made up for. */
const retries: Record<string, number> = {};
const why = (error: unknown) => (error instanceof Error ? error.message : String(error));
const failed = (error: unknown) => {
  counts.failedConnects++;
  failures[why(error)] = (failures[why(error)] ?? 0) + 1;
};
// The same spread and backoff in every run (mulberry32, a fixed seed).
let seed = 0x5eed;
const random = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
  return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
};
/** `attempt` until it succeeds, with socket.io-client's backoff between tries, until the timeout. */
async function withRetries<T>(attempt: () => Promise<T>): Promise<T> {
  for (let k = 0; ; k++) {
    try {
      return await attempt();
    } catch (error) {
      const wait = Math.min(5_000, 1_000 * 2 ** k) * (0.5 + random());
      if (performance.now() + wait - t0 > settings.timeoutMs) throw error;
      counts.retried++;
      retries[why(error)] = (retries[why(error)] ?? 0) + 1;
      await Bun.sleep(wait);
    }
  }
}
let caughtUp = 0;
const cpuBefore = process.cpuUsage();
const t0 = performance.now();

function finish(r: number, startedAt: number): void {
  const now = performance.now();
  caughtUpAt[r] = now - t0;
  perClient.record(now - startedAt);
  caughtUp++;
}

/** One receiver, resuming: the missed events arrive over the socket, seq after seq. */
async function resumeOne(r: number): Promise<SioClient | undefined> {
  const base = last[r]!;
  const got = new Uint8Array(plan.length);
  let previous = base;
  const startedAt = performance.now();
  const onEvent = (frame: string) => {
    if (!isLogged(frame)) return;
    const [event, data] = json(frame);
    if (event === "resync") return void counts.resyncs++;
    if (!loggedEvents.has(event) || data.channelId !== channelId) return;
    const seq = Number(data.seq);
    const k = seq - base - 1;
    // At or before `since`: it had that one already.
    if (k < 0) return void counts.duplicates++;
    if (k >= plan.length) return void counts.unexpected++;
    if (got[k]!++ > 0) return void counts.duplicates++;
    if (seq !== previous + 1) counts.outOfOrder++;
    previous = seq;
    if (event !== expectedEvents[k]) counts.wrongEvent++;
    distinctOf[r]! += 1;
    if (distinctOf[r] === plan.length) finish(r, startedAt);
  };
  try {
    const client = await withRetries(() => SioClient.connect(url, settings.receiverTokens[r]!, { auth: { since: { [channelId]: base } }, onEvent, timeoutMs: 20_000 }));
    connectTime.record(performance.now() - startedAt);
    return client;
  } catch (error) {
    failed(error);
    return undefined;
  }
}

/** One receiver, with history: reconnect, then read everything after the last id it had. */
async function historyOne(r: number): Promise<SioClient | undefined> {
  const startedAt = performance.now();
  let client: SioClient;
  try {
    client = await withRetries(() => SioClient.connect(url, settings.receiverTokens[r]!, { timeoutMs: 20_000 }));
    connectTime.record(performance.now() - startedAt);
  } catch (error) {
    failed(error);
    return undefined;
  }
  const index = new Map(expectedIds.map((id, k) => [id, k]));
  const got = new Uint8Array(expectedIds.length);
  let previous = -1;
  let page: { id: number; channelId: number }[] = [];
  try {
    page = await withRetries(async () => {
      const res = await fetch(`${url}/api/messages?after=${last[r]}&limit=200`, { headers: { authorization: `Bearer ${settings.receiverTokens[r]}` } });
      if (!res.ok) throw new Error(`history: ${res.status}`);
      return (await res.json()) as { id: number; channelId: number }[];
    });
  } catch (error) {
    failed(error);
  }
  for (const message of page) {
    const k = index.get(message.id);
    if (k === undefined) {
      counts.unexpected++;
      continue;
    }
    if (got[k]!++ > 0) {
      counts.duplicates++;
      continue;
    }
    if (k !== previous + 1) counts.outOfOrder++;
    previous = k;
    distinctOf[r]! += 1;
  }
  if (distinctOf[r] === expectedIds.length) finish(r, startedAt);
  return client;
}

const back: (SioClient | undefined)[] = new Array(n);
const firstAttemptAt = Array.from({ length: n }, () => random() * settings.reconnectWindowMs);
await Promise.all(
  firstAttemptAt.map(async (delay, r) => {
    await Bun.sleep(delay);
    back[r] = await (mode === "resume" ? resumeOne(r) : historyOne(r));
  }),
);
if (mode === "resume") await waitFor(() => caughtUp === n, Math.max(0, settings.timeoutMs - (performance.now() - t0)));
// Whatever a receiver did not get, a failed reconnect included.
for (const got of distinctOf) counts.missed += plan.length - got;
const stormMs = performance.now() - t0;
const cpu = process.cpuUsage(cpuBefore);
const allCaughtUpMs = caughtUp === n ? Math.round(Math.max(...caughtUpAt) * 100) / 100 : null;
progress(`resume: ${caughtUp} of ${n} caught up${allCaughtUpMs === null ? "" : ` in ${allCaughtUpMs} ms`}, missed ${counts.missed}, duplicates ${counts.duplicates}, out of order ${counts.outOfOrder}`);
report("READY", { phase: "caught-up", generatorCpuMs: Math.round((cpu.user + cpu.system) / 1000), stormMs: Math.round(stormMs) });
await stdin.next();

// 4. Live again: one more message reaches every receiver exactly once, through the room.
receivers = back.filter((c): c is SioClient => c !== undefined);
const liveText = `rs:live:${process.pid}`;
const liveGot = new Uint8Array(receivers.length);
let liveDuplicates = 0;
receivers.forEach((client, r) => {
  client.onEvent = (frame) => {
    if (!isMessage(frame) || !frame.includes(liveText)) return;
    if (liveGot[r]!++ > 0) liveDuplicates++;
  };
});
await newSender.emitWithAck("message", { channelId, content: liveText });
await waitFor(() => liveGot.every((x) => x > 0), 5_000);
const liveMissed = n - liveGot.filter((x) => x > 0).length;
for (const client of [...receivers, newSender]) client.close();

report("RESULT", {
  mode,
  clients: n,
  events: plan.length,
  plan: { messages: plan.filter((s) => s === "message").length, edits: plan.filter((s) => s === "edit").length, deletes: plan.filter((s) => s === "delete").length },
  commitMs,
  expectedHead: mode === "resume" ? last[0]! + plan.length : undefined,
  head,
  caughtUp,
  allCaughtUpMs,
  perClientMs: perClient.summary(),
  connectMs: connectTime.summary(),
  ...counts,
  failures,
  retries,
  liveAfter: { missed: liveMissed, duplicates: liveDuplicates },
});
process.exit(0);
