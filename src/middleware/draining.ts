import { createMiddleware } from "hono/factory";
import { AppError } from "../lib/errors.ts";

/** Tells a proxy to move on: this instance is going away. */
export const drainingHeaders = { connection: "close", "retry-after": "1" };

export const shuttingDown = () => new AppError("UNAVAILABLE", "The server is shutting down; retry shortly or on another instance");

/** Once shutdown starts, new requests get 503 UNAVAILABLE while in-flight ones finish. */
export function refuseWhileDraining(lifecycle: { draining: boolean }) {
  return createMiddleware(async (c, next) => {
    if (lifecycle.draining) {
      c.header("Connection", drainingHeaders.connection);
      c.header("Retry-After", drainingHeaders["retry-after"]);
      throw shuttingDown();
    }
    await next();
  });
}
