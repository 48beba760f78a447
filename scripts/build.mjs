// Builds what `npm start` and the `llm-broker` command run: dist/ (tsc) and the
// dashboard bundle (scripts/build-web.mjs, when present). Runs once from
// `npm ci` (postinstall, after generate.mjs) and from `npm run build`;
// `npm start` runs it again only when a source is newer than the last build.
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const started = Date.now();
execFileSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"], {
  cwd: root,
  stdio: "inherit",
});
const web = join(root, "scripts", "build-web.mjs");
if (existsSync(web)) execFileSync(process.execPath, [web], { cwd: root, stdio: "inherit" });
// npm links the bin; the file itself must be executable for a direct ./dist/cli/main.js too.
const main = join(root, "dist", "cli", "main.js");
if (existsSync(main)) chmodSync(main, 0o755);
mkdirSync(join(root, "dist"), { recursive: true });
writeFileSync(join(root, "dist", ".build-stamp"), `${new Date().toISOString()}\n`);
console.error(`build: dist/ ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
