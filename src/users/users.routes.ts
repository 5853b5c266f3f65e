import { createRoute, z } from "@hono/zod-openapi";
import { idPageResponse } from "../lib/paging.ts";
import { errorResponse, jsonBody, jsonContent, optionalJsonBody, protectedResponses, validationResponses } from "../lib/responses.ts";
import { banBodySchema, listUsersQuerySchema, setRoleBodySchema, userIdParamsSchema, userSchema } from "./users.schemas.ts";

export const list = createRoute({
  method: "get",
  path: "/api/users",
  tags: ["users"],
  summary: "List users by id, a page at a time",
  security: [{ bearerAuth: [] }],
  request: { query: listUsersQuerySchema },
  responses: {
    200: idPageResponse(z.array(userSchema), "A page of users, ordered by id", "/api/users"),
    ...validationResponses,
    ...protectedResponses,
  },
});

export const me = createRoute({
  method: "get",
  path: "/api/users/me",
  tags: ["users"],
  summary: "The signed-in user",
  security: [{ bearerAuth: [] }],
  responses: {
    200: jsonContent(userSchema, "The user the token belongs to"),
    ...protectedResponses,
  },
});

const adminResponses = {
  ...validationResponses,
  ...protectedResponses,
  403: errorResponse("FORBIDDEN: the caller's role does not allow it, or the target is the caller or ranks higher"),
  404: errorResponse("NOT_FOUND: no such user"),
};

export const setRole = createRoute({
  method: "patch",
  path: "/api/users/{id}",
  tags: ["users", "admin"],
  summary: "Change a user's role (admin)",
  security: [{ bearerAuth: [] }],
  request: { params: userIdParamsSchema, body: jsonBody(setRoleBodySchema) },
  responses: { 200: jsonContent(userSchema, "The user with the new role"), ...adminResponses },
});

export const ban = createRoute({
  method: "post",
  path: "/api/users/{id}/ban",
  tags: ["users", "admin"],
  summary: "Ban a user (moderator or admin; a moderator cannot ban an admin)",
  security: [{ bearerAuth: [] }],
  request: { params: userIdParamsSchema, body: optionalJsonBody(banBodySchema) },
  responses: { 200: jsonContent(userSchema, "Banned: every session ended, sockets disconnected"), ...adminResponses },
});

export const unban = createRoute({
  method: "post",
  path: "/api/users/{id}/unban",
  tags: ["users", "admin"],
  summary: "Lift a ban (moderator or admin; a moderator cannot unban an admin)",
  security: [{ bearerAuth: [] }],
  request: { params: userIdParamsSchema },
  responses: { 200: jsonContent(userSchema, "No longer banned; the user signs in again"), ...adminResponses },
});
