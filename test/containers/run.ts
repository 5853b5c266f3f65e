/**
 * The container test (`bun run test:containers`; .ci/run runs it after the test suite): the
 * Dockerfile and docker-compose.yml of a fresh clone of this checkout, started with README.md's
 * Docker block as written (see readmeDockerBlock) and run for real, black-box through nginx on
 * port 3001. On a machine without a registry the base images are stand-ins built here
 * (stand-ins.ts). Prints the time of every stage; exits non-zero on the first failed check, after
 * removing its containers, networks and volumes and stopping a dockerd it started.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { SourceAddresses } from "./addresses.ts";
import { checkThroughProxy, allMessages } from "./checks.ts";
import { startEngine, type Engine } from "./engine.ts";
import { api, expectStatus } from "./http.ts";
import { killUnderLoad, relaysPerBackend } from "./kill.ts";
import { run, runShownAndKept, succeeds, until } from "./shell.ts";
import { Stack } from "./stack.ts";
import { withThirdBackend } from "./scale.ts";
import { crossBackend } from "./cross.ts";
import { ensureStandIns, imagesNamed } from "./stand-ins.ts";
import { cloneCheckout, userShellEnv } from "../helpers/checkout.ts";
import { ensureCommand } from "../helpers/debian.ts";
import { readmeBlock } from "../helpers/readme.ts";

const ROOT = resolve(import.meta.dir, "../..");
const IMAGE = "chat-backend:local";
const BASE = "http://127.0.0.1:3001";
const SERVICES = ["postgres", "redis", "backend1", "backend2", "nginx"];
const PROJECT = "chatcontainers";

/**
 * README.md's Docker block ("Deploy with Docker") as this test runs it: as written when the
 * machine's `docker` has Compose v2. Otherwise (Debian 12 has Compose v1 only) with one
 * substitution, `docker compose` → the engine's compose command (`docker-compose`), which reads
 * the same file; nothing else in the block changes.
 */
async function readmeDockerBlock(engine: Engine): Promise<{ script: string; substitution?: string }> {
  const block = await readmeBlock("docker", ROOT);
  if (await succeeds(["docker", "compose", "version"])) return { script: block };
  const compose = engine.compose.join(" ");
  const script = block.replaceAll("docker compose ", `${compose} `);
  if (script.includes("docker compose")) throw new Error(`the README's Docker block has a \`docker compose\` this test does not substitute:\n${block}`);
  return { script, substitution: `\`docker compose\` → \`${compose}\` (this machine's docker has no Compose v2)` };
}

const timings: [string, number][] = [];
async function stage<T>(name: string, work: () => Promise<T>): Promise<T> {
  const started = performance.now();
  console.log(`\n== ${name}`);
  const result = await work();
  const seconds = (performance.now() - started) / 1000;
  timings.push([name, seconds]);
  console.log(`   ${name}: ${seconds.toFixed(1)} s`);
  return result;
}

let engine: Engine | undefined;
let stack: Stack | undefined;
/** The same project with a placeholder JWT_SECRET: compose refuses the file without one even for `ps` and `down`, and the block's .env may not exist yet. */
let teardown: Stack | undefined;
let addresses: SourceAddresses | undefined;
const scratch = mkdtempSync(join(tmpdir(), "chat-containers-"));
let failed = false;

try {
  // What a user gets (test/helpers/checkout.ts: a fresh clone, the committed files), in a directory
  // named after the test's compose project: compose names a project after its directory, so the
  // README's `docker compose` lines act on `chatcontainers`, never a user's stack, and its .env is
  // written there, never into this checkout.
  const checkout = join(scratch, PROJECT);
  const { commit } = cloneCheckout(checkout, ROOT);
  console.log(`testing a clone of ${commit.slice(0, 12)} (uncommitted changes here are not part of it; README.md is this one)`);
  ensureCommand("openssl"); // the block's first line

  engine = await stage("engine (install, start dockerd)", startEngine);
  const e = engine;
  const standIns = await stage("base images (stand-ins where no registry)", () => ensureStandIns(e.docker, imagesNamed(checkout, IMAGE)));
  console.log(`   ${JSON.stringify(standIns)}`);

  const placeholderEnv = join(scratch, "placeholder.env");
  writeFileSync(placeholderEnv, "JWT_SECRET=placeholder-only-for-ps-and-down-0123456789\n");
  teardown = new Stack(engine, checkout, PROJECT, placeholderEnv);
  await teardown.compose(["down", "--volumes", "--remove-orphans"]).catch(() => {}); // a previous run's leftovers
  // Everything after the block uses the .env the block wrote.
  stack = new Stack(engine, checkout, PROJECT, join(checkout, ".env"));
  const s = stack;

  await stage("the README's Docker block (.env, docker compose up -d --build, docker compose ps), until every container is healthy", async () => {
    const { script, substitution } = await readmeDockerBlock(e);
    if (substitution) console.log(`   substituted: ${substitution}`);
    // In a user's shell environment; `-e`: stop at a failing line, as a user would (it changes nothing when all succeed).
    const output = await runShownAndKept(["bash", "-e", "-c", script], { cwd: checkout, env: userShellEnv() });
    // What the block's `ps` line promises: every service up, migrate exited 0 (v1 prints "Exit 0",
    // v2 "Exited (0)"). Its table's lines start with the container's name: project_service_1 in v1,
    // project-service-1 in v2 (`up` printed "Creating <name> ..." lines before it).
    const psLine = (service: string) => output.split("\n").find((line) => new RegExp(`^${PROJECT}[_-]${service}[_-]1\\s`).test(line));
    for (const service of SERVICES) {
      if (!/\bUp\b/.test(psLine(service) ?? "")) throw new Error(`the block's ps: ${service} is not up: ${psLine(service) ?? "not listed"}`);
    }
    if (!/\bExit(ed)? \(?0\)?/.test(psLine("migrate") ?? "")) throw new Error(`the block's ps: migrate did not exit 0: ${psLine("migrate") ?? "not listed"}`);
    await s.waitHealthy(SERVICES);
  });

  await stage("migrate exited 0 before the backends started", async () => {
    const migrate = await s.service("migrate");
    if (migrate.status !== "exited" || migrate.exitCode !== 0) throw new Error(`migrate: ${migrate.status}, exit ${migrate.exitCode}\n${await s.logs(migrate.id)}`);
    for (const backend of ["backend1", "backend2"]) {
      const b = await s.service(backend);
      if (b.startedAt < migrate.finishedAt) throw new Error(`${backend} started ${b.startedAt.toISOString()}, before migrate finished ${migrate.finishedAt.toISOString()}`);
    }
    console.log(`   ${(await s.logs(migrate.id)).trim().split("\n").slice(-2).join(" / ")}`);
  });

  const first = await stage("register, login, history, search, websocket and polling through nginx", () => checkThroughProxy(BASE));

  const network = await s.network();
  const nginx = { host: (await s.service("nginx")).ip, port: 80 };
  addresses = new SourceAddresses(network.bridge, network.gateway);
  const a = addresses;
  await stage("a message sent on one backend reaches a client on the other", async () => {
    const relays = await relaysPerBackend(s, a, nginx, 1);
    await crossBackend(relays.backend1![0]!.url, relays.backend2![0]!.url);
  });

  const report = await stage("stop backend1 under a steady stream of acked messages", async () => {
    const relays = await relaysPerBackend(s, a, nginx, 4);
    const r = await killUnderLoad(s, BASE, relays);
    console.log(`   ${JSON.stringify(r)}`);
    await s.compose(["start", "backend1"]);
    await s.waitHealthy(["backend1"]);
    return r;
  });

  await stage("more backends: the README's recipe (backend3), then back to two", async () => {
    s.file = withThirdBackend(checkout, join(scratch, "scaled"));
    await s.compose(["up", "-d"]);
    await s.waitHealthy([...SERVICES, "backend3"]);
    const scaledNginx = { host: (await s.service("nginx")).ip, port: 80 };
    const relays = await relaysPerBackend(s, a, scaledNginx, 1, ["backend1", "backend2", "backend3"]);
    await crossBackend(relays.backend3![0]!.url, relays.backend1![0]!.url);
    s.file = "docker-compose.yml";
    await s.compose(["up", "-d", "--remove-orphans"]);
    await s.waitHealthy(SERVICES);
    const left = await run([e.docker, "ps", "-a", "-q", "--filter", `label=com.docker.compose.project=${s.project}`, "--filter", "label=com.docker.compose.service=backend3"]);
    if (left.trim()) throw new Error("backend3 still there after up --remove-orphans with the project's file");
  });
  await a.close();

  await stage("docker compose down, then up: data and sessions kept", async () => {
    const [alice] = first.accounts;
    const before = await allMessages(BASE, alice!.token);
    await s.compose(["down"]);
    await s.compose(["up", "-d"]);
    await s.waitHealthy(SERVICES);
    const me = await api(BASE, "GET", "/api/users/me", { token: alice!.token });
    expectStatus(me, 200, "the access token from before down");
    const refreshed = await api(BASE, "POST", "/api/auth/refresh", { body: { refreshToken: alice!.refreshToken } });
    expectStatus(refreshed, 200, "the refresh token from before down");
    const login = await api(BASE, "POST", "/api/auth/login", { body: { username: alice!.username, password: alice!.password } });
    expectStatus(login, 200, "login after down/up");
    const after = await allMessages(BASE, alice!.token);
    if (after.length !== before.length || after.at(-1)?.id !== before.at(-1)?.id) throw new Error(`history: ${before.length} messages before down, ${after.length} after`);
    console.log(`   ${after.length} messages and the sessions survived`);
  });

  await stage("upgrade: docker compose up -d --build again, migrate runs again and exits 0", async () => {
    const previous = await s.service("migrate");
    await s.compose(["up", "-d", "--build"]);
    await s.waitHealthy(SERVICES);
    const migrate = await until("migrate to run again", 60_000, async () => {
      const m = await s.service("migrate");
      return m.status === "exited" && m.finishedAt > previous.finishedAt ? m : undefined;
    });
    if (migrate.exitCode !== 0) throw new Error(`migrate exited ${migrate.exitCode}`);
  });

  await stage("the image: non-root, no dev dependencies, no test files", async () => {
    const user = (await run([e.docker, "run", "--rm", "--entrypoint", "id", IMAGE, "-u"])).trim();
    if (user === "0") throw new Error("the image runs as root");
    // Dev dependencies that no production dependency needs too (typescript is a peer of
    // @prisma/client, @types/pg a dependency of @prisma/adapter-pg: those belong in the image).
    const pkg = await Bun.file(join(ROOT, "package.json")).json();
    const production = new Set<string>();
    const walk = (deps: Record<string, any> = {}) => {
      for (const [name, dep] of Object.entries(deps)) if (!production.has(name)) production.add(name), walk(dep.dependencies);
    };
    walk(JSON.parse(await run(["npm", "ls", "--omit=dev", "--all", "--json"], { cwd: ROOT })).dependencies);
    const devDependencies = Object.keys(pkg.devDependencies).filter((d) => !production.has(d));
    if (devDependencies.length === 0) throw new Error("npm ls found no dev-only dependency: the check would prove nothing");
    const script = [...devDependencies.map((d) => `test ! -e node_modules/${d} || echo dev dependency: ${d}`), "find . -path ./node_modules -prune -o \\( -name '*.test.ts' -o -name test -o -name bench \\) -print"].join("; ");
    const found = (await run([e.docker, "run", "--rm", "--entrypoint", "sh", IMAGE, "-c", script])).trim();
    if (found) throw new Error(`the image holds what it should not:\n${found}`);
    const size = Number((await run([e.docker, "image", "inspect", "-f", "{{.Size}}", IMAGE])).trim());
    console.log(`   runs as uid ${user}; none of ${devDependencies.join(", ")}; ${(size / 1e6).toFixed(0)} MB`);
    timings.push([`image size ${(size / 1e6).toFixed(0)} MB`, 0]);
  });
  timings.push([`kill test: ${JSON.stringify(report)}`, 0]);
} catch (error) {
  failed = true;
  console.error(`\nFAILED: ${error instanceof Error ? (error.stack ?? error.message) : error}`);
  if (teardown) for (const service of [...SERVICES, "migrate"]) {
    for (const id of await teardown.ids(service).catch(() => [] as string[])) console.error(`--- ${service} (last lines)\n${await teardown.logs(id, 20)}`);
  }
} finally {
  await addresses?.close();
  if (teardown) await stage("clean up (down --volumes)", () => teardown!.compose(["down", "--volumes", "--remove-orphans"])).catch((e) => console.error(`clean-up: ${e}`));
  await engine?.stop();
  rmSync(scratch, { recursive: true, force: true });
}

console.log("\n== timings");
for (const [name, seconds] of timings) console.log(seconds ? `${seconds.toFixed(1).padStart(7)} s  ${name}` : `           ${name}`);
console.log(failed ? "\ncontainer test FAILED" : "\ncontainer test passed");
process.exit(failed ? 1 : 0);
