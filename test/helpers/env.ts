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

/**
 * Every test server, in-process or a child process, sets this METRICS_TOKEN: outside development
 * /metrics is off without one (api.md §7). `scrapeMetrics` presents it.
 */
export const testMetricsToken = "metrics-token-for-tests-0123456789";

/** The server's /metrics text, scraped with the test token. */
export async function scrapeMetrics(baseUrl: string): Promise<string> {
  const res = await fetch(`${baseUrl}/metrics`, { headers: { authorization: `Bearer ${testMetricsToken}` } });
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${await res.text()}`);
  return res.text();
}
