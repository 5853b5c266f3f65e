import { $ } from "bun";

/** Root runs system commands as it is; anyone else through sudo (CI runs as root). */
export const sudo = process.getuid?.() === 0 ? [] : ["sudo"];

/** Runs `cmd`, returns its stdout; on failure throws with its stderr and the command line. */
export async function run(cmd: string[], options: { cwd?: string; env?: Record<string, string | undefined>; stdin?: Blob | Uint8Array } = {}): Promise<string> {
  const proc = Bun.spawn(cmd, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdin: options.stdin ?? "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} exited ${code}\n${(err || out).trim().split("\n").slice(-25).join("\n")}`);
  return out;
}

/** Like `run`, but the output goes to this process's (long steps: image builds). */
export async function runShown(cmd: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}): Promise<void> {
  const proc = Bun.spawn(cmd, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdin: "ignore", stdout: "inherit", stderr: "inherit" });
  const code = await proc.exited;
  if (code !== 0) throw new Error(`${cmd.join(" ")} exited ${code}`);
}

/** Like `run`, but the output is shown as it comes as well as returned (the README's Docker block: its build, then its `ps`). */
export async function runShownAndKept(cmd: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}): Promise<string> {
  const proc = Bun.spawn(cmd, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let output = "";
  const pump = async (stream: ReadableStream<Uint8Array>, to: NodeJS.WriteStream) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      to.write(chunk);
      output += decoder.decode(chunk, { stream: true });
    }
  };
  const [code] = await Promise.all([proc.exited, pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr)]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} exited ${code}`);
  return output;
}

export async function succeeds(cmd: string[]): Promise<boolean> {
  const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  return (await proc.exited) === 0;
}

export const has = (command: string) => Bun.which(command) !== null;

/** Polls `check` until it returns a value other than undefined, or throws `what` after `ms`. */
export async function until<T>(what: string, ms: number, check: () => Promise<T | undefined> | T | undefined, every = 250): Promise<T> {
  const deadline = performance.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}${last ? ` (last error: ${last instanceof Error ? last.message : last})` : ""}`);
    await Bun.sleep(every);
  }
}

export { $ };
