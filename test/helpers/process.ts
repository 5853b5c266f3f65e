import { afterAll } from "bun:test";
import path from "node:path";
import type { Subprocess } from "bun";
import { io as ioClient } from "socket.io-client";
import { testMetricsToken } from "./env.ts";
import type { ChatClient, Transport } from "./server.ts";

/** The project root: where `bun src/index.ts` runs in production. */
export const projectRoot = path.resolve(import.meta.dir, "../..");

/** A production-like environment for the entry point; only PATH is inherited. */
export function productionEnv(databaseUrl: string, overrides: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string | undefined> = {
    PATH: process.env.PATH,
    NODE_ENV: "production",
    DATABASE_URL: databaseUrl,
    JWT_SECRET: "lifecycle-test-secret-0123456789abcdef",
    PORT: "0",
    HOST: "127.0.0.1",
    LOG_LEVEL: "info",
    RATE_LIMIT_AUTH_PER_IP: "off",
    RATE_LIMIT_LOGIN_FAILURES: "off",
    RATE_LIMIT_LOGIN_FAILURES_GLOBAL: "off",
    RATE_LIMIT_MESSAGES_BURST: "off",
    RATE_LIMIT_MESSAGES_SUSTAINED: "off",
    METRICS_TOKEN: testMetricsToken,
    SOCKET_EVENT_RATE: "off",
    SOCKET_HANDSHAKE_RATE_PER_IP: "off",
    RATE_LIMIT_SEARCH: "off",
    // Offline at once, as the presence tests expect; test/presence-grace.test.ts tests the grace.
    PRESENCE_GRACE_MS: "0",
    ...overrides,
  };
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
}

const running = new Set<Subprocess>();
afterAll(() => {
  // Only what a failed test left behind; a passing test has already stopped its process.
  for (const proc of running) proc.kill("SIGKILL");
});

export interface ServerProcess {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** From the "listening" log line, e.g. http://127.0.0.1:41234 */
  url: string;
  /** Every JSON log line printed on stdout so far. */
  logs: Record<string, unknown>[];
  /** Resolves with the first log line (past or future) that `match` accepts; rejects after `ms`. */
  waitForLog(match: (entry: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>;
  /** stderr, once the process has exited. */
  stderr: Promise<string>;
  /** Sends `signal` and resolves with the exit code and how long the exit took. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; ms: number }>;
}

/**
 * Starts `bun src/index.ts` with exactly `env` and resolves once it logs the line with
 * `url` (pino JSON on stdout), which it prints only when it serves. Rejects with the
 * output if the process exits first.
 */
export async function startServerProcess(env: Record<string, string>, readyMs = 20_000): Promise<ServerProcess> {
  const proc = Bun.spawn([process.execPath, "src/index.ts"], { cwd: projectRoot, env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  running.add(proc);
  void proc.exited.then(() => running.delete(proc));
  const stderr = new Response(proc.stderr).text();
  const logs: Record<string, unknown>[] = [];
  const waiters = new Set<(entry: Record<string, unknown>) => void>();

  const url = new Promise<string>((resolve, reject) => {
    // Keep draining stdout for the whole life of the process, so it never blocks on a full pipe.
    void (async () => {
      let buffered = "";
      const decoder = new TextDecoder();
      for await (const chunk of proc.stdout) {
        buffered += decoder.decode(chunk, { stream: true });
        let newline: number;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          try {
            const entry = JSON.parse(line) as Record<string, unknown>;
            logs.push(entry);
            for (const waiter of waiters) waiter(entry);
            if (typeof entry.url === "string") resolve(entry.url);
          } catch {
            // Not a log line; the assertions below look only at JSON lines.
          }
        }
      }
    })();
    void proc.exited.then(async (code) => reject(new Error(`server exited (${code}) before listening:\n${JSON.stringify(logs)}\n${await stderr}`)));
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), readyMs);
  try {
    const ready = await url;
    return {
      proc,
      url: ready,
      logs,
      stderr,
      waitForLog(match, ms = 10_000) {
        const seen = logs.find(match);
        if (seen) return Promise.resolve(seen);
        return new Promise((resolve, reject) => {
          const timer = setTimeout(() => {
            waiters.delete(waiter);
            reject(new Error(`no matching log line within ${ms} ms:\n${JSON.stringify(logs)}`));
          }, ms);
          const waiter = (entry: Record<string, unknown>) => {
            if (!match(entry)) return;
            clearTimeout(timer);
            waiters.delete(waiter);
            resolve(entry);
          };
          waiters.add(waiter);
        });
      },
      async stop(signal = "SIGTERM") {
        const started = performance.now();
        proc.kill(signal);
        const code = await proc.exited;
        return { code, ms: performance.now() - started };
      },
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs the entry point expecting it to exit on its own (a refused configuration). */
export async function runToExit(
  env: Record<string, string>,
  ms = 20_000,
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const proc = Bun.spawn([process.execPath, "src/index.ts"], { cwd: projectRoot, env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  running.add(proc);
  const timer = setTimeout(() => proc.kill("SIGKILL"), ms);
  const [code, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  clearTimeout(timer);
  running.delete(proc);
  return { code, signal: proc.signalCode === null ? null : String(proc.signalCode), stdout, stderr };
}

/** Registers a user on a server at `url`. */
export async function registerAt(url: string, username: string, password = "correct horse battery") {
  const res = await fetch(`${url}/api/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (res.status !== 201) throw new Error(`register failed: ${res.status} ${await res.text()}`);
  return (await res.json()) as { token: string; user: { id: number; username: string } };
}

/** A connected socket.io-client on `url` (no reconnection), or the connect_error. */
export function connectTo(url: string, token: string, transport: Transport): Promise<ChatClient> {
  const socket: ChatClient = ioClient(url, { auth: { token }, transports: [transport], reconnection: false, forceNew: true, timeout: 5_000 });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (error) => {
      socket.disconnect();
      reject(error);
    });
  });
}
