# syntax=docker/dockerfile:1

# 1. Dependencies, installed from package-lock.json with npm (the lockfile the project
#    commits); the root postinstall runs `prisma generate` into src/generated. It needs no
#    DATABASE_URL here: prisma.config.ts supplies a placeholder to `generate` itself.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json prisma.config.ts ./
COPY prisma ./prisma
RUN npm ci --omit=dev --no-audit --no-fund

# 2. Runtime: Bun only (the version pinned as the `bun` devDependency), as the unprivileged
#    `bun` user. The same image serves (`bun run start`) and migrates (`bun run db:migrate`,
#    the compose `migrate` service): that needs scripts/, prisma/, prisma.config.ts and the
#    `prisma` package, which is a production dependency.
FROM oven/bun:1.4.4-slim AS runtime
WORKDIR /app
ENV NODE_ENV=production \
    PORT=3000 \
    HOST=0.0.0.0
COPY package.json bunfig.toml tsconfig.json prisma.config.ts ./
COPY prisma ./prisma
COPY scripts ./scripts
COPY src ./src
# The chat page at / (bundled by Bun on its first request).
COPY web ./web
COPY --from=deps /app/node_modules ./node_modules
COPY --from=deps /app/src/generated ./src/generated
USER bun
EXPOSE 3000
# The slim image has no curl or wget: Bun's fetch is the probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bun", "-e", "fetch('http://127.0.0.1:3000/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# The production start command the README documents. `bun run` forwards SIGTERM to the
# service and exits with its code, so `docker stop` gets the graceful shutdown.
CMD ["bun", "run", "start"]
