import { envSchema } from "../src/config.ts";
import { migrateDeploy } from "../src/lib/migrate.ts";

// `bun run db:migrate`: Prisma's `migrate deploy` against DATABASE_URL, after checking
// the URL is there (Prisma's own message for a missing one is misleading offline).
const url = envSchema.shape.DATABASE_URL.safeParse(process.env.DATABASE_URL || undefined);
if (!url.success || !url.data) {
  console.error("DATABASE_URL: set it to the postgresql:// URL of the database to migrate");
  process.exit(1);
}
try {
  await migrateDeploy(url.data, process.env, { showOutput: true });
} catch (error) {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
}
