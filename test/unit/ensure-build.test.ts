/**
 * `npm start` (and the benchmarks) build dist/ only when there is no build
 * yet or a source changed since the last one (scripts/ensure-build.mjs).
 * Run against a scratch project whose scripts/build.mjs only counts its
 * runs and writes the stamp, as the real build does at its end.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ensureBuild } from "../../scripts/ensure-build.mjs";

const FAKE_BUILD = `
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
mkdirSync("dist", { recursive: true });
appendFileSync("builds.log", "built\\n");
writeFileSync("dist/.build-stamp", "");
`;

describe("ensureBuild", () => {
  let root: string;
  const builds = () => readFileSync(join(root, "builds.log"), "utf8").split("\n").filter(Boolean).length;
  /** Sets a file's modification time, in seconds from now. */
  const age = (path: string, seconds: number) => {
    const t = Date.now() / 1000 + seconds;
    utimesSync(join(root, path), t, t);
  };

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "lpb-build-"));
    mkdirSync(join(root, "scripts"));
    writeFileSync(join(root, "scripts", "build.mjs"), FAKE_BUILD);
    writeFileSync(join(root, "builds.log"), "");
    for (const dir of ["src", "web", "prisma", "proto"]) mkdirSync(join(root, dir, "nested"), { recursive: true });
    writeFileSync(join(root, "src", "nested", "app.ts"), "");
    age("src/nested/app.ts", -60);
    vi.spyOn(console, "error").mockImplementation(() => undefined);
  });

  afterEach(() => {
    vi.restoreAllMocks();
    rmSync(root, { recursive: true, force: true });
  });

  it("builds once when there is no build yet, then not again while nothing changed", () => {
    ensureBuild(root);
    expect(builds()).toBe(1);
    expect(console.error).toHaveBeenCalledWith("start: no build yet, building once");
    ensureBuild(root);
    expect(builds()).toBe(1);
  });

  it.each(["src/nested/app.ts", "web/nested/page.ts", "prisma/nested/schema.prisma", "proto/nested/api.proto"])(
    "builds again when %s is newer than the last build",
    (file) => {
      ensureBuild(root);
      writeFileSync(join(root, file), "changed");
      age(file, 60);
      ensureBuild(root);
      expect(builds()).toBe(2);
      expect(console.error).toHaveBeenLastCalledWith("start: sources changed since the last build, building");
    },
  );

  it("does not build for a change outside the sources", () => {
    ensureBuild(root);
    writeFileSync(join(root, "README.md"), "changed");
    age("README.md", 60);
    ensureBuild(root);
    expect(builds()).toBe(1);
  });

  it("throws when the build fails, leaving no stamp: the next start builds again", () => {
    writeFileSync(join(root, "scripts", "build.mjs"), "process.exit(3)");
    expect(() => ensureBuild(root)).toThrow();
    expect(existsSync(join(root, "dist", ".build-stamp"))).toBe(false);
  });
});
