/**
 * Chronicle, the audit log, as the outbox needs it: deliver one lifecycle
 * event, idempotently (the content id names it), or fail.
 */
import type { DelegationEvent } from "../../domain/index.js";

export interface AuditSink {
  readonly mode: "log" | "chronicle";
  /**
   * Records one event; resolves once it is durably recorded. Throws on failure.
   * `cid` is the content id stored with the event (CREATED events), or empty:
   * the sink computes it from the event (it is a pure function of it).
   */
  deliver(event: DelegationEvent, cid: string): Promise<void>;
  close(): Promise<void>;
}
