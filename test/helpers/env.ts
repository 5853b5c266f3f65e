/** The PostgreSQL server tests create their databases on (trust auth on loopback). */
export const adminDatabaseUrl = process.env.TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";

/** Name of the migrated template database made by `test/preload.ts`. */
export const templateEnvVar = "CHAT_TEST_TEMPLATE_DB";

export function databaseUrl(name: string): string {
  const url = new URL(adminDatabaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Real PostgreSQL, real sockets, argon2id: each test gets this long (set in every test file). */
export const TEST_TIMEOUT_MS = 30_000;
