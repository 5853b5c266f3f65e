import { copyFileSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { envSchema } from "../../src/config.ts";
import { repoRoot } from "./readme.ts";

// A user's checkout and a user's shell, for the tests that run README.md's commands as written
// (test/readme-setup.test.ts, test/containers/run.ts). No bun:test import: the container test runs
// outside the test runner.

function git(args: string[], cwd: string): string {
  const result = Bun.spawnSync(["git", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) throw new Error(`git ${args.join(" ")} exited ${result.exitCode}: ${result.stderr.toString().trim()}`);
  return result.stdout.toString();
}

/**
 * What a user gets: a fresh `git clone` of this repository in `dest`, at the commit checked out here.
 * Committed files only, as CI's fresh clone has them: nothing untracked, ignored (node_modules, .data,
 * .env, src/generated) or half-edited in this working tree takes part (a file someone forgot to commit
 * fails here as it would for a user). One exception: README.md is the working tree's, so a change to
 * the blocks under test is tested before it is committed; the code they run is the committed one.
 * Returns the commit and the working tree's uncommitted changes (worth a note: they are not tested).
 */
export function cloneCheckout(dest: string, root = repoRoot): { commit: string; uncommitted: string[] } {
  const commit = git(["rev-parse", "HEAD"], root).trim();
  git(["clone", "--quiet", "--no-checkout", root, dest], root);
  git(["checkout", "--quiet", "--detach", commit], dest);
  copyFileSync(path.join(root, "README.md"), path.join(dest, "README.md"));
  const uncommitted = git(["status", "--porcelain"], root).split("\n").filter(Boolean);
  return { commit, uncommitted };
}

/**
 * The environment of the shell a user types the README's commands into: this process's, less what
 * launching the tests added (npx's npm_* variables: npm_config_local_prefix would point a nested
 * `npm install` at this checkout; INIT_CWD, NODE; bun test's NODE_ENV=test), the test set-up's
 * (CHAT_TEST_*, TEST_*), compose's project settings, and every setting of the service (src/config.ts),
 * so the service sees only what the block itself sets.
 */
export function userShellEnv(): Record<string, string> {
  const settings = new Set(Object.keys(envSchema.shape));
  const dropped = (name: string) =>
    settings.has(name) || /^(npm_|CHAT_TEST_|TEST_|COMPOSE_)/.test(name) || ["INIT_CWD", "NODE", "NODE_ENV"].includes(name);
  return Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && !dropped(e[0])));
}

/** Processes (other than this one) whose working directory is `dir` or inside it: what a run there left behind. */
export function processesIn(dir: string): { pid: number; command: string }[] {
  const found: { pid: number; command: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      if (cwd !== dir && !cwd.startsWith(`${dir}/`)) continue;
      found.push({ pid, command: readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim() });
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return found;
}

/** Whether something accepts TCP connections on `host`:`port` (host 127.0.0.1 unless given). */
export function listening(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
