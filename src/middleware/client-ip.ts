import { createMiddleware } from "hono/factory";
import type { Server } from "bun";
import type { AppEnv } from "../lib/app-env.ts";
import { clientIp } from "../lib/client-ip.ts";
import { consumeOrThrow, type Limiter } from "../lib/rate-limit.ts";

/** Puts the caller's address on `c.var.clientIp` for limits and the audit trail, read when first asked for. */
export function resolveClientIp(trustedHops: number) {
  return createMiddleware<AppEnv & { Bindings: { server?: Server<unknown> } }>(async (c, next) => {
    let address: string | undefined;
    c.set("clientIp", () => (address ??= clientIp(c.req.header("x-forwarded-for"), c.env?.server?.requestIP(c.req.raw)?.address, trustedHops)));
    await next();
  });
}

/** One point per request from the caller's address; 429 RATE_LIMITED when spent. */
export function limitPerIp(limiter: Limiter | undefined) {
  return createMiddleware<AppEnv>(async (c, next) => {
    await consumeOrThrow(limiter, c.get("clientIp")(), "Too many requests from this address; try again later");
    await next();
  });
}
