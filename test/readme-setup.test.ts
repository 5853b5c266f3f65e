import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { SQL, type Subprocess } from "bun";
import { cloneCheckout, listening, processesIn, userShellEnv } from "./helpers/checkout.ts";
import { ensureCommand } from "./helpers/debian.ts";
import { adminDatabaseUrl, databaseUrl, TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { connectTo, registerAt } from "./helpers/process.ts";
import { fencesOf, findRunBlock, repoRoot, runBlocks, type RunBlock } from "./helpers/readme.ts";
import { nextEvent, sendWithAck, type ChatClient } from "./helpers/server.ts";
import { settle } from "./helpers/wait.ts";

// README.md's set-up blocks, taken from README.md as they stand and run as written, in a fresh clone
// of this repository (test/helpers/checkout.ts: the committed files, as a user or CI gets them) from a
// user's shell environment: the Quick start's `npm install && npx bun run dev` (embedded database,
// port 3000, stopped with Ctrl-C), the block that stops a background dev server, and "Running several
// instances" (two production instances behind deploy/nginx.conf on 3001, with one substitution: its
// placeholder DATABASE_URL). Each checks that stopping it the README's way leaves nothing running.
// Also: every block of README.md with a language tag is one some test runs (runBlocks), so a new
// block without a test fails here. test/readme.test.ts runs the API examples; test/containers/run.ts
// the Docker block.
//
// Ports 3000, 3001, 3101 and 3102 are the README's: test/readme.test.ts's server on 3000 has stopped
// before this file starts (bun test runs files one after another), and test/proxy.test.ts uses
// ephemeral ports.
setDefaultTimeout(TEST_TIMEOUT_MS);

const readme = await Bun.file(path.join(repoRoot, "README.md")).text();
const block = (name: RunBlock) => findRunBlock(readme, name).body;

// What the blocks call besides npm, from Debian's packages when missing (a fresh machine may lack them).
ensureCommand("curl");
ensureCommand("openssl");
const findNginx = () => Bun.which("nginx") ?? Bun.which("nginx", { PATH: "/usr/local/sbin:/usr/sbin:/sbin" });
if (!findNginx()) Bun.spawnSync(["bash", path.join(repoRoot, "scripts/install-nginx.sh")], { stdout: "inherit", stderr: "inherit" });
const nginx = findNginx();
if (!nginx) throw new Error("nginx is not installed and scripts/install-nginx.sh could not install it (apt-get install nginx-light)");

const scratch = mkdtempSync(path.join(os.tmpdir(), "chat-readme-"));
// Traversable, as a checkout usually is: nginx started as root runs its workers as nobody, and they
// write the block's temp paths under .data/nginx.
chmodSync(scratch, 0o755);
const checkout = path.join(scratch, "chat-backend");
const { commit, uncommitted } = cloneCheckout(checkout);
if (uncommitted.length > 0) {
  console.log(`readme-setup: a clone of ${commit.slice(0, 12)} with this README.md; ${uncommitted.length} other uncommitted change(s) here are not part of it`);
}
const shellEnv = userShellEnv();
// The block calls plain `nginx`: Debian's is in /usr/sbin, which a non-root PATH may lack.
if (!Bun.which("nginx", { PATH: shellEnv.PATH })) shellEnv.PATH = `${shellEnv.PATH}:${path.dirname(nginx)}`;

const started: Subprocess[] = [];
const sockets: ChatClient[] = [];
let database: string | undefined;
const admin = new SQL(adminDatabaseUrl);

afterAll(async () => {
  for (const socket of sockets) socket.disconnect();
  // Only what a failed test left behind: whatever still runs in the clone (the scratch directory is
  // this run's own), and the shells.
  for (const { pid } of processesIn(checkout)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Gone meanwhile.
    }
  }
  for (const proc of started) proc.kill("SIGKILL");
  if (database) await admin.unsafe(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
  await admin.close();
  rmSync(scratch, { recursive: true, force: true });
});

/**
 * `bash -c script` in the clone, in the user's environment, both output streams appended to `log`: a
 * file, since nginx reopens /dev/stdout for its access log, which a pipe would not allow. `detached`:
 * a session of its own, like the foreground job of a terminal, which Ctrl-C signals as a whole.
 */
function shell(script: string, log: string, { detached = false } = {}): Subprocess {
  const fd = openSync(log, "a");
  const proc = Bun.spawn(["bash", "-c", script], { cwd: checkout, env: shellEnv, stdin: "ignore", stdout: fd, stderr: fd, detached });
  closeSync(fd);
  started.push(proc);
  return proc;
}

const text = (file: string) => (existsSync(file) ? readFileSync(file, "utf8") : "");
/** The JSON log lines (pino) in a file of mixed output. */
const logLines = (file: string) =>
  text(file)
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
const show = (file: string) => console.log(`--- ${path.basename(file)} (last lines)\n${text(file).trim().split("\n").slice(-30).join("\n")}`);

const statusOf = (url: string) =>
  fetch(url, { signal: AbortSignal.timeout(2_000) })
    .then((res) => res.status)
    .catch(() => 0);

/** Resolves with the exit code, or null if it is still running after `ms`. */
const exitWithin = (proc: Subprocess, ms: number) => Promise.race([proc.exited, Bun.sleep(ms).then(() => null)]);

/** What is left of a run: processes in the clone, and which of `ports` still accept connections. */
async function leftovers(ports: number[]) {
  const open = [];
  for (const port of ports) if (await listening(port)) open.push(port);
  return { processes: processesIn(checkout).map((p) => p.command), open };
}
const nothingLeft = (ports: number[]) => settle(() => leftovers(ports), (l) => l.processes.length === 0 && l.open.length === 0, 20_000, 200);

describe("README.md's code blocks", () => {
  test("every block with a language tag is one a test runs as written (runBlocks); the untagged ones are file trees, not commands", () => {
    const fences = fencesOf(readme);
    const run = new Set((Object.keys(runBlocks) as RunBlock[]).map((name) => findRunBlock(readme, name).line));
    const untested = fences.filter((f) => f.language !== "" && !run.has(f.line)).map((f) => `line ${f.line}: \`\`\`${f.language} under "${f.section}"`);
    expect(untested).toEqual([]);
    for (const tree of fences.filter((f) => f.language === "")) {
      // A tree: each line that is not indented starts with a path (src/, messages/fanout.ts, …).
      const top = tree.body.split("\n").filter((line) => line.trim() !== "" && !/^\s/.test(line));
      expect({ line: tree.line, notPaths: top.filter((line) => !/^[\w.-]+\/[\w./-]*(\s|$)/.test(line)) }).toEqual({ line: tree.line, notPaths: [] });
    }
  });
});

describe("Quick start", () => {
  const commands = block("quickStart")
    .split("\n")
    .filter((line) => line.trim() !== "" && !line.startsWith("#"));

  test("two commands; the second (the test suite, which cannot run inside itself) is the one .ci/run runs, as written", async () => {
    expect(commands).toHaveLength(2);
    const ci = (await Bun.file(path.join(repoRoot, ".ci/run")).text())
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "" && !line.startsWith("#"));
    const line = ci.find((l) => l === commands[1] || l.startsWith(`${commands[1]} `));
    expect(line).toBeDefined();
    // Only output plumbing after it (the log the pass/fail count is read from).
    expect(line!.slice(commands[1]!.length)).toMatch(/^( 2>&1)?( \| tee "\$log")?( \|\| exit 1)?$/);
    // And the container test, which runs the Docker block (runBlocks.docker), is part of CI too.
    expect(ci).toContain("npx bun run test:containers");
  });

  test(
    "the first, in a fresh clone with no DATABASE_URL: /healthz answers 200 on port 3000 and the start-up line is printed; Ctrl-C stops all of it",
    async () => {
      // Otherwise the checks below could reach somebody else's server.
      expect(await listening(3000)).toBe(false);
      const log = path.join(scratch, "quick-start.log");
      const proc = shell(commands[0]!, log, { detached: true });
      const up = await settle(
        async () => ({
          exited: proc.exitCode,
          healthz: await statusOf("http://127.0.0.1:3000/healthz"),
          startUpLine: logLines(log).some((l) => l.msg === "chat service listening on http://127.0.0.1:3000"),
        }),
        (s) => s.exited !== null || (s.healthz === 200 && s.startUpLine),
        240_000, // npm install from an empty cache, then the first start creates .data/ (about 20 s)
        500,
      );
      if (up.healthz !== 200 || !up.startUpLine) show(log);
      expect(up).toEqual({ exited: null, healthz: 200, startUpLine: true });
      expect(logLines(log).some((l) => l.msg === "using the embedded PostgreSQL (PGlite); set DATABASE_URL to use a server")).toBe(true);
      // Loopback only (HOST unset in development): not reachable at this machine's other addresses.
      const elsewhere = Object.values(os.networkInterfaces()).flatMap((list) => list ?? []).filter((a) => a.family === "IPv4" && !a.internal);
      for (const { address } of elsewhere) expect({ address, listening: await listening(3000, address) }).toEqual({ address, listening: false });
      // npm install warned of nothing: no engine, no install script left out of allowScripts.
      expect(text(log).split("\n").filter((line) => line.startsWith("npm warn"))).toEqual([]);

      // Ctrl-C: SIGINT to the terminal's foreground process group, every process of the command.
      process.kill(-proc.pid, "SIGINT");
      expect(await exitWithin(proc, 20_000)).not.toBeNull();
      expect(await nothingLeft([3000])).toEqual({ processes: [], open: [] });
      const messages = logLines(log).map((l) => l.msg);
      expect(messages).toContain("shutting down");
      expect(messages.at(-1)).toBe("stopped");
    },
    300_000,
  );

  test(
    "stopping a background dev server (set -m … kill -- -$!), in the same clone: it served, and the kill leaves nothing running",
    async () => {
      expect(await listening(3000)).toBe(false);
      const log = path.join(scratch, "background.log");
      const proc = shell(block("backgroundDev"), log);
      const code = await exitWithin(proc, 120_000);
      const devLog = path.join(checkout, "dev.log"); // the block's own
      if (code !== 0) {
        show(log);
        show(devLog);
      }
      expect(code).toBe(0);
      expect(await nothingLeft([3000])).toEqual({ processes: [], open: [] });
      const lines = logLines(devLog);
      expect(lines.some((l) => l.msg === "chat service listening on http://127.0.0.1:3000")).toBe(true);
      // The block's wait got its answer before the kill.
      expect(lines.some((l) => l.msg === "request" && l.route === "/healthz" && l.status === 200)).toBe(true);
      expect(lines.find((l) => l.msg === "shutting down")?.signal).toBe("SIGTERM");
      expect(lines.at(-1)?.msg).toBe("stopped");
    },
    180_000,
  );
});

describe("Running several instances", () => {
  // The one substitution: the block's DATABASE_URL is a placeholder. In its place, an empty database
  // of this test's own on the test server, which the block's `db:migrate` migrates.
  const placeholder = "postgresql://user:pass@127.0.0.1:5432/chat";
  const ports = [3001, 3101, 3102];

  test(
    "as written but for the placeholder DATABASE_URL: register and a Socket.IO message through nginx on 3001 reach both instances; Ctrl-C and the block's last line stop all of it",
    async () => {
      expect(await leftovers(ports)).toEqual({ processes: [], open: [] });
      const parts = block("severalInstances").split(placeholder);
      expect(parts).toHaveLength(2);
      database = `chat_readme_${process.pid}_${crypto.randomUUID().slice(0, 8)}`;
      await admin.unsafe(`CREATE DATABASE "${database}"`);
      const script = parts.join(databaseUrl(database));

      const log = path.join(scratch, "several-instances.log");
      const proc = shell(script, log);
      const up = await settle(
        async () => ({
          exited: proc.exitCode,
          healthz: await Promise.all(ports.map((port) => statusOf(`http://127.0.0.1:${port}/healthz`))),
        }),
        (s) => s.exited !== null || s.healthz.every((status) => status === 200),
        90_000,
        250,
      );
      if (up.exited !== null) show(log);
      expect(up).toEqual({ exited: null, healthz: [200, 200, 200] });

      const nginxUrl = "http://127.0.0.1:3001";
      const user = await registerAt(nginxUrl, `readme_${crypto.randomUUID().slice(0, 8)}`);
      const db = new SQL(databaseUrl(database));
      const [stored] = (await db`SELECT username FROM users WHERE id = ${user.user.id}`.finally(() => db.close())) as { username: string }[];
      expect(stored?.username).toBe(user.user.username); // in the database put in place of the placeholder
      const sender = await connectTo(nginxUrl, user.token, "websocket");
      const onEach = await Promise.all([connectTo("http://127.0.0.1:3101", user.token, "polling"), connectTo("http://127.0.0.1:3102", user.token, "websocket")]);
      sockets.push(sender, ...onEach);
      const received = [sender, ...onEach].map((socket) => nextEvent<{ id: number; content: string }>(socket, "message"));
      const ack = await sendWithAck(sender, { content: "through nginx", clientId: crypto.randomUUID() });
      expect(ack.ok).toBe(true);
      for (const message of await Promise.all(received)) expect(message).toMatchObject({ id: ack.message.id, content: "through nginx" });
      for (const socket of sockets) socket.disconnect();

      // Ctrl-C, as a terminal sends it to nginx, the foreground job (a process group of its own under
      // the block's `set -m`: never this test's group).
      const nginxPid = Number(text(path.join(checkout, ".data/nginx/nginx.pid")).trim());
      const group = Number(readFileSync(`/proc/${nginxPid}/stat`, "utf8").split(") ")[1]!.split(" ")[2]);
      expect(group).toBe(nginxPid);
      process.kill(-group, "SIGINT");
      const code = await exitWithin(proc, 30_000);
      if (code !== 0) show(log);
      expect(code).toBe(0);
      // The block's `wait` waited for both instances: as it ends, nothing is left already.
      expect(await leftovers(ports)).toEqual({ processes: [], open: [] });
      // Both stopped gracefully (the block's `kill %1 %2`, SIGTERM), each to its last line.
      const stops = logLines(log).filter((l) => l.msg === "shutting down" || l.msg === "stopped");
      if (stops.length !== 4) show(log);
      expect(stops.map((l) => [l.msg, l.signal]).sort()).toEqual([
        ["shutting down", "SIGTERM"],
        ["shutting down", "SIGTERM"],
        ["stopped", undefined],
        ["stopped", undefined],
      ]);
    },
    180_000,
  );
});
