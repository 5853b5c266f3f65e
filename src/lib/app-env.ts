import type { OpenAPIHono } from "@hono/zod-openapi";
import type { AuthUser } from "./tokens.ts";
import type { ErrorCode } from "./errors.ts";

/** What middleware puts on the Hono context for handlers to read. */
export interface AppEnv {
  Variables: {
    requestId: string;
    /**
     * The caller's address, X-Forwarded-For honoured as far as TRUST_PROXY says: worked out on
     * first use (most requests never ask, and Bun's requestIP costs a tenth of a cached read).
     */
    clientIp: () => string;
    /** Set by `requireAuth` on protected routes. */
    user: AuthUser;
    /** Set by the error handler when the request failed. */
    errorCode?: ErrorCode;
  };
}

export type AppRouter = OpenAPIHono<AppEnv>;
