import { cors } from "hono/cors";
import { bodyLimit } from "hono/body-limit";
import { requestId } from "hono/request-id";
import { Server as SocketServer } from "socket.io";
import { authRouter } from "./auth/auth.index.ts";
import { createAuthService } from "./auth/auth.service.ts";
import { createLoginFailures } from "./auth/login-failures.ts";
import type { Config } from "./config.ts";
import { healthRouter } from "./health/health.index.ts";
import { createRouter } from "./lib/create-router.ts";
import type { Db } from "./lib/db.ts";
import { AppError } from "./lib/errors.ts";
import type { Logger } from "./lib/logger.ts";
import { createTokenSigner } from "./lib/tokens.ts";
import { createPasswordHasher } from "./lib/password.ts";
import { messagesRouter } from "./messages/messages.index.ts";
import { createMessagesService } from "./messages/messages.service.ts";
import { createMessageSearch } from "./messages/messages.search.ts";
import { createFanout } from "./messages/fanout.ts";
import { messageHandlers } from "./messages/messages.socket.ts";
import { createResumer, parseSince } from "./messages/resume.ts";
import { schedulePruning } from "./messages/log-pruning.ts";
import { readMarkerNotifier, typingHandlers } from "./channels/channels.socket.ts";
import { presenceRouter } from "./presence/presence.index.ts";
import { lapsedPresence, presenceAnnouncer } from "./presence/presence.socket.ts";
import { presenceHandoff } from "./presence/presence-handoff.ts";
import { configureTopology } from "./topology.ts";
import { errorHandler, notFoundHandler } from "./middleware/error-handler.ts";
import { refuseWhileDraining } from "./middleware/draining.ts";
import { requireJsonBody } from "./middleware/json-body.ts";
import { observeRequests } from "./middleware/observe-requests.ts";
import { createMetrics } from "./metrics/metrics.ts";
import { guardSlowClients } from "./realtime/slow-clients.ts";
import { capSocketsPerUser, handshakeLimits } from "./realtime/handshake-limits.ts";
import { countRestMessages, logMetricsAccess, metricsAccess, metricsRouter } from "./metrics/metrics.index.ts";
import { requireAuth as requireAuthMiddleware } from "./middleware/require-auth.ts";
import { limitPerIp, resolveClientIp } from "./middleware/client-ip.ts";
import { auditRouter } from "./audit/audit.index.ts";
import { createAuditService } from "./audit/audit.service.ts";
import { moderationRouter } from "./moderation/moderation.index.ts";
import { createModerationService } from "./moderation/moderation.service.ts";
import { createLlmClient } from "./llm/llm-client.ts";
import { allOf } from "./lib/rate-limit.ts";
import type { RedisClient } from "./lib/redis.ts";
import { createAccessGuard } from "./sessions/access-guard.ts";
import { createAuthenticator } from "./sessions/authenticator.ts";
import { createRevocations } from "./sessions/revocations.ts";
import { createSessionsService } from "./sessions/sessions.service.ts";
import { secureHeaders } from "hono/secure-headers";
import {
  authenticateSockets,
  handleConnections,
  loadSocketChannels,
  socketDisconnector,
  socketMembership,
  type ChatServer,
} from "./realtime/realtime.ts";
import { channelsRouter } from "./channels/channels.index.ts";
import { createChannelsService } from "./channels/channels.service.ts";
import { usersRouter } from "./users/users.index.ts";
import { summariesRouter } from "./summaries/summaries.index.ts";
import { createSummariesService } from "./summaries/summaries.service.ts";
import { mountApiDocs } from "./docs/openapi.ts";
import { createUsersService } from "./users/users.service.ts";
import { webPage } from "./web/web.index.ts";

export interface AppDeps {
  config: Config & { JWT_SECRET: string };
  db: Db;
  logger: Logger;
  /** With REDIS_URL: shared by every instance for broadcasts, presence, revocations and limits (api.md §9). */
  redis?: RedisClient;
}

/**
 * Builds the whole service — REST app, Socket.IO server and the services both share —
 * without opening a port. The entry point serves it; tests call `app.request()` or
 * serve it on an ephemeral port.
 */
export function createApp(deps: AppDeps) {
  const { config, db, logger, redis } = deps;
  // One instance or several: every engine that differs is chosen there (topology.ts).
  const topology = configureTopology({ config, redis, logger });
  const { redisHealth, createLimiter, recent } = topology;
  const io: ChatServer = new SocketServer({
    // A session that has not authenticated by then is closed (api.md §7 Connections); Socket.IO's default is 45 s.
    connectTimeout: config.SOCKET_CONNECT_TIMEOUT_MS,
    ...(topology.adapter ? { adapter: topology.adapter } : {}),
  });
  // Checked in server.ts before the engine sees a handshake (per address: rate, sessions not yet authenticated).
  const handshakes = handshakeLimits(io, {
    limiter: createLimiter("socket-handshake-ip", config.SOCKET_HANDSHAKE_RATE_PER_IP),
    maxPendingPerIp: config.SOCKET_MAX_PENDING_PER_IP,
    trustedHops: config.TRUST_PROXY,
    connectTimeoutMs: config.SOCKET_CONNECT_TIMEOUT_MS,
  });
  const signer = createTokenSigner(config.JWT_SECRET, config.JWT_ACCESS_TTL);
  const guard = createAccessGuard({ db });
  const authenticator = createAuthenticator(signer, guard);
  // With Redis, a survivor announces the users of an instance that died with its sockets open (presence.socket.ts).
  // Offline after PRESENCE_GRACE_MS, kept across a graceful restart (one instance: through the database).
  const presence = presenceAnnouncer(io, topology.createPresence({ instanceTtlMs: config.PRESENCE_INSTANCE_TTL_MS, onLapse: lapsedPresence(io) }), {
    logger,
    graceMs: config.PRESENCE_GRACE_MS,
    handoff: topology.clustered ? undefined : presenceHandoff(db),
  });
  const revocations = createRevocations({ guard, disconnect: socketDisconnector(io), peers: topology.revocationPeers(io, guard), link: redisHealth });

  // The end of the message path: every committed event, this instance's and the others', to the
  // channel's sockets in seq order (messages/fanout.ts); resume replays the log before a room is joined.
  const fanout = createFanout({ io, db, relay: topology.relay(io), recent, gapWaitMs: config.EVENT_GAP_WAIT_MS, logger });
  const resumer = createResumer({ db, sequencer: fanout.sequencer, maxEvents: config.RESUME_MAX_EVENTS, logger });
  const pruning = schedulePruning({ db, retentionHours: config.EVENT_LOG_RETENTION_HOURS, logger });

  const channels = createChannelsService({ db, membership: socketMembership(io, { clustered: topology.clustered, resumer }) });
  const audit = createAuditService({ db });
  // api.md §10: undefined without LLM_BASE_URL (the LLM features then answer LLM_DISABLED). Each
  // purpose has slots of its own: moderation, in the write path, never waits behind a summary.
  const summaries = createSummariesService({
    db,
    channels,
    llm: createLlmClient(config, config.LLM_MAX_CONCURRENCY),
    contextTokens: config.LLM_CONTEXT_TOKENS,
    limiter: createLimiter("summaries", config.RATE_LIMIT_SUMMARIES),
    logger,
  });
  // api.md §10: the word list, then the model when LLM_BASE_URL is set; MODERATION=off runs nothing.
  const moderation = createModerationService({
    config,
    llm: config.MODERATION === "off" ? undefined : createLlmClient(config, config.LLM_MODERATION_CONCURRENCY),
    db,
    audit,
    logger,
  });
  // A client that stops reading is dropped once SOCKET_MAX_BUFFERED_BYTES wait for it (slow-clients.ts).
  const slowClients = guardSlowClients(io, {
    maxBufferedBytes: config.SOCKET_MAX_BUFFERED_BYTES,
    onDrop(drop) {
      logger.warn(drop, "slow client disconnected: it stopped reading");
      metrics.slowClientDropped(drop.transport);
    },
  });
  // At most PASSWORD_HASH_CONCURRENCY argon2id runs (19 MiB each) at once; a bounded queue behind them.
  const hasher = createPasswordHasher({
    concurrency: config.PASSWORD_HASH_CONCURRENCY,
    queue: config.PASSWORD_HASH_QUEUE,
    onRefused: () => metrics.passwordHashRefused(),
  });
  const metrics = createMetrics({
    connectedSockets: () => io.of("/").sockets.size,
    pendingHandshakes: handshakes.pending,
    engineSessions: handshakes.sessions,
    heldForClients: slowClients.heldBytes,
    redisUp: redisHealth && (() => redisHealth.available),
    passwordHashing: hasher.stats,
  });
  const sessions = createSessionsService({ db, config, revocations, audit });
  const users = createUsersService({ db, audit, sessions, revocations });
  const services = {
    audit,
    channels,
    sessions,
    auth: createAuthService({
      db,
      signer,
      sessions,
      audit,
      config,
      hasher,
      loginFailures: createLoginFailures({
        createLimiter,
        config,
        onDelayed: metrics.loginDelayed,
        onBackoffStarted: (username) => logger.warn({ username }, "failed logins for this username from many addresses: its logins are slowed down"),
      }),
      onUserCreated: users.forgetPages,
    }),
    users,
    presence,
    // api.md §7: bounded candidates, SEARCH_TIMEOUT_MS, SEARCH_MAX_CONCURRENCY per instance, RATE_LIMIT_SEARCH per user.
    search: createMessageSearch({ db, channels, config, limiter: createLimiter("search", config.RATE_LIMIT_SEARCH) }),
    messages: createMessagesService({
      db,
      channels,
      audit,
      fanout,
      // Edits and deletions also drop the cached summaries whose range they fall in (api.md §10). Not
      // awaited: a read meanwhile still skips the stale row (summaries.service.ts `cached`).
      onChanged: (channelId, messageId) =>
        void summaries.invalidate(channelId, messageId).catch((error) => logger.warn({ err: error, channelId, messageId }, "summary cache not invalidated")),
      recent,
      moderation,
      onPersisted: metrics.persisted,
      onBatch: metrics.messageBatch,
      limiter: allOf(
        createLimiter("messages-burst", config.RATE_LIMIT_MESSAGES_BURST),
        createLimiter("messages-sustained", config.RATE_LIMIT_MESSAGES_SUSTAINED),
      ),
    }),
  };

  // A malformed auth.since is refused before anything else is looked at (api.md §11).
  parseSince(io);
  authenticateSockets(io, authenticator);
  loadSocketChannels(io, db);
  // The last io.use guard: a socket it admits connects in the same tick, so its count is exact.
  capSocketsPerUser(io, { max: config.SOCKET_MAX_PER_USER, connectTimeoutMs: config.SOCKET_CONNECT_TIMEOUT_MS });
  handleConnections(io, {
    // Per socket, in this instance's memory: a socket lives on one instance (event-budget.ts).
    eventBudget: { rate: config.SOCKET_EVENT_RATE, refusals: config.SOCKET_EVENT_REFUSALS },
    handlers: [
      messageHandlers({ messages: services.messages, authenticator, logger, metrics }),
      typingHandlers({ channels, authenticator, typingLimiter: createLimiter("typing", config.RATE_LIMIT_TYPING), logger }),
    ],
    resumer,
    presence,
    authenticator,
    logger,
    metrics,
  });

  const requireAuth = requireAuthMiddleware(authenticator);
  const limitAuthPerIp = limitPerIp(createLimiter("auth-ip", config.RATE_LIMIT_AUTH_PER_IP));
  const lifecycle = { draining: false };
  const app = createRouter();
  app.use(requestId({ headerName: "X-Request-Id" }));
  app.use(observeRequests(logger, metrics));
  // Before the body checks below, so a send they refuse is counted as rejected too.
  app.use("/api/messages", countRestMessages(metrics));
  app.use(secureHeaders());
  // Only with CORS_ORIGINS: with none, no origin is granted and a browser reads no CORS header, and
  // hono's cors would still build each response twice over (a tenth of a cached read's cost).
  if (config.CORS_ORIGINS.length > 0) app.use(cors({ origin: corsOrigin(config.CORS_ORIGINS), exposeHeaders: ["Link", "X-Request-Id", "Retry-After"] }));
  // After the headers above, so a 503 while draining carries them too (and a browser can read it).
  app.use(refuseWhileDraining(lifecycle));
  app.use(resolveClientIp(config.TRUST_PROXY));
  app.use(
    bodyLimit({
      maxSize: config.BODY_LIMIT_BYTES,
      onError: () => {
        throw new AppError("PAYLOAD_TOO_LARGE", `The body is over the ${config.BODY_LIMIT_BYTES}-byte limit`);
      },
    }),
  );
  app.use(requireJsonBody);
  // The chat page at / (web/): a client of the API below, served from this origin.
  app.use(webPage());
  app.onError(errorHandler(logger));
  app.notFound(notFoundHandler);

  // Kept as one chain: its type carries every route, for `hono/client` (AppType below).
  const api = app
    .route("/", healthRouter({ db, redis: redisHealth }))
    .route("/", authRouter({ auth: services.auth, requireAuth, limitAuthPerIp }))
    .route("/", usersRouter({ users: services.users, requireAuth }))
    .route("/", messagesRouter({ messages: services.messages, search: services.search, requireAuth }))
    .route("/", presenceRouter({ presence, requireAuth }))
    .route("/", metricsRouter({ metrics, config }))
    .route("/", auditRouter({ audit, requireAuth }))
    // Before the channels router, whose `/api/channels/*` auth would otherwise run a second time.
    .route("/", summariesRouter({ summaries, requireAuth }))
    .route("/", moderationRouter({ moderation, requireAuth }))
    .route(
      "/",
      channelsRouter({
        channels,
        messages: services.messages,
        requireAuth,
        // Unread counts stay consistent across the user's sockets.
        onRead: readMarkerNotifier(io),
      }),
    );

  mountApiDocs(app);
  logMetricsAccess(logger, metricsAccess(config));

  return { app, api, io, services, lifecycle, logger, metrics, slowClients, handshakes, fanout, pruning };
}

/** The REST API's type, for a typed `hono/client` (`hc<AppType>(url)`): see src/client.ts. */
export type AppType = ReturnType<typeof createApp>["api"];

export type App = ReturnType<typeof createApp>;

/** `CORS_ORIGINS` as both Hono and Socket.IO take it: a list, or "*" for any origin. */
export function corsOrigin(origins: string[]): string | string[] {
  return origins.includes("*") ? "*" : origins;
}
