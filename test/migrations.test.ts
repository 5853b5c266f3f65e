import { expect, test } from "bun:test";
import { readdir } from "node:fs/promises";
import path from "node:path";
import type { Db } from "../src/lib/db.ts";
import { pendingMigrations } from "../src/lib/migrate.ts";
import { createTestDatabase } from "./helpers/db.ts";
import { projectRoot } from "./helpers/process.ts";

// The "applied migrations" line of `bun run dev` (src/index.ts) lists what pendingMigrations
// returns: in the order Prisma applies them, oldest first, whatever order the file system lists.

const names = async () =>
  (await readdir(path.join(projectRoot, "prisma", "migrations"), { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);

test("a new database: every migration pending, oldest first", async () => {
  // No _prisma_migrations table: the query fails, as on a database never migrated.
  const blank = { $queryRaw: async () => Promise.reject(new Error('relation "_prisma_migrations" does not exist')) } as unknown as Db;
  const pending = await pendingMigrations(blank);
  expect(pending).toEqual([...(await names())].sort());
  expect(pending.length).toBeGreaterThan(5);
  expect(pending[0]).toMatch(/^\d{14}_/);
});

test("a migrated database: nothing pending; with the newest two forgotten, those two, oldest first", async () => {
  const database = await createTestDatabase();
  expect(await pendingMigrations(database.db)).toEqual([]);
  const newest = [...(await names())].sort().slice(-2);
  await database.sql`UPDATE _prisma_migrations SET finished_at = NULL WHERE migration_name IN ${database.sql(newest)}`;
  expect(await pendingMigrations(database.db)).toEqual(newest);
});
