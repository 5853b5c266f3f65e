import { PrismaPg } from "@prisma/adapter-pg";
import { Pool } from "pg";
import { Prisma, PrismaClient } from "../generated/prisma/client.ts";

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

/** True for a unique-constraint violation, optionally on a constraint naming `field`. */
export function isUniqueViolation(error: unknown, field?: string): boolean {
  if (!(error instanceof Prisma.PrismaClientKnownRequestError) || error.code !== "P2002") return false;
  if (!field) return true;
  return JSON.stringify(error.meta ?? {}).includes(field);
}

// Connection-level failures: the database is down, unreachable or out of connections.
const unavailableCodes = new Set(["P1001", "P1002", "P1008", "P1017", "P2024", "P2037"]);
const unavailablePattern = /Query read timeout|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|Connection terminated|connection timeout|timeout exceeded when trying to connect|the database system is (starting up|shutting down)|terminating connection|is not queryable/i;
// The same from node-postgres itself (the message writer), by SQLSTATE: connection exceptions
// (class 08), too many connections, the server shutting down or restarting, and a statement
// cancelled at statement_timeout (the database too slow to answer in time).
const unavailableSqlStates = /^(08...|53300|57014|57P0[1-3])$/;

// The same as Prisma's driver adapter reports it (meta.driverAdapterError.cause), e.g. a raw
// query's P2010 on a connection the server reset.
const unavailableAdapterKinds = new Set(["DatabaseNotReachable", "ConnectionClosed", "SocketTimeout", "TooManyConnections"]);

function isAdapterUnavailable(meta: unknown): boolean {
  const cause = (meta as { driverAdapterError?: { cause?: { kind?: unknown; originalCode?: unknown } } } | undefined)?.driverAdapterError?.cause;
  if (!cause) return false;
  return unavailableAdapterKinds.has(String(cause.kind)) || (typeof cause.originalCode === "string" && unavailableSqlStates.test(cause.originalCode));
}

/** True when an error means "the database does not answer", not "the query was wrong". */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (error instanceof Prisma.PrismaClientInitializationError) return true;
  if (error instanceof Prisma.PrismaClientKnownRequestError && (unavailableCodes.has(error.code) || isAdapterUnavailable(error.meta))) return true;
  if (error instanceof Error) {
    const sqlState = (error as { code?: unknown }).code;
    if (typeof sqlState === "string" && unavailableSqlStates.test(sqlState)) return true;
    const cause = (error as { cause?: unknown }).cause;
    return unavailablePattern.test(error.message) || (cause !== undefined && isDatabaseUnavailable(cause));
  }
  return false;
}
