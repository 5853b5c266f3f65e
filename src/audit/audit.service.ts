import type { Prisma } from "../generated/prisma/client.ts";
import type { Db } from "../lib/db.ts";
import type { AuditEntry, AuditQuery } from "./audit.schemas.ts";

export const auditActions = [
  "register",
  "login",
  "login_failed",
  "refresh_reuse",
  "logout",
  "logout_all",
  /** The caller changed their password: meta.sessions is the number of their other sessions ended. */
  "password_changed",
  "role_change",
  "ban",
  "unban",
  "message_edit",
  "message_delete",
  /** A model moderation decision (api.md §10): meta { mode, outcome: allowed|refused|failed, reason, latencyMs, model, channelId, failure? }. */
  "moderation_decision",
  /** MODERATION=block refused a message or an edit (word list or model): target the channel (never stored) or the edited message. */
  "message_rejected",
  /** MODERATION=flag flagged a delivered message: meta { source, reason, flagId }. */
  "message_flagged",
] as const;

export type AuditAction = (typeof auditActions)[number];

export interface AuditRecord {
  /** The acting user; null for the system, the CLI or an anonymous caller. */
  actorId: number | null;
  action: AuditAction;
  targetType?: "user" | "session" | "message" | "channel";
  targetId?: string | number;
  ip?: string;
  meta?: Prisma.InputJsonObject;
}

/** A Prisma client or an interactive transaction: audit rows are written inside the act they record. */
type Writer = Pick<Db, "auditEntry">;

export type AuditService = ReturnType<typeof createAuditService>;

export function createAuditService({ db }: { db: Db }) {
  return {
    async record(entry: AuditRecord, writer: Writer = db): Promise<void> {
      await writer.auditEntry.create({
        data: {
          actorId: entry.actorId,
          action: entry.action,
          targetType: entry.targetType ?? null,
          targetId: entry.targetId === undefined ? null : String(entry.targetId),
          ip: entry.ip ?? null,
          meta: entry.meta ?? {},
        },
      });
    },

    /** Newest first; `before` pages back by id. */
    async list({ action, actorId, before, limit }: AuditQuery): Promise<AuditEntry[]> {
      const rows = await db.auditEntry.findMany({
        where: {
          ...(action ? { action } : {}),
          ...(actorId !== undefined ? { actorId } : {}),
          ...(before !== undefined ? { id: { lt: BigInt(before) } } : {}),
        },
        orderBy: { id: "desc" },
        take: limit,
      });
      return rows.map((row) => ({
        id: Number(row.id),
        at: row.at.toISOString(),
        actorId: row.actorId,
        action: row.action,
        targetType: row.targetType,
        targetId: row.targetId,
        ip: row.ip,
        meta: row.meta as Record<string, unknown>,
      }));
    },
  };
}
