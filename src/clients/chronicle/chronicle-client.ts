/**
 * Chronicle, the audit log, as the outbox needs it: deliver one lifecycle
 * event, idempotently (the content id names it), or fail.
 */
import type { DelegationEvent } from "../../delegation/model.js";

export interface AuditSink {
  readonly mode: "log" | "chronicle";
  /** Records one event; resolves once it is durably recorded. Throws on failure. */
  deliver(event: DelegationEvent, cid: string): Promise<void>;
  close(): Promise<void>;
}
