import { symlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

/**
 * The "baseline" target: this same service at an earlier commit, measured in the same run as
 * today's, so a change's cost is a ratio taken on the same machine under the same load, not
 * two runs' figures from different days. By default the commit is the merge-base of HEAD and
 * `main` (the code before this branch); `BENCH_BASELINE_REF` names another (a tag, a sha).
 *
 * It is checked out with `git worktree add --detach` into the system temp dir, reuses this
 * checkout's node_modules by symlink (so its dependencies are today's: the comparison is about
 * the code), and gets its own Prisma client (`prisma generate`, offline: the JS engine needs no
 * download). It runs on a copy of today's template database: its migrations are a subset of
 * today's, and the tables and columns it does not know are left alone.
 */

export interface Baseline {
  /** The ref as asked for, the commit it names, and that commit's subject line. */
  ref: string;
  sha: string;
  subject: string;
  /** Where it is checked out: the target's working directory. */
  root: string;
  remove(): Promise<void>;
}

async function git(cwd: string, args: string[]): Promise<string> {
  const proc = Bun.spawn(["git", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`git ${args.join(" ")} failed: ${err.trim() || out.trim()}`);
  return out.trim();
}

/** `BENCH_BASELINE_REF`, else the merge-base of HEAD and main. */
export async function baselineRef(projectRoot: string): Promise<{ ref: string; sha: string }> {
  const asked = process.env.BENCH_BASELINE_REF;
  if (asked) return { ref: asked, sha: await git(projectRoot, ["rev-parse", "--verify", `${asked}^{commit}`]) };
  return { ref: "merge-base of HEAD and main", sha: await git(projectRoot, ["merge-base", "HEAD", "main"]) };
}

let current: Baseline | undefined;

/** The running baseline's checkout (bench/lib/targets.ts starts it from there). */
export function baselineRoot(): string {
  if (!current) throw new Error("the baseline target needs prepareBaseline() first (bun run bench --baseline)");
  return current.root;
}

export async function prepareBaseline(projectRoot: string): Promise<Baseline> {
  const { ref, sha } = await baselineRef(projectRoot);
  const subject = await git(projectRoot, ["log", "-1", "--format=%s", sha]);
  const root = path.join(tmpdir(), `chat-bench-baseline-${process.pid}`);
  // A checkout left by a run that was killed: its directory is gone, its registration is not.
  await git(projectRoot, ["worktree", "prune"]);
  await rm(root, { recursive: true, force: true });
  await git(projectRoot, ["worktree", "add", "--detach", root, sha]);
  const remove = async () => {
    current = undefined;
    await git(projectRoot, ["worktree", "remove", "--force", root]).catch(() => rm(root, { recursive: true, force: true }));
  };
  try {
    await symlink(path.join(projectRoot, "node_modules"), path.join(root, "node_modules"), "dir");
    // Its own generated client, from its own schema, with the CLI it would use (the JS engine: no download).
    const proc = Bun.spawn([process.execPath, path.join(root, "node_modules", "prisma", "build", "index.js"), "generate"], {
      cwd: root,
      env: { ...process.env, CHECKPOINT_DISABLE: "1", PRISMA_HIDE_UPDATE_MESSAGE: "1" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) throw new Error(`prisma generate in the baseline failed (exit ${code}): ${err.trim() || out.trim()}`);
  } catch (error) {
    await remove();
    throw error;
  }
  current = { ref, sha, subject, root, remove };
  return current;
}
