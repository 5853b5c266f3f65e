/**
 * The public channel every user belongs to (api.md §8), created by the migrations with
 * this id. A `message` without `channelId` goes here, so §3-only clients keep working.
 */
export const GENERAL_CHANNEL_ID = 1;

/** Its name, reserved: no other channel may be called it, in any case or look-alike spelling. */
export const GENERAL_CHANNEL_NAME = "general";
