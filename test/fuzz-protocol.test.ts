import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { io as ioClient } from "socket.io-client";
import { createTestDatabase } from "./helpers/db.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { answerProblem, mib, preview, residentBytes } from "./helpers/hostile.ts";
import { productionEnv, registerAt, startServerProcess } from "./helpers/process.ts";
import type { ChatClient } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Issue 7, hostile traffic, below the payloads (those are in fuzz.test.ts): malformed Engine.IO
// and Socket.IO packets and malformed websocket frames over a websocket written by hand, malformed
// long-polling requests, and malformed HTTP over a bare TCP socket. A malformed packet or frame
// closes that connection only: a bystander on another connection stays connected and still gets
// broadcasts, and the service stays up. Where Bun answers a request before the service sees it,
// what it answers is printed (and must not be a 5xx).

const database = await createTestDatabase();
const service = await startServerProcess(productionEnv(database.url));
const url = service.url;
const { hostname, port } = new URL(url);
afterAll(() => service.proc.kill("SIGKILL"));

const [owner, watcher, speaker] = [
  await registerAt(url, `raw_${crypto.randomUUID().slice(0, 8)}`),
  await registerAt(url, `watch_${crypto.randomUUID().slice(0, 8)}`),
  await registerAt(url, `speak_${crypto.randomUUID().slice(0, 8)}`),
];

/** Bystanders on both transports; they must survive every row. */
function connect(token: string, transport: "websocket" | "polling"): Promise<ChatClient> {
  const socket: ChatClient = ioClient(url, { auth: { token }, transports: [transport], reconnection: false, forceNew: true });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}
const bystanders = [await connect(watcher.token, "websocket"), await connect(watcher.token, "polling")];
const bystanderLosses: string[] = [];
for (const socket of bystanders) socket.on("disconnect", (reason) => bystanderLosses.push(reason));
afterAll(() => {
  for (const socket of bystanders) socket.disconnect();
});

/** A message from the speaker over REST reaches every bystander: they are connected and served. */
async function expectBystandersServed(label: string): Promise<void> {
  expect({ label, lost: bystanderLosses }).toEqual({ label, lost: [] });
  const content = `after ${label.slice(0, 60)} ${crypto.randomUUID()}`;
  const arrivals = bystanders.map(
    (socket) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`a bystander got no broadcast after "${label}"`)), 5_000);
        const listener = (message: { content: string }) => {
          if (message.content !== content) return;
          clearTimeout(timer);
          socket.off("message", listener as never);
          resolve();
        };
        socket.on("message", listener as never);
      }),
  );
  const res = await fetch(`${url}/api/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${speaker.token}` },
    body: JSON.stringify({ content }),
  });
  expect(res.status).toBe(201);
  await Promise.all(arrivals);
}

// ---------------------------------------------------------------------------------------------
// A websocket client on a bare TCP socket, so that any frame can be sent: not UTF-8, reserved
// bits, unknown opcodes, unmasked, lying lengths.

interface FrameOptions {
  opcode?: number;
  fin?: boolean;
  rsv?: number;
  mask?: boolean;
  /** A length field that does not match the payload (the payload is sent as is). */
  declaredLength?: bigint;
}

function frame(payload: Uint8Array | string, { opcode = 0x1, fin = true, rsv = 0, mask = true, declaredLength }: FrameOptions = {}): Buffer {
  const data = Buffer.from(payload);
  const length = declaredLength ?? BigInt(data.length);
  const first = (fin ? 0x80 : 0) | (rsv << 4) | opcode;
  const maskBit = mask ? 0x80 : 0;
  let header: Buffer;
  if (length < 126n) header = Buffer.from([first, maskBit | Number(length)]);
  else if (length < 65_536n) header = Buffer.from([first, maskBit | 126, Number(length >> 8n), Number(length & 0xffn)]);
  else {
    header = Buffer.alloc(10);
    header.set([first, maskBit | 127]);
    header.writeBigUInt64BE(length, 2);
  }
  if (!mask) return Buffer.concat([header, data]);
  const key = randomBytes(4);
  const masked = Buffer.from(data.map((b, i) => b ^ key[i % 4]!));
  return Buffer.concat([header, key, masked]);
}

interface RawWebsocket {
  sid: string;
  packets: string[];
  closed: Promise<void>;
  readonly isClosed: boolean;
  /** The status code of the server's Close frame, if it sent one. */
  readonly closeCode: number | undefined;
  write(bytes: Buffer): void;
  /** Sends one Engine.IO packet as a masked text frame (a Buffer: a binary frame). */
  send(packet: string | Buffer): void;
  waitFor(match: (packet: string) => boolean, ms?: number): Promise<string>;
  destroy(): void;
}

const rawSockets = new Set<net.Socket>();
afterAll(() => {
  for (const tcp of rawSockets) tcp.destroy();
});

/** Opens /socket.io/ over a websocket by hand and joins the default namespace with `token`. */
async function openRaw(token: string): Promise<RawWebsocket> {
  const tcp = net.connect(Number(port), hostname);
  rawSockets.add(tcp);
  tcp.on("error", () => undefined);
  const packets: string[] = [];
  const waiters = new Set<() => void>();
  let pending = Buffer.alloc(0);
  let upgraded = false;
  let isClosed = false;
  let closeCode: number | undefined;
  const closed = new Promise<void>((resolve) =>
    tcp.once("close", () => {
      isClosed = true;
      rawSockets.delete(tcp);
      for (const wake of waiters) wake();
      resolve();
    }),
  );
  const upgrade = new Promise<void>((resolve, reject) => {
    tcp.once("close", () => reject(new Error(`closed before the upgrade: ${pending.toString()}`)));
    tcp.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (!upgraded) {
        const end = pending.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = pending.subarray(0, end).toString();
        if (!head.startsWith("HTTP/1.1 101")) return reject(new Error(`upgrade refused: ${head}`));
        upgraded = true;
        pending = pending.subarray(end + 4);
        resolve();
      }
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
        if (opcode === 0x1) packets.push(payload.toString());
        else if (opcode === 0x8) closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        for (const wake of waiters) wake();
      }
    });
  });
  tcp.write(
    `GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const ws: RawWebsocket = {
    sid: "",
    packets,
    closed,
    get isClosed() {
      return isClosed;
    },
    get closeCode() {
      return closeCode;
    },
    write: (bytes) => void tcp.write(bytes),
    send: (packet) => void tcp.write(typeof packet === "string" ? frame(packet) : frame(packet, { opcode: 0x2 })),
    waitFor(match, ms = 5_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = packets.find(match);
          if (found === undefined && !isClosed) return false;
          waiters.delete(check);
          clearTimeout(timer);
          if (found === undefined) reject(new Error(`closed; got ${JSON.stringify(packets.map((p) => p.slice(0, 80)))}`));
          else resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching packet within ${ms} ms; got ${JSON.stringify(packets.map((p) => p.slice(0, 80)))}`));
        }, ms);
        if (!check()) waiters.add(check);
      });
    },
    destroy: () => void tcp.destroy(),
  };
  await upgrade;
  const open = await ws.waitFor((p) => p.startsWith("0{"));
  ws.sid = (JSON.parse(open.slice(1)) as { sid: string }).sid;
  ws.send(`40${JSON.stringify({ token })}`);
  const answer = await ws.waitFor((p) => p.startsWith("40") || p.startsWith("44"));
  if (!answer.startsWith("40")) throw new Error(`connect refused: ${answer}`);
  return ws;
}

/** Resolves true once `ws` is closed, false if it is still open after `ms`. */
const closesWithin = (ws: RawWebsocket, ms: number) => Promise.race([ws.closed.then(() => true), Bun.sleep(ms).then(() => false)]);

/** A live connection still answers: a valid message with an ack id gets its ack. */
async function expectStillServed(ws: RawWebsocket): Promise<void> {
  ws.send(`4277["message",{"content":"still here ${crypto.randomUUID()}"}]`);
  const ack = await ws.waitFor((p) => p.startsWith("4377["));
  expect(JSON.parse(ack.slice(4))[0]).toMatchObject({ ok: true });
}

const placeholder = '{"_placeholder":true,"num":0}';
const deepArray = (depth: number) => "[".repeat(depth) + "]".repeat(depth);

type Step = string | Buffer | { raw: Buffer };
type PacketRow = [label: string, steps: Step[]];

/** Malformed Engine.IO and Socket.IO packets: each closes the connection. */
const closingPackets: PacketRow[] = [
  ["an empty text frame", [""]],
  ["Engine.IO packet type 9", ["9"]],
  ["Engine.IO packet type 'x'", ["xyz"]],
  ["a ping from the client (in Engine.IO 4 only the server pings)", ["2"]],
  ["a probe ping on an established websocket", ["2probe"]],
  ["an upgrade packet on an established websocket", ["5"]],
  ["a noop packet", ["6"]],
  ["an open packet from the client", ["0{}"]],
  ["a base64 message ('b…') nobody announced", ["bAAECAw=="]],
  ["an empty Socket.IO packet", ["4"]],
  ["Socket.IO packet type 7", ["47"]],
  ["Socket.IO packet type 'x'", ['4x["message",{}]']],
  ["an event with broken JSON", ['42["message",{"content":']],
  ["an event whose data is an object", ['42{"content":"hi"}']],
  ["an event whose data is an empty array", ["42[]"]],
  ["an event named null", ['42[null,{"content":"hi"}]']],
  ["an event named by an object", ['42[{"__proto__":{}},{"content":"hi"}]']],
  ["the reserved event 'disconnect'", ['42["disconnect","forged"]']],
  ["the reserved event 'newListener'", ['42["newListener","message"]']],
  ["an ack id that is not a number", ['42abc["message",{"content":"hi"}]']],
  ["an ack with broken JSON", ["43["]],
  ["an ack whose data is an object", ['431{"ok":true}']],
  ["a CONNECT_ERROR with broken JSON", ["44{"]],
  ["a binary event announcing 11 attachments (more than Socket.IO accepts)", [`4511-["message",${placeholder}]`]],
  ["a binary event with a negative attachment count", ['45-1-["message",{}]']],
  ["a binary event whose attachment count is not a number", ['45abc-["message",{}]']],
  ["a binary event whose attachment count has no '-'", [`451["message",${placeholder}]`]],
  ["a binary event followed by a text packet instead of its attachment", [`451-["message",${placeholder}]`, '42["message",{"content":"hi"}]']],
  ["a placeholder pointing past the attachments", ['451-["message",{"_placeholder":true,"num":5}]', Buffer.from([1, 2, 3])]],
  ["a placeholder whose num is not a number", ['451-["message",{"_placeholder":true,"num":"__proto__"}]', Buffer.from([1, 2, 3])]],
  ["a binary frame nobody announced", [Buffer.from([0xde, 0xad, 0xbe, 0xef])]],
  ["a text frame over SOCKET_MAX_BUFFER_BYTES (64 KiB)", [`42["message",{"content":"${"x".repeat(70 * 1024)}"}]`]],
  ["a binary frame over SOCKET_MAX_BUFFER_BYTES", [`451-["message",${placeholder}]`, randomBytes(70 * 1024)]],
  ["a binary event announcing 2 attachments, sent one, then a text packet", [`452-["message",${placeholder}]`, Buffer.from([1]), '42["message",{"content":"hi"}]']],
  ["an event for a namespace never joined", ['42/admin,["message",{"content":"hi"}]']],
  ["a second CONNECT to the default namespace", [`40${JSON.stringify({ token: "forged" })}`]],
  ["a CONNECT_ERROR from the client", ['44{"message":"forged"}']],
];

/** Malformed websocket frames (RFC 6455): each closes the connection. */
const closingFrames: PacketRow[] = [
  ["a text frame that is not UTF-8", [{ raw: frame(Buffer.from([0x34, 0x32, 0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d])) }]],
  ["a text frame with an encoded surrogate (not UTF-8)", [{ raw: frame(Buffer.from([0x34, 0x32, 0x5b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x5d])) }]],
  ["reserved bits set (no extension agreed)", [{ raw: frame('42["message",{"content":"hi"}]', { rsv: 0x7 }) }]],
  ["opcode 3 (reserved)", [{ raw: frame("42", { opcode: 0x3 }) }]],
  ["opcode 0xB (reserved control)", [{ raw: frame("", { opcode: 0xb }) }]],
  ["an unmasked client frame", [{ raw: frame('42["message",{"content":"hi"}]', { mask: false }) }]],
  ["a ping frame over 125 bytes", [{ raw: frame("p".repeat(200), { opcode: 0x9 }) }]],
  ["a fragmented ping", [{ raw: frame("p", { opcode: 0x9, fin: false }) }]],
  ["a continuation frame with nothing to continue", [{ raw: frame("42", { opcode: 0x0 }) }]],
  ["a new text frame inside an unfinished one", [{ raw: Buffer.concat([frame("42[", { fin: false }), frame('"x"]')]) }]],
  ["a 64-bit length of 2^62", [{ raw: frame("42", { declaredLength: 2n ** 62n }) }]],
  ["a length just over the limit, with the bytes never sent", [{ raw: frame("42", { declaredLength: 70_000n }) }]],
  ["a close frame with status 999", [{ raw: frame(Buffer.from([0x03, 0xe7]), { opcode: 0x8 }) }]],
  ["a close frame with a 1-byte payload", [{ raw: frame(Buffer.from([0x03]), { opcode: 0x8 }) }]],
  ["a close frame whose reason is not UTF-8", [{ raw: frame(Buffer.from([0x03, 0xe8, 0xff, 0xfe]), { opcode: 0x8 }) }]],
];

/** Odd but well-formed packets: the connection stays (and answers). */
const keptPackets: PacketRow[] = [
  // Socket.IO dispatches it as an event with no name, which nothing listens to.
  ["an event without data", ["42"]],
  ["an ack for an id never used", ['43999["ok"]']],
  ["an unsolicited pong", ["3"]],
  ["an event with 30,000 levels of nesting", [`421["message",${deepArray(30_000)}]`]],
  ["an event named 'error'", ['42["error",{"content":"hi"}]']],
  ["an event named '__proto__'", ['42["__proto__",{"content":"hi"}]']],
  ["an event named by a number", ['42[5,{"content":"hi"}]']],
  ["an ack id of 22 digits", ['429999999999999999999999["message",{"content":"hi"}]']],
  ["a binary event whose payload nests a placeholder 10,000 deep", [`451-["message",${"[".repeat(10_000)}${placeholder}${"]".repeat(10_000)}]`, Buffer.from([1])]],
];

async function sendSteps(ws: RawWebsocket, steps: Step[]): Promise<void> {
  for (const step of steps) {
    if (typeof step === "object" && "raw" in step) ws.write(step.raw);
    else ws.send(step);
    await Bun.sleep(5);
  }
}

describe("malformed Socket.IO and Engine.IO packets over a websocket close that connection only", () => {
  test.each(closingPackets)("%s", async (label, steps) => {
    const ws = await openRaw(owner.token);
    await sendSteps(ws, steps);
    const closed = await closesWithin(ws, 5_000);
    ws.destroy();
    expect({ label, closed, packets: ws.packets.slice(2).map((p) => preview(p, 120)) }).toMatchObject({ label, closed: true });
    await expectBystandersServed(label);
  });
});

describe("malformed websocket frames close that connection only", () => {
  test.each(closingFrames)("%s", async (label, steps) => {
    const ws = await openRaw(owner.token);
    await sendSteps(ws, steps);
    const closed = await closesWithin(ws, 5_000);
    ws.destroy();
    expect({ label, closed }).toEqual({ label, closed: true });
    await expectBystandersServed(label);
  });
});

describe("odd but well-formed packets keep the connection, which still answers", () => {
  test.each(keptPackets)("%s", async (label, steps) => {
    const ws = await openRaw(owner.token);
    await sendSteps(ws, steps);
    expect({ label, closed: await closesWithin(ws, 300) }).toEqual({ label, closed: false });
    await expectStillServed(ws);
    ws.destroy();
    await expectBystandersServed(label);
  });
});

// ---------------------------------------------------------------------------------------------
// Long polling.

const polling = `${url}/socket.io/?EIO=4&transport=polling`;

/** An Engine.IO polling session joined to the default namespace: its sid. */
async function openPolling(token: string): Promise<string> {
  const open = await (await fetch(polling)).text();
  expect(open).toStartWith("0{");
  const { sid } = JSON.parse(open.slice(1)) as { sid: string };
  expect((await fetch(`${polling}&sid=${sid}`, { method: "POST", body: `40${JSON.stringify({ token })}` })).status).toBe(200);
  expect(await (await fetch(`${polling}&sid=${sid}`)).text()).toStartWith("40{");
  return sid;
}

/** The Engine.IO server's own error answer: 400 `{code, message}` (its protocol, not api.md §0). */
async function expectEngineRefusal(res: Response, code: number) {
  expect({ status: res.status, body: await res.json() }).toEqual({ status: 400, body: { code, message: expect.any(String) } });
}

describe("malformed long-polling requests get a 4xx, and one session's garbage ends that session only", () => {
  const refusals: [label: string, request: () => Promise<Response>, code: number][] = [
    ["GET with an unknown sid", () => fetch(`${polling}&sid=not-a-session`), 1],
    ["POST with an unknown sid", () => fetch(`${polling}&sid=not-a-session`, { method: "POST", body: "40" }), 1],
    ["GET with a sid of 4 KiB", () => fetch(`${polling}&sid=${"A".repeat(4096)}`), 1],
    ["POST without a sid (a handshake is GET only)", () => fetch(polling, { method: "POST", body: "40" }), 2],
    ["EIO=3", () => fetch(`${url}/socket.io/?EIO=3&transport=polling`), 5],
    ["EIO=__proto__", () => fetch(`${url}/socket.io/?EIO=__proto__&transport=polling`), 5],
    ["no EIO", () => fetch(`${url}/socket.io/?transport=polling`), 5],
    ["an unknown transport", () => fetch(`${url}/socket.io/?EIO=4&transport=carrier-pigeon`), 0],
    ["no transport", () => fetch(`${url}/socket.io/?EIO=4`), 0],
    ["the polling transport for a websocket session", async () => fetch(`${polling}&sid=${(await openRaw(owner.token)).sid}`), 3],
  ];

  test.each(refusals)("%s → 400", async (label, request, code) => {
    await expectEngineRefusal(await request(), code);
    await expectBystandersServed(label);
  });

  test("PUT on a live session → 400", async () => {
    const sid = await openPolling(owner.token);
    const res = await fetch(`${polling}&sid=${sid}`, { method: "PUT", body: "40" });
    expect(res.status).toBe(400);
    await expectBystandersServed("PUT on a live session");
  });

  const garbage: [label: string, body: string | Uint8Array][] = [
    ["text that is no Engine.IO packet", "hello"],
    ["an unknown packet type", "9"],
    ["a Socket.IO event with broken JSON", '42["message",{'],
    ["bytes that are not UTF-8", new Uint8Array([0x34, 0x32, 0xff, 0xfe, 0x00])],
    ["a record separator then garbage", '42["message",{"content":"hi"}]\x1e\x1e9'],
  ];

  test.each(garbage)("garbage POST body (%s): the session ends, the next poll with its sid gets 400", async (label, body) => {
    const sid = await openPolling(owner.token);
    const res = await fetch(`${polling}&sid=${sid}`, { method: "POST", body });
    // The engine takes the body ("ok", as the Engine.IO reference server does) and closes the session.
    expect(res.status).toBeLessThan(500);
    await res.body?.cancel();
    await expectEngineRefusal(await fetch(`${polling}&sid=${sid}`), 1);
    await expectBystandersServed(label);
  });

  test("a POST over SOCKET_MAX_BUFFER_BYTES → 413, and the session ends", async () => {
    const sid = await openPolling(owner.token);
    const res = await fetch(`${polling}&sid=${sid}`, { method: "POST", body: `42["message",{"content":"${"x".repeat(70 * 1024)}"}]` });
    expect(res.status).toBe(413);
    await expectEngineRefusal(await fetch(`${polling}&sid=${sid}`), 1);
    await expectBystandersServed("a POST over the limit");
  });

  // The engine reads a polling body whole before comparing its length with SOCKET_MAX_BUFFER_BYTES:
  // a 100 MiB POST cost some 200 MiB. Bun refuses one declared past its maxRequestBodySize before a
  // byte of it is read, and server.ts counts the rest as they stream (realtime/socket-requests.ts;
  // chunked bodies in test/handshake-limits.test.ts).
  test("a 100 MiB POST to a live polling session is refused without being held in memory", async () => {
    const sid = await openPolling(owner.token);
    const before = residentBytes(service.proc.pid);
    const status = await fetch(`${polling}&sid=${sid}`, { method: "POST", body: "x".repeat(100 * 2 ** 20) }).then(
      async (res) => (await res.body?.cancel(), res.status),
      () => 0, // the server may refuse by closing the connection mid-body: a refusal too
    );
    const grown = residentBytes(service.proc.pid) - before;
    console.log(`a 100 MiB polling POST: ${status || "connection closed"}, the service's VmRSS grew by ${mib(grown)} MiB`);
    expect([0, 413]).toContain(status);
    expect(grown).toBeLessThan(32 * 2 ** 20);
  });

  // The engine tries `server.upgrade()` on any request with an Upgrade header and, when that fails
  // (not a websocket handshake), answers 500 with no body: server.ts answers these first.
  test.each([
    ["a handshake with Upgrade: h2c", () => fetch(polling, { headers: { upgrade: "h2c", connection: "upgrade" } })],
    ["a handshake with Upgrade: websocket but no Sec-WebSocket-Key", () => fetch(polling, { headers: { upgrade: "websocket", connection: "upgrade" } })],
    ["a live polling session's sid with Upgrade: websocket but no key", async () => fetch(`${polling}&sid=${await openPolling(owner.token)}`, { headers: { upgrade: "websocket", connection: "upgrade" } })],
  ] as [string, () => Promise<Response>][])("%s → a 4xx, not the engine's 500", async (_label, request) => {
    const res = await request();
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
  });
});

// ---------------------------------------------------------------------------------------------
// Raw HTTP: what reaches the service is answered in the error shape; what Bun answers itself is recorded.

/** Sends `bytes` on a fresh TCP connection; resolves with what came back, and whether the server closed the connection or `ms` passed first. */
function rawHttp(bytes: Buffer | string, ms: number): Promise<{ response: string; ended: "closed" | "answered" | "timeout" }> {
  return new Promise((resolve) => {
    const tcp = net.connect(Number(port), hostname);
    rawSockets.add(tcp);
    let received = Buffer.alloc(0);
    let settled = false;
    const done = (ended: "closed" | "answered" | "timeout") => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      tcp.destroy();
      rawSockets.delete(tcp);
      resolve({ response: received.toString("latin1"), ended });
    };
    const timer = setTimeout(() => done("timeout"), ms);
    tcp.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      // One response is enough: stop once the head and a Content-Length body (or none) are in.
      const end = received.indexOf("\r\n\r\n");
      if (end < 0) return;
      const length = /\r\ncontent-length: *(\d+)/i.exec(received.subarray(0, end).toString("latin1"));
      if (length && received.length >= end + 4 + Number(length[1])) done("answered");
    });
    tcp.on("error", () => done("closed"));
    tcp.on("close", () => done("closed"));
    tcp.write(bytes);
  });
}

const host = `Host: ${hostname}:${port}\r\n`;
const bearer = `Authorization: Bearer ${owner.token}\r\n`;
/** Rows with a third element wait that long for an answer that may never come (the service waits for the body). */
const rawRequests: [label: string, bytes: Buffer | string, ms?: number][] = [
  ["garbage instead of a request line", "GARBAGE\r\n\r\n"],
  ["an HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
  ["HTTP/0.9", "GET /healthz\r\n\r\n"],
  ["HTTP/1.1 without Host", "GET /healthz HTTP/1.1\r\n\r\n"],
  ["HTTP/9.9", `GET /healthz HTTP/9.9\r\n${host}\r\n`],
  ["an unknown method", `BREW /healthz HTTP/1.1\r\n${host}\r\n`],
  ["an absolute-form target for another host", `GET http://evil.example/healthz HTTP/1.1\r\n${host}\r\n`],
  ["a target that is not a path", `GET healthz HTTP/1.1\r\n${host}\r\n`],
  ["raw non-ASCII bytes in the path", Buffer.concat([Buffer.from("GET /api/users/"), Buffer.from([0xff, 0xfe]), Buffer.from(` HTTP/1.1\r\n${host}${bearer}\r\n`)])],
  ["a NUL in the path", `GET /api/users/\0 HTTP/1.1\r\n${host}${bearer}\r\n`],
  ["bad percent-encoding in the path", `GET /api/channels/%ZZ/messages HTTP/1.1\r\n${host}${bearer}\r\n`],
  ["a 100 KiB target", `GET /api/users?after=${"1".repeat(100 * 1024)} HTTP/1.1\r\n${host}${bearer}\r\n`],
  ["a header line without a colon", `GET /healthz HTTP/1.1\r\n${host}NoColonHere\r\n\r\n`],
  ["a header name with a space", `GET /healthz HTTP/1.1\r\n${host}Bad Name: x\r\n\r\n`],
  ["a NUL in a header value", `GET /api/users/me HTTP/1.1\r\n${host}Authorization: Bearer a\0b\r\n\r\n`],
  ["non-Latin-1 bytes in Authorization", Buffer.concat([Buffer.from(`GET /api/users/me HTTP/1.1\r\n${host}Authorization: Bearer `), Buffer.from("токен"), Buffer.from("\r\n\r\n")])],
  ["bytes that are not UTF-8 in X-Request-Id", Buffer.concat([Buffer.from(`GET /healthz HTTP/1.1\r\n${host}X-Request-Id: `), Buffer.from([0xff, 0xfe, 0x80]), Buffer.from("\r\n\r\n")])],
  ["a bare LF as line ending", `GET /healthz HTTP/1.1\n${host.trim()}\n\n`],
  ["a bare CR inside a header value", `GET /healthz HTTP/1.1\r\n${host}X-Request-Id: a\rb\r\n\r\n`],
  ["an obsolete folded header line", `GET /healthz HTTP/1.1\r\n${host}X-Request-Id: a\r\n b\r\n\r\n`],
  ["20 KiB of headers", `GET /healthz HTTP/1.1\r\n${host}X-Junk: ${"j".repeat(20 * 1024)}\r\n\r\n`],
  ["500 headers", `GET /healthz HTTP/1.1\r\n${host}${Array.from({ length: 500 }, (_, i) => `X-H${i}: v\r\n`).join("")}\r\n`],
  ["Content-Length: -1", `POST /api/auth/login HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: -1\r\n\r\n{}`],
  ["Content-Length: abc", `POST /api/auth/login HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: abc\r\n\r\n{}`],
  ["two different Content-Lengths", `POST /api/auth/login HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`],
  ["Content-Length and chunked together (smuggling)", `POST /api/auth/login HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n${host}\r\n`],
  ["an invalid chunk size", `POST /api/auth/login HTTP/1.1\r\n${host}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`],
  ["a chunk size of 2^64", `POST /api/auth/login HTTP/1.1\r\n${host}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n{}\r\n0\r\n\r\n`],
  ["an unknown Transfer-Encoding", `POST /api/auth/login HTTP/1.1\r\n${host}Content-Type: application/json\r\nTransfer-Encoding: gzip\r\n\r\n{}`],
  ["a body shorter than its Content-Length", `POST /api/auth/login HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{}`, 1_000],
  ["a 1 MiB Content-Length declared, 2 bytes sent", `POST /api/messages HTTP/1.1\r\n${host}${bearer}Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{}`],
  ["Expect: 100-continue on an oversized body", `POST /api/messages HTTP/1.1\r\n${host}${bearer}Content-Type: application/json\r\nContent-Length: 10485760\r\nExpect: 100-continue\r\n\r\n`, 1_000],
  ["Upgrade: websocket to a REST route", `GET /api/users/me HTTP/1.1\r\n${host}${bearer}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`],
  ["Connection: Upgrade, HTTP2-Settings to a REST route", `GET /api/users/me HTTP/1.1\r\n${host}${bearer}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n`],
];

describe("raw HTTP: never a 5xx; what the service answers is in the error shape, what Bun answers first is recorded", () => {
  const answers: string[] = [];
  afterAll(() => console.log(`raw HTTP answers (status line, and who answered):\n${answers.join("\n")}`));

  test.each(rawRequests)("%s", async (label, bytes, ms = 3_000) => {
    const { response, ended } = await rawHttp(bytes, ms);
    const head = response.slice(0, Math.max(0, response.indexOf("\r\n\r\n")));
    const statusLine = head.split("\r\n")[0] ?? "";
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
    const byService = /\r\nx-request-id:/i.test(head);
    const none = ended === "timeout" ? `(no answer within ${ms} ms)` : "(connection closed without an answer)";
    answers.push(`- ${label}: ${statusLine || none}${status ? (byService ? " (the service)" : " (Bun)") : ""}`);
    // Bun's own answers (400, 431, 505 or a closed connection for what it cannot parse) are recorded, not judged.
    if (byService) {
      const headers = new Headers();
      for (const line of head.split("\r\n").slice(1)) {
        const colon = line.indexOf(":");
        if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
      }
      const body = response.slice(response.indexOf("\r\n\r\n") + 4);
      expect({ label, status, problem: answerProblem(status, headers, body) }).toEqual({ label, status, problem: undefined });
    }
  });

  test("afterwards the service is up and the bystanders are still served", async () => {
    expect(service.proc.exitCode).toBeNull();
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    await expectBystandersServed("the raw HTTP table");
  });
});
