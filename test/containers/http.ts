import { io, type Socket } from "socket.io-client";

export interface Reply<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

/** One JSON request; never throws for an HTTP status, only for a transport failure. */
export async function api<T = any>(base: string, method: string, path: string, { body, token, requestId }: { body?: unknown; token?: string; requestId?: string } = {}): Promise<Reply<T>> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  if (requestId) headers["x-request-id"] = requestId;
  const res = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {}
  return { status: res.status, body: parsed as T, headers: res.headers };
}

export function expectStatus(reply: Reply, status: number, what: string): void {
  if (reply.status !== status) throw new Error(`${what}: expected ${status}, got ${reply.status} ${JSON.stringify(reply.body)}`);
}

export interface Account {
  username: string;
  password: string;
  token: string;
  refreshToken: string;
  userId: number;
}

export async function register(base: string, username: string): Promise<Account> {
  const password = `pw-${crypto.randomUUID()}`;
  const reply = await api(base, "POST", "/api/auth/register", { body: { username, password } });
  expectStatus(reply, 201, `register ${username}`);
  return { username, password, token: reply.body.token, refreshToken: reply.body.refreshToken, userId: reply.body.user.id };
}

/** A socket.io-client connection; resolves once connected (or rejects with the connect error). */
export function connect(base: string, token: string, transport: "websocket" | "polling", options: { reconnection?: boolean } = {}): Promise<Socket> {
  const socket = io(base, { auth: { token }, transports: [transport], reconnection: options.reconnection ?? false, reconnectionDelay: 200, reconnectionDelayMax: 1000, timeout: 10_000 });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (error) => {
      if (!socket.io.opts.reconnection) {
        socket.close();
        reject(new Error(`socket.io ${transport} connect: ${error.message}`));
      }
    });
  });
}

/** The next `event` on `socket` that satisfies `match`, within `ms`. */
export function nextEvent<T = any>(socket: Socket, event: string, match: (payload: T) => boolean, ms = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`no matching ${event} within ${ms} ms`));
    }, ms);
    const on = (payload: T) => {
      if (!match(payload)) return;
      clearTimeout(timer);
      socket.off(event, on);
      resolve(payload);
    };
    socket.on(event, on);
  });
}
