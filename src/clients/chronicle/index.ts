export type { AuditSink } from "./chronicle-client.js";
export { createChronicleSink } from "./chronicle-sink.js";
export type { ChronicleSinkOptions } from "./chronicle-sink.js";
export {
  CASCADE_CODE,
  CHRONICLE_CODES,
  canonicalJson,
  chroniclePayload,
  contentId,
  eventContentId,
  eventPayload,
  webhookBody,
} from "./chronicle-event.js";
export type { ChronicleKind, ChroniclePayload } from "./chronicle-event.js";
export { createLogAuditSink } from "./log-audit-sink.js";
export { createAuditSink } from "./factory.js";
