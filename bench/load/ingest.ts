/**
 * Ingest: S senders, each on its own socket and in its own channel (so every message is
 * delivered once, to its sender, and the figure is about writing, not fan-out).
 *
 * Phase "max": closed loop, each sender emits its next message as soon as the last is acked.
 * Phase "paced" (when `pacedRate` is set): open loop at a fixed total rate; latency counts
 * from the moment each message was due, so a stalled server cannot hide its queue.
 * Afterwards every acked message is looked up in the database: it must be there exactly once.
 */
import { SQL } from "bun";
import { Histogram } from "../lib/histogram.ts";
import { connectMany, type SioClient } from "../lib/sio-client.ts";
import { perSecond, progress, readSettings, report } from "../lib/generator.ts";

interface Settings {
  url: string;
  databaseUrl: string;
  tokens: string[];
  channelIds: number[];
  durationMs: number;
  /** Total messages/s for the paced phase; 0 = run the closed loop. */
  pacedRate: number;
  tag: string;
}

type Ack = { ok: boolean; message?: { id: number } };

const settings = await readSettings<Settings>();
const clients = await connectMany(settings.url, settings.tokens, 50);
const latency = new Histogram();
const acked: string[] = [];
let refused = 0;
let sequence = 0;

async function send(client: SioClient, channelId: number, dueAt: number): Promise<void> {
  const content = `${settings.tag}:${sequence++}`;
  const ack = (await client.emitWithAck("message", { channelId, content })) as Ack;
  latency.record(performance.now() - dueAt);
  if (ack.ok) acked.push(content);
  else refused++;
}

const cpuBefore = process.cpuUsage();
const started = performance.now();
const deadline = started + settings.durationMs;
if (settings.pacedRate > 0) {
  const pending: Promise<void>[] = [];
  const interval = 1000 / settings.pacedRate;
  let sent = 0;
  while (performance.now() < deadline) {
    // Everything due by now goes out, round-robin over the senders.
    const due = Math.floor((performance.now() - started) / interval);
    for (; sent < due; sent++) {
      const i = sent % clients.length;
      pending.push(send(clients[i]!, settings.channelIds[i]!, started + sent * interval));
    }
    await Bun.sleep(1);
  }
  await Promise.all(pending);
} else {
  await Promise.all(
    clients.map(async (client, i) => {
      while (performance.now() < deadline) await send(client, settings.channelIds[i]!, performance.now());
    }),
  );
}
const elapsed = performance.now() - started;
const cpu = process.cpuUsage(cpuBefore);
for (const client of clients) client.close();

// Exactly once: every acked text is stored once, no more, no less.
const sql = new SQL(settings.databaseUrl, { max: 1 });
const rows: { content: string; copies: number }[] = await sql`
  SELECT content, count(*)::int AS copies FROM messages WHERE content LIKE ${settings.tag + ":%"} GROUP BY content`;
await sql.close();
const copies = new Map(rows.map((r) => [r.content, r.copies]));
let missing = 0;
let duplicated = 0;
for (const content of acked) {
  const n = copies.get(content) ?? 0;
  if (n === 0) missing++;
  if (n > 1) duplicated++;
}
progress(`ingest: ${acked.length} acked in ${Math.round(elapsed)} ms, ${missing} missing, ${duplicated} duplicated`);

report("RESULT", {
  senders: clients.length,
  acked: acked.length,
  refused,
  messagesPerSecond: perSecond(acked.length, elapsed),
  ackMs: latency.summary(),
  missing,
  duplicated,
  generatorCpuMs: Math.round((cpu.user + cpu.system) / 1000),
  elapsedMs: Math.round(elapsed),
});
process.exit(0);
