/**
 * The dev-mode audit driver (AUDIT_DRIVER=log): "delivers" each lifecycle
 * event by writing it to the service log with the Chronicle code and content
 * id it would carry. It is fed by the same outbox as the Chronicle driver.
 */
import type { DelegationEvent } from "../../domain/index.js";
import type { Logger } from "../../logging.js";
import type { AuditSink } from "./chronicle-client.js";
import { contentId, eventPayload } from "./chronicle-event.js";

/** Creates the log sink. */
export function createLogAuditSink(log: Logger): AuditSink {
  return {
    mode: "log",
    async deliver(e: DelegationEvent, stored: string) {
      if (!log.isLevelEnabled("info")) return;
      const p = eventPayload(e);
      const cid = stored || contentId(p);
      log.info({ audit: true, kind: p.kind, code: p.body.event_code, cid, revision: e.revision.toString(), delegationId: e.delegation.id, reason: e.reason }, "audit event");
    },
    async close() {},
  };
}
