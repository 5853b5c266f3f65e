import { PrismaPg } from "@prisma/adapter-pg";
import { Pool } from "pg";
import { PrismaClient } from "../generated/prisma/client.ts";

export type Db = PrismaClient;

// The pool under each client, for the few hot paths that talk to node-postgres directly
// (the message writer's named, batch-sized statements) without a second set of connections.
// A property of the client rather than a WeakMap entry, so a wrapper of the client (a Proxy,
// as some tests make) still leads to it.
const poolKey = Symbol("node-postgres pool");

/** How much longer than the server's own statement_timeout the client waits for an answer. */
export const serverCancelGraceMs = 1_000;

/**
 * One Prisma client per process, over node-postgres through Prisma's driver adapter:
 * the same code path for the embedded database and a real server, with no native
 * engine to download. The pool is ours, handed to the adapter, so `poolOf` can share it.
 *
 * `timeoutMs` bounds every round trip (DATABASE_TIMEOUT_MS): connecting, waiting for a pooled
 * connection, and each statement's answer. A database that stops answering then costs each
 * request a bounded wait and an UNAVAILABLE, never a hang.
 */
export function createDb(databaseUrl: string, options: { poolSize?: number; timeoutMs?: number } = {}): Db {
  const timeoutMs = options.timeoutMs ?? 5_000;
  const pool = new Pool({
    connectionString: databaseUrl,
    max: options.poolSize ?? 10,
    connectionTimeoutMillis: timeoutMs,
    // A server that answers slowly (a lock, a load spike) cancels the statement itself: a definite
    // failure, rolled back, so a refused message is known not to be stored.
    statement_timeout: timeoutMs,
    // A server that does not answer at all cannot cancel anything: the client gives up a little
    // later, and the outcome of a write is then unknown (a resend with the same clientId settles
    // it). A connection whose statement timed out is dropped by the pool when it is released with
    // the error (pool.query does so, and the message writer), so none is handed out again.
    query_timeout: timeoutMs + serverCancelGraceMs,
    // Lets the kernel notice a peer that vanished from an idle connection.
    keepAlive: true,
  });
  // An idle connection the server dropped: the pool discards it and the next checkout opens
  // another. Without a listener from the start (the adapter adds its own only once Prisma
  // connects), the event would crash the process.
  pool.on("error", () => undefined);
  // `$disconnect()` still ends the pool, as when the adapter owned it.
  const db = new PrismaClient({ adapter: new PrismaPg(pool, { disposeExternalPool: true }) });
  Object.defineProperty(db, poolKey, { value: pool });
  return db;
}

/** The node-postgres pool under a client made by `createDb`. */
export function poolOf(db: Db): Pool {
  const pool = (db as Db & { [poolKey]?: Pool })[poolKey];
  if (!pool) throw new Error("poolOf: this Prisma client was not made by createDb");
  return pool;
}

// Classifying database errors needs no Prisma client: it lives apart, for errors.ts to use without loading one.
export { isDatabaseUnavailable, isUniqueViolation } from "./db-errors.ts";
