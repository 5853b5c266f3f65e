import { run, runShown, until } from "./shell.ts";
import type { Engine } from "./engine.ts";

/** State of one container, as `docker inspect` tells it. */
export interface ContainerState {
  id: string;
  name: string;
  status: string;
  health?: string;
  exitCode: number;
  startedAt: Date;
  finishedAt: Date;
  ip: string;
}

/**
 * The compose stack of this checkout under a project name of the test's own (never a user's
 * stack), with the environment file the README has users write.
 */
export class Stack {
  constructor(
    readonly engine: Engine,
    readonly root: string,
    readonly project: string,
    readonly envFile: string,
  ) {}

  /** The compose file: the project's, or an edited copy (the scaling recipe). */
  file = "docker-compose.yml";

  /** `docker compose <args>`; output shown when `shown`. */
  async compose(args: string[], { shown = false } = {}): Promise<string> {
    const cmd = [...this.engine.compose, "--project-name", this.project, "--project-directory", this.root, "--env-file", this.envFile, "-f", this.file, ...args];
    if (shown) {
      await runShown(cmd, { cwd: this.root });
      return "";
    }
    return run(cmd, { cwd: this.root });
  }

  /** Container ids of `service` (running or not). */
  async ids(service: string): Promise<string[]> {
    return (await this.compose(["ps", "-a", "-q", service])).split("\n").filter(Boolean);
  }

  async state(id: string): Promise<ContainerState> {
    const [raw] = JSON.parse(await run([this.engine.docker, "inspect", id])) as any[];
    const nets = Object.values(raw.NetworkSettings.Networks ?? {}) as { IPAddress: string }[];
    return {
      id,
      name: String(raw.Name).replace(/^\//, ""),
      status: raw.State.Status,
      health: raw.State.Health?.Status,
      exitCode: raw.State.ExitCode,
      startedAt: new Date(raw.State.StartedAt),
      finishedAt: new Date(raw.State.FinishedAt),
      ip: nets[0]?.IPAddress ?? "",
    };
  }

  async service(service: string): Promise<ContainerState> {
    const [id] = await this.ids(service);
    if (!id) throw new Error(`no container for service ${service}`);
    return this.state(id);
  }

  /** Waits until every container of each service reports `healthy` by its own health check. */
  async waitHealthy(services: string[], ms = 180_000): Promise<void> {
    await until(`${services.join(", ")} healthy`, ms, async () => {
      for (const service of services) {
        const ids = await this.ids(service);
        if (ids.length === 0) return undefined;
        for (const id of ids) {
          const s = await this.state(id);
          if (s.status === "exited" || s.health === "unhealthy") throw new Error(`${s.name} is ${s.status}/${s.health}\n${await this.logs(id, 30)}`);
          if (s.health !== "healthy") return undefined;
        }
      }
      return true;
    }, 1000);
  }

  async logs(id: string, tail?: number): Promise<string> {
    const proc = Bun.spawn([this.engine.docker, "logs", ...(tail ? ["--tail", String(tail)] : []), id], { stdout: "pipe", stderr: "pipe" });
    const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
    await proc.exited;
    return out + err;
  }

  /** The project's network: its bridge interface on the host and its gateway address. */
  async network(): Promise<{ bridge: string; gateway: string; prefix: number }> {
    const [raw] = JSON.parse(await run([this.engine.docker, "network", "inspect", `${this.project}_default`])) as any[];
    const config = raw.IPAM.Config[0];
    return { bridge: `br-${String(raw.Id).slice(0, 12)}`, gateway: config.Gateway, prefix: Number(String(config.Subnet).split("/")[1]) };
  }
}
