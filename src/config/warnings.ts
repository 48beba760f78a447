/**
 * What start-up should warn about in settings that loaded: variables in the
 * broker's namespaces that it does not read (typos), settings of drivers
 * not in use, and every dev driver in use. Pure: the CLI prints each line.
 */
import { devDriversInUse, unusedDriverSettings } from "./drivers.js";
import { FOREIGN_KEYS, SETTING_KEYS, SETTING_PREFIXES } from "./keys.js";
import type { Env } from "./parse.js";
import type { Settings } from "./settings.js";

const KNOWN: ReadonlySet<string> = new Set([...SETTING_KEYS, ...FOREIGN_KEYS]);

/** One line per warning; names variables, never their values. */
export function settingsWarnings(settings: Settings, env: Env = process.env): string[] {
  const out = unknownVariables(env).map(({ key, suggestions }) => {
    const hint = suggestions.length > 0 ? `; did you mean ${suggestions.join(" or ")}?` : "";
    return `${key} is not a setting of the broker and is ignored${hint}`;
  });
  for (const u of unusedDriverSettings(settings, env)) {
    out.push(`${u.keys.join(", ")} ${u.keys.length === 1 ? "is" : "are"} set but ignored: ${u.setting}`);
  }
  for (const d of devDriversInUse(settings)) out.push(`dev driver in use: ${d.setting} (${d.note})`);
  return out;
}

/** Variables with one of the broker's prefixes that it does not read, with the closest known names. */
export function unknownVariables(env: Env): { key: string; suggestions: string[] }[] {
  return Object.keys(env)
    .filter((k) => /^[A-Z][A-Z0-9_]*$/.test(k) && SETTING_PREFIXES.some((p) => k.startsWith(p)) && !KNOWN.has(k))
    .sort()
    .map((key) => ({ key, suggestions: closest(key) }));
}

/** Up to two known keys within a few edits of `key`: the closest, and a runner-up one edit further at most. */
function closest(key: string): string[] {
  const limit = Math.max(2, Math.floor(key.length / 4));
  const near = SETTING_KEYS.map((k) => ({ k, d: distance(key, k) }))
    .filter((c) => c.d <= limit)
    .sort((a, b) => a.d - b.d || a.k.localeCompare(b.k));
  const best = near[0]?.d ?? 0;
  return near
    .filter((c) => c.d <= best + 1)
    .slice(0, 2)
    .map((c) => c.k);
}

/**
 * How far apart two names are: one word added or left out (LLM_BROKER_GRPC_PORT,
 * AUTH_JWKS) counts as a single edit, otherwise the edit distance of the letters.
 */
function distance(a: string, b: string): number {
  const [short, long] = a.length < b.length ? [a.split("_"), b.split("_")] : [b.split("_"), a.split("_")];
  const oneWordMore = long.length === short.length + 1 && long.some((_, i) => long.filter((__, j) => j !== i).join("_") === short.join("_"));
  return oneWordMore ? 1 : levenshtein(a, b);
}

/** Edit distance (insertions, deletions, substitutions). */
export function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
