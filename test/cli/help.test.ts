/**
 * `--help` on every verb prints its usage and exits 0 without starting
 * anything (no settings read, no database created, no connection);
 * `--version` prints package.json's version; and the client verbs' start-up
 * stays light: what main.ts imports up front reaches neither the server,
 * the store nor Prisma (serve and migrate load them when they run).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type Ran, cli } from "./cli-process.js";

const dir = mkdtempSync(join(tmpdir(), "lpb-cli-help-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const VERBS = [
  [],
  ["serve"],
  ["migrate"],
  ["migrate-prototype"],
  ["delegate"],
  ["get"],
  ["list"],
  ["revoke"],
  ["revoke-context"],
  ["authorize"],
  ["watch"],
  ["ceremony"],
  ["ceremony", "approve"],
  ["ceremony", "deny"],
  ["ceremony", "get"],
  ["ceremony", "list"],
];

/** Runs at most `n` at a time (two cores, shared). */
async function pooled<T, R>(items: T[], n: number, f: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await f(items[i]!);
      }
    }),
  );
  return results;
}

/** The files a module imports statically (not `await import()`), transitively, and the packages they name. */
function staticImports(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    const source = readFileSync(file, "utf8");
    for (const m of source.matchAll(/^(?:import|export)\s[^;]*?\sfrom\s+"([^"]+)"/gm)) {
      if (/^import\s+type\s/.test(m[0]) || /^export\s+type\s/.test(m[0])) continue;
      const spec = m[1]!;
      if (spec.startsWith(".")) visit(resolve(dirname(file), spec.replace(/\.js$/, ".ts")));
      else packages.add(spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!);
    }
  };
  visit(entry);
  return { files, packages };
}

describe("llm-broker --help and --version", { timeout: 90_000 }, () => {
  it("--help on every verb prints its usage and exits 0, starting nothing", async () => {
    const db = join(dir, "never-created.db");
    // Settings that would refuse to load, a database that must not appear, a broker that is not there.
    const env = { LLM_BROKER_PORT: "seventy", DATABASE_URL: `file:${db}`, LLM_BROKER_ADDR: "127.0.0.1:1" };
    const runs: Ran[] = await pooled(VERBS, 4, (verb) => cli([...verb, "--help"], env));
    VERBS.forEach((verb, i) => {
      const r = runs[i]!;
      const name = ["llm-broker", ...verb].join(" ");
      expect({ verb: name, code: r.code, err: r.err }).toEqual({ verb: name, code: 0, err: "" });
      expect(r.out.startsWith(`usage: ${name}`), `${name} --help:\n${r.out}`).toBe(true);
    });
    expect(existsSync(db)).toBe(false);
    expect(runs[0]!.out).toMatch(/^exit codes:\n {2}0 {2}done; authorize: allowed\n {2}1 .*\n {2}2 {2}usage.*\n {2}3 {2}authorize: denied\n {2}4 {2}authorize: a ceremony is required/m);
    expect(runs[VERBS.findIndex((v) => v[0] === "authorize")]!.out).toContain("exit codes: 0 allowed, 3 denied, 4 ceremony required");
    expect(runs[VERBS.findIndex((v) => v[0] === "delegate")]!.out).toMatch(/--token <token>.*\n.*\(env:\s+LLM_BROKER_TOKEN\)/);
  });

  it("--version prints package.json's version and exits 0", async () => {
    const { version } = JSON.parse(readFileSync("package.json", "utf8")) as { version: string };
    const [long, short] = await Promise.all([cli(["--version"]), cli(["-V"])]);
    for (const r of [long, short]) expect(r).toEqual({ code: 0, out: `${version}\n`, err: "" });
  });

  it("main.ts imports neither the server, the store nor Prisma up front", () => {
    const { files, packages } = staticImports(resolve("src/cli/main.ts"));
    const loaded = [...files].map((f) => relative(process.cwd(), f));
    expect(loaded).toContain("src/cli/client/watch.ts");
    expect(loaded.filter((f) => /^src\/(app|background)\.ts$|^src\/(server|store|delegation|events|registrars|clients|migration)\//.test(f))).toEqual([]);
    expect([...packages].filter((p) => /^@prisma\/|^(better-sqlite3|pg|@grpc\/grpc-js|pino)$/.test(p))).toEqual([]);
  });
});
