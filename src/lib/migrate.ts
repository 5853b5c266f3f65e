import { readdir } from "node:fs/promises";
import path from "node:path";
import type { Db } from "./db.ts";

const projectRoot = path.resolve(import.meta.dir, "../..");
const migrationsDir = path.join(projectRoot, "prisma", "migrations");

/** Names of migrations in `prisma/migrations` that the database has not finished applying, oldest first (as Prisma applies them). */
export async function pendingMigrations(db: Db): Promise<string[]> {
  const entries = await readdir(migrationsDir, { withFileTypes: true });
  // readdir's order is the file system's; the names start with their timestamp.
  const local = entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  let applied: string[] = [];
  try {
    const rows = await db.$queryRaw<{ migration_name: string }[]>`
      SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL`;
    applied = rows.map((r) => r.migration_name);
  } catch {
    // No _prisma_migrations table yet: a new database, everything is pending.
  }
  return local.filter((name) => !applied.includes(name));
}

/**
 * Applies migrations with Prisma's own `migrate deploy` (the command `bun run db:migrate`
 * runs), in a child process under this same Bun binary, so there is one way migrations
 * reach a database. `baseEnv` is the environment to pass on (PATH and the like).
 */
export async function migrateDeploy(
  databaseUrl: string,
  baseEnv: Record<string, string | undefined>,
  { showOutput = false }: { showOutput?: boolean } = {},
): Promise<void> {
  const cli = path.join(projectRoot, "node_modules", "prisma", "build", "index.js");
  const output = showOutput ? "inherit" : "pipe";
  const child = Bun.spawn([process.execPath, cli, "migrate", "deploy"], {
    cwd: projectRoot,
    env: { ...baseEnv, DATABASE_URL: databaseUrl, CHECKPOINT_DISABLE: "1", PRISMA_HIDE_UPDATE_MESSAGE: "1" },
    stdout: output,
    stderr: output,
  });
  const [code, out, err] = await Promise.all([
    child.exited,
    child.stdout instanceof ReadableStream ? new Response(child.stdout).text() : "",
    child.stderr instanceof ReadableStream ? new Response(child.stderr).text() : "",
  ]);
  if (code !== 0) throw new Error(`prisma migrate deploy failed (exit ${code})\n${out}\n${err}`.trim());
}

/** Applies pending migrations only; Prisma's CLI takes ~10 s even when there is nothing to do. */
export async function migrateIfPending(db: Db, databaseUrl: string, baseEnv: Record<string, string | undefined>): Promise<string[]> {
  const pending = await pendingMigrations(db);
  if (pending.length > 0) await migrateDeploy(databaseUrl, baseEnv);
  return pending;
}
