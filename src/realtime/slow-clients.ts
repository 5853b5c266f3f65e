import type { ServerWebSocket } from "bun";
import { discardQueuedPackets, engineSession, websocketOf, type EnginePacket, type EngineSession } from "../lib/internals.ts";

/**
 * Slow clients: a client that stops reading must not make the server hold an unbounded amount
 * of data for it. Past `maxBufferedBytes` held for one client, it is disconnected through the
 * normal path (its Socket.IO socket gets `disconnect`, so presence and the socket gauge follow),
 * reported through `onDrop` (a warning and a counter), and it catches up from history when it
 * reconnects, as after any other cut (api.md §3). `heldBytes` reads the same accounting for the
 * `socketio_buffered_bytes` gauges.
 *
 * Where the bytes wait, by transport:
 *
 * - websocket: first in the kernel, then in Bun. What the client does not read fills its own
 *   receive buffer and the server's socket send buffer, which Linux grows up to
 *   `net.ipv4.tcp_wmem`'s maximum (4 MiB by default); only then does Bun queue bytes for the
 *   connection in the process (seen with `ss` through a flood: the server's Send-Q climbs to
 *   ~3.9 MB while the stalled client's Recv-Q stays at ~120 KB and Bun holds nothing). So a
 *   stalled client is dropped once its kernel buffers are full *and* `maxBufferedBytes` more
 *   wait in Bun: the cap bounds the process's memory; the kernel's part is kernel memory,
 *   bounded per connection by the sysctl (per network namespace, so per container) and in all
 *   by `net.ipv4.tcp_mem`. Bun does not expose the connection's file descriptor, so the kernel's
 *   queue cannot be read or shrunk (SO_SNDBUF) from here. Clients fed the same broadcasts fill
 *   at the same rate, so they are dropped by the same publish.
 *   Bun enforces the cap (`backpressureLimit` + `closeOnBackpressureLimit`, set by
 *   `websocketHandler`) on everything sent to the connection, Engine.IO's `ws.send` and the
 *   native fan-out's `server.publish` alike: a message is queued while Bun holds at most the
 *   limit (so it may hold up to the limit plus that one message), the first one after that is
 *   dropped, nothing after it is sent, and the connection is closed on the next turn of the
 *   event loop (code 1006). Nothing accumulates in Engine.IO's own buffer on this
 *   transport: @socket.io/bun-engine writes to the websocket at once and never marks it
 *   unwritable.
 *   Bun reports that close exactly as a peer that vanished (1006, no reason, nothing buffered
 *   any more), so to tell who it dropped, this file notes every connection it sees holding
 *   data (before each Engine.IO write, and after each publish Bun reported backpressure or a
 *   drop for) and forgets it once Bun reports it drained: a connection closed with 1006 while
 *   noted is a client that stopped reading, and what was last noted is the latest known amount Bun
 *   held for it (not necessarily the amount at the drop).
 *   (At a low message rate the ping timeout usually ends such a client first: it does not
 *   read the ping either.)
 * - polling: in the Engine.IO socket's `writeBuffer`, until the client's next GET takes it. The
 *   ping timeout ends a client that stopped polling, but only after pingInterval + pingTimeout
 *   (45 s by default), and what a busy channel broadcasts meanwhile has no bound: so the bytes
 *   queued since the last poll are counted here, and past the cap the client is dropped. No
 *   kernel buffer absorbs a burst on this transport: a polling client is also dropped when more
 *   than the cap arrives for it between two of its polls.
 *
 * What this reads of @socket.io/bun-engine's internals (the session's `writeBuffer`, the
 * transport's websocket) goes through src/lib/internals.ts, which checks the version at start-up.
 */

/** One client disconnected for not reading. */
export interface SlowClientDrop {
  socketId: string;
  userId?: number;
  transport: "websocket" | "polling";
  /**
   * What the server held for it (bytes). Polling: exactly what was queued when it was dropped,
   * at most `limitBytes` (the packet that would have passed it ended the client). Websocket: the
   * last amount this file saw Bun hold for it, at most `limitBytes` plus one message; Bun does
   * not report the amount at its own drop, and a publish's status does not always tell which
   * subscriber held data (see native-fanout.ts), so this may be lower than at the drop.
   */
  bufferedBytes: number;
  limitBytes: number;
}

// The part of socket.io's public API this file uses.
interface IoSocket {
  id: string;
  connected: boolean;
  conn: unknown;
  data: { user?: { id: number } };
}
interface IoServer {
  on(event: "connection", listener: (socket: IoSocket) => void): unknown;
  of(namespace: "/"): { sockets: Map<string, IoSocket> };
}
/** The part of a Bun websocket handler this file wraps. */
interface WebsocketHandler<W> {
  close(ws: W, code: number, reason: string): void;
  drain?(ws: W): void;
}

export interface SlowClientGuard {
  /** Bun.serve's `websocket` option: `handler` with the cap, and the bookkeeping that names who Bun dropped. */
  websocketHandler<W extends ServerWebSocket<any>, H extends WebsocketHandler<W>>(
    handler: H,
  ): H & { backpressureLimit: number; closeOnBackpressureLimit: true; drain(ws: W): void };
  /** For the native fan-out: a publish reported backpressure or a drop, and `socket` subscribes to its topic. */
  publishBackpressured(socket: object, websocket: ServerWebSocket<unknown>): void;
  /** What this process holds for its connected clients now (bytes): in all, and for the one it holds most for. */
  heldBytes(): { total: number; max: number };
}

/** The close code Bun gives a connection closed without a Close frame: its own closes, and peers that vanished. */
const ABNORMAL_CLOSURE = 1006;

/** Bytes a queued Engine.IO packet takes on the wire (UTF-8 for text, plus its type and separator). */
function packetBytes({ data }: EnginePacket): number {
  if (typeof data === "string") return Buffer.byteLength(data) + 2;
  if (ArrayBuffer.isView(data) || data instanceof ArrayBuffer) return data.byteLength + 2;
  return 2;
}

export function guardSlowClients(io: IoServer, { maxBufferedBytes, onDrop }: { maxBufferedBytes: number; onDrop(drop: SlowClientDrop): void }): SlowClientGuard {
  /** Websockets seen holding data and not drained since: their socket and the bytes last seen. */
  const holding = new WeakMap<ServerWebSocket<unknown>, { socket: IoSocket; bytes: number }>();
  /** Bytes queued for a polling connection since its last poll. */
  const queuedFor = new WeakMap<EngineSession, number>();
  /** Polling connections being dropped: reported once. */
  const dropping = new WeakSet<object>();

  const noteBuffered = (socket: IoSocket, websocket: ServerWebSocket<unknown>) => {
    const bytes = websocket.getBufferedAmount();
    if (bytes > 0) holding.set(websocket, { socket, bytes });
  };

  const report = (socket: IoSocket, transport: SlowClientDrop["transport"], bufferedBytes: number) =>
    onDrop({ socketId: socket.id, userId: socket.data.user?.id, transport, bufferedBytes, limitBytes: maxBufferedBytes });

  /** Each connection's Socket.IO socket, for the listeners below (shared by every connection: `this` is the connection). */
  const socketOf = new WeakMap<EngineSession, IoSocket>();
  function flushed(this: EngineSession) {
    queuedFor.delete(this);
  }
  function packetCreated(this: EngineSession, packet: EnginePacket) {
    const conn = this;
    const socket = socketOf.get(conn);
    if (!socket) return;
    const transport = conn.transport;
    if (transport.writable) {
      // Written at once; on a websocket, Bun queues what the kernel does not take (and enforces the cap).
      const websocket = websocketOf(conn);
      if (websocket) noteBuffered(socket, websocket);
      return;
    }
    // Kept in the Engine.IO socket until the client polls again.
    const held = queuedFor.get(conn) ?? 0;
    const queued = held + packetBytes(packet);
    queuedFor.set(conn, queued);
    if (queued <= maxBufferedBytes || dropping.has(conn)) return;
    dropping.add(conn);
    report(socket, transport.name === "websocket" ? "websocket" : "polling", held);
    // Not from inside the write that noticed (socket.io or the fan-out may be looping over
    // sockets), but before the event loop turns. Nobody will read what waits: discard it, or
    // close() would wait for it to drain.
    queueMicrotask(() => {
      discardQueuedPackets(conn);
      conn.close();
    });
  }
  io.on("connection", (socket) => {
    const conn = engineSession(socket);
    socketOf.set(conn, socket);
    conn.on("flush", flushed);
    conn.on("packetCreate", packetCreated);
  });

  return {
    websocketHandler(handler) {
      return {
        ...handler,
        backpressureLimit: maxBufferedBytes,
        closeOnBackpressureLimit: true as const,
        drain(ws) {
          if (ws.getBufferedAmount() === 0) holding.delete(ws);
          handler.drain?.(ws);
        },
        close(ws, code, reason) {
          const held = holding.get(ws);
          holding.delete(ws);
          // Still connected: Bun ended it, not Engine.IO (a ping timeout, a server-side disconnect).
          if (held?.socket.connected && code === ABNORMAL_CLOSURE) report(held.socket, "websocket", held.bytes);
          handler.close(ws, code, reason);
        },
      };
    },
    publishBackpressured(socket, websocket) {
      noteBuffered(socket as IoSocket, websocket);
    },
    heldBytes() {
      let total = 0;
      let max = 0;
      for (const socket of io.of("/").sockets.values()) {
        const conn = engineSession(socket);
        const websocket = websocketOf(conn);
        const bytes = websocket ? websocket.getBufferedAmount() : (queuedFor.get(conn) ?? 0);
        total += bytes;
        max = Math.max(max, bytes);
      }
      return { total, max };
    },
  };
}
