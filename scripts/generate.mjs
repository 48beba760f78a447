// Generates src/gen (buf + protoc-gen-es) and the two Prisma clients.
// Runs from `npm install`/`npm ci` (postinstall) and `npm run generate`; works offline.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);

if (!existsSync(bin("buf")) || !existsSync(bin("prisma"))) {
  console.error("generate: buf or prisma is missing; install with dev dependencies (npm ci)");
  process.exit(1);
}
// buf finds its plugin (protoc-gen-es) on PATH.
const path = `${join(root, "node_modules", ".bin")}${delimiter}${process.env.PATH ?? ""}`;
const run = (cmd, args, env = {}) =>
  execFileSync(cmd, args, { cwd: root, stdio: "inherit", env: { ...process.env, PATH: path, ...env } });

run(bin("buf"), ["generate"]);
// `prisma generate` needs no schema engine, but the CLI insists that one exists:
// any existing file satisfies it, so no binary is downloaded (none can be here).
const prismaEnv = {
  PRISMA_SCHEMA_ENGINE_BINARY: process.env.PRISMA_SCHEMA_ENGINE_BINARY ?? process.execPath,
  PRISMA_HIDE_UPDATE_MESSAGE: "1",
};
for (const provider of ["sqlite", "postgresql"]) {
  run(bin("prisma"), ["generate", "--schema", `prisma/${provider}/schema.prisma`], prismaEnv);
}
