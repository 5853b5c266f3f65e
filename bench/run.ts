/**
 * `bun run bench`: the scenarios of bench/README.md against the service and the
 * reference (and, for the read path, a bare Bun.serve hello-world), each server in its own
 * process on a fresh copy of one seeded database, each load generator in another.
 * Prints the results and writes bench/RESULTS.md.
 *
 *   --smoke            seconds of tiny load (what `bun test` runs, so the suite cannot rot)
 *   --only=a,b         some of ingest, fanout, read, capacity, search, resume, password
 *   --baseline         also the service at an earlier commit (bench/lib/baseline.ts: the merge-base
 *                      of HEAD and main, or BENCH_BASELINE_REF) in ingest, fan-out and resume
 *   --rounds=N         with --baseline: ingest and fan-out N times on the service and the baseline,
 *                      in alternating order, each table showing the median round (default 1)
 *   --out=FILE         where the Markdown goes (default bench/RESULTS.md)
 *   --json=FILE        also the raw figures as JSON
 */
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { createTemplate, postgresVersion } from "./lib/database.ts";
import { fanoutScore, ingestScore, toMarkdown, type Results } from "./lib/report.ts";
import { capacity, fanout, fullSizes, ingest, password, read, resume, search, smokeSizes, usersNeeded } from "./scenarios.ts";
import { prepareBaseline, type Baseline } from "./lib/baseline.ts";
import { COMMON_WORD, createSearchTemplate, RARE_WORD } from "./lib/search-data.ts";
import { projectRoot } from "./lib/targets.ts";

const scenarios = ["ingest", "fanout", "read", "capacity", "search", "resume", "password"] as const;
const { values: args } = parseArgs({
  options: {
    smoke: { type: "boolean", default: false },
    baseline: { type: "boolean", default: false },
    rounds: { type: "string", default: "1" },
    only: { type: "string", default: scenarios.join(",") },
    out: { type: "string", default: path.join(projectRoot, "bench/RESULTS.md") },
    json: { type: "string" },
  },
});
const only = new Set(args.only.split(","));
const rounds = Number(args.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds: a whole number of at least 1, not ${args.rounds}`);
const sizes = args.smoke ? smokeSizes : fullSizes;

async function versionOf(command: string[]): Promise<string> {
  const proc = Bun.spawn(command, { stdout: "pipe", stderr: "ignore" });
  return (await new Response(proc.stdout).text()).trim();
}
const packageVersion = async (name: string) => ((await Bun.file(path.join(projectRoot, "node_modules", name, "package.json")).json()) as { version: string }).version;

const results: Results = {
  mode: args.smoke ? "smoke" : "full",
  date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
  machine: {
    CPU: `${os.cpus()[0]?.model ?? "?"} × ${os.cpus().length}`,
    Memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    OS: `${os.type()} ${os.release()}`,
    Bun: Bun.version,
    "Node.js (reference)": await versionOf(["node", "--version"]),
    PostgreSQL: await postgresVersion(),
    "socket.io": await packageVersion("socket.io"),
    "@socket.io/bun-engine": await packageVersion("@socket.io/bun-engine"),
    pg: await packageVersion("pg"),
  },
};

const unknown = [...only].filter((s) => !(scenarios as readonly string[]).includes(s));
if (unknown.length > 0) throw new Error(`--only: unknown scenario ${unknown.join(", ")} (known: ${scenarios.join(", ")})`);

let baseline: Baseline | undefined;
if (args.baseline) {
  baseline = await prepareBaseline(projectRoot);
  results.baseline = { ref: baseline.ref, sha: baseline.sha, subject: baseline.subject };
  console.error(`  · baseline: ${baseline.sha.slice(0, 12)} (${baseline.ref}) "${baseline.subject}"`);
}

/** The service, the baseline if asked for, and the reference, one after another, each on its own copy. */
async function each<T>(run: (name: "service" | "baseline" | "reference") => Promise<T>): Promise<{ service: T; baseline?: T; reference: T }> {
  const service = await run("service");
  const before = baseline ? await run("baseline") : undefined;
  const reference = await run("reference");
  return before === undefined ? { service, reference } : { service, baseline: before, reference };
}

/**
 * Before and after on a machine whose other load drifts: the service and the baseline `rounds`
 * times, the order swapped every round (service first, then baseline first…), so neither is always
 * the one measured in the quieter minute. Each side keeps its median round by `score`; every
 * round's score is kept too. The reference runs once.
 */
async function paired<T>(run: (name: "service" | "baseline" | "reference") => Promise<T>, score: (x: T) => number) {
  if (!baseline || rounds === 1) return each(run);
  const runs: Record<"service" | "baseline", T[]> = { service: [], baseline: [] };
  for (let round = 0; round < rounds; round++) {
    for (const name of round % 2 === 0 ? (["service", "baseline"] as const) : (["baseline", "service"] as const)) runs[name].push(await run(name));
  }
  const median = (xs: T[]) => [...xs].sort((a, b) => score(a) - score(b))[Math.floor((xs.length - 1) / 2)]!;
  const reference = await run("reference");
  return { service: median(runs.service), baseline: median(runs.baseline), reference, rounds: { service: runs.service.map(score), baseline: runs.baseline.map(score) } };
}

const template = await createTemplate(usersNeeded(sizes));
try {
  const { name, users } = template;
  if (only.has("ingest")) results.ingest = await paired((target) => ingest(target, name, users, sizes), ingestScore);
  if (only.has("fanout")) results.fanout = await paired((target) => fanout(target, name, users, sizes), fanoutScore);
  if (only.has("read")) {
    results.read = { service: await read("service", name, users, sizes), reference: await read("reference", name, users, sizes), hello: await read("hello", name, users, sizes) };
  }
  if (only.has("capacity")) {
    results.capacity = { service: await capacity("service", name, users, sizes), reference: await capacity("reference", name, users, sizes), bare: await capacity("bare", name, users, sizes) };
  }
  if (only.has("search")) {
    const seeded = await createSearchTemplate(name, sizes.searchMessages);
    try {
      const words = { common: COMMON_WORD, rare: RARE_WORD };
      results.search = { messages: sizes.searchMessages, service: await search("service", seeded.name, users, sizes, words), reference: await search("reference", seeded.name, users, sizes, words) };
    } finally {
      await seeded.drop();
    }
  }
  if (only.has("resume")) results.resume = await each((target) => resume(target, name, users, sizes));
  if (only.has("password")) results.password = await password(sizes);
} finally {
  await template.drop();
  await baseline?.remove();
}

const markdown = toMarkdown(results);
await Bun.write(args.out, markdown);
if (args.json) await Bun.write(args.json, JSON.stringify(results, null, 2));
console.log(`\n${markdown}\nWritten to ${path.relative(process.cwd(), args.out)}`);
process.exit(0);
