import path from "node:path";
import { createApp } from "./app.ts";
import { ConfigError, loadConfig, unknownSettings, type Config } from "./config.ts";
import { createDb } from "./lib/db.ts";
import { checkLibraryVersions, LibraryVersionError } from "./lib/internals.ts";
import { devJwtSecret } from "./lib/dev-secret.ts";
import { startEmbeddedDatabase, type EmbeddedDatabase } from "./lib/embedded-db.ts";
import { createLogger, flushLogs } from "./lib/logger.ts";
import { createRedis, redisConnected } from "./lib/redis.ts";
import { migrateIfPending } from "./lib/migrate.ts";
import { serve } from "./server.ts";
import { createAuditService } from "./audit/audit.service.ts";
import { backfillNameSkeletons } from "./lib/name-skeletons.ts";
import { promoteListedAdmins } from "./users/reserved-names.ts";

// The entry point: read config, build dependencies, serve, and stop cleanly on SIGTERM.

let config: Config;
try {
  config = loadConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(error.message);
  process.exit(1);
}

// Before touching the database: an instance whose socket.io or ioredis is not the version their
// internals were checked on (src/lib/internals.ts) must not start at all. serve() checks again.
try {
  checkLibraryVersions();
} catch (error) {
  if (!(error instanceof LibraryVersionError)) throw error;
  console.error(error.message);
  process.exit(1);
}

const logger = createLogger(config.LOG_LEVEL);
const dev = config.NODE_ENV === "development";
// A misspelt setting is otherwise ignored without a word (RATE_LIMIT_REGISTER=off looks right and does nothing).
for (const { name, closest } of unknownSettings(process.env)) {
  logger.warn({ variable: name, closest }, `unknown setting ${name} is ignored; did you mean ${closest}?`);
}

let embedded: EmbeddedDatabase | undefined;
let databaseUrl = config.DATABASE_URL;
if (!databaseUrl) {
  // Only reachable in development: config validation requires DATABASE_URL elsewhere.
  embedded = await startEmbeddedDatabase(path.join(config.DATA_DIR, "pglite"));
  databaseUrl = embedded.url;
  logger.info({ dir: path.join(config.DATA_DIR, "pglite") }, "using the embedded PostgreSQL (PGlite); set DATABASE_URL to use a server");
}

const db = createDb(databaseUrl, { poolSize: embedded ? 4 : 10, timeoutMs: config.DATABASE_TIMEOUT_MS });
if (dev) {
  // In production, migrations are a deploy step (`bun run db:migrate`), run once before instances start.
  const applied = await migrateIfPending(db, databaseUrl, process.env);
  if (applied.length > 0) logger.info({ migrations: applied }, "applied migrations");
}

// Rows stored before look-alike names were one name get their skeletons, before anyone registers here.
await backfillNameSkeletons(db, logger);

if (config.ADMIN_USERNAMES.length > 0) {
  await promoteListedAdmins({ db, audit: createAuditService({ db }), logger }, config.ADMIN_USERNAMES);
}

const jwtSecret = config.JWT_SECRET ?? (await devJwtSecret(config.DATA_DIR));
// With REDIS_URL, this instance shares broadcasts, presence, revocations and limits with the others.
const redis = config.REDIS_URL ? createRedis(config.REDIS_URL, config.REDIS_KEY_PREFIX) : undefined;
const app = createApp({ config: { ...config, JWT_SECRET: jwtSecret }, db, logger, redis });
// Redis commands fail rather than wait while it is away (src/lib/redis.ts): let it connect before serving
// (bounded; without it the instance serves alone, logs "redis unavailable", and catches up when it comes).
if (redis) await redisConnected(redis);
// The users a graceful stop before this one left online stay so through their grace (api.md §8).
await app.services.presence.takeOver().catch((error) => logger.warn({ err: error }, "presence not taken over"));
const server = serve(app, config);

let exiting = false;
async function shutdown(signal: string) {
  if (exiting) return;
  exiting = true;
  logger.info({ signal }, "shutting down");
  // server.stop() keeps to SHUTDOWN_TIMEOUT_MS; so must closing the pool, which otherwise
  // waits for every checked-out connection, however long a stuck query holds one.
  const deadline = Bun.sleep(config.SHUTDOWN_TIMEOUT_MS).then(() => "timeout" as const);
  await server.stop();
  if ((await Promise.race([db.$disconnect(), deadline])) === "timeout") {
    logger.warn({ timeoutMs: config.SHUTDOWN_TIMEOUT_MS }, "database connections still busy at the shutdown deadline; exiting anyway");
  }
  await embedded?.stop();
  // quit, not disconnect: the last presence updates of the closed sockets are still in flight.
  await redis?.quit().catch(() => undefined);
  logger.info("stopped");
  await flushLogs(logger); // else the last line can be lost: it is often still being written
  process.exit(0);
}
// A dependency's unawaited promise (the Redis adapter's, during a Redis outage) must not take
// the instance down: log it; /readyz reports the outage meanwhile.
process.on("unhandledRejection", (error) => logger.error({ err: error }, "unhandled rejection"));
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
// Announced only once a signal can be handled: whoever waits for this line may stop us at once.
// Say where it really listens: every interface is not the same as the loopback URL that reaches it.
const everywhere = config.HOST === "0.0.0.0" || config.HOST === "::";
logger.info({ url: server.url, host: config.HOST }, everywhere ? `chat service listening on every interface (${config.HOST}), port ${server.port}: ${server.url} from this machine` : `chat service listening on ${server.url}`);
