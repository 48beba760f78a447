/**
 * Parsers of single variables. Unset, empty and blank mean "use the default";
 * a value that is present but unusable is a SettingsError naming the variable.
 * Values are quoted in messages only where they cannot be secrets.
 */
import type { SettingKey } from "./keys.js";
import { SettingsError } from "./settings-error.js";

export type Env = Record<string, string | undefined>;

/** Whether `key` has a value (not unset, empty or blank). */
export function isSet(env: Env, key: SettingKey): boolean {
  return (env[key]?.trim() ?? "") !== "";
}

/** A string; `def` when unset. */
export function str(env: Env, key: SettingKey, def: string): string {
  const v = env[key]?.trim();
  return v === undefined || v === "" ? def : v;
}

/** An integer in [min, max]. */
export function int(env: Env, key: SettingKey, def: number, min: number, max: number): number {
  const raw = env[key]?.trim();
  if (raw === undefined || raw === "") return def;
  if (!/^-?\d+$/.test(raw)) throw new SettingsError(`${key} must be an integer, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new SettingsError(`${key} must be between ${min} and ${max}, got ${n}`);
  return n;
}

/** A comma-separated list, entries trimmed, empty entries dropped. */
export function list(env: Env, key: SettingKey, def: string[]): string[] {
  const raw = env[key];
  if (raw === undefined || raw.trim() === "") return def;
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** One of `allowed`, compared exactly (case matters). */
export function oneOf<T extends string>(env: Env, key: SettingKey, def: T, allowed: readonly T[]): T {
  const v = str(env, key, def);
  if (!(allowed as readonly string[]).includes(v)) {
    throw new SettingsError(`${key} must be one of ${allowed.join(", ")}, got "${v}"`);
  }
  return v as T;
}

/** true/1 or false/0, any case. */
export function bool(env: Env, key: SettingKey, def: boolean): boolean {
  const v = str(env, key, String(def)).toLowerCase();
  if (v === "true" || v === "1") return true;
  if (v === "false" || v === "0") return false;
  throw new SettingsError(`${key} must be true or false, got "${v}"`);
}

/**
 * An http(s) URL without trailing slashes. With `def` "" the variable is
 * optional: unset gives "", and a value is still checked.
 */
export function httpUrl(env: Env, key: SettingKey, def: string): string {
  const v = str(env, key, def).replace(/\/+$/, "");
  if (v === "") return v;
  let u: URL | undefined;
  try {
    u = new URL(v);
  } catch {
    u = undefined;
  }
  if (u === undefined || (u.protocol !== "http:" && u.protocol !== "https:")) {
    throw new SettingsError(`${key} must be an http(s) URL, got "${withoutCredentials(v)}"`);
  }
  return v;
}

/** `v` with anything between "//" and the last "@" of its authority replaced: a URL may carry user:password. */
function withoutCredentials(v: string): string {
  return v.replace(/\/\/[^/?#]*@/, "//***@");
}
