import { logServerFault, toAppError, type AppError } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";
import type { ChatSocket } from "./rooms.ts";

/**
 * Runs one client event: the ack, if the client asked for one, is always the last argument
 * and gets `{ ok: true, ... }` or `{ ok: false, error }`; without one, a refusal goes to the
 * sender as `<event>:error`. Either way the connection stays up.
 */
export function onClientEvent<R extends object>(
  socket: ChatSocket,
  event: "message" | "typing",
  logger: Logger,
  run: (payload: unknown) => Promise<R>,
  outcome?: (error?: AppError) => void,
): void {
  socket.on(event, async (...args: unknown[]) => {
    const ack = typeof args.at(-1) === "function" ? (args.pop() as (result: unknown) => void) : undefined;
    try {
      const result = await run(args[0]);
      outcome?.();
      ack?.({ ok: true, ...result });
    } catch (error) {
      const appError = toAppError(error);
      outcome?.(appError);
      logServerFault(logger, appError, error, { userId: socket.data.user.id, socketId: socket.id, event });
      if (ack) ack({ ok: false, error: appError.toBody() });
      else socket.emit(`${event}:error`, appError.toBody());
    }
  });
}
