/**
 * Read path: `concurrency` keep-alive workers request `path` back to back for `durationMs`
 * (after a short warm-up); requests/s and latency. Anything but a 200 counts as an error.
 */
import { Histogram } from "../lib/histogram.ts";
import { perSecond, readSettings, report } from "../lib/generator.ts";

interface Settings {
  url: string;
  path: string;
  token?: string;
  concurrency: number;
  durationMs: number;
  warmupMs: number;
}

const settings = await readSettings<Settings>();
const target = settings.url + settings.path;
const headers = settings.token ? { authorization: `Bearer ${settings.token}` } : undefined;
const latency = new Histogram();
let ok = 0;
let errors = 0;

async function run(until: number, measure: boolean): Promise<void> {
  const worker = async () => {
    while (performance.now() < until) {
      const started = performance.now();
      const response = await fetch(target, { headers });
      await response.arrayBuffer();
      if (!measure) continue;
      latency.record(performance.now() - started);
      if (response.status === 200) ok++;
      else errors++;
    }
  };
  await Promise.all(Array.from({ length: settings.concurrency }, worker));
}

await run(performance.now() + settings.warmupMs, false);
const cpuBefore = process.cpuUsage();
const started = performance.now();
await run(started + settings.durationMs, true);
const elapsed = performance.now() - started;
const cpu = process.cpuUsage(cpuBefore);

report("RESULT", {
  concurrency: settings.concurrency,
  requests: ok + errors,
  errors,
  requestsPerSecond: perSecond(ok, elapsed),
  latencyMs: latency.summary(),
  generatorCpuMs: Math.round((cpu.user + cpu.system) / 1000),
});
process.exit(0);
