import type { ContentfulStatusCode } from "hono/utils/http-status";
import { HTTPException } from "hono/http-exception";
import { isDatabaseUnavailable } from "./db-errors.ts";

/** The error codes of api.md §0, each with its HTTP status. */
export const errorStatus = {
  BAD_JSON: 400,
  VALIDATION_FAILED: 400,
  UNAUTHORIZED: 401,
  INVALID_CREDENTIALS: 401,
  FORBIDDEN: 403,
  BANNED: 403,
  NOT_FOUND: 404,
  USERNAME_TAKEN: 409,
  CHANNEL_NAME_TAKEN: 409,
  PAYLOAD_TOO_LARGE: 413,
  MESSAGE_REJECTED: 422,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  UNAVAILABLE: 503,
  LLM_DISABLED: 503,
} as const satisfies Record<string, ContentfulStatusCode>;

export type ErrorCode = keyof typeof errorStatus;

export interface ErrorDetail {
  path: string;
  message: string;
}

/** The one error shape every REST response and socket ack uses. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: ErrorDetail[];
  /** Seconds until a retry can succeed, also sent as the Retry-After header: RATE_LIMITED, and a busy UNAVAILABLE (api.md §0). */
  retryAfter?: number;
}

/**
 * Thrown anywhere (services, middleware, socket handlers); the REST error handler and
 * the socket ack path both turn it into `ErrorBody`, so there is one way to fail.
 */
export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: ErrorDetail[],
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "AppError";
  }

  get status(): ContentfulStatusCode {
    return errorStatus[this.code];
  }

  toBody(): ErrorBody {
    const body: ErrorBody = { code: this.code, message: this.message };
    if (this.details) body.details = this.details;
    if (this.retryAfter !== undefined) body.retryAfter = this.retryAfter;
    return body;
  }
}

/** 429 with the number of whole seconds to wait. */
export function rateLimited(message: string, msBeforeNext: number): AppError {
  return new AppError("RATE_LIMITED", message, undefined, Math.max(1, Math.ceil(msBeforeNext / 1000)));
}

/** Zod issues as `details`: one entry per field and why. */
export function validationError(
  issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; message: string }>,
  message = "Request failed validation",
): AppError {
  const details = issues.map((issue) => ({
    path: issue.path.map(String).join(".") || "(root)",
    message: issue.message,
  }));
  return new AppError("VALIDATION_FAILED", message, details);
}

/**
 * Maps anything thrown to an AppError: ours pass through, Hono's HTTP exceptions and
 * database outages get their codes, and everything else is `INTERNAL` with no detail.
 */
export function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  if (error instanceof HTTPException) {
    if (error.status === 400) return new AppError("BAD_JSON", "The body is not valid JSON");
    if (error.status === 401) return new AppError("UNAUTHORIZED", "Missing or invalid token");
    if (error.status === 404) return new AppError("NOT_FOUND", "Not found");
    if (error.status === 413) return new AppError("PAYLOAD_TOO_LARGE", "The body is over the size limit");
    // The OpenAPI router's media-type gate: a body whose Content-Type is not one it reads as JSON
    // ("application/json;", "application/json ; x", or any type with an empty body).
    if (error.status === 415) return new AppError("BAD_JSON", "The body must be JSON, sent with Content-Type: application/json");
  }
  if (isDatabaseUnavailable(error)) return new AppError("UNAVAILABLE", "The database is not answering; retry later");
  return new AppError("INTERNAL", "Internal server error");
}

/**
 * Logs a failure that is the server's side of things (5xx): `INTERNAL` as an error with
 * the original exception, outages and shutdown refusals as warnings. Client mistakes
 * (4xx) are not logged here.
 */
export function logServerFault(
  logger: { error(obj: object, msg: string): void; warn(obj: object, msg: string): void },
  appError: AppError,
  error: unknown,
  context: Record<string, unknown>,
): void {
  if (appError.code === "INTERNAL") logger.error({ ...context, err: error }, appError.message);
  else if (appError.status >= 500) logger.warn({ ...context, code: appError.code, err: error }, appError.message);
}
