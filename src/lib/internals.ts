import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
// Not exported from the package's index; a type only, of the version checked below.
import type { Socket as BunEngineSocket } from "@socket.io/bun-engine/dist/socket";
import type { ServerWebSocket } from "bun";
import type { Redis } from "ioredis";
import type { Adapter, BroadcastOptions } from "socket.io-adapter";

/**
 * Every place the service reads or writes what a library does not publish: private members,
 * untyped fields, and behaviour its documentation does not promise. They are typed here, once,
 * and valid only for the exact versions in `expectedLibraries`: `checkLibraryVersions()` runs at
 * start-up and refuses any other installed version, so an upgrade fails at once, naming what to
 * re-check, instead of breaking fan-out, slow-client drops or Redis reconnection at runtime.
 *
 * To upgrade one of these libraries: read what its entry lists against the new version's source,
 * adapt the accessors below (and the files named), run the tests those files name, then change
 * the version here.
 *
 * engine.io is not listed: socket.io loads it, but served through `io.bind()` with the Bun engine
 * none of its code runs: the sessions are @socket.io/bun-engine's.
 */

/** A library version this module was written against, and what it relies on in it. */
export interface ExpectedLibrary {
  name: string;
  version: string;
  /** Resolved from this package's directory (the copy that package loads), not from the service's. */
  loadedBy?: string;
  /** What depends on its internals: what to re-check before accepting another version. */
  reCheck: string;
}

export const expectedLibraries: readonly ExpectedLibrary[] = [
  {
    name: "socket.io",
    version: "4.8.4",
    reCheck:
      "Socket#client.writeToEngine and Socket#notifyOutgoingListeners (native-fanout.ts); that close() puts back the Adapter " +
      "prototype methods uws.js replaces (native-fanout.ts keeps its patch as accessors); that socket.conn is the bound engine's session",
  },
  {
    name: "socket.io-adapter",
    version: "2.5.8",
    loadedBy: "socket.io",
    reCheck:
      "Adapter.prototype addAll/del/delAll/broadcast (patched by native-fanout.ts; ClusterAdapter must still deliver through " +
      "super.broadcast) and the adapter's nsp, sids, encoder and apply() (test/fanout.test.ts)",
  },
  {
    name: "socket.io-parser",
    version: "4.2.7",
    loadedBy: "socket.io",
    reCheck: "Encoder#encode gives one string for a packet without binary, which native-fanout.ts publishes after Engine.IO's '4'",
  },
  {
    name: "@socket.io/bun-engine",
    version: "0.1.2",
    reCheck:
      "Socket#writeBuffer (private: packets held for a polling client; slow-clients.ts, server.ts acksDelivered), the websocket " +
      "transport's private `socket` (the Bun ServerWebSocket; native-fanout.ts, slow-clients.ts), packetCreate/flush events, and " +
      "that the websocket transport writes at once (test/slow-clients.test.ts, test/fanout.test.ts, test/lifecycle.test.ts)",
  },
  {
    name: "@socket.io/redis-streams-adapter",
    version: "0.3.1",
    reCheck:
      "what forStreamsAdapter in redis.ts assumes: two duplicate() connections (an XREAD BLOCK loop, a SUBSCRIBE), PUBLISH and " +
      "SUBSCRIBE not awaited; and that its ClusterAdapter delivers through Adapter.prototype.broadcast (test/redis-outage.test.ts, test/scaleout.test.ts)",
  },
  {
    name: "ioredis",
    version: "5.8.2",
    reCheck:
      "Redis#socketTimeoutTimer (private), cleared on close by redis.ts (redis/ioredis#2147): drop that work-around once the " +
      "fix (#2148) is released (test/redis-outage.test.ts)",
  },
];

/** An installed library is not the version `expectedLibraries` was written for. */
export class LibraryVersionError extends Error {
  constructor(
    readonly library: string,
    readonly expected: string,
    readonly found: string | undefined,
    reCheck: string,
  ) {
    super(
      `${library} ${found === undefined ? "is not installed" : `${found} is installed`}, but src/lib/internals.ts was written for ` +
        `${library} ${expected}. Re-check against the installed version: ${reCheck}; then update its version in src/lib/internals.ts.`,
    );
    this.name = "LibraryVersionError";
  }
}

/** The package.json of `name` as resolved from `fromFile`, or undefined when it is not installed. */
function packageJsonOf(name: string, fromFile: string): string | undefined {
  let entry: string;
  try {
    entry = createRequire(fromFile).resolve(name);
  } catch {
    return undefined;
  }
  // Up from its entry point to its own package.json (some have nested ones, `{"type": "module"}` and the like).
  for (let dir = path.dirname(entry); ; dir = path.dirname(dir)) {
    const file = path.join(dir, "package.json");
    if (existsSync(file) && (JSON.parse(readFileSync(file, "utf8")) as { name?: string }).name === name) return file;
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** The version of `library` installed where the service (or the package that loads it) finds it. */
export function installedVersion({ name, loadedBy }: ExpectedLibrary): string | undefined {
  const from = loadedBy ? packageJsonOf(loadedBy, import.meta.filename) : import.meta.filename;
  const file = from && packageJsonOf(name, from);
  return file ? (JSON.parse(readFileSync(file, "utf8")) as { version?: string }).version : undefined;
}

/**
 * Throws a LibraryVersionError for the first library in `expectedLibraries` installed in another
 * version (or not at all). Call it before serving; it reads a few package.json files.
 */
export function checkLibraryVersions(versionOf: (library: ExpectedLibrary) => string | undefined = installedVersion): void {
  for (const library of expectedLibraries) {
    const found = versionOf(library);
    if (found !== library.version) throw new LibraryVersionError(library.name, library.version, found, library.reCheck);
  }
}

// ---- @socket.io/bun-engine ----

/** An Engine.IO session as it is at runtime: @socket.io/bun-engine's Socket. */
export type EngineSession = BunEngineSocket;
/** An Engine.IO packet as a session queues it. */
export interface EnginePacket {
  type: string;
  data?: unknown;
}
interface EngineSessionInternals {
  writeBuffer: EnginePacket[];
  transport: { name: string; socket?: ServerWebSocket<unknown> };
  /** The handshake request as the engine copied it (url, every header, the query): read by socket.io's `handshake` only. */
  request?: object;
}

/**
 * A Socket.IO socket's Engine.IO session. socket.io types `conn` as engine.io's Socket; served
 * through `io.bind(engine)`, it is the Bun engine's.
 */
export const engineSession = (socket: { conn: unknown }) => socket.conn as EngineSession;

/** The session's Bun websocket while it is on the websocket transport (the transport's private `socket`); undefined on polling. */
export function websocketOf(session: EngineSession): ServerWebSocket<unknown> | undefined {
  const transport = (session as unknown as EngineSessionInternals).transport;
  return transport.name === "websocket" ? transport.socket : undefined;
}

/**
 * Lets go of the handshake request once Socket.IO has built `socket.handshake` from it: nothing
 * reads either afterwards (the token and `since` are gone from `auth` already), and every header
 * string of every handshake would otherwise live as long as its socket.
 */
export function dropHandshakeRequest(socket: { conn: unknown; handshake: { headers: object; query: object } }): void {
  (engineSession(socket) as unknown as EngineSessionInternals).request = undefined;
  socket.handshake.headers = nothing;
  socket.handshake.query = nothing;
}
/** One empty object for every socket's dropped headers and query. */
const nothing = Object.freeze({});

/** Packets the session holds for its client (its private `writeBuffer`): on polling, until the next GET takes them. */
export const queuedPackets = (session: EngineSession): readonly EnginePacket[] => (session as unknown as EngineSessionInternals).writeBuffer;

/** Drops what the session holds for its client, so that closing it does not wait for a client that will not read. */
export function discardQueuedPackets(session: EngineSession): void {
  (session as unknown as EngineSessionInternals).writeBuffer = [];
}

// ---- socket.io and socket.io-adapter ----

/** A Socket.IO socket as an adapter holds it, with what the native fan-out calls of it (untyped in socket.io). */
export interface AdapterSocket {
  conn: unknown;
  client: { writeToEngine(packets: unknown[], opts: { preEncoded: true; volatile?: boolean; compress?: boolean }): void };
  notifyOutgoingListeners?: (packet: unknown) => void;
}
/** What the native fan-out reads of an adapter: its namespace, rooms by socket, encoder and socket selection (private or `any` in socket.io-adapter). */
export interface AdapterInternals {
  nsp: { name: string; server: object; sockets: Map<string, AdapterSocket> };
  sids: Map<string, Set<string>>;
  rooms: Map<string, Set<string>>;
  encoder: { encode(packet: unknown): unknown[] };
  apply(opts: BroadcastOptions, callback: (socket: AdapterSocket) => void): void;
}

export const adapterInternals = (adapter: Adapter) => adapter as unknown as AdapterInternals;

/**
 * The prototype of socket.io-adapter's `Adapter` class that `adapter` derives from: the one nearest
 * the root that defines `broadcast` (the cluster adapters override it and call it through `super`).
 * Found from the adapter itself, not imported: a test runner may evaluate socket.io-adapter more than once.
 */
export function baseAdapterPrototype(adapter: object): Adapter {
  let base: object | undefined;
  for (let proto = Object.getPrototypeOf(adapter); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    if (Object.hasOwn(proto, "broadcast")) base = proto;
  }
  if (!base) throw new Error("not a socket.io adapter");
  return base as Adapter;
}

// ---- ioredis ----

/** Clears the client's socket-timeout timer (private `socketTimeoutTimer`), which ioredis 5 leaves running after a close. */
export function clearSocketTimeout(redis: Redis): void {
  const internals = redis as unknown as { socketTimeoutTimer?: ReturnType<typeof setTimeout> };
  clearTimeout(internals.socketTimeoutTimer);
  internals.socketTimeoutTimer = undefined;
}
