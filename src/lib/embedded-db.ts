import { mkdir } from "node:fs/promises";

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

/**
 * Real PostgreSQL compiled to WASM (PGlite), persisted in `dir` and served over the
 * wire protocol on a loopback port, so Prisma talks to it exactly as to a server.
 * For `bun run dev` without `DATABASE_URL` only; imported lazily so production never
 * loads it.
 */
export async function startEmbeddedDatabase(dir: string): Promise<EmbeddedDatabase> {
  const { PGlite } = await import("@electric-sql/pglite");
  const { PGLiteSocketServer } = await import("@electric-sql/pglite-socket");
  await mkdir(dir, { recursive: true });
  const pglite = await PGlite.create(dir);
  // PGlite runs one query at a time; the socket server queues queries across connections.
  const server = new PGLiteSocketServer({ db: pglite, host: "127.0.0.1", port: 0, maxConnections: 16 });
  await server.start();
  return {
    url: `postgresql://postgres@${server.getServerConn()}/postgres?sslmode=disable`,
    async stop() {
      await server.stop();
      await pglite.close();
    },
  };
}
