import { afterAll } from "bun:test";
import { randomBytes } from "node:crypto";
import net from "node:net";

/**
 * Socket.IO clients written by hand, for the clients socket.io-client will not play: one that
 * stops reading its TCP connection, one that never answers a ping, one that stops polling.
 * They speak just enough of RFC 6455, Engine.IO 4 and Socket.IO 5 to connect to the default
 * namespace with `{ token }` and to see what arrives.
 */

/** A websocket connection made over a bare TCP socket. */
export interface RawWebsocket {
  tcp: net.Socket;
  /** Engine.IO packets (the text frames) received so far, in order. */
  packets: string[];
  /** Resolves with the first packet, past or future, that `match` accepts; rejects after `ms`. */
  waitFor(match: (packet: string) => boolean, ms?: number): Promise<string>;
  /** Sends one Engine.IO packet as a masked text frame. */
  send(packet: string): void;
  /** Resolves once the TCP connection is closed, by either side. */
  closed: Promise<void>;
  readonly isClosed: boolean;
}

const opened = new Set<net.Socket>();
afterAll(() => {
  for (const tcp of opened) tcp.destroy();
});

function maskedTextFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const length = payload.length;
  // FIN + text opcode, then the masked length in 7, 7+16 or 7+64 bits.
  let header: Buffer;
  if (length < 126) header = Buffer.from([0x81, 0x80 | length]);
  else if (length < 65_536) header = Buffer.from([0x81, 0x80 | 126, length >> 8, length & 0xff]);
  else {
    header = Buffer.alloc(10);
    header.set([0x81, 0x80 | 127]);
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  const mask = randomBytes(4);
  for (let i = 0; i < length; i++) payload[i]! ^= mask[i % 4]!;
  return Buffer.concat([header, mask, payload]);
}

/**
 * Opens `/socket.io/` over a websocket on a plain TCP socket, connects to the default namespace
 * with `{ token }` and resolves once the server accepted (the CONNECT answer arrived).
 * With `answerPings`, every Engine.IO ping is answered with a pong, as a live client does;
 * without it, the client never answers (a half-open or dead peer, as the server sees it).
 */
export async function connectRawWebsocket(url: string, token: string, { answerPings = false } = {}): Promise<RawWebsocket> {
  const { hostname, port } = new URL(url);
  const tcp = net.connect(Number(port), hostname);
  opened.add(tcp);
  const packets: string[] = [];
  const waiters = new Set<(packet: string) => void>();
  let handshaken = false;
  let isClosed = false;
  let pending = Buffer.alloc(0);

  const closed = new Promise<void>((resolve) => tcp.once("close", () => resolve()));
  void closed.then(() => {
    isClosed = true;
    opened.delete(tcp);
  });
  tcp.on("error", () => undefined);

  const onPacket = (packet: string) => {
    packets.push(packet);
    if (answerPings && packet === "2") tcp.write(maskedTextFrame("3"));
    for (const waiter of waiters) waiter(packet);
  };

  const upgraded = new Promise<void>((resolve, reject) => {
    tcp.once("close", () => reject(new Error(`connection closed before the upgrade: ${pending.toString()}`)));
    tcp.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (!handshaken) {
        const end = pending.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = pending.subarray(0, end).toString();
        if (!head.startsWith("HTTP/1.1 101")) return reject(new Error(`upgrade refused: ${head}`));
        handshaken = true;
        pending = pending.subarray(end + 4);
        resolve();
      }
      // Server frames are unmasked and, from Bun, never fragmented.
      for (;;) {
        if (pending.length < 2) return;
        const opcode = pending[0]! & 0x0f;
        let length = pending[1]! & 0x7f;
        let offset = 2;
        if (length === 126) {
          if (pending.length < 4) return;
          length = pending.readUInt16BE(2);
          offset = 4;
        } else if (length === 127) {
          if (pending.length < 10) return;
          length = Number(pending.readBigUInt64BE(2));
          offset = 10;
        }
        if (pending.length < offset + length) return;
        const payload = pending.subarray(offset, offset + length);
        pending = pending.subarray(offset + length);
        if (opcode === 0x1) onPacket(payload.toString());
      }
    });
  });

  const key = randomBytes(16).toString("base64");
  tcp.write(
    `GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );

  const client: RawWebsocket = {
    tcp,
    packets,
    closed,
    get isClosed() {
      return isClosed;
    },
    send(packet) {
      tcp.write(maskedTextFrame(packet));
    },
    waitFor(match, ms = 5_000) {
      const seen = packets.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`no matching packet within ${ms} ms; got ${JSON.stringify(packets.map((p) => p.slice(0, 80)))}`));
        }, ms);
        const waiter = (packet: string) => {
          if (!match(packet)) return;
          clearTimeout(timer);
          waiters.delete(waiter);
          resolve(packet);
        };
        waiters.add(waiter);
      });
    },
  };

  await upgraded;
  await client.waitFor((p) => p.startsWith("0{"));
  client.send(`40${JSON.stringify({ token })}`);
  const answer = await client.waitFor((p) => p.startsWith("40") || p.startsWith("44"));
  if (!answer.startsWith("40")) throw new Error(`connect refused: ${answer}`);
  return client;
}

/** An HTTP long-polling session, polled only when the test says so. */
export interface RawPolling {
  sid: string;
  /** One GET: the Engine.IO packets the server held for this session (waits for one if none). */
  poll(): Promise<{ status: number; packets: string[] }>;
}

/**
 * Opens an Engine.IO polling session, connects to the default namespace with `{ token }` and
 * resolves once the server accepted. Afterwards nothing is requested unless `poll()` is called:
 * a client that stopped polling.
 */
export async function connectRawPolling(url: string, token: string): Promise<RawPolling> {
  const base = `${url}/socket.io/?EIO=4&transport=polling`;
  const open = await (await fetch(base)).text();
  if (!open.startsWith("0{")) throw new Error(`unexpected handshake: ${open}`);
  const { sid } = JSON.parse(open.slice(1)) as { sid: string };
  const session = `${base}&sid=${encodeURIComponent(sid)}`;
  const poll = async () => {
    const res = await fetch(session);
    const body = await res.text();
    return { status: res.status, packets: res.status === 200 ? body.split("\x1e") : [] };
  };
  const posted = await fetch(session, { method: "POST", body: `40${JSON.stringify({ token })}` });
  if (posted.status !== 200) throw new Error(`connect not accepted: ${posted.status}`);
  for (;;) {
    const { status, packets } = await poll();
    if (status !== 200) throw new Error(`poll failed: ${status}`);
    const answer = packets.find((p) => p.startsWith("40") || p.startsWith("44"));
    if (answer?.startsWith("44")) throw new Error(`connect refused: ${answer}`);
    if (answer) return { sid, poll };
  }
}
