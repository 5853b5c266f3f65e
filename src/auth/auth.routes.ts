import { createRoute } from "@hono/zod-openapi";
import { errorResponse, jsonBody, jsonContent, protectedResponses, validationResponses } from "../lib/responses.ts";
import { authResultSchema, credentialsSchema, passwordChangeSchema, refreshBodySchema, registrationSchema, tokenPairSchema } from "./auth.schemas.ts";

const limited = { 429: errorResponse("RATE_LIMITED, with Retry-After") };
/** Every route that hashes or checks a password (src/lib/password.ts). */
const busy = { 503: errorResponse("UNAVAILABLE, with Retry-After: too many passwords being checked at once; or the database is away") };

export const register = createRoute({
  method: "post",
  path: "/api/auth/register",
  tags: ["auth"],
  summary: "Create an account and sign in",
  request: { body: jsonBody(registrationSchema) },
  responses: {
    201: jsonContent(authResultSchema, "The new account and its tokens"),
    ...validationResponses,
    409: errorResponse("USERNAME_TAKEN: the name, another case of it or a look-alike (confusable skeleton) is registered, or it is reserved by ADMIN_USERNAMES"),
    413: errorResponse("PAYLOAD_TOO_LARGE"),
    ...limited,
    ...busy,
  },
});

export const login = createRoute({
  method: "post",
  path: "/api/auth/login",
  tags: ["auth"],
  summary: "Sign in with username and password",
  request: { body: jsonBody(credentialsSchema) },
  responses: {
    200: jsonContent(authResultSchema, "The account and fresh tokens"),
    ...validationResponses,
    401: errorResponse("INVALID_CREDENTIALS: unknown user or wrong password, deliberately the same"),
    403: errorResponse("BANNED"),
    413: errorResponse("PAYLOAD_TOO_LARGE"),
    ...limited,
    ...busy,
  },
});

export const refresh = createRoute({
  method: "post",
  path: "/api/auth/refresh",
  tags: ["auth"],
  summary: "Trade a refresh token for a new pair (the presented one is spent)",
  request: { body: jsonBody(refreshBodySchema) },
  responses: {
    200: jsonContent(tokenPairSchema, "A new access token and the next refresh token"),
    ...validationResponses,
    401: errorResponse("UNAUTHORIZED: unknown, expired or revoked; a reused token also revokes its session"),
    403: errorResponse("BANNED"),
  },
});

export const logout = createRoute({
  method: "post",
  path: "/api/auth/logout",
  tags: ["auth"],
  summary: "End the session a refresh token belongs to",
  request: { body: jsonBody(refreshBodySchema) },
  responses: { 204: { description: "Ended (or already unknown)" }, ...validationResponses },
});

export const logoutAll = createRoute({
  method: "post",
  path: "/api/auth/logout-all",
  tags: ["auth"],
  summary: "End every session of the caller",
  security: [{ bearerAuth: [] }],
  responses: { 204: { description: "Every session ended; live sockets disconnected" }, ...protectedResponses },
});


export const changePassword = createRoute({
  method: "post",
  path: "/api/auth/password",
  tags: ["auth"],
  summary: "Change the caller's password; every other session of theirs ends",
  security: [{ bearerAuth: [] }],
  request: { body: jsonBody(passwordChangeSchema) },
  responses: {
    204: { description: "Changed. This session carries on; every other session ended, its sockets disconnected" },
    ...validationResponses,
    401: errorResponse("UNAUTHORIZED (token), or INVALID_CREDENTIALS: the current password is wrong (counted as a failed login)"),
    403: errorResponse("BANNED"),
    413: errorResponse("PAYLOAD_TOO_LARGE"),
    ...limited,
    ...busy,
  },
});
