import type { ChatServer } from "../realtime/rooms.ts";
import type { AccessGuard } from "./access-guard.ts";

/** How live connections are cut when access ends (implemented by the realtime layer). */
export interface Disconnector {
  sessions(sessionIds: string[]): void;
  user(userId: number): void;
}

/**
 * The one way a change of access is announced: ended sessions, bans and role changes
 * go through here, which drops cached access state and disconnects live sockets.
 * With several instances (§9) `peers` carries the change to the others' caches; the socket
 * disconnects already reach every instance through the Socket.IO adapter; and `link` has what
 * was announced while Redis was away announced again once it is back (see below).
 */
export function createRevocations({ guard, disconnect, peers, link }: { guard: AccessGuard; disconnect: Disconnector; peers?: PeerNotifier; link?: PeerLink }) {
  const announce = (change: AccessChange, cut: boolean) => {
    peers?.(change);
    if (change.sessionIds) disconnect.sessions(change.sessionIds);
    else if (cut && change.userId !== undefined) disconnect.user(change.userId);
  };
  const replays = link ? replayAfterOutages(link, announce) : undefined;
  return {
    sessionsEnded(sessionIds: string[]): void {
      if (sessionIds.length === 0) return;
      for (const id of sessionIds) guard.forgetSession(id);
      replays?.note({ sessionIds }, true);
      announce({ sessionIds }, true);
    },
    userChanged(userId: number, { disconnect: cut }: { disconnect: boolean }): void {
      guard.forgetUser(userId);
      replays?.note({ userId }, cut);
      announce({ userId }, cut);
    },
  };
}

type AccessChange = { sessionIds?: string[]; userId?: number };

/** How the instances reach each other (Redis, with REDIS_URL): see `watchRedis` in src/lib/redis.ts. */
export interface PeerLink {
  readonly available: boolean;
  onRecovered(listener: (noticedAt: number) => void): void;
}

/**
 * How long before an outage was noticed a revocation may already have been lost: the outage
 * starts some time before a failed command or PING reveals it (src/lib/redis.ts).
 */
const UNNOTICED_OUTAGE_MS = 10_000;
/** Revocations kept for replay at most (the oldest go first past this). */
const MAX_REPLAYS = 10_000;
/**
 * The replay is made twice: the cache drop travels by Redis pub/sub, which keeps nothing, so an
 * instance whose subscriber connection comes back a little after ours would miss the first.
 * (The socket disconnects travel by the stream: those reach every instance either way.)
 */
const REPLAY_AGAIN_MS = 3_000;

/**
 * While Redis is away a revocation reaches this instance only: the others keep their cached
 * access state (up to the guard's lifetime) and, worse, the ended sessions' and banned users'
 * sockets stay connected there. So every revocation made during an outage, or shortly before it
 * was noticed, is announced again once Redis is back. Twice is harmless: the same caches are
 * dropped, the same ended sessions' sockets cut.
 */
function replayAfterOutages(link: PeerLink, announce: (change: AccessChange, cut: boolean) => void) {
  let recent: { at: number; change: AccessChange; cut: boolean }[] = [];
  link.onRecovered((noticedAt) => {
    const due = recent.filter((r) => r.at >= noticedAt - UNNOTICED_OUTAGE_MS);
    recent = [];
    if (due.length === 0) return;
    const replay = () => {
      for (const { change, cut } of due) announce(change, cut);
    };
    replay();
    setTimeout(replay, REPLAY_AGAIN_MS).unref();
  });
  return {
    note(change: AccessChange, cut: boolean): void {
      const now = Date.now();
      // While the link is up, only the last few seconds' may still need a replay.
      const stale = (at: number) => link.available && at < now - UNNOTICED_OUTAGE_MS;
      while (recent.length > 0 && (recent.length >= MAX_REPLAYS || stale(recent[0]!.at))) recent.shift();
      recent.push({ at: now, change, cut });
    },
  };
}

/** Tells the other instances to drop their cached access state too (api.md §9). */
export type PeerNotifier = (change: { sessionIds?: string[]; userId?: number }) => void;

/** Applies another instance's revocation to this instance's cache. */
export function forgetRevoked(guard: AccessGuard, change: { sessionIds?: string[]; userId?: number }): void {
  for (const id of change.sessionIds ?? []) guard.forgetSession(id);
  if (change.userId !== undefined) guard.forgetUser(change.userId);
}

export type Revocations = ReturnType<typeof createRevocations>;

/** Revocations reach the other instances' access caches (and theirs reach this one's). */
export function peerRevocations(io: ChatServer, guard: AccessGuard): PeerNotifier {
  io.on("revoked", (change) => forgetRevoked(guard, change));
  return (change) => io.serverSideEmit("revoked", change);
}
