// Builds the browser dashboard into dist/web: web/src/main.ts bundled by esbuild
// (with @connectrpc/connect-web and the generated client) as dashboard/app.js,
// web/app.css and web/icon.svg copied under dashboard/, and web/index.html with
// each asset URL carrying ?v=<its content hash>, so the broker can let browsers
// cache the assets for good (src/server/dashboard.ts computes the same hash).
// Every file is written to a temporary name and renamed, so a broker starting
// meanwhile reads either the old file or the new one, never half of one.
// Run with `npm run build:web`; `--check` also type-checks web/ (tsc -p web);
// `--out DIR` builds into DIR instead of dist/web (tests).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const web = join(root, "web");
const outAt = process.argv.indexOf("--out");
const out = outAt > 0 && process.argv[outAt + 1] ? resolve(process.argv[outAt + 1]) : join(root, "dist", "web");

/** The hash in asset URLs and ETags: the first 16 hex digits of the content's SHA-256. */
const contentHash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 16);

function writeAtomically(path, bytes) {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, path);
}

if (process.argv.includes("--check")) {
  execFileSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", join(web, "tsconfig.json")], { stdio: "inherit" });
}

const started = Date.now();
const result = await esbuild.build({
  entryPoints: [join(web, "src", "main.ts")],
  outfile: join(out, "dashboard", "app.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  // Browsers with <dialog>, fetch streams and top-level await: 2022 and later.
  target: ["es2022", "chrome105", "firefox110", "safari16"],
  minify: true,
  legalComments: "none",
  write: false,
  logLevel: "warning",
  // The browser entry must not pull in Node: fail the build if anything asks for node:*.
  plugins: [
    {
      name: "no-node-builtins",
      setup(build) {
        build.onResolve({ filter: /^node:/ }, (args) => ({ errors: [{ text: `${args.path} imported by ${args.importer}: the dashboard runs in the browser` }] }));
      },
    },
  ],
});

const assets = new Map(); // URL path -> content
for (const file of result.outputFiles) assets.set(`/${relative(out, file.path).split("\\").join("/")}`, Buffer.from(file.contents));
for (const name of ["app.css", "icon.svg"]) assets.set(`/dashboard/${name}`, readFileSync(join(web, name)));

const html = readFileSync(join(web, "index.html"), "utf8").replace(/(src|href)="(\/dashboard\/[^"?#]+)"/g, (all, attr, path) => {
  const bytes = assets.get(path);
  if (!bytes) throw new Error(`web/index.html refers to ${path}, which the build does not produce`);
  return `${attr}="${path}?v=${contentHash(bytes)}"`;
});

for (const [path, bytes] of assets) writeAtomically(join(out, path), bytes);
writeAtomically(join(out, "index.html"), html);
const size = [...assets.values()].reduce((n, b) => n + b.length, html.length);
console.log(`build-web: ${out.startsWith(root) ? relative(root, out) : out} (${(size / 1024).toFixed(0)} KiB) in ${Date.now() - started} ms`);
