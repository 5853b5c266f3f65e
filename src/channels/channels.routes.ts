import { createRoute, z } from "@hono/zod-openapi";
import { eventsPageSchema, eventsQuerySchema, historyEntrySchema, historyQuerySchema } from "../messages/messages.schemas.ts";
import { idPageResponse } from "../lib/paging.ts";
import { errorResponse, jsonBody, jsonContent, protectedResponses, validationResponses } from "../lib/responses.ts";
import { userSchema } from "../users/users.schemas.ts";
import {
  addMemberSchema,
  channelIdParamsSchema,
  channelMembersQuerySchema,
  channelSchema,
  createChannelSchema,
  publicChannelSchema,
  publicChannelsQuerySchema,
  readMarkerSchema,
  userIdPathSchema,
} from "./channels.schemas.ts";

const secured = { security: [{ bearerAuth: [] }], tags: ["channels"] };
const refusals = {
  ...validationResponses,
  ...protectedResponses,
  403: errorResponse("FORBIDDEN: not allowed for this channel or role"),
  404: errorResponse("NOT_FOUND: no such channel (or a private one the caller is not in), or no such user"),
};

export const list = createRoute({
  ...secured,
  method: "get",
  path: "/api/channels",
  summary: "The caller's channels, with unread counts",
  responses: { 200: jsonContent(z.array(channelSchema), "Ordered by id"), ...protectedResponses },
});

export const directory = createRoute({
  ...secured,
  method: "get",
  path: "/api/channels/public",
  summary: "Browse the public channels (general included), joined or not, a page at a time",
  request: { query: publicChannelsQuerySchema },
  responses: {
    200: idPageResponse(z.array(publicChannelSchema), "A page of public channels, ordered by id, with their member counts and whether the caller is in each", "/api/channels/public"),
    ...validationResponses,
    ...protectedResponses,
  },
});

export const create = createRoute({
  ...secured,
  method: "post",
  path: "/api/channels",
  summary: "Create a public or private channel (the creator is its first member)",
  request: { body: jsonBody(createChannelSchema) },
  responses: {
    201: jsonContent(channelSchema, "The new channel"),
    ...refusals,
    409: errorResponse("CHANNEL_NAME_TAKEN: the name, another case of it or a look-alike (confusable skeleton) is general's or a public channel's"),
  },
});

export const join = createRoute({
  ...secured,
  method: "post",
  path: "/api/channels/{id}/join",
  summary: "Join a public channel",
  request: { params: channelIdParamsSchema },
  responses: { 200: jsonContent(channelSchema, "Joined (or already a member)"), ...refusals },
});

export const leave = createRoute({
  ...secured,
  method: "post",
  path: "/api/channels/{id}/leave",
  summary: "Leave a channel (not general, not a direct channel)",
  request: { params: channelIdParamsSchema },
  responses: { 204: { description: "Left; the caller's sockets stop receiving it at once" }, ...refusals },
});

export const invite = createRoute({
  ...secured,
  method: "post",
  path: "/api/channels/{id}/members",
  summary: "Add a member to a private channel (its creator, moderators, admins)",
  request: { params: channelIdParamsSchema, body: jsonBody(addMemberSchema) },
  responses: { 200: jsonContent(channelSchema, "The channel"), ...refusals },
});

export const members = createRoute({
  ...secured,
  method: "get",
  path: "/api/channels/{id}/members",
  summary: "A channel's members, a page at a time (a public channel: anyone signed in; private and direct: its members)",
  request: { params: channelIdParamsSchema, query: channelMembersQuerySchema },
  responses: {
    200: idPageResponse(z.array(userSchema), "A page of members, ordered by user id", "/api/channels/{id}/members"),
    ...validationResponses,
    ...protectedResponses,
    404: errorResponse("NOT_FOUND: no such channel, or a private or direct one the caller is not in"),
  },
});

export const direct = createRoute({
  ...secured,
  method: "post",
  path: "/api/direct/{userId}",
  summary: "The one direct channel with a user (created on first use)",
  request: { params: userIdPathSchema },
  responses: {
    200: jsonContent(channelSchema, "The existing direct channel"),
    201: jsonContent(channelSchema, "Created"),
    ...refusals,
  },
});

export const history = createRoute({
  ...secured,
  method: "get",
  path: "/api/channels/{id}/messages",
  summary: "A channel's history with before/after cursors (members only)",
  request: { params: channelIdParamsSchema, query: historyQuerySchema },
  responses: { 200: jsonContent(z.array(historyEntrySchema), "Newest first, or oldest first with `after`; deleted messages as `{ id, deleted: true }`"), ...refusals },
});

export const events = createRoute({
  ...secured,
  method: "get",
  path: "/api/channels/{id}/events",
  summary: "A channel's event log after a seq: every message created, edited and deleted, in seq order (members only, api.md §11)",
  request: { params: channelIdParamsSchema, query: eventsQuerySchema },
  responses: {
    200: jsonContent(eventsPageSchema, "Oldest first; `type` and `data` exactly as the socket event. `limited`: reload history, continue from `head`"),
    ...refusals,
  },
});

export const read = createRoute({
  ...secured,
  method: "post",
  path: "/api/channels/{id}/read",
  summary: "Move the caller's read marker (never backwards)",
  request: { params: channelIdParamsSchema, body: jsonBody(readMarkerSchema) },
  responses: { 204: { description: "Marked; the caller's other sockets get `channel:read`" }, ...refusals },
});
