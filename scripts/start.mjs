// `npm start`: runs the built broker (dist/), building first only when there is
// no build yet or a source (src/, web/, prisma/, proto/) changed since the last
// one, so a start after `npm ci` takes seconds, not a TypeScript compile.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const stamp = join(root, "dist", ".build-stamp");

function newestUnder(dir) {
  let newest = 0;
  if (!existsSync(dir)) return newest;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestUnder(path));
    else newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

const builtAt = existsSync(stamp) ? statSync(stamp).mtimeMs : 0;
const changedAt = Math.max(...["src", "web", "prisma", "proto"].map((d) => newestUnder(join(root, d))));
if (changedAt > builtAt) {
  console.error(builtAt === 0 ? "start: no build yet, building once" : "start: sources changed since the last build, building");
  execFileSync(process.execPath, [join(root, "scripts", "build.mjs")], { cwd: root, stdio: "inherit" });
}
// In this process (one process, so the broker's own SIGINT/SIGTERM handling applies as is).
const main = join(root, "dist", "cli", "main.js");
process.argv = [process.argv[0], main, ...process.argv.slice(2)];
await import(pathToFileURL(main).href);
