import { expect } from "bun:test";
import type { ChatMessage } from "../../src/messages/messages.schemas.ts";
import { isMessage, type Recorded, type Recorder } from "./recorder.ts";

/** A marker's content: unique, so its broadcast is told apart from every other. */
export const markerContent = () => `marker ${crypto.randomUUID()}`;

/**
 * The marker technique: `sendMarker` sends a valid message that every recorder's socket is to
 * receive (a channel they are all in: general, unless the test says otherwise), answered once
 * stored; each recorder must have seen exactly `before[i]` (default: nothing) and then the marker
 * since it started. Recorders stop afterwards. One connection delivers in the order the server
 * emitted, and the marker is sent after everything under test was answered, so anything delivered
 * (or wrongly emitted) earlier shows up before it. Returns the marker as `sendMarker` did.
 */
export async function expectUntilMarker(sendMarker: () => Promise<ChatMessage>, recorders: Recorder[], before: Recorded[][] = []): Promise<ChatMessage> {
  const marker = await sendMarker();
  for (const [i, recorder] of recorders.entries()) {
    expect(await recorder.until(isMessage(marker.id))).toEqual([...(before[i] ?? []), ["message", marker]]);
    recorder.stop();
  }
  return marker;
}
