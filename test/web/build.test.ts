/**
 * The builds behind the dashboard and the client package: web/ type-checks
 * (DOM, no Node types); scripts/build-web.mjs lays out dist/web with each
 * asset URL in the page carrying its content hash (what the server's ETag
 * and immutable caching rely on); the browser entry bundles without any Node
 * module; and package.json's "exports" name files the TypeScript build emits,
 * which load and export the client.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as esbuild from "esbuild";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
const hash16 = (b: Buffer) => createHash("sha256").update(b).digest("hex").slice(0, 16);

describe("dashboard and client builds", () => {
  const out = mkdtempSync(join(tmpdir(), "build-web-"));
  // Under the repository, so that the emitted client finds node_modules.
  const dist = join(ROOT, "test-output", `client-dist-${process.pid}`);
  afterAll(() => {
    rmSync(out, { recursive: true, force: true });
    rmSync(dist, { recursive: true, force: true });
  });

  it("web/ type-checks with its own tsconfig (DOM, no Node types)", () => {
    execFileSync(process.execPath, [tsc, "-p", join(ROOT, "web", "tsconfig.json")], { cwd: ROOT, stdio: "pipe" });
  });

  it("build-web lays out the page and its assets, each URL in the page carrying the asset's hash", () => {
    execFileSync(process.execPath, [join(ROOT, "scripts", "build-web.mjs"), "--out", out], { cwd: ROOT, stdio: "pipe" });
    const html = readFileSync(join(out, "index.html"), "utf8");
    const refs = [...html.matchAll(/(?:src|href)="(\/dashboard\/[^"?]+)\?v=([0-9a-f]{16})"/g)].map((m) => [m[1]!, m[2]!] as const);
    expect(refs.map(([path]) => path).sort()).toEqual(["/dashboard/app.css", "/dashboard/app.js", "/dashboard/icon.svg"]);
    for (const [path, v] of refs) expect(hash16(readFileSync(join(out, path)))).toBe(v);
    // Nothing from elsewhere: no absolute URL, no inline script or style.
    expect(html).not.toMatch(/(?:src|href)="(?:https?:)?\/\//);
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)/);
    expect(html).not.toMatch(/<style|style="/);
    const js = readFileSync(join(out, "dashboard", "app.js"), "utf8");
    expect(js).not.toMatch(/\binnerHTML\b|\beval\(|new Function\(/);
    expect(js.length).toBeLessThan(400_000);
  });

  it("the browser entry (src/client/web.ts) bundles for the browser without a Node module or connect-node", async () => {
    const result = await esbuild.build({
      entryPoints: [join(ROOT, "src", "client", "web.ts")],
      bundle: true,
      platform: "browser",
      format: "esm",
      write: false,
      metafile: true,
      logLevel: "silent",
    });
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.some((i) => i.includes("connect-web"))).toBe(true);
    expect(inputs.filter((i) => /connect-node|grpc-js|^node:/.test(i))).toEqual([]);
  });

  it('package.json "exports" name what the TypeScript build emits; both entries load and export the client', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { exports: Record<string, { types: string; default: string }> };
    expect(Object.keys(pkg.exports)).toEqual(expect.arrayContaining(["./client", "./client/web"]));
    execFileSync(process.execPath, [tsc, "-p", join(ROOT, "tsconfig.build.json"), "--outDir", dist, "--sourceMap", "false"], { cwd: ROOT, stdio: "pipe" });
    for (const entry of ["./client", "./client/web"]) {
      const target = pkg.exports[entry]!;
      for (const file of [target.types, target.default]) {
        expect(file.startsWith("./dist/"), file).toBe(true);
        expect(existsSync(join(dist, file.slice("./dist/".length))), file).toBe(true);
      }
      const mod = (await import(pathToFileURL(join(dist, target.default.slice("./dist/".length))).href)) as Record<string, unknown>;
      for (const name of ["createBrokerClient", "DelegationService", "DelegationSchema", "DelegationState", "CeremonyState", "followDelegations", "errorDetailOf", "ConnectError"]) {
        expect(mod[name], `${entry} exports ${name}`).toBeDefined();
      }
    }
  }, 60_000);
});
