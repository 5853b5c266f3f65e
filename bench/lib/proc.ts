import { readdirSync, readFileSync } from "node:fs";

// What the kernel says a process used: CPU time (user + system) and resident memory.
// Linux only, like the machines the figures are quoted for.
const ticksPerSecond = 100;

function statFields(pid: number | string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after "(comm)", which may itself hold spaces.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** CPU milliseconds (user + system) the process has used so far. */
export function cpuMs(pid: number): number {
  const fields = statFields(pid);
  return fields ? ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond : 0;
}

/** Resident set size in KiB. */
export function rssKiB(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

/** CPU milliseconds used so far by each PostgreSQL process on this machine (the database's share of the load). */
export function postgresCpuMs(): Map<number, number> {
  const used = new Map<number, number>();
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (!readFileSync(`/proc/${pid}/comm`, "utf8").startsWith("postgres")) continue;
    } catch {
      continue;
    }
    const fields = statFields(pid);
    if (fields) used.set(Number(pid), ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond);
  }
  return used;
}

/** CPU used between two samples by the processes alive at the second (a backend that exited took its figures with it). */
function usedSince(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, ms] of after) total += ms - (before.get(pid) ?? 0);
  return total;
}

/** Samples CPU of the server, the generator and PostgreSQL across one measured stretch. */
export function cpuMeter(serverPid: number) {
  const server = cpuMs(serverPid);
  const database = postgresCpuMs();
  const started = performance.now();
  return (generatorCpuMs: number) => {
    const wallMs = performance.now() - started;
    const share = (ms: number) => Math.round((ms / wallMs) * 100);
    return {
      wallMs: Math.round(wallMs),
      serverCpuPercent: share(cpuMs(serverPid) - server),
      generatorCpuPercent: share(generatorCpuMs),
      databaseCpuPercent: share(usedSince(database, postgresCpuMs())),
    };
  };
}
