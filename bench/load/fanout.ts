/**
 * Fan-out: C receivers and one sender, all in one channel. The sender emits at a stepped
 * rate; every receiver notes each message's delay (the send time travels in the content;
 * sender and receivers share this process's clock) and which messages it got, so a missed
 * or doubled delivery is counted, not guessed. Stepping stops once a step loses messages,
 * falls behind its rate, or its p99 passes `stopAboveP99Ms`.
 */
import { Histogram } from "../lib/histogram.ts";
import { connectMany, SioClient } from "../lib/sio-client.ts";
import { perSecond, progress, readSettings, report } from "../lib/generator.ts";

interface Settings {
  url: string;
  receiverTokens: string[];
  senderToken: string;
  channelId: number;
  /** Inbound messages/s, one step each. */
  steps: number[];
  stepMs: number;
  stopAboveP99Ms: number;
}

const settings = await readSettings<Settings>();
const receivers = await connectMany(settings.url, settings.receiverTokens, 100);
const sender = await SioClient.connect(settings.url, settings.senderToken);
progress(`fan-out: ${receivers.length} receivers connected`);

const maxPerStep = Math.max(...settings.steps.map((rate) => Math.ceil((rate * settings.stepMs) / 1000))) + 1;
// Per receiver, one byte per message of the step: 0 not yet received, 1 received, more = duplicates.
const seen = receivers.map(() => new Uint8Array(maxPerStep));
let step = -1;
let latency = new Histogram();
let delivered = 0;
let duplicates = 0;
let lastDeliveryAt = 0;
const marker = `"content":"fo:`;

receivers.forEach((client, r) => {
  client.onEvent = (frame) => {
    // Only what is needed, without JSON.parse: "fo:<step>:<seq>:<sentAt>".
    const at = frame.indexOf(marker);
    if (at < 0) return;
    const [stepText, seqText, sentText] = frame.slice(at + marker.length, frame.indexOf('"', at + marker.length)).split(":");
    if (Number(stepText) !== step) return;
    const now = performance.now();
    latency.record(now - Number(sentText));
    const seq = Number(seqText);
    if (seen[r]![seq]!++ > 0) duplicates++;
    delivered++;
    lastDeliveryAt = now;
  };
});

const cpuBefore = process.cpuUsage();
const results = [];
for (const rate of settings.steps) {
  step++;
  latency = new Histogram();
  delivered = 0;
  duplicates = 0;
  for (const s of seen) s.fill(0);
  const acked: number[] = [];
  const pending: Promise<void>[] = [];
  const interval = 1000 / rate;
  const started = performance.now();
  let sent = 0;
  while (performance.now() - started < settings.stepMs) {
    const due = Math.floor((performance.now() - started) / interval);
    for (; sent < due && sent < maxPerStep; sent++) {
      const seq = sent;
      const ack = sender.emitWithAck("message", { channelId: settings.channelId, content: `fo:${step}:${seq}:${performance.now()}` });
      pending.push(ack.then((a) => void ((a as { ok: boolean }).ok && acked.push(seq))));
    }
    await Bun.sleep(1);
  }
  const sendMs = performance.now() - started;
  await Promise.all(pending);
  // Let the last deliveries arrive (bounded), then count what each receiver missed.
  const expected = acked.length * receivers.length;
  const drainUntil = performance.now() + 5_000;
  while (delivered - duplicates < expected && performance.now() < drainUntil) await Bun.sleep(10);
  let missed = 0;
  for (const s of seen) for (const seq of acked) if (s[seq] === 0) missed++;
  const spanMs = Math.max(sendMs, lastDeliveryAt - started);
  const row = {
    targetRate: rate,
    sentPerSecond: perSecond(sent, sendMs),
    acked: acked.length,
    deliveries: delivered,
    deliveriesPerSecond: perSecond(delivered, spanMs),
    latencyMs: latency.summary(),
    missed,
    duplicates,
  };
  results.push(row);
  progress(`fan-out ${rate}/s: ${row.deliveriesPerSecond} deliveries/s, p99 ${row.latencyMs.p99} ms, missed ${missed}`);
  const fellBehind = row.sentPerSecond < rate * 0.9 || acked.length < sent;
  if (missed > 0 || fellBehind || row.latencyMs.p99 > settings.stopAboveP99Ms) break;
}
const cpu = process.cpuUsage(cpuBefore);
for (const client of [...receivers, sender]) client.close();

report("RESULT", { clients: receivers.length, steps: results, generatorCpuMs: Math.round((cpu.user + cpu.system) / 1000) });
process.exit(0);
