import { SQL } from "bun";
import { migrateDeploy } from "../../src/lib/migrate.ts";
import { createTokenSigner } from "../../src/lib/tokens.ts";

/** The PostgreSQL server the benchmark creates its databases on (as the tests do). */
export const adminUrl = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";

export function databaseUrl(name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

export interface BenchUser {
  id: number;
  token: string;
  /** A private channel with this user as its only member: ingest writes there, so each message is delivered once. */
  ownChannelId: number;
}

export const GENERAL_CHANNEL_ID = 1;
export const jwtSecret = `bench-${crypto.randomUUID()}`;

/**
 * One migrated template with `users` accounts (each with a live session and its own channel,
 * all in general) and 1,000 messages in general for the read path, each with its event in the
 * channel's log. Each scenario and server
 * gets a fresh copy, so none sees another's rows.
 */
export async function createTemplate(users: number): Promise<{ name: string; users: BenchUser[]; drop(): Promise<void> }> {
  const name = `chat_bench_tpl_${process.pid}`;
  const admin = new SQL(adminUrl, { max: 1 });
  await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  // BENCH_TEMPLATE_SOURCE: an already migrated database to copy (the test suite passes its own), else migrate.
  const source = process.env.BENCH_TEMPLATE_SOURCE;
  if (source) {
    await admin.unsafe(`CREATE DATABASE "${name}" TEMPLATE "${source}"`);
  } else {
    await admin.unsafe(`CREATE DATABASE "${name}"`);
    await migrateDeploy(databaseUrl(name), process.env);
  }

  const sql = new SQL(databaseUrl(name), { max: 1 });
  await sql`INSERT INTO users (username, username_key, password_hash)
            SELECT 'bench' || i, 'bench' || i, 'not-a-password-hash' FROM generate_series(1, ${users}::int) i`;
  await sql`INSERT INTO sessions (id, user_id, expires_at) SELECT gen_random_uuid(), id, now() + interval '1 day' FROM users`;
  await sql`INSERT INTO channel_members (channel_id, user_id) SELECT ${GENERAL_CHANNEL_ID}::int, id FROM users ON CONFLICT DO NOTHING`;
  await sql`INSERT INTO channels (name, kind, created_by) SELECT 'own-' || id, 'private', id FROM users`;
  await sql`INSERT INTO channel_members (channel_id, user_id) SELECT id, created_by FROM channels WHERE name LIKE 'own-%'`;
  await sql`INSERT INTO messages (channel_id, user_id, content)
            SELECT ${GENERAL_CHANNEL_ID}::int, 1 + (i % ${users}::int), 'seed message ' || i FROM generate_series(1, 1000) i`;
  // Rows inserted here bypass the service's write path, which logs every message in the channel's
  // event log (docs/api.md §11): log them as the migration logs messages stored before the log,
  // after whatever the source already logged, so the heads match the history a client sees.
  await sql`INSERT INTO channel_events (channel_id, seq, type, message_id, created_at)
            SELECT m.channel_id, c.seq + row_number() OVER (PARTITION BY m.channel_id ORDER BY m.id), 0, m.id, m.created_at
              FROM messages m JOIN channels c ON c.id = m.channel_id
             WHERE NOT EXISTS (SELECT 1 FROM channel_events e WHERE e.channel_id = m.channel_id AND e.message_id = m.id AND e.type = 0)`;
  await sql`UPDATE channels c SET seq = e.head FROM (SELECT channel_id, max(seq) AS head FROM channel_events GROUP BY channel_id) e WHERE e.channel_id = c.id`;
  const rows: { id: number; username: string; session_id: string; channel_id: number }[] = await sql`
    SELECT u.id, u.username, s.id::text AS session_id, c.id AS channel_id
      FROM users u JOIN sessions s ON s.user_id = u.id JOIN channels c ON c.created_by = u.id AND c.name LIKE 'own-%'
     ORDER BY u.id`;
  await sql.close();

  const signer = createTokenSigner(jwtSecret, 24 * 60 * 60);
  const seeded = await Promise.all(
    rows.map(async (r) => ({
      id: r.id,
      ownChannelId: r.channel_id,
      token: await signer.signAccess({ id: r.id, username: r.username, role: "user", sessionId: r.session_id }),
    })),
  );
  return {
    name,
    users: seeded,
    async drop() {
      await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await admin.close();
    },
  };
}

/** A fresh copy of the template for one server under test; `drop` removes it. */
export async function cloneDatabase(template: string, label: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `chat_bench_${label}_${process.pid}`;
  const admin = new SQL(adminUrl, { max: 1 });
  await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  await admin.unsafe(`CREATE DATABASE "${name}" TEMPLATE "${template}"`);
  return {
    url: databaseUrl(name),
    async drop() {
      await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await admin.close();
    },
  };
}

/** PostgreSQL's version string, for the results' header. */
export async function postgresVersion(): Promise<string> {
  const admin = new SQL(adminUrl, { max: 1 });
  const [row] = await admin`SHOW server_version`;
  await admin.close();
  return String((row as { server_version: string }).server_version);
}
