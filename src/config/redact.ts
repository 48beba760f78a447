/** Secrets out of what the broker prints: the database password and the values of SECRET_KEYS. */
import { SECRET_KEYS } from "./keys.js";
import type { Env } from "./parse.js";

const POSTGRES = /^postgres(ql)?:\/\//;
const PASSWORD_PARAMS = ["password", "sslpassword"];

/** DATABASE_URL for display: a PostgreSQL password (in the user info or a query parameter) becomes ***; user, host and database stay. */
export function redactDatabaseUrl(url: string): string {
  if (!POSTGRES.test(url)) return url;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // Unparsable: hide everything up to the last "@" but the user.
    return url.replace(/^(postgres(?:ql)?:\/\/)(.*)@/, (_, scheme: string, info: string) => `${scheme}${info.split(":")[0]}:***@`);
  }
  if (u.password !== "") u.password = "***";
  for (const p of PASSWORD_PARAMS) if (u.searchParams.has(p)) u.searchParams.set(p, "***");
  return u.toString();
}

/** The secret values in `env`: SECRET_KEYS and the database password, raw and decoded. */
function secretValues(env: Env): string[] {
  const out = SECRET_KEYS.map((k) => env[k]?.trim() ?? "");
  const db = env.DATABASE_URL?.trim() ?? "";
  if (POSTGRES.test(db)) {
    try {
      const u = new URL(db);
      out.push(u.password, safeDecode(u.password));
      for (const p of PASSWORD_PARAMS) out.push(u.searchParams.get(p) ?? "");
    } catch {
      // redactDatabaseUrl hides an unparsable URL's user info.
    }
  }
  return [...new Set(out.filter((v) => v !== ""))].sort((a, b) => b.length - a.length);
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** `text` with every secret value of `env` replaced by ***: the last guard on start-up output. */
export function redactSecrets(text: string, env: Env): string {
  let out = text;
  for (const v of secretValues(env)) out = out.split(v).join("***");
  return out;
}
