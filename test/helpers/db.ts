import { afterAll } from "bun:test";
import { SQL } from "bun";
import { createDb, type Db } from "../../src/lib/db.ts";
import { adminDatabaseUrl, databaseUrl, templateEnvVar } from "./env.ts";

export interface TestDatabase {
  name: string;
  url: string;
  /** A Prisma client on the test database, for assertions about what was stored. */
  db: Db;
  /** Plain SQL on the test database, for assertions that should not go through Prisma. */
  sql: SQL;
  drop(): Promise<void>;
}

/**
 * A fresh, migrated database for one test file, cloned from the preload's template and
 * dropped after the file's tests (registered with afterAll here, so no file forgets).
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const template = process.env[templateEnvVar];
  if (!template) throw new Error("test/preload.ts did not run (see bunfig.toml)");
  const name = `chat_test_${process.pid}_${crypto.randomUUID().slice(0, 8)}`;
  const admin = new SQL(adminDatabaseUrl);
  await admin.unsafe(`CREATE DATABASE "${name}" TEMPLATE "${template}"`);
  const url = databaseUrl(name);
  const db = createDb(url, { poolSize: 5 });
  const sql = new SQL(url);
  let dropped = false;
  const drop = async () => {
    if (dropped) return;
    dropped = true;
    await db.$disconnect();
    await sql.close();
    await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await admin.close();
  };
  afterAll(drop);
  return { name, url, db, sql, drop };
}
