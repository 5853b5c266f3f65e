import type { CapacityResult, FanoutStep, IngestResult, Measured, PasswordSet, ReadResult, ResumeResult, SearchResult } from "../scenarios.ts";

/**
 * The service and the reference; the baseline (the service at an earlier commit) when run with
 * --baseline; with --rounds, each round's score (ingestScore, fanoutScore) of the service and the
 * baseline, the rows being each one's median round.
 */
type Servers<T> = { service: T; reference: T; baseline?: T; rounds?: { service: number[]; baseline: number[] } };
type IngestRun = { max: Measured<IngestResult>; paced: Measured<IngestResult> & { rate: number } };
type FanoutRun = Measured<{ clients: number; steps: FanoutStep[] }>;

export interface Results {
  mode: "full" | "smoke";
  date: string;
  machine: Record<string, string>;
  /** What "baseline" was, when it ran. */
  baseline?: { ref: string; sha: string; subject: string };
  ingest?: Servers<IngestRun>;
  fanout?: Servers<FanoutRun>;
  resume?: Servers<Measured<ResumeResult>>;
  read?: { service: Record<string, Measured<ReadResult>>; reference: Record<string, Measured<ReadResult>>; hello: Record<string, Measured<ReadResult>> };
  /** "bare": Socket.IO on the Bun engine with nothing of the service's (bench/bare.ts), the stack's own floor. */
  capacity?: Record<"service" | "reference", Measured<CapacityResult>> & { bare?: Measured<CapacityResult> };
  search?: { messages: number } & Record<"service" | "reference", Measured<SearchResult>>;
  password?: { sets: PasswordSet[]; cpuMs: number };
}

const ratio = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 100) / 100 : 0);
const percent = (a: number, b: number) => (b > 0 ? `${Math.round((a / b) * 1000) / 10}%` : "–");
const n = (value: number) => value.toLocaleString("en-US");
const table = (head: string[], rows: (string | number)[][]) =>
  [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
const cpu = (m: { cpu: { serverCpuPercent: number; generatorCpuPercent: number; databaseCpuPercent: number } }) =>
  `${m.cpu.serverCpuPercent}% / ${m.cpu.generatorCpuPercent}% / ${m.cpu.databaseCpuPercent}%`;

/** CPU time per acked message, from a share of one core and the rate: server / PostgreSQL, in µs. */
const perMessage = (x: IngestResult & { cpu: { serverCpuPercent: number; databaseCpuPercent: number } }) =>
  x.messagesPerSecond > 0 ? `${n(Math.round((x.cpu.serverCpuPercent * 10_000) / x.messagesPerSecond))} / ${n(Math.round((x.cpu.databaseCpuPercent * 10_000) / x.messagesPerSecond))}` : "–";

/** What a before/after round is ranked by: ingest's closed-loop msgs/s. */
export const ingestScore = (x: IngestRun) => x.max.messagesPerSecond;
/** Fan-out's: the most deliveries/s at a step that lost nothing with p99 under 100 ms (on a busy machine, 50 ms may be met by no step). */
export const fanoutScore = (x: FanoutRun) => bestFanout(x.steps, 100)?.deliveriesPerSecond ?? 0;

/** The best deliveries/s at a step that lost nothing and kept p99 under `p99Ms`; 0 if none did. */
export function bestFanout(steps: FanoutStep[], p99Ms: number): FanoutStep | undefined {
  return steps.filter((s) => s.missed === 0 && s.duplicates === 0 && s.latencyMs.p99 < p99Ms).sort((a, b) => b.deliveriesPerSecond - a.deliveriesPerSecond)[0];
}

/** The servers a scenario ran, in table order. */
const present = <T>(runs: Servers<T>) => (["service", "baseline", "reference"] as const).filter((name) => runs[name] !== undefined);

/** Figures compared before and after: label, value, and whether more is better. */
type Figure<T> = [label: string, value: (run: T) => number | undefined, higherIsBetter: boolean];
const ingestFigures: Figure<IngestRun>[] = [
  ["Acked msgs/s, closed loop", (x) => x.max.messagesPerSecond, true],
  ["Ack p99 ms, closed loop", (x) => x.max.ackMs.p99, false],
  ["Ack p99 ms, paced at half the max", (x) => x.paced.ackMs.p99, false],
  ["Server CPU, closed loop (% of a core)", (x) => x.max.cpu.serverCpuPercent, false],
];
const held = (x: FanoutRun) => x.steps.filter((s) => s.missed === 0 && s.latencyMs.p99 < 100);
/** The latency at each rate both runs held (p99 < 100 ms, nothing lost): the same load on both. */
const fanoutFigures = (a: FanoutRun, b: FanoutRun): Figure<FanoutRun>[] => [
  ["Best deliveries/s with p99 < 50 ms", (x) => bestFanout(x.steps, 50)?.deliveriesPerSecond ?? 0, true],
  ["Best deliveries/s with p99 < 100 ms", fanoutScore, true],
  ["Highest inbound msgs/s held, p99 < 100 ms", (x) => held(x).at(-1)?.sentPerSecond ?? 0, true],
  ...held(a)
    .map((s) => s.targetRate)
    .filter((rate) => held(b).some((s) => s.targetRate === rate))
    .map((rate): Figure<FanoutRun> => [`p99 ms at ${n(rate)} msgs/s`, (x) => x.steps.find((s) => s.targetRate === rate)?.latencyMs.p99, false]),
];

/** Service next to baseline, with the ratio (a time or CPU figure: lower is better, so read the ratio that way). */
function beforeAfter<T>(service: T, baseline: T, figures: Figure<T>[], rounds?: { service: number[]; baseline: number[] }, unit = ""): string {
  const each = rounds
    ? `\n\n${rounds.service.length} rounds, in alternating order; the rows above are each one's median round. ` +
      `Service: ${rounds.service.map(n).join(", ")}${unit}; baseline: ${rounds.baseline.map(n).join(", ")}${unit}; ` +
      `round by round: ${rounds.service.map((x, i) => percent(x, rounds.baseline[i]!)).join(", ")}.`
    : "";
  return table(
    ["Before and after", "service", "baseline", "service / baseline"],
    figures.map(([label, value, higher]) => {
      const [ours, before] = [value(service) ?? 0, value(baseline) ?? 0];
      return [label, n(ours), n(before), `${ratio(ours, before)}×${higher ? "" : " (lower is better)"}`];
    }),
  ) + each;
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
  if (r.ingest?.baseline) {
    const [ours, before] = [ingestScore(r.ingest.service), ingestScore(r.ingest.baseline)];
    const of = r.ingest.rounds ? `, medians of ${r.ingest.rounds.service.length} rounds` : "";
    out.push({ name: "Ingest, before and after", goal: "≥ 90% of baseline msgs/s", measured: `${percent(ours, before)} (${n(ours)} vs ${n(before)}${of})`, met: before > 0 && ours >= before * 0.9 });
  }
  if (r.fanout?.baseline) {
    const [ours, before] = [fanoutScore(r.fanout.service), fanoutScore(r.fanout.baseline)];
    const of = r.fanout.rounds ? `, medians of ${r.fanout.rounds.service.length} rounds` : "";
    out.push({ name: "Fan-out, before and after", goal: "≥ 90% of baseline deliveries/s (p99 < 100 ms)", measured: `${percent(ours, before)} (${n(ours)} vs ${n(before)}/s${of})`, met: before > 0 && ours >= before * 0.9 });
  }
  if (r.resume) {
    const s = r.resume.service;
    const faults = s.missed + s.duplicates + s.outOfOrder + s.wrongEvent + s.unexpected + s.resyncs + s.failedConnects + s.liveAfter.duplicates;
    const theirs = r.resume.reference.allCaughtUpMs;
    out.push({
      name: `Reconnect storm after a restart, ${n(s.clients)} clients`,
      goal: "all caught up within 10 s; every missed event once, in order",
      measured:
        `${n(s.caughtUp)} of ${n(s.clients)} caught up${s.allCaughtUpMs === null ? "" : ` in ${n(s.allCaughtUpMs)} ms`} (reference ${theirs === null ? "not all" : `${n(theirs)} ms`}); ` +
        `${n(s.missed)} missed, ${s.duplicates + s.outOfOrder} doubled or out of order, ${s.resyncs} resyncs, ${s.failedConnects} refused`,
      met: faults === 0 && s.caughtUp === s.clients && s.allCaughtUpMs !== null && s.allCaughtUpMs <= 10_000,
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
    const [ours, theirs] = [r.capacity.service, r.capacity.reference];
    const rate = ratio(ours.connectionsPerSecond, theirs.connectionsPerSecond);
    out.push({ name: "Authenticated handshakes", goal: "≥ 2× reference connections/s", measured: `${rate}× (${n(ours.connectionsPerSecond)} vs ${n(theirs.connectionsPerSecond)}/s)`, met: rate >= 2 });
    const memory = ratio(ours.kibPerSocket, theirs.kibPerSocket);
    const floor = r.capacity.bare ? `; the stack alone (bench/bare.ts): ${r.capacity.bare.kibPerSocket} KiB` : "";
    out.push({ name: "Memory per idle socket", goal: "≤ 0.5× reference", measured: `${memory}× (${ours.kibPerSocket} vs ${theirs.kibPerSocket} KiB, ${n(ours.sockets)} sockets${floor})`, met: memory <= 0.5 });
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
    ...(r.baseline
      ? [
          `The baseline is this service at \`${r.baseline.sha.slice(0, 12)}\` (${r.baseline.ref}: "${r.baseline.subject}"), started the same way on a copy of the same database, in the same run: the before of each before/after.`,
        ]
      : []),
    "",
    table(["Machine", ""], Object.entries(r.machine)),
    "",
    "## Targets",
    "",
    table(["Target", "Goal", "Measured", ""], targets(r).map((t) => [t.name, t.goal, t.measured, t.met ? "met" : "**missed**"])),
  ];
  if (r.ingest) {
    const rows = present(r.ingest).flatMap((name) => {
      const { max, paced } = r.ingest![name]!;
      return [
        [name, `closed loop, ${max.senders} senders`, n(max.messagesPerSecond), max.ackMs.p50, max.ackMs.p99, `${max.missing} / ${max.duplicated}`, cpu(max), perMessage(max)],
        [name, `paced at ${n(paced.rate)}/s`, n(paced.messagesPerSecond), paced.ackMs.p50, paced.ackMs.p99, `${paced.missing} / ${paced.duplicated}`, cpu(paced), perMessage(paced)],
      ];
    });
    parts.push("", "## 1. Ingest", "", "Each sender in its own channel, emitting with ack; every acked message then looked up in the database.", "");
    parts.push(table(["Server", "Load", "Acked msgs/s", "Ack p50 ms", "Ack p99 ms", "Missing / duplicated", "CPU", "CPU µs per message: server / PostgreSQL"], rows));
    if (r.ingest.baseline) parts.push("", beforeAfter(r.ingest.service, r.ingest.baseline, ingestFigures, r.ingest.rounds, " msgs/s"));
  }
  if (r.fanout) {
    parts.push("", `## 2. Fan-out (${n(r.fanout.service.clients)} websocket clients in one channel)`, "");
    for (const name of present(r.fanout)) {
      const run = r.fanout[name]!;
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
    if (r.fanout.baseline) parts.push(beforeAfter(r.fanout.service, r.fanout.baseline, fanoutFigures(r.fanout.service, r.fanout.baseline), r.fanout.rounds, " deliveries/s (p99 < 100 ms)"), "");
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
      "Connections opened 200 at a time, then held idle; memory is the server's RSS with them over its RSS after one socket came and went, per socket. " +
        "`bare` is Socket.IO on @socket.io/bun-engine with nothing of the service's (bench/bare.ts: no token check, no query, no rooms, no handlers): the floor of the stack itself.",
      "",
    );
    parts.push(
      table(
        ["Server", "Sockets", "Connections/s", "RSS before", "RSS with sockets", "Per socket", "Dropped while idle", "CPU"],
        (["service", "reference", "bare"] as const).flatMap((name) => {
          const c = r.capacity![name];
          if (!c) return [];
          return [[name, n(c.sockets), n(c.connectionsPerSecond), `${n(Math.round(c.baselineRssKiB / 1024))} MiB`, `${n(Math.round(c.loadedRssKiB / 1024))} MiB`, `${c.kibPerSocket} KiB`, c.droppedWhileIdle, cpu(c)]];
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
  if (r.resume) {
    const s = r.resume.service;
    parts.push("", `## 6. Reconnect storm after a restart (${n(s.clients)} websocket clients in one channel, ${s.events} events while they were away)`, "");
    parts.push(
      `All clients connected (one user each); the server is restarted under them (SIGTERM, as a deploy does, then started again on the same port and database), which cuts every one; ` +
        `${s.events} events are committed one after another on the new process (service: ${s.plan.messages} messages, ${s.plan.edits} edits, ${s.plan.deletes} deletions); ` +
        "then all of them reconnect at once: each at a random moment within 1 s, as socket.io-client's jittered reconnection delay spreads them, and a failed attempt is retried with its backoff (1 s doubling to 5 s, ±50%). The service replays the missed events in the handshake (`auth.since`, docs/api.md §11); " +
        "the reference" +
        (r.resume.baseline ? " and the baseline" : "") +
        " have no event log, so each client reconnects and reads `GET /api/messages?after=<last id>` (messages only). " +
        "Timed from the first reconnect until every client has every missed event; faults are counted per client and event " +
        "(missed, doubled, out of seq order, the wrong kind of event, an event not committed then), and so are `resync`s (the server gave up replaying: the client must reload) " +
        "and refused reconnects; then one more message checks every client is live again. The handshake column is each client's reconnect alone, before any replay or read. " +
        "CPU and memory (of the new process) over the storm alone.",
      "",
    );
    parts.push(
      table(
        ["Server", "Catch-up", "All caught up ms", "Per client p50 / p99 ms", "Handshake p50 / p99 ms", "Missed / doubled / out of order", "Wrong kind / not committed", "Resyncs / refused / retried", "Live after", "CPU", "RSS before → peak"],
        present(r.resume).map((name) => {
          const x = r.resume![name]!;
          return [
            name,
            x.mode === "resume" ? "replay (`since`)" : "history (`after`)",
            x.allCaughtUpMs === null ? `**${n(x.caughtUp)} of ${n(x.clients)}**` : n(x.allCaughtUpMs),
            `${n(x.perClientMs.p50)} / ${n(x.perClientMs.p99)}`,
            `${n(x.connectMs.p50)} / ${n(x.connectMs.p99)}`,
            `${n(x.missed)} / ${x.duplicates} / ${x.outOfOrder}`,
            `${x.wrongEvent} / ${x.unexpected}`,
            `${x.resyncs} / ${x.failedConnects} / ${n(x.retried ?? 0)}`,
            `${x.liveAfter.missed} missed, ${x.liveAfter.duplicates} doubled`,
            cpu(x),
            `${n(Math.round(x.rssKiB.before / 1024))} → ${n(Math.round(x.rssKiB.peak / 1024))} MiB`,
          ];
        }),
      ),
    );
    for (const name of present(r.resume)) {
      const reasons = Object.entries(r.resume[name]!.failures ?? {});
      if (reasons.length > 0) parts.push("", `Refused reconnects (${name}): ${reasons.map(([why, count]) => `${n(count)} × \`${why}\``).join(", ")}.`);
      const retried = Object.entries(r.resume[name]!.retries ?? {});
      if (retried.length > 0) parts.push("", `Attempts retried (${name}): ${retried.map(([why, count]) => `${n(count)} × \`${why}\``).join(", ")}.`);
    }
  }
  if (r.password) {
    const [ours, bun] = r.password.sets;
    parts.push("", "## 7. Password hashing (argon2id, in one process)", "");
    parts.push(
      "Bun.password at the service's parameters (src/lib/password.ts: OWASP's recommended m=19 MiB, t=2, p=1) and at Bun's own default (m=64 MiB, t=2), one after the other in one process, no server: " +
        `one hash at a time (wall and CPU ms per hash; then verifications), then ${ours!.concurrency} at once, as PASSWORD_HASH_CONCURRENCY's default lets an instance run, with the resident memory they add over the idle process (sampled every 2 ms).`,
      "",
    );
    parts.push(
      table(
        ["Parameters", "Hash p50 / p99 ms", "CPU ms per hash", "Verify p50 ms", `Hashes/s, ${ours!.concurrency} at once`, `Memory added, ${ours!.concurrency} at once`],
        r.password.sets.map((x) => [x.label, `${x.hashMs.p50} / ${x.hashMs.p99}`, x.cpuPerHashMs, x.verifyMs.p50, n(x.hashesPerSecond), `${n(Math.round(x.addedRssKiB / 1024))} MiB`]),
      ),
    );
    if (ours && bun) parts.push("", `The service's parameters against Bun's default: ${ratio(ours.cpuPerHashMs, bun.cpuPerHashMs)}× the CPU per hash, ${ratio(ours.hashesPerSecond, bun.hashesPerSecond)}× the hashes per second, ${ratio(ours.addedRssKiB, bun.addedRssKiB)}× the memory.`);
  }
  parts.push("", "Reproduce with `npm install && npx bun run bench` (PostgreSQL on 127.0.0.1:5432, or BENCH_DATABASE_URL).", "");
  return parts.join("\n");
}
