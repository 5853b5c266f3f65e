import { afterAll } from "bun:test";
import { SQL } from "bun";
import { migrateDeploy } from "../src/lib/migrate.ts";
import { adminDatabaseUrl, databaseUrl, templateEnvVar } from "./helpers/env.ts";

// Migrate one template database with Prisma's own `migrate deploy`, once per run; each
// test file then gets a fresh copy (CREATE DATABASE ... TEMPLATE), which takes milliseconds.
const template = `chat_tpl_${process.pid}_${Date.now().toString(36)}`;
const admin = new SQL(adminDatabaseUrl);
await admin.unsafe(`CREATE DATABASE "${template}"`);
await migrateDeploy(databaseUrl(template), process.env);
process.env[templateEnvVar] = template;

afterAll(async () => {
  await admin.unsafe(`DROP DATABASE IF EXISTS "${template}" WITH (FORCE)`);
  await admin.close();
});
