import type { Logger } from "../lib/logger.ts";
import type { Db } from "../lib/db.ts";
import { channelRoom, type ChatServer } from "../realtime/rooms.ts";
import { loadHeads, readEvents, type LoggedEvent } from "./channel-log.ts";
import type { RecentMessages } from "./recent-messages.ts";
import { createSequencer, type Sequencer } from "./sequencer.ts";

/** How committed events reach the other instances (topology.ts): nothing on one instance. */
export interface EventRelay {
  /** Hands an event committed here to every other instance. */
  send(event: LoggedEvent): void;
  /** Calls `receive` with each event another instance committed. */
  listen(receive: (event: LoggedEvent) => void): void;
  /** Calls `lost` when events may have been missed (Redis came back after an outage). */
  onGap(lost: () => void): void;
}

/** The last step of the message path: a committed event goes to the channel's sockets here and everywhere. */
export interface Fanout {
  /** Broadcasts an event committed by this instance; resolves once this instance's sockets have it (so an ack follows it). */
  publish(event: LoggedEvent): Promise<void>;
  sequencer: Sequencer<LoggedEvent>;
  close(): void;
}

/** Largest read when an instance fills a gap; a longer one is read in several. */
const GAP_READ_LIMIT = 1_000;

/**
 * Every event, this instance's and the others', passes through one sequencer (sequencer.ts), which
 * hands it to the sockets in seq order: the channel's room, on this instance only (the others
 * deliver to theirs), through the native fan-out (realtime/native-fanout.ts). The newest-page cache
 * (single instance) is kept by the same events, in the same order, before the sockets get them.
 */
export function createFanout(deps: { io: ChatServer; db: Db; relay?: EventRelay; recent?: RecentMessages; gapWaitMs: number; logger: Logger }): Fanout {
  const { io, db, relay, recent, gapWaitMs, logger } = deps;
  const sequencer = createSequencer<LoggedEvent>({
    deliver(event) {
      if (recent) keepRecent(recent, event);
      io.local.to(channelRoom(event.channelId)).emit(event.type, event.data as never);
    },
    readGap: (channelId, after, upTo) => readEvents(db, channelId, after, upTo, GAP_READ_LIMIT),
    loadHeads: () => loadHeads(db),
    gapWaitMs,
    onSkipped: (channelId, from, to) => logger.warn({ channelId, from, to }, "events no longer in the log were skipped"),
    onReadFailed: (channelId, error) => logger.warn({ err: error, channelId }, "events could not be read back (trying again)"),
  });
  relay?.listen((event) => sequencer.offer(event));
  relay?.onGap(() => void loadHeads(db).then(sequencer.catchUp, () => undefined));
  return {
    sequencer,
    publish(event) {
      relay?.send(event);
      sequencer.offer(event);
      return sequencer.delivered(event.channelId, event.seq);
    },
    close: () => sequencer.close(),
  };
}

function keepRecent(recent: RecentMessages, event: LoggedEvent): void {
  // History entries keep their shape: the event number belongs to the event, not to the message.
  if (event.type === "message") {
    const { seq: _seq, ...message } = event.data;
    recent.created(message);
  }
  else if (event.type === "message:updated") recent.updated(event.data);
  else recent.deleted(event.data);
}
