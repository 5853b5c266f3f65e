import net from "node:net";
import { run, sudo } from "./shell.ts";

/**
 * Clients from several addresses. nginx keeps each client address on one backend
 * (`hash $remote_addr consistent`), and every connection from this host reaches it from one
 * address, so all test clients would land on one backend. Extra addresses on the project's bridge
 * (above the range Docker hands to containers) and a relay per address on 127.0.0.1 give nginx
 * distinct client addresses, as distinct users' machines would (test/proxy.test.ts does the same
 * with loopback addresses).
 */
export interface Relay {
  source: string;
  /** http://127.0.0.1:<port>: connect here to reach nginx from `source`. */
  url: string;
  close(): void;
}

export class SourceAddresses {
  private added: string[] = [];
  private relays: Relay[] = [];

  constructor(private readonly bridge: string, private readonly gateway: string) {}

  /** Address number `n` (0-based): the gateway's with the last octet 200 + n. */
  private address(n: number) {
    return this.gateway.replace(/\.\d+$/, `.${200 + n}`);
  }

  /** A relay to `target` (nginx's container address and port) from a new address of the bridge. */
  async relay(n: number, target: { host: string; port: number }): Promise<Relay> {
    const source = this.address(n);
    if (!this.added.includes(source)) {
      await run([...sudo, "ip", "addr", "add", `${source}/32`, "dev", this.bridge]);
      this.added.push(source);
    }
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
    const relay: Relay = {
      source,
      url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
      close() {
        server.close();
        for (const socket of open) socket.destroy();
      },
    };
    this.relays.push(relay);
    return relay;
  }

  /** Closes the relays and removes the addresses (the bridge may be gone already: then so are they). */
  async close(): Promise<void> {
    for (const relay of this.relays) relay.close();
    this.relays = [];
    for (const source of this.added) await run([...sudo, "ip", "addr", "del", `${source}/32`, "dev", this.bridge]).catch(() => {});
    this.added = [];
  }
}
