// Builds dist/ (scripts/build.mjs) when there is no build yet or a source
// (src/, web/, prisma/, proto/) changed since the last one. Used by `npm
// start` and by the benchmarks, which measure the build `npm start` runs.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

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

/** Builds `root`'s dist/ unless it is current; says so on stderr when it builds. */
export function ensureBuild(root) {
  const stamp = join(root, "dist", ".build-stamp");
  const builtAt = existsSync(stamp) ? statSync(stamp).mtimeMs : 0;
  const changedAt = Math.max(...["src", "web", "prisma", "proto"].map((d) => newestUnder(join(root, d))));
  if (changedAt <= builtAt) return;
  console.error(builtAt === 0 ? "start: no build yet, building once" : "start: sources changed since the last build, building");
  execFileSync(process.execPath, [join(root, "scripts", "build.mjs")], { cwd: root, stdio: "inherit" });
}
