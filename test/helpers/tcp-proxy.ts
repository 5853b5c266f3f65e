import { afterAll } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";

/**
 * A TCP proxy on a loopback port in front of a real server (PostgreSQL, Redis), so a test can make
 * that dependency fail for one service instance without touching the server everyone else uses:
 *
 * - `cut()`: every open connection is closed and new ones are accepted then closed at once, as
 *   when the server restarts or a firewall resets connections.
 * - `stall()`: connections stay open but nothing passes either way and new connections get no
 *   answer, as in a network partition: the failure where a client waits unless it has deadlines.
 *   Bytes sent meanwhile are held, and delivered on `restore()`, as TCP retransmission would.
 * - `restore()`: back to forwarding.
 * - `restore({ abandon: true })`: back to forwarding for new connections only; those open during
 *   the stall never carry another byte and are never closed, as when the server restarted during a
 *   partition and no reset reached the client (a half-open connection).
 */
export interface TcpProxy {
  /** Where clients connect: 127.0.0.1 and this port. */
  port: number;
  mode: "forward" | "cut" | "stall";
  /** Connections accepted and still open. */
  readonly open: number;
  cut(): void;
  stall(): void;
  restore(options?: { abandon?: boolean }): void;
  close(): void;
}

interface Side {
  /** The other end; undefined until the upstream connection is made. */
  peer?: Socket<Side>;
  /** Bytes for `peer` not yet written: held while stalled or connecting, or left by a short write. */
  pending: Uint8Array[];
  closed: boolean;
  /** Silent forever (restore({ abandon: true })): what arrives is dropped, nothing is sent. */
  abandoned?: boolean;
}

const proxies = new Set<TcpProxy>();
afterAll(() => {
  for (const proxy of proxies) proxy.close();
});

/** `upstream` is "host:port". The proxy starts forwarding. */
export async function startTcpProxy(upstream: { host: string; port: number }): Promise<TcpProxy> {
  const sockets = new Set<Socket<Side>>();
  let mode: TcpProxy["mode"] = "forward";

  const flush = (to: Socket<Side> | undefined, from: Side) => {
    if (!to || mode === "stall" || from.abandoned) return;
    while (from.pending.length > 0) {
      const chunk = from.pending[0]!;
      const written = to.write(chunk);
      if (written < chunk.length) {
        from.pending[0] = chunk.subarray(Math.max(0, written));
        return; // the rest on `drain`
      }
      from.pending.shift();
    }
  };
  const shut = (socket: Socket<Side>) => {
    if (socket.data.closed) return;
    socket.data.closed = true;
    sockets.delete(socket);
    socket.end();
    if (socket.data.peer && !socket.data.peer.data.closed) shut(socket.data.peer);
  };

  const handlers = {
    data(socket: Socket<Side>, chunk: Uint8Array) {
      if (socket.data.abandoned) return;
      // Copied: Bun reuses the buffer once this handler returns.
      socket.data.pending.push(new Uint8Array(chunk));
      flush(socket.data.peer, socket.data);
    },
    drain(socket: Socket<Side>) {
      // `socket` can take more: flush what its peer holds for it.
      if (socket.data.peer) flush(socket, socket.data.peer.data);
    },
    close: shut,
    error: shut,
  };

  const connectUpstream = async (client: Socket<Side>) => {
    try {
      const server = await Bun.connect<Side>({
        hostname: upstream.host,
        port: upstream.port,
        data: { peer: client, pending: [], closed: false },
        socket: handlers,
      });
      sockets.add(server);
      if (client.data.closed || mode === "cut") return shut(server);
      client.data.peer = server;
      flush(server, client.data);
    } catch {
      shut(client);
    }
  };

  const listener: TCPSocketListener<Side> = Bun.listen<Side>({
    hostname: "127.0.0.1",
    port: 0,
    data: undefined as unknown as Side,
    socket: {
      ...handlers,
      open(client) {
        client.data = { pending: [], closed: false };
        sockets.add(client);
        if (mode === "cut") return shut(client);
        void connectUpstream(client);
      },
    },
  });

  const proxy: TcpProxy = {
    port: listener.port,
    get mode() {
      return mode;
    },
    get open() {
      return sockets.size;
    },
    cut() {
      mode = "cut";
      for (const socket of [...sockets]) shut(socket);
    },
    stall() {
      mode = "stall";
    },
    restore({ abandon = false } = {}) {
      mode = "forward";
      if (abandon) for (const socket of sockets) socket.data.abandoned = true;
      for (const socket of sockets) if (socket.data.peer) flush(socket.data.peer, socket.data);
    },
    close() {
      proxies.delete(proxy);
      proxy.cut();
      listener.stop(true);
    },
  };
  proxies.add(proxy);
  return proxy;
}

/** The same URL with its host and port replaced by the proxy's. */
export function throughProxy(url: string, proxy: TcpProxy): string {
  const parsed = new URL(url);
  parsed.hostname = "127.0.0.1";
  parsed.port = String(proxy.port);
  return parsed.toString();
}

/** host and port of a postgresql:// or redis:// URL. */
export function hostAndPort(url: string, defaultPort: number): { host: string; port: number } {
  const parsed = new URL(url);
  return { host: parsed.hostname || "127.0.0.1", port: Number(parsed.port || defaultPort) };
}
