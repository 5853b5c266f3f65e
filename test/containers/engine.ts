import { has, run, succeeds, sudo, until } from "./shell.ts";

/**
 * A Docker engine and Compose for the container test. Installs Debian's docker.io, docker-compose
 * (Compose v1) and debootstrap when they are missing, starts dockerd when no engine answers, and
 * stops only a dockerd it started.
 */
export interface Engine {
  /** The `docker` client to call; Debian's (the engine's own version) when it is installed. */
  docker: string;
  /** The compose command: `docker compose` (v2) when the client has it, else `docker-compose` (v1). */
  compose: string[];
  /** Whether this run started dockerd. */
  started: boolean;
  stop(): Promise<void>;
}

const PACKAGES = { dockerd: "docker.io", "docker-compose": "docker-compose", debootstrap: "debootstrap" } as const;

async function installMissing(): Promise<void> {
  const missing = Object.entries(PACKAGES).filter(([command]) => !has(command) && !Bun.file(`/usr/sbin/${command}`).size);
  if (missing.length === 0) return;
  const packages = missing.map(([, pkg]) => pkg);
  console.log(`installing ${packages.join(", ")} from Debian's packages`);
  const install = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "--no-install-recommends", ...packages];
  try {
    await run([...sudo, ...install]);
  } catch {
    await run([...sudo, "apt-get", "update", "-qq"]);
    await run([...sudo, ...install]);
  }
}

export async function startEngine(): Promise<Engine> {
  await installMissing();
  // /usr/local/bin may hold a newer client than Debian's engine; Debian's client speaks its API.
  const docker = (await Bun.file("/usr/bin/docker").exists()) ? "/usr/bin/docker" : "docker";
  let daemon: Bun.Subprocess | undefined;
  if (!(await succeeds([docker, "info"]))) {
    const log = "/tmp/chat-containers-dockerd.log";
    console.log(`starting dockerd (log: ${log})`);
    daemon = Bun.spawn([...sudo, "dockerd"], { stdin: "ignore", stdout: Bun.file(log), stderr: Bun.file(log) });
    await until("dockerd to answer `docker info`", 60_000, async () => ((await succeeds([docker, "info"])) ? true : undefined), 500);
  }
  const compose = (await succeeds([docker, "compose", "version"])) ? [docker, "compose"] : ["docker-compose"];
  return {
    docker,
    compose,
    started: daemon !== undefined,
    async stop() {
      if (!daemon) return;
      daemon.kill("SIGTERM");
      const exited = await Promise.race([daemon.exited, Bun.sleep(30_000).then(() => "timeout" as const)]);
      if (exited === "timeout") daemon.kill("SIGKILL");
      console.log("stopped the dockerd this run started");
    },
  };
}
