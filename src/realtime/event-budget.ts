import type { Socket } from "socket.io";
import type { RateLimitSetting } from "../config.ts";
import { AppError, rateLimited } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";

/**
 * At most `points` per `durationSeconds`: a fixed window that opens with its first point, as
 * rate-limiter-flexible counts the RATE_LIMIT_* settings, so "N/duration" means the same here.
 * Not that library: this runs for every event before anything else, so it must be synchronous
 * (its limiters answer with promises), and it belongs to one socket, so it goes with it.
 * Returns a function that takes a point: 0 when there was one, else the ms until the window ends.
 */
export function fixedWindow({ points, durationSeconds }: NonNullable<RateLimitSetting>): (now?: number) => number {
  let used = 0;
  let resetAt = 0;
  return (now = Date.now()) => {
    if (now >= resetAt) {
      used = 0;
      resetAt = now + durationSeconds * 1000;
    }
    if (used < points) {
      used++;
      return 0;
    }
    return resetAt - now;
  };
}

export interface EventBudget {
  /** SOCKET_EVENT_RATE: client events per socket. */
  rate: RateLimitSetting;
  /** SOCKET_EVENT_REFUSALS: refusals per socket before it is disconnected. */
  refusals: RateLimitSetting;
}

/**
 * The first thing every client event on `socket` meets: `socket.use` sees each event packet, of
 * any name and with any payload, before a handler does. Over SOCKET_EVENT_RATE, the event is
 * refused RATE_LIMITED here, in memory (in its ack, or as `<event>:error` for one of ours sent
 * without one), and goes no further; so one socket's flood costs the database nothing. A socket
 * refused more than SOCKET_EVENT_REFUSALS times is disconnected: a client told to slow down that
 * does not is not going to. Within the budget, an event of a name the contract does not know is
 * answered NOT_FOUND if it asks for an ack, and dropped.
 */
export function budgetEvents(
  socket: Socket,
  { rate, refusals }: EventBudget,
  {
    events,
    logger,
    onRefused,
    onCut,
  }: { events: ReadonlySet<string>; logger: Logger; onRefused?: () => void; onCut?: () => void },
): void {
  const take = rate ? fixedWindow(rate) : undefined;
  const patience = refusals ? fixedWindow(refusals) : undefined;
  let refused = 0;
  let loggedUntil = 0;
  let cut = false;
  socket.use((packet, next) => {
    // Packets already decoded when the socket was cut still come through here: they are dropped.
    if (cut) return;
    const [event] = packet as unknown[];
    const last: unknown = packet.at(-1);
    const ack = typeof last === "function" ? (last as (answer: unknown) => void) : undefined;
    const known = typeof event === "string" && events.has(event);
    const now = Date.now();
    const wait = take?.(now) ?? 0;
    if (wait === 0) {
      if (known) return next();
      ack?.({ ok: false, error: new AppError("NOT_FOUND", "No such event").toBody() });
      return;
    }

    refused++;
    onRefused?.();
    const error = rateLimited("Too many events on this socket; slow down", wait).toBody();
    if (ack) ack({ ok: false, error });
    // Only for our own events: a name the client made up is not echoed back to it.
    else if (known) socket.emit(`${event}:error`, error);
    const context = { socketId: socket.id, userId: socket.data.user?.id, refused };
    // One line per window of refusals, not one per refused event.
    if (now >= loggedUntil) {
      loggedUntil = now + wait;
      logger.debug(context, "socket over its event budget (SOCKET_EVENT_RATE): events refused");
    }
    if (patience && patience(now) > 0) {
      cut = true;
      onCut?.();
      logger.warn(context, "socket disconnected: it kept sending over its event budget (SOCKET_EVENT_REFUSALS)");
      socket.disconnect(true);
    }
  });
}
