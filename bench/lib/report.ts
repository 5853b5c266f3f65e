import type { CapacityResult, FanoutStep, IngestResult, Measured, ReadResult, SearchResult } from "../scenarios.ts";

export interface Results {
  mode: "full" | "smoke";
  date: string;
  machine: Record<string, string>;
  ingest?: Record<"service" | "reference", { max: Measured<IngestResult>; paced: Measured<IngestResult> & { rate: number } }>;
  fanout?: Record<"service" | "reference", Measured<{ clients: number; steps: FanoutStep[] }>>;
  read?: { service: Record<string, Measured<ReadResult>>; reference: Record<string, Measured<ReadResult>>; hello: Record<string, Measured<ReadResult>> };
  capacity?: Record<"service" | "reference", Measured<CapacityResult>>;
  search?: { messages: number } & Record<"service" | "reference", Measured<SearchResult>>;
}

const ratio = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 100) / 100 : 0);
const n = (value: number) => value.toLocaleString("en-US");
const table = (head: string[], rows: (string | number)[][]) =>
  [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
const cpu = (m: { cpu: { serverCpuPercent: number; generatorCpuPercent: number; databaseCpuPercent: number } }) =>
  `${m.cpu.serverCpuPercent}% / ${m.cpu.generatorCpuPercent}% / ${m.cpu.databaseCpuPercent}%`;

/** The best deliveries/s at a step that lost nothing and kept p99 under `p99Ms`; 0 if none did. */
export function bestFanout(steps: FanoutStep[], p99Ms: number): FanoutStep | undefined {
  return steps.filter((s) => s.missed === 0 && s.duplicates === 0 && s.latencyMs.p99 < p99Ms).sort((a, b) => b.deliveriesPerSecond - a.deliveriesPerSecond)[0];
}

export interface Target {
  name: string;
  goal: string;
  measured: string;
  met: boolean;
}

/** The issue's targets, each with the figure that meets or misses it. */
export function targets(r: Results): Target[] {
  const out: Target[] = [];
  if (r.ingest) {
    const x = ratio(r.ingest.service.max.messagesPerSecond, r.ingest.reference.max.messagesPerSecond);
    out.push({ name: "Ingest throughput", goal: "≥ 10× reference msgs/s", measured: `${x}× (${n(r.ingest.service.max.messagesPerSecond)} vs ${n(r.ingest.reference.max.messagesPerSecond)})`, met: x >= 10 });
    const p99 = r.ingest.service.paced.ackMs.p99;
    out.push({ name: "Ingest latency", goal: "p99 ack < 20 ms at half the max rate", measured: `${p99} ms at ${n(r.ingest.service.paced.rate)}/s`, met: p99 < 20 });
  }
  if (r.fanout) {
    const ours = bestFanout(r.fanout.service.steps, 50);
    const theirs = bestFanout(r.fanout.reference.steps, 50);
    const x = ratio(ours?.deliveriesPerSecond ?? 0, theirs?.deliveriesPerSecond ?? 0);
    out.push({
      name: `Fan-out, ${n(r.fanout.service.clients)} clients`,
      goal: "≥ 3× reference deliveries/s, p99 < 50 ms",
      measured: `${x}× (${n(ours?.deliveriesPerSecond ?? 0)} vs ${n(theirs?.deliveriesPerSecond ?? 0)}/s, p99 ${ours?.latencyMs.p99 ?? "–"} ms)`,
      met: x >= 3,
    });
  }
  if (r.read) {
    const hello = r.read.hello.hello!.requestsPerSecond;
    for (const [label, result] of Object.entries(r.read.service)) {
      const x = ratio(result.requestsPerSecond, hello);
      out.push({ name: `Read path, ${label}`, goal: "≥ 50% of hello-world req/s", measured: `${Math.round(x * 100)}% (${n(result.requestsPerSecond)} vs ${n(hello)})`, met: x >= 0.5 });
    }
  }
  if (r.capacity) {
    const kib = r.capacity.service.kibPerSocket;
    out.push({ name: "Capacity", goal: "< 20 KiB per idle socket", measured: `${kib} KiB (${n(r.capacity.service.sockets)} sockets)`, met: kib < 20 });
  }
  return out;
}

export function toMarkdown(r: Results): string {
  const parts: string[] = [
    "# Benchmark results",
    "",
    `Written by \`bun run bench\`${r.mode === "smoke" ? " --smoke (tiny load: the figures mean nothing)" : ""} on ${r.date}.`,
    "Every figure comes with the reference (`bench/reference/`: Node.js, socket.io's default engine, `pg`, one INSERT then a broadcast per message) measured in the same run on the same machine.",
    "CPU columns: server / load generator / PostgreSQL, as a share of one core over the generator's run (200% = both cores).",
    "",
    table(["Machine", ""], Object.entries(r.machine)),
    "",
    "## Targets",
    "",
    table(["Target", "Goal", "Measured", ""], targets(r).map((t) => [t.name, t.goal, t.measured, t.met ? "met" : "**missed**"])),
  ];
  if (r.ingest) {
    const rows = (["service", "reference"] as const).flatMap((name) => {
      const { max, paced } = r.ingest![name];
      return [
        [name, `closed loop, ${max.senders} senders`, n(max.messagesPerSecond), max.ackMs.p50, max.ackMs.p99, `${max.missing} / ${max.duplicated}`, cpu(max)],
        [name, `paced at ${n(paced.rate)}/s`, n(paced.messagesPerSecond), paced.ackMs.p50, paced.ackMs.p99, `${paced.missing} / ${paced.duplicated}`, cpu(paced)],
      ];
    });
    parts.push("", "## 1. Ingest", "", "Each sender in its own channel, emitting with ack; every acked message then looked up in the database.", "");
    parts.push(table(["Server", "Load", "Acked msgs/s", "Ack p50 ms", "Ack p99 ms", "Missing / duplicated", "CPU"], rows));
  }
  if (r.fanout) {
    parts.push("", `## 2. Fan-out (${n(r.fanout.service.clients)} websocket clients in one channel)`, "");
    for (const name of ["service", "reference"] as const) {
      const run = r.fanout[name];
      const held = run.steps.filter((s) => s.missed === 0 && s.latencyMs.p99 < 100).at(-1);
      parts.push(`**${name}** (CPU ${cpu(run)}); highest inbound rate held with p99 < 100 ms: ${held ? `${n(held.sentPerSecond)} msgs/s` : "none"}`, "");
      parts.push(
        table(
          ["Inbound msgs/s", "Deliveries/s", "p50 ms", "p95 ms", "p99 ms", "Missed", "Duplicates"],
          run.steps.map((s) => [n(s.sentPerSecond), n(s.deliveriesPerSecond), s.latencyMs.p50, s.latencyMs.p95, s.latencyMs.p99, s.missed, s.duplicates]),
        ),
        "",
      );
    }
  }
  if (r.read) {
    const hello = r.read.hello.hello!;
    const rows: (string | number)[][] = [["hello-world", "GET /", n(hello.requestsPerSecond), hello.latencyMs.p99, "100%", cpu(hello)]];
    for (const name of ["service", "reference"] as const) {
      for (const [label, result] of Object.entries(r.read[name])) {
        rows.push([name, label === "history" ? "GET /api/messages?limit=50" : "GET /api/users", n(result.requestsPerSecond), result.latencyMs.p99, `${Math.round(ratio(result.requestsPerSecond, hello.requestsPerSecond) * 100)}%`, cpu(result)]);
      }
    }
    parts.push("", `## 3. Read path (${r.read.service.history?.concurrency ?? ""} concurrent keep-alive requests)`.replace(" ( concurrent", " (concurrent"), "");
    parts.push(table(["Server", "Request", "Req/s", "p99 ms", "Of hello-world", "CPU"], rows));
  }
  if (r.capacity) {
    parts.push("", "## 4. Capacity (idle authenticated websocket clients)", "");
    parts.push(
      table(
        ["Server", "Sockets", "Connections/s", "RSS before", "RSS with sockets", "Per socket", "Dropped while idle"],
        (["service", "reference"] as const).map((name) => {
          const c = r.capacity![name];
          return [name, n(c.sockets), n(c.connectionsPerSecond), `${n(Math.round(c.baselineRssKiB / 1024))} MiB`, `${n(Math.round(c.loadedRssKiB / 1024))} MiB`, `${c.kibPerSocket} KiB`, c.droppedWhileIdle];
        }),
      ),
    );
  }
  if (r.search) {
    const statuses = (s: Record<string, number>) =>
      Object.entries(s)
        .map(([status, count]) => `${n(count)} × ${status}`)
        .join(", ");
    parts.push("", `## 5. Search (${n(r.search.messages)} messages)`, "");
    parts.push(
      "One search at a time for a rare and a common word; then " +
        `${r.search.service.attack.searchers} users searching the common word back to back while another user sends a message every 100 ms over its socket ` +
        "(latency from when each send was due). The reference ranks every match, as the service did before the bound on candidates.",
      "",
    );
    const rows = (["service", "reference"] as const).flatMap((name) => {
      const s = r.search![name];
      return [
        [name, "rare word, one at a time", s.rare.latencyMs.p50, s.rare.latencyMs.p99, statuses(s.rare.statuses), cpu(s)],
        [name, "common word, one at a time", s.common.latencyMs.p50, s.common.latencyMs.p99, statuses(s.common.statuses), ""],
        [name, `common word, ${s.attack.searchers} searchers at once`, s.attack.latencyMs.p50, s.attack.latencyMs.p99, statuses(s.attack.statuses), ""],
        [name, "bystander send, alone", s.bystander.baseline.latencyMs.p50, s.bystander.baseline.latencyMs.p99, `${s.bystander.baseline.failed} failed`, ""],
        [name, `bystander send, during the ${s.attack.searchers} searchers`, s.bystander.duringAttack.latencyMs.p50, s.bystander.duringAttack.latencyMs.p99, `${s.bystander.duringAttack.failed} failed`, ""],
      ];
    });
    parts.push(table(["Server", "Load", "p50 ms", "p99 ms", "Answers", "CPU"], rows));
  }
  parts.push("", "Reproduce with `npm install && npx bun run bench` (PostgreSQL on 127.0.0.1:5432, or BENCH_DATABASE_URL).", "");
  return parts.join("\n");
}
