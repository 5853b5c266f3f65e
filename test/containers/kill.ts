import type { Socket } from "socket.io-client";
import type { SourceAddresses, Relay } from "./addresses.ts";
import { allMessages } from "./checks.ts";
import { api, connect, register, type Account } from "./http.ts";
import { until } from "./shell.ts";
import type { Stack } from "./stack.ts";

const BACKENDS = ["backend1", "backend2"];

/** Which backend logged the request with this X-Request-Id. */
async function backendOf(stack: Stack, requestId: string, backends: string[]): Promise<string> {
  return until(`a backend logging request ${requestId}`, 10_000, async () => {
    for (const service of backends) if ((await stack.logs((await stack.service(service)).id)).includes(requestId)) return service;
    return undefined;
  });
}

/** `perBackend` relays (client addresses) that nginx sends to each backend. */
export async function relaysPerBackend(stack: Stack, addresses: SourceAddresses, nginx: { host: string; port: number }, perBackend: number, backends = BACKENDS): Promise<Record<string, Relay[]>> {
  const on: Record<string, Relay[]> = Object.fromEntries(backends.map((b) => [b, []]));
  for (let n = 0; n < 40 && backends.some((b) => on[b]!.length < perBackend); n++) {
    const relay = await addresses.relay(n, nginx);
    const requestId = `probe-${relay.source.replaceAll(".", "-")}-${crypto.randomUUID()}`;
    const res = await fetch(`${relay.url}/healthz`, { headers: { "x-request-id": requestId } });
    if (res.status !== 200) throw new Error(`GET /healthz from ${relay.source}: ${res.status}`);
    const backend = await backendOf(stack, requestId, backends);
    if (on[backend]!.length < perBackend) on[backend]!.push(relay);
  }
  if (backends.some((b) => on[b]!.length < perBackend)) throw new Error(`40 client addresses did not spread over ${backends.join(", ")}: ${JSON.stringify(Object.fromEntries(backends.map((b) => [b, on[b]!.map((r) => r.source)])))}`);
  return on;
}

interface Sender {
  account: Account;
  relay: Relay;
  backend: string;
  socket: Socket;
  reconnects: number;
  /** clientId → message id, for every acked send. */
  acked: Map<string, number>;
  /** Acks received after backend1 had stopped. */
  ackedAfterStop: number;
  attempts: number;
  refusals: number;
  /** What happened to the connection, for the failure message. */
  events: string[];
}

export interface KillReport {
  senders: number;
  acked: number;
  attempts: number;
  resent: number;
  storedOnce: number;
  duplicates: number;
  missing: number;
  stopSeconds: number;
  exitCode: number;
  reconnected: number;
  onBackend1: number;
}

/**
 * A steady stream of acked messages from clients on both backends; `stop backend1` in the middle.
 * Each client sends one message at a time with a clientId and, when no ack comes (its backend
 * went away), sends it again with the same clientId once reconnected, as docs/api.md tells
 * clients to. Afterwards every acked message must be stored exactly once.
 */
export async function killUnderLoad(stack: Stack, base: string, relays: Record<string, Relay[]>, { before = 5_000, after = 8_000 } = {}): Promise<KillReport> {
  const tag = crypto.randomUUID().slice(0, 6);
  const senders: Sender[] = [];
  for (const backend of BACKENDS) {
    for (const [i, relay] of relays[backend]!.entries()) {
      const account = await register(relay.url, `load_${tag}_${backend.slice(-1)}_${i}`);
      const socket = await connect(relay.url, account.token, "websocket", { reconnection: true });
      const sender: Sender = { account, relay, backend, socket, reconnects: 0, acked: new Map(), ackedAfterStop: 0, attempts: 0, refusals: 0, events: [] };
      socket.io.on("reconnect", () => sender.reconnects++);
      socket.on("disconnect", (reason) => sender.events.push(`disconnect: ${reason}`));
      socket.on("connect_error", (error) => sender.events.push(`connect_error: ${error.message}`));
      senders.push(sender);
    }
  }

  let sending = true;
  let stoppedAt: number | undefined;
  const loops = senders.map(async (sender) => {
    for (let n = 0; sending; n++) {
      const clientId = `${sender.account.username}-${n}`;
      // Until acked: a send whose ack never came is sent again, same clientId.
      for (;;) {
        if (!sender.socket.connected) {
          await Bun.sleep(100);
          continue;
        }
        sender.attempts++;
        const ack: any = await sender.socket.timeout(3_000).emitWithAck("message", { content: clientId, clientId }).catch(() => undefined);
        if (ack?.ok) {
          sender.acked.set(clientId, ack.message.id);
          if (stoppedAt !== undefined) sender.ackedAfterStop++;
          break;
        }
        if (ack && !ack.ok) {
          sender.refusals++; // UNAVAILABLE while a backend stops, or RATE_LIMITED: try again
          sender.events.push(`refused: ${ack.error?.code}`);
        }
        await Bun.sleep(300);
      }
      await Bun.sleep(600); // about 1.5 messages a second per user: inside RATE_LIMIT_MESSAGES_SUSTAINED
    }
  });

  await Bun.sleep(before);
  const started = performance.now();
  await stack.compose(["stop", "backend1"]);
  const stopSeconds = (performance.now() - started) / 1000;
  stoppedAt = performance.now();
  const stopped = await stack.service("backend1");
  await Bun.sleep(after);
  sending = false;
  const describe = () => JSON.stringify(senders.map((s) => ({ user: s.account.username, backend: s.backend, connected: s.socket.connected, reconnects: s.reconnects, acked: s.acked.size, attempts: s.attempts, events: s.events.slice(-6) })), null, 1);
  await Promise.race([Promise.all(loops), Bun.sleep(30_000).then(() => { throw new Error(`senders did not finish within 30 s of the end of the load:\n${describe()}`); })]);

  const onBackend1 = senders.filter((s) => s.backend === "backend1");
  // The clients of the stopped backend are back (nginx moved them to backend2) and sent since.
  const reconnected = onBackend1.filter((s) => s.socket.connected && s.reconnects > 0).length;
  for (const s of senders) s.socket.close();

  const reader = senders[0]!.account;
  const stored = (await allMessages(base, reader.token)).filter((m) => typeof m.content === "string" && m.content.startsWith(`load_${tag}_`));
  const count = new Map<string, number>();
  for (const m of stored) count.set(m.content, (count.get(m.content) ?? 0) + 1);
  const acked = senders.flatMap((s) => [...s.acked]);
  const storedOnce = acked.filter(([clientId]) => count.get(clientId) === 1).length;
  const missing = acked.filter(([clientId]) => !count.has(clientId)).length;
  const duplicates = [...count.values()].filter((c) => c > 1).length;
  const attempts = senders.reduce((sum, s) => sum + s.attempts, 0);
  const report: KillReport = {
    senders: senders.length,
    acked: acked.length,
    attempts,
    resent: attempts - acked.length,
    storedOnce,
    duplicates,
    missing,
    stopSeconds,
    exitCode: stopped.exitCode,
    reconnected,
    onBackend1: onBackend1.length,
  };
  const problems = [
    stopped.status !== "exited" && `backend1 is ${stopped.status} after stop`,
    stopped.exitCode !== 0 && `backend1 exited ${stopped.exitCode} (not 0: killed after its grace period?)`,
    stopSeconds >= 15 && `stop took ${stopSeconds.toFixed(1)} s, past the 15 s grace period`,
    reconnected !== onBackend1.length && `${onBackend1.length - reconnected} of backend1's ${onBackend1.length} clients did not reconnect`,
    storedOnce !== acked.length && `${acked.length - storedOnce} acked messages not stored exactly once (${missing} missing)`,
    duplicates > 0 && `${duplicates} messages stored more than once`,
    senders.some((s) => s.ackedAfterStop === 0) && "a client got no ack after backend1 stopped",
  ].filter(Boolean);
  if (problems.length > 0) throw new Error(`kill under load: ${problems.join("; ")}\n${JSON.stringify(report)}`);
  return report;
}

export { api };
