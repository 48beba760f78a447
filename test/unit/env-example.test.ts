/** .env.example documents exactly the variables the broker reads, with their real defaults. */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { loadSettings } from "../../src/config/settings.js";

const example = readFileSync(new URL("../../.env.example", import.meta.url), "utf8");
const source = readFileSync(new URL("../../src/config/settings.ts", import.meta.url), "utf8");
const documented = Object.fromEntries([...example.matchAll(/^([A-Z][A-Z0-9_]*)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
const read = new Set([...source.matchAll(/\((?:env, )?"([A-Z][A-Z0-9_]+)"/g)].map((m) => m[1]!));

describe(".env.example", () => {
  it("names every variable settings.ts reads, and no other", () => {
    expect(Object.keys(documented).sort()).toEqual([...read].sort());
  });

  it("gives each its default: loading the file equals loading nothing", () => {
    expect(loadSettings(documented)).toEqual(loadSettings({}));
  });
});
