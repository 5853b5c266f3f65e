import { tmpdir } from "node:os";
import path from "node:path";
import type { Subprocess } from "bun";
import { baselineRoot } from "./baseline.ts";
import { jwtSecret } from "./database.ts";

export const projectRoot = path.resolve(import.meta.dir, "../..");

/** "baseline": the service at an earlier commit (bench/lib/baseline.ts), started exactly like "service". */
export type TargetName = "service" | "baseline" | "reference" | "hello" | "bare";

export interface RunningTarget {
  name: TargetName;
  url: string;
  /** The current process's (a restart starts another). */
  readonly pid: number;
  stop(): Promise<void>;
  /** SIGTERM, as a deploy does, then the same server again on the same port and database. */
  restart(): Promise<void>;
}

const running = new Set<Subprocess>();
process.on("exit", () => {
  for (const proc of running) proc.kill("SIGKILL");
});

async function freePort(): Promise<number> {
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const { port } = listener;
  listener.stop(true);
  return port;
}

/** BENCH_PROFILE=<dir>: a CPU profile of the service (and the baseline) per run, in Markdown, written when it exits. */
const bunServer = (entry: string) =>
  process.env.BENCH_PROFILE ? [process.execPath, "--cpu-prof", "--cpu-prof-md", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`, entry] : [process.execPath, entry];

function command(name: TargetName): { cmd: string[]; cwd: string } {
  switch (name) {
    // Exactly what `bun run start` runs in production.
    case "service":
      return { cmd: bunServer("src/index.ts"), cwd: projectRoot };
    // The same, from the baseline's checkout (its own code and generated client, today's node_modules).
    case "baseline":
      return { cmd: bunServer("src/index.ts"), cwd: baselineRoot() };
    case "reference":
      return { cmd: ["node", "bench/reference/server.mjs"], cwd: projectRoot };
    case "hello":
      return { cmd: [process.execPath, "bench/hello.ts"], cwd: projectRoot };
    case "bare":
      return { cmd: [process.execPath, "bench/bare.ts"], cwd: projectRoot };
  }
}

/**
 * Starts one server under test as its own process and waits until it answers. The service
 * (and the baseline) runs as in production, with the message and search rate limits and the per-address handshake
 * limits lifted (they exist to stop one user flooding a channel and one address flooding the server;
 * the benchmark measures the machine, not the policy). Logs stay at the
 * default level (a line per request and per socket), written to /dev/null.
 */
export async function startTarget(name: TargetName, databaseUrl: string): Promise<RunningTarget> {
  const port = await freePort();
  const env = {
    PATH: process.env.PATH ?? "",
    NODE_ENV: "production",
    DATABASE_URL: databaseUrl,
    JWT_SECRET: jwtSecret,
    PORT: String(port),
    HOST: "127.0.0.1",
    RATE_LIMIT_MESSAGES_BURST: "off",
    RATE_LIMIT_MESSAGES_SUSTAINED: "off",
    SOCKET_EVENT_RATE: "off",
    // Every simulated client connects from 127.0.0.1, up to 200 at once.
    SOCKET_HANDSHAKE_RATE_PER_IP: "off",
    SOCKET_MAX_PENDING_PER_IP: "off",
    // The search scenario's searchers search back to back: it measures the per-instance bounds.
    RATE_LIMIT_SEARCH: "off",
  };
  const { cmd, cwd } = command(name);
  const url = `http://127.0.0.1:${port}`;
  const spawn = async () => {
    const proc = Bun.spawn(cmd, { cwd, env, stdin: "ignore", stdout: "ignore", stderr: "inherit" });
    running.add(proc);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`${name} exited with ${proc.exitCode} before serving`);
      const up = await fetch(`${url}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (up) return proc;
      if (Date.now() > deadline) throw new Error(`${name} did not answer on ${url} within 30 s`);
      await Bun.sleep(20);
    }
  };
  const stop = async (proc: Subprocess) => {
    proc.kill("SIGTERM");
    const killer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
    await proc.exited;
    clearTimeout(killer);
    running.delete(proc);
  };
  let proc = await spawn();
  return {
    name,
    url,
    get pid() {
      return proc.pid;
    },
    stop: () => stop(proc),
    async restart() {
      await stop(proc);
      proc = await spawn();
    },
  };
}

/**
 * Runs one load generator (bench/load/<scenario>.ts) as its own process and resolves with
 * its RESULT line. `onReady` is called on its READY line; its return value, if any, is
 * written to the generator's stdin (capacity waits for that before it lets go).
 */
export async function runGenerator<T>(scenario: string, settings: object, onReady?: (ready: unknown) => Promise<string | void>): Promise<{ result: T; cpuMs: number }> {
  const file = path.join(tmpdir(), `chat-bench-${process.pid}-${scenario}.json`);
  await Bun.write(file, JSON.stringify(settings));
  const proc = Bun.spawn([process.execPath, `bench/load/${scenario}.ts`, file], { cwd: projectRoot, stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  running.add(proc);
  let result: T | undefined;
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of proc.stdout) {
    buffered += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line.startsWith("READY ")) {
        const answer = await onReady?.(JSON.parse(line.slice(6)));
        proc.stdin.write(`${answer ?? "go"}\n`);
        await proc.stdin.flush();
      } else if (line.startsWith("RESULT ")) {
        result = JSON.parse(line.slice(7)) as T;
      }
    }
  }
  const code = await proc.exited;
  running.delete(proc);
  const usage = proc.resourceUsage();
  await Bun.file(file).delete();
  if (code !== 0 || result === undefined) throw new Error(`generator ${scenario} failed (exit ${code})`);
  const cpuMs = usage ? Number(usage.cpuTime.user + usage.cpuTime.system) / 1000 : 0;
  return { result, cpuMs };
}
