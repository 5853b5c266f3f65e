import type { ServerWebSocket } from "bun";
import type { Adapter } from "socket.io-adapter";
import { adapterInternals, baseAdapterPrototype, engineSession, websocketOf as sessionWebsocket, type AdapterInternals, type AdapterSocket } from "../lib/internals.ts";

/**
 * Native fan-out for Socket.IO broadcasts, after socket.io's own uWebSockets integration
 * (`socket.io/dist/uws.js`): every websocket is subscribed, in Bun, to one topic per room it
 * is in and to its namespace's topic; a broadcast to one room (or to the whole namespace)
 * without exceptions is encoded once and sent with one `server.publish`. Sockets still on
 * HTTP long-polling get the same pre-encoded packet one by one, as before. Anything else
 * (several rooms, exceptions, volatile, binary attachments) takes socket.io's own path.
 *
 * The patch is on the base `Adapter.prototype` (found from the adapter itself), so it also covers the Redis adapter, whose
 * ClusterAdapter delivers both its local part and other instances' broadcasts through
 * `Adapter.prototype.broadcast`. Several Socket.IO servers may live in one process (the
 * tests run many): the prototype is patched once and each call finds its own Bun server by
 * the adapter's Socket.IO server; an adapter whose server was not registered behaves exactly
 * as without this file.
 *
 * Order: Bun's publish and `ws.send` go into the same per-connection queue (uWS flushes a
 * subscriber's pending topic messages before a direct send), and the websocket transport
 * sends synchronously, so a published broadcast and a packet emitted after it to the same
 * socket (an ack) arrive in emission order. Nothing here batches or defers.
 *
 * Slow subscribers: a publish returns -1 when some subscriber has data queued in Bun and 0 when
 * one was over its `backpressureLimit` (Bun drops the message for it and, with
 * `closeOnBackpressureLimit`, closes it). Then `hooks.publishBackpressured` is called with each
 * subscriber of the topic, so the caller can note which ones hold data (see slow-clients.ts).
 *
 * What this reads of socket.io's, socket.io-adapter's and @socket.io/bun-engine's internals is
 * typed, and version-checked at start-up, in src/lib/internals.ts.
 */

/** The Bun server a Socket.IO server is served by: only its `publish` is used. */
export interface Publisher {
  /** Bun's send status: -1 when some subscriber has data queued, 0 when it was dropped for one (or there was none). */
  publish(topic: string, data: string): number;
}

export interface FanoutHooks {
  /** A publish returned -1 or 0: called with each socket subscribed to its topic. */
  publishBackpressured?(socket: object, websocket: ServerWebSocket<unknown>): void;
  /**
   * Whether a room gets a Bun topic (default: every room). A topic costs Bun memory per subscriber;
   * a room nothing broadcasts to in bulk (a socket's own id room, one session's) is better reached
   * socket by socket, through socket.io, on the rare occasion it is.
   */
  isTopic?(room: string): boolean;
}

// The topic separator of uws.js (ASCII unit separator): no room name of ours contains it.
const topicOf = (namespace: string, room: string) => `${namespace}\x1f${room}`;

// Kept on the Socket.IO server, and the patch marked on the prototype, under registry symbols:
// a test runner may evaluate this file (and socket.io-adapter) more than once per process, and
// every copy must agree on which prototype is patched and where each server's publisher is.
const publisherKey = Symbol.for("chat.nativeFanout.publisher");
const hooksKey = Symbol.for("chat.nativeFanout.hooks");
const patchedKey = Symbol.for("chat.nativeFanout.patched");
/** Polling sockets already waiting for their upgrade, so each gets one listener. */
const awaitingUpgrade = new WeakSet<AdapterSocket>();
/**
 * Per adapter, its connected sockets that no publish reaches (on polling, or mid-upgrade), by id:
 * after a publish that reached every subscriber, only these are written to one by one, so a
 * broadcast costs JavaScript work per polling socket, not per socket in the room.
 */
const unpublishedByAdapter = new WeakMap<AdapterInternals, Map<string, AdapterSocket>>();
function unpublishedOf(adapter: AdapterInternals): Map<string, AdapterSocket> {
  let sockets = unpublishedByAdapter.get(adapter);
  if (!sockets) unpublishedByAdapter.set(adapter, (sockets = new Map()));
  return sockets;
}

/** Broadcasts of `io` go through `server.publish` from now on. Call once `server` listens. */
export function enableNativeFanout(io: { of(namespace: "/"): { adapter: object } }, server: Publisher, hooks: FanoutHooks = {}): void {
  (io as Record<symbol, unknown>)[publisherKey] = server;
  (io as Record<symbol, unknown>)[hooksKey] = hooks;
  const base = baseAdapterPrototype(io.of("/").adapter);
  const marks = base as unknown as Record<symbol, unknown>;
  if (marks[patchedKey]) return;
  patchAdapter(base);
  marks[patchedKey] = true;
}

/** The adapter's Bun server, or undefined when its Socket.IO server was not registered. */
const publisherOf = (adapter: AdapterInternals) => (adapter.nsp?.server as Record<symbol, Publisher | undefined> | undefined)?.[publisherKey];
const hooksOf = (adapter: AdapterInternals) => (adapter.nsp.server as Record<symbol, FanoutHooks | undefined>)[hooksKey];

/** The socket's Bun websocket while it is on the websocket transport; undefined on polling. */
function websocketOf(socket: AdapterSocket | undefined): ServerWebSocket<unknown> | undefined {
  return socket && sessionWebsocket(engineSession(socket));
}

/**
 * Subscribes a connected socket's websocket to `rooms`. The first time (not yet on the
 * namespace topic), to the namespace and to every room it is in, which covers rooms joined
 * before it connected and rooms joined while it was polling. On polling, waits for the upgrade.
 */
function subscribe(adapter: AdapterInternals, id: string, socket: AdapterSocket, rooms: Iterable<string>): void {
  const websocket = websocketOf(socket);
  const namespace = adapter.nsp.name;
  if (!websocket) {
    unpublishedOf(adapter).set(id, socket);
    if (awaitingUpgrade.has(socket)) return;
    awaitingUpgrade.add(socket);
    engineSession(socket).once("upgrade", () => {
      // Only if it is still connected: a socket that left meanwhile must get nothing.
      if (adapter.nsp.sockets.get(id) === socket) subscribe(adapter, id, socket, []);
    });
    return;
  }
  if (!websocket.isSubscribed(namespace)) {
    websocket.subscribe(namespace);
    rooms = adapter.sids.get(id) ?? [];
    unpublishedOf(adapter).delete(id);
  }
  const isTopic = hooksOf(adapter)?.isTopic;
  for (const room of rooms) if (room !== id && (!isTopic || isTopic(room))) websocket.subscribe(topicOf(namespace, room));
}

const patchedMethods = ["addAll", "del", "delAll", "broadcast"] as const;
type PatchedMethod = (typeof patchedMethods)[number];

function patchAdapter(prototype: Adapter): void {
  const original: Record<PatchedMethod, Function> = { addAll: prototype.addAll, del: prototype.del, delAll: prototype.delAll, broadcast: prototype.broadcast };
  prototype.addAll = function (this: Adapter, id, rooms) {
    const result = original.addAll.call(this, id, rooms);
    const adapter = adapterInternals(this);
    if (!publisherOf(adapter)) return result;
    // Only connected sockets: apply() skips the others, so a publish must not reach them either.
    // Socket.IO joins a socket to its own id room as it connects, which subscribes it then.
    const socket = adapter.nsp.sockets.get(id);
    if (socket) subscribe(adapter, id, socket, rooms);
    return result;
  };

  prototype.del = function (this: Adapter, id, room) {
    const result = original.del.call(this, id, room);
    const adapter = adapterInternals(this);
    if (publisherOf(adapter)) websocketOf(adapter.nsp.sockets.get(id))?.unsubscribe(topicOf(adapter.nsp.name, room));
    return result;
  };

  // On disconnect, and when a socket leaves the namespace but keeps its connection: no topic of
  // this namespace may reach it any more, the namespace's own included.
  prototype.delAll = function (this: Adapter, id) {
    const adapter = adapterInternals(this);
    unpublishedByAdapter.get(adapter)?.delete(id);
    const websocket = publisherOf(adapter) ? websocketOf(adapter.nsp.sockets.get(id)) : undefined;
    if (websocket) {
      const namespace = adapter.nsp.name;
      for (const room of adapter.sids.get(id) ?? []) websocket.unsubscribe(topicOf(namespace, room));
      websocket.unsubscribe(namespace);
    }
    return original.delAll.call(this, id);
  };

  prototype.broadcast = function (this: Adapter, packet, opts) {
    const adapter = adapterInternals(this);
    const publisher = publisherOf(adapter);
    const flags = opts.flags ?? {};
    // One topic covers one room (or the namespace) and nobody excepted; a volatile packet must be
    // dropped per socket whose transport is busy, which a publish cannot do.
    if (!publisher || opts.rooms.size > 1 || (opts.except?.size ?? 0) > 0 || flags.volatile) return original.broadcast.call(this, packet, opts);

    const [room] = opts.rooms;
    // A room without a topic (see FanoutHooks.isTopic; a socket's own id room never has one).
    const isTopic = hooksOf(adapter)?.isTopic;
    if (room !== undefined && (adapter.nsp.sockets.has(room) || (isTopic && !isTopic(room)))) return original.broadcast.call(this, packet, opts);

    packet.nsp = adapter.nsp.name;
    const encoded = adapter.encoder.encode(packet);
    const [text] = encoded;
    // Binary attachments travel as separate frames: left to socket.io (it encodes again).
    if (encoded.length !== 1 || typeof text !== "string") return original.broadcast.call(this, packet, opts);

    const topic = room === undefined ? adapter.nsp.name : topicOf(adapter.nsp.name, room);
    // "4" is Engine.IO's "message" packet type, which the websocket transport would prepend.
    const status = publisher.publish(topic, `4${text}`);
    const packetOpts = { preEncoded: true as const, compress: flags.compress };
    if (status > 0) {
      // Every subscriber has it (nothing queued, nobody dropped): only the sockets no publish
      // reaches are left, one by one. (An `onAnyOutgoing` listener sees a published packet only
      // on those: nothing here listens so.)
      const members = room === undefined ? undefined : adapter.rooms.get(room);
      if (room !== undefined && !members) return;
      for (const [id, socket] of unpublishedOf(adapter)) {
        if (members && !members.has(id)) continue;
        socket.notifyOutgoingListeners?.(packet);
        socket.client.writeToEngine(encoded, packetOpts);
      }
      return;
    }
    const backpressured = hooksOf(adapter)?.publishBackpressured;
    adapter.apply(opts, (socket) => {
      socket.notifyOutgoingListeners?.(packet);
      const websocket = websocketOf(socket);
      // Exactly once: a socket the publish did not reach (polling, mid-upgrade) gets it here.
      if (websocket?.isSubscribed(topic)) return void backpressured?.(socket, websocket);
      socket.client.writeToEngine(encoded, packetOpts);
    });
  };

  // socket.io's \`close()\` puts back the prototype methods its uWebSockets integration replaces
  // (uws.js \`restoreAdapter\`), which would undo this patch for every other server in the process
  // (the tests run many). So ours stay, as accessors: an assignment replaces what they delegate
  // to. One of ours assigned back (a copy of uws.js evaluated after this patch captured it) is
  // ignored, or it would delegate to itself.
  for (const name of patchedMethods) {
    const ours = prototype[name];
    Object.defineProperty(prototype, name, {
      configurable: true,
      get: () => ours,
      set(value: Function) {
        if (value !== ours) original[name] = value;
      },
    });
  }
}
