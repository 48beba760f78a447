/** .env.example documents exactly the variables the broker reads, with their real defaults. */
import { readFileSync, readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { SETTING_KEYS } from "../../src/config/keys.js";
import { loadSettings } from "../../src/config/settings.js";
import { settingsWarnings } from "../../src/config/warnings.js";

const example = readFileSync(new URL("../../.env.example", import.meta.url), "utf8");
const configDir = new URL("../../src/config/", import.meta.url);
const source = readdirSync(configDir)
  .filter((f) => f.endsWith(".ts") && f !== "keys.ts")
  .map((f) => readFileSync(new URL(f, configDir), "utf8"))
  .join("\n");
const documented = Object.fromEntries([...example.matchAll(/^([A-Z][A-Z0-9_]*)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
// Every parser call, str(env, "KEY", …), isSet(env, "KEY"), …, and each driver choice's `key: "KEY"`.
const read = new Set([...source.matchAll(/(?:\((?:env, )?|key: )"([A-Z][A-Z0-9_]+)"/g)].map((m) => m[1]!));

describe(".env.example", () => {
  it("names every variable settings.ts reads, and no other", () => {
    expect(Object.keys(documented).sort()).toEqual([...read].sort());
  });

  it("names exactly the keys of the one list (keys.ts) the start-up warnings use", () => {
    expect(Object.keys(documented).sort()).toEqual([...SETTING_KEYS].sort());
  });

  it("gives each its default: loading the file equals loading nothing", () => {
    expect(loadSettings(documented)).toEqual(loadSettings({}));
  });

  it("loaded as it is, warns only about the dev drivers it selects (no unknown or ignored variable)", () => {
    expect(settingsWarnings(loadSettings(documented), documented).every((w) => w.startsWith("dev driver in use:"))).toBe(true);
  });
});
