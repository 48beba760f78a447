export type * from "./store.js";
export { openStore } from "./open-store.js";
export type { OpenStoreOptions } from "./open-store.js";
export { migrate, MigrationError } from "./migrate.js";
export { parseDatabaseUrl } from "./database-url.js";
