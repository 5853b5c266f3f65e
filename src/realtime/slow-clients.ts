import type { ServerWebSocket } from "bun";

/**
 * Slow clients: a client that stops reading must not make the server hold an unbounded amount
 * of data for it. Past `maxBufferedBytes` held for one client, it is disconnected through the
 * normal path (its Socket.IO socket gets `disconnect`, so presence and the socket gauge follow),
 * reported through `onDrop` (a warning and a counter), and it catches up from history when it
 * reconnects, as after any other cut (api.md §3).
 *
 * Where the bytes wait, by transport:
 *
 * - websocket: in Bun, per connection, once the kernel's socket buffer is full. Bun enforces the
 *   cap (`backpressureLimit` + `closeOnBackpressureLimit`, set by `websocketHandler`) on
 *   everything sent to the connection, Engine.IO's `ws.send` and the native fan-out's
 *   `server.publish` alike: the first message that would be queued past the limit is dropped,
 *   nothing after it is sent, and the connection is closed on the next turn of the event loop
 *   (code 1006). Nothing accumulates in Engine.IO's own buffer on this transport:
 *   @socket.io/bun-engine writes to the websocket at once and never marks it unwritable.
 *   Bun reports that close exactly as a peer that vanished (1006, no reason, nothing buffered
 *   any more), so to tell who it dropped, this file notes every connection it sees holding
 *   data (before each Engine.IO write, and after each publish Bun reported backpressure or a
 *   drop for) and forgets it once Bun reports it drained: a connection closed with 1006 while
 *   noted is a client that stopped reading. (At a low message rate the ping timeout usually
 *   ends such a client first: it does not read the ping either.)
 * - polling: in the Engine.IO socket's `writeBuffer`, until the client's next GET takes it. The
 *   ping timeout ends a client that stopped polling, but only after pingInterval + pingTimeout
 *   (45 s by default), and what a busy channel broadcasts meanwhile has no bound: so the bytes
 *   queued since the last poll are counted here, and past the cap the client is dropped. No
 *   kernel buffer absorbs a burst on this transport: a polling client is also dropped when more
 *   than the cap arrives for it between two of its polls.
 */

/** One client disconnected for not reading. */
export interface SlowClientDrop {
  socketId: string;
  userId?: number;
  transport: "websocket" | "polling";
  /** What the server held for it when last measured (bytes). */
  bufferedBytes: number;
  limitBytes: number;
}

// What this file reads of socket.io's and @socket.io/bun-engine's internals (partly untyped there).
interface EnginePacket {
  type: string;
  data?: unknown;
}
interface EngineTransport {
  name: string;
  writable: boolean;
  socket?: ServerWebSocket<unknown>;
}
interface EngineSocket {
  readyState: string;
  transport: EngineTransport;
  writeBuffer: EnginePacket[];
  on(event: "packetCreate", listener: (packet: EnginePacket) => void): unknown;
  on(event: "flush", listener: () => void): unknown;
  close(): void;
}
interface IoSocket {
  id: string;
  connected: boolean;
  conn: unknown;
  data: { user?: { id: number } };
}
interface IoServer {
  on(event: "connection", listener: (socket: IoSocket) => void): unknown;
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
  /** Polling connections being dropped: reported once. */
  const dropping = new WeakSet<object>();

  const noteBuffered = (socket: IoSocket, websocket: ServerWebSocket<unknown>) => {
    const bytes = websocket.getBufferedAmount();
    if (bytes > 0) holding.set(websocket, { socket, bytes });
  };

  const report = (socket: IoSocket, transport: SlowClientDrop["transport"], bufferedBytes: number) =>
    onDrop({ socketId: socket.id, userId: socket.data.user?.id, transport, bufferedBytes, limitBytes: maxBufferedBytes });

  io.on("connection", (socket) => {
    const conn = socket.conn as EngineSocket;
    let queued = 0;
    conn.on("flush", () => {
      queued = 0;
    });
    conn.on("packetCreate", (packet) => {
      const transport = conn.transport;
      if (transport.writable) {
        // Written at once; on a websocket, Bun queues what the kernel does not take (and enforces the cap).
        if (transport.name === "websocket" && transport.socket) noteBuffered(socket, transport.socket);
        return;
      }
      // Kept in the Engine.IO socket until the client polls again.
      queued += packetBytes(packet);
      if (queued <= maxBufferedBytes || dropping.has(conn)) return;
      dropping.add(conn);
      report(socket, transport.name === "websocket" ? "websocket" : "polling", queued);
      // Not from inside the write that noticed (socket.io or the fan-out may be looping over
      // sockets), but before the event loop turns. Nobody will read what waits: discard it, or
      // close() would wait for it to drain.
      queueMicrotask(() => {
        conn.writeBuffer = [];
        conn.close();
      });
    });
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
  };
}
