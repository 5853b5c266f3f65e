/**
 * `bun run bench`: the scenarios of bench/README.md against the service and the
 * reference (and, for the read path, a bare Bun.serve hello-world), each server in its own
 * process on a fresh copy of one seeded database, each load generator in another.
 * Prints the results and writes bench/RESULTS.md.
 *
 *   --smoke            seconds of tiny load (what `bun test` runs, so the suite cannot rot)
 *   --only=a,b         some of ingest, fanout, read, capacity, search
 *   --out=FILE         where the Markdown goes (default bench/RESULTS.md)
 *   --json=FILE        also the raw figures as JSON
 */
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { createTemplate, postgresVersion } from "./lib/database.ts";
import { toMarkdown, type Results } from "./lib/report.ts";
import { capacity, fanout, fullSizes, ingest, read, search, smokeSizes, usersNeeded } from "./scenarios.ts";
import { COMMON_WORD, createSearchTemplate, RARE_WORD } from "./lib/search-data.ts";
import { projectRoot } from "./lib/targets.ts";

const scenarios = ["ingest", "fanout", "read", "capacity", "search"] as const;
const { values: args } = parseArgs({
  options: {
    smoke: { type: "boolean", default: false },
    only: { type: "string", default: scenarios.join(",") },
    out: { type: "string", default: path.join(projectRoot, "bench/RESULTS.md") },
    json: { type: "string" },
  },
});
const only = new Set(args.only.split(","));
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

const template = await createTemplate(usersNeeded(sizes));
try {
  const { name, users } = template;
  if (only.has("ingest")) results.ingest = { service: await ingest("service", name, users, sizes), reference: await ingest("reference", name, users, sizes) };
  if (only.has("fanout")) results.fanout = { service: await fanout("service", name, users, sizes), reference: await fanout("reference", name, users, sizes) };
  if (only.has("read")) {
    results.read = { service: await read("service", name, users, sizes), reference: await read("reference", name, users, sizes), hello: await read("hello", name, users, sizes) };
  }
  if (only.has("capacity")) results.capacity = { service: await capacity("service", name, users, sizes), reference: await capacity("reference", name, users, sizes) };
  if (only.has("search")) {
    const seeded = await createSearchTemplate(name, sizes.searchMessages);
    try {
      const words = { common: COMMON_WORD, rare: RARE_WORD };
      results.search = { messages: sizes.searchMessages, service: await search("service", seeded.name, users, sizes, words), reference: await search("reference", seeded.name, users, sizes, words) };
    } finally {
      await seeded.drop();
    }
  }
} finally {
  await template.drop();
}

const markdown = toMarkdown(results);
await Bun.write(args.out, markdown);
if (args.json) await Bun.write(args.json, JSON.stringify(results, null, 2));
console.log(`\n${markdown}\nWritten to ${path.relative(process.cwd(), args.out)}`);
process.exit(0);
