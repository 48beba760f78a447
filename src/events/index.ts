export { WatchHub } from "./watch-hub.js";
export type { WatchHubOptions, WatchItem } from "./watch-hub.js";
export { AuditOutbox } from "./audit-outbox.js";
export type { AuditHealth, AuditOutboxOptions } from "./audit-outbox.js";
