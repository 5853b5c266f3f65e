import { describe, expect, setDefaultTimeout, test } from "bun:test";
import path from "node:path";
import { envSchema, loadConfig } from "../src/config.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §9: docker-compose.yml (PostgreSQL 15 and Redis, both health-checked; migrations applied
// once before any backend serves; two backends behind nginx on port 3001) and the Dockerfile
// (multi-stage, non-root, health check). No container engine runs the tests, so these are static
// checks of the files against each other, against package.json, the README and the
// configuration schema. `docker compose config` and hadolint run too when they are installed.

const root = path.resolve(import.meta.dir, "..");
const read = (file: string) => Bun.file(path.join(root, file)).text();

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

// ---------------------------------------------------------------------------------------------
// Inputs

const composeText = await read("docker-compose.yml");
const compose = Bun.YAML.parse(composeText);
const services: Record<string, Obj> = isObj(compose) && isObj(compose.services) ? (compose.services as Record<string, Obj>) : {};
const service = (name: string): Obj => services[name] ?? {};

const packageJson = JSON.parse(await read("package.json")) as {
  scripts: Record<string, string>;
  devDependencies: Record<string, string>;
};
const readme = await read("README.md");
const dockerfile = parseDockerfile(await read("Dockerfile"));
const finalStage = dockerfile.at(-1) ?? { from: "", instructions: [] };

/** Every variable the service reads: the keys of the zod object in src/config.ts. */
const configKeys = Object.keys(envSchema.shape).sort();

const backends = ["backend1", "backend2"] as const;

// ---------------------------------------------------------------------------------------------
// Helpers

/** A service's `environment`, map or list form, as name → value (values uninterpolated). */
function environment(svc: Obj): Record<string, string> {
  const env = svc.environment;
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((entry) => {
        const [name = "", ...value] = String(entry).split("=");
        return [name, value.join("=")];
      }),
    );
  }
  if (isObj(env)) return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v == null ? "" : String(v)]));
  return {};
}

/** `depends_on` as name → condition (the short list form means service_started). */
function dependsOn(svc: Obj): Record<string, string> {
  const deps = svc.depends_on;
  if (Array.isArray(deps)) return Object.fromEntries(deps.map((name) => [String(name), "service_started"]));
  if (isObj(deps)) {
    return Object.fromEntries(
      Object.entries(deps).map(([name, dep]) => [name, isObj(dep) && typeof dep.condition === "string" ? dep.condition : "service_started"]),
    );
  }
  return {};
}

/** Published ports as "published:target" (short or long syntax). */
function ports(svc: Obj): string[] {
  const list = Array.isArray(svc.ports) ? svc.ports : [];
  return list.map((p) => {
    if (isObj(p)) return `${p.published}:${p.target}`;
    // "127.0.0.1:3001:80/tcp" → "3001:80"
    return String(p).replace(/\/\w+$/, "").split(":").slice(-2).join(":");
  });
}

/** Bind mounts as "source:target[:ro]" (short or long syntax). */
function volumes(svc: Obj): string[] {
  const list = Array.isArray(svc.volumes) ? svc.volumes : [];
  return list.map((v) => (isObj(v) ? `${v.source}:${v.target}${v.read_only ? ":ro" : ""}` : String(v)));
}

/** Whether a service has a health check of its own in compose (not disabled). */
function composeHealthcheck(svc: Obj): string[] | undefined {
  const hc = svc.healthcheck;
  if (!isObj(hc) || hc.disable === true) return undefined;
  const cmd = hc.test;
  if (Array.isArray(cmd)) return cmd.map(String);
  return typeof cmd === "string" ? ["CMD-SHELL", cmd] : undefined;
}

/** A command (compose `command` or Dockerfile CMD) as an argv array. */
function argv(cmd: unknown): string[] {
  if (Array.isArray(cmd)) return cmd.map(String);
  return typeof cmd === "string" ? cmd.trim().split(/\s+/) : [];
}

/**
 * Compose interpolation of one value, as `docker compose` would do it given `vars`:
 * ${X}, ${X:-default}, ${X-default}, ${X:?error} and ${X?error} (which throws when X is unset).
 */
function interpolate(value: string, vars: Record<string, string>): string {
  return value.replace(/\$\{(\w+)(?:(:?)([-?])([^}]*))?\}/g, (_, name: string, colon: string, op: string | undefined, arg: string) => {
    const v = vars[name];
    const unset = v === undefined || (colon === ":" && v === "");
    if (!unset) return v;
    if (op === "?") throw new Error(`${name}: ${arg}`);
    return op === "-" ? arg : "";
  });
}

interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  from: string;
  instructions: Instruction[];
}

/** The Dockerfile as stages of instructions (comments dropped, continuation lines joined). */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let current = "";
  for (const line of text.split("\n")) {
    if (/^\s*#/.test(line)) continue;
    if (/\\\s*$/.test(line)) {
      current += line.replace(/\\\s*$/, " ");
      continue;
    }
    current += line;
    if (current.trim()) logical.push(current.trim());
    current = "";
  }
  if (current.trim()) logical.push(current.trim());

  const stages: Stage[] = [];
  for (const line of logical) {
    const [, keyword = "", args = ""] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const instruction = { keyword: keyword.toUpperCase(), args };
    if (instruction.keyword === "FROM") stages.push({ from: args.split(/\s+/)[0] ?? "", instructions: [] });
    stages.at(-1)?.instructions.push(instruction);
  }
  return stages;
}

const all = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.keyword === keyword);
const last = (stage: Stage, keyword: string) => all(stage, keyword).at(-1);

/** CMD/ENTRYPOINT in exec (JSON) form; shell form would run under /bin/sh -c and swallow SIGTERM. */
function execForm(instruction: Instruction | undefined): string[] | undefined {
  if (!instruction) return undefined;
  const args = instruction.args.replace(/^--\S+\s+/g, "");
  try {
    const parsed: unknown = JSON.parse(args);
    return Array.isArray(parsed) ? parsed.map(String) : undefined;
  } catch {
    return undefined;
  }
}

/** `ENV A=1 B=2` (and the legacy `ENV A 1`) of a stage, as name → value. */
function dockerEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { args } of all(stage, "ENV")) {
    if (!args.includes("=")) {
      const [name = "", ...rest] = args.split(/\s+/);
      env[name] = rest.join(" ");
      continue;
    }
    for (const [, name = "", value = ""] of args.matchAll(/(\w+)=("[^"]*"|\S*)/g)) env[name] = value.replace(/^"|"$/g, "");
  }
  return env;
}

/** The production start command the README documents (its Scripts table: "production start"). */
function readmeStartCommand(): string | undefined {
  const row = readme.split("\n").find((line) => /^\|\s*`[^`]+`\s*\|\s*production start\b/.test(line));
  return row ? /`([^`]+)`/.exec(row)?.[1] : undefined;
}

/** Names assigned in .env.example (uncommented `NAME=value` lines). */
function envExampleNames(text: string): string[] {
  return text
    .split("\n")
    .map((line) => /^([A-Za-z_][A-Za-z0-9_]*)=/.exec(line.trim())?.[1])
    .filter((name): name is string => name !== undefined);
}

// ---------------------------------------------------------------------------------------------

describe("docker-compose.yml", () => {
  test("parses as YAML and has the stack's services", () => {
    expect(isObj(compose)).toBe(true);
    for (const name of ["postgres", "redis", "migrate", ...backends, "nginx"]) {
      expect(Object.keys(services)).toContain(name);
    }
  });

  test("postgres is PostgreSQL 15 with a health check", () => {
    expect(String(service("postgres").image)).toMatch(/^(docker\.io\/)?(library\/)?postgres:15(\.\d+)*(-[\w.-]+)?$/);
    expect(composeHealthcheck(service("postgres"))?.join(" ")).toMatch(/pg_isready/);
  });

  test("redis is Redis 7 with a `redis-cli ping` health check", () => {
    expect(String(service("redis").image)).toMatch(/^(docker\.io\/)?(library\/)?redis:7(\.\d+)*(-[\w.-]+)?$/);
    expect(composeHealthcheck(service("redis"))?.join(" ")).toMatch(/redis-cli.*\bping\b/);
  });

  test("migrate is a one-shot `bun run db:migrate` once postgres is healthy", () => {
    const migrate = service("migrate");
    const cmd = argv(migrate.command);
    expect(cmd).toEqual(["bun", "run", "db:migrate"]);
    expect(Object.keys(packageJson.scripts)).toContain(cmd[2] ?? "");
    expect(dependsOn(migrate).postgres).toBe("service_healthy");
    // A one-shot: restarting it would never let service_completed_successfully settle.
    expect(String(migrate.restart ?? "no")).toBe("no");
    expect(environment(migrate).DATABASE_URL).toBe(environment(service("backend1")).DATABASE_URL ?? "");
  });

  test("migrate and both backends run the same image, built once from the Dockerfile", () => {
    const app = ["migrate", ...backends].map(service);
    const images = new Set(app.map((svc) => svc.image));
    expect(images.size).toBe(1);
    expect([...images][0]).toBeString();
    // Exactly one of them builds it: several services building one tag concurrently can fail.
    const builders = app.filter((svc) => svc.build !== undefined);
    expect(builders).toHaveLength(1);
    const build = builders[0]?.build;
    const context = isObj(build) ? build.context : build;
    expect(context).toBe(".");
    if (isObj(build) && build.dockerfile !== undefined) expect(build.dockerfile).toBe("Dockerfile");
  });

  test("both backends: one definition through the `x-backend` anchor", () => {
    expect(composeText).toMatch(/^x-backend: &backend\s*$/m);
    expect(composeText.match(/^\s+<<: \*backend\s*$/gm)?.length).toBe(2);
    expect(service("backend2")).toEqual(service("backend1"));
  });

  test.each(backends)("%s waits for healthy postgres and redis and for migrate to succeed", (name) => {
    expect(dependsOn(service(name))).toMatchObject({
      postgres: "service_healthy",
      redis: "service_healthy",
      migrate: "service_completed_successfully",
    });
  });

  test.each(backends)("%s has the production environment behind one proxy", (name) => {
    const env = environment(service(name));
    expect(env.DATABASE_URL).toMatch(/^postgres(ql)?:\/\/[^@]+@postgres:5432\/\w+$/);
    expect(env.REDIS_URL).toBe("redis://redis:6379");
    expect(env.JWT_SECRET).toMatch(/^\$\{JWT_SECRET:\?set JWT_SECRET\b[^}]*\}$/);
    expect(env.TRUST_PROXY).toBe("1");
    expect(env.NODE_ENV).toBe("production");
  });

  test.each(backends)("%s sets only configuration variables, and they pass loadConfig", (name) => {
    const env = environment(service(name));
    for (const variable of Object.keys(env)) expect(configKeys).toContain(variable);
    // Without JWT_SECRET, compose itself refuses to start (the ${JWT_SECRET:?…} form).
    expect(() => interpolate(env.JWT_SECRET ?? "", {})).toThrow(/JWT_SECRET/);
    // With one, the environment compose hands over is a valid production configuration.
    const vars = { JWT_SECRET: "s".repeat(48) };
    const resolved = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, interpolate(v, vars)]));
    const config = loadConfig({ ...dockerEnv(finalStage), ...resolved });
    expect(config.NODE_ENV).toBe("production");
    expect(config.TRUST_PROXY).toBe(1);
    expect(config.REDIS_URL).toBe("redis://redis:6379");
  });

  test("only nginx publishes a port: 3001 → 80", () => {
    for (const [name, svc] of Object.entries(services)) {
      if (name !== "nginx") expect({ name, ports: svc.ports }).toEqual({ name, ports: undefined });
    }
    expect(ports(service("nginx"))).toEqual(["3001:80"]);
  });

  test("nginx mounts deploy/nginx.conf read-only and waits for both backends to be healthy", () => {
    const nginx = service("nginx");
    expect(String(nginx.image)).toMatch(/^(docker\.io\/)?(library\/)?nginx:1\.\d+/);
    expect(volumes(nginx)).toContain("./deploy/nginx.conf:/etc/nginx/nginx.conf:ro");
    expect(dependsOn(nginx)).toMatchObject({ backend1: "service_healthy", backend2: "service_healthy" });
    // Its own health check: a request through it reaches a backend (test/containers/run.ts waits for it).
    expect(composeHealthcheck(nginx)?.join(" ")).toMatch(/wget .*http:\/\/127\.0\.0\.1\/healthz/);
  });

  test("every service_healthy dependency has a health check", () => {
    const imageHealthcheck = last(finalStage, "HEALTHCHECK");
    const builtImage = Object.values(services).find((svc) => svc.build !== undefined)?.image;
    for (const [name, svc] of Object.entries(services)) {
      for (const [dep, condition] of Object.entries(dependsOn(svc))) {
        if (condition !== "service_healthy") continue;
        const target = service(dep);
        const own = composeHealthcheck(target);
        const fromImage = target.image === builtImage && isObj(target.healthcheck) === false && imageHealthcheck !== undefined;
        expect({ service: name, dependsOn: dep, healthChecked: own !== undefined || fromImage }).toEqual({
          service: name,
          dependsOn: dep,
          healthChecked: true,
        });
      }
    }
  });

  test("deploy/nginx.conf proxies to the backends' port and listens on nginx's published target", async () => {
    const conf = Bun.file(path.join(root, "deploy/nginx.conf"));
    expect(await conf.exists()).toBe(true);
    const text = (await conf.text()).replace(/#.*$/gm, "");
    const upstreams = [...text.matchAll(/^\s*server\s+([\w.-]+):(\d+)\s*;/gm)].map((m) => `${m[1]}:${m[2]}`);
    const port = environment(service("backend1")).PORT ?? dockerEnv(finalStage).PORT;
    expect(upstreams.sort()).toEqual(backends.map((b) => `${b}:${port}`));
    const listen = [...text.matchAll(/^\s*listen\s+(\d+)\s*;/gm)].map((m) => m[1]);
    expect(listen).toEqual([ports(service("nginx"))[0]?.split(":")[1]]);
  });
});

describe("configuration files agree with src/config.ts", () => {
  // Read by the tests only (test/helpers/), never by the service: allowed in .env.example and
  // the README's table without being configuration keys. (.env.example has none of them today.)
  const testOnly = ["TEST_DATABASE_URL", "TEST_REDIS_URL"];

  test("every variable in .env.example is a configuration key, and every key is in .env.example", async () => {
    const names = envExampleNames(await read(".env.example"));
    // Once each: a second assignment silently overrides the first.
    expect(names.filter((n, i) => names.indexOf(n) !== i)).toEqual([]);
    expect(names.filter((n) => !testOnly.includes(n)).sort()).toEqual(configKeys);
  });

  test("the README's Configuration table lists exactly the configuration keys", () => {
    const section = /^## Configuration\n([\s\S]*?)^## /m.exec(readme)?.[1] ?? "";
    const names = section
      .split("\n")
      .filter((line) => line.startsWith("| `"))
      .flatMap((line) => [...(line.split("|")[1] ?? "").matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((m) => m[1] ?? ""));
    expect(names.filter((n) => !testOnly.includes(n)).sort()).toEqual(configKeys);
  });

  test("the migrate service and the Dockerfile set only configuration variables", () => {
    for (const variable of Object.keys(environment(service("migrate")))) expect(configKeys).toContain(variable);
    for (const variable of Object.keys(dockerEnv(finalStage))) expect(configKeys).toContain(variable);
  });
});

describe("Dockerfile", () => {
  test("is multi-stage: npm ci from the lockfile, Prisma client generated at build", () => {
    expect(dockerfile.length).toBeGreaterThanOrEqual(2);
    const earlier = dockerfile.slice(0, -1).flatMap((s) => s.instructions);
    expect(earlier.some((i) => i.keyword === "COPY" && /\bpackage-lock\.json\b/.test(i.args))).toBe(true);
    expect(earlier.some((i) => i.keyword === "RUN" && /\bnpm ci\b/.test(i.args))).toBe(true);
    // `prisma generate` runs as the root postinstall of `npm ci`, into src/generated.
    expect(packageJson.scripts.postinstall).toMatch(/\bprisma generate\b/);
    expect(all(finalStage, "COPY").some((i) => /^--from=\S+\s+\S*src\/generated\b/.test(i.args))).toBe(true);
  });

  test("the runtime stage has what `bun run db:migrate` needs (the migrate service runs this image)", () => {
    const copied = all(finalStage, "COPY")
      .filter((i) => !i.args.startsWith("--from="))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    for (const needed of ["prisma.config.ts", "prisma", "scripts", "src"]) expect(copied).toContain(needed);
    expect(packageJson.scripts["db:migrate"]).toMatch(/^bun scripts\//);
  });

  test("the final stage runs as a non-root user", () => {
    const user = last(finalStage, "USER")?.args.split(":")[0];
    expect(user).toBeString();
    expect(["root", "0", ""]).not.toContain(user ?? "");
  });

  test("HEALTHCHECK probes /healthz on the service's port, without curl or wget", () => {
    const hc = last(finalStage, "HEALTHCHECK")?.args ?? "";
    expect(hc).toMatch(/\bCMD\b/);
    expect(hc).toMatch(/\/healthz\b/);
    expect(hc).not.toMatch(/\b(curl|wget)\b/);
    expect(/:(\d+)\/healthz/.exec(hc)?.[1]).toBe(dockerEnv(finalStage).PORT);
  });

  test("CMD is the production start command the README documents, a package.json script", () => {
    const documented = readmeStartCommand();
    expect(documented).toBe("bun run start");
    const [, , script = ""] = (documented ?? "").split(" ");
    expect(Object.keys(packageJson.scripts)).toContain(script);
    const entrypoint = execForm(last(finalStage, "ENTRYPOINT"));
    const cmd = execForm(last(finalStage, "CMD"));
    expect([...(entrypoint ?? []), ...(cmd ?? [])]).toEqual((documented ?? "").split(" "));
  });

  test("the runtime image's Bun is the `bun` devDependency's version", () => {
    expect(finalStage.from).toMatch(/^(docker\.io\/)?oven\/bun:/);
    const tag = /^(?:docker\.io\/)?oven\/bun:v?(\d+\.\d+\.\d+)(?:-[\w.-]+)?$/.exec(finalStage.from)?.[1];
    expect(tag).toBe(packageJson.devDependencies.bun ?? "");
  });
});

test(".dockerignore keeps node_modules, .env and .data out of the build context", async () => {
  const patterns = (await read(".dockerignore"))
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"))
    .map((line) => line.replace(/^\/|^\*\*\//, "").replace(/\/$/, ""));
  for (const excluded of ["node_modules", ".env", ".data"]) expect(patterns).toContain(excluded);
  // Re-included later with "!": that would undo the exclusion.
  for (const excluded of ["node_modules", ".env", ".data"]) expect(patterns).not.toContain(`!${excluded}`);
});

// Run only where the tools exist; on a machine without them these are skipped (not failed).
const hasCompose =
  Bun.which("docker") !== null && Bun.spawnSync(["docker", "compose", "version"], { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
const hadolint = Bun.which("hadolint");

test.skipIf(!hasCompose)("`docker compose config` accepts the file, and refuses it without JWT_SECRET", () => {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const name of ["COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "JWT_SECRET"]) delete env[name];
  // --env-file /dev/null: a developer's .env must not decide the outcome.
  const config = (vars: Record<string, string>) =>
    Bun.spawnSync(["docker", "compose", "-f", "docker-compose.yml", "--env-file", "/dev/null", "config", "-q"], {
      cwd: root,
      env: { ...env, ...vars },
    });
  const ok = config({ JWT_SECRET: "s".repeat(48) });
  expect({ exitCode: ok.exitCode, stderr: ok.stderr.toString() }).toMatchObject({ exitCode: 0 });
  const missing = config({});
  expect(missing.exitCode).not.toBe(0);
  expect(missing.stderr.toString()).toMatch(/set JWT_SECRET/);
});

test.skipIf(!hadolint)("hadolint finds no errors in the Dockerfile", () => {
  const result = Bun.spawnSync([hadolint ?? "hadolint", "--failure-threshold", "error", "Dockerfile"], { cwd: root });
  // Output alongside the code, so a failure shows hadolint's findings.
  expect({ exitCode: result.exitCode, output: result.stdout.toString() + result.stderr.toString() }).toMatchObject({ exitCode: 0 });
});

test("every package in the lockfile runs on the Node.js the README promises (package.json engines: >=20), so `npm install` warns of no engine", async () => {
  const manifest = (await Bun.file(path.join(root, "package.json")).json()) as { engines: { node: string } };
  expect(manifest.engines.node).toBe(">=20");
  const lock = (await Bun.file(path.join(root, "package-lock.json")).json()) as { packages: Record<string, { engines?: unknown }> };
  const refusing = Object.entries(lock.packages)
    .filter(([name, pkg]) => name !== "" && typeof pkg.engines === "object" && pkg.engines !== null && typeof (pkg.engines as { node?: unknown }).node === "string")
    .map(([name, pkg]) => [name, (pkg.engines as { node: string }).node] as const)
    // The oldest Node 20 and the one these machines have.
    .filter(([, range]) => !Bun.semver.satisfies("20.0.0", range) && !Bun.semver.satisfies("20.20.2", range));
  expect(refusing).toEqual([]);
});

test("every dependency with an install script is named in package.json's allowScripts (npm 11.16+ warns of each one that is not; npm 12 skips its script), Bun's allowed", async () => {
  const manifest = (await Bun.file(path.join(root, "package.json")).json()) as { allowScripts: Record<string, boolean> };
  const lock = (await Bun.file(path.join(root, "package-lock.json")).json()) as { packages: Record<string, { hasInstallScript?: boolean }> };
  const withScripts = Object.entries(lock.packages)
    .filter(([key, pkg]) => key !== "" && pkg.hasInstallScript === true)
    .map(([key]) => key.slice(key.lastIndexOf("node_modules/") + "node_modules/".length));
  expect(withScripts.length).toBeGreaterThan(0);
  expect(withScripts.filter((name) => typeof manifest.allowScripts[name] !== "boolean")).toEqual([]);
  // Without its postinstall, `npx bun` only prints "Bun's postinstall script was not run".
  expect(manifest.allowScripts.bun).toBe(true);
  // Nothing named that no longer needs it.
  expect(Object.keys(manifest.allowScripts).filter((name) => !withScripts.includes(name))).toEqual([]);
});
