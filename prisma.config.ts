import path from "node:path";
import { PrismaPg } from "@prisma/adapter-pg";
import { defineConfig } from "prisma/config";

// `prisma generate` needs no database, but without a well-formed DATABASE_URL Prisma
// 6.19 falls back to downloading a native engine from a host these machines cannot
// reach. Give generate (run at `npm install`) a placeholder; every other command
// connects and must be given the real URL.
if (!process.env.DATABASE_URL && process.argv.includes("generate")) {
  process.env.DATABASE_URL = "postgresql://placeholder@localhost:5432/placeholder";
}

// The JS engine plus the pg driver adapter runs offline and is the same code path the
// service uses at run time (src/lib/db.ts).
export default defineConfig({
  experimental: { adapter: true },
  engine: "js",
  schema: path.join("prisma", "schema.prisma"),
  migrations: { path: path.join("prisma", "migrations") },
  async adapter() {
    const connectionString = process.env.DATABASE_URL;
    if (!connectionString) throw new Error("DATABASE_URL is not set: it names the database to migrate");
    return new PrismaPg({ connectionString });
  },
});
