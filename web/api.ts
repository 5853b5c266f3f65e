// Session and REST: tokens, the authorised fetch, and refreshing the access token before it expires.
import type { ErrorBody } from "../src/client.ts";

type ErrorDetail = NonNullable<ErrorBody["details"]>[number];

export interface User {
  id: number;
  username: string;
}

interface Session {
  token: string;
  refreshToken: string;
  user: User;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** VALIDATION_FAILED: each field and why (api.md §0). */
    readonly details: ErrorDetail[] = [],
  ) {
    super(message);
  }
}

/** What went wrong, in the API's own words: its message, and for a refused field which one and why. */
export function explain(error: unknown): string[] {
  if (!(error instanceof ApiError)) return ["The server cannot be reached; try again"];
  if (error.details.length === 0) return [error.message];
  return error.details.map(({ path, message }) => (path === "(root)" ? message : `${path[0]!.toUpperCase()}${path.slice(1)} ${message}`));
}

// sessionStorage: survives a reload of this tab, not shared with other tabs, which would
// otherwise refresh one refresh token concurrently and so end the session (api.md §7).
const storageKey = "chat.session";
let session: Session | undefined = JSON.parse(sessionStorage.getItem(storageKey) ?? "null") ?? undefined;
let refreshing: Promise<void> | undefined;
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let onSignedOut: (reason: string) => void = () => {};

export const currentUser = () => session?.user;
export const accessToken = () => session?.token;
export const whenSignedOut = (handler: (reason: string) => void) => void (onSignedOut = handler);

function save(next: Session | undefined): void {
  session = next;
  clearTimeout(refreshTimer);
  if (!next) return sessionStorage.removeItem(storageKey);
  sessionStorage.setItem(storageKey, JSON.stringify(next));
  // A minute before `exp` (a quarter of the lifetime before, for short ones), so requests do not
  // carry an expired token; a clock far off is caught by the refresh on a 401 in api().
  const left = expiresAt(next.token) - Date.now();
  refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.max(1_000, left > 240_000 ? left - 60_000 : left * 0.75));
}

/** The JWT's `exp` in ms; the payload is base64url JSON (we only read it, the server verifies it). */
function expiresAt(token: string): number {
  try {
    const payload = token.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/");
    return Number(JSON.parse(atob(payload)).exp) * 1000;
  } catch {
    return 0;
  }
}

async function request<T>(path: string, init: RequestInit = {}, auth = true): Promise<T> {
  const headers = new Headers(init.headers);
  if (init.body) headers.set("content-type", "application/json");
  if (auth && session) headers.set("authorization", `Bearer ${session.token}`);
  const res = await fetch(path, { ...init, headers });
  if (res.ok) return (res.status === 204 ? undefined : await res.json()) as T;
  const body = (await res.json().catch(() => undefined)) as { error?: ErrorBody } | undefined;
  throw new ApiError(res.status, body?.error?.code ?? "INTERNAL", body?.error?.message ?? res.statusText, body?.error?.details ?? []);
}

/**
 * Rotates the refresh token. One at a time: presenting a spent refresh token twice ends the
 * session, so concurrent callers share the one request in flight.
 */
export function refresh(): Promise<void> {
  const current = session;
  if (!current) return Promise.reject(new ApiError(401, "UNAUTHORIZED", "Not signed in"));
  refreshing ??= (async () => {
    try {
      const pair = await request<{ token: string; refreshToken: string }>("/api/auth/refresh", { method: "POST", body: JSON.stringify({ refreshToken: current.refreshToken }) }, false);
      save({ ...current, ...pair });
    } catch (error) {
      // Refused (spent, revoked, banned): sign in again. Anything else (offline, 503): keep the
      // tokens and try again shortly.
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        save(undefined);
        onSignedOut(error.status === 403 ? error.message : "Your session ended; sign in again");
      } else {
        refreshTimer = setTimeout(() => refresh().catch(() => {}), 5_000);
      }
      throw error;
    } finally {
      refreshing = undefined;
    }
  })();
  return refreshing;
}

/** An authorised API call; on a 401 the token is refreshed and the call made once more. */
export async function api<T>(path: string, init?: RequestInit): Promise<T> {
  try {
    return await request<T>(path, init);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401 || !session) throw error;
    await refresh();
    return request<T>(path, init);
  }
}

export async function signIn(action: "login" | "register", username: string, password: string): Promise<void> {
  save(await request<Session>(`/api/auth/${action}`, { method: "POST", body: JSON.stringify({ username, password }) }, false));
}

export async function signOut(): Promise<void> {
  const ending = session;
  save(undefined);
  if (ending) await request("/api/auth/logout", { method: "POST", body: JSON.stringify({ refreshToken: ending.refreshToken }) }, false).catch(() => {});
}

/** Restarts the refresh timer of a session restored from sessionStorage. */
export const resume = () => session && save(session);
