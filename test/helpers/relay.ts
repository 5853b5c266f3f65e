import net from "node:net";

/**
 * A TCP relay on 127.0.0.1:<random> to `target`, connecting on from `source`: to the target, a
 * client at another address. nginx hashes client addresses to instances, so tests use these to
 * put clients on chosen instances (test/proxy.test.ts, test/containers/). No bun:test import:
 * the container test runs outside `bun test`.
 */
export interface Relay {
  /** The address the target sees as the client. */
  source: string;
  /** http://127.0.0.1:<port>: connect here. */
  url: string;
  close(): void;
}

export async function relayFrom(source: string, target: { host: string; port: number }): Promise<Relay> {
  const open = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: target.host, port: target.port, localAddress: source });
    open.add(client).add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    for (const socket of [client, upstream]) socket.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    source,
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close() {
      server.close();
      for (const socket of open) socket.destroy();
    },
  };
}
