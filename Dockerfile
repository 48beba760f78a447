# The LLM Principal Broker as a container: built once, run as a non-root user.
#   docker build -t llm-principal-broker .
#   docker run -p 8092:8092 -p 8093:8093 --env-file broker.env llm-principal-broker
# Listens on 0.0.0.0 inside the container, so AUTH_MODE must be jwt or mtls
# (dev mode refuses a non-loopback address). See deploy/compose.yaml.

# --- build: install everything, generate (buf, Prisma) and compile (tsc, esbuild) ---
FROM node:20-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 is a native addon: its prebuilt binary, or a build with these.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
COPY scripts ./scripts
COPY buf.yaml buf.gen.yaml tsconfig.json tsconfig.build.json ./
COPY proto ./proto
COPY prisma ./prisma
COPY src ./src
COPY web ./web
# postinstall runs scripts/generate.mjs and scripts/build.mjs: dist/ is ready after this.
RUN npm ci && npm prune --omit=dev

# --- run: the compiled broker, production dependencies, migrations ---
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    LLM_BROKER_HOST=0.0.0.0 \
    DATABASE_URL=file:/data/llm-broker.db
WORKDIR /app
COPY --from=build --chown=root:root /app/package.json ./
COPY --from=build --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/dist ./dist
COPY --from=build --chown=root:root /app/prisma ./prisma
# The code is root's and read-only to the broker; only /data (SQLite) is its own.
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 8092 8093
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.LLM_BROKER_WEB_PORT||8093)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# Exec form: the broker is PID 1's child-free process and receives SIGTERM for its graceful shutdown.
ENTRYPOINT ["node", "dist/cli/main.js"]
CMD ["serve"]
