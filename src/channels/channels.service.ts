import type { Db } from "../lib/db.ts";
import { isUniqueViolation } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { authorize } from "../lib/policy.ts";
import type { AuthUser } from "../lib/tokens.ts";
import type { ChannelView, PublicChannelView } from "./channels.schemas.ts";
import { nameSkeleton } from "../lib/names.ts";
import { pageOf, type IdPage } from "../lib/paging.ts";
import { toPublicUser, type PublicUser } from "../users/users.schemas.ts";
import { GENERAL_CHANNEL_ID, GENERAL_CHANNEL_NAME } from "./general.ts";

/**
 * How membership changes reach live sockets (implemented by the realtime layer, which moves the
 * user's sockets into or out of the channel's room and tells them: `channel:joined`, `channel:left`).
 * Called once per real change, after it is stored: never for a join of a channel the user is
 * already in, nor for a leave that removed nothing.
 */
export interface MembershipEvents {
  joined(userId: number, channelId: number): void;
  left(userId: number, channelId: number): void;
}

export type ChannelsService = ReturnType<typeof createChannelsService>;

const generalSkeleton = nameSkeleton(GENERAL_CHANNEL_NAME);
// The same answer whichever channel has the name: the caller may not be able to see it.
const nameTaken = () => new AppError("CHANNEL_NAME_TAKEN", "A channel with that name, or one that looks like it, exists");

type PublicChannelRow = { id: number; name: string; created_at: Date; members: number; joined: boolean };
type MemberRow = { id: number; username: string; role: PublicUser["role"]; created_at: Date };

type ChannelRow = { id: number; name: string; kind: "public" | "private" | "direct"; created_at: Date; unread: number; seq: number };

export function createChannelsService({ db, membership }: { db: Db; membership: MembershipEvents }) {
  /** The caller's channels with unread counts (others' messages after the read marker). */
  async function listFor(userId: number, channelId?: number): Promise<ChannelView[]> {
    const rows = await db.$queryRaw<ChannelRow[]>`
      SELECT c.id, c.kind::text AS kind, c.created_at, c.seq,
        CASE WHEN c.kind = 'direct' THEN coalesce((
          SELECT u.username FROM channel_members o JOIN users u ON u.id = o.user_id
          WHERE o.channel_id = c.id AND o.user_id <> ${userId} LIMIT 1), c.name) ELSE c.name END AS name,
        (SELECT count(*) FROM messages msg
          WHERE msg.channel_id = c.id AND msg.id > m.last_read_id AND msg.deleted_at IS NULL AND msg.user_id <> ${userId})::int AS unread
      FROM channel_members m JOIN channels c ON c.id = m.channel_id
      WHERE m.user_id = ${userId} AND (${channelId ?? null}::int IS NULL OR c.id = ${channelId ?? null}::int)
      ORDER BY c.id`;
    return rows.map((r) => ({ id: r.id, name: r.name, kind: r.kind, createdAt: r.created_at.toISOString(), unread: r.unread, seq: r.seq }));
  }

  async function view(userId: number, channelId: number): Promise<ChannelView> {
    const [channel] = await listFor(userId, channelId);
    if (!channel) throw new AppError("NOT_FOUND", "No such channel");
    return channel;
  }

  /**
   * The channel as `userId` may see it. Private and direct channels one is not in are
   * NOT_FOUND, like channels that do not exist: their existence is not revealed.
   */
  async function findVisible(userId: number, channelId: number) {
    const channel = await db.channel.findUnique({
      where: { id: channelId },
      select: { id: true, kind: true, createdBy: true, members: { where: { userId }, select: { userId: true } } },
    });
    const isMember = (channel?.members.length ?? 0) > 0;
    if (!channel || (channel.kind !== "public" && !isMember)) throw new AppError("NOT_FOUND", "No such channel");
    return { ...channel, isMember };
  }

  /** The channel, if `userId` may read and write it: a member (public ones not joined are FORBIDDEN). */
  async function assertMember(userId: number, channelId: number) {
    const channel = await findVisible(userId, channelId);
    if (!channel.isMember) throw new AppError("FORBIDDEN", "Join this channel first");
    return channel;
  }

  async function addMember(userId: number, channelId: number): Promise<void> {
    // Start the read marker at the newest message: a newcomer's unread count starts at zero.
    const newest = await db.message.findFirst({ where: { channelId }, orderBy: { id: "desc" }, select: { id: true } });
    // ON CONFLICT DO NOTHING: the same join twice at once is one membership, not a unique violation
    // (Prisma's upsert reads, then inserts, and two of them race).
    const { count } = await db.channelMember.createMany({ data: [{ channelId, userId, lastReadId: newest?.id ?? 0 }], skipDuplicates: true });
    // Already a member: its sockets are in the room (or replaying it, resume.ts, and must not join it early).
    if (count > 0) membership.joined(userId, channelId);
  }

  return {
    listFor: (user: AuthUser) => listFor(user.id),

    /** The public channels by id, a page at a time, with member counts and whether the caller is in each: one query. */
    async listPublic(user: AuthUser, { limit, after }: { limit: number; after?: number }): Promise<IdPage<PublicChannelView>> {
      const rows = await db.$queryRaw<PublicChannelRow[]>`
        SELECT c.id, c.name, c.created_at,
          (SELECT count(*) FROM channel_members m WHERE m.channel_id = c.id)::int AS members,
          EXISTS (SELECT 1 FROM channel_members m WHERE m.channel_id = c.id AND m.user_id = ${user.id}::int) AS joined
        FROM channels c
        WHERE c.kind = 'public' AND c.id > ${after ?? 0}::int
        ORDER BY c.id
        LIMIT ${limit + 1}::int`;
      const page = pageOf(rows, limit, (row) => row.id);
      return {
        items: page.rows.map((r) => ({ id: r.id, name: r.name, createdAt: r.created_at.toISOString(), members: r.members, joined: r.joined })),
        nextAfter: page.nextAfter,
      };
    },

    /** A channel's members by user id, a page at a time: a public channel's for anyone, others' for their members (else NOT_FOUND). */
    async members(user: AuthUser, channelId: number, { limit, after }: { limit: number; after?: number }): Promise<IdPage<PublicUser>> {
      await findVisible(user.id, channelId);
      const rows = await db.$queryRaw<MemberRow[]>`
        SELECT u.id, u.username, u.role::text AS role, u.created_at
        FROM channel_members m JOIN users u ON u.id = m.user_id
        WHERE m.channel_id = ${channelId}::int AND m.user_id > ${after ?? 0}::int
        ORDER BY m.user_id
        LIMIT ${limit + 1}::int`;
      const page = pageOf(rows, limit, (row) => row.id);
      return { items: page.rows.map((r) => toPublicUser({ id: r.id, username: r.username, role: r.role, createdAt: r.created_at })), nextAfter: page.nextAfter };
    },

    assertMember,
    findVisible,

    /**
     * Names (api.md §7 "Names"): none may look like general's; a public one may not look like another
     * public one (the partial unique index decides, so two racing creations cannot both win); a
     * private one may not look like a public one. Private names are not compared with each other,
     * nor a public name with private ones: that would reveal that such a private channel exists.
     */
    async create(user: AuthUser, input: { name: string; kind: "public" | "private" }): Promise<ChannelView> {
      const skeleton = nameSkeleton(input.name);
      if (skeleton === generalSkeleton) throw nameTaken();
      if (input.kind === "private") {
        const publicTwin = await db.channel.findFirst({ where: { kind: "public", nameSkeleton: skeleton }, select: { id: true } });
        if (publicTwin) throw nameTaken();
      }
      let channel;
      try {
        channel = await db.channel.create({
          data: { name: input.name, kind: input.kind, nameSkeleton: skeleton, createdBy: user.id, members: { create: { userId: user.id } } },
        });
      } catch (error) {
        if (isUniqueViolation(error, "name_skeleton")) throw nameTaken();
        throw error;
      }
      membership.joined(user.id, channel.id);
      return view(user.id, channel.id);
    },

    /** Public channels only; joining twice is harmless. */
    async join(user: AuthUser, channelId: number): Promise<ChannelView> {
      const channel = await findVisible(user.id, channelId);
      if (channel.kind !== "public") throw new AppError("FORBIDDEN", "Private and direct channels are joined by invitation");
      if (!channel.isMember) await addMember(user.id, channelId);
      return view(user.id, channelId);
    },

    async leave(user: AuthUser, channelId: number): Promise<void> {
      const channel = await assertMember(user.id, channelId);
      if (channelId === GENERAL_CHANNEL_ID) throw new AppError("FORBIDDEN", "Everyone stays in general");
      // Both users stay in their direct channel: one who left could neither reach it again
      // (POST /api/direct answers with the existing channel, which they are not in) nor open another.
      if (channel.kind === "direct") throw new AppError("FORBIDDEN", "A direct channel cannot be left");
      // deleteMany: a second leave racing this one finds nothing to delete, which is fine, and
      // tells nobody: only the leave that removed the row is a change.
      const { count } = await db.channelMember.deleteMany({ where: { channelId, userId: user.id } });
      if (count > 0) membership.left(user.id, channelId);
    },

    /** Private channels: their creator, moderators and admins add members. */
    async invite(actor: AuthUser, channelId: number, userId: number): Promise<ChannelView> {
      const channel = await assertMember(actor.id, channelId);
      if (channel.kind !== "private") throw new AppError("FORBIDDEN", "Members are added to private channels only; public ones are joined");
      if (channel.createdBy !== actor.id) authorize(actor, "channels.invite");
      const target = await db.user.findUnique({ where: { id: userId }, select: { id: true } });
      if (!target) throw new AppError("NOT_FOUND", "No such user");
      await addMember(userId, channelId);
      return view(actor.id, channelId);
    },

    /** The one direct channel between two users, created on first use. */
    async direct(user: AuthUser, otherId: number): Promise<{ channel: ChannelView; created: boolean }> {
      if (otherId === user.id) throw new AppError("FORBIDDEN", "A direct channel needs another user");
      const other = await db.user.findUnique({ where: { id: otherId }, select: { id: true } });
      if (!other) throw new AppError("NOT_FOUND", "No such user");
      const directKey = [user.id, otherId].sort((a, b) => a - b).join(":");
      const existing = await db.channel.findUnique({ where: { directKey }, select: { id: true } });
      if (existing) return { channel: await view(user.id, existing.id), created: false };
      try {
        const channel = await db.channel.create({
          data: { name: "direct", kind: "direct", createdBy: user.id, directKey, members: { create: [{ userId: user.id }, { userId: otherId }] } },
        });
        membership.joined(user.id, channel.id);
        membership.joined(otherId, channel.id);
        return { channel: await view(user.id, channel.id), created: true };
      } catch (error) {
        // Both users opened it at once: the unique key kept one; return that one.
        if (!isUniqueViolation(error, "direct_key")) throw error;
        const winner = await db.channel.findUniqueOrThrow({ where: { directKey }, select: { id: true } });
        return { channel: await view(user.id, winner.id), created: false };
      }
    },

    /** Moves the caller's read marker forward (never back); returns the new marker. */
    async markRead(user: AuthUser, channelId: number, messageId: number): Promise<number> {
      await assertMember(user.id, channelId);
      const [row] = await db.$queryRaw<{ last_read_id: number }[]>`
        UPDATE channel_members SET last_read_id = GREATEST(last_read_id, LEAST(${messageId}::int,
          (SELECT coalesce(max(id), 0) FROM messages WHERE channel_id = ${channelId}::int)))
        WHERE channel_id = ${channelId}::int AND user_id = ${user.id}::int
        RETURNING last_read_id`;
      return row?.last_read_id ?? 0;
    },
  };
}
