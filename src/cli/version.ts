/** The package's version, read from package.json (two levels up from src/cli and dist/cli alike). */
import { readFileSync } from "node:fs";

/** The `version` field of package.json. */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: unknown };
  return typeof pkg.version === "string" ? pkg.version : "0.0.0";
}
