import { relayFrom, type Relay } from "../helpers/relay.ts";
import { run, sudo } from "./shell.ts";

/**
 * Clients from several addresses. nginx keeps each client address on one backend
 * (`hash $remote_addr consistent`), and every connection from this host reaches it from one
 * address, so all test clients would land on one backend. Extra addresses on the project's bridge
 * (above the range Docker hands to containers) and a relay per address on 127.0.0.1 give nginx
 * distinct client addresses, as distinct users' machines would (test/proxy.test.ts does the same
 * with loopback addresses).
 */
export type { Relay };

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
    const relay = await relayFrom(source, target);
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
