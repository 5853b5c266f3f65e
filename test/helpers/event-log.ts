import { expect } from "bun:test";
import { io as ioClient } from "socket.io-client";
import type { ChannelEvent } from "../../src/messages/messages.schemas.ts";
import { record, type Recorder } from "./recorder.ts";
import type { ChatClient, Transport } from "./server.ts";

// The channel event log (api.md §11) as a client sees it: events with a `seq`, resume with `auth.since`.

export const logEventNames = new Set(["message", "message:updated", "message:deleted"]);

/**
 * A socket.io-client that resumes with `since`, recording from before it connects (a replay starts
 * right after the connection). Resolves once connected, or rejects with the connect_error.
 */
export function connectResuming(
  url: string,
  token: string,
  since: Record<string, unknown> | unknown,
  transport: Transport = "websocket",
): Promise<{ socket: ChatClient; recorder: Recorder }> {
  const socket: ChatClient = ioClient(url, { auth: { token, since }, transports: [transport], reconnection: false, forceNew: true, timeout: 5_000 });
  const recorder = record(socket);
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve({ socket, recorder }));
    socket.once("connect_error", (error) => {
      socket.disconnect();
      reject(error);
    });
  });
}

/** The log events a recorder holds for one channel, as `{ seq, type, data }`, in arrival order. */
export function eventsOf(recorder: Recorder, channelId: number): ChannelEvent[] {
  return recorder.events
    .filter(([event, payload]) => logEventNames.has(event) && (payload as { channelId?: number }).channelId === channelId)
    .map(([type, data]) => ({ seq: (data as { seq: number }).seq, type, data }) as ChannelEvent);
}

/** `seqs` are exactly from+1, from+2, ... to: no gap, no duplicate, in order. */
export function expectContiguous(seqs: number[], from: number, to: number): void {
  expect(seqs).toEqual(Array.from({ length: to - from }, (_, i) => from + 1 + i));
}

/** Waits until `probe` holds (polling), or fails with `what`. */
export async function eventually(probe: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await Bun.sleep(10);
  }
}
