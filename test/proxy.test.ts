import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmod, mkdir, mkdtemp, rm } from "node:fs/promises";
import { readFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { Subprocess } from "bun";
import { Redis } from "ioredis";
import { createTestDatabase } from "./helpers/db.ts";
import { connectTo, productionEnv, projectRoot, registerAt, startServerProcess, type ServerProcess } from "./helpers/process.ts";
import { sendWithAck, testRedisUrl, uniqueName, type ChatClient, type Json, type Transport } from "./helpers/server.ts";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { relayFrom, type Relay } from "./helpers/relay.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §9: deploy/nginx.conf in front of two real instances (`bun src/index.ts` as child
// processes, production mode, one database, TRUST_PROXY=1), with nginx itself as a child process
// running the committed file (only its upstream `server` lines, `listen` line and temp paths
// swapped). REST, forwarded headers, the body limit, errors nginx makes itself, and Socket.IO over
// both transports, sticky per client address.
//
// Every client on this machine is 127.0.0.1, so all of them would hash to one instance. To spread
// them, clients connect through small TCP relays that connect on to nginx from other loopback
// addresses (127.0.0.2, 127.0.0.3, …): to nginx, distinct client addresses.
//
// The instances run with REDIS_URL (the local Redis, as in scaleout.test.ts): a message sent through
// one reaches the clients of both. Without it, only the test marked "[REDIS_URL scale-out]" fails.

const findNginx = () => Bun.which("nginx") ?? Bun.which("nginx", { PATH: "/usr/local/sbin:/usr/sbin:/sbin" });
// The test set-up installs nginx from Debian's packages when it is missing (as .ci/run does).
if (!findNginx()) Bun.spawnSync(["bash", path.join(projectRoot, "scripts/install-nginx.sh")], { stdout: "inherit", stderr: "inherit" });
const nginxBin = findNginx();
if (!nginxBin) {
  throw new Error("nginx is not installed and scripts/install-nginx.sh could not install it (apt-get install nginx-light), but test/proxy.test.ts needs it");
}

const committedConf = await Bun.file(path.join(projectRoot, "deploy/nginx.conf")).text();

// ---------------------------------------------------------------------------------------------
// nginx, relays and other plumbing

const tempDirs: string[] = [];
const nginxProcs = new Set<Subprocess>();
const relays: Relay[] = [];
const clients: ChatClient[] = [];

/**
 * The committed config with the test's upstreams and port, and temp paths under `prefix`
 * (the Debian defaults under /var/lib/nginx need root). Throws if the lines it swaps moved.
 */
function nginxConfForTest(conf: string, { port, upstreams, prefix }: { port: number; upstreams: string[]; prefix: string }): string {
  const servers = [...conf.matchAll(/^[ \t]*server[ \t]+backend\d+:3000;[^\n]*\n/gm)];
  const listens = [...conf.matchAll(/^([ \t]*)listen[ \t]+80;[^\n]*$/gm)];
  const http = [...conf.matchAll(/^http \{\n/gm)];
  if (servers.length !== 2 || listens.length !== 1 || http.length !== 1) {
    throw new Error(
      "deploy/nginx.conf no longer has the lines this test swaps (two `server backendN:3000;` lines, one `listen 80;`, one `http {`)",
    );
  }
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((kind) => `    ${kind}_temp_path ${prefix}/temp/${kind};\n`).join("");
  return conf
    .replace(servers[0]![0], () => upstreams.map((u) => `        server ${u};\n`).join(""))
    .replace(servers[1]![0], () => "")
    .replace(listens[0]![0], () => `${listens[0]![1]}listen 127.0.0.1:${port};`)
    .replace(http[0]![0], (line) => `${line}${temp}`);
}

/** A port nobody listens on right now (nginx binds it a moment later; retried if taken). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Collects a child's output while it runs, so it never blocks on a full pipe. */
function drain(stream: ReadableStream<Uint8Array>): { text(): string } {
  let text = "";
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  })();
  return { text: () => text };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

async function stopNginxProcess(proc: Subprocess) {
  if (proc.exitCode === null && proc.signalCode === null) {
    // SIGTERM: the master stops its workers too (after a SIGKILL they would live on).
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 5_000);
    await proc.exited;
    clearTimeout(timer);
  }
  nginxProcs.delete(proc);
}

interface Nginx {
  url: string;
  /** nginx's access log (stdout) and error log (stderr) so far. */
  accessLog(): string;
  errorLog(): string;
  stop(): Promise<void>;
}

/** `nginx -g 'daemon off;'` on the committed config in a scratch prefix, proxying to `upstreams`. */
async function startNginx(upstreams: string[]): Promise<Nginx> {
  for (let attempt = 1; ; attempt++) {
    const prefix = await mkdtemp(path.join(os.tmpdir(), "chat-nginx-"));
    tempDirs.push(prefix);
    // Started as root, nginx's workers run as `nobody`: they must reach the temp paths inside.
    await chmod(prefix, 0o755);
    await mkdir(path.join(prefix, "temp"), { mode: 0o755 });
    const port = await freePort();
    const confPath = path.join(prefix, "nginx.conf");
    await Bun.write(confPath, nginxConfForTest(committedConf, { port, upstreams, prefix }));
    // The access log goes to /dev/stdout, which nginx opens anew: a file works, Bun's pipe (a
    // socket) does not.
    const accessLogPath = path.join(prefix, "access.log");
    const proc = Bun.spawn([nginxBin!, "-e", "stderr", "-p", `${prefix}/`, "-c", confPath, "-g", `daemon off; pid ${prefix}/nginx.pid;`], {
      stdin: "ignore",
      stdout: Bun.file(accessLogPath),
      stderr: "pipe",
    });
    nginxProcs.add(proc);
    const stderr = drain(proc.stderr);
    const stop = () => stopNginxProcess(proc);

    const deadline = performance.now() + 10_000;
    while (proc.exitCode === null && performance.now() < deadline && !(await canConnect(port))) await Bun.sleep(20);
    if (proc.exitCode === null && performance.now() < deadline) {
      return { url: `http://127.0.0.1:${port}`, accessLog: () => readFileSync(accessLogPath, "utf8"), errorLog: stderr.text, stop };
    }
    await stop();
    await Bun.sleep(50); // let the pipe readers finish
    if (attempt < 3 && stderr.text().includes("Address already in use")) continue;
    throw new Error(`nginx did not start (${nginxBin}):\n${stderr.text()}`);
  }
}

/** A relay to nginx on 127.0.0.1:`targetPort` from `source`, closed after the file. */
async function relayTo(source: string, targetPort: number): Promise<Relay> {
  const relay = await relayFrom(source, { host: "127.0.0.1", port: targetPort });
  relays.push(relay);
  return relay;
}

/** Polls `done` until it is true or `ms` pass; returns the last answer. */
async function waitFor(done: () => boolean, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!done() && performance.now() < deadline) await Bun.sleep(20);
  return done();
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const loopback = (n: number) => `127.0.0.${n}`;

// ---------------------------------------------------------------------------------------------
// Two instances on one database, nginx in front

const database = await createTestDatabase();
const adminName = uniqueName("proxyadmin");
const redisPrefix = `test:proxy:${crypto.randomUUID().slice(0, 8)}:`;
const instanceEnv = productionEnv(database.url, {
  TRUST_PROXY: "1",
  ADMIN_USERNAMES: adminName,
  // Both instances share broadcasts, presence and limits through the local Redis, under keys of
  // this run's own (removed afterwards).
  REDIS_URL: testRedisUrl,
  REDIS_KEY_PREFIX: redisPrefix,
});
/** The two instances, once started. */
const backends: ServerProcess[] = [];

/** Stops what this file started and removes what it left behind: after the tests, or when set-up fails. */
async function cleanUp() {
  for (const client of clients) client.disconnect();
  for (const relay of relays) relay.close();
  await Promise.all([...nginxProcs].map(stopNginxProcess));
  await Promise.all(backends.map((b) => (b.proc.exitCode === null && b.proc.signalCode === null ? b.stop("SIGTERM") : undefined)));
  await Promise.all(tempDirs.map((dir) => rm(dir, { recursive: true, force: true })));
  const redis = new Redis(testRedisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    const keys = await scanKeys(redis, `${redisPrefix}*`);
    if (keys.length > 0) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}

async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== "0");
  return keys;
}

/** Which instance (index in `backends`) logged the request with this id, if one did. */
async function instanceOfRequest(requestId: string, ms = 3_000): Promise<number> {
  return Promise.any(backends.map((b, i) => b.waitForLog((l) => l.msg === "request" && l.requestId === requestId, ms).then(() => i)));
}

/** Which instances logged "socket connected" for this socket id (within `ms` for the first). */
async function instancesOfSocket(socketId: string, ms = 3_000): Promise<number[]> {
  await Promise.any(backends.map((b) => b.waitForLog((l) => l.msg === "socket connected" && l.socketId === socketId, ms)));
  return backends.flatMap((b, i) => (b.logs.some((l) => l.msg === "socket connected" && l.socketId === socketId) ? [i] : []));
}

async function setUp() {
  const results = await Promise.allSettled([startServerProcess(instanceEnv), startServerProcess(instanceEnv)]);
  for (const result of results) if (result.status === "fulfilled") backends.push(result.value);
  for (const result of results) if (result.status === "rejected") throw result.reason;

  const nginx = await startNginx(backends.map((b) => new URL(b.url).host)); // 127.0.0.1:<port> each

  // Where does each loopback address land? nginx hashes the backends' random ports too, so ask:
  // one request per address, found again in one instance's log by its X-Request-Id.
  const direct = { source: loopback(1), url: nginx.url };
  const nginxPort = Number(new URL(nginx.url).port);
  const candidates = await Promise.all(Array.from({ length: 40 }, (_, i) => relayTo(loopback(i + 2), nginxPort)));
  const probes = await Promise.all(
    [direct, ...candidates].map(async (relay) => {
      const requestId = `probe-${relay.source.replaceAll(".", "-")}-${crypto.randomUUID()}`;
      const res = await fetch(`${relay.url}/healthz`, { headers: { "x-request-id": requestId } });
      if (res.status !== 200) throw new Error(`GET /healthz through nginx: ${res.status} ${await res.text()}`);
      return { source: relay.source, instance: await instanceOfRequest(requestId) };
    }),
  );
  const directInstance = probes[0]!.instance;
  /** Four relays (distinct client addresses) hashed to each instance. */
  const relaysOn = backends.map((_, i) => candidates.filter((_, c) => probes[c + 1]!.instance === i).slice(0, 4));
  if (relaysOn.some((r) => r.length < 4)) {
    throw new Error(`40 client addresses did not spread over both instances: ${JSON.stringify(probes.map((p) => [p.source, p.instance]))}`);
  }
  return { nginx, directInstance, relaysOn };
}

// A failed set-up skips every hook of this file, afterAll included: clean up here too.
const { nginx, directInstance, relaysOn } = await setUp().catch(async (error: unknown) => {
  await cleanUp();
  await database.drop();
  throw error;
});

// ---------------------------------------------------------------------------------------------

describe("deploy/nginx.conf in front of two instances", () => {
  // Inside a describe, so it runs before the file-level hooks: test/helpers/process.ts SIGKILLs
  // any instance still running there, and these should stop gracefully (SIGTERM).
  afterAll(cleanUp);

  describe("REST through nginx", () => {
    test("register, login and GET /api/users, on either instance, over one database", async () => {
      // 127.0.0.1 and an address hashed to the other instance.
      const elsewhere = relaysOn[1 - directInstance]![0]!;
      const alice = await registerAt(nginx.url, uniqueName("alice"));
      const bob = await registerAt(elsewhere.url, uniqueName("bob"));

      const login = await fetch(`${elsewhere.url}/api/auth/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: alice.user.username, password: "correct horse battery" }),
      });
      expect(login.status).toBe(200);
      const { token } = (await login.json()) as { token: string };

      for (const via of [nginx.url, elsewhere.url]) {
        const res = await fetch(`${via}/api/users?limit=100`, { headers: bearer(token) });
        expect(res.status).toBe(200);
        const users = (await res.json()) as { id: number; username: string }[];
        expect(users.map((u) => u.username)).toEqual(expect.arrayContaining([alice.user.username, bob.user.username]));
      }
      // nginx's own pages never leak through: every answer so far was the service's.
      expect(nginx.errorLog()).not.toContain("[error]");
    });

    test("X-Request-Id: the client's passes through both ways; without one, nginx's $request_id is the service's id", async () => {
      const mine = `proxy-${crypto.randomUUID()}`;
      const res = await fetch(`${nginx.url}/healthz`, { headers: { "x-request-id": mine } });
      expect(res.status).toBe(200);
      expect(res.headers.get("x-request-id")).toBe(mine);
      expect(await instanceOfRequest(mine)).toBe(directInstance);

      const generated = await fetch(`${nginx.url}/healthz`);
      const id = generated.headers.get("x-request-id") ?? "";
      expect(id).toMatch(/^[0-9a-f]{32}$/); // nginx's $request_id, not the service's own UUID
      expect(await instanceOfRequest(id)).toBe(directInstance);
      await waitFor(() => nginx.accessLog().includes(`rid=${id}`), 2_000);
      expect(nginx.accessLog()).toContain(`rid=${id}`);
    });

    test("X-Forwarded-For: the audit ip is the address nginx saw (TRUST_PROXY=1), never a client-supplied one; audit is admin-only", async () => {
      const admin = await registerAt(nginx.url, adminName);
      const carol = await registerAt(nginx.url, uniqueName("carol"));
      const spoofed = "203.0.113.9";
      // nginx appends its peer to the client's header ("203.0.113.9, <peer>"); TRUST_PROXY=1 takes
      // the last entry. Through a relay, nginx's peer is 127.0.0.N while the instance's TCP peer is
      // still nginx (127.0.0.1): only the header can have told the instance 127.0.0.N.
      const relay = relaysOn[0]![1]!;
      for (const via of [nginx.url, relay.url]) {
        const res = await fetch(`${via}/api/auth/login`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-forwarded-for": spoofed },
          body: JSON.stringify({ username: carol.user.username, password: "correct horse battery" }),
        });
        expect(res.status).toBe(200);
      }

      const audit = await fetch(`${nginx.url}/api/admin/audit?action=login&actorId=${carol.user.id}`, { headers: bearer(admin.token) });
      expect(audit.status).toBe(200);
      const entries = (await audit.json()) as { action: string; ip: string | null }[];
      expect(entries.map((e) => e.ip)).toEqual([relay.source, "127.0.0.1"]); // newest first
      expect(JSON.stringify(entries)).not.toContain(spoofed);

      const refused = await fetch(`${nginx.url}/api/admin/audit`, { headers: bearer(carol.token) });
      expect(refused.status).toBe(403);
      expect(((await refused.json()) as Json).error.code).toBe("FORBIDDEN");
    });

    test("a body over 64 KiB gets the service's own 413 PAYLOAD_TOO_LARGE; one over nginx's limit, the same shape from nginx", async () => {
      const { token } = await registerAt(nginx.url, uniqueName("big"));
      const post = (content: string, requestId: string) =>
        fetch(`${nginx.url}/api/messages`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-request-id": requestId, ...bearer(token) },
          body: JSON.stringify({ content }),
        });

      // Just over the service's limit: the service answers (its log has the request).
      const overService = `big-${crypto.randomUUID()}`;
      const res = await post("x".repeat(64 * 1024), overService);
      expect(res.status).toBe(413);
      expect(res.headers.get("content-type")).toStartWith("application/json");
      const body = (await res.json()) as Json;
      expect(body).toEqual({ error: { code: "PAYLOAD_TOO_LARGE", message: "The body is over the 65536-byte limit" } });
      const logged = await Promise.any(backends.map((b) => b.waitForLog((l) => l.requestId === overService && l.msg === "request", 3_000)));
      expect(logged.status).toBe(413);

      // Over nginx's own client_max_body_size: nginx answers, in the service's shape.
      const overNginx = await post("x".repeat(512 * 1024), `huge-${crypto.randomUUID()}`);
      expect(overNginx.status).toBe(413);
      expect(overNginx.headers.get("content-type")).toStartWith("application/json");
      expect(((await overNginx.json()) as Json).error.code).toBe("PAYLOAD_TOO_LARGE");
    });

    test("no instance answering: 503 UNAVAILABLE in the service's shape, not nginx's 502 page", async () => {
      const dead = await startNginx([`127.0.0.1:${await freePort()}`]);
      try {
        const res = await fetch(`${dead.url}/api/users`);
        expect(res.status).toBe(503);
        expect(res.headers.get("content-type")).toStartWith("application/json");
        expect(res.headers.get("retry-after")).toBe("1");
        expect(((await res.json()) as Json).error.code).toBe("UNAVAILABLE");
      } finally {
        await dead.stop();
      }
    });
  });

  describe("Socket.IO through nginx", () => {
    type Client = { socket: ChatClient; transport: Transport; instance: number; source: string; received: ChatMessage[]; disconnects: string[] };
    const connected: Client[] = [];
    const acked: { message: ChatMessage; instance: number }[] = [];

    beforeAll(async () => {
      const users = [await registerAt(nginx.url, uniqueName("sio")), await registerAt(nginx.url, uniqueName("sio")), await registerAt(nginx.url, uniqueName("sio"))];
      // Eight polling clients, four per instance, each from its own address; two websocket clients per instance.
      const plan = relaysOn.flatMap((onInstance, instance) => [
        ...onInstance.map((relay) => ({ relay, instance, transport: "polling" as Transport })),
        ...onInstance.slice(0, 2).map((relay) => ({ relay, instance, transport: "websocket" as Transport })),
      ]);
      for (const [i, { relay, instance, transport }] of plan.entries()) {
        const socket = await connectTo(relay.url, users[i % users.length]!.token, transport);
        clients.push(socket);
        const client: Client = { socket, transport, instance, source: relay.source, received: [], disconnects: [] };
        socket.on("message", (message) => client.received.push(message));
        socket.on("disconnect", (reason) => client.disconnects.push(reason));
        connected.push(client);
      }
    });

    test("websocket: connects with auth.token through the upgrade, on the instance its address hashes to", async () => {
      const ws = connected.filter((c) => c.transport === "websocket");
      expect(ws).toHaveLength(4);
      for (const client of ws) {
        expect(client.socket.connected).toBe(true);
        expect(client.socket.io.engine.transport.name).toBe("websocket");
        expect(await instancesOfSocket(client.socket.id!)).toEqual([client.instance]);
        const line = backends[client.instance]!.logs.find((l) => l.msg === "socket connected" && l.socketId === client.socket.id);
        expect(line?.transport).toBe("websocket");
      }
    });

    test("polling: 8 clients from 8 addresses, each session on exactly one instance (sticky upstream), both instances used", async () => {
      const polling = connected.filter((c) => c.transport === "polling");
      expect(polling).toHaveLength(8);
      for (const client of polling) {
        expect(client.socket.connected).toBe(true);
        expect(client.socket.io.engine.transport.name).toBe("polling");
        // Logged by the instance the handshake's address hashes to, and by no other.
        expect(await instancesOfSocket(client.socket.id!)).toEqual([client.instance]);
      }
      expect(new Set(polling.map((c) => c.instance))).toEqual(new Set([0, 1]));
    });

    test("message with an ack from every client; every client on the sender's instance receives it exactly once, in id order", async () => {
      await Promise.all(
        connected.map(async (client, i) => {
          const ack = await sendWithAck(client.socket, { content: `through nginx #${i} ${client.transport} from ${client.source}`, clientId: crypto.randomUUID() });
          expect(ack.ok).toBe(true);
          acked.push({ message: ack.message as ChatMessage, instance: client.instance });
        }),
      );
      expect(acked).toHaveLength(connected.length);

      const sameInstance = (client: Client) => acked.filter((a) => a.instance === client.instance).map((a) => a.message.id);
      const sameInstanceReceived = (client: Client) => client.received.filter((m) => sameInstance(client).includes(m.id)).map((m) => m.id);
      await waitFor(() => connected.every((c) => sameInstanceReceived(c).length >= sameInstance(c).length), 5_000);
      for (const client of connected) {
        expect(sameInstanceReceived(client)).toEqual([...sameInstance(client)].sort((a, b) => a - b));
        // Whatever else arrives is one of the acked messages, each once.
        expect(client.received.every((m) => acked.some((a) => a.message.id === m.id))).toBe(true);
        expect(new Set(client.received.map((m) => m.id)).size).toBe(client.received.length);
      }
      // The broadcast is the acked message itself.
      const first = acked[0]!.message;
      const receiver = connected.find((c) => c.instance === acked[0]!.instance)!;
      expect(receiver.received.find((m) => m.id === first.id)).toEqual(first);
    });

    test("every client is still connected after the exchange: no polling request strayed to the other instance", async () => {
      await Bun.sleep(300);
      for (const client of connected) {
        expect({ source: client.source, transport: client.transport, connected: client.socket.connected, disconnects: client.disconnects }).toEqual({
          source: client.source,
          transport: client.transport,
          connected: true,
          disconnects: [],
        });
      }
      for (const backend of backends) {
        expect(backend.logs.filter((l) => l.msg === "socket disconnected" && connected.some((c) => c.socket.id === l.socketId))).toEqual([]);
      }
    });

    // Needs the REDIS_URL scale-out (api.md §9): without it an instance broadcasts only to its own clients.
    test("[REDIS_URL scale-out] every client receives every message exactly once, whichever instance it was sent through", async () => {
      const all = acked.map((a) => a.message.id).sort((a, b) => a - b);
      await waitFor(() => connected.every((c) => c.received.length >= all.length), 2_000);
      for (const client of connected) {
        expect({ source: client.source, instance: client.instance, ids: client.received.map((m) => m.id).sort((a, b) => a - b) }).toEqual({
          source: client.source,
          instance: client.instance,
          ids: all,
        });
      }
    });

    test("a bad token gets connect_error Unauthorized through the proxy, over both transports", async () => {
      for (const transport of ["polling", "websocket"] as const) {
        const error = await connectTo(nginx.url, "not-a-valid-token", transport).then(
          () => new Error("connected with a bad token"),
          (e: Error) => e,
        );
        expect(error.message).toBe("Unauthorized");
      }
    });
  });
});
