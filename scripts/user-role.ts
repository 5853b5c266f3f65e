import { createAuditService } from "../src/audit/audit.service.ts";
import { envSchema } from "../src/config.ts";
import { createDb } from "../src/lib/db.ts";
import { codePointLabel } from "../src/lib/names.ts";
import { roleSchema, usernameKey } from "../src/users/users.schemas.ts";
import { grantRole } from "../src/users/grant-role.ts";

// `bun run user:role <username> <role>`: set a role from the command line (how the first
// admin is made when ADMIN_USERNAMES is not used). Audited as a role_change with no actor.
const [username, roleArg] = process.argv.slice(2);
const role = roleSchema.safeParse(roleArg);
const url = envSchema.shape.DATABASE_URL.safeParse(process.env.DATABASE_URL || undefined);
if (!username || !role.success) {
  console.error("usage: bun run user:role <username> <user|moderator|admin>");
  process.exit(2);
}
if (!url.success || !url.data) {
  console.error("DATABASE_URL: set it to the postgresql:// URL of the service's database");
  process.exit(1);
}

const db = createDb(url.data, { poolSize: 1 });
try {
  const typed = username.trim().normalize("NFC");
  const user = await db.user.findUnique({ where: { usernameKey: usernameKey(typed) } });
  if (!user) {
    console.error(`no user named ${JSON.stringify(username)}`);
    process.exitCode = 1;
  } else if (user.username.toLowerCase() !== typed.toLowerCase()) {
    // The folded key matched, but not merely by case: "ſecadmin" (long s) for "secadmin". On a
    // terminal the two look alike; the code points show which account this is.
    const codePoints = [...user.username].map(codePointLabel).join(" ");
    console.error(`no user named ${JSON.stringify(username)}; the account ${JSON.stringify(user.username)} (${codePoints}) folds to the same name: type its name exactly`);
    process.exitCode = 1;
  } else {
    const changed = await grantRole({ db, audit: createAuditService({ db }) }, [user.username], role.data, "cli");
    console.log(changed.length > 0 ? `${user.username}: ${changed[0]?.from} → ${role.data}` : `${user.username} is already ${role.data}`);
  }
} finally {
  await db.$disconnect();
}
