import { logServerFault, toAppError, type AppError } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";
import type { ChatSocket } from "./rooms.ts";

/**
 * The listener of one client event, made once per server and shared by every socket (Socket.IO
 * calls it with the socket as `this`): a socket holds no closure of its own per event. The ack,
 * if the client asked for one, is always the last argument and gets `{ ok: true, ... }` or
 * `{ ok: false, error }`; without one, a refusal goes to the sender as `<event>:error`. Either
 * way the connection stays up.
 */
export function clientEvent<R extends object>(
  event: "message" | "typing",
  logger: Logger,
  run: (socket: ChatSocket, payload: unknown) => Promise<R>,
  outcome?: (error?: AppError) => void,
): (this: ChatSocket, ...args: unknown[]) => Promise<void> {
  return async function (this: ChatSocket, ...args: unknown[]) {
    const ack = typeof args.at(-1) === "function" ? (args.pop() as (result: unknown) => void) : undefined;
    try {
      const result = await run(this, args[0]);
      outcome?.();
      ack?.({ ok: true, ...result });
    } catch (error) {
      const appError = toAppError(error);
      outcome?.(appError);
      logServerFault(logger, appError, error, { userId: this.data.user.id, socketId: this.id, event });
      if (ack) ack({ ok: false, error: appError.toBody() });
      else this.emit(`${event}:error`, appError.toBody());
    }
  };
}
