/**
 * Password hashing: argon2id through Bun.password at each parameter set asked for, in this process
 * alone (no server: the figure is the hash itself). Per set: one hash at a time (wall and CPU ms per
 * hash, and per verification), then `concurrency` at once (hashes/s, and the resident memory they
 * add over the idle process, sampled every 2 ms: each run holds its `memoryCost` while it works).
 */
import { Histogram } from "../lib/histogram.ts";
import { perSecond, progress, readSettings, report } from "../lib/generator.ts";

export interface Argon2Parameters {
  label: string;
  /** KiB, as Bun.password takes it. */
  memoryCost: number;
  timeCost: number;
}

interface Settings {
  sets: Argon2Parameters[];
  sequential: number;
  concurrency: number;
  concurrentHashes: number;
}

const settings = await readSettings<Settings>();
const cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
};
const rssKiB = () => Math.round(process.memoryUsage.rss() / 1024);

const results = [];
for (const set of settings.sets) {
  const options = { algorithm: "argon2id" as const, memoryCost: set.memoryCost, timeCost: set.timeCost };
  await Bun.password.hash("warm-up", options);
  Bun.gc(true);

  const hashMs = new Histogram(0.01);
  const cpuBefore = cpuMs();
  let hash = "";
  for (let i = 0; i < settings.sequential; i++) {
    const started = performance.now();
    hash = await Bun.password.hash(`password-${i}`, options);
    hashMs.record(performance.now() - started);
  }
  const cpuPerHashMs = (cpuMs() - cpuBefore) / settings.sequential;
  const verifyMs = new Histogram(0.01);
  for (let i = 0; i < settings.sequential; i++) {
    const started = performance.now();
    await Bun.password.verify(`password-${settings.sequential - 1}`, hash);
    verifyMs.record(performance.now() - started);
  }

  Bun.gc(true);
  const idleRss = rssKiB();
  let peakRss = idleRss;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssKiB())), 2);
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: settings.concurrency }, async () => {
      while (next < settings.concurrentHashes) {
        next++;
        await Bun.password.hash(`password-${next}`, options);
      }
    }),
  );
  const elapsed = performance.now() - started;
  clearInterval(sampler);
  peakRss = Math.max(peakRss, rssKiB());
  const result = {
    ...set,
    hash: hash.split("$").slice(0, 4).join("$"),
    hashMs: hashMs.summary(),
    cpuPerHashMs: Math.round(cpuPerHashMs * 10) / 10,
    verifyMs: verifyMs.summary(),
    concurrency: settings.concurrency,
    hashesPerSecond: perSecond(settings.concurrentHashes, elapsed),
    addedRssKiB: peakRss - idleRss,
  };
  progress(`password ${set.label}: ${result.hashMs.p50} ms a hash, ${result.hashesPerSecond}/s at ${settings.concurrency} at once, +${Math.round(result.addedRssKiB / 1024)} MiB`);
  results.push(result);
}
report("RESULT", { sets: results });
process.exit(0);
