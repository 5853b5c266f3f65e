import { expect } from "bun:test";
import type { ChatMessage } from "../../src/messages/messages.schemas.ts";
import { apiFor, expectStatus } from "./http.ts";
import { until } from "./wait.ts";
import type { ChatClient, Registered } from "./server.ts";

/** One event a socket received: its name and first argument. */
export type Recorded = [event: string, payload: unknown];

/**
 * Events about other users' connections, which any test that opens sockets causes: left out
 * unless asked for, so a recording shows what the test itself did.
 */
const ambient = new Set(["presence"]);

/** Records every event a socket receives but `presence`, from now on, in order. */
export function record(socket: ChatClient) {
  return recorder(socket, false);
}

/** Records every event a socket receives, `presence` included, from now on, in order. */
export function recordWithPresence(socket: ChatClient) {
  return recorder(socket, true);
}

function recorder(socket: ChatClient, withPresence: boolean) {
  const events: Recorded[] = [];
  const waiters = new Set<() => void>();
  const listener = (event: string, ...args: unknown[]) => {
    if (!withPresence && ambient.has(event)) return;
    events.push([event, args[0]]);
    for (const wake of waiters) wake();
  };
  socket.onAny(listener);
  return {
    events,
    /** Resolves with every event received up to and including the first that matches. */
    until(match: (e: Recorded) => boolean, ms = 5_000): Promise<Recorded[]> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const index = events.findIndex(match);
          if (index === -1) return false;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(events.slice(0, index + 1));
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`expected event not received within ${ms} ms; got ${JSON.stringify(events)}`));
        }, ms);
        if (!check()) waiters.add(check);
      });
    },
    stop() {
      socket.offAny(listener);
    },
  };
}
/** What `record` returns. */
export type Recorder = ReturnType<typeof record>;

/** Matches the `message` event carrying the message with this id. */
export const isMessage = (id: number) => ([event, payload]: Recorded) => event === "message" && (payload as ChatMessage).id === id;

/**
 * The broadcast shape, exactly: these keys and no others, an integer id and a round-trip ISO
 * timestamp, and the event's `seq` (api.md §11) — which a history entry does not have (`history`).
 */
export function expectMessageShape(message: unknown, author: { id: number; username: string }, content: string, channelId = 1, { history = false } = {}) {
  expect(message).toEqual({
    id: expect.any(Number),
    channelId,
    userId: author.id,
    username: author.username,
    content,
    timestamp: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
    ...(history ? {} : { seq: expect.any(Number) }),
  });
  const m = message as ChatMessage & { seq?: number };
  expect(Object.keys(m).sort()).toEqual(["channelId", "content", "id", ...(history ? [] : ["seq"]), "timestamp", "userId", "username"]);
  expect(Number.isInteger(m.id)).toBe(true);
  if (!history) expect(Number.isInteger(m.seq) && m.seq! > 0).toBe(true);
  expect(new Date(m.timestamp).toISOString()).toBe(m.timestamp);
}

/** Every `message` broadcast the socket receives from now on, in arrival order. */
export function collectMessages(socket: ChatClient): ChatMessage[] {
  const received: ChatMessage[] = [];
  socket.on("message", (message) => received.push(message));
  return received;
}

/**
 * Posts a marker to general and waits until every list has it (then takes it out): one
 * connection delivers in order, so every earlier broadcast is in by then.
 */
export async function settleMessages(server: { url: string }, author: Registered, received: ChatMessage[][]): Promise<ChatMessage> {
  const api = apiFor(server);
  const marker = (await expectStatus(await api("POST", "/api/messages", author.token, { content: `marker ${crypto.randomUUID()}` }), 201)) as ChatMessage;
  await until(() => received.every((list) => list.some((m) => m.id === marker.id)), "the marker on every socket");
  for (const list of received) list.splice(list.findIndex((m) => m.id === marker.id), 1);
  return marker;
}

/** A message as history shows it: the broadcast or ack without its event number (api.md §11). */
export function asHistory<T extends object>(message: T): Omit<T, "seq"> {
  const { seq: _seq, ...entry } = message as T & { seq?: number };
  return entry;
}
