/** Parses DATABASE_URL: `file:PATH` (SQLite) or `postgres://…` / `postgresql://…`. */

export type DatabaseTarget = { provider: "sqlite"; path: string } | { provider: "postgresql"; url: string };

/** Tells which driver a DATABASE_URL selects; throws for anything else. */
export function parseDatabaseUrl(url: string): DatabaseTarget {
  if (url.startsWith("file:")) {
    const path = url.slice("file:".length).replace(/^\/\/(?=\/)/, "");
    if (path === "") throw new Error("DATABASE_URL file: needs a path, e.g. file:./data/llm-broker.db");
    // The migrator and the store open their own connections, and each would get its own
    // empty in-memory database: the store would start without tables.
    if (path === ":memory:") {
      throw new Error("DATABASE_URL file::memory: is not supported: give a file path, e.g. file:./data/llm-broker.db");
    }
    return { provider: "sqlite", path };
  }
  if (/^postgres(ql)?:\/\//.test(url)) return { provider: "postgresql", url };
  throw new Error(`DATABASE_URL must start with file: or postgres://, got "${url.replace(/:[^:@/]*@/, ":***@")}"`);
}
